// Mistral 3's patch merger, the gather before its linear layer: a merged
// token's row holds the M x M patches it covers, flattened as torch's
// `unfold` lays them out (channel, then row and column in the block):
//   Y[r, (c * M + i) * M + j] = X[(M * gy + i) * GRID.x + M * gx + j, c]
// for token r = gy * (GRID.x / M) + gx of an image GRID.x patches wide
// (a multiple of M: the processor rounds the image so); `step.n_tokens` is
// the image's merged tokens. The image's grid is a uniform, so every image
// size shares one pipeline.
override D: u32 = 1u;   // the encoder's width
override M: u32 = 2u;   // spatial_merge_size

@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> GRID: vec4<u32>;   // (patches wide, 0, 0, 0)

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.y;
    let e = gid.x;
    let wide = GRID.x / M;
    let row = D * M * M;
    if (r >= step.n_tokens || e >= row) {
        return;
    }
    let c = e / (M * M);
    let i = (e / M) % M;
    let j = e % M;
    let gy = r / wide;
    let gx = r % wide;
    Y[r * row + e] = X[((M * gy + i) * GRID.x + M * gx + j) * D + c];
}
