//! Delegated authentication: who is calling, decided the way kube-apiserver's aggregation layer
//! expects an extension API server to decide it.
//!
//! This module owns [`DelegatingAuthenticator`] and the order of its methods; each method lives
//! in its own file. It tries, in k8s.io/apiserver's order and
//! with its union semantics (the first method that succeeds wins; if none does, the request is
//! refused):
//!
//! 1. **Front-proxy request headers** (`front_proxy`). kube-apiserver forwards requests with a client
//!    certificate from the request-header CA and the real user in headers (`X-Remote-User`,
//!    `X-Remote-Group`, `X-Remote-Extra-*` by default). The certificate must verify against that
//!    CA *specifically* and its CN must be in the allowed names (empty list: any CN); only then
//!    are the headers believed. A certificate from that CA with another CN is refused
//!    ("x509: subject with cn=... is not in the allowed list").
//! 2. **Client certificates** (`x509`) from the cluster client CA: user = CN, groups = O.
//! 3. **Bearer tokens** (`token_review`), checked with a TokenReview and cached by SHA-256 of the token
//!    (accepted and rejected alike) for a short TTL.
//!
//! There is no anonymous access: a request with none of these is 401.
//!
//! The CA pools, allowed names and header names come from the ConfigMap
//! `kube-system/extension-apiserver-authentication` (which kube-apiserver maintains), polled every
//! [`CONFIG_POLL_INTERVAL`], with optional file overrides (`config`); [`AuthnConfig`] is a
//! plain struct so tests build it without a cluster. CA changes are pushed to the TLS state as
//! well, because the handshake must accept the same certificates.
//!
//! It does not decide what a user may do ([`super::authz`]).

mod config;
mod front_proxy;
mod token_review;
mod x509;

pub use config::{
    apply_client_cas, load_config, spawn_config_refresh, AuthnConfig, AuthnOptions,
    RequestHeaderConfig, CONFIG_MAP_NAME, CONFIG_MAP_NAMESPACE, CONFIG_POLL_INTERVAL,
};
pub use token_review::{KubeTokenReviewer, TokenReviewer, DEFAULT_TOKEN_CACHE_TTL};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::http::{header, HeaderMap};
use futures::future::BoxFuture;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use tracing::debug;

use super::{AuthError, Authenticator, RequestParts, UserInfo};
use crate::tls::TlsError;
use front_proxy::FrontProxy;
use token_review::TokenReviews;

/// The user standalone mode attributes every request to ([`LocalUser`]).
pub const LOCAL_USER: &str = "inferscale:local";

