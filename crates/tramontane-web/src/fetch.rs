//! `ModelSource` over `fetch`: one streamed GET per file, read forward as the
//! loader asks for byte ranges in file order (HTTP Range requests when it jumps
//! back), so weights go from the network to GPU buffers without the whole model
//! ever sitting in wasm memory. Responses are kept in the Cache API; a cached
//! file makes no network request.
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

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Function, Promise, Reflect, Uint8Array};
use tramontane::source::ModelSource;
use tramontane::{Error, Result};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, Cache, Request, RequestInit, Response};

thread_local! {
    /// A rejection handler that does nothing (no `new Function`, so strict CSP
    /// pages are fine).
    static NOOP: Closure<dyn FnMut(JsValue)> = Closure::new(|_: JsValue| {});
}

pub const CACHE_NAME: &str = "tramontane-v1";
/// The file size, stored with each cached response.
const SIZE_HEADER: &str = "x-tramontane-size";

struct Stream {
    reader: web_sys::ReadableStreamDefaultReader,
    /// File offset of `pending[0]`.
    pos: u64,
    pending: Vec<u8>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        // A partly read body holds its connection until cancelled.
        let _ = self.reader.cancel();
    }
}

struct FileState {
    size: u64,
    stream: Option<Stream>,
    from_cache: bool,
    /// When this file's stream was last read (for closing the least recent).
    last_used: u64,
}

/// Streams kept open at once. A stream holds a connection until it is read to
/// the end or cancelled, and browsers allow about six per host over HTTP/1.1:
/// beyond this the least recently read stream is cancelled (and reopened with
/// a Range request if it is needed again). It is one more than the default
/// number of parallel downloads, so header reads never evict a busy stream.
const MAX_OPEN: usize = 5;

/// What a load did, for progress reports and tests.
#[derive(Default, Clone, serde::Serialize)]
pub struct Stats {
    pub network_requests: u32,
    pub cache_hits: u32,
    pub bytes_downloaded: u64,
    pub cache_warning: Option<String>,
}

pub struct FetchSource {
    base: String,
    /// The origin of `base`: the only one the headers below are sent to.
    origin: Option<String>,
    /// Headers for the model's host (`headers`, `hfToken` load options).
    headers: Vec<(String, String)>,
    files: RefCell<HashMap<String, FileState>>,
    signal: Option<AbortSignal>,
    cache: Option<Cache>,
    pub stats: Rc<RefCell<Stats>>,
    /// Called with (file, bytes received so far, file size) as data arrives.
    on_bytes: Box<dyn Fn(&str, u64, u64)>,
    /// URLs fetched or served from the cache: the manifest of this source.
    pub urls: RefCell<Vec<String>>,
    aborted: Cell<bool>,
    clock: Cell<u64>,
    /// Streams taken out of `files` by reads in progress.
    checked_out: Cell<usize>,
    /// Cache writes still streaming in.
    puts: RefCell<Vec<Promise>>,
}

