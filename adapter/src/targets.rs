//! Targets: which pods to scrape, and what owns them.
//!
//! Owns: turning Pods (from kube-rs reflectors, or a static list in standalone mode) into
//! [`Target`]s and keeping the store's target set equal to what exists. Pods are watched,
//! never listed per request; ReplicaSets and StatefulSets are watched as metadata only, to
//! walk owner chains (Pod → ReplicaSet → Deployment, Pod → StatefulSet → LeaderWorkerSet).
//! Owner kinds come from owner references, so a workload CRD installed after start-up is
//! answered for without a restart and without watching the CRD.
//!
//! Pod annotations choose the endpoint: `inferscale.dev/port` (default 8000 for serving
//! pods, 9400 for dcgm-exporter), `inferscale.dev/path` (default `/metrics`),
//! `inferscale.dev/scheme` (default `http`); `prometheus.io/port` and `prometheus.io/path`
//! are honoured when ours are absent.

use crate::error_chain::ErrorChain;
use crate::store::{OwnerRef, PodKey, Target, TargetKind, TargetRegistry};
use crate::telemetry::Telemetry;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store as ReflectorStore};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

/// Annotation and default port/path/scheme.
pub const PORT_ANNOTATION: &str = "inferscale.dev/port";
pub const PATH_ANNOTATION: &str = "inferscale.dev/path";
pub const SCHEME_ANNOTATION: &str = "inferscale.dev/scheme";
pub const DEFAULT_ENGINE_PORT: u16 = 8000;
pub const DEFAULT_DCGM_PORT: u16 = 9400;
pub const DEFAULT_PATH: &str = "/metrics";

/// How long after a watch event the watches' state is folded into the store: short enough
/// that a new Ready pod is scraped within a second, long enough to batch a rollout's burst
/// of events.
const RESYNC_DEBOUNCE: Duration = Duration::from_millis(300);

/// Errors of static targets (standalone mode).
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    /// The static targets file could not be read.
    #[error("reading targets file {path}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
    /// The static targets file is not valid JSON of the expected shape.
    #[error("parsing targets file {path}")]
    ParseFile {
        path: String,
        source: serde_json::Error,
    },
    /// A `--target` flag is not `namespace/name=URL`.
    #[error("invalid --target {0:?}: expected namespace/name=URL")]
    InvalidFlag(String),
}

/// One entry of a static targets file (standalone mode).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticTarget {
    pub namespace: String,
    pub name: String,
    pub url: String,
    #[serde(default = "default_kind")]
    pub kind: StaticKind,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub node: Option<String>,
    /// Owner chain, nearest first.
    #[serde(default)]
    pub owners: Vec<StaticOwner>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StaticKind {
    Engine,
    Dcgm,
}

