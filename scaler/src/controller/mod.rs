//! `scaler run`: the warm-pool controller — the Kubernetes side of the warm pool.
//!
//! Owns: the `WarmPool` custom resource ([`crd`]); the process around the reconcile loop —
//! client, leader election on a `Lease` (only the leader acts; a standby waits, ready to take
//! over), the kube-runtime `Controller` over WarmPools, the placeholder reflector, the
//! metrics/health server, and graceful shutdown (SIGTERM or Ctrl-C: the controller finishes
//! the syncs in flight, wake calls are abandoned to the next leader, the Lease is released so
//! a standby takes over at once).
//! Does not own: the decision, which is the pure [`crate::decision::decide`] — the same
//! function the simulator's warm-pool policy runs — called from [`reconcile`].
//!
//! Module map: [`settings`] (spec → the core's settings), [`target`] (the workload and its
//! `/scale`), [`watches`] (a pod reflector per target), [`fleet`] and [`pods`] (tiers and
//! time-to-ready from pod lifecycle; labels, annotations, placeholders), [`demand`] (the
//! adapter's custom metrics API), [`engine`] (vLLM sleep mode), [`reconcile`] (one sync),
//! [`telemetry`] (our own metrics and probes).

pub mod crd;
pub mod demand;
pub mod engine;
pub mod fleet;
pub mod pods;
pub mod reconcile;
pub mod settings;
pub mod target;
pub mod telemetry;
pub mod watches;

use crd::WarmPool;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Client;
use reconcile::{Context, DisplayChain};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use telemetry::Telemetry;
use tokio::sync::watch;

/// Name the controller reports in Events and uses as its field manager.
pub const CONTROLLER_NAME: &str = "inferscale-warm-pool";
/// Concurrent syncs: each is a handful of API calls; more would only queue at the apiserver.
const CONCURRENT_SYNCS: u16 = 8;
/// A burst of pool changes is folded into one sync.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Arguments of `scaler run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Watch WarmPools (and their pods) in this namespace only; default: every namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader through a Lease, so several replicas can run and one acts.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "inferscale-warm-pool")]
    pub lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else inferscale-system).
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// Identity written in the Lease and in Events (default: $POD_NAME, else the hostname).
    #[arg(long)]
    pub identity: Option<String>,
    /// How long a Lease holds without renewal before another replica may take it.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// How long before expiry the holder renews.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub lease_renew_margin: Duration,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("connecting to the cluster")]
    Client(#[source] kube::Error),
    /// The metrics address could not be bound.
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Leader election failed.
    #[error("leader election on Lease {lease}")]
    Lease {
        lease: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    /// Another replica took the Lease while this one led: exit, so no two replicas act.
    #[error("lost the leader Lease {0}; exiting so a fresh process can stand by")]
    LostLease(String),
    /// Lease durations that cannot work.
    #[error(
        "--lease-renew-margin ({margin:?}) must be shorter than --lease-duration ({duration:?})"
    )]
    LeaseTiming {
        margin: Duration,
        duration: Duration,
    },
}

fn identity(args: &RunArgs) -> String {
    args.identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| format!("scaler-{}", std::process::id()))
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs the controller until a signal (Ok) or a lost Lease (Err).
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    if args.lease_renew_margin >= args.lease_duration {
        return Err(RunError::LeaseTiming {
            margin: args.lease_renew_margin,
            duration: args.lease_duration,
        });
    }
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let telemetry = Arc::new(Telemetry::new());
    let identity = identity(&args);

    // Probes and metrics first: a standby must answer its probes while it waits.
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: args.metrics_addr,
            source,
        })?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = {
        let mut stop = stop_rx.clone();
        let app = telemetry::router(Arc::clone(&telemetry));
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!(error = %e, "metrics server failed");
                }
            },
            tracing::info_span!("metrics_server"),
        ))
    };
    tracing::info!(%identity, addr = %args.metrics_addr, "scaler run starting");

    let signal = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown signal received");
            let _ = stop_tx.send(true);
        })
    };

    let result = if args.leader_elect {
        lead_then_run(&client, &args, &identity, &telemetry, stop_rx.clone()).await
    } else {
        telemetry.set_leader(true);
        run_controller(
            client.clone(),
            &args,
            &identity,
            &telemetry,
            stop_rx.clone(),
            None,
        )
        .await
    };
    let _ = stop_tx.send(true);
    signal.abort();
    let _ = server.await;
    tracing::info!("scaler run stopped");
    result
}

