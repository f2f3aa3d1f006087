//! HTTP face of the fake dcgm-exporter (`vllm-sim dcgm`).
//!
//! Owns: re-reading the assignments file on every scrape (the harness rewrites it as pods
//! come and go), scraping each holder's vLLM `/metrics` for its load, and serving the body
//! [`crate::dcgm`] renders, as the active fault plays it. Does not own: the format, the
//! load model, or the faults (the same admin endpoints as `vllm-sim serve`, see
//! [`crate::server`]; the histogram and many-model faults do not apply to dcgm bodies).

use crate::dcgm::{assign, busy_from_load, parse_assignments, render, GpuView, Node};
use crate::dcgm::{Assignment, DEFAULT_MAX_NUM_SEQS};
use crate::faults::{Exporter, Faults};
use crate::server::{admin_router, faulty_metrics};
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
    faults: Arc<Faults>,
    /// Energy counter per GPU, mJ, and when it was last advanced.
    energy: std::sync::Mutex<(std::time::Instant, Vec<f64>)>,
}

impl DcgmState {
    pub fn new(node: Node, assignments: PathBuf) -> Result<Arc<DcgmState>, reqwest::Error> {
        let gpus = node.gpus as usize;
        let client = reqwest::Client::builder()
            .timeout(POD_SCRAPE_TIMEOUT)
            .build()?;
        Ok(Arc::new(DcgmState {
            node,
            assignments,
            client,
            routes: RouteIndex::engines(),
            faults: Arc::new(Faults::new(Exporter::Dcgm)),
            energy: std::sync::Mutex::new((std::time::Instant::now(), vec![0.0; gpus])),
        }))
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Adds each GPU's energy since the last scrape (its power now × the time passed) and
    /// returns the counters.
    fn advance_energy(&self, busy: &[f64]) -> Vec<f64> {
        let mut energy = self
            .energy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = std::time::Instant::now();
        let seconds = (now - energy.0).as_secs_f64();
        energy.0 = now;
        for (counter, &b) in energy.1.iter_mut().zip(busy) {
            *counter += self.node.power_watts(b) * seconds * 1000.0;
        }
        energy.1.clone()
    }
}

/// The exporter's router: `/metrics`, `/health` and the fault admin endpoints (see
/// [`crate::server::admin_router`]).
pub fn router(state: Arc<DcgmState>) -> Router {
    let admin = admin_router(state.faults.clone(), Arc::new(|| {}));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { StatusCode::OK }))
        .with_state(state)
        .merge(admin)
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
    if state.faults.fault().is_none() && !state.faults.metrics_down() {
        return healthy_metrics(&state).await;
    }
    let body = match healthy_metrics(&state).await {
        response if response.status().is_success() => {
            match axum::body::to_bytes(response.into_body(), usize::MAX).await {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(_) => String::new(),
            }
        }
        response => return response,
    };
    faulty_metrics(&state.faults, DCGM_CONTENT_TYPE, move || body).await
}

/// The exporter's body with no fault playing.
async fn healthy_metrics(state: &DcgmState) -> Response {
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
    let busy = futures::future::join_all(assignments.iter().map(|a| pod_busy(state, a))).await;
    let holders = assign(&assignments, state.node.gpus);
    let busy_by_gpu: Vec<f64> = holders
        .iter()
        .map(|holder| holder.map_or(0.0, |i| busy[i]))
        .collect();
    let energy = state.advance_energy(&busy_by_gpu);
    let views: Vec<GpuView<'_>> = holders
        .into_iter()
        .zip(busy_by_gpu.iter().zip(energy))
        .map(|(holder, (&busy, energy_mj))| GpuView {
            holder: holder.map(|i| &assignments[i]),
            busy,
            energy_mj,
        })
        .collect();
    (
        [(header::CONTENT_TYPE, DCGM_CONTENT_TYPE)],
        render(&state.node, &views),
    )
        .into_response()
}
