//! Health probes: `/healthz`, `/livez`, `/readyz` (served without authentication, for the
//! kubelet).
//!
//! Owns what "live" and "ready" mean: live while the scrape loop ticks (a dead loop would
//! keep serving ever older data), ready once the pod watches have listed and every known
//! target has been scraped once.

use super::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// How long the scrape loop may go without ticking before liveness fails: the loop ticks
/// every second, so ten seconds means it is stuck, not busy.
pub const LIVENESS_WINDOW_SECS: f64 = 10.0;

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

/// Live while the scrape loop ticks: a dead loop would keep serving ever older data.
pub async fn livez(State(state): State<AppState>) -> Response {
    let age = state.now() - state.last_tick();
    if age <= state.liveness_window_secs {
        plain(StatusCode::OK, "ok".into())
    } else {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("scrape loop has not ticked for {age:.0}s\n"),
        )
    }
}

/// Ready once the pod watches synced and every known target has been scraped at least once:
/// before that, answers would leave out pods merely because we had not looked yet.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let now = state.now();
    if !state
        .targets_synced
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pod watches have not synced\n".into(),
        );
    }
    if now - state.last_tick() > state.liveness_window_secs {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "scrape loop is not ticking\n".into(),
        );
    }
    let pending = state
        .view
        .health()
        .iter()
        .filter(|(_, h)| h.last_attempt.is_none())
        .count();
    if pending > 0 {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{pending} target(s) not scraped yet\n"),
        );
    }
    let summary = state.view.summary(now);
    plain(
        StatusCode::OK,
        format!(
            "ok: {} engine target(s), {} servable, {} dcgm target(s)\n",
            summary.engine_targets, summary.servable_engine_pods, summary.gpu_targets
        ),
    )
}
