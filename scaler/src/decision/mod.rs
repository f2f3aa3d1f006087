//! The warm pool's decision core: one pure function, [`decide`], that the simulator's
//! `warm-pool` policy and the live controller (`scaler run`) both call — the simulator is the
//! controller's test bench, not a second copy.
//!
//! Owns: the inputs a controller can build from a live cluster ([`Snapshot`]), the settings a
//! `WarmPool` spec carries ([`Settings`]), the decision's memory ([`State`], plain data the
//! caller owns and may persist), and the answer ([`Recommendation`]): serving replicas, sleepers
//! to wake or put to sleep, placeholders wanted, the forecast with its interval, the expected
//! cost and a reason a person can read. Also the time-to-ready learner both callers use
//! ([`readiness`]) and the demand forecaster ([`forecast`]).
//! Does not own: reading the cluster or the simulated fleet, acting on the answer, or clocks.
//! No Kubernetes, async or I/O types appear here; the same inputs always give the same answer.
//!
//! # The contract
//!
//! ```text
//! decide(&Settings, &mut State, &Snapshot) -> Recommendation
//! ```
//!
//! * Call it every [`Settings::decision_period_secs`] (5 s by default) with a fresh
//!   [`Snapshot`]; `now_secs` is any monotone clock in seconds (Unix time is fine).
//! * [`State::default()`] to start; the state is `serde` (de)serialisable, so a controller may
//!   keep it across restarts (it is also fine to start afresh: the first minute only holds).
//! * Time-to-ready is learned by the caller with [`readiness::TimeToReady`] (one per tier)
//!   from pod lifecycle (created → Ready) and timed wake calls, and passed in as
//!   [`TierTimes`]; its four numbers round-trip through a status.
//! * Sleepers: `serving_replicas` counts awake serving replicas only. Where sleeping replicas
//!   are pods of the workload (vLLM sleep mode in place), the workload's `spec.replicas` is
//!   `serving_replicas + sleeping_wanted`, and [`Capacity::desired_serving`] is `spec.replicas`
//!   minus the sleeping pods.
//! * Demand is rates over the interval since the previous call (requests, prompt tokens and
//!   generated tokens per second). Missing rates make the decision hold the current scale: a
//!   decision never removes capacity on data it does not have.
//! * `serving_replicas` is a recommendation for the workload's `spec.replicas`. A controller
//!   serves it to the HPA as a metric; the HPA takes the max with its reactive metrics, so a
//!   forecast can only add capacity.
//!
//! # How it decides
//!
//! 1. Offered work now (replica-seconds per second): prompt tokens × prefill cost per token +
//!    generated tokens × decode cost per token ([`WorkModel`]), plus the requests waiting in
//!    the engines (throughput saturates while demand queues) as work due within one burst
//!    window at the recent work per request.
//! 2. The forecaster ([`forecast::Forecaster`]) updates a Holt level/trend (and a seasonal
//!    profile when a period is configured) and remembers short-window (burst-grain) samples.
//! 3. Per-replica capacity is learned from the fleet's TTFT p95 against the objective: a miss
//!    at a load lowers it, an easy pass raises it.
//! 4. The horizon is the p95 time-to-ready of a cold start plus one decision period: a
//!    decision stands until the next, whose ask lands one time-to-ready after it, so what is
//!    asked for now must serve until then. The remembered burst-grain
//!    windows, each scaled by the baseline forecast at the horizon over the baseline it was
//!    seen at (a slow ~5 min Holt, seasonal when configured), are the scenarios; for every candidate
//!    replica count `n` the expected cost per hour is `n × GPU price + miss price × expected
//!    misses per hour`, where a window of `L` seconds with work `w` has the share
//!    `n × capacity × (L + objective) / (w × L)` of its requests served in time (all of them
//!    when that is ≥ 1: an isolated burst may queue up to the objective). The cheapest `n` that also
//!    meets the attainment objective (when any does) is the target; never below what the
//!    smoothed level needs now, nor — while the fleet's TTFT p95 is over the objective — the
//!    ready replicas scaled by how far over it is, nor what a **ramp** needs one horizon
//!    ahead: when the requests in flight (running + waiting, gauges with no averaging window)
//!    rise along a least-squares line over the last p95 time-to-ready (at least three
//!    periods) that explains ≥ 80 % of their variance ([`forecast::Forecaster::ramp`]), the
//!    measured work is grown by the line's value one horizon ahead over the mean in flight
//!    over the window the rates were measured over ([`Demand::rate_window_secs`]). No cap on
//!    that growth: the count it divides by is measured, not a line's value where the ramp had
//!    not started (near zero or below at a ramp's onset — what a cap had to bound); the line
//!    is carried one period further than it was fitted over, and the bounds' maximum holds.
//!    Neither the level
//!    (~50 s memory) nor the
//!    scenarios (their baseline's slope needs half its 5 min memory) can see a ramp younger
//!    than that in time for a cold start. The fast (derivative) term only wakes sleepers: a
//!    cold start lands long after a burst of seconds is over.
//! 5. Scale-down waits one median time-to-ready (ski rental: a replica released and needed
//!    again within a cold start costs more than keeping it).
//! 6. Tiers: a sleeping replica (vLLM sleep mode) and a placeholder (a low-priority pod that
//!    keeps a GPU node) hold a GPU as a serving replica does, so by default they are priced
//!    like one ([`TierSetting::price_share`] = 1) and the warm capacity is kept awake — faster
//!    for the same money. Only when a tier is configured cheaper does the decision keep the
//!    capacity it holds for a cold start's sake (step 5) asleep, and the forecast's upper
//!    interval as placeholders. Wake-before-scale: when more serving replicas are needed,
//!    sleepers are woken before new pods are asked for.

