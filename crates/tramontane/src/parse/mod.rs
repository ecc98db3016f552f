//! Parsing what a model is made of: its configuration and its tensor table.
//! Nothing here touches the GPU; every size and offset read from a file is
//! checked before it is trusted.

pub mod config;
pub mod hf;
pub mod safetensors;

pub use config::{Arch, ModelConfig, MoeConfig, RopeScaling};
pub use hf::TensorTable;

/// Storage type of a tensor as it sits in a file (and, for matrices, on the GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The value of the `WTYPE` pipeline constant in shaders/weights.wgsl.
    pub fn shader_code(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::BF16 => 2,
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
