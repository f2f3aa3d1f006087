//! The inferscale adapter: serves per-replica LLM inference signals to Kubernetes through
//! `custom.metrics.k8s.io` and `external.metrics.k8s.io`.
//!
//! This crate holds the glue around the pure `inferscale-metrics` engine. Today it has the
//! `inspect` tool; the scrape loop, store and API server build on the same engine.

pub mod inspect;
