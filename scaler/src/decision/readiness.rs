//! Time-to-ready per readiness tier: a log-normal learned from observed durations.
//!
//! Owns: [`TimeToReady`] (the p50/p95/sample-count summary a controller keeps in its status so a
//! restart does not forget) and [`ReadinessLearner`] (bounded samples → that summary).
//! Does not own: timing pods (the caller measures created → Ready, or a wake call) or deciding
//! which tier to use (see [`super::decide`]).
//!
//! Why log-normal: a cold start is a sum of stages each with a floor and a right tail (node
//! provisioning, image pull, weight load, CUDA-graph capture); its logarithm is close to normal,
//! and two quantiles (p50, p95) pin the distribution down, so the status needs no raw samples.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};
use std::collections::VecDeque;

/// z-score of the 95th percentile of a standard normal.
const Z95: f64 = 1.644_853_626_951_472_2;
/// Samples a learner keeps: enough for a stable p95 (one sample in 20 is the tail), few enough
/// that a changed node pool or image shows within a day of scale-ups.
pub const MAX_READINESS_SAMPLES: usize = 64;

/// A learned (or prior) time-to-ready distribution: log-normal with this median and p95.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeToReady {
    /// Median, seconds.
    pub p50_secs: f64,
    /// 95th percentile, seconds (≥ `p50_secs`).
    pub p95_secs: f64,
    /// Observations behind the estimate; 0 for a prior.
    pub samples: u32,
}

impl TimeToReady {
    /// A prior before anything was observed (spread: p95 = 1.5 × median, the spread between a
    /// cached image on a warm node and a fresh pull).
    pub fn prior(median_secs: f64) -> TimeToReady {
        let median = if median_secs.is_finite() && median_secs > 0.0 {
            median_secs
        } else {
            1.0
        };
        TimeToReady {
            p50_secs: median,
            p95_secs: median * 1.5,
            samples: 0,
        }
    }

    /// Log-sd of the distribution.
    pub fn log_sigma(&self) -> f64 {
        if self.p50_secs <= 0.0 || self.p95_secs <= self.p50_secs {
            return 0.0;
        }
        (self.p95_secs / self.p50_secs).ln() / Z95
    }

    /// The `q`-quantile, seconds.
    pub fn quantile(&self, q: f64) -> f64 {
        let sigma = self.log_sigma();
        if sigma == 0.0 {
            return self.p50_secs;
        }
        let z = Normal::new(0.0, 1.0).map_or(0.0, |n| n.inverse_cdf(q.clamp(1e-6, 1.0 - 1e-6)));
        self.p50_secs * (sigma * z).exp()
    }

    /// Probability a start takes at most `secs`.
    pub fn cdf(&self, secs: f64) -> f64 {
        if secs <= 0.0 {
            return 0.0;
        }
        let sigma = self.log_sigma();
        if sigma == 0.0 {
            return if secs >= self.p50_secs { 1.0 } else { 0.0 };
        }
        Normal::new(0.0, 1.0).map_or(0.5, |n| n.cdf((secs / self.p50_secs).ln() / sigma))
    }
}

/// Learns a [`TimeToReady`] from observed durations, starting from a prior (or from a summary
/// read back from a status after a restart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadinessLearner {
    prior: TimeToReady,
    samples: VecDeque<f64>,
}

impl ReadinessLearner {
    pub fn new(prior: TimeToReady) -> ReadinessLearner {
        ReadinessLearner {
            prior,
            samples: VecDeque::new(),
        }
    }

    /// Records one observed duration (seconds); non-positive or non-finite values are ignored.
    pub fn observe(&mut self, secs: f64) {
        if !(secs.is_finite() && secs > 0.0) {
            return;
        }
        self.samples.push_back(secs);
        if self.samples.len() > MAX_READINESS_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// The current estimate: the prior until two samples exist, then the log-normal fitted to
    /// the samples (mean and sd of the logs), with the prior's weight fading as samples come.
    pub fn estimate(&self) -> TimeToReady {
        let n = self.samples.len();
        if n < 2 {
            return match self.samples.front() {
                Some(&only) => TimeToReady {
                    p50_secs: only.max(self.prior.p50_secs.min(only * 2.0)),
                    p95_secs: only.max(self.prior.p95_secs),
                    samples: 1,
                },
                None => self.prior,
            };
        }
        let logs: Vec<f64> = self.samples.iter().map(|s| s.ln()).collect();
        let mean = logs.iter().sum::<f64>() / n as f64;
        let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        // A prior observation's worth of the prior's spread keeps a handful of identical
        // samples from claiming a zero tail.
        let prior_sigma = self.prior.log_sigma();
        let sigma = ((var * (n - 1) as f64 + prior_sigma * prior_sigma) / n as f64).sqrt();
        TimeToReady {
            p50_secs: mean.exp(),
            p95_secs: (mean + Z95 * sigma).exp(),
            samples: n as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prior_spread_and_quantiles() {
        let t = TimeToReady::prior(120.0);
        assert_eq!(t.p95_secs, 180.0);
        // σ = ln 1.5 / 1.6449 = 0.24650.
        assert!((t.log_sigma() - 0.246_50).abs() < 1e-5);
        assert!((t.quantile(0.5) - 120.0).abs() < 1e-9);
        assert!((t.quantile(0.95) - 180.0).abs() < 1e-6);
        assert!((t.cdf(180.0) - 0.95).abs() < 1e-6);
    }

    #[test]
    fn fits_median_and_tail_of_samples() {
        let mut l = ReadinessLearner::new(TimeToReady::prior(60.0));
        // Logs of 100, 100, 400, 400: mean ln 200 → median 200; sample sd of logs
        // = ln 2 × sqrt(4/3) = 0.80035; blended with the prior's σ 0.2465 as one more
        // observation: sqrt((0.80035² × 3 + 0.2465²) / 4) = 0.70402 → p95 = 200 × e^(1.6449σ).
        for s in [100.0, 400.0, 100.0, 400.0] {
            l.observe(s);
        }
        let e = l.estimate();
        assert_eq!(e.samples, 4);
        assert!((e.p50_secs - 200.0).abs() < 1e-9);
        let sample_sd = 2f64.ln() * (4.0f64 / 3.0).sqrt();
        let prior = TimeToReady::prior(60.0).log_sigma();
        let sigma = ((sample_sd.powi(2) * 3.0 + prior.powi(2)) / 4.0).sqrt();
        assert!(
            (e.p95_secs - 200.0 * (Z95 * sigma).exp()).abs() < 1e-9,
            "{e:?}"
        );
        assert!((sigma - 0.704_02).abs() < 1e-5);
    }

    #[test]
    fn bad_samples_are_ignored_and_memory_is_bounded() {
        let mut l = ReadinessLearner::new(TimeToReady::prior(60.0));
        l.observe(f64::NAN);
        l.observe(-1.0);
        assert_eq!(l.estimate(), TimeToReady::prior(60.0));
        for _ in 0..200 {
            l.observe(30.0);
        }
        assert_eq!(l.estimate().samples as usize, MAX_READINESS_SAMPLES);
        assert!((l.estimate().p50_secs - 30.0).abs() < 1e-9);
    }
}
