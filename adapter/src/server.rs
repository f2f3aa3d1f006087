//! `adapter serve`: wires the pod watches, the scrape loop, the store and the API together
//! and runs them until a signal or a critical failure.
//!
//! Owns: start-up order and lifetimes. Every long-running task is critical: if the pod
//! watches, the scrape loop or the server end, the process ends with an error instead of going on as
//! a zombie that still answers probes.

use crate::api::{self, AppState};
use crate::auth::AuthState;
use crate::config::{ClusterConfig, Mode, ServeConfig};
use crate::scrape::{unix_now, Scraper};
use crate::store::Store;
use crate::targets::{self, StaticTarget};
use crate::telemetry::Telemetry;
use crate::tls::TlsState;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tracing::{error, info, info_span, Instrument};

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The scrape client could not be built.
    #[error(transparent)]
    Scrape(#[from] crate::scrape::ScrapeError),
    /// The listen address could not be bound.
    #[error("binding {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// No Kubernetes client could be configured (kubeconfig or in-cluster).
    #[error("connecting to Kubernetes")]
    Kube(#[from] kube::Error),
    /// Kubernetes client configuration could not be inferred.
    #[error("inferring the Kubernetes client configuration")]
    KubeConfig(#[from] kube::config::InferConfigError),
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Delegated authentication could not be set up (e.g. the ConfigMap is not readable).
    #[error(transparent)]
    Auth(#[from] crate::auth::authn::AuthnError),
    /// A critical task ended.
    #[error("{0} stopped unexpectedly")]
    TaskEnded(&'static str),
}

/// The parts every mode shares.
struct Core {
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    heartbeat: Arc<AtomicU64>,
    synced: Arc<AtomicBool>,
}

impl Core {
    fn new(config: &ServeConfig) -> Core {
        Core {
            store: Arc::new(Store::new(
                config.window.as_secs_f64(),
                config.stale_after.as_secs_f64(),
            )),
            telemetry: Arc::new(Telemetry::new()),
            heartbeat: Arc::new(AtomicU64::new((unix_now() * 1000.0) as u64)),
            synced: Arc::new(AtomicBool::new(false)),
        }
    }

    fn app_state(&self, config: &ServeConfig) -> AppState {
        let mut state = AppState::new(self.store.clone(), self.telemetry.clone());
        state.external_metrics = config.external_metrics;
        state.heartbeat = self.heartbeat.clone();
        state.targets_synced = self.synced.clone();
        state
    }

    fn spawn_scraper(&self, config: &ServeConfig) -> Result<JoinHandle<()>, ServerError> {
        let scraper = Scraper::new(
            self.store.clone(),
            config.scrape.clone(),
            self.telemetry.clone(),
            self.heartbeat.clone(),
        )?;
        Ok(tokio::spawn(
            scraper
                .run(std::future::pending())
                .instrument(info_span!("scraper")),
        ))
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    info!("shutting down");
}

/// Waits for a signal (clean exit) or for any critical task to end (error).
async fn supervise(tasks: Vec<(&'static str, JoinHandle<()>)>) -> Result<(), ServerError> {
    let (names, handles): (Vec<_>, Vec<_>) = tasks.into_iter().unzip();
    tokio::select! {
        _ = shutdown_signal() => Ok(()),
        (result, index, _) = futures::future::select_all(handles) => {
            let name = names[index];
            if let Err(e) = result {
                error!(task = name, error = %e, "critical task failed");
            }
            Err(ServerError::TaskEnded(name))
        }
    }
}

/// Runs `adapter serve` until a signal or a critical failure.
pub async fn run(config: ServeConfig) -> Result<(), ServerError> {
    let core = Core::new(&config);
    match &config.mode {
        Mode::Standalone { listen, targets } => {
            run_standalone(&config, *listen, targets.clone(), core).await
        }
        Mode::Cluster(cluster) => run_cluster(&config, cluster, core).await,
    }
}

async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })
}

async fn run_standalone(
    config: &ServeConfig,
    listen: SocketAddr,
    static_targets: Vec<StaticTarget>,
    core: Core,
) -> Result<(), ServerError> {
    info!(
        targets = static_targets.len(),
        "standalone mode: static targets, plain HTTP, no authentication"
    );
    targets::load_static(core.store.as_ref(), static_targets);
    core.synced
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let scraper = core.spawn_scraper(config)?;
    let listener = bind(listen).await?;
    info!(%listen, "serving plain HTTP on loopback");
    let router = api::router(core.app_state(config), AuthState::standalone());
    let server = tokio::spawn(
        crate::http::serve_plain(listener, router, std::future::pending())
            .instrument(info_span!("http")),
    );
    supervise(vec![("scrape loop", scraper), ("HTTP server", server)]).await
}

async fn run_cluster(
    config: &ServeConfig,
    cluster: &ClusterConfig,
    core: Core,
) -> Result<(), ServerError> {
    let client = kube::Client::try_default().await?;
    let pod_watches = tokio::spawn(
        targets::watch_pods(
            client.clone(),
            cluster.watch.clone(),
            core.store.clone(),
            core.synced.clone(),
        )
        .instrument(info_span!("pod_watches")),
    );
    let scraper = core.spawn_scraper(config)?;
    let mut state = core.app_state(config);
    let mut critical = Vec::new();
    if cluster.warm_pools {
        let (pools, pool_watch) = crate::warm_pools::watch(client.clone());
        state.pools = pools;
        critical.push((
            "WarmPool watch",
            tokio::spawn(pool_watch.instrument(info_span!("warmpool_watch"))),
        ));
    }
    let tls_state = TlsState::new(&cluster.tls)?;
    let (auth_state, auth_config_task) =
        AuthState::delegated(client, cluster.auth.clone(), &tls_state).await?;
    let app = api::router(state, auth_state);
    let listener = bind(cluster.listen).await?;
    info!(listen = %cluster.listen, fingerprint = %tls_state.serving_fingerprint(), "serving TLS");
    let server = tokio::spawn(
        crate::tls::serve(listener, tls_state, app, std::future::pending())
            .instrument(info_span!("https")),
    );
    critical.extend([
        ("pod watches", pod_watches),
        ("scrape loop", scraper),
        ("HTTPS server", server),
        ("authentication config watch", auth_config_task),
    ]);
    supervise(critical).await
}
