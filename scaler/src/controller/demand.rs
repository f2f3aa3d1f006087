//! Demand as any client reads it: the target's Object metrics from the adapter's custom
//! metrics API (`custom.metrics.k8s.io/v1beta2`), through the apiserver's aggregator with the
//! controller's own credentials.
//!
//! Owns: which metrics the warm pool reads ([`DemandSample`]), the paths, and decoding a
//! `MetricValueList` and its Kubernetes quantity. A metric the adapter cannot state (404: no
//! fresh scrape, no Ready pod) is *missing*, never 0.
//! Does not own: what the numbers mean for the decision.

use kube::Client;
use serde::Deserialize;

/// The custom metrics API version read (the HPA's preferred one).
const CUSTOM_METRICS: &str = "/apis/custom.metrics.k8s.io/v1beta2";

/// What the warm pool reads about its target at one sync; `None` is missing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DemandSample {
    /// Finished requests per second over the adapter's window.
    pub requests_per_second: Option<f64>,
    pub prompt_tokens_per_second: Option<f64>,
    pub generation_tokens_per_second: Option<f64>,
    /// Requests waiting, summed over the target's pods.
    pub queue_depth: Option<f64>,
    /// Requests running, summed.
    pub running: Option<f64>,
    /// Fleet TTFT p95 over the window, seconds.
    pub ttft_p95_seconds: Option<f64>,
    /// Mean KV-cache usage, 0–1.
    pub kv_cache_usage: Option<f64>,
    /// Seconds the prompt-token rate was measured over (its `windowSeconds`): a rate is the
    /// mean over its window, so it lags a ramp by half of it.
    pub rate_window_seconds: Option<f64>,
}

/// Stores one read value in its field.
type Setter = fn(&mut DemandSample, f64);

/// The metric names read, and where each lands.
const READS: [(&str, Setter); 7] = [
    ("inferscale_requests_per_second", |d, v| {
        d.requests_per_second = Some(v)
    }),
    ("inferscale_prompt_tokens_per_second", |d, v| {
        d.prompt_tokens_per_second = Some(v)
    }),
    ("inferscale_generation_tokens_per_second", |d, v| {
        d.generation_tokens_per_second = Some(v)
    }),
    ("inferscale_queue_depth", |d, v| d.queue_depth = Some(v)),
    ("inferscale_running", |d, v| d.running = Some(v)),
    ("inferscale_time_to_first_token_seconds_p95", |d, v| {
        d.ttft_p95_seconds = Some(v)
    }),
    ("inferscale_kv_cache_usage_ratio", |d, v| {
        d.kv_cache_usage = Some(v)
    }),
];

/// Why a read failed (other than the metric being missing).
#[derive(Debug, thiserror::Error)]
pub enum DemandError {
    /// The apiserver or the adapter behind it did not answer.
    #[error("reading {metric} of {target}")]
    Read {
        metric: &'static str,
        target: String,
        #[source]
        source: kube::Error,
    },
    /// The answer was not a MetricValueList with a quantity.
    #[error("decoding {metric} of {target}: {reason}")]
    Decode {
        metric: &'static str,
        target: String,
        reason: String,
    },
}

/// A workload as the custom metrics API names it: `deployments.apps/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadPath {
    pub namespace: String,
    /// Plural resource with its group, e.g. `deployments.apps` (core group: no suffix).
    pub resource: String,
    pub name: String,
}

impl WorkloadPath {
    pub fn metric_path(&self, metric: &str) -> String {
        format!(
            "{CUSTOM_METRICS}/namespaces/{}/{}/{}/{metric}",
            self.namespace, self.resource, self.name
        )
    }
}

#[derive(Deserialize)]
struct MetricValueList {
    items: Vec<MetricValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetricValue {
    value: String,
    /// Seconds a rate was measured over; optional, as another adapter may leave it out.
    window_seconds: Option<i64>,
}

/// Reads every demand metric of the workload. Missing metrics stay `None`; a failure of
/// the API itself (the aggregator cannot reach the adapter) is an error, so the caller can
/// tell "no data" from "no metrics API".
pub async fn read(client: &Client, target: &WorkloadPath) -> Result<DemandSample, DemandError> {
    let mut sample = DemandSample::default();
    let reads = READS
        .iter()
        .map(|(metric, _)| read_with_window(client, target, metric));
    let values = futures::future::join_all(reads).await;
    for ((metric, set), value) in READS.iter().zip(values) {
        if let Some((v, window)) = value? {
            set(&mut sample, v);
            if *metric == "inferscale_prompt_tokens_per_second" {
                sample.rate_window_seconds = window.filter(|w| *w > 0).map(|w| w as f64);
            }
        }
    }
    Ok(sample)
}

async fn read_one(
    client: &Client,
    target: &WorkloadPath,
    metric: &'static str,
) -> Result<Option<f64>, DemandError> {
    Ok(read_with_window(client, target, metric).await?.map(|v| v.0))
}

/// A metric's value and its `windowSeconds`; `None` when the adapter cannot state it.
async fn read_with_window(
    client: &Client,
    target: &WorkloadPath,
    metric: &'static str,
) -> Result<Option<(f64, Option<i64>)>, DemandError> {
    let request = http::Request::get(target.metric_path(metric))
        .body(Vec::new())
        .map_err(|e| DemandError::Decode {
            metric,
            target: target.name.clone(),
            reason: e.to_string(),
        })?;
    let list: MetricValueList = match client.request(request).await {
        Ok(list) => list,
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
        Err(source) => {
            return Err(DemandError::Read {
                metric,
                target: target.name.clone(),
                source,
            })
        }
    };
    let Some(item) = list.items.first() else {
        return Ok(None);
    };
    parse_quantity(&item.value)
        .map(|v| Some((v, item.window_seconds)))
        .ok_or_else(|| DemandError::Decode {
            metric,
            target: target.name.clone(),
            reason: format!("{:?} is not a quantity", item.value),
        })
}

/// Requests in flight on one pod (running + waiting), as the adapter last scraped them;
/// `None` when the adapter has no fresh value for it.
pub async fn pod_in_flight(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> Result<Option<f64>, DemandError> {
    let target = WorkloadPath {
        namespace: namespace.to_owned(),
        resource: "pods".into(),
        name: pod.to_owned(),
    };
    let running = read_one(client, &target, "inferscale_running").await?;
    let waiting = read_one(client, &target, "inferscale_queue_depth").await?;
    Ok(running.zip(waiting).map(|(r, w)| r + w))
}

/// Parses a Kubernetes quantity (`3`, `1500m`, `2.5`, `4k`, `1Gi`, `1e3`) to a number.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some(value * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_the_adapter_and_kubernetes_write() {
        assert_eq!(parse_quantity("3"), Some(3.0));
        assert_eq!(parse_quantity("1500m"), Some(1.5));
        assert_eq!(parse_quantity("475u"), Some(0.000475));
        assert_eq!(parse_quantity("2k"), Some(2000.0));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("-2"), Some(-2.0));
        assert_eq!(parse_quantity("12x"), None);
        assert_eq!(parse_quantity(""), None);
        assert_eq!(parse_quantity("NaN"), None);
    }

    #[test]
    fn object_metric_path() {
        let w = WorkloadPath {
            namespace: "serving".into(),
            resource: "deployments.apps".into(),
            name: "llama".into(),
        };
        assert_eq!(
            w.metric_path("inferscale_queue_depth"),
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/serving/deployments.apps/llama/inferscale_queue_depth"
        );
    }
}
