//! API discovery: what the aggregator and `kubectl` learn about the groups we serve, and the
//! OpenAPI and version documents.
//!
//! The aggregator and `kubectl` discover what we serve from `/apis`, `/apis/<group>` and
//! `/apis/<group>/<version>`; the aggregator also fetches `/openapi/v2` and `/openapi/v3` to
//! merge into the cluster's spec, so those answer with valid (small) documents. (Finding the
//! pods to scrape is `crate::targets`' pod watch, not discovery.)

use super::values::ApiPath;
use super::{check_version, ApiError, AppState, CUSTOM_GROUP, EXTERNAL_GROUP};
use crate::catalogue::METRICS;
use crate::warm_pools::PoolMetric;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// Custom-metrics versions, preferred first.
pub const CUSTOM_VERSIONS: [&str; 2] = ["v1beta2", "v1beta1"];
pub const EXTERNAL_VERSIONS: [&str; 1] = ["v1beta1"];

/// Object kinds custom metrics are listed for in discovery (any owner kind is answered;
/// these are the common ones, listed so `kubectl get --raw` shows them).
pub const LISTED_RESOURCES: [(&str, bool); 6] = [
    ("pods", true),
    ("deployments.apps", true),
    ("statefulsets.apps", true),
    ("replicasets.apps", true),
    ("leaderworkersets.leaderworkerset.x-k8s.io", true),
    ("namespaces", false),
];

fn group_json(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions[0],
    })
}

fn served_groups(state: &AppState) -> Vec<Value> {
    let mut groups = vec![group_json(CUSTOM_GROUP, &CUSTOM_VERSIONS)];
    if state.external_metrics {
        groups.push(group_json(EXTERNAL_GROUP, &EXTERNAL_VERSIONS));
    }
    groups
}

/// True when the client accepts the legacy discovery documents (plain JSON).
///
/// kube-apiserver asks every aggregated server for the aggregated discovery type
/// (`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`) first. Answering
/// that request with a plain `APIGroupList` makes it mark our group versions Stale, and
/// client-go (the HPA) then drops them; answering 406 makes it fall back to the per-version
/// documents, which is what it does for servers without aggregated discovery.
fn accepts_legacy_discovery(headers: &HeaderMap) -> bool {
    let accepts: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    accepts.is_empty()
        || accepts.iter().any(|range| {
            let media = range.split(';').next().unwrap_or("").trim();
            let plain = !range.contains("as=");
            plain && matches!(media, "application/json" | "application/*" | "*/*")
        })
}

fn not_acceptable() -> Response {
    ApiError::NotAcceptable("only application/json discovery documents are served").into_response()
}

pub async fn group_list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !accepts_legacy_discovery(&headers) {
        return not_acceptable();
    }
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": served_groups(&state)}))
        .into_response()
}

pub async fn group(
    State(state): State<AppState>,
    ApiPath(group): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !accepts_legacy_discovery(&headers) {
        return Ok(not_acceptable());
    }
    let versions: &[&str] = match group.as_str() {
        CUSTOM_GROUP => &CUSTOM_VERSIONS,
        EXTERNAL_GROUP if state.external_metrics => &EXTERNAL_VERSIONS,
        _ => return Err(ApiError::NotFound),
    };
    let mut body = group_json(&group, versions);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Ok(Json(body).into_response())
}

/// `APIResourceList` of one served group version; every resource is a read-only list kind.
fn resource_list(
    group: &str,
    version: &str,
    kind: &str,
    resources: impl Iterator<Item = (String, bool)>,
) -> Json<Value> {
    let resources: Vec<Value> = resources
        .map(|(name, namespaced)| {
            json!({
                "name": name,
                "singularName": "",
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["get"],
            })
        })
        .collect();
    Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{group}/{version}"),
        "resources": resources,
    }))
}

pub async fn custom_resources(ApiPath(version): ApiPath<String>) -> Result<Json<Value>, ApiError> {
    check_version(&version, &CUSTOM_VERSIONS)?;
    let resources = LISTED_RESOURCES.iter().flat_map(|(resource, namespaced)| {
        // WarmPool values are served on workloads only.
        let workload = *namespaced && *resource != "pods";
        let pool_metrics = PoolMetric::ALL
            .iter()
            .filter(move |_| workload)
            .map(|m| m.name());
        METRICS
            .iter()
            .map(|m| m.name)
            .chain(pool_metrics)
            .map(move |name| (format!("{resource}/{name}"), *namespaced))
    });
    Ok(resource_list(
        CUSTOM_GROUP,
        &version,
        "MetricValueList",
        resources,
    ))
}

pub async fn external_resources(
    State(state): State<AppState>,
    ApiPath(version): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    if !state.external_metrics {
        return Err(ApiError::NotFound);
    }
    check_version(&version, &EXTERNAL_VERSIONS)?;
    let resources = METRICS.iter().map(|m| (m.name.to_owned(), true));
    Ok(resource_list(
        EXTERNAL_GROUP,
        &version,
        "ExternalMetricValueList",
        resources,
    ))
}

const INFO_TITLE: &str = "inferscale-adapter";

pub async fn openapi_v2() -> Json<Value> {
    Json(json!({
        "swagger": "2.0",
        "info": {"title": INFO_TITLE, "version": env!("CARGO_PKG_VERSION")},
        "paths": {},
        "definitions": {},
    }))
}

fn served_group_versions(state: &AppState) -> Vec<String> {
    let mut paths: Vec<String> = CUSTOM_VERSIONS
        .iter()
        .map(|v| format!("apis/{CUSTOM_GROUP}/{v}"))
        .collect();
    if state.external_metrics {
        paths.extend(
            EXTERNAL_VERSIONS
                .iter()
                .map(|v| format!("apis/{EXTERNAL_GROUP}/{v}")),
        );
    }
    paths
}

pub async fn openapi_v3_index(State(state): State<AppState>) -> Json<Value> {
    let paths: serde_json::Map<String, Value> = served_group_versions(&state)
        .into_iter()
        .map(|p| {
            let url = format!("/openapi/v3/{p}");
            (p, json!({"serverRelativeURL": url}))
        })
        .collect();
    Json(json!({"paths": paths}))
}

pub async fn openapi_v3(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    if !served_group_versions(&state).contains(&path) {
        return Err(ApiError::NotFound);
    }
    Ok(Json(json!({
        "openapi": "3.0.0",
        "info": {"title": INFO_TITLE, "version": env!("CARGO_PKG_VERSION")},
        "paths": {},
        "components": {},
    })))
}

/// The crate version, in the shape of Kubernetes' `version.Info` (what `/version` of any
/// apiserver answers).
pub async fn version() -> Json<Value> {
    Json(json!({
        "major": env!("CARGO_PKG_VERSION_MAJOR"),
        "minor": env!("CARGO_PKG_VERSION_MINOR"),
        "gitVersion": concat!("v", env!("CARGO_PKG_VERSION")),
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}
