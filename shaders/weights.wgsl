// Prelude for kernels that read a weight tensor: word quad i through `w_quad`
// (weights_in_buffer.wgsl or weights_in_texture.wgsl, prepended before this).
//
// Weights are bound as raw words (as vec4<u32>: weight buffers are sized in
// whole 16-byte units) and decoded here, element by element, so
// one kernel serves every storage type, quantized blocks stay quantized on the
// GPU, and no device needs `shader-f16` (f16 values, including the block scales,
// are unpacked from their word). WTYPE is a pipeline-overridable constant, one
// of the GGML_* type ids (ggml.h's numbering; kernels.rs prepends them, from
// the host's list of supported types), so each specialization compiles to a
// single branch.
// Element i of a [rows][cols] matrix lives in block i / block_size: GGML rows
// are whole blocks, so blocks never straddle rows.
override WTYPE: u32 = GGML_F32;

// Word i. Fields 16-byte aligned in every block are read as whole vec4s
// instead (w_quad(i)): a CPU driver pays per load instruction and lane, not per
// component, so one vec4 load costs far less than four word loads.
fn w_at(i: u32) -> u32 {
    return w_quad(i >> 2u)[i & 3u];
}

fn w_byte(b: u32) -> u32 {
    return (w_at(b >> 2u) >> ((b & 3u) << 3u)) & 0xffu;
}

// An f16 at an even byte offset.
fn w_f16(b: u32) -> f32 {
    return unpack2x16float(w_at(b >> 2u) >> ((b & 2u) << 3u)).x;
}

// Byte b of four words.
fn byte_of(v: vec4<u32>, b: u32) -> u32 {
    return (v[b >> 2u] >> ((b & 3u) << 3u)) & 0xffu;
}

// Rows interleaved by 8 (lavapipe's weight textures, upload/interleave.rs):
// each run of 8 rows stores its blocks column by column, block c of rows
// 8q .. 8q+7 side by side, so the 8 SIMD lanes of a CPU driver's matvec (8
// neighbouring rows) read one contiguous run instead of 8 streams (measured on a q4_1 matvec too big for the caches: 1.9x with
// the texture loads, 1.25x without). W_INTERLEAVE: 1 for that layout, 0 for
// plain rows; W_UNITS: blocks per row (32-weight blocks, or the K-quants'
// 256-weight super-blocks; the types with other block sizes never interleave).
override W_INTERLEAVE: u32 = 0u;
override W_UNITS: u32 = 1u;

// Where unit u (a block or a super-block, counted row by row from the start
// of the weights) sits.
fn w_unit(u: u32) -> u32 {
    if (W_INTERLEAVE == 0u) {
        return u;
    }
    let r = u / W_UNITS;
    return ((r >> 3u) * W_UNITS + u % W_UNITS) * 8u + (r & 7u);
}

// The 32-weight block types (q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl) sit on the
// GPU regrouped (upload/repack.rs): groups of G blocks (8; 4 for q4_1 / q5_1,
// whose header is 4 bytes), field by field: the G headers (one vec4), q5's G
// high-bit words, then each block's quants. Every field is one aligned load.
fn b32_shift() -> u32 {   // log2 G
    return select(3u, 2u, WTYPE == GGML_Q4_1 || WTYPE == GGML_Q5_1);
}

// vec4s per group, and where block `blk`'s group starts.
fn b32_group(blk: u32) -> u32 {
    let p = w_unit(blk);
    var v = 9u;                    // q4_0, iq4_nl: 16 + 8 x 16 bytes
    switch WTYPE {
        case GGML_Q4_1: { v = 5u; }       // q4_1: 16 + 4 x 16
        case GGML_Q5_0: { v = 11u; }      // q5_0: 16 + 32 + 8 x 16
        case GGML_Q5_1: { v = 6u; }       // q5_1: 16 + 16 + 4 x 16
        case GGML_Q8_0: { v = 17u; }      // q8_0: 16 + 8 x 32
        default: {}
    }
    return (p >> b32_shift()) * v;
}

// Block `blk`'s slot in its group.
fn b32_slot(blk: u32) -> u32 {
    return w_unit(blk) & ((1u << b32_shift()) - 1u);
}

