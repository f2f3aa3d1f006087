//! Delegated authentication: who is calling, decided the way kube-apiserver's aggregation layer
//! expects an extension API server to decide it.
//!
//! This module owns [`DelegatingAuthenticator`], which tries, in k8s.io/apiserver's order and
//! with its union semantics (the first method that succeeds wins; if none does, the request is
//! refused):
//!
//! 1. **Front-proxy request headers.** kube-apiserver forwards requests with a client
//!    certificate from the request-header CA and the real user in headers (`X-Remote-User`,
//!    `X-Remote-Group`, `X-Remote-Extra-*` by default). The certificate must verify against that
//!    CA *specifically* and its CN must be in the allowed names (empty list: any CN); only then
//!    are the headers believed. A certificate from that CA with another CN is refused
//!    ("x509: subject with cn=... is not in the allowed list").
//! 2. **Client certificates** from the cluster client CA: user = CN, groups = O.
//! 3. **Bearer tokens**, checked with a TokenReview and cached by SHA-256 of the token
//!    (accepted and rejected alike) for a short TTL.
//!
//! There is no anonymous access: a request with none of these is 401.
//!
//! The CA pools, allowed names and header names come from the ConfigMap
//! `kube-system/extension-apiserver-authentication` (which kube-apiserver maintains), polled every
//! [`CONFIG_POLL_INTERVAL`], with optional file overrides; [`AuthnConfig`] is a plain struct so
//! tests build it without a cluster. CA changes are pushed to [`TlsState`] as well, because the
//! handshake must accept the same certificates.
//!
//! It does not decide what a user may do ([`super::authz`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName};
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

use super::request_info::percent_decode;
use super::{AuthError, Authenticator, RequestParts, TtlCache, UserInfo};
use crate::error_chain::ErrorChain;
use crate::tls::{parse_pem_certificates, sha256, TlsError, TlsState};

/// Namespace of the ConfigMap kube-apiserver publishes its authentication settings in.
pub const CONFIG_MAP_NAMESPACE: &str = "kube-system";
/// Name of that ConfigMap.
pub const CONFIG_MAP_NAME: &str = "extension-apiserver-authentication";

/// ConfigMap key: PEM bundle of the CA that signs user client certificates.
const KEY_CLIENT_CA: &str = "client-ca-file";
/// ConfigMap key: PEM bundle of the CA that signs the front proxy's client certificate.
const KEY_REQUESTHEADER_CA: &str = "requestheader-client-ca-file";
/// ConfigMap key: JSON array of CNs the front proxy's certificate may have.
const KEY_ALLOWED_NAMES: &str = "requestheader-allowed-names";
/// ConfigMap key: JSON array of headers carrying the user name.
const KEY_USERNAME_HEADERS: &str = "requestheader-username-headers";
/// ConfigMap key: JSON array of headers carrying the user's UID.
const KEY_UID_HEADERS: &str = "requestheader-uid-headers";
/// ConfigMap key: JSON array of headers carrying the user's groups.
const KEY_GROUP_HEADERS: &str = "requestheader-group-headers";
/// ConfigMap key: JSON array of header prefixes carrying extra attributes.
const KEY_EXTRA_PREFIXES: &str = "requestheader-extra-headers-prefix";

/// How often the ConfigMap (and any override files) is re-read. kube-apiserver rewrites it
/// only when its own flags or CA files change (rare, and CA rotations overlap old and new CAs
/// for far longer than this), and one GET a minute is negligible load.
pub const CONFIG_POLL_INTERVAL: Duration = Duration::from_secs(60);

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

/// The user standalone mode attributes every request to ([`LocalUser`]).
pub const LOCAL_USER: &str = "inferscale:local";

/// The front-proxy (request-header) authentication settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHeaderConfig {
    /// CA certificates the front proxy's client certificate must chain to.
    pub ca: Vec<CertificateDer<'static>>,
    /// CNs the front proxy's certificate may carry; empty allows any CN from `ca`.
    pub allowed_names: Vec<String>,
    /// Headers naming the user; the first non-empty one wins.
    pub username_headers: Vec<String>,
    /// Headers carrying the user's UID; the first non-empty one wins.
    pub uid_headers: Vec<String>,
    /// Headers carrying groups; every value of every one of them is a group.
    pub group_headers: Vec<String>,
    /// Header prefixes carrying extra attributes; the rest of the header name
    /// (lower-cased, percent-decoded) is the key.
    pub extra_headers_prefix: Vec<String>,
}

