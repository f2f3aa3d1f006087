//! Kubernetes `Status` bodies: the one way an error leaves the adapter's HTTP server.
//!
//! Owns: rendering a failure as the `metav1.Status` kube-apiserver would send (kind
//! `Status`, apiVersion `v1`, status `Failure`, the HTTP code repeated in the body, a
//! machine-readable reason). API errors ([`crate::api::ApiError`]) and authentication and
//! authorization refusals ([`crate::auth::AuthError`], the 403) all go through
//! [`failure`]; clients such as client-go decode these bodies to tell a missing metric from
//! a refusal.
//! Does not own: deciding which error a request gets (the API and the auth layer do).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusDetails};

/// A `Status` failure with `code`, `reason` (`NotFound`, `Forbidden`, ...) and `message`, and
/// `details` naming the object when there is one.
pub fn failure(
    code: StatusCode,
    reason: &str,
    message: String,
    details: Option<StatusDetails>,
) -> Response {
    let status = Status {
        code: Some(i32::from(code.as_u16())),
        details,
        message: Some(message),
        metadata: Default::default(),
        reason: Some(reason.to_owned()),
        status: Some("Failure".to_owned()),
    };
    (code, Json(status)).into_response()
}
