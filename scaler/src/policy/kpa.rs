//! Knative's KPA (stable and panic windows, with its activator) and AIBrix's KPA on a vLLM
//! metric, each with its upstream defaults.
//!
//! Owns: the window averages, panic mode, rate limits and scale-down delay of Knative Serving's
//! `pkg/autoscaler/scaling/autoscaler.go` (`Scale`, `newAutoscaler`): desired pods
//! `ceil(value / target)` clamped to `[floor(ready / max-scale-down-rate),
//! ceil(max-scale-up-rate × ready)]`; panic when `ceil(panic value / target) / ready ≥ 2`; in
//! panic the larger of the stable and panic counts, never decreasing (`maxPanicPods`); panic ends
//! one stable window after the last time over the threshold; a new autoscaler over more than one
//! ready pod starts in panic with `maxPanicPods` = ready pods (so a restart, or a sized fleet,
//! is not scaled down before the windows fill). Knative's excess burst capacity puts the
//! activator in the request path (`floor(ready × total − target-burst-capacity − panic value)
//! < 0`, total = container concurrency, TBC 200): while it is, requests wait in one central
//! queue and each pod gets at most its container concurrency ([`Decision::activator`]).
//! AIBrix (`vllm-project/aibrix` `pkg/controller/podautoscaler/algorithm/kpa.go` and
//! `context/context.go`): the same algorithm with no tolerance band, max scale-up and
//! scale-down rates of 2, panic threshold 2, a 180 s stable and 60 s panic window (AIBrix's KPA
//! defaults), and the 300 s scale-down cooldown, modelled as Knative's scale-down delay (the
//! highest desired count of the last 300 s). AIBrix has no activator.
//!
//! Checked against AIBrix's current source (`algorithm/kpa.go` `ComputeTargetReplicas`,
//! `context/context.go` `NewBaseScalingContext`, `metrics/client.go`, `autoscaler.go`).
//! Matches: `ceil(value / target)` for the stable and panic counts, clamped to
//! `[floor(ready / 2), ceil(2 × ready)]`; panic when `dppc / max(1, ready) ≥ 2`; in panic the
//! larger count, never below the panic maximum; `DefaultTolerance = 0` for the KPA (the 0.1
//! fluctuation tolerances of the context serve the APA); stable and panic windows of 180 s and
//! 60 s (`DefaultStableWindowDuration`, `DefaultPanicWindowDuration`); no scale-up cooldown and a
//! 300 s scale-down cooldown; the largest proposal over several metric sources. Differs, not
//! ported: AIBrix keeps scale-up non-zero as `max(1, ceil(2 × ready))` over the ready count
//! unclamped at 1 (here `ready` is taken as at least 1 for both bounds: the two differ only with
//! no ready pod, 1 against 2); `applyPendingReplicaGuard` (`autoscaler.go`) recomputes a KPA
//! scale-up with pods still pending counted as missing (value × ready / current) and a
//! scale-down with them at target, which is not modelled; panic state lives in the scaling
//! context (`GetInPanicMode`, `GetMaxPanicPods`), whose base implementation returns "not in
//! panic" and 0 and whose setters are no-ops — no caller that sets panic mode was found in the
//! source read, so upstream may run the stable count alone, where this model panics as the
//! older `scaler/kpa.go` (and Knative) do.
//! Does not own: the metric arithmetic (the metrics crate's fleet sums).

use super::{Decision, Policy, PolicyError};
use crate::observe::{Observation, SignalPath};
use std::collections::VecDeque;

