//! A provable lower bound on the GPU-hours any policy needs to serve a share of a trace's
//! attainable requests within the TTFT objective: a linear-programming relaxation of work
//! against capacity with the cold-start constraint, solved with Clarabel.
//!
//! Owns: building the relaxation from a trace and a fleet configuration, solving it, and the
//! bound at a list of attainment levels ([`lower_bound`]).
//! Does not own: the simulation (see [`crate::replay`]) or plotting.
//!
//! # Why it is a lower bound
//!
//! Time is cut into slots of [`SLOT_SECS`]. Map any schedule the simulator can produce to the
//! LP: `r_k` = the average number of pods that can serve in slot `k` (Ready, draining,
//! waking or asleep — a sleeping replica holds its GPU, so counting it as capacity only helps
//! the relaxation), `u_k = max(0, r_k − r_{k−1})`, `h_k` = the average number of pods held.
//! Then every constraint holds:
//! * **Work.** A replica processes at most one replica-second of costed work per second: an
//!   engine step lasts at least the dense compute of its tokens plus their attention
//!   ([`crate::calibration::ModelProfile::step_secs`]), so prefill work — prompt tokens ×
//!   `compute_secs_per_token` plus `(p² − h²)/2 × attention_secs_per_token_pair` for a prompt
//!   of `p` tokens of which `h` could at best be cached — is at most capacity. A request meets
//!   the objective only if its prefill ends within `objective` of its arrival, so its work
//!   lies in the slots that window touches. Splitting work across replicas and ignoring decode
//!   and step overheads only lowers the bound.
//! * **Cold start.** Each increase of serving capacity is a pod that was held, not serving,
//!   for at least the cold start's floor (`StartupTime::floor_secs`: every draw is clamped to
//!   it, and a placeholder's node time plus its pod start adds up to a cold start); so the
//!   `L = floor(floor / slot) − 1` slots before an increase hold that much more.
//! * **Bounds.** At least `min_replicas` pods are held at every instant; the initial replicas
//!   are Ready at time 0 for free.
//! * **Attainment.** At least the asked share of attainable requests is served in time; a
//!   request is chosen fractionally and its work is priced at the least work of its group
//!   (requests of a slot sorted by work, in [`SEGMENTS`] bands), which again only lowers it.
//!
//! The LP minimises held GPU-hours over the trace's span. The simulator also bills after the
//! last arrival and while pods drain or start, so any run costs at least this. We report the
//! solver's dual objective (weak duality: a lower bound of the LP optimum up to the solver's
//! tolerance) and check it against every run in the sweep (a property test does the same).

use crate::calibration::ModelProfile;
use crate::replay::{attainable, SimConfig};
use crate::trace::Trace;
use clarabel::algebra::CscMatrix;
use clarabel::solver::{
    DefaultSettingsBuilder, DefaultSolver, IPSolver, NonnegativeConeT, SolverStatus, ZeroConeT,
};
use serde::Serialize;

/// Slot length, seconds: fine enough that a 2 s objective window spans three slots.
pub const SLOT_SECS: f64 = 1.0;
/// Work bands per slot: requests of a slot sorted by work and priced at each band's least.
pub const SEGMENTS: usize = 8;

/// Why the bound could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BoundError {
    /// The solver did not reach a solution.
    #[error("the LP solver stopped with {0}")]
    Solver(String),
    /// The trace has no attainable request.
    #[error("no attainable request in the trace")]
    NothingAttainable,
}

/// The bound at one attainment level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BoundPoint {
    /// Share of attainable requests served within the objective.
    pub attainment: f64,
    /// No policy can reach `attainment` with fewer GPU-hours.
    pub gpu_hours: f64,
}

/// Work (replica-seconds) of a request's prefill at best: uncached tokens' dense compute and
/// their attention.
pub fn prefill_work(profile: &ModelProfile, prompt: u32, cacheable: u32) -> f64 {
    let p = prompt.max(1) as f64;
    let h = cacheable.min(prompt.saturating_sub(1)) as f64;
    (p - h) * profile.compute_secs_per_token
        + (p * p - h * h) / 2.0 * profile.attention_secs_per_token_pair
}

/// One slot's attainable requests in work bands: (count, least work of the band).
type Bands = Vec<(f64, f64)>;

/// The lower bound at each of `levels` (shares of attainable requests).
pub fn lower_bound(
    trace: &Trace,
    config: &SimConfig,
    levels: &[f64],
) -> Result<Vec<BoundPoint>, BoundError> {
    let lp = Relaxation::new(trace, config)?;
    levels
        .iter()
        .map(|&a| {
            Ok(BoundPoint {
                attainment: a,
                gpu_hours: lp.solve(a)?,
            })
        })
        .collect()
}

/// The LP's data.
struct Relaxation {
    slots: usize,
    /// Slots a request's window reaches past its arrival slot.
    reach: usize,
    /// (arrival slot, bands) of every slot with attainable requests.
    groups: Vec<(usize, Bands)>,
    attainable: f64,
    initial: f64,
    min: f64,
    /// Slots held before an increase of capacity.
    lead: usize,
}

