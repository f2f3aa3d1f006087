//! Delegated authorization: whether an authenticated user may make a request, asked of the
//! cluster with a SubjectAccessReview, the way k8s.io/apiserver's delegated authorizer does.
//!
//! This module owns [`SubjectAccessReviewAuthorizer`] (one `authorization.k8s.io/v1`
//! SubjectAccessReview per distinct user and attributes, answers cached briefly, members of
//! `system:masters` allowed without asking) and [`AlwaysAllow`] for standalone mode. The call
//! to the cluster is behind [`AccessReviewer`] so tests answer without one.
//!
//! It does not work out the attributes ([`super::request_info`]) or render the 403
//! ([`super::auth_middleware`]).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    SubjectAccessReviewStatus,
};
use kube::api::{Api, PostParams};

use super::ttl_cache::TtlCache;
use super::{Attributes, AuthError, Authorizer, Decision, UserInfo};

/// How long an "allowed" answer is reused. k8s' delegated authorization uses 10 s: a revoked
/// RoleBinding takes effect within that, and an HPA's burst of reads costs one review.
pub const DEFAULT_ALLOW_CACHE_TTL: Duration = Duration::from_secs(10);

/// How long a "denied" answer is reused; also 10 s in k8s, so a freshly created RoleBinding
/// starts working quickly while a misconfigured client cannot turn each request into a review.
pub const DEFAULT_DENY_CACHE_TTL: Duration = Duration::from_secs(10);

/// Most distinct (user, attributes) answers remembered. Callers are few, but attributes vary
/// per metric and object; 4096 covers a large cluster's HPAs and caps memory near a few MiB.
const DECISION_CACHE_CAPACITY: usize = 4096;

/// How long a SubjectAccessReview may take (k8s' delegated authorization client timeout).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Caching and shortcuts for [`SubjectAccessReviewAuthorizer`].
#[derive(Clone, Debug)]
pub struct AuthzOptions {
    /// How long allowed answers are reused; zero disables caching them.
    pub allow_cache_ttl: Duration,
    /// How long denied answers are reused; zero disables caching them.
    pub deny_cache_ttl: Duration,
    /// Members of these groups are allowed without a review. Defaults to `system:masters`,
    /// which kube-apiserver allows everything anyway, as in k8s.
    pub always_allow_groups: Vec<String>,
}

impl Default for AuthzOptions {
    fn default() -> Self {
        Self {
            allow_cache_ttl: DEFAULT_ALLOW_CACHE_TTL,
            deny_cache_ttl: DEFAULT_DENY_CACHE_TTL,
            always_allow_groups: vec!["system:masters".to_owned()],
        }
    }
}

/// Why an authorization decision could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// Creating the SubjectAccessReview failed.
    #[error("SubjectAccessReview failed")]
    Review(#[source] kube::Error),
    /// The SubjectAccessReview did not finish in time.
    #[error("SubjectAccessReview did not answer within {0:?}")]
    Timeout(Duration),
    /// The review said both allowed and denied (k8s treats this as an error, too).
    #[error("SubjectAccessReview returned both allow and deny: {reason}")]
    Contradictory {
        /// The reason the review gave.
        reason: String,
    },
}

/// Asks the cluster about one SubjectAccessReview spec. A trait so tests answer without one.
pub trait AccessReviewer: Send + Sync {
    /// Submits `spec` and returns the review's status.
    fn review<'a>(
        &'a self,
        spec: SubjectAccessReviewSpec,
    ) -> BoxFuture<'a, Result<SubjectAccessReviewStatus, AuthzError>>;
}

/// [`AccessReviewer`] that creates `authorization.k8s.io/v1` SubjectAccessReviews.
pub struct KubeAccessReviewer {
    api: Api<SubjectAccessReview>,
}

impl KubeAccessReviewer {
    /// Reviews with the cluster `client` talks to.
    pub fn new(client: kube::Client) -> Self {
        Self {
            api: Api::all(client),
        }
    }
}

impl AccessReviewer for KubeAccessReviewer {
    fn review<'a>(
        &'a self,
        spec: SubjectAccessReviewSpec,
    ) -> BoxFuture<'a, Result<SubjectAccessReviewStatus, AuthzError>> {
        Box::pin(async move {
            let review = SubjectAccessReview {
                spec,
                ..SubjectAccessReview::default()
            };
            let created = tokio::time::timeout(
                REVIEW_TIMEOUT,
                self.api.create(&PostParams::default(), &review),
            )
            .await
            .map_err(|_| AuthzError::Timeout(REVIEW_TIMEOUT))?
            .map_err(AuthzError::Review)?;
            // No status means the apiserver did not say "allowed".
            Ok(created.status.unwrap_or_default())
        })
    }
}