/// Knative autoscaler tick, seconds.
pub const KPA_TICK_SECS: f64 = 2.0;
/// Knative `stable-window` default.
pub const KPA_STABLE_WINDOW_SECS: f64 = 60.0;
/// Knative `panic-window-percentage` default: 10 % of the stable window.
pub const KPA_PANIC_WINDOW_SECS: f64 = 6.0;
/// `panic-threshold-percentage` default 200 % (Knative and AIBrix).
pub const KPA_PANIC_THRESHOLD: f64 = 2.0;
/// Knative `max-scale-up-rate` default.
pub const KPA_MAX_SCALE_UP_RATE: f64 = 1000.0;
/// Knative `max-scale-down-rate` default.
pub const KPA_MAX_SCALE_DOWN_RATE: f64 = 2.0;
/// Knative `target-burst-capacity` default.
pub const KPA_TARGET_BURST_CAPACITY: f64 = 200.0;
/// Container concurrency of the Knative service (the hard per-pod limit the activator and the
/// queue-proxy enforce): vLLM keeps up to 256 in a batch, but TTFT of the Llama-8B/H100
/// profile stays low only while prefill competes with a moderate batch.
pub const DEFAULT_KPA_CONTAINER_CONCURRENCY: f64 = 48.0;
/// Default in-flight requests per pod: Knative's default 70 % target utilisation of the
/// container concurrency.
pub const DEFAULT_KPA_CONCURRENCY_TARGET: f64 = DEFAULT_KPA_CONTAINER_CONCURRENCY * 0.7;
/// Default KV-cache usage target of AIBrix's KPA (fraction per pod).
pub const DEFAULT_AIBRIX_KV_TARGET: f64 = 0.5;
/// AIBrix KPA stable window, seconds.
pub const AIBRIX_STABLE_WINDOW_SECS: f64 = 180.0;
/// AIBrix KPA panic window, seconds.
pub const AIBRIX_PANIC_WINDOW_SECS: f64 = 60.0;
/// AIBrix `MaxScaleUpRate` and `MaxScaleDownRate` defaults.
pub const AIBRIX_MAX_SCALE_RATE: f64 = 2.0;
/// AIBrix `ScaleDownCooldownWindow` default, seconds.
pub const AIBRIX_SCALE_DOWN_COOLDOWN_SECS: f64 = 300.0;
/// AIBrix's decision period: its controller resyncs every 10 s... but it keeps the KPA tick
/// of the metric windows; we tick as Knative does.
const AIBRIX_TICK_SECS: f64 = KPA_TICK_SECS;

/// What the KPA averages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KpaMetric {
    /// In-flight requests (running + waiting + held at the activator), fleet total.
    Concurrency { target_per_pod: f64 },
    /// KV-cache usage, fleet total of per-pod fractions.
    KvCacheUsage { target_per_pod: f64 },
}

/// Knative's activator: when it is put in the path, and the per-pod limit it enforces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activator {
    /// Container concurrency (also the KPA's "total value" per pod).
    pub container_concurrency: f64,
    pub target_burst_capacity: f64,
}

/// A KPA's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KpaParams {
    pub stable_window: f64,
    pub panic_window: f64,
    pub max_scale_up_rate: f64,
    pub max_scale_down_rate: f64,
    pub panic_threshold: f64,
    /// Highest desired count of this many seconds is applied (0: none).
    pub scale_down_delay: f64,
    pub activator: Option<Activator>,
    pub tick: f64,
}

/// A KPA.
#[derive(Debug, Clone)]
pub struct Kpa {
    name: &'static str,
    metric: KpaMetric,
    params: KpaParams,
    samples: VecDeque<(f64, f64)>,
    started: bool,
    panic_since: Option<f64>,
    max_panic_pods: u32,
    recent: VecDeque<(f64, u32)>,
    min: u32,
    max: u32,
}

impl Kpa {
    /// Knative's KPA on concurrency, with the activator.
    pub fn knative(target_per_pod: f64, min: u32, max: u32) -> Result<Kpa, PolicyError> {
        Kpa::build(
            "kpa",
            KpaMetric::Concurrency { target_per_pod },
            KpaParams {
                stable_window: KPA_STABLE_WINDOW_SECS,
                panic_window: KPA_PANIC_WINDOW_SECS,
                max_scale_up_rate: KPA_MAX_SCALE_UP_RATE,
                max_scale_down_rate: KPA_MAX_SCALE_DOWN_RATE,
                panic_threshold: KPA_PANIC_THRESHOLD,
                scale_down_delay: 0.0,
                activator: Some(Activator {
                    container_concurrency: DEFAULT_KPA_CONTAINER_CONCURRENCY.max(target_per_pod),
                    target_burst_capacity: KPA_TARGET_BURST_CAPACITY,
                }),
                tick: KPA_TICK_SECS,
            },
            min,
            max,
        )
    }

