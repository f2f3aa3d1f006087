//! The `WarmPool` custom resource (`inferscale.dev/v1alpha1`): its spec, status, validation
//! rules and printer columns, all generated from these Rust types.
//!
//! Owns: the API shape users write and read (`kubectl explain warmpool.spec` is generated
//! from the doc comments below), and the validation the apiserver enforces (OpenAPI bounds
//! and CEL rules with messages that say what to fix). The committed YAML
//! (`deploy/components/warm-pool/crd.yaml`) is [`crd_yaml`]'s output; a test fails when the
//! two drift.
//! Does not own: what the controller does with a pool (`scaler run`, in inferscale-scaler) or
//! how the adapter serves its status (`inferscale_recommended_replicas` and capacity by tier).
//! Both read these types, so the contract between them has one home.

#![allow(
    clippy::duplicated_attributes,
    reason = "kube's printcolumn(...) arguments repeat type_ once per column by design"
)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

/// Group of every inferscale custom resource.
pub const GROUP: &str = "inferscale.dev";
/// Where the generated CRD is committed, relative to the repository root.
pub const CRD_PATH: &str = "deploy/components/warm-pool/crd.yaml";

/// Keeps just enough capacity warm for a workload to meet its time-to-first-token objective
/// one time-to-ready ahead, bought only where it costs less than the misses it saves. The
/// recommendation is written to status and served by the inferscale adapter as the Object
/// metric `inferscale_recommended_replicas` on the target, for an HPA to combine with its
/// reactive metrics.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "inferscale.dev",
    version = "v1alpha1",
    kind = "WarmPool",
    namespaced,
    status = "WarmPoolStatus",
    shortname = "wp",
    category = "inferscale",
    derive = "PartialEq",
    doc = "WarmPool keeps warm capacity for a GPU inference workload where it costs less than the latency it saves.",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.targetRef.name",
        description = "The workload kept warm"
    ),
    printcolumn(
        name = "Recommended",
        type_ = "integer",
        json_path = ".status.recommendedReplicas",
        description = "Replicas recommended to the HPA"
    ),
    printcolumn(
        name = "Serving",
        type_ = "integer",
        json_path = ".status.capacity.serving",
        description = "Ready, awake replicas"
    ),
    printcolumn(
        name = "Pending",
        type_ = "integer",
        json_path = ".status.capacity.pending",
        description = "Replicas created but not yet Ready"
    ),
    printcolumn(
        name = "Sleeping",
        type_ = "integer",
        json_path = ".status.capacity.sleeping",
        description = "Replicas asleep (vLLM sleep mode), out of the Service"
    ),
    printcolumn(
        name = "Placeholders",
        type_ = "integer",
        json_path = ".status.capacity.placeholders",
        description = "Placeholder pods holding GPU capacity"
    ),
    printcolumn(
        name = "TTR-p95",
        type_ = "string",
        json_path = ".status.summary.coldTimeToReadyP95",
        description = "Learned p95 time-to-ready of a cold start"
    ),
    printcolumn(
        name = "Action",
        type_ = "string",
        json_path = ".status.lastDecision.action",
        description = "Last decision"
    ),
    printcolumn(
        name = "Forecast",
        type_ = "string",
        priority = 1,
        json_path = ".status.summary.forecast",
        description = "Forecast demand at the horizon, with its interval"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.tiers) || !has(self.tiers.sleeping) || self.tiers.sleeping.maxReplicas <= self.bounds.maxReplicas"
).message("tiers.sleeping.maxReplicas must not exceed bounds.maxReplicas"))]
pub struct WarmPoolSpec {
    /// The workload kept warm: anything with a scale subresource (Deployment, StatefulSet,
    /// LeaderWorkerSet, ...), in the WarmPool's namespace.
    pub target_ref: TargetRef,
    /// The latency objective the pool buys capacity for.
    pub objective: Objective,
    /// Prices that decide whether warm capacity pays for itself.
    pub cost: Cost,
    /// Replica bounds of the recommendation.
    pub bounds: Bounds,
    /// Readiness tiers the pool may use besides awake replicas and cold starts; a tier that is
    /// absent is not used. Default: none, so the pool keeps its headroom awake (an idle awake
    /// replica serves at once for the same GPU price) and recommends replicas ahead of demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Tiers>,
    /// How demand is forecast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastSettings>,
    /// What a request costs a replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_model: Option<WorkModel>,
    /// Seconds between decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 300))]
    pub sync_period_seconds: Option<u32>,
}

