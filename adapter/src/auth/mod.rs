//! Delegated authentication and authorization for the adapter's API, the way an aggregated
//! Kubernetes API server does them.
//!
//! This module owns the request-level contract: who is calling ([`UserInfo`], from an
//! [`Authenticator`]), what they are asking to do ([`Attributes`], from
//! [`request_info::request_attributes`]), whether they may ([`Decision`], from an
//! [`Authorizer`]), and the axum middleware ([`auth_middleware`]) that answers 401/403 with a
//! Kubernetes `Status` body before a handler runs. The delegated implementations live in
//! [`authn`] (front-proxy request headers, client certificates, TokenReview) and [`authz`]
//! (SubjectAccessReview).
//!
//! It does not terminate TLS or verify the handshake ([`crate::tls`]), and it does not serve
//! any API itself: [`crate::api::router`] puts the middleware around every route.
//!
//! ```no_run
//! # async fn wire(client: kube::Client, tls: inferscale_adapter::tls::TlsState, state: inferscale_adapter::api::AppState) -> Result<(), Box<dyn std::error::Error>> {
//! use inferscale_adapter::auth::{AuthState, DelegatedAuthOptions};
//!
//! // The configuration refresh task stops when the token is cancelled.
//! let token = tokio_util::sync::CancellationToken::new();
//! let (auth, _config_refresh) =
//!     AuthState::delegated(client, DelegatedAuthOptions::default(), &tls, token).await?;
//! let app = inferscale_adapter::api::router(state, auth);
//! # let _ = app; Ok(()) }
//! ```

pub mod authn;
pub mod authz;
pub mod request_info;
mod ttl_cache;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::StatusDetails;
use rustls::pki_types::CertificateDer;
use tokio::task::JoinHandle;
use tracing::{debug, info_span, warn, Instrument};

use crate::error_chain::ErrorChain;
use crate::status::failure;
use crate::tls::{PeerCertificates, TlsState};

/// Paths that are served without authentication or authorization, so the kubelet's probes
/// work without credentials (k8s' delegated authorization always allows the same three).
const UNAUTHENTICATED_PATHS: [&str; 3] = ["/healthz", "/livez", "/readyz"];

/// The identity a request was authenticated as, in Kubernetes' `user.Info` shape. Inserted into
/// the request's extensions by [`auth_middleware`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    /// User name, e.g. `system:serviceaccount:kube-system:horizontal-pod-autoscaler`.
    pub name: String,
    /// Unique id of the user, when the authenticator knows one.
    pub uid: String,
    /// Groups the user belongs to, in the order the authenticator gave them.
    pub groups: Vec<String>,
    /// Additional attributes (e.g. `authentication.kubernetes.io/pod-name`), passed through to
    /// authorization unchanged.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The group Kubernetes gives every authenticated user.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

impl UserInfo {
    /// Adds `system:authenticated`, as k8s.io/apiserver's `AuthenticatedGroupAdder` does
    /// after every successful authentication. Without it, the aggregator's own identities
    /// (`system:kube-aggregator`, `system:aggregator`), which arrive through the front proxy
    /// with no group headers, are refused discovery and OpenAPI that the built-in
    /// `system:discovery` role grants to all authenticated users.
    pub fn with_authenticated_group(mut self) -> UserInfo {
        if self.name != "system:anonymous" && !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP)
        {
            self.groups.push(AUTHENTICATED_GROUP.to_owned());
        }
        self
    }
}

/// What a request asks to do, in the terms of a Kubernetes authorizer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attributes {
    /// A request for an API resource (anything under `/apis/<group>/<version>/<resource>`).
    Resource(ResourceAttributes),
    /// Any other path: discovery, OpenAPI, `/metrics`, `/version`.
    NonResource(NonResourceAttributes),
}

impl Attributes {
    /// The authorizer verb (`get`, `list`, ...).
    pub fn verb(&self) -> &str {
        match self {
            Self::Resource(resource) => &resource.verb,
            Self::NonResource(non_resource) => &non_resource.verb,
        }
    }
}

/// Authorizer attributes of a resource request; empty strings mean "not set", as in k8s.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResourceAttributes {
    /// `get`, `list`, `create`, ...
    pub verb: String,
    /// API group, e.g. `custom.metrics.k8s.io`.
    pub group: String,
    /// API version, e.g. `v1beta2`.
    pub version: String,
    /// Resource, e.g. `pods` or `deployments.apps` (kept group-qualified, as the custom
    /// metrics API spells it).
    pub resource: String,
    /// Subresource; for the custom metrics API, the metric name.
    pub subresource: String,
    /// Namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name; empty for collection (selector) reads.
    pub name: String,
}

