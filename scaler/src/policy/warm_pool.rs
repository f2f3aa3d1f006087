//! inferscale's warm-pool policy: forecast demand one learned time-to-ready ahead, size the
//! fleet with a per-replica capacity learned from what replicas sustained within the TTFT
//! objective, and hold burst headroom only as far as a missed request costs more than an idle
//! GPU.
//!
//! Owns: learning the time-to-ready from pods that became ready; the offered work (replica-
//! seconds per second: prompt tokens seen at the gateway times the prefill cost per token,
//! plus the generated-token rate from the metrics engine times the decode cost per token); a
//! Holt (level + trend) forecast of it one time-to-ready ahead; the distribution of the short-
//! window burst above that level; the per-replica capacity; and the newsvendor choice of how
//! much burst to cover.
//! Does not own: waking and starting pods (see [`crate::sim`]).
//!
//! Sizing. With `cost_ratio` = (penalty per missed request) / (GPU-hour price) and `k`
//! requests per replica-second of work (learned), one replica-hour of capacity short of a burst
//! costs `cost_ratio × k × 3600` while one idle replica-hour costs 1, so the cheapest headroom
//! covers the `q = cu / (cu + 1)` quantile of the burst above the level. Total replicas =
//! ceil((forecast + burst_q) / capacity); scaling down waits one time-to-ready (releasing a
//! replica that is needed again within a cold start costs more than keeping it: ski rental).
//!
//! Pre-started capacity is kept serving, not asleep: the simulator bills a sleeping vLLM like
//! a serving one (the GPU is held either way), so an idle ready replica answers a burst at
//! once while a sleeping one needs a wake. The `warm` half of the decision stays 0 until sleep
//! is cheaper than serving (a shared GPU), which this cost model does not price.

use super::{Decision, Policy, PolicyError};
use crate::observe::{Observation, SignalPath};
use inferscale_metrics::signals::Reading;
use std::collections::VecDeque;

/// Decision period: as often as our direct scrape refreshes.
pub const WARM_POOL_PERIOD_SECS: f64 = 5.0;
/// Holt level smoothing per 5 s sample: ~50 s memory, like the KPA's stable window.
const HOLT_ALPHA: f64 = 0.1;
/// Holt trend smoothing: slower than the level so single bursts do not become trends.
const HOLT_BETA: f64 = 0.02;
/// Offered work is measured over this window for the burst samples: the Azure code trace's
/// bursts last 5–15 s, so a longer window would average them away.
const BURST_WINDOW_SECS: f64 = 10.0;
/// How long burst samples are remembered: half an hour holds a trace's character without
/// letting one old spike set the headroom forever.
const BURST_MEMORY_SECS: f64 = 1800.0;
/// Fewest burst samples before their quantile is trusted (two minutes of decisions); before
/// that the largest seen so far.
const MIN_BURST_SAMPLES: usize = 24;
/// Quantile of observed cold starts used as the forecast horizon: late capacity is the
/// costly mistake.
const TIME_TO_READY_QUANTILE: f64 = 0.9;
/// Cold-start samples kept for that quantile.
const MAX_READY_SAMPLES: usize = 64;
/// Learning rate of the per-replica capacity per decision: ~20 decisions (100 s) to move
/// most of the way, slower than a burst, faster than a trace's hour.
const CAPACITY_LEARNING_RATE: f64 = 0.05;
/// Bounds of the learned capacity (replica-seconds of work per second per replica): a
/// replica cannot do more than ~2 s of costed work per second even with a perfect batch, and
/// below 0.1 the learning has been fooled by a cold fleet.
const CAPACITY_BOUNDS: (f64, f64) = (0.1, 2.0);
/// TTFT (p90 over the direct window) below this share of the objective counts as "easily
/// sustained" and lets the capacity rise toward the observed load.
const COMFORTABLE_SHARE_OF_OBJECTIVE: f64 = 0.5;
/// Newsvendor service level bounds: never plan for less than the median burst, never chase
/// the last 0.1 % (one sample in a thousand is noise, not a plan).
const SERVICE_LEVEL_BOUNDS: (f64, f64) = (0.5, 0.999);
/// Seconds of observation before the policy may shrink the fleet: until it has seen a full
/// measurement window its rate estimate starts from zero, and acting on that would drop a
/// sized fleet to the minimum and pay a cold start to get it back.
const WARM_UP_SECS: f64 = 60.0;

