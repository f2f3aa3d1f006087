//! The discrete-event fleet simulator: replays a trace against one policy.
//!
//! Owns: simulated time and the event queue, pod lifecycle (cold start drawn from the
//! time-to-ready distribution, vLLM sleep and wake, draining), routing at the gateway, the
//! scrape and decision ticks, acting on [`Decision`]s, GPU-time accounting and the per-request
//! ground truth summarised in a [`RunResult`].
//! Does not own: what happens inside an engine step ([`crate::replica`]), what a policy
//! decides ([`crate::policy`]) or how results are printed ([`crate::report`]).
//!
//! Costs: a pod holds a GPU from the moment it is created until it is deleted, whatever it is
//! doing (starting, serving, draining, asleep), because that is what a cloud bills for.

use crate::calibration::{CalibrationError, CostModel, ModelProfile, StartupTime};
use crate::decision::{Pending, Tier};
use crate::observe::{self, Observation, PodPhase, PodView, SignalPath};
use crate::policy::{Decision, Policy};
use crate::replica::{Replica, RequestState, Sequence};
use crate::trace::Trace;
use inferscale_metrics::signals::ScrapeHistory;
use rand::SeedableRng;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

/// Why a simulation could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// The calibration is unusable.
    #[error(transparent)]
    Calibration(#[from] CalibrationError),
    /// Fleet bounds are inconsistent.
    #[error("fleet needs 1 <= min_replicas <= initial_replicas <= max_replicas (got {min}, {initial}, {max})")]
    InvalidFleet { min: u32, initial: u32, max: u32 },
    /// The objective must be a positive latency.
    #[error("TTFT objective must be positive, got {0}")]
    InvalidObjective(f64),
    /// The policy asked for decisions with a non-positive period.
    #[error("policy {0} has a non-positive decision period")]
    InvalidPeriod(String),
}

/// How the gateway picks a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// Send each request to the ready pod with the fewest outstanding requests, straight into
    /// its vLLM queue (what a least-request load balancer does).
    LeastOutstanding,
    /// Hold requests at the gateway until a pod has a free batch slot (an activator-like
    /// central queue; with `max_num_seqs = 1` the fleet is an M/M/c queue).
    CentralQueue,
}

/// The fleet being simulated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetConfig {
    pub profile: ModelProfile,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Ready replicas at time 0.
    pub initial_replicas: u32,
    /// Cold start of a new replica (pod created → ready).
    pub time_to_ready: StartupTime,
    /// Wake from vLLM sleep mode.
    pub wake: StartupTime,
    /// Share of a cold start spent provisioning the node (what a placeholder saves).
    pub node_provisioning_share: f64,
    pub cost: CostModel,
    pub routing: Routing,
}

/// One run's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimConfig {
    pub fleet: FleetConfig,
    /// Time-to-first-token objective, seconds.
    pub slo_ttft_secs: f64,
    /// Seed of every random draw (startup and wake times).
    pub seed: u64,
}

impl SimConfig {
    pub fn validate(&self) -> Result<(), SimError> {
        self.fleet.profile.validate()?;
        let f = &self.fleet;
        if f.min_replicas == 0
            || f.min_replicas > f.initial_replicas
            || f.initial_replicas > f.max_replicas
        {
            return Err(SimError::InvalidFleet {
                min: f.min_replicas,
                initial: f.initial_replicas,
                max: f.max_replicas,
            });
        }
        if !(self.slo_ttft_secs.is_finite() && self.slo_ttft_secs > 0.0) {
            return Err(SimError::InvalidObjective(self.slo_ttft_secs));
        }
        Ok(())
    }
}

/// Longest the simulation runs past the last arrival to finish outstanding requests; a policy
/// that starves the fleet longer than this has its unfinished requests counted as misses.
const MAX_DRAIN_SECS: f64 = 6.0 * 3600.0;
/// Points on the timeline plot; a few thousand keeps the SVG small and still shows minutes.
const TIMELINE_POINTS: f64 = 1500.0;
/// Shortest timeline step, seconds (finer than the scrape interval shows nothing new).
const MIN_TIMELINE_STEP_SECS: f64 = 10.0;

/// One sample of the fleet over time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimelinePoint {
    pub t: f64,
    /// Arrivals per second over the step.
    pub demand_rps: f64,
    /// Ready serving pods at the sample.
    pub ready: u32,
    /// Pods holding a GPU (starting, ready, draining, waking, asleep).
    pub held: u32,
    /// Requests waiting (gateway + engine queues).
    pub queued: u32,
}

