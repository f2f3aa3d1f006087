//! TLS serving for the adapter's aggregated API endpoint.
//!
//! This module owns the rustls [`ServerConfig`] the adapter serves with and the TLS handshake
//! of each connection [`crate::http`]'s accept loop hands it ([`serve`]):
//!
//! - the serving certificate comes from `--tls-cert-file`/`--tls-private-key-file` and is
//!   re-read when the files change (Kubernetes rotates mounted Secrets by swapping a symlink, so
//!   the content is compared, not the path); a bad new pair is logged and the previous one kept;
//! - without files, a self-signed certificate for `localhost`, `127.0.0.1`, `::1` and any extra
//!   names is generated at start (for local use only; its SHA-256 fingerprint is logged);
//! - client certificates are *requested but optional*, so bearer-token clients still connect; a
//!   presented certificate must chain to one of the trusted client CA pools (the front-proxy
//!   request-header CA and the cluster client CA), which [`TlsState::set_client_cas`] swaps at
//!   runtime;
//! - every request carries a [`PeerCertificates`] extension with the verified chain the client
//!   presented, which the authentication layer reads.
//!
//! It does not decide who the client *is* or what it may do: that is [`crate::auth`]. Presenting
//! a trusted certificate only gets a client through the handshake.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::http::Extensions;
use axum::Router;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::error_chain::ErrorChain;
use crate::http::{accept_loop, serve_connection, ServeOptions};

/// How often the serving certificate files are re-read. Kubernetes propagates a rotated Secret
/// to the pod's volume within about a minute (kubelet sync period); checking every 5 s adds
/// little to that and reading two small files costs nothing.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// How long a client gets to finish the TLS handshake. Long enough for a loaded kube-apiserver
/// across a slow network, short enough that idle half-open connections do not pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Names the self-signed fallback certificate always covers: what local clients dial.
const SELF_SIGNED_DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The certificate chain the client presented during the TLS handshake, leaf first, already
/// verified against the trusted client CA pools. `None` when the client sent no certificate.
///
/// [`serve`] inserts it into every request's extensions; the chain is shared between the
/// requests of one connection.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates(pub Option<Arc<[CertificateDer<'static>]>>);

/// Where the serving certificate comes from.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// PEM file with the serving certificate chain, leaf first (`--tls-cert-file`).
    pub cert_file: Option<PathBuf>,
    /// PEM file with the serving private key (`--tls-private-key-file`).
    pub key_file: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the self-signed fallback certificate; ignored when
    /// files are given.
    pub extra_sans: Vec<String>,
}

