//! Models over HTTP(S): `--model https://host/folder/`, `--model https://host/x.gguf`
//! or a Hugging Face repo id `org/name`. A native [`ModelSource`] on a small
//! blocking client (the core crate does no I/O): one streamed GET per file, read
//! forward as the loader asks for ranges in file order, a Range request when it
//! jumps.
//!
//! The transport cannot corrupt: a 206 must start at the byte asked for, name
//! the file's size and agree with its Content-Length; a 200 to a Range request
//! must be the whole file; a body must bring the bytes it announced. A 5xx
//! (408, 429), a failed connection or a dropped or short body is retried with
//! backoff from the first byte not yet received (a Range request), then it is
//! a NETWORK error with the URL and status. No buffer is sized by a length a
//! server claims: they grow with the bytes that arrive.
//!
//! The access token (`--hf-token` / `HF_TOKEN`, for gated and private repos) is
//! sent only to the model's host: redirects are followed here, not by the
//! client, and a hop to another origin (Hugging Face sends file bodies from a
//! CDN host) goes without it. It is never part of a URL, a message or an error.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use clap::Args;
use tramontane::source::http::{span, Head, Misfit, Tries, FIRST_CAPACITY};
use tramontane::source::ModelSource;
use tramontane::{Error, Result};

/// Where a model lives when `--model` is not a local path.
#[derive(Args, Clone, Default)]
pub struct RemoteArgs {
    /// Access token for gated or private Hugging Face repos (default: the
    /// HF_TOKEN environment variable, which keeps it out of the process list).
    /// Sent only to the model's host, never printed.
    #[arg(long, value_name = "TOKEN")]
    pub hf_token: Option<String>,
    /// Revision (branch, tag or commit) of a Hugging Face repo id.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// A GGUF file in the repo or folder URL (the first part of a split model);
    /// without it a repo is loaded as a Hugging Face model folder.
    #[arg(long, value_name = "NAME")]
    pub gguf_file: Option<String>,
}

const HF: &str = "https://huggingface.co";
const MAX_REDIRECTS: usize = 10;
/// Streams kept open at once (a model folder opens each shard for its header
/// before reading weights); beyond this the least recently read one closes and
/// is reopened with a Range request if it is needed again.
const MAX_OPEN: usize = 5;
/// A forward jump up to this many bytes is read through; a longer one is a new
/// Range request.
const SKIP_READ: u64 = 1 << 20;
/// A body without Content-Length (chunked) is read whole to learn its size: only
/// small files come that way.
const MAX_UNSIZED: u64 = 256 << 20;
/// `scheme://host:port` of a URL, lowercased, with the default port filled in.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

/// The origin of an absolute http(s) URL, or `None`.
fn origin(url: &str) -> Option<Origin> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    // `[::1]:8080`, `host:8080`, `host`.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], authority[i + 1..].parse().ok()?),
        _ => (authority, default),
    };
    Some(Origin { scheme, host: host.to_ascii_lowercase(), port })
}

/// A redirect's `Location` made absolute against the URL that answered.
fn join(url: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(l) = location.strip_prefix("//") {
        return format!("{scheme}://{l}");
    }
    if location.starts_with('/') {
        return format!("{scheme}://{}{location}", &rest[..authority_end]);
    }
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let dir = rest[..path_end].rfind('/').filter(|&i| i >= authority_end).map(|i| &rest[..=i]).unwrap_or(&rest[..authority_end]);
    let sep = if dir.ends_with('/') { "" } else { "/" };
    format!("{scheme}://{dir}{sep}{location}")
}

/// Percent-encode a path (or, with `keep_slash` false, one segment of it).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_url(s: &str) -> bool {
    let l = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// `org/name` as the Hub spells repo ids. A path that exists, or one naming a
/// `.gguf`, stays a local path: `--model models/x.gguf` keeps meaning a file.
fn is_repo_id(s: &str) -> bool {
    let Some((org, name)) = s.split_once('/') else { return false };
    let ok = |p: &str| !p.is_empty() && !p.starts_with('.') && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok(org) && ok(name) && !s.to_ascii_lowercase().ends_with(".gguf") && !std::path::Path::new(s).exists()
}

/// The token of `--hf-token` or `HF_TOKEN` (empty means none). Checked to be
/// something a header can carry; the message never shows it.
fn token(args: &RemoteArgs) -> Result<Option<String>> {
    let t = args.hf_token.clone().or_else(|| std::env::var("HF_TOKEN").ok()).map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    if let Some(t) = &t {
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidRequest("the Hugging Face token has characters no token has (it must be printable ASCII without spaces)".into()));
        }
    }
    Ok(t)
}

