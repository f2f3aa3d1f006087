//! Knative's KPA (stable and panic windows) and an AIBrix-like variant on a vLLM metric.
//!
//! Owns: the window averages, panic mode and rate limits of Knative Serving's
//! `pkg/autoscaler/scaling/autoscaler.go` (stable window 60 s, panic window 10 % of it,
//! panic threshold 200 % of ceil(panic value / target) over ready pods, in panic the larger of
//! the stable and panic counts ratcheted up from 0, max scale-up rate 1000, max scale-down
//! rate 2, 2 s tick), and the
//! AIBrix-like flavour: the same windows over KV-cache usage with a ±10 % tolerance band and a
//! scale-down delay. "AIBrix-like" because it follows the shape of AIBrix's KPA, not its code.
//! Does not own: the metric arithmetic (the metrics crate's fleet sums and means).

use super::{Decision, Policy, PolicyError};
use crate::observe::{Observation, SignalPath};
use std::collections::VecDeque;

/// Knative autoscaler tick, seconds.
pub const KPA_TICK_SECS: f64 = 2.0;
/// Knative `stable-window` default.
pub const KPA_STABLE_WINDOW_SECS: f64 = 60.0;
/// Knative `panic-window-percentage` default: 10 % of the stable window.
pub const KPA_PANIC_WINDOW_SECS: f64 = 6.0;
/// Knative `panic-threshold-percentage` default 200 %.
pub const KPA_PANIC_THRESHOLD: f64 = 2.0;
/// Knative `max-scale-up-rate` default.
pub const KPA_MAX_SCALE_UP_RATE: f64 = 1000.0;
/// Knative `max-scale-down-rate` default.
pub const KPA_MAX_SCALE_DOWN_RATE: f64 = 2.0;
/// Default in-flight requests per pod for the concurrency KPA: vLLM keeps up to 256 in a
/// batch, but TTFT of the Llama-8B/H100 profile stays low only while prefill competes with a
/// moderate batch; 48 × Knative's default 70 % target utilisation ≈ 34 per pod.
pub const DEFAULT_KPA_CONCURRENCY_TARGET: f64 = 48.0 * 0.7;
/// Default KV-cache usage target of the AIBrix-like KPA (fraction).
pub const DEFAULT_AIBRIX_KV_TARGET: f64 = 0.5;
/// AIBrix-like tolerance band around the target.
pub const AIBRIX_TOLERANCE: f64 = 0.1;
/// AIBrix-like scale-down delay, seconds: holds the highest recommendation this long.
pub const AIBRIX_SCALE_DOWN_DELAY_SECS: f64 = 180.0;

/// What the KPA averages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KpaMetric {
    /// In-flight requests (running + waiting + held at the activator), fleet total.
    Concurrency { target_per_pod: f64 },
    /// KV-cache usage, fleet total of per-pod fractions.
    KvCacheUsage { target_per_pod: f64 },
}

/// A KPA.
#[derive(Debug, Clone)]
pub struct Kpa {
    name: &'static str,
    metric: KpaMetric,
    tolerance: f64,
    scale_down_delay: f64,
    samples: VecDeque<(f64, f64)>,
    panic_since: Option<f64>,
    max_panic_pods: u32,
    recent: VecDeque<(f64, u32)>,
    min: u32,
    max: u32,
}

impl Kpa {
    /// Knative's KPA on concurrency.
    pub fn knative(target_per_pod: f64, min: u32, max: u32) -> Result<Kpa, PolicyError> {
        Kpa::build(
            "kpa",
            KpaMetric::Concurrency { target_per_pod },
            0.0,
            0.0,
            min,
            max,
        )
    }

    /// The AIBrix-like KPA on KV-cache usage.
    pub fn aibrix(target_per_pod: f64, min: u32, max: u32) -> Result<Kpa, PolicyError> {
        Kpa::build(
            "aibrix",
            KpaMetric::KvCacheUsage { target_per_pod },
            AIBRIX_TOLERANCE,
            AIBRIX_SCALE_DOWN_DELAY_SECS,
            min,
            max,
        )
    }

