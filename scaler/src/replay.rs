//! The discrete-event fleet simulator: replays a trace against one policy.
//!
//! Owns: simulated time and the event queue, pod lifecycle (cold start drawn from the
//! time-to-ready distribution, vLLM sleep and wake, placeholders, termination with a grace
//! period), routing at the gateway, clients that time out and retry, the scrape and decision
//! ticks, acting on [`Decision`]s, GPU-time accounting and the per-request ground truth
//! summarised in a [`RunResult`].
//! Does not own: what happens inside an engine step ([`crate::replica`]), what a policy
//! decides ([`crate::policy`]) or how results are printed ([`crate::report`]).
//!
//! Costs: a pod holds a GPU from the moment it is created until it is deleted, whatever it is
//! doing (starting, serving, draining, asleep, a placeholder), because that is what a cloud
//! bills for.
//!
//! Scale-down follows the ReplicaSet controller (`getPodsToDelete` → `ActivePodsWithRanks`):
//! pods not yet Ready go first (newest first), then Ready pods that have been Ready for the
//! shortest time (compared on a log2 scale, as `LogarithmicScaleDown` does), newest created
//! first on ties. The victim leaves the Service at once, keeps serving what it holds for the
//! termination grace period (30 s by default), then is killed: requests still without a first
//! token are retried by their clients, streams already started are cut.
//!
//! Clients: each attempt waits at most `ttft_timeout_secs` for its first token, then the
//! client gives up on it (vLLM aborts the request when the connection closes) and retries up
//! to `max_retries` times after the OpenAI client's backoff (0.5 s doubling to 8 s, minus up
//! to 25 % jitter). TTFT is measured from the first attempt.

use crate::calibration::{CalibrationError, CostModel, ModelProfile, StartupTime};
use crate::decision::{Pending, Tier};
use crate::observe::{self, Observation, PodPhase, PodView, SignalPath};
use crate::policy::{Decision, Policy};
use crate::replica::{PrefixHashes, Replica, RequestState, Sequence};
use crate::trace::{Request, Trace};
use inferscale_metrics::signals::ScrapeHistory;
use rand::{Rng, SeedableRng};
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
    /// Client settings are out of range.
    #[error("client timeout and termination grace period must be positive")]
    InvalidClient,
}

/// How the gateway picks a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// A plain Service through kube-proxy in iptables mode: a uniformly random ready pod.
    Random,
    /// kube-proxy in IPVS mode (`rr`): ready pods in turn.
    RoundRobin,
    /// A gateway's least-request balancing: the ready pod with the fewest requests in it.
    LeastOutstanding,
    /// A gateway endpoint picker weighing tokens: the ready pod with the fewest prompt tokens
    /// queued or mid-prefill, less the prefix it already has cached.
    TokenAware,
    /// Hold requests at the gateway until a pod has a free batch slot (an activator-like
    /// central queue; with `max_num_seqs = 1` the fleet is an M/M/c queue).
    CentralQueue,
}

impl Routing {
    pub const ALL: [Routing; 5] = [
        Routing::Random,
        Routing::RoundRobin,
        Routing::LeastOutstanding,
        Routing::TokenAware,
        Routing::CentralQueue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Routing::Random => "random",
            Routing::RoundRobin => "round-robin",
            Routing::LeastOutstanding => "least-outstanding",
            Routing::TokenAware => "token-aware",
            Routing::CentralQueue => "central-queue",
        }
    }

    pub fn parse(name: &str) -> Option<Routing> {
        Routing::ALL.into_iter().find(|r| r.as_str() == name.trim())
    }
}

/// How clients behave.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClientConfig {
    /// Seconds an attempt waits for its first token before the client gives up on it.
    pub ttft_timeout_secs: f64,
    /// Retries after the first attempt.
    pub max_retries: u32,
}

