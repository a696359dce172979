//! Connections and routes. One task per connection (HTTP/1.1 keep-alive); each request is answered
//! on its own, so one client's bad or slow request never touches another's: a slow client times out
//! while sending (408) before it holds any room in the batch queue.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::State;
use super::api::{self, Refused};
use super::batcher::Full as QueueFull;
use super::binary::{self, Refusal};
use super::reload::{Loaded, Reloaded};
use crate::engine::Batch;
use crate::error::{Error, Result};

type Reply = Response<Full<Bytes>>;

/// JSON bodies from this size on (about 400 customers in the feature form, a millisecond of
/// parsing) are parsed off the worker thread's other connections. Handing them over costs a thread
/// switch, more than parsing a 64-customer request (about 150 µs) takes.
const LARGE_BODY: usize = 1 << 20;

/// Serves one connection until the client closes it or the server stops; `_open` tells the server
/// this connection is still open.
pub(super) async fn connection(
    state: Arc<State>,
    stream: TcpStream,
    mut stop: watch::Receiver<bool>,
    _open: mpsc::Sender<()>,
) {
    // Responses are written whole: waiting to coalesce them only adds latency.
    let _ = stream.set_nodelay(true);
    let timeout = state.opts.request_timeout;
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, request).await) }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    // The guard `wait_for` returns must not live across the awaits below.
    let stopping = async move {
        let _ = stop.wait_for(|&stopping| stopping).await;
    };
    tokio::select! {
        _ = connection.as_mut() => {}
        () = stopping => {
            // Finish the request in flight, if any, then close instead of keeping the connection alive.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Answers one request and counts it.
async fn handle(state: &Arc<State>, request: Request<Incoming>) -> Reply {
    let start = Instant::now();
    let (route, reply) = route(state, request).await;
    state.metrics.request(route, reply.status().as_u16(), start.elapsed());
    reply
}

/// The route's fixed name (a metrics label) and the reply.
async fn route(state: &Arc<State>, request: Request<Incoming>) -> (&'static str, Reply) {
    const ROUTES: [(&str, Method); 6] = [
        ("/health/live", Method::GET),
        ("/health/ready", Method::GET),
        ("/v1/score", Method::POST),
        ("/v1/model", Method::GET),
        ("/metrics", Method::GET),
        ("/admin/reload", Method::POST),
    ];
    let Some((route, method)) = ROUTES.iter().find(|(path, _)| *path == request.uri().path()) else {
        return ("other", error(StatusCode::NOT_FOUND, format!("no route {}", request.uri().path())));
    };
    let route: &'static str = route;
    if !route.starts_with("/health/")
        && let Some(refusal) = unauthorized(state, &request)
    {
        return (route, refusal);
    }
    if request.method() != method {
        let mut reply = error(StatusCode::METHOD_NOT_ALLOWED, format!("{route} takes {method} only"));
        reply.headers_mut().insert(header::ALLOW, HeaderValue::from_static(method.as_str()));
        return (route, reply);
    }
    let reply = match route {
        "/health/live" => json_reply(StatusCode::OK, json!({"status": "live"}).to_string()),
        "/health/ready" => match state.slot.get() {
            Some(slot) => {
                json_reply(StatusCode::OK, json!({"status": "ready", "model": slot.current().identity}).to_string())
            }
            None => loading(),
        },
        "/v1/score" => score(state, request).await,
        "/v1/model" => with_model(state, |m| json_reply(StatusCode::OK, info(m).to_string())),
        "/metrics" => with_model(state, |m| {
            let text = state.metrics.render(&m.labels, &m.name, &m.hash);
            let mut reply = Response::new(Full::new(Bytes::from(text)));
            reply
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            reply
        }),
        "/admin/reload" => admin_reload(state, request).await,
        _ => unreachable!("every route in ROUTES is matched"),
    };
    (route, reply)
}

/// `ltvx info --json` of the served model, with its identity and backend.
fn info(m: &Loaded) -> serde_json::Value {
    let mut info = m.info.clone();
    info["version"] = json!(m.version);
    info["backend"] = json!(m.engine.describe());
    info
}

fn with_model(state: &State, answer: impl FnOnce(&Loaded) -> Reply) -> Reply {
    match state.slot.get() {
        Some(slot) => answer(&slot.current()),
        None => loading(),
    }
}

/// `Some(401)` unless the request carries the server's bearer token (when it has one).
fn unauthorized(state: &State, request: &Request<Incoming>) -> Option<Reply> {
    let token = state.opts.auth_token.as_deref()?;
    let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    // The scheme's name is case-insensitive (RFC 9110); the token is not.
    let credentials = given.and_then(|v| v.split_once(' ')).filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
    let matches = credentials.is_some_and(|(_, g)| same(g.trim().as_bytes(), token.as_bytes()));
    if matches {
        return None;
    }
    let mut reply = error(
        StatusCode::UNAUTHORIZED,
        if given.is_some() { "wrong bearer token" } else { "this route needs Authorization: Bearer TOKEN" }.into(),
    );
    reply.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(reply)
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

enum Form {
    Json,
    Binary,
}

async fn score(state: &State, request: Request<Incoming>) -> Reply {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let form = match media.as_str() {
        "application/json" | "" => Form::Json,
        "application/octet-stream" => Form::Binary,
        other => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type {other}: send application/json or application/octet-stream"),
            );
        }
    };
    let Some(slot) = state.slot.get() else {
        return loading();
    };
    let body = match read_body(state, request).await {
        Ok(body) => body,
        Err(reply) => return *reply,
    };
    // Under overload the queue is full most of the time: refusing before parsing saves the CPU the
    // requests that do fit need (a request that finds some room is parsed and may still not fit).
    if state.batcher.is_full() {
        return queue_full(state.batcher.capacity());
    }
    // The model is fixed here: a reload from now on does not change what this request runs on.
    let model = slot.current();
    let sizes = model.engine.input_sizes();
    let (batch, ids) = match form {
        Form::Json => {
            let parse = || api::parse(&body, sizes, &model.spec);
            // Parsing a large body takes milliseconds: the worker thread hands its other
            // connections to another thread meanwhile, so that their I/O does not wait behind it.
            let parsed = if body.len() >= LARGE_BODY { tokio::task::block_in_place(parse) } else { parse() };
            match parsed {
                Ok(parsed) => (parsed.batch, Some(parsed.ids)),
                Err(refused) => return refusal(refused),
            }
        }
        Form::Binary => match binary::decode_request(&body, sizes) {
            Ok(batch) => (batch, None),
            Err(Refusal::Malformed(m)) => return error(StatusCode::BAD_REQUEST, m),
            Err(Refusal::Unfit(m)) => return error(StatusCode::UNPROCESSABLE_ENTITY, m),
        },
    };
    drop(body);
    let scores = match run_batch(state, &model, batch).await {
        Ok(scores) => scores,
        Err(reply) => return *reply,
    };
    match ids {
        Some(ids) => json_reply(StatusCode::OK, api::response(&model.identity, &ids, &scores)),
        None => {
            let mut reply = Response::new(Full::new(Bytes::from(binary::encode_response(&scores))));
            reply.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            reply
        }
    }
}

fn refusal(Refused { status, message }: Refused) -> Reply {
    error(StatusCode::from_u16(status).expect("a valid status"), message)
}

/// The body, within the size limit and the request timeout.
async fn read_body(state: &State, request: Request<Incoming>) -> Result<Bytes, Box<Reply>> {
    let limit = state.opts.max_body_bytes;
    let too_large =
        || Box::new(error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {limit} bytes (--max-body-bytes)")));
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let collect = Limited::new(request.into_body(), limit).collect();
    match tokio::time::timeout(state.opts.request_timeout, collect).await {
        Err(_) => Err(Box::new(error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {:?}", state.opts.request_timeout),
        ))),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Box::new(error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Queues the customers and waits for their scores.
async fn run_batch(state: &State, model: &Arc<Loaded>, batch: Batch) -> Result<crate::engine::Scores, Box<Reply>> {
    let n = batch.len();
    if n == 0 {
        return Ok(crate::engine::Scores { segments: model.engine.segments(), ..Default::default() });
    }
    let capacity = state.batcher.capacity();
    if n > capacity {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{n} customers in one request; this server takes at most {capacity} (--queue-capacity)"),
        )));
    }
    let receiver = match state.batcher.submit(model.clone(), batch) {
        Ok(receiver) => receiver,
        Err(QueueFull) => return Err(Box::new(queue_full(capacity))),
    };
    match receiver.await {
        Ok(Ok(scores)) => Ok(scores),
        Ok(Err(e)) => Err(Box::new(error(StatusCode::INTERNAL_SERVER_ERROR, format!("scoring failed: {e}")))),
        Err(_) => Err(Box::new(error(StatusCode::INTERNAL_SERVER_ERROR, "the scoring thread stopped".into()))),
    }
}

#[derive(Deserialize)]
struct ReloadRequest {
    /// Another model file to serve from now on; default: the current file, re-read.
    model: Option<PathBuf>,
}

async fn admin_reload(state: &Arc<State>, request: Request<Incoming>) -> Reply {
    let body = match read_body(state, request).await {
        Ok(body) => body,
        Err(reply) => return *reply,
    };
    let path = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<ReloadRequest>(&body) {
            Ok(r) => r.model,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
        }
    };
    match reload(state, path).await {
        Ok(r) => json_reply(
            StatusCode::OK,
            json!({"model": r.current.identity, "previous": r.previous, "seconds": r.seconds}).to_string(),
        ),
        Err(e) if state.slot.get().is_none() => busy(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, format!("reload refused, the previous model keeps serving: {e}"))
        }
    }
}

/// Loads and swaps in a model off the async runtime (shared by the route and SIGHUP).
pub(super) async fn reload(state: &Arc<State>, path: Option<PathBuf>) -> Result<Reloaded> {
    if state.slot.get().is_none() {
        return Err(Error::Input("the first model is still loading".into()));
    }
    let state = state.clone();
    tokio::task::spawn_blocking(move || state.slot.get().expect("checked above").reload(path))
        .await
        .map_err(|e| Error::Input(format!("the reload failed: {e}")))?
}

fn json_reply(status: StatusCode, body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

/// `{"error": message}` with `status`.
fn error(status: StatusCode, message: String) -> Reply {
    json_reply(status, json!({"error": message}).to_string())
}

fn queue_full(capacity: usize) -> Reply {
    busy(StatusCode::SERVICE_UNAVAILABLE, format!("the scoring queue is full ({capacity} customers): retry later"))
}

/// 503 until the first model is ready.
fn loading() -> Reply {
    busy(StatusCode::SERVICE_UNAVAILABLE, "the model is still loading".into())
}

/// An error that goes away by itself: the client should retry after a second.
fn busy(status: StatusCode, message: String) -> Reply {
    let mut reply = error(status, message);
    reply.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    reply
}
