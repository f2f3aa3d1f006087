//! What the custom and external metric routes share: decoding the query, measuring one
//! catalogue metric over a set of pods, and writing a typed answer.
//!
//! A pod is in a measurement only when the store says it is servable and the metric has a
//! value for it; everything else is left out — never 0. Values for several pods (a
//! Deployment, a namespace, an external metric) combine as the catalogue says, through
//! `inferscale_metrics::fleet`.

use super::ApiError;
use crate::catalogue::{lookup, MetricDef, Source};
use crate::selector::Selector;
use crate::store::EnginePod;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use inferscale_metrics::signals::{ModelSignals, Reading};
use inferscale_metrics::snapshot::UNLABELLED_MODEL;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The metric label our series carry; `metricLabelSelector` selects on it.
pub const MODEL_LABEL: &str = "model_name";

/// The query parameters of a metric request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListOptions {
    pub label_selector: Option<String>,
    pub metric_label_selector: Option<String>,
}

/// A path's parameters, decoded; a path that cannot be (invalid UTF-8 after
/// percent-decoding, say) is a `Status` 400 like every other error, never plain text.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "invalid request path: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// The query string, decoded; a malformed one (bad percent-encoding, invalid UTF-8, a
/// parameter given twice) is a `Status` 400.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "invalid query string: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// Parses a selector parameter; absent is the empty selector (everything).
pub(super) fn parse_selector(text: Option<&str>) -> Result<Selector, ApiError> {
    Selector::parse(text.unwrap_or("")).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The catalogue entry of `name`, or 404 naming the resource it was asked for.
pub(super) fn metric_def(name: &str, resource: &str) -> Result<&'static MetricDef, ApiError> {
    lookup(name).ok_or_else(|| ApiError::UnknownMetric {
        metric: name.to_owned(),
        resource: resource.to_owned(),
    })
}

/// One value with where it came from.
pub(crate) struct Measured {
    pub value: f64,
    /// Oldest scrape that contributed, Unix seconds.
    pub taken_at: f64,
    pub window_secs: i64,
}

impl Measured {
    /// The value as a quantity string (`None` for a value with no quantity form, which
    /// `measure` never produces; such an item is left out, never sent as null).
    pub fn quantity(&self) -> Option<String> {
        crate::quantity::format_quantity(self.value)
    }

    /// The time of the oldest scrape that contributed, RFC 3339 in UTC.
    pub fn timestamp(&self) -> String {
        let unix = self.taken_at;
        let dt = DateTime::<Utc>::from_timestamp(unix.floor() as i64, (unix.fract() * 1e9) as u32)
            .unwrap_or_default();
        dt.to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

/// The labels of one model's series: `model_name`, or none for the unlabelled model (TGI).
/// They are the only labels our series carry, so a metric label selector is matched
/// against exactly these.
fn series_labels(model: &str) -> BTreeMap<String, String> {
    if model == UNLABELLED_MODEL {
        BTreeMap::new()
    } else {
        BTreeMap::from([(MODEL_LABEL.to_owned(), model.to_owned())])
    }
}

/// The per-model signals of a pod whose series `series` selects, with Kubernetes label
/// semantics over [`series_labels`]: a requirement on a label the series do not have
/// selects nothing when it needs the label (`foo=bar`, `foo in (..)`, `foo`) and everything
/// when it needs its absence (`foo!=bar`, `foo notin (..)`, `!foo`) — as Prometheus matchers
/// (and so prometheus-adapter) do. All models combined when everything is selected.
fn selected_models<'a>(pod: &'a EnginePod, series: &Selector) -> Vec<&'a ModelSignals> {
    let Some(signals) = &pod.signals else {
        return Vec::new();
    };
    if series.is_empty() {
        return vec![&signals.combined];
    }
    let selected: Vec<&ModelSignals> = signals
        .models
        .iter()
        .filter(|(name, _)| series.matches(&series_labels(name)))
        .map(|(_, m)| &**m)
        .collect();
    if !selected.is_empty() && selected.len() == signals.models.len() {
        return vec![&signals.combined];
    }
    selected
}

fn window_of(def: &MetricDef, pod: &EnginePod) -> i64 {
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

/// The value of `def` over the series of `pods` that `series` selects (only servable pods
/// count).
pub(super) fn measure(def: &MetricDef, pods: &[&EnginePod], series: &Selector) -> Option<Measured> {
    let mut parts: Vec<(&ModelSignals, Reading)> = Vec::new();
    let mut taken_at = f64::INFINITY;
    let mut window_secs = 0;
    for pod in pods.iter().filter(|p| p.servable.is_ok()) {
        let Some(signals) = &pod.signals else {
            continue;
        };
        let mut contributed = false;
        for model_signals in selected_models(pod, series) {
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
    // One part is its own combination; taking it as it is skips cloning its histogram.
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

/// `ListMeta` of our lists: always empty (no continue token, no resource version).
#[derive(Debug, Serialize)]
pub(super) struct EmptyListMeta {}

/// A typed answer as a JSON response, serialized into a buffer sized once (`capacity`
/// bytes): a 1,000-pod list is ~200 KB, and growing from empty copied it a dozen times.
pub(super) fn json_response<T: Serialize>(answer: &T, capacity: usize) -> Response {
    let mut body = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut body, answer) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        // Serializing our own structs of strings and integers cannot fail; if it ever
        // does, say so rather than send half a body.
        Err(e) => ApiError::Internal(format!("could not encode the answer: {e}")).into_response(),
    }
}
