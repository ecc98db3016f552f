//! Parsing what a model is made of: its configuration and its tensor table.
//! Nothing here touches the GPU; every size and offset read from a file is
//! checked before it is trusted.

pub mod config;
pub mod dequant;
pub mod gguf;
pub mod hf;
pub mod mmproj;
pub mod safetensors;

pub use config::{Arch, ModelConfig, MoeConfig, RopeScaling};
pub use hf::TensorTable;

/// Storage type of a tensor as it sits in a file and on the GPU. Quantized
/// types stay in their block format on the GPU; kernels dequantize as they read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
    Q2K,
    Q3K,
    IQ4NL,
    IQ4XS,
}

/// Every type in ggml's `enum ggml_type` (ggml.h), by id: error messages name
/// a type a file uses even when this engine cannot read it. Ids ggml has
/// retired keep their old names.
const GGML_TYPE_NAMES: [&str; 43] = [
    "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
    "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
    "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4",
    "NVFP4", "Q1_0", "Q2_0",
];

/// ggml's name of GGML type id `t` (`None` for an id ggml never had).
pub fn ggml_type_name(t: u32) -> Option<&'static str> {
    GGML_TYPE_NAMES.get(t as usize).copied()
}

/// Every type the engine reads, in ggml's id order.
pub const SUPPORTED: [DType; 15] = [
    DType::F32, DType::F16, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
    DType::Q2K, DType::Q3K, DType::Q4K, DType::Q5K, DType::Q6K, DType::IQ4NL, DType::IQ4XS, DType::BF16,
];

impl DType {
    /// (elements, bytes) of one block.
    pub fn block(self) -> (u64, u64) {
        match self {
            DType::F32 => (1, 4),
            DType::F16 | DType::BF16 => (1, 2),
            DType::Q4_0 => (32, 18),
            DType::Q4_1 => (32, 20),
            DType::Q5_0 => (32, 22),
            DType::Q5_1 => (32, 24),
            DType::Q8_0 => (32, 34),
            DType::Q4K => (256, 144),
            DType::Q5K => (256, 176),
            DType::Q6K => (256, 210),
            DType::Q2K => (256, 84),
            DType::Q3K => (256, 110),
            DType::IQ4NL => (32, 18),
            DType::IQ4XS => (256, 136),
        }
    }

    /// Bytes of `numel` elements, if that is a whole number of blocks.
    pub fn nbytes(self, numel: u64) -> Option<u64> {
        let (e, b) = self.block();
        if !numel.is_multiple_of(e) {
            return None;
        }
        (numel / e).checked_mul(b)
    }

    pub fn is_quantized(self) -> bool {
        self.block().0 > 1
    }

    /// The value of the `WTYPE` pipeline constant in shaders/weights.wgsl: the
    /// GGML type id, so GGUF and shaders share one numbering.
    pub fn shader_code(self) -> u32 {
        self.ggml_type()
    }

    pub fn ggml_type(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q5_0 => 6,
            DType::Q5_1 => 7,
            DType::Q8_0 => 8,
            DType::Q4K => 12,
            DType::Q5K => 13,
            DType::Q6K => 14,
            DType::Q2K => 10,
            DType::Q3K => 11,
            DType::IQ4NL => 20,
            DType::IQ4XS => 23,
            DType::BF16 => 30,
        }
    }

    pub fn from_ggml(t: u32) -> Option<Self> {
        SUPPORTED.into_iter().find(|d| d.ggml_type() == t)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q8_0 => "q8_0",
            DType::Q4K => "q4_k",
            DType::Q5K => "q5_k",
            DType::Q6K => "q6_k",
            DType::Q2K => "q2_k",
            DType::Q3K => "q3_k",
            DType::IQ4NL => "iq4_nl",
            DType::IQ4XS => "iq4_xs",
        }
    }
}

/// Where a tensor's bytes are: file, absolute byte range, type and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub file: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub offset: u64,
    pub nbytes: u64,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}
