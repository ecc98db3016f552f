//! `ModelSource` over `fetch`: one streamed GET per file, read forward as the
//! loader asks for byte ranges in file order (HTTP Range requests when it jumps
//! back), so weights go from the network to GPU buffers without the whole model
//! ever sitting in wasm memory. Responses are kept in the Cache API; a cached
//! file makes no network request.
//!
//! The transport cannot corrupt: every response is checked against what is
//! known of its file before a byte of it is used (a 206's `Content-Range` must
//! start at the byte asked for and name the file's size, its length must agree;
//! a 200 to a Range request must be the whole file), and a body must bring the
//! bytes it announced. A 5xx (408, 429), a failed fetch, a dropped connection or
//! a short or stalled body is retried with backoff, resuming with a Range
//! request from the first byte not yet received (bytes already given to the
//! loader are never asked for again); after the last retry it is a NETWORK error
//! naming the URL, the status and what happened. No allocation is sized by what
//! a server claims: buffers grow with the bytes that arrive.
//!
//! The cache holds a model whole or not at all: only a file's first response
//! (a complete GET from byte 0) is copied in, a broken body makes its copy fail,
//! and when any copy fails, or the load itself fails, the copies of this load
//! are deleted again. A file larger than a part (`cachePartBytes`, 32 MiB by
//! default) goes, where the browser can write OPFS files, into one OPFS file
//! (`opfs.rs`: read back faster, and from any byte); elsewhere (or with
//! `cacheStore: 'cacheApi'`) as parts, each its own entry
//! (`…?tramontane-part=i`). Either way an index entry under the file's URL is
//! written last, so a file is cached only once all of it is: Chromium's Cache
//! API refuses a single entry of several GB ("network error"), and both let a
//! read start near its first byte instead of at the file's start.
//!
//! Headers of the `headers` / `hfToken` load options (`Authorization: Bearer`
//! for gated Hugging Face repos) go only on requests to the origin of the base
//! URL. Every request here is built from that base (Range re-requests too: never
//! from a redirected `Response::url()`). A file that redirects to another host
//! (Hugging Face's CDN) is followed by fetch() itself, and browsers drop
//! `Authorization` on a cross-origin redirect (the Fetch standard); other custom
//! headers they keep. The Cache API is keyed by the URL alone and stores the
//! response's headers, not the request's, so no header value is cached; nor is
//! one ever part of an error message.
//!
//! Cross-origin servers must list `Content-Range` in
//! `Access-Control-Expose-Headers` (Hugging Face does); without it a 206 is taken
//! only when its length is exactly the rest of the file.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use tramontane::source::http::{self as rules, Head, Misfit, Tries, FIRST_CAPACITY};
use tramontane::source::ModelSource;
use tramontane::{Error, Result};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, AbortSignal, Cache, FileSystemDirectoryHandle, FileSystemWritableFileStream, Request, RequestInit, Response};

use crate::opfs;

thread_local! {
    /// A rejection handler that does nothing (no `new Function`, so strict CSP
    /// pages are fine).
    static NOOP: Closure<dyn FnMut(JsValue)> = Closure::new(|_: JsValue| {});
    /// Failed loads' cache clean-ups still running (see FetchSource's drop).
    static CLEANUPS: RefCell<Vec<Promise>> = const { RefCell::new(Vec::new()) };
}

pub const CACHE_NAME: &str = "tramontane-v1";
/// The file size, stored with each cached response.
const SIZE_HEADER: &str = "x-tramontane-size";
/// A file cached in parts: how many (on the index and on each part), the part
/// size (on the index), and where a part lies in its file.
const PARTS_HEADER: &str = "x-tramontane-parts";
const PART_BYTES_HEADER: &str = "x-tramontane-part-bytes";
const START_HEADER: &str = "x-tramontane-start";
const END_HEADER: &str = "x-tramontane-end";
/// The load that wrote an entry: a failed load deletes only its own entries,
/// never those a later load of the same files wrote meanwhile.
const LOAD_HEADER: &str = "x-tramontane-load";
/// A file kept in OPFS: its file there (on the index, and on the responses
/// read from it).
pub const OPFS_HEADER: &str = "x-tramontane-opfs";
/// Bytes gathered before one OPFS write: each write is a round trip to the
/// browser's storage process, too many for the body's 64 KiB chunks.
const OPFS_WRITE_BYTES: u32 = 8 << 20;
/// A read this far past where a file's OPFS stream stands reopens the file
/// there instead of reading the bytes between.
const OPFS_SEEK_BYTES: u64 = 8 << 20;
/// Default size of a cached part.
pub const CACHE_PART_BYTES: u64 = 32 << 20;
/// Most parts a file is cached in (2 TiB at the default part size): a size
/// claimed beyond that is not cached, and no key list is sized by it.
const MAX_PARTS: u64 = 1 << 16;

/// How far a cache copy in parts has read its branch of the body. The copy
/// reads its own branch (`Response::clone`), which buffers what the loader has
/// read and the copy has not; unchecked, a GPU upload faster than the Cache
/// API's writes held GBs there and Chromium's writes then failed ("Unexpected
/// internal error"), so the loader keeps within two parts of the copy.
struct CopyProgress {
    taken: Cell<u64>,
    /// The copy ended (stored, or failed): nothing to wait for.
    ended: Cell<bool>,
    /// The copy's reader, to cancel it when the loader gives up the body the
    /// copy reads (a resumed download is never cached).
    reader: web_sys::ReadableStreamDefaultReader,
}

impl CopyProgress {
    fn abandon(&self) {
        if !self.ended.replace(true) {
            quietly(&self.reader.cancel());
        }
    }
}

/// Marks a copy ended however its task ends (done, failed or dropped), and
/// cancels its branch of the body: a copy that failed early (a quota) must not
/// leave that branch buffering the rest of the download.
struct EndCopy(Rc<CopyProgress>);

