#![warn(missing_docs)]
//! The inferscale metrics engine: from Prometheus `/metrics` text to per-replica and
//! fleet-wide autoscaling signals.
//!
//! This crate is pure: no Kubernetes, HTTP or async types. The adapter (serving) and the
//! scaler (simulation, warm-pool decisions) both build on it, so a signal means the same
//! thing everywhere.
//!
//! Pipeline: [`parser`] reads the exposition text of a body → [`snapshot`] reads it through the
//! [`profile`] tables into an [`snapshot::EngineSnapshot`] → [`signals`] compares successive
//! snapshots of one pod ([`saturation`] derives headroom and saturation from them) → [`fleet`]
//! combines replicas. [`gpu`] does the same for
//! dcgm-exporter and joins GPUs to pods. [`histogram`] holds the percentile arithmetic.
//!
//! ```no_run
//! use inferscale_metrics::{parser::Format, profile::RouteIndex, snapshot::EngineSnapshot};
//! use inferscale_metrics::signals::{replica_signals, SignalOptions};
//! let routes = RouteIndex::engines();
//! let before = EngineSnapshot::from_exposition("...", Format::Prometheus, 0.0, &routes);
//! let after = EngineSnapshot::from_exposition("...", Format::Prometheus, 15.0, &routes);
//! let signals = replica_signals(&[&before, &after], SignalOptions::default()).unwrap();
//! println!("{:?}", signals.combined.time_to_first_token.p95);
//! ```

pub mod fleet;
pub mod gpu;
pub mod histogram;
pub mod parser;
pub mod profile;
pub mod saturation;
pub mod signals;
pub mod snapshot;
