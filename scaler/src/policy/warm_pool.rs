//! inferscale's warm-pool policy: forecast demand one time-to-ready ahead and keep warm
//! (asleep, wakeable in seconds) capacity when idle GPUs cost less than missed objectives.
//!
//! Owns: learning the time-to-ready from pods that became ready, a Holt (level + trend)
//! forecast of the offered work (replica-seconds per second: prompt tokens seen at the gateway
//! times the prefill cost per token, plus the generated-token rate from the metrics engine
//! times the decode cost per token), the distribution of its own forecast errors, and the
//! newsvendor choice of how much to hold: with `cost_ratio` = (cost of a
//! replica-hour short of demand) / (cost of an idle replica-hour), the cheapest level is the
//! `r / (1 + r)` quantile of demand, so the policy sizes the fleet at that quantile of
//! (forecast × observed error ratio).
//! Does not own: waking and starting pods (see [`crate::sim`]).
//!
//! Serving capacity covers the demand expected within a wake time (seconds); the warm pool
//! covers the rest of what is expected within a cold start, so growth is absorbed by waking
//! pods while cold starts refill the pool.

use super::{Decision, Policy, PolicyError};
use crate::observe::{Observation, SignalPath};
use std::collections::VecDeque;

/// Decision period: as often as our direct scrape refreshes.
pub const WARM_POOL_PERIOD_SECS: f64 = 5.0;
/// Holt level smoothing per 5 s sample: ~1 min memory, like the KPA's stable window.
const HOLT_ALPHA: f64 = 0.08;
/// Holt trend smoothing: slower than the level so single bursts do not become trends.
const HOLT_BETA: f64 = 0.02;
/// Window over which forecast errors are remembered: one hour holds the trace's character
/// without letting yesterday's peak dominate.
const ERROR_MEMORY_SECS: f64 = 3600.0;
/// Fewest error samples before their quantile is trusted; before that a ×1.5 margin.
const MIN_ERROR_SAMPLES: usize = 30;
const COLD_MARGIN: f64 = 1.5;
/// Offered work is measured over this window for the "actual" side of forecast errors and for
/// the serving floor: the Azure code trace's bursts last 5–15 s, so a longer window would
/// average them away.
const ACTUAL_RATE_WINDOW_SECS: f64 = 10.0;
/// Quantile of observed cold starts used as the forecast horizon: late capacity is the
/// costly mistake.
const TIME_TO_READY_QUANTILE: f64 = 0.9;
/// Cold-start samples kept for that quantile.
const MAX_READY_SAMPLES: usize = 64;
/// Seconds a lower target must persist before the policy scales down (stops flapping when a
/// burst ends; far shorter than the HPA's 300 s because waking back is seconds).
const SCALE_DOWN_HOLD_SECS: f64 = 60.0;

/// Parameters of the warm pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmPoolConfig {
    /// Prior time-to-ready (seconds) until pods have been seen becoming ready.
    pub prior_time_to_ready: f64,
    /// Wake time from sleep, seconds (the serving horizon).
    pub wake_secs: f64,
    /// GPU-seconds one prompt token costs a replica (from the calibration).
    pub prefill_secs_per_token: f64,
    /// GPU-seconds one generated token costs a replica at a busy batch (from the calibration).
    pub decode_secs_per_token: f64,
    /// Busy fraction a replica may run at and still meet the TTFT objective.
    pub target_utilisation: f64,
    /// Cost of a replica-hour short of demand over cost of an idle replica-hour.
    pub cost_ratio: f64,
    pub min: u32,
    pub max: u32,
}

/// Default cost ratio: missing the objective for a replica-hour of demand costs 9× the GPU
/// hour (critical fractile 0.9).
pub const DEFAULT_COST_RATIO: f64 = 9.0;

/// Default busy fraction per replica: a replica more than ~half busy with prefill makes new
/// prompts wait behind others' chunks, which is what TTFT objectives of ~1–2 s cannot absorb.
pub const DEFAULT_WARM_POOL_UTILISATION: f64 = 0.5;

/// Seconds of observation before the policy may shrink the fleet: until it has seen a full
/// measurement window its rate estimate starts from zero, and acting on that would drop a
/// sized fleet to the minimum and pay a cold start to get it back.
const WARM_UP_SECS: f64 = 60.0;