/// Default per-attempt wait for the first token: a gateway route timeout sized for streaming
/// LLM responses (Envoy's default 15 s cuts long generations, so LLM gateways raise it; the
/// OpenAI client's own 600 s is never the binding one behind a gateway). Our assumption.
pub const DEFAULT_TTFT_TIMEOUT_SECS: f64 = 60.0;
/// The OpenAI Python client's `DEFAULT_MAX_RETRIES`.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// The OpenAI Python client's `INITIAL_RETRY_DELAY` and `MAX_RETRY_DELAY`, seconds.
const RETRY_DELAY_SECS: (f64, f64) = (0.5, 8.0);
/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_TERMINATION_GRACE_SECS: f64 = 30.0;

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            ttft_timeout_secs: DEFAULT_TTFT_TIMEOUT_SECS,
            max_retries: DEFAULT_MAX_RETRIES,
        }
    }
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
    pub client: ClientConfig,
    /// Seconds a pod being deleted keeps serving what it holds before it is killed.
    pub termination_grace_secs: f64,
}

/// One run's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimConfig {
    pub fleet: FleetConfig,
    /// Time-to-first-token objective, seconds.
    pub slo_ttft_secs: f64,
    /// Seed of every random draw (startup and wake times, random routing, retry jitter).
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
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !(positive(f.client.ttft_timeout_secs) && positive(f.termination_grace_secs)) {
            return Err(SimError::InvalidClient);
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
/// No pod for a request.
const NOWHERE: u32 = u32::MAX;

/// One sample of the fleet over time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimelinePoint {
    pub t: f64,
    /// Arrivals per second over the step.
    pub demand_rps: f64,
    /// Ready serving pods at the sample.
    pub ready: u32,
    /// Pods holding a GPU (starting, ready, draining, waking, asleep, placeholders).
    pub held: u32,
    /// Requests waiting (gateway + engine queues).
    pub queued: u32,
}

/// What one replay produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    pub policy: String,
    pub requests: usize,
    /// TTFT of every request from its first attempt (gateway waits and retries included),
    /// seconds; `INFINITY` when it never got a first token.
    #[serde(skip)]
    pub ttft: Vec<f32>,
    /// Requests whose TTFT met the objective.
    pub within_objective: usize,
    /// Requests no fleet could serve within the objective: even alone on an idle replica
    /// (with every cacheable prefix cached) their prefill takes longer, or they do not fit in
    /// a replica's KV cache.
    pub unattainable: usize,
    pub gpu_hours: f64,
    pub cost: f64,
    /// Decisions that changed the requested replicas.
    pub scale_events: u32,
    pub preemptions: f64,
    /// Attempts that timed out waiting for a first token.
    pub timeouts: usize,
    /// Retries sent (after a timeout or a killed pod).
    pub retries: usize,
    /// Requests whose client gave up after its last retry.
    pub gave_up: usize,
    /// Streams cut when their pod was killed after the grace period.
    pub cut_streams: usize,
    /// Requests still unfinished when the run stopped.
    pub unfinished: usize,
    /// Simulated span, seconds.
    pub simulated_secs: f64,
    pub timeline: Vec<TimelinePoint>,
}

impl RunResult {
    /// Share of attainable requests within the objective (unattainable ones are counted
    /// apart: no policy can serve them in time).
    pub fn attainment(&self) -> f64 {
        let attainable = self.requests.saturating_sub(self.unattainable);
        if attainable == 0 {
            return 1.0;
        }
        (self.within_objective as f64 / attainable as f64).min(1.0)
    }
}

/// TTFT of a request alone on an idle replica, seconds: its chunked prefill, skipping
/// `cached` prompt tokens (never the last).
pub fn idle_ttft_floor(profile: &ModelProfile, prompt_tokens: u32, cached: u32) -> f64 {
    let prompt = prompt_tokens.max(1);
    let mut context = cached.min(prompt - 1);
    let mut remaining = prompt - context;
    let mut secs = 0.0;
    while remaining > 0 {
        let chunk = remaining.min(profile.max_batched_tokens.max(1));
        let pairs = chunk as f64 * (context as f64 + chunk as f64 / 2.0);
        secs += profile.step_secs(0, 0, chunk, pairs);
        context += chunk;
        remaining -= chunk;
    }
    secs
}

