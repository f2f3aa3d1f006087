//! Pods, the Kubernetes side: reading a pod's lifecycle into [`PodFacts`], the labels and
//! annotations the warm pool writes on the target's pods, and the placeholder pods it owns.
//!
//! Owns: the names of those labels and annotations (a contract with users: a Service that
//! selects `inferscale.dev/serving: "true"` drops sleeping replicas), the patches that move a
//! pod through the sleep cycle, and the placeholder pod spec: a pause container that requests
//! what one replica of the workload requests (GPUs included), with its nodeSelector,
//! tolerations and affinity, at a PriorityClass of value -10 and `preemptionPolicy: Never`.
//! Does not own: deciding any of it.

use super::fleet::{PodFacts, Preemption, SleepState};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use std::collections::BTreeMap;

/// Label on the target's pods that a Service should select: `"true"` while the replica
/// serves, `"false"` while it drains, sleeps or wakes. The pod template sets it to `"true"`;
/// only the warm pool flips it.
pub const SERVING_LABEL: &str = "inferscale.dev/serving";
/// Annotation with the pod's [`SleepState`]; absent when awake.
pub const SLEEP_STATE_ANNOTATION: &str = "inferscale.dev/sleep-state";
/// Annotation with when the sleep state was entered (RFC 3339).
pub const SLEEP_SINCE_ANNOTATION: &str = "inferscale.dev/sleep-state-since";
/// The ReplicaSet controller removes pods with the lowest cost first on scale-down: a
/// sleeping replica serves nothing, so it goes before any awake one.
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Deletion cost of a sleeping replica (awake ones have the default, 0).
pub const SLEEPING_DELETION_COST: &str = "-100";
/// Label naming the WarmPool a placeholder pod belongs to.
pub const PLACEHOLDER_LABEL: &str = "inferscale.dev/placeholder-for";
/// Who manages placeholders, in the recommended label.
pub const MANAGED_BY: &str = "inferscale-scaler";
/// Default PriorityClass of placeholders (shipped in deploy/components/warm-pool).
pub const DEFAULT_PLACEHOLDER_PRIORITY_CLASS: &str = "inferscale-placeholder";
/// Default placeholder image.
pub const DEFAULT_PLACEHOLDER_IMAGE: &str = "registry.k8s.io/pause:3.10";

fn seconds(t: &Time) -> f64 {
    t.0.as_second() as f64 + f64::from(t.0.subsec_nanosecond()) * 1e-9
}

/// What a pod's metadata and status say about its lifecycle.
pub fn facts(pod: &Pod) -> PodFacts {
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    let condition = |kind: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
    };
    let ready = condition("Ready").is_some_and(|c| c.status == "True");
    let annotations = meta.annotations.as_ref();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    PodFacts {
        uid: meta.uid.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        created: meta.creation_timestamp.as_ref().map(seconds).unwrap_or(0.0),
        scheduled: condition("PodScheduled")
            .filter(|c| c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(seconds),
        ready_since: condition("Ready")
            .filter(|c| c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(seconds),
        ready,
        terminating: meta.deletion_timestamp.is_some(),
        restarts: status
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count.max(0) as u32).sum())
            .unwrap_or(0),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        ip: status.and_then(|s| s.pod_ip.clone()),
        sleep: annotation(SLEEP_STATE_ANNOTATION).and_then(SleepState::parse),
        sleep_since: annotation(SLEEP_SINCE_ANNOTATION)
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_second() as f64 + f64::from(t.subsec_nanosecond()) * 1e-9),
    }
}

/// The scheduler's mark on a pod it preempts (condition `DisruptionTarget`, reason
/// `PreemptionByScheduler`), as a [`Preemption`] on the pod's node at the time it was marked.
pub fn preemption(pod: &Pod) -> Option<Preemption> {
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let mark = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| {
        c.type_ == "DisruptionTarget"
            && c.status == "True"
            && c.reason.as_deref() == Some("PreemptionByScheduler")
    })?;
    Some(Preemption {
        node,
        noticed: mark
            .last_transition_time
            .as_ref()
            .map(seconds)
            .unwrap_or_else(|| seconds(&Time(k8s_openapi::jiff::Timestamp::now()))),
    })
}