/// The warm-pool state machine.
#[derive(Debug, Clone)]
pub struct WarmPool {
    config: WarmPoolConfig,
    last: Option<(f64, f64)>,
    level: f64,
    trend: f64,
    /// Offered work over recent decisions: (time, work rate).
    recent_work: VecDeque<(f64, f64)>,
    /// Forecasts awaiting their target time: (due, forecast).
    pending: VecDeque<(f64, f64)>,
    /// Observed actual / forecast ratios.
    errors: VecDeque<(f64, f64)>,
    ready_samples: VecDeque<f64>,
    recent_targets: VecDeque<(f64, u32, u32)>,
    first_seen: Option<f64>,
}

impl WarmPool {
    pub fn new(config: WarmPoolConfig) -> Result<WarmPool, PolicyError> {
        let bad = |reason| PolicyError::InvalidParameter {
            policy: "warm-pool",
            reason,
        };
        if !(config.cost_ratio.is_finite() && config.cost_ratio > 0.0) {
            return Err(bad("cost ratio must be positive"));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !(positive(config.prefill_secs_per_token)
            && positive(config.decode_secs_per_token)
            && positive(config.prior_time_to_ready)
            && config.target_utilisation > 0.0
            && config.target_utilisation <= 1.0)
        {
            return Err(bad(
                "token costs and time-to-ready must be positive, utilisation in (0, 1]",
            ));
        }
        Ok(WarmPool {
            config,
            last: None,
            level: 0.0,
            trend: 0.0,
            recent_work: VecDeque::new(),
            pending: VecDeque::new(),
            errors: VecDeque::new(),
            ready_samples: VecDeque::new(),
            recent_targets: VecDeque::new(),
            first_seen: None,
        })
    }

    /// The critical fractile `r / (1 + r)`.
    pub fn service_level(&self) -> f64 {
        self.config.cost_ratio / (1.0 + self.config.cost_ratio)
    }

    /// The learned forecast horizon, seconds.
    pub fn time_to_ready(&self) -> f64 {
        if self.ready_samples.is_empty() {
            return self.config.prior_time_to_ready;
        }
        quantile(
            self.ready_samples.iter().copied().collect(),
            TIME_TO_READY_QUANTILE,
        )
        .unwrap_or(self.config.prior_time_to_ready)
    }

    /// Multiplier on the forecast at the service level.
    fn error_margin(&self) -> f64 {
        if self.errors.len() < MIN_ERROR_SAMPLES {
            return COLD_MARGIN;
        }
        quantile(
            self.errors.iter().map(|e| e.1).collect(),
            self.service_level(),
        )
        .unwrap_or(COLD_MARGIN)
        .max(1.0)
    }

    fn forecast(&self, horizon: f64) -> f64 {
        let steps = horizon / WARM_POOL_PERIOD_SECS;
        (self.level + self.trend * steps).max(0.0)
    }
}

/// The `q`-quantile of samples (nearest rank), `None` when empty.
fn quantile(mut samples: Vec<f64>, q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    Some(samples[rank - 1])
}

impl Policy for WarmPool {
    fn name(&self) -> &str {
        "warm-pool"
    }

    fn signal_path(&self) -> SignalPath {
        SignalPath::Direct
    }

    fn decision_period(&self) -> f64 {
        WARM_POOL_PERIOD_SECS
    }

