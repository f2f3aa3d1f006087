//! The Kubernetes HorizontalPodAutoscaler (autoscaling/v2), reimplemented as a pure state
//! machine, on a queue-depth Pods metric or on a CPU-like utilisation.
//!
//! Owns: the replica calculation with the 0.1 tolerance and the missing/unready pod rules
//! (`pkg/controller/podautoscaler/replica_calculator.go`, `calcPlainMetricReplicas` and
//! `GetExternalPerPodMetricReplicas`), recommendation stabilisation windows and the behaviour
//! rate limits (`horizontal.go`, `stabilizeRecommendationWithBehaviors`,
//! `calculateScaleUpLimitWithScalingRules`, `calculateScaleDownLimitWithBehaviors`), with the
//! upstream defaults (scale up: 100 % or 4 pods per 15 s, no stabilisation; scale down: 100 %
//! per 15 s after a 300 s stabilisation window).
//! Does not own: where the metric comes from (prometheus-adapter delays are the signal path,
//! see [`crate::observe`]).

use super::{Decision, Policy, PolicyError};
use crate::observe::{Observation, PodPhase, SignalPath};
use inferscale_metrics::signals::Reading;
use std::collections::VecDeque;

/// HPA controller sync period (`--horizontal-pod-autoscaler-sync-period` default 15 s).
pub const HPA_SYNC_PERIOD_SECS: f64 = 15.0;
/// Ratio band within which the HPA does nothing (`--horizontal-pod-autoscaler-tolerance`).
pub const HPA_TOLERANCE: f64 = 0.1;
/// Default scale-down stabilisation window, seconds.
pub const DEFAULT_SCALE_DOWN_STABILIZATION_SECS: f64 = 300.0;

/// A rate limit of one scaling direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScalingPolicy {
    /// At most `value` pods per `period_secs`.
    Pods { value: u32, period_secs: f64 },
    /// At most `value` % of the pods at the start of the period per `period_secs`.
    Percent { value: u32, period_secs: f64 },
}

impl ScalingPolicy {
    fn period(&self) -> f64 {
        match *self {
            ScalingPolicy::Pods { period_secs, .. }
            | ScalingPolicy::Percent { period_secs, .. } => period_secs,
        }
    }
}

/// How several policies of one direction combine (`selectPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectPolicy {
    /// The policy allowing the largest change (default).
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// Scaling in this direction is off.
    Disabled,
}

/// `behavior.scaleUp` or `behavior.scaleDown`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRules {
    pub stabilization_secs: f64,
    pub policies: Vec<ScalingPolicy>,
    pub select: SelectPolicy,
}

/// `spec.behavior`.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    pub scale_up: ScalingRules,
    pub scale_down: ScalingRules,
}

impl Default for Behavior {
    /// The defaults of `k8s.io/kubernetes/pkg/apis/autoscaling/v2/defaults.go`.
    fn default() -> Behavior {
        Behavior {
            scale_up: ScalingRules {
                stabilization_secs: 0.0,
                policies: vec![
                    ScalingPolicy::Percent {
                        value: 100,
                        period_secs: 15.0,
                    },
                    ScalingPolicy::Pods {
                        value: 4,
                        period_secs: 15.0,
                    },
                ],
                select: SelectPolicy::Max,
            },
            scale_down: ScalingRules {
                stabilization_secs: DEFAULT_SCALE_DOWN_STABILIZATION_SECS,
                policies: vec![ScalingPolicy::Percent {
                    value: 100,
                    period_secs: 15.0,
                }],
                select: SelectPolicy::Max,
            },
        }
    }
}

/// The metric the HPA scales on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HpaMetric {
    /// Pods metric `vllm:num_requests_waiting`, target average value per pod.
    QueueDepth { target_per_pod: f64 },
    /// Resource metric `cpu`, target average utilisation 0–1 of the busy loop.
    CpuLike { target_utilisation: f64 },
}

