//! The target workload: found through API discovery from its `targetRef`, read through its
//! scale subresource (what the HPA reads), and its pod template (what a placeholder copies).
//!
//! Owns: resolving `apiVersion`/`kind` to a resource (cached per kind: discovery is not
//! free), reading `spec.replicas`, `status.replicas` and the pod selector from `/scale`, and
//! finding the pod template in the object (Deployment, StatefulSet, ReplicaSet:
//! `spec.template`; LeaderWorkerSet: `spec.leaderWorkerTemplate.workerTemplate`).
//! Does not own: pods (`pods`, `fleet`).

use super::crd::TargetRef;
use super::demand::WorkloadPath;
use k8s_openapi::api::core::v1::PodSpec;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use std::collections::HashMap;
use std::sync::Mutex;

/// Why the target could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `apiVersion`/`kind` name nothing the apiserver serves.
    #[error("{kind} in {api_version} is not served by this cluster")]
    UnknownKind {
        api_version: String,
        kind: String,
        #[source]
        source: kube::Error,
    },
    /// The workload does not exist.
    #[error("{kind} {name} does not exist")]
    NotFound { kind: String, name: String },
    /// The kind has no scale subresource, so no HPA could scale it either.
    #[error("{kind} {name} has no scale subresource")]
    NoScale { kind: String, name: String },
    /// The apiserver failed.
    #[error("reading {kind} {name}")]
    Api {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What the warm pool needs of its target at one sync.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: WorkloadPath,
    /// `spec.replicas` of the scale subresource (what the HPA last set).
    pub spec_replicas: u32,
    /// `status.replicas`.
    pub status_replicas: u32,
    /// The scale subresource's pod selector (string form), for watching the pods.
    pub selector: String,
    /// The pod template's spec, when the kind has one where we look.
    pub template: Option<PodSpec>,
}

/// Resolves kinds once and reads targets.
#[derive(Default)]
pub struct Targets {
    resources: Mutex<HashMap<(String, String), ApiResource>>,
}

impl Targets {
    async fn resource(
        &self,
        client: &Client,
        target: &TargetRef,
    ) -> Result<ApiResource, TargetError> {
        let key = (target.api_version.clone(), target.kind.clone());
        if let Some(ar) = self
            .resources
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(ar);
        }
        let (group, version) = match target.api_version.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), target.api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &target.kind);
        let (ar, _caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|source| TargetError::UnknownKind {
                api_version: target.api_version.clone(),
                kind: target.kind.clone(),
                source,
            })?;
        if let Ok(mut m) = self.resources.lock() {
            m.insert(key, ar.clone());
        }
        Ok(ar)
    }

    /// Reads the target's scale and template.
    pub async fn read(
        &self,
        client: &Client,
        namespace: &str,
        target: &TargetRef,
    ) -> Result<Target, TargetError> {
        let ar = self.resource(client, target).await?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
        let api_error = |source| TargetError::Api {
            kind: target.kind.clone(),
            name: target.name.clone(),
            source,
        };
        let object = match api.get_opt(&target.name).await.map_err(api_error)? {
            Some(o) => o,
            None => {
                return Err(TargetError::NotFound {
                    kind: target.kind.clone(),
                    name: target.name.clone(),
                })
            }
        };
        let scale = match api.get_scale(&target.name).await {
            Ok(scale) => scale,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(TargetError::NoScale {
                    kind: target.kind.clone(),
                    name: target.name.clone(),
                })
            }
            Err(source) => return Err(api_error(source)),
        };
        let status = scale.status.unwrap_or_default();
        let resource = if ar.group.is_empty() {
            ar.plural.clone()
        } else {
            format!("{}.{}", ar.plural, ar.group)
        };
        Ok(Target {
            path: WorkloadPath {
                namespace: namespace.to_owned(),
                resource,
                name: target.name.clone(),
            },
            spec_replicas: scale.spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as u32,
            status_replicas: status.replicas.max(0) as u32,
            selector: status.selector.unwrap_or_default(),
            template: pod_template(&object.data),
        })
    }
}

/// The pod template's spec where the common workload kinds keep it.
fn pod_template(data: &serde_json::Value) -> Option<PodSpec> {
    let spec = &data["spec"];
    [
        &spec["template"]["spec"],
        &spec["leaderWorkerTemplate"]["workerTemplate"]["spec"],
    ]
    .into_iter()
    .find(|v| v.is_object())
    .and_then(|v| serde_json::from_value(v.clone()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_template_of_deployments_and_leader_worker_sets() {
        let deployment = serde_json::json!({"spec": {"template": {"spec": {
            "containers": [{"name": "vllm"}]}}}});
        assert_eq!(
            pod_template(&deployment).unwrap().containers[0].name,
            "vllm"
        );
        let lws = serde_json::json!({"spec": {"leaderWorkerTemplate": {"workerTemplate": {
            "spec": {"containers": [{"name": "worker"}]}}}}});
        assert_eq!(pod_template(&lws).unwrap().containers[0].name, "worker");
        assert!(pod_template(&serde_json::json!({"spec": {}})).is_none());
    }
}
