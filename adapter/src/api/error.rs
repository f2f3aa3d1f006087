//! Every way an API request fails, and the HTTP code and `Status` reason of each.
//!
//! Owns: [`ApiError`]. Rendering the body is [`crate::status`]'s.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

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
    /// The client accepts none of the media types the resource is served in.
    #[error("{0}")]
    NotAcceptable(&'static str),
    /// The answer could not be built (a bug, or a list too large to buffer).
    #[error("Internal error occurred: {0}")]
    Internal(String),
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
            ApiError::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "NotAcceptable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, reason) = self.code_and_reason();
        crate::status::failure(code, reason, self.to_string(), None)
    }
}
