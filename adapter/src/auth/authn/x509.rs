//! Client certificates: building verifiers for a CA pool, verifying a presented chain, and
//! reading the subject (user = CN, groups = O, as k8s' x509 authenticator does).
//!
//! Owns the certificate arithmetic both the front proxy ([`super::front_proxy`]) and
//! client-certificate authentication ([`authenticate`]) rely on. The TLS handshake checked the
//! chain against the union of the pools already; here each method checks against its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tracing::warn;

use super::{Attempt, AuthnError};
use crate::auth::{RequestParts, UserInfo};

/// A verifier for certificates chaining to `cas`; `None` for an empty pool.
pub(super) fn verifier(
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

/// The subject (CN, organizations) of the client certificate the request presented, when it
/// verifies against `verifier` (the `ca` named in the refusal otherwise);
/// [`Attempt::NotApplicable`] without a certificate.
pub(super) fn verified_subject(
    verifier: &dyn ClientCertVerifier,
    ca: &str,
    request: &RequestParts<'_>,
) -> Result<(String, Vec<String>), Attempt> {
    match verify_chain(verifier, request.peer_certificates) {
        None => Err(Attempt::NotApplicable),
        Some(Err(error)) => Err(Attempt::Refused(format!(
            "client certificate not from the {ca}: {error}"
        ))),
        Some(Ok(leaf)) => subject_names(leaf).map_err(Attempt::Refused),
    }
}

/// The user of a client certificate from the cluster client CA (`verifier`): CN and O.
pub(super) fn authenticate(
    verifier: &dyn ClientCertVerifier,
    request: &RequestParts<'_>,
) -> Result<UserInfo, Attempt> {
    let (common_name, organizations) = verified_subject(verifier, "client CA", request)?;
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