impl RequestHeaderConfig {
    /// The header names kube-apiserver's flags default to (`--requestheader-*-headers`), used
    /// when the request-header CA comes from a file rather than the ConfigMap.
    pub fn with_default_headers(ca: Vec<CertificateDer<'static>>) -> Self {
        Self {
            ca,
            allowed_names: Vec::new(),
            username_headers: vec!["X-Remote-User".to_owned()],
            uid_headers: vec!["X-Remote-Uid".to_owned()],
            group_headers: vec!["X-Remote-Group".to_owned()],
            extra_headers_prefix: vec!["X-Remote-Extra-".to_owned()],
        }
    }
}

/// Everything the authenticator needs to know, independent of where it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthnConfig {
    /// CA certificates for client-certificate authentication; empty disables it.
    pub client_ca: Vec<CertificateDer<'static>>,
    /// Front-proxy settings; `None` disables request-header authentication.
    pub request_header: Option<RequestHeaderConfig>,
}

impl AuthnConfig {
    /// Reads the `data` of `kube-system/extension-apiserver-authentication`. Missing keys mean
    /// "not configured"; the header and name keys are JSON arrays of strings.
    pub fn from_config_map_data(data: &BTreeMap<String, String>) -> Result<Self, AuthnError> {
        let non_empty = |key: &str| {
            data.get(key)
                .map(String::as_str)
                .filter(|v| !v.trim().is_empty())
        };
        let client_ca = match non_empty(KEY_CLIENT_CA) {
            Some(pem) => parse_ca_bundle(pem.as_bytes(), KEY_CLIENT_CA)?,
            None => Vec::new(),
        };
        let request_header = match non_empty(KEY_REQUESTHEADER_CA) {
            Some(pem) => Some(RequestHeaderConfig {
                ca: parse_ca_bundle(pem.as_bytes(), KEY_REQUESTHEADER_CA)?,
                allowed_names: string_list(data, KEY_ALLOWED_NAMES)?,
                username_headers: string_list(data, KEY_USERNAME_HEADERS)?,
                uid_headers: string_list(data, KEY_UID_HEADERS)?,
                group_headers: string_list(data, KEY_GROUP_HEADERS)?,
                extra_headers_prefix: string_list(data, KEY_EXTRA_PREFIXES)?,
            }),
            None => None,
        };
        Ok(Self {
            client_ca,
            request_header,
        })
    }
}

/// Where the authentication configuration comes from, and token caching.
#[derive(Clone, Debug)]
pub struct AuthnOptions {
    /// Use this CA file for client certificates instead of the ConfigMap's `client-ca-file`.
    pub client_ca_file: Option<PathBuf>,
    /// Use this CA file and the `requestheader_*` fields below for front-proxy
    /// authentication instead of the ConfigMap.
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Allowed front-proxy CNs when `requestheader_client_ca_file` is set.
    pub requestheader_allowed_names: Vec<String>,
    /// User name headers when `requestheader_client_ca_file` is set.
    pub requestheader_username_headers: Vec<String>,
    /// UID headers when `requestheader_client_ca_file` is set.
    pub requestheader_uid_headers: Vec<String>,
    /// Group headers when `requestheader_client_ca_file` is set.
    pub requestheader_group_headers: Vec<String>,
    /// Extra-attribute header prefixes when `requestheader_client_ca_file` is set.
    pub requestheader_extra_headers_prefix: Vec<String>,
    /// How long TokenReview answers are reused; zero disables the cache.
    pub token_cache_ttl: Duration,
}

impl Default for AuthnOptions {
    fn default() -> Self {
        let headers = RequestHeaderConfig::with_default_headers(Vec::new());
        Self {
            client_ca_file: None,
            requestheader_client_ca_file: None,
            requestheader_allowed_names: Vec::new(),
            requestheader_username_headers: headers.username_headers,
            requestheader_uid_headers: headers.uid_headers,
            requestheader_group_headers: headers.group_headers,
            requestheader_extra_headers_prefix: headers.extra_headers_prefix,
            token_cache_ttl: DEFAULT_TOKEN_CACHE_TTL,
        }
    }
}

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

