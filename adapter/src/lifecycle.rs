//! The process lifetime: one cancellation token every task watches, the shutdown sequence's
//! signals, and supervision of background tasks that restart instead of freezing.
//!
//! Owns: [`Lifecycle`] (the root [`CancellationToken`], the child token that stops the HTTP
//! listener first, and the `draining` flag readiness reads), [`termination_signal`], and
//! [`run_restarting`], which keeps a background task running — restarted with backoff when it
//! ends or panics, each failure logged with the task's span and counted — and marks it *down*
//! in a [`TaskHealth`] while it is not running steadily, so liveness can fail when a restart
//! in-process does not help.
//! Does not own: what the tasks do, or the order the server stops them in ([`crate::server`]).

use crate::error_chain::ErrorChain;
use crate::scrape::unix_now;
use crate::telemetry::Telemetry;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

/// The tokens and flags of one process run. Cheap to clone (everything is shared).
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// Cancelled when every task must stop (after the HTTP drain, or on a fatal error).
    pub root: CancellationToken,
    /// Cancelled first on shutdown: the listeners stop accepting and drain. A child of
    /// [`Lifecycle::root`], so a fatal error stops serving too.
    pub serving: CancellationToken,
    /// Set when a termination signal arrives: readiness fails at once, so load balancers
    /// (the Service's endpoints) stop sending new connections while in-flight and
    /// still-arriving requests are served for the shutdown delay.
    pub draining: Arc<AtomicBool>,
}

impl Lifecycle {
    pub fn new() -> Lifecycle {
        let root = CancellationToken::new();
        Lifecycle {
            serving: root.child_token(),
            root,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Resolves on SIGTERM (what the kubelet sends) or SIGINT (Ctrl-C).
pub async fn termination_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Whether a supervised task is running steadily. Written by [`run_restarting`], read by
/// liveness.
#[derive(Debug, Default)]
pub struct TaskHealth {
    /// Unix ms since when the task has not been running steadily; 0 while it is.
    down_since_ms: AtomicU64,
}

impl TaskHealth {
    /// Seconds the task has been down at `now` (Unix seconds), or `None` while it runs.
    pub fn down_for(&self, now: f64) -> Option<f64> {
        match self.down_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some((now - since as f64 / 1000.0).max(0.0)),
        }
    }

    fn mark_down(&self, now: f64) {
        // Keep the first moment of a run of failures: a crash loop stays "down since" its
        // first crash, so liveness sees how long discovery has really been dead.
        let _ = self.down_since_ms.compare_exchange(
            0,
            ((now * 1000.0) as u64).max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn mark_up(&self) {
        self.down_since_ms.store(0, Ordering::Relaxed);
    }
}

/// How [`run_restarting`] backs off and when it trusts a restarted task again.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Pause before the first restart; doubled after each failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A run that lasts this long counts as steady: the task is marked up and the backoff
    /// starts again from `initial_backoff`.
    pub steady_after: Duration,
}

impl Default for RestartPolicy {
    /// 1 s doubling to 30 s (a broken watch does not hammer the kube-apiserver); steady
    /// after 10 s (a relist of a large cluster finishes well within a restart's backoff,
    /// and a crash loop never stays up that long).
    fn default() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            steady_after: Duration::from_secs(10),
        }
    }
}

/// Why one run of a supervised task ended, as the task reports it.
pub type TaskResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Runs `task` in its own tokio task until `token` is cancelled, restarting it with backoff
/// whenever it returns (an error, or `Ok` although nobody cancelled it) or panics. Every end
/// is logged inside `span` with its cause and counted as
/// `inferscale_adapter_task_failures_total{task=name}`; `health` says since when the task has
/// not been running steadily.
pub async fn run_restarting<F, Fut>(
    name: &'static str,
    token: CancellationToken,
    policy: RestartPolicy,
    health: Arc<TaskHealth>,
    telemetry: Arc<Telemetry>,
    span: tracing::Span,
    mut task: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = TaskResult> + Send + 'static,
{
    let mut backoff = policy.initial_backoff;
    loop {
        let run_token = token.child_token();
        let mut handle = tokio::spawn(task(run_token.clone()).instrument(span.clone()));
        let steady = tokio::time::sleep(policy.steady_after);
        tokio::pin!(steady);
        let mut steady_reached = false;
        let outcome = loop {
            tokio::select! {
                result = &mut handle => break Some(result),
                () = &mut steady, if !steady_reached => {
                    steady_reached = true;
                    health.mark_up();
                    backoff = policy.initial_backoff;
                }
                () = token.cancelled() => break None,
            }
        };
        let Some(result) = outcome else {
            // Shutting down: let the run stop on its token, then leave.
            run_token.cancel();
            let _ = handle.await;
            return;
        };
        if token.is_cancelled() {
            return;
        }
        let _entered = span.enter();
        match result {
            Ok(Ok(())) => error!(
                task = name,
                "background task ended unexpectedly; restarting"
            ),
            Ok(Err(cause)) => error!(
                task = name,
                error = %ErrorChain(cause.as_ref()),
                "background task failed; restarting"
            ),
            Err(join_error) => error!(
                task = name,
                error = %join_error,
                "background task panicked; restarting"
            ),
        }
        drop(_entered);
        telemetry.task_failure(name);
        health.mark_down(unix_now());
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = token.cancelled() => return,
        }
        info!(task = name, after = ?backoff, "restarting background task");
        backoff = (backoff * 2).min(policy.max_backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            steady_after: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_or_fails_is_restarted_counted_and_marked_down_until_steady() {
        let runs = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(TaskHealth::default());
        let telemetry = Arc::new(Telemetry::new());
        let token = CancellationToken::new();
        let supervisor = tokio::spawn(run_restarting(
            "pod watches",
            token.clone(),
            policy(),
            health.clone(),
            telemetry.clone(),
            tracing::Span::none(),
            {
                let runs = runs.clone();
                move |run_token: CancellationToken| {
                    let n = runs.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match n {
                            0 => panic!("a bug in the watch"),
                            1 => Err("the watch stream ended".into()),
                            _ => {
                                run_token.cancelled().await;
                                Ok(())
                            }
                        }
                    }
                }
            },
        ));
        // Two failures, backoff 100 ms then 200 ms: the third run starts at ~300 ms.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(health.down_for(unix_now()).is_some(), "down until steady");
        let text = telemetry.encode();
        assert!(
            text.contains("inferscale_adapter_task_failures_total{task=\"pod watches\"} 2"),
            "{text}"
        );
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(health.down_for(unix_now()), None, "steady after 5 s");
        token.cancel();
        supervisor.await.expect("the supervisor ends on cancel");
        assert_eq!(runs.load(Ordering::SeqCst), 3, "no restart after cancel");
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_loop_stays_down_since_its_first_crash() {
        let health = Arc::new(TaskHealth::default());
        let token = CancellationToken::new();
        let supervisor = tokio::spawn(run_restarting(
            "crashing",
            token.clone(),
            policy(),
            health.clone(),
            Arc::new(Telemetry::new()),
            tracing::Span::none(),
            |_| async { Err("always".into()) },
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let first = health.down_since_ms.load(Ordering::Relaxed);
        assert_ne!(first, 0);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(health.down_since_ms.load(Ordering::Relaxed), first);
        token.cancel();
        supervisor.await.expect("ends");
    }
}
