//! Time-to-ready learned as a distribution: a log-normal fitted to observed durations,
//! weighted toward recent ones. One learner for the live controller and the simulator's
//! warm-pool policy (written by the controller engineer on i11-controller, moved here so
//! there is one home).
//!
//! Owns: the fit ([`TimeToReady`]) — its update from one observation, its quantiles (through
//! statrs' `LogNormal`), and the small state that survives a restart (mean and variance of
//! ln(seconds), effective weight, sample count), which the controller keeps in the WarmPool's
//! status.
//! Does not own: where the durations come from (pod lifecycle and wake calls in a cluster,
//! the replay's pod events in the simulator) or what horizon is chosen from them (see
//! [`super::decide`]).
//!
//! Why log-normal: a cold start is a sum of stages that each scale (node provisioning, image
//! pull, weight load, graph capture), so its logarithm is close to normal and its right tail
//! is long — the p95, not the mean, is what must be covered. Why weighted: the same workload
//! gets faster (a cached image, a warm node pool) or slower (a bigger model) over its life;
//! an effective memory of [`MAX_WEIGHT`] observations follows such a change within a day of
//! scale-ups, while one outlier moves the fit by at most 1/[`MAX_WEIGHT`].
//!
//! Before any observation the fit is the prior; with few, the spread is shrunk toward the
//! prior spread ([`PRIOR_SPREAD_WEIGHT`] pseudo-observations), so two similar cold starts do
//! not claim a p95 equal to their median.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, LogNormal};

/// Effective number of observations remembered: older ones decay geometrically beyond it.
pub const MAX_WEIGHT: f64 = 30.0;
/// Pseudo-observations of the prior spread mixed into the fitted spread.
pub const PRIOR_SPREAD_WEIGHT: f64 = 2.0;
/// Prior spread of ln(seconds): cold starts within ×1.5 of their median two times in three,
/// as the simulator's calibration assumes.
pub const PRIOR_LOG_SIGMA: f64 = 0.25;
/// Shortest duration taken as an observation: a clock rounded to seconds reports 0 for a
/// wake that took 300 ms, and ln(0) is not a number.
pub const MIN_SECONDS: f64 = 0.05;

/// A log-normal fit of one tier's time-to-ready.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeToReady {
    /// Observations so far (not decayed).
    pub samples: u64,
    /// Effective weight of the observations (≤ [`MAX_WEIGHT`]).
    pub weight: f64,
    /// Weighted mean of ln(seconds).
    pub log_mean: f64,
    /// Weighted variance of ln(seconds).
    pub log_variance: f64,
}

impl TimeToReady {
    /// A fit that knows only the prior median.
    pub fn prior(median_seconds: f64) -> TimeToReady {
        TimeToReady {
            samples: 0,
            weight: 0.0,
            log_mean: median_seconds.max(MIN_SECONDS).ln(),
            log_variance: 0.0,
        }
    }

    /// Adds one observed duration. Non-finite or negative durations are ignored (returns
    /// false): a clock skew between the apiserver and a node is not a cold start.
    pub fn observe(&mut self, seconds: f64) -> bool {
        if !seconds.is_finite() || seconds < 0.0 {
            return false;
        }
        let y = seconds.max(MIN_SECONDS).ln();
        if self.samples == 0 {
            self.weight = 1.0;
            self.log_mean = y;
            self.log_variance = 0.0;
        } else {
            // Weighted Welford update, with the old weight capped so the memory stays finite.
            let old = self.weight.min(MAX_WEIGHT - 1.0);
            let weight = old + 1.0;
            let delta = y - self.log_mean;
            let mean = self.log_mean + delta / weight;
            self.log_variance = (old * self.log_variance + delta * (y - mean)) / weight;
            self.log_mean = mean;
            self.weight = weight;
        }
        self.samples += 1;
        true
    }

