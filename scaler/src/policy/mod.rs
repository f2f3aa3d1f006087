//! Scaling policies behind one trait, each a pure state machine fed by [`Observation`]s.
//!
//! Owns: the [`Policy`] trait, the [`Decision`] it returns, and the policy catalogue
//! ([`PolicyKind`]) the CLI names, with their knobs as data in [`spec`]. Each policy lives in
//! its own module: [`fixed`] (a fixed-size fleet), [`hpa`] (Kubernetes HPA on queue depth, a
//! CPU-like utilisation, TTFT p90 or prompt-token rate), [`keda`], [`kpa`] (Knative's KPA and
//! AIBrix's), [`warm_pool`] (inferscale's own), [`hpa_warm_pool`] (the warm pool as users run
//! it: beside a reactive metric in one HPA) and [`oracle`] (clairvoyant plan).
//! Does not own: acting on decisions (pods, routing, costs — see [`crate::replay`]).

pub mod fixed;
pub mod hpa;
pub mod hpa_warm_pool;
pub mod keda;
pub mod kpa;
pub mod oracle;
pub mod spec;
pub mod warm_pool;

use crate::observe::{Observation, SignalPath};
use serde::Serialize;

/// Why a policy could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// The name is not a known policy.
    #[error(
        "unknown policy {0:?} (known: fixed, hpa-cpu, hpa-queue, hpa-ttft, hpa-tokens, keda, kpa, aibrix, hpa-adapter, warm-pool, hpa+warm-pool, oracle)"
    )]
    Unknown(String),
    /// A parameter is out of range.
    #[error("policy {policy}: {reason}")]
    InvalidParameter {
        policy: &'static str,
        reason: &'static str,
    },
}

/// What a policy asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Serving replicas (the deployment's `spec.replicas`).
    pub serving: u32,
    /// Replicas kept asleep (vLLM sleep mode) to wake in seconds; 0 for every policy but
    /// the warm pool.
    pub sleeping: u32,
    /// Placeholder pods holding GPU nodes; 0 for every policy but the warm pool.
    pub placeholders: u32,
    /// Knative's activator is in the request path: requests wait in one central queue and
    /// each pod gets at most this many in flight. `None`: the run's routing.
    pub activator: Option<u32>,
}

impl Decision {
    pub fn serving(serving: u32) -> Decision {
        Decision {
            serving,
            sleeping: 0,
            placeholders: 0,
            activator: None,
        }
    }
}

/// A scaling policy: a state machine that turns observations into decisions.
pub trait Policy {
    /// Short name for tables and files.
    fn name(&self) -> &str;
    /// How the policy's signals reach it.
    fn signal_path(&self) -> SignalPath;
    /// Seconds between decisions (the controller's sync period).
    fn decision_period(&self) -> f64;
    /// The decision for this observation. Must be deterministic in its inputs.
    fn decide(&mut self, observation: &Observation) -> Decision;
}

/// The policies `scaler simulate` knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    Fixed,
    HpaCpu,
    HpaQueue,
    HpaTtft,
    HpaTokens,
    Keda,
    Kpa,
    Aibrix,
    HpaAdapter,
    WarmPool,
    #[serde(rename = "hpa+warm-pool")]
    HpaWarmPool,
    Oracle,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 12] = [
        PolicyKind::Fixed,
        PolicyKind::HpaCpu,
        PolicyKind::HpaQueue,
        PolicyKind::HpaTtft,
        PolicyKind::HpaTokens,
        PolicyKind::Keda,
        PolicyKind::Kpa,
        PolicyKind::Aibrix,
        PolicyKind::HpaAdapter,
        PolicyKind::WarmPool,
        PolicyKind::HpaWarmPool,
        PolicyKind::Oracle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Fixed => "fixed",
            PolicyKind::HpaCpu => "hpa-cpu",
            PolicyKind::HpaQueue => "hpa-queue",
            PolicyKind::HpaTtft => "hpa-ttft",
            PolicyKind::HpaTokens => "hpa-tokens",
            PolicyKind::Keda => "keda",
            PolicyKind::Kpa => "kpa",
            PolicyKind::Aibrix => "aibrix",
            PolicyKind::HpaAdapter => "hpa-adapter",
            PolicyKind::WarmPool => "warm-pool",
            PolicyKind::HpaWarmPool => "hpa+warm-pool",
            PolicyKind::Oracle => "oracle",
        }
    }

    pub fn parse(name: &str) -> Result<PolicyKind, PolicyError> {
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name.trim())
            .ok_or_else(|| PolicyError::Unknown(name.to_owned()))
    }
}
