//! The endpoints: what each path answers, the API key, and turning a request into a job and
//! its events into a whole answer or a stream.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use smol::channel::{Receiver, Sender, TrySendError};

use super::ServeOptions;
use super::http::{Body, ReadError, read_body};
use super::request::{self, Prompt};
use super::response::{ApiError, Envelope, Finish, Usage};
use super::scheduler::{Event, Job, Stats};
use super::sse;
use crate::chat::ChatTemplate;
use crate::tokenizer::Tokenizer;

const INDEX_HTML: &str = include_str!("web/index.html");

/// What the server knows once the model is loaded.
pub struct Ready {
    pub tokenizer: Arc<Tokenizer>,
    pub template: ChatTemplate,
    pub jobs: Sender<Job>,
    pub n_ctx: usize,
    pub stats: Arc<Mutex<Stats>>,
}

pub struct State {
    pub opts: ServeOptions,
    pub api_key: Option<String>,
    pub model_id: String,
    pub created: u64,
    pub ready: OnceLock<Ready>,
    pub ex: Arc<smol::Executor<'static>>,
}

pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let res = match (req.method().clone(), path.as_str()) {
        (Method::GET, "") | (Method::GET, "/index.html") => {
            Ok(respond(StatusCode::OK, "text/html; charset=utf-8", Body::full(INDEX_HTML)))
        }
        (Method::GET, "/health") => match state.ready.get() {
            Some(_) => Ok(json_response(200, &json!({"status": "ok"}))),
            None => Err(ApiError::loading()),
        },
        (Method::GET, "/v1/models") => Ok(json_response(200, &json!({"object": "list", "data": [model_json(&state)]}))),
        (Method::GET, p) if p.starts_with("/v1/models/") => match &p["/v1/models/".len()..] {
            id if served_as(&state, id) => Ok(json_response(200, &model_json(&state))),
            id => Err(ApiError::model_not_found(id, &state.model_id)),
        },
        (Method::GET, "/v1/cluster") => authorize(&state, &req).and_then(|_| cluster(&state)),
        (Method::POST, "/v1/chat/completions") => generate(&state, req, true).await,
        (Method::POST, "/v1/completions") => generate(&state, req, false).await,
        (_, "" | "/health" | "/v1/models" | "/v1/cluster" | "/v1/chat/completions" | "/v1/completions") => {
            Err(ApiError::new(
                405,
                "invalid_request_error",
                "method_not_allowed",
                format!("{} is not allowed on {path}", req.method()),
            ))
        }
        _ => Err(ApiError::not_found(format!("no endpoint at {path}"))),
    };
    Ok(res.unwrap_or_else(|e| json_response(e.status, &e.body())))
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response(status: u16, v: &Value) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(status, "application/json", Body::full(v.to_string()))
}

fn model_json(state: &State) -> Value {
    json!({"id": state.model_id, "object": "model", "created": state.created, "owned_by": "prima"})
}

fn served_as(state: &State, id: &str) -> bool {
    id == state.model_id || id.strip_suffix(".gguf") == Some(state.model_id.as_str())
}

fn authorize(state: &State, req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(key) = &state.api_key else { return Ok(()) };
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let given = h("authorization").and_then(|a| a.strip_prefix("Bearer ")).or_else(|| h("x-api-key"));
    match given {
        Some(g) if same_secret(g.trim().as_bytes(), key.as_bytes()) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

/// Comparison whose time does not depend on where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cluster(state: &State) -> Result<Response<Body>, ApiError> {
    let ready = state.ready.get().ok_or_else(ApiError::loading)?;
    let stats = ready.stats.lock().unwrap().clone();
    Ok(json_response(200, &json!({"model": state.model_id, "n_ctx": ready.n_ctx, "stats": stats})))
}

async fn generate(state: &Arc<State>, req: Request<Incoming>, chat: bool) -> Result<Response<Body>, ApiError> {
    let ready = state.ready.get().ok_or_else(ApiError::loading)?;
    authorize(state, &req)?;
    let limit = state.opts.max_body;
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(format!("the request body is larger than {limit} bytes")));
    }
    let body = read_body(req.into_body(), limit, state.opts.body_timeout).await.map_err(|e| match e {
        ReadError::TooLarge => ApiError::too_large(format!("the request body is larger than {limit} bytes")),
        ReadError::TimedOut => {
            ApiError::new(408, "invalid_request_error", "timeout", "the request body did not arrive in time")
        }
        ReadError::Broken(e) => ApiError::bad_request(format!("reading the request body: {e}")),
    })?;
    let r = request::parse(&body, chat)?;
    if let Some(m) = r.model.as_deref().filter(|m| !m.is_empty() && !served_as(state, m)) {
        return Err(ApiError::model_not_found(m, &state.model_id));
    }
    let prompt = tokenize(ready, &r.prompt)?;
    if prompt.len() + 1 > ready.n_ctx {
        return Err(ApiError::context_exceeded(prompt.len() + 1, ready.n_ctx));
    }
    let max_tokens = r.max_tokens.unwrap_or(usize::MAX).min(ready.n_ctx - prompt.len());
    let (events_tx, events) = smol::channel::unbounded();
    let job = Job {
        prompt,
        sampling: r.sampling.clone(),
        penalties: r.penalties,
        max_tokens,
        stop: r.stop.clone(),
        events: events_tx,
    };
    match ready.jobs.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err(ApiError::busy()),
        Err(TrySendError::Closed(_)) => return Err(ApiError::internal("the engine has stopped")),
    }
    let env = Envelope {
        id: format!(
            "{}-{:016x}",
            if chat { "chatcmpl" } else { "cmpl" },
            r.sampling.seed ^ state.created.rotate_left(17)
        ),
        created: unix_now(),
        model: state.model_id.clone(),
        chat,
    };
    if r.stream {
        let (tx, rx) = smol::channel::bounded(16);
        let opts = StreamOpts {
            keepalive: state.opts.keepalive,
            stall: state.opts.stall_timeout,
            include_usage: r.include_usage,
        };
        state.ex.spawn(forward_stream(env, events, tx, opts)).detach();
        let mut res = respond(StatusCode::OK, "text/event-stream", Body::stream(rx));
        res.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
        return Ok(res);
    }
    let (text, finish, usage) = collect(events).await?;
    Ok(json_response(200, &env.whole(&text, finish, usage)))
}

