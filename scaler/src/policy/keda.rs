//! KEDA's Prometheus scaler as its users run it: a ScaledObject whose trigger queries
//! `sum(vllm:num_requests_waiting)` with a `threshold` per replica, fed to the HPA KEDA creates.
//!
//! Owns: where the value comes from and when. By default (`useCachedMetrics: false`) KEDA's
//! metrics server queries Prometheus on every HPA request (each 15 s sync), so the value is
//! Prometheus' latest scrape (15 s interval): `pollingInterval` (30 s) only drives the 0↔1
//! activation, which `minReplicaCount ≥ 1` rules out. With `useCachedMetrics: true` the
//! metrics server answers from the value fetched at the last `pollingInterval`, adding up to
//! 30 s. Then the External-metric `AverageValue` calculation that HPA applies
//! (`GetExternalPerPodMetricReplicas`).
//! Does not own: the HPA's seeding, stabilisation and rate limits, reused from
//! [`super::hpa`].

use super::hpa::{
    external_per_pod_replicas, Behavior, Normalizer, HPA_SYNC_PERIOD_SECS, HPA_TOLERANCE,
};
use super::{Decision, Policy, PolicyError};
use crate::observe::{Observation, SignalPath};

/// KEDA's default `pollingInterval`, seconds.
pub const KEDA_POLLING_INTERVAL_SECS: f64 = 30.0;

/// KEDA scaling on `sum(vllm:num_requests_waiting)` with a per-replica threshold.
#[derive(Debug, Clone)]
pub struct Keda {
    threshold_per_replica: f64,
    /// `None`: `useCachedMetrics: false` (the default); `Some(pollingInterval)` otherwise.
    cache_for: Option<f64>,
    /// The value fetched at the last poll and when.
    cached: Option<(f64, f64)>,
    normalizer: Normalizer,
}

impl Keda {
    pub fn new(threshold_per_replica: f64, min: u32, max: u32) -> Result<Keda, PolicyError> {
        if !(threshold_per_replica.is_finite() && threshold_per_replica > 0.0) {
            return Err(PolicyError::InvalidParameter {
                policy: "keda",
                reason: "threshold must be positive",
            });
        }
        Ok(Keda {
            threshold_per_replica,
            cache_for: None,
            cached: None,
            normalizer: Normalizer::new(Behavior::default(), min, max),
        })
    }
}

impl Keda {
    /// Serve the metric from KEDA's cache, refreshed every `pollingInterval` (30 s).
    pub fn with_cached_metrics(mut self) -> Keda {
        self.cache_for = Some(KEDA_POLLING_INTERVAL_SECS);
        self
    }
}

impl Policy for Keda {
    fn name(&self) -> &str {
        "keda"
    }

    fn signal_path(&self) -> SignalPath {
        SignalPath::Prometheus
    }

    fn decision_period(&self) -> f64 {
        HPA_SYNC_PERIOD_SECS
    }

    fn decide(&mut self, obs: &Observation) -> Decision {
        let current = obs.desired_serving;
        self.normalizer.seed(current, obs.now);
        let stale = match (self.cached, self.cache_for) {
            (Some((at, _)), Some(interval)) => obs.now - at >= interval,
            _ => true,
        };
        if stale {
            // An empty Prometheus result (no pod scraped yet) reads as 0, as KEDA's
            // Prometheus scaler does with `ignoreNullValues` (its default).
            let total = obs.fleet.queue_depth.sum.value().unwrap_or(0.0);
            self.cached = Some((obs.now, total));
        }
        let total = self.cached.map_or(0.0, |(_, v)| v);
        // The replica calculator divides by `status.currentReplicas` (pods that exist, starting
        // ones included); the normaliser works from `spec.replicas`.
        let status_replicas = obs.ready + obs.starting;
        let proposal = external_per_pod_replicas(
            total,
            status_replicas,
            self.threshold_per_replica,
            HPA_TOLERANCE,
        );
        Decision::serving(self.normalizer.normalize(proposal, current, obs.now))
    }
}
