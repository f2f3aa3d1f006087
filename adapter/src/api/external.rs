//! `external.metrics.k8s.io` v1beta1: one value over the pods of a namespace that a label
//! selector picks.
//!
//! Selector keys `model_name`, `workload` and `workload_kind` select models and workloads
//! (an owner anywhere in the pod's chain); every other key matches pod labels. The answer is
//! an `ExternalMetricValueList` with one item, or none when no servable pod has a value —
//! never a 0 and never a null value.

use super::discovery::EXTERNAL_VERSIONS;
use super::values::{
    json_response, measure, metric_def, parse_selector, ApiPath, ApiQuery, EmptyListMeta,
    ListOptions, Measured, MODEL_LABEL,
};
use super::{check_version, ApiError, AppState, EXTERNAL_GROUP};
use crate::catalogue::MetricDef;
use crate::selector::{Requirement, Selector};
use crate::store::EnginePod;
use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use std::collections::BTreeMap;

/// External-metric selector keys that name a workload rather than a pod label.
pub const WORKLOAD_LABEL: &str = "workload";
pub const WORKLOAD_KIND_LABEL: &str = "workload_kind";

/// `ExternalMetricValue` (external_metrics/v1beta1).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalMetricValue<'a> {
    metric_name: &'a str,
    /// The equality requirements of the selector's model and workload keys, echoed as the
    /// series' labels.
    metric_labels: BTreeMap<&'a str, &'a str>,
    timestamp: String,
    window: i64,
    value: String,
}

/// `ExternalMetricValueList`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalMetricValueList<'a> {
    kind: &'static str,
    api_version: String,
    metadata: EmptyListMeta,
    items: Vec<ExternalMetricValue<'a>>,
}

/// `GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=`.
pub async fn external_metric(
    State(state): State<AppState>,
    ApiPath((version, namespace, metric)): ApiPath<(String, String, String)>,
    ApiQuery(options): ApiQuery<ListOptions>,
) -> Result<Response, ApiError> {
    if !state.external_metrics {
        return Err(ApiError::NotFound);
    }
    check_version(&version, &EXTERNAL_VERSIONS)?;
    let def = metric_def(&metric, "external")?;
    let query = ExternalQuery::new(&parse_selector(options.label_selector.as_deref())?);
    let pods = state.view.engine_pods(Some(&namespace), state.now());
    let item = query
        .measure(def, &query.select(&pods))
        .and_then(|measured| {
            Some(ExternalMetricValue {
                metric_name: def.name,
                metric_labels: query.echoed_labels(),
                value: measured.quantity()?,
                timestamp: measured.timestamp(),
                window: measured.window_secs,
            })
        });
    let list = ExternalMetricValueList {
        kind: "ExternalMetricValueList",
        api_version: format!("{EXTERNAL_GROUP}/{version}"),
        metadata: EmptyListMeta {},
        items: item.into_iter().collect(),
    };
    Ok(json_response(&list, 512))
}

/// An external-metric selector, split into what it says about models, workloads and pod
/// labels: the one reading of an external metric, shared by the `external.metrics.k8s.io`
/// route and KEDA's external scaler ([`crate::keda`]).
pub(crate) struct ExternalQuery {
    /// The model requirements, as a selector of series.
    series: Selector,
    workload: Vec<Requirement>,
    workload_kind: Vec<Requirement>,
    pod_selector: Selector,
}

impl ExternalQuery {
    pub(crate) fn new(selector: &Selector) -> ExternalQuery {
        let (model, rest) = selector.split_off(MODEL_LABEL);
        let (workload, rest) = rest.split_off(WORKLOAD_LABEL);
        let (workload_kind, pod_selector) = rest.split_off(WORKLOAD_KIND_LABEL);
        ExternalQuery {
            series: Selector {
                requirements: model,
            },
            workload,
            workload_kind,
            pod_selector,
        }
    }

    /// The pods the selector picks, servable or not.
    pub(crate) fn select<'a>(&self, pods: &'a [EnginePod]) -> Vec<&'a EnginePod> {
        pods.iter()
            .filter(|p| self.pod_selector.matches(&p.target.labels))
            .filter(|p| owned_by(p, &self.workload, &self.workload_kind))
            .collect()
    }

    /// The value of `def` over `pods` (only servable pods with a value count; `None` when
    /// none has one — missing, never 0).
    pub(crate) fn measure(&self, def: &MetricDef, pods: &[&EnginePod]) -> Option<Measured> {
        measure(def, pods, &self.series)
    }

    /// The equality requirements of the model and workload keys, as the series' labels.
    fn echoed_labels(&self) -> BTreeMap<&str, &str> {
        echoed_labels([
            &self.series.requirements,
            &self.workload,
            &self.workload_kind,
        ])
    }
}

/// Whether an owner in `pod`'s chain meets every workload and workload-kind requirement
/// (any pod, without such requirements).
fn owned_by(pod: &EnginePod, workload: &[Requirement], workload_kind: &[Requirement]) -> bool {
    if workload.is_empty() && workload_kind.is_empty() {
        return true;
    }
    pod.target.owners.iter().any(|o| {
        let labels = BTreeMap::from([
            (WORKLOAD_LABEL.to_owned(), o.name.clone()),
            (WORKLOAD_KIND_LABEL.to_owned(), o.kind.clone()),
        ]);
        workload
            .iter()
            .chain(workload_kind)
            .all(|r| r.matches(&labels))
    })
}

/// The equality requirements among `requirements`, as labels.
fn echoed_labels(requirements: [&[Requirement]; 3]) -> BTreeMap<&str, &str> {
    requirements
        .into_iter()
        .flatten()
        .filter_map(|r| match r {
            Requirement::Equals(k, v) => Some((k.as_str(), v.as_str())),
            _ => None,
        })
        .collect()
}