// Block `blk`'s scale d and offset m: value = d * q + m (q4_0 m = -8 d,
// q5_0 -16 d; q8_0 and iq4_nl 0, their quants are signed or levels).
fn b32_dm(blk: u32) -> vec2<f32> {
    let head = w_quad(b32_group(blk));
    let s = b32_slot(blk);
    if (WTYPE == GGML_Q4_1 || WTYPE == GGML_Q5_1) {
        return unpack2x16float(head[s]);
    }
    let d = unpack2x16float(head[s >> 1u] >> ((s & 1u) << 4u)).x;
    return vec2<f32>(d, select(select(0.0, -16.0, WTYPE == GGML_Q5_0), -8.0, WTYPE == GGML_Q4_0) * d);
}

// q5_0 / q5_1 block `blk`'s 32 high bits.
fn b32_qh(blk: u32) -> u32 {
    let s = b32_slot(blk);
    return w_quad(b32_group(blk) + 1u + (s >> 2u))[s & 3u];
}

// Block `blk`'s quants: 16 bytes of nibbles (q4, q5, iq4_nl), or q8_0's
// first (`half` 0) or second 16 bytes.
fn b32_qs(blk: u32, half: u32) -> vec4<u32> {
    let s = b32_slot(blk);
    let v = b32_group(blk);
    switch WTYPE {
        case GGML_Q5_0: { return w_quad(v + 3u + s); }
        case GGML_Q5_1: { return w_quad(v + 2u + s); }
        case GGML_Q8_0: { return w_quad(v + 1u + 2u * s + half); }
        default: { return w_quad(v + 1u + s); }
    }
}

// q4_K / q5_K super-blocks (144, 176 bytes) are 16-byte aligned: their first
// 16 bytes (d, dmin, then 12 bytes of 6-bit scales and mins) are one vec4.
fn k45_head(blk: u32) -> vec4<u32> {
    return w_quad(w_unit(blk >> 3u) * select(9u, 11u, WTYPE == GGML_Q5_K));
}