pub mod forecast;
pub mod readiness;

use forecast::{Estimate, ForecastSettings, Forecaster};
use readiness::TimeToReady;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt::Write as _;

/// Default decision period: as often as the adapter's direct scrape refreshes.
pub const DEFAULT_DECISION_PERIOD_SECS: f64 = 5.0;
/// Seconds after the first decision during which the decision never goes below the current
/// scale: until it has seen a full burst window and a few level updates, its demand estimate
/// starts from zero, and acting on that would drop a sized fleet.
pub const WARM_UP_SECS: f64 = 60.0;
/// Learning rate of the per-replica capacity per decision: ~20 decisions (100 s) to move most
/// of the way — slower than a burst, faster than a trace's hour.
const CAPACITY_LEARNING_RATE: f64 = 0.05;
/// Bounds of the learned capacity relative to the prior: the work model may be off by a
/// constant factor (a controller's default token costs for an unknown model and GPU), but a
/// capacity learned below a fifth of the prior has been fooled by a cold fleet, and above
/// three times it by a fleet that never saw load.
const CAPACITY_BOUNDS: (f64, f64) = (0.2, 3.0);
/// TTFT p95 below this share of the objective counts as "easily met" and lets the capacity
/// rise toward the load that met it.
const COMFORTABLE_SHARE_OF_OBJECTIVE: f64 = 0.5;
/// Shortest span a ramp is fitted over, in decision periods, where the horizon is shorter:
/// it then holds four samples, one more than the fewest a fit is tried on.
const RAMP_MIN_SPAN_PERIODS: f64 = 3.0;

/// The latency objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// Time to first token a request must meet, seconds.
    pub ttft_secs: f64,
    /// Share of requests that must meet it (0.95 for a p95 objective).
    pub attainment: f64,
}

/// Prices. Only their ratio matters to the decision; both are kept so the expected cost reads
/// in money.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Price of one serving replica (its GPUs) per hour.
    pub gpu_price_per_replica_hour: f64,
    /// Price of one request that misses the objective.
    pub miss_price: f64,
}

impl Cost {
    /// Settings from a GPU price and the ratio (miss price / GPU-hour price).
    pub fn from_ratio(gpu_price_per_replica_hour: f64, ratio: f64) -> Cost {
        Cost {
            gpu_price_per_replica_hour,
            miss_price: gpu_price_per_replica_hour * ratio,
        }
    }
}

/// Whether a warm tier may be used, what it costs and how many.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TierSetting {
    pub enabled: bool,
    /// Price of a replica in this tier per hour, as a share of a serving replica's. A
    /// sleeping vLLM and a placeholder pod both hold their GPUs, so 1.0 is the honest default;
    /// lower only where that GPU really is cheaper (shared with batch work, a cheaper pool).
    pub price_share: f64,
    /// Most replicas kept in this tier.
    pub max: u32,
}

impl TierSetting {
    pub const OFF: TierSetting = TierSetting {
        enabled: false,
        price_share: 1.0,
        max: 0,
    };

