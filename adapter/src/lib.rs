//! The inferscale adapter: serves per-replica LLM inference signals to Kubernetes through
//! `custom.metrics.k8s.io` and `external.metrics.k8s.io`, and `adapter inspect`.
//!
//! A tour, following one sample from a pod's `/metrics` to an HPA's answer:
//!
//! 1. **What exists.** [`targets`] watches Pods (serving pods and dcgm-exporters by label),
//!    ReplicaSets and StatefulSets with kube-rs reflectors — or takes a static list in
//!    standalone mode — and writes [`store::Target`]s into the [`store`] through its
//!    [`store::TargetRegistry`] side.
//! 2. **Scrape.** [`scrape`] keeps one task per target (stable phase, jitter, bounded
//!    concurrency, time and body size), parses each body with `inferscale-metrics` into an
//!    engine snapshot or GPU readings, and records the outcome through
//!    [`store::ScrapeSink`].
//! 3. **Store.** [`store`] keeps each pod's recent scrapes and the signals computed from
//!    them once per scrape; a pod that is not Ready, terminating, failing or stale is
//!    missing from answers, never 0.
//! 4. **Serve.** [`api`] reads the store only through [`store::SignalView`]: the
//!    [`catalogue`] names every metric, which per-replica value it reads and how replicas
//!    combine (the arithmetic is `inferscale_metrics::fleet`'s); values are Kubernetes
//!    [`quantity`] strings; label selectors are [`selector`]s; every error is a Kubernetes
//!    `Status` ([`status`]). Recent answers are reused by the response cache. [`warm_pools`]
//!    watches WarmPools and serves each one's recommendation and capacity by tier as Object
//!    metrics on its target (`inferscale_recommended_replicas`, ...).
//! 5. **Who may ask.** [`auth`] authenticates (front proxy, client certificates,
//!    TokenReview) and authorizes (SubjectAccessReview) every request but the probes, as an
//!    aggregated API server does; [`tls`] terminates TLS with reloadable certificates; [`http`]
//!    binds (dual-stack), accepts connections within bounds (how many, how long silent or
//!    idle, how large a request head) and drains them on shutdown.
//! 6. **Run.** [`config`] turns flags into resolved settings in one pass, reporting every
//!    problem at once; [`server`] wires the parts, runs the shutdown sequence on SIGTERM
//!    (readiness fails, requests keep being served for the shutdown delay, the listener
//!    closes and in-flight requests drain, then every task stops) and ends the process if a
//!    critical task ends; [`lifecycle`] holds the one cancellation token every task watches
//!    and restarts background tasks (the pod watches) with backoff. [`telemetry`] is the
//!    adapter's own `/metrics`; [`error_chain`] prints an error with its causes in logs.
//!
//! [`inspect`] runs the same engine over saved or live scrapes of one pod and prints what the
//! adapter would compute. All signal arithmetic lives in the pure `inferscale-metrics` crate.
//!
//! ```no_run
//! use inferscale_adapter::api::{router, AppState};
//! use inferscale_adapter::auth::AuthState;
//! use inferscale_adapter::store::Store;
//! use inferscale_adapter::telemetry::Telemetry;
//! use std::sync::Arc;
//!
//! # async fn serve() -> std::io::Result<()> {
//! // A store with a 60 s window whose scrapes go stale after 18 s, served without
//! // authentication on loopback (what `adapter serve --standalone` does).
//! let store = Arc::new(Store::new(60.0, 18.0));
//! let app = router(AppState::new(store, Arc::new(Telemetry::new())), AuthState::standalone());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let options = inferscale_adapter::http::ServeOptions::default();
//! inferscale_adapter::http::serve_plain(listener, app, options, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod auth;
pub mod catalogue;
pub mod config;
pub mod error_chain;
pub mod http;
pub mod inspect;
pub mod keda;
pub mod lifecycle;
pub mod quantity;
pub mod scrape;
pub mod scrape_http;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod targets;
pub mod telemetry;
pub mod tls;
pub mod warm_pools;
