//! `adapter serve`: wires the pod watches, the scrape loop, the store and the API together
//! and runs them until a signal or a critical failure.
//!
//! Owns: start-up order, lifetimes and the shutdown sequence (see [`run_until_stopped`]).
//! Every task watches one cancellation token ([`Lifecycle`]). The pod watches are restarted
//! with backoff when they end ([`run_restarting`]; liveness fails if they stay down); every
//! other long-running task is critical: if the scrape loop, the server or the
//! authentication config watch ends, the process ends with an error instead of going on as
//! a zombie that still answers probes.

use crate::api::cache::{self, ResponseCache};
use crate::api::health::Probes;
use crate::api::{self, AppState};
use crate::auth::AuthState;
use crate::config::{ClusterConfig, Mode, ServeConfig};
use crate::http::{ConnectionLimits, ServeOptions, DRAIN_TIMEOUT};
use crate::lifecycle::{run_restarting, termination_signal, Lifecycle, RestartPolicy};
use crate::scrape::{unix_now, Scraper};
use crate::store::Store;
use crate::targets::{self, StaticTarget};
use crate::telemetry::Telemetry;
use crate::tls::TlsState;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{error, info, info_span, warn, Instrument};

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
    probes: Probes,
    lifecycle: Lifecycle,
}

impl Core {
    fn new(config: &ServeConfig) -> Core {
        let lifecycle = Lifecycle::new();
        let mut probes = Probes::new(unix_now(), config.first_round_grace.as_secs_f64());
        probes.draining = lifecycle.draining.clone();
        Core {
            store: Arc::new(Store::new(
                config.window.as_secs_f64(),
                config.stale_after.as_secs_f64(),
            )),
            telemetry: Arc::new(Telemetry::new()),
            probes,
            lifecycle,
        }
    }

    fn app_state(&self, config: &ServeConfig) -> AppState {
        let mut state = AppState::new(self.store.clone(), self.telemetry.clone());
        state.external_metrics = config.external_metrics;
        state.probes = self.probes.clone();
        state.cache = Arc::new(ResponseCache::with_ages(
            cache::fresh_for(config.scrape.interval),
            cache::SERVE_STALE_FOR,
        ));
        state
    }

    fn serve_options(&self, config: &ServeConfig) -> ServeOptions {
        ServeOptions {
            limits: connection_limits_within_fd_limit(config),
            telemetry: self.telemetry.clone(),
        }
    }

    fn spawn_scraper(&self, config: &ServeConfig) -> Result<JoinHandle<()>, ServerError> {
        let scraper = Scraper::new(
            self.store.clone(),
            config.scrape.clone(),
            self.telemetry.clone(),
            self.probes.heartbeat.clone(),
        )?;
        Ok(tokio::spawn(
            scraper
                .run(self.lifecycle.root.clone().cancelled_owned())
                .instrument(info_span!("scraper")),
        ))
    }
}

/// Descriptors kept free of client connections: the scrape loop's connections (one in
/// flight per permit, plus one pooled connection per target), the Kubernetes client's, the
/// watches', files and standard streams.
const RESERVED_FDS: u64 = 256;

/// The configured connection limits, with `max_connections` lowered so that client
/// connections can never take the descriptors scrapes and the Kubernetes client need. The
/// soft `RLIMIT_NOFILE` is first raised to the hard one (as the Go runtime does for every Go
/// server): container runtimes set a soft limit as low as 1024.
fn connection_limits_within_fd_limit(config: &ServeConfig) -> ConnectionLimits {
    let mut limits = config.connections;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(nofile) => {
            let reserve = RESERVED_FDS + config.scrape.concurrency as u64;
            let fit = nofile.saturating_sub(reserve).max(16);
            if limits.max_connections as u64 > fit {
                warn!(
                    nofile,
                    configured = limits.max_connections,
                    max_connections = fit,
                    "the file-descriptor limit is low: fewer client connections allowed"
                );
                limits.max_connections = fit as usize;
            }
            info!(
                nofile,
                max_connections = limits.max_connections,
                "connection limit"
            );
        }
        Err(error) => warn!(%error, "cannot read or raise the file-descriptor limit"),
    }
    limits
}

