//! inferscale's warm-pool policy in the simulator: a thin adapter from what the simulated
//! cluster shows ([`Observation`]) to the decision core's [`Snapshot`], and from its
//! [`Recommendation`] back to a [`Decision`]. The decision itself is
//! [`crate::decision::decide`] — the very function the live controller calls.
//!
//! Owns: what a controller in the cluster would do around the decision — learn time-to-ready
//! per tier from pods that became ready ([`TimeToReady`]), turn the gateway's counters
//! into rates over the decision period, and keep the decision's [`State`].
//! Does not own: the decision (see [`crate::decision`]) or acting on it (see [`crate::replay`]).
//!
//! Demand comes from the gateway's counters (requests and prompt tokens as they arrive, over
//! the 5 s decision period) and the generated-token rate from the metrics engine. A controller
//! in a cluster has no gateway counter: it passes vLLM's throughput rates from the adapter and
//! the queue depth, which the decision adds back as demand — the one input path this bench
//! does not exercise (see `decision::tests::queued_requests_count_as_demand`).

use super::{Decision, Policy, PolicyError};
use crate::decision::readiness::TimeToReady;
use crate::decision::{
    decide, Capacity, Demand, Recommendation, ServingSignals, Settings, Snapshot, State, Tier,
    TierTimes, DEFAULT_DECISION_PERIOD_SECS,
};
use crate::observe::{Observation, SignalPath};

/// Default cost ratio: a request that misses the objective costs 1/1000 of a GPU-hour
/// (0.25 cents at 2.5/GPU-hour) — an interactive product where a slow answer is a lost one
/// but no single request is worth a GPU.
pub const DEFAULT_COST_RATIO: f64 = 0.001;

/// Default prior capacity: a replica more than ~half busy with prefill makes new prompts wait
/// behind others' chunks, which is what TTFT objectives of ~1–2 s cannot absorb.
pub const DEFAULT_WARM_POOL_UTILISATION: f64 = 0.5;

/// Where the warm pool's demand comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemandSource {
    /// A gateway's counters of arrivals and their prompt tokens, differenced over each decision
    /// period: demand as it arrives, queued requests included. No component of a cluster that
    /// runs inferscale has them today; this is the bench's optimistic input.
    Gateway,
    /// What the live controller reads from inferscale's adapter: the fleet's prompt-token,
    /// generated-token and finished-request rates over the adapter's window (throughput, which
    /// stops rising once the fleet is full) and the requests waiting in the engines (which the
    /// decision adds back as demand).
    Adapter,
}

/// The warm-pool policy: the decision core plus the learning a controller does around it.
#[derive(Debug, Clone)]
pub struct WarmPool {
    settings: Settings,
    source: DemandSource,
    state: State,
    cold: TimeToReady,
    placeholder: TimeToReady,
    wake: TimeToReady,
    /// Gateway counters at the previous decision: (time, prompt tokens, arrivals).
    last: Option<(f64, f64, u64)>,
    last_recommendation: Option<Recommendation>,
}

impl WarmPool {
    /// A warm pool with these settings and prior time-to-ready per tier.
    pub fn new(settings: Settings, priors: TierTimes) -> Result<WarmPool, PolicyError> {
        settings
            .validate()
            .map_err(|_| PolicyError::InvalidParameter {
                policy: "warm-pool",
                reason: "settings out of range (see decision::Settings::validate)",
            })?;
        Ok(WarmPool {
            settings,
            source: DemandSource::Gateway,
            state: State::default(),
            cold: priors.cold,
            placeholder: priors.placeholder,
            wake: priors.wake,
            last: None,
            last_recommendation: None,
        })
    }

    /// The same warm pool reading its demand from `source`.
    pub fn reading(mut self, source: DemandSource) -> WarmPool {
        self.source = source;
        self
    }

    /// The latest recommendation (forecast, expected cost, reason).
    pub fn last_recommendation(&self) -> Option<&Recommendation> {
        self.last_recommendation.as_ref()
    }