    fn cheaper(&self) -> bool {
        self.enabled && self.max > 0 && self.price_share < 1.0
    }
}

/// The readiness tiers below "awake".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tiers {
    /// vLLM sleep mode: GPU held, weights offloaded, seconds to wake.
    pub sleeping: TierSetting,
    /// A low-priority pod holding a GPU node: a real replica preempts it and skips node
    /// provisioning.
    pub placeholder: TierSetting,
}

/// Replica bounds (the HPA's min/max).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub min_replicas: u32,
    pub max_replicas: u32,
}

/// What a token costs a replica, in replica-seconds, and the capacity assumed before any is
/// learned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WorkModel {
    /// Replica-seconds one prompt token costs (prefill is compute-bound).
    pub prefill_secs_per_token: f64,
    /// Replica-seconds one generated token costs in a busy batch.
    pub decode_secs_per_token: f64,
    /// Work one replica sustains within the objective (replica-seconds per second) until the
    /// decision has learned it from the fleet's TTFT; the learned value stays within 0.2–3×
    /// of this.
    pub prior_capacity: f64,
}

/// Everything the decision is configured with (a `WarmPool` spec).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub objective: Objective,
    pub cost: Cost,
    pub tiers: Tiers,
    pub bounds: Bounds,
    pub work: WorkModel,
    pub forecast: ForecastSettings,
    /// Seconds between calls: the horizon is one p95 cold start plus this (what a decision
    /// asks for must serve until the next decision's ask lands), and a ramp is fitted over
    /// at least three of them.
    pub decision_period_secs: f64,
}

/// Why settings were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// A value is out of range; the message names it.
    #[error("warm-pool settings: {0}")]
    OutOfRange(&'static str),
}

impl Settings {
    /// Checks every value; the first problem is reported.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let check = |ok: bool, what: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(SettingsError::OutOfRange(what))
            }
        };
        check(
            positive(self.objective.ttft_secs),
            "objective TTFT must be positive",
        )?;
        check(
            self.objective.attainment > 0.0 && self.objective.attainment <= 1.0,
            "objective attainment must be in (0, 1]",
        )?;
        check(
            positive(self.cost.gpu_price_per_replica_hour),
            "GPU price must be positive",
        )?;
        check(
            self.cost.miss_price.is_finite() && self.cost.miss_price >= 0.0,
            "miss price must be non-negative",
        )?;
        check(
            self.bounds.min_replicas >= 1 && self.bounds.min_replicas <= self.bounds.max_replicas,
            "need 1 <= min replicas <= max replicas",
        )?;
        check(
            positive(self.work.prefill_secs_per_token) && positive(self.work.decode_secs_per_token),
            "token costs must be positive",
        )?;
        check(
            positive(self.work.prior_capacity),
            "prior capacity must be positive",
        )?;
        for tier in [self.tiers.sleeping, self.tiers.placeholder] {
            check(
                tier.price_share.is_finite() && (0.0..=1.0).contains(&tier.price_share),
                "tier price share must be in [0, 1]",
            )?;
        }
        check(
            positive(self.forecast.burst_window_secs) && positive(self.forecast.memory_secs),
            "forecast windows must be positive",
        )?;
        check(
            positive(self.decision_period_secs),
            "decision period must be positive",
        )
    }
}

/// Demand over the interval since the previous call, per second; `None` when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Demand {
    pub request_rate: Option<f64>,
    pub prompt_token_rate: Option<f64>,
    pub generation_token_rate: Option<f64>,
    /// Seconds the rates were measured over (the custom metrics API's `windowSeconds`); a
    /// rate over `w` seconds lags a ramp by `w/2`. `None` when unknown: no lag assumed.
    #[serde(default)]
    pub rate_window_secs: Option<f64>,
}

/// Fleet signals as the adapter serves them for the workload; `None` when missing.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ServingSignals {
    /// Requests waiting in the engines, fleet total.
    pub queue_depth: Option<f64>,
    /// Requests running, fleet total.
    pub running: Option<f64>,
    /// KV-cache usage, fleet mean (0–1).
    pub kv_cache_usage: Option<f64>,
    /// Fleet TTFT p95 over the adapter's window, seconds.
    pub ttft_p95_secs: Option<f64>,
}