/// One pod's metric as the replica calculator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodMetric {
    /// Ready (for CPU: past initialisation and ready).
    pub ready: bool,
    /// Being deleted: ignored altogether.
    pub terminating: bool,
    pub value: Option<f64>,
}

/// `calcPlainMetricReplicas`: the proposal from per-pod values and a target per pod.
///
/// `unready_rule` applies the unready-pod rule, which upstream applies to the CPU resource
/// metric only; for other metrics a pod without a value is "missing" whatever its readiness.
/// Returns `None` when no pod has a value (the HPA then reports an error and keeps the scale).
pub fn plain_metric_replicas(
    pods: &[PodMetric],
    current: u32,
    target: f64,
    tolerance: f64,
    unready_rule: bool,
) -> Option<u32> {
    let mut values: Vec<f64> = Vec::new();
    let mut missing = 0usize;
    let mut unready = 0usize;
    for pod in pods.iter().filter(|p| !p.terminating) {
        match (pod.value, unready_rule && !pod.ready) {
            (_, true) => unready += 1,
            (Some(v), false) => values.push(v),
            (None, false) => missing += 1,
        }
    }
    if values.is_empty() || target <= 0.0 {
        return None;
    }
    let ready_count = values.len();
    let ratio = |sum: f64, n: usize| sum / n as f64 / target;
    let sum: f64 = values.iter().sum();
    let usage_ratio = ratio(sum, ready_count);
    let scale_up_with_unready = unready > 0 && usage_ratio > 1.0;
    if !scale_up_with_unready && missing == 0 {
        if (1.0 - usage_ratio).abs() <= tolerance {
            return Some(current);
        }
        return Some((usage_ratio * ready_count as f64).ceil() as u32);
    }
    let mut sum_all = sum;
    let mut n_all = ready_count;
    if missing > 0 {
        // Scale-down: missing pods are assumed at the target; scale-up: at zero.
        if usage_ratio < 1.0 {
            sum_all += target * missing as f64;
        }
        n_all += missing;
    }
    if scale_up_with_unready {
        n_all += unready;
    }
    let new_ratio = ratio(sum_all, n_all);
    let flipped = (usage_ratio < 1.0 && new_ratio > 1.0) || (usage_ratio > 1.0 && new_ratio < 1.0);
    if (1.0 - new_ratio).abs() <= tolerance || flipped {
        return Some(current);
    }
    let proposal = (new_ratio * n_all as f64).ceil() as u32;
    if (new_ratio < 1.0 && proposal > current) || (new_ratio > 1.0 && proposal < current) {
        return Some(current);
    }
    Some(proposal)
}

/// `GetExternalPerPodMetricReplicas`: an External metric with an `AverageValue` target (what
/// KEDA generates). `status_replicas` are all the deployment's pods.
pub fn external_per_pod_replicas(
    total: f64,
    status_replicas: u32,
    target_per_pod: f64,
    tolerance: f64,
) -> u32 {
    if target_per_pod <= 0.0 {
        return status_replicas;
    }
    let ratio = total / (target_per_pod * status_replicas.max(1) as f64);
    if (1.0 - ratio).abs() > tolerance {
        (total / target_per_pod).ceil() as u32
    } else {
        status_replicas
    }
}

/// The HPA's memory between syncs: recommendations and recent scale events.
#[derive(Debug, Clone)]
pub struct Normalizer {
    pub behavior: Behavior,
    pub min_replicas: u32,
    pub max_replicas: u32,
    recommendations: VecDeque<(f64, u32)>,
    scale_up_events: VecDeque<(f64, u32)>,
    scale_down_events: VecDeque<(f64, u32)>,
}

impl Normalizer {
    pub fn new(behavior: Behavior, min_replicas: u32, max_replicas: u32) -> Normalizer {
        Normalizer {
            behavior,
            min_replicas,
            max_replicas,
            recommendations: VecDeque::new(),
            scale_up_events: VecDeque::new(),
            scale_down_events: VecDeque::new(),
        }
    }

