//! The Kubernetes HorizontalPodAutoscaler (autoscaling/v2), reimplemented as a pure state
//! machine, on a queue-depth Pods metric or on a CPU-like utilisation.
//!
//! Owns: the replica calculation with the 0.1 tolerance and the missing/unready pod rules
//! (`pkg/controller/podautoscaler/replica_calculator.go`: `groupPods`, `calcPlainMetricReplicas`
//! for Pods metrics, `GetResourceReplicas` for CPU, `GetExternalPerPodMetricReplicas`,
//! `GetObjectMetricReplicas` / `getUsageRatioReplicaCount` for an Object metric), the
//! recommendation history seeded with the current scale at the first sync
//! (`recordInitialRecommendation`), stabilisation windows and the behaviour
//! rate limits (`horizontal.go`, `stabilizeRecommendationWithBehaviors`,
//! `calculateScaleUpLimitWithScalingRules`, `calculateScaleDownLimitWithBehaviors`), with the
//! upstream defaults (scale up: 100 % or 4 pods per 15 s, no stabilisation; scale down: 100 %
//! per 15 s after a 300 s stabilisation window).
//! Does not own: where the metric comes from (prometheus-adapter delays are the signal path,
//! see [`crate::observe`]).

use super::{Decision, Policy, PolicyError};
use crate::observe::{Observation, PodPhase, PodView, SignalPath};
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
    /// Object metric on the Deployment: the fleet's TTFT p90 in seconds
    /// (`histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[1m])))`
    /// through prometheus-adapter), `Value` target. An idle fleet has no observations in the
    /// window; the rule is written with `or vector(0)`, as practitioners do, so idle reads 0
    /// (without it the HPA errors and never scales down).
    TtftP90 { target_secs: f64 },
    /// Pods metric `rate(vllm:prompt_tokens_total[1m])`, target average prompt tokens per
    /// second per pod.
    PromptTokenRate { target_per_pod: f64 },
}

/// One pod's metric as the replica calculator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodMetric {
    /// Ready (for CPU: past initialisation and ready).
    pub ready: bool,
    /// Being deleted (or failed): ignored altogether.
    pub terminating: bool,
    pub value: Option<f64>,
}

/// How `groupPods` (`replica_calculator.go`) sorts the pods a sync sees. Upstream checks in
/// this order: deleted or failed → ignored; `Pending` → unready; no metric → missing; and only
/// for the CPU resource metric, a pod with a metric that is unready (or still inside its
/// initialisation period) → unready. Every other pod counts as ready, so for Pods and
/// External metrics an unready `Running` pod that reports a value is averaged in.
#[derive(Debug, Clone, Default, PartialEq)]
struct PodGroups {
    values: Vec<f64>,
    unready: usize,
    missing: usize,
}

fn group_pods(pods: &[PodMetric], cpu_readiness_rule: bool) -> PodGroups {
    let mut groups = PodGroups::default();
    for pod in pods.iter().filter(|p| !p.terminating) {
        match pod.value {
            None => groups.missing += 1,
            Some(_) if cpu_readiness_rule && !pod.ready => groups.unready += 1,
            Some(v) => groups.values.push(v),
        }
    }
    groups
}

/// How a replica calculator turns the pods' values into a usage ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
enum UsageRatio {
    /// `GetMetricUsageRatio`: mean value over the target.
    Plain { target: f64 },
    /// `GetResourceUtilizationRatio` with equal requests: the mean utilisation truncated to
    /// a whole percent, over the target percent.
    Resource { target_percent: u32 },
}

impl UsageRatio {
    fn of(self, values: &[f64]) -> f64 {
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        match self {
            UsageRatio::Plain { target } => mean / target,
            UsageRatio::Resource { target_percent } => {
                (mean * 100.0).floor() / target_percent as f64
            }
        }
    }

    /// What a missing pod is assumed to use on a scale-down: the target for plain metrics
    /// (`calcPlainMetricReplicas`), `max(100 %, target)` of its request for resources
    /// (`GetResourceReplicas`).
    fn missing_on_scale_down(self) -> f64 {
        match self {
            UsageRatio::Plain { target } => target,
            UsageRatio::Resource { target_percent } => target_percent.max(100) as f64 / 100.0,
        }
    }
}