/// Parameters of the warm pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmPoolConfig {
    /// Prior time-to-ready (seconds) until pods have been seen becoming ready.
    pub prior_time_to_ready: f64,
    /// GPU-seconds one prompt token costs a replica (from the calibration).
    pub prefill_secs_per_token: f64,
    /// GPU-seconds one generated token costs a replica at a busy batch (from the calibration).
    pub decode_secs_per_token: f64,
    /// Prior per-replica capacity (replica-seconds of work per second) until the policy has
    /// seen how much a replica sustains within the objective.
    pub prior_capacity: f64,
    /// TTFT objective, seconds.
    pub slo_ttft_secs: f64,
    /// Penalty per missed request over the price of one GPU-hour.
    pub cost_ratio: f64,
    pub min: u32,
    pub max: u32,
}

/// Default cost ratio: a request that misses the objective costs 1/1000 of a GPU-hour
/// (0.25 cents at 2.5/GPU-hour) — an interactive product where a slow answer is a lost one
/// but no single request is worth a GPU.
pub const DEFAULT_COST_RATIO: f64 = 0.001;

/// Default prior capacity: a replica more than ~half busy with prefill makes new prompts wait
/// behind others' chunks, which is what TTFT objectives of ~1–2 s cannot absorb.
pub const DEFAULT_WARM_POOL_UTILISATION: f64 = 0.5;

/// The warm-pool state machine.
#[derive(Debug, Clone)]
pub struct WarmPool {
    config: WarmPoolConfig,
    /// Counters at the last decision: (time, prompt tokens, arrivals).
    last: Option<(f64, f64, u64)>,
    level: f64,
    trend: f64,
    /// Offered work of recent decisions: (time, work rate).
    recent_work: VecDeque<(f64, f64)>,
    /// Short-window work above the level: (time, excess).
    bursts: VecDeque<(f64, f64)>,
    ready_samples: VecDeque<f64>,
    /// Learned replica-seconds of work per second one replica sustains within the objective.
    capacity: f64,
    /// Learned requests per replica-second of work.
    requests_per_work: Option<f64>,
    recent_targets: VecDeque<(f64, u32)>,
    first_seen: Option<f64>,
}