/// What one replay produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    pub policy: String,
    pub requests: usize,
    /// TTFT of every request (gateway wait included), seconds; `INFINITY` when unserved.
    #[serde(skip)]
    pub ttft: Vec<f32>,
    /// Requests whose TTFT met the objective.
    pub within_objective: usize,
    pub gpu_hours: f64,
    pub cost: f64,
    /// Decisions that changed the requested replicas.
    pub scale_events: u32,
    pub preemptions: f64,
    /// Requests still unfinished when the run stopped.
    pub unfinished: usize,
    /// Simulated span, seconds.
    pub simulated_secs: f64,
    pub timeline: Vec<TimelinePoint>,
}

impl RunResult {
    /// Fraction of requests within the objective.
    pub fn attainment(&self) -> f64 {
        if self.requests == 0 {
            return 1.0;
        }
        self.within_objective as f64 / self.requests as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    StepEnd(usize),
    Ready(usize),
    Woken(usize),
    Scrape,
    Decide,
    Timeline,
}

#[derive(Debug, Clone, Copy)]
struct Event {
    at: f64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    /// Earliest first (reversed for the max-heap), ties in insertion order: deterministic.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at
            .total_cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// `to_sleep`: goes to sleep when ready (a warm-pool pod).
    Starting {
        to_sleep: bool,
    },
    Ready,
    Draining {
        then_sleep: bool,
    },
    Sleeping,
    Waking,
    /// A low-priority pod that holds a GPU node (ready for a replica from `node_ready_at`).
    Placeholder,
    Gone,
}

#[derive(Debug)]
struct Pod {
    life: Lifecycle,
    replica: Replica,
    history: ScrapeHistory,
    created_at: f64,
    /// Where a starting or waking pod's capacity comes from (cold, a placeholder's node, sleep).
    from: Tier,
    /// When the current start or wake began (pending ages, learned time-to-ready).
    phase_since: f64,
    /// When a placeholder's node is up (node provisioning done).
    node_ready_at: f64,
    /// Busy seconds and time at the previous decision (for the CPU-like utilisation).
    busy_mark: (f64, f64),
}

struct Fleet<'a> {
    config: &'a SimConfig,
    path: SignalPath,
    pods: Vec<Pod>,
    /// Indices of pods that are not gone.
    active: Vec<usize>,
    gateway: VecDeque<u32>,
    requests: Vec<RequestState>,
    trace: &'a Trace,
    events: BinaryHeap<Event>,
    seq: u64,
    rng: rand::rngs::StdRng,
    held_gpus: u32,
    gpu_secs: f64,
    finished: usize,
    new_ready_durations: Vec<(Tier, f64)>,
    desired: Decision,
}

impl<'a> Fleet<'a> {
    fn schedule(&mut self, at: f64, kind: EventKind) {
        self.seq += 1;
        self.events.push(Event {
            at,
            seq: self.seq,
            kind,
        });
    }

    fn push_pod(&mut self, now: f64, life: Lifecycle, from: Tier) -> usize {
        let id = self.pods.len();
        self.pods.push(Pod {
            life,
            replica: Replica::new(&self.config.fleet.profile),
            history: self.path.history(),
            created_at: now,
            from,
            phase_since: now,
            node_ready_at: now,
            busy_mark: (0.0, now),
        });
        self.active.push(id);
        self.held_gpus += 1;
        id
    }

    /// A serving pod already Ready (the initial fleet).
    fn add_ready_pod(&mut self, now: f64) {
        self.push_pod(now, Lifecycle::Ready, Tier::Awake);
    }

    /// A new pod that starts a replica: a full cold start, or — on a node a placeholder kept —
    /// only the pod's own share of it (image pull, weight load, graph capture), after the node
    /// is up.
    fn start_pod(&mut self, now: f64, to_sleep: bool, node_ready_at: Option<f64>) {
        let fleet = &self.config.fleet;
        let draw = fleet.time_to_ready.sample(&mut self.rng);
        let (from, ready_at) = match node_ready_at {
            None => (Tier::Cold, now + draw),
            Some(node) => (
                Tier::Placeholder,
                node.max(now) + draw * (1.0 - fleet.node_provisioning_share),
            ),
        };
        let id = self.push_pod(now, Lifecycle::Starting { to_sleep }, from);
        self.schedule(ready_at, EventKind::Ready(id));
    }

