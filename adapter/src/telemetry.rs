//! The adapter's own Prometheus metrics (served on `/metrics`).
//!
//! Owns: the registry and every metric of the adapter itself — API request latency by route
//! and code, scrape outcomes and durations, malformed lines and samples or histograms the
//! snapshot builder dropped (by kind), targets by state, the age of the oldest fresh scrape,
//! background-task failures and watch errors, and connections (open, closed by reason). Every label value is a `&'static str` from a closed set (route
//! templates, not paths; failure kinds, not error text), so cardinality is bounded whatever
//! the cluster holds.

use crate::store::{ScrapeFailure, SignalView, TargetKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScrapeLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    kind: &'static str,
    state: &'static str,
}

/// Buckets for API latency: the HPA polls every 15 s and we aim for milliseconds.
const REQUEST_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Buckets for scrape duration: a vLLM `/metrics` answers in milliseconds; the top buckets
/// catch targets near the timeout.
const SCRAPE_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Our metrics.
pub struct Telemetry {
    registry: Registry,
    scrapes: Family<ScrapeLabels, Counter>,
    scrape_duration: Family<KindLabels, Histogram>,
    malformed_lines: Counter,
    dropped_samples: Family<KindLabels, Counter>,
    dropped_histograms: Family<KindLabels, Counter>,
    task_failures: Family<TaskLabels, Counter>,
    watch_errors: Family<ResourceLabels, Counter>,
    connections_open: Gauge,
    connections_closed: Family<ReasonLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    targets: Family<TargetLabels, Gauge>,
    oldest_scrape_age: Gauge<f64, AtomicU64>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let mut registry = Registry::with_prefix("inferscale_adapter");
        let scrapes = Family::<ScrapeLabels, Counter>::default();
        registry.register(
            "scrapes",
            "Scrapes by target kind and result",
            scrapes.clone(),
        );
        let scrape_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(SCRAPE_BUCKETS.iter().copied())
        });
        registry.register(
            "scrape_duration_seconds",
            "Time to fetch and parse one target",
            scrape_duration.clone(),
        );
        let malformed_lines = Counter::default();
        registry.register(
            "malformed_lines",
            "Exposition lines skipped as malformed",
            malformed_lines.clone(),
        );
        let dropped_samples = Family::<KindLabels, Counter>::default();
        registry.register(
            "dropped_samples",
            "Samples a target exposed that the snapshot builder left out, by kind (over a cap, \
             duplicate, non-finite, bad bucket bound)",
            dropped_samples.clone(),
        );
        let dropped_histograms = Family::<KindLabels, Counter>::default();
        registry.register(
            "dropped_histograms",
            "Histograms left out because their buckets cannot form one, by kind",
            dropped_histograms.clone(),
        );
        let task_failures = Family::<TaskLabels, Counter>::default();
        registry.register(
            "task_failures",
            "Background tasks that ended or panicked and were restarted",
            task_failures.clone(),
        );
        let watch_errors = Family::<ResourceLabels, Counter>::default();
        registry.register(
            "watch_errors",
            "Errors of the Kubernetes watches (each retried with backoff)",
            watch_errors.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open now",
            connections_open.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Client connections the adapter closed itself, by reason",
            connections_closed.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "API requests by route and status code",
            requests.clone(),
        );
        let request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(REQUEST_BUCKETS.iter().copied())
        });
        registry.register(
            "request_duration_seconds",
            "API request latency by route",
            request_duration.clone(),
        );
        let targets = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "targets",
            "Scrape targets by kind and state",
            targets.clone(),
        );
        let oldest_scrape_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_fresh_scrape_age_seconds",
            "Age of the oldest scrape still used in answers",
            oldest_scrape_age.clone(),
        );
        Telemetry {
            registry,
            scrapes,
            scrape_duration,
            malformed_lines,
            dropped_samples,
            dropped_histograms,
            task_failures,
            watch_errors,
            connections_open,
            connections_closed,
            requests,
            request_duration,
            targets,
            oldest_scrape_age,
        }
    }

    pub fn scrape(&self, kind: TargetKind, failure: Option<ScrapeFailure>, duration_secs: f64) {
        let result = failure.map_or("success", ScrapeFailure::as_str);
        self.scrapes
            .get_or_create(&ScrapeLabels {
                kind: kind.as_str(),
                result,
            })
            .inc();
        self.scrape_duration
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .observe(duration_secs);
    }

    pub fn malformed_lines(&self, count: usize) {
        if count > 0 {
            self.malformed_lines.inc_by(count as u64);
        }
    }

    /// What the snapshot builder dropped from one engine body, by kind.
    pub fn dropped(&self, dropped: &inferscale_metrics::snapshot::DropStats) {
        for kind in inferscale_metrics::snapshot::DropKind::ALL {
            let count = dropped.get(kind);
            if count == 0 {
                continue;
            }
            let family = if kind.counts_histograms() {
                &self.dropped_histograms
            } else {
                &self.dropped_samples
            };
            family
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .inc_by(count as u64);
        }
    }

    /// A background task ended or panicked (and is restarted).
    pub fn task_failure(&self, task: &'static str) {
        self.task_failures.get_or_create(&TaskLabels { task }).inc();
    }

    /// A Kubernetes watch reported an error (it retries by itself).
    pub fn watch_error(&self, resource: &'static str) {
        self.watch_errors
            .get_or_create(&ResourceLabels { resource })
            .inc();
    }

    /// A client connection opened (`+1`) or closed (`-1`).
    pub fn connections_open(&self, delta: i64) {
        self.connections_open.inc_by(delta);
    }

    /// The adapter closed a client connection itself, for `reason`.
    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn request(&self, route: &'static str, code: &'static str, duration_secs: f64) {
        self.requests
            .get_or_create(&RequestLabels { route, code })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels { route })
            .observe(duration_secs);
    }

    /// Renders the text exposition, refreshing the store-derived gauges first.
    pub fn render(&self, view: &dyn SignalView, now: f64) -> String {
        let mut counts: std::collections::HashMap<(&'static str, &'static str), i64> =
            Default::default();
        for (kind, health) in view.health() {
            let state = match (health.last_failure, health.last_success) {
                (Some(_), _) => "failing",
                (None, Some(_)) => "up",
                (None, None) => "pending",
            };
            *counts.entry((kind.as_str(), state)).or_default() += 1;
        }
        for kind in [TargetKind::Engine, TargetKind::GpuExporter] {
            for state in ["up", "failing", "pending"] {
                let n = counts.get(&(kind.as_str(), state)).copied().unwrap_or(0);
                self.targets
                    .get_or_create(&TargetLabels {
                        kind: kind.as_str(),
                        state,
                    })
                    .set(n);
            }
        }
        self.oldest_scrape_age
            .set(view.summary(now).oldest_fresh_scrape_age.unwrap_or(0.0));
        self.encode()
    }

    /// The text exposition as the counters stand (without refreshing store-derived gauges).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
