//! `scaler run`: the warm-pool controller — the Kubernetes side of the warm pool.
//!
//! Owns: the `WarmPool` custom resource ([`crd`]).
//! Does not own: the decision itself, which is the pure warm-pool core the simulator runs.

pub mod crd;
