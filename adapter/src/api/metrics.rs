//! Metric values: `custom.metrics.k8s.io` object and pod metrics, `external.metrics.k8s.io`.
//!
//! A pod is in an answer only when the store says it is servable and the metric has a value
//! for it; everything else is left out (lists) or answered 404 (single objects) — never 0.
//! Values for several pods (a Deployment, a namespace, an external metric) combine as the
//! metric's definition says: sums, means, or percentiles of merged histograms.

use super::discovery::{CUSTOM_VERSIONS, EXTERNAL_VERSIONS};
use super::{check_version, ApiError, AppState, CUSTOM_GROUP, EXTERNAL_GROUP};
use crate::catalogue::{lookup, MetricDef, Source};
use crate::quantity::format_quantity;
use crate::selector::{Requirement, Selector};
use crate::store::{OwnerRef, PodView};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use inferscale_metrics::signals::{ModelSignals, Reading};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The metric label our series carry; `metricLabelSelector` selects on it.
pub const MODEL_LABEL: &str = "model_name";
/// External-metric selector keys that name a workload rather than a pod label.
pub const WORKLOAD_LABEL: &str = "workload";
pub const WORKLOAD_KIND_LABEL: &str = "workload_kind";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListOptions {
    label_selector: Option<String>,
    metric_label_selector: Option<String>,
}

fn parse_selector(text: Option<&str>) -> Result<Selector, ApiError> {
    Selector::parse(text.unwrap_or("")).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// One value with where it came from.
struct Measured {
    value: f64,
    /// Oldest scrape that contributed, Unix seconds.
    taken_at: f64,
    window_secs: i64,
}

/// The per-model signals of a pod that `model` selects (all models combined when there is
/// no model requirement).
fn selected_models<'a>(pod: &'a PodView, model: &[Requirement]) -> Vec<&'a ModelSignals> {
    let Some(signals) = &pod.signals else {
        return Vec::new();
    };
    if model.is_empty() {
        return vec![&signals.combined];
    }
    signals
        .models
        .iter()
        .filter(|(name, _)| {
            let labels = BTreeMap::from([(MODEL_LABEL.to_owned(), (*name).clone())]);
            model.iter().all(|r| r.matches(&labels))
        })
        .map(|(_, m)| m)
        .collect()
}

fn window_of(def: &MetricDef, pod: &PodView) -> i64 {
    let windowed = matches!(
        def.source,
        Source::Rate(_) | Source::Quantile(..) | Source::MeanLatency(_)
    );
    match (&pod.signals, windowed) {
        // Instantaneous values carry a zero window, as the API documents.
        (_, false) | (None, true) => 0,
        (Some(s), true) => s.window.seconds.map_or(0, |w| w.round() as i64),
    }
}

/// The value of `def` over `pods` (only servable pods count).
fn measure(def: &MetricDef, pods: &[&PodView], model: &[Requirement]) -> Option<Measured> {
    let mut parts: Vec<(&ModelSignals, Reading)> = Vec::new();
    let mut taken_at = f64::INFINITY;
    let mut window_secs = 0;
    for pod in pods.iter().filter(|p| p.servable.is_ok()) {
        let Some(signals) = &pod.signals else {
            continue;
        };
        let mut contributed = false;
        for model_signals in selected_models(pod, model) {
            let reading = def.replica_value(
                model_signals,
                signals.kv_capacity_tokens,
                pod.gpus.as_deref(),
            );
            contributed |= reading.value().is_some();
            parts.push((model_signals, reading));
        }
        if contributed {
            taken_at = taken_at.min(signals.taken_at);
            window_secs = window_secs.max(window_of(def, pod));
        }
    }
    if !taken_at.is_finite() {
        return None;
    }
    let value = if parts.len() == 1 {
        parts[0].1.value()
    } else {
        def.combined_value(parts).value()
    }?;
    value.is_finite().then_some(Measured {
        value,
        taken_at,
        window_secs,
    })
}