    /// Learned cold-start time.
    pub fn time_to_ready(&self) -> TimeToReady {
        self.cold
    }

    /// The snapshot a controller would build from what this observation shows.
    fn snapshot(&mut self, obs: &Observation) -> Snapshot {
        for &(tier, secs) in &obs.new_ready_durations {
            match tier {
                Tier::Cold => self.cold.observe(secs),
                Tier::Placeholder => self.placeholder.observe(secs),
                Tier::Sleeping => self.wake.observe(secs),
                Tier::Awake => false,
            };
        }
        let rates = match self.last {
            Some((t, tokens, arrivals)) if obs.now > t => Some((
                (obs.arrival_prompt_tokens_total - tokens).max(0.0) / (obs.now - t),
                obs.arrivals_total.saturating_sub(arrivals) as f64 / (obs.now - t),
                obs.now - t,
            )),
            _ => None,
        };
        self.last = Some((obs.now, obs.arrival_prompt_tokens_total, obs.arrivals_total));
        let fleet = &obs.fleet;
        let (demand, queue_depth) = match self.source {
            // The first call has no previous counters: the rates are unknown (the decision
            // holds), not zero. Arrivals already include the demand that is queueing, so no
            // queue depth is passed (it would count the queue twice).
            DemandSource::Gateway => (
                Demand {
                    request_rate: rates.map(|r| r.1),
                    prompt_token_rate: rates.map(|r| r.0),
                    generation_token_rate: rates
                        .map(|_| fleet.generation_token_rate.sum.value().unwrap_or(0.0)),
                    // Counted over the interval since the previous call.
                    rate_window_secs: rates.map(|r| r.2),
                },
                None,
            ),
            // A fleet with no pod reporting yet has no rates: missing, as the adapter says.
            DemandSource::Adapter => (
                Demand {
                    request_rate: fleet.request_rate.sum.value(),
                    prompt_token_rate: fleet.prompt_token_rate.sum.value(),
                    generation_token_rate: fleet.generation_token_rate.sum.value(),
                    rate_window_secs: Some(self.signal_path().window()),
                },
                fleet.queue_depth.sum.value(),
            ),
        };
        Snapshot {
            now_secs: obs.now,
            demand,
            signals: ServingSignals {
                queue_depth,
                running: fleet.running.sum.value(),
                kv_cache_usage: fleet.kv_cache_usage.mean.value(),
                ttft_p95_secs: fleet.time_to_first_token.p95.value(),
            },
            capacity: Capacity {
                desired_serving: obs.desired_serving,
                ready: obs.ready,
                pending: obs.pending.clone(),
                sleeping: obs.sleeping,
                placeholders: obs.placeholders,
            },
            time_to_ready: TierTimes {
                cold: self.cold,
                placeholder: self.placeholder,
                wake: self.wake,
            },
        }
    }
}

impl Policy for WarmPool {
    fn name(&self) -> &str {
        "warm-pool"
    }

    fn signal_path(&self) -> SignalPath {
        SignalPath::Direct
    }

    fn decision_period(&self) -> f64 {
        self.settings.decision_period_secs
    }

    fn decide(&mut self, obs: &Observation) -> Decision {
        let snapshot = self.snapshot(obs);
        let r = decide(&self.settings, &mut self.state, &snapshot);
        let decision = Decision {
            serving: r.serving_replicas,
            sleeping: r.sleeping_wanted,
            placeholders: r.placeholders_wanted,
            activator: None,
        };
        self.last_recommendation = Some(r);
        decision
    }
}