/// A remote `--model`: its source and, for a GGUF, the file to load. `None`: a
/// local path, loaded exactly as before.
pub fn resolve(model: &str, args: &RemoteArgs) -> Result<Option<(HttpSource, Option<String>)>> {
    let (base, gguf) = if is_url(model) {
        let url = model.split('#').next().unwrap_or(model);
        let path = url.split('?').next().unwrap_or(url);
        if origin(url).is_none() {
            return Err(Error::InvalidRequest(
                "--model: not a usable http(s) URL (credentials in the URL are not taken: give --hf-token or HF_TOKEN)".into(),
            ));
        }
        if path.to_ascii_lowercase().ends_with(".gguf") {
            let cut = path.rfind('/').map(|i| i + 1).unwrap_or(path.len());
            (path[..cut].to_string(), Some(decode(&path[cut..])))
        } else {
            // A folder: a query string has no meaning for the files in it.
            let base = if path.ends_with('/') { path.to_string() } else { format!("{path}/") };
            (base, args.gguf_file.clone())
        }
    } else if is_repo_id(model) {
        let endpoint = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.trim().is_empty()).unwrap_or_else(|| HF.to_string());
        let endpoint = endpoint.trim().trim_end_matches('/').to_string();
        if origin(&endpoint).is_none() {
            return Err(Error::InvalidRequest("HF_ENDPOINT must be an http(s) URL without credentials".into()));
        }
        (format!("{endpoint}/{model}/resolve/{}/", encode(&args.revision, false)), args.gguf_file.clone())
    } else {
        if args.gguf_file.is_some() {
            return Err(Error::InvalidRequest("--gguf-file is for a Hugging Face repo id or a folder URL: give a local GGUF's path as --model".into()));
        }
        return Ok(None);
    };
    Ok(Some((HttpSource::new(base, token(args)?)?, gguf)))
}

/// `--mmproj` of a remote model as a file name in its repo or folder: a name
/// as given (`..` and the like refused: it cannot leave the folder), or a URL
/// inside the model's folder.
pub fn name_in(src: &HttpSource, mmproj: &str) -> Result<String> {
    let name = if is_url(mmproj) {
        let url = mmproj.split(['?', '#']).next().unwrap_or(mmproj);
        match url.strip_prefix(src.base.as_str()) {
            Some(rest) => decode(rest),
            None => {
                return Err(Error::InvalidRequest(format!(
                    "--mmproj {mmproj}: give a file in the model's folder ({}) or its name there",
                    src.base
                )))
            }
        }
    } else {
        mmproj.to_string()
    };
    let plain = !name.is_empty() && name.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('\\'));
    if !plain {
        return Err(Error::InvalidRequest(format!("--mmproj {mmproj}: not a plain file name in the model's folder")));
    }
    Ok(name)
}

/// A required file the server does not have: a NETWORK error with the URL and
/// status, as the browser package reports it.
pub fn missing_as_404(e: Error) -> Error {
    match e {
        Error::MissingFile { file, what } if file.contains("://") => Error::Network { url: file, status: 404, msg: format!("Not Found ({what})") },
        other => other,
    }
}

struct Stream {
    reader: Box<dyn Read>,
    /// File offset of the next byte `reader` gives.
    pos: u64,
    /// File offset just after the last byte this body announced.
    end: u64,
    /// Status of its response (for errors).
    status: u16,
    last_used: u64,
}

pub struct HttpSource {
    agent: ureq::Agent,
    /// URL prefix of the files (ends with '/').
    base: String,
    /// The model's host: the only one that gets the token.
    origin: Origin,
    token: Option<String>,
    /// Sizes learnt so far (`None`: the file does not exist).
    sizes: RefCell<HashMap<String, Option<u64>>>,
    /// The first response's ETag per file: a resumed response with another one
    /// is of a file that changed on the server meanwhile.
    etags: RefCell<HashMap<String, String>>,
    streams: RefCell<HashMap<String, Stream>>,
    clock: Cell<u64>,
    /// Bytes received so far, over every file.
    pub downloaded: Cell<u64>,
}

/// What a GET answered.
enum Got {
    Body { status: u16, head: Head, reader: Box<dyn Read> },
    NotFound,
    /// A failure worth another attempt: the status (0: no response) and what.
    Retry(u16, String),
}