    /// AIBrix's KPA on KV-cache usage.
    pub fn aibrix(target_per_pod: f64, min: u32, max: u32) -> Result<Kpa, PolicyError> {
        Kpa::build(
            "aibrix",
            KpaMetric::KvCacheUsage { target_per_pod },
            KpaParams {
                stable_window: AIBRIX_STABLE_WINDOW_SECS,
                panic_window: AIBRIX_PANIC_WINDOW_SECS,
                max_scale_up_rate: AIBRIX_MAX_SCALE_RATE,
                max_scale_down_rate: AIBRIX_MAX_SCALE_RATE,
                panic_threshold: KPA_PANIC_THRESHOLD,
                scale_down_delay: AIBRIX_SCALE_DOWN_COOLDOWN_SECS,
                activator: None,
                tick: AIBRIX_TICK_SECS,
            },
            min,
            max,
        )
    }

    /// A KPA with explicit parameters (sweeps).
    pub fn build(
        name: &'static str,
        metric: KpaMetric,
        params: KpaParams,
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
            params,
            samples: VecDeque::new(),
            started: false,
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

    /// `Scale` of `autoscaler.go` for one tick: desired pods from the window averages and the
    /// ready count, updating the panic state.
    pub fn scale(&mut self, now: f64, stable: f64, panic: f64, ready: u32) -> u32 {
        let p = self.params;
        let ready = ready.max(1) as f64;
        let target = self.target();
        let max_up = (p.max_scale_up_rate * ready).ceil().max(1.0);
        let max_down = (ready / p.max_scale_down_rate).floor();
        let dspc = (stable / target).ceil();
        let dppc = (panic / target).ceil();
        let stable_pods = dspc.clamp(max_down, max_up) as u32;
        let panic_pods = dppc.clamp(max_down, max_up) as u32;
        let over_threshold = dppc / ready >= p.panic_threshold;
        if over_threshold {
            self.panic_since = Some(now);
        } else if self
            .panic_since
            .is_some_and(|since| since + p.stable_window < now)
        {
            self.panic_since = None;
            self.max_panic_pods = 0;
        }
        let mut desired = if self.panic_since.is_some() {
            // In panic the larger of the stable and panic counts; panic never scales down.
            self.max_panic_pods = self.max_panic_pods.max(stable_pods.max(panic_pods));
            self.max_panic_pods
        } else {
            stable_pods
        };
        if p.scale_down_delay > 0.0 {
            self.recent.push_back((now, desired));
            while self
                .recent
                .front()
                .is_some_and(|(t, _)| *t <= now - p.scale_down_delay)
            {
                self.recent.pop_front();
            }
            desired = self.recent.iter().map(|(_, d)| *d).max().unwrap_or(desired);
        }
        desired
    }

    /// The activator's per-pod limit when excess burst capacity is negative.
    fn activator_in_path(&self, panic: f64, ready: u32) -> Option<u32> {
        let a = self.params.activator?;
        let excess =
            (ready as f64 * a.container_concurrency - a.target_burst_capacity - panic).floor();
        (excess < 0.0).then_some(a.container_concurrency as u32)
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
        self.params.tick
    }

    fn decide(&mut self, obs: &Observation) -> Decision {
        let now = obs.now;
        let current = obs.desired_serving;
        if !self.started {
            // `newAutoscaler`: over more than one ready pod, start in panic at that scale.
            self.started = true;
            if obs.ready > 1 {
                self.panic_since = Some(now);
                self.max_panic_pods = obs.ready;
            }
        }
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
        let stable_window = self.params.stable_window;
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| *t <= now - stable_window)
        {
            self.samples.pop_front();
        }
        let (Some(stable), Some(panic)) = (
            self.average_since(now - stable_window),
            self.average_since(now - self.params.panic_window),
        ) else {
            return Decision::serving(current);
        };
        let desired = self.scale(now, stable, panic, obs.ready);
        Decision {
            activator: self.activator_in_path(panic, obs.ready),
            ..Decision::serving(desired.clamp(self.min, self.max))
        }
    }
}

