//! `adapter serve` configuration: raw flags → validated settings.
//!
//! Owns: the flags, their defaults (each with its reason), and validation that reports every
//! problem at once instead of the first.

use std::net::SocketAddr;
use std::time::Duration;

/// Flags of `adapter serve`, as parsed.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Run without a cluster: static targets, plain HTTP on loopback, no authentication.
    #[arg(long)]
    pub standalone: bool,
    /// Static target `namespace/name=URL` (standalone mode; repeatable).
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// JSON file of static targets with labels, node and owners (standalone mode).
    #[arg(long)]
    pub targets_file: Option<String>,
    /// Address of the TLS server (`:6443` means every interface).
    #[arg(long, default_value = ":6443")]
    pub listen: String,
    /// Address of the plain-HTTP server in standalone mode; must be loopback.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub insecure_listen: String,
    /// Serving certificate (PEM); re-read when it changes. Self-signed when absent.
    #[arg(long)]
    pub tls_cert_file: Option<String>,
    /// Serving key (PEM).
    #[arg(long)]
    pub tls_private_key_file: Option<String>,
    /// Extra DNS names / IPs for the self-signed certificate.
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    /// CA for client certificates of direct clients (else from the cluster's
    /// extension-apiserver-authentication ConfigMap).
    #[arg(long)]
    pub client_ca_file: Option<String>,
    /// CA of the aggregator's front-proxy client certificate (else from the ConfigMap).
    #[arg(long)]
    pub requestheader_client_ca_file: Option<String>,
    /// Label selector of the serving pods to scrape.
    #[arg(long, default_value = "inferscale.dev/scrape=true")]
    pub pod_selector: String,
    /// Label selector of dcgm-exporter pods (GPU Operator label by default); empty disables.
    #[arg(long, default_value = "app=nvidia-dcgm-exporter")]
    pub dcgm_selector: String,
    /// Time between scrapes of one target (at least 1s).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub scrape_interval: Duration,
    /// Time one scrape may take.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub scrape_timeout: Duration,
    /// Scrapes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub scrape_concurrency: usize,
    /// Largest `/metrics` body accepted, bytes (after decompression).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Window for rates and latency percentiles.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Serve external.metrics.k8s.io (turn off where KEDA owns that APIService).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub external_metrics: bool,
    /// How long SubjectAccessReview decisions are cached.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub authorization_cache_ttl: Duration,
    /// How long TokenReview results are cached.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub authentication_cache_ttl: Duration,
}

/// Shortest scrape interval: vLLM recomputes its gauges every engine step, but scraping a
/// fleet faster than once a second costs more than any HPA (15 s sync) can use.
pub const MIN_SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// A scrape older than this many intervals is stale: one late or failed scrape does not
/// remove a pod from answers, a dead one is gone within three intervals.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// Validated settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub mode: Mode,
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    pub scrape_concurrency: usize,
    pub max_body_bytes: usize,
    pub window: Duration,
    pub stale_after: Duration,
    pub external_metrics: bool,
}

/// Standalone or in-cluster.
#[derive(Debug, Clone)]
pub enum Mode {
    Standalone {
        listen: SocketAddr,
        targets: Vec<String>,
        targets_file: Option<String>,
    },
    Cluster(Box<ClusterConfig>),
}

/// Settings used only with a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub listen: SocketAddr,
    pub tls_cert_file: Option<String>,
    pub tls_private_key_file: Option<String>,
    pub tls_sans: Vec<String>,
    pub client_ca_file: Option<String>,
    pub requestheader_client_ca_file: Option<String>,
    pub pod_selector: String,
    pub dcgm_selector: String,
    pub authorization_cache_ttl: Duration,
    pub authentication_cache_ttl: Duration,
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    full.parse()
        .map_err(|_| format!("invalid listen address {text:?} (expected host:port or :port)"))
}

