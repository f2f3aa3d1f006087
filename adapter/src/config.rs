//! `adapter serve` configuration: raw flags → validated, resolved settings in one pass.
//!
//! Owns: the flags, and validation that reports every problem at once instead of the first —
//! static targets (`--target`, `--targets-file`) included — and resolves them into the
//! option structs the parts are built from ([`ScrapeConfig`], [`TlsOptions`],
//! [`DelegatedAuthOptions`], [`PodWatchConfig`]), so `server` only wires them together.
//! Defaults that a part owns (the window, cache TTLs) are that part's constants, shown here.

use crate::auth::authn::{AuthnOptions, DEFAULT_TOKEN_CACHE_TTL};
use crate::auth::authz::{AuthzOptions, DEFAULT_ALLOW_CACHE_TTL};
use crate::auth::DelegatedAuthOptions;
use crate::error_chain::ErrorChain;
use crate::http::ConnectionLimits;
use crate::scrape::ScrapeConfig;
use crate::targets::{self, PodWatchConfig, StaticTarget};
use crate::tls::TlsOptions;
use inferscale_metrics::signals::DEFAULT_WINDOW_SECS;
use inferscale_metrics::snapshot::SnapshotLimits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The default window as a flag value.
pub fn default_window() -> humantime::Duration {
    Duration::from_secs_f64(DEFAULT_WINDOW_SECS).into()
}

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
    /// Address of the TLS server. `:6443` (or `[::]:6443`) means every interface, IPv4 and
    /// IPv6 (dual-stack; IPv4 only on a host without IPv6); `0.0.0.0:6443` means IPv4 only.
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
    /// Keep each target's HTTP connection open between scrapes (an idle one holds ≈ 0.5 KB
    /// and a socket). Off: no idle connection is held, at the price of a new connection per
    /// scrape (interval 5s and 10,000 targets: 2,000 connections/s, each a
    /// connection-tracking entry for as long as the kernel keeps it in TIME_WAIT).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub scrape_keep_alive: bool,
    /// Largest `/metrics` body accepted, bytes (after decompression).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most distinct models (`model_name` values) kept from one pod's scrape; samples of
    /// further models are skipped and counted.
    #[arg(long, default_value_t = SnapshotLimits::DEFAULT_MAX_MODELS)]
    pub max_models_per_pod: usize,
    /// Most series kept from one pod's scrape; further samples are skipped and counted.
    #[arg(long, default_value_t = SnapshotLimits::DEFAULT_MAX_SERIES)]
    pub max_series_per_pod: usize,
    /// Client connections open at once (lowered to fit the file-descriptor limit). At the
    /// limit a new connection replaces the quietest one without a request in flight.
    #[arg(long, default_value_t = ConnectionLimits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// After SIGTERM: how long readiness fails while requests are still served, before the
    /// listener closes and in-flight requests drain (lets the Service's endpoints drop this
    /// replica first). Keep it plus 10 s of drain below the pod's termination grace period.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,
    /// Window for rates and latency percentiles.
    #[arg(long, default_value_t = default_window())]
    pub window: humantime::Duration,
    /// Serve external.metrics.k8s.io (turn off where KEDA owns that APIService).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub external_metrics: bool,
    /// Watch WarmPools and serve each one's recommendation and capacity by tier as Object
    /// metrics on its target (needs the WarmPool CRD and read access to it:
    /// deploy/components/warm-pool).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub warm_pools: bool,
    /// Serve KEDA's external-scaler gRPC contract on this address (TLS with the serving
    /// certificate; e.g. `:9443`; loopback only in standalone mode). Off when absent.
    #[arg(long)]
    pub keda_scaler_listen: Option<String>,
    /// CA (PEM) that KEDA's client certificate must chain to; with it, the external
    /// scaler refuses clients without one. Read at start. Needs --keda-scaler-listen.
    #[arg(long)]
    pub keda_client_ca_file: Option<String>,
    /// How long SubjectAccessReview decisions (allowed and denied) are cached.
    #[arg(long, default_value_t = DEFAULT_ALLOW_CACHE_TTL.into())]
    pub authorization_cache_ttl: humantime::Duration,
    /// How long TokenReview results are cached.
    #[arg(long, default_value_t = DEFAULT_TOKEN_CACHE_TTL.into())]
    pub authentication_cache_ttl: humantime::Duration,
}

