//! What a ScaledObject's trigger asks for: the `scalerMetadata` KEDA forwards, read into a
//! validated [`ScalerQuery`].
//!
//! Owns: the trigger's metadata keys, their meaning and validation, reporting every problem at
//! once. Pure: no tonic or store types. Does not own measuring (the external-metric reading
//! in [`crate::api`]) or gRPC status codes ([`super::service`]).

use crate::api::WORKLOAD_LABEL;
use crate::catalogue::{lookup, MetricDef};
use crate::selector::Selector;
use std::collections::HashMap;

/// Metadata key: the catalogue name of the signal (`inferscale_queue_depth`, …). Required.
pub const METRIC_NAME_KEY: &str = "metricName";
/// Metadata key: the workload (Deployment, StatefulSet, … anywhere in the pods' owner chain)
/// whose pods are measured; shorthand for `workload=<name>` in the selector.
pub const WORKLOAD_KEY: &str = "workload";
/// Metadata key: a Kubernetes label selector, with the same keys as the external metrics
/// API's (`workload`, `workload_kind`, `model_name`, and pod labels).
pub const LABEL_SELECTOR_KEY: &str = "labelSelector";
/// Metadata key: the HPA target per replica (KEDA's `AverageValue` by default). Required.
pub const TARGET_KEY: &str = "targetValue";
/// Metadata key: the value above which the workload is active (KEDA's activation); 0 when
/// absent.
pub const ACTIVATION_KEY: &str = "activationTargetValue";

/// Keys of KEDA's own that a trigger's metadata may hold (KEDA forwards the whole map):
/// accepted and ignored. The TLS ones belong in a TriggerAuthentication, but KEDA's docs
/// still show them in metadata.
const KEDA_OWN_KEYS: [&str; 7] = [
    "scalerAddress",
    "enableTLS",
    "unsafeSsl",
    "caCert",
    "tlsClientCert",
    "tlsClientKey",
    "tlsCertFile",
];

/// Longest object name Kubernetes accepts (a DNS subdomain).
const MAX_NAME_LENGTH: usize = 253;

/// One problem with a trigger's metadata.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// A required key is absent or empty.
    #[error("metadata {0} is required")]
    Missing(&'static str),
    /// `metricName` names no signal the adapter serves.
    #[error("metadata metricName {0:?} is not a metric the adapter serves")]
    UnknownMetric(String),
    /// A number is not a finite number in its allowed range.
    #[error("metadata {key} {value:?} must be a number {range}")]
    BadNumber {
        key: &'static str,
        value: String,
        range: &'static str,
    },
    /// `workload` is not a Kubernetes object name.
    #[error("metadata workload {0:?} is not a Kubernetes object name")]
    BadWorkload(String),
    /// The selector (from `labelSelector` and `workload`) does not parse.
    #[error("metadata labelSelector/workload: {0}")]
    Selector(String),
    /// A key neither we nor KEDA define: most likely a typo whose intended setting would be
    /// silently ignored (a misspelt `workload` would measure the whole namespace).
    #[error("metadata {0:?} is not a key of the inferscale scaler (metricName, workload, labelSelector, targetValue, activationTargetValue)")]
    UnknownKey(String),
}

/// A trigger's request, validated.
#[derive(Debug, Clone)]
pub struct ScalerQuery {
    /// The signal.
    pub metric: &'static MetricDef,
    /// Which pods of the namespace count.
    pub selector: Selector,
    /// The selector as the metadata wrote it (empty: every serving pod), for messages.
    pub selector_text: String,
    /// The HPA target (> 0).
    pub target: f64,
    /// Active while the value is above this (≥ 0).
    pub activation: f64,
}