impl HttpSource {
    pub fn new(base: String, token: Option<String>) -> Result<Self> {
        let origin = origin(&base).ok_or_else(|| Error::InvalidRequest(format!("{base}: not an http(s) URL")))?;
        let config = ureq::Agent::config_builder()
            // Redirects are followed in `get`, which decides per hop whether the
            // token goes along; statuses are ours to read.
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            // A stalled transfer fails (and is retried) instead of hanging (a
            // whole model may take long, so there is no overall limit).
            .timeout_per_read(Some(Duration::from_secs(120)))
            .build();
        Ok(HttpSource {
            agent: config.into(),
            base,
            origin,
            token,
            sizes: RefCell::new(HashMap::new()),
            etags: RefCell::new(HashMap::new()),
            streams: RefCell::new(HashMap::new()),
            clock: Cell::new(0),
            downloaded: Cell::new(0),
        })
    }

    fn url(&self, name: &str) -> String {
        format!("{}{}", self.base, encode(name, true))
    }

    /// A message with any trace of the token removed (servers may echo headers
    /// in status texts; messages of the HTTP stack are not ours either).
    fn clean(&self, msg: String) -> String {
        match &self.token {
            Some(t) if msg.contains(t.as_str()) => msg.replace(t.as_str(), "[token]"),
            _ => msg,
        }
    }

    fn net(&self, url: &str, status: u16, msg: String) -> Error {
        Error::Network { url: url.to_string(), status, msg: self.clean(msg) }
    }

    fn auth_message(&self, status: u16) -> String {
        match (status, self.token.is_some()) {
            (401, false) => "Unauthorized: the repository is gated or private (or does not exist); give an access token with --hf-token or HF_TOKEN".into(),
            (401, true) => "Unauthorized: the access token was not accepted (or the repository does not exist)".into(),
            (_, false) => "Forbidden: the repository needs an access token (--hf-token or HF_TOKEN)".into(),
            (_, true) => "Forbidden: the access token has no access to this repository (a gated repo needs its terms accepted on its page)".into(),
        }
    }

    /// A failed attempt: wait, then try again (`Ok`), or give up with a
    /// NETWORK error saying what happened.
    fn retry(&self, url: &str, tries: &mut Tries, status: u16, what: String) -> Result<()> {
        let ms = tries.fail(what).map_err(|msg| self.net(url, status, msg))?;
        std::thread::sleep(Duration::from_millis(ms));
        Ok(())
    }

