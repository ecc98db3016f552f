//! The model cache's large files in the origin private file system (OPFS).
//!
//! Why: in Chromium a file read back from OPFS streams 1.5-2x faster than the
//! same bytes from Cache API entries (BENCHMARKS.md, "The first minute"), it
//! is one file however large (no parts), and `File.slice` starts a read at any
//! byte, so a load that skips ahead opens the file there. The Cache API still
//! holds the index entry under the file's URL (written last: a file is cached
//! only once all of it is), which names the OPFS file; the manifest and
//! `Engine.cache.has/delete` go through that entry.
//!
//! In a dedicated worker (`WorkerEngine`, the demo) a cached file is read
//! through a `FileSystemSyncAccessHandle` instead: each read goes straight
//! into the loader's buffer in wasm memory, with no stream, no chunks and no
//! copy through JS.
//!
//! Each load writes its own file (`<url hash>-<load id>`), so a failed load
//! removes only what it wrote and two loads never write the same file; an
//! index that replaces an older one removes the older file.
//!
//! What no index names is swept at the start of a load: the file of a load
//! killed mid-write (a closed tab, a terminated worker: no code of ours ran
//! to remove it), or one whose removal failed while a reader held it open.
//! Every write holds a Web Lock shared from creating its file to writing its
//! index, and every load that reads the files holds it too; a sweep takes it
//! exclusively, and only if it is free at once, so it never removes a file
//! that a tab or worker is still filling or reading (an index replaced while
//! a reader reads leaves its file unnamed).

use js_sys::{Function, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    File, FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions, FileSystemGetFileOptions, FileSystemReadWriteOptions,
    FileSystemSyncAccessHandle, StorageManager,
};

/// The OPFS directory of the cache (next to the Cache API's `tramontane-v1`).
pub const DIR: &str = "tramontane-v1";

/// `navigator.storage` in a window or a worker, if it has `getDirectory`.
fn storage() -> Option<StorageManager> {
    let nav = Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
    let storage = Reflect::get(&nav, &"storage".into()).ok()?;
    if storage.is_undefined() || storage.is_null() {
        return None;
    }
    Reflect::get(&storage, &"getDirectory".into()).ok()?.dyn_into::<Function>().ok()?;
    Some(storage.unchecked_into())
}

/// Whether this browser can write OPFS files from here (`createWritable`:
/// Safari long had OPFS without it, then only in workers).
pub fn writable() -> bool {
    let Ok(ctor) = Reflect::get(&js_sys::global(), &"FileSystemFileHandle".into()) else { return false };
    let Ok(proto) = Reflect::get(&ctor, &"prototype".into()) else { return false };
    Reflect::get(&proto, &"createWritable".into()).is_ok_and(|f| f.is_function())
}

/// The cache's OPFS directory (made when `create`); `None` where there is no
/// OPFS, or no such directory.
pub async fn dir(create: bool) -> Option<FileSystemDirectoryHandle> {
    let root: FileSystemDirectoryHandle = JsFuture::from(storage()?.get_directory()).await.ok()?.dyn_into().ok()?;
    let opts = FileSystemGetDirectoryOptions::new();
    opts.set_create(create);
    JsFuture::from(root.get_directory_handle_with_options(DIR, &opts)).await.ok()?.dyn_into().ok()
}

/// The file a load `load` writes for `url`: a hash of the URL (OPFS names
/// cannot hold `/`) and the load's id.
pub fn file_name(url: &str, load: &str) -> String {
    // FNV-1a: a name, not a check (the index entry says which file is whose).
    let h = url.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{h:016x}-{load}")
}

/// A new, empty file `name` to write.
pub async fn create(dir: &FileSystemDirectoryHandle, name: &str) -> Result<FileSystemFileHandle, JsValue> {
    let opts = FileSystemGetFileOptions::new();
    opts.set_create(true);
    JsFuture::from(dir.get_file_handle_with_options(name, &opts)).await?.dyn_into()
}

/// File `name` as it is now, if it exists.
pub async fn open(dir: &FileSystemDirectoryHandle, name: &str) -> Option<File> {
    let handle: FileSystemFileHandle = JsFuture::from(dir.get_file_handle(name)).await.ok()?.dyn_into().ok()?;
    JsFuture::from(handle.get_file()).await.ok()?.dyn_into().ok()
}

/// Remove file `name` (nothing if it is not there).
pub async fn remove(dir: &FileSystemDirectoryHandle, name: &str) {
    let _ = JsFuture::from(dir.remove_entry(name)).await;
}

