//! `--model` over HTTP: a URL or a Hugging Face repo id (`HF_ENDPOINT` pointed
//! at a server in this test), gated behind a bearer token. The token goes only
//! to the model's host (not to the host a file redirects to), never shows in
//! output, and the results equal the local folder's. Against a misbehaving
//! server (`/chaos/<modes>/...`): dropped connections and 5xx answers are
//! retried and resumed, and what cannot be recovered is a NETWORK error with
//! the URL and status, in seconds.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "hf_test_SeCrEt_0123456789";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: Option<String>,
    range: Option<String>,
}

/// Misbehaviour asked for by a `/chaos/<modes>/<path>` prefix, `<modes>` a
/// comma-separated list (as scripts/server.mjs takes them):
/// `drop-once=N` (the first response for a URL closes after N body bytes),
/// `status-once=S` / `status-always=S`, `lie-length=L` (claims L bytes, sends
/// the real ones and closes), `bad-range=offset|total|length` (a wrong 206),
/// `only=TEXT` (only for paths containing TEXT).
#[derive(Default, Debug)]
struct Chaos {
    drop_once: Option<usize>,
    status_once: Option<u16>,
    status_always: Option<u16>,
    lie_length: Option<u64>,
    bad_range: Option<String>,
}

/// `/chaos/<modes>/<rest>` → its modes (if they apply to `<rest>`) and `/<rest>`.
fn chaos_of(path: &str) -> (Chaos, String) {
    let Some(rest) = path.strip_prefix("/chaos/") else { return (Chaos::default(), path.to_string()) };
    let (modes, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let rest = format!("/{rest}");
    let mut c = Chaos::default();
    let mut only = None;
    for m in modes.split(',') {
        let (k, v) = m.split_once('=').unwrap_or((m, ""));
        match k {
            "drop-once" => c.drop_once = v.parse().ok(),
            "status-once" => c.status_once = v.parse().ok(),
            "status-always" => c.status_always = v.parse().ok(),
            "lie-length" => c.lie_length = v.parse().ok(),
            "bad-range" => c.bad_range = Some(v.to_string()),
            "only" => only = Some(v.to_string()),
            _ => {}
        }
    }
    if only.is_some_and(|o| !rest.contains(&o)) {
        c = Chaos::default();
    }
    (c, rest)
}

/// A tiny static server on 127.0.0.1: `routes` maps URL prefixes to folders.
/// With `token`, every request needs `Authorization: Bearer <token>` (else 401).
/// With `cdn`, `.safetensors` files answer 302 to that server's `/cdn/<file>`
/// (another origin, as Hugging Face's CDN); `/org/renamed/` answers 307 to
/// `/org/tiny/` on the same origin (a renamed repo).
struct Server {
    port: u16,
    log: Arc<Mutex<Vec<Seen>>>,
}

/// Requests seen per (mode, URL), for the "once" modes.
type Counts = Arc<Mutex<HashMap<String, u32>>>;

fn first(counts: &Counts, mode: &str, url: &str) -> bool {
    let mut c = counts.lock().expect("counts");
    let n = c.entry(format!("{mode} {url}")).or_insert(0);
    *n += 1;
    *n == 1
}

impl Server {
    fn start(routes: Vec<(&'static str, PathBuf)>, token: Option<&'static str>, cdn: Option<u16>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let routes = Arc::new(routes);
        let counts: Counts = Arc::default();
        let l = log.clone();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (routes, log, counts) = (routes.clone(), l.clone(), counts.clone());
                thread::spawn(move || {
                    let _ = handle(conn, &routes, token, cdn, &log, &counts);
                });
            }
        });
        Server { port, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().expect("log").clone()
    }
}