/// The shared body of `calcPlainMetricReplicas` and `GetResourceReplicas`
/// (`replica_calculator.go`): tolerance band, `ceil(ratio × ready)` when every pod reported,
/// otherwise missing pods at 0 (scale-up) or at the scale-down fallback, unready pods at 0
/// only on a scale-up, and no change when that rebalancing flips the direction.
fn replicas_from_groups(
    groups: &PodGroups,
    current: u32,
    ratio_of: UsageRatio,
    tolerance: f64,
) -> Option<u32> {
    if groups.values.is_empty() {
        // "did not receive metrics for targeted pods": the HPA keeps the scale.
        return None;
    }
    let within = |r: f64| (1.0 - tolerance) <= r && r <= (1.0 + tolerance);
    let usage_ratio = ratio_of.of(&groups.values);
    let scale_up_with_unready = groups.unready > 0 && usage_ratio > 1.0;
    if !scale_up_with_unready && groups.missing == 0 {
        if within(usage_ratio) {
            return Some(current);
        }
        return Some((usage_ratio * groups.values.len() as f64).ceil() as u32);
    }
    let mut values = groups.values.clone();
    // A ratio of exactly 1 adds the missing pods nowhere: upstream fills them in only for a
    // strict scale-down or scale-up.
    if usage_ratio < 1.0 {
        let fill = ratio_of.missing_on_scale_down();
        values.extend(std::iter::repeat_n(fill, groups.missing));
    } else if usage_ratio > 1.0 {
        values.extend(std::iter::repeat_n(0.0, groups.missing));
    }
    if scale_up_with_unready {
        values.extend(std::iter::repeat_n(0.0, groups.unready));
    }
    let new_ratio = ratio_of.of(&values);
    let flipped = (usage_ratio < 1.0 && new_ratio > 1.0) || (usage_ratio > 1.0 && new_ratio < 1.0);
    if within(new_ratio) || flipped {
        return Some(current);
    }
    let proposal = (new_ratio * values.len() as f64).ceil() as u32;
    if (new_ratio < 1.0 && proposal > current) || (new_ratio > 1.0 && proposal < current) {
        return Some(current);
    }
    Some(proposal)
}

/// `calcPlainMetricReplicas` (reached from `GetMetricReplicas` for a Pods metric): the
/// proposal from per-pod values and a target per pod. Readiness plays no part: a pod without
/// a value is missing, one with a value counts.
///
/// Returns `None` when no pod has a value (the HPA then reports an error and keeps the scale).
pub fn plain_metric_replicas(
    pods: &[PodMetric],
    current: u32,
    target: f64,
    tolerance: f64,
) -> Option<u32> {
    if !(target.is_finite() && target > 0.0) {
        return None;
    }
    let groups = group_pods(pods, false);
    replicas_from_groups(&groups, current, UsageRatio::Plain { target }, tolerance)
}

/// `GetResourceReplicas` for `cpu` with an `averageUtilization` target (whole percent) and
/// equal requests per pod: utilisation is truncated to a whole percent, unready pods are set
/// aside (counted at 0 on a scale-up), missing pods count as 100 % on a scale-down.
pub fn resource_replicas(
    pods: &[PodMetric],
    current: u32,
    target_percent: u32,
    tolerance: f64,
) -> Option<u32> {
    if target_percent == 0 {
        return None;
    }
    let groups = group_pods(pods, true);
    replicas_from_groups(
        &groups,
        current,
        UsageRatio::Resource { target_percent },
        tolerance,
    )
}

/// `GetExternalPerPodMetricReplicas`: an External metric with an `AverageValue` target (what
/// KEDA generates). `status_replicas` is the HPA's `status.currentReplicas`: every pod the
/// deployment has (starting ones included), not its `spec.replicas`.
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
    let within = (1.0 - tolerance) <= ratio && ratio <= (1.0 + tolerance);
    if !within {
        (total / target_per_pod).ceil() as u32
    } else {
        status_replicas
    }
}