/// A task whose end ends the process.
type Critical = (&'static str, JoinHandle<()>);

/// Runs until a termination signal (then the shutdown sequence, and `Ok`) or until a critical
/// task ends (then every task is stopped and the error returned).
///
/// The shutdown sequence: readiness fails at once; requests are still served for
/// `shutdown_delay` (the Service's endpoints drop this replica meanwhile; a second signal
/// cuts the delay short); then the listeners stop accepting and in-flight requests drain
/// (bounded by [`DRAIN_TIMEOUT`]); then every other task is cancelled through the one token
/// and awaited (bounded).
async fn run_until_stopped(
    lifecycle: &Lifecycle,
    shutdown_delay: Duration,
    servers: Vec<Critical>,
    others: Vec<Critical>,
) -> Result<(), ServerError> {
    let mut tasks: Vec<Critical> = servers.into_iter().chain(others).collect();
    let server_count = tasks.len() - tasks.iter().filter(|t| !is_server(t.0)).count();
    let ended = tokio::select! {
        () = termination_signal() => None,
        (result, index, _) = futures::future::select_all(tasks.iter_mut().map(|(_, h)| h)) => {
            Some((index, result))
        }
    };
    if let Some((index, result)) = ended {
        let name = tasks[index].0;
        match result {
            Err(e) => error!(task = name, error = %e, "critical task failed"),
            Ok(()) => error!(task = name, "critical task ended"),
        }
        lifecycle.root.cancel();
        await_bounded(tasks, STOP_TIMEOUT).await;
        return Err(ServerError::TaskEnded(name));
    }
    info!(
        delay = ?shutdown_delay,
        "termination signal: readiness fails now; still serving until the delay ends"
    );
    lifecycle.draining.store(true, Ordering::Relaxed);
    tokio::select! {
        () = tokio::time::sleep(shutdown_delay) => {}
        () = termination_signal() => info!("second termination signal: skipping the delay"),
    }
    info!("closing the listener; draining requests in flight");
    lifecycle.serving.cancel();
    let others = tasks.split_off(server_count);
    await_bounded(tasks, DRAIN_TIMEOUT + STOP_TIMEOUT).await;
    lifecycle.root.cancel();
    await_bounded(others, STOP_TIMEOUT).await;
    info!("stopped");
    Ok(())
}

/// How long stopped tasks get to end after their token was cancelled.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

fn is_server(name: &str) -> bool {
    name.ends_with("server")
}

/// Waits for `tasks` to end, up to `bound`; aborts whatever is left.
async fn await_bounded(tasks: Vec<Critical>, bound: Duration) {
    let (names, handles): (Vec<_>, Vec<_>) = tasks.into_iter().unzip();
    let aborts: Vec<_> = handles.iter().map(JoinHandle::abort_handle).collect();
    if tokio::time::timeout(bound, futures::future::join_all(handles))
        .await
        .is_err()
    {
        warn!(tasks = ?names, "tasks did not stop in time; aborting them");
        for abort in aborts {
            abort.abort();
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

fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
    crate::http::bind(listen).map_err(|source| ServerError::Bind {
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
    core.probes.mark_synced(unix_now());
    let scraper = core.spawn_scraper(config)?;
    let listener = bind(listen)?;
    info!(%listen, "serving plain HTTP on loopback");
    let router = api::router(core.app_state(config), AuthState::standalone());
    let server = tokio::spawn(
        crate::http::serve_plain(
            listener,
            router,
            core.serve_options(config),
            core.lifecycle.serving.clone().cancelled_owned(),
        )
        .instrument(info_span!("http")),
    );
    let mut servers = vec![("HTTP server", server)];
    servers.extend(spawn_keda_scaler(&core, config)?);
    run_until_stopped(
        &core.lifecycle,
        config.shutdown_delay,
        servers,
        vec![("scrape loop", scraper)],
    )
    .await
}

async fn run_cluster(
    config: &ServeConfig,
    cluster: &ClusterConfig,
    core: Core,
) -> Result<(), ServerError> {
    let client = kube::Client::try_default().await?;
    let pod_watches = {
        let (client, watch, store) = (client.clone(), cluster.watch.clone(), core.store.clone());
        let telemetry = core.telemetry.clone();
        let probes = core.probes.clone();
        let on_synced: Arc<dyn Fn() + Send + Sync> =
            Arc::new(move || probes.mark_synced(unix_now()));
        tokio::spawn(run_restarting(
            "pod watches",
            core.lifecycle.root.clone(),
            RestartPolicy::default(),
            core.probes.discovery.clone(),
            core.telemetry.clone(),
            info_span!("pod_watches"),
            move |token| {
                let run = targets::watch_pods(
                    client.clone(),
                    watch.clone(),
                    store.clone(),
                    on_synced.clone(),
                    telemetry.clone(),
                    token,
                );
                async move { run.await.map_err(Into::into) }
            },
        ))
    };
    let scraper = core.spawn_scraper(config)?;
    let mut state = core.app_state(config);
    let mut others = Vec::new();
    if cluster.warm_pools {
        let (pools, pool_watch) = crate::warm_pools::watch(client.clone());
        state.pools = pools;
        let stop = core.lifecycle.root.clone().cancelled_owned();
        let run = async move {
            tokio::select! {
                () = pool_watch => {}
                () = stop => {}
            }
        };
        others.push((
            "WarmPool watch",
            tokio::spawn(run.instrument(info_span!("warmpool_watch"))),
        ));
    }
    let tls_state = TlsState::new(&cluster.tls)?;
    let (auth_state, auth_config_task) = AuthState::delegated(
        client,
        cluster.auth.clone(),
        &tls_state,
        core.lifecycle.root.clone(),
    )
    .await?;
    let app = api::router(state, auth_state);
    let listener = bind(cluster.listen)?;
    let listen = listener.local_addr().unwrap_or(cluster.listen);
    info!(%listen, fingerprint = %tls_state.serving_fingerprint(), "serving TLS");
    let server = tokio::spawn(
        crate::tls::serve(
            listener,
            tls_state,
            app,
            core.serve_options(config),
            core.lifecycle.serving.clone().cancelled_owned(),
        )
        .instrument(info_span!("https")),
    );
    others.extend([
        ("pod watches", pod_watches),
        ("scrape loop", scraper),
        ("authentication config watch", auth_config_task),
    ]);
    let mut servers = vec![("HTTPS server", server)];
    servers.extend(spawn_keda_scaler(&core, config)?);
    run_until_stopped(&core.lifecycle, config.shutdown_delay, servers, others).await
}

/// Serves KEDA's external scaler, if configured, with its own TLS state over the same serving certificate
/// files: client certificates are not requested, or required from the `--keda-client-ca-file`
/// CA (the cluster's client CAs, which the API's port trusts, play no part here). It stops
/// with the HTTPS server (the `serving` token): open streams end with OK, and KEDA reconnects
/// to another replica.
fn spawn_keda_scaler(core: &Core, config: &ServeConfig) -> Result<Option<Critical>, ServerError> {
    let Some(keda) = &config.keda_scaler else {
        return Ok(None);
    };
    let tls = TlsState::new(&keda.tls)?;
    if let Some(path) = &keda.client_ca_file {
        tls.require_client_certificates(crate::tls::read_ca_file(path)?)?;
    }
    let listener = bind(keda.listen)?;
    let listen = listener.local_addr().unwrap_or(keda.listen);
    info!(
        %listen,
        fingerprint = %tls.serving_fingerprint(),
        client_certificates = if keda.client_ca_file.is_some() { "required" } else { "not requested" },
        "serving KEDA's external scaler (gRPC, TLS)"
    );
    let shutdown = core.lifecycle.serving.clone();
    let service = crate::keda::ScalerService::new(core.store.clone(), shutdown.clone())
        .with_telemetry(core.telemetry.clone());
    let task = tokio::spawn(
        crate::keda::serve(listener, tls, service, core.serve_options(config), shutdown)
            .instrument(info_span!("keda_scaler")),
    );
    Ok(Some(("KEDA external-scaler server", task)))
}
