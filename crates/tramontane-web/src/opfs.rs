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
//! Each load writes its own file (`<url hash>-<load id>`), so a failed load
//! removes only what it wrote and two loads never write the same file; an
//! index that replaces an older one removes the older file.

use js_sys::{Function, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{File, FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions, FileSystemGetFileOptions, StorageManager};

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
