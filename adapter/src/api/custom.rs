//! `custom.metrics.k8s.io` v1beta1/v1beta2 values: pods, workloads (any owner kind), and the
//! root-scoped namespace and node objects.
//!
//! A pod is in an answer only when the store says it is servable and the metric has a value
//! for it; everything else is left out (lists) or answered 404 (single objects) — never 0.
//! Answers are typed, borrowed structs in the shape of the version asked for.

use super::discovery::CUSTOM_VERSIONS;
use super::values::{
    json_response, measure, metric_def, parse_selector, ApiPath, ApiQuery, EmptyListMeta,
    ListOptions, Measured,
};
use super::{check_version, ApiError, AppState, CUSTOM_GROUP};
use crate::catalogue::MetricDef;
use crate::selector::Selector;
use crate::store::{EnginePod, OwnerRef};
use crate::warm_pools::PoolMetric;
use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use std::collections::BTreeMap;

/// What every custom-metrics request asks, decoded and checked.
struct MetricQuery<'a> {
    version: &'a str,
    def: &'static MetricDef,
    /// `labelSelector`: which pods.
    pods: Selector,
    /// `metricLabelSelector`: which series of a pod (our series carry one label,
    /// `model_name`; see [`super::values::measure`] for labels they do not carry).
    series: Selector,
}

impl<'a> MetricQuery<'a> {
    /// Checks the version, finds the metric (404 naming `resource` if unknown) and parses
    /// both selectors.
    fn parse(
        version: &'a str,
        metric: &str,
        resource: &str,
        options: &ListOptions,
    ) -> Result<Self, ApiError> {
        check_version(version, &CUSTOM_VERSIONS)?;
        let def = metric_def(metric, resource)?;
        let pods = parse_selector(options.label_selector.as_deref())?;
        let series = parse_selector(options.metric_label_selector.as_deref())?;
        Ok(MetricQuery {
            version,
            def,
            pods,
            series,
        })
    }

    fn measure(&self, pods: &[&EnginePod]) -> Option<Measured> {
        measure(self.def, pods, &self.series)
    }
}

/// `v1.ObjectReference` of the described object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct DescribedObject<'a> {
    kind: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    name: &'a str,
    api_version: &'a str,
}

impl<'a> DescribedObject<'a> {
    fn pod(pod: &'a EnginePod) -> Self {
        DescribedObject {
            kind: "Pod",
            namespace: &pod.target.key.namespace,
            name: &pod.target.key.name,
            api_version: "/v1",
        }
    }
}

/// `MetricIdentifier` (v1beta2): the metric's name; we never echo a selector.
#[derive(Debug, Serialize)]
struct MetricIdentifier<'a> {
    name: &'a str,
}

/// One item of a `MetricValueList`, in the shape of the version asked for. Typed and
/// borrowed rather than a `serde_json::Value` tree: a 1,000-pod list built as maps spent
/// most of its time allocating and freeing them.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum MetricValue<'a> {
    #[serde(rename_all = "camelCase")]
    V1beta1 {
        described_object: DescribedObject<'a>,
        metric_name: &'a str,
        timestamp: String,
        window: i64,
        value: String,
        /// Always null: the value is not for a label-selected series.
        selector: Option<()>,
    },
    #[serde(rename_all = "camelCase")]
    V1beta2 {
        described_object: DescribedObject<'a>,
        metric: MetricIdentifier<'a>,
        timestamp: String,
        window_seconds: i64,
        value: String,
    },
}

impl<'a> MetricValue<'a> {
    fn new(
        version: &str,
        name: &'a str,
        described_object: DescribedObject<'a>,
        measured: &Measured,
    ) -> Option<MetricValue<'a>> {
        let value = measured.quantity()?;
        let timestamp = measured.timestamp();
        Some(if version == "v1beta1" {
            MetricValue::V1beta1 {
                described_object,
                metric_name: name,
                timestamp,
                window: measured.window_secs,
                value,
                selector: None,
            }
        } else {
            MetricValue::V1beta2 {
                described_object,
                metric: MetricIdentifier { name },
                timestamp,
                window_seconds: measured.window_secs,
                value,
            }
        })
    }

    fn described_object(&self) -> &DescribedObject<'a> {
        match self {
            MetricValue::V1beta1 {
                described_object, ..
            }
            | MetricValue::V1beta2 {
                described_object, ..
            } => described_object,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricValueList<'a> {
    kind: &'static str,
    api_version: String,
    metadata: EmptyListMeta,
    items: Vec<MetricValue<'a>>,
}

/// About what one serialized item takes, to size the buffer once.
const ITEM_JSON_BYTES: usize = 256;