    /// GET `name` from byte `from` on, following redirects. The token goes only
    /// to the model's origin: a redirect elsewhere (a CDN) is asked without it.
    fn get(&self, name: &str, from: u64, tries: &mut Tries) -> Result<Got> {
        let first = self.url(name);
        let mut url = first.clone();
        tries.attempts += 1;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.get(&url);
            if from > 0 {
                req = req.header("Range", format!("bytes={from}-"));
            }
            if let Some(t) = &self.token {
                if origin(&url).as_ref() == Some(&self.origin) {
                    req = req.header("Authorization", format!("Bearer {t}"));
                }
            }
            // Errors name the file's URL, never a redirect target (signed URLs
            // carry credentials of their own), only its host.
            let hop = if url == first { String::new() } else { format!(" (redirected to {})", origin(&url).map(|o| o.host).unwrap_or_default()) };
            let resp = match req.call() {
                Ok(r) => r,
                // No answer (refused, reset, timed out): worth another try.
                Err(e) => return Ok(Got::Retry(0, self.clean(format!("{e}{hop}")))),
            };
            let status = resp.status().as_u16();
            let header = |h: &str| resp.headers().get(h).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string());
            match status {
                301 | 302 | 303 | 307 | 308 => {
                    let loc = header("location").ok_or_else(|| self.net(&first, status, format!("a redirect without a Location{hop}")))?;
                    url = join(&url, &loc);
                    if origin(&url).is_none() {
                        return Err(self.net(&first, status, format!("a redirect to something not http(s){hop}")));
                    }
                }
                404 | 410 => return Ok(Got::NotFound),
                401 | 403 => return Err(self.net(&first, status, self.auth_message(status))),
                200 | 206 => {
                    let head = Head {
                        length: header("content-length").and_then(|v| v.parse().ok()),
                        range: header("content-range"),
                        etag: header("etag").map(|e| tramontane::source::http::etag(&e)),
                    };
                    let reader: Box<dyn Read> = Box::new(resp.into_body().into_reader());
                    return Ok(Got::Body { status, head, reader });
                }
                _ => {
                    let reason = resp.status().canonical_reason().unwrap_or("unexpected status");
                    if matches!(status, 408 | 429 | 500..=599) {
                        return Ok(Got::Retry(status, format!("{reason}{hop}")));
                    }
                    return Err(self.net(&first, status, format!("{reason}{hop}")));
                }
            }
        }
        Err(self.net(&first, 0, format!("more than {MAX_REDIRECTS} redirects")))
    }

    fn tick(&self) -> u64 {
        self.clock.set(self.clock.get() + 1);
        self.clock.get()
    }

    /// Keep a stream for later reads, closing the least recently read one if
    /// too many are open.
    fn keep(&self, name: &str, s: Stream) {
        let mut streams = self.streams.borrow_mut();
        streams.insert(name.to_string(), s);
        while streams.len() > MAX_OPEN {
            let Some(oldest) = streams.iter().min_by_key(|(_, s)| s.last_used).map(|(n, _)| n.clone()) else { break };
            streams.remove(&oldest);
        }
    }

    /// Open `name` from the start: learns its size and keeps the stream for the
    /// first read.
    fn open(&self, name: &str) -> Result<Option<u64>> {
        let url = self.url(name);
        let mut tries = Tries::default();
        loop {
            let (status, head, reader) = match self.get(name, 0, &mut tries)? {
                Got::NotFound => {
                    self.sizes.borrow_mut().insert(name.to_string(), None);
                    return Ok(None);
                }
                Got::Retry(status, what) => {
                    self.retry(&url, &mut tries, status, what)?;
                    continue;
                }
                Got::Body { status, head, reader } => (status, head, reader),
            };
            let sp = match span(status, &head, 0, None, None) {
                Ok(sp) => sp,
                Err(Misfit(true, what)) => {
                    self.retry(&url, &mut tries, status, what)?;
                    continue;
                }
                Err(Misfit(false, what)) => return Err(self.net(&url, status, what)),
            };
            let (size, end, reader): (u64, u64, Box<dyn Read>) = match (sp.size, sp.end) {
                (Some(n), Some(end)) => (n, end, reader),
                _ => {
                    // No length given (a chunked body): small files only, read
                    // whole (the buffer grows with what arrives).
                    let mut all = Vec::new();
                    if let Err(e) = reader.take(MAX_UNSIZED + 1).read_to_end(&mut all) {
                        self.retry(&url, &mut tries, status, format!("the connection dropped at byte {} ({e})", all.len()))?;
                        continue;
                    }
                    if all.len() as u64 > MAX_UNSIZED {
                        return Err(self.net(&url, 200, "the server sent no Content-Length for a large file".into()));
                    }
                    self.downloaded.set(self.downloaded.get() + all.len() as u64);
                    let n = all.len() as u64;
                    (n, n, Box::new(std::io::Cursor::new(all)))
                }
            };
            self.sizes.borrow_mut().insert(name.to_string(), Some(size));
            if let Some(e) = head.etag {
                self.etags.borrow_mut().insert(name.to_string(), e);
            }
            let last_used = self.tick();
            self.keep(name, Stream { reader, pos: sp.start, end, status, last_used });
            return Ok(Some(size));
        }
    }
}

impl ModelSource for HttpSource {
    async fn size(&self, name: &str) -> Result<Option<u64>> {
        if let Some(s) = self.sizes.borrow().get(name) {
            return Ok(*s);
        }
        self.open(name)
    }