fn default_kind() -> StaticKind {
    StaticKind::Engine
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticOwner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

impl StaticTarget {
    pub fn into_target(self) -> Target {
        Target {
            uid: format!("static:{}/{}", self.namespace, self.name),
            key: PodKey::new(self.namespace, self.name),
            kind: match self.kind {
                StaticKind::Engine => TargetKind::Engine,
                StaticKind::Dcgm => TargetKind::GpuExporter,
            },
            url: Some(self.url),
            labels: self.labels,
            node: self.node,
            ready: true,
            terminating: false,
            asleep: false,
            owners: self
                .owners
                .into_iter()
                .map(|o| OwnerRef {
                    api_version: o.api_version,
                    kind: o.kind,
                    name: o.name,
                })
                .collect(),
        }
    }
}

/// Reads a JSON array of [`StaticTarget`]s.
pub fn read_static_file(path: &str) -> Result<Vec<StaticTarget>, TargetsError> {
    let text = std::fs::read_to_string(path).map_err(|source| TargetsError::ReadFile {
        path: path.into(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| TargetsError::ParseFile {
        path: path.into(),
        source,
    })
}

/// Parses `--target namespace/name=URL`.
pub fn parse_target_flag(flag: &str) -> Result<StaticTarget, TargetsError> {
    let invalid = || TargetsError::InvalidFlag(flag.to_owned());
    let (pod, url) = flag.split_once('=').ok_or_else(invalid)?;
    let (namespace, name) = pod.split_once('/').ok_or_else(invalid)?;
    if namespace.is_empty() || name.is_empty() || !url.starts_with("http") {
        return Err(invalid());
    }
    Ok(StaticTarget {
        namespace: namespace.into(),
        name: name.into(),
        url: url.into(),
        kind: StaticKind::Engine,
        labels: BTreeMap::new(),
        node: None,
        owners: Vec::new(),
    })
}

/// Loads static targets into the registry once.
pub fn load_static(registry: &dyn TargetRegistry, targets: Vec<StaticTarget>) {
    for kind in [TargetKind::Engine, TargetKind::GpuExporter] {
        let keep: HashSet<PodKey> = targets
            .iter()
            .filter(|t| {
                matches!(
                    (t.kind, kind),
                    (StaticKind::Engine, TargetKind::Engine)
                        | (StaticKind::Dcgm, TargetKind::GpuExporter)
                )
            })
            .map(|t| PodKey::new(&t.namespace, &t.name))
            .collect();
        registry.retain_targets(kind, &keep);
    }
    for target in targets {
        registry.upsert_target(target.into_target());
    }
}

/// Builds the scrape URL of a pod from its IP and annotations: `None` unless the pod is
/// Running with an IP (a Pending, Failed, Evicted or Succeeded pod has nothing to scrape).
pub fn pod_url(pod: &Pod, kind: TargetKind) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    let annotations = pod.annotations();
    let port = annotations
        .get(PORT_ANNOTATION)
        .or_else(|| annotations.get("prometheus.io/port"))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(match kind {
            TargetKind::Engine => DEFAULT_ENGINE_PORT,
            TargetKind::GpuExporter => DEFAULT_DCGM_PORT,
        });
    let path = annotations
        .get(PATH_ANNOTATION)
        .or_else(|| annotations.get("prometheus.io/path"))
        .map(String::as_str)
        .unwrap_or(DEFAULT_PATH);
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let scheme = match annotations.get(SCHEME_ANNOTATION).map(String::as_str) {
        Some("https") => "https",
        _ => "http",
    };
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    Some(format!("{scheme}://{host}:{port}{path}"))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn controller_of(
    refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
) -> Option<OwnerRef> {
    let refs = refs?;
    let owner = refs
        .iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())?;
    Some(OwnerRef {
        api_version: owner.api_version.clone(),
        kind: owner.kind.clone(),
        name: owner.name.clone(),
    })
}

/// Looks up the owners of ReplicaSets and StatefulSets.
pub struct OwnerIndex<'a> {
    pub replica_sets: &'a ReflectorStore<PartialObjectMeta<ReplicaSet>>,
    pub stateful_sets: &'a ReflectorStore<PartialObjectMeta<StatefulSet>>,
}

/// Longest owner chain we follow; real chains are two or three deep.
const MAX_OWNER_DEPTH: usize = 4;

impl OwnerIndex<'_> {
    fn chain(&self, namespace: &str, first: Option<OwnerRef>) -> Vec<OwnerRef> {
        let mut chain = Vec::new();
        let mut next = first;
        while let Some(owner) = next.take() {
            if chain.len() >= MAX_OWNER_DEPTH {
                break;
            }
            next = match (owner.group(), owner.kind.as_str()) {
                ("apps", "ReplicaSet") => self
                    .replica_sets
                    .get(&ObjectRef::new(&owner.name).within(namespace))
                    .and_then(|rs| controller_of(rs.metadata.owner_references.as_ref())),
                ("apps", "StatefulSet") => self
                    .stateful_sets
                    .get(&ObjectRef::new(&owner.name).within(namespace))
                    .and_then(|ss| controller_of(ss.metadata.owner_references.as_ref())),
                _ => None,
            };
            chain.push(owner);
        }
        chain
    }
}

/// The warm-pool controller's mark on a replica it drains, puts to sleep (vLLM sleep mode)
/// or is waking: such a replica is out of its Service and not serving capacity.
pub const SLEEP_STATE_ANNOTATION: &str = "inferscale.dev/sleep-state";

fn is_asleep(pod: &Pod) -> bool {
    pod.annotations().contains_key(SLEEP_STATE_ANNOTATION)
}

