//! `--model` over HTTP: a URL or a Hugging Face repo id (`HF_ENDPOINT` pointed
//! at a server in this test), gated behind a bearer token. The token goes only
//! to the model's host (not to the host a file redirects to), never shows in
//! output, and the results equal the local folder's.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;

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

/// A tiny static server on 127.0.0.1: `routes` maps URL prefixes to folders.
/// With `token`, every request needs `Authorization: Bearer <token>` (else 401).
/// With `cdn`, `.safetensors` files answer 302 to that server's `/cdn/<file>`
/// (another origin, as Hugging Face's CDN); `/org/renamed/` answers 307 to
/// `/org/tiny/` on the same origin (a renamed repo).
struct Server {
    port: u16,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn start(routes: Vec<(&'static str, PathBuf)>, token: Option<&'static str>, cdn: Option<u16>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let routes = Arc::new(routes);
        let l = log.clone();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (routes, log) = (routes.clone(), l.clone());
                thread::spawn(move || {
                    let _ = handle(conn, &routes, token, cdn, &log);
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

fn handle(mut conn: TcpStream, routes: &[(&str, PathBuf)], token: Option<&str>, cdn: Option<u16>, log: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
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
    let path = path.split('?').next().unwrap_or("").to_string();
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
    match start {
        Some(s) if s < size => reply(&mut conn, "206 Partial Content", &format!("Content-Range: bytes {s}-{}/{size}\r\n", size - 1), &bytes[s..]),
        Some(_) => reply(&mut conn, "416 Range Not Satisfiable", &format!("Content-Range: bytes */{size}\r\n"), b""),
        None => reply(&mut conn, "200 OK", "Accept-Ranges: bytes\r\n", &bytes),
    }
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