/// The SubjectAccessReview spec for `user` doing `attributes` (k8s webhook authorizer's
/// mapping: empty strings and lists are left out).
pub fn review_spec(user: &UserInfo, attributes: &Attributes) -> SubjectAccessReviewSpec {
    let some = |value: &str| (!value.is_empty()).then(|| value.to_owned());
    let (resource_attributes, non_resource_attributes) = match attributes {
        Attributes::Resource(resource) => (
            Some(ResourceAttributes {
                verb: some(&resource.verb),
                group: some(&resource.group),
                version: some(&resource.version),
                resource: some(&resource.resource),
                subresource: some(&resource.subresource),
                namespace: some(&resource.namespace),
                name: some(&resource.name),
                ..ResourceAttributes::default()
            }),
            None,
        ),
        Attributes::NonResource(non_resource) => (
            None,
            Some(NonResourceAttributes {
                path: some(&non_resource.path),
                verb: some(&non_resource.verb),
            }),
        ),
    };
    SubjectAccessReviewSpec {
        user: some(&user.name),
        uid: some(&user.uid),
        groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
        extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
        resource_attributes,
        non_resource_attributes,
    }
}

/// Authorizes each request with a SubjectAccessReview, caching answers per (user, attributes).
pub struct SubjectAccessReviewAuthorizer {
    reviewer: Arc<dyn AccessReviewer>,
    cache: TtlCache<(UserInfo, Attributes), Decision>,
    options: AuthzOptions,
}

impl SubjectAccessReviewAuthorizer {
    /// Reviews with `reviewer`, caching as `options` says.
    pub fn new(reviewer: Arc<dyn AccessReviewer>, options: AuthzOptions) -> Self {
        Self {
            reviewer,
            cache: TtlCache::new(DECISION_CACHE_CAPACITY),
            options,
        }
    }
}

impl Authorizer for SubjectAccessReviewAuthorizer {
    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        attributes: &'a Attributes,
    ) -> BoxFuture<'a, Result<Decision, AuthError>> {
        Box::pin(async move {
            if user
                .groups
                .iter()
                .any(|group| self.options.always_allow_groups.contains(group))
            {
                return Ok(Decision {
                    allowed: true,
                    reason: String::new(),
                });
            }
            let key = (user.clone(), attributes.clone());
            if let Some(decision) = self.cache.get(&key) {
                return Ok(decision);
            }
            let status = self
                .reviewer
                .review(review_spec(user, attributes))
                .await
                .map_err(AuthError::AuthorizationUnavailable)?;
            let reason = status.reason.unwrap_or_default();
            let denied = status.denied == Some(true);
            if status.allowed && denied {
                return Err(AuthError::AuthorizationUnavailable(
                    AuthzError::Contradictory { reason },
                ));
            }
            // Not allowed covers both an explicit deny and "no opinion": nothing else is
            // asked after the cluster, so both refuse.
            let decision = Decision {
                allowed: status.allowed,
                reason,
            };
            let ttl = if decision.allowed {
                self.options.allow_cache_ttl
            } else {
                self.options.deny_cache_ttl
            };
            self.cache.insert(key, decision.clone(), ttl);
            Ok(decision)
        })
    }
}