impl Relaxation {
    fn new(trace: &Trace, config: &SimConfig) -> Result<Relaxation, BoundError> {
        let profile = &config.fleet.profile;
        let slo = config.slo_ttft_secs;
        let slots = ((trace.duration() + slo) / SLOT_SECS).ceil() as usize + 1;
        let mut per_slot: Vec<Vec<f64>> = vec![Vec::new(); slots];
        let mut attainable_count = 0usize;
        for r in &trace.requests {
            if !attainable(profile, trace, r, slo) {
                continue;
            }
            attainable_count += 1;
            let cacheable = r.hashes.1.saturating_sub(1) * trace.hash_block_tokens;
            let slot = ((r.arrival / SLOT_SECS) as usize).min(slots - 1);
            per_slot[slot].push(prefill_work(profile, r.prompt_tokens, cacheable));
        }
        if attainable_count == 0 {
            return Err(BoundError::NothingAttainable);
        }
        let groups = per_slot
            .into_iter()
            .enumerate()
            .filter(|(_, w)| !w.is_empty())
            .map(|(slot, mut works)| {
                works.sort_by(f64::total_cmp);
                let n = works.len();
                let bands = (0..SEGMENTS.min(n))
                    .map(|b| {
                        let (lo, hi) = (b * n / SEGMENTS.min(n), (b + 1) * n / SEGMENTS.min(n));
                        ((hi - lo) as f64, works[lo])
                    })
                    .filter(|(count, _)| *count > 0.0)
                    .collect();
                (slot, bands)
            })
            .collect();
        let floor = config.fleet.time_to_ready.floor_secs();
        Ok(Relaxation {
            slots,
            reach: (slo / SLOT_SECS).ceil() as usize,
            groups,
            attainable: attainable_count as f64,
            initial: config.fleet.initial_replicas as f64,
            min: config.fleet.min_replicas as f64,
            lead: ((floor / SLOT_SECS).floor() as usize).saturating_sub(1),
        })
    }

    /// Minimum held GPU-hours to serve `attainment` of the attainable requests in time.
    fn solve(&self, attainment: f64) -> Result<f64, BoundError> {
        let k = self.slots;
        let (r, u, h) = (0, k, 2 * k);
        // Per group: its bands' z, then its y for each slot it reaches.
        let mut next = 3 * k;
        let mut layout = Vec::with_capacity(self.groups.len());
        for (slot, bands) in &self.groups {
            let reach = (self.reach + 1).min(k - slot);
            layout.push((next, bands.len(), next + bands.len(), reach));
            next += bands.len() + reach;
        }
        let n = next;
        let mut rows = Rows::default();
        // Equalities: each group's assigned work equals the work of what it serves.
        for ((_, bands), &(z0, _, y0, reach)) in self.groups.iter().zip(&layout) {
            let mut row: Vec<(usize, f64)> = (0..reach).map(|t| (y0 + t, 1.0)).collect();
            row.extend(bands.iter().enumerate().map(|(q, (c, w))| (z0 + q, -c * w)));
            rows.push(row, 0.0);
        }
        let equalities = rows.len();
        // Capacity of each slot.
        let mut capacity: Vec<Vec<(usize, f64)>> =
            (0..k).map(|s| vec![(r + s, -SLOT_SECS)]).collect();
        for ((slot, _), &(_, _, y0, reach)) in self.groups.iter().zip(&layout) {
            for t in 0..reach {
                capacity[slot + t].push((y0 + t, 1.0));
            }
        }
        for row in capacity {
            rows.push(row, 0.0);
        }
        // Attainment.
        let mut row = Vec::new();
        for ((_, bands), &(z0, _, _, _)) in self.groups.iter().zip(&layout) {
            row.extend(bands.iter().enumerate().map(|(q, (c, _))| (z0 + q, -c)));
        }
        rows.push(row, -attainment.clamp(0.0, 1.0) * self.attainable);
        for s in 0..k {
            // Increases of capacity: r_s − r_{s−1} ≤ u_s (before slot 0, the initial fleet).
            if s == 0 {
                rows.push(vec![(r, 1.0), (u, -1.0)], self.initial);
            } else {
                rows.push(vec![(r + s, 1.0), (r + s - 1, -1.0), (u + s, -1.0)], 0.0);
            }
            // Held: serving plus the pods starting for the increases of the next `lead` slots.
            let mut row = vec![(r + s, 1.0), (h + s, -1.0)];
            row.extend((s + 1..(s + 1 + self.lead).min(k)).map(|j| (u + j, 1.0)));
            rows.push(row, 0.0);
            rows.push(vec![(h + s, -1.0)], -self.min);
        }
        for ((_, bands), &(z0, _, _, _)) in self.groups.iter().zip(&layout) {
            for q in 0..bands.len() {
                rows.push(vec![(z0 + q, 1.0)], 1.0);
            }
        }
        for x in 0..n {
            rows.push(vec![(x, -1.0)], 0.0);
        }
        let mut objective = vec![0.0; n];
        for s in 0..k {
            objective[h + s] = SLOT_SECS / 3600.0;
        }
        let inequalities = rows.len() - equalities;
        let a = rows.matrix(n);
        let p = CscMatrix::<f64>::zeros((n, n));
        let cones = [ZeroConeT(equalities), NonnegativeConeT(inequalities)];
        let settings = DefaultSettingsBuilder::default()
            .verbose(false)
            .max_iter(200)
            .build()
            .map_err(|e| BoundError::Solver(e.to_string()))?;
        let mut solver = DefaultSolver::new(&p, &objective, &a, &rows.rhs, &cones, settings)
            .map_err(|e| BoundError::Solver(format!("{e:?}")))?;
        solver.solve();
        let solution = &solver.solution;
        match solution.status {
            SolverStatus::Solved | SolverStatus::AlmostSolved => {
                Ok(solution.obj_val_dual.min(solution.obj_val).max(0.0))
            }
            other => Err(BoundError::Solver(format!("{other:?}"))),
        }
    }
}

