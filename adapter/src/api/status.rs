//! Kubernetes `Status` errors: the one way errors leave the API.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Every way an API request fails.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The metric name is not one we serve.
    #[error("the server could not find the metric {metric} for {resource}")]
    UnknownMetric { metric: String, resource: String },
    /// The object (pod, workload) has no servable value for the metric.
    #[error("the server could not find the metric {metric} for {resource} {name}")]
    NoValue {
        metric: String,
        resource: String,
        name: String,
    },
    /// The resource kind is not one metrics are served for.
    #[error("the server could not find the requested resource ({resource})")]
    UnknownResource { resource: String },
    /// The API version is not served.
    #[error("the server could not find the requested resource (version {version})")]
    UnknownVersion { version: String },
    /// A selector or other query parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The path matches nothing.
    #[error("the server could not find the requested resource")]
    NotFound,
    /// Only GET is served.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// Not ready to answer (no fresh data yet).
    #[error("{0}")]
    Unavailable(String),
}

/// `metav1.Status` as the API server renders it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub status: &'static str,
    pub message: String,
    pub reason: &'static str,
    pub code: u16,
}

impl ApiError {
    fn code_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::UnknownMetric { .. }
            | ApiError::NoValue { .. }
            | ApiError::UnknownResource { .. }
            | ApiError::UnknownVersion { .. }
            | ApiError::NotFound => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
        }
    }
}

/// Renders a failure `Status` with the given code, reason and message.
pub fn status_response(code: StatusCode, reason: &'static str, message: String) -> Response {
    let body = Status {
        kind: "Status",
        api_version: "v1",
        metadata: serde_json::Map::new(),
        status: "Failure",
        message,
        reason,
        code: code.as_u16(),
    };
    (code, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, reason) = self.code_and_reason();
        status_response(code, reason, self.to_string())
    }
}