/// The list as a JSON response, serialized while the pods it borrows from are alive.
fn value_list(version: &str, items: Vec<MetricValue<'_>>) -> Response {
    let capacity = ITEM_JSON_BYTES * (items.len() + 1);
    let list = MetricValueList {
        kind: "MetricValueList",
        api_version: format!("{CUSTOM_GROUP}/{version}"),
        metadata: EmptyListMeta {},
        items,
    };
    json_response(&list, capacity)
}

/// A workload resource as it appears in a path: `deployments.apps`, `statefulsets.apps`,
/// `leaderworkersets.leaderworkerset.x-k8s.io`, or any other owner kind's plural.
struct WorkloadResource {
    plural: String,
    group: Option<String>,
}

impl WorkloadResource {
    fn parse(resource: &str) -> WorkloadResource {
        match resource.split_once('.') {
            Some((plural, group)) => WorkloadResource {
                plural: plural.to_owned(),
                group: Some(group.to_owned()),
            },
            None => WorkloadResource {
                plural: resource.to_owned(),
                group: None,
            },
        }
    }

    /// Kubernetes kinds pluralise as lower-case kind + "s" for every workload kind we know
    /// of (built-in and CRDs such as LeaderWorkerSet or InferenceService), so owner kinds
    /// that appear after start-up are matched without API discovery.
    fn matches(&self, owner: &OwnerRef) -> bool {
        let plural = format!("{}s", owner.kind.to_ascii_lowercase());
        plural == self.plural && self.group.as_deref().is_none_or(|g| g == owner.group())
    }
}

/// `GET /apis/custom.metrics.k8s.io/{v}/namespaces/{ns}/{resource}/{name}/{metric}`: pods
/// (`pods/NAME` or `pods/*`) or workloads (`deployments.apps/NAME`, any owner kind, or `*`).
pub async fn namespaced_object_metric(
    State(state): State<AppState>,
    ApiPath((version, namespace, resource, name, metric)): ApiPath<(
        String,
        String,
        String,
        String,
        String,
    )>,
    ApiQuery(options): ApiQuery<ListOptions>,
) -> Result<Response, ApiError> {
    if let Some(pool_metric) = PoolMetric::parse(&metric) {
        return pool_answer(&state, &version, &namespace, &resource, &name, pool_metric);
    }
    let query = MetricQuery::parse(&version, &metric, &resource, &options)?;
    let pods = state.view.engine_pods(Some(&namespace), state.now());
    let pods: Vec<&EnginePod> = pods
        .iter()
        .filter(|p| query.pods.matches(&p.target.labels))
        .collect();
    let items = if resource == "pods" {
        pod_items(&query, &pods, &name)
    } else {
        workload_items(&query, &pods, &namespace, &resource, &name)
    };
    if items.is_empty() && name != "*" {
        return Err(ApiError::NoValue {
            metric,
            resource,
            name,
        });
    }
    Ok(value_list(&version, items))
}

/// A WarmPool's value on its target workload (`deployments.apps/NAME`, or `*` for every
/// target of that kind in the namespace). Only workloads have one: a pod is 404, and so is a
/// workload whose pool is missing or stale.
fn pool_answer(
    state: &AppState,
    version: &str,
    namespace: &str,
    resource: &str,
    name: &str,
    metric: PoolMetric,
) -> Result<Response, ApiError> {
    check_version(version, &CUSTOM_VERSIONS)?;
    let no_value = || ApiError::NoValue {
        metric: metric.name().to_owned(),
        resource: resource.to_owned(),
        name: name.to_owned(),
    };
    if resource == "pods" {
        return Err(no_value());
    }
    let values = state
        .pools
        .values(namespace, resource, name, metric, state.now());
    let items: Vec<MetricValue<'_>> = values
        .iter()
        .filter_map(|(target, value)| {
            let object = DescribedObject {
                kind: &value.kind,
                namespace,
                name: target,
                api_version: &value.api_version,
            };
            let measured = Measured {
                value: f64::from(value.value),
                taken_at: value.decided_at,
                // A decision, not a rate over a window.
                window_secs: 0,
            };
            MetricValue::new(version, metric.name(), object, &measured)
        })
        .collect();
    if items.is_empty() && name != "*" {
        return Err(no_value());
    }
    Ok(value_list(version, items))
}

/// One item per pod with a value (`name` `*`), or the named pod's.
fn pod_items<'p>(
    query: &MetricQuery<'_>,
    pods: &[&'p EnginePod],
    name: &str,
) -> Vec<MetricValue<'p>> {
    let item = |pod: &&'p EnginePod| {
        let measured = query.measure(&[pod])?;
        MetricValue::new(
            query.version,
            query.def.name,
            DescribedObject::pod(pod),
            &measured,
        )
    };
    if name != "*" {
        return pods
            .iter()
            .find(|p| p.target.key.name == name)
            .and_then(item)
            .into_iter()
            .collect();
    }
    let mut items: Vec<MetricValue<'p>> = pods.iter().filter_map(item).collect();
    items.sort_by(|a, b| a.described_object().name.cmp(b.described_object().name));
    items
}