    /// The spread used for quantiles: the fitted one shrunk toward the prior.
    pub fn log_sigma(&self) -> f64 {
        let fitted = self.weight * self.log_variance.max(0.0);
        let prior = PRIOR_SPREAD_WEIGHT * PRIOR_LOG_SIGMA * PRIOR_LOG_SIGMA;
        ((fitted + prior) / (self.weight + PRIOR_SPREAD_WEIGHT)).sqrt()
    }

    /// The fitted distribution; `None` only for a state no update produces (a non-finite
    /// mean read back from a hand-edited status, say).
    pub fn distribution(&self) -> Option<LogNormal> {
        LogNormal::new(self.log_mean, self.log_sigma()).ok()
    }

    /// The `q`-quantile, seconds (the median when the state is unusable).
    pub fn quantile(&self, q: f64) -> f64 {
        self.distribution()
            .map_or(self.p50(), |d| d.inverse_cdf(q.clamp(1e-6, 1.0 - 1e-6)))
    }

    pub fn p50(&self) -> f64 {
        self.log_mean.exp()
    }

    pub fn p95(&self) -> f64 {
        self.quantile(0.95)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-9)
    }

    #[test]
    fn prior_median_with_prior_spread() {
        let fit = TimeToReady::prior(120.0);
        assert_eq!(fit.samples, 0);
        assert!(close(fit.p50(), 120.0, 1e-12));
        // p95 = 120 · exp(1.6448536 · 0.25) = 181.038 (Python's statistics.NormalDist)
        assert!(close(fit.p95(), 181.038, 1e-4), "{}", fit.p95());
    }

    #[test]
    fn fits_mean_and_variance_of_logs() {
        let mut fit = TimeToReady::prior(1.0);
        for s in [60.0, 90.0, 120.0, 150.0, 180.0] {
            assert!(fit.observe(s));
        }
        // Expected values from Python (math.log, two-pass mean and population variance):
        // mean 4.717048, variance 0.150519.
        assert!(close(fit.log_mean, 4.717048, 1e-6), "{}", fit.log_mean);
        assert!(
            close(fit.log_variance, 0.150519, 1e-5),
            "{}",
            fit.log_variance
        );
        assert_eq!(fit.samples, 5);
        // Spread shrunk toward the prior: sqrt((5 · 0.150519 + 2 · 0.0625) / 7) = 0.354078.
        assert!(
            close(fit.log_sigma(), 0.354078, 1e-5),
            "{}",
            fit.log_sigma()
        );
        // p95 = exp(4.717048 + 1.6448536 · 0.354078) = 200.227
        assert!(close(fit.p95(), 200.227, 1e-5), "{}", fit.p95());
    }

    #[test]
    fn forgets_old_observations_geometrically() {
        let mut fit = TimeToReady::prior(1.0);
        for _ in 0..100 {
            fit.observe(200.0);
        }
        assert_eq!(fit.weight, MAX_WEIGHT);
        // The workload got faster: 60 s from now on. After MAX_WEIGHT more observations the
        // old regime keeps (29/30)^30 = 36 % of the weight in the mean of logs.
        for _ in 0..30 {
            fit.observe(60.0);
        }
        let old_share = (29.0f64 / 30.0).powi(30);
        let expected = (old_share * 200f64.ln() + (1.0 - old_share) * 60f64.ln()).exp();
        assert!(
            close(fit.p50(), expected, 1e-9),
            "{} vs {expected}",
            fit.p50()
        );
        assert!(fit.p50() < 100.0);
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        let mut fit = TimeToReady::prior(120.0);
        assert!(!fit.observe(-3.0));
        assert!(!fit.observe(f64::NAN));
        assert_eq!(fit.samples, 0);
        // A zero-second wake (a clock rounded to seconds) is kept, at the floor.
        assert!(fit.observe(0.0));
        assert!(close(fit.p50(), MIN_SECONDS, 1e-12));
    }

    #[test]
    fn survives_a_round_trip_through_json() {
        let mut fit = TimeToReady::prior(1.0);
        fit.observe(30.0);
        fit.observe(45.0);
        let back: TimeToReady =
            serde_json::from_str(&serde_json::to_string(&fit).unwrap()).unwrap();
        assert_eq!(back, fit);
    }
}