/// A readiness tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Serving and Ready (0 s).
    Awake,
    /// vLLM sleep mode (seconds to wake).
    Sleeping,
    /// A placeholder pod keeps the node (a new replica skips node provisioning).
    Placeholder,
    /// Nothing held (a full cold start).
    Cold,
}

/// A serving pod that is not Ready yet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// Seconds since it was created (or since its wake call).
    pub age_secs: f64,
    /// Where it comes from: `Cold`, `Placeholder` (preempted one) or `Sleeping` (waking).
    pub from: Tier,
}

/// Capacity by tier right now.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Capacity {
    /// Serving replicas asked for now: the workload's `spec.replicas`, minus its sleeping pods
    /// where sleepers are pods of the workload.
    pub desired_serving: u32,
    /// Serving replicas that are Ready.
    pub ready: u32,
    /// Serving replicas not Ready yet (starting or waking).
    pub pending: Vec<Pending>,
    /// Replicas asleep.
    pub sleeping: u32,
    /// Placeholder pods holding a node (scheduled or pending).
    pub placeholders: u32,
}

/// Learned time-to-ready per tier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TierTimes {
    /// Created → Ready on a node that must be provisioned.
    pub cold: TimeToReady,
    /// Created → Ready on a node a placeholder kept.
    pub placeholder: TimeToReady,
    /// Wake call → Ready.
    pub wake: TimeToReady,
}

/// What the decision sees at one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Seconds on a monotone clock.
    pub now_secs: f64,
    pub demand: Demand,
    pub signals: ServingSignals,
    pub capacity: Capacity,
    pub time_to_ready: TierTimes,
}

/// What the decision did, as a closed set (for metrics labels and Events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    ScaleUp,
    ScaleDown,
    Wake,
    Hold,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ScaleUp => "scale_up",
            Action::ScaleDown => "scale_down",
            Action::Wake => "wake",
            Action::Hold => "hold",
        }
    }
}

/// The forecast a decision used.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Forecast {
    /// How far ahead, seconds (the p95 cold start).
    pub horizon_secs: f64,
    /// Offered work, replica-seconds per second (interval: 5–95 % of burst-grain windows).
    pub work: Estimate,
    /// Requests per second.
    pub request_rate: Estimate,
}

/// The expected cost of the recommendation, per hour.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ExpectedCost {
    /// GPUs held (serving, sleeping, placeholders at their price shares).
    pub gpu_per_hour: f64,
    /// Requests expected to miss the objective per hour.
    pub misses_per_hour: f64,
    /// `misses_per_hour × miss price`.
    pub miss_cost_per_hour: f64,
    pub total_per_hour: f64,
    /// Expected share of requests within the objective.
    pub attainment: f64,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Recommended awake serving replicas (sleepers not included: see the module docs).
    pub serving_replicas: u32,
    /// Sleeping replicas to wake now (before asking for new pods).
    pub wake: u32,
    /// Serving replicas to put to sleep instead of deleting them.
    pub put_to_sleep: u32,
    /// Size of the sleeping pool wanted.
    pub sleeping_wanted: u32,
    /// Placeholder pods wanted.
    pub placeholders_wanted: u32,
    pub forecast: Forecast,
    pub expected_cost: ExpectedCost,
    /// Learned per-replica capacity (replica-seconds of work per second).
    pub capacity_per_replica: f64,
    pub action: Action,
    /// One line a person can read: what was seen, what was chosen, why.
    pub reason: String,
}

/// The decision's memory between calls.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    forecaster: Forecaster,
    /// Learned per-replica capacity; `None` until the first call sets the prior.
    capacity: Option<f64>,
    /// Recent targets, to hold the highest for one time-to-ready: (time, replicas).
    holds: VecDeque<(f64, u32)>,
    first_at: Option<f64>,
}

impl State {
    /// The forecaster's state (for inspection and tests).
    pub fn forecaster(&self) -> &Forecaster {
        &self.forecaster
    }
}

/// Offered work per second from the demand rates; `None` when nothing is known.
pub fn offered_work(work: &WorkModel, demand: &Demand) -> Option<f64> {
    let prompt = demand.prompt_token_rate?;
    let generated = demand.generation_token_rate.unwrap_or(0.0);
    Some(
        prompt.max(0.0) * work.prefill_secs_per_token
            + generated.max(0.0) * work.decode_secs_per_token,
    )
}

