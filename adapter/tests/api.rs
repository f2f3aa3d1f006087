//! Router tests with no socket: every path, selector form and error of the metrics APIs,
//! with responses decoded into structs that mirror the Kubernetes Go types exactly
//! (`k8s.io/metrics/pkg/apis/custom_metrics/v1beta1|v1beta2`, `external_metrics/v1beta1`,
//! `metav1.Status`, discovery) with unknown fields refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first broken assumption"
)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use inferscale_adapter::api::health::Probes;
use inferscale_adapter::api::{router, AppState};
use inferscale_adapter::auth::AuthState;
use inferscale_adapter::store::{
    OwnerRef, PodKey, ScrapeSink, Store, Target, TargetKind, TargetRegistry,
};
use inferscale_adapter::telemetry::Telemetry;
use inferscale_metrics::histogram::Histogram;
use inferscale_metrics::profile::{
    CounterSignal, Engine, GaugeSignal, HistogramSignal, VLLM_TTFT_BUCKETS,
};
use inferscale_metrics::snapshot::EngineSnapshot;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tower::ServiceExt;

/// A fixed clock: the tests' scrapes happened at 1000 s and 1015 s.
fn test_clock() -> f64 {
    1016.0
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ObjectReference {
    kind: String,
    #[serde(default)]
    namespace: String,
    name: String,
    api_version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricIdentifier {
    name: String,
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "part of the shape; the tests send no metric selector back"
    )]
    selector: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetricValueV1beta2 {
    described_object: ObjectReference,
    metric: MetricIdentifier,
    timestamp: String,
    window_seconds: Option<i64>,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetricValueV1beta1 {
    described_object: ObjectReference,
    metric_name: String,
    timestamp: String,
    window: Option<i64>,
    value: String,
    selector: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetricValueList<T> {
    kind: String,
    api_version: String,
    metadata: serde_json::Value,
    items: Vec<T>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExternalMetricValue {
    metric_name: String,
    metric_labels: BTreeMap<String, String>,
    timestamp: String,
    window: Option<i64>,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Status {
    kind: String,
    api_version: String,
    metadata: serde_json::Value,
    status: String,
    message: String,
    reason: String,
    code: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApiResource {
    name: String,
    singular_name: String,
    namespaced: bool,
    kind: String,
    verbs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApiResourceList {
    kind: String,
    api_version: String,
    group_version: String,
    resources: Vec<ApiResource>,
}

fn owner(kind: &str, name: &str) -> OwnerRef {
    OwnerRef {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        name: name.into(),
    }
}

fn target(name: &str, labels: &[(&str, &str)], ready: bool, deployment: &str) -> Target {
    Target {
        key: PodKey::new("llm", name),
        uid: format!("uid-{name}"),
        kind: TargetKind::Engine,
        url: Some(format!("http://127.0.0.1:1/{name}")),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        node: Some("gpu-node-1".into()),
        ready,
        terminating: false,
        asleep: false,
        owners: vec![
            owner("ReplicaSet", &format!("{deployment}-abc")),
            owner("Deployment", deployment),
        ],
    }
}

/// A scrape: `waiting` requests queued per model, and TTFT observations (seconds) added
/// between the two scrapes.
fn scrape(t: f64, models: &[(&str, f64, &[f64])], prompt_tokens: f64) -> EngineSnapshot {
    let mut s = EngineSnapshot::new(t, Engine::Vllm);
    s.kv_capacity_tokens = Some(16000.0);
    for (model, waiting, ttft) in models {
        let m = s.model_mut(model);
        m.set_gauge(GaugeSignal::QueueDepth, *waiting);
        m.set_gauge(GaugeSignal::KvCacheUsage, 0.5);
        m.set_counter(CounterSignal::PromptTokens, prompt_tokens);
        let mut h = Histogram::empty(&VLLM_TTFT_BUCKETS);
        for v in *ttft {
            h.observe(*v);
        }
        m.set_histogram(HistogramSignal::TimeToFirstToken, h);
    }
    s
}

/// Store with: vllm-a (ready, model llama, 3 waiting, TTFT 0.3 s ×4), vllm-b (ready, models
/// llama 1 waiting and lora-x 2 waiting, TTFT 0.9 s ×2), vllm-c (not ready), vllm-d (scrape
/// failed), vllm-e (ready, never scraped) — all in Deployment `vllm` except vllm-b in `vllm-b`.
fn state(external: bool) -> AppState {
    let store = Arc::new(Store::new(60.0, 18.0));
    store.upsert_target(target(
        "vllm-a",
        &[("app", "vllm"), ("tier", "gold")],
        true,
        "vllm",
    ));
    store.upsert_target(target(
        "vllm-b",
        &[("app", "vllm"), ("tier", "silver")],
        true,
        "vllm-b",
    ));
    store.upsert_target(target("vllm-c", &[("app", "vllm")], false, "vllm"));
    store.upsert_target(target("vllm-d", &[("app", "vllm")], true, "vllm"));
    store.upsert_target(target("vllm-e", &[("app", "vllm")], true, "vllm"));
    let a = PodKey::new("llm", "vllm-a");
    store.record_engine_scrape(&a, scrape(1000.0, &[("llama", 3.0, &[])], 0.0), 0.01);
    store.record_engine_scrape(
        &a,
        scrape(1015.0, &[("llama", 3.0, &[0.3, 0.3, 0.3, 0.3])], 1500.0),
        0.01,
    );
    let b = PodKey::new("llm", "vllm-b");
    store.record_engine_scrape(
        &b,
        scrape(1000.0, &[("llama", 1.0, &[]), ("lora-x", 2.0, &[])], 0.0),
        0.01,
    );
    store.record_engine_scrape(
        &b,
        scrape(
            1015.0,
            &[("llama", 1.0, &[0.9]), ("lora-x", 2.0, &[0.9])],
            300.0,
        ),
        0.01,
    );
    let c = PodKey::new("llm", "vllm-c");
    store.record_engine_scrape(&c, scrape(1000.0, &[("llama", 50.0, &[])], 0.0), 0.01);
    store.record_engine_scrape(&c, scrape(1015.0, &[("llama", 50.0, &[])], 0.0), 0.01);
    let d = PodKey::new("llm", "vllm-d");
    store.record_engine_scrape(&d, scrape(1000.0, &[("llama", 40.0, &[])], 0.0), 0.01);
    store.record_failure(
        &d,
        inferscale_adapter::store::ScrapeFailure::Connect,
        1015.0,
        3.0,
    );
    let mut state = AppState::new(store, Arc::new(Telemetry::new()));
    state.external_metrics = external;
    state.probes = probes_synced_at(1000.0);
    state.clock = test_clock;
    state
}

/// Probes whose scrape loop last ticked at 1015.5 s and whose pod watches listed at
/// `synced_at`, with a 5 s grace for the first scrape round.
fn probes_synced_at(synced_at: f64) -> Probes {
    let probes = Probes::new(1015.5, 5.0);
    probes.mark_synced(synced_at);
    probes
}

async fn get(state: AppState, uri: &str) -> (StatusCode, serde_json::Value) {
    let response = router(state, AuthState::standalone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
        String::from_utf8_lossy(&bytes).into(),
    ));
    (status, json)
}

async fn list_v2(uri: &str) -> MetricValueList<MetricValueV1beta2> {
    let (status, json) = get(state(true), uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {json}");
    let list: MetricValueList<MetricValueV1beta2> = serde_json::from_value(json).unwrap();
    assert_eq!(list.kind, "MetricValueList");
    assert_eq!(list.api_version, "custom.metrics.k8s.io/v1beta2");
    assert!(list.metadata.is_object());
    list
}

fn names(list: &MetricValueList<MetricValueV1beta2>) -> Vec<String> {
    list.items
        .iter()
        .map(|i| i.described_object.name.clone())
        .collect()
}

async fn status_of(uri: &str, expected: StatusCode) -> Status {
    let (status, json) = get(state(true), uri).await;
    assert_eq!(status, expected, "{uri}: {json}");
    let s: Status = serde_json::from_value(json).unwrap();
    assert_eq!(
        (s.kind.as_str(), s.api_version.as_str(), s.status.as_str()),
        ("Status", "v1", "Failure")
    );
    assert_eq!(s.code, expected.as_u16());
    assert!(s.metadata.is_object());
    s
}

const V2: &str = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm";

mod custom_metrics {
    use super::*;

    #[tokio::test]
    async fn pods_star_lists_only_servable_pods_with_quantities_and_real_timestamps() {
        let list = list_v2(&format!("{V2}/pods/%2A/vllm_num_requests_waiting")).await;
        assert_eq!(
            names(&list),
            ["vllm-a", "vllm-b"],
            "not-ready, failed and unscraped pods are missing, not 0"
        );
        let a = &list.items[0];
        assert_eq!(a.value, "3");
        assert_eq!(a.metric.name, "vllm_num_requests_waiting");
        assert_eq!(a.described_object.kind, "Pod");
        assert_eq!(a.described_object.namespace, "llm");
        assert_eq!(a.described_object.api_version, "/v1");
        assert_eq!(
            a.timestamp, "1970-01-01T00:16:55Z",
            "the scrape time (1015 s), not now"
        );
        assert_eq!(a.window_seconds, Some(0), "instantaneous value");
        assert_eq!(
            list.items[1].value, "3",
            "vllm-b: both models combined (1 + 2)"
        );
    }

    #[tokio::test]
    async fn literal_star_and_label_selectors_of_every_form() {
        let cases = [
            ("app=vllm", vec!["vllm-a", "vllm-b"]),
            ("app%3D%3Dvllm", vec!["vllm-a", "vllm-b"]),
            ("tier!=gold", vec!["vllm-b"]),
            ("tier+in+(gold,bronze)", vec!["vllm-a"]),
            ("tier%20notin%20(gold)", vec!["vllm-b"]),
            ("tier", vec!["vllm-a", "vllm-b"]),
            ("!tier", vec![]),
            ("app=vllm,tier=silver", vec!["vllm-b"]),
        ];
        for (selector, expected) in cases {
            let list = list_v2(&format!(
                "{V2}/pods/*/inferscale_queue_depth?labelSelector={selector}"
            ))
            .await;
            assert_eq!(names(&list), expected, "labelSelector={selector}");
        }
    }

    #[tokio::test]
    async fn bad_selector_is_400() {
        let s = status_of(
            &format!("{V2}/pods/*/inferscale_queue_depth?labelSelector=tier+in+(gold"),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(s.reason, "BadRequest");
    }

    #[tokio::test]
    async fn metric_label_selector_picks_models() {
        let list = list_v2(&format!(
            "{V2}/pods/*/vllm_num_requests_waiting?metricLabelSelector=model_name%3Dlora-x"
        ))
        .await;
        assert_eq!(names(&list), ["vllm-b"]);
        assert_eq!(list.items[0].value, "2");
    }

    /// Our series carry one label, `model_name`. A requirement on another label follows
    /// Kubernetes (and Prometheus matcher) semantics: one that needs the label selects no
    /// series — an empty list, a 404 for one object — and one that needs its absence selects
    /// every series. Never an unfiltered value for `foo=bar`.
    #[tokio::test]
    async fn metric_label_selector_on_a_label_the_series_lack() {
        let all = list_v2(&format!("{V2}/pods/*/vllm_num_requests_waiting")).await;
        assert_eq!(names(&all), ["vllm-a", "vllm-b"]);
        for needs_it in [
            "foo%3Dbar",
            "foo",
            "foo%20in%20(bar)",
            "model_name%3Dllama,foo%3Dbar",
        ] {
            let list = list_v2(&format!(
                "{V2}/pods/*/vllm_num_requests_waiting?metricLabelSelector={needs_it}"
            ))
            .await;
            assert!(list.items.is_empty(), "{needs_it}: {:?}", names(&list));
            for path in [
                format!("{V2}/pods/vllm-a/vllm_num_requests_waiting"),
                format!("{V2}/deployments.apps/vllm/vllm_num_requests_waiting"),
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/metrics/vllm_num_requests_waiting".into(),
                "/apis/custom.metrics.k8s.io/v1beta1/namespaces/llm/pods/vllm-a/vllm_num_requests_waiting".into(),
            ] {
                let sep = if path.contains('?') { '&' } else { '?' };
                status_of(
                    &format!("{path}{sep}metricLabelSelector={needs_it}"),
                    StatusCode::NOT_FOUND,
                )
                .await;
            }
        }
        for needs_absence in ["foo!%3Dbar", "!foo", "foo%20notin%20(bar)"] {
            let list = list_v2(&format!(
                "{V2}/pods/*/vllm_num_requests_waiting?metricLabelSelector={needs_absence}"
            ))
            .await;
            let values: Vec<_> = list.items.iter().map(|i| i.value.clone()).collect();
            let unfiltered: Vec<_> = all.items.iter().map(|i| i.value.clone()).collect();
            assert_eq!(values, unfiltered, "{needs_absence}");
        }
        let one = list_v2(&format!(
            "{V2}/pods/*/vllm_num_requests_waiting?metricLabelSelector=model_name%3Dlora-x,foo!%3Dbar"
        ))
        .await;
        assert_eq!(names(&one), ["vllm-b"]);
        assert_eq!(one.items[0].value, "2");
    }

    #[tokio::test]
    async fn ttft_p95_in_milliseconds_with_real_window() {
        let list = list_v2(&format!("{V2}/pods/vllm-a/vllm_time_to_first_token_p95")).await;
        let item = &list.items[0];
        // 4 observations of 0.3 s in bucket (0.25, 0.5]: p95 rank 3.8 → 0.25 + 0.25·3.8/4 = 0.4875 s.
        assert_eq!(item.value, "487500m");
        assert_eq!(item.window_seconds, Some(15));
        let base = list_v2(&format!(
            "{V2}/pods/vllm-a/inferscale_time_to_first_token_seconds_p95"
        ))
        .await;
        assert_eq!(base.items[0].value, "487500u");
    }

    #[tokio::test]
    async fn rates_in_base_units() {
        let list = list_v2(&format!(
            "{V2}/pods/vllm-a/inferscale_prompt_tokens_per_second"
        ))
        .await;
        assert_eq!(list.items[0].value, "100", "1500 tokens in 15 s");
    }

    #[tokio::test]
    async fn deployment_answers_with_the_aggregate_of_its_servable_pods() {
        let list = list_v2(&format!(
            "{V2}/deployments.apps/vllm/vllm_num_requests_waiting"
        ))
        .await;
        assert_eq!(list.items.len(), 1);
        let item = &list.items[0];
        assert_eq!(item.described_object.kind, "Deployment");
        assert_eq!(item.described_object.api_version, "apps/v1");
        assert_eq!(
            item.value, "3",
            "only vllm-a counts: vllm-c/d/e are missing, not 0 or 50"
        );
        let kv = list_v2(&format!(
            "{V2}/deployments.apps/vllm/inferscale_kv_cache_usage_ratio"
        ))
        .await;
        assert_eq!(kv.items[0].value, "500m");
    }

    #[tokio::test]
    async fn workload_percentiles_merge_histograms_not_average_percentiles() {
        // Both deployments through the namespace object: 4 × 0.3 s (vllm-a) and 2 × 0.9 s
        // (vllm-b, one per model). Merged: 6 observations; p50 rank 3 → (0.25,0.5] holds 4 →
        // 0.25 + 0.25·3/4 = 0.4375 s. The mean of the pods' p50s would be ~0.56 s.
        let list = list_v2(&format!(
            "{V2}/metrics/inferscale_time_to_first_token_seconds_p50"
        ))
        .await;
        assert_eq!(list.items[0].described_object.kind, "Namespace");
        assert_eq!(list.items[0].value, "437500u");
    }

    #[tokio::test]
    async fn star_workloads_and_unknown_objects() {
        let list = list_v2(&format!("{V2}/deployments.apps/*/inferscale_queue_depth")).await;
        assert_eq!(names(&list), ["vllm", "vllm-b"]);
        let s = status_of(
            &format!("{V2}/deployments.apps/nope/inferscale_queue_depth"),
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_eq!(s.reason, "NotFound");
        status_of(
            &format!("{V2}/pods/vllm-c/inferscale_queue_depth"),
            StatusCode::NOT_FOUND,
        )
        .await;
        status_of(
            &format!("{V2}/statefulsets.apps/vllm/inferscale_queue_depth"),
            StatusCode::NOT_FOUND,
        )
        .await;
    }

    #[tokio::test]
    async fn unknown_metric_version_and_path() {
        let s = status_of(
            &format!("{V2}/pods/*/no_such_metric"),
            StatusCode::NOT_FOUND,
        )
        .await;
        assert!(s.message.contains("no_such_metric"), "{}", s.message);
        status_of(
            "/apis/custom.metrics.k8s.io/v9/namespaces/llm/pods/*/inferscale_queue_depth",
            StatusCode::NOT_FOUND,
        )
        .await;
        status_of(
            "/apis/custom.metrics.k8s.io/v1beta2/nodes/n/x/y/z",
            StatusCode::NOT_FOUND,
        )
        .await;
        status_of(
            "/apis/custom.metrics.k8s.io/v1beta2/widgets/w/inferscale_queue_depth",
            StatusCode::NOT_FOUND,
        )
        .await;
    }

    #[tokio::test]
    async fn only_get_is_allowed() {
        let response = router(state(true), AuthState::standalone())
            .oneshot(
                Request::post(format!("{V2}/pods/*/inferscale_queue_depth"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn v1beta1_shape() {
        let (status, json) = get(state(true), "/apis/custom.metrics.k8s.io/v1beta1/namespaces/llm/pods/*/vllm_time_to_first_token_p95").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            json["items"][0].get("selector").is_some(),
            "v1beta1 always carries selector"
        );
        let list: MetricValueList<MetricValueV1beta1> = serde_json::from_value(json).unwrap();
        assert_eq!(list.api_version, "custom.metrics.k8s.io/v1beta1");
        assert_eq!(list.items[0].metric_name, "vllm_time_to_first_token_p95");
        assert_eq!(list.items[0].window, Some(15));
        assert!(list.items[0].selector.is_none());
        assert!(!list.items[0].timestamp.is_empty() && !list.items[0].value.is_empty());
        assert_eq!(list.items[0].described_object.name, "vllm-a");
    }

    #[tokio::test]
    async fn node_metrics_cover_pods_on_the_node() {
        let list =
            list_v2("/apis/custom.metrics.k8s.io/v1beta2/nodes/gpu-node-1/inferscale_queue_depth")
                .await;
        assert_eq!(list.items[0].described_object.kind, "Node");
        assert_eq!(list.items[0].value, "6");
    }
}

mod external_metrics {
    use super::*;

    async fn external(uri: &str) -> Vec<ExternalMetricValue> {
        let (status, json) = get(state(true), uri).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["kind"], "ExternalMetricValueList");
        assert_eq!(json["apiVersion"], "external.metrics.k8s.io/v1beta1");
        serde_json::from_value(json["items"].clone()).unwrap()
    }

    const EXT: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm";

    #[tokio::test]
    async fn aggregates_over_selected_pods_models_and_workloads() {
        let all = external(&format!("{EXT}/vllm_num_requests_waiting")).await;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].value, "6");
        assert_eq!(all[0].metric_name, "vllm_num_requests_waiting");
        assert_eq!(all[0].window, Some(0));
        assert!(!all[0].timestamp.is_empty());
        let llama = external(&format!(
            "{EXT}/vllm_num_requests_waiting?labelSelector=model_name%3Dllama"
        ))
        .await;
        assert_eq!(llama[0].value, "4");
        assert_eq!(
            llama[0].metric_labels.get("model_name").map(String::as_str),
            Some("llama")
        );
        let workload = external(&format!("{EXT}/vllm_num_requests_waiting?labelSelector=workload%3Dvllm-b,workload_kind%3DDeployment")).await;
        assert_eq!(workload[0].value, "3");
        let pods = external(&format!(
            "{EXT}/vllm_num_requests_waiting?labelSelector=tier%3Dgold"
        ))
        .await;
        assert_eq!(pods[0].value, "3");
        let none = external(&format!(
            "{EXT}/vllm_num_requests_waiting?labelSelector=tier%3Dnone"
        ))
        .await;
        assert!(none.is_empty(), "no pod selected: no value, not 0");
    }

    #[tokio::test]
    async fn disabled_external_metrics_are_not_found() {
        let (status, _) = get(
            state(false),
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/vllm_num_requests_waiting",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, groups) = get(state(false), "/apis").await;
        assert_eq!(groups["groups"].as_array().unwrap().len(), 1);
    }
}

mod discovery {
    use super::*;

    #[tokio::test]
    async fn group_list_group_and_resource_lists() {
        let (status, json) = get(state(true), "/apis").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["kind"], "APIGroupList");
        assert_eq!(json["groups"][0]["preferredVersion"]["version"], "v1beta2");
        let (_, group) = get(state(true), "/apis/custom.metrics.k8s.io").await;
        assert_eq!(group["kind"], "APIGroup");
        for (uri, gv, kind) in [
            (
                "/apis/custom.metrics.k8s.io/v1beta2",
                "custom.metrics.k8s.io/v1beta2",
                "MetricValueList",
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta1",
                "custom.metrics.k8s.io/v1beta1",
                "MetricValueList",
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1",
                "external.metrics.k8s.io/v1beta1",
                "ExternalMetricValueList",
            ),
        ] {
            let (status, json) = get(state(true), uri).await;
            assert_eq!(status, StatusCode::OK);
            let list: ApiResourceList = serde_json::from_value(json).unwrap();
            assert_eq!(
                (list.kind.as_str(), list.api_version.as_str()),
                ("APIResourceList", "v1")
            );
            assert_eq!(list.group_version, gv);
            assert!(list
                .resources
                .iter()
                .all(|r| r.kind == kind && r.verbs == ["get"] && r.singular_name.is_empty()));
            assert!(list
                .resources
                .iter()
                .any(|r| r.name.ends_with("vllm_time_to_first_token_p95")));
            if kind == "MetricValueList" {
                assert!(list
                    .resources
                    .iter()
                    .any(|r| r.name == "pods/vllm_num_requests_waiting" && r.namespaced));
                assert!(list
                    .resources
                    .iter()
                    .any(|r| r.name == "namespaces/vllm_num_requests_waiting" && !r.namespaced));
            }
        }
    }

    #[tokio::test]
    async fn aggregated_discovery_requests_get_406_so_the_apiserver_falls_back() {
        let response = router(state(true), AuthState::standalone())
            .oneshot(
                Request::get("/apis")
                    .header(
                        "Accept",
                        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                    )
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
        let with_fallback = router(state(true), AuthState::standalone())
            .oneshot(
                Request::get("/apis")
                    .header("Accept", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(with_fallback.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn openapi_documents() {
        let (status, v2) = get(state(true), "/openapi/v2").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v2["swagger"], "2.0");
        let (_, index) = get(state(true), "/openapi/v3").await;
        let url = index["paths"]["apis/custom.metrics.k8s.io/v1beta2"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, v3) = get(state(true), &url).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v3["openapi"], "3.0.0");
    }

    #[tokio::test]
    async fn health_probes_and_own_metrics() {
        for probe in ["/healthz", "/livez", "/readyz"] {
            let (status, body) = get(state(true), probe).await;
            // vllm-c and vllm-e were never scraped, but the watches listed 16 s ago: past
            // the first-round grace.
            assert_eq!(status, StatusCode::OK, "{probe}: {body}");
        }
        let mut dead = state(true);
        dead.probes.heartbeat = Arc::new(AtomicU64::new(900_000));
        let (status, _) = get(dead, "/livez").await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "a stuck scrape loop fails liveness"
        );
        let s = state(true);
        let _ = get(s.clone(), &format!("{V2}/pods/*/vllm_num_requests_waiting")).await;
        let (status, body) = get(s, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        let text = body.as_str().unwrap();
        assert!(
            text.contains(
                "inferscale_adapter_requests_total{route=\"custom_object_metric\",code=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("inferscale_adapter_targets{kind=\"engine\",state=\"failing\"} 1"),
            "{text}"
        );
    }

    /// `/version` says the release the image and the chart are pinned to: the version line
    /// of adapter/Cargo.toml, read from the file (not from the compiler's copy of it).
    #[tokio::test]
    async fn version_is_the_crate_version() {
        let manifest =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
        let declared = manifest
            .lines()
            .find_map(|l| l.strip_prefix("version = \""))
            .and_then(|rest| rest.strip_suffix('"'))
            .expect("a version line in adapter/Cargo.toml");
        let mut parts = declared.split('.');
        let (status, body) = get(state(true), "/version").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["gitVersion"], format!("v{declared}"), "{body}");
        assert_eq!(body["major"], parts.next().unwrap(), "{body}");
        assert_eq!(body["minor"], parts.next().unwrap(), "{body}");
    }
}

mod idle_is_not_missing {
    use super::*;

    /// A scrape with `waiting` and `running` requests and the TTFT observations made since
    /// the server started.
    fn scrape(t: f64, waiting: f64, running: f64, ttft: &[f64]) -> EngineSnapshot {
        let mut s = EngineSnapshot::new(t, Engine::Vllm);
        let m = s.model_mut("llama");
        m.set_gauge(GaugeSignal::QueueDepth, waiting);
        m.set_gauge(GaugeSignal::Running, running);
        let mut h = Histogram::empty(&VLLM_TTFT_BUCKETS);
        for v in ttft {
            h.observe(*v);
        }
        m.set_histogram(HistogramSignal::TimeToFirstToken, h);
        s
    }

    /// Deployment `quiet`: `idle` (one request before the window, nothing since, nothing
    /// waiting or running) and `fresh` (one scrape, nothing ever observed, nothing to do).
    /// Deployment `stuck`: `busy` (3 waiting, 2 running, no request observed in the window).
    fn idle_state() -> AppState {
        let store = Arc::new(Store::new(60.0, 18.0));
        for (name, deployment) in [("idle", "quiet"), ("fresh", "quiet"), ("busy", "stuck")] {
            store.upsert_target(target(name, &[("app", "vllm")], true, deployment));
        }
        let key = |name| PodKey::new("llm", name);
        store.record_engine_scrape(&key("idle"), scrape(1000.0, 0.0, 0.0, &[0.3]), 0.01);
        store.record_engine_scrape(&key("idle"), scrape(1015.0, 0.0, 0.0, &[0.3]), 0.01);
        store.record_engine_scrape(&key("fresh"), scrape(1015.0, 0.0, 0.0, &[]), 0.01);
        store.record_engine_scrape(&key("busy"), scrape(1000.0, 3.0, 2.0, &[0.3]), 0.01);
        store.record_engine_scrape(&key("busy"), scrape(1015.0, 3.0, 2.0, &[0.3]), 0.01);
        let mut state = AppState::new(store, Arc::new(Telemetry::new()));
        state.probes = probes_synced_at(1000.0);
        state.clock = test_clock;
        state
    }

    async fn answer(uri: &str) -> (StatusCode, serde_json::Value) {
        get(idle_state(), uri).await
    }

    #[tokio::test]
    async fn an_idle_pod_answers_zero_and_a_busy_pod_without_observations_is_absent() {
        let (status, json) = answer(&format!("{V2}/pods/*/vllm_time_to_first_token_p95")).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let list: MetricValueList<MetricValueV1beta2> = serde_json::from_value(json).unwrap();
        let values: Vec<(&str, &str)> = list
            .items
            .iter()
            .map(|i| (i.described_object.name.as_str(), i.value.as_str()))
            .collect();
        assert_eq!(
            values,
            [("fresh", "0"), ("idle", "0")],
            "busy has requests waiting and none observed: missing, not 0"
        );
        let (status, _) = answer(&format!("{V2}/pods/busy/vllm_time_to_first_token_p95")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // The mean follows the same rule.
        let (_, json) = answer(&format!(
            "{V2}/pods/idle/inferscale_time_to_first_token_seconds_mean"
        ))
        .await;
        assert_eq!(json["items"][0]["value"], "0");
    }

    #[tokio::test]
    async fn workloads_and_external_metrics_follow_the_same_rule() {
        // Every pod of `quiet` is idle: the Deployment's p95 is 0.
        let (status, json) = answer(&format!(
            "{V2}/deployments.apps/quiet/vllm_time_to_first_token_p95"
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["items"][0]["value"], "0");
        // `stuck` is busy without observations: no value.
        let (status, _) = answer(&format!(
            "{V2}/deployments.apps/stuck/vllm_time_to_first_token_p95"
        ))
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // The namespace holds idle and busy pods and no observation: missing, not 0.
        let (status, _) = answer(&format!("{V2}/metrics/vllm_time_to_first_token_p95")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let ext =
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/vllm_time_to_first_token_p95";
        let (_, quiet) = answer(&format!("{ext}?labelSelector=workload%3Dquiet")).await;
        assert_eq!(quiet["items"][0]["value"], "0");
        let (_, everything) = answer(ext).await;
        assert_eq!(
            everything["items"],
            serde_json::json!([]),
            "idle + busy: no value"
        );
    }
}

mod request_metrics {
    use super::*;
    use futures::future::BoxFuture;
    use inferscale_adapter::auth::{
        Attributes, AuthError, Authenticator, Authorizer, Decision, RequestParts, UserInfo,
    };

    /// `Authorization: Bearer <name>` is user `<name>`; no header is unauthenticated.
    struct NameFromToken;

    impl Authenticator for NameFromToken {
        fn authenticate<'a>(
            &'a self,
            request: &'a RequestParts<'a>,
        ) -> BoxFuture<'a, Result<UserInfo, AuthError>> {
            let name = request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned);
            Box::pin(async move {
                let name = name.ok_or_else(|| AuthError::Unauthenticated("no token".into()))?;
                Ok(UserInfo {
                    name,
                    ..UserInfo::default()
                })
            })
        }
    }

    /// Only `admin` may do anything.
    struct OnlyAdmin;

    impl Authorizer for OnlyAdmin {
        fn authorize<'a>(
            &'a self,
            user: &'a UserInfo,
            _attributes: &'a Attributes,
        ) -> BoxFuture<'a, Result<Decision, AuthError>> {
            let allowed = user.name == "admin";
            Box::pin(async move {
                Ok(Decision {
                    allowed,
                    reason: String::new(),
                })
            })
        }
    }

    async fn status_code(app: &axum::Router, uri: &str, user: Option<&str>) -> StatusCode {
        let mut request = Request::get(uri);
        if let Some(user) = user {
            request = request.header("authorization", format!("Bearer {user}"));
        }
        app.clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    /// Refusals are answered by the auth layer before any handler runs; they must still be
    /// counted, under the route they were refused on.
    #[tokio::test]
    async fn refusals_are_counted_by_route_and_code() {
        let auth = AuthState::new(Arc::new(NameFromToken), Arc::new(OnlyAdmin));
        let app = router(state(true), auth);
        let uri = format!("{V2}/pods/*/vllm_num_requests_waiting");
        assert_eq!(
            status_code(&app, &uri, None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status_code(&app, &uri, Some("bob")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(status_code(&app, &uri, Some("admin")).await, StatusCode::OK);
        let response = app
            .clone()
            .oneshot(
                Request::get("/metrics")
                    .header("authorization", "Bearer admin")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        for code in ["401", "403", "200"] {
            let line = format!(
                "inferscale_adapter_requests_total{{route=\"custom_object_metric\",code=\"{code}\"}} 1"
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(
            text.contains("inferscale_adapter_request_duration_seconds_count{route=\"custom_object_metric\"} 3"),
            "refused requests are timed too:\n{text}"
        );
    }
}

mod response_cache {
    use super::*;
    use inferscale_adapter::api::cache::{ResponseCache, SERVE_STALE_FOR};
    use std::time::Duration;

    fn waiting_value(json: &serde_json::Value) -> String {
        json["items"][0]["value"]
            .as_str()
            .unwrap_or("<none>")
            .to_owned()
    }

    /// A poller (the HPA, a dashboard) must get an answer built from the latest scrapes, not
    /// the answer built for its previous poll.
    #[tokio::test]
    async fn the_first_request_after_the_store_changed_gets_the_new_value() {
        let store = Arc::new(Store::new(60.0, 18.0));
        store.upsert_target(target("vllm-a", &[("app", "vllm")], true, "vllm"));
        let a = PodKey::new("llm", "vllm-a");
        store.record_engine_scrape(&a, scrape(1010.0, &[("llama", 3.0, &[])], 0.0), 0.01);
        let mut state = AppState::new(store.clone(), Arc::new(Telemetry::new()));
        state.probes = probes_synced_at(1000.0);
        state.clock = test_clock;
        let uri = format!("{V2}/pods/vllm-a/vllm_num_requests_waiting");

        // Default ages: within FRESH_FOR an answer is reused although the store changed.
        let (status, first) = get(state.clone(), &uri).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(waiting_value(&first), "3");
        store.record_engine_scrape(&a, scrape(1012.0, &[("llama", 5.0, &[])], 0.0), 0.01);
        let (_, reused) = get(state.clone(), &uri).await;
        assert_eq!(waiting_value(&reused), "3");

        // With no freshness allowance, a cached answer the store has moved past is rebuilt
        // by the next request, not served while a background task rebuilds it.
        state.cache = Arc::new(ResponseCache::with_ages(Duration::ZERO, SERVE_STALE_FOR));
        let (_, cold) = get(state.clone(), &uri).await;
        assert_eq!(waiting_value(&cold), "5");
        store.record_engine_scrape(&a, scrape(1014.0, &[("llama", 7.0, &[])], 0.0), 0.01);
        let (_, after_change) = get(state.clone(), &uri).await;
        assert_eq!(waiting_value(&after_change), "7");
        let (_, unchanged) = get(state, &uri).await;
        assert_eq!(waiting_value(&unchanged), "7");
    }
}

/// WarmPools: the controller's recommendation and capacity by tier, served as Object metrics
/// on the pool's target workload, and missing when the controller stopped renewing them.
mod warm_pools {
    use super::*;
    use inferscale_adapter::warm_pools::Pools;
    use inferscale_crd::WarmPool;

    /// A pool on Deployment `target`, decided at `decided` (RFC 3339) with a 10 s sync period.
    fn pool(name: &str, target: &str, decided: &str, recommended: u32) -> WarmPool {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "inferscale.dev/v1alpha1", "kind": "WarmPool",
            "metadata": {"name": name, "namespace": "llm"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                "objective": {"timeToFirstTokenMilliseconds": 2000, "attainment": 0.99},
                "cost": {"missCostRatio": 0.001},
                "bounds": {"minReplicas": 1, "maxReplicas": 8},
                "syncPeriodSeconds": 10
            },
            "status": {
                "recommendedReplicas": recommended,
                "capacity": {"serving": 2, "pending": 1, "sleeping": 1, "waking": 1,
                             "placeholders": 3},
                "lastDecision": {"time": decided, "action": "scale_up", "message": "",
                    "recommendedReplicas": recommended, "serving": 2, "sleeping": 1,
                    "placeholders": 3, "woken": 0, "putToSleep": 0, "capacityPerReplica": 0.5,
                    "expectedCostPerHour": {"capacity": 1.0, "misses": 0.0, "missCost": 0.0,
                                            "total": 1.0, "attainment": 1.0}}
            }
        }))
        .unwrap()
    }

    /// The test clock is 1016 s and a pool is stale after four 10 s periods: `vllm` was
    /// decided 6 s ago, `edge` 39 s ago (fresh), `stale` 41 s ago.
    fn pool_state() -> AppState {
        let mut state = state(true);
        state.pools = Arc::new(Pools::listed([
            pool("vllm", "vllm", "1970-01-01T00:16:50Z", 5),
            pool("edge", "edge", "1970-01-01T00:16:17Z", 3),
            pool("stale", "old", "1970-01-01T00:16:15Z", 4),
        ]));
        state
    }

    async fn pool_get(uri: &str) -> (StatusCode, serde_json::Value) {
        get(pool_state(), uri).await
    }

    #[tokio::test]
    async fn recommendation_and_tiers_are_object_metrics_on_the_target() {
        for (metric, value) in [
            ("inferscale_recommended_replicas", "5"),
            ("inferscale_serving_replicas", "2"),
            ("inferscale_pending_replicas", "1"),
            // Waking replicas are not serving yet: they count as sleeping.
            ("inferscale_sleeping_replicas", "2"),
            ("inferscale_placeholder_replicas", "3"),
        ] {
            let uri = format!("{V2}/deployments.apps/vllm/{metric}");
            let (status, json) = pool_get(&uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {json}");
            let list: MetricValueList<MetricValueV1beta2> = serde_json::from_value(json).unwrap();
            let item = &list.items[0];
            assert_eq!(list.items.len(), 1);
            assert_eq!(
                (item.metric.name.as_str(), item.value.as_str()),
                (metric, value)
            );
            assert_eq!(item.described_object.kind, "Deployment");
            assert_eq!(item.described_object.api_version, "apps/v1");
            assert_eq!(item.described_object.name, "vllm");
            assert_eq!(
                item.timestamp, "1970-01-01T00:16:50Z",
                "when it was decided"
            );
            assert_eq!(item.window_seconds, Some(0), "a decision, not a window");
        }
        // v1beta1 as well (older HPAs).
        let uri = "/apis/custom.metrics.k8s.io/v1beta1/namespaces/llm/deployments.apps/vllm/\
                   inferscale_recommended_replicas";
        let (status, json) = pool_get(uri).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let list: MetricValueList<MetricValueV1beta1> = serde_json::from_value(json).unwrap();
        assert_eq!(list.items[0].value, "5");
    }

    #[tokio::test]
    async fn a_stale_pool_a_pod_or_another_kind_has_no_value() {
        for uri in [
            // The controller stopped renewing it: the HPA falls back to its other metrics.
            format!("{V2}/deployments.apps/old/inferscale_recommended_replicas"),
            format!("{V2}/pods/vllm-a/inferscale_recommended_replicas"),
            format!("{V2}/statefulsets.apps/vllm/inferscale_recommended_replicas"),
            format!("{V2}/deployments.apps/nobody/inferscale_recommended_replicas"),
        ] {
            let (status, json) = pool_get(&uri).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {json}");
            assert_eq!(json["reason"], "NotFound", "{uri}: {json}");
        }
        // `*` lists the fresh pools' targets only.
        let (status, json) = pool_get(&format!(
            "{V2}/deployments.apps/%2A/inferscale_recommended_replicas"
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let list: MetricValueList<MetricValueV1beta2> = serde_json::from_value(json).unwrap();
        let names: Vec<_> = list
            .items
            .iter()
            .map(|i| i.described_object.name.as_str())
            .collect();
        assert_eq!(names, ["edge", "vllm"]);
    }

    #[tokio::test]
    async fn without_pools_nothing_is_invented() {
        let (status, _) = get(
            state(true),
            &format!("{V2}/deployments.apps/vllm/inferscale_recommended_replicas"),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn discovery_lists_the_pool_metrics_on_workloads_only() {
        let (_, json) = get(pool_state(), "/apis/custom.metrics.k8s.io/v1beta2").await;
        let list: ApiResourceList = serde_json::from_value(json).unwrap();
        let names: Vec<_> = list.resources.iter().map(|r| r.name.as_str()).collect();
        assert!(names.contains(&"deployments.apps/inferscale_recommended_replicas"));
        assert!(names.contains(&"deployments.apps/inferscale_placeholder_replicas"));
        assert!(!names.contains(&"pods/inferscale_recommended_replicas"));
    }
}

/// The derived saturation signals (formulas: `inferscale_metrics::saturation`), per pod and
/// per workload, against values worked out by hand.
mod saturation {
    use super::*;

    /// One replica of Deployment `sat`: KV usage `kv` of 16,000 tokens, `running`, `waiting`.
    fn replica(store: &Store, name: &str, kv: f64, running: f64, waiting: f64) {
        store.upsert_target(target(name, &[("app", "sat")], true, "sat"));
        let key = PodKey::new("llm", name);
        for t in [1000.0, 1015.0] {
            let mut s = EngineSnapshot::new(t, Engine::Vllm);
            s.kv_capacity_tokens = Some(16000.0);
            let m = s.model_mut("llama");
            m.set_gauge(GaugeSignal::KvCacheUsage, kv);
            m.set_gauge(GaugeSignal::Running, running);
            m.set_gauge(GaugeSignal::QueueDepth, waiting);
            store.record_engine_scrape(&key, s, 0.01);
        }
    }

    /// sat-1: KV 25 %, 2 running, none waiting. sat-2: KV 50 %, 2 running, 2 waiting.
    fn sat_state() -> AppState {
        let store = Arc::new(Store::new(60.0, 18.0));
        replica(&store, "sat-1", 0.25, 2.0, 0.0);
        replica(&store, "sat-2", 0.5, 2.0, 2.0);
        let mut state = AppState::new(store, Arc::new(Telemetry::new()));
        state.clock = test_clock;
        state
    }

    async fn value(uri: &str) -> String {
        let (status, json) = get(sat_state(), uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {json}");
        json["items"][0]["value"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn per_pod_and_per_workload() {
        for (metric, sat1, sat2, workload) in [
            // (1 − u) × 16,000: 12,000 and 8,000; the Deployment has both: 20,000.
            (
                "inferscale_kv_cache_headroom_tokens",
                "12000",
                "8000",
                "20000",
            ),
            // sat-2 queues: full. The fleet: (0.25 + 1) / 2.
            ("inferscale_capacity_in_use_ratio", "250m", "1", "625m"),
            // sat-2: 1 − 0.5 × (1 − 2/4) = 0.75. The fleet: (0.25 + 0.75) / 2.
            ("inferscale_saturation_ratio", "250m", "750m", "500m"),
        ] {
            assert_eq!(
                value(&format!("{V2}/pods/sat-1/{metric}")).await,
                sat1,
                "{metric}"
            );
            assert_eq!(
                value(&format!("{V2}/pods/sat-2/{metric}")).await,
                sat2,
                "{metric}"
            );
            assert_eq!(
                value(&format!("{V2}/deployments.apps/sat/{metric}")).await,
                workload,
                "{metric}"
            );
        }
    }
}

/// What `/readyz` and `/livez` answer, as deploy/README.md documents it.
mod probes {
    use super::*;
    use inferscale_adapter::store::ScrapeFailure;

    fn pod(name: &str, url: Option<&str>) -> Target {
        let mut t = target(name, &[("app", "vllm")], url.is_some(), "vllm");
        t.url = url.map(str::to_owned);
        t
    }

    /// A store with one Running, scraped pod and the given others; probes synced at
    /// `synced_at` with a 5 s first-round grace; the clock at `now`.
    fn state_with(others: &[Target], synced_at: Option<f64>, now: fn() -> f64) -> AppState {
        let store = Arc::new(Store::new(60.0, 18.0));
        store.upsert_target(pod("running", Some("http://127.0.0.1:1/m")));
        store.record_engine_scrape(
            &PodKey::new("llm", "running"),
            scrape(1000.0, &[("llama", 1.0, &[])], 0.0),
            0.01,
        );
        for t in others {
            store.upsert_target(t.clone());
        }
        let mut state = AppState::new(store, Arc::new(Telemetry::new()));
        state.probes = Probes::new(1015.5, 5.0);
        if let Some(at) = synced_at {
            state.probes.mark_synced(at);
        }
        state.clock = now;
        state
    }

    async fn probe(state: &AppState, path: &str) -> (StatusCode, String) {
        let (status, body) = get(state.clone(), path).await;
        (status, body.as_str().unwrap_or_default().to_owned())
    }

    fn at_1001() -> f64 {
        1001.0
    }

    #[tokio::test]
    async fn not_ready_until_the_pod_watches_listed() {
        let state = state_with(&[], None, test_clock);
        let (status, body) = probe(&state, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("not listed"), "{body}");
        assert_eq!(probe(&state, "/livez").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn pods_without_an_address_never_hold_readiness() {
        // Pending (unschedulable or pulling an image), Failed/Evicted and Succeeded pods
        // have no address: nothing will ever be scraped for them.
        let others = [
            pod("pending", None),
            pod("evicted", None),
            pod("done", None),
        ];
        let state = state_with(&others, Some(1000.0), at_1001);
        let (status, body) = probe(&state, "/readyz").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "1 s after the watches listed: {body}"
        );
    }

    #[tokio::test]
    async fn a_scrapable_target_is_waited_for_at_most_the_grace() {
        let others = [pod("new", Some("http://127.0.0.1:1/new"))];
        let early = state_with(&others, Some(1000.0), at_1001);
        let (status, body) = probe(&early, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            body.contains("1 scrapable target(s) not scraped yet"),
            "{body}"
        );
        let late = state_with(&others, Some(1000.0), test_clock);
        let (status, body) = probe(&late, "/readyz").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "16 s after the watches listed: {body}"
        );
    }

    #[tokio::test]
    async fn a_failed_first_scrape_counts_as_attempted() {
        let store = Arc::new(Store::new(60.0, 18.0));
        store.upsert_target(pod("dead", Some("http://127.0.0.1:1/dead")));
        store.record_failure(
            &PodKey::new("llm", "dead"),
            ScrapeFailure::Connect,
            1000.5,
            0.5,
        );
        let mut state = AppState::new(store, Arc::new(Telemetry::new()));
        state.probes = Probes::new(1015.5, 5.0);
        state.probes.mark_synced(1000.0);
        state.clock = at_1001;
        assert_eq!(probe(&state, "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn once_ready_a_new_unscraped_target_does_not_make_it_unready() {
        let store = Arc::new(Store::new(60.0, 18.0));
        let mut state = AppState::new(store.clone(), Arc::new(Telemetry::new()));
        state.probes = Probes::new(1015.5, 5.0);
        state.probes.mark_synced(1000.0);
        state.clock = at_1001;
        assert_eq!(probe(&state, "/readyz").await.0, StatusCode::OK);
        // A scale-up adds a pod that gets an IP; its first scrape is a second away.
        store.upsert_target(pod("scaled-up", Some("http://127.0.0.1:1/up")));
        let (status, body) = probe(&state, "/readyz").await;
        assert_eq!(status, StatusCode::OK, "stays ready: {body}");
    }

    #[tokio::test]
    async fn shutdown_fails_readiness_but_not_liveness() {
        let state = state_with(&[], Some(1000.0), test_clock);
        assert_eq!(probe(&state, "/readyz").await.0, StatusCode::OK);
        state
            .probes
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let (status, body) = probe(&state, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("shutting down"), "{body}");
        assert_eq!(probe(&state, "/livez").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_stuck_scrape_loop_fails_liveness_and_readiness() {
        let mut state = state_with(&[], Some(1000.0), test_clock);
        state.probes.heartbeat = Arc::new(AtomicU64::new(1_000_000));
        assert_eq!(
            probe(&state, "/livez").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            probe(&state, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