    fn build(
        name: &'static str,
        metric: KpaMetric,
        tolerance: f64,
        scale_down_delay: f64,
        min: u32,
        max: u32,
    ) -> Result<Kpa, PolicyError> {
        let target = match metric {
            KpaMetric::Concurrency { target_per_pod }
            | KpaMetric::KvCacheUsage { target_per_pod } => target_per_pod,
        };
        if !(target.is_finite() && target > 0.0) {
            return Err(PolicyError::InvalidParameter {
                policy: name,
                reason: "target must be positive",
            });
        }
        Ok(Kpa {
            name,
            metric,
            tolerance,
            scale_down_delay,
            samples: VecDeque::new(),
            panic_since: None,
            max_panic_pods: 0,
            recent: VecDeque::new(),
            min,
            max,
        })
    }

    fn target(&self) -> f64 {
        match self.metric {
            KpaMetric::Concurrency { target_per_pod }
            | KpaMetric::KvCacheUsage { target_per_pod } => target_per_pod,
        }
    }

    fn average_since(&self, since: f64) -> Option<f64> {
        let (sum, n) = self
            .samples
            .iter()
            .filter(|(t, _)| *t > since)
            .fold((0.0, 0usize), |(s, n), (_, v)| (s + v, n + 1));
        (n > 0).then(|| sum / n as f64)
    }
}

impl Policy for Kpa {
    fn name(&self) -> &str {
        self.name
    }

    fn signal_path(&self) -> SignalPath {
        SignalPath::Direct
    }

    fn decision_period(&self) -> f64 {
        KPA_TICK_SECS
    }

    fn decide(&mut self, obs: &Observation) -> Decision {
        let now = obs.now;
        let current = obs.desired_serving;
        let sample = match self.metric {
            KpaMetric::Concurrency { .. } => {
                let running = obs.fleet.running.sum.value();
                let waiting = obs.fleet.queue_depth.sum.value();
                match (running, waiting) {
                    (None, None) => None,
                    (r, w) => Some(r.unwrap_or(0.0) + w.unwrap_or(0.0) + obs.gateway_queue as f64),
                }
            }
            KpaMetric::KvCacheUsage { .. } => obs.fleet.kv_cache_usage.sum.value(),
        };
        if let Some(v) = sample {
            self.samples.push_back((now, v));
        }
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| *t <= now - KPA_STABLE_WINDOW_SECS)
        {
            self.samples.pop_front();
        }
        let (Some(stable), Some(panic)) = (
            self.average_since(now - KPA_STABLE_WINDOW_SECS),
            self.average_since(now - KPA_PANIC_WINDOW_SECS),
        ) else {
            return Decision::serving(current);
        };
        let ready = obs.ready.max(1) as f64;
        let target = self.target();
        let max_up = (KPA_MAX_SCALE_UP_RATE * ready).ceil() as u32;
        let max_down = (ready / KPA_MAX_SCALE_DOWN_RATE).floor() as u32;
        let pods_for = |value: f64| -> u32 {
            let ratio = value / (target * ready);
            let wanted = if self.tolerance > 0.0 && (ratio - 1.0).abs() <= self.tolerance {
                ready as u32
            } else {
                (value / target).ceil() as u32
            };
            wanted.clamp(max_down, max_up)
        };
        let stable_pods = pods_for(stable);
        let panic_pods = pods_for(panic);
        // `autoscaler.go` `Scale`: the threshold compares the unclamped panic pod count,
        // ceil(panic value / target), with the ready pods.
        let over_threshold = (panic / target).ceil() / ready >= KPA_PANIC_THRESHOLD;
        if over_threshold {
            self.panic_since = Some(now);
        } else if self
            .panic_since
            .is_some_and(|since| now - since > KPA_STABLE_WINDOW_SECS)
        {
            self.panic_since = None;
            self.max_panic_pods = 0;
        }
        let mut desired = if self.panic_since.is_some() {
            // In panic the larger of the stable and panic counts, ratcheted from 0 (upstream
            // starts `maxPanicPods` at 0, not at the current scale): panic never scales down.
            self.max_panic_pods = self.max_panic_pods.max(stable_pods.max(panic_pods));
            self.max_panic_pods
        } else {
            stable_pods
        };
        if self.scale_down_delay > 0.0 {
            self.recent.push_back((now, desired));
            while self
                .recent
                .front()
                .is_some_and(|(t, _)| *t <= now - self.scale_down_delay)
            {
                self.recent.pop_front();
            }
            desired = self.recent.iter().map(|(_, d)| *d).max().unwrap_or(desired);
        }
        Decision::serving(desired.clamp(self.min, self.max))
    }
}