#[cfg(test)]
mod tests {
    //! Hand-worked cases of `autoscaler.go` `Scale` with Knative's and AIBrix's defaults.
    use super::*;

    #[test]
    fn stable_mode_is_ceil_of_value_over_target_within_rate_limits() {
        let mut k = Kpa::knative(10.0, 1, 100).unwrap();
        // 45 in flight / 10 → 5 pods (4 ready: max up 4000, max down 2).
        assert_eq!(k.scale(0.0, 45.0, 45.0, 4), 5);
        // 3 in flight → 1, but at most halving from 4 ready → 2.
        let mut k = Kpa::knative(10.0, 1, 100).unwrap();
        assert_eq!(k.scale(0.0, 3.0, 3.0, 4), 2);
    }

    #[test]
    fn panic_holds_the_highest_count_for_a_stable_window() {
        let mut k = Kpa::knative(10.0, 1, 100).unwrap();
        // Panic value 80 on 2 ready: ceil(8) / 2 = 4 ≥ 2 → panic; max(stable 3, panic 8) = 8.
        assert_eq!(k.scale(0.0, 30.0, 80.0, 2), 8);
        // Load drops: not over the threshold, but panic lasts 60 s past the last time over
        // it; the count never decreases in panic.
        assert_eq!(k.scale(30.0, 30.0, 20.0, 8), 8);
        assert_eq!(k.scale(60.0, 30.0, 20.0, 8), 8);
        // 62 s after: out of panic, stable 3 (max down floor(8/2) = 4) → 4.
        assert_eq!(k.scale(62.0, 30.0, 20.0, 8), 4);
    }

    #[test]
    fn a_new_autoscaler_over_several_pods_starts_in_panic() {
        use crate::observe::Observation;
        use inferscale_metrics::fleet::FleetSignals;
        let mut k = Kpa::knative(10.0, 1, 100).unwrap();
        let obs = Observation {
            now: 0.0,
            pods: Vec::new(),
            fleet: FleetSignals::of(&[]),
            ready: 5,
            starting: 0,
            sleeping: 0,
            placeholders: 0,
            pending: Vec::new(),
            desired_serving: 5,
            arrivals_total: 0,
            arrival_prompt_tokens_total: 0.0,
            gateway_queue: 0,
            new_ready_durations: Vec::new(),
        };
        k.decide(&obs);
        // Windows then show almost nothing (stable 2, panic 2): panic keeps maxPanicPods 5.
        assert_eq!(k.scale(2.0, 2.0, 2.0, 5), 5);
    }

    #[test]
    fn activator_is_in_the_path_while_burst_capacity_is_short() {
        let k = Kpa::knative(DEFAULT_KPA_CONCURRENCY_TARGET, 1, 100).unwrap();
        // 4 ready × 48 − 200 − 0 = −8 < 0: in the path, 48 per pod.
        assert_eq!(k.activator_in_path(0.0, 4), Some(48));
        // 5 ready × 48 − 200 − 30 = 10 ≥ 0: out of the path.
        assert_eq!(k.activator_in_path(30.0, 5), None);
        // AIBrix has no activator.
        let a = Kpa::aibrix(0.5, 1, 100).unwrap();
        assert_eq!(a.activator_in_path(1000.0, 1), None);
    }

    #[test]
    fn aibrix_rates_and_cooldown() {
        let mut a = Kpa::aibrix(0.5, 1, 100).unwrap();
        // KV sum 4.0 / 0.5 → 8 pods, but at most ceil(2 × 2 ready) = 4.
        assert_eq!(a.scale(0.0, 4.0, 4.0, 2), 4);
        // Later the load is gone: stable 0 → floor(4 / 2) = 2, but the 300 s cooldown holds 4.
        assert_eq!(a.scale(200.0, 0.0, 0.0, 4), 4);
        // Panic ended 180 s after the last time over the threshold (t = 0); past 300 s the 4
        // recorded at t = 0 has aged out of the cooldown window: 2.
        assert_eq!(a.scale(301.0, 0.0, 0.0, 4), 2);
    }
}
