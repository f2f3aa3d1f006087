//! HTTP face of the simulated vLLM server (`vllm-sim serve`), and the serve loop both
//! simulated exporters share.
//!
//! Owns: the axum router (OpenAI endpoints, `/metrics`, `/health`, `/v1/models`, `/version`,
//! sleep-mode and admin endpoints), vLLM-shaped error bodies, SSE streaming, playing the
//! [`Fault`]s on `/metrics`, and serving until shutdown (closing and reopening the listener
//! for the `gone` fault). Does not own: the timing model or sleep semantics
//! ([`crate::engine`]), the text format ([`crate::vllm_metrics`]) or the faults' bodies
//! ([`crate::faults`]).
//!
//! Sleep mode (only with `--enable-sleep-mode`; vLLM serves these with
//! `VLLM_SERVER_DEV_MODE=1`, same shapes):
//!
//! | endpoint | does |
//! |---|---|
//! | `POST /sleep?level=0\|1\|2&mode=abort\|wait` | sleep (default level 1, mode abort); 200, empty body, once asleep |
//! | `POST /wake_up` (`?tags=weights&tags=kv_cache`, optional) | wake (all memory when no tag); 200, empty body, after the wake time |
//! | `GET /is_sleeping` | `{"is_sleeping": true\|false}` |
//!
//! Admin endpoints for tests (the process only ever listens on loopback addresses). Every
//! fault and the synthetic load stay until replaced or reset:
//!
//! | endpoint | does |
//! |---|---|
//! | `POST /admin/metrics-down` | `/metrics` answers 503 |
//! | `POST /admin/metrics-up` | `/metrics` answers again |
//! | `POST /admin/load` + [`SyntheticLoad`] JSON | offsets added to the gauges, synthetic TTFT observations; `{}` clears |
//! | `POST /admin/fault` + [`Fault`] JSON | `/metrics` plays the fault (one at a time; see the table in `vllm-sim serve --help`) |
//! | `GET /admin/fault` | the active fault as JSON, `null` when none |
//! | `POST /admin/restart` | a simulated restart: counters, histograms, `_created` and `process_start_time_seconds` start again; in-flight requests lost; `{"process_start_time_seconds": t}` |
//! | `POST /admin/reset` | clears the fault, `metrics-down` and the synthetic load; answers hanging scrapes; leaves the engine (requests, counters, sleep) alone |

use crate::engine::{unix_now, Engine, EngineError, PauseMode, SyntheticLoad};
use crate::faults::{self, Exporter, Fault, Faults};
use crate::openai::{response_body, stream_chunk, Api, RawRequest, RequestError};
use crate::vllm_metrics::CONTENT_TYPE;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{info, warn, Instrument};

/// How often synthetic TTFT observations are recorded: fine enough for rates up to
/// 10/s to look smooth to a 1 s scrape, coarse enough to cost nothing.
const SYNTHETIC_TICK: Duration = Duration::from_millis(100);

/// How long in-flight requests may finish after SIGTERM before the process exits anyway;
/// the e2e harness kills pods with a short grace period and must not wait on streams.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long connections may finish when the listener closes for the `gone` fault.
pub const GONE_GRACE: Duration = Duration::from_secs(1);

/// Shared by every handler.
pub struct ServeState {
    engine: Arc<Engine>,
    faults: Arc<Faults>,
    next_request: AtomicU64,
}