/// The Web Lock of the cache's OPFS files in use (see the module's comment).
const IN_USE: &str = "tramontane-v1-opfs";

/// A Web Lock, held until dropped.
pub struct Held(Option<Function>);

impl Held {
    /// No lock (none to be had here).
    pub fn none() -> Self {
        Held(None)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            let _ = release.call0(&JsValue::UNDEFINED);
        }
    }
}

/// `navigator.locks` in a window or a worker, if there is one.
fn locks() -> Option<JsValue> {
    let nav = Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
    let locks = Reflect::get(&nav, &"locks".into()).ok()?;
    Reflect::get(&locks, &"request".into()).ok()?.dyn_into::<Function>().ok()?;
    Some(locks)
}

/// Take the in-use lock in `mode` (waiting for it), or `None` where `at_once`
/// and it is held elsewhere, or where there are no Web Locks.
async fn lock(mode: &str, at_once: bool) -> Option<Held> {
    let locks = locks()?;
    let request: Function = Reflect::get(&locks, &"request".into()).ok()?.dyn_into().ok()?;
    // The lock is held until the promise its callback returns settles: that
    // promise's resolve is the `Held`.
    let (until, release) = crate::fetch::deferred()?;
    let (got, granted) = crate::fetch::deferred()?;
    let refused = granted.clone();
    let callback = wasm_bindgen::closure::Closure::once_into_js(move |lock: JsValue| -> JsValue {
        let _ = granted.call1(&JsValue::UNDEFINED, &JsValue::from_bool(!lock.is_null()));
        if lock.is_null() {
            JsValue::UNDEFINED
        } else {
            until.into()
        }
    });
    let opts = js_sys::Object::new();
    Reflect::set(&opts, &"mode".into(), &mode.into()).ok()?;
    Reflect::set(&opts, &"ifAvailable".into(), &at_once.into()).ok()?;
    let requested = request.call3(&locks, &IN_USE.into(), &opts, &callback).ok()?;
    if let Ok(p) = requested.dyn_into::<js_sys::Promise>() {
        // Settles when the lock is released; a rejection (no lock to be had
        // here) ends the wait for it.
        let on_reject = wasm_bindgen::closure::Closure::once(move |_: JsValue| {
            let _ = refused.call1(&JsValue::UNDEFINED, &JsValue::FALSE);
        });
        if let Some(catch) = Reflect::get(&p, &"catch".into()).ok().and_then(|f| f.dyn_into::<Function>().ok()) {
            let _ = catch.call1(&p, &on_reject.into_js_value());
        }
    }
    let held = Held(Some(release));
    JsFuture::from(got).await.ok()?.as_bool().filter(|&g| g).map(|_| held)
}

/// The lock a write holds from creating its file to writing its index, and
/// a load while it reads the files (`None` without Web Locks: they go on,
/// and no sweep runs).
pub async fn in_use_lock() -> Option<Held> {
    lock("shared", false).await
}

/// The lock a sweep holds, if no write holds it now.
pub async fn sweep_lock() -> Option<Held> {
    lock("exclusive", true).await
}

/// The names of the files in `dir`.
pub async fn file_names(dir: &FileSystemDirectoryHandle) -> Vec<String> {
    let mut out = Vec::new();
    let Some(iter) = Reflect::get(dir, &"keys".into()).ok().and_then(|f| f.dyn_into::<Function>().ok()).and_then(|f| f.call0(dir).ok()) else {
        return out;
    };
    let Some(next) = Reflect::get(&iter, &"next".into()).ok().and_then(|f| f.dyn_into::<Function>().ok()) else { return out };
    while let Some(step) = next.call0(&iter).ok().and_then(|p| p.dyn_into::<js_sys::Promise>().ok()) {
        let Ok(r) = JsFuture::from(step).await else { break };
        if Reflect::get(&r, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
            break;
        }
        if let Some(name) = Reflect::get(&r, &"value".into()).ok().and_then(|v| v.as_string()) {
            out.push(name);
        }
    }
    out
}

/// Whether synchronous access handles exist here (dedicated workers only).
pub fn sync_access() -> bool {
    let Ok(ctor) = Reflect::get(&js_sys::global(), &"FileSystemFileHandle".into()) else { return false };
    let Ok(proto) = Reflect::get(&ctor, &"prototype".into()) else { return false };
    Reflect::get(&proto, &"createSyncAccessHandle".into()).is_ok_and(|f| f.is_function())
}