/// Whether `request` can meet the objective at all (see [`RunResult::unattainable`]).
pub fn attainable(profile: &ModelProfile, trace: &Trace, request: &Request, slo: f64) -> bool {
    if request.prompt_tokens as f64 + request.output_tokens as f64 > profile.kv_capacity_tokens() {
        return false;
    }
    // The most a cache could hold of this prompt: every hashed block but the last.
    let cacheable = request.hashes.1.saturating_sub(1) * trace.hash_block_tokens;
    idle_ttft_floor(profile, request.prompt_tokens, cacheable) <= slo
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    StepEnd(usize),
    Ready(usize),
    Woken(usize),
    /// The termination grace period of a pod being deleted ends.
    Kill(usize),
    /// A client sends its next attempt.
    Retry(u32),
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
    /// Out of the Service, finishing what it holds until idle or killed.
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
    /// When it last became Ready.
    ready_since: f64,
    /// Where a starting or waking pod's capacity comes from (cold, a placeholder's node, sleep).
    from: Tier,
    /// When the current start or wake began (pending ages, learned time-to-ready).
    phase_since: f64,
    /// When a placeholder's node is up (node provisioning done).
    node_ready_at: f64,
    /// Busy seconds and time at the previous decision (for the CPU-like utilisation).
    busy_mark: (f64, f64),
}

/// Per-request client state.
#[derive(Debug, Clone, Copy)]
struct Client {
    /// Attempt number (0 = first).
    attempt: u8,
    /// The pod holding the current attempt, or [`NOWHERE`].
    pod: u32,
}

/// Counters of the run.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    finished: usize,
    timeouts: usize,
    retries: usize,
    gave_up: usize,
    cut_streams: usize,
    scale_events: u32,
}