impl ServeState {
    pub fn new(engine: Arc<Engine>) -> Arc<ServeState> {
        Arc::new(ServeState {
            engine,
            faults: Arc::new(Faults::new(Exporter::Vllm)),
            next_request: AtomicU64::new(0),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }
}

/// An HTTP error in vLLM's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not the JSON we expect.
    #[error("{0}")]
    BadJson(String),
    /// The body is JSON but not a request we serve.
    #[error(transparent)]
    BadRequest(#[from] RequestError),
    /// The request asks for another model.
    #[error("The model `{0}` does not exist.")]
    UnknownModel(String),
    /// The engine refused or lost the request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A `/sleep` or `/admin/fault` parameter the simulator does not take.
    #[error("{0}")]
    BadParameter(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            ApiError::BadJson(_)
            | ApiError::BadRequest(_)
            | ApiError::BadParameter(_)
            | ApiError::Engine(EngineError::ContextTooLong { .. }) => {
                (StatusCode::BAD_REQUEST, "BadRequestError")
            }
            ApiError::UnknownModel(_) => (StatusCode::NOT_FOUND, "NotFoundError"),
            ApiError::Engine(EngineError::QueueFull(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailableError")
            }
            ApiError::Engine(EngineError::Aborted) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError")
            }
        };
        let body = json!({"error": {
            "message": self.to_string(),
            "type": kind,
            "param": null,
            "code": status.as_u16(),
        }});
        (status, Json(body)).into_response()
    }
}

/// The router of one simulated vLLM server.
pub fn router(state: Arc<ServeState>) -> Router {
    let mut router = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/v1/models", get(models))
        .route(
            "/version",
            get(|| async { Json(json!({"version": VLLM_VERSION})) }),
        )
        .route("/admin/load", post(set_load))
        .route("/admin/restart", post(restart));
    if state.engine.config().sleep.enabled {
        router = router
            .route("/sleep", post(sleep))
            .route("/wake_up", post(wake_up))
            .route("/is_sleeping", get(is_sleeping));
    }
    let reset_state = state.clone();
    let admin = admin_router(
        state.faults.clone(),
        Arc::new(move || {
            reset_state
                .engine
                .set_synthetic_load(SyntheticLoad::default())
        }),
    );
    router.with_state(state).merge(admin)
}

/// The vLLM version whose `/metrics` layout vllm-sim follows (see [`crate::vllm_metrics`]).
pub const VLLM_VERSION: &str = "0.18.0";

/// What the fault admin endpoints need: the faults, and the server's own part of a reset.
#[derive(Clone)]
struct Admin {
    faults: Arc<Faults>,
    on_reset: Arc<dyn Fn() + Send + Sync>,
}

/// The fault admin endpoints both simulated exporters serve: `/admin/fault` (POST sets,
/// GET shows), `/admin/reset`, `/admin/metrics-down`, `/admin/metrics-up`. `on_reset` is
/// the server's own part of a reset (the vLLM server clears its synthetic load).
pub fn admin_router(faults: Arc<Faults>, on_reset: Arc<dyn Fn() + Send + Sync>) -> Router {
    Router::new()
        .route("/admin/fault", post(set_fault).get(show_fault))
        .route("/admin/reset", post(reset))
        .route("/admin/metrics-down", post(metrics_down))
        .route("/admin/metrics-up", post(metrics_up))
        .with_state(Admin { faults, on_reset })
}

async fn set_fault(State(admin): State<Admin>, body: Bytes) -> Response {
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(fault) => fault,
        Err(error) => return ApiError::BadJson(error.to_string()).into_response(),
    };
    match admin.faults.set(fault.clone()) {
        Ok(()) => {
            info!(?fault, "fault set");
            Json(fault).into_response()
        }
        Err(error) => ApiError::BadParameter(error.to_string()).into_response(),
    }
}

async fn show_fault(State(admin): State<Admin>) -> Json<Option<Fault>> {
    Json(admin.faults.fault())
}

async fn reset(State(admin): State<Admin>) -> StatusCode {
    admin.faults.reset();
    (admin.on_reset)();
    info!("faults reset");
    StatusCode::NO_CONTENT
}

async fn metrics_down(State(admin): State<Admin>) -> StatusCode {
    admin.faults.set_metrics_down(true);
    info!("metrics endpoint down");
    StatusCode::NO_CONTENT
}

async fn metrics_up(State(admin): State<Admin>) -> StatusCode {
    admin.faults.set_metrics_down(false);
    info!("metrics endpoint up");
    StatusCode::NO_CONTENT
}