    fn changes_in(events: &VecDeque<(f64, u32)>, now: f64, period: f64) -> i64 {
        events
            .iter()
            .filter(|(t, _)| *t > now - period)
            .map(|(_, n)| *n as i64)
            .sum()
    }

    fn scale_up_limit(&self, current: u32, now: f64) -> u32 {
        let rules = &self.behavior.scale_up;
        let mut result: Option<i64> = None;
        for policy in &rules.policies {
            let added = Self::changes_in(&self.scale_up_events, now, policy.period());
            let deleted = Self::changes_in(&self.scale_down_events, now, policy.period());
            let start = current as i64 - added + deleted;
            let proposed = match *policy {
                ScalingPolicy::Pods { value, .. } => start + value as i64,
                ScalingPolicy::Percent { value, .. } => {
                    (start as f64 * (1.0 + value as f64 / 100.0)).ceil() as i64
                }
            };
            result = Some(match (rules.select, result) {
                (_, None) => proposed,
                (SelectPolicy::Min, Some(r)) => r.min(proposed),
                (_, Some(r)) => r.max(proposed),
            });
        }
        match (rules.select, result) {
            (SelectPolicy::Disabled, _) => current,
            (_, Some(r)) => r.max(0) as u32,
            (_, None) => current,
        }
    }

    fn scale_down_limit(&self, current: u32, now: f64) -> u32 {
        let rules = &self.behavior.scale_down;
        let mut result: Option<i64> = None;
        for policy in &rules.policies {
            let added = Self::changes_in(&self.scale_up_events, now, policy.period());
            let deleted = Self::changes_in(&self.scale_down_events, now, policy.period());
            let start = current as i64 - added + deleted;
            let proposed = match *policy {
                ScalingPolicy::Pods { value, .. } => start - value as i64,
                ScalingPolicy::Percent { value, .. } => {
                    (start as f64 * (1.0 - value as f64 / 100.0)).floor() as i64
                }
            };
            result = Some(match (rules.select, result) {
                (_, None) => proposed,
                // For scale-down the largest change is the lowest count.
                (SelectPolicy::Min, Some(r)) => r.max(proposed),
                (_, Some(r)) => r.min(proposed),
            });
        }
        match (rules.select, result) {
            (SelectPolicy::Disabled, _) => current,
            (_, Some(r)) => r.max(0) as u32,
            (_, None) => current,
        }
    }

    /// Stabilises `proposal` and applies the rate limits; returns the new desired replicas
    /// and records the change.
    pub fn normalize(&mut self, proposal: u32, current: u32, now: f64) -> u32 {
        let proposal = proposal.clamp(self.min_replicas, self.max_replicas);
        let up_cutoff = now - self.behavior.scale_up.stabilization_secs;
        let down_cutoff = now - self.behavior.scale_down.stabilization_secs;
        let (mut up, mut down) = (proposal, proposal);
        for &(t, rec) in &self.recommendations {
            if t > up_cutoff {
                up = up.min(rec);
            }
            if t > down_cutoff {
                down = down.max(rec);
            }
        }
        let mut stabilized = current;
        if stabilized < up {
            stabilized = up;
        }
        if stabilized > down {
            stabilized = down;
        }
        self.recommendations.push_back((now, proposal));
        let keep = self
            .behavior
            .scale_up
            .stabilization_secs
            .max(self.behavior.scale_down.stabilization_secs);
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| *t <= now - keep)
        {
            self.recommendations.pop_front();
        }
        let desired = if stabilized > current {
            stabilized.min(self.scale_up_limit(current, now).min(self.max_replicas))
        } else if stabilized < current {
            stabilized.max(self.scale_down_limit(current, now).max(self.min_replicas))
        } else {
            stabilized
        }
        .clamp(self.min_replicas, self.max_replicas);
        if desired > current {
            self.scale_up_events.push_back((now, desired - current));
        } else if desired < current {
            self.scale_down_events.push_back((now, current - desired));
        }
        let longest = |r: &ScalingRules| r.policies.iter().map(|p| p.period()).fold(0.0, f64::max);
        let horizon = longest(&self.behavior.scale_up).max(longest(&self.behavior.scale_down));
        for events in [&mut self.scale_up_events, &mut self.scale_down_events] {
            while events.front().is_some_and(|(t, _)| *t <= now - horizon) {
                events.pop_front();
            }
        }
        desired
    }
}