/// Sparse rows of `A x ≤ b` (or `= b` for the first ones), turned into a CSC matrix.
#[derive(Default)]
struct Rows {
    triplets: Vec<(usize, usize, f64)>,
    rhs: Vec<f64>,
}

impl Rows {
    fn push(&mut self, row: Vec<(usize, f64)>, rhs: f64) {
        let i = self.rhs.len();
        self.triplets
            .extend(row.into_iter().map(|(col, v)| (i, col, v)));
        self.rhs.push(rhs);
    }

    fn len(&self) -> usize {
        self.rhs.len()
    }

    fn matrix(&self, n: usize) -> CscMatrix<f64> {
        let (mut i, mut j, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for &(row, col, value) in &self.triplets {
            i.push(row);
            j.push(col);
            v.push(value);
        }
        CscMatrix::new_from_triplets(self.rhs.len(), n, i, j, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::{CostModel, StartupTime};
    use crate::replay::{ClientConfig, FleetConfig, Routing};
    use crate::trace::Request;

    fn config(min: u32, initial: u32) -> SimConfig {
        SimConfig {
            fleet: FleetConfig {
                profile: ModelProfile::llama31_8b_h100(),
                min_replicas: min,
                max_replicas: 16,
                initial_replicas: initial,
                time_to_ready: StartupTime::new(60.0, 0.25).unwrap(),
                wake: StartupTime::new(2.0, 0.3).unwrap(),
                node_provisioning_share: 0.6,
                cost: CostModel {
                    gpu_cost_per_hour: 2.0,
                },
                routing: Routing::LeastOutstanding,
                client: ClientConfig::default(),
                termination_grace_secs: 30.0,
            },
            slo_ttft_secs: 2.0,
            seed: 1,
        }
    }

    #[test]
    fn an_idle_trace_costs_the_minimum_fleet_over_its_span() {
        // One tiny request at 0 and one at 599 s: the bound is min replicas × span.
        let trace = Trace::new(
            "idle",
            vec![Request::new(0.0, 10, 1), Request::new(599.0, 10, 1)],
        )
        .unwrap();
        let b = lower_bound(&trace, &config(1, 1), &[1.0]).unwrap();
        // 602 slots of 1 s (599 + 2 s objective + 1) × 1 replica.
        assert!((b[0].gpu_hours - 602.0 / 3600.0).abs() < 1e-4, "{b:?}");
        let b2 = lower_bound(&trace, &config(2, 2), &[1.0]).unwrap();
        assert!(
            (b2[0].gpu_hours - 2.0 * 602.0 / 3600.0).abs() < 2e-4,
            "{b2:?}"
        );
    }

    #[test]
    fn a_burst_needs_capacity_started_one_floor_ahead() {
        // 20 prompts of 8,000 tokens at t = 300 s: prefill work each
        // 8000 × 3.247e-5 + 8000² / 2 × 2.65e-10 = 0.2598 + 0.0085 = 0.268 → 5.37 replica-s,
        // within 2 s (3 slots) → at least 5.37 / 3 = 1.79 replicas serving in those slots,
        // i.e. 0.79 more than the one at hand, started at least the floor (60 × e^(−0.75) =
        // 28.3 s → 27 slots held) before.
        let mut requests = vec![Request::new(0.0, 10, 1), Request::new(600.0, 10, 1)];
        requests.extend((0..20).map(|_| Request::new(300.0, 8000, 1)));
        let trace = Trace::new("burst", requests).unwrap();
        let b = lower_bound(&trace, &config(1, 1), &[1.0]).unwrap()[0].gpu_hours;
        let idle = 603.0 / 3600.0;
        assert!(b > idle + 0.79 * 27.0 / 3600.0, "{b}");
        assert!(b < idle + 0.79 * 40.0 / 3600.0, "{b}");
        // Asking for less attainment never costs more; a higher minimum never costs less.
        let half = lower_bound(&trace, &config(1, 1), &[0.5]).unwrap()[0].gpu_hours;
        assert!(half <= b + 1e-6);
        let min2 = lower_bound(&trace, &config(2, 2), &[1.0]).unwrap()[0].gpu_hours;
        assert!(min2 >= b - 1e-6);
    }
}
