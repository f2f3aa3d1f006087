//! inferscale-scaler: the warm-pool controller (`scaler run`), the warm pool's decision core,
//! and the what-if simulator that is the controller's test bench.
//!
//! [`controller`] is the only Kubernetes and async code: the kube-runtime controller around
//! the pure warm-pool decision ([`decision`]), which the simulator calls too. Everything else
//! is plain Rust with no Kubernetes or async types: a discrete-event model of a vLLM fleet
//! ([`replica`], [`replay`]) calibrated in [`calibration`], fed by request [`trace`]s,
//! observed through the same signal code the adapter serves ([`observe`], built on
//! `inferscale-metrics`), scaled by [`policy`] state machines, and summarised by [`report`]
//! and [`svg`]. [`bound`] is the LP lower bound and [`sweep`] the decision-quality report;
//! [`cli`] turns `scaler simulate` arguments into a validated run.

pub mod bound;
pub mod calibration;
pub mod cli;
pub mod controller;
pub mod decision;
pub mod observe;
pub mod policy;
pub mod replay;
pub mod replica;
pub mod report;
pub mod svg;
pub mod sweep;
pub mod trace;