fn timestamp(unix: f64) -> String {
    let dt = DateTime::<Utc>::from_timestamp(unix.floor() as i64, ((unix.fract()) * 1e9) as u32)
        .unwrap_or_default();
    dt.to_rfc3339_opts(SecondsFormat::Secs, true)
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
        def: &'a MetricDef,
        described_object: DescribedObject<'a>,
        measured: &Measured,
    ) -> Option<MetricValue<'a>> {
        // A value with no quantity form (never produced by `measure`) is left out, not null.
        let value = format_quantity(measured.value)?;
        let timestamp = timestamp(measured.taken_at);
        Some(if version == "v1beta1" {
            MetricValue::V1beta1 {
                described_object,
                metric_name: def.name,
                timestamp,
                window: measured.window_secs,
                value,
                selector: None,
            }
        } else {
            MetricValue::V1beta2 {
                described_object,
                metric: MetricIdentifier { name: def.name },
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

/// `ListMeta` of our lists: always empty (no continue token, no resource version).
#[derive(Debug, Serialize)]
struct EmptyListMeta {}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricValueList<'a> {
    kind: &'static str,
    api_version: String,
    metadata: EmptyListMeta,
    items: Vec<MetricValue<'a>>,
}

/// About what one serialized item takes, to size the buffer once (a 1,000-pod list is
/// ~200 KB; growing from empty copied it a dozen times).
const ITEM_JSON_BYTES: usize = 256;

/// The list as a JSON response, serialized while the pods it borrows from are alive.
fn value_list(version: &str, items: Vec<MetricValue<'_>>) -> Response {
    let mut body = Vec::with_capacity(ITEM_JSON_BYTES * (items.len() + 1));
    let list = MetricValueList {
        kind: "MetricValueList",
        api_version: format!("{CUSTOM_GROUP}/{version}"),
        metadata: EmptyListMeta {},
        items,
    };
    match serde_json::to_writer(&mut body, &list) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        // Serializing our own structs of strings and integers cannot fail; if it ever
        // does, say so rather than send half a body.
        Err(e) => {
            ApiError::Internal(format!("could not encode the metric list: {e}")).into_response()
        }
    }
}

fn metric_def(name: &str, resource: &str) -> Result<&'static MetricDef, ApiError> {
    lookup(name).ok_or_else(|| ApiError::UnknownMetric {
        metric: name.to_owned(),
        resource: resource.to_owned(),
    })
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
    /// that appear after start-up are matched without discovery.
    fn matches(&self, owner: &OwnerRef) -> bool {
        let plural = format!("{}s", owner.kind.to_ascii_lowercase());
        plural == self.plural && self.group.as_deref().is_none_or(|g| g == owner.group())
    }
}

fn describe_pod<'a>(pod: &'a PodView) -> DescribedObject<'a> {
    DescribedObject {
        kind: "Pod",
        namespace: &pod.target.key.namespace,
        name: &pod.target.key.name,
        api_version: "/v1",
    }
}

/// `GET /apis/custom.metrics.k8s.io/{v}/namespaces/{ns}/{resource}/{name}/{metric}`
pub async fn namespaced_object_metric(
    State(state): State<AppState>,
    Path((version, namespace, resource, name, metric)): Path<(
        String,
        String,
        String,
        String,
        String,
    )>,
    Query(options): Query<ListOptions>,
) -> Result<Response, ApiError> {
    check_version(&version, &CUSTOM_VERSIONS)?;
    let def = metric_def(&metric, &resource)?;
    let selector = parse_selector(options.label_selector.as_deref())?;
    let (model, _) =
        parse_selector(options.metric_label_selector.as_deref())?.split_off(MODEL_LABEL);
    let pods = state.view.engine_pods(Some(&namespace), state.now());
    let pods: Vec<&PodView> = pods
        .iter()
        .filter(|p| selector.matches(&p.target.labels))
        .collect();

    if resource == "pods" {
        if name == "*" {
            let mut items: Vec<MetricValue<'_>> = pods
                .iter()
                .filter_map(|pod| {
                    let measured = measure(def, &[pod], &model)?;
                    MetricValue::new(&version, def, describe_pod(pod), &measured)
                })
                .collect();
            items.sort_by(|a, b| a.described_object().name.cmp(b.described_object().name));
            return Ok(value_list(&version, items));
        }
        let item = pods
            .iter()
            .find(|p| p.target.key.name == name)
            .and_then(|pod| {
                let measured = measure(def, &[pod], &model)?;
                MetricValue::new(&version, def, describe_pod(pod), &measured)
            });
        return match item {
            Some(item) => Ok(value_list(&version, vec![item])),
            None => Err(ApiError::NoValue {
                metric: metric.clone(),
                resource,
                name,
            }),
        };
    }

    let workload = WorkloadResource::parse(&resource);
    // Group the namespace's pods by the owner of the requested kind.
    let mut by_owner: BTreeMap<&OwnerRef, Vec<&PodView>> = BTreeMap::new();
    for pod in &pods {
        if let Some(owner) = pod.target.owners.iter().find(|o| workload.matches(o)) {
            if name == "*" || owner.name == name {
                by_owner.entry(owner).or_default().push(pod);
            }
        }
    }
    let items: Vec<MetricValue<'_>> = by_owner
        .iter()
        .filter_map(|(owner, pods)| {
            let measured = measure(def, pods, &model)?;
            let object = DescribedObject {
                kind: &owner.kind,
                namespace: &namespace,
                name: &owner.name,
                api_version: &owner.api_version,
            };
            MetricValue::new(&version, def, object, &measured)
        })
        .collect();
    if items.is_empty() && name != "*" {
        return Err(ApiError::NoValue {
            metric,
            resource,
            name,
        });
    }
    Ok(value_list(&version, items))
}

/// `GET /apis/custom.metrics.k8s.io/{v}/namespaces/{ns}/metrics/{metric}`: the namespace
/// object itself, over every pod in it.
pub async fn namespace_metric(
    State(state): State<AppState>,
    Path((version, namespace, metric)): Path<(String, String, String)>,
    Query(options): Query<ListOptions>,
) -> Result<Response, ApiError> {
    object_over_pods(
        &state,
        &version,
        "namespaces",
        &namespace,
        &metric,
        &options,
        |_| true,
        "Namespace",
    )
}