/// Everything that can fail while building or reloading the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of the certificate and key files was given.
    #[error("--tls-cert-file and --tls-private-key-file must be given together")]
    IncompleteFilePair,
    /// A certificate or key file could not be read.
    #[error("reading {path}")]
    ReadFile {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file is not PEM or holds no certificate.
    #[error("parsing certificates in {path}: {reason}")]
    ParseCertificates {
        /// The file that was parsed.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The key file is not PEM or holds no private key.
    #[error("parsing private key in {path}: {reason}")]
    ParsePrivateKey {
        /// The file that was parsed.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// rustls rejected the certificate and key (unsupported key type, or the key does not
    /// belong to the leaf certificate).
    #[error("using the serving certificate and key")]
    ServingKey(#[source] rustls::Error),
    /// Generating the self-signed fallback certificate failed (e.g. an extra SAN is not a
    /// valid DNS name or IP address).
    #[error("generating the self-signed serving certificate")]
    SelfSigned(#[source] rcgen::Error),
    /// The protocol versions of the crypto provider could not be configured.
    #[error("configuring TLS protocol versions")]
    ProtocolVersions(#[source] rustls::Error),
    /// None of the client CA certificates could be used as a trust anchor.
    #[error("building the client certificate verifier")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
}

/// The serving certificate as last loaded, plus what is needed to detect a change.
struct ServingMaterial {
    key: Arc<CertifiedKey>,
    /// Raw bytes of the cert and key files as last successfully loaded; `None` when
    /// self-signed.
    file_contents: Option<(Vec<u8>, Vec<u8>)>,
}

/// Client CA pools as last set by [`TlsState::set_client_cas`].
#[derive(Default)]
struct ClientCas {
    requestheader: Vec<CertificateDer<'static>>,
    client_ca: Vec<CertificateDer<'static>>,
    /// Refuse clients without a certificate (a port with no other authentication).
    required: bool,
}

struct Inner {
    provider: Arc<CryptoProvider>,
    files: Option<(PathBuf, PathBuf)>,
    /// Serialises rebuilds so a file reload and a CA update cannot interleave and lose one of
    /// the two changes. Never held across an `.await`.
    material: Mutex<(ServingMaterial, ClientCas)>,
    current: RwLock<Arc<ServerConfig>>,
}

/// The adapter's current TLS server configuration, shared by the accept loop, the file
/// reloader and the authentication config refresher. Cheap to clone.
#[derive(Clone)]
pub struct TlsState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl TlsState {
    /// Loads the serving certificate from the configured files, or generates a self-signed one
    /// when none are given. No client CAs are trusted until [`TlsState::set_client_cas`].
    pub fn new(options: &TlsOptions) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (files, material) = match (&options.cert_file, &options.key_file) {
            (Some(cert), Some(key)) => {
                let cert_bytes = read_file(cert)?;
                let key_bytes = read_file(key)?;
                let certified = parse_serving_pair(&provider, cert, &cert_bytes, key, &key_bytes)?;
                info!(cert = %cert.display(), key = %key.display(), "loaded serving certificate");
                let material = ServingMaterial {
                    key: Arc::new(certified),
                    file_contents: Some((cert_bytes, key_bytes)),
                };
                (Some((cert.clone(), key.clone())), material)
            }
            (None, None) => {
                let certified = self_signed(&provider, &options.extra_sans)?;
                let material = ServingMaterial {
                    key: Arc::new(certified),
                    file_contents: None,
                };
                (None, material)
            }
            _ => return Err(TlsError::IncompleteFilePair),
        };
        let cas = ClientCas::default();
        let config = build_server_config(&provider, &material, &cas)?;
        Ok(Self {
            inner: Arc::new(Inner {
                provider,
                files,
                material: Mutex::new((material, cas)),
                current: RwLock::new(config),
            }),
        })
    }

    /// The configuration new connections are accepted with.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The serving certificate chain currently in use, leaf first.
    pub fn serving_chain(&self) -> Vec<CertificateDer<'static>> {
        let guard = self
            .inner
            .material
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        guard.0.key.cert.clone()
    }

    /// SHA-256 fingerprint of the current leaf certificate, as colon-separated upper-case hex
    /// (the form `openssl x509 -fingerprint -sha256` prints).
    pub fn serving_fingerprint(&self) -> String {
        self.serving_chain()
            .first()
            .map(|leaf| fingerprint(leaf))
            .unwrap_or_default()
    }

    /// Replaces the trusted client CA pools and rebuilds the configuration. A presented client
    /// certificate must chain to a certificate in either pool; with both empty, client
    /// certificates are not requested at all. On error the previous configuration stays.
    pub fn set_client_cas(
        &self,
        requestheader: Vec<CertificateDer<'static>>,
        client_ca: Vec<CertificateDer<'static>>,
    ) -> Result<(), TlsError> {
        self.replace_client_cas(ClientCas {
            requestheader,
            client_ca,
            required: false,
        })
    }

    /// Makes a client certificate that chains to `client_ca` a condition of the handshake,
    /// for a port that authenticates its clients in no other way (KEDA's external scaler).
    /// On error the previous configuration stays.
    pub fn require_client_certificates(
        &self,
        client_ca: Vec<CertificateDer<'static>>,
    ) -> Result<(), TlsError> {
        self.replace_client_cas(ClientCas {
            requestheader: Vec::new(),
            client_ca,
            required: true,
        })
    }

    /// Rebuilds the configuration with `cas`; on error the previous one stays.
    fn replace_client_cas(&self, cas: ClientCas) -> Result<(), TlsError> {
        let mut guard = self
            .inner
            .material
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let config = build_server_config(&self.inner.provider, &guard.0, &cas)?;
        guard.1 = cas;
        self.swap(config);
        Ok(())
    }

    /// Re-reads the serving certificate files and swaps the configuration when their content
    /// changed. Returns whether anything changed; on error the previous certificate stays in
    /// use and the next call tries again. Does nothing for a self-signed certificate.
    pub async fn reload_files(&self) -> Result<bool, TlsError> {
        let Some((cert_path, key_path)) = &self.inner.files else {
            return Ok(false);
        };
        let cert_bytes = read_file_async(cert_path).await?;
        let key_bytes = read_file_async(key_path).await?;
        let mut guard = self
            .inner
            .material
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((old_cert, old_key)) = &guard.0.file_contents {
            if *old_cert == cert_bytes && *old_key == key_bytes {
                return Ok(false);
            }
        }
        let certified = parse_serving_pair(
            &self.inner.provider,
            cert_path,
            &cert_bytes,
            key_path,
            &key_bytes,
        )?;
        let material = ServingMaterial {
            key: Arc::new(certified),
            file_contents: Some((cert_bytes, key_bytes)),
        };
        let config = build_server_config(&self.inner.provider, &material, &guard.1)?;
        guard.0 = material;
        self.swap(config);
        Ok(true)
    }

    /// Starts polling the serving certificate files every [`FILE_POLL_INTERVAL`]; `None` when
    /// the certificate is self-signed. [`serve`] calls this itself.
    pub fn spawn_file_reloader(&self) -> Option<JoinHandle<()>> {
        let (cert, key) = self.inner.files.clone()?;
        let state = self.clone();
        let span = info_span!("tls_reload", cert = %cert.display(), key = %key.display());
        Some(tokio::spawn(
            async move {
                let mut ticker = tokio::time::interval(FILE_POLL_INTERVAL);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // The first tick completes at once; the files were just loaded.
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    match state.reload_files().await {
                        Ok(true) => info!(
                            fingerprint_sha256 = %state.serving_fingerprint(),
                            "reloaded serving certificate"
                        ),
                        Ok(false) => {}
                        Err(error) => warn!(
                            error = %ErrorChain(&error),
                            "keeping the previous serving certificate; will retry"
                        ),
                    }
                }
            }
            .instrument(span),
        ))
    }

    fn swap(&self, config: Arc<ServerConfig>) {
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = config;
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

async fn read_file_async(path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| TlsError::ReadFile {
            path: path.to_owned(),
            source,
        })
}

/// The CA certificates of a PEM file (e.g. `--keda-client-ca-file`).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_pem_certificates(&read_file(path)?).map_err(|reason| TlsError::ParseCertificates {
        path: path.to_owned(),
        reason,
    })
}