    /// A placeholder: its node is up after the node-provisioning share of a cold start.
    fn add_placeholder(&mut self, now: f64) {
        let fleet = &self.config.fleet;
        let draw = fleet.time_to_ready.sample(&mut self.rng);
        let id = self.push_pod(now, Lifecycle::Placeholder, Tier::Placeholder);
        self.pods[id].node_ready_at = now + draw * fleet.node_provisioning_share;
    }

    fn remove_pod(&mut self, id: usize) {
        if self.pods[id].life == Lifecycle::Gone {
            return;
        }
        self.pods[id].life = Lifecycle::Gone;
        self.active.retain(|&p| p != id);
        self.held_gpus -= 1;
    }

    fn count(&self, pred: impl Fn(Lifecycle) -> bool) -> u32 {
        self.active
            .iter()
            .filter(|&&id| pred(self.pods[id].life))
            .count() as u32
    }

    fn serving_count(&self) -> u32 {
        self.count(|l| {
            matches!(
                l,
                Lifecycle::Starting { to_sleep: false } | Lifecycle::Ready | Lifecycle::Waking
            )
        })
    }

    fn sleeping_count(&self) -> u32 {
        self.count(|l| {
            matches!(
                l,
                Lifecycle::Sleeping
                    | Lifecycle::Starting { to_sleep: true }
                    | Lifecycle::Draining { then_sleep: true }
            )
        })
    }

    /// Starts a step on `id` if it is idle and has work.
    fn kick(&mut self, id: usize, now: f64) {
        let pod = &mut self.pods[id];
        if pod.replica.stepping {
            return;
        }
        if let Some(secs) =
            pod.replica
                .start_step(now, &self.config.fleet.profile, &mut self.requests)
        {
            self.schedule(now + secs, EventKind::StepEnd(id));
        }
    }

    /// The ready pod that should take the next request, if any.
    fn pick_pod(&self) -> Option<usize> {
        let slots = self.config.fleet.profile.max_num_seqs as usize;
        self.active
            .iter()
            .copied()
            .filter(|&id| self.pods[id].life == Lifecycle::Ready)
            .filter(|&id| {
                self.config.fleet.routing == Routing::LeastOutstanding
                    || self.pods[id].replica.outstanding() < slots
            })
            .min_by_key(|&id| (self.pods[id].replica.outstanding(), id))
    }

    fn route(&mut self, request: u32, now: f64) {
        match self.pick_pod() {
            Some(id) => {
                let r = self.trace.requests[request as usize];
                self.requests[request as usize].enqueued = now;
                self.pods[id].replica.enqueue(Sequence::new(
                    request,
                    r.prompt_tokens,
                    r.output_tokens,
                ));
                self.kick(id, now);
            }
            None => self.gateway.push_back(request),
        }
    }

    fn drain_gateway(&mut self, now: f64) {
        while let Some(&front) = self.gateway.front() {
            if self.pick_pod().is_none() {
                break;
            }
            self.gateway.pop_front();
            self.route(front, now);
        }
    }

    fn finish_draining_if_idle(&mut self, id: usize) {
        if let Lifecycle::Draining { then_sleep } = self.pods[id].life {
            let replica = &self.pods[id].replica;
            if replica.outstanding() == 0 && !replica.stepping {
                if then_sleep {
                    self.pods[id].life = Lifecycle::Sleeping;
                } else {
                    self.remove_pod(id);
                }
            }
        }
    }