/// `/metrics` as the active fault plays it; `render` makes the healthy body.
pub async fn faulty_metrics(
    faults: &Faults,
    content_type: &'static str,
    render: impl FnOnce() -> String,
) -> Response {
    if faults.metrics_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics endpoint switched off through /admin/metrics-down\n",
        )
            .into_response();
    }
    let fault = faults.fault();
    if let Some(Fault::Hang { seconds }) = fault {
        faults.hang(seconds).await;
        return ([(header::CONTENT_TYPE, content_type)], render()).into_response();
    }
    let Some(fault) = fault else {
        return ([(header::CONTENT_TYPE, content_type)], render()).into_response();
    };
    let text = |status: StatusCode, body: String| {
        (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    match fault {
        Fault::Status { code } => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, format!("simulated failure: HTTP {code}\n")).into_response()
        }
        Fault::Html {} => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            faults::HTML_ERROR_PAGE,
        )
            .into_response(),
        Fault::Garbage { bytes } => (
            [(header::CONTENT_TYPE, content_type)],
            faults::garbage(bytes),
        )
            .into_response(),
        Fault::Oversized {
            bytes,
            content_length,
        } => {
            let mut response = (
                [(header::CONTENT_TYPE, content_type)],
                faults::padded_body(render(), bytes),
            )
                .into_response();
            if content_length {
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, bytes.into());
            }
            response
        }
        Fault::GzipBomb { decoded_bytes } => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            faults::gzip_bomb_body(decoded_bytes),
        )
            .into_response(),
        Fault::Redirect { location, status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
            match axum::http::HeaderValue::from_str(&location) {
                Ok(location) => (status, [(header::LOCATION, location)]).into_response(),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "bad location\n".into()),
            }
        }
        Fault::ManyModels { count } => (
            [(header::CONTENT_TYPE, content_type)],
            faults::many_models_body(render(), count),
        )
            .into_response(),
        fault @ (Fault::NonFiniteGauges {}
        | Fault::NonMonotoneBuckets {}
        | Fault::NoInfBucket {}
        | Fault::MissingBuckets {}
        | Fault::DuplicateSeries {}) => text(
            StatusCode::OK,
            faults::rewrite_body(&fault, faults.exporter(), &render()),
        ),
        // Played by the serve loop; never stored as the active fault.
        Fault::Hang { .. } | Fault::Gone { .. } => text(StatusCode::OK, render()),
    }
}

async fn metrics(State(state): State<Arc<ServeState>>) -> Response {
    let engine = state.engine.clone();
    faulty_metrics(&state.faults, CONTENT_TYPE, move || engine.render_metrics()).await
}

async fn set_load(State(state): State<Arc<ServeState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<SyntheticLoad>(&body) {
        Ok(load) => {
            info!(?load, "synthetic load set");
            state.engine.set_synthetic_load(load);
            Json(load).into_response()
        }
        Err(error) => ApiError::BadJson(error.to_string()).into_response(),
    }
}

async fn restart(State(state): State<Arc<ServeState>>) -> Json<serde_json::Value> {
    let started = state.engine.restart();
    Json(json!({"process_start_time_seconds": started}))
}

/// Query parameters in order, repeated keys kept (vLLM reads `tags` with `getlist`).
type QueryPairs = Query<Vec<(String, String)>>;

async fn sleep(State(state): State<Arc<ServeState>>, Query(pairs): QueryPairs) -> Response {
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let level = match get("level").unwrap_or("1").parse::<u8>() {
        Ok(level @ 0..=2) => level,
        _ => {
            return ApiError::BadParameter("level must be 0, 1 or 2".into()).into_response();
        }
    };
    let mode =
        match get("mode").unwrap_or("abort") {
            "abort" => PauseMode::Abort,
            "wait" => PauseMode::Wait,
            "keep" => return ApiError::BadParameter(
                "mode=keep (freeze running requests in place) is not simulated; use abort or wait"
                    .into(),
            )
            .into_response(),
            other => {
                return ApiError::BadParameter(format!("unknown mode {other:?}")).into_response();
            }
        };
    state.engine.sleep(level, mode).await;
    StatusCode::OK.into_response()
}

async fn wake_up(State(state): State<Arc<ServeState>>, Query(pairs): QueryPairs) -> StatusCode {
    let tags: Vec<String> = pairs
        .into_iter()
        .filter(|(k, _)| k == "tags")
        .map(|(_, v)| v)
        .collect();
    info!(?tags, "wake up the engine");
    state
        .engine
        .wake_up((!tags.is_empty()).then_some(tags))
        .await;
    StatusCode::OK
}

async fn is_sleeping(State(state): State<Arc<ServeState>>) -> Json<serde_json::Value> {
    Json(json!({"is_sleeping": state.engine.is_sleeping()}))
}

async fn models(State(state): State<Arc<ServeState>>) -> Json<serde_json::Value> {
    let config = state.engine.config();
    let created = unix_now() as u64;
    Json(json!({
        "object": "list",
        "data": [{
            "id": config.model,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": config.model,
            "parent": null,
            "max_model_len": config.max_model_len,
            "permission": [{
                "id": format!("modelperm-{created:x}"),
                "object": "model_permission",
                "created": created,
                "allow_create_engine": false,
                "allow_sampling": true,
                "allow_logprobs": true,
                "allow_search_indices": false,
                "allow_view": true,
                "allow_fine_tuning": false,
                "organization": "*",
                "group": null,
                "is_blocking": false,
            }],
        }],
    }))
}

