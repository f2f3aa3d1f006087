//! Bearer tokens: parsed from `Authorization`, checked with a TokenReview, answers cached.
//!
//! Owns: [`TokenReviewer`] (the call to the cluster, a trait so tests answer without one),
//! turning a review into a user or a refusal, and the cache keyed by the token's SHA-256
//! (accepted and rejected alike, for a short TTL), so the cache never holds a usable
//! credential. Does not own the order in which methods are tried ([`super`]).

use std::time::Duration;

use axum::http::{header, HeaderMap};
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use std::sync::Arc;

use super::{Attempt, AuthnError};
use crate::auth::ttl_cache::TtlCache;
use crate::auth::UserInfo;
use crate::tls::sha256;

/// How long a TokenReview answer is reused. k8s' delegated authentication uses 10 s: short
/// enough that a revoked token stops working quickly, long enough that an HPA polling every
/// 15 s across many metrics costs one review per burst.
pub const DEFAULT_TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

/// Most distinct tokens remembered at once. A cluster has a handful of legitimate callers; the
/// bound only matters under a flood of made-up tokens, where it caps memory at about a MiB.
const TOKEN_CACHE_CAPACITY: usize = 4096;

/// How long a TokenReview may take, as k8s' delegated authentication client timeout (10 s).
/// Beyond that the caller (kube-apiserver proxying for the HPA) has usually given up anyway.
const TOKEN_REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks bearer tokens with the cluster. A trait so tests can answer without a cluster.
pub trait TokenReviewer: Send + Sync {
    /// Submits `token` for review and returns the review's status.
    fn review<'a>(&'a self, token: &'a str)
        -> BoxFuture<'a, Result<TokenReviewStatus, AuthnError>>;
}

/// [`TokenReviewer`] that creates `authentication.k8s.io/v1` TokenReviews.
pub struct KubeTokenReviewer {
    api: Api<TokenReview>,
}

impl KubeTokenReviewer {
    /// Reviews tokens with the cluster `client` talks to.
    pub fn new(client: kube::Client) -> Self {
        Self {
            api: Api::all(client),
        }
    }
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<TokenReviewStatus, AuthnError>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_owned()),
                    // No audiences: the apiserver checks against its own, as for k8s'
                    // delegated authentication without --authentication-audiences.
                    audiences: None,
                },
                ..TokenReview::default()
            };
            let created = tokio::time::timeout(
                TOKEN_REVIEW_TIMEOUT,
                self.api.create(&PostParams::default(), &review),
            )
            .await
            .map_err(|_| AuthnError::TokenReviewTimeout(TOKEN_REVIEW_TIMEOUT))?
            .map_err(AuthnError::TokenReview)?;
            Ok(created.status.unwrap_or_default())
        })
    }
}

/// A cached TokenReview answer.
#[derive(Clone, Debug)]
enum TokenOutcome {
    Authenticated(UserInfo),
    Rejected(String),
}

impl TokenOutcome {
    fn from_status(status: TokenReviewStatus) -> Self {
        if status.authenticated != Some(true) {
            let reason = status
                .error
                .filter(|error| !error.is_empty())
                .unwrap_or_else(|| "invalid bearer token".to_owned());
            return Self::Rejected(reason);
        }
        let Some(user) = status.user else {
            return Self::Rejected(
                "TokenReview authenticated the token but named no user".to_owned(),
            );
        };
        let name = user.username.unwrap_or_default();
        if name.is_empty() {
            // k8s would pass an empty name on to authorization; refusing here is stricter and
            // only differs for a broken authentication webhook.
            return Self::Rejected(
                "TokenReview authenticated the token but named no user".to_owned(),
            );
        }
        Self::Authenticated(UserInfo {
            name,
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        })
    }
}

/// Reviews the bearer token of a request, reusing answers for a TTL.
pub(super) struct TokenReviews {
    reviewer: Arc<dyn TokenReviewer>,
    cache: TtlCache<Vec<u8>, TokenOutcome>,
    ttl: Duration,
}

impl TokenReviews {
    /// Reviews with `reviewer`, caching answers for `ttl` (zero disables the cache).
    pub(super) fn new(reviewer: Arc<dyn TokenReviewer>, ttl: Duration) -> Self {
        Self {
            reviewer,
            cache: TtlCache::new(TOKEN_CACHE_CAPACITY),
            ttl,
        }
    }

    /// The user of the request's bearer token, a refusal, or [`Attempt::NotApplicable`]
    /// without one; `Err` when the review itself failed (never cached).
    pub(super) async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<Result<UserInfo, Attempt>, AuthnError> {
        let Some(token) = bearer_token(headers) else {
            return Ok(Err(Attempt::NotApplicable));
        };
        // Hash so the cache never holds a usable credential.
        let key = sha256(token.as_bytes());
        let outcome = match self.cache.get(&key) {
            Some(outcome) => outcome,
            None => {
                let status = self.reviewer.review(token).await?;
                let outcome = TokenOutcome::from_status(status);
                self.cache.insert(key, outcome.clone(), self.ttl);
                outcome
            }
        };
        Ok(match outcome {
            TokenOutcome::Authenticated(user) => Ok(user),
            TokenOutcome::Rejected(reason) => Err(Attempt::Refused(reason)),
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header, parsed like k8s' bearertoken
/// authenticator (scheme case-insensitive, exactly one space, no empty token).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let mut parts = value.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return None;
    }
    Some(token)
}