    /// Acts on a decision the way a Deployment controller and our warm-pool controller would.
    fn apply(&mut self, decision: Decision, now: f64) {
        let fleet = &self.config.fleet;
        let serving = decision
            .serving
            .clamp(fleet.min_replicas, fleet.max_replicas);
        let sleeping = decision
            .sleeping
            .min(fleet.max_replicas.saturating_sub(serving));
        let placeholders = decision.placeholders;
        self.desired = Decision {
            serving,
            sleeping,
            placeholders,
        };
        let mut current = self.serving_count();
        // Scale up, quickest capacity first: wake a sleeper, adopt a pod starting or draining
        // toward sleep, start on a node a placeholder holds (preempting it), else cold.
        while current < serving {
            if let Some(id) = self.find(|l| l == Lifecycle::Sleeping) {
                self.pods[id].life = Lifecycle::Waking;
                self.pods[id].phase_since = now;
                let wake_in = self.config.fleet.wake.sample(&mut self.rng);
                self.schedule(now + wake_in, EventKind::Woken(id));
            } else if let Some(id) = self.find(|l| l == Lifecycle::Starting { to_sleep: true }) {
                self.pods[id].life = Lifecycle::Starting { to_sleep: false };
            } else if let Some(id) = self.find(|l| l == Lifecycle::Draining { then_sleep: true }) {
                self.pods[id].life = Lifecycle::Ready;
            } else if let Some(id) = self.placeholder_to_preempt() {
                let node_ready_at = self.pods[id].node_ready_at;
                self.remove_pod(id);
                self.start_pod(now, false, Some(node_ready_at));
            } else {
                self.start_pod(now, false, None);
            }
            current += 1;
        }
        // Scale down: unready pods first (as the ReplicaSet controller does), newest first;
        // then the least-loaded ready pods, which drain before they go.
        while current > serving {
            let sleep_room = self.sleeping_count() < sleeping;
            if let Some(id) = self.find_last(|l| l == Lifecycle::Starting { to_sleep: false }) {
                if sleep_room {
                    self.pods[id].life = Lifecycle::Starting { to_sleep: true };
                } else {
                    self.remove_pod(id);
                }
            } else if let Some(id) = self.least_loaded_ready() {
                self.pods[id].life = Lifecycle::Draining {
                    then_sleep: sleep_room,
                };
                self.finish_draining_if_idle(id);
            } else if let Some(id) = self.find(|l| l == Lifecycle::Waking) {
                // Waking pods are ready in seconds; putting them back to sleep is free.
                self.pods[id].life = Lifecycle::Sleeping;
            } else {
                break;
            }
            current -= 1;
        }
        // The sleeping pool.
        let mut asleep = self.sleeping_count();
        while asleep < sleeping {
            self.start_pod(now, true, None);
            asleep += 1;
        }
        while asleep > sleeping {
            if let Some(id) = self.find(|l| l == Lifecycle::Sleeping) {
                self.remove_pod(id);
            } else if let Some(id) = self.find_last(|l| l == Lifecycle::Starting { to_sleep: true })
            {
                self.remove_pod(id);
            } else if let Some(id) = self.find(|l| l == Lifecycle::Draining { then_sleep: true }) {
                self.pods[id].life = Lifecycle::Draining { then_sleep: false };
            } else {
                break;
            }
            asleep -= 1;
        }
        // Placeholders.
        let mut held = self.count(|l| l == Lifecycle::Placeholder);
        while held < placeholders {
            self.add_placeholder(now);
            held += 1;
        }
        while held > placeholders {
            match self.find_last(|l| l == Lifecycle::Placeholder) {
                Some(id) => self.remove_pod(id),
                None => break,
            }
            held -= 1;
        }
    }

    /// The placeholder whose node is up soonest.
    fn placeholder_to_preempt(&self) -> Option<usize> {
        self.active
            .iter()
            .copied()
            .filter(|&id| self.pods[id].life == Lifecycle::Placeholder)
            .min_by(|&a, &b| {
                self.pods[a]
                    .node_ready_at
                    .total_cmp(&self.pods[b].node_ready_at)
            })
    }

    fn find(&self, pred: impl Fn(Lifecycle) -> bool) -> Option<usize> {
        self.active
            .iter()
            .copied()
            .find(|&id| pred(self.pods[id].life))
    }

    fn find_last(&self, pred: impl Fn(Lifecycle) -> bool) -> Option<usize> {
        self.active
            .iter()
            .rev()
            .copied()
            .find(|&id| pred(self.pods[id].life))
    }

    fn least_loaded_ready(&self) -> Option<usize> {
        self.active
            .iter()
            .copied()
            .filter(|&id| self.pods[id].life == Lifecycle::Ready)
            .min_by_key(|&id| (self.pods[id].replica.outstanding(), std::cmp::Reverse(id)))
    }

    fn scrape(&mut self, now: f64) {
        for &id in &self.active {
            let pod = &mut self.pods[id];
            // Pods that are starting or asleep do not answer scrapes: their signals stay
            // missing, which is what the HPA's missing-pod rules are about.
            if matches!(pod.life, Lifecycle::Ready | Lifecycle::Draining { .. }) {
                pod.history.push(pod.replica.snapshot(now));
            }
        }
    }

