//! Awaiting a buffer map without blocking primitives, so the same code runs in
//! the browser (where the callback fires from the event loop) and natively
//! (where we poll the device until it fires).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::Gpu;
use crate::error::{Error, Result};

/// What a wgpu callback hands over, and who waits for it.
struct Slot<T> {
    done: Option<T>,
    waker: Option<Waker>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot { done: None, waker: None }
    }
}

/// A callback's value as a future (`None`: the slot was poisoned).
pub(crate) struct Callback<T>(Arc<Mutex<Slot<T>>>);

impl<T> Callback<T> {
    /// The future, and the function the callback calls with its value.
    pub(crate) fn new() -> (Self, impl FnOnce(T) + Send + 'static)
    where
        T: Send + 'static,
    {
        let slot = Arc::new(Mutex::new(Slot::default()));
        let fire = {
            let slot = slot.clone();
            move |v| {
                if let Ok(mut s) = slot.lock() {
                    s.done = Some(v);
                    if let Some(w) = s.waker.take() {
                        w.wake();
                    }
                }
            }
        };
        (Callback(slot), fire)
    }
}

impl<T> Future for Callback<T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(mut s) = self.0.lock() else {
            return Poll::Ready(None);
        };
        match s.done.take() {
            Some(r) => Poll::Ready(Some(r)),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Resolves once the GPU has done all the work submitted before the call
/// (in browsers `onSubmittedWorkDone`; awaiting it yields to the event loop).
#[cfg(target_arch = "wasm32")]
pub(super) fn submitted_work_done(gpu: &Gpu) -> impl Future<Output = ()> + use<> {
    let (done, fire) = Callback::<()>::new();
    gpu.queue.on_submitted_work_done(move || fire(()));
    async move {
        done.await;
    }
}

pub(super) async fn read_mapped(gpu: &Gpu, buf: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
    let (mapped, fire) = Callback::new();
    let slice = buf.slice(..size);
    slice.map_async(wgpu::MapMode::Read, fire);
    #[cfg(not(target_arch = "wasm32"))]
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
    let mapped = mapped.await.unwrap_or(Err(wgpu::BufferAsyncError));
    gpu.check()?;
    // We never unmap or destroy a buffer while it maps, so a failed map means
    // the device is gone (WebGPU rejects mapAsync on a lost device).
    mapped.map_err(|_| {
        gpu.mark_lost();
        Error::DeviceLost("a GPU readback failed: the device was lost".into())
    })?;
    let out = {
        let view = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading a mapped buffer: {e}")))?;
        view.to_vec()
    };
    buf.unmap();
    Ok(out)
}