/// Everything that can go wrong while loading the configuration or reviewing a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// Reading the authentication ConfigMap failed.
    #[error("reading configmap {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME}")]
    ConfigMapLookup(#[source] kube::Error),
    /// The adapter's service account may not read the authentication ConfigMap.
    #[error(
        "not allowed to read configmap {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME}; usually fixed \
         by binding the role {CONFIG_MAP_NAMESPACE}/extension-apiserver-authentication-reader to \
         the adapter's service account"
    )]
    ConfigMapForbidden(#[source] kube::Error),
    /// A ConfigMap key that should hold a JSON array of strings does not.
    #[error("configmap key {key} is not a JSON array of strings")]
    InvalidStringList {
        /// The key.
        key: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A CA bundle holds no usable PEM certificate.
    #[error("CA bundle from {origin}: {reason}")]
    InvalidCaBundle {
        /// ConfigMap key or file path the bundle came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A CA override file could not be read.
    #[error("reading CA file {path}")]
    ReadCaFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A CA bundle parsed but none of its certificates can anchor verification.
    #[error("building the {pool} certificate verifier")]
    BuildVerifier {
        /// Which pool (`request-header` or `client`).
        pool: &'static str,
        /// The rustls error.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The TokenReview request failed.
    #[error("TokenReview failed")]
    TokenReview(#[source] kube::Error),
    /// The TokenReview request did not finish in time.
    #[error("TokenReview did not answer within {0:?}")]
    TokenReviewTimeout(Duration),
    /// The new client CA pools could not be installed into the TLS configuration.
    #[error("updating the TLS client CA pools")]
    UpdateTls(#[source] TlsError),
}

/// The configuration with its verifiers built, swapped as a whole.
struct Compiled {
    config: AuthnConfig,
    front_proxy: Option<FrontProxy>,
    client_ca: Option<Arc<dyn ClientCertVerifier>>,
}

impl Compiled {
    fn new(config: AuthnConfig, provider: &Arc<CryptoProvider>) -> Result<Self, AuthnError> {
        let client_ca = x509::verifier(provider, &config.client_ca, "client")?;
        let front_proxy = match &config.request_header {
            Some(request_header) => FrontProxy::new(request_header, provider)?,
            None => None,
        };
        Ok(Self {
            config,
            front_proxy,
            client_ca,
        })
    }
}

/// Why one authentication method did not produce a user.
pub(super) enum Attempt {
    /// The request carried nothing this method looks at.
    NotApplicable,
    /// It carried credentials for this method and they were refused.
    Refused(String),
}

/// Front-proxy headers, then client certificates, then TokenReview, as k8s' delegated
/// authentication; see the module docs.
pub struct DelegatingAuthenticator {
    provider: Arc<CryptoProvider>,
    compiled: RwLock<Arc<Compiled>>,
    tokens: TokenReviews,
}

impl DelegatingAuthenticator {
    /// Builds the authenticator from `config`, reviewing tokens with `token_reviewer` and
    /// caching the answers for `options.token_cache_ttl`.
    pub fn new(
        config: AuthnConfig,
        token_reviewer: Arc<dyn TokenReviewer>,
        options: &AuthnOptions,
    ) -> Result<Self, AuthnError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let compiled = Compiled::new(config, &provider)?;
        Ok(Self {
            provider,
            compiled: RwLock::new(Arc::new(compiled)),
            tokens: TokenReviews::new(token_reviewer, options.token_cache_ttl),
        })
    }

    /// Installs a new configuration; returns whether it differed from the current one. On
    /// error the current configuration stays.
    pub fn set_config(&self, config: AuthnConfig) -> Result<bool, AuthnError> {
        if self.current().config == config {
            return Ok(false);
        }
        let compiled = Compiled::new(config, &self.provider)?;
        *self
            .compiled
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(compiled);
        Ok(true)
    }

    /// The configuration in use.
    pub fn config(&self) -> AuthnConfig {
        self.current().config.clone()
    }

    fn current(&self) -> Arc<Compiled> {
        self.compiled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Authenticator for DelegatingAuthenticator {
    fn authenticate<'a>(
        &'a self,
        request: &'a RequestParts<'a>,
    ) -> BoxFuture<'a, Result<UserInfo, AuthError>> {
        Box::pin(async move {
            let compiled = self.current();
            let mut refusals = Vec::new();
            let front_proxy = compiled
                .front_proxy
                .as_ref()
                .map_or(Err(Attempt::NotApplicable), |proxy| {
                    proxy.authenticate(request)
                });
            let client_cert = compiled
                .client_ca
                .as_ref()
                .map_or(Err(Attempt::NotApplicable), |verifier| {
                    x509::authenticate(verifier.as_ref(), request)
                });
            for attempt in [front_proxy, client_cert] {
                match attempt {
                    Ok(user) => return Ok(user),
                    Err(Attempt::Refused(reason)) => refusals.push(reason),
                    Err(Attempt::NotApplicable) => {}
                }
            }
            match self.tokens.authenticate(request.headers).await {
                Ok(Ok(user)) => return Ok(user),
                Ok(Err(Attempt::Refused(reason))) => refusals.push(reason),
                Ok(Err(Attempt::NotApplicable)) => {}
                Err(error) => return Err(AuthError::AuthenticationUnavailable(error)),
            }
            if refusals.is_empty() {
                debug!("no client certificate or bearer token presented");
                return Err(AuthError::Unauthenticated(
                    "no client certificate or bearer token presented".to_owned(),
                ));
            }
            Err(AuthError::Unauthenticated(refusals.join("; ")))
        })
    }

    /// Removes `Authorization` and every configured front-proxy header (k8s
    /// `ClearAuthenticationHeaders`), so a handler can never mistake them for the identity.
    fn strip_credentials(&self, headers: &mut HeaderMap) {
        headers.remove(header::AUTHORIZATION);
        if let Some(front_proxy) = &self.current().front_proxy {
            front_proxy.strip_headers(headers);
        }
    }
}

/// Standalone mode's authenticator: every request is [`LOCAL_USER`] in group
/// `system:authenticated`. Only for a loopback listener with [`super::authz::AlwaysAllow`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalUser;

impl Authenticator for LocalUser {
    fn authenticate<'a>(
        &'a self,
        _request: &'a RequestParts<'a>,
    ) -> BoxFuture<'a, Result<UserInfo, AuthError>> {
        Box::pin(async {
            Ok(UserInfo {
                name: LOCAL_USER.to_owned(),
                uid: String::new(),
                groups: vec!["system:authenticated".to_owned()],
                extra: BTreeMap::new(),
            })
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tls::test_support::TestCa;
    use axum::http::{HeaderName, HeaderValue};
    use k8s_openapi::api::authentication::v1::TokenReviewStatus;
    use k8s_openapi::api::authentication::v1::UserInfo as ReviewedUser;
    use rustls::pki_types::CertificateDer;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// TokenReviewer that knows one good token and counts its calls.
    pub(crate) struct FakeTokenReviewer {
        pub calls: AtomicUsize,
    }

    impl FakeTokenReviewer {
        pub fn new() -> Arc<Self> {
            Arc::new(Self {
                calls: AtomicUsize::new(0),
            })
        }
    }

    pub(crate) const GOOD_TOKEN: &str = "good-token";
    const DOWN_TOKEN: &str = "backend-down";

    impl TokenReviewer for FakeTokenReviewer {
        fn review<'a>(
            &'a self,
            token: &'a str,
        ) -> BoxFuture<'a, Result<TokenReviewStatus, AuthnError>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                match token {
                    GOOD_TOKEN => Ok(TokenReviewStatus {
                        authenticated: Some(true),
                        user: Some(ReviewedUser {
                            username: Some("system:serviceaccount:kube-system:hpa".to_owned()),
                            uid: Some("uid-1".to_owned()),
                            groups: Some(vec!["system:serviceaccounts".to_owned()]),
                            extra: Some(BTreeMap::from([(
                                "authentication.kubernetes.io/pod-name".to_owned(),
                                vec!["hpa-0".to_owned()],
                            )])),
                        }),
                        ..TokenReviewStatus::default()
                    }),
                    DOWN_TOKEN => Err(AuthnError::TokenReviewTimeout(Duration::from_secs(10))),
                    _ => Ok(TokenReviewStatus {
                        authenticated: Some(false),
                        error: Some("token expired".to_owned()),
                        ..TokenReviewStatus::default()
                    }),
                }
            })
        }
    }

    /// A front-proxy CA, a client CA and an unrelated CA.
    pub(crate) struct Cas {
        pub front_proxy: TestCa,
        pub client: TestCa,
        pub stranger: TestCa,
    }

    impl Cas {
        pub fn new() -> Self {
            Self {
                front_proxy: TestCa::new("front-proxy-ca"),
                client: TestCa::new("kubernetes-ca"),
                stranger: TestCa::new("someone-elses-ca"),
            }
        }

        pub fn config(&self) -> AuthnConfig {
            AuthnConfig {
                client_ca: vec![self.client.der()],
                request_header: Some(RequestHeaderConfig {
                    allowed_names: vec!["front-proxy-client".to_owned()],
                    ..RequestHeaderConfig::with_default_headers(vec![self.front_proxy.der()])
                }),
            }
        }
    }

    fn authenticator(
        config: AuthnConfig,
        reviewer: Arc<FakeTokenReviewer>,
    ) -> DelegatingAuthenticator {
        DelegatingAuthenticator::new(config, reviewer, &AuthnOptions::default())
            .expect("authenticator")
    }

    async fn run(
        authenticator: &DelegatingAuthenticator,
        headers: &HeaderMap,
        chain: Option<Vec<CertificateDer<'static>>>,
    ) -> Result<UserInfo, AuthError> {
        let request = RequestParts {
            headers,
            peer_certificates: chain.as_deref(),
        };
        authenticator.authenticate(&request).await
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    fn unauthenticated_reason(result: Result<UserInfo, AuthError>) -> String {
        match result {
            Err(AuthError::Unauthenticated(reason)) => reason,
            other => panic!("expected Unauthenticated, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn nothing_presented_is_unauthenticated() {
        let cas = Cas::new();
        let authn = authenticator(cas.config(), FakeTokenReviewer::new());
        let reason = unauthenticated_reason(run(&authn, &HeaderMap::new(), None).await);
        assert!(
            reason.contains("no client certificate or bearer token"),
            "{reason}"
        );
        // An Authorization header that is not a bearer token is not a credential either.
        let basic = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        unauthenticated_reason(run(&authn, &basic, None).await);
        let empty = headers(&[("authorization", "Bearer ")]);
        unauthenticated_reason(run(&authn, &empty, None).await);
    }

    #[tokio::test]
    async fn front_proxy_headers_give_user_groups_and_extra() {
        let cas = Cas::new();
        let authn = authenticator(cas.config(), FakeTokenReviewer::new());
        let proxy = cas.front_proxy.client_leaf("front-proxy-client", &[]);
        let request_headers = headers(&[
            ("X-Remote-User", "alice"),
            ("X-Remote-Uid", "uid-alice"),
            ("X-Remote-Group", "team-a"),
            ("X-Remote-Group", ""),
            ("X-Remote-Group", "system:authenticated"),
            ("X-Remote-Extra-Reason", "on-call"),
            ("X-Remote-Extra-Reason", "incident"),
            ("X-Remote-Extra-Example.com%2Fteam", "platform"),
            ("X-Remote-Extra-Bad%zzKey", "kept"),
        ]);
        let user = run(&authn, &request_headers, Some(vec![proxy.der]))
            .await
            .expect("authenticated");
        assert_eq!(user.name, "alice");
        assert_eq!(user.uid, "uid-alice");
        assert_eq!(user.groups, vec!["team-a", "system:authenticated"]);
        assert_eq!(
            user.extra,
            BTreeMap::from([
                (
                    "reason".to_owned(),
                    vec!["on-call".to_owned(), "incident".to_owned()]
                ),
                ("example.com/team".to_owned(), vec!["platform".to_owned()]),
                ("bad%zzkey".to_owned(), vec!["kept".to_owned()]),
            ])
        );
    }

    #[tokio::test]
    async fn several_username_and_group_headers() {
        let cas = Cas::new();
        let mut config = cas.config();
        if let Some(request_header) = &mut config.request_header {
            request_header.username_headers =
                vec!["X-Remote-User".into(), "X-Forwarded-User".into()];
            request_header.group_headers =
                vec!["X-Remote-Group".into(), "X-Forwarded-Groups".into()];
            request_header.allowed_names.clear();
        }
        let authn = authenticator(config, FakeTokenReviewer::new());
        let proxy = cas.front_proxy.client_leaf("any-name-allowed", &[]);
        let request_headers = headers(&[
            ("X-Forwarded-User", "bob"),
            ("X-Forwarded-Groups", "g2"),
            ("X-Remote-Group", "g1"),
        ]);
        let user = run(&authn, &request_headers, Some(vec![proxy.der]))
            .await
            .expect("authenticated");
        assert_eq!(user.name, "bob");
        assert_eq!(user.groups, vec!["g1", "g2"]);
    }

    #[tokio::test]
    async fn front_proxy_cert_with_name_not_allowed_is_refused() {
        let cas = Cas::new();
        let authn = authenticator(cas.config(), FakeTokenReviewer::new());
        let impostor = cas.front_proxy.client_leaf("not-the-proxy", &[]);
        let request_headers = headers(&[("X-Remote-User", "system:admin")]);
        let reason =
            unauthenticated_reason(run(&authn, &request_headers, Some(vec![impostor.der])).await);
        assert!(
            reason.contains("x509: subject with cn=not-the-proxy is not in the allowed list"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn headers_without_front_proxy_cert_are_ignored() {
        let cas = Cas::new();
        let authn = authenticator(cas.config(), FakeTokenReviewer::new());
        // A user certificate from the client CA: authenticates as its CN, never as the header.
        let client = cas.client.client_leaf("carol", &["devs"]);
        let request_headers = headers(&[("X-Remote-User", "system:admin")]);
        let user = run(&authn, &request_headers, Some(vec![client.der]))
            .await
            .expect("authenticated");
        assert_eq!(user.name, "carol");
        assert_eq!(user.groups, vec!["devs"]);
        // No certificate at all: the headers alone mean nothing.
        unauthenticated_reason(run(&authn, &request_headers, None).await);
    }

    #[tokio::test]
    async fn certificate_from_unknown_ca_is_refused() {
        let cas = Cas::new();
        let authn = authenticator(cas.config(), FakeTokenReviewer::new());
        let stranger = cas.stranger.client_leaf("front-proxy-client", &[]);
        let request_headers = headers(&[("X-Remote-User", "system:admin")]);
        let reason =
            unauthenticated_reason(run(&authn, &request_headers, Some(vec![stranger.der])).await);
        assert!(
            reason.contains("not from the request-header CA"),
            "{reason}"
        );
        assert!(reason.contains("not from the client CA"), "{reason}");
    }

    #[tokio::test]
    async fn bearer_token_is_reviewed_and_cached() {
        let cas = Cas::new();
        let reviewer = FakeTokenReviewer::new();
        let authn = authenticator(cas.config(), reviewer.clone());
        let good = headers(&[("authorization", &format!("bearer {GOOD_TOKEN}"))]);
        let user = run(&authn, &good, None).await.expect("authenticated");
        assert_eq!(user.name, "system:serviceaccount:kube-system:hpa");
        assert_eq!(user.uid, "uid-1");
        assert_eq!(user.groups, vec!["system:serviceaccounts"]);
        assert_eq!(
            user.extra["authentication.kubernetes.io/pod-name"],
            vec!["hpa-0"]
        );
        run(&authn, &good, None).await.expect("cached");
        assert_eq!(reviewer.calls.load(Ordering::Relaxed), 1);

        let bad = headers(&[("authorization", "Bearer expired-token")]);
        let reason = unauthenticated_reason(run(&authn, &bad, None).await);
        assert_eq!(reason, "token expired");
        unauthenticated_reason(run(&authn, &bad, None).await);
        assert_eq!(
            reviewer.calls.load(Ordering::Relaxed),
            2,
            "rejections are cached too"
        );
    }

    #[tokio::test]
    async fn token_review_failure_is_unavailable_and_not_cached() {
        let cas = Cas::new();
        let reviewer = FakeTokenReviewer::new();
        let authn = authenticator(cas.config(), reviewer.clone());
        let down = headers(&[("authorization", &format!("Bearer {DOWN_TOKEN}"))]);
        for _ in 0..2 {
            assert!(matches!(
                run(&authn, &down, None).await,
                Err(AuthError::AuthenticationUnavailable(_))
            ));
        }
        assert_eq!(reviewer.calls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn token_cache_entries_expire() {
        let cas = Cas::new();
        let reviewer = FakeTokenReviewer::new();
        let options = AuthnOptions {
            token_cache_ttl: Duration::from_millis(40),
            ..AuthnOptions::default()
        };
        let authn = DelegatingAuthenticator::new(cas.config(), reviewer.clone(), &options)
            .expect("authenticator");
        let good = headers(&[("authorization", &format!("Bearer {GOOD_TOKEN}"))]);
        run(&authn, &good, None).await.expect("authenticated");
        run(&authn, &good, None).await.expect("cached");
        tokio::time::sleep(Duration::from_millis(60)).await;
        run(&authn, &good, None).await.expect("authenticated");
        assert_eq!(reviewer.calls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn set_config_swaps_trust() {
        let cas = Cas::new();
        let authn = authenticator(AuthnConfig::default(), FakeTokenReviewer::new());
        let client = cas.client.client_leaf("carol", &[]);
        unauthenticated_reason(
            run(&authn, &HeaderMap::new(), Some(vec![client.der.clone()])).await,
        );
        assert!(authn.set_config(cas.config()).expect("valid"));
        assert!(!authn.set_config(cas.config()).expect("valid"), "unchanged");
        let user = run(&authn, &HeaderMap::new(), Some(vec![client.der]))
            .await
            .expect("trusted now");
        assert_eq!(user.name, "carol");
    }

    #[test]
    fn strip_credentials_removes_identity_headers() {
        let cas = Cas::new();
        let authn = authenticator(cas.config(), FakeTokenReviewer::new());
        let mut request_headers = headers(&[
            ("authorization", "Bearer x"),
            ("X-Remote-User", "alice"),
            ("X-Remote-Group", "g"),
            ("X-Remote-Extra-Scopes", "s"),
            ("Accept", "application/json"),
        ]);
        authn.strip_credentials(&mut request_headers);
        let left: Vec<&str> = request_headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, vec!["accept"]);
    }
}
