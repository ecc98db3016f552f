//! The weights on the GPU, as the forward pass binds them.

use crate::gpu::WeightStore;
use crate::parse::DType;

/// A weight matrix on the GPU: `experts` blocks of `halves * outputs` rows
/// (`halves` = 2 for stacked [gate; up]) of `cols` elements, in one or more
/// slabs of outputs.
#[derive(Clone)]
pub struct Matrix {
    pub slabs: Vec<Slab>,
    /// Outputs (rows per half per expert).
    pub outputs: usize,
    pub halves: usize,
    pub cols: usize,
    pub experts: usize,
}

/// A range of a matrix's outputs, for every expert and half:
/// `[experts][halves][rows][cols]`.
#[derive(Clone)]
pub struct Slab {
    pub store: WeightStore,
    pub dtype: DType,
    pub rows: usize,
    /// Uniform `vec4<u32>(first row, rows, 0, 0)` the kernels read (the `SLAB`
    /// binding of the linear kernels and embed.wgsl).
    pub info: wgpu::Buffer,
}

impl Matrix {
    /// The storage type of the first slab (the matrix's, unless its parts
    /// mix types).
    pub fn dtype(&self) -> DType {
        self.slabs.first().map(|s| s.dtype).unwrap_or(DType::F32)
    }

    /// Elements from one expert's block to the next within `slab`.
    pub fn expert_stride(&self, slab: &Slab) -> usize {
        self.halves * slab.rows * self.cols
    }
}

/// `gate_up` stacks gate and up (one SwiGLU dispatch) when they share a type;
/// when they do not, it holds the gate alone and `up` the up projection.
#[derive(Clone)]
pub enum Ffn {
    Dense { gate_up: Matrix, up: Option<Matrix>, down: Matrix },
    Moe { router: Matrix, gate_up: Matrix, up: Option<Matrix>, down: Matrix },
}

#[derive(Clone)]
pub struct LayerWeights {
    pub attn_norm: wgpu::Buffer,
    pub qkv: Matrix,
    pub qkv_bias: Option<wgpu::Buffer>,
    pub o: Matrix,
    pub o_bias: Option<wgpu::Buffer>,
    /// `[q_norm | k_norm]`, head_dim each (Qwen3's per-head RMSNorm weights).
    pub qk_norm: Option<wgpu::Buffer>,
    /// (stacked gate/up bias, down bias) of a dense MLP with biases.
    pub mlp_bias: Option<(wgpu::Buffer, wgpu::Buffer)>,
    pub ffn_norm: wgpu::Buffer,
    pub ffn: Ffn,
}

/// One layer of the image encoder (Pixtral's).
#[derive(Clone)]
pub struct VisionLayerWeights {
    pub attn_norm: wgpu::Buffer,
    pub qkv: Matrix,
    pub o: Matrix,
    pub ffn_norm: wgpu::Buffer,
    /// Gate and up stacked, for the SwiGLU-shaped epilogue.
    pub gate_up: Matrix,
    pub down: Matrix,
}

/// The image side: the encoder (the patch convolution as a matrix over
/// flattened patches, `ln_pre`, the layers) and the projector (Mistral 3:
/// `proj_norm` and `merger` before the two linear layers).
#[derive(Clone)]
pub struct VisionWeights {
    pub patch: Matrix,
    pub ln_pre: wgpu::Buffer,
    pub layers: Vec<VisionLayerWeights>,
    pub proj_norm: Option<wgpu::Buffer>,
    pub merger: Option<Matrix>,
    pub linear_1: Matrix,
    pub linear_1_bias: Option<wgpu::Buffer>,
    pub linear_2: Matrix,
    pub linear_2_bias: Option<wgpu::Buffer>,
}

impl Matrix {
    /// GPU bytes of every slab.
    pub fn bytes(&self) -> u64 {
        self.slabs.iter().map(|s| s.store.bytes()).sum()
    }
}

impl VisionWeights {
    /// GPU bytes of the image side's weights.
    pub fn bytes(&self) -> u64 {
        let mut matrices = vec![&self.patch, &self.linear_1, &self.linear_2];
        matrices.extend(&self.merger);
        let mut vectors = vec![&self.ln_pre];
        vectors.extend([&self.proj_norm, &self.linear_1_bias, &self.linear_2_bias].into_iter().flatten());
        for l in &self.layers {
            matrices.extend([&l.qkv, &l.o, &l.gate_up, &l.down]);
            vectors.extend([&l.attn_norm, &l.ffn_norm]);
        }
        matrices.iter().map(|m| m.bytes()).sum::<u64>() + vectors.iter().map(|v| v.size()).sum::<u64>()
    }
}

#[derive(Clone)]
pub struct Weights {
    pub embed: Matrix,
    pub layers: Vec<LayerWeights>,
    pub norm: wgpu::Buffer,
    /// `None` when the LM head is tied to the embeddings.
    pub lm_head: Option<Matrix>,
    /// The image side of a vision checkpoint.
    pub vision: Option<VisionWeights>,
    /// Bytes of weights on the GPU.
    pub bytes: u64,
    /// Seconds the load spent on the host placing the weights (repacking,
    /// interleaving, writing them to the GPU queue, assembling); the rest of
    /// the weights' wall time was spent waiting for bytes.
    pub host_seconds: f64,
}

impl Weights {
    pub fn lm_head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// How many matrices are split to fit the binding limit (slabs beyond
    /// one per storage type).
    pub fn split_matrices(&self) -> usize {
        let mut all: Vec<&Matrix> = vec![&self.embed];
        all.extend(self.lm_head.as_ref());
        for l in &self.layers {
            all.extend([&l.qkv, &l.o]);
            match &l.ffn {
                Ffn::Dense { gate_up, up, down } => all.extend([Some(gate_up), up.as_ref(), Some(down)].into_iter().flatten()),
                Ffn::Moe { router, gate_up, up, down } => all.extend([Some(router), Some(gate_up), up.as_ref(), Some(down)].into_iter().flatten()),
            }
        }
        all.iter().filter(|m| m.slabs.windows(2).any(|w| w[0].dtype == w[1].dtype)).count()
    }
}