/// A synchronous read handle on file `name` of `size` bytes; `None` where
/// there is none to be had (not a worker, the file gone or of another size,
/// another context holding it).
pub async fn sync_reader(dir: &FileSystemDirectoryHandle, name: &str, size: u64) -> Option<SyncReader> {
    if !sync_access() {
        return None;
    }
    let file: FileSystemFileHandle = JsFuture::from(dir.get_file_handle(name)).await.ok()?.dyn_into().ok()?;
    // Read-only where the browser knows the mode (several readers at once);
    // elsewhere the option is ignored and the handle is exclusive.
    let create: Function = Reflect::get(&file, &"createSyncAccessHandle".into()).ok()?.dyn_into().ok()?;
    let opts = js_sys::Object::new();
    Reflect::set(&opts, &"mode".into(), &"read-only".into()).ok()?;
    let p: js_sys::Promise = create.call1(&file, &opts).ok()?.dyn_into().ok()?;
    // A load dropped while the handle is made (it failed elsewhere) must
    // not leave the handle open: it would hold the file until the worker ends.
    let mut unclaimed = Unclaimed(Some(p.clone()));
    let made = JsFuture::from(p).await;
    unclaimed.0 = None;
    let handle: FileSystemSyncAccessHandle = made.ok()?.dyn_into().ok()?;
    let reader = SyncReader(handle);
    (reader.0.get_size().ok()? == size as f64).then_some(reader)
}

/// A handle being made that nobody waits for any more: closed once made.
struct Unclaimed(Option<js_sys::Promise>);

impl Drop for Unclaimed {
    fn drop(&mut self) {
        let Some(p) = self.0.take() else { return };
        let close = wasm_bindgen::closure::Closure::once(|h: JsValue| {
            if let Ok(h) = h.dyn_into::<FileSystemSyncAccessHandle>() {
                h.close();
            }
        });
        let then = Reflect::get(&p, &"then".into()).ok().and_then(|f| f.dyn_into::<Function>().ok());
        if let Some(then) = then {
            if let Ok(chained) = then.call1(&p, &close.into_js_value()) {
                if let Ok(chained) = chained.dyn_into::<js_sys::Promise>() {
                    crate::fetch::quietly(&chained);
                }
            }
        }
    }
}

/// A synchronous read handle, closed when dropped (an open one keeps the file
/// from being removed).
pub struct SyncReader(FileSystemSyncAccessHandle);

impl SyncReader {
    /// Fill `out` from byte `at` of the file; the bytes read (fewer: the
    /// file ended).
    pub fn read(&self, out: &mut [u8], at: u64) -> Result<usize, JsValue> {
        let mut done = 0;
        while done < out.len() {
            let opts = FileSystemReadWriteOptions::new();
            opts.set_at((at + done as u64) as f64);
            let n = self.0.read_with_u8_array_and_options(&mut out[done..], &opts)? as usize;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }
}

impl Drop for SyncReader {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A synchronous write handle on a new file (in a worker): each chunk written
/// in place, no round trip to the browser's storage process, no swap file
/// (`createWritable`'s), so several times faster. A failed copy removes the
/// file, and only a whole file gets an index entry, so the lack of a swap
/// file loses nothing.
pub struct SyncWriter {
    handle: FileSystemSyncAccessHandle,
    at: std::cell::Cell<u64>,
}

pub async fn sync_writer(file: &FileSystemFileHandle) -> Option<SyncWriter> {
    let handle: FileSystemSyncAccessHandle = JsFuture::from(file.create_sync_access_handle()).await.ok()?.dyn_into().ok()?;
    Some(SyncWriter { handle, at: std::cell::Cell::new(0) })
}

impl SyncWriter {
    /// Append `chunk`.
    pub fn write(&self, chunk: &js_sys::Uint8Array) -> Result<(), JsValue> {
        let mut done = 0u32;
        while done < chunk.length() {
            let opts = FileSystemReadWriteOptions::new();
            opts.set_at((self.at.get() + u64::from(done)) as f64);
            let n = self.handle.write_with_js_u8_array_and_options(&chunk.subarray(done, chunk.length()), &opts)? as u32;
            if n == 0 {
                return Err(JsValue::from_str("the file took no bytes"));
            }
            done += n;
        }
        self.at.set(self.at.get() + u64::from(done));
        Ok(())
    }

    /// Flush and close: the file is whole on disk.
    pub fn finish(self) -> Result<(), JsValue> {
        self.handle.flush()
    }
}

impl Drop for SyncWriter {
    fn drop(&mut self) {
        self.handle.close();
    }
}