/// One item per owner of the requested kind (`name` `*`), or the named owner's, each over
/// the pods it owns.
fn workload_items<'p>(
    query: &MetricQuery<'_>,
    pods: &[&'p EnginePod],
    namespace: &'p str,
    resource: &str,
    name: &str,
) -> Vec<MetricValue<'p>> {
    let workload = WorkloadResource::parse(resource);
    let mut by_owner: BTreeMap<&'p OwnerRef, Vec<&'p EnginePod>> = BTreeMap::new();
    for pod in pods {
        if let Some(owner) = pod.target.owners.iter().find(|o| workload.matches(o)) {
            if name == "*" || owner.name == name {
                by_owner.entry(owner).or_default().push(pod);
            }
        }
    }
    by_owner
        .into_iter()
        .filter_map(|(owner, pods)| {
            let measured = query.measure(&pods)?;
            let object = DescribedObject {
                kind: &owner.kind,
                namespace,
                name: &owner.name,
                api_version: &owner.api_version,
            };
            MetricValue::new(query.version, query.def.name, object, &measured)
        })
        .collect()
}

/// A root-scoped object a custom metric is asked for, measured over the pods it holds.
#[derive(Debug, Clone, Copy)]
enum Subject<'a> {
    /// `namespaces/NAME` (or `namespaces/NAME/metrics/M`): every pod of the namespace.
    Namespace(&'a str),
    /// `nodes/NAME`: every pod on the node.
    Node(&'a str),
}

impl<'a> Subject<'a> {
    fn resource(self) -> &'static str {
        match self {
            Subject::Namespace(_) => "namespaces",
            Subject::Node(_) => "nodes",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Subject::Namespace(_) => "Namespace",
            Subject::Node(_) => "Node",
        }
    }

    fn name(self) -> &'a str {
        match self {
            Subject::Namespace(name) | Subject::Node(name) => name,
        }
    }

    /// The namespace to list pods from; `None` lists every namespace.
    fn namespace(self) -> Option<&'a str> {
        match self {
            Subject::Namespace(name) => Some(name),
            Subject::Node(_) => None,
        }
    }

    fn holds(self, pod: &EnginePod) -> bool {
        match self {
            Subject::Namespace(name) => pod.target.key.namespace == name,
            Subject::Node(name) => pod.target.node.as_deref() == Some(name),
        }
    }
}

/// `GET /apis/custom.metrics.k8s.io/{v}/namespaces/{ns}/metrics/{metric}`: the namespace
/// object itself, over every pod in it.
pub async fn namespace_metric(
    State(state): State<AppState>,
    ApiPath((version, namespace, metric)): ApiPath<(String, String, String)>,
    ApiQuery(options): ApiQuery<ListOptions>,
) -> Result<Response, ApiError> {
    subject_metric(
        &state,
        &version,
        &metric,
        &options,
        Subject::Namespace(&namespace),
    )
}

/// `GET /apis/custom.metrics.k8s.io/{v}/{resource}/{name}/{metric}` for root-scoped objects:
/// `namespaces/NS` (every pod of the namespace) and `nodes/NODE` (every pod on the node).
pub async fn cluster_object_metric(
    State(state): State<AppState>,
    ApiPath((version, resource, name, metric)): ApiPath<(String, String, String, String)>,
    ApiQuery(options): ApiQuery<ListOptions>,
) -> Result<Response, ApiError> {
    let subject = match resource.as_str() {
        "namespaces" => Subject::Namespace(&name),
        "nodes" => Subject::Node(&name),
        _ => {
            check_version(&version, &CUSTOM_VERSIONS)?;
            return Err(ApiError::UnknownResource { resource });
        }
    };
    subject_metric(&state, &version, &metric, &options, subject)
}

/// One value for `subject` over the pods it holds, or 404.
fn subject_metric(
    state: &AppState,
    version: &str,
    metric: &str,
    options: &ListOptions,
    subject: Subject<'_>,
) -> Result<Response, ApiError> {
    let query = MetricQuery::parse(version, metric, subject.resource(), options)?;
    let pods = state.view.engine_pods(subject.namespace(), state.now());
    let pods: Vec<&EnginePod> = pods
        .iter()
        .filter(|p| subject.holds(p) && query.pods.matches(&p.target.labels))
        .collect();
    let object = DescribedObject {
        kind: subject.kind(),
        namespace: "",
        name: subject.name(),
        api_version: "/v1",
    };
    let item = query
        .measure(&pods)
        .and_then(|measured| MetricValue::new(version, query.def.name, object, &measured))
        .ok_or_else(|| ApiError::NoValue {
            metric: metric.to_owned(),
            resource: subject.resource().to_owned(),
            name: subject.name().to_owned(),
        })?;
    Ok(value_list(version, vec![item]))
}
