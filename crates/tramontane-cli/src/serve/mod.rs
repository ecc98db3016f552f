//! `tramontane serve`: the native engine behind an OpenAI-compatible HTTP API
//! (axum on tokio), so an app written against the JS `Engine` can use
//! `RemoteEngine` (or any OpenAI client) with a model too big for a tab.
//!
//! One request generates at a time (one model, one GPU); up to `--queue` more
//! wait in arrival order and beyond that the answer is 429. A client that
//! disconnects stops its generation at the next token (or before it starts).
//! SIGINT / SIGTERM stop accepting connections, end running generations and
//! exit.

mod engine;
mod images;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tower_http::cors::{Any, CorsLayer};

use engine::{Engine, Event, Refused, Work};
use tramontane::openai::{self, status, Answer, ApiError, Head, ModelFacts};

/// An [`ApiError`] (the core crate's OpenAI protocol) as an HTTP response.
struct HttpError(ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl From<tramontane::Error> for HttpError {
    fn from(e: tramontane::Error) -> Self {
        HttpError(e.into())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0.body())).into_response()
    }
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: crate::ModelArgs,
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0 for all).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free one; the line `listening on http://HOST:PORT` says which).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every request but /health.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Requests that may wait while one generates; more get 429.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// The model's name in /v1/models (default: the --model path's last part).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Largest request body in bytes (413 beyond it): room for images sent
    /// inline as data: URLs.
    #[arg(long, default_value_t = 48 << 20)]
    pub max_body: usize,
    /// A Jinja chat template to use instead of the model's own (read verbatim).
    #[arg(long)]
    pub chat_template: Option<std::path::PathBuf>,
}

#[derive(Clone)]
struct App {
    engine: Engine,
    facts: ModelFacts,
    name: String,
    created: u64,
    api_key: Option<Arc<str>>,
}

pub fn serve(args: ServeArgs) -> tramontane::Result<()> {
    let ServeArgs { model: model_args, host, port, api_key, queue, served_model_name, max_body, chat_template } = args;
    let template = match &chat_template {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| tramontane::Error::Io { file: p.display().to_string(), msg: e.to_string() })?),
        None => None,
    };
    let name = served_model_name.unwrap_or_else(|| {
        let m = model_args.model.trim_end_matches('/');
        m.rsplit('/').next().unwrap_or(m).to_string()
    });
    // The model is loaded on its own thread and stays there.
    let (engine, facts) = Engine::start(queue.max(1), move || {
        let (_, mut model) = pollster::block_on(crate::load(&model_args, false))?;
        if let Some(t) = &template {
            model.text.set_template(t);
        }
        Ok(model)
    })?;
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let app = App { engine: engine.clone(), facts, name, created, api_key: api_key.as_deref().map(Arc::from) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| tramontane::Error::Internal(format!("starting the HTTP runtime: {e}")))?;
    rt.block_on(async move {
        let addr = format!("{host}:{port}");
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| tramontane::Error::InvalidRequest(format!("cannot listen on {addr}: {e}")))?;
        let local: SocketAddr = listener.local_addr().map_err(|e| tramontane::Error::Internal(e.to_string()))?;
        eprintln!("listening on http://{local}");
        let stopping = engine.stopping.clone();
        axum::serve(listener, router(app, max_body))
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                eprintln!("shutting down");
                // Running generations end at their next token.
                stopping.store(true, Ordering::SeqCst);
            })
            .await
            .map_err(|e| tramontane::Error::Internal(format!("the HTTP server failed: {e}")))
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn router(app: App, max_body: usize) -> Router {
    // Browser pages on any origin may call us (the API key, not the origin,
    // is what guards a server that wants guarding).
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(600));
    let api = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model_by_id))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(not_found)
        .route_layer(middleware::from_fn_with_state(app.clone(), require_key));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(cors)
        .with_state(app)
}

async fn require_key(State(app): State<App>, headers: HeaderMap, req: axum::extract::Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if given.map(str::trim) != Some(key.as_ref()) {
            let mut e = ApiError::new(status::UNAUTHORIZED, "invalid_request_error", "Incorrect API key provided (send it as Authorization: Bearer KEY)");
            e.code = Some("invalid_api_key".into());
            return HttpError(e).into_response();
        }
    }
    next.run(req).await
}

async fn not_found(method: Method, uri: axum::http::Uri) -> HttpError {
    let mut e = ApiError::new(status::NOT_FOUND, "invalid_request_error", format!("no route {method} {}", uri.path()));
    e.code = Some("not_found".into());
    HttpError(e)
}

/// The request body as JSON: 413 over the size limit, 400 if not JSON.
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|r| {
        let status = r.status();
        let mut e = ApiError::new(status.as_u16(), "invalid_request_error", r.body_text());
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            e.message = "the request body is larger than this server accepts (--max-body)".into();
            e.code = Some("request_too_large".into());
        }
        e
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad("body", format!("the request body is not valid JSON: {e}")))
}

fn model_object(app: &App) -> Value {
    json!({"id": app.name, "object": "model", "created": app.created, "owned_by": "tramontane", "max_model_len": app.facts.context})
}

async fn models(State(app): State<App>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_object(&app)]}))
}