/// Allows everything. For standalone mode only, where the listener is loopback and there is
/// no cluster to ask; never use it on a network-facing port.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize<'a>(
        &'a self,
        _user: &'a UserInfo,
        _attributes: &'a Attributes,
    ) -> BoxFuture<'a, Result<Decision, AuthError>> {
        Box::pin(async {
            Ok(Decision {
                allowed: true,
                reason: String::new(),
            })
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::auth::request_info::request_attributes;
    use axum::http::Method;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Allows user `alice` everything, denies everyone else with an RBAC-like reason, and
    /// records every spec it was asked about.
    #[derive(Default)]
    pub(crate) struct FakeAccessReviewer {
        pub calls: AtomicUsize,
        pub specs: Mutex<Vec<SubjectAccessReviewSpec>>,
    }

    impl AccessReviewer for FakeAccessReviewer {
        fn review<'a>(
            &'a self,
            spec: SubjectAccessReviewSpec,
        ) -> BoxFuture<'a, Result<SubjectAccessReviewStatus, AuthzError>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let user = spec.user.clone().unwrap_or_default();
            if let Ok(mut specs) = self.specs.lock() {
                specs.push(spec);
            }
            Box::pin(async move {
                match user.as_str() {
                    "alice" => Ok(SubjectAccessReviewStatus {
                        allowed: true,
                        reason: Some("RBAC: allowed by ClusterRoleBinding \"hpa\"".to_owned()),
                        ..SubjectAccessReviewStatus::default()
                    }),
                    "confused" => Ok(SubjectAccessReviewStatus {
                        allowed: true,
                        denied: Some(true),
                        ..SubjectAccessReviewStatus::default()
                    }),
                    "unreachable" => Err(AuthzError::Timeout(REVIEW_TIMEOUT)),
                    _ => Ok(SubjectAccessReviewStatus {
                        allowed: false,
                        reason: Some("no RBAC policy matched".to_owned()),
                        ..SubjectAccessReviewStatus::default()
                    }),
                }
            })
        }
    }

    fn user(name: &str) -> UserInfo {
        UserInfo {
            name: name.to_owned(),
            uid: format!("{name}-uid"),
            groups: vec!["system:authenticated".to_owned()],
            extra: BTreeMap::from([("scopes".to_owned(), vec!["a".to_owned(), "b".to_owned()])]),
        }
    }

    fn pods_read() -> Attributes {
        request_attributes(
            &Method::GET,
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/team-a/pods/%2A/ttft_p95",
        )
    }

    fn authorizer(
        options: AuthzOptions,
    ) -> (SubjectAccessReviewAuthorizer, Arc<FakeAccessReviewer>) {
        let reviewer = Arc::new(FakeAccessReviewer::default());
        (
            SubjectAccessReviewAuthorizer::new(reviewer.clone(), options),
            reviewer,
        )
    }

    #[test]
    fn spec_carries_user_and_resource_attributes() {
        let spec = review_spec(&user("alice"), &pods_read());
        let json = serde_json::to_value(&spec).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "user": "alice",
                "uid": "alice-uid",
                "groups": ["system:authenticated"],
                "extra": {"scopes": ["a", "b"]},
                "resourceAttributes": {
                    "verb": "list",
                    "group": "custom.metrics.k8s.io",
                    "version": "v1beta2",
                    "resource": "pods",
                    "subresource": "ttft_p95",
                    "namespace": "team-a",
                }
            })
        );
        let spec = review_spec(
            &user("alice"),
            &request_attributes(&Method::GET, "/openapi/v2"),
        );
        let json = serde_json::to_value(&spec).expect("serializes");
        assert_eq!(
            json["nonResourceAttributes"],
            serde_json::json!({"path": "/openapi/v2", "verb": "get"})
        );
        assert!(json.get("resourceAttributes").is_none());
    }

    #[tokio::test]
    async fn allowed_and_cached() {
        let (authz, reviewer) = authorizer(AuthzOptions::default());
        let decision = authz
            .authorize(&user("alice"), &pods_read())
            .await
            .expect("decided");
        assert!(decision.allowed);
        let decision = authz
            .authorize(&user("alice"), &pods_read())
            .await
            .expect("decided");
        assert!(decision.allowed);
        assert_eq!(
            reviewer.calls.load(Ordering::Relaxed),
            1,
            "second answer from cache"
        );
        // Different attributes are a different question.
        let other = request_attributes(
            &Method::GET,
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/team-a/q",
        );
        authz
            .authorize(&user("alice"), &other)
            .await
            .expect("decided");
        assert_eq!(reviewer.calls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn denied_with_reason_and_cached() {
        let (authz, reviewer) = authorizer(AuthzOptions::default());
        for _ in 0..2 {
            let decision = authz
                .authorize(&user("bob"), &pods_read())
                .await
                .expect("decided");
            assert_eq!(
                decision,
                Decision {
                    allowed: false,
                    reason: "no RBAC policy matched".to_owned()
                }
            );
        }
        assert_eq!(reviewer.calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn cache_entries_expire_with_their_own_ttl() {
        let (authz, reviewer) = authorizer(AuthzOptions {
            allow_cache_ttl: Duration::from_secs(30),
            deny_cache_ttl: Duration::from_millis(40),
            ..AuthzOptions::default()
        });
        authz
            .authorize(&user("alice"), &pods_read())
            .await
            .expect("decided");
        authz
            .authorize(&user("bob"), &pods_read())
            .await
            .expect("decided");
        tokio::time::sleep(Duration::from_millis(60)).await;
        authz
            .authorize(&user("alice"), &pods_read())
            .await
            .expect("decided");
        authz
            .authorize(&user("bob"), &pods_read())
            .await
            .expect("decided");
        assert_eq!(
            reviewer.calls.load(Ordering::Relaxed),
            3,
            "only bob's denial expired"
        );
    }

    #[tokio::test]
    async fn masters_skip_review_and_failures_are_errors() {
        let (authz, reviewer) = authorizer(AuthzOptions::default());
        let mut admin = user("admin");
        admin.groups.push("system:masters".to_owned());
        assert!(
            authz
                .authorize(&admin, &pods_read())
                .await
                .expect("decided")
                .allowed
        );
        assert_eq!(reviewer.calls.load(Ordering::Relaxed), 0);

        assert!(matches!(
            authz.authorize(&user("unreachable"), &pods_read()).await,
            Err(AuthError::AuthorizationUnavailable(AuthzError::Timeout(_)))
        ));
        assert!(matches!(
            authz.authorize(&user("confused"), &pods_read()).await,
            Err(AuthError::AuthorizationUnavailable(
                AuthzError::Contradictory { .. }
            ))
        ));
    }
}