/// Waits for the Lease, runs the controller while holding it, releases it on shutdown.
async fn lead_then_run(
    client: &Client,
    args: &RunArgs,
    identity: &str,
    telemetry: &Arc<Telemetry>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "inferscale-system".to_owned());
    let lease = format!("{namespace}/{}", args.lease_name);
    let lease_error = |source| RunError::Lease {
        lease: lease.clone(),
        source,
    };
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&namespace)
        .with_identity(identity)
        .with_field_manager(CONTROLLER_NAME)
        .with_duration(args.lease_duration.as_secs().max(1))
        .with_grace(args.lease_renew_margin.as_secs().max(1))
        .build()
        .await
        .map_err(lease_error)?;
    let (mut leading, lease_task) = manager.watch().await;
    // A standby is healthy and ready to take over: that is what its readiness says.
    telemetry.set_ready(true);
    tracing::info!(%lease, "standing by for the leader Lease");
    let acquired = loop {
        if *leading.borrow_and_update() {
            break true;
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { break false },
            _ = stop.wait_for(|s| *s) => break false,
        }
    };
    let result = if acquired {
        tracing::info!(%lease, "leading");
        telemetry.set_leader(true);
        run_controller(
            client.clone(),
            args,
            identity,
            telemetry,
            stop.clone(),
            Some(leading.clone()),
        )
        .await
    } else {
        Ok(())
    };
    telemetry.set_leader(false);
    // Dropping the receiver makes the manager release the Lease and finish.
    drop(leading);
    match lease_task.await {
        Ok(Ok(_)) => tracing::info!(%lease, "Lease released"),
        Ok(Err(e)) => tracing::warn!(error = %DisplayChain(&e), "releasing the Lease failed"),
        Err(e) => tracing::warn!(error = %e, "the Lease task failed"),
    }
    result
}

/// The controller proper, until `stop` or (when leading) the Lease is lost.
async fn run_controller(
    client: Client,
    args: &RunArgs,
    identity: &str,
    telemetry: &Arc<Telemetry>,
    stop: watch::Receiver<bool>,
    leading: Option<watch::Receiver<bool>>,
) -> Result<(), RunError> {
    let pools: Api<WarmPool> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let placeholder_api: Api<Pod> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (placeholders, writer) = reflector::store();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: Some(identity.to_owned()),
        },
    );
    let ctx = Arc::new(Context::new(
        client,
        recorder,
        Arc::clone(telemetry),
        placeholders.clone(),
    ));
    // Placeholders: a store for the syncs, and their events for preemptions (a placeholder
    // created and preempted between two syncs is still seen).
    let placeholder_watch = {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(tracing::Instrument::instrument(
            watcher(
                placeholder_api,
                watcher::Config::default().labels(pods::PLACEHOLDER_LABEL),
            )
            .default_backoff()
            .modify(|pod| pod.metadata.managed_fields = None)
            .reflect(writer)
            .for_each(move |event| {
                match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::Delete(pod)) => {
                        ctx.placeholder_event(&pod)
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "placeholder watch failed; retrying"),
                }
                futures::future::ready(())
            }),
            tracing::info_span!("placeholder_watch"),
        ))
    };

    // Lost Lease: stop acting at once.
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trigger = {
        let mut stop = stop.clone();
        let lost = Arc::clone(&lost);
        async move {
            match leading {
                Some(mut leading) => {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => {}
                        _ = leading.wait_for(|l| !*l) => {
                            lost.store(true, std::sync::atomic::Ordering::Release);
                        }
                    }
                }
                None => {
                    let _ = stop.wait_for(|s| *s).await;
                }
            }
        }
    };
    let ready = {
        let placeholders = placeholders.clone();
        let telemetry = Arc::clone(telemetry);
        tokio::spawn(async move {
            if placeholders.wait_until_ready().await.is_ok() {
                telemetry.set_ready(true);
            }
        })
    };
    let controller = Controller::new(pools, watcher::Config::default())
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(CONCURRENT_SYNCS)
                .debounce(DEBOUNCE),
        )
        .graceful_shutdown_on(trigger)
        .run(
            reconcile::reconcile,
            reconcile::error_policy,
            Arc::clone(&ctx),
        )
        .for_each(|result| async move {
            match result {
                Ok((pool, _)) => tracing::debug!(pool = %pool.name, "synced"),
                Err(e) => tracing::debug!(error = %DisplayChain(&e), "sync failed"),
            }
        });
    controller.await;
    ready.abort();
    ctx.stop_tasks();
    placeholder_watch.abort();
    if lost.load(std::sync::atomic::Ordering::Acquire) {
        let lease = args.lease_name.clone();
        return Err(RunError::LostLease(lease));
    }
    Ok(())
}