fn handle(mut conn: TcpStream, routes: &[(&str, PathBuf)], token: Option<&str>, cdn: Option<u16>, log: &Mutex<Vec<Seen>>, counts: &Counts) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let authorization = headers.get("authorization").cloned();
    let range = headers.get("range").cloned();
    log.lock().expect("log").push(Seen { path: path.clone(), authorization: authorization.clone(), range: range.clone() });
    let reply = |conn: &mut TcpStream, status: &str, extra: &str, body: &[u8]| -> std::io::Result<()> {
        write!(conn, "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
        conn.write_all(body)
    };
    if let Some(t) = token {
        if authorization.as_deref() != Some(&format!("Bearer {t}")) {
            // Hugging Face's answer to a gated repo without (the right) token.
            return reply(&mut conn, "401 Unauthorized", "Content-Type: text/plain\r\n", b"Invalid credentials in Authorization header");
        }
    }
    let url = path.clone();
    let (chaos, path) = chaos_of(path.split('?').next().unwrap_or(""));
    if let Some(s) = chaos.status_always.or(chaos.status_once.filter(|_| first(counts, "status-once", &url))) {
        return reply(&mut conn, &format!("{s} Chaos"), "", b"chaos");
    }
    if let Some(rest) = path.strip_prefix("/org/renamed/") {
        return reply(&mut conn, "307 Temporary Redirect", &format!("Location: /org/tiny/{rest}\r\n"), b"");
    }
    let file = path.rsplit('/').next().unwrap_or("").to_string();
    if let Some(cdn) = cdn {
        if file.ends_with(".safetensors") {
            let loc = format!("http://127.0.0.1:{cdn}/cdn/{file}?X-Signature=abc");
            return reply(&mut conn, "302 Found", &format!("Location: {loc}\r\n"), b"");
        }
    }
    let Some((prefix, dir)) = routes.iter().find(|(p, _)| path.starts_with(p)) else {
        return reply(&mut conn, "404 Not Found", "", b"Entry not found");
    };
    let rel = &path[prefix.len()..];
    let Ok(bytes) = (if rel.contains("..") { Err(std::io::ErrorKind::NotFound.into()) } else { std::fs::read(dir.join(rel)) }) else {
        return reply(&mut conn, "404 Not Found", "", b"Entry not found");
    };
    let size = bytes.len();
    let start = range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.strip_suffix('-')).and_then(|s| s.parse::<usize>().ok());
    let plain = chaos.drop_once.is_none() && chaos.lie_length.is_none() && chaos.bad_range.is_none();
    if plain {
        return match start {
            Some(s) if s < size => reply(&mut conn, "206 Partial Content", &format!("Content-Range: bytes {s}-{}/{size}\r\n", size - 1), &bytes[s..]),
            Some(_) => reply(&mut conn, "416 Range Not Satisfiable", &format!("Content-Range: bytes */{size}\r\n"), b""),
            None => reply(&mut conn, "200 OK", "Accept-Ranges: bytes\r\n", &bytes),
        };
    }
    // Misbehaving: what the headers claim (the file's size, the range, the
    // length) and what is sent (bytes[from..to]), then maybe a hang-up.
    let claimed = chaos.lie_length.unwrap_or(size as u64);
    let s = start.unwrap_or(0) as u64;
    if s >= claimed {
        return reply(&mut conn, "416 Range Not Satisfiable", &format!("Content-Range: bytes */{claimed}\r\n"), b"");
    }
    let (mut first_byte, last, mut total, mut length) = (s, claimed - 1, claimed, claimed - s);
    let (mut from, mut to) = (s as usize, size);
    if start.is_some() {
        match chaos.bad_range.as_deref() {
            Some("offset") => {
                first_byte = s.saturating_sub(1000);
                from = first_byte as usize;
                length = last - first_byte + 1;
            }
            Some("total") => total += 1000,
            Some("length") => {
                length -= 1;
                to -= 1;
            }
            _ => {}
        }
    }
    let from = from.min(size);
    let mut body = &bytes[from..to.max(from)];
    let dropped = chaos.drop_once.filter(|&n| n < body.len() && first(counts, "drop-once", &url));
    if let Some(n) = dropped {
        body = &body[..n];
    }
    let (status, extra) = match start {
        Some(_) => ("206 Partial Content", format!("Content-Range: bytes {first_byte}-{last}/{total}\r\n")),
        None => ("200 OK", String::new()),
    };
    write!(conn, "HTTP/1.1 {status}\r\n{extra}Content-Length: {length}\r\nConnection: close\r\n\r\n")?;
    conn.write_all(body)?;
    // Short of its Content-Length: the client sees the connection end.
    conn.flush()?;
    conn.shutdown(std::net::Shutdown::Both)
}

/// The hub (gated) and the CDN it redirects weights to.
fn servers() -> (Server, Server) {
    let tiny = fixtures().join("llama_tiny");
    let cdn = Server::start(vec![("/cdn/", tiny.clone())], None, None);
    let hub = Server::start(
        vec![("/org/tiny/resolve/main/", tiny.clone()), ("/org/vocab/resolve/main/", fixtures().join("tokenizers")), ("/files/", tiny)],
        Some(TOKEN),
        Some(cdn.port),
    );
    (hub, cdn)
}