/// Expected misses per second of a fleet of `n` replicas of `capacity` each against scenarios
/// of (work, request) rates measured over windows of `window` seconds, with a TTFT objective
/// of `objective` seconds: the fleet clears a window's work by the deadline of its last
/// request if `n × capacity × (window + objective) ≥ work × window` (an isolated burst may
/// queue for up to the objective); a window with more work misses the excess share of its
/// requests. (Sustained load gets no such slack: see the level floor in [`decide`].)
pub fn expected_misses_per_sec(
    scenarios: &[(f64, f64)],
    n: f64,
    capacity: f64,
    window: f64,
    objective: f64,
) -> f64 {
    if scenarios.is_empty() {
        return 0.0;
    }
    let sustained = n * capacity * (window + objective) / window.max(1e-9);
    scenarios
        .iter()
        .map(|&(work, requests)| {
            if work <= sustained {
                0.0
            } else {
                requests * (1.0 - sustained / work)
            }
        })
        .sum::<f64>()
        / scenarios.len() as f64
}

fn learn_capacity(capacity: f64, objective: f64, load_per_replica: f64, ttft_p95: f64) -> f64 {
    let target = if ttft_p95 > objective {
        // Missed at this load: a replica sustains less than it was given.
        (0.9 * load_per_replica).min(capacity)
    } else if ttft_p95 < COMFORTABLE_SHARE_OF_OBJECTIVE * objective {
        // Easily met at this load: at least this much is sustainable.
        load_per_replica.max(capacity)
    } else {
        capacity
    };
    capacity + CAPACITY_LEARNING_RATE * (target - capacity)
}

