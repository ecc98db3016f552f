// Prelude prepended to every kernel (see crates/tramontane/src/gpu/kernels.rs).
//
// `Step` holds what changes from one forward pass to the next (how many tokens,
// at which position, how to sample). It is one small uniform buffer written once
// per pass, so pipelines and bind groups never change after load.
struct Step {
    n_tokens: u32,          // rows in this chunk
    start_pos: u32,         // absolute position of row 0
    n_splits: u32,          // attention: key splits per query (split-K)
    split_len: u32,         // attention: keys per split
    temperature: f32,
    top_k: u32,             // 0 = off
    top_p: f32,             // 1 = off
    repetition_penalty: f32,// 1 = off (HF semantics: divide positive logits, multiply negative)
    frequency_penalty: f32, // OpenAI semantics, per generated occurrence
    presence_penalty: f32,  // OpenAI semantics, once if generated at all
    seed: u32,
    sample_index: u32,      // which generated token this is: the RNG stream position
    greedy: u32,
    logprobs: u32,          // 0 = off, else 1 + how many top alternatives to report
    masked: u32,            // 1: the sampler draws only tokens allowed by its MASK
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
