//! Where delegated authentication's settings come from: the ConfigMap
//! `kube-system/extension-apiserver-authentication` (kube-apiserver maintains it) and the file
//! overrides, re-read every [`CONFIG_POLL_INTERVAL`] by [`spawn_config_refresh`].
//!
//! Owns: [`AuthnConfig`] (a plain struct, so tests build it without a cluster), reading and
//! parsing it, and pushing its client CAs to [`TlsState`] (the handshake must accept the same
//! certificates the authenticator trusts). Does not own authenticating anyone ([`super`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use rustls::pki_types::CertificateDer;
use tokio::task::JoinHandle;
use tracing::{info, info_span, warn, Instrument};

use super::token_review::DEFAULT_TOKEN_CACHE_TTL;
use super::{AuthnError, DelegatingAuthenticator};
use crate::error_chain::ErrorChain;
use crate::tls::{parse_pem_certificates, TlsState};

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
/// previous one kept. The task runs until `token` is cancelled.
pub fn spawn_config_refresh(
    authenticator: Arc<DelegatingAuthenticator>,
    client: kube::Client,
    options: AuthnOptions,
    tls: Option<TlsState>,
    token: tokio_util::sync::CancellationToken,
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
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = token.cancelled() => return,
                }
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

#[cfg(test)]
mod tests {
    use super::super::tests::Cas;
    use super::*;

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
}
