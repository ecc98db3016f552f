//! Weights onto the GPU: `planner` decides each GPU tensor's layout and checks
//! every source tensor's presence and shape, with no GPU involved; then
//! `executor` allocates the buffers and streams the tensors into them.
//! `types` are the weights the forward pass binds, `naming` the tensor names
//! of each file format, `repack` how 32-weight block types sit on the GPU.

mod executor;
mod naming;
mod planner;
mod repack;
mod types;

pub use executor::Progress;
pub use repack::{gpu_nbytes, packing, to_gpu, Packing};
pub use naming::{ExpertTensor, GgufNaming, HfNaming, HfQwenMoeNaming, LayerTensor, Naming};
pub use types::{Ffn, LayerWeights, Matrix, Slab, Weights};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::parse::{ModelConfig, TensorTable};
use crate::source::ModelSource;

/// Check, allocate and upload every weight of `cfg` from `src`. `budget`:
/// the GPU bytes the weights may take (`max_gpu_bytes` less the rest), checked
/// before anything is allocated or downloaded.
#[allow(clippy::too_many_arguments)]
pub async fn load_weights<S: ModelSource>(
    gpu: &Gpu,
    src: &S,
    cfg: &ModelConfig,
    table: &TensorTable,
    naming: &dyn Naming,
    parallel: usize,
    max_binding: Option<u64>,
    budget: Option<u64>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Weights> {
    let limit = gpu.max_binding().min(max_binding.unwrap_or(u64::MAX)).max(4);
    let layout = planner::plan(cfg, table, naming, limit)?;
    let bytes = layout.bytes;
    if let Some(budget) = budget.filter(|&b| bytes > b) {
        return Err(Error::OutOfMemory(format!(
            "the weights need {bytes} bytes of GPU memory; {budget} bytes are left of the GPU memory limit (max_gpu_bytes) after the KV cache and activations"
        )));
    }
    executor::upload(gpu, src, layout, parallel, progress).await
}
