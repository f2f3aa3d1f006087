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
//! AIBrix (`vllm-project/aibrix`, `pkg/controller/podautoscaler/`), modelled as its current
//! source behaves, not as Knative does (files and functions read):
//! - `metrics/client.go` `UpdateMetrics`: each scrape records the *mean* of the pods' values in
//!   the stable and panic windows, so the KPA's value is the mean KV-cache usage per pod, not a
//!   fleet total ([`KpaMetric::KvCacheUsage`]); `ceil(value / target)` is then a pod count that
//!   does not grow with the fleet (the upstream test
//!   `TestComputeDesiredReplicasAdjustsKPAAPAConservativelyWhenReplicasPending` in
//!   `autoscaler_test.go` expects 4 from two pods at 250 against a target of 50 with 4 current
//!   replicas, which only the mean gives).
//! - `algorithm/kpa.go` `KPAAlgorithm.ComputeRecommendation` → `shouldEnterPanicMode`: panic on
//!   each tick iff the stable value is ≤ 0 or panic value / stable value > the panic threshold
//!   (2, `context/context.go` `NewBaseScalingContext`); no panic hold of one stable window.
//! - `algorithm/kpa.go` `computeTargetReplicas(currentPodCount = CurrentReplicas)`: desired
//!   counts `ceil(stable / target)` and `ceil(panic / target)` clamped to
//!   `[floor(current / 2), max(1, ceil(2 × current))]` (so 1 pod, not 2, from zero); in panic the
//!   larger of the two, "never below `GetMaxPanicPods()`" — but the base context's
//!   `GetMaxPanicPods` returns 0 and `SetMaxPanicPods` is a no-op (`context/context.go`), so the
//!   panic high-water mark is inert upstream: panic mode is the memoryless larger count. Then
//!   `applyConstraints` (min, max replicas; `algorithm/algorithm.go`).
//! - `autoscaler.go` `ComputeDesiredReplicas` → `applyPendingReplicaGuard` and
//!   `computePendingAdjustedReplicas` (KPA, Pod metric, pods pending, a change proposed, a
//!   positive current count): with `ready ≤ current` and `pending = current − ready`, a
//!   scale-up becomes `ceil(value × ready / current / target)` clamped to `[current, desired]`
//!   (pending pods counted as missing), a scale-down
//!   `ceil((value × ready + target × pending) / target)` clamped to `[desired, current]`
//!   (pending pods at target); `value` is the recommendation's `current_value` (the panic
//!   value in panic, else the stable value).
//! - Kept from before: stable and panic windows of 180 s and 60 s (`DefaultStableWindowDuration`,
//!   `DefaultPanicWindowDuration`), max scale-up and scale-down rates 2, no tolerance band, no
//!   scale-up cooldown, and the 300 s scale-down cooldown modelled as Knative's scale-down delay
//!   (the highest desired count of the last 300 s, applied after the guard); the largest proposal
//!   over several metric sources. AIBrix has no activator. Not modelled: `ActivationScale` (1 in
//!   the base context, a no-op).
//!
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
    /// KV-cache usage, mean of the per-pod fractions (AIBrix's `UpdateMetrics` averages the
    /// pods' values).
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
    /// AIBrix's upstream algorithm ([`Kpa::aibrix_scale`]) instead of Knative's `Scale`.
    aibrix: bool,
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
        let mut kpa = Kpa::build(
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
        )?;
        kpa.aibrix = true;
        Ok(kpa)
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
            aibrix: false,
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

    /// One AIBrix decision as its source computes it (see the module doc): panic from the
    /// window ratio, the clamped stable and panic counts over the current replica count, the
    /// min/max constraints, the pending-replica guard, then the scale-down cooldown.
    /// `current` is the requested replica count, `ready` the Ready pods among them.
    pub fn aibrix_scale(
        &mut self,
        now: f64,
        stable: f64,
        panic: f64,
        current: u32,
        ready: u32,
    ) -> u32 {
        let p = self.params;
        let target = self.target();
        // `shouldEnterPanicMode`.
        let in_panic = stable <= 0.0 || panic / stable > p.panic_threshold;
        // `computeTargetReplicas`.
        let pods = f64::from(current);
        let max_up = (p.max_scale_up_rate * pods).ceil().max(1.0);
        let max_down = (pods / p.max_scale_down_rate).floor();
        let stable_pods = (stable / target).ceil().max(max_down).min(max_up) as u32;
        let panic_pods = (panic / target).ceil().max(max_down).min(max_up) as u32;
        // In panic the larger count; the high-water mark is inert upstream (`GetMaxPanicPods`
        // is always 0), so nothing is held from one tick to the next.
        let desired = if in_panic {
            stable_pods.max(panic_pods)
        } else {
            stable_pods
        };
        // `applyConstraints`.
        let desired = desired.clamp(self.min, self.max);
        // `applyPendingReplicaGuard`.
        let value = if in_panic { panic } else { stable };
        let mut desired = pending_guard(desired, current, ready, value, target);
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

/// AIBrix's `applyPendingReplicaGuard` with `computePendingAdjustedReplicas` for the KPA: while
/// replicas are pending, a scale-up counts them as missing from the per-pod value and a
/// scale-down counts them at target.
fn pending_guard(desired: u32, current: u32, ready: u32, value: f64, target: f64) -> u32 {
    let ready = ready.min(current);
    let pending = current - ready;
    if pending == 0 || desired == current || current == 0 || target <= 0.0 {
        return desired;
    }
    let (current_f, ready_f, pending_f) =
        (f64::from(current), f64::from(ready), f64::from(pending));
    if desired > current {
        let adjusted = value * ready_f / current_f;
        // Upstream converts with `int32(math.Ceil(...))`; values here are finite and small.
        let d = (adjusted / target).ceil().max(0.0) as u32;
        d.clamp(current, desired)
    } else {
        let d = ((value * ready_f + target * pending_f) / target)
            .ceil()
            .max(0.0) as u32;
        d.clamp(desired, current)
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
            // `newAutoscaler`: over more than one ready pod, start in panic at that scale
            // (Knative only: AIBrix keeps no panic state across ticks).
            self.started = true;
            if obs.ready > 1 && !self.aibrix {
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
            KpaMetric::KvCacheUsage { .. } => obs.fleet.kv_cache_usage.mean.value(),
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
        if self.aibrix {
            let desired = self.aibrix_scale(now, stable, panic, current, obs.ready);
            return Decision::serving(desired);
        }
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

    /// AIBrix with its 300 s scale-down cooldown off, so one tick's count is visible.
    fn aibrix_without_cooldown(target: f64, min: u32) -> Kpa {
        let mut a = Kpa::aibrix(target, min, 100).unwrap();
        a.params.scale_down_delay = 0.0;
        a
    }

    #[test]
    fn aibrix_allows_one_pod_from_zero() {
        // `computeTargetReplicas` with currentPodCount 0: maxScaleUp = max(1, ceil(2 × 0)) = 1,
        // maxScaleDown = floor(0 / 2) = 0; dspc = ceil(0.875 / 0.125) = 7 → clamped to 1.
        // (Knative's clamp over max(1, ready) allowed ceil(2 × 1) = 2.)
        let mut a = Kpa::aibrix(0.125, 0, 100).unwrap();
        assert_eq!(a.aibrix_scale(0.0, 0.875, 0.875, 0, 0), 1);
    }

    #[test]
    fn aibrix_panic_follows_the_window_ratio_and_holds_nothing() {
        let mut a = aibrix_without_cooldown(0.125, 1);
        // panic / stable = 0.625 / 0.25 = 2.5 > 2 → panic. 4 current: clamp [2, 8];
        // dspc = ceil(2) = 2, dppc = ceil(5) = 5 → the larger, 5.
        assert_eq!(a.aibrix_scale(0.0, 0.25, 0.625, 4, 4), 5);
        // Next tick 0.375 / 0.25 = 1.5 ≤ 2 → stable: dspc 2 within [floor(5/2), 10] = [2, 10] → 2.
        // GetMaxPanicPods is always 0 upstream, so the 5 is not held (Knative would hold it).
        assert_eq!(a.aibrix_scale(2.0, 0.25, 0.375, 5, 5), 2);
        // Stable value 0 → panic (`shouldEnterPanicMode`): dspc 0 → 1 (clamp [1, 4]),
        // dppc = ceil(0.25 / 0.125) = 2 → 2; in stable mode it would be 1.
        assert_eq!(a.aibrix_scale(4.0, 0.0, 0.25, 2, 2), 2);
    }

    #[test]
    fn aibrix_pending_replica_guard() {
        let mut a = aibrix_without_cooldown(0.125, 1);
        // The upstream cases of `TestComputeDesiredReplicasAdjustsKPAAPAConservativelyWhen
        // ReplicasPending`, with target 0.125 for 50: 4 current replicas.
        // Scale-up, 2 ready 2 pending, value 0.625: desired ceil(0.625 / 0.125) = 5 > 4;
        // adjusted 0.625 × 2 / 4 = 0.3125 → ceil(2.5) = 3 → clamped to [4, 5] → 4.
        assert_eq!(a.aibrix_scale(0.0, 0.625, 0.625, 4, 2), 4);
        // Scale-up dampened, 3 ready 1 pending, value 0.875: desired 7; adjusted
        // 0.875 × 3 / 4 = 0.65625 → ceil(5.25) = 6 within [4, 7] → 6.
        assert_eq!(a.aibrix_scale(2.0, 0.875, 0.875, 4, 3), 6);
        // Scale-down, 2 ready 2 pending, value 0.0625: desired ceil(0.5) = 1 → 2 (clamp
        // [2, 8]); guard ceil((0.0625 × 2 + 0.125 × 2) / 0.125) = 3 within [2, 4] → 3.
        assert_eq!(a.aibrix_scale(4.0, 0.0625, 0.0625, 4, 2), 3);
        // Nothing pending: no guard, 5.
        assert_eq!(a.aibrix_scale(6.0, 0.625, 0.625, 4, 4), 5);
    }

    #[test]
    fn aibrix_rates_and_cooldown() {
        let mut a = Kpa::aibrix(0.125, 1, 100).unwrap();
        // Mean KV 0.875 / 0.125 → 7 pods, but at most ceil(2 × 2 current) = 4.
        assert_eq!(a.aibrix_scale(0.0, 0.875, 0.875, 2, 2), 4);
        // Later the load is gone: stable 0 → panic, both counts 0 → floor(4 / 2) = 2, but the
        // 300 s cooldown holds the 4 of t = 0.
        assert_eq!(a.aibrix_scale(200.0, 0.0, 0.0, 4, 4), 4);
        // Past 300 s the 4 has aged out of the cooldown window: 2.
        assert_eq!(a.aibrix_scale(301.0, 0.0, 0.0, 4, 4), 2);
    }

    #[test]
    fn aibrix_reads_the_mean_kv_usage_per_pod() {
        use crate::policy::warm_pool::tests::observation;
        use inferscale_metrics::fleet::FleetSignals;
        use inferscale_metrics::signals::{Latency, Missing, ModelSignals, Reading};
        let none = Latency::missing(Missing::NotExposed);
        let pod = |kv: f64| ModelSignals {
            queue_depth: Reading::Value(0.0),
            running: Reading::Value(1.0),
            kv_cache_usage: Reading::Value(kv),
            kv_cache_usage_max: Reading::Value(kv),
            preemption_rate: Reading::Value(0.0),
            prompt_token_rate: Reading::Value(0.0),
            generation_token_rate: Reading::Value(0.0),
            request_rate: Reading::Value(0.0),
            request_rate_by_reason: Default::default(),
            time_to_first_token: none.clone(),
            inter_token_latency: none.clone(),
            end_to_end_latency: none.clone(),
            queue_time: none.clone(),
        };
        let pods = [pod(0.25), pod(0.5), pod(0.5), pod(0.75)];
        let mut obs = observation(0.0, 0.0, 0, 4);
        obs.fleet = FleetSignals::of(&pods.iter().collect::<Vec<_>>());
        let mut a = Kpa::aibrix(0.125, 1, 100).unwrap();
        // `UpdateMetrics` records the mean, (0.25 + 0.5 + 0.5 + 0.75) / 4 = 0.5; one sample, so
        // stable = panic = 0.5, not in panic; ceil(0.5 / 0.125) = 4 within [2, 8] → 4.
        // The fleet sum 2.0 would give ceil(16) → 8.
        assert_eq!(a.decide(&obs).serving, 4);
    }
}