    fn observe(&mut self, now: f64, arrivals: u64, arrival_tokens: f64) -> Observation {
        let mut pods = Vec::with_capacity(self.active.len());
        let (mut ready, mut starting) = (0, 0);
        let mut pending = Vec::new();
        for &id in &self.active {
            let pod = &mut self.pods[id];
            if matches!(
                pod.life,
                Lifecycle::Starting { to_sleep: false } | Lifecycle::Waking
            ) {
                pending.push(Pending {
                    age_secs: now - pod.phase_since,
                    from: if pod.life == Lifecycle::Waking {
                        Tier::Sleeping
                    } else {
                        pod.from
                    },
                });
            }
            let phase = match pod.life {
                Lifecycle::Starting { to_sleep: false } => PodPhase::Starting,
                Lifecycle::Ready => PodPhase::Ready,
                Lifecycle::Draining { .. } => PodPhase::Draining,
                Lifecycle::Waking => PodPhase::Waking,
                Lifecycle::Sleeping
                | Lifecycle::Starting { to_sleep: true }
                | Lifecycle::Placeholder
                | Lifecycle::Gone => continue,
            };
            match phase {
                PodPhase::Ready => ready += 1,
                PodPhase::Starting | PodPhase::Waking => starting += 1,
                _ => {}
            }
            let busy_fraction = if phase == PodPhase::Ready {
                let (busy_before, t_before) = pod.busy_mark;
                let span = now - t_before.max(pod.created_at);
                (span > 0.0).then(|| ((pod.replica.busy_secs - busy_before) / span).min(1.0))
            } else {
                None
            };
            pod.busy_mark = (pod.replica.busy_secs, now);
            let signals = match phase {
                PodPhase::Ready | PodPhase::Draining => observe::pod_signals(&pod.history),
                _ => None,
            };
            pods.push(PodView {
                phase,
                signals,
                busy_fraction,
            });
        }
        let fleet = observe::fleet_signals(&pods);
        Observation {
            now,
            pods,
            fleet,
            ready,
            starting,
            sleeping: self.sleeping_count(),
            placeholders: self.count(|l| l == Lifecycle::Placeholder),
            pending,
            desired_serving: self.desired.serving,
            arrivals_total: arrivals,
            arrival_prompt_tokens_total: arrival_tokens,
            gateway_queue: self.gateway.len(),
            new_ready_durations: std::mem::take(&mut self.new_ready_durations),
        }
    }

    fn queued(&self) -> u32 {
        let engine: usize = self
            .active
            .iter()
            .map(|&id| self.pods[id].replica.waiting_len())
            .sum();
        (engine + self.gateway.len()) as u32
    }
}