/// `getUsageRatioReplicaCount` (reached from `GetObjectMetricReplicas` for a `Value` target):
/// inside the tolerance the scale is kept; otherwise `ceil(ratio × ready pods)`, where ready
/// pods are the Running pods with the Ready condition (`getReadyPodsCount`); with no current
/// replicas, `ceil(ratio)`.
pub fn object_value_replicas(
    usage: f64,
    target: f64,
    current: u32,
    ready_pods: u32,
    tolerance: f64,
) -> Option<u32> {
    if !(target.is_finite() && target > 0.0 && usage.is_finite()) {
        return None;
    }
    let ratio = usage / target;
    if current == 0 {
        return Some(ratio.ceil() as u32);
    }
    if (1.0 - tolerance) <= ratio && ratio <= (1.0 + tolerance) {
        return Some(current);
    }
    Some((ratio * ready_pods as f64).ceil() as u32)
}

/// `GetObjectPerPodMetricReplicas` (an Object metric with an `AverageValue` target, e.g. the
/// warm pool's `inferscale_recommended_replicas` with `averageValue: 1`): inside the tolerance
/// of `status.replicas` (every pod the workload has, starting ones included) the scale is
/// kept, otherwise `ceil(usage / target)`.
pub fn object_per_pod_replicas(
    usage: f64,
    status_replicas: u32,
    target_per_pod: f64,
    tolerance: f64,
) -> Option<u32> {
    if !(target_per_pod.is_finite() && target_per_pod > 0.0 && usage.is_finite()) {
        return None;
    }
    // As the other calculations here, the band of `tolerances.isWithin` (Kubernetes ≥ 1.33;
    // older releases test `|1 − ratio| > tolerance`, which differs only on the band's edge in
    // floating point).
    let ratio = usage / (target_per_pod * status_replicas as f64);
    if (1.0 - tolerance) <= ratio && ratio <= (1.0 + tolerance) {
        Some(status_replicas)
    } else {
        Some((usage / target_per_pod).ceil() as u32)
    }
}

/// `computeReplicasForMetrics` (`horizontal.go`) for an HPA with several metrics: the largest
/// proposal of the valid metrics. With every metric invalid, or some invalid while the valid
/// ones would scale below `spec.replicas`, the sync fails (`None`: no recommendation is
/// recorded and the scale is left alone) — a metric that cannot be read never lets the others
/// scale down.
pub fn replicas_for_metrics(proposals: &[Option<u32>], spec_replicas: u32) -> Option<u32> {
    let invalid = proposals.iter().filter(|p| p.is_none()).count();
    let replicas = proposals.iter().flatten().copied().max()?;
    if invalid > 0 && replicas < spec_replicas {
        return None;
    }
    Some(replicas)
}

/// The HPA's memory between syncs: recommendations and recent scale events.
#[derive(Debug, Clone)]
pub struct Normalizer {
    pub behavior: Behavior,
    pub min_replicas: u32,
    pub max_replicas: u32,
    recommendations: VecDeque<(f64, u32)>,
    seeded: bool,
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
            seeded: false,
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

    /// `recordInitialRecommendation`: at the first sync of an HPA the recommendation history is
    /// seeded with the current scale, so a fleet sized before the HPA existed is not scaled
    /// down inside the first stabilisation window. Called at every sync; only the first counts.
    pub fn seed(&mut self, current: u32, now: f64) {
        if !self.seeded {
            self.seeded = true;
            self.recommendations.push_back((now, current));
        }
    }

