//! A fixed-size fleet: the baseline every autoscaler must beat. A win that a fixed fleet
//! matches at the same GPU-hours is not a win.
//!
//! Owns: holding one replica count for the whole run. Does not own: anything else.

use super::{Decision, Policy};
use crate::observe::{Observation, SignalPath};

/// How often the fixed fleet restates its size (it never changes; any period works).
const FIXED_PERIOD_SECS: f64 = 15.0;

/// Always `replicas` serving replicas.
#[derive(Debug, Clone)]
pub struct Fixed {
    replicas: u32,
}

impl Fixed {
    pub fn new(replicas: u32) -> Fixed {
        Fixed {
            replicas: replicas.max(1),
        }
    }
}

impl Policy for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }

    fn signal_path(&self) -> SignalPath {
        SignalPath::Direct
    }

    fn decision_period(&self) -> f64 {
        FIXED_PERIOD_SECS
    }

    fn decide(&mut self, _: &Observation) -> Decision {
        Decision::serving(self.replicas)
    }
}