fn tokenize(ready: &Ready, p: &Prompt) -> Result<Vec<u32>, ApiError> {
    let tok = &ready.tokenizer;
    let tokens = match p {
        Prompt::Chat(messages) => {
            let text =
                ready.template.render_for(tok, messages, true).map_err(|e| ApiError::bad_request(e.to_string()))?;
            tok.encode(&text, true, true)
        }
        Prompt::Text(t) => tok.encode(t, true, true),
        Prompt::Tokens(t) => {
            if let Some(bad) = t.iter().find(|&&t| t as usize >= tok.n_vocab()) {
                return Err(ApiError::bad_request(format!(
                    "prompt token {bad} is outside the vocabulary (0..{})",
                    tok.n_vocab()
                )));
            }
            t.clone()
        }
    };
    if tokens.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty: nothing to continue from"));
    }
    Ok(tokens)
}

async fn collect(events: Receiver<Event>) -> Result<(String, Finish, Usage), ApiError> {
    let mut text = String::new();
    while let Ok(e) = events.recv().await {
        match e {
            Event::Prompt { .. } => {}
            Event::Text(t) => text.push_str(&t),
            Event::Done { finish, usage } => return Ok((text, finish, usage)),
            Event::Failed(msg) => return Err(ApiError::internal(msg)),
        }
    }
    Err(ApiError::internal("the engine stopped before finishing the request"))
}

struct StreamOpts {
    keepalive: Duration,
    stall: Duration,
    include_usage: bool,
}

/// Turn a job's events into SSE chunks. Returning early drops `events`, which the scheduler
/// sees as a cancellation: that happens when the client is gone (hyper dropped the body) or
/// has not read for `stall`.
async fn forward_stream(env: Envelope, events: Receiver<Event>, tx: Sender<Bytes>, o: StreamOpts) {
    let send = |b: Bytes| {
        let tx = tx.clone();
        async move {
            let sent = async { tx.send(b).await.is_ok() };
            let stalled = async {
                smol::Timer::after(o.stall).await;
                false
            };
            smol::future::or(sent, stalled).await
        }
    };
    if env.chat && !send(sse::data(&env.chunk("", true, None))).await {
        return;
    }
    loop {
        let next = async { events.recv().await.ok() };
        let tick = async {
            smol::Timer::after(o.keepalive).await;
            Some(Event::Prompt { done: 0, total: 0 })
        };
        let chunk = match smol::future::or(next, tick).await {
            None => {
                let _ = send(sse::data(&ApiError::internal("the engine stopped before finishing the request").body()))
                    .await;
                return;
            }
            Some(Event::Prompt { done: 0, total: 0 }) => sse::comment("keep-alive"),
            Some(Event::Prompt { done, total }) => sse::comment(&format!("prompt {done}/{total}")),
            Some(Event::Text(t)) => sse::data(&env.chunk(&t, false, None)),
            Some(Event::Done { finish, usage }) => {
                if !send(sse::data(&env.chunk("", false, Some(finish)))).await {
                    return;
                }
                if o.include_usage && !send(sse::data(&env.usage_chunk(usage))).await {
                    return;
                }
                let _ = send(sse::done()).await;
                return;
            }
            Some(Event::Failed(msg)) => {
                let _ = send(sse::data(&ApiError::internal(msg).body())).await;
                return;
            }
        };
        if !send(chunk).await || tx.is_closed() {
            return;
        }
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
}