/// Parses all PEM certificates in `pem`; fails on malformed PEM or when there are none.
pub(crate) fn parse_pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| error.to_string())?;
    if certs.is_empty() {
        return Err("no PEM CERTIFICATE blocks found".to_owned());
    }
    Ok(certs)
}

fn parse_serving_pair(
    provider: &CryptoProvider,
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_pem_certificates(cert_pem).map_err(|reason| TlsError::ParseCertificates {
        path: cert_path.to_owned(),
        reason,
    })?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|error| TlsError::ParsePrivateKey {
            path: key_path.to_owned(),
            reason: error.to_string(),
        })?
        .ok_or_else(|| TlsError::ParsePrivateKey {
            path: key_path.to_owned(),
            reason: "no PEM private key block found".to_owned(),
        })?;
    // `from_der` also checks that the key belongs to the leaf, which catches a half-rotated
    // Secret (new certificate, old key) before it is served.
    CertifiedKey::from_der(chain, key, provider).map_err(TlsError::ServingKey)
}

fn self_signed(provider: &CryptoProvider, extra_sans: &[String]) -> Result<CertifiedKey, TlsError> {
    let mut names: Vec<String> = SELF_SIGNED_DEFAULT_NAMES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for san in extra_sans {
        if !names.contains(san) {
            names.push(san.clone());
        }
    }
    let mut params = rcgen::CertificateParams::new(names.clone()).map_err(TlsError::SelfSigned)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "inferscale-adapter (self-signed)",
    );
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key_pair = rcgen::KeyPair::generate().map_err(TlsError::SelfSigned)?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(TlsError::SelfSigned)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let certified = CertifiedKey::from_der(vec![cert.der().clone()], key, provider)
        .map_err(TlsError::ServingKey)?;
    info!(
        fingerprint_sha256 = %fingerprint(cert.der()),
        names = ?names,
        "no serving certificate files given; generated a self-signed certificate for local use"
    );
    Ok(certified)
}

