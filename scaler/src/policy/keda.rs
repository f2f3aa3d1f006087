//! A KEDA-like scaler: a Prometheus query polled on an interval, fed to the HPA KEDA creates.
//!
//! Owns: the polling cache (KEDA's metrics server answers the HPA from the value fetched at
//! the last `pollingInterval` when `useCachedMetrics` is on) and the External-metric,
//! `AverageValue` replica calculation that HPA applies to it.
//! Does not own: the HPA's stabilisation and rate limits, reused from [`super::hpa`].

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
    polling_interval: f64,
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
            polling_interval: KEDA_POLLING_INTERVAL_SECS,
            cached: None,
            normalizer: Normalizer::new(Behavior::default(), min, max),
        })
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
        let stale = self
            .cached
            .is_none_or(|(at, _)| obs.now - at >= self.polling_interval);
        if stale {
            // An empty Prometheus result (no pod scraped yet) reads as 0, as KEDA's
            // Prometheus scaler does with `ignoreNullValues` (its default).
            let total = obs.fleet.queue_depth.sum.value().unwrap_or(0.0);
            self.cached = Some((obs.now, total));
        }
        let total = self.cached.map_or(0.0, |(_, v)| v);
        let current = obs.desired_serving;
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