/// The merge patch that moves a pod into `state` (`None`: awake and serving again).
pub fn sleep_state_patch(state: Option<SleepState>, now_rfc3339: &str) -> serde_json::Value {
    match state {
        Some(state) => serde_json::json!({"metadata": {
            "labels": {SERVING_LABEL: "false"},
            "annotations": {
                SLEEP_STATE_ANNOTATION: state.as_str(),
                SLEEP_SINCE_ANNOTATION: now_rfc3339,
                DELETION_COST_ANNOTATION: SLEEPING_DELETION_COST,
            },
        }}),
        None => serde_json::json!({"metadata": {
            "labels": {SERVING_LABEL: "true"},
            "annotations": {
                SLEEP_STATE_ANNOTATION: null,
                SLEEP_SINCE_ANNOTATION: null,
                DELETION_COST_ANNOTATION: null,
            },
        }}),
    }
}

/// What one replica of the workload asks of a node, taken from its pod template.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaShape {
    /// Requests summed over the containers (extended resources such as `nvidia.com/gpu`
    /// included).
    pub requests: BTreeMap<String, Quantity>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub tolerations: Option<Vec<k8s_openapi::api::core::v1::Toleration>>,
    pub affinity: Option<k8s_openapi::api::core::v1::Affinity>,
}

impl ReplicaShape {
    /// From a pod spec (a template's or a live pod's). Extended resources are requested via
    /// limits alone as often as via requests; both count. Quantities of the same resource in
    /// several containers are summed when they parse, else the largest string is kept.
    pub fn of(spec: &PodSpec) -> ReplicaShape {
        let mut totals: BTreeMap<String, (f64, Quantity)> = BTreeMap::new();
        for container in &spec.containers {
            let Some(resources) = &container.resources else {
                continue;
            };
            let mut own: BTreeMap<&String, &Quantity> = BTreeMap::new();
            for (name, q) in resources.limits.iter().flatten() {
                // Limits stand in for requests only for extended resources (the scheduler
                // does the same): a CPU limit is not a CPU request.
                if name.contains('/') {
                    own.insert(name, q);
                }
            }
            for (name, q) in resources.requests.iter().flatten() {
                own.insert(name, q);
            }
            for (name, q) in own {
                let value = super::demand::parse_quantity(&q.0).unwrap_or(0.0);
                let entry = totals
                    .entry(name.clone())
                    .or_insert((0.0, Quantity("0".into())));
                entry.0 += value;
                entry.1 = Quantity(format_amount(entry.0));
            }
        }
        ReplicaShape {
            requests: totals.into_iter().map(|(k, (_, q))| (k, q)).collect(),
            node_selector: spec.node_selector.clone(),
            tolerations: spec.tolerations.clone(),
            affinity: spec.affinity.clone(),
        }
    }
}

/// An amount as a quantity string: integers plainly, fractions in milli-units.
fn format_amount(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{}", value as i64)
    } else {
        format!("{}m", (value * 1000.0).round() as i64)
    }
}

/// Placeholder settings resolved from the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaceholderTemplate {
    pub pool: String,
    pub namespace: String,
    pub owner: OwnerReference,
    pub priority_class: String,
    pub image: String,
    pub shape: ReplicaShape,
}

