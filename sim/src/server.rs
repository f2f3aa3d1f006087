//! HTTP face of the simulated vLLM server (`vllm-sim serve`).
//!
//! Owns: the axum router (OpenAI endpoints, `/metrics`, `/health`, `/v1/models`, `/version`,
//! admin endpoints), vLLM-shaped error bodies, SSE streaming, and serving until shutdown.
//! Does not own: the timing model ([`crate::engine`]) or the text format
//! ([`crate::vllm_metrics`]).
//!
//! Admin endpoints (for tests; the process only ever listens on loopback addresses):
//! - `POST /admin/metrics-down` — `/metrics` answers 503 until
//! - `POST /admin/metrics-up`;
//! - `POST /admin/load` with [`SyntheticLoad`] JSON — offsets added to the gauges and
//!   synthetic TTFT observations; `{}` clears it.

use crate::engine::{unix_now, Engine, EngineError, SyntheticLoad};
use crate::openai::{response_body, stream_chunk, Api, RawRequest, RequestError};
use crate::vllm_metrics::CONTENT_TYPE;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Shared by every handler.
pub struct ServeState {
    engine: Arc<Engine>,
    metrics_up: AtomicBool,
    next_request: AtomicU64,
}

impl ServeState {
    pub fn new(engine: Arc<Engine>) -> Arc<ServeState> {
        Arc::new(ServeState {
            engine,
            metrics_up: AtomicBool::new(true),
            next_request: AtomicU64::new(0),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            ApiError::BadJson(_)
            | ApiError::BadRequest(_)
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
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/v1/models", get(models))
        .route(
            "/version",
            get(|| async { Json(json!({"version": "0.13.0"})) }),
        )
        .route("/admin/metrics-down", post(metrics_down))
        .route("/admin/metrics-up", post(metrics_up))
        .route("/admin/load", post(set_load))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<ServeState>>) -> Response {
    if !state.metrics_up.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics endpoint switched off through /admin/metrics-down\n",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.engine.render_metrics(),
    )
        .into_response()
}

async fn metrics_down(State(state): State<Arc<ServeState>>) -> StatusCode {
    state.metrics_up.store(false, Ordering::Relaxed);
    info!("metrics endpoint down");
    StatusCode::NO_CONTENT
}

async fn metrics_up(State(state): State<Arc<ServeState>>) -> StatusCode {
    state.metrics_up.store(true, Ordering::Relaxed);
    info!("metrics endpoint up");
    StatusCode::NO_CONTENT
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
/// finish for at most [`SHUTDOWN_GRACE`].
pub async fn serve_until(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping.send(true);
    });
    let deadline = async move {
        // An error means the server future (which owns the sender) is gone: nothing to cut.
        if stopped.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            warn!("in-flight requests still running after the shutdown grace; exiting");
            Ok(())
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
    let result = serve_until(listener, router(ServeState::new(engine)), shutdown).await;
    ticker.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state() -> Arc<ServeState> {
        ServeState::new(Engine::new(EngineConfig {
            model: "sim-llama".into(),
            max_num_seqs: 4,
            ttft: Duration::from_millis(1),
            itl: Duration::from_millis(1),
            prefill_per_token: Duration::ZERO,
            kv_blocks: 100,
            block_size: 16,
            max_model_len: 256,
        }))
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
}
