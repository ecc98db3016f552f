//! Awaiting a buffer map without blocking primitives, so the same code runs in
//! the browser (where the callback fires from the event loop) and natively
//! (where we poll the device until it fires).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::Gpu;
use crate::error::{Error, Result};

#[derive(Default)]
struct Slot {
    done: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
    waker: Option<Waker>,
}

struct MapFuture(Arc<Mutex<Slot>>);

impl Future for MapFuture {
    type Output = std::result::Result<(), wgpu::BufferAsyncError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(mut s) = self.0.lock() else {
            return Poll::Ready(Err(wgpu::BufferAsyncError));
        };
        match s.done.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

pub(super) async fn read_mapped(gpu: &Gpu, buf: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
    let slot = Arc::new(Mutex::new(Slot::default()));
    let slice = buf.slice(..size);
    {
        let slot = slot.clone();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            if let Ok(mut s) = slot.lock() {
                s.done = Some(r);
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
        });
    }
    #[cfg(not(target_arch = "wasm32"))]
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
    let mapped = MapFuture(slot).await;
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
