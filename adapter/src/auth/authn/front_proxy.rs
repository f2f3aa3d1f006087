//! Front-proxy (request-header) authentication: kube-apiserver forwards requests with a client
//! certificate from the request-header CA and the real user in headers.
//!
//! Owns: believing those headers only from a certificate that verifies against that CA
//! *specifically* and whose CN is an allowed name, reading user, UID, groups and extra
//! attributes from them (k8s' `requestheader` authenticator), and removing them from an
//! authenticated request.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use tracing::warn;

use super::x509::{verified_subject, verifier};
use super::{Attempt, AuthnError, RequestHeaderConfig};
use crate::auth::request_info::percent_decode;
use crate::auth::{RequestParts, UserInfo};

/// The front-proxy settings with the verifier built and header names parsed.
pub(super) struct FrontProxy {
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

impl FrontProxy {
    /// Builds the verifier for `config`'s CA; `None` when it names no usable certificate.
    pub(super) fn new(
        config: &RequestHeaderConfig,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Option<Self>, AuthnError> {
        Ok(
            verifier(provider, &config.ca, "request-header")?.map(|verifier| FrontProxy {
                verifier,
                allowed_names: config.allowed_names.clone(),
                username_headers: header_names(&config.username_headers),
                uid_headers: header_names(&config.uid_headers),
                group_headers: header_names(&config.group_headers),
                extra_prefixes: config
                    .extra_headers_prefix
                    .iter()
                    .map(|prefix| prefix.trim().to_ascii_lowercase())
                    .filter(|prefix| !prefix.is_empty())
                    .collect(),
            }),
        )
    }

    /// The user the front proxy asserts, when the request carries its certificate.
    pub(super) fn authenticate(&self, request: &RequestParts<'_>) -> Result<UserInfo, Attempt> {
        let (common_name, _) =
            verified_subject(self.verifier.as_ref(), "request-header CA", request)?;
        if !self.allowed_names.is_empty() && !self.allowed_names.contains(&common_name) {
            return Err(Attempt::Refused(format!(
                "x509: subject with cn={common_name} is not in the allowed list"
            )));
        }
        self.user_from_headers(request.headers)
            .ok_or(Attempt::NotApplicable)
    }

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

    /// Removes every configured front-proxy header (k8s `ClearAuthenticationHeaders`).
    pub(super) fn strip_headers(&self, headers: &mut HeaderMap) {
        for name in self
            .username_headers
            .iter()
            .chain(&self.uid_headers)
            .chain(&self.group_headers)
        {
            headers.remove(name);
        }
        let extra: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                self.extra_prefixes
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