/// An HPA on one metric.
#[derive(Debug, Clone)]
pub struct Hpa {
    name: &'static str,
    metric: HpaMetric,
    path: SignalPath,
    normalizer: Normalizer,
}

/// Default queue-depth target: 4 waiting requests per pod. With continuous batching a queue
/// forms only once the batch or the KV cache is full, so a small target reacts at the onset
/// of saturation; larger ones wait until TTFT has already grown.
pub const DEFAULT_QUEUE_TARGET_PER_POD: f64 = 4.0;
/// Default CPU-like target: 80 % busy, a common CPU target for latency-sensitive services.
pub const DEFAULT_CPU_TARGET: f64 = 0.8;

impl Hpa {
    /// HPA on queue depth through Prometheus and prometheus-adapter.
    pub fn queue_depth(
        target_per_pod: f64,
        min: u32,
        max: u32,
        behavior: Behavior,
    ) -> Result<Hpa, PolicyError> {
        if !(target_per_pod.is_finite() && target_per_pod > 0.0) {
            return Err(PolicyError::InvalidParameter {
                policy: "hpa-queue",
                reason: "queue target must be positive",
            });
        }
        Ok(Hpa {
            name: "hpa-queue",
            metric: HpaMetric::QueueDepth { target_per_pod },
            path: SignalPath::Prometheus,
            normalizer: Normalizer::new(behavior, min, max),
        })
    }

    /// HPA on CPU-like utilisation through metrics-server (the naive baseline).
    pub fn cpu_like(target_utilisation: f64, min: u32, max: u32) -> Result<Hpa, PolicyError> {
        if !(target_utilisation > 0.0 && target_utilisation <= 1.0) {
            return Err(PolicyError::InvalidParameter {
                policy: "hpa-cpu",
                reason: "utilisation target must be in (0, 1]",
            });
        }
        Ok(Hpa {
            name: "hpa-cpu",
            metric: HpaMetric::CpuLike { target_utilisation },
            // metrics-server scrapes kubelets every 15 s: the same delay as Prometheus.
            path: SignalPath::Prometheus,
            normalizer: Normalizer::new(Behavior::default(), min, max),
        })
    }
}

impl Policy for Hpa {
    fn name(&self) -> &str {
        self.name
    }

    fn signal_path(&self) -> SignalPath {
        self.path
    }

    fn decision_period(&self) -> f64 {
        HPA_SYNC_PERIOD_SECS
    }