fn string_list(
    data: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<Vec<String>, AuthnError> {
    match data.get(key).map(|v| v.trim()) {
        None | Some("") => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json)
            .map_err(|source| AuthnError::InvalidStringList { key, source }),
    }
}

fn parse_ca_bundle(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, AuthnError> {
    parse_pem_certificates(pem).map_err(|reason| AuthnError::InvalidCaBundle {
        origin: origin.to_owned(),
        reason,
    })
}

async fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, AuthnError> {
    let pem = tokio::fs::read(path)
        .await
        .map_err(|source| AuthnError::ReadCaFile {
            path: path.to_owned(),
            source,
        })?;
    parse_ca_bundle(&pem, &path.display().to_string())
}

/// Reads the authentication configuration: the ConfigMap (unless both CA files are given),
/// then the file overrides. A missing ConfigMap is not an error (only bearer tokens will
/// work, as in k8s); a forbidden or failed read is.
pub async fn load_config(
    client: &kube::Client,
    options: &AuthnOptions,
) -> Result<AuthnConfig, AuthnError> {
    let from_cluster = if options.client_ca_file.is_some()
        && options.requestheader_client_ca_file.is_some()
    {
        AuthnConfig::default()
    } else {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), CONFIG_MAP_NAMESPACE);
        match api.get_opt(CONFIG_MAP_NAME).await {
            Ok(Some(config_map)) => {
                AuthnConfig::from_config_map_data(&config_map.data.unwrap_or_default())?
            }
            Ok(None) => {
                warn!(
                    "configmap {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME} not found; client \
                     certificate and front-proxy authentication are off, only bearer tokens work"
                );
                AuthnConfig::default()
            }
            Err(error) => {
                let forbidden = matches!(&error, kube::Error::Api(status) if status.is_forbidden());
                return Err(if forbidden {
                    AuthnError::ConfigMapForbidden(error)
                } else {
                    AuthnError::ConfigMapLookup(error)
                });
            }
        }
    };
    apply_overrides(from_cluster, options).await
}

async fn apply_overrides(
    mut config: AuthnConfig,
    options: &AuthnOptions,
) -> Result<AuthnConfig, AuthnError> {
    if let Some(path) = &options.client_ca_file {
        config.client_ca = read_ca_file(path).await?;
    }
    if let Some(path) = &options.requestheader_client_ca_file {
        config.request_header = Some(RequestHeaderConfig {
            ca: read_ca_file(path).await?,
            allowed_names: options.requestheader_allowed_names.clone(),
            username_headers: options.requestheader_username_headers.clone(),
            uid_headers: options.requestheader_uid_headers.clone(),
            group_headers: options.requestheader_group_headers.clone(),
            extra_headers_prefix: options.requestheader_extra_headers_prefix.clone(),
        });
    }
    Ok(config)
}

/// Makes the TLS handshake trust exactly the CA pools `config` names.
pub fn apply_client_cas(tls: &TlsState, config: &AuthnConfig) -> Result<(), AuthnError> {
    let requestheader = config
        .request_header
        .as_ref()
        .map(|request_header| request_header.ca.clone())
        .unwrap_or_default();
    tls.set_client_cas(requestheader, config.client_ca.clone())
        .map_err(AuthnError::UpdateTls)
}