fn client_verifier(
    provider: &Arc<CryptoProvider>,
    cas: &ClientCas,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(
        cas.requestheader
            .iter()
            .chain(cas.client_ca.iter())
            .cloned(),
    );
    if ignored > 0 {
        warn!(
            ignored,
            "some client CA certificates could not be used as trust anchors"
        );
    }
    if added == 0 && !cas.required {
        return Ok(WebPkiClientVerifier::no_client_auth());
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if cas.required {
        return builder.build().map_err(TlsError::ClientVerifier);
    }
    // Bearer-token clients connect without a certificate; authentication decides later.
    builder
        .allow_unauthenticated()
        .build()
        .map_err(TlsError::ClientVerifier)
}

fn build_server_config(
    provider: &Arc<CryptoProvider>,
    material: &ServingMaterial,
    cas: &ClientCas,
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = client_verifier(provider, cas)?;
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::ProtocolVersions)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(material.key.clone())));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// SHA-256 of `data`, computed with the ring provider rustls already links (the workspace has
/// no separate hashing crate).
pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
    // TLS13_AES_128_GCM_SHA256 is a TLS 1.3 suite by definition, so `tls13()` is always `Some`;
    // the empty fallback only keeps this free of `expect`.
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .map(|suite| suite.common.hash_provider.hash(data).as_ref().to_vec())
        .unwrap_or_default()
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    sha256(cert.as_ref())
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then stops accepting and
/// drains in-flight requests ([`crate::http`]'s accept loop).
///
/// Each connection is handshaken with the configuration current at accept time, so certificate
/// and CA changes apply to new connections. Every request gets [`PeerCertificates`] and
/// `ConnectInfo<SocketAddr>` extensions. Also polls the certificate files for changes while
/// serving.
pub async fn serve(
    listener: TcpListener,
    state: TlsState,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    // Abort-on-drop, so the reloader also stops when serving ends.
    let _reloader = state.spawn_file_reloader().map(AbortOnDrop);
    let limits = options.limits;
    accept_loop(listener, options, shutdown, move |stream, peer, conn| {
        let state = state.clone();
        let router = router.clone();
        async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(state.server_config());
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    // Port scanners and clients with untrusted certificates end here; not
                    // worth more than debug.
                    debug!(%error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                    return;
                }
            };
            let peer_certificates = PeerCertificates(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .map(|chain| Arc::from(chain.to_vec())),
            );
            let mut extensions = Extensions::new();
            extensions.insert(peer_certificates);
            serve_connection(tls, router, peer, extensions, limits, conn).await;
        }
    })
    .await;
}