/// The decision. See the module docs for the contract and the method.
pub fn decide(settings: &Settings, state: &mut State, snapshot: &Snapshot) -> Recommendation {
    let now = snapshot.now_secs;
    let capacity = &snapshot.capacity;
    let bounds = settings.bounds;
    let first_at = *state.first_at.get_or_insert(now);
    let mut reason = String::new();

    // 1–2. Demand, forecast.
    let work_now = offered_work(&settings.work, &snapshot.demand);
    let Some(work_now) = work_now else {
        let serving = capacity
            .desired_serving
            .clamp(bounds.min_replicas, bounds.max_replicas);
        return Recommendation {
            serving_replicas: serving,
            wake: 0,
            put_to_sleep: 0,
            sleeping_wanted: capacity.sleeping,
            placeholders_wanted: capacity.placeholders,
            forecast: Forecast::default(),
            expected_cost: ExpectedCost::default(),
            capacity_per_replica: state.capacity.unwrap_or(settings.work.prior_capacity),
            action: Action::Hold,
            reason: format!("demand rates missing: holding {serving} serving replicas"),
        };
    };
    let requests_now = snapshot.demand.request_rate.unwrap_or(0.0);
    // In a cluster the rates are throughput (vLLM counts prompt tokens as it prefills), which
    // stops rising once the fleet is full. Requests waiting in the engines are demand too:
    // counted as work due within one burst window, at the recent work per request.
    let queued = snapshot.signals.queue_depth.unwrap_or(0.0).max(0.0);
    let per_request = state.forecaster.work_per_request().unwrap_or(0.0);
    let queued_work = queued * per_request / settings.forecast.burst_window_secs;
    let rate_work = work_now;
    let work_now = work_now + queued_work;
    if queued_work > 0.0 {
        let _ = write!(
            reason,
            "{queued:.0} queued count as {queued_work:.2} of work; "
        );
    }
    state
        .forecaster
        .observe(&settings.forecast, now, work_now, requests_now);
    if let Some(running) = snapshot.signals.running {
        state
            .forecaster
            .observe_in_flight(&settings.forecast, now, running.max(0.0) + queued);
    }

    // 3. Per-replica capacity.
    let prior = settings.work.prior_capacity;
    let bounds_of_cap = (prior * CAPACITY_BOUNDS.0, prior * CAPACITY_BOUNDS.1);
    let mut cap = state
        .capacity
        .unwrap_or(prior)
        .clamp(bounds_of_cap.0, bounds_of_cap.1);
    if let (Some(ttft), true) = (snapshot.signals.ttft_p95_secs, capacity.ready > 0) {
        let window_work = state
            .forecaster
            .latest_window()
            .map_or(work_now, |w| w.work);
        cap = learn_capacity(
            cap,
            settings.objective.ttft_secs,
            window_work / capacity.ready as f64,
            ttft,
        )
        .clamp(bounds_of_cap.0, bounds_of_cap.1);
    }
    state.capacity = Some(cap);

    // 4. Forecast over the cold-start horizon and the cheapest fleet for its scenarios. A
    // decision stands until the next one, and what it asks for lands one time-to-ready after
    // it: the capacity asked for now must serve until what the next decision asks for lands,
    // one p95 cold start plus one decision period ahead.
    let times = &snapshot.time_to_ready;
    let horizon = times.cold.p95() + settings.decision_period_secs;
    let fs = &settings.forecast;
    let (work_forecast, request_forecast) = state.forecaster.estimate(fs, now, horizon);
    let scenarios = state.forecaster.scenarios(fs, now, horizon);
    let request_rate = if scenarios.is_empty() {
        0.0
    } else {
        scenarios.iter().map(|s| s.1).sum::<f64>() / scenarios.len() as f64
    };
    let price = settings.cost.gpu_price_per_replica_hour;
    let window = fs.burst_window_secs;
    let objective = settings.objective.ttft_secs;
    let cost_of = |n: u32| {
        let misses = expected_misses_per_sec(&scenarios, n as f64, cap, window, objective) * 3600.0;
        n as f64 * price + misses * settings.cost.miss_price
    };
    let attainment_of = |n: u32| {
        if request_rate <= 0.0 {
            return 1.0;
        }
        1.0 - expected_misses_per_sec(&scenarios, n as f64, cap, window, objective) / request_rate
    };
    let cheapest = (bounds.min_replicas..=bounds.max_replicas)
        .min_by(|&a, &b| cost_of(a).total_cmp(&cost_of(b)).then(a.cmp(&b)))
        .unwrap_or(bounds.min_replicas);
    let meets = (bounds.min_replicas..=bounds.max_replicas)
        .find(|&n| attainment_of(n) >= settings.objective.attainment);
    let by_cost = match meets {
        Some(n) => cheapest.max(n),
        None => cheapest,
    };
    // Never below what the smoothed level needs now, nor what the fast term needs by the time
    // a wake (the quickest capacity) could land.
    // Never below what the smoothed level needs now. The fast (derivative) term asks only for
    // capacity that lands in time: a wake takes seconds, a cold start minutes, so a burst of
    // seconds justifies waking a sleeper but never a new pod (it would arrive after the burst
    // and be held for a cold start: the waste a reactive policy pays).
    let level_needs = (state.forecaster.level() / cap).ceil() as u32;
    let fast_needs = (state.forecaster.fast(times.wake.p95()) / cap).ceil() as u32;
    // The fleet's TTFT p95 over the objective is shortfall measured, whatever the model
    // says: ask for the ready replicas scaled by how far it is over (an HPA's ratio rule on
    // the objective itself).
    let pressure_needs = match snapshot.signals.ttft_p95_secs {
        Some(p95) if p95 > settings.objective.ttft_secs && capacity.ready > 0 => {
            (capacity.ready as f64 * p95 / settings.objective.ttft_secs).ceil() as u32
        }
        _ => 0,
    };
    // A ramp in the requests in flight (gauges, no averaging window), fitted over the last
    // p95 time-to-ready (a longer span takes in the flat before a young ramp and fails the
    // fit): the measured work grown along it to the horizon, by the in-flight count on the
    // line then over the one the rates were measured at (the mean over their window). The
    // level and the scenarios cannot see it in time: the Holt level lags a ramp by its ~50 s
    // memory, the baseline's slope needs half its 5 min memory, and the rates lag by half
    // their window.
    let ramp = state.forecaster.ramp(
        now,
        times
            .cold
            .p95()
            .max(RAMP_MIN_SPAN_PERIODS * settings.decision_period_secs),
        snapshot.demand.rate_window_secs.unwrap_or(0.0),
        horizon,
    );
    let ramp_work = ramp.map(|r| rate_work * r.growth + queued_work);
    let ramp_needs = ramp_work.map_or(0, |w| (w / cap).ceil() as u32);
    let mut target = by_cost.max(level_needs).max(pressure_needs).max(ramp_needs);
    let _ = write!(
        reason,
        "work {:.2} now, {:.2} forecast in {:.0} s (90% in {:.2}–{:.2}); capacity {:.2}/replica; \
         {} minimise GPU + miss cost",
        work_now,
        work_forecast.expected,
        horizon,
        work_forecast.low,
        work_forecast.high,
        cap,
        by_cost
    );
    if pressure_needs > by_cost.max(level_needs).max(ramp_needs) {
        let _ = write!(
            reason,
            "; {pressure_needs} because TTFT p95 is over the objective"
        );
    } else if let (Some(r), Some(w), true) =
        (ramp, ramp_work, ramp_needs > by_cost.max(level_needs))
    {
        let _ = write!(
            reason,
            "; {ramp_needs} for the ramp (in flight rising {:.2}/s: work {w:.2} in {horizon:.0} s)",
            r.slope
        );
    } else if target > by_cost {
        let _ = write!(reason, "; {target} for the load arriving now");
    }
    if now - first_at < WARM_UP_SECS && target < capacity.desired_serving {
        target = capacity.desired_serving;
        let _ = write!(reason, "; warming up: not below {target}");
    }
    target = target.clamp(bounds.min_replicas, bounds.max_replicas);

    // 5. Hold the highest target of the last median cold start before scaling down.
    let hold_for = times.cold.p50();
    state.holds.push_back((now, target));
    while state.holds.front().is_some_and(|h| h.0 <= now - hold_for) {
        state.holds.pop_front();
    }
    let held = state.holds.iter().map(|h| h.1).max().unwrap_or(target);

    // 6. Tiers.
    let tiers = settings.tiers;
    let (serving, sleeping_wanted) = if held > target && tiers.sleeping.cheaper() {
        let asleep = (held - target).min(tiers.sleeping.max);
        (held - asleep, asleep)
    } else {
        (held, 0)
    };
    if held > target {
        let _ = write!(
            reason,
            "; holding {held} for {:.0} s before scaling down",
            hold_for
        );
    }
    let placeholders_wanted = if tiers.placeholder.cheaper() {
        let upper = (work_forecast.high / cap).ceil() as u32;
        upper
            .saturating_sub(serving + sleeping_wanted)
            .min(tiers.placeholder.max)
    } else {
        0
    };
    if (tiers.sleeping.enabled && !tiers.sleeping.cheaper())
        || (tiers.placeholder.enabled && !tiers.placeholder.cheaper())
    {
        reason.push_str("; warm capacity kept awake (a sleeping or placeholder GPU costs as much)");
    }
    let serving_now = capacity.ready + capacity.pending.len() as u32;
    let wanted_now = serving.max(fast_needs.min(bounds.max_replicas));
    let wake = wanted_now
        .saturating_sub(serving_now)
        .min(capacity.sleeping);
    let serving = if wake > 0 {
        serving.max((serving_now + wake).min(bounds.max_replicas))
    } else {
        serving
    };
    let put_to_sleep = if sleeping_wanted > capacity.sleeping {
        capacity
            .desired_serving
            .saturating_sub(serving)
            .min(sleeping_wanted - capacity.sleeping)
    } else {
        0
    };
    let action = if wake > 0 {
        Action::Wake
    } else if serving > capacity.desired_serving {
        Action::ScaleUp
    } else if serving < capacity.desired_serving {
        Action::ScaleDown
    } else {
        Action::Hold
    };
    if wake > 0 {
        let _ = write!(reason, "; waking {wake} sleeping before starting new pods");
    }

    // Expected cost of what is recommended.
    let misses_per_hour =
        expected_misses_per_sec(&scenarios, serving as f64, cap, window, objective) * 3600.0;
    let gpu_per_hour = price
        * (serving as f64
            + sleeping_wanted as f64 * tiers.sleeping.price_share
            + placeholders_wanted as f64 * tiers.placeholder.price_share);
    let miss_cost_per_hour = misses_per_hour * settings.cost.miss_price;
    Recommendation {
        serving_replicas: serving,
        wake,
        put_to_sleep,
        sleeping_wanted,
        placeholders_wanted,
        forecast: Forecast {
            horizon_secs: horizon,
            work: work_forecast,
            request_rate: request_forecast,
        },
        expected_cost: ExpectedCost {
            gpu_per_hour,
            misses_per_hour,
            miss_cost_per_hour,
            total_per_hour: gpu_per_hour + miss_cost_per_hour,
            attainment: attainment_of(serving),
        },
        capacity_per_replica: cap,
        action,
        reason,
    }
}

#[cfg(test)]
mod tests;