async fn model_by_id(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Value>, HttpError> {
    if id == app.name {
        Ok(Json(model_object(&app)))
    } else {
        let mut e = ApiError::new(status::NOT_FOUND, "invalid_request_error", format!("The model `{id}` does not exist (this server has `{}`)", app.name));
        e.code = Some("model_not_found".into());
        Err(e.into())
    }
}

fn refused(r: Refused) -> ApiError {
    match r {
        Refused::Busy => {
            let mut e = ApiError::new(status::TOO_MANY_REQUESTS, "rate_limit_error", "the server is busy: its request queue is full; retry shortly");
            e.code = Some("queue_full".into());
            e
        }
        Refused::Gone => ApiError::new(status::INTERNAL_SERVER_ERROR, "server_error", "the model is no longer running"),
    }
}

/// Sets a flag when dropped: the handler (or the stream feeding a client)
/// going away before the generation ends means the client left.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn chat_completions(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
    generate(app, body, true).await.unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
    generate(app, body, false).await.unwrap_or_else(IntoResponse::into_response)
}

async fn generate(app: App, body: Result<Bytes, BytesRejection>, chat: bool) -> Result<Response, HttpError> {
    let body = json_body(body)?;
    let p = openai::parse(&body, chat, &app.facts)?;
    let model = body.get("model").and_then(Value::as_str).unwrap_or(&app.name).to_string();
    let t0 = Instant::now();
    // OpenAI's server sends a stream's usage only when asked.
    let mut answer = Answer::new(Head::new(chat, &model), &p, false, t0);
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(cancel.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Images are fetched and decoded here, off the model's thread.
    let refs = p.images.clone();
    let pictures = if refs.is_empty() {
        Vec::new()
    } else {
        tokio::task::spawn_blocking(move || images::pictures(&refs))
            .await
            .map_err(|e| ApiError::new(status::INTERNAL_SERVER_ERROR, "server_error", format!("decoding images: {e}")))??
    };
    app.engine.submit(Work::Generate { prompt: Box::new(p.prompt), req: p.gen, pictures, cancel, events: tx }).map_err(refused)?;
    // The status is decided before anything is sent: a prompt the template or
    // the context refuses is a 400, not a broken stream.
    match rx.recv().await {
        Some(Event::Started) => {}
        Some(Event::Done(Err(e))) => return Err(e.into()),
        _ => return Err(ApiError::new(status::INTERNAL_SERVER_ERROR, "server_error", "the model stopped before answering").into()),
    }
    if !answer.streams() {
        loop {
            match rx.recv().await {
                Some(Event::Token { piece, logprob }) => {
                    answer.token(&piece, logprob);
                }
                Some(Event::Done(Ok(g))) => {
                    drop(guard);
                    let response = answer.end(&g).pop().unwrap_or_default();
                    return Ok(Json(response).into_response());
                }
                Some(Event::Done(Err(e))) => return Err(e.into()),
                Some(Event::Started) | None => {
                    return Err(ApiError::new(status::INTERNAL_SERVER_ERROR, "server_error", "the model stopped mid-answer").into())
                }
            }
        }
    }
    // Streaming: a task turns engine events into SSE events. When the client
    // disconnects the body (and `out`'s receiver) is dropped, the task's next
    // send fails, and it drops `guard`: the generation stops.
    let (out, body_rx) = mpsc::channel::<Result<SseEvent, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        let _guard = guard;
        let send = |v: Value| {
            let out = out.clone();
            async move { out.send(Ok(SseEvent::default().data(v.to_string()))).await.is_ok() }
        };
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Token { piece, logprob } => {
                    if let Some(chunk) = answer.token(&piece, logprob) {
                        if !send(chunk).await {
                            return;
                        }
                    }
                }
                Event::Done(Ok(g)) => {
                    for c in answer.end(&g) {
                        if !send(c).await {
                            return;
                        }
                    }
                    break;
                }
                Event::Done(Err(e)) => {
                    // Headers are gone: the error goes in the stream, as OpenAI does.
                    let _ = send(ApiError::from(e).body()).await;
                    break;
                }
                Event::Started => {}
            }
        }
        let _ = out.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    let mut resp = Sse::new(tokio_stream::wrappers::ReceiverStream::new(body_rx)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

async fn tokenize(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Result<Json<Value>, HttpError> {
    let body = json_body(body)?;
    let text = body.get("content").and_then(Value::as_str).ok_or_else(|| ApiError::bad("content", "content must be a string"))?.to_string();
    let add_special = match body.get("add_special") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad("add_special", "add_special must be true or false").into()),
    };
    let (reply, rx) = oneshot::channel();
    app.engine.submit(Work::Tokenize { text, add_special, reply }).map_err(refused)?;
    let ids = rx.await.map_err(|_| refused(Refused::Gone))??;
    Ok(Json(json!({"tokens": ids})))
}

async fn detokenize(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Result<Json<Value>, HttpError> {
    let body = json_body(body)?;
    let ids: Option<Vec<u32>> = body
        .get("tokens")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|x| x.as_u64().filter(|&i| i < 1 << 32).map(|i| i as u32)).collect());
    let ids = ids.ok_or_else(|| ApiError::bad("tokens", "tokens must be an array of token ids"))?;
    let (reply, rx) = oneshot::channel();
    app.engine.submit(Work::Detokenize { ids, reply }).map_err(refused)?;
    let text = rx.await.map_err(|_| refused(Refused::Gone))??;
    Ok(Json(json!({"content": text})))
}