    /// Stabilises `proposal` and applies the rate limits; returns the new desired replicas
    /// and records the change (`normalizeDesiredReplicasWithBehaviors` in `horizontal.go`:
    /// `stabilizeRecommendationWithBehaviors` keeps the unstabilised recommendation of every
    /// sync and takes the lowest within the scale-up window and the highest within the
    /// scale-down window, then `convertDesiredReplicasWithBehaviorRate`).
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
        // `convertDesiredReplicasWithBehaviorRate`: a rate limit never points the other way
        // (a limit below the current count while scaling up holds the count until old events
        // age out), and maxReplicas / minReplicas bound only the direction being taken.
        let desired = if stabilized > current {
            let limit = self.scale_up_limit(current, now).max(current);
            stabilized.min(limit.min(self.max_replicas))
        } else if stabilized < current {
            let limit = self.scale_down_limit(current, now).min(current);
            stabilized.max(limit.max(self.min_replicas))
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

    /// HPA on the fleet's TTFT p90 (an Object metric on the Deployment, seconds) through
    /// Prometheus and prometheus-adapter.
    pub fn ttft_p90(target_secs: f64, min: u32, max: u32) -> Result<Hpa, PolicyError> {
        if !(target_secs.is_finite() && target_secs > 0.0) {
            return Err(PolicyError::InvalidParameter {
                policy: "hpa-ttft",
                reason: "TTFT target must be positive",
            });
        }
        Ok(Hpa {
            name: "hpa-ttft",
            metric: HpaMetric::TtftP90 { target_secs },
            path: SignalPath::Prometheus,
            normalizer: Normalizer::new(Behavior::default(), min, max),
        })
    }

    /// HPA on prompt tokens per second per pod (a Pods metric) through Prometheus and
    /// prometheus-adapter.
    pub fn prompt_token_rate(target_per_pod: f64, min: u32, max: u32) -> Result<Hpa, PolicyError> {
        if !(target_per_pod.is_finite() && target_per_pod > 0.0) {
            return Err(PolicyError::InvalidParameter {
                policy: "hpa-tokens",
                reason: "prompt-token target must be positive",
            });
        }
        Ok(Hpa {
            name: "hpa-tokens",
            metric: HpaMetric::PromptTokenRate { target_per_pod },
            path: SignalPath::Prometheus,
            normalizer: Normalizer::new(Behavior::default(), min, max),
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
        // `currentReplicas` is the scale subresource's `spec.replicas`.
        let current = obs.desired_serving;
        self.normalizer.seed(current, obs.now);
        // Without any metric the sync fails before normalisation: no recommendation is
        // recorded and the scale is left alone.
        match self.proposal(obs, current) {
            Some(p) => Decision::serving(self.normalizer.normalize(p, current, obs.now)),
            None => Decision::serving(current),
        }
    }
}

impl Hpa {
    /// This HPA's metric's proposal (`computeReplicasForMetric`) for `current` replicas
    /// (`spec.replicas`); `None` when the metric has no value (the metric is invalid).
    pub fn proposal(&self, obs: &Observation, current: u32) -> Option<u32> {
        let pod = |p: &PodView, value: Option<f64>| PodMetric {
            ready: p.phase == PodPhase::Ready,
            terminating: p.phase == PodPhase::Draining,
            value,
        };
        match self.metric {
            HpaMetric::QueueDepth { target_per_pod } => {
                // A starting vLLM pod serves no `/metrics` until the model is loaded, so
                // Prometheus has no sample for it: a missing pod.
                let pods: Vec<PodMetric> = obs
                    .pods
                    .iter()
                    .map(|p| {
                        pod(
                            p,
                            match p.queue_depth() {
                                Reading::Value(v) => Some(v),
                                Reading::Missing(_) => None,
                            },
                        )
                    })
                    .collect();
                plain_metric_replicas(&pods, current, target_per_pod, HPA_TOLERANCE)
            }
            HpaMetric::PromptTokenRate { target_per_pod } => {
                let pods: Vec<PodMetric> = obs
                    .pods
                    .iter()
                    .map(|p| {
                        let value = p.signals.as_ref().and_then(|s| s.prompt_token_rate.value());
                        pod(p, value)
                    })
                    .collect();
                plain_metric_replicas(&pods, current, target_per_pod, HPA_TOLERANCE)
            }
            HpaMetric::TtftP90 { target_secs } => {
                let p90 = obs.fleet.time_to_first_token.p90.value().unwrap_or(0.0);
                object_value_replicas(p90, target_secs, current, obs.ready, HPA_TOLERANCE)
            }
            HpaMetric::CpuLike { target_utilisation } => {
                // metrics-server reports CPU for any running container, loading ones
                // included, so a starting pod has a sample and is set aside as unready (inside
                // the CPU initialisation period); a pod that just turned ready has no sample
                // from a full window since the transition, which upstream also treats as
                // unready. The value of an unready pod never enters the average.
                let pods: Vec<PodMetric> = obs
                    .pods
                    .iter()
                    .map(|p| PodMetric {
                        ready: p.phase == PodPhase::Ready && p.busy_fraction.is_some(),
                        ..pod(p, Some(p.busy_fraction.unwrap_or(0.0)))
                    })
                    .collect();
                let target_percent = (target_utilisation * 100.0).round() as u32;
                resource_replicas(&pods, current, target_percent, HPA_TOLERANCE)
            }
        }
    }

    /// The recommendation history and rate limits (for an HPA with several metrics).
    pub fn normalizer_mut(&mut self) -> &mut Normalizer {
        &mut self.normalizer
    }

    /// The same HPA reading its metric through `path` (inferscale's adapter scrapes each pod
    /// every 5 s: [`SignalPath::Direct`]).
    pub fn over(mut self, path: SignalPath) -> Hpa {
        self.path = path;
        self
    }

    /// The same HPA under another name (tables, timelines).
    pub fn named(mut self, name: &'static str) -> Hpa {
        self.name = name;
        self
    }
}

#[cfg(test)]
mod tests {
    //! Hand-worked cases, one per rule of `replica_calculator.go` and `horizontal.go`.
    use super::*;

    fn ready(v: f64) -> PodMetric {
        PodMetric {
            ready: true,
            terminating: false,
            value: Some(v),
        }
    }

    fn missing() -> PodMetric {
        PodMetric {
            ready: false,
            terminating: false,
            value: None,
        }
    }

    fn unready(v: f64) -> PodMetric {
        PodMetric {
            ready: false,
            terminating: false,
            value: Some(v),
        }
    }

    fn terminating(v: f64) -> PodMetric {
        PodMetric {
            terminating: true,
            ..ready(v)
        }
    }

    #[test]
    fn within_tolerance_keeps_scale() {
        // Mean 4.3 vs target 4: ratio 1.075, inside [0.9, 1.1].
        let pods = [ready(4.0), ready(4.6)];
        assert_eq!(plain_metric_replicas(&pods, 2, 4.0, 0.1), Some(2));
        // Mean 3.6: ratio 0.9 is on the edge of the band, still inside.
        let pods = [ready(3.6), ready(3.6)];
        assert_eq!(plain_metric_replicas(&pods, 2, 4.0, 0.1), Some(2));
    }

    #[test]
    fn plain_scale_up_is_ceil_of_ratio_times_ready_pods() {
        // Mean 10 vs target 4 → ratio 2.5 × 2 pods = 5.
        let pods = [ready(8.0), ready(12.0)];
        assert_eq!(plain_metric_replicas(&pods, 2, 4.0, 0.1), Some(5));
        // Mean 1 vs 4 → 0.25 × 3 = 0.75 → 1.
        let pods = [ready(1.0), ready(1.0), ready(1.0)];
        assert_eq!(plain_metric_replicas(&pods, 3, 4.0, 0.1), Some(1));
    }

    #[test]
    fn missing_pods_count_as_zero_on_scale_up() {
        // Ratio 2.5 on 2 pods; 2 missing at 0 → mean 5 → ratio 1.25 × 4 = 5.
        let pods = [ready(8.0), ready(12.0), missing(), missing()];
        assert_eq!(plain_metric_replicas(&pods, 4, 4.0, 0.1), Some(5));
    }

    #[test]
    fn missing_pods_count_as_target_on_scale_down() {
        // Ratio 0 on 1 pod; 3 missing at the target → mean 3 → ratio 0.75 × 4 = 3.
        let pods = [ready(0.0), missing(), missing(), missing()];
        assert_eq!(plain_metric_replicas(&pods, 4, 4.0, 0.1), Some(3));
    }

    #[test]
    fn missing_pods_are_left_out_at_a_ratio_of_exactly_one() {
        // Ratio exactly 1 with a missing pod: nothing is filled in, new ratio 1 → keep 7.
        let pods = [ready(4.0), ready(4.0), missing()];
        assert_eq!(plain_metric_replicas(&pods, 7, 4.0, 0.1), Some(7));
    }

    #[test]
    fn missing_pods_that_flip_direction_block_scaling() {
        // Ratio 1.5 on 1 pod; 2 missing at 0 → ratio 0.5: direction flips → keep 3.
        let pods = [ready(6.0), missing(), missing()];
        assert_eq!(plain_metric_replicas(&pods, 3, 4.0, 0.1), Some(3));
    }

    #[test]
    fn proposal_against_the_ratio_keeps_scale() {
        // Ratio 3 on 1 pod, 1 missing at 0 → ratio 1.5 × 2 pods = 3 < current 5: a scale-up
        // ratio must not shrink the deployment → keep 5.
        let pods = [ready(12.0), missing()];
        assert_eq!(plain_metric_replicas(&pods, 5, 4.0, 0.1), Some(5));
    }

    #[test]
    fn pods_metric_ignores_readiness() {
        // An unready pod that reports a value is averaged in for a Pods metric: mean
        // (8 + 0) / 2 = 4 → ratio 1 → keep 2.
        let pods = [ready(8.0), unready(0.0)];
        assert_eq!(plain_metric_replicas(&pods, 2, 4.0, 0.1), Some(2));
    }

    #[test]
    fn terminating_pods_are_ignored() {
        // Only the live pod counts: ratio 10/4 × 1 = 2.5 → 3.
        let pods = [ready(10.0), terminating(0.0), terminating(0.0)];
        assert_eq!(plain_metric_replicas(&pods, 3, 4.0, 0.1), Some(3));
    }

    #[test]
    fn cpu_unready_pods_are_zero_on_scale_up() {
        // One ready pod at 100 % vs a 50 % target: ratio 2; one unready at 0 → 50 % → 1.0,
        // inside the band → keep 2.
        let pods = [ready(1.0), unready(0.9)];
        assert_eq!(resource_replicas(&pods, 2, 50, 0.1), Some(2));
        // Two unready: (100 + 0 + 0) / 3 = 33 % of 50 → the rebalanced ratio (0.66) flips
        // the direction → keep 3.
        let pods = [ready(1.0), unready(0.9), unready(0.9)];
        assert_eq!(resource_replicas(&pods, 3, 50, 0.1), Some(3));
    }

    #[test]
    fn cpu_unready_pods_are_dropped_on_scale_down() {
        // Ready pods at 20 % and 20 % of 80 % → ratio 0.25; the unready pod is not counted
        // on a scale-down: ceil(0.25 × 2) = 1.
        let pods = [ready(0.2), ready(0.2), unready(0.9)];
        assert_eq!(resource_replicas(&pods, 3, 80, 0.1), Some(1));
    }

    #[test]
    fn cpu_utilisation_is_truncated_to_whole_percent() {
        // Mean 87.9 % → 87 % of 80 % = 1.0875, inside the band → keep 4. Without truncation
        // it would be 1.09875, still inside; at 88.9 % → 88 / 80 = 1.1 → still inside, while
        // 88.9 / 80 = 1.111 would have scaled to ceil(1.111 × 4) = 5.
        let pods = [ready(0.889); 4];
        assert_eq!(resource_replicas(&pods, 4, 80, 0.1), Some(4));
    }

    #[test]
    fn cpu_missing_pods_count_as_full_request_on_scale_down() {
        // Ready pod at 20 % of 80 % → ratio 0.25; the missing pod counts as 100 % (not the
        // 80 % target): mean 60 % → 0.75 × 2 = 1.5 → 2 = current → keep 2.
        let pods = [ready(0.2), missing()];
        assert_eq!(resource_replicas(&pods, 2, 80, 0.1), Some(2));
        // Three ready at 20 % and one missing: (20 × 3 + 100) / 4 = 40 % → 0.5 × 4 = 2.
        let pods = [ready(0.2), ready(0.2), ready(0.2), missing()];
        assert_eq!(resource_replicas(&pods, 4, 80, 0.1), Some(2));
    }

    #[test]
    fn no_metrics_means_no_proposal() {
        assert_eq!(plain_metric_replicas(&[missing()], 1, 4.0, 0.1), None);
        assert_eq!(resource_replicas(&[unready(0.5)], 1, 80, 0.1), None);
    }

    #[test]
    fn external_average_value() {
        // Total 40 over 4/pod → 10 (the current count only decides the band).
        assert_eq!(external_per_pod_replicas(40.0, 2, 4.0, 0.1), 10);
        // 8.5 / (4 × 2) = 1.0625, inside the band → status replicas.
        assert_eq!(external_per_pod_replicas(8.5, 2, 4.0, 0.1), 2);
        // 0 → ceil(0) = 0; minReplicas is the normaliser's business.
        assert_eq!(external_per_pod_replicas(0.0, 3, 4.0, 0.1), 0);
    }

    #[test]
    fn first_sync_seeds_the_history_with_the_current_scale() {
        // recordInitialRecommendation: an HPA created over 4 replicas whose first proposal is
        // 1 keeps 4 for the 300 s window, then follows the proposals.
        let mut n = Normalizer::new(Behavior::default(), 1, 100);
        n.seed(4, 0.0);
        assert_eq!(n.normalize(1, 4, 0.0), 4);
        n.seed(4, 15.0); // later syncs do not seed again
        assert_eq!(n.normalize(1, 4, 15.0), 4);
        assert_eq!(n.normalize(1, 4, 299.0), 4);
        assert_eq!(n.normalize(1, 4, 301.0), 1);
    }

    #[test]
    fn object_value_target_scales_by_ready_pods() {
        // TTFT p90 3 s vs a 2 s target: ratio 1.5 × 3 ready pods = 4.5 → 5 (spec.replicas 4,
        // one pod still starting: only ready pods count).
        assert_eq!(object_value_replicas(3.0, 2.0, 4, 3, 0.1), Some(5));
        // 2.1 s: ratio 1.05 inside the band → keep 4.
        assert_eq!(object_value_replicas(2.1, 2.0, 4, 3, 0.1), Some(4));
        // Idle (0 via `or vector(0)`): ratio 0 × 4 = 0; minReplicas is the normaliser's.
        assert_eq!(object_value_replicas(0.0, 2.0, 4, 4, 0.1), Some(0));
        // No current replicas: ceil(ratio).
        assert_eq!(object_value_replicas(3.0, 2.0, 0, 0, 0.1), Some(2));
        assert_eq!(object_value_replicas(f64::NAN, 2.0, 4, 4, 0.1), None);
    }

    #[test]
    fn object_average_value_is_the_usage_over_the_target() {
        // A recommendation of 7 with `averageValue: 1` over 4 pods: ratio 7 / 4 = 1.75,
        // outside the band → ceil(7 / 1) = 7.
        assert_eq!(object_per_pod_replicas(7.0, 4, 1.0, 0.1), Some(7));
        // 11 over 10 pods: ratio 1.1, on the band's edge (1.1 ≤ 1 + 0.1) → keep 10.
        assert_eq!(object_per_pod_replicas(11.0, 10, 1.0, 0.1), Some(10));
        // 2 over 3 pods: 0.667 → ceil(2) = 2; no pods at all: ratio ∞ → ceil(2) = 2.
        assert_eq!(object_per_pod_replicas(2.0, 3, 1.0, 0.1), Some(2));
        assert_eq!(object_per_pod_replicas(2.0, 0, 1.0, 0.1), Some(2));
        assert_eq!(object_per_pod_replicas(f64::NAN, 3, 1.0, 0.1), None);
    }

    #[test]
    fn several_metrics_take_the_largest_valid_proposal() {
        // computeReplicasForMetrics: max of the valid proposals.
        assert_eq!(replicas_for_metrics(&[Some(3), Some(5)], 4), Some(5));
        assert_eq!(replicas_for_metrics(&[Some(3), Some(2)], 4), Some(3));
        // One invalid metric: a scale-up by the valid one goes ahead (5 ≥ 4) ...
        assert_eq!(replicas_for_metrics(&[None, Some(5)], 4), Some(5));
        // ... a scale-down does not (3 < 4): the sync fails and the scale is kept.
        assert_eq!(replicas_for_metrics(&[None, Some(3)], 4), None);
        // Every metric invalid: the sync fails.
        assert_eq!(replicas_for_metrics(&[None, None], 4), None);
    }

    #[test]
    fn scale_down_waits_for_stabilisation_window() {
        let mut n = Normalizer::new(Behavior::default(), 1, 100);
        assert_eq!(n.normalize(10, 10, 0.0), 10);
        // Proposals drop to 2, but the 300 s window still holds the 10.
        assert_eq!(n.normalize(2, 10, 15.0), 10);
        assert_eq!(n.normalize(2, 10, 299.0), 10);
        // At 301 s the 10 from t = 0 is out of the window: the highest left is 2.
        assert_eq!(n.normalize(2, 10, 301.0), 2);
    }

    #[test]
    fn scale_down_takes_highest_recommendation_in_window() {
        let mut n = Normalizer::new(Behavior::default(), 1, 100);
        assert_eq!(n.normalize(6, 10, 0.0), 6);
        assert_eq!(n.normalize(8, 6, 100.0), 8);
        // 3 proposed, but 8 (t = 100) is within 300 s: stay at max(6, 8, 3) = 8.
        assert_eq!(n.normalize(3, 8, 200.0), 8);
        // At 401 s only the 3 from t = 200 remains (plus this 4): highest 4.
        assert_eq!(n.normalize(4, 8, 401.0), 4);
    }

    #[test]
    fn scale_up_window_takes_lowest_recommendation() {
        let behavior = Behavior {
            scale_up: ScalingRules {
                stabilization_secs: 60.0,
                ..Behavior::default().scale_up
            },
            ..Behavior::default()
        };
        let mut n = Normalizer::new(behavior, 1, 100);
        assert_eq!(n.normalize(4, 4, 0.0), 4);
        // 9 proposed but 4 within the last 60 s → stay at 4.
        assert_eq!(n.normalize(9, 4, 30.0), 4);
        // At 61 s the lowest within the window is 9 (t = 30) → 8 allowed by the rate: 4 × 2.
        assert_eq!(n.normalize(9, 4, 61.0), 8);
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

    #[test]
    fn scale_down_rate_is_100_percent_per_15s() {
        let behavior = Behavior {
            scale_down: ScalingRules {
                stabilization_secs: 0.0,
                policies: vec![ScalingPolicy::Percent {
                    value: 50,
                    period_secs: 15.0,
                }],
                select: SelectPolicy::Max,
            },
            ..Behavior::default()
        };
        let mut n = Normalizer::new(behavior, 1, 100);
        // 50 % of 10 → floor(5) = 5.
        assert_eq!(n.normalize(1, 10, 0.0), 5);
        // Same period: the period started at 10, 5 already removed → limit 5 → stay.
        assert_eq!(n.normalize(1, 5, 10.0), 5);
        // Next period: 50 % of 5 → floor(2.5) = 2.
        assert_eq!(n.normalize(1, 5, 16.0), 2);
        // The default (100 %) allows any scale-down once stabilised.
        let mut d = Normalizer::new(Behavior::default(), 1, 100);
        assert_eq!(d.normalize(1, 10, 0.0), 1);
    }

    #[test]
    fn rate_limit_never_reverses_direction() {
        // Scale-up policy of +1 pod per 60 s; a scale-down of 3 inside the period makes the
        // period start 10, limit 11; after scaling 10 → 11 → ... the limit cannot fall below
        // the current count.
        let behavior = Behavior {
            scale_up: ScalingRules {
                stabilization_secs: 0.0,
                policies: vec![ScalingPolicy::Pods {
                    value: 1,
                    period_secs: 60.0,
                }],
                select: SelectPolicy::Max,
            },
            scale_down: ScalingRules {
                stabilization_secs: 0.0,
                ..Behavior::default().scale_down
            },
        };
        let mut n = Normalizer::new(behavior, 1, 100);
        assert_eq!(n.normalize(6, 5, 0.0), 6);
        // Someone else set spec.replicas to 4 (current 4 < 6 − 1 added): limit = 4 − 1 + 0 = 3
        // is below current, so it is raised to current: no scale-up, and never a scale-down.
        assert_eq!(n.normalize(9, 4, 15.0), 4);
    }

    #[test]
    fn min_and_max_bound_the_result() {
        let mut n = Normalizer::new(Behavior::default(), 2, 6);
        assert_eq!(n.normalize(50, 5, 0.0), 6);
        let mut n = Normalizer::new(
            Behavior {
                scale_down: ScalingRules {
                    stabilization_secs: 0.0,
                    ..Behavior::default().scale_down
                },
                ..Behavior::default()
            },
            2,
            6,
        );
        assert_eq!(n.normalize(0, 5, 0.0), 2);
    }

    #[test]
    fn select_min_takes_the_smallest_change() {
        let behavior = Behavior {
            scale_up: ScalingRules {
                select: SelectPolicy::Min,
                ..Behavior::default().scale_up
            },
            ..Behavior::default()
        };
        let mut n = Normalizer::new(behavior, 1, 100);
        // From 10: min(10 × 2, 10 + 4) = 14.
        assert_eq!(n.normalize(50, 10, 0.0), 14);
    }
}
