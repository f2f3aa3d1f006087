//! Health probes: `/healthz`, `/livez`, `/readyz` (served without authentication, for the
//! kubelet).
//!
//! Owns what "live" and "ready" mean (deploy/README.md documents them for operators):
//!
//! - **Live** while the scrape loop ticks (a wedged loop would serve ever older data) and the
//!   pod watches have not been down — ended or crash-looping despite in-process restarts —
//!   for longer than [`DISCOVERY_DEAD_AFTER_SECS`]. An unreachable kube-apiserver is *not*
//!   a liveness failure: the watches retry by themselves, and a restart would not help.
//! - **Ready** ("I can answer"), as metrics-server means it: the pod watches have listed once,
//!   the scrape loop ticks, and the first scrape round is done — every *scrapable* target (a
//!   pod with an address: Running with an IP, not terminating) attempted once, or
//!   [`Probes::first_round_grace_secs`] passed since the watches listed. A Pending, Failed,
//!   Evicted or Succeeded pod has no address and never holds readiness back. Once ready, the
//!   adapter stays ready while it can serve: a target that cannot be scraped makes *its
//!   values* missing, never the APIService unavailable. Readiness fails again only when the
//!   scrape loop stops ticking or shutdown begins (so endpoints drop this replica while it
//!   still answers).

use super::AppState;
use crate::lifecycle::TaskHealth;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// How long the scrape loop may go without ticking before liveness fails: the loop ticks
/// every second, so ten seconds means it is stuck, not busy.
pub const LIVENESS_WINDOW_SECS: f64 = 10.0;

/// How long the pod watches may be down (ended or crash-looping, restarted in-process with
/// backoff up to 30 s) before liveness fails and the kubelet restarts the container: two
/// restarts at the longest backoff that did not bring them back.
pub const DISCOVERY_DEAD_AFTER_SECS: f64 = 60.0;

/// What the probes read; each part is written by the component it describes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Probes {
    /// Unix ms of the scrape loop's last tick.
    pub heartbeat: Arc<AtomicU64>,
    /// The loop is live while it ticked within this many seconds.
    pub liveness_window_secs: f64,
    /// Unix ms when the pod watches first held every object (0: not yet).
    pub targets_synced_at: Arc<AtomicU64>,
    /// Whether the pod watches run (standalone mode has none: always up).
    pub discovery: Arc<TaskHealth>,
    /// Set when shutdown begins.
    pub draining: Arc<AtomicBool>,
    /// After the watches listed, readiness waits at most this long for the first scrape
    /// of every scrapable target.
    pub first_round_grace_secs: f64,
    /// Set the first time readiness passed; it then stays passed while the adapter can serve.
    became_ready: Arc<AtomicBool>,
}

impl Probes {
    /// Probes of a process started at `now` (Unix seconds) whose targets are not listed yet.
    pub fn new(now: f64, first_round_grace_secs: f64) -> Probes {
        Probes {
            heartbeat: Arc::new(AtomicU64::new((now * 1000.0) as u64)),
            liveness_window_secs: LIVENESS_WINDOW_SECS,
            targets_synced_at: Arc::new(AtomicU64::new(0)),
            discovery: Arc::new(TaskHealth::default()),
            draining: Arc::new(AtomicBool::new(false)),
            first_round_grace_secs,
            became_ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Records that the targets are listed (the first call counts; later ones are resyncs).
    pub fn mark_synced(&self, now: f64) {
        let _ = self.targets_synced_at.compare_exchange(
            0,
            ((now * 1000.0) as u64).max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn synced_at(&self) -> Option<f64> {
        match self.targets_synced_at.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms as f64 / 1000.0),
        }
    }

    fn last_tick(&self) -> f64 {
        self.heartbeat.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

fn plain(code: StatusCode, text: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

pub async fn healthz(state: State<AppState>) -> Response {
    livez(state).await
}

/// Live while the scrape loop ticks and the pod watches are not dead (see the module docs).
pub async fn livez(State(state): State<AppState>) -> Response {
    let now = state.now();
    let probes = &state.probes;
    let age = now - probes.last_tick();
    if age > probes.liveness_window_secs {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("scrape loop has not ticked for {age:.0}s\n"),
        );
    }
    if let Some(down) = probes.discovery.down_for(now) {
        if down > DISCOVERY_DEAD_AFTER_SECS {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the pod watches have been down for {down:.0}s despite restarts\n"),
            );
        }
    }
    plain(StatusCode::OK, "ok\n".into())
}

/// Ready when the adapter can answer (see the module docs).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let now = state.now();
    let probes = &state.probes;
    if probes.draining.load(Ordering::Relaxed) {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down: finishing requests in flight\n".into(),
        );
    }
    let Some(synced_at) = probes.synced_at() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pod watches have not listed the cluster yet\n".into(),
        );
    };
    if now - probes.last_tick() > probes.liveness_window_secs {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "scrape loop is not ticking\n".into(),
        );
    }
    let summary = state.view.summary(now);
    if !probes.became_ready.load(Ordering::Relaxed) {
        let pending = summary.scrapable_not_attempted;
        let waited = now - synced_at;
        if pending > 0 && waited < probes.first_round_grace_secs {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{pending} scrapable target(s) not scraped yet (ready at the latest in \
                     {:.0}s)\n",
                    probes.first_round_grace_secs - waited
                ),
            );
        }
        probes.became_ready.store(true, Ordering::Relaxed);
    }
    plain(
        StatusCode::OK,
        format!(
            "ok: {} engine target(s), {} servable, {} dcgm target(s)\n",
            summary.engine_targets, summary.servable_engine_pods, summary.gpu_targets
        ),
    )
}