/// Aborts the task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Certificate authorities and temporary files for tests of this module and of [`crate::auth`].
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A throwaway CA and helpers to issue leaf certificates from it.
    pub(crate) struct TestCa {
        pub cert: rcgen::Certificate,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    /// A leaf certificate with its PEM forms.
    pub(crate) struct TestLeaf {
        pub cert_pem: String,
        pub key_pem: String,
        pub der: CertificateDer<'static>,
    }

    impl TestCa {
        pub fn new(name: &str) -> Self {
            let mut params = rcgen::CertificateParams::default();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let key = rcgen::KeyPair::generate().expect("generate CA key");
            let cert = params.self_signed(&key).expect("self-sign CA");
            Self {
                cert,
                issuer: rcgen::Issuer::new(params, key),
            }
        }

        pub fn der(&self) -> CertificateDer<'static> {
            self.cert.der().clone()
        }

        pub fn server_leaf(&self, names: &[&str]) -> TestLeaf {
            let mut params = rcgen::CertificateParams::new(
                names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
            )
            .expect("server params");
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            self.issue(params)
        }

        pub fn client_leaf(&self, common_name: &str, organizations: &[&str]) -> TestLeaf {
            let mut params = rcgen::CertificateParams::default();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, common_name);
            for org in organizations {
                params
                    .distinguished_name
                    .push(rcgen::DnType::OrganizationName, *org);
            }
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            self.issue(params)
        }

        fn issue(&self, params: rcgen::CertificateParams) -> TestLeaf {
            let key = rcgen::KeyPair::generate().expect("generate leaf key");
            let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
            TestLeaf {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
                der: cert.der().clone(),
            }
        }
    }

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "inferscale-tls-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        pub fn write(&self, name: &str, content: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, content).expect("write temp file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{TempDir, TestCa};
    use super::*;

    #[test]
    fn self_signed_covers_local_names_and_extra_sans() {
        let state = TlsState::new(&TlsOptions {
            extra_sans: vec!["adapter.inferscale.svc".to_owned()],
            ..TlsOptions::default()
        })
        .expect("self-signed state");
        let chain = state.serving_chain();
        assert_eq!(chain.len(), 1);
        let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).expect("parse");
        let san = cert
            .subject_alternative_name()
            .expect("san ext ok")
            .expect("san present");
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(host) => dns.push((*host).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => ips.push(bytes.to_vec()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        assert_eq!(dns, vec!["localhost", "adapter.inferscale.svc"]);
        let loopback_v4 = std::net::Ipv4Addr::LOCALHOST.octets().to_vec();
        let loopback_v6 = std::net::Ipv6Addr::LOCALHOST.octets().to_vec();
        assert_eq!(ips, vec![loopback_v4, loopback_v6]);
        let fp = state.serving_fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");
    }

    #[test]
    fn sha256_matches_known_vector() {
        // FIPS 180-2 test vector for "abc".
        let hex: String = sha256(b"abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn only_one_file_is_an_error() {
        let err = TlsState::new(&TlsOptions {
            cert_file: Some(PathBuf::from("/nonexistent/cert.pem")),
            ..TlsOptions::default()
        })
        .expect_err("must fail");
        assert!(matches!(err, TlsError::IncompleteFilePair));
    }

    #[tokio::test]
    async fn reload_swaps_on_change_and_keeps_old_pair_on_bad_files() {
        let dir = TempDir::new();
        let ca = TestCa::new("serving-ca");
        let first = ca.server_leaf(&["localhost"]);
        let cert = dir.write("tls.crt", &first.cert_pem);
        let key = dir.write("tls.key", &first.key_pem);
        let state = TlsState::new(&TlsOptions {
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
            extra_sans: vec![],
        })
        .expect("file state");
        assert_eq!(state.serving_chain()[0], first.der);
        assert!(!state.reload_files().await.expect("unchanged"));

        // Half-rotated Secret: new certificate, old key. Must be refused.
        let second = ca.server_leaf(&["localhost"]);
        std::fs::write(&cert, &second.cert_pem).expect("write");
        let err = state.reload_files().await.expect_err("mismatched pair");
        assert!(matches!(err, TlsError::ServingKey(_)), "{err}");
        assert_eq!(state.serving_chain()[0], first.der);

        // Garbage certificate: refused, old one kept.
        std::fs::write(&cert, "not a certificate").expect("write");
        let err = state.reload_files().await.expect_err("garbage");
        assert!(matches!(err, TlsError::ParseCertificates { .. }), "{err}");
        assert_eq!(state.serving_chain()[0], first.der);

        // Completed rotation: swapped.
        std::fs::write(&cert, &second.cert_pem).expect("write");
        std::fs::write(&key, &second.key_pem).expect("write");
        assert!(state.reload_files().await.expect("rotated"));
        assert_eq!(state.serving_chain()[0], second.der);
    }

    /// The handler reports whether the request carried a client certificate.
    fn peer_router() -> Router {
        Router::new().fallback(|request: axum::extract::Request| async move {
            match request.extensions().get::<PeerCertificates>() {
                Some(PeerCertificates(Some(chain))) => format!("cert:{}", chain.len()),
                Some(PeerCertificates(None)) => "no-cert".to_owned(),
                None => "plain".to_owned(),
            }
        })
    }

    #[tokio::test]
    async fn self_signed_serving_with_and_without_client_certificates() {
        let state = TlsState::new(&TlsOptions::default()).expect("self-signed");
        let client_ca = TestCa::new("client-ca");
        state
            .set_client_cas(vec![], vec![client_ca.der()])
            .expect("client CA");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            state.clone(),
            peer_router(),
            crate::http::ServeOptions::default(),
            async {
                let _ = stopped.await;
            },
        ));
        let leaf = state.serving_chain()[0].clone();
        let trusted = || {
            reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_der(leaf.as_ref()).expect("cert"))
        };
        let url = format!("https://127.0.0.1:{port}/x");
        let body = trusted()
            .build()
            .expect("client")
            .get(&url)
            .send()
            .await
            .expect("get");
        assert_eq!(body.text().await.expect("text"), "no-cert");

        let user = client_ca.client_leaf("alice", &[]);
        let identity =
            reqwest::Identity::from_pem(format!("{}{}", user.key_pem, user.cert_pem).as_bytes())
                .expect("identity");
        let client = trusted().identity(identity).build().expect("client");
        let body = client.get(&url).send().await.expect("get");
        assert_eq!(body.text().await.expect("text"), "cert:1");
        drop(client);

        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(15), server)
            .await
            .expect("stops")
            .expect("task");
    }

    #[test]
    fn client_cas_toggle_client_auth() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let none = client_verifier(&provider, &ClientCas::default()).expect("no CAs");
        assert!(!none.offer_client_auth());
        let ca = TestCa::new("client-ca");
        let cas = ClientCas {
            requestheader: vec![],
            client_ca: vec![ca.der()],
            required: false,
        };
        let verifier = client_verifier(&provider, &cas).expect("one CA");
        assert!(verifier.offer_client_auth());
        assert!(
            !verifier.client_auth_mandatory(),
            "bearer-token clients must get through"
        );
        let state = TlsState::new(&TlsOptions::default()).expect("state");
        state.set_client_cas(vec![], vec![ca.der()]).expect("set");
    }
}