    fn decide(&mut self, obs: &Observation) -> Decision {
        let current = obs.desired_serving;
        let (pods, target, unready_rule): (Vec<PodMetric>, f64, bool) = match self.metric {
            HpaMetric::QueueDepth { target_per_pod } => (
                obs.pods
                    .iter()
                    .map(|p| PodMetric {
                        ready: p.phase == PodPhase::Ready,
                        terminating: p.phase == PodPhase::Draining,
                        value: match p.queue_depth() {
                            Reading::Value(v) => Some(v),
                            Reading::Missing(_) => None,
                        },
                    })
                    .collect(),
                target_per_pod,
                false,
            ),
            HpaMetric::CpuLike { target_utilisation } => (
                obs.pods
                    .iter()
                    .map(|p| PodMetric {
                        ready: p.phase == PodPhase::Ready,
                        terminating: p.phase == PodPhase::Draining,
                        value: p.busy_fraction,
                    })
                    .collect(),
                target_utilisation,
                true,
            ),
        };
        let proposal = plain_metric_replicas(&pods, current, target, HPA_TOLERANCE, unready_rule)
            .unwrap_or(current);
        Decision::serving(self.normalizer.normalize(proposal, current, obs.now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(v: f64) -> PodMetric {
        PodMetric {
            ready: true,
            terminating: false,
            value: Some(v),
        }
    }

    fn missing(ready: bool) -> PodMetric {
        PodMetric {
            ready,
            terminating: false,
            value: None,
        }
    }

    #[test]
    fn within_tolerance_keeps_scale() {
        // Mean 4.3 vs target 4: ratio 1.075 ≤ 1.1.
        let pods = [ready(4.0), ready(4.6)];
        assert_eq!(plain_metric_replicas(&pods, 2, 4.0, 0.1, false), Some(2));
    }

    #[test]
    fn plain_scale_up() {
        // Mean 10 vs target 4 → ratio 2.5 × 2 pods = 5.
        let pods = [ready(8.0), ready(12.0)];
        assert_eq!(plain_metric_replicas(&pods, 2, 4.0, 0.1, false), Some(5));
    }

    #[test]
    fn missing_pods_count_as_zero_on_scale_up() {
        // Ratio 2.5 on 2 pods; 2 missing at 0 → mean 5 → ratio 1.25 × 4 = 5.
        let pods = [ready(8.0), ready(12.0), missing(false), missing(false)];
        assert_eq!(plain_metric_replicas(&pods, 4, 4.0, 0.1, false), Some(5));
    }

    #[test]
    fn missing_pods_count_as_target_on_scale_down() {
        // Ratio 0 on 1 pod; 3 missing at the target → mean 3 → ratio 0.75 × 4 = 3.
        let pods = [ready(0.0), missing(true), missing(true), missing(true)];
        assert_eq!(plain_metric_replicas(&pods, 4, 4.0, 0.1, false), Some(3));
    }

    #[test]
    fn missing_pods_that_flip_direction_block_scaling() {
        // Ratio 1.5 on 1 pod; 2 missing at 0 → ratio 0.5: direction flips → keep 3.
        let pods = [ready(6.0), missing(false), missing(false)];
        assert_eq!(plain_metric_replicas(&pods, 3, 4.0, 0.1, false), Some(3));
    }

    #[test]
    fn cpu_unready_pods_are_zero_on_scale_up() {
        // One ready pod at 100 % vs 50 %: ratio 2; one unready → (1 + 0) / 2 / 0.5 = 1 → within
        // tolerance → keep 2.
        let pods = [ready(1.0), missing(false)];
        assert_eq!(plain_metric_replicas(&pods, 2, 0.5, 0.1, true), Some(2));
    }

    #[test]
    fn no_metrics_means_no_proposal() {
        assert_eq!(
            plain_metric_replicas(&[missing(false)], 1, 4.0, 0.1, false),
            None
        );
    }

    #[test]
    fn external_average_value() {
        assert_eq!(external_per_pod_replicas(40.0, 2, 4.0, 0.1), 10);
        assert_eq!(external_per_pod_replicas(8.5, 2, 4.0, 0.1), 2);
    }

    #[test]
    fn scale_down_waits_for_stabilisation_window() {
        let mut n = Normalizer::new(Behavior::default(), 1, 100);
        assert_eq!(n.normalize(10, 10, 0.0), 10);
        // Proposals drop to 2, but the 300 s window still holds the 10.
        assert_eq!(n.normalize(2, 10, 15.0), 10);
        assert_eq!(n.normalize(2, 10, 299.0), 10);
        assert_eq!(n.normalize(2, 10, 301.0), 2);
    }

    #[test]
    fn scale_up_rate_is_max_of_doubling_and_four_pods() {
        let mut n = Normalizer::new(Behavior::default(), 1, 100);
        // From 1: max(1 × 2, 1 + 4) = 5.
        assert_eq!(n.normalize(50, 1, 0.0), 5);
        // Same period: start was 1, limits unchanged → 5.
        assert_eq!(n.normalize(50, 5, 10.0), 5);
        // Next period: from 5 → max(10, 9) = 10.
        assert_eq!(n.normalize(50, 5, 16.0), 10);
    }
}
