//! Weights onto the GPU: `planner` decides each GPU tensor's layout and checks
//! every source tensor's presence and shape, with no GPU involved; then
//! `executor` allocates the buffers and streams the tensors into them.
//! `types` are the weights the forward pass binds, `naming` the tensor names
//! of each file format, `repack` how 32-weight block types sit on the GPU,
//! `interleave` how lavapipe's weight matrices order their rows.

mod executor;
mod interleave;
mod naming;
mod planner;
mod repack;
mod types;

pub use executor::Progress;
pub use interleave::{interleave, unit_elems, units_per_row};
pub use repack::{gpu_nbytes, packing, to_gpu, Packing};
pub use naming::{ExpertTensor, GgufNaming, HfNaming, HfQwenMoeNaming, LayerTensor, Naming};
pub use types::{Ffn, LayerWeights, Matrix, Slab, VisionLayerWeights, VisionWeights, Weights};

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Store, WeightStore};
use crate::parse::{DType, ModelConfig, TensorTable};
use crate::source::ModelSource;

/// A matrix's weights from a file's bytes (whole rows of `cols` elements of
/// `dtype`) as the upload stores them: in a buffer, or with `texture` (the
/// upload's choice on lavapipe) in a texture, rows interleaved where the
/// type allows. The kernel tests build their weights with it.
pub fn store_matrix(gpu: &Gpu, dtype: DType, cols: usize, file: &[u8], texture: bool) -> WeightStore {
    if !texture {
        return WeightStore::Buffer(gpu.storage_init("weights", &to_gpu(dtype, file)));
    }
    let units = units_per_row(dtype, cols);
    let bytes = if units > 0 { to_gpu(dtype, &interleave(dtype, cols, file)) } else { to_gpu(dtype, file) };
    gpu.weight_texture("weights", &gpu.storage_init("weights", &bytes), units)
}

/// Check, allocate and upload every weight of `cfg` from `src`. `budget`:
/// the GPU bytes the weights may take (`max_gpu_bytes` less the rest), checked
/// before anything is allocated or downloaded. `bound` gets the weights before
/// their bytes where they can be bound then (in buffers; see
/// `executor::upload`), so the forward pass is built while they stream in.
#[allow(clippy::too_many_arguments)]
pub async fn load_weights<S: ModelSource>(
    gpu: &Gpu,
    store: Store,
    src: &S,
    cfg: &ModelConfig,
    table: &TensorTable,
    naming: &dyn Naming,
    parallel: usize,
    max_binding: Option<u64>,
    budget: Option<u64>,
    progress: &mut dyn FnMut(Progress),
    bound: &mut dyn FnMut(&Weights),
) -> Result<Weights> {
    let limit = gpu.max_weight_binding(store).min(max_binding.unwrap_or(u64::MAX)).max(4);
    let layout = planner::plan(cfg, table, naming, limit, store == Store::Texture)?;
    let bytes = layout.bytes;
    if let Some(budget) = budget.filter(|&b| bytes > b) {
        return Err(Error::OutOfMemory(format!(
            "the weights need {bytes} bytes of GPU memory; {budget} bytes are left of the GPU memory limit (max_gpu_bytes) after the KV cache and activations"
        )));
    }
    executor::upload(gpu, src, layout, parallel, progress, bound).await
}