impl PlaceholderTemplate {
    /// A placeholder pod. `generateName` keeps names unique; the owner reference lets the
    /// garbage collector remove placeholders with their pool.
    pub fn pod(&self) -> Pod {
        let mut labels = BTreeMap::new();
        labels.insert(PLACEHOLDER_LABEL.to_owned(), self.pool.clone());
        labels.insert(
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        );
        labels.insert(
            "app.kubernetes.io/component".to_owned(),
            "placeholder".to_owned(),
        );
        let limits: BTreeMap<String, Quantity> = self
            .shape
            .requests
            .iter()
            .filter(|(name, _)| name.contains('/'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-placeholder-", self.pool)),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels),
                owner_references: Some(vec![self.owner.clone()]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                priority_class_name: Some(self.priority_class.clone()),
                // Nothing to finish: a preempted placeholder should free its node at once.
                termination_grace_period_seconds: Some(0),
                automount_service_account_token: Some(false),
                enable_service_links: Some(false),
                node_selector: self.shape.node_selector.clone(),
                tolerations: self.shape.tolerations.clone(),
                affinity: self.shape.affinity.clone(),
                containers: vec![Container {
                    name: "pause".into(),
                    image: Some(self.image.clone()),
                    resources: Some(ResourceRequirements {
                        requests: Some(self.shape.requests.clone()),
                        limits: (!limits.is_empty()).then_some(limits),
                        ..ResourceRequirements::default()
                    }),
                    security_context: Some(k8s_openapi::api::core::v1::SecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65535),
                        allow_privilege_escalation: Some(false),
                        read_only_root_filesystem: Some(true),
                        capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
                            drop: Some(vec!["ALL".into()]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn shape_sums_requests_and_takes_extended_limits() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "nodeSelector": {"nvidia.com/gpu.product": "H100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {"name": "vllm", "resources": {
                    "limits": {"nvidia.com/gpu": "2", "cpu": "16"},
                    "requests": {"cpu": "8", "memory": "64Gi"}}},
                {"name": "sidecar", "resources": {"requests": {"cpu": "500m"}}},
            ]
        }))
        .unwrap();
        let shape = ReplicaShape::of(&spec);
        let expected: BTreeMap<String, Quantity> = [
            ("cpu".to_owned(), q("8500m")),
            ("memory".to_owned(), q("68719476736")),
            ("nvidia.com/gpu".to_owned(), q("2")),
        ]
        .into();
        assert_eq!(shape.requests, expected);
        assert_eq!(shape.tolerations.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn placeholder_requests_the_gpus_at_the_placeholder_priority() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]
        }))
        .unwrap();
        let template = PlaceholderTemplate {
            pool: "llama".into(),
            namespace: "serving".into(),
            owner: OwnerReference {
                api_version: "inferscale.dev/v1alpha1".into(),
                kind: "WarmPool".into(),
                name: "llama".into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            priority_class: DEFAULT_PLACEHOLDER_PRIORITY_CLASS.into(),
            image: DEFAULT_PLACEHOLDER_IMAGE.into(),
            shape: ReplicaShape::of(&spec),
        };
        let pod = template.pod();
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some("inferscale-placeholder")
        );
        let resources = spec.containers[0].resources.clone().unwrap();
        assert_eq!(resources.requests.unwrap()["nvidia.com/gpu"], q("1"));
        assert_eq!(resources.limits.unwrap()["nvidia.com/gpu"], q("1"));
        assert_eq!(
            pod.metadata.labels.unwrap()[PLACEHOLDER_LABEL],
            "llama".to_owned()
        );
    }

    #[test]
    fn the_schedulers_preemption_mark() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "llama-placeholder-x"},
            "spec": {"nodeName": "gpu-7", "containers": []},
            "status": {"conditions": [{"type": "DisruptionTarget", "status": "True",
                "reason": "PreemptionByScheduler",
                "message": "default-scheduler: preempting to accommodate a higher priority pod",
                "lastTransitionTime": "2026-12-01T10:00:05Z"}]}
        }))
        .unwrap();
        let p = preemption(&pod).unwrap();
        assert_eq!(p.node, "gpu-7");
        // 2026-12-01T10:00:05Z (Python: calendar.timegm).
        assert_eq!(p.noticed, 1_796_119_205.0);
        // Deleted by its pool (or anyone else): no mark, no preemption.
        let mut deleted = pod.clone();
        deleted.status = None;
        assert!(preemption(&deleted).is_none());
    }

    #[test]
    fn reads_lifecycle_and_sleep_state() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1", "creationTimestamp": "2026-12-01T10:00:00Z",
                "annotations": {SLEEP_STATE_ANNOTATION: "asleep",
                                SLEEP_SINCE_ANNOTATION: "2026-12-01T10:05:00Z"}},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"podIP": "10.0.0.7", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-01T10:00:02Z"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-01T10:01:30Z"}],
                "containerStatuses": [{"name": "vllm", "ready": true, "restartCount": 0,
                    "image": "i", "imageID": ""}]}
        }))
        .unwrap();
        let f = facts(&pod);
        assert_eq!(f.ready_since.unwrap() - f.created, 90.0);
        assert_eq!(f.scheduled.unwrap() - f.created, 2.0);
        assert_eq!(f.sleep, Some(SleepState::Asleep));
        assert_eq!(f.sleep_since.unwrap() - f.created, 300.0);
        assert!(f.ready && !f.is_serving());
        assert_eq!(f.ip.as_deref(), Some("10.0.0.7"));
    }
}