struct Fleet<'a> {
    config: &'a SimConfig,
    path: SignalPath,
    pods: Vec<Pod>,
    /// Indices of pods that are not gone.
    active: Vec<usize>,
    /// Requests held at the gateway: (request, attempt); stale entries are skipped.
    gateway: VecDeque<(u32, u8)>,
    requests: Vec<RequestState>,
    clients: Vec<Client>,
    /// First-token deadlines of attempts, in deadline order: (deadline, request, attempt).
    deadlines: VecDeque<(f64, u32, u8)>,
    trace: &'a Trace,
    hashes: PrefixHashes<'a>,
    events: BinaryHeap<Event>,
    seq: u64,
    rng: rand::rngs::StdRng,
    round_robin: usize,
    held_gpus: u32,
    gpu_secs: f64,
    tally: Tally,
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
        let mut replica = Replica::new(&self.config.fleet.profile);
        if !self.hashes.table.is_empty() {
            replica.enable_prefix_cache(&self.config.fleet.profile, self.hashes.block_tokens);
        }
        self.pods.push(Pod {
            life,
            replica,
            history: self.path.history(),
            created_at: now,
            ready_since: now,
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
        let profile = &self.config.fleet.profile;
        let pod = &mut self.pods[id];
        if pod.replica.stepping {
            return;
        }
        if let Some(secs) = pod
            .replica
            .start_step(now, profile, &mut self.requests, self.hashes)
        {
            self.schedule(now + secs, EventKind::StepEnd(id));
        }
    }

    fn ready_pods(&self) -> impl Iterator<Item = usize> + '_ {
        self.active
            .iter()
            .copied()
            .filter(|&id| self.pods[id].life == Lifecycle::Ready)
    }

    /// The pod that should take `request` now, if any.
    fn pick_pod(&mut self, request: u32) -> Option<usize> {
        let slots = match (self.desired.activator, self.config.fleet.routing) {
            (Some(per_pod), _) => Some(per_pod as usize),
            (None, Routing::CentralQueue) => Some(self.config.fleet.profile.max_num_seqs as usize),
            _ => None,
        };
        if let Some(slots) = slots {
            return self
                .ready_pods()
                .filter(|&id| self.pods[id].replica.outstanding() < slots)
                .min_by_key(|&id| (self.pods[id].replica.outstanding(), id));
        }
        match self.config.fleet.routing {
            Routing::Random => {
                let n = self.ready_pods().count();
                if n == 0 {
                    return None;
                }
                let k = self.rng.random_range(0..n);
                self.ready_pods().nth(k)
            }
            Routing::RoundRobin => {
                let n = self.ready_pods().count();
                if n == 0 {
                    return None;
                }
                self.round_robin = self.round_robin.wrapping_add(1);
                self.ready_pods().nth(self.round_robin % n)
            }
            Routing::TokenAware => {
                let r = self.trace.requests[request as usize];
                let hashes = self
                    .hashes
                    .table
                    .get(r.hashes.0 as usize..(r.hashes.0 + r.hashes.1) as usize)
                    .unwrap_or(&[]);
                let block = self.hashes.block_tokens;
                self.ready_pods().min_by_key(|&id| {
                    let replica = &self.pods[id].replica;
                    let cached = replica.cached_prefix_tokens(hashes, block);
                    let work = replica.pending_prefill_tokens() as i64 - cached as i64;
                    (work, replica.outstanding(), id)
                })
            }
            Routing::LeastOutstanding | Routing::CentralQueue => self
                .ready_pods()
                .min_by_key(|&id| (self.pods[id].replica.outstanding(), id)),
        }
    }

    /// Puts the current attempt of `request` into pod `id`'s engine queue.
    fn place(&mut self, request: u32, id: usize, now: f64) {
        let r = self.trace.requests[request as usize];
        self.requests[request as usize].enqueued = now;
        self.clients[request as usize].pod = id as u32;
        self.pods[id].replica.enqueue(
            Sequence::new(request, r.prompt_tokens, r.output_tokens)
                .with_hashes(r.hashes.0, r.hashes.1),
        );
        self.kick(id, now);
    }

    /// Sends an attempt: to a pod now, or to the gateway's queue.
    fn route(&mut self, request: u32, now: f64) {
        match self.pick_pod(request) {
            Some(id) => self.place(request, id, now),
            None => {
                let attempt = self.clients[request as usize].attempt;
                self.clients[request as usize].pod = NOWHERE;
                self.gateway.push_back((request, attempt));
            }
        }
    }

    /// A new attempt of `request` (the first, or a retry) enters the gateway at `now`.
    fn send(&mut self, request: u32, now: f64) {
        let attempt = self.clients[request as usize].attempt;
        let timeout = self.config.fleet.client.ttft_timeout_secs;
        self.deadlines.push_back((now + timeout, request, attempt));
        self.route(request, now);
    }

    fn drain_gateway(&mut self, now: f64) {
        while let Some(&(request, attempt)) = self.gateway.front() {
            let live = self.clients[request as usize].attempt == attempt
                && self.requests[request as usize].first_token.is_nan();
            if !live {
                self.gateway.pop_front();
                continue;
            }
            let Some(id) = self.pick_pod(request) else {
                break;
            };
            self.gateway.pop_front();
            self.place(request, id, now);
        }
    }

    /// The client of `request` lost its attempt (timeout, killed pod): retry after the
    /// backoff, or give up after the last retry.
    fn retry_or_give_up(&mut self, request: u32, now: f64) {
        let client = &mut self.clients[request as usize];
        client.pod = NOWHERE;
        if (client.attempt as u32) < self.config.fleet.client.max_retries {
            let n = client.attempt as i32;
            client.attempt += 1;
            let (initial, cap) = RETRY_DELAY_SECS;
            let delay = (initial * 2f64.powi(n)).min(cap) * (1.0 - 0.25 * self.rng.random::<f64>());
            self.tally.retries += 1;
            self.schedule(now + delay, EventKind::Retry(request));
        } else {
            self.tally.gave_up += 1;
            self.tally.finished += 1;
        }
    }

    /// First-token deadlines that passed by `now`.
    fn expire_deadlines(&mut self, now: f64) {
        while let Some(&(deadline, request, attempt)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let client = self.clients[request as usize];
            if client.attempt != attempt || !self.requests[request as usize].first_token.is_nan() {
                continue;
            }
            self.tally.timeouts += 1;
            if client.pod != NOWHERE {
                let id = client.pod as usize;
                self.pods[id].replica.abort(request);
                self.finish_draining_if_idle(id);
            }
            self.retry_or_give_up(request, now);
        }
    }

    /// The grace period of a pod being deleted is over: what it still holds is lost.
    fn kill(&mut self, id: usize, now: f64) {
        let Lifecycle::Draining { then_sleep } = self.pods[id].life else {
            return;
        };
        for request in self.pods[id].replica.request_ids() {
            self.pods[id].replica.abort(request);
            if self.requests[request as usize].first_token.is_nan() {
                self.retry_or_give_up(request, now);
            } else {
                self.tally.cut_streams += 1;
                self.tally.finished += 1;
            }
        }
        self.pods[id].replica.stepping = false;
        if then_sleep {
            self.pods[id].life = Lifecycle::Sleeping;
        } else {
            self.remove_pod(id);
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

    /// Takes a Ready pod out of the Service: it drains for the grace period, then is killed.
    fn terminate(&mut self, id: usize, now: f64, then_sleep: bool) {
        self.pods[id].life = Lifecycle::Draining { then_sleep };
        let grace = self.config.fleet.termination_grace_secs;
        self.schedule(now + grace, EventKind::Kill(id));
        self.finish_draining_if_idle(id);
    }

    /// The Ready pod the ReplicaSet controller deletes first: Ready for the shortest time
    /// (log2 buckets), newest created on ties.
    fn ready_victim(&self, now: f64) -> Option<usize> {
        self.ready_pods().min_by(|&a, &b| {
            let bucket = |id: usize| (now - self.pods[id].ready_since).max(1.0).log2() as u32;
            bucket(a)
                .cmp(&bucket(b))
                .then(self.pods[b].created_at.total_cmp(&self.pods[a].created_at))
                .then(b.cmp(&a))
        })
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
            activator: decision.activator,
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
        // Scale down as the ReplicaSet controller ranks pods: not Ready first (newest first),
        // then the Ready pod that has been Ready the shortest time (see the module docs).
        while current > serving {
            let sleep_room = self.sleeping_count() < sleeping;
            if let Some(id) = self.find_last(|l| l == Lifecycle::Starting { to_sleep: false }) {
                if sleep_room {
                    self.pods[id].life = Lifecycle::Starting { to_sleep: true };
                } else {
                    self.remove_pod(id);
                }
            } else if let Some(id) = self.ready_victim(now) {
                self.terminate(id, now, sleep_room);
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

    /// Requests held at the gateway (stale entries of abandoned attempts not counted).
    fn gateway_len(&self) -> usize {
        self.gateway
            .iter()
            .filter(|&&(r, a)| {
                self.clients[r as usize].attempt == a
                    && self.requests[r as usize].first_token.is_nan()
            })
            .count()
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
            gateway_queue: self.gateway_len(),
            new_ready_durations: std::mem::take(&mut self.new_ready_durations),
        }
    }

    fn queued(&self) -> u32 {
        let engine: usize = self
            .active
            .iter()
            .map(|&id| self.pods[id].replica.waiting_len())
            .sum();
        (engine + self.gateway_len()) as u32
    }

    /// A pod's step ended: account for it and start the next.
    fn on_step_end(&mut self, id: usize, now: f64) {
        if self.pods[id].life == Lifecycle::Gone || !self.pods[id].replica.stepping {
            return;
        }
        let outcome = self.pods[id]
            .replica
            .finish_step(now, &mut self.requests, self.hashes);
        self.tally.finished += outcome.finished as usize;
        self.kick(id, now);
        self.finish_draining_if_idle(id);
        if !self.gateway.is_empty() {
            self.drain_gateway(now);
        }
    }

    /// A starting pod became Ready (or, for a sleeper-to-be, went to sleep).
    fn on_ready(&mut self, id: usize, now: f64) {
        let Lifecycle::Starting { to_sleep } = self.pods[id].life else {
            return;
        };
        let pod = &mut self.pods[id];
        self.new_ready_durations
            .push((pod.from, now - pod.phase_since));
        pod.life = if to_sleep {
            Lifecycle::Sleeping
        } else {
            Lifecycle::Ready
        };
        pod.ready_since = now;
        pod.busy_mark = (pod.replica.busy_secs, now);
        self.drain_gateway(now);
    }

    /// A waking pod is serving again.
    fn on_woken(&mut self, id: usize, now: f64) {
        if self.pods[id].life != Lifecycle::Waking {
            return;
        }
        let pod = &mut self.pods[id];
        self.new_ready_durations
            .push((Tier::Sleeping, now - pod.phase_since));
        pod.life = Lifecycle::Ready;
        pod.ready_since = now;
        pod.busy_mark = (pod.replica.busy_secs, now);
        self.drain_gateway(now);
    }
}

/// The replay's clock and sources of work, advanced together.
struct Clock {
    now: f64,
    next_arrival: usize,
    arrivals_total: u64,
    arrival_tokens: f64,
    arrivals_in_step: u64,
}

/// Replays `trace` against `policy`. `progress` is called now and then with the fraction of
/// arrivals replayed.
pub fn simulate(
    trace: &Trace,
    policy: &mut dyn Policy,
    config: &SimConfig,
    progress: &mut dyn FnMut(f64),
) -> Result<RunResult, SimError> {
    let period = validate_run(policy, config)?;
    let mut fleet = initial_fleet(trace, policy.signal_path(), config);
    let timeline_step = (trace.duration() / TIMELINE_POINTS).max(MIN_TIMELINE_STEP_SECS);
    fleet.schedule(0.0, EventKind::Scrape);
    fleet.schedule(period, EventKind::Decide);
    fleet.schedule(timeline_step, EventKind::Timeline);
    let mut clock = Clock {
        now: 0.0,
        next_arrival: 0,
        arrivals_total: 0,
        arrival_tokens: 0.0,
        arrivals_in_step: 0,
    };
    let mut timeline = Vec::new();
    let end_limit = trace.duration() + MAX_DRAIN_SECS;
    let n = trace.requests.len();
    loop {
        let next_event_at = fleet.events.peek().map_or(f64::INFINITY, |e| e.at);
        let arrival_at = trace
            .requests
            .get(clock.next_arrival)
            .map_or(f64::INFINITY, |r| r.arrival);
        let deadline_at = fleet.deadlines.front().map_or(f64::INFINITY, |d| d.0);
        let t = next_event_at.min(arrival_at).min(deadline_at);
        if !t.is_finite() || t > end_limit {
            break;
        }
        fleet.gpu_secs += fleet.held_gpus as f64 * (t - clock.now);
        clock.now = t;
        if deadline_at <= t {
            fleet.expire_deadlines(t);
        } else if arrival_at < next_event_at {
            admit_arrival(&mut fleet, &mut clock);
        } else if let Some(event) = fleet.events.pop() {
            handle_event(
                &mut fleet,
                policy,
                event,
                &mut clock,
                &mut timeline,
                timeline_step,
            );
            if event.kind == EventKind::Timeline {
                progress(clock.next_arrival as f64 / n.max(1) as f64);
            }
        }
        if clock.next_arrival == n && fleet.tally.finished >= n {
            break;
        }
    }
    progress(1.0);
    Ok(summarise(
        trace,
        policy.name(),
        config,
        &fleet,
        clock.now,
        timeline,
    ))
}

/// Checks the configuration and the policy's decision period.
fn validate_run(policy: &dyn Policy, config: &SimConfig) -> Result<f64, SimError> {
    config.validate()?;
    let period = policy.decision_period();
    if !(period.is_finite() && period > 0.0) {
        return Err(SimError::InvalidPeriod(policy.name().to_owned()));
    }
    Ok(period)
}

/// The fleet at time 0: the initial replicas Ready, nothing in flight.
fn initial_fleet<'a>(trace: &'a Trace, path: SignalPath, config: &'a SimConfig) -> Fleet<'a> {
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
        clients: vec![
            Client {
                attempt: 0,
                pod: NOWHERE,
            };
            trace.requests.len()
        ],
        deadlines: VecDeque::new(),
        trace,
        hashes: PrefixHashes {
            table: &trace.hash_table,
            block_tokens: trace.hash_block_tokens,
        },
        events: BinaryHeap::new(),
        seq: 0,
        rng: rand::rngs::StdRng::seed_from_u64(config.seed),
        round_robin: 0,
        held_gpus: 0,
        gpu_secs: 0.0,
        tally: Tally::default(),
        new_ready_durations: Vec::new(),
        desired: Decision::serving(config.fleet.initial_replicas),
    };
    for _ in 0..config.fleet.initial_replicas {
        fleet.add_ready_pod(0.0);
    }
    fleet
}

/// The next request of the trace arrives: refused if it can never fit a replica, else sent.
fn admit_arrival(fleet: &mut Fleet<'_>, clock: &mut Clock) {
    let id = clock.next_arrival;
    clock.next_arrival += 1;
    clock.arrivals_in_step += 1;
    clock.arrivals_total += 1;
    let r = fleet.trace.requests[id];
    clock.arrival_tokens += r.prompt_tokens as f64;
    let capacity_tokens = fleet.config.fleet.profile.kv_capacity_tokens();
    if (r.prompt_tokens as f64 + r.output_tokens as f64) > capacity_tokens {
        // No replica could ever hold it; vLLM rejects it (never served).
        fleet.tally.finished += 1;
        return;
    }
    fleet.send(id as u32, clock.now);
}

/// One event of the queue.
fn handle_event(
    fleet: &mut Fleet<'_>,
    policy: &mut dyn Policy,
    event: Event,
    clock: &mut Clock,
    timeline: &mut Vec<TimelinePoint>,
    timeline_step: f64,
) {
    let now = clock.now;
    match event.kind {
        EventKind::StepEnd(id) => fleet.on_step_end(id, now),
        EventKind::Ready(id) => fleet.on_ready(id, now),
        EventKind::Woken(id) => fleet.on_woken(id, now),
        EventKind::Kill(id) => {
            fleet.kill(id, now);
            fleet.drain_gateway(now);
        }
        EventKind::Retry(request) => fleet.send(request, now),
        EventKind::Scrape => {
            fleet.scrape(now);
            fleet.schedule(now + fleet.path.scrape_interval(), EventKind::Scrape);
        }
        EventKind::Decide => {
            let observation = fleet.observe(now, clock.arrivals_total, clock.arrival_tokens);
            let decision = policy.decide(&observation);
            let before = fleet.desired;
            fleet.apply(decision, now);
            if fleet.desired.serving != before.serving
                || fleet.desired.sleeping != before.sleeping
                || fleet.desired.placeholders != before.placeholders
            {
                fleet.tally.scale_events += 1;
            }
            fleet.drain_gateway(now);
            fleet.schedule(now + policy.decision_period(), EventKind::Decide);
        }
        EventKind::Timeline => {
            timeline.push(TimelinePoint {
                t: now,
                demand_rps: clock.arrivals_in_step as f64 / timeline_step,
                ready: fleet.count(|l| l == Lifecycle::Ready),
                held: fleet.held_gpus,
                queued: fleet.queued(),
            });
            clock.arrivals_in_step = 0;
            fleet.schedule(now + timeline_step, EventKind::Timeline);
        }
    }
}

/// The run's ground truth: TTFT of every request, attainment, GPU time and counters.
fn summarise(
    trace: &Trace,
    policy: &str,
    config: &SimConfig,
    fleet: &Fleet<'_>,
    now: f64,
    timeline: Vec<TimelinePoint>,
) -> RunResult {
    let slo = config.slo_ttft_secs;
    let profile = &config.fleet.profile;
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
    let unattainable = trace
        .requests
        .iter()
        .filter(|r| !attainable(profile, trace, r, slo))
        .count();
    let n = trace.requests.len();
    let unfinished = n.saturating_sub(fleet.tally.finished);
    let gpu_hours = fleet.gpu_secs / 3600.0;
    RunResult {
        policy: policy.to_owned(),
        requests: n,
        ttft,
        within_objective,
        unattainable,
        gpu_hours,
        cost: gpu_hours * config.fleet.cost.gpu_cost_per_hour,
        scale_events: fleet.tally.scale_events,
        preemptions: fleet.pods.iter().map(|p| p.replica.preemptions()).sum(),
        timeouts: fleet.tally.timeouts,
        retries: fleet.tally.retries,
        gave_up: fleet.tally.gave_up,
        cut_streams: fleet.tally.cut_streams,
        unfinished,
        simulated_secs: now,
        timeline,
    }
}