/// What one decision saw and chose (for tests and `--explain`-style debugging).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizing {
    pub time_to_ready: f64,
    pub forecast: f64,
    pub burst: f64,
    pub capacity: f64,
    pub service_level: f64,
    pub replicas: u32,
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
            && positive(config.slo_ttft_secs)
            && positive(config.prior_capacity))
        {
            return Err(bad(
                "token costs, time-to-ready, objective and capacity must be positive",
            ));
        }
        Ok(WarmPool {
            capacity: config
                .prior_capacity
                .clamp(CAPACITY_BOUNDS.0, CAPACITY_BOUNDS.1),
            config,
            last: None,
            level: 0.0,
            trend: 0.0,
            recent_work: VecDeque::new(),
            bursts: VecDeque::new(),
            ready_samples: VecDeque::new(),
            requests_per_work: None,
            recent_targets: VecDeque::new(),
            first_seen: None,
        })
    }

    /// The newsvendor service level for the burst headroom.
    pub fn service_level(&self) -> f64 {
        let Some(k) = self.requests_per_work else {
            return SERVICE_LEVEL_BOUNDS.0;
        };
        let underage = self.config.cost_ratio * k * 3600.0;
        (underage / (underage + 1.0)).clamp(SERVICE_LEVEL_BOUNDS.0, SERVICE_LEVEL_BOUNDS.1)
    }

    /// The learned forecast horizon, seconds.
    pub fn time_to_ready(&self) -> f64 {
        quantile(
            self.ready_samples.iter().copied().collect(),
            TIME_TO_READY_QUANTILE,
        )
        .unwrap_or(self.config.prior_time_to_ready)
    }

    /// The learned per-replica capacity.
    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    fn forecast(&self, horizon: f64) -> f64 {
        let steps = horizon / WARM_POOL_PERIOD_SECS;
        (self.level + self.trend * steps).max(self.level).max(0.0)
    }

    fn burst(&self) -> f64 {
        let excess: Vec<f64> = self.bursts.iter().map(|b| b.1).collect();
        if excess.len() < MIN_BURST_SAMPLES {
            return excess.iter().copied().fold(0.0, f64::max);
        }
        quantile(excess, self.service_level())
            .unwrap_or(0.0)
            .max(0.0)
    }

    /// Moves the capacity toward what the fleet showed it can (or cannot) sustain.
    fn learn_capacity(&mut self, load_per_replica: f64, ttft_p90: Option<f64>) {
        let Some(ttft) = ttft_p90 else { return };
        let objective = self.config.slo_ttft_secs;
        let target = if ttft > objective {
            // Missed at this load: a replica sustains less than it was given.
            (0.9 * load_per_replica).min(self.capacity)
        } else if ttft < COMFORTABLE_SHARE_OF_OBJECTIVE * objective {
            // Easily within at this load: at least this much is sustainable.
            load_per_replica.max(self.capacity)
        } else {
            self.capacity
        };
        self.capacity += CAPACITY_LEARNING_RATE * (target - self.capacity);
        self.capacity = self.capacity.clamp(CAPACITY_BOUNDS.0, CAPACITY_BOUNDS.1);
    }

    /// One decision's sizing from the state after `observe`.
    pub fn sizing(&self) -> Sizing {
        let time_to_ready = self.time_to_ready();
        let forecast = self.forecast(time_to_ready);
        let burst = self.burst();
        let replicas = ((forecast + burst) / self.capacity).ceil() as u32;
        Sizing {
            time_to_ready,
            forecast,
            burst,
            capacity: self.capacity,
            service_level: self.service_level(),
            replicas,
        }
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
        // Offered work since the last decision (replica-seconds per second).
        let (prompt_rate, request_rate) = match self.last {
            Some((t, tokens, arrivals)) if now > t => (
                (obs.arrival_prompt_tokens_total - tokens).max(0.0) / (now - t),
                obs.arrivals_total.saturating_sub(arrivals) as f64 / (now - t),
            ),
            _ => (0.0, 0.0),
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
            if rate > 0.0 && request_rate > 0.0 {
                let k = request_rate / rate;
                self.requests_per_work = Some(match self.requests_per_work {
                    Some(old) => old + HOLT_ALPHA * (k - old),
                    None => k,
                });
            }
        }
        self.last = Some((now, obs.arrival_prompt_tokens_total, obs.arrivals_total));
        self.recent_work.push_back((now, rate));
        while self
            .recent_work
            .front()
            .is_some_and(|(t, _)| *t <= now - BURST_WINDOW_SECS)
        {
            self.recent_work.pop_front();
        }
        let actual = self.recent_work.iter().map(|w| w.1).sum::<f64>()
            / self.recent_work.len().max(1) as f64;
        self.bursts.push_back((now, (actual - self.level).max(0.0)));
        while self
            .bursts
            .front()
            .is_some_and(|(t, _)| *t < now - BURST_MEMORY_SECS)
        {
            self.bursts.pop_front();
        }
        if obs.ready > 0 {
            let ttft = match obs.fleet.time_to_first_token.p90 {
                Reading::Value(v) => Some(v),
                Reading::Missing(_) => None,
            };
            self.learn_capacity(actual / obs.ready as f64, ttft);
        }
        let sizing = self.sizing();
        // Never below what the work arriving now needs.
        let now_needs = (actual / self.capacity).ceil() as u32;
        let mut target = sizing.replicas.max(now_needs);
        let first_seen = *self.first_seen.get_or_insert(now);
        if now - first_seen < WARM_UP_SECS {
            target = target.max(obs.desired_serving);
        }
        // Hold the highest target of the last time-to-ready before scaling down.
        self.recent_targets.push_back((now, target));
        while self
            .recent_targets
            .front()
            .is_some_and(|(t, _)| *t <= now - sizing.time_to_ready)
        {
            self.recent_targets.pop_front();
        }
        let serving = self
            .recent_targets
            .iter()
            .map(|r| r.1)
            .max()
            .unwrap_or(target)
            .clamp(self.config.min, self.config.max);
        Decision { serving, warm: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Observation;
    use inferscale_metrics::fleet::FleetSignals;

    fn config() -> WarmPoolConfig {
        WarmPoolConfig {
            prior_time_to_ready: 120.0,
            prefill_secs_per_token: 1e-4,
            decode_secs_per_token: 1e-3,
            prior_capacity: 0.5,
            slo_ttft_secs: 2.0,
            cost_ratio: 0.001,
            min: 1,
            max: 64,
        }
    }

    fn observation(now: f64, prompt_tokens: f64, arrivals: u64, ready: u32) -> Observation {
        Observation {
            now,
            pods: Vec::new(),
            fleet: FleetSignals::of(&[]),
            ready,
            starting: 0,
            warm: 0,
            desired_serving: ready,
            arrivals_total: arrivals,
            arrival_prompt_tokens_total: prompt_tokens,
            gateway_queue: 0,
            new_ready_durations: Vec::new(),
        }
    }

    #[test]
    fn service_level_follows_cost_ratio() {
        let mut wp = WarmPool::new(config()).unwrap();
        // No requests seen yet: the lower bound.
        assert_eq!(wp.service_level(), 0.5);
        // 10 requests per replica-second: underage 0.001 × 10 × 3600 = 36 → 36 / 37.
        wp.requests_per_work = Some(10.0);
        assert!((wp.service_level() - 36.0 / 37.0).abs() < 1e-12);
        // A tiny ratio (1e-6): 0.036 / 1.036 is under the floor → 0.5.
        wp.config.cost_ratio = 1e-6;
        assert_eq!(wp.service_level(), 0.5);
    }

    #[test]
    fn time_to_ready_is_learned_from_ready_pods() {
        let mut wp = WarmPool::new(config()).unwrap();
        assert_eq!(wp.time_to_ready(), 120.0);
        let mut obs = observation(0.0, 0.0, 0, 1);
        obs.new_ready_durations = (1..=10).map(|i| 100.0 + 10.0 * i as f64).collect();
        wp.decide(&obs);
        // Nearest-rank p90 of 110..=200 is the 9th: 190.
        assert_eq!(wp.time_to_ready(), 190.0);
    }

    #[test]
    fn sizes_by_forecast_plus_burst_over_capacity() {
        let mut wp = WarmPool::new(config()).unwrap();
        wp.level = 1.2;
        wp.trend = 0.0;
        wp.bursts = (0..100).map(|i| (i as f64, i as f64 / 100.0)).collect();
        wp.requests_per_work = Some(10.0);
        // q = 36/37 = 0.973 → nearest rank ceil(97.3) = 98th of 0.00..0.99 → 0.97.
        // (1.2 + 0.97) / 0.5 = 4.34 → 5 replicas.
        let s = wp.sizing();
        assert!((s.burst - 0.97).abs() < 1e-12);
        assert_eq!(s.replicas, 5);
    }

    #[test]
    fn capacity_falls_when_the_objective_is_missed_and_rises_when_easy() {
        let mut wp = WarmPool::new(config()).unwrap();
        // TTFT 3 s > 2 s at 0.4 per replica: target 0.36 → 0.5 + 0.05 × (0.36 − 0.5) = 0.493.
        wp.learn_capacity(0.4, Some(3.0));
        assert!((wp.capacity() - 0.493).abs() < 1e-12);
        // TTFT 0.5 s < 1 s at 0.9 per replica: 0.493 + 0.05 × (0.9 − 0.493) = 0.51335.
        wp.learn_capacity(0.9, Some(0.5));
        assert!((wp.capacity() - 0.51335).abs() < 1e-12);
        // In between, or without a reading: unchanged.
        wp.learn_capacity(5.0, Some(1.5));
        wp.learn_capacity(5.0, None);
        assert!((wp.capacity() - 0.51335).abs() < 1e-12);
    }

    #[test]
    fn scales_down_after_one_time_to_ready_without_load() {
        let mut wp = WarmPool::new(config()).unwrap();
        // A burst: 40k prompt tokens in 5 s = 8k/s × 1e-4 = 0.8 replica-s/s.
        let mut tokens = 0.0;
        let mut arrivals = 0;
        let mut peak = 0;
        let mut last = 0;
        for step in 0..120 {
            let now = step as f64 * 5.0;
            if (20..30).contains(&step) {
                tokens += 40_000.0;
                arrivals += 20;
            }
            let d = wp.decide(&observation(now, tokens, arrivals, last.max(1)));
            assert_eq!(d.warm, 0);
            peak = peak.max(d.serving);
            last = d.serving;
        }
        assert!(peak >= 2, "the burst raised the fleet (peak {peak})");
        // Ten minutes of silence: back to the minimum, no hoarding.
        assert_eq!(last, 1);
    }

    #[test]
    fn nearest_rank_quantile() {
        assert_eq!(quantile(vec![3.0, 1.0, 2.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(vec![3.0, 1.0, 2.0, 4.0], 0.9), Some(4.0));
        assert_eq!(quantile(vec![], 0.9), None);
    }
}
