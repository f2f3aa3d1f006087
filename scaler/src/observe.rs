//! What a scaling policy can see: per-pod signals computed by the metrics engine from the
//! simulated replicas' scrapes, with the delays of the path that carries them.
//!
//! Owns: the [`Observation`] handed to policies, the two signal paths (our direct scrape, or
//! Prometheus plus prometheus-adapter) and their timing constants, and turning a pod's
//! [`ScrapeHistory`] into [`ModelSignals`].
//! Does not own: the signal arithmetic, which is `inferscale-metrics` unchanged — the queue
//! depth, KV usage and TTFT percentiles a policy reads here are computed by the same code the
//! adapter serves to Kubernetes.

use inferscale_metrics::fleet::FleetSignals;
use inferscale_metrics::signals::{ModelSignals, Reading, ScrapeHistory, SingleScrape};
use serde::Serialize;

/// Our adapter's default scrape interval: 5 s keeps the queue depth fresh without loading
/// vLLM's `/metrics` handler noticeably.
pub const DIRECT_SCRAPE_INTERVAL_SECS: f64 = 5.0;
/// Prometheus scrape interval for serving pods: 15 s, the value most vLLM/KServe guides put
/// in their ServiceMonitor (Prometheus' own default is 60 s, which would be slower still).
pub const PROMETHEUS_SCRAPE_INTERVAL_SECS: f64 = 15.0;
/// The `rate()`/histogram window of prometheus-adapter rules in those guides: `[1m]`.
pub const PROMETHEUS_RATE_WINDOW_SECS: f64 = 60.0;
/// Our latency window on the direct path (the metrics crate's default).
pub const DIRECT_WINDOW_SECS: f64 = inferscale_metrics::signals::DEFAULT_WINDOW_SECS;

/// How signals reach the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalPath {
    /// inferscale's adapter scraping each pod itself.
    Direct,
    /// Prometheus scrapes, prometheus-adapter (or KEDA) queries with a rate window.
    Prometheus,
}

impl SignalPath {
    /// Seconds between scrapes of a pod.
    pub fn scrape_interval(self) -> f64 {
        match self {
            SignalPath::Direct => DIRECT_SCRAPE_INTERVAL_SECS,
            SignalPath::Prometheus => PROMETHEUS_SCRAPE_INTERVAL_SECS,
        }
    }

    /// Window of rates and latency percentiles, seconds.
    pub fn window(self) -> f64 {
        match self {
            SignalPath::Direct => DIRECT_WINDOW_SECS,
            SignalPath::Prometheus => PROMETHEUS_RATE_WINDOW_SECS,
        }
    }

    /// A fresh per-pod scrape store for this path.
    pub fn history(self) -> ScrapeHistory {
        ScrapeHistory::new(self.window())
    }
}

/// Lifecycle of a pod as a policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PodPhase {
    /// Created, loading (not ready; exposes no metrics yet).
    Starting,
    /// Serving.
    Ready,
    /// Taken out of rotation, finishing its requests.
    Draining,
    /// Waking from vLLM sleep mode (seconds).
    Waking,
    /// Warm: GPU held, weights offloaded, not serving.
    Sleeping,
}

/// One serving pod (what the HPA would list with the deployment's selector).
#[derive(Debug, Clone)]
pub struct PodView {
    pub phase: PodPhase,
    /// Signals from the metrics engine; `None` when the pod was never scraped.
    pub signals: Option<ModelSignals>,
    /// Share of the last decision period the engine loop was busy, 0–1 (the "CPU-like"
    /// utilisation metrics-server would report for vLLM's busy-polling process); `None` for
    /// pods that are not ready.
    pub busy_fraction: Option<f64>,
}

impl PodView {
    /// This pod's queue depth, missing when it has no data.
    pub fn queue_depth(&self) -> Reading {
        self.signals.as_ref().map_or(
            Reading::Missing(inferscale_metrics::signals::Missing::NeedsTwoScrapes),
            |s| s.queue_depth,
        )
    }
}

/// Everything a policy sees at one decision.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Simulation time, seconds.
    pub now: f64,
    /// Pods of the serving deployment (starting, ready, waking and draining).
    pub pods: Vec<PodView>,
    /// Fleet aggregates over the pods that have signals (missing pods are left out, never 0).
    pub fleet: FleetSignals,
    /// Ready serving pods.
    pub ready: u32,
    /// Serving pods still starting or waking.
    pub starting: u32,
    /// Sleeping pods (asleep, or starting or draining toward sleep).
    pub sleeping: u32,
    /// Placeholder pods holding a GPU node.
    pub placeholders: u32,
    /// Serving pods not Ready yet, with their ages and where they come from.
    pub pending: Vec<crate::decision::Pending>,
    /// Serving replicas currently requested (the deployment's `spec.replicas`).
    pub desired_serving: u32,
    /// Requests that reached the gateway so far (a counter; policies difference it).
    pub arrivals_total: u64,
    /// Prompt tokens of those requests (a counter; a gateway sees every prompt's length).
    pub arrival_prompt_tokens_total: f64,
    /// Requests held at the gateway because no pod could take them.
    pub gateway_queue: usize,
    /// Start or wake durations of pods that became ready since the last decision, seconds,
    /// by where they came from (cold, placeholder, sleeping).
    pub new_ready_durations: Vec<(crate::decision::Tier, f64)>,
}

/// A pod's newest signals (all models combined), as the adapter would serve them.
pub fn pod_signals(history: &ScrapeHistory) -> Option<ModelSignals> {
    history
        .signals(SingleScrape::Missing)
        .map(|signals| signals.combined)
}

/// Fleet aggregates over the pods that have signals.
pub fn fleet_signals(pods: &[PodView]) -> FleetSignals {
    let with_data: Vec<&ModelSignals> = pods
        .iter()
        .filter(|p| matches!(p.phase, PodPhase::Ready | PodPhase::Draining))
        .filter_map(|p| p.signals.as_ref())
        .collect();
    FleetSignals::of(&with_data)
}