async fn completions(State(state): State<Arc<ServeState>>, body: Bytes) -> Response {
    serve_request(state, Api::Completions, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn chat_completions(State(state): State<Arc<ServeState>>, body: Bytes) -> Response {
    serve_request(state, Api::Chat, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn serve_request(
    state: Arc<ServeState>,
    api: Api,
    body: Bytes,
) -> Result<Response, ApiError> {
    let raw: RawRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))?;
    let request = raw.resolve(api)?;
    let served = state.engine.config().model.clone();
    if let Some(model) = &request.model {
        if *model != served {
            return Err(ApiError::UnknownModel(model.clone()));
        }
    }
    state
        .engine
        .check_context(request.prompt_tokens, request.max_tokens)?;
    let number = state.next_request.fetch_add(1, Ordering::Relaxed);
    let id = match api {
        Api::Completions => format!("cmpl-{number:032x}"),
        Api::Chat => format!("chatcmpl-{number:032x}"),
    };
    let created = unix_now() as u64;

    if !request.stream {
        let generation = state
            .engine
            .generate(request.prompt_tokens, request.max_tokens, |_| true)
            .await?;
        let body = response_body(
            api,
            &id,
            created,
            &served,
            generation.prompt_tokens,
            generation.completion_tokens,
            generation.finish_reason.as_str(),
        );
        return Ok(Json(body).into_response());
    }

    // Streaming: the engine runs in its own task and hands each token to the response
    // body; when the client goes away the receiver is dropped, the next send fails and the
    // engine counts an abort. At most max_tokens (≤ max_model_len) events are buffered.
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<String>();
    let engine = state.engine.clone();
    let span = tracing::info_span!("stream", %id);
    tokio::spawn(
        async move {
            let last = request.max_tokens - 1;
            let result = engine
                .generate(request.prompt_tokens, request.max_tokens, |index| {
                    let finish = (index == last).then_some("length");
                    let chunk = stream_chunk(api, &id, created, &served, index, finish);
                    sender.send(format!("data: {chunk}\n\n")).is_ok()
                })
                .await;
            if result.is_ok() {
                let _ = sender.send("data: [DONE]\n\n".to_owned());
            }
        }
        .instrument(span),
    );
    let events = futures::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|event| event.map(Ok::<_, Infallible>))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")],
        Body::from_stream(events),
    )
        .into_response())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish for at most [`SHUTDOWN_GRACE`]. When `faults` plays `gone`, the listener closes
/// (connections get [`GONE_GRACE`] to finish), stays closed for the fault's duration, and
/// is bound again on the same address.
pub async fn serve_until(
    listener: TcpListener,
    router: Router,
    faults: Arc<Faults>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let mut listener = Some(listener);
    loop {
        let open = match listener.take() {
            Some(open) => open,
            None => bind_again(addr).await?,
        };
        // Why this round ended: `Some(None)` shutdown, `Some(Some(d))` gone for `d`.
        let (ending, mut ended) = tokio::sync::watch::channel(None::<Option<Duration>>);
        let mut stopped_here = stopped.clone();
        let gone_faults = faults.clone();
        let server = axum::serve(open, router.clone()).with_graceful_shutdown(async move {
            let why = tokio::select! {
                _ = stopped_here.wait_for(|s| *s) => None,
                gone = gone_faults.gone_requested() => Some(gone),
            };
            let _ = ending.send(Some(why));
        });
        let deadline = async {
            // An error means the server future (which owns the sender) is gone.
            let grace = match ended.wait_for(Option::is_some).await.map(|why| *why) {
                Ok(Some(Some(_))) => GONE_GRACE,
                Ok(_) => SHUTDOWN_GRACE,
                Err(_) => return std::future::pending::<()>().await,
            };
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = server => result?,
            () = deadline => warn!("connections still open after the grace; closing anyway"),
        }
        let why = *ended.borrow();
        match why {
            Some(Some(gone)) => {
                info!(%addr, seconds = gone.as_secs_f64(), "listener closed (gone fault)");
                let mut stopped_now = stopped.clone();
                tokio::select! {
                    () = tokio::time::sleep(gone) => {}
                    _ = stopped_now.wait_for(|s| *s) => return Ok(()),
                }
                faults.gone_over();
                info!(%addr, "listener open again");
            }
            _ => return Ok(()),
        }
    }
}