impl Drop for EndCopy {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

/// A cache write still streaming in.
struct Put {
    /// The Cache API keys it writes.
    keys: Vec<String>,
    /// The OPFS file it writes.
    file: Option<(FileSystemDirectoryHandle, String)>,
    done: Promise,
}

impl Put {
    /// Undo what of this put load `load` wrote (its file is its own by name).
    async fn undo(&self, cache: &Cache, load: &str) {
        for key in &self.keys {
            delete_own(cache, key, load).await;
        }
        if let Some((dir, name)) = &self.file {
            opfs::remove(dir, name).await;
        }
    }
}

/// The Cache API key of part `i` of `url` (a query, not a fragment: the Cache
/// API ignores fragments).
fn part_key(url: &str, i: u64) -> String {
    format!("{url}{}tramontane-part={i}", if url.contains('?') { '&' } else { '?' })
}

/// The keys a file cached in `parts` parts takes (none: one entry).
fn cache_keys(url: &str, parts: u64) -> Vec<String> {
    std::iter::once(url.to_string()).chain((0..parts).map(|i| part_key(url, i))).collect()
}

/// A response read from an OPFS file.
fn is_opfs(resp: &Response) -> bool {
    resp.headers().has(OPFS_HEADER).unwrap_or(false)
}

fn header_u64(resp: &Response, name: &str) -> Option<u64> {
    resp.headers().get(name).ok().flatten().and_then(|v| v.trim().parse().ok())
}

/// Longest a load waits for a failed load's cache clean-up.
const CLEANUP_WAIT_MS: i32 = 5_000;

/// A request or body that gives nothing for this long is a dead connection
/// (retried like a dropped one) rather than a load that hangs for ever.
const STALL_MS: i32 = 30_000;

/// Delete the cache entry `key` if load `load` wrote it (its LOAD_HEADER).
async fn delete_own(cache: &Cache, key: &str, load: &str) {
    let Ok(found) = JsFuture::from(cache.match_with_str(key)).await else { return };
    let Ok(resp) = found.dyn_into::<Response>() else { return };
    if resp.headers().get(LOAD_HEADER).ok().flatten().as_deref() == Some(load) {
        cancel_body(&resp);
        let _ = JsFuture::from(cache.delete_with_str(key)).await;
    }
}

/// Let a promise fail unobserved (a cancel of an errored body rejects): an
/// unhandled rejection would show as an uncaught error in the page.
pub(crate) fn quietly(p: &Promise) {
    NOOP.with(|f| {
        let _ = p.catch(f);
    });
}

/// The loader gave up the body a file's cache copy reads: a resumed
/// download is never cached, so the copy stops (and fails) now rather than
/// hold what the body still sends.
fn abandon(copy: &Option<Rc<CopyProgress>>) {
    if let Some(c) = copy {
        c.abandon();
    }
}

fn cancel_body(resp: &Response) {
    // Not yet locked by a reader (checked before one is made).
    if let Some(body) = resp.body() {
        quietly(&body.cancel());
    }
}

struct Stream {
    reader: web_sys::ReadableStreamDefaultReader,
    /// File offset of `pending[0]`. The chunk stays a JS array: bytes are
    /// copied into wasm memory once, straight into the read's output.
    pos: u64,
    pending: Uint8Array,
    /// File offset just after the last byte this body announced.
    end: u64,
    /// Status of the response (for errors).
    status: u16,
    /// From the cache: not counted as downloaded.
    cached: bool,
    /// An OPFS file: reopened where a read far ahead starts.
    seekable: bool,
}

impl Drop for Stream {
    fn drop(&mut self) {
        // A partly read body holds its connection until cancelled.
        quietly(&self.reader.cancel());
    }
}

struct FileState {
    size: u64,
    stream: Option<Stream>,
    from_cache: bool,
    /// When this file's stream was last read (for closing the least recent).
    last_used: u64,
    /// The first response's ETag: a resumed response with another one is of a
    /// file that changed on the server meanwhile.
    etag: Option<String>,
    /// The file's cache copy in parts, which the loader must not outrun.
    copy: Option<Rc<CopyProgress>>,
    /// An OPFS-cached file read synchronously (in a worker): every read
    /// straight into its buffer, no stream.
    sync: Option<Rc<opfs::SyncReader>>,
}

/// Streams kept open at once. A stream holds a connection until it is read to
/// the end or cancelled, and browsers allow about six per host over HTTP/1.1:
/// beyond this the least recently read stream is cancelled (and reopened with
/// a Range request if it is needed again). It is one more than the default
/// number of parallel downloads, so header reads never evict a busy stream.
const MAX_OPEN: usize = 5;

/// Called with (file, bytes received so far, file size) as data arrives.
pub type OnBytes = Box<dyn Fn(&str, u64, u64)>;

/// What a load did, for progress reports and tests.
#[derive(Default, Clone, serde::Serialize)]
pub struct Stats {
    /// Every request sent, retries included.
    pub network_requests: u32,
    pub cache_hits: u32,
    pub bytes_downloaded: u64,
    pub cache_warning: Option<String>,
    /// Cached files read through a synchronous OPFS handle (in a worker).
    pub cache_sync_reads: u32,
}

/// What a GET answered.
enum Got {
    Resp(Response, bool),
    NotFound,
    /// A failure worth another attempt: the status (0: no response) and what.
    Retry(u16, String),
}

/// Where a response's body lies in its file (a checked [`rules::Span`], its
/// size known).
struct Span {
    /// The file's size.
    size: u64,
    /// File offsets of the body's first byte and of the byte after its last.
    start: u64,
    end: u64,
}

/// How a stream read went.
enum Next {
    Chunk(Uint8Array),
    Done,
    Broken(String),
}

pub struct FetchSource {
    base: String,
    /// The origin of `base`: the only one the headers below are sent to.
    origin: Option<String>,
    /// Headers for the model's host (`headers`, `hfToken` load options).
    headers: Vec<(String, String)>,
    files: RefCell<HashMap<String, FileState>>,
    /// The load's signal (ABORTED when it fires).
    signal: Option<AbortSignal>,
    /// The signal of every request: fires with `signal`, and when this source
    /// goes (stopping cache copies of a failed load, stalled requests).
    ctl: Option<AbortController>,
    /// Listens on `signal` to fire `ctl`; removed on drop.
    on_abort: Option<Closure<dyn FnMut()>>,
    cache: Option<Cache>,
    /// Files larger than this are cached in parts of this size (or in OPFS).
    part_bytes: u64,
    /// Where files larger than a part are written: OPFS (this directory) or,
    /// without it, Cache API parts.
    opfs_writes: Option<FileSystemDirectoryHandle>,
    /// The OPFS directory to read cached files from, once opened.
    opfs_reads: RefCell<Option<FileSystemDirectoryHandle>>,
    /// The OPFS files' in-use lock, held from this load's first read of one
    /// to its end (a sweep elsewhere then leaves them be).
    opfs_in_use: RefCell<Option<opfs::Held>>,
    pub stats: Rc<RefCell<Stats>>,
    on_bytes: OnBytes,
    /// URLs fetched or served from the cache: the manifest of this source.
    pub urls: RefCell<Vec<String>>,
    aborted: Cell<bool>,
    clock: Cell<u64>,
    /// Streams taken out of `files` by reads in progress.
    checked_out: Cell<usize>,
    /// Cache writes still streaming in.
    puts: RefCell<Vec<Put>>,
    /// This load's tag on the entries it writes (`LOAD_HEADER`).
    load_id: String,
    /// `finish_caching` ran: the load succeeded and the cache is settled.
    committed: Cell<bool>,
}

impl Drop for FetchSource {
    fn drop(&mut self) {
        // Release every connection still held by a partly read body.
        for f in self.files.borrow_mut().values_mut() {
            f.stream = None;
        }
        if let (Some(signal), Some(f)) = (&self.signal, &self.on_abort) {
            let _ = signal.remove_event_listener_with_callback("abort", f.as_ref().unchecked_ref());
        }
        // Whatever still streams belongs to nothing now (after a failed load:
        // the cache copies of files it was reading; any request given up as
        // stalled): stop it.
        if let Some(ctl) = &self.ctl {
            ctl.abort();
        }
        if self.committed.get() {
            return;
        }
        // The load failed: none of its copies stays in the cache. Each goes
        // once its write settles (an aborted copy fails and stores nothing; one
        // that had all its bytes may still land), and only if it is still this
        // load's: a retry may have stored the same files since.
        if let Some(cache) = &self.cache {
            for put in self.puts.borrow_mut().drain(..) {
                let (cache, load) = (cache.clone(), self.load_id.clone());
                let cleanup = wasm_bindgen_futures::future_to_promise(async move {
                    let _ = JsFuture::from(put.done.clone()).await;
                    put.undo(&cache, &load).await;
                    Ok(JsValue::UNDEFINED)
                });
                quietly(&cleanup);
                // The next load's cache waits for it (open_cache): it neither
                // reads an entry about to go nor writes one a late write of
                // this load could replace.
                CLEANUPS.with(|c| c.borrow_mut().push(cleanup));
            }
        }
    }
}

fn global_fetch(req: &Request) -> Promise {
    let g = js_sys::global();
    if let Some(w) = g.dyn_ref::<web_sys::Window>() {
        w.fetch_with_request(req)
    } else {
        g.unchecked_into::<web_sys::WorkerGlobalScope>().fetch_with_request(req)
    }
}

/// `setTimeout(f, ms, arg)` in a window or a worker.
fn set_timeout(f: &Function, ms: i32, arg: &JsValue) -> Option<i32> {
    let g = js_sys::global();
    if let Some(w) = g.dyn_ref::<web_sys::Window>() {
        w.set_timeout_with_callback_and_timeout_and_arguments_1(f, ms, arg).ok()
    } else {
        g.unchecked_into::<web_sys::WorkerGlobalScope>().set_timeout_with_callback_and_timeout_and_arguments_1(f, ms, arg).ok()
    }
}

fn clear_timeout(id: i32) {
    let g = js_sys::global();
    if let Some(w) = g.dyn_ref::<web_sys::Window>() {
        w.clear_timeout_with_handle(id);
    } else {
        g.unchecked_into::<web_sys::WorkerGlobalScope>().clear_timeout_with_handle(id);
    }
}

/// A promise and its resolve function.
pub(crate) fn deferred() -> Option<(Promise, Function)> {
    let mut resolve = None;
    let p = Promise::new(&mut |res, _| resolve = Some(res));
    Some((p, resolve?))
}

pub async fn open_cache() -> Option<Cache> {
    // A failed load's clean-up first (see FetchSource's drop), for a few
    // seconds at most: its writes were aborted with it and settle quickly.
    let pending: Array = CLEANUPS.with(|c| c.borrow_mut().drain(..).collect());
    if pending.length() > 0 {
        let all = Promise::all(&pending);
        quietly(&all);
        match deferred().and_then(|(timer, resolve)| Some((timer, set_timeout(&resolve, CLEANUP_WAIT_MS, &JsValue::UNDEFINED)?))) {
            Some((timer, id)) => {
                let _ = JsFuture::from(Promise::race(&Array::of2(&all, &timer))).await;
                clear_timeout(id);
            }
            None => {
                let _ = JsFuture::from(all).await;
            }
        }
    }
    let g = js_sys::global();
    let storage = if let Some(w) = g.dyn_ref::<web_sys::Window>() {
        w.caches().ok()?
    } else {
        g.unchecked_into::<web_sys::WorkerGlobalScope>().caches().ok()?
    };
    JsFuture::from(storage.open(CACHE_NAME)).await.ok()?.dyn_into::<Cache>().ok()
}

/// Remove the cache's OPFS files that no entry of `cache` names (opfs.rs
/// says where they come from), unless a write is under way in this origin.
/// Quiet: a file that cannot go now (open elsewhere) goes at a later sweep.
pub async fn sweep_opfs(cache: &Cache) {
    let Some(dir) = opfs::dir(false).await else { return };
    let Some(_sweeping) = opfs::sweep_lock().await else { return };
    let files = opfs::file_names(&dir).await;
    if files.is_empty() {
        return;
    }
    let Ok(entries) = JsFuture::from(cache.match_all()).await else { return };
    let named: std::collections::HashSet<String> = Array::from(&entries)
        .iter()
        .filter_map(|r| r.dyn_into::<Response>().ok())
        .filter_map(|r| {
            let file = r.headers().get(OPFS_HEADER).ok().flatten();
            cancel_body(&r);
            file
        })
        .collect();
    for f in files.iter().filter(|f| !named.contains(*f)) {
        opfs::remove(&dir, f).await;
    }
}

/// `new URL(url).origin` (no web-sys feature needed); `None` if it does not parse
/// or has an opaque origin.
fn origin_of(url: &str) -> Option<String> {
    let ctor: Function = Reflect::get(&js_sys::global(), &"URL".into()).ok()?.dyn_into().ok()?;
    let u = Reflect::construct(&ctor, &js_sys::Array::of1(&url.into())).ok()?;
    Reflect::get(&u, &"origin".into()).ok()?.as_string().filter(|o| o != "null")
}

fn js_msg(v: &JsValue) -> String {
    v.as_string()
        .or_else(|| Reflect::get(v, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{v:?}"))
}

/// An ETag without its weak marker (compression may turn a strong one weak).
fn etag_of(resp: &Response) -> Option<String> {
    resp.headers().get("etag").ok().flatten().map(|v| rules::etag(&v))
}

impl FetchSource {
    pub fn new(
        base: String,
        headers: Vec<(String, String)>,
        signal: Option<AbortSignal>,
        cache: Option<Cache>,
        part_bytes: u64,
        opfs_writes: Option<FileSystemDirectoryHandle>,
        on_bytes: OnBytes,
    ) -> Self {
        let ctl = AbortController::new().ok();
        let mut on_abort = None;
        if let (Some(signal), Some(ctl)) = (&signal, &ctl) {
            if signal.aborted() {
                ctl.abort();
            } else {
                let c = ctl.clone();
                let f = Closure::<dyn FnMut()>::new(move || c.abort());
                if signal.add_event_listener_with_callback("abort", f.as_ref().unchecked_ref()).is_ok() {
                    on_abort = Some(f);
                }
            }
        }
        FetchSource {
            origin: origin_of(&base),
            base,
            headers,
            files: RefCell::new(HashMap::new()),
            signal,
            ctl,
            on_abort,
            cache,
            part_bytes: part_bytes.max(1),
            opfs_reads: RefCell::new(opfs_writes.clone()),
            opfs_in_use: RefCell::new(None),
            opfs_writes,
            stats: Rc::new(RefCell::new(Stats::default())),
            on_bytes,
            urls: RefCell::new(Vec::new()),
            aborted: Cell::new(false),
            clock: Cell::new(0),
            checked_out: Cell::new(0),
            puts: RefCell::new(Vec::new()),
            load_id: format!("{:x}-{:x}", js_sys::Date::now() as u64, (js_sys::Math::random() * 2f64.powi(52)) as u64),
            committed: Cell::new(false),
        }
    }

    /// Wait for the cache to hold every file fetched; a failure (quota, a
    /// download that broke and was resumed) is reported in the stats, not as an
    /// error: the model works without cache. The cache keeps a model whole or
    /// not at all, so then the files that did make it in go again.
    pub async fn finish_caching(&self) {
        let puts: Vec<Put> = self.puts.borrow_mut().drain(..).collect();
        let mut failed = None;
        for put in &puts {
            if let Err(e) = JsFuture::from(put.done.clone()).await {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            if let Some(cache) = &self.cache {
                // A failed file in parts may have stored some of them: those go too.
                for put in &puts {
                    put.undo(cache, &self.load_id).await;
                }
            }
            let name = Reflect::get(&e, &"name".into()).ok().and_then(|n| n.as_string()).unwrap_or_default();
            self.stats.borrow_mut().cache_warning = Some(if name == "QuotaExceededError" {
                "storage quota exceeded: the model was loaded without caching it".into()
            } else {
                format!("the model could not be cached ({}): it was loaded without caching it", self.redact(js_msg(&e)))
            });
        }
        self.committed.set(true);
    }

    fn tick(&self) -> u64 {
        self.clock.set(self.clock.get() + 1);
        self.clock.get()
    }

    /// Make room for one more open stream.
    fn evict(&self) {
        let mut files = self.files.borrow_mut();
        let open: Vec<(u64, String)> = files
            .iter()
            .filter(|(_, f)| f.stream.is_some())
            .map(|(n, f)| (f.last_used, n.clone()))
            .collect();
        if open.len() + self.checked_out.get() + 1 > MAX_OPEN {
            if let Some((_, name)) = open.into_iter().min() {
                // Dropping the stream cancels it.
                if let Some(f) = files.get_mut(&name) {
                    f.stream = None;
                }
            }
        }
    }

    fn url(&self, name: &str) -> String {
        format!("{}{}", self.base, name)
    }

    fn user_aborted(&self) -> bool {
        self.aborted.get() || self.signal.as_ref().is_some_and(|s| s.aborted())
    }

    fn check_abort(&self) -> Result<()> {
        if self.user_aborted() {
            self.aborted.set(true);
            return Err(Error::Aborted);
        }
        Ok(())
    }

    /// A message with every header value taken out: messages of the browser and
    /// status texts of servers are not ours, and a token must not show in one.
    fn redact(&self, mut msg: String) -> String {
        for (_, v) in &self.headers {
            let secret = v.strip_prefix("Bearer ").unwrap_or(v).trim();
            if secret.len() >= 4 {
                msg = msg.replace(secret, "[redacted]");
            }
        }
        msg
    }

    fn net(&self, url: &str, status: u16, msg: String) -> Error {
        Error::Network { url: url.to_string(), status, msg: self.redact(msg) }
    }

    fn has_authorization(&self) -> bool {
        self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    }

    /// The headers of the load options, on a request for the model's origin only.
    fn add_headers(&self, req: &Request, url: &str) -> Result<()> {
        if self.headers.is_empty() || self.origin.is_none() || origin_of(url) != self.origin {
            return Ok(());
        }
        for (k, v) in &self.headers {
            // The browser's message may quote the value: say which header only.
            req.headers().set(k, v).map_err(|_| Error::InvalidRequest(format!("the `headers` load option: header {k:?} has a name or value a header cannot have")))?;
        }
        Ok(())
    }

    /// The signal that fires when the load is aborted.
    fn abort_signal(&self) -> Option<AbortSignal> {
        self.ctl.as_ref().map(|c| c.signal()).or_else(|| self.signal.clone())
    }

    /// Wait `ms`, or less if the load is aborted meanwhile.
    async fn sleep(&self, ms: i32) {
        let Some((p, resolve)) = deferred() else { return };
        let signal = self.abort_signal();
        if signal.as_ref().is_some_and(|s| s.aborted()) {
            return;
        }
        // Without a timer the wait would never end: then none.
        let Some(id) = set_timeout(&resolve, ms, &JsValue::UNDEFINED) else { return };
        let listening = signal.as_ref().is_some_and(|s| s.add_event_listener_with_callback("abort", &resolve).is_ok());
        let _ = JsFuture::from(p).await;
        clear_timeout(id);
        if let (true, Some(s)) = (listening, &signal) {
            let _ = s.remove_event_listener_with_callback("abort", &resolve);
        }
    }

    /// `p`'s outcome, or `Ok(None)` when it has none after STALL_MS.
    async fn or_stall(&self, p: &Promise) -> std::result::Result<Option<JsValue>, JsValue> {
        let token: JsValue = Object::new().into();
        let timer = deferred().and_then(|(t, resolve)| Some((t, set_timeout(&resolve, STALL_MS, &token)?)));
        let Some((timer, id)) = timer else {
            return JsFuture::from(p.clone()).await.map(Some);
        };
        let r = JsFuture::from(Promise::race(&Array::of2(p, &timer))).await;
        clear_timeout(id);
        match r {
            Ok(v) if Object::is(&v, &token) => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(e) => Err(e),
        }
    }

    /// A failed attempt: wait, then try again (`Ok`), or give up with a
    /// NETWORK error saying what happened.
    async fn retry(&self, url: &str, tries: &mut Tries, status: u16, what: String) -> Result<()> {
        self.check_abort()?;
        let ms = tries.fail(what).map_err(|msg| self.net(url, status, msg))?;
        self.sleep(i32::try_from(ms).unwrap_or(i32::MAX)).await;
        self.check_abort()
    }

    /// GET `name` from byte `from` on (from the cache when `use_cache`: the
    /// part that holds `from`, or the whole file).
    async fn get(&self, name: &str, from: u64, use_cache: bool, tries: &mut Tries) -> Result<Got> {
        self.check_abort()?;
        let url = self.url(name);
        if use_cache {
            if let Some(resp) = self.cached(&url, from).await {
                if from == 0 {
                    self.stats.borrow_mut().cache_hits += 1;
                }
                return Ok(Got::Resp(resp, true));
            }
        }
        let init = RequestInit::new();
        init.set_method("GET");
        if let Some(c) = &self.ctl {
            init.set_signal(Some(&c.signal()));
        } else if let Some(s) = &self.signal {
            init.set_signal(Some(s));
        }
        let req = Request::new_with_str_and_init(&url, &init).map_err(|e| self.net(&url, 0, js_msg(&e)))?;
        if from > 0 {
            let _ = req.headers().set("Range", &format!("bytes={from}-"));
        }
        self.add_headers(&req, &url)?;
        self.stats.borrow_mut().network_requests += 1;
        tries.attempts += 1;
        let resp: Response = match self.or_stall(&global_fetch(&req)).await {
            Ok(Some(r)) => r.dyn_into().map_err(|e| self.net(&url, 0, js_msg(&e)))?,
            Ok(None) => {
                self.check_abort()?;
                return Ok(Got::Retry(0, format!("no response in {} s", STALL_MS / 1000)));
            }
            // A rejected fetch: the network failed (or the load was aborted).
            Err(e) => {
                self.check_abort()?;
                return Ok(Got::Retry(0, self.redact(js_msg(&e))));
            }
        };
        if resp.ok() {
            return Ok(Got::Resp(resp, false));
        }
        cancel_body(&resp);
        let status = resp.status();
        // Hugging Face answers 401 for a gated or private repo without a
        // token (and for one that does not exist), 403 without access.
        let msg = match (status, self.has_authorization()) {
            (404, _) => return Ok(Got::NotFound),
            (408 | 429 | 500..=599, _) => {
                let text = self.redact(resp.status_text());
                return Ok(Got::Retry(status, if text.is_empty() { format!("HTTP {status}") } else { text }));
            }
            (401, false) => "Unauthorized: the repository is gated or private (or does not exist): pass an access token (the hfToken load option)".into(),
            (401, true) => "Unauthorized: the access token was not accepted (or the repository does not exist)".into(),
            (403, false) => "Forbidden: the repository needs an access token (the hfToken load option)".into(),
            (403, true) => "Forbidden: the access token has no access to this repository (a gated repo needs its terms accepted on its page)".into(),
            _ => self.redact(resp.status_text()),
        };
        Err(Error::Network { url, status, msg })
    }

    /// The cached copy of `url` that holds byte `from`: the whole file, or
    /// the part that holds it (a file in parts whose part is missing is not
    /// cached).
    async fn cached(&self, url: &str, from: u64) -> Option<Response> {
        let cache = self.cache.as_ref()?;
        let hit: Response = JsFuture::from(cache.match_with_str(url)).await.ok()?.dyn_into().ok()?;
        if let Some(file) = hit.headers().get(OPFS_HEADER).ok().flatten() {
            return self.from_opfs(&hit, &file, from).await;
        }
        let Some(parts) = header_u64(&hit, PARTS_HEADER) else { return Some(hit) };
        cancel_body(&hit);
        let part_bytes = header_u64(&hit, PART_BYTES_HEADER)?.max(1);
        let i = (from / part_bytes).min(parts.saturating_sub(1));
        JsFuture::from(cache.match_with_str(&part_key(url, i))).await.ok()?.dyn_into().ok()
    }

    /// The file of OPFS `index` from byte `from`, as a cached part from there
    /// to the end; `None` (the network then) if the file is gone or not the
    /// size the index says.
    async fn from_opfs(&self, index: &Response, file: &str, from: u64) -> Option<Response> {
        let size = header_u64(index, SIZE_HEADER)?;
        if self.opfs_in_use.borrow().is_none() {
            let held = opfs::in_use_lock().await;
            self.opfs_in_use.borrow_mut().get_or_insert_with(|| held.unwrap_or(opfs::Held::none()));
        }
        let known = self.opfs_reads.borrow().clone();
        let dir = match known {
            Some(d) => d,
            None => {
                let d = opfs::dir(false).await?;
                *self.opfs_reads.borrow_mut() = Some(d.clone());
                d
            }
        };
        let f = opfs::open(&dir, file).await?;
        if f.size() != size as f64 {
            return None;
        }
        let from = from.min(size);
        let body = f.slice_with_f64_and_f64(from as f64, size as f64).ok()?;
        let headers = web_sys::Headers::new().ok()?;
        for (k, v) in [(SIZE_HEADER, size), (START_HEADER, from), (END_HEADER, size)] {
            headers.set(k, &v.to_string()).ok()?;
        }
        headers.set(OPFS_HEADER, file).ok()?;
        let init = web_sys::ResponseInit::new();
        init.set_headers(&headers);
        Response::new_with_opt_blob_and_init(Some(&body), &init).ok()
    }

    /// Where the body of a response to a request from byte `from` lies, checked
    /// against what is known of the file: its size once learnt, the first
    /// response's ETag.
    fn span(resp: &Response, from: u64, known: Option<u64>, cached: bool, etag: Option<&str>) -> std::result::Result<Span, Misfit> {
        let h = resp.headers();
        let header = |k: &str| h.get(k).ok().flatten();
        let number = |k: &str| header(k).and_then(|v| v.trim().parse::<u64>().ok());
        let length = number("content-length");
        if cached {
            // Our own copy, stored with its size (cached responses may lose
            // Content-Length).
            let size = number(SIZE_HEADER).or(length).ok_or_else(|| Misfit(true, "a cached copy without its size".into()))?;
            if let Some(k) = known.filter(|&k| k != size) {
                return Err(Misfit(true, format!("the cached copy has {size} bytes, the file {k}")));
            }
            // A part: where it lies (the whole file otherwise).
            let (start, end) = (number(START_HEADER).unwrap_or(0), number(END_HEADER).unwrap_or(size));
            if !(start <= from && from < end.max(start + 1) && end <= size) {
                return Err(Misfit(true, format!("the cached part {start}..{end} of {size} bytes does not hold byte {from}")));
            }
            return Ok(Span { size, start, end });
        }
        rules::same_etag(etag, etag_of(resp).as_deref())?;
        match resp.status() {
            // Without a length the body would have to be read whole to learn
            // the size: not taken.
            200 if length.is_none() => Err(Misfit(false, "the server sent no Content-Length".into())),
            // Unreadable cross-origin unless exposed: take it only if its
            // length is exactly the rest of the file.
            206 if header("content-range").is_none() => match (known, length) {
                (Some(k), Some(n)) if from < k && n == k - from => Ok(Span { size: k, start: from, end: k }),
                _ => Err(Misfit(true, "a 206 answer without a readable Content-Range (a cross-origin server must list it in Access-Control-Expose-Headers)".into())),
            },
            status => {
                let head = Head { length, range: header("content-range"), etag: None };
                match rules::span(status, &head, from, known, None)? {
                    rules::Span { size: Some(size), start, end: Some(end) } => Ok(Span { size, start, end }),
                    // Not given by a 200 with a length nor by a 206.
                    _ => Err(Misfit(false, "the server sent no Content-Length".into())),
                }
            }
        }
    }

    fn reader(resp: &Response) -> Option<web_sys::ReadableStreamDefaultReader> {
        resp.body()?.get_reader().dyn_into().ok()
    }

    /// Copy a file's first response into the cache as it streams in; a broken
    /// or aborted download makes the copy fail, so nothing partial is cached.
    /// The size goes in a header of our own: cached responses may lose
    /// Content-Length. The key is the bare URL (a request without our headers)
    /// and the stored headers are the response's: no token is cached.
    ///
    /// Returns the copy's progress (a copy the loader must not outrun) and the
    /// number of Cache API parts it writes (0: one entry).
    fn start_put(&self, url: &str, resp: &Response, size: u64) -> (Option<Rc<CopyProgress>>, u64) {
        let (Some(cache), Ok(copy)) = (self.cache.as_ref(), resp.clone()) else { return (None, 0) };
        if size > self.part_bytes {
            if let Some(dir) = &self.opfs_writes {
                return (self.start_opfs(cache.clone(), dir.clone(), url, copy, size), 0);
            }
            let parts = size.div_ceil(self.part_bytes);
            return match self.start_parts(cache.clone(), url, copy, size) {
                Some(p) => (Some(p), parts),
                None => (None, 0),
            };
        }
        let Some(stored) = self.with_size(&copy, size) else {
            // An unread branch would keep the whole body.
            cancel_body(&copy);
            return (None, 0);
        };
        let put = cache.put_with_str(url, &stored);
        // Handled in finish_caching (or on drop); a handler now keeps a quick
        // rejection (quota) from showing as an uncaught error.
        quietly(&put);
        self.puts.borrow_mut().push(Put { keys: vec![url.to_string()], file: None, done: put });
        (None, 0)
    }

    /// [`start_put`] of a file larger than a part, where OPFS can be written:
    /// the body's bytes (a copy, never in wasm memory) written into this load's
    /// own OPFS file in batches, closed once every byte arrived, then the
    /// index entry that names the file. A failed copy aborts the write (OPFS
    /// keeps nothing of it) and removes the file.
    fn start_opfs(&self, cache: Cache, dir: FileSystemDirectoryHandle, url: &str, copy: Response, size: u64) -> Option<Rc<CopyProgress>> {
        let Some(reader) = Self::reader(&copy) else {
            cancel_body(&copy);
            return None;
        };
        let (key, load) = (url.to_string(), self.load_id.clone());
        let name = opfs::file_name(url, &load);
        let progress = Rc::new(CopyProgress { taken: Cell::new(0), ended: Cell::new(false), reader: reader.clone() });
        let end = EndCopy(progress.clone());
        let (d, file) = (dir.clone(), name.clone());
        let task = async move {
            let end = end;
            // Held until the file has its index or is gone (a sweep waits).
            let _writing = opfs::in_use_lock().await;
            let handle = opfs::create(&d, &file).await?;
            // In a worker: a synchronous handle, each chunk written as it comes.
            if let Some(sync) = if opfs::sync_access() { opfs::sync_writer(&handle).await } else { None } {
                let written = async {
                    let mut total = 0u64;
                    loop {
                        let r = JsFuture::from(reader.read()).await?;
                        if Reflect::get(&r, &"done".into())?.as_bool().unwrap_or(true) {
                            break;
                        }
                        let v: Uint8Array = Reflect::get(&r, &"value".into())?.dyn_into()?;
                        end.0.taken.set(end.0.taken.get() + u64::from(v.length()));
                        total += u64::from(v.length());
                        if total > size {
                            return Err(JsValue::from_str("the body is longer than the file"));
                        }
                        sync.write(&v)?;
                    }
                    if total < size {
                        return Err(JsValue::from_str("the download ended early"));
                    }
                    Ok(())
                }
                .await;
                let closed = written.and_then(|()| sync.finish());
                if let Err(e) = closed {
                    opfs::remove(&d, &file).await;
                    return Err(e);
                }
                return Self::write_index(&cache, &d, &key, &file, size, &load).await;
            }
            let w: FileSystemWritableFileStream = JsFuture::from(handle.create_writable()).await?.dyn_into()?;
            let written = async {
                let (mut batch, mut held) = (Array::new(), 0u32);
                let mut total = 0u64;
                // The write before this batch's, in flight while the batch
                // gathers (the stream keeps writes in order).
                let mut writing: Option<Promise> = None;
                loop {
                    let r = JsFuture::from(reader.read()).await?;
                    let done = Reflect::get(&r, &"done".into())?.as_bool().unwrap_or(true);
                    if !done {
                        let v: Uint8Array = Reflect::get(&r, &"value".into())?.dyn_into()?;
                        end.0.taken.set(end.0.taken.get() + u64::from(v.length()));
                        total += u64::from(v.length());
                        if total > size {
                            return Err(JsValue::from_str("the body is longer than the file"));
                        }
                        held += v.length();
                        batch.push(&v);
                    }
                    if held >= OPFS_WRITE_BYTES || (done && held > 0) {
                        // One array of the batch's bytes: one write.
                        let bytes = Uint8Array::new_with_length(held);
                        let mut at = 0;
                        for piece in batch.iter() {
                            let piece: Uint8Array = piece.unchecked_into();
                            bytes.set(&piece, at);
                            at += piece.length();
                        }
                        if let Some(p) = writing.take() {
                            JsFuture::from(p).await?;
                        }
                        let p = w.write_with_js_u8_array(&bytes)?;
                        quietly(&p);
                        writing = Some(p);
                        (batch, held) = (Array::new(), 0);
                    }
                    if done {
                        break;
                    }
                }
                if let Some(p) = writing.take() {
                    JsFuture::from(p).await?;
                }
                if total < size {
                    return Err(JsValue::from_str("the download ended early"));
                }
                JsFuture::from(w.close()).await
            }
            .await;
            if let Err(e) = written {
                quietly(&w.abort());
                opfs::remove(&d, &file).await;
                return Err(e);
            }
            Self::write_index(&cache, &d, &key, &file, size, &load).await
        };
        let put = wasm_bindgen_futures::future_to_promise(task);
        quietly(&put);
        self.puts.borrow_mut().push(Put { keys: vec![url.to_string()], file: Some((dir, name)), done: put });
        Some(progress)
    }

    /// [`start_put`] of a file larger than a part: its bytes (a copy of the
    /// body, never in wasm memory) cut into parts, each stored as it fills
    /// (one part's bytes held at a time), then the index, once every byte
    /// arrived.
    fn start_parts(&self, cache: Cache, url: &str, copy: Response, size: u64) -> Option<Rc<CopyProgress>> {
        let part = self.part_bytes;
        let parts = size.div_ceil(part);
        let reader = match Self::reader(&copy) {
            Some(r) if parts <= MAX_PARTS => r,
            _ => {
                cancel_body(&copy);
                return None;
            }
        };
        let (key, load) = (url.to_string(), self.load_id.clone());
        let progress = Rc::new(CopyProgress { taken: Cell::new(0), ended: Cell::new(false), reader: reader.clone() });
        let end = EndCopy(progress.clone());
        let task = async move {
            let _end = end;
            let put = |i: u64, pieces: &Array| {
                let (start, end) = (i * part, ((i + 1) * part).min(size));
                let body = web_sys::Blob::new_with_u8_array_sequence(pieces)?;
                let headers = web_sys::Headers::new()?;
                for (k, v) in [(SIZE_HEADER, size), (PARTS_HEADER, parts), (START_HEADER, start), (END_HEADER, end)] {
                    headers.set(k, &v.to_string())?;
                }
                headers.set(LOAD_HEADER, &load)?;
                headers.set("content-type", "application/octet-stream")?;
                let init = web_sys::ResponseInit::new();
                init.set_headers(&headers);
                let resp = Response::new_with_opt_blob_and_init(Some(&body), &init)?;
                Ok::<Promise, JsValue>(cache.put_with_str(&part_key(&key, i), &resp))
            };
            let (mut i, mut held, mut pieces) = (0u64, 0u64, Array::new());
            loop {
                let r = JsFuture::from(reader.read()).await?;
                if Reflect::get(&r, &"done".into())?.as_bool().unwrap_or(true) {
                    break;
                }
                let mut v: Uint8Array = Reflect::get(&r, &"value".into())?.dyn_into()?;
                _end.0.taken.set(_end.0.taken.get() + u64::from(v.length()));
                while v.length() > 0 {
                    if i >= parts {
                        return Err(JsValue::from_str("the body is longer than the file"));
                    }
                    let room = ((i + 1) * part).min(size) - (i * part + held);
                    let take = room.min(u64::from(v.length())) as u32;
                    pieces.push(&v.subarray(0, take));
                    held += u64::from(take);
                    v = v.subarray(take, v.length());
                    if u64::from(take) == room {
                        JsFuture::from(put(i, &pieces)?).await?;
                        (i, held, pieces) = (i + 1, 0, Array::new());
                    }
                }
            }
            if i < parts {
                return Err(JsValue::from_str("the download ended early"));
            }
            let headers = web_sys::Headers::new()?;
            for (k, v) in [(SIZE_HEADER, size), (PARTS_HEADER, parts), (PART_BYTES_HEADER, part)] {
                headers.set(k, &v.to_string())?;
            }
            headers.set(LOAD_HEADER, &load)?;
            let init = web_sys::ResponseInit::new();
            init.set_headers(&headers);
            let index = Response::new_with_opt_str_and_init(None, &init)?;
            JsFuture::from(cache.put_with_str(&key, &index)).await
        };
        let put = wasm_bindgen_futures::future_to_promise(task);
        quietly(&put);
        self.puts.borrow_mut().push(Put { keys: cache_keys(url, parts), file: None, done: put });
        Some(progress)
    }

    /// The index entry of OPFS file `file`, whole now, under `key`; an older
    /// copy's file (its index replaced) goes. A failed write removes `file`.
    async fn write_index(cache: &Cache, dir: &FileSystemDirectoryHandle, key: &str, file: &str, size: u64, load: &str) -> std::result::Result<JsValue, JsValue> {
        let old = match JsFuture::from(cache.match_with_str(key)).await {
            Ok(v) => v.dyn_into::<Response>().ok().and_then(|r| r.headers().get(OPFS_HEADER).ok().flatten()),
            Err(_) => None,
        };
        let index = (|| {
            let headers = web_sys::Headers::new()?;
            headers.set(SIZE_HEADER, &size.to_string())?;
            headers.set(OPFS_HEADER, file)?;
            headers.set(LOAD_HEADER, load)?;
            let init = web_sys::ResponseInit::new();
            init.set_headers(&headers);
            Response::new_with_opt_str_and_init(None, &init)
        })();
        let put = match index {
            Ok(index) => JsFuture::from(cache.put_with_str(key, &index)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = put {
            opfs::remove(dir, file).await;
            return Err(e);
        }
        if let Some(old) = old.filter(|o| o != file) {
            opfs::remove(dir, &old).await;
        }
        Ok(JsValue::UNDEFINED)
    }

    /// Wait while the loader, at byte `pos`, is more than two parts ahead of
    /// the file's cache copy; a copy that takes nothing for STALL_MS is given
    /// up (the file is then loaded without caching).
    async fn keep_pace(&self, copy: &CopyProgress, pos: u64) -> Result<()> {
        let (mut seen, mut idle) = (copy.taken.get(), 0);
        while !copy.ended.get() && pos > copy.taken.get() + 2 * self.part_bytes {
            self.check_abort()?;
            self.sleep(5).await;
            idle = if copy.taken.get() == seen { idle + 5 } else { 0 };
            seen = copy.taken.get();
            if idle >= STALL_MS {
                copy.abandon();
            }
        }
        Ok(())
    }

    /// `resp` to store: its size and this load's tag in its headers.
    fn with_size(&self, resp: &Response, size: u64) -> Option<Response> {
        let headers = web_sys::Headers::new_with_headers(&resp.headers()).ok()?;
        headers.set(SIZE_HEADER, &size.to_string()).ok()?;
        headers.set(LOAD_HEADER, &self.load_id).ok()?;
        let init = web_sys::ResponseInit::new();
        init.set_status(200);
        init.set_headers(&headers);
        Response::new_with_opt_readable_stream_and_init(resp.body().as_ref(), &init).ok()
    }

    /// Open `name` from its start (learning its size); `Ok(false)`: it does not
    /// exist (404).
    async fn open(&self, name: &str) -> Result<bool> {
        if self.files.borrow().contains_key(name) {
            return Ok(true);
        }
        self.evict();
        let url = self.url(name);
        let mut tries = Tries::default();
        let mut use_cache = true;
        loop {
            let (resp, cached) = match self.get(name, 0, use_cache, &mut tries).await? {
                Got::NotFound => return Ok(false),
                Got::Retry(status, what) => {
                    self.retry(&url, &mut tries, status, what).await?;
                    continue;
                }
                Got::Resp(resp, cached) => (resp, cached),
            };
            let span = match Self::span(&resp, 0, None, cached, None) {
                Ok(span) => span,
                Err(Misfit(again, what)) => {
                    cancel_body(&resp);
                    if cached {
                        // A cache entry not of ours: the network then.
                        use_cache = false;
                    } else if again {
                        self.retry(&url, &mut tries, resp.status(), what).await?;
                    } else {
                        return Err(self.net(&url, resp.status(), what));
                    }
                    continue;
                }
            };
            if self.files.borrow().contains_key(name) {
                // Opened meanwhile by another read.
                cancel_body(&resp);
                return Ok(true);
            }
            if cached && is_opfs(&resp) {
                if let Some(sync) = self.sync_reader(&resp, span.size).await {
                    cancel_body(&resp);
                    if !self.files.borrow().contains_key(name) {
                        let state = FileState { size: span.size, stream: None, from_cache: true, last_used: self.tick(), etag: None, copy: None, sync: Some(Rc::new(sync)) };
                        self.files.borrow_mut().insert(name.to_string(), state);
                        self.stats.borrow_mut().cache_sync_reads += 1;
                        self.urls.borrow_mut().push(url.clone());
                    }
                    return Ok(true);
                }
            }
            let (copy, copy_parts) = if !cached && span.start == 0 && span.end == span.size { self.start_put(&url, &resp, span.size) } else { (None, 0) };
            let Some(reader) = Self::reader(&resp) else {
                return Err(self.net(&url, resp.status(), "no body".into()));
            };
            let seekable = cached && is_opfs(&resp);
            let stream = Stream { reader, pos: 0, pending: Uint8Array::new_with_length(0), end: span.end, status: resp.status(), cached, seekable };
            let etag = if cached { None } else { etag_of(&resp) };
            self.files.borrow_mut().insert(
                name.to_string(),
                FileState { size: span.size, stream: Some(stream), from_cache: cached, last_used: self.tick(), etag, copy, sync: None },
            );
            // The manifest lists every key the file takes in the cache.
            let parts = if cached { header_u64(&resp, PARTS_HEADER).unwrap_or(0).min(MAX_PARTS) } else { copy_parts };
            self.urls.borrow_mut().extend(cache_keys(&url, parts));
            return Ok(true);
        }
    }

    async fn next_chunk(&self, reader: &web_sys::ReadableStreamDefaultReader) -> Result<Next> {
        let r = match self.or_stall(&reader.read()).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.check_abort()?;
                return Ok(Next::Broken(format!("no data for {} s", STALL_MS / 1000)));
            }
            Err(e) => {
                self.check_abort()?;
                return Ok(Next::Broken(self.redact(js_msg(&e))));
            }
        };
        if Reflect::get(&r, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
            return Ok(Next::Done);
        }
        Ok(match Reflect::get(&r, &"value".into()).ok().and_then(|v| v.dyn_into::<Uint8Array>().ok()) {
            Some(v) => Next::Chunk(v),
            None => Next::Broken("the body gave something other than bytes".into()),
        })
    }
}

impl ModelSource for FetchSource {
    async fn size(&self, name: &str) -> Result<Option<u64>> {
        if !self.open(name).await? {
            return Ok(None);
        }
        Ok(self.files.borrow().get(name).map(|f| f.size))
    }

    async fn read(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if !self.open(name).await? {
            return Err(Error::Network { url: self.url(name), status: 404, msg: "Not Found".into() });
        }
        let (size, stream, from_cache, sync) = {
            let mut files = self.files.borrow_mut();
            let f = files.get_mut(name).ok_or_else(|| Error::Internal(format!("{}: the state of an opened file is gone", self.url(name))))?;
            (f.size, f.stream.take(), f.from_cache, f.sync.clone())
        };
        if let Some(sync) = sync {
            if let Some(out) = self.read_sync(name, &sync, offset, len, size)? {
                return Ok(out);
            }
            // The handle failed: the file's stream from here on.
            if let Some(f) = self.files.borrow_mut().get_mut(name) {
                f.sync = None;
            }
        }
        self.checked_out.set(self.checked_out.get() + 1);
        let r = self.read_from(name, offset, len, size, stream, from_cache).await;
        self.checked_out.set(self.checked_out.get() - 1);
        r
    }

    fn describe(&self, name: &str) -> String {
        self.url(name)
    }
}

impl FetchSource {
    /// The OPFS file of a cached response, for synchronous reads (in a worker).
    async fn sync_reader(&self, resp: &Response, size: u64) -> Option<opfs::SyncReader> {
        let file = resp.headers().get(OPFS_HEADER).ok().flatten()?;
        let dir = self.opfs_reads.borrow().clone()?;
        opfs::sync_reader(&dir, &file, size).await
    }

    /// `len` bytes at `offset` through the file's synchronous handle; `None`:
    /// the handle failed (the caller streams instead).
    fn read_sync(&self, name: &str, sync: &opfs::SyncReader, offset: u64, len: u64, size: u64) -> Result<Option<Vec<u8>>> {
        let end = offset.checked_add(len).filter(|&e| e <= size).ok_or_else(|| Error::Format {
            file: self.url(name),
            msg: format!("read of {len} bytes at {offset} runs past the end ({size} bytes)"),
        })?;
        self.check_abort()?;
        // Sized by the loader's request, checked against the file's size.
        let mut out = vec![0u8; len as usize];
        match sync.read(&mut out, offset) {
            Ok(n) if n as u64 == len => {
                (self.on_bytes)(name, end, size);
                Ok(Some(out))
            }
            _ => Ok(None),
        }
    }

    async fn read_from(&self, name: &str, offset: u64, len: u64, size: u64, stream: Option<Stream>, from_cache: bool) -> Result<Vec<u8>> {
        let url = self.url(name);
        let end = offset.checked_add(len).filter(|&e| e <= size).ok_or_else(|| Error::Format {
            file: url.clone(),
            msg: format!("read of {len} bytes at {offset} runs past the end ({size} bytes)"),
        })?;
        let (etag, copy) = self.files.borrow().get(name).map(|f| (f.etag.clone(), f.copy.clone())).unwrap_or_default();
        let mut tries = Tries::default();
        let mut use_cache = from_cache;
        // Jumping back: a new request from `offset` (a Range request); far
        // ahead in an OPFS file: the file opened there.
        let mut s = match stream {
            Some(s) if s.pos <= offset && !(s.seekable && offset - s.pos > OPFS_SEEK_BYTES) => {
                tries.attempts = 1;
                Some(s)
            }
            // Dropping it cancels it.
            Some(_) => None,
            None => {
                self.evict();
                None
            }
        };
        // Grown as bytes arrive, not sized by the request.
        let mut out = Vec::with_capacity(len.min(FIRST_CAPACITY) as usize);
        if len == 0 {
            if let (Some(f), Some(s)) = (self.files.borrow_mut().get_mut(name), s) {
                f.stream = Some(s);
            }
            return Ok(out);
        }
        loop {
            self.check_abort()?;
            let want = offset + out.len() as u64;
            let Some(st) = s.as_mut() else {
                // (Re)open from the first byte not yet received: a Range request,
                // or the cached part that holds it (no network; a file cached
                // whole is read again from its start).
                let from = want;
                match self.get(name, from, use_cache, &mut tries).await? {
                    Got::NotFound => return Err(Error::Network { url, status: 404, msg: "Not Found".into() }),
                    Got::Retry(status, what) => self.retry(&url, &mut tries, status, what).await?,
                    Got::Resp(resp, cached) => match Self::span(&resp, from, Some(size), cached, etag.as_deref()) {
                        Ok(span) => match Self::reader(&resp) {
                            Some(reader) => {
                                let seekable = cached && is_opfs(&resp);
                                s = Some(Stream { reader, pos: span.start, pending: Uint8Array::new_with_length(0), end: span.end, status: resp.status(), cached, seekable })
                            }
                            None => self.retry(&url, &mut tries, resp.status(), "a response without a body".into()).await?,
                        },
                        Err(Misfit(again, what)) => {
                            cancel_body(&resp);
                            if cached {
                                // A cache entry not of ours: the network then.
                                use_cache = false;
                            } else if !again {
                                return Err(self.net(&url, resp.status(), what));
                            } else {
                                self.retry(&url, &mut tries, resp.status(), what).await?;
                            }
                        }
                    },
                }
                continue;
            };
            // Take what the pending chunk holds of the range.
            let avail_end = st.pos + u64::from(st.pending.length());
            if want >= st.pos && want < avail_end {
                let a = (want - st.pos) as u32;
                let b = ((end.min(avail_end)) - st.pos) as u32;
                let n = out.len();
                out.reserve((b - a) as usize);
                st.pending.subarray(a, b).copy_to_uninit(&mut out.spare_capacity_mut()[..(b - a) as usize]);
                // SAFETY: copy_to_uninit initialized those b - a bytes.
                unsafe { out.set_len(n + (b - a) as usize) };
                tries.progress();
            }
            if out.len() as u64 == len {
                // Keep only what lies after the range.
                st.pending = st.pending.subarray((end - st.pos) as u32, st.pending.length());
                st.pos = end;
                break;
            }
            // Everything pending is consumed (or before the range): drop it, read on.
            st.pos = avail_end;
            st.pending = Uint8Array::new_with_length(0);
            let (pos, body_end, status) = (st.pos, st.end, st.status);
            if let Some(c) = &copy {
                self.keep_pace(c, pos).await?;
            }
            let next = self.next_chunk(&st.reader).await?;
            match next {
                Next::Chunk(chunk) => {
                    if pos + u64::from(chunk.length()) > body_end {
                        s = None;
                        abandon(&copy);
                        self.retry(&url, &mut tries, status, format!("the server sent more bytes than it announced (past byte {body_end} of {size})")).await?;
                        continue;
                    }
                    if !st.cached {
                        self.stats.borrow_mut().bytes_downloaded += u64::from(chunk.length());
                    }
                    st.pending = chunk;
                    (self.on_bytes)(name, (st.pos + u64::from(st.pending.length())).min(size), size);
                }
                Next::Done => {
                    s = None;
                    if pos == body_end && body_end < size {
                        // A 206 of less than was asked for, all there: ask for the rest.
                        continue;
                    }
                    abandon(&copy);
                    self.retry(&url, &mut tries, status, format!("the download ended at byte {pos} of {size}")).await?;
                }
                Next::Broken(why) => {
                    s = None;
                    abandon(&copy);
                    self.retry(&url, &mut tries, status, format!("the connection dropped at byte {pos} of {size} ({why})")).await?;
                }
            }
        }
        let now = self.tick();
        if let Some(f) = self.files.borrow_mut().get_mut(name) {
            // Read to the end: let the connection go (dropping the stream).
            if end < size {
                f.stream = s;
            }
            f.last_used = now;
        }
        Ok(out)
    }
}