/// Authorizer attributes of a non-resource request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NonResourceAttributes {
    /// Lower-cased HTTP method.
    pub verb: String,
    /// The decoded URL path.
    pub path: String,
}

/// The parts of a request an [`Authenticator`] may look at.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'r> {
    /// The request headers.
    pub headers: &'r HeaderMap,
    /// The client certificate chain from the TLS handshake, leaf first, if one was presented.
    pub peer_certificates: Option<&'r [CertificateDer<'static>]>,
}

/// An authorizer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Why, as the authorizer put it; appended to the 403 message when denied.
    pub reason: String,
}

/// Establishes who sent a request.
pub trait Authenticator: Send + Sync {
    /// Returns the requester's identity, [`AuthError::Unauthenticated`] when no presented
    /// credential is valid (or none was presented), or
    /// [`AuthError::AuthenticationUnavailable`] when a backend needed to decide failed.
    fn authenticate<'a>(
        &'a self,
        request: &'a RequestParts<'a>,
    ) -> BoxFuture<'a, Result<UserInfo, AuthError>>;

    /// Removes credential headers from a request that was authenticated, so nothing
    /// downstream can read or forward them. The default removes `Authorization`.
    fn strip_credentials(&self, headers: &mut HeaderMap) {
        headers.remove(header::AUTHORIZATION);
    }
}

/// Decides whether an authenticated user may do what a request asks.
pub trait Authorizer: Send + Sync {
    /// Returns the decision, or [`AuthError::AuthorizationUnavailable`] when the decision
    /// could not be made.
    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        attributes: &'a Attributes,
    ) -> BoxFuture<'a, Result<Decision, AuthError>>;
}

/// Why a request could not be let through, other than an authorization denial.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No presented credential was valid, or none was presented. The text is for logs only;
    /// clients get a bare "Unauthorized", as from kube-apiserver.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A backend needed to authenticate (TokenReview) failed; answered with 503 so clients
    /// retry instead of treating their credentials as bad.
    #[error("authentication backend failed")]
    AuthenticationUnavailable(#[source] authn::AuthnError),
    /// The authorization backend (SubjectAccessReview) failed or answered inconsistently;
    /// answered with 500, as kube-apiserver does.
    #[error("authorization backend failed")]
    AuthorizationUnavailable(#[source] authz::AuthzError),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthenticated(_) => failure(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized".to_owned(),
                None,
            ),
            Self::AuthenticationUnavailable(_) => failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the request could not be authenticated because the authentication backend is \
                 unavailable; retry later"
                    .to_owned(),
                None,
            ),
            Self::AuthorizationUnavailable(_) => failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Internal error occurred: the request could not be authorized".to_owned(),
                None,
            ),
        }
    }
}

/// The 403 kube-apiserver would send for `attributes` denied to `user`, with the same
/// message wording (`<resource>.<group> "<name>" is forbidden: User "<user>" cannot ...`).
fn forbidden_response(user: &UserInfo, attributes: &Attributes, reason: &str) -> Response {
    let mut message = match attributes {
        Attributes::NonResource(non_resource) => format!(
            "User {:?} cannot {} path {:?}",
            user.name, non_resource.verb, non_resource.path
        ),
        Attributes::Resource(resource) => {
            let mut target = resource.resource.clone();
            if !resource.subresource.is_empty() {
                target = format!("{target}/{}", resource.subresource);
            }
            if resource.namespace.is_empty() {
                format!(
                    "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
                    user.name, resource.verb, target, resource.group
                )
            } else {
                format!(
                    "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
                    user.name, resource.verb, target, resource.group, resource.namespace
                )
            }
        }
    };
    if !reason.is_empty() {
        message = format!("{message}: {reason}");
    }
    let (message, details) = match attributes {
        Attributes::NonResource(_) => (format!("forbidden: {message}"), StatusDetails::default()),
        Attributes::Resource(resource) => {
            let qualified = if resource.group.is_empty() {
                resource.resource.clone()
            } else {
                format!("{}.{}", resource.resource, resource.group)
            };
            let message = if resource.name.is_empty() {
                format!("{qualified} is forbidden: {message}")
            } else {
                format!("{qualified} {:?} is forbidden: {message}", resource.name)
            };
            let details = StatusDetails {
                group: Some(resource.group.clone()),
                kind: Some(resource.resource.clone()),
                name: Some(resource.name.clone()),
                ..StatusDetails::default()
            };
            (message, details)
        }
    };
    failure(StatusCode::FORBIDDEN, "Forbidden", message, Some(details))
}