fn tramontane(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tramontane"));
    c.args(args);
    // Only what the test sets: no token, endpoint or proxy from the outside.
    for v in ["HF_TOKEN", "HF_ENDPOINT", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied());
    c.output().expect("runs")
}

fn no_token_in(out: &Output, secret: &str) {
    for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(!String::from_utf8_lossy(bytes).contains(secret), "the token shows in {what}");
    }
}

fn json_ok(out: &Output, secret: &str) -> Value {
    no_token_in(out, secret);
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON object")
}

#[test]
fn a_gated_model_without_the_token_is_a_401_that_says_so() {
    let (hub, _cdn) = servers();
    let endpoint = hub.url();
    let env = [("HF_ENDPOINT", endpoint.as_str())];
    let out = tramontane(&["tokenize", "--model", "org/tiny", "--text", "Hello", "--json"], &env);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("NETWORK"), "{err}");
    assert!(err.contains("--hf-token") && err.contains("HF_TOKEN"), "names the way to give a token: {err}");
    assert!(out.stdout.is_empty());

    // A wrong token: refused, and never echoed.
    let wrong = "hf_wrong_token_987654321";
    for (args, env) in [
        (vec!["tokenize", "--model", "org/tiny", "--text", "Hello", "--hf-token", wrong], vec![("HF_ENDPOINT", endpoint.as_str())]),
        (vec!["tokenize", "--model", "org/tiny", "--text", "Hello"], vec![("HF_ENDPOINT", endpoint.as_str()), ("HF_TOKEN", wrong)]),
    ] {
        let out = tramontane(&args, &env);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("401") && err.contains("not accepted"), "{err}");
        no_token_in(&out, wrong);
    }
    // The refused requests did carry it: the 401 is the server's answer to it.
    assert!(hub.seen().iter().any(|s| s.authorization.as_deref() == Some(&format!("Bearer {wrong}"))));
}