/// Which workload: the same shape as an HPA's `scaleTargetRef`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// API version of the workload, e.g. `apps/v1`.
    #[x_kube(validation = Rule::new("self.matches('^([a-z0-9.-]+/)?v[0-9]+((alpha|beta)[0-9]+)?$')").message("apiVersion must look like apps/v1 or v1"))]
    pub api_version: String,
    /// Kind of the workload, e.g. `Deployment`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// Name of the workload.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The objective: `attainment` of requests get their first token within
/// `timeToFirstTokenMilliseconds` (attainment 0.95 with 2000 ms is "TTFT p95 ≤ 2 s").
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Objective {
    /// Time-to-first-token threshold, milliseconds.
    #[schemars(range(min = 1, max = 600000))]
    pub time_to_first_token_milliseconds: u32,
    /// Share of requests that must meet the threshold, in [0.5, 0.9999].
    #[schemars(range(min = 0.5, max = 0.9999))]
    pub attainment: f64,
}

/// Prices: either both `gpuPricePerReplicaHour` and `missPrice`, or only `missCostRatio`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.missCostRatio) ? !has(self.gpuPricePerReplicaHour) && !has(self.missPrice) : has(self.gpuPricePerReplicaHour) && has(self.missPrice)"
).message("set either missCostRatio alone, or both gpuPricePerReplicaHour and missPrice"))]
pub struct Cost {
    /// Price of one replica (its GPUs) per hour, in any currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("gpuPricePerReplicaHour must be positive"))]
    pub gpu_price_per_replica_hour: Option<f64>,
    /// Price of one request that misses the objective, in the same currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("missPrice must be positive"))]
    pub miss_price: Option<f64>,
    /// Price of a missed request over the price of a replica-hour, when absolute prices are
    /// not known (0.001: a miss costs a thousandth of a GPU-hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("missCostRatio must be positive"))]
    pub miss_cost_ratio: Option<f64>,
}

impl Cost {
    /// Price of a missed request over the price of a replica-hour.
    pub fn ratio(&self) -> Option<f64> {
        match (
            self.miss_cost_ratio,
            self.gpu_price_per_replica_hour,
            self.miss_price,
        ) {
            (Some(ratio), _, _) => Some(ratio),
            (None, Some(gpu), Some(miss)) if gpu > 0.0 => Some(miss / gpu),
            _ => None,
        }
    }
}

/// Replica bounds of the recommendation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("bounds.minReplicas must not exceed bounds.maxReplicas"))]
pub struct Bounds {
    /// Fewest replicas recommended (asleep ones count).
    #[schemars(range(min = 0, max = 10000))]
    pub min_replicas: u32,
    /// Most replicas recommended; keep it at or below the HPA's maxReplicas.
    #[schemars(range(min = 1, max = 10000))]
    pub max_replicas: u32,
}

/// The readiness tiers the pool may keep, each with its bound.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Tiers {
    /// Replicas put to sleep with vLLM sleep mode (`--enable-sleep-mode`, and
    /// `VLLM_SERVER_DEV_MODE=1` for the endpoints): seconds to wake, still hold their GPU,
    /// taken out of the Service while asleep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleeping: Option<SleepingTier>,
    /// Low-priority pause pods that request the workload's GPUs, nodeSelector and
    /// tolerations, keeping a GPU node up for a real replica to preempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<PlaceholderTier>,
}

