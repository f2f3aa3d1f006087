//! The inferscale adapter: serves per-replica LLM inference signals to Kubernetes through
//! `custom.metrics.k8s.io` and `external.metrics.k8s.io`, and `adapter inspect`.
//!
//! Shape: the pod watches (`targets`) write what exists into the [`store`], the [`scrape`] loop
//! writes what it fetched, and the [`api`] serves from the store's read view. All signal
//! arithmetic lives in the pure `inferscale-metrics` crate.

pub mod api;
pub mod auth;
pub mod catalogue;
pub mod config;
pub mod error_chain;
pub mod http;
pub mod inspect;
pub mod quantity;
pub mod scrape;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod targets;
pub mod telemetry;
pub mod tls;