    fn decide(&mut self, obs: &Observation) -> Decision {
        let now = obs.now;
        for &took in &obs.new_ready_durations {
            self.ready_samples.push_back(took);
            if self.ready_samples.len() > MAX_READY_SAMPLES {
                self.ready_samples.pop_front();
            }
        }
        // Offered work since the last decision (replica-seconds per second), then Holt.
        let prompt_rate = match self.last {
            Some((t, n)) if now > t => (obs.arrival_prompt_tokens_total - n).max(0.0) / (now - t),
            _ => 0.0,
        };
        let generation_rate = obs.fleet.generation_token_rate.sum.value().unwrap_or(0.0);
        let rate = prompt_rate * self.config.prefill_secs_per_token
            + generation_rate * self.config.decode_secs_per_token;
        if self.last.is_none() {
            self.level = rate;
        } else {
            let previous = self.level;
            self.level = HOLT_ALPHA * rate + (1.0 - HOLT_ALPHA) * (self.level + self.trend);
            self.trend = HOLT_BETA * (self.level - previous) + (1.0 - HOLT_BETA) * self.trend;
        }
        self.last = Some((now, obs.arrival_prompt_tokens_total));
        self.recent_work.push_back((now, rate));
        while self
            .recent_work
            .front()
            .is_some_and(|(t, _)| *t < now - ACTUAL_RATE_WINDOW_SECS)
        {
            self.recent_work.pop_front();
        }
        let actual = self.recent_work.iter().map(|w| w.1).sum::<f64>()
            / self.recent_work.len().max(1) as f64;
        while let Some(&(due, forecast)) = self.pending.front() {
            if due > now {
                break;
            }
            self.pending.pop_front();
            if forecast > 0.0 {
                self.errors.push_back((now, actual / forecast));
            }
        }
        while self
            .errors
            .front()
            .is_some_and(|(t, _)| *t < now - ERROR_MEMORY_SECS)
        {
            self.errors.pop_front();
        }
        let horizon = self.time_to_ready();
        let forecast_far = self.forecast(horizon);
        self.pending.push_back((now + horizon, forecast_far));
        let margin = self.error_margin();
        let pods_for = |work: f64| (work * margin / self.config.target_utilisation).ceil();
        // Serving: what the next wake time needs, never less than the work arriving now, and
        // one more while requests queue (the forecast is behind a burst).
        let queued = obs.fleet.queue_depth.sum.value().unwrap_or(0.0) + obs.gateway_queue as f64;
        let near = self.forecast(self.config.wake_secs).max(actual);
        let mut serving_now = pods_for(near).max(self.config.min as f64) as u32;
        if queued > 0.0 {
            serving_now = serving_now.max(obs.ready + 1);
        }
        let total_far = (pods_for(forecast_far.max(near)) as u32).max(serving_now);
        let warm_now = total_far - serving_now;
        let first_seen = *self.first_seen.get_or_insert(now);
        if now - first_seen < WARM_UP_SECS {
            serving_now = serving_now.max(obs.desired_serving);
        }
        // Hold the highest recent targets before scaling down.
        self.recent_targets.push_back((now, serving_now, warm_now));
        while self
            .recent_targets
            .front()
            .is_some_and(|(t, _, _)| *t <= now - SCALE_DOWN_HOLD_SECS)
        {
            self.recent_targets.pop_front();
        }
        let serving = self
            .recent_targets
            .iter()
            .map(|r| r.1)
            .max()
            .unwrap_or(serving_now)
            .clamp(self.config.min, self.config.max);
        let total = self
            .recent_targets
            .iter()
            .map(|r| r.1 + r.2)
            .max()
            .unwrap_or(total_far)
            .min(self.config.max);
        if std::env::var_os("WP_DEBUG").is_some() && (now as u64) % 30 == 0 {
            eprintln!("t={now:.0} rate={rate:.2} actual={actual:.2} level={:.2} trend={:.4} far={forecast_far:.2} near={near:.2} margin={margin:.2} ttr={horizon:.0} queued={queued} ready={} serving={serving} total={total}", self.level, self.trend, obs.ready);
        }
        Decision {
            serving,
            warm: total.saturating_sub(serving),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_fractile() {
        let wp = WarmPool::new(WarmPoolConfig {
            prior_time_to_ready: 120.0,
            wake_secs: 2.0,
            prefill_secs_per_token: 3e-5,
            decode_secs_per_token: 3e-4,
            target_utilisation: 0.5,
            cost_ratio: 9.0,
            min: 1,
            max: 10,
        })
        .unwrap();
        assert!((wp.service_level() - 0.9).abs() < 1e-12);
        assert_eq!(wp.time_to_ready(), 120.0);
    }

    #[test]
    fn nearest_rank_quantile() {
        assert_eq!(quantile(vec![3.0, 1.0, 2.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(vec![3.0, 1.0, 2.0, 4.0], 0.9), Some(4.0));
        assert_eq!(quantile(vec![], 0.9), None);
    }
}
