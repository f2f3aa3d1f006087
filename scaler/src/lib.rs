//! inferscale-scaler: the what-if simulator and the warm pool's decision core.
//!
//! Everything here is plain Rust with no Kubernetes or async types: the pure warm-pool
//! decision ([`decision`]) that the simulator and the live controller both call; a
//! discrete-event model of a vLLM fleet ([`replica`], [`replay`]) calibrated in
//! [`calibration`], fed by request [`trace`]s, observed through the same signal code the
//! adapter serves ([`observe`], built on `inferscale-metrics`), scaled by [`policy`] state
//! machines, and summarised by [`report`] and [`svg`]. [`bound`] is the LP lower bound and
//! [`sweep`] the decision-quality report; [`cli`] turns `scaler simulate` arguments into a
//! validated run.

pub mod bound;
pub mod calibration;
pub mod cli;
pub mod decision;
pub mod observe;
pub mod policy;
pub mod replay;
pub mod replica;
pub mod report;
pub mod svg;
pub mod sweep;
pub mod trace;