impl Drop for FetchSource {
    fn drop(&mut self) {
        // Release every connection still held by a partly read body.
        for f in self.files.borrow_mut().values_mut() {
            if let Some(s) = f.stream.take() {
                let _ = s.reader.cancel();
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

pub async fn open_cache() -> Option<Cache> {
    let g = js_sys::global();
    let storage = if let Some(w) = g.dyn_ref::<web_sys::Window>() {
        w.caches().ok()?
    } else {
        g.unchecked_into::<web_sys::WorkerGlobalScope>().caches().ok()?
    };
    JsFuture::from(storage.open(CACHE_NAME)).await.ok()?.dyn_into::<Cache>().ok()
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

impl FetchSource {
    pub fn new(
        base: String,
        headers: Vec<(String, String)>,
        signal: Option<AbortSignal>,
        cache: Option<Cache>,
        on_bytes: Box<dyn Fn(&str, u64, u64)>,
    ) -> Self {
        FetchSource {
            origin: origin_of(&base),
            base,
            headers,
            files: RefCell::new(HashMap::new()),
            signal,
            cache,
            stats: Rc::new(RefCell::new(Stats::default())),
            on_bytes,
            urls: RefCell::new(Vec::new()),
            aborted: Cell::new(false),
            clock: Cell::new(0),
            checked_out: Cell::new(0),
            puts: RefCell::new(Vec::new()),
        }
    }

    /// Wait for the cache to hold every file fetched; a failure (quota) is
    /// reported in the stats, not as an error: the model works without cache.
    pub async fn finish_caching(&self) {
        let puts: Vec<Promise> = self.puts.borrow_mut().drain(..).collect();
        for put in puts {
            if let Err(e) = JsFuture::from(put).await {
                let name = Reflect::get(&e, &"name".into()).ok().and_then(|n| n.as_string()).unwrap_or_default();
                self.stats.borrow_mut().cache_warning = Some(if name == "QuotaExceededError" {
                    "storage quota exceeded: the model was loaded without caching it".into()
                } else {
                    format!("the model could not be cached ({})", js_msg(&e))
                });
            }
        }
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
                if let Some(s) = files.get_mut(&name).and_then(|f| f.stream.take()) {
                    let _ = s.reader.cancel();
                }
            }
        }
    }

    fn url(&self, name: &str) -> String {
        format!("{}{}", self.base, name)
    }

    fn check_abort(&self) -> Result<()> {
        if self.aborted.get() || self.signal.as_ref().is_some_and(|s| s.aborted()) {
            self.aborted.set(true);
            return Err(Error::Aborted);
        }
        Ok(())
    }

    fn fail(&self, url: &str, e: JsValue) -> Error {
        if self.signal.as_ref().is_some_and(|s| s.aborted()) {
            return Error::Aborted;
        }
        Error::Network { url: url.to_string(), status: 0, msg: self.redact(js_msg(&e)) }
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

    /// GET `name` from `from` on. `Ok(None)`: the file does not exist (404).
    async fn get(&self, name: &str, from: u64) -> Result<Option<(Response, bool)>> {
        self.check_abort()?;
        let url = self.url(name);
        if from == 0 {
            if let Some(cache) = &self.cache {
                if let Ok(hit) = JsFuture::from(cache.match_with_str(&url)).await {
                    if let Ok(resp) = hit.dyn_into::<Response>() {
                        self.stats.borrow_mut().cache_hits += 1;
                        self.urls.borrow_mut().push(url);
                        return Ok(Some((resp, true)));
                    }
                }
            }
        }
        let init = RequestInit::new();
        init.set_method("GET");
        if let Some(s) = &self.signal {
            init.set_signal(Some(s));
        }
        let req = Request::new_with_str_and_init(&url, &init).map_err(|e| self.fail(&url, e))?;
        if from > 0 {
            let _ = req.headers().set("Range", &format!("bytes={from}-"));
        }
        self.add_headers(&req, &url)?;
        self.stats.borrow_mut().network_requests += 1;
        let resp: Response = JsFuture::from(global_fetch(&req))
            .await
            .map_err(|e| self.fail(&url, e))?
            .dyn_into()
            .map_err(|e| self.fail(&url, e))?;
        if !resp.ok() {
            if let Some(body) = resp.body() {
                let _ = body.cancel();
            }
            let status = resp.status();
            if status == 404 {
                return Ok(None);
            }
            // Hugging Face answers 401 for a gated or private repo without a
            // token (and for one that does not exist), 403 without access.
            let msg = match (status, self.has_authorization()) {
                (401, false) => "Unauthorized: the repository is gated or private (or does not exist): pass an access token (the hfToken load option)".into(),
                (401, true) => "Unauthorized: the access token was not accepted (or the repository does not exist)".into(),
                (403, false) => "Forbidden: the repository needs an access token (the hfToken load option)".into(),
                (403, true) => "Forbidden: the access token has no access to this repository (a gated repo needs its terms accepted on its page)".into(),
                _ => self.redact(resp.status_text()),
            };
            return Err(Error::Network { url, status, msg });
        }
        self.urls.borrow_mut().push(url.clone());
        if from == 0 {
            if let Some(cache) = &self.cache {
                // Store a copy as it streams in; a broken or aborted download makes
                // the put fail, so nothing partial is ever cached. The size goes in
                // a header of our own: cached responses may lose Content-Length.
                // The key is the bare URL (a request without our headers) and the
                // stored headers are the response's: no token is cached.
                if let (Ok(copy), Some(size)) = (resp.clone(), Self::content_length(&resp)) {
                    if let Some(stored) = Self::with_size(&copy, size) {
                        let put = cache.put_with_str(&url, &stored);
                        // Handled in finish_caching; a handler now keeps a quick
                        // rejection (quota) from showing as an uncaught error.
                        NOOP.with(|f| {
                            let _ = put.catch(f);
                        });
                        self.puts.borrow_mut().push(put);
                    }
                }
            }
        }
        Ok(Some((resp, false)))
    }

    fn with_size(resp: &Response, size: u64) -> Option<Response> {
        let headers = web_sys::Headers::new_with_headers(&resp.headers()).ok()?;
        headers.set(SIZE_HEADER, &size.to_string()).ok()?;
        let init = web_sys::ResponseInit::new();
        init.set_status(200);
        init.set_headers(&headers);
        Response::new_with_opt_readable_stream_and_init(resp.body().as_ref(), &init).ok()
    }

    fn content_length(resp: &Response) -> Option<u64> {
        let h = resp.headers();
        if let Ok(Some(v)) = h.get(SIZE_HEADER) {
            if let Ok(n) = v.trim().parse() {
                return Some(n);
            }
        }
        if let Ok(Some(r)) = h.get("Content-Range") {
            if let Some(total) = r.rsplit('/').next().and_then(|t| t.trim().parse().ok()) {
                return Some(total);
            }
        }
        h.get("Content-Length").ok().flatten().and_then(|v| v.trim().parse().ok())
    }

    fn reader(resp: &Response) -> Option<web_sys::ReadableStreamDefaultReader> {
        resp.body()?.get_reader().dyn_into().ok()
    }

    async fn open(&self, name: &str) -> Result<bool> {
        if self.files.borrow().contains_key(name) {
            return Ok(true);
        }
        self.evict();
        let Some((resp, from_cache)) = self.get(name, 0).await? else {
            return Ok(false);
        };
        let url = self.url(name);
        let size = Self::content_length(&resp).ok_or_else(|| Error::Network {
            url: url.clone(),
            status: resp.status(),
            msg: "the server sent no Content-Length".into(),
        })?;
        let reader = Self::reader(&resp).ok_or_else(|| Error::Network { url, status: resp.status(), msg: "no body".into() })?;
        self.files.borrow_mut().insert(
            name.to_string(),
            FileState { size, stream: Some(Stream { reader, pos: 0, pending: Vec::new() }), from_cache, last_used: self.tick() },
        );
        Ok(true)
    }

    async fn next_chunk(&self, name: &str, reader: &web_sys::ReadableStreamDefaultReader) -> Result<Option<Vec<u8>>> {
        let url = self.url(name);
        let r = JsFuture::from(reader.read()).await.map_err(|e| self.fail(&url, e))?;
        if Reflect::get(&r, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
            return Ok(None);
        }
        let v = Reflect::get(&r, &"value".into()).map_err(|e| self.fail(&url, e))?;
        Ok(Some(v.dyn_into::<Uint8Array>().map_err(|e| self.fail(&url, e))?.to_vec()))
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
        let (size, stream, from_cache) = {
            let mut files = self.files.borrow_mut();
            let f = files.get_mut(name).ok_or_else(|| Error::Gpu("file state lost".into()))?;
            (f.size, f.stream.take(), f.from_cache)
        };
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
    async fn read_from(&self, name: &str, offset: u64, len: u64, size: u64, stream: Option<Stream>, from_cache: bool) -> Result<Vec<u8>> {
        let url = self.url(name);
        let end = offset.checked_add(len).filter(|&e| e <= size).ok_or_else(|| Error::Format {
            file: url.clone(),
            msg: format!("read of {len} bytes at {offset} runs past the end ({size} bytes)"),
        })?;
        // Jumping back: a new request from `offset` (a Range request).
        let mut s = match stream {
            Some(s) if s.pos <= offset => s,
            other => {
                if let Some(old) = other {
                    let _ = old.reader.cancel();
                } else {
                    self.evict();
                }
                // From the cache: read it again from the start (no network);
                // else a Range request.
                let (resp, _) = self.get(name, if from_cache { 0 } else { offset }).await?.ok_or_else(|| Error::Network { url: url.clone(), status: 404, msg: "Not Found".into() })?;
                let reader = Self::reader(&resp).ok_or_else(|| Error::Network { url: url.clone(), status: resp.status(), msg: "no body".into() })?;
                // 206: the body starts at `offset`; 200: the server ignored the range.
                let pos = if resp.status() == 206 { offset } else { 0 };
                Stream { reader, pos, pending: Vec::new() }
            }
        };
        let mut out = Vec::with_capacity(len as usize);
        if len == 0 {
            if let Some(f) = self.files.borrow_mut().get_mut(name) {
                f.stream = Some(s);
            }
            return Ok(out);
        }
        loop {
            self.check_abort()?;
            // Take what the pending chunk holds of the range.
            let avail_end = s.pos + s.pending.len() as u64;
            let want_from = offset + out.len() as u64;
            if want_from >= s.pos && want_from < avail_end {
                let a = (want_from - s.pos) as usize;
                let b = ((end.min(avail_end)) - s.pos) as usize;
                out.extend_from_slice(&s.pending[a..b]);
            }
            if out.len() as u64 == len {
                // Keep only what lies after the range.
                s.pending.drain(..(end - s.pos) as usize);
                s.pos = end;
                break;
            }
            // Everything pending is consumed (or before the range): drop it, read on.
            s.pos = avail_end;
            s.pending.clear();
            match self.next_chunk(name, &s.reader).await? {
                Some(chunk) => {
                    if !from_cache {
                        self.stats.borrow_mut().bytes_downloaded += chunk.len() as u64;
                    }
                    s.pending = chunk;
                    (self.on_bytes)(name, (s.pos + s.pending.len() as u64).min(size), size);
                }
                None => {
                    return Err(Error::Format { file: url, msg: format!("the download ended at byte {} of {size}", s.pos) });
                }
            }
        }
        let now = self.tick();
        if let Some(f) = self.files.borrow_mut().get_mut(name) {
            if end == size {
                // Read to the end: let the connection go.
                let _ = s.reader.cancel();
            } else {
                f.stream = Some(s);
            }
            f.last_used = now;
        }
        Ok(out)
    }

}