/// Binds `addr` again after a `gone` pause; the port is ours, so only a moment of
/// `EADDRINUSE` (sockets closing) is waited out.
async fn bind_again(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut attempts = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(error) if attempts < 50 => {
                attempts += 1;
                warn!(%addr, %error, "binding again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Serves the simulated vLLM on `listener` until `shutdown`, recording synthetic load.
pub async fn run(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ticker_engine = engine.clone();
    let ticker = tokio::spawn(
        async move {
            let mut interval = tokio::time::interval(SYNTHETIC_TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                ticker_engine.tick_synthetic(SYNTHETIC_TICK);
            }
        }
        .instrument(tracing::info_span!("synthetic_load")),
    );
    let state = ServeState::new(engine);
    let faults = state.faults.clone();
    let result = serve_until(listener, router(state), faults, shutdown).await;
    ticker.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, SleepConfig};
    use axum::http::Request;
    use tower::ServiceExt;

    fn state_with(sleep: SleepConfig) -> Arc<ServeState> {
        ServeState::new(Engine::new(EngineConfig {
            model: "sim-llama".into(),
            max_num_seqs: 4,
            ttft: Duration::from_millis(1),
            itl: Duration::from_millis(1),
            prefill_per_token: Duration::ZERO,
            kv_blocks: 100,
            block_size: 16,
            max_model_len: 256,
            sleep,
        }))
    }

    fn state() -> Arc<ServeState> {
        state_with(SleepConfig::default())
    }

    async fn call(state: &Arc<ServeState>, method: &str, uri: &str, body: &str) -> Response {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body.to_owned()))
            .unwrap();
        router(state.clone()).oneshot(request).await.unwrap()
    }

    async fn text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn metrics_down_and_up() {
        let state = state();
        let ok = call(&state, "GET", "/metrics", "").await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(
            call(&state, "POST", "/admin/metrics-down", "")
                .await
                .status(),
            StatusCode::NO_CONTENT
        );
        let down = call(&state, "GET", "/metrics", "").await;
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        call(&state, "POST", "/admin/metrics-up", "").await;
        assert_eq!(
            call(&state, "GET", "/metrics", "").await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn completion_answers_like_vllm() {
        let state = state();
        let response = call(
            &state,
            "POST",
            "/v1/completions",
            r#"{"model":"sim-llama","prompt":"one two three","max_tokens":5}"#,
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["usage"]["prompt_tokens"], 3);
        assert_eq!(body["usage"]["completion_tokens"], 5);
    }

    #[tokio::test]
    async fn chat_streams_server_sent_events() {
        let state = state();
        let response = call(
            &state,
            "POST",
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream":true}"#,
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = text(response).await;
        let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 4, "{body}");
        assert!(events[2].contains("\"finish_reason\":\"length\""));
        assert_eq!(events[3], "data: [DONE]");
    }

    #[tokio::test]
    async fn errors_have_vllm_shape() {
        let state = state();
        let wrong_model = call(
            &state,
            "POST",
            "/v1/completions",
            r#"{"model":"other","prompt":"x"}"#,
        )
        .await;
        assert_eq!(wrong_model.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value = serde_json::from_str(&text(wrong_model).await).unwrap();
        assert_eq!(body["error"]["type"], "NotFoundError");
        let too_long = call(
            &state,
            "POST",
            "/v1/completions",
            r#"{"prompt":"x","max_tokens":1000}"#,
        )
        .await;
        assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);
        let garbage = call(&state, "POST", "/v1/completions", "{").await;
        assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    }

    fn sleepy_state() -> Arc<ServeState> {
        state_with(SleepConfig {
            enabled: true,
            wake_time_level1: Duration::ZERO,
            wake_time_level2: Duration::ZERO,
        })
    }

    #[tokio::test]
    async fn sleep_endpoints_have_vllms_shapes() {
        let state = sleepy_state();
        let asleep = |body: String| serde_json::from_str::<serde_json::Value>(&body).unwrap();
        let check = call(&state, "GET", "/is_sleeping", "").await;
        assert_eq!(asleep(text(check).await), json!({"is_sleeping": false}));
        let slept = call(&state, "POST", "/sleep?level=2", "").await;
        assert_eq!(slept.status(), StatusCode::OK);
        assert_eq!(text(slept).await, "", "vLLM answers an empty 200");
        let check = call(&state, "GET", "/is_sleeping", "").await;
        assert_eq!(asleep(text(check).await), json!({"is_sleeping": true}));
        let metrics = text(call(&state, "GET", "/metrics", "").await).await;
        assert!(metrics.contains("sleep_state=\"discard_all\"} 1.0\n"));
        let woke = call(&state, "POST", "/wake_up?tags=weights&tags=kv_cache", "").await;
        assert_eq!(
            (woke.status(), text(woke).await),
            (StatusCode::OK, String::new())
        );
        let check = call(&state, "GET", "/is_sleeping", "").await;
        assert_eq!(asleep(text(check).await), json!({"is_sleeping": false}));
        for bad in [
            "/sleep?level=3",
            "/sleep?level=x",
            "/sleep?mode=keep",
            "/sleep?mode=nap",
        ] {
            let refused = call(&state, "POST", bad, "").await;
            assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[tokio::test]
    async fn sleep_endpoints_exist_only_with_sleep_mode() {
        let state = state();
        for (method, uri) in [
            ("POST", "/sleep"),
            ("POST", "/wake_up"),
            ("GET", "/is_sleeping"),
        ] {
            assert_eq!(
                call(&state, method, uri, "").await.status(),
                StatusCode::NOT_FOUND
            );
        }
    }

    async fn with_fault(state: &Arc<ServeState>, fault: &str) -> Response {
        let set = call(state, "POST", "/admin/fault", fault).await;
        assert_eq!(set.status(), StatusCode::OK, "{fault}");
        call(state, "GET", "/metrics", "").await
    }

    #[tokio::test]
    async fn faults_play_on_metrics_and_a_reset_clears_them() {
        let state = state();
        let r = with_fault(&state, r#"{"fault":"status","code":500}"#).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let r = with_fault(&state, r#"{"fault":"html"}"#).await;
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(text(r).await.starts_with("<!DOCTYPE html>"));
        let r = with_fault(&state, r#"{"fault":"garbage","bytes":1000}"#).await;
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert_eq!(bytes.len(), 1000);
        let r = with_fault(
            &state,
            r#"{"fault":"redirect","location":"http://127.0.0.1:9/metrics"}"#,
        )
        .await;
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()[header::LOCATION], "http://127.0.0.1:9/metrics");
        let r = with_fault(&state, r#"{"fault":"gzip_bomb","decoded_bytes":1048576}"#).await;
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        let r = with_fault(
            &state,
            r#"{"fault":"oversized","bytes":100000,"content_length":true}"#,
        )
        .await;
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "100000");
        assert_eq!(text(r).await.len(), 100_000);
        let r = with_fault(&state, r#"{"fault":"non_finite_gauges"}"#).await;
        assert!(text(r)
            .await
            .contains("vllm:num_requests_waiting{engine=\"0\",model_name=\"sim-llama\"} NaN\n"));
        let r = with_fault(&state, r#"{"fault":"many_models","count":1000}"#).await;
        assert!(text(r)
            .await
            .ends_with("vllm:num_requests_waiting{model_name=\"m000999\"} 1\n"));
        let shown = text(call(&state, "GET", "/admin/fault", "").await).await;
        assert_eq!(shown, r#"{"fault":"many_models","count":1000}"#);

        call(&state, "POST", "/admin/metrics-down", "").await;
        let reset = call(&state, "POST", "/admin/reset", "").await;
        assert_eq!(reset.status(), StatusCode::NO_CONTENT);
        let healthy = call(&state, "GET", "/metrics", "").await;
        assert_eq!(healthy.status(), StatusCode::OK);
        assert!(!text(healthy).await.contains("m000999"));
        assert_eq!(
            text(call(&state, "GET", "/admin/fault", "").await).await,
            "null"
        );
    }

    #[tokio::test]
    async fn bad_faults_are_refused_with_the_reason() {
        let state = state();
        for (fault, says) in [
            (r#"{"fault":"status","code":42}"#, "status code 42"),
            (
                r#"{"fault":"hang","seconds":1e9}"#,
                "seconds must be between",
            ),
            (r#"{"fault":"teleport"}"#, "unknown variant"),
            (r#"{"fault":"hang","secs":1}"#, "unknown field"),
        ] {
            let r = call(&state, "POST", "/admin/fault", fault).await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{fault}");
            assert!(text(r).await.contains(says), "{fault}");
        }
    }

    #[tokio::test]
    async fn restart_answers_the_new_start_time() {
        let state = state();
        let r = call(&state, "POST", "/admin/restart", "").await;
        let body: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
        let started = body["process_start_time_seconds"].as_f64().unwrap();
        let metrics = text(call(&state, "GET", "/metrics", "").await).await;
        let line = format!(
            "process_start_time_seconds {}",
            crate::pyfloat::go_string(started)
        );
        assert!(metrics.lines().any(|l| l == line), "{line}");
    }
}