    /// Exactly the bytes asked for. The stream in hand is read through when
    /// the range lies ahead within SKIP_READ, else a Range request is made; a
    /// body that breaks is resumed from the first byte not yet received.
    async fn read(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let url = self.url(name);
        let size = self.size(name).await?.ok_or_else(|| Error::Network { url: url.clone(), status: 404, msg: "Not Found".into() })?;
        let end = offset.checked_add(len).filter(|&e| e <= size).ok_or_else(|| Error::Format {
            file: url.clone(),
            msg: format!("read of {len} bytes at {offset} runs past the end ({size} bytes)"),
        })?;
        if len == 0 {
            // Nothing to fetch (a Range request at the very end would be a 416).
            return Ok(Vec::new());
        }
        let etag = self.etags.borrow().get(name).cloned();
        let mut tries = Tries::default();
        let mut s = match self.streams.borrow_mut().remove(name) {
            Some(s) if s.pos <= offset && offset - s.pos <= SKIP_READ => {
                tries.attempts = 1;
                Some(s)
            }
            _ => None,
        };
        // Grown as bytes arrive, not sized by the request (nor by a claimed length).
        let mut out = Vec::with_capacity(len.min(FIRST_CAPACITY) as usize);
        let mut scratch = Vec::new();
        while (out.len() as u64) < len {
            let want = offset + out.len() as u64;
            let Some(st) = s.as_mut() else {
                match self.get(name, want, &mut tries)? {
                    Got::NotFound => return Err(Error::Network { url, status: 404, msg: "Not Found".into() }),
                    Got::Retry(status, what) => self.retry(&url, &mut tries, status, what)?,
                    Got::Body { status, head, reader } => match span(status, &head, want, Some(size), etag.as_deref()) {
                        Ok(sp) => s = Some(Stream { reader, pos: sp.start, end: sp.end.unwrap_or(size), status, last_used: 0 }),
                        Err(Misfit(true, what)) => self.retry(&url, &mut tries, status, what)?,
                        Err(Misfit(false, what)) => return Err(self.net(&url, status, what)),
                    },
                }
                continue;
            };
            if st.pos >= st.end {
                // A 206 of less than was asked for, all there: ask for the rest.
                s = None;
                continue;
            }
            // Skip up to `want` (a forward jump, or a 200 to a Range request),
            // then read into `out`; never past what the body announced.
            let skipping = st.pos < want;
            let n = if skipping { (want - st.pos).min(64 << 10) } else { len - out.len() as u64 }.min(st.end - st.pos);
            let buf = if skipping {
                scratch.clear();
                &mut scratch
            } else {
                &mut out
            };
            let before = buf.len();
            let r = (&mut st.reader).take(n).read_to_end(buf);
            let got = (buf.len() - before) as u64;
            st.pos += got;
            self.downloaded.set(self.downloaded.get() + got);
            if got > 0 && !skipping {
                tries.progress();
            }
            let (pos, status) = (st.pos, st.status);
            match r {
                Ok(_) if got == n => {}
                Ok(_) => {
                    s = None;
                    self.retry(&url, &mut tries, status, format!("the download ended at byte {pos} of {size}"))?;
                }
                Err(e) => {
                    s = None;
                    self.retry(&url, &mut tries, status, format!("the connection dropped at byte {pos} of {size} ({e})"))?;
                }
            }
        }
        if let Some(mut st) = s {
            if end < size && st.pos < st.end {
                st.last_used = self.tick();
                self.keep(name, st);
            }
        }
        Ok(out)
    }

    fn describe(&self, name: &str) -> String {
        self.url(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let o = origin("https://huggingface.co/org/m/resolve/main/").expect("origin");
        assert_eq!(o, Origin { scheme: "https".into(), host: "huggingface.co".into(), port: 443 });
        assert_eq!(origin("HTTP://127.0.0.1:8080/x").map(|o| o.port), Some(8080));
        assert_eq!(origin("http://[::1]:81/x").map(|o| o.host), Some("[::1]".into()));
        assert_eq!(origin("http://[::1]/x").map(|o| o.port), Some(80));
        assert!(origin("https://user:pw@host/").is_none());
        assert!(origin("ftp://host/").is_none());
        assert_ne!(origin("https://cdn-lfs.hf.co/x"), origin("https://huggingface.co/x"));
        assert_ne!(origin("http://127.0.0.1:1/x"), origin("http://127.0.0.1:2/x"));
    }

    #[test]
    fn redirect_locations() {
        let u = "https://h.co/org/m/resolve/main/model.safetensors";
        assert_eq!(join(u, "https://cdn.co/a?b=c"), "https://cdn.co/a?b=c");
        assert_eq!(join(u, "//cdn.co/a"), "https://cdn.co/a");
        assert_eq!(join(u, "/api/x"), "https://h.co/api/x");
        assert_eq!(join(u, "other.bin"), "https://h.co/org/m/resolve/main/other.bin");
        assert_eq!(join("https://h.co", "x"), "https://h.co/x");
    }

    #[test]
    fn repo_ids_and_paths() {
        assert!(is_repo_id("mistralai/Mistral-7B-Instruct-v0.3"));
        assert!(!is_repo_id("models/x.gguf"));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("./x"));
        assert!(!is_repo_id("src/main.rs") || !std::path::Path::new("src/main.rs").exists());
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode("dir/a b.gguf", true), "dir/a%20b.gguf");
        assert_eq!(decode("a%20b.gguf"), "a b.gguf");
        assert_eq!(decode("100%"), "100%");
    }
}
