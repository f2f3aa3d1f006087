//! The controller's own Prometheus metrics, and the HTTP server that serves them with the
//! health probes.
//!
//! Owns: the registry and every metric of the controller — decisions by action, engine calls
//! by outcome, forecast error, time-to-ready by tier, capacity by tier (summed over pools),
//! reconcile failures by kind, leadership. Label values are `&'static str` from closed sets,
//! never object names, so cardinality does not grow with the cluster (per-pool values are in
//! each WarmPool's status, and the adapter serves them per workload).
//! Does not own: what the numbers mean.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabels {
    tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Time-to-ready buckets, seconds: a wake takes seconds, a cold start minutes.
const TIME_TO_READY_BUCKETS: [f64; 12] = [
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
];
/// Forecast error buckets (|forecast − actual| / actual).
const FORECAST_ERROR_BUCKETS: [f64; 9] = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0];

/// The controller's metrics.
pub struct Telemetry {
    registry: Registry,
    decisions: Family<ActionLabels, Counter>,
    engine_calls: Family<CallLabels, Counter>,
    reconcile_errors: Family<KindLabels, Counter>,
    time_to_ready: Family<TierLabels, Histogram>,
    forecast_error: Histogram,
    capacity: Family<TierLabels, Gauge>,
    recommended: Gauge,
    pools: Gauge,
    leader: Gauge,
    /// Set once this replica leads and its caches are synced (readiness).
    ready: AtomicBool,
    /// Unix seconds of the last finished reconcile (liveness).
    last_reconcile: AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let mut registry = Registry::with_prefix("inferscale_warmpool");
        let decisions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Warm-pool decisions by action",
            decisions.clone(),
        );
        let engine_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "engine_calls",
            "Sleep-mode calls to vLLM engines by call and result",
            engine_calls.clone(),
        );
        let reconcile_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by what failed",
            reconcile_errors.clone(),
        );
        let time_to_ready = Family::<TierLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(TIME_TO_READY_BUCKETS)
        });
        registry.register_with_unit(
            "time_to_ready",
            "Observed time-to-ready by readiness tier",
            prometheus_client::registry::Unit::Seconds,
            time_to_ready.clone(),
        );
        let forecast_error = Histogram::new(FORECAST_ERROR_BUCKETS);
        registry.register(
            "forecast_error_ratio",
            "Relative error of the request-rate forecast once its horizon has passed",
            forecast_error.clone(),
        );
        let capacity = Family::<TierLabels, Gauge>::default();
        registry.register(
            "capacity_replicas",
            "Replicas of all pools' targets by tier (serving, pending, sleeping, waking, placeholder)",
            capacity.clone(),
        );
        let recommended = Gauge::default();
        registry.register(
            "recommended_replicas",
            "Replicas recommended, summed over pools",
            recommended.clone(),
        );
        let pools = Gauge::default();
        registry.register("pools", "WarmPools reconciled", pools.clone());
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Telemetry {
            registry,
            decisions,
            engine_calls,
            reconcile_errors,
            time_to_ready,
            forecast_error,
            capacity,
            recommended,
            pools,
            leader,
            ready: AtomicBool::new(false),
            last_reconcile: AtomicU64::new(0),
        }
    }

    pub fn decision(&self, action: &'static str) {
        self.decisions.get_or_create(&ActionLabels { action }).inc();
    }

    pub fn engine_call(&self, call: &'static str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.engine_calls
            .get_or_create(&CallLabels { call, result })
            .inc();
    }

    pub fn reconcile_error(&self, kind: &'static str) {
        self.reconcile_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    pub fn time_to_ready(&self, tier: &'static str, seconds: f64) {
        self.time_to_ready
            .get_or_create(&TierLabels { tier })
            .observe(seconds);
    }

    pub fn forecast_error(&self, ratio: f64) {
        if ratio.is_finite() {
            self.forecast_error.observe(ratio);
        }
    }

    /// Sets the fleet-wide totals after a reconcile.
    pub fn set_totals(&self, totals: &Totals) {
        for (tier, value) in [
            ("serving", totals.serving),
            ("pending", totals.pending),
            ("sleeping", totals.sleeping),
            ("waking", totals.waking),
            ("placeholder", totals.placeholders),
        ] {
            self.capacity
                .get_or_create(&TierLabels { tier })
                .set(i64::from(value));
        }
        self.recommended.set(i64::from(totals.recommended));
        self.pools.set(i64::from(totals.pools));
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn reconciled(&self, unix_secs: u64) {
        self.last_reconcile.store(unix_secs, Ordering::Relaxed);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Fleet-wide sums the gauges show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub serving: u32,
    pub pending: u32,
    pub sleeping: u32,
    pub waking: u32,
    pub placeholders: u32,
    pub recommended: u32,
    pub pools: u32,
}

/// `/metrics`, `/healthz` (the process serves), `/readyz` (leading with synced caches, or a
/// healthy standby: a standby is ready to take over, which is what its probe should say).
pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(telemetry)
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.encode(),
    )
}

async fn readyz(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    if t.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