/// Re-reads the configuration every [`CONFIG_POLL_INTERVAL`] and installs changes into
/// `authenticator` and `tls`. A failed read or a bad new configuration is logged and the
/// previous one kept. The task runs until aborted.
pub fn spawn_config_refresh(
    authenticator: Arc<DelegatingAuthenticator>,
    client: kube::Client,
    options: AuthnOptions,
    tls: Option<TlsState>,
) -> JoinHandle<()> {
    let span = info_span!("authn_config_refresh", configmap = %format!("{CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME}"));
    tokio::spawn(
        async move {
            let mut ticker = tokio::time::interval(CONFIG_POLL_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick completes at once; the caller has just loaded the configuration.
            ticker.tick().await;
            // Whether the TLS pools match the authenticator's configuration; a failed TLS
            // update is retried on the next tick even if the configuration did not change.
            let mut tls_in_sync = true;
            loop {
                ticker.tick().await;
                let config = match load_config(&client, &options).await {
                    Ok(config) => config,
                    Err(error) => {
                        warn!(error = %ErrorChain(&error), "keeping the previous authentication configuration");
                        continue;
                    }
                };
                match authenticator.set_config(config.clone()) {
                    Ok(true) => info!("authentication configuration changed; reloaded"),
                    Ok(false) if tls_in_sync => continue,
                    Ok(false) => {}
                    Err(error) => {
                        warn!(error = %ErrorChain(&error), "keeping the previous authentication configuration");
                        continue;
                    }
                }
                if let Some(tls) = &tls {
                    tls_in_sync = match apply_client_cas(tls, &config) {
                        Ok(()) => true,
                        Err(error) => {
                            warn!(
                                error = %ErrorChain(&error),
                                "TLS still trusts the previous client CAs; will retry"
                            );
                            false
                        }
                    };
                }
            }
        }
        .instrument(span),
    )
}

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

/// The configuration with its verifiers built, swapped as a whole.
struct Compiled {
    config: AuthnConfig,
    request_header: Option<CompiledRequestHeader>,
    client_ca: Option<Arc<dyn ClientCertVerifier>>,
}

struct CompiledRequestHeader {
    verifier: Arc<dyn ClientCertVerifier>,
    allowed_names: Vec<String>,
    username_headers: Vec<HeaderName>,
    uid_headers: Vec<HeaderName>,
    group_headers: Vec<HeaderName>,
    /// Lower-cased, since header names are compared lower-case.
    extra_prefixes: Vec<String>,
}

fn header_names(names: &[String]) -> Vec<HeaderName> {
    names
        .iter()
        .filter_map(|name| {
            let name = name.trim();
            if name.is_empty() {
                return None;
            }
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(header) => Some(header),
                Err(_) => {
                    // It could never match a request header; ignore it like k8s effectively does.
                    warn!(header = name, "ignoring invalid request-header name");
                    None
                }
            }
        })
        .collect()
}

fn verifier(
    provider: &Arc<CryptoProvider>,
    cas: &[CertificateDer<'static>],
    pool: &'static str,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, AuthnError> {
    if cas.is_empty() {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(cas.iter().cloned());
    if ignored > 0 {
        warn!(
            pool,
            ignored, "some CA certificates could not be used as trust anchors"
        );
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map(Some)
        .map_err(|source| AuthnError::BuildVerifier { pool, source })
}

impl Compiled {
    fn new(config: AuthnConfig, provider: &Arc<CryptoProvider>) -> Result<Self, AuthnError> {
        let client_ca = verifier(provider, &config.client_ca, "client")?;
        let request_header =
            match &config.request_header {
                Some(request_header) => verifier(provider, &request_header.ca, "request-header")?
                    .map(|verifier| CompiledRequestHeader {
                        verifier,
                        allowed_names: request_header.allowed_names.clone(),
                        username_headers: header_names(&request_header.username_headers),
                        uid_headers: header_names(&request_header.uid_headers),
                        group_headers: header_names(&request_header.group_headers),
                        extra_prefixes: request_header
                            .extra_headers_prefix
                            .iter()
                            .map(|prefix| prefix.trim().to_ascii_lowercase())
                            .filter(|prefix| !prefix.is_empty())
                            .collect(),
                    }),
                None => None,
            };
        Ok(Self {
            config,
            request_header,
            client_ca,
        })
    }
}

/// Verifies `chain` (leaf first) against `verifier`; `None` when no certificate was presented.
fn verify_chain<'c>(
    verifier: &dyn ClientCertVerifier,
    chain: Option<&'c [CertificateDer<'static>]>,
) -> Option<Result<&'c CertificateDer<'static>, rustls::Error>> {
    let (leaf, intermediates) = chain?.split_first()?;
    Some(
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| leaf),
    )
}

/// The subject's CN (the last one, as Go's `pkix.Name` keeps) and organizations.
fn subject_names(leaf: &CertificateDer<'_>) -> Result<(String, Vec<String>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|error| format!("parsing client certificate: {error}"))?;
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .filter_map(|attribute| attribute.as_str().ok())
        .last()
        .unwrap_or_default()
        .to_owned();
    let organizations = subject
        .iter_organization()
        .filter_map(|attribute| attribute.as_str().ok())
        .map(str::to_owned)
        .collect();
    Ok((common_name, organizations))
}