/// Shortest scrape interval: vLLM recomputes its gauges every engine step, but scraping a
/// fleet faster than once a second costs more than any HPA (15 s sync) can use.
pub const MIN_SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// A scrape older than this many intervals is stale: one late or failed scrape does not
/// remove a pod from answers, a dead one is gone within three intervals.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// What readiness adds to one scrape interval and timeout before it stops waiting for a first
/// scrape of every target: the scrape loop's reconcile tick (1 s) and a second of slack.
pub const FIRST_ROUND_SLACK: Duration = Duration::from_secs(2);

/// Validated, resolved settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Standalone or in-cluster, with what only that mode needs.
    pub mode: Mode,
    /// How the scrape loop scrapes.
    pub scrape: ScrapeConfig,
    /// Window for rates and latency percentiles.
    pub window: Duration,
    /// A scrape older than this no longer counts ([`STALE_AFTER_INTERVALS`] intervals plus
    /// the timeout).
    pub stale_after: Duration,
    /// Serve `external.metrics.k8s.io`.
    pub external_metrics: bool,
    /// KEDA's external scaler (`None`: not served).
    pub keda_scaler: Option<KedaScalerConfig>,
    /// Bounds on client connections.
    pub connections: ConnectionLimits,
    /// Readiness waits at most this long after the pod watches listed for the first scrape of
    /// every scrapable target (one interval, the timeout, and the loop's reconcile tick).
    pub first_round_grace: Duration,
    /// See `--shutdown-delay`.
    pub shutdown_delay: Duration,
}

/// Standalone or in-cluster.
#[derive(Debug, Clone)]
pub enum Mode {
    /// No cluster: static targets, plain HTTP on a loopback address, no authentication.
    Standalone {
        listen: SocketAddr,
        /// From `--targets-file`, then each `--target`.
        targets: Vec<StaticTarget>,
    },
    /// Pods watched in a cluster, served over TLS with delegated authentication.
    Cluster(Box<ClusterConfig>),
}

/// Where and how KEDA's external scaler is served.
#[derive(Debug, Clone)]
pub struct KedaScalerConfig {
    pub listen: SocketAddr,
    /// The serving certificate (`--tls-cert-file`…; self-signed when absent).
    pub tls: TlsOptions,
    /// Require client certificates chaining to this CA.
    pub client_ca_file: Option<PathBuf>,
}