/// Settings of the sleeping tier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SleepingTier {
    /// Most replicas kept asleep.
    #[schemars(range(min = 0, max = 1000))]
    pub max_replicas: u32,
    /// vLLM sleep level: 1 offloads weights to CPU memory (fast wake), 2 discards them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2))]
    pub level: Option<u8>,
    /// Port of the vLLM server's HTTP API on the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Price of a sleeping replica as a share of an awake one (1 when it keeps its GPU
    /// to itself; less when the freed GPU memory is shared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub price_factor: Option<f64>,
}

/// Settings of the placeholder tier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlaceholderTier {
    /// Most placeholder pods.
    #[schemars(range(min = 0, max = 1000))]
    pub max_replicas: u32,
    /// PriorityClass of the placeholders: value -10 and `preemptionPolicy: Never`, so every
    /// real pod preempts them and they never preempt anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
    /// Image of the placeholder container (a pause image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Price of a placeholder as a share of an awake replica (1 when its node exists only
    /// for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub price_factor: Option<f64>,
}

/// How demand is forecast.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ForecastSettings {
    /// Window at which bursts are measured, seconds (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub burst_window_seconds: Option<u32>,
    /// How long burst samples are remembered, seconds (default 1800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 604800))]
    pub memory_seconds: Option<u32>,
    /// Seasonal period, seconds (86400 for a daily cycle); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 600, max = 2419200))]
    pub season_seconds: Option<u32>,
    /// Cold-start time assumed until one has been observed, seconds (default 180).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub prior_time_to_ready_seconds: Option<u32>,
}

/// What a request costs a replica, for sizing. The defaults describe Llama-3.1-8B in BF16 on
/// an H100; the per-replica capacity is then learned from the fleet's TTFT, which absorbs a
/// constant error in these.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkModel {
    /// Replica-seconds one prompt token costs (prefill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("prefillSecondsPerToken must be positive"))]
    pub prefill_seconds_per_token: Option<f64>,
    /// Replica-seconds one generated token costs in a busy batch (decode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("decodeSecondsPerToken must be positive"))]
    pub decode_seconds_per_token: Option<f64>,
    /// Share of a replica's time it can be kept busy within the objective, until learned
    /// (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.05, max = 1.5))]
    pub prior_capacity: Option<f64>,
}

/// What the controller saw and decided.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmPoolStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `TargetResolved`, `MetricsAvailable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Replicas the pool recommends for the target (served to the HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_replicas: Option<u32>,
    /// The target's replicas by readiness tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<TierCapacity>,
    /// Observed time-to-ready by tier (kept here so a restart does not forget).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["tier"]))]
    pub time_to_ready: Vec<TimeToReadyStatus>,
    /// The demand forecast at the horizon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastStatus>,
    /// The last decision, its inputs and expected cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<DecisionStatus>,
    /// Human-readable one-liners for printer columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

/// The target's replicas by readiness tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierCapacity {
    /// Ready and awake: serving capacity.
    pub serving: u32,
    /// Created, not yet Ready (cold starts in progress).
    pub pending: u32,
    /// Asleep, out of the Service; not serving capacity.
    pub sleeping: u32,
    /// Being woken.
    pub waking: u32,
    /// Placeholder pods of this pool (scheduled or not).
    pub placeholders: u32,
}

/// A readiness tier.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
pub enum Tier {
    /// A new pod that needed new capacity: created → Ready.
    Cold,
    /// A new pod scheduled where a placeholder was preempted: created → Ready.
    Placeholder,
    /// A sleeping replica woken: wake call → serving.
    Sleeping,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Cold, Tier::Placeholder, Tier::Sleeping];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Cold => "cold",
            Tier::Placeholder => "placeholder",
            Tier::Sleeping => "sleeping",
        }
    }
}