// 6-bit scale and min of sub-block j of a q4_K / q5_K super-block, from its head.
fn scale_min_k4(h: vec4<u32>, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(byte_of(h, 4u + j) & 63u), f32(byte_of(h, 8u + j) & 63u));
    }
    let a = byte_of(h, 8u + j);
    let sc = (a & 0xfu) | ((byte_of(h, j) >> 6u) << 4u);
    let mn = (a >> 4u) | ((byte_of(h, 4u + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(mn));
}

// The quant words of a q4_K / q5_K sub-block, read as aligned vec4s: the 32
// bytes of nibbles it shares with its neighbour sub-block (qs) and, q5_K, the
// 32 bytes of fifth bits (qh). Other types read nothing here.
struct K45 {
    qs: array<vec4<u32>, 2>,
    qh: array<vec4<u32>, 2>,
}

fn k45_words(blk: u32) -> K45 {
    var w: K45;
    if (WTYPE == GGML_Q4_K || WTYPE == GGML_Q5_K) {
        let five = WTYPE == GGML_Q5_K;
        let v = w_unit(blk >> 3u) * select(9u, 11u, five);
        let q = v + select(1u, 3u, five) + ((blk & 7u) >> 1u) * 2u;
        w.qs = array<vec4<u32>, 2>(w_quad(q), w_quad(q + 1u));
        if (five) {
            w.qh = array<vec4<u32>, 2>(w_quad(v + 1u), w_quad(v + 2u));
        }
    }
    return w;
}

// Quants l*4 .. l*4+3 of q4_K / q5_K sub-block `blk` from its words `kw`.
fn k45_quad(kw: K45, blk: u32, l: u32) -> vec4<f32> {
    let j = blk & 7u;
    // Sub-blocks 2c and 2c+1 share 32 bytes: low and high nibbles.
    var q = nibbles(kw.qs[l >> 2u][l & 3u], (j & 1u) * 4u);
    if (WTYPE == GGML_Q5_K) {
        q += vec4<f32>(bits4(kw.qh[l >> 2u][l & 3u], j)) * 16.0;
    }
    return q;
}

// Quants l*4 .. l*4+3 of sub-block `blk` (a K-quant's or iq4's), as integers;
// q4_K / q5_K from the words `kw` already read (k45_words), once per sub-block.
fn sub_quad(blk: u32, l: u32, kw: K45) -> vec4<f32> {
    if (WTYPE == GGML_Q4_K || WTYPE == GGML_Q5_K) {
        return k45_quad(kw, blk, l);
    }
    return quants_k(blk, l);
}

// 6-bit scale k (0..16) of a q3_K super-block (scales at s), minus 32: low
// 4 bits from byte k % 8 (its high nibble for k >= 8), high 2 bits from byte
// 8 + k % 4 (bits 2 (k / 4) ..).
fn w_scale_q3k(k: u32, s: u32) -> f32 {
    let lo = (w_byte(s + (k & 7u)) >> ((k >> 3u) << 2u)) & 0xfu;
    let hi = (w_byte(s + 8u + (k & 3u)) >> ((k >> 2u) << 1u)) & 3u;
    return f32(i32(lo | (hi << 4u)) - 32);
}

// ggml's kvalues_iq4nl, the 16 levels an iq4_nl / iq4_xs nibble indexes, as
// i8 packed four to a word: a vector indexes dynamically everywhere, with no
// array copied into each invocation.
const KVALUES_IQ4NL = vec4<u32>(0xbfad9881u, 0xf6eaddcfu, 0x26190d01u, 0x71594535u);

fn kvalue(q: u32) -> f32 {
    return f32(i32(KVALUES_IQ4NL[q >> 2u] << (24u - ((q & 3u) << 3u))) >> 24u);
}

// The levels of four nibbles, one per byte of `word` (from bit `shift`).
fn kvalues4(word: u32, shift: u32) -> vec4<f32> {
    let w = word >> shift;
    return vec4<f32>(kvalue(w & 0xfu), kvalue((w >> 8u) & 0xfu), kvalue((w >> 16u) & 0xfu), kvalue((w >> 24u) & 0xfu));
}

// Four 2-bit fields, one per byte of `word` (from bit `shift`).
fn bits2(word: u32, shift: u32) -> vec4<f32> {
    let w = word >> shift;
    return vec4<f32>(f32(w & 3u), f32((w >> 8u) & 3u), f32((w >> 16u) & 3u), f32((w >> 24u) & 3u));
}

// Types decoded only through the 32-weight sub-block path (sub_k / quants_k):
// q2_K, q3_K, q6_K and the iq4s. Their per-element and per-quad reads decode
// one quad of a sub-block, so each layout is written once.
fn sub_only() -> bool {
    return WTYPE == GGML_Q2_K || WTYPE == GGML_Q3_K || WTYPE == GGML_Q6_K || WTYPE == GGML_IQ4_NL || WTYPE == GGML_IQ4_XS;
}

// Types whose 32-weight blocks decode as scale * q + offset per 16 weights
// (sub_k / quants_k): every K-quant sub-block, and iq4_nl's whole block.
fn scaled_sub() -> bool {
    return sub_only() || WTYPE == GGML_Q4_K || WTYPE == GGML_Q5_K || WTYPE == GGML_Q6_K;
}

fn load_w(i: u32) -> f32 {
    switch WTYPE {
        case GGML_F32: {
            return bitcast<f32>(w_at(i));
        }
        case GGML_F16: {
            return unpack2x16float(w_at(i >> 1u) >> ((i & 1u) << 4u)).x;
        }
        case GGML_BF16: {
            return bitcast<f32>(((w_at(i >> 1u) >> ((i & 1u) << 4u)) & 0xffffu) << 16u);
        }
        default: {
            // Block types (blocks of 32 or 256 weights, so whole quads): the
            // quad holding weight i. Only the embedding gather reads block
            // types a weight at a time; the matmuls read quads.
            return load_w4(i & ~3u)[i & 3u];
        }
    }
}

// Types whose blocks are whole words (q2_K 84 bytes, q4_K 144, q5_K 176,
// iq4_xs 136) and whose quant words start on word boundaries within the
// block: every w_word on them is aligned.
fn word_blocks() -> bool {
    return WTYPE == GGML_Q2_K || WTYPE == GGML_Q4_K || WTYPE == GGML_Q5_K || WTYPE == GGML_IQ4_XS;
}

// The u32 at any byte offset (q3_K's 110-byte blocks
// leave their fields off word boundaries). Word-sized blocks take one load:
// the general path's test of the offset varies by row, so a CPU driver pays
// for its second load's per-lane loop even when no lane takes it.
fn w_word(b: u32) -> u32 {
    if (word_blocks()) {
        return w_at(b >> 2u);
    }
    let s = (b & 3u) << 3u;
    let lo = w_at(b >> 2u);
    if (s == 0u) {
        return lo;
    }
    return (lo >> s) | (w_at((b >> 2u) + 1u) << (32u - s));
}

// The four signed bytes of a word (q8_0 quants), as floats.
fn i8x4(q: u32) -> vec4<f32> {
    return vec4<f32>(vec4<i32>(i32(q << 24u), i32(q << 16u), i32(q << 8u), i32(q)) >> vec4<u32>(24u));
}

fn nibbles(word: u32, shift: u32) -> vec4<f32> {
    let w = word >> shift;
    return vec4<f32>(f32(w & 0xfu), f32((w >> 8u) & 0xfu), f32((w >> 16u) & 0xfu), f32((w >> 24u) & 0xfu));
}

fn bits4(word: u32, shift: u32) -> vec4<u32> {
    return vec4<u32>((word >> shift) & 1u, (word >> (shift + 8u)) & 1u, (word >> (shift + 16u)) & 1u, (word >> (shift + 24u)) & 1u);
}

// K-quants read 32 weights at a time too: one sub-block of a 256-weight
// super-block (iq4_nl: its own 32-weight block). Its scales (and mins) and the
// quant words it needs, by sub-block; q2_K, q3_K and q6_K scale each 16
// weights on their own.
struct SubK {
    scale: f32,     // multiplies the quant
    offset: f32,    // added after (q4_K/q5_K/q2_K: -dmin * min)
    scale_hi: f32,  // the second 16 weights' scale
    offset_hi: f32, // and offset
}

fn sub_k(blk: u32) -> SubK {
    let j = blk & 7u;
    if (WTYPE == GGML_Q6_K) {   // q6_K: an i8 scale per 16 weights, times d
        let sb = w_unit(blk >> 3u);
        let sc = w_quad(q6k_group(sb) + 96u + (sb & 7u));
        let b = (j >> 2u) * 8u + (j & 3u) * 2u;
        let d = q6k_d(sb);
        let s0 = f32(i32(byte_of(sc, b) << 24u) >> 24);
        let s1 = f32(i32(byte_of(sc, b + 1u) << 24u) >> 24);
        return SubK(d * s0, 0.0, d * s1, 0.0);
    }
    if (WTYPE == GGML_Q2_K) {   // q2_K: scales[16] (scale | min << 4), qs[64], d, dmin
        let base = (blk >> 3u) * 84u;
        let dd = unpack2x16float(w_at((base + 80u) >> 2u));   // 84-byte blocks: d, dmin is one aligned word
        let s0 = w_byte(base + 2u * j);
        let s1 = w_byte(base + 2u * j + 1u);
        return SubK(dd.x * f32(s0 & 0xfu), -dd.y * f32(s0 >> 4u), dd.x * f32(s1 & 0xfu), -dd.y * f32(s1 >> 4u));
    }
    if (WTYPE == GGML_Q3_K) {   // q3_K: hmask[32], qs[64], scales[12], d
        let base = (blk >> 3u) * 110u;
        let d = w_f16(base + 108u);
        return SubK(d * w_scale_q3k(2u * j, base + 96u), 0.0, d * w_scale_q3k(2u * j + 1u, base + 96u), 0.0);
    }
    if (WTYPE == GGML_IQ4_NL) {   // iq4_nl: d, qs[16], regrouped like q4_0
        let d = b32_dm(blk).x;
        return SubK(d, 0.0, d, 0.0);
    }
    if (WTYPE == GGML_IQ4_XS) {   // iq4_xs: d, scales_h, scales_l[4], qs[128]
        let base = (blk >> 3u) * 136u;
        let head = w_at(base >> 2u);   // 136-byte blocks: d and scales_h are one aligned word
        let lo = (w_byte(base + 4u + (j >> 1u)) >> ((j & 1u) << 2u)) & 0xfu;
        let hi = (head >> (16u + 2u * j)) & 3u;
        let s = unpack2x16float(head).x * f32(i32(lo | (hi << 4u)) - 32);
        return SubK(s, 0.0, s, 0.0);
    }
    let h = k45_head(blk);
    let dd = unpack2x16float(h.x);   // d, dmin
    let sm = scale_min_k4(h, j);
    let off = -dd.y * sm.y;
    return SubK(dd.x * sm.x, off, dd.x * sm.x, off);
}

// q6_K super-blocks (ql[128], qh[64], scales[16], d: 210 bytes, fields off
// word boundaries) sit on the GPU regrouped eight at a time (upload/repack.rs):
// the eight ql (8 vec4 each), qh (4 each), scales (1 each), then the eight d
// (one vec4), 105 vec4s a group. Super-block sb's group starts at:
fn q6k_group(sb: u32) -> u32 {
    return (sb >> 3u) * 105u;
}

fn q6k_d(sb: u32) -> f32 {
    let s = sb & 7u;
    return unpack2x16float(w_quad(q6k_group(sb) + 104u)[s >> 1u] >> ((s & 1u) << 4u)).x;
}

// vec4 indexes of the low nibbles (x) and high bits (y) of q6_K sub-block
// `blk`: 32 bytes (two vec4s) each.
fn q6k_at(blk: u32) -> vec2<u32> {
    let j = blk & 7u;
    let sb = w_unit(blk >> 3u);
    let g = q6k_group(sb) + (sb & 7u) * 8u;
    let n = j >> 2u;
    return vec2<u32>(g + n * 4u + (j & 1u) * 2u, q6k_group(sb) + 64u + (sb & 7u) * 4u + n * 2u);
}

// Four q6_K quants (minus 32) from a word of low nibbles and a word of high
// bits: sub-block quarter q takes the high nibbles for q >= 2 and bits 2q..
fn q6k_quad(ql: u32, qh: u32, quarter: u32) -> vec4<f32> {
    let hb = bits2(qh, 2u * quarter);
    return nibbles(ql, select(0u, 4u, quarter >= 2u)) + hb * 16.0 - 32.0;
}

// Quants w*4 .. w*4+3 of sub-block `blk` of a K-quant, as integers (q4_K and
// q5_K: sub_quad, whose callers read the words once per sub-block).
fn quants_k(blk: u32, w: u32) -> vec4<f32> {
    let j = blk & 7u;
    let l = 4u * w;
    if (WTYPE == GGML_Q6_K) {
        let at = q6k_at(blk);
        return q6k_quad(w_quad(at.x + (w >> 2u))[w & 3u], w_quad(at.y + (w >> 2u))[w & 3u], j & 3u);
    }
    if (WTYPE == GGML_Q2_K || WTYPE == GGML_Q3_K) {
        // Sub-block 4n + s of q2_K / q3_K: bits 2s.. of the 32 bytes of half n;
        // q3_K's third bit is bit 4n + s of hmask (clear: subtract 4).
        let n = j >> 2u;
        let s = j & 3u;
        if (WTYPE == GGML_Q2_K) {
            return bits2(w_at(((blk >> 3u) * 84u + 16u + n * 32u + l) >> 2u), 2u * s);
        }
        let base = (blk >> 3u) * 110u;
        let lo = bits2(w_word(base + 32u + n * 32u + l), 2u * s);
        return lo + vec4<f32>(bits4(w_word(base + l), 4u * n + s)) * 4.0 - 4.0;
    }
    if (WTYPE == GGML_IQ4_NL || WTYPE == GGML_IQ4_XS) {
        // 16 bytes per 32 weights: byte b holds weight b (low nibble) and b + 16.
        let shift = select(0u, 4u, w >= 4u);
        if (WTYPE == GGML_IQ4_NL) {
            return kvalues4(b32_qs(blk, 0u)[w & 3u], shift);
        }
        return kvalues4(w_word((blk >> 3u) * 136u + 8u + j * 16u + (l & 15u)), shift);
    }
    return k45_quad(k45_words(blk), blk, w);
}

// The 32 weights of block `blk` (q4_0 … q8_0, iq4_nl; for K-quants and
// iq4_xs a sub-block)
// as eight vec4s, element order: one header and 4-8 quant words per block,
// instead of a header per four weights.
fn decode_block32(blk: u32) -> array<vec4<f32>, 8> {
    var w: array<vec4<f32>, 8>;
    if (scaled_sub()) {
        let k = sub_k(blk);
        let kw = k45_words(blk);
        for (var j = 0u; j < 8u; j++) {
            w[j] = sub_quad(blk, j, kw) * select(k.scale, k.scale_hi, j >= 4u) + select(k.offset, k.offset_hi, j >= 4u);
        }
        return w;
    }
    if (WTYPE == GGML_Q8_0) {
        let d = b32_dm(blk).x;
        let qs = array<vec4<u32>, 2>(b32_qs(blk, 0u), b32_qs(blk, 1u));
        for (var j = 0u; j < 8u; j++) {
            w[j] = i8x4(qs[j >> 2u][j & 3u]) * d;
        }
        return w;
    }
    let q = q45_layout(blk);
    for (var j = 0u; j < 4u; j++) {
        let lo = q45_quants(q, j, false);
        let hi = q45_quants(q, j, true);
        w[j] = lo * q.d + q.m;
        w[j + 4u] = hi * q.d + q.m;
    }
    return w;
}

// Where a q4_0/q4_1/q5_0/q5_1 block keeps its fields, and its scale and
// offset: value = d * q + m (q4_0: m = -8 d, q5_0: m = -16 d).
struct Q45 {
    qs: vec4<u32>,  // the 16 bytes of nibbles
    qh: u32,        // q5: the 32 high bits
    d: f32,
    m: f32,
}

fn q45_layout(blk: u32) -> Q45 {
    var qh = 0u;
    if (WTYPE == GGML_Q5_0 || WTYPE == GGML_Q5_1) {
        qh = b32_qh(blk);
    }
    let dm = b32_dm(blk);
    return Q45(b32_qs(blk, 0u), qh, dm.x, dm.y);
}

// Quants 4j .. 4j+3 of the block's first (or, `high`, second) 16 weights:
// byte i holds weight i (low nibble) and weight i + 16 (high nibble); q5 adds
// bit i (or i + 16) of qh as the fifth bit.
fn q45_quants(q: Q45, j: u32, high: bool) -> vec4<f32> {
    var v = nibbles(q.qs[j], select(0u, 4u, high));
    if (WTYPE == GGML_Q5_0 || WTYPE == GGML_Q5_1) {
        let b = q.qh >> (4u * j + select(0u, 16u, high));
        v += vec4<f32>(f32(b & 1u), f32((b >> 1u) & 1u), f32((b >> 2u) & 1u), f32((b >> 3u) & 1u)) * 16.0;
    }
    return v;
}

// The sums of x's first and last 16 values, which the block types with an
// offset per 16 weights multiply it by (dot_block32's `sums`). They do not
// depend on the weights, so a caller that dots several rows' blocks with the
// same x computes them once.
fn x_sums(x: ptr<function, array<vec4<f32>, 8>>) -> vec2<f32> {
    let lo = (*x)[0] + (*x)[1] + (*x)[2] + (*x)[3];
    let hi = (*x)[4] + (*x)[5] + (*x)[6] + (*x)[7];
    return vec2<f32>(dot(lo, vec4<f32>(1.0)), dot(hi, vec4<f32>(1.0)));
}

// Dot product of block `blk` with x[0..32], without materializing the weights
// (the decode path: cheaper than decode_block32 + dot on CPU drivers); `sums`
// is x_sums(x).
fn dot_block32(blk: u32, x: ptr<function, array<vec4<f32>, 8>>, sums: vec2<f32>) -> f32 {
    if (WTYPE == GGML_Q6_K) {
        // q6_K: each 32-byte field as two aligned vec4s.
        let k = sub_k(blk);
        let at = q6k_at(blk);
        let quarter = blk & 3u;
        let l = array<vec4<u32>, 2>(w_quad(at.x), w_quad(at.x + 1u));
        let h = array<vec4<u32>, 2>(w_quad(at.y), w_quad(at.y + 1u));
        var s0 = 0.0;
        var s1 = 0.0;
        for (var j = 0u; j < 4u; j++) {
            s0 += dot(q6k_quad(l[0][j], h[0][j], quarter), (*x)[j]);
            s1 += dot(q6k_quad(l[1][j], h[1][j], quarter), (*x)[j + 4u]);
        }
        return k.scale * s0 + k.scale_hi * s1;
    }
    if (scaled_sub()) {
        // sum(scale * q + offset) x, per 16 weights.
        let k = sub_k(blk);
        let kw = k45_words(blk);
        var s0 = 0.0;
        var s1 = 0.0;
        for (var j = 0u; j < 4u; j++) {
            s0 += dot(sub_quad(blk, j, kw), (*x)[j]);
            s1 += dot(sub_quad(blk, j + 4u, kw), (*x)[j + 4u]);
        }
        return k.scale * s0 + k.scale_hi * s1 + k.offset * sums.x + k.offset_hi * sums.y;
    }
    if (WTYPE == GGML_Q8_0) {
        let lo = b32_qs(blk, 0u);
        let hi = b32_qs(blk, 1u);
        var s = 0.0;
        for (var j = 0u; j < 4u; j++) {
            s += dot(i8x4(lo[j]), (*x)[j]) + dot(i8x4(hi[j]), (*x)[j + 4u]);
        }
        return s * b32_dm(blk).x;
    }
    // sum(d * q + m) x = d * sum(q x) + m * sum(x).
    let q = q45_layout(blk);
    var s = 0.0;
    for (var j = 0u; j < 4u; j++) {
        s += dot(q45_quants(q, j, false), (*x)[j]) + dot(q45_quants(q, j, true), (*x)[j + 4u]);
    }
    return q.d * s + q.m * (sums.x + sums.y);
}

// Quad i / 4 (i a multiple of 4) of a type read by 32-weight sub-blocks.
fn sub_w4(i: u32) -> vec4<f32> {
    let blk = i >> 5u;
    let j = (i & 31u) >> 2u;
    let k = sub_k(blk);
    let hi = j >= 4u;
    return quants_k(blk, j) * select(k.scale, k.scale_hi, hi) + select(k.offset, k.offset_hi, hi);
}

// Four consecutive weights starting at element i (a multiple of 4): one block's
// scale and one word of quants instead of four element-wise decodes.
fn load_w4(i: u32) -> vec4<f32> {
    if (sub_only()) {
        return sub_w4(i);
    }
    switch WTYPE {
        case GGML_F32: {
            return vec4<f32>(bitcast<f32>(w_at(i)), bitcast<f32>(w_at(i + 1u)), bitcast<f32>(w_at(i + 2u)), bitcast<f32>(w_at(i + 3u)));
        }
        case GGML_F16: {
            let w = i >> 1u;
            return vec4<f32>(unpack2x16float(w_at(w)), unpack2x16float(w_at(w + 1u)));
        }
        case GGML_BF16: {
            let a = w_at(i >> 1u);
            let b = w_at((i >> 1u) + 1u);
            return vec4<f32>(bitcast<f32>(a << 16u), bitcast<f32>(a & 0xffff0000u), bitcast<f32>(b << 16u), bitcast<f32>(b & 0xffff0000u));
        }
        case GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1: {
            let blk = i >> 5u;
            let j = i & 31u;
            var q = nibbles(b32_qs(blk, 0u)[(j & 15u) >> 2u], select(0u, 4u, j >= 16u));
            if (WTYPE == GGML_Q5_0 || WTYPE == GGML_Q5_1) {
                let h = b32_qh(blk) >> j;   // weights j .. j+3: four consecutive bits
                q += vec4<f32>(f32(h & 1u), f32((h >> 1u) & 1u), f32((h >> 2u) & 1u), f32((h >> 3u) & 1u)) * 16.0;
            }
            let dm = b32_dm(blk);
            return q * dm.x + dm.y;
        }
        case GGML_Q8_0: {
            let blk = i >> 5u;
            let j = i & 31u;
            return i8x4(b32_qs(blk, j >> 4u)[(j & 15u) >> 2u]) * b32_dm(blk).x;
        }
        case GGML_Q4_K, GGML_Q5_K: {
            let five = WTYPE == GGML_Q5_K;
            let base = w_unit(i >> 8u) * select(144u, 176u, five);
            let j = i & 255u;
            let c = j >> 6u;
            let hi = (j >> 5u) & 1u;
            let l = j & 31u;
            var q = nibbles(w_at((base + select(16u, 48u, five) + c * 32u + l) >> 2u), hi * 4u);
            if (five) {
                q += vec4<f32>(bits4(w_at((base + 16u + l) >> 2u), 2u * c + hi)) * 16.0;
            }
            let h = k45_head(i >> 5u);
            let dd = unpack2x16float(h.x);
            let sm = scale_min_k4(h, 2u * c + hi);
            return q * (dd.x * sm.x) - dd.y * sm.y;
        }
        default: {   // none: every other type is sub_only()
            return vec4<f32>(0.0);
        }
    }
}