/// A Pod as a [`Target`].
pub fn pod_target(pod: &Pod, kind: TargetKind, owners: &OwnerIndex<'_>) -> Option<Target> {
    let namespace = pod.namespace()?;
    let name = pod.name_any();
    Some(Target {
        key: PodKey::new(namespace.clone(), name),
        uid: pod.uid().unwrap_or_default(),
        kind,
        url: pod_url(pod, kind),
        labels: pod.labels().clone(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        ready: is_ready(pod),
        terminating: pod.meta().deletion_timestamp.is_some(),
        asleep: is_asleep(pod),
        owners: owners.chain(
            &namespace,
            controller_of(pod.meta().owner_references.as_ref()),
        ),
    })
}

/// Selectors for the two kinds of pods.
#[derive(Debug, Clone)]
pub struct PodWatchConfig {
    /// Label selector of serving pods (default `inferscale.dev/scrape=true`).
    pub engine_selector: String,
    /// Label selector of dcgm-exporter pods (default `app=nvidia-dcgm-exporter`, the GPU
    /// Operator's label); empty disables GPU metrics.
    pub dcgm_selector: String,
}

/// Why one run of the pod watches ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A watch task ended (its stream cannot end on its own) or panicked.
    #[error("the {0} watch ended")]
    Ended(&'static str, #[source] Option<tokio::task::JoinError>),
}

/// Watches Pods, ReplicaSets and StatefulSets and keeps the registry in sync until `token`
/// is cancelled (then `Ok`) or one of the watches ends (an error: the caller restarts the
/// whole set, see [`crate::lifecycle::run_restarting`]). Calls `on_synced` every time the
/// registry holds what the watches found, the first time once every watch has listed.
/// Watch errors (the kube-apiserver unreachable, a watch expired) are retried with backoff
/// by each watch itself; each is logged and counted in `telemetry`.
pub async fn watch_pods(
    client: Client,
    config: PodWatchConfig,
    registry: Arc<dyn TargetRegistry>,
    on_synced: Arc<dyn Fn() + Send + Sync>,
    telemetry: Arc<Telemetry>,
    token: CancellationToken,
) -> Result<(), WatchError> {
    let changed = Arc::new(Notify::new());
    let mut watches = JoinSet::new();
    let mut reflect_pods = |name, selector: &str| {
        let config = watcher::Config::default().labels(selector);
        reflect(
            &mut watches,
            name,
            Api::<Pod>::all(client.clone()),
            config,
            &changed,
            &telemetry,
        )
    };
    let engine_pods = reflect_pods("pods(engine)", &config.engine_selector);
    let dcgm_pods = (!config.dcgm_selector.is_empty())
        .then(|| reflect_pods("pods(dcgm)", &config.dcgm_selector));
    let replica_sets =
        reflect_metadata::<ReplicaSet>(&mut watches, "replicasets", &client, &changed, &telemetry);
    let stateful_sets = reflect_metadata::<StatefulSet>(
        &mut watches,
        "statefulsets",
        &client,
        &changed,
        &telemetry,
    );

    // Ready once every watch listed.
    let listed = async {
        let _ = engine_pods.wait_until_ready().await;
        if let Some(dcgm_pods) = &dcgm_pods {
            let _ = dcgm_pods.wait_until_ready().await;
        }
        let _ = replica_sets.wait_until_ready().await;
        let _ = stateful_sets.wait_until_ready().await;
    };
    tokio::select! {
        () = listed => {}
        ended = next_end(&mut watches) => return Err(ended),
        () = token.cancelled() => return Ok(()),
    }
    info!("pod watches synced");

    let owners = OwnerIndex {
        replica_sets: &replica_sets,
        stateful_sets: &stateful_sets,
    };
    loop {
        sync(
            registry.as_ref(),
            &engine_pods.state(),
            TargetKind::Engine,
            &owners,
        );
        if let Some(dcgm_pods) = &dcgm_pods {
            sync(
                registry.as_ref(),
                &dcgm_pods.state(),
                TargetKind::GpuExporter,
                &owners,
            );
        }
        on_synced();
        tokio::select! {
            () = changed.notified() => {}
            ended = next_end(&mut watches) => return Err(ended),
            () = token.cancelled() => return Ok(()),
        }
        // Let the rest of a burst (a rollout changes many objects at once) arrive first.
        tokio::time::sleep(RESYNC_DEBOUNCE).await;
    }
}

/// The first watch task to end, as an error (they never end on their own).
async fn next_end(watches: &mut JoinSet<&'static str>) -> WatchError {
    match watches.join_next().await {
        Some(Ok(name)) => WatchError::Ended(name, None),
        Some(Err(panic)) => WatchError::Ended("pod", Some(panic)),
        None => std::future::pending().await,
    }
}

/// Starts a reflector over `api` in `tasks` and returns its store. Every event wakes
/// `changed`; a watch error is logged, counted and retried with backoff by the stream
/// itself, so one bad object or an unreachable kube-apiserver never stops the watch.
/// Managed fields are dropped (never read, and the bulk of a stored object).
fn reflect<K>(
    tasks: &mut JoinSet<&'static str>,
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
    changed: &Arc<Notify>,
    telemetry: &Arc<Telemetry>,
) -> ReflectorStore<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let events = reflector::reflector(
        writer,
        watcher(api, config).modify(|object: &mut K| object.managed_fields_mut().clear()),
    )
    .default_backoff();
    let changed = changed.clone();
    let telemetry = telemetry.clone();
    tasks.spawn(
        async move {
            futures::pin_mut!(events);
            while let Some(event) = events.next().await {
                if let Err(error) = event {
                    warn!(error = %ErrorChain(&error), "watch error (retrying)");
                    telemetry.watch_error(name);
                }
                changed.notify_one();
            }
            name
        }
        .instrument(info_span!("watch", resource = name)),
    );
    reader
}