/// The decision period the simulator uses for the warm pool.
pub const WARM_POOL_PERIOD_SECS: f64 = DEFAULT_DECISION_PERIOD_SECS;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decision::forecast::ForecastSettings;
    use crate::decision::{Bounds, Cost, Objective, TierSetting, Tiers, WorkModel};
    use inferscale_metrics::fleet::FleetSignals;

    fn policy() -> WarmPool {
        policy_with(DEFAULT_COST_RATIO, 1)
    }

    /// A warm pool with a 2 s objective, no sleeping or placeholder tier, a 120 s cold start
    /// and `cost_ratio`, over `[min, 64]`.
    pub(crate) fn policy_with(cost_ratio: f64, min: u32) -> WarmPool {
        WarmPool::new(
            Settings {
                objective: Objective {
                    ttft_secs: 2.0,
                    attainment: 0.5,
                },
                cost: Cost::from_ratio(2.5, cost_ratio),
                tiers: Tiers {
                    sleeping: TierSetting::OFF,
                    placeholder: TierSetting::OFF,
                },
                bounds: Bounds {
                    min_replicas: min,
                    max_replicas: 64,
                },
                work: WorkModel {
                    prefill_secs_per_token: 1e-4,
                    decode_secs_per_token: 1e-3,
                    prior_capacity: 0.5,
                },
                forecast: ForecastSettings::default(),
                decision_period_secs: 5.0,
            },
            TierTimes {
                cold: TimeToReady::prior(120.0),
                placeholder: TimeToReady::prior(48.0),
                wake: TimeToReady::prior(2.0),
            },
        )
        .unwrap()
    }

    /// `ready` pods and the gateway's counters at `now`; no pod reports anything.
    pub(crate) fn observation(
        now: f64,
        prompt_tokens: f64,
        arrivals: u64,
        ready: u32,
    ) -> Observation {
        Observation {
            now,
            pods: Vec::new(),
            fleet: FleetSignals::of(&[]),
            ready,
            starting: 0,
            sleeping: 0,
            placeholders: 0,
            pending: Vec::new(),
            desired_serving: ready,
            arrivals_total: arrivals,
            arrival_prompt_tokens_total: prompt_tokens,
            gateway_queue: 0,
            new_ready_durations: Vec::new(),
        }
    }

    #[test]
    fn time_to_ready_is_learned_per_tier_from_ready_pods() {
        let mut wp = policy();
        assert!((wp.time_to_ready().p50() - 120.0).abs() < 1e-9);
        let mut obs = observation(0.0, 0.0, 0, 1);
        obs.new_ready_durations = vec![
            (Tier::Cold, 100.0),
            (Tier::Cold, 400.0),
            (Tier::Sleeping, 3.0),
        ];
        wp.decide(&obs);
        // Median of the logs of 100 and 400: 200.
        assert!((wp.time_to_ready().p50() - 200.0).abs() < 1e-9);
        assert_eq!(wp.wake.samples, 1);
        assert_eq!(wp.placeholder.samples, 0);
    }

    #[test]
    fn gateway_counters_become_rates_over_the_period() {
        let mut wp = policy();
        wp.decide(&observation(0.0, 0.0, 0, 1));
        // 50,000 prompt tokens and 10 requests in 5 s: 10,000 tokens/s × 1e-4 = 1.0 of work.
        wp.decide(&observation(5.0, 50_000.0, 10, 1));
        let r = wp.last_recommendation().unwrap();
        assert!(r.reason.starts_with("work 1.00 now"), "{}", r.reason);
    }

    #[test]
    fn scales_down_after_a_burst_without_hoarding() {
        let mut wp = policy();
        let mut tokens = 0.0;
        let mut arrivals = 0;
        let mut peak = 0;
        let mut last = 1;
        for step in 0..160 {
            let now = step as f64 * 5.0;
            if (20..30).contains(&step) {
                tokens += 40_000.0;
                arrivals += 20;
            }
            let d = wp.decide(&observation(now, tokens, arrivals, last));
            assert_eq!((d.sleeping, d.placeholders), (0, 0));
            peak = peak.max(d.serving);
            last = d.serving;
        }
        assert!(peak >= 2, "the burst raised the fleet (peak {peak})");
        assert_eq!(last, 1, "back to the minimum after the bursts aged out");
    }
}