fn lossy(value: &axum::http::HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// The first non-empty value of the first header that has one (k8s `headerValue`).
fn first_value(headers: &HeaderMap, names: &[HeaderName]) -> String {
    names
        .iter()
        .filter_map(|name| headers.get(name))
        .map(lossy)
        .find(|value| !value.is_empty())
        .unwrap_or_default()
}

impl CompiledRequestHeader {
    /// The user the front proxy asserts in the headers; `None` when no user header is set.
    fn user_from_headers(&self, headers: &HeaderMap) -> Option<UserInfo> {
        let name = first_value(headers, &self.username_headers);
        if name.is_empty() {
            return None;
        }
        let uid = first_value(headers, &self.uid_headers);
        let groups = self
            .group_headers
            .iter()
            .flat_map(|header| headers.get_all(header))
            .map(lossy)
            .filter(|group| !group.is_empty())
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for prefix in &self.extra_prefixes {
            for header in headers.keys() {
                let Some(encoded_key) = header.as_str().strip_prefix(prefix.as_str()) else {
                    continue;
                };
                // Keys are lower-cased, then percent-decoded (so `%2F` can carry a `/`); a
                // malformed escape keeps the key as sent, as k8s does.
                let key = percent_decode(encoded_key).unwrap_or_else(|| encoded_key.to_owned());
                extra
                    .entry(key)
                    .or_default()
                    .extend(headers.get_all(header).iter().map(lossy));
            }
        }
        Some(UserInfo {
            name,
            uid,
            groups,
            extra,
        })
    }
}

/// Why one authentication method did not produce a user.
enum Attempt {
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
    token_reviewer: Arc<dyn TokenReviewer>,
    token_cache: TtlCache<Vec<u8>, TokenOutcome>,
    token_cache_ttl: Duration,
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
            token_reviewer,
            token_cache: TtlCache::new(TOKEN_CACHE_CAPACITY),
            token_cache_ttl: options.token_cache_ttl,
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

    fn authenticate_request_header(
        compiled: &Compiled,
        request: &RequestParts<'_>,
    ) -> Result<UserInfo, Attempt> {
        let Some(request_header) = &compiled.request_header else {
            return Err(Attempt::NotApplicable);
        };
        let leaf = match verify_chain(request_header.verifier.as_ref(), request.peer_certificates) {
            None => return Err(Attempt::NotApplicable),
            Some(Err(error)) => {
                return Err(Attempt::Refused(format!(
                    "client certificate not from the request-header CA: {error}"
                )))
            }
            Some(Ok(leaf)) => leaf,
        };
        let (common_name, _) = subject_names(leaf).map_err(Attempt::Refused)?;
        if !request_header.allowed_names.is_empty()
            && !request_header.allowed_names.contains(&common_name)
        {
            return Err(Attempt::Refused(format!(
                "x509: subject with cn={common_name} is not in the allowed list"
            )));
        }
        request_header
            .user_from_headers(request.headers)
            .ok_or(Attempt::NotApplicable)
    }

    fn authenticate_client_cert(
        compiled: &Compiled,
        request: &RequestParts<'_>,
    ) -> Result<UserInfo, Attempt> {
        let Some(client_ca) = &compiled.client_ca else {
            return Err(Attempt::NotApplicable);
        };
        let leaf = match verify_chain(client_ca.as_ref(), request.peer_certificates) {
            None => return Err(Attempt::NotApplicable),
            Some(Err(error)) => {
                return Err(Attempt::Refused(format!(
                    "client certificate not from the client CA: {error}"
                )))
            }
            Some(Ok(leaf)) => leaf,
        };
        let (common_name, organizations) = subject_names(leaf).map_err(Attempt::Refused)?;
        if common_name.is_empty() {
            return Err(Attempt::NotApplicable);
        }
        Ok(UserInfo {
            name: common_name,
            uid: String::new(),
            groups: organizations,
            extra: BTreeMap::new(),
        })
    }

    async fn authenticate_token(
        &self,
        headers: &HeaderMap,
    ) -> Result<Result<UserInfo, Attempt>, AuthnError> {
        let Some(token) = bearer_token(headers) else {
            return Ok(Err(Attempt::NotApplicable));
        };
        // Hash so the cache never holds a usable credential.
        let key = sha256(token.as_bytes());
        let outcome = match self.token_cache.get(&key) {
            Some(outcome) => outcome,
            None => {
                let status = self.token_reviewer.review(token).await?;
                let outcome = TokenOutcome::from_status(status);
                self.token_cache
                    .insert(key, outcome.clone(), self.token_cache_ttl);
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

impl Authenticator for DelegatingAuthenticator {
    fn authenticate<'a>(
        &'a self,
        request: &'a RequestParts<'a>,
    ) -> BoxFuture<'a, Result<UserInfo, AuthError>> {
        Box::pin(async move {
            let compiled = self.current();
            let mut refusals = Vec::new();
            for attempt in [
                Self::authenticate_request_header(&compiled, request),
                Self::authenticate_client_cert(&compiled, request),
            ] {
                match attempt {
                    Ok(user) => return Ok(user),
                    Err(Attempt::Refused(reason)) => refusals.push(reason),
                    Err(Attempt::NotApplicable) => {}
                }
            }
            match self.authenticate_token(request.headers).await {
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
        let compiled = self.current();
        let Some(request_header) = &compiled.request_header else {
            return;
        };
        for name in request_header
            .username_headers
            .iter()
            .chain(&request_header.uid_headers)
            .chain(&request_header.group_headers)
        {
            headers.remove(name);
        }
        let extra: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                request_header
                    .extra_prefixes
                    .iter()
                    .any(|prefix| name.as_str().starts_with(prefix.as_str()))
            })
            .cloned()
            .collect();
        for name in extra {
            headers.remove(name);
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
    use axum::http::HeaderValue;
    use k8s_openapi::api::authentication::v1::UserInfo as ReviewedUser;
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

    #[test]
    fn config_map_data_is_parsed_like_kubernetes_publishes_it() {
        let cas = Cas::new();
        let data = BTreeMap::from([
            (KEY_CLIENT_CA.to_owned(), cas.client.cert.pem()),
            (KEY_REQUESTHEADER_CA.to_owned(), cas.front_proxy.cert.pem()),
            (
                KEY_ALLOWED_NAMES.to_owned(),
                r#"["front-proxy-client"]"#.to_owned(),
            ),
            (
                KEY_USERNAME_HEADERS.to_owned(),
                r#"["X-Remote-User"]"#.to_owned(),
            ),
            (
                KEY_GROUP_HEADERS.to_owned(),
                r#"["X-Remote-Group"]"#.to_owned(),
            ),
            (
                KEY_EXTRA_PREFIXES.to_owned(),
                r#"["X-Remote-Extra-"]"#.to_owned(),
            ),
        ]);
        let config = AuthnConfig::from_config_map_data(&data).expect("parses");
        assert_eq!(config.client_ca, vec![cas.client.der()]);
        let request_header = config.request_header.expect("request header configured");
        assert_eq!(request_header.ca, vec![cas.front_proxy.der()]);
        assert_eq!(request_header.allowed_names, vec!["front-proxy-client"]);
        assert_eq!(request_header.username_headers, vec!["X-Remote-User"]);
        assert!(
            request_header.uid_headers.is_empty(),
            "missing key is an empty list"
        );
        assert_eq!(request_header.extra_headers_prefix, vec!["X-Remote-Extra-"]);

        let only_client = BTreeMap::from([(KEY_CLIENT_CA.to_owned(), cas.client.cert.pem())]);
        let config = AuthnConfig::from_config_map_data(&only_client).expect("parses");
        assert!(config.request_header.is_none());

        let bad_json = BTreeMap::from([
            (KEY_REQUESTHEADER_CA.to_owned(), cas.front_proxy.cert.pem()),
            (
                KEY_ALLOWED_NAMES.to_owned(),
                "front-proxy-client".to_owned(),
            ),
        ]);
        assert!(matches!(
            AuthnConfig::from_config_map_data(&bad_json),
            Err(AuthnError::InvalidStringList {
                key: KEY_ALLOWED_NAMES,
                ..
            })
        ));
        let bad_pem = BTreeMap::from([(KEY_CLIENT_CA.to_owned(), "garbage".to_owned())]);
        assert!(matches!(
            AuthnConfig::from_config_map_data(&bad_pem),
            Err(AuthnError::InvalidCaBundle { .. })
        ));
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
