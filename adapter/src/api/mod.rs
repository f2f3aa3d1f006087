//! The HTTP API: `custom.metrics.k8s.io` v1beta1/v1beta2, `external.metrics.k8s.io`
//! v1beta1, API discovery and OpenAPI (`discovery`), health probes ([`health`]) and our own
//! metrics.
//!
//! Owns: routing, query decoding, and the Kubernetes JSON shapes (every body carries `kind`
//! and `apiVersion`: the HPA's decoder requires them). Errors leave through one type,
//! [`ApiError`], rendered as a Kubernetes `Status`.
//! Reads the store only through [`SignalView`]. Authentication and authorization (see
//! `auth`) are a layer inside the request metrics and around every route, fallbacks
//! included, so handlers here never see an unauthorised request and refusals are counted.

pub mod cache;
mod custom;
mod discovery;
pub mod error;
mod external;
pub mod health;
mod values;

use crate::auth::{auth_middleware, AuthState};
use crate::store::SignalView;
use crate::telemetry::Telemetry;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use std::time::Instant;

pub use error::ApiError;
pub(crate) use external::{ExternalQuery, WORKLOAD_LABEL};

/// Group names we serve.
pub const CUSTOM_GROUP: &str = "custom.metrics.k8s.io";
pub const EXTERNAL_GROUP: &str = "external.metrics.k8s.io";

/// What the handlers need.
#[derive(Clone)]
pub struct AppState {
    pub view: Arc<dyn SignalView>,
    pub telemetry: Arc<Telemetry>,
    /// Serve `external.metrics.k8s.io` (off where KEDA owns that APIService).
    pub external_metrics: bool,
    /// What liveness and readiness read (see [`health`]).
    pub probes: health::Probes,
    /// The time source (Unix seconds); tests fix it.
    pub clock: fn() -> f64,
    /// Recent answers of the metric routes.
    pub cache: Arc<cache::ResponseCache>,
    /// WarmPools: their recommendation and capacity by tier, served on their targets.
    pub pools: Arc<dyn crate::warm_pools::PoolView>,
}

impl AppState {
    /// State with defaults: external metrics on, targets synced, the loop live now, no grace
    /// for a first scrape round.
    pub fn new(view: Arc<dyn SignalView>, telemetry: Arc<Telemetry>) -> AppState {
        let now = crate::scrape::unix_now();
        let probes = health::Probes::new(now, 0.0);
        probes.mark_synced(now);
        AppState {
            view,
            telemetry,
            external_metrics: true,
            probes,
            clock: crate::scrape::unix_now,
            cache: Arc::new(cache::ResponseCache::default()),
            pools: Arc::new(crate::warm_pools::NoPools),
        }
    }

    pub(crate) fn now(&self) -> f64 {
        (self.clock)()
    }
}

/// The router with every route, behind `auth` ([`AuthState::standalone`] lets everyone in).
///
/// Layers, outermost first: request metrics (so 401/403 and the time authentication and
/// authorization took are counted), then `auth`, then the routes; the metric-value routes
/// also pass the response cache, inside `auth`.
pub fn router(state: AppState, auth: AuthState) -> Router {
    let values = metric_value_routes().route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        cache::cached,
    ));
    let discovery = Router::new()
        .route(
            "/apis/custom.metrics.k8s.io/{version}",
            get(discovery::custom_resources),
        )
        .route(
            "/apis/external.metrics.k8s.io/{version}",
            get(discovery::external_resources),
        );
    Router::new()
        .route("/apis", get(discovery::group_list))
        .route("/apis/{group}", get(discovery::group))
        .route("/openapi/v2", get(discovery::openapi_v2))
        .route("/openapi/v3", get(discovery::openapi_v3_index))
        .route("/openapi/v3/{*path}", get(discovery::openapi_v3))
        .route("/version", get(discovery::version))
        .route("/healthz", get(health::healthz))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(own_metrics))
        .merge(discovery)
        .merge(values)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(auth, auth_middleware))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe_request,
        ))
        .with_state(state)
}

/// The routes that answer metric values (cached by [`cache::cached`]).
fn metric_value_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/apis/custom.metrics.k8s.io/{version}/namespaces/{namespace}/metrics/{metric}",
            get(custom::namespace_metric),
        )
        .route(
            "/apis/custom.metrics.k8s.io/{version}/namespaces/{namespace}/{resource}/{name}/{metric}",
            get(custom::namespaced_object_metric),
        )
        .route(
            "/apis/custom.metrics.k8s.io/{version}/{resource}/{name}/{metric}",
            get(custom::cluster_object_metric),
        )
        .route(
            "/apis/external.metrics.k8s.io/{version}/namespaces/{namespace}/{metric}",
            get(external::external_metric),
        )
}

/// Refuses API versions this group does not serve.
pub(crate) fn check_version(version: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&version) {
        Ok(())
    } else {
        Err(ApiError::UnknownVersion {
            version: version.to_owned(),
        })
    }
}

/// `GET /metrics`: the adapter's own metrics.
async fn own_metrics(State(state): State<AppState>) -> Response {
    let body = state.telemetry.render(state.view.as_ref(), state.now());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Records latency by route template (never the raw path: bounded cardinality).
async fn observe_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = route_label(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let started = Instant::now();
    let response = next.run(request).await;
    state.telemetry.request(
        route,
        status_label(response.status()),
        started.elapsed().as_secs_f64(),
    );
    response
}

fn route_label(template: Option<&str>) -> &'static str {
    match template {
        Some(t) if t.ends_with("/metrics/{metric}") => "custom_namespace_metric",
        Some(t) if t.starts_with("/apis/custom.metrics.k8s.io/{version}/namespaces/") => {
            "custom_object_metric"
        }
        Some(t) if t.starts_with("/apis/custom.metrics.k8s.io/{version}/") => {
            "custom_cluster_metric"
        }
        Some("/apis/custom.metrics.k8s.io/{version}") => "custom_discovery",
        Some(t) if t.starts_with("/apis/external.metrics.k8s.io/{version}/") => "external_metric",
        Some("/apis/external.metrics.k8s.io/{version}") => "external_discovery",
        Some("/apis") | Some("/apis/{group}") => "group_discovery",
        Some(t) if t.starts_with("/openapi") => "openapi",
        Some("/healthz") | Some("/livez") | Some("/readyz") => "health",
        Some("/metrics") => "metrics",
        Some("/version") => "version",
        _ => "other",
    }
}

fn status_label(status: axum::http::StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        500 => "500",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