/// `GET /apis/custom.metrics.k8s.io/{v}/{resource}/{name}/{metric}` for root-scoped objects:
/// `namespaces/NS` (every pod of the namespace) and `nodes/NODE` (every pod on the node).
pub async fn cluster_object_metric(
    State(state): State<AppState>,
    Path((version, resource, name, metric)): Path<(String, String, String, String)>,
    Query(options): Query<ListOptions>,
) -> Result<Response, ApiError> {
    match resource.as_str() {
        "namespaces" => {
            let ns = name.clone();
            object_over_pods(
                &state,
                &version,
                "namespaces",
                &name,
                &metric,
                &options,
                move |p| p.target.key.namespace == ns,
                "Namespace",
            )
        }
        "nodes" => {
            let node = name.clone();
            object_over_pods(
                &state,
                &version,
                "nodes",
                &name,
                &metric,
                &options,
                move |p| p.target.node.as_deref() == Some(node.as_str()),
                "Node",
            )
        }
        _ => {
            check_version(&version, &CUSTOM_VERSIONS)?;
            Err(ApiError::UnknownResource { resource })
        }
    }
}

#[allow(clippy::too_many_arguments)] // Each argument is a distinct part of the request.
fn object_over_pods(
    state: &AppState,
    version: &str,
    resource: &str,
    name: &str,
    metric: &str,
    options: &ListOptions,
    keep: impl Fn(&PodView) -> bool,
    kind: &str,
) -> Result<Response, ApiError> {
    check_version(version, &CUSTOM_VERSIONS)?;
    let def = metric_def(metric, resource)?;
    let selector = parse_selector(options.label_selector.as_deref())?;
    let (model, _) =
        parse_selector(options.metric_label_selector.as_deref())?.split_off(MODEL_LABEL);
    let namespace = (kind == "Namespace").then_some(name);
    let pods = state.view.engine_pods(namespace, state.now());
    let pods: Vec<&PodView> = pods
        .iter()
        .filter(|p| keep(p) && selector.matches(&p.target.labels))
        .collect();
    let object = DescribedObject {
        kind,
        namespace: "",
        name,
        api_version: "/v1",
    };
    let item = measure(def, &pods, &model)
        .and_then(|measured| MetricValue::new(version, def, object, &measured))
        .ok_or_else(|| ApiError::NoValue {
            metric: metric.to_owned(),
            resource: resource.to_owned(),
            name: name.to_owned(),
        })?;
    Ok(value_list(version, vec![item]))
}

/// `GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=`:
/// one value over the namespace's pods the selector picks. Selector keys `model_name`,
/// `workload` and `workload_kind` select models and workloads; all others match pod labels.
pub async fn external_metric(
    State(state): State<AppState>,
    Path((version, namespace, metric)): Path<(String, String, String)>,
    Query(options): Query<ListOptions>,
) -> Result<Json<Value>, ApiError> {
    if !state.external_metrics {
        return Err(ApiError::NotFound);
    }
    check_version(&version, &EXTERNAL_VERSIONS)?;
    let def = metric_def(&metric, "external")?;
    let selector = parse_selector(options.label_selector.as_deref())?;
    let (model, rest) = selector.split_off(MODEL_LABEL);
    let (workload, rest) = rest.split_off(WORKLOAD_LABEL);
    let (workload_kind, pod_selector) = rest.split_off(WORKLOAD_KIND_LABEL);
    let pods = state.view.engine_pods(Some(&namespace), state.now());
    let pods: Vec<&PodView> = pods
        .iter()
        .filter(|p| pod_selector.matches(&p.target.labels))
        .filter(|p| {
            if workload.is_empty() && workload_kind.is_empty() {
                return true;
            }
            p.target.owners.iter().any(|o| {
                let labels = BTreeMap::from([
                    (WORKLOAD_LABEL.to_owned(), o.name.clone()),
                    (WORKLOAD_KIND_LABEL.to_owned(), o.kind.clone()),
                ]);
                workload
                    .iter()
                    .chain(&workload_kind)
                    .all(|r| r.matches(&labels))
            })
        })
        .collect();
    let items: Vec<Value> = match measure(def, &pods, &model) {
        None => Vec::new(),
        Some(measured) => {
            // Echo equality requirements as the series' labels.
            let metric_labels: BTreeMap<&str, &str> = model
                .iter()
                .chain(&workload)
                .chain(&workload_kind)
                .filter_map(|r| match r {
                    Requirement::Equals(k, v) => Some((k.as_str(), v.as_str())),
                    _ => None,
                })
                .collect();
            vec![json!({
                "metricName": def.name,
                "metricLabels": metric_labels,
                "timestamp": timestamp(measured.taken_at),
                "window": measured.window_secs,
                "value": format_quantity(measured.value),
            })]
        }
    };
    Ok(Json(json!({
        "kind": "ExternalMetricValueList",
        "apiVersion": format!("{EXTERNAL_GROUP}/{version}"),
        "metadata": {},
        "items": items,
    })))
}
