//! HTTP face of the fake dcgm-exporter (`vllm-sim dcgm`).
//!
//! Owns: re-reading the assignments file on every scrape (the harness rewrites it as pods
//! come and go), scraping each holder's vLLM `/metrics` for its load, and serving the body
//! [`crate::dcgm`] renders. Does not own: the format or the load model.

use crate::dcgm::{assign, busy_from_load, parse_assignments, render, GpuView, Node};
use crate::dcgm::{Assignment, DEFAULT_MAX_NUM_SEQS};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use inferscale_metrics::parser::Format;
use inferscale_metrics::profile::{GaugeSignal, RouteIndex};
use inferscale_metrics::snapshot::EngineSnapshot;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Per-pod scrape budget: a pod that does not answer in time reads idle rather than
/// stalling the exporter past Prometheus-style scrape timeouts.
const POD_SCRAPE_TIMEOUT: Duration = Duration::from_millis(750);

/// dcgm-exporter serves the Prometheus text format with this type.
const DCGM_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Shared by the handlers.
pub struct DcgmState {
    node: Node,
    assignments: PathBuf,
    client: reqwest::Client,
    routes: RouteIndex,
}

impl DcgmState {
    pub fn new(node: Node, assignments: PathBuf) -> Result<Arc<DcgmState>, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(POD_SCRAPE_TIMEOUT)
            .build()?;
        Ok(Arc::new(DcgmState {
            node,
            assignments,
            client,
            routes: RouteIndex::engines(),
        }))
    }
}

/// The exporter's router: `/metrics` and `/health`.
pub fn router(state: Arc<DcgmState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { StatusCode::OK }))
        .with_state(state)
}

/// Busy fraction of one pod's GPUs; any failure reads as idle, like a GPU whose pod is gone.
async fn pod_busy(state: &DcgmState, assignment: &Assignment) -> f64 {
    let Some(url) = &assignment.metrics_url else {
        return 0.0;
    };
    let body = match state.client.get(url).send().await {
        Ok(response) if response.status().is_success() => response.text().await,
        Ok(response) => {
            warn!(pod = %assignment.pod, status = %response.status(), "pod metrics unavailable");
            return 0.0;
        }
        Err(error) => Err(error),
    };
    let body = match body {
        Ok(body) => body,
        Err(error) => {
            warn!(pod = %assignment.pod, %error, "cannot scrape pod metrics");
            return 0.0;
        }
    };
    let snapshot = EngineSnapshot::from_exposition(&body, Format::Prometheus, 0.0, &state.routes);
    let load = snapshot.combined();
    busy_from_load(
        load.gauge(GaugeSignal::Running).unwrap_or(0.0),
        load.gauge(GaugeSignal::QueueDepth).unwrap_or(0.0),
        assignment.max_num_seqs.unwrap_or(DEFAULT_MAX_NUM_SEQS),
    )
}

async fn metrics(State(state): State<Arc<DcgmState>>) -> Response {
    let assignments = match tokio::fs::read_to_string(&state.assignments).await {
        Ok(body) => match parse_assignments(&body) {
            Ok(assignments) => assignments,
            Err(error) => {
                // A half-written file is the harness's bug; say so instead of guessing.
                warn!(%error, path = %state.assignments.display(), "bad assignments file");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("bad assignments file: {error}\n"),
                )
                    .into_response();
            }
        },
        // Not written yet: no pod holds a GPU.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => {
            warn!(%error, path = %state.assignments.display(), "cannot read assignments");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read assignments file: {error}\n"),
            )
                .into_response();
        }
    };
    let busy = futures::future::join_all(assignments.iter().map(|a| pod_busy(&state, a))).await;
    let views: Vec<GpuView<'_>> = assign(&assignments, state.node.gpus)
        .into_iter()
        .map(|holder| GpuView {
            holder: holder.map(|i| &assignments[i]),
            busy: holder.map_or(0.0, |i| busy[i]),
        })
        .collect();
    (
        [(header::CONTENT_TYPE, DCGM_CONTENT_TYPE)],
        render(&state.node, &views),
    )
        .into_response()
}
