//! `prima serve` and `prima up --serve`: an OpenAI-compatible HTTP API and a web page.
//!
//! ```text
//!  hyper (http.rs) ─► routes ─► request ─► Job ──channel──► scheduler thread ─► Engine
//!                       ▲                                        │ (slots, continuous batching)
//!                       └──── SSE / whole answer ◄── Event ◄─────┘
//! ```

pub mod engine;
mod http;
pub mod request;
pub mod response;
mod routes;
pub mod scheduler;
pub mod sse;
pub mod stop;

use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use engine::{DeviceView, Engine, HoldsPipeline, PipelineEngine, SeqWork, local_device, ring_devices};

use crate::chat::ChatTemplate;
use crate::error::{Context, Error, Result};
use crate::tokenizer::Tokenizer;

/// How the server listens and what it accepts.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// host:port, e.g. "127.0.0.1:8080".
    pub listen: String,
    /// Required on generation endpoints when set (`Authorization: Bearer` or `x-api-key`).
    pub api_key: Option<String>,
    /// Requests waiting for a slot beyond those running; more get 503.
    pub queue: usize,
    /// Largest request body in bytes (413 beyond).
    pub max_body: usize,
    /// A body slower than this gets 408.
    pub body_timeout: Duration,
    /// Request headers slower than this close the connection.
    pub header_timeout: Duration,
    /// An SSE comment after this long without an event (long prompts, queueing).
    pub keepalive: Duration,
    /// A streaming client that reads nothing for this long is dropped (its generation stops).
    pub stall_timeout: Duration,
    /// Prompt tokens per step while other sequences are generating.
    pub prefill_chunk: usize,
}

impl ServeOptions {
    pub fn new(listen: &str) -> ServeOptions {
        ServeOptions {
            listen: listen.to_string(),
            api_key: None,
            queue: 16,
            max_body: 8 << 20,
            body_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(60),
            prefill_chunk: 64,
        }
    }
}

/// Read an API key file: its first line, trimmed; an empty file is an error.
pub fn read_api_key(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the API key file {}", path.display()))?;
    let key = text.lines().next().unwrap_or("").trim().to_string();
    if key.is_empty() {
        return Err(Error::msg(format!(
            "the API key file {} is empty; write the key on its first line",
            path.display()
        )));
    }
    Ok(key)
}

/// A loaded model, ready to serve.
pub struct ServeModel {
    pub engine: Box<dyn Engine>,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

/// The tokenizer and chat template of the model at `path` (the chat template falls back to
/// ChatML); the parsed header with its vocabulary arrays is dropped before the weights load.
pub fn text_side(path: &std::path::Path) -> Result<(Tokenizer, ChatTemplate)> {
    let header = crate::gguf::GgufFile::open(path)?;
    let tokenizer = Tokenizer::from_gguf(&header).with_context(|| path.display().to_string())?;
    Ok((tokenizer, ChatTemplate::from_gguf_or_chatml(&header)?))
}

/// Serve until the process ends. Listens first (so /health answers 503 while loading), then
/// runs `load` on its own thread; a failed load ends `serve` with its error. `model_id` is the
/// name /v1/models lists and requests may name.
pub fn serve<F>(opts: ServeOptions, model_id: &str, load: F) -> Result<()>
where
    F: FnOnce() -> Result<ServeModel> + Send + 'static,
{
    let listener = TcpListener::bind(&opts.listen).with_context(|| format!("listening on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let listener = smol::net::TcpListener::try_from(listener)?;
    eprintln!("prima serve: listening on http://{addr} (web page at /, API at /v1)");
    let ex = Arc::new(smol::Executor::new());
    let state = Arc::new(routes::State {
        api_key: opts.api_key.clone(),
        opts,
        model_id: model_id.to_string(),
        created: routes::unix_now(),
        ready: OnceLock::new(),
        ex: ex.clone(),
    });
    let (failed_tx, failed_rx) = smol::channel::bounded::<Error>(1);
    let st = state.clone();
    std::thread::Builder::new().name("serve-load".into()).spawn(move || match start_engine(&st, load) {
        Ok(()) => {}
        Err(e) => {
            let _ = failed_tx.try_send(e);
        }
    })?;
    let accept = async {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                // Out of descriptors and the like: wait a moment, keep serving.
                Err(e) => {
                    eprintln!("prima serve: accept: {e}");
                    smol::Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let st = state.clone();
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(http::SmolTimer)
                .header_read_timeout(st.opts.header_timeout)
                .serve_connection(
                    http::Io(stream),
                    hyper::service::service_fn(move |req| routes::handle(st.clone(), req)),
                );
            ex.spawn(async move {
                // A client that sends garbage or vanishes only ends its own connection.
                let _ = conn.await;
            })
            .detach();
        }
    };
    // A successful load drops the sender: then this never finishes.
    let failed = async {
        match failed_rx.recv().await {
            Ok(e) => e,
            Err(_) => std::future::pending().await,
        }
    };
    smol::block_on(ex.run(smol::future::or(accept, async { Err(failed.await) })))
}

fn start_engine<F>(state: &routes::State, load: F) -> Result<()>
where
    F: FnOnce() -> Result<ServeModel>,
{
    let m = load()?;
    let n_ctx = m.engine.n_ctx();
    let slots = m.engine.slots();
    let (jobs_tx, jobs_rx) = smol::channel::bounded(state.opts.queue.max(1));
    let stats = Arc::new(Mutex::new(scheduler::Stats::default()));
    stats.lock().unwrap().event(format!("model loaded: {slots} slots of {n_ctx} positions"));
    let tokenizer = Arc::new(m.tokenizer);
    let (tok, st, engine) = (tokenizer.clone(), stats.clone(), m.engine);
    let opts = scheduler::Options { prefill_chunk: state.opts.prefill_chunk };
    std::thread::Builder::new()
        .name("serve-engine".into())
        .spawn(move || scheduler::run(engine, tok, jobs_rx, st, opts))?;
    let ready = routes::Ready { tokenizer, template: m.template, jobs: jobs_tx, n_ctx, stats };
    if state.ready.set(ready).is_err() {
        return Err(Error::msg("the model was loaded twice"));
    }
    eprintln!("prima serve: ready ({slots} slots, context {n_ctx})");
    Ok(())
}