/// Replays `trace` against `policy`. `progress` is called now and then with the fraction of
/// arrivals replayed.
pub fn simulate(
    trace: &Trace,
    policy: &mut dyn Policy,
    config: &SimConfig,
    progress: &mut dyn FnMut(f64),
) -> Result<RunResult, SimError> {
    config.validate()?;
    let period = policy.decision_period();
    if !(period.is_finite() && period > 0.0) {
        return Err(SimError::InvalidPeriod(policy.name().to_owned()));
    }
    let path = policy.signal_path();
    let n = trace.requests.len();
    let mut fleet = Fleet {
        config,
        path,
        pods: Vec::new(),
        active: Vec::new(),
        gateway: VecDeque::new(),
        requests: trace
            .requests
            .iter()
            .map(|r| RequestState {
                arrival: r.arrival,
                first_token: f64::NAN,
                scheduled: f64::NAN,
                enqueued: r.arrival,
            })
            .collect(),
        trace,
        events: BinaryHeap::new(),
        seq: 0,
        rng: rand::rngs::StdRng::seed_from_u64(config.seed),
        held_gpus: 0,
        gpu_secs: 0.0,
        finished: 0,
        new_ready_durations: Vec::new(),
        desired: Decision::serving(config.fleet.initial_replicas),
    };
    for _ in 0..config.fleet.initial_replicas {
        fleet.add_ready_pod(0.0);
    }
    let capacity_tokens = config.fleet.profile.kv_capacity_tokens();
    let timeline_step = (trace.duration() / TIMELINE_POINTS).max(MIN_TIMELINE_STEP_SECS);
    fleet.schedule(0.0, EventKind::Scrape);
    fleet.schedule(period, EventKind::Decide);
    fleet.schedule(timeline_step, EventKind::Timeline);

    let mut next_arrival = 0usize;
    let mut arrivals_in_step = 0u64;
    let mut arrival_tokens = 0.0;
    let mut unservable = 0usize;
    let mut scale_events = 0u32;
    let mut timeline = Vec::new();
    let mut now = 0.0f64;
    let end_limit = trace.duration() + MAX_DRAIN_SECS;
    loop {
        let next_event_at = fleet.events.peek().map_or(f64::INFINITY, |e| e.at);
        let arrival_at = trace
            .requests
            .get(next_arrival)
            .map_or(f64::INFINITY, |r| r.arrival);
        let t = next_event_at.min(arrival_at);
        if !t.is_finite() || t > end_limit {
            break;
        }
        fleet.gpu_secs += fleet.held_gpus as f64 * (t - now);
        now = t;
        if arrival_at < next_event_at {
            let id = next_arrival;
            next_arrival += 1;
            arrivals_in_step += 1;
            let r = trace.requests[id];
            arrival_tokens += r.prompt_tokens as f64;
            if (r.prompt_tokens as f64 + r.output_tokens as f64) > capacity_tokens {
                // No replica could ever hold it; vLLM rejects it (a miss, never served).
                unservable += 1;
                fleet.finished += 1;
                continue;
            }
            fleet.route(id as u32, now);
            continue;
        }
        let Some(event) = fleet.events.pop() else {
            break;
        };
        match event.kind {
            EventKind::StepEnd(id) => {
                let outcome = fleet.pods[id].replica.finish_step(now, &mut fleet.requests);
                fleet.finished += outcome.finished as usize;
                fleet.kick(id, now);
                fleet.finish_draining_if_idle(id);
                if !fleet.gateway.is_empty() {
                    fleet.drain_gateway(now);
                }
            }
            EventKind::Ready(id) => {
                if let Lifecycle::Starting { to_sleep } = fleet.pods[id].life {
                    let pod = &fleet.pods[id];
                    fleet
                        .new_ready_durations
                        .push((pod.from, now - pod.phase_since));
                    fleet.pods[id].life = if to_sleep {
                        Lifecycle::Sleeping
                    } else {
                        Lifecycle::Ready
                    };
                    fleet.pods[id].busy_mark = (fleet.pods[id].replica.busy_secs, now);
                    fleet.drain_gateway(now);
                }
            }
            EventKind::Woken(id) => {
                if fleet.pods[id].life == Lifecycle::Waking {
                    let took = now - fleet.pods[id].phase_since;
                    fleet.new_ready_durations.push((Tier::Sleeping, took));
                    fleet.pods[id].life = Lifecycle::Ready;
                    fleet.pods[id].busy_mark = (fleet.pods[id].replica.busy_secs, now);
                    fleet.drain_gateway(now);
                }
            }
            EventKind::Scrape => {
                fleet.scrape(now);
                fleet.schedule(now + path.scrape_interval(), EventKind::Scrape);
            }
            EventKind::Decide => {
                let observation = fleet.observe(now, next_arrival as u64, arrival_tokens);
                let decision = policy.decide(&observation);
                let before = fleet.desired;
                fleet.apply(decision, now);
                if fleet.desired != before {
                    scale_events += 1;
                }
                fleet.drain_gateway(now);
                fleet.schedule(now + period, EventKind::Decide);
            }
            EventKind::Timeline => {
                timeline.push(TimelinePoint {
                    t: now,
                    demand_rps: arrivals_in_step as f64 / timeline_step,
                    ready: fleet.count(|l| l == Lifecycle::Ready),
                    held: fleet.held_gpus,
                    queued: fleet.queued(),
                });
                arrivals_in_step = 0;
                progress(next_arrival as f64 / n.max(1) as f64);
                fleet.schedule(now + timeline_step, EventKind::Timeline);
            }
        }
        if next_arrival == n && fleet.finished == n {
            break;
        }
    }
    progress(1.0);
    let slo = config.slo_ttft_secs;
    let ttft: Vec<f32> = fleet
        .requests
        .iter()
        .map(|s| {
            if s.first_token.is_nan() {
                f32::INFINITY
            } else {
                (s.first_token - s.arrival) as f32
            }
        })
        .collect();
    let within_objective = ttft.iter().filter(|&&t| (t as f64) <= slo).count();
    let unfinished = n - fleet.finished.min(n) + unservable;
    let preemptions = fleet.pods.iter().map(|p| p.replica.preemptions()).sum();
    let gpu_hours = fleet.gpu_secs / 3600.0;
    Ok(RunResult {
        policy: policy.name().to_owned(),
        requests: n,
        ttft,
        within_objective,
        gpu_hours,
        cost: gpu_hours * config.fleet.cost.gpu_cost_per_hour,
        scale_events,
        preemptions,
        unfinished,
        simulated_secs: now,
        timeline,
    })
}