impl ServeArgs {
    /// Checks every flag and reports all problems together.
    pub fn validate(self) -> Result<ServeConfig, Vec<String>> {
        let mut errors = Vec::new();
        if self.scrape_interval < MIN_SCRAPE_INTERVAL {
            errors.push(format!(
                "--scrape-interval must be at least {}s",
                MIN_SCRAPE_INTERVAL.as_secs()
            ));
        }
        if self.scrape_timeout.is_zero() || self.scrape_timeout >= self.scrape_interval {
            errors.push("--scrape-timeout must be above 0 and below --scrape-interval".into());
        }
        if self.window < self.scrape_interval * 2 {
            errors.push("--window must span at least two scrape intervals".into());
        }
        if self.scrape_concurrency == 0 {
            errors.push("--scrape-concurrency must be at least 1".into());
        }
        if self.max_body_bytes < 1024 {
            errors.push("--max-body-bytes must be at least 1024".into());
        }
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            errors.push("--tls-cert-file and --tls-private-key-file go together".into());
        }
        let mode = if self.standalone {
            if self.targets.is_empty() && self.targets_file.is_none() {
                errors.push("--standalone needs --target or --targets-file".into());
            }
            match parse_listen(&self.insecure_listen) {
                Ok(addr) if addr.ip().is_loopback() => Some(Mode::Standalone {
                    listen: addr,
                    targets: self.targets.clone(),
                    targets_file: self.targets_file.clone(),
                }),
                Ok(_) => {
                    errors.push("--insecure-listen must be a loopback address (plain HTTP, no authentication)".into());
                    None
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            }
        } else {
            if !self.targets.is_empty() || self.targets_file.is_some() {
                errors.push("--target and --targets-file need --standalone".into());
            }
            if self.pod_selector.trim().is_empty() {
                errors.push("--pod-selector must not be empty (it would scrape every pod)".into());
            }
            match parse_listen(&self.listen) {
                Ok(listen) => Some(Mode::Cluster(Box::new(ClusterConfig {
                    listen,
                    tls_cert_file: self.tls_cert_file.clone(),
                    tls_private_key_file: self.tls_private_key_file.clone(),
                    tls_sans: self.tls_sans.clone(),
                    client_ca_file: self.client_ca_file.clone(),
                    requestheader_client_ca_file: self.requestheader_client_ca_file.clone(),
                    pod_selector: self.pod_selector.clone(),
                    dcgm_selector: self.dcgm_selector.clone(),
                    authorization_cache_ttl: self.authorization_cache_ttl,
                    authentication_cache_ttl: self.authentication_cache_ttl,
                }))),
                Err(e) => {
                    errors.push(e);
                    None
                }
            }
        };
        match (mode, errors.is_empty()) {
            (Some(mode), true) => Ok(ServeConfig {
                mode,
                scrape_interval: self.scrape_interval,
                scrape_timeout: self.scrape_timeout,
                scrape_concurrency: self.scrape_concurrency,
                max_body_bytes: self.max_body_bytes,
                window: self.window,
                stale_after: self.scrape_interval * STALE_AFTER_INTERVALS + self.scrape_timeout,
                external_metrics: self.external_metrics,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn args(flags: &[&str]) -> ServeArgs {
        let mut argv = vec!["serve"];
        argv.extend_from_slice(flags);
        Cli::parse_from(argv).args
    }

    #[test]
    fn defaults_are_valid_in_cluster_mode() {
        let config = args(&[]).validate().unwrap();
        assert!(matches!(config.mode, Mode::Cluster(_)));
        assert_eq!(config.stale_after, Duration::from_secs(18));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = args(&[
            "--scrape-interval=500ms",
            "--scrape-timeout=2s",
            "--window=900ms",
            "--tls-cert-file=x",
            "--target=a/b=http://x",
        ])
        .validate()
        .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
    }

    #[test]
    fn standalone_must_listen_on_loopback() {
        let errors = args(&[
            "--standalone",
            "--target=a/b=http://127.0.0.1:1/metrics",
            "--insecure-listen=0.0.0.0:8080",
        ])
        .validate()
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            args(&["--standalone", "--target=a/b=http://127.0.0.1:1/metrics"])
                .validate()
                .is_ok()
        );
    }
}