#[test]
fn tokenize_and_prompt_over_http_equal_the_local_folder() {
    let (hub, _cdn) = servers();
    let local = fixtures().join("llama_tiny");
    let local = local.to_str().expect("utf-8 path");
    let endpoint = hub.url();
    let text = "Hello world, <|im_start|>how are you?";
    let want = json_ok(&tramontane(&["tokenize", "--model", local, "--text", text, "--parse-special", "--json"], &[]), TOKEN);
    assert!(want["ids"].as_array().is_some_and(|a| a.len() > 3));
    let folder = format!("{endpoint}/files/");
    for (model, env) in [
        // A repo id with HF_TOKEN, a folder URL with --hf-token, a renamed repo
        // (a same-origin redirect keeps the token).
        ("org/tiny", vec![("HF_ENDPOINT", endpoint.as_str()), ("HF_TOKEN", TOKEN)]),
        (folder.as_str(), vec![]),
        ("org/renamed", vec![("HF_ENDPOINT", endpoint.as_str()), ("HF_TOKEN", TOKEN)]),
    ] {
        let mut args = vec!["tokenize", "--model", model, "--text", text, "--parse-special", "--json"];
        if env.is_empty() {
            args.extend(["--hf-token", TOKEN]);
        }
        let got = json_ok(&tramontane(&args, &env), TOKEN);
        assert_eq!(got, want, "{model}");
    }
    // `prompt` reads the template the same way.
    let msgs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("remote_messages.json");
    std::fs::write(&msgs, r#"[{"role": "user", "content": "Hi there"}]"#).expect("write");
    let m = msgs.to_str().expect("path");
    let want = json_ok(&tramontane(&["prompt", "--model", local, "--messages", m, "--json"], &[]), TOKEN);
    let got = json_ok(&tramontane(&["prompt", "--model", "org/tiny", "--messages", m, "--json"], &[("HF_ENDPOINT", &endpoint), ("HF_TOKEN", TOKEN)]), TOKEN);
    assert_eq!(got, want);
    // The tokenizer and template only: no weight file was asked for.
    assert!(!hub.seen().iter().any(|s| s.path.ends_with(".safetensors")));
}

#[test]
fn a_gguf_by_url_and_by_repo_file_reads_its_header_with_ranges() {
    let (hub, _cdn) = servers();
    let endpoint = hub.url();
    let local = fixtures().join("tokenizers/ggml-vocab-llama-spm.gguf");
    let text = "Hello world  and\n tabs\t!";
    let want = json_ok(&tramontane(&["tokenize", "--model", local.to_str().expect("path"), "--text", text, "--json"], &[]), TOKEN);
    let url = format!("{endpoint}/org/vocab/resolve/main/ggml-vocab-llama-spm.gguf");
    let by_url = json_ok(&tramontane(&["tokenize", "--model", &url, "--text", text, "--json", "--hf-token", TOKEN], &[]), TOKEN);
    assert_eq!(by_url, want);
    let by_repo = json_ok(
        &tramontane(&["tokenize", "--model", "org/vocab", "--gguf-file", "ggml-vocab-llama-spm.gguf", "--text", text, "--json"], &[("HF_ENDPOINT", &endpoint), ("HF_TOKEN", TOKEN)]),
        TOKEN,
    );
    assert_eq!(by_repo, want);
    // The header is read from a growing prefix on one streamed GET per run
    // (any other request for the file would be a Range request).
    let gets: Vec<Seen> = hub.seen().into_iter().filter(|s| s.path.ends_with(".gguf")).collect();
    assert_eq!(gets.iter().filter(|s| s.range.is_none()).count(), 2, "{gets:?}");
    assert!(gets.iter().all(|s| s.authorization.is_some()));
}

#[test]
fn run_over_http_equals_the_local_folder_and_the_cdn_never_sees_the_token() {
    let (hub, cdn) = servers();
    let local = fixtures().join("llama_tiny");
    let args = |model: &str| -> Vec<String> {
        ["run", "--model", model, "--prompt-ids", "1,2,3,4", "--max-tokens", "6", "--top-logits", "4", "--ignore-eos", "--json"].iter().map(|s| s.to_string()).collect()
    };
    let strip = |mut v: Value| {
        // Speeds differ run to run; everything else must be equal.
        if let Some(o) = v.as_object_mut() {
            o.remove("prefill_tokens_per_s");
            o.remove("decode_tokens_per_s");
        }
        v
    };
    let local_args = args(local.to_str().expect("path"));
    let want = strip(json_ok(&tramontane(&local_args.iter().map(String::as_str).collect::<Vec<_>>(), &[]), TOKEN));
    assert_eq!(want["generated_ids"].as_array().map(Vec::len), Some(6));

    let folder = format!("{}/files/", hub.url());
    let mut remote_args = args(&folder);
    remote_args.extend(["--hf-token".to_string(), TOKEN.to_string()]);
    let out = tramontane(&remote_args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let got = strip(json_ok(&out, TOKEN));
    assert_eq!(got, want);

    // Every request to the model's host carried the token; the weights came
    // from the other origin, which never got it.
    let hub_seen = hub.seen();
    assert!(hub_seen.iter().all(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))), "{hub_seen:?}");
    let cdn_seen = cdn.seen();
    assert!(cdn_seen.iter().filter(|s| s.path.contains("model-0000")).count() >= 3, "the shards came by redirect: {cdn_seen:?}");
    assert!(cdn_seen.iter().all(|s| s.authorization.is_none()), "the token was forwarded across origins: {cdn_seen:?}");
    // Each shard is streamed once from its start; anything else is a Range.
    for s in cdn_seen.iter().filter(|s| s.range.is_none()) {
        assert_eq!(cdn_seen.iter().filter(|o| o.path == s.path && o.range.is_none()).count(), 1, "{cdn_seen:?}");
    }
}

#[test]
fn a_local_path_that_looks_like_a_repo_id_stays_local() {
    // `--model dir/name` where that path exists is the folder, not a repo id
    // (no endpoint is reachable here: a network attempt would fail).
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("remote_local");
    let dir = base.join("org/tiny");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(fixtures().join("llama_tiny/tokenizer.json"), dir.join("tokenizer.json")).expect("copy");
    let mut c = Command::new(env!("CARGO_BIN_EXE_tramontane"));
    c.current_dir(&base).args(["tokenize", "--model", "org/tiny", "--text", "Hello", "--json"]).env("HF_ENDPOINT", "http://127.0.0.1:9");
    let out = c.output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // And a missing one is a repo id: the endpoint is asked (and is not there).
    let mut c = Command::new(env!("CARGO_BIN_EXE_tramontane"));
    c.current_dir(&base).args(["tokenize", "--model", "org/absent", "--text", "Hello"]).env("HF_ENDPOINT", "http://127.0.0.1:9");
    let out = c.output().expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http://127.0.0.1:9/org/absent/resolve/main/") && err.contains("NETWORK"), "{err}");
}