/// Time-to-ready of one tier, as a log-normal fitted to what was observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeToReadyStatus {
    pub tier: Tier,
    /// Median, seconds.
    pub p50_seconds: f64,
    /// 95th percentile, seconds.
    pub p95_seconds: f64,
    /// Observations behind the estimate (0: the prior).
    pub samples: u64,
    /// Effective weight of the observations in the fit (saturates, so it keeps learning).
    pub weight: f64,
    /// Weighted mean of ln(seconds): with `logVariance` and `weight`, the fit's whole state.
    pub log_mean: f64,
    /// Weighted variance of ln(seconds).
    pub log_variance: f64,
    /// When the latest observation counted became Ready (RFC 3339): starts at or before it
    /// are not counted again after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_observed_time: Option<String>,
}

/// A forecast value with its interval.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    pub expected: f64,
    /// 5th percentile of the burst-grain scenarios.
    pub low: f64,
    /// 95th percentile.
    pub high: f64,
}

/// The demand forecast at the horizon.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForecastStatus {
    /// How far ahead, seconds (the learned p95 cold start).
    pub horizon_seconds: f64,
    /// Requests per second at the horizon.
    pub requests_per_second: Estimate,
    /// Offered work at the horizon, in replicas kept fully busy.
    pub work: Estimate,
    /// Request rate measured when the forecast was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_requests_per_second: Option<f64>,
    /// When it was made (RFC 3339).
    pub time: String,
}

/// The last decision, what it saw and what it expects to cost.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionStatus {
    /// When (RFC 3339).
    pub time: String,
    /// scale_up, scale_down, wake or hold.
    pub action: String,
    /// What was seen, what was chosen, why.
    pub message: String,
    /// Replicas recommended to the HPA (serving and sleeping).
    pub recommended_replicas: u32,
    /// Serving replicas wanted.
    pub serving: u32,
    /// Sleeping replicas wanted.
    pub sleeping: u32,
    /// Placeholders wanted.
    pub placeholders: u32,
    /// Sleeping replicas woken by this decision.
    pub woken: u32,
    /// Serving replicas put to sleep by this decision.
    pub put_to_sleep: u32,
    /// Learned work one replica sustains within the objective.
    pub capacity_per_replica: f64,
    /// Expected cost per hour of the plan.
    pub expected_cost_per_hour: ExpectedCost,
}

/// Expected cost per hour, in the spec's currency (in replica-hours when only a ratio is set).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedCost {
    /// GPUs held by every tier.
    pub capacity: f64,
    /// Requests expected to miss the objective per hour.
    pub misses: f64,
    /// Those misses, priced.
    pub miss_cost: f64,
    pub total: f64,
    /// Expected share of requests within the objective.
    pub attainment: f64,
}

/// Short strings for `kubectl get` columns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// e.g. `94s (n=12)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_time_to_ready_p95: Option<String>,
    /// e.g. `3.2 [2.1, 4.4] @94s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<String>,
}

/// The CRD as committed YAML.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    let body = serde_yaml_ng::to_string(&WarmPool::crd())?;
    Ok(format!(
        "# Generated from crd/src/lib.rs by `scaler crd`; do not edit.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_ratio_from_prices_or_given() {
        let prices = Cost {
            gpu_price_per_replica_hour: Some(2.5),
            miss_price: Some(0.0025),
            miss_cost_ratio: None,
        };
        assert_eq!(prices.ratio(), Some(0.001));
        let ratio = Cost {
            gpu_price_per_replica_hour: None,
            miss_price: None,
            miss_cost_ratio: Some(0.02),
        };
        assert_eq!(ratio.ratio(), Some(0.02));
    }

    /// The committed CRD is what the types generate: edit the types, then run `scaler crd >
    /// deploy/components/warm-pool/crd.yaml`.
    #[test]
    fn committed_crd_matches_the_types() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        // The repository root is the crate's parent.
        let committed = std::fs::read_to_string(root.join(CRD_PATH)).unwrap_or_default();
        let generated = crd_yaml().unwrap();
        assert!(
            committed == generated,
            "{CRD_PATH} is out of date: run `cargo run -p inferscale-scaler -- crd > {CRD_PATH}`"
        );
    }
}