/// [`reflect`] over the metadata of every `K` in the cluster (owner chains need nothing
/// else).
fn reflect_metadata<K>(
    tasks: &mut JoinSet<&'static str>,
    name: &'static str,
    client: &Client,
    changed: &Arc<Notify>,
    telemetry: &Arc<Telemetry>,
) -> ReflectorStore<PartialObjectMeta<K>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api = Api::<PartialObjectMeta<K>>::all(client.clone());
    reflect(
        tasks,
        name,
        api,
        watcher::Config::default(),
        changed,
        telemetry,
    )
}

fn sync(
    registry: &dyn TargetRegistry,
    pods: &[Arc<Pod>],
    kind: TargetKind,
    owners: &OwnerIndex<'_>,
) {
    let mut keep = HashSet::new();
    for pod in pods {
        if let Some(target) = pod_target(pod, kind, owners) {
            keep.insert(target.key.clone());
            registry.upsert_target(target);
        }
    }
    registry.retain_targets(kind, &keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn url_from_ip_and_annotations() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "annotations": {"inferscale.dev/port": "9000", "inferscale.dev/path": "stats"}},
            "status": {"phase": "Running", "podIP": "10.1.2.3"}
        }));
        assert_eq!(
            pod_url(&p, TargetKind::Engine).as_deref(),
            Some("http://10.1.2.3:9000/stats")
        );
        let v6 = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Running", "podIP": "fd00::1"}
        }));
        assert_eq!(
            pod_url(&v6, TargetKind::GpuExporter).as_deref(),
            Some("http://[fd00::1]:9400/metrics")
        );
        let pending =
            pod(serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Pending"}}));
        assert_eq!(pod_url(&pending, TargetKind::Engine), None);
    }

    #[test]
    fn owner_chain_through_replicaset() {
        let (rs_reader, mut rs_writer) = reflector::store::<PartialObjectMeta<ReplicaSet>>();
        let rs: PartialObjectMeta<ReplicaSet> = serde_json::from_value(serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "vllm-abc", "namespace": "ns", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm", "uid": "d", "controller": true}]}
        }))
        .unwrap();
        rs_writer.apply_watcher_event(&watcher::Event::Apply(rs));
        let (ss_reader, _) = reflector::store::<PartialObjectMeta<StatefulSet>>();
        let p = pod(serde_json::json!({
            "metadata": {"name": "vllm-abc-1", "namespace": "ns", "uid": "u", "labels": {"app": "vllm"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "vllm-abc", "uid": "r", "controller": true}]},
            "spec": {"containers": [], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
        }));
        let owners = OwnerIndex {
            replica_sets: &rs_reader,
            stateful_sets: &ss_reader,
        };
        let t = pod_target(&p, TargetKind::Engine, &owners).unwrap();
        assert!(t.ready);
        assert_eq!(t.node.as_deref(), Some("n1"));
        let kinds: Vec<_> = t.owners.iter().map(|o| o.kind.as_str()).collect();
        assert_eq!(kinds, ["ReplicaSet", "Deployment"]);
    }

    #[test]
    fn file_errors_name_the_file_and_leave_the_cause_to_source() {
        let error = read_static_file("/nonexistent/targets.json").unwrap_err();
        assert_eq!(
            error.to_string(),
            "reading targets file /nonexistent/targets.json"
        );
        let cause = std::error::Error::source(&error).expect("the I/O error is the source");
        assert!(
            !error.to_string().contains(&cause.to_string()),
            "printed once"
        );
    }

    #[test]
    fn target_flag() {
        let t = parse_target_flag("default/vllm-0=http://127.0.0.1:8000/metrics").unwrap();
        assert_eq!(
            (t.namespace.as_str(), t.name.as_str()),
            ("default", "vllm-0")
        );
        assert!(parse_target_flag("nope").is_err());
    }
}