/// Settings used only with a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub listen: SocketAddr,
    pub tls: TlsOptions,
    pub auth: DelegatedAuthOptions,
    pub watch: PodWatchConfig,
    /// Watch WarmPools and serve their status on their targets.
    pub warm_pools: bool,
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') {
        format!("[::]{text}")
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
        let window: Duration = self.window.into();
        if self.scrape_interval < MIN_SCRAPE_INTERVAL {
            errors.push(format!(
                "--scrape-interval must be at least {}s",
                MIN_SCRAPE_INTERVAL.as_secs()
            ));
        }
        if self.scrape_timeout.is_zero() || self.scrape_timeout >= self.scrape_interval {
            errors.push("--scrape-timeout must be above 0 and below --scrape-interval".into());
        }
        if window < self.scrape_interval * 2 {
            errors.push("--window must span at least two scrape intervals".into());
        }
        if self.scrape_concurrency == 0 {
            errors.push("--scrape-concurrency must be at least 1".into());
        }
        if self.max_body_bytes < 1024 {
            errors.push("--max-body-bytes must be at least 1024".into());
        }
        if self.max_models_per_pod == 0 || self.max_series_per_pod == 0 {
            errors.push("--max-models-per-pod and --max-series-per-pod must be at least 1".into());
        }
        if self.max_connections == 0 {
            errors.push("--max-connections must be at least 1".into());
        }
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            errors.push("--tls-cert-file and --tls-private-key-file go together".into());
        }
        let keda_scaler = self.keda_scaler(&mut errors);
        let mode = if self.standalone {
            if keda_scaler
                .as_ref()
                .is_some_and(|k| !k.listen.ip().is_loopback())
            {
                errors.push(
                    "--keda-scaler-listen must be a loopback address in standalone mode".into(),
                );
            }
            if self.targets.is_empty() && self.targets_file.is_none() {
                errors.push("--standalone needs --target or --targets-file".into());
            }
            let targets = self.static_targets(&mut errors);
            match parse_listen(&self.insecure_listen) {
                Ok(addr) if keda_scaler.as_ref().is_some_and(|k| k.listen == addr) => {
                    errors.push("--keda-scaler-listen must differ from --insecure-listen".into());
                    None
                }
                Ok(addr) if addr.ip().is_loopback() => Some(Mode::Standalone {
                    listen: addr,
                    targets,
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
                Ok(listen) if keda_scaler.as_ref().is_some_and(|k| k.listen == listen) => {
                    errors.push("--keda-scaler-listen must differ from --listen".into());
                    None
                }
                Ok(listen) => Some(Mode::Cluster(Box::new(self.cluster(listen)))),
                Err(e) => {
                    errors.push(e);
                    None
                }
            }
        };
        match (mode, errors.is_empty()) {
            (Some(mode), true) => Ok(ServeConfig {
                mode,
                scrape: ScrapeConfig {
                    interval: self.scrape_interval,
                    timeout: self.scrape_timeout,
                    max_body_bytes: self.max_body_bytes,
                    concurrency: self.scrape_concurrency,
                    keep_alive: self.scrape_keep_alive,
                    limits: SnapshotLimits {
                        max_models: self.max_models_per_pod,
                        max_series: self.max_series_per_pod,
                        ..SnapshotLimits::default()
                    },
                },
                window,
                stale_after: self.scrape_interval * STALE_AFTER_INTERVALS + self.scrape_timeout,
                external_metrics: self.external_metrics,
                keda_scaler,
                connections: ConnectionLimits {
                    max_connections: self.max_connections,
                    ..ConnectionLimits::default()
                },
                first_round_grace: self.scrape_interval + self.scrape_timeout + FIRST_ROUND_SLACK,
                shutdown_delay: self.shutdown_delay,
            }),
            _ => Err(errors),
        }
    }

    /// The static targets of standalone mode: the file's, then each `--target`; every
    /// unreadable file or malformed flag is added to `errors`.
    fn static_targets(&self, errors: &mut Vec<String>) -> Vec<StaticTarget> {
        let mut list = Vec::new();
        if let Some(path) = &self.targets_file {
            match targets::read_static_file(path) {
                Ok(from_file) => list.extend(from_file),
                Err(error) => errors.push(ErrorChain(&error).to_string()),
            }
        }
        for flag in &self.targets {
            match targets::parse_target_flag(flag) {
                Ok(target) => list.push(target),
                Err(error) => errors.push(error.to_string()),
            }
        }
        list
    }

    /// The in-cluster settings, as the option structs of the parts that use them.
    /// The serving certificate options.
    fn tls(&self) -> TlsOptions {
        TlsOptions {
            cert_file: self.tls_cert_file.as_ref().map(PathBuf::from),
            key_file: self.tls_private_key_file.as_ref().map(PathBuf::from),
            extra_sans: self.tls_sans.clone(),
        }
    }

    /// KEDA's external scaler, if `--keda-scaler-listen` asks for it; problems go to
    /// `errors`.
    fn keda_scaler(&self, errors: &mut Vec<String>) -> Option<KedaScalerConfig> {
        if self.keda_client_ca_file.is_some() && self.keda_scaler_listen.is_none() {
            errors.push("--keda-client-ca-file needs --keda-scaler-listen".into());
        }
        match parse_listen(self.keda_scaler_listen.as_deref()?) {
            Ok(listen) => Some(KedaScalerConfig {
                listen,
                tls: self.tls(),
                client_ca_file: self.keda_client_ca_file.as_ref().map(PathBuf::from),
            }),
            Err(e) => {
                errors.push(format!("--keda-scaler-listen: {e}"));
                None
            }
        }
    }

    fn cluster(&self, listen: SocketAddr) -> ClusterConfig {
        let path = |file: &Option<String>| file.as_ref().map(PathBuf::from);
        let authorization_cache_ttl = self.authorization_cache_ttl.into();
        ClusterConfig {
            listen,
            tls: self.tls(),
            auth: DelegatedAuthOptions {
                authentication: AuthnOptions {
                    client_ca_file: path(&self.client_ca_file),
                    requestheader_client_ca_file: path(&self.requestheader_client_ca_file),
                    token_cache_ttl: self.authentication_cache_ttl.into(),
                    ..AuthnOptions::default()
                },
                authorization: AuthzOptions {
                    allow_cache_ttl: authorization_cache_ttl,
                    deny_cache_ttl: authorization_cache_ttl,
                    ..AuthzOptions::default()
                },
            },
            watch: PodWatchConfig {
                engine_selector: self.pod_selector.clone(),
                dcgm_selector: self.dcgm_selector.clone(),
            },
            warm_pools: self.warm_pools,
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
    fn static_target_errors_come_with_the_others() {
        let errors = args(&[
            "--standalone",
            "--scrape-timeout=10s",
            "--target=not-a-target",
            "--target=a/b=http://127.0.0.1:1/metrics",
            "--targets-file=/nonexistent/targets.json",
        ])
        .validate()
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors.iter().any(|e| e.contains("not-a-target")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("reading targets file /nonexistent/targets.json: ")),
            "the file error with its cause: {errors:?}"
        );
    }

    #[test]
    fn defaults_come_from_the_parts_that_own_them() {
        let config = args(&[]).validate().unwrap();
        assert_eq!(config.window.as_secs_f64(), DEFAULT_WINDOW_SECS);
        let Mode::Cluster(cluster) = config.mode else {
            panic!("cluster mode by default")
        };
        assert_eq!(
            cluster.auth.authentication.token_cache_ttl,
            DEFAULT_TOKEN_CACHE_TTL
        );
        assert_eq!(
            cluster.auth.authorization.allow_cache_ttl,
            DEFAULT_ALLOW_CACHE_TTL
        );
    }

    #[test]
    fn the_keda_scaler_is_off_by_default_and_on_its_own_address() {
        assert!(args(&[]).validate().unwrap().keda_scaler.is_none());
        let config = args(&[
            "--keda-scaler-listen=:9443",
            "--keda-client-ca-file=/etc/keda-ca/ca.crt",
            "--tls-cert-file=/certs/tls.crt",
            "--tls-private-key-file=/certs/tls.key",
        ])
        .validate()
        .unwrap();
        let keda = config.keda_scaler.unwrap();
        assert_eq!(keda.listen, "[::]:9443".parse::<SocketAddr>().unwrap());
        assert_eq!(keda.client_ca_file, Some("/etc/keda-ca/ca.crt".into()));
        assert_eq!(keda.tls.cert_file, Some("/certs/tls.crt".into()));
        let errors = args(&["--keda-client-ca-file=/ca.crt"])
            .validate()
            .unwrap_err();
        assert_eq!(
            errors,
            vec!["--keda-client-ca-file needs --keda-scaler-listen"]
        );
        // Standalone: loopback only, like the plain-HTTP listener.
        let standalone = |keda: &str| {
            args(&[
                "--standalone",
                "--target=a/b=http://127.0.0.1:1/metrics",
                keda,
            ])
            .validate()
        };
        assert!(standalone("--keda-scaler-listen=127.0.0.1:9443").is_ok());
        assert_eq!(
            standalone("--keda-scaler-listen=:9443").unwrap_err(),
            vec!["--keda-scaler-listen must be a loopback address in standalone mode"]
        );
        assert_eq!(
            standalone("--keda-scaler-listen=127.0.0.1:8080").unwrap_err(),
            vec!["--keda-scaler-listen must differ from --insecure-listen"]
        );
        let errors = args(&["--keda-scaler-listen=:6443"])
            .validate()
            .unwrap_err();
        assert_eq!(
            errors,
            vec!["--keda-scaler-listen must differ from --listen"]
        );
    }

    #[test]
    fn listen_port_alone_means_every_interface_dual_stack() {
        let config = args(&["--listen=:7443"]).validate().unwrap();
        let Mode::Cluster(cluster) = config.mode else {
            panic!("cluster mode")
        };
        assert_eq!(cluster.listen, "[::]:7443".parse::<SocketAddr>().unwrap());
        let v4 = args(&["--listen=0.0.0.0:7443"]).validate().unwrap();
        let Mode::Cluster(cluster) = v4.mode else {
            panic!("cluster mode")
        };
        assert!(cluster.listen.is_ipv4());
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