/// The tiny model (under /files/) and the GGUF fixtures (under /gguf/), no token.
fn plain() -> Server {
    Server::start(vec![("/files/", fixtures().join("llama_tiny")), ("/gguf/", fixtures().join("moe_gguf"))], None, None)
}

fn run_args(model: &str) -> Vec<String> {
    ["run", "--model", model, "--prompt-ids", "1,2,3,4", "--max-tokens", "6", "--ignore-eos", "--json"].iter().map(|s| s.to_string()).collect()
}

fn run_model(model: &str) -> Output {
    tramontane(&run_args(model).iter().map(String::as_str).collect::<Vec<_>>(), &[])
}

const SHARD1: &str = "model-00001-of-00003.safetensors";
const SHARD2: &str = "model-00002-of-00003.safetensors";

#[test]
fn dropped_connections_and_503s_are_retried_and_resumed_from_where_they_stopped() {
    let local = fixtures().join("llama_tiny");
    let want = json_ok(&run_model(local.to_str().expect("path")), TOKEN);
    let srv = plain();
    // Every file: a 503 first, then a response that breaks after 100000 bytes
    // (the files longer than that), then the rest.
    let got = json_ok(&run_model(&format!("{}/chaos/drop-once=100000,status-once=503/files/", srv.url())), TOKEN);
    assert_eq!(got["generated_ids"], want["generated_ids"]);
    assert_eq!(got["top_logits"], want["top_logits"]);
    let seen = srv.seen();
    for shard in [SHARD1, SHARD2] {
        let reqs: Vec<&Seen> = seen.iter().filter(|s| s.path.ends_with(shard)).collect();
        // The 503 and the broken GET; everything after is a Range request,
        // the first from the byte where the connection dropped.
        assert_eq!(reqs.iter().filter(|s| s.range.is_none()).count(), 2, "{reqs:?}");
        let ranges: Vec<&str> = reqs.iter().filter_map(|s| s.range.as_deref()).collect();
        assert_eq!(ranges.first().copied(), Some("bytes=100000-"), "{reqs:?}");
    }
}

#[test]
fn failures_that_do_not_go_away_are_network_errors_with_url_and_status_in_seconds() {
    let srv = plain();
    let t0 = Instant::now();
    let out = run_model(&format!("{}/chaos/status-always=500,only={SHARD2}/files/", srv.url()));
    let took = t0.elapsed();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[NETWORK]") && err.contains(&format!("/files/{SHARD2}: HTTP 500")) && err.contains("after 4 attempts"), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(srv.seen().iter().filter(|s| s.path.ends_with(SHARD2)).count(), 4, "one request and three retries");

    // A missing file is not retried.
    let out = run_model(&format!("{}/chaos/status-always=404,only={SHARD2}/files/", srv.url()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[NETWORK]") && err.contains(&format!("/files/{SHARD2}: HTTP 404")), "{err}");
    assert_eq!(srv.seen().iter().filter(|s| s.path.ends_with(SHARD2)).count(), 5);
}

#[test]
fn wrong_206_answers_and_lying_lengths_are_network_errors() {
    let srv = plain();
    let base = srv.url();
    // The first response for shard 1 breaks at byte 100000; the resumed ones
    // are bad 206s. A length of 8 GB claimed for small files (config.json, a
    // GGUF): their bodies end early on every attempt, nothing is allocated for
    // the claim, and it takes seconds.
    for (model, file, status, what) in [
        (format!("{base}/chaos/drop-once=100000,bad-range=offset,only={SHARD1}/files/"), SHARD1, 206, "it starts at byte 99000"),
        (format!("{base}/chaos/drop-once=100000,bad-range=total,only={SHARD1}/files/"), SHARD1, 206, "the file has 3145864 bytes"),
        (format!("{base}/chaos/drop-once=100000,bad-range=length,only={SHARD1}/files/"), SHARD1, 206, "its Content-Length is"),
        (format!("{base}/chaos/lie-length=8000000000/files/"), "config.json", 206, "of 8000000000"),
        (format!("{base}/chaos/lie-length=8000000000/gguf/moe-q4_0.gguf"), "moe-q4_0.gguf", 206, "of 8000000000"),
    ] {
        let t0 = Instant::now();
        let out = run_model(&model);
        let took = t0.elapsed();
        assert!(!out.status.success(), "{model}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("[NETWORK]") && err.contains(&format!("{file}: HTTP {status}")), "{model}: {err}");
        assert!(err.contains(what) && err.contains("after 4 attempts"), "{model}: {err}");
        assert!(took < Duration::from_secs(30), "{model}: {took:?}");
    }
}