impl ScalerQuery {
    /// Reads a trigger's metadata; every problem is reported.
    pub fn from_metadata(
        metadata: &HashMap<String, String>,
    ) -> Result<ScalerQuery, Vec<QueryError>> {
        let mut errors = Vec::new();
        let value = |key: &str| {
            metadata
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let mut unknown: Vec<&String> = metadata
            .keys()
            .filter(|k| {
                ![
                    METRIC_NAME_KEY,
                    WORKLOAD_KEY,
                    LABEL_SELECTOR_KEY,
                    TARGET_KEY,
                    ACTIVATION_KEY,
                ]
                .contains(&k.as_str())
                    && !KEDA_OWN_KEYS.contains(&k.as_str())
            })
            .collect();
        unknown.sort();
        errors.extend(
            unknown
                .into_iter()
                .map(|k| QueryError::UnknownKey(k.clone())),
        );
        let metric = match value(METRIC_NAME_KEY) {
            None => {
                errors.push(QueryError::Missing(METRIC_NAME_KEY));
                None
            }
            Some(name) => {
                let def = lookup(name);
                if def.is_none() {
                    errors.push(QueryError::UnknownMetric(name.to_owned()));
                }
                def
            }
        };
        let workload = value(WORKLOAD_KEY).filter(|w| {
            let is_name = w.len() <= MAX_NAME_LENGTH
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !is_name {
                errors.push(QueryError::BadWorkload((*w).to_owned()));
            }
            is_name
        });
        let selector_text = [
            value(LABEL_SELECTOR_KEY).map(str::to_owned),
            workload.map(|w| format!("{WORKLOAD_LABEL}={w}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(",");
        let selector = Selector::parse(&selector_text)
            .map_err(|e| errors.push(QueryError::Selector(e.to_string())))
            .ok();
        let target = match value(TARGET_KEY) {
            None => {
                errors.push(QueryError::Missing(TARGET_KEY));
                None
            }
            Some(text) => number(TARGET_KEY, text, |v| v > 0.0, "above 0", &mut errors),
        };
        let activation = match value(ACTIVATION_KEY) {
            None => Some(0.0),
            Some(text) => number(
                ACTIVATION_KEY,
                text,
                |v| v >= 0.0,
                "of 0 or more",
                &mut errors,
            ),
        };
        match (metric, selector, target, activation) {
            (Some(metric), Some(selector), Some(target), Some(activation)) if errors.is_empty() => {
                Ok(ScalerQuery {
                    metric,
                    selector,
                    selector_text,
                    target,
                    activation,
                })
            }
            _ => Err(errors),
        }
    }

    /// KEDA's activation rule: active while the value is above the activation value.
    pub fn is_active(&self, value: f64) -> bool {
        value > self.activation
    }
}

fn number(
    key: &'static str,
    text: &str,
    allowed: impl Fn(f64) -> bool,
    range: &'static str,
    errors: &mut Vec<QueryError>,
) -> Option<f64> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && allowed(v) => Some(v),
        _ => {
            errors.push(QueryError::BadNumber {
                key,
                value: text.to_owned(),
                range,
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_workload_trigger_reads_as_a_selector_target_and_activation() {
        let query = ScalerQuery::from_metadata(&metadata(&[
            ("scalerAddress", "inferscale-adapter.inferscale:9443"),
            ("enableTLS", "true"),
            ("metricName", "inferscale_queue_depth"),
            ("workload", "llama"),
            ("labelSelector", "model_name=llama-3-8b"),
            ("targetValue", "4"),
            ("activationTargetValue", "0.5"),
        ]))
        .unwrap();
        assert_eq!(query.metric.name, "inferscale_queue_depth");
        assert_eq!(
            query.selector,
            Selector::parse("model_name=llama-3-8b,workload=llama").unwrap()
        );
        assert_eq!((query.target, query.activation), (4.0, 0.5));
        // KEDA: active strictly above the activation value.
        assert!(!query.is_active(0.5));
        assert!(query.is_active(0.51));
    }

    #[test]
    fn activation_defaults_to_zero_so_any_value_above_zero_is_active() {
        let query = ScalerQuery::from_metadata(&metadata(&[
            ("metricName", "inferscale_running"),
            ("targetValue", "8"),
        ]))
        .unwrap();
        assert_eq!(query.activation, 0.0);
        assert!(!query.is_active(0.0));
        assert!(query.is_active(1.0));
        assert!(
            query.selector.is_empty(),
            "no selector: the whole namespace"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = ScalerQuery::from_metadata(&metadata(&[
            ("metricName", "vllm_queue"),
            ("workloadd", "llama"),
            ("labelSelector", "a in (b"),
            ("targetValue", "0"),
            ("activationTargetValue", "NaN"),
        ]))
        .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert_eq!(errors[0], QueryError::UnknownKey("workloadd".into()));
        assert!(errors.contains(&QueryError::UnknownMetric("vllm_queue".into())));
        assert!(errors.iter().any(|e| matches!(
            e,
            QueryError::BadNumber {
                key: "targetValue",
                ..
            }
        )));
        assert!(errors.iter().any(|e| matches!(
            e,
            QueryError::BadNumber {
                key: "activationTargetValue",
                ..
            }
        )));
        assert!(errors.iter().any(|e| matches!(e, QueryError::Selector(_))));
    }

    #[test]
    fn metric_name_and_target_are_required() {
        let errors = ScalerQuery::from_metadata(&metadata(&[("workload", "llama")])).unwrap_err();
        assert_eq!(
            errors,
            vec![
                QueryError::Missing("metricName"),
                QueryError::Missing("targetValue")
            ]
        );
    }

    #[test]
    fn a_workload_that_is_no_object_name_is_refused() {
        // A comma would smuggle a second requirement into the selector.
        let errors = ScalerQuery::from_metadata(&metadata(&[
            ("metricName", "inferscale_running"),
            ("workload", "llama,model_name=x"),
            ("targetValue", "1"),
        ]))
        .unwrap_err();
        assert_eq!(
            errors,
            vec![QueryError::BadWorkload("llama,model_name=x".into())]
        );
    }
}