/// Whether `path` is one of [`UNAUTHENTICATED_PATHS`] or below one of them.
fn is_unauthenticated_path(path: &str) -> bool {
    UNAUTHENTICATED_PATHS.iter().any(|allowed| {
        path.strip_prefix(allowed)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The authenticator and authorizer [`auth_middleware`] consults. Cheap to clone.
#[derive(Clone)]
pub struct AuthState {
    authenticator: Arc<dyn Authenticator>,
    authorizer: Arc<dyn Authorizer>,
}

/// Settings for [`AuthState::delegated`].
#[derive(Clone, Debug, Default)]
pub struct DelegatedAuthOptions {
    /// Where the authentication configuration comes from and how tokens are cached.
    pub authentication: authn::AuthnOptions,
    /// How authorization decisions are cached.
    pub authorization: authz::AuthzOptions,
}

impl AuthState {
    /// Combines any authenticator and authorizer.
    pub fn new(authenticator: Arc<dyn Authenticator>, authorizer: Arc<dyn Authorizer>) -> Self {
        Self {
            authenticator,
            authorizer,
        }
    }

    /// Delegated authentication and authorization against the cluster, as an aggregated API
    /// server does: loads `kube-system/extension-apiserver-authentication` (or the file
    /// overrides), makes `tls` trust its client CAs, and spawns the task that keeps both
    /// up to date. The returned handle is that task; it ends when `token` is cancelled (or
    /// if it panics).
    pub async fn delegated(
        client: kube::Client,
        options: DelegatedAuthOptions,
        tls: &TlsState,
        token: tokio_util::sync::CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), authn::AuthnError> {
        let authn_options = options.authentication;
        let config = authn::load_config(&client, &authn_options).await?;
        let reviewer = Arc::new(authn::KubeTokenReviewer::new(client.clone()));
        let authenticator = Arc::new(authn::DelegatingAuthenticator::new(
            config.clone(),
            reviewer,
            &authn_options,
        )?);
        authn::apply_client_cas(tls, &config)?;
        let refresh = authn::spawn_config_refresh(
            authenticator.clone(),
            client.clone(),
            authn_options,
            Some(tls.clone()),
            token,
        );
        let authorizer = Arc::new(authz::SubjectAccessReviewAuthorizer::new(
            Arc::new(authz::KubeAccessReviewer::new(client)),
            options.authorization,
        ));
        Ok((Self::new(authenticator, authorizer), refresh))
    }

    /// Standalone mode (no cluster): every request is treated as coming from
    /// [`authn::LOCAL_USER`] and allowed. Only for a listener the caller has bound to
    /// loopback, where reaching the port already means being on the machine.
    pub fn standalone() -> Self {
        Self::new(Arc::new(authn::LocalUser), Arc::new(authz::AlwaysAllow))
    }
}

/// axum middleware that authenticates and authorizes every request except
/// `/healthz`, `/livez`, `/readyz` (and paths below them). On success the request continues
/// with [`UserInfo`] and [`Attributes`] in its extensions and its credential headers removed;
/// otherwise it is answered with a Kubernetes `Status`: 401 (no valid credentials), 403 (denied),
/// 503 (authentication backend down) or 500 (authorization backend failed).
///
/// Applied with `router.layer(axum::middleware::from_fn_with_state(state, auth_middleware))`
/// *after* all routes and the fallback, so they are all covered ([`crate::api::router`] does).
pub async fn auth_middleware(
    State(state): State<AuthState>,
    request: Request,
    next: Next,
) -> Response {
    if is_unauthenticated_path(request.uri().path()) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let attributes = request_info::request_attributes(&parts.method, parts.uri.path());
    let span = info_span!(
        "auth",
        method = %parts.method,
        path = %parts.uri.path(),
        user = tracing::field::Empty,
    );
    let outcome = async {
        let peer_certificates = parts
            .extensions
            .get::<PeerCertificates>()
            .and_then(|certificates| certificates.0.as_deref());
        let request_parts = RequestParts {
            headers: &parts.headers,
            peer_certificates,
        };
        let user = match state.authenticator.authenticate(&request_parts).await {
            Ok(user) => user.with_authenticated_group(),
            Err(error) => {
                match &error {
                    AuthError::Unauthenticated(reason) => debug!(%reason, "unauthenticated"),
                    other => warn!(error = %ErrorChain(other), "authentication failed"),
                }
                return Err(error.into_response());
            }
        };
        tracing::Span::current().record("user", user.name.as_str());
        match state.authorizer.authorize(&user, &attributes).await {
            Ok(decision) if decision.allowed => Ok(user),
            Ok(decision) => {
                debug!(reason = %decision.reason, ?attributes, "forbidden");
                Err(forbidden_response(&user, &attributes, &decision.reason))
            }
            Err(error) => {
                warn!(error = %ErrorChain(&error), "authorization failed");
                Err(error.into_response())
            }
        }
    }
    .instrument(span)
    .await;
    match outcome {
        Ok(user) => {
            state.authenticator.strip_credentials(&mut parts.headers);
            parts.extensions.insert(user);
            parts.extensions.insert(attributes);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn authenticated_users_join_system_authenticated_once() {
        let user = UserInfo {
            name: "system:aggregator".into(),
            uid: String::new(),
            groups: vec![],
            extra: BTreeMap::new(),
        }
        .with_authenticated_group();
        assert_eq!(user.groups, vec![AUTHENTICATED_GROUP.to_owned()]);
        assert_eq!(user.clone().with_authenticated_group().groups.len(), 1);
    }

    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tower::ServiceExt;

    /// Authenticates `Authorization: Bearer <name>` as user `<name>`; a backend failure for
    /// the token `broken`.
    struct NameFromToken;

    impl Authenticator for NameFromToken {
        fn authenticate<'a>(
            &'a self,
            request: &'a RequestParts<'a>,
        ) -> BoxFuture<'a, Result<UserInfo, AuthError>> {
            Box::pin(async move {
                let token = request
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| AuthError::Unauthenticated("no token".into()))?;
                if token == "broken" {
                    return Err(AuthError::AuthenticationUnavailable(
                        authn::AuthnError::TokenReviewTimeout(Duration::from_secs(1)),
                    ));
                }
                Ok(UserInfo {
                    name: token.to_owned(),
                    ..UserInfo::default()
                })
            })
        }
    }

    /// Allows only user `alice`; fails for user `error`.
    struct OnlyAlice {
        calls: AtomicUsize,
    }

    impl Authorizer for OnlyAlice {
        fn authorize<'a>(
            &'a self,
            user: &'a UserInfo,
            _attributes: &'a Attributes,
        ) -> BoxFuture<'a, Result<Decision, AuthError>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                if user.name == "error" {
                    return Err(AuthError::AuthorizationUnavailable(
                        authz::AuthzError::Timeout(Duration::from_secs(1)),
                    ));
                }
                Ok(Decision {
                    allowed: user.name == "alice",
                    reason: if user.name == "alice" {
                        String::new()
                    } else {
                        "RBAC: no rule".to_owned()
                    },
                })
            })
        }
    }

    fn app() -> (Router, Arc<OnlyAlice>) {
        let authorizer = Arc::new(OnlyAlice {
            calls: AtomicUsize::new(0),
        });
        let state = AuthState::new(Arc::new(NameFromToken), authorizer.clone());
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz/{check}", get(|| async { "ok" }))
            .route(
                "/whoami",
                get(|request: Request| async move {
                    let leaked = request.headers().contains_key(header::AUTHORIZATION);
                    let user = request
                        .extensions()
                        .get::<UserInfo>()
                        .map(|u| u.name.clone())
                        .unwrap_or_default();
                    format!("{user} leaked={leaked}")
                }),
            )
            .fallback(|| async { (StatusCode::NOT_FOUND, "nope") })
            .layer(axum::middleware::from_fn_with_state(state, auth_middleware));
        (router, authorizer)
    }

    async fn call(router: &Router, path: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
        let mut builder = Request::builder().uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = router
            .clone()
            .oneshot(builder.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, body.to_vec())
    }

    pub(crate) fn decode_status(body: &[u8]) -> (serde_json::Value, Status) {
        let raw: serde_json::Value = serde_json::from_slice(body).expect("json body");
        assert_eq!(raw["kind"], "Status", "{raw}");
        assert_eq!(raw["apiVersion"], "v1", "{raw}");
        let status: Status = serde_json::from_value(raw.clone()).expect("decodes as Status");
        assert_eq!(status.status.as_deref(), Some("Failure"));
        (raw, status)
    }

    #[tokio::test]
    async fn probes_skip_auth() {
        let (router, authorizer) = app();
        assert_eq!(call(&router, "/healthz", None).await.0, StatusCode::OK);
        assert_eq!(call(&router, "/readyz/store", None).await.0, StatusCode::OK);
        // Not a probe path, only a prefix of one.
        assert_eq!(
            call(&router, "/healthzz", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(authorizer.calls.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn missing_credentials_get_401_status() {
        let (router, _) = app();
        for path in ["/whoami", "/metrics", "/openapi/v2", "/apis", "/unknown"] {
            let (code, body) = call(&router, path, None).await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{path}");
            let (_, status) = decode_status(&body);
            assert_eq!(status.code, Some(401));
            assert_eq!(status.reason.as_deref(), Some("Unauthorized"));
            assert_eq!(status.message.as_deref(), Some("Unauthorized"));
        }
    }

    #[tokio::test]
    async fn allowed_request_sees_user_and_no_credentials() {
        let (router, _) = app();
        let (code, body) = call(&router, "/whoami", Some("alice")).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(String::from_utf8_lossy(&body), "alice leaked=false");
    }

    #[tokio::test]
    async fn denied_resource_request_gets_kubernetes_forbidden_message() {
        let (router, _) = app();
        let (code, body) = call(
            &router,
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/team-a/pods/vllm-0/ttft_p95",
            Some("bob"),
        )
        .await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        let (raw, status) = decode_status(&body);
        assert_eq!(status.code, Some(403));
        assert_eq!(status.reason.as_deref(), Some("Forbidden"));
        assert_eq!(
            status.message.as_deref(),
            Some(
                "pods.custom.metrics.k8s.io \"vllm-0\" is forbidden: User \"bob\" cannot get \
                 resource \"pods/ttft_p95\" in API group \"custom.metrics.k8s.io\" in the \
                 namespace \"team-a\": RBAC: no rule"
            )
        );
        assert_eq!(raw["details"]["group"], "custom.metrics.k8s.io");
        assert_eq!(raw["details"]["kind"], "pods");
        assert_eq!(raw["details"]["name"], "vllm-0");
    }

    #[tokio::test]
    async fn forbidden_messages_for_collections_cluster_scope_and_paths() {
        let bob = UserInfo {
            name: "bob".into(),
            ..UserInfo::default()
        };
        let cases = [
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/queue",
                "queue.external.metrics.k8s.io is forbidden: User \"bob\" cannot list resource \
                 \"queue\" in API group \"external.metrics.k8s.io\" in the namespace \"ns\"",
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/nodes/n1/gpu",
                "nodes.custom.metrics.k8s.io \"n1\" is forbidden: User \"bob\" cannot get \
                 resource \"nodes/gpu\" in API group \"custom.metrics.k8s.io\" at the cluster \
                 scope",
            ),
            ("/apis", "forbidden: User \"bob\" cannot get path \"/apis\""),
        ];
        for (path, want) in cases {
            let attributes = request_info::request_attributes(&axum::http::Method::GET, path);
            let response = forbidden_response(&bob, &attributes, "");
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            let (_, status) = decode_status(&body);
            assert_eq!(status.message.as_deref(), Some(want), "{path}");
        }
    }

    #[tokio::test]
    async fn backend_failures_are_503_and_500() {
        let (router, _) = app();
        let (code, body) = call(&router, "/whoami", Some("broken")).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(decode_status(&body).1.code, Some(503));
        let (code, body) = call(&router, "/whoami", Some("error")).await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        let (_, status) = decode_status(&body);
        assert_eq!(status.code, Some(500));
        assert_eq!(status.reason.as_deref(), Some("InternalError"));
    }

    /// One real rustls handshake per client over 127.0.0.1: serving cert from files, client
    /// CAs from the authentication config, delegated authn/authz with fake reviews.
    #[tokio::test]
    async fn tls_round_trip_with_delegated_auth() {
        use crate::auth::authn::tests::{Cas, FakeTokenReviewer, GOOD_TOKEN};
        use crate::auth::authz::tests::FakeAccessReviewer;
        use crate::tls::test_support::{TempDir, TestCa};
        use crate::tls::{serve, TlsOptions, TlsState};

        let dir = TempDir::new();
        let serving_ca = TestCa::new("serving-ca");
        let serving = serving_ca.server_leaf(&["localhost", "127.0.0.1"]);
        let tls = TlsState::new(&TlsOptions {
            cert_file: Some(dir.write("tls.crt", &serving.cert_pem)),
            key_file: Some(dir.write("tls.key", &serving.key_pem)),
            extra_sans: vec![],
        })
        .expect("tls state");
        let cas = Cas::new();
        let config = cas.config();
        authn::apply_client_cas(&tls, &config).expect("client CAs");
        let authenticator = Arc::new(
            authn::DelegatingAuthenticator::new(
                config,
                FakeTokenReviewer::new(),
                &authn::AuthnOptions::default(),
            )
            .expect("authenticator"),
        );
        let authorizer = Arc::new(authz::SubjectAccessReviewAuthorizer::new(
            Arc::new(FakeAccessReviewer::default()),
            authz::AuthzOptions::default(),
        ));
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .fallback(|request: Request| async move {
                request
                    .extensions()
                    .get::<UserInfo>()
                    .map(|user| user.name.clone())
                    .unwrap_or_default()
            })
            .layer(axum::middleware::from_fn_with_state(
                AuthState::new(authenticator, authorizer),
                auth_middleware,
            ));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            tls,
            router,
            crate::http::ServeOptions::default(),
            async {
                let _ = stopped.await;
            },
        ));

        let client = |identity: Option<&crate::tls::test_support::TestLeaf>| {
            let mut builder = reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(
                    reqwest::Certificate::from_pem(serving_ca.cert.pem().as_bytes()).expect("ca"),
                );
            if let Some(leaf) = identity {
                let pem = format!("{}{}", leaf.key_pem, leaf.cert_pem);
                builder = builder
                    .identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
            }
            builder.build().expect("client")
        };
        let url = format!(
            "https://127.0.0.1:{}/apis/custom.metrics.k8s.io/v1beta2/namespaces/team-a/pods/%2A/ttft_p95",
            address.port()
        );

        // Probes need no credentials.
        let health = client(None)
            .get(format!("https://127.0.0.1:{}/healthz", address.port()))
            .send()
            .await
            .expect("healthz");
        assert_eq!(health.status(), StatusCode::OK);

        // No client certificate, no token: 401 with a Status body.
        let response = client(None)
            .get(&url)
            .send()
            .await
            .expect("handshake without cert");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body = response.bytes().await.expect("body");
        assert_eq!(
            decode_status(&body).1.reason.as_deref(),
            Some("Unauthorized")
        );

        // User certificate from the client CA, allowed by the SAR.
        let alice = cas.client.client_leaf("alice", &["team-a"]);
        let response = client(Some(&alice)).get(&url).send().await.expect("alice");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.expect("body"), "alice");

        // Front proxy with an allowed CN, asserting alice in headers.
        let proxy = cas.front_proxy.client_leaf("front-proxy-client", &[]);
        let response = client(Some(&proxy))
            .get(&url)
            .header("X-Remote-User", "alice")
            .header("X-Remote-Group", "system:authenticated")
            .send()
            .await
            .expect("front proxy");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.expect("body"), "alice");

        // Front-proxy CA but a CN that is not allowed: 401.
        let impostor = cas.front_proxy.client_leaf("impostor", &[]);
        let response = client(Some(&impostor))
            .get(&url)
            .header("X-Remote-User", "alice")
            .send()
            .await
            .expect("handshake succeeds, the CA is trusted");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        // Certificate from a CA nobody trusts: refused in the handshake (or, if the client
        // only learns after, with 401). Never served.
        let stranger = cas.stranger.client_leaf("alice", &[]);
        match client(Some(&stranger)).get(&url).send().await {
            Err(_) => {}
            Ok(response) => assert_eq!(response.status(), StatusCode::UNAUTHORIZED),
        }

        // Bearer token reviewed as the HPA service account, which the SAR denies: 403.
        let response = client(None)
            .get(&url)
            .bearer_auth(GOOD_TOKEN)
            .send()
            .await
            .expect("token");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = response.bytes().await.expect("body");
        let (_, status) = decode_status(&body);
        assert_eq!(
            status.message.as_deref(),
            Some(
                "pods.custom.metrics.k8s.io is forbidden: User \"system:serviceaccount:kube-system:hpa\" \
                 cannot list resource \"pods/ttft_p95\" in API group \"custom.metrics.k8s.io\" in \
                 the namespace \"team-a\": no RBAC policy matched"
            )
        );

        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(15), server)
            .await
            .expect("server stops after shutdown")
            .expect("server task");
    }
}
