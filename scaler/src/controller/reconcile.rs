//! One WarmPool's sync: observe the target, learn, call the decision core, act, report.
//!
//! Owns: the order of a sync and the actions — the recommendation written to status (which
//! the adapter serves to the HPA), waking sleepers before new pods are asked for, draining
//! and putting replicas to sleep, creating and deleting placeholders — plus Events for every
//! action, the status conditions, and the finalizer's cleanup (a deleted pool wakes every
//! replica it put to sleep and leaves no placeholder behind).
//! Does not own: the decision (the pure [`crate::decision::decide`], the same function the
//! simulator's warm-pool policy runs), reading pods' lifecycle ([`super::fleet`]), or the
//! process (leader election, shutdown: [`super::run`]).
//!
//! The decision core's memory (forecaster, learned capacity) lives in this process; across a
//! restart or a leader change it starts afresh, and for its first minute the recommendation
//! never falls below the one the previous leader left in status — a new leader continues
//! from where the old one stopped instead of dropping what it had asked for. Learned
//! time-to-ready is in status, and so is every pod's sleep state (as pod annotations), so a
//! half-finished wake or drain is carried on by whoever leads next.

use super::crd::{
    self, DecisionStatus, ExpectedCost, ForecastStatus, Summary, Tier, TierCapacity,
    TimeToReadyStatus, WarmPool, WarmPoolSpec, WarmPoolStatus,
};
use super::demand::{self, DemandSample};
use super::engine::Engine;
use super::fleet::{Capacity, PodFacts, Preemption, ReadyLedger, SleepState};
use super::pods::{self, PlaceholderTemplate, ReplicaShape, PLACEHOLDER_LABEL};
use super::settings::{self, DEFAULT_ENGINE_PORT, DEFAULT_PRIOR_WAKE_SECS, DEFAULT_SLEEP_LEVEL};
use super::target::{Target, TargetError, Targets};
use super::telemetry::{Telemetry, Totals};
use super::watches::PodWatches;
use crate::decision::readiness::TimeToReady;
use crate::decision::{self, Recommendation, Snapshot};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Finalizer on every WarmPool: its deletion must wake the replicas it put to sleep.
pub const FINALIZER: &str = "inferscale.dev/warm-pool";
/// Field manager of every write.
pub const MANAGER: &str = "inferscale-warm-pool";
/// A draining replica is put to sleep when idle, or after this long regardless: a request
/// still running after two minutes out of the Service is a stream the client will retry.
const DRAIN_TIMEOUT_SECS: f64 = 120.0;
/// How long a wake may take before it is retried: ten times vLLM's slowest measured wake.
const WAKE_DEADLINE: Duration = Duration::from_secs(60);
/// How often a waking engine is asked whether it is awake.
const WAKE_POLL: Duration = Duration::from_millis(250);
/// Wakes tried before a replica that will not wake is deleted (the ReplicaSet replaces it
/// with a cold start, which is better than a GPU held by a replica that never serves).
const MAX_WAKE_ATTEMPTS: u32 = 3;
/// A sync this close to its due time counts as due (a requeue timer is not exact).
const SYNC_EARLY_SECS: f64 = 0.25;
/// Retry delay after a failed sync.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// Retry delay while a pod watch is still listing.
const SYNC_WAIT: Duration = Duration::from_secs(1);
/// After a (re)start, the recommendation holds at least the previous one for this long
/// (the decision core's own warm-up).
const RESUME_HOLD_SECS: f64 = decision::WARM_UP_SECS;

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing to the apiserver failed.
    #[error("{action}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    /// The finalizer machinery failed.
    #[error("finalizer")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A thread panicked while holding the pools' memory.
    #[error("the warm pools' memory is poisoned by an earlier panic")]
    Poisoned,
    /// The WarmPool has no uid yet (cannot own placeholders).
    #[error("the WarmPool has no uid to own placeholders with")]
    NoOwnerReference,
}

impl Error {
    /// A closed label for the error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Poisoned => "poisoned",
            Error::NoOwnerReference => "owner_reference",
        }
    }
}

fn kube_error(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

/// Everything a sync shares.
pub struct Context {
    pub client: Client,
    pub targets: Targets,
    pub http: reqwest::Client,
    pub recorder: Recorder,
    pub telemetry: Arc<Telemetry>,
    /// Every placeholder pod (pods with [`PLACEHOLDER_LABEL`]).
    pub placeholders: Store<Pod>,
    /// A pod reflector per pool's target.
    pub watches: PodWatches,
    pools: Mutex<HashMap<ObjectRef<WarmPool>, PoolMemory>>,
    /// Wake calls in flight; aborted when the controller stops (the next leader resumes them
    /// from the pods' annotations).
    tasks: Mutex<tokio::task::JoinSet<()>>,
    /// Placeholders the scheduler preempted, by (namespace, pool), until the pool's next sync;
    /// and the UIDs already recorded (a preempted pod is seen modified, then deleted).
    preemptions: Mutex<Preemptions>,
}

#[derive(Default)]
struct Preemptions {
    by_pool: HashMap<(String, String), Vec<Preemption>>,
    seen: VecDeque<String>,
}

/// UIDs of recorded preemptions remembered to ignore the same pod's later events.
const PREEMPTIONS_REMEMBERED: usize = 1024;

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        telemetry: Arc<Telemetry>,
        placeholders: Store<Pod>,
    ) -> Context {
        Context {
            watches: PodWatches::new(client.clone()),
            client,
            targets: Targets::default(),
            http: super::engine::client(),
            recorder,
            telemetry,
            placeholders,
            pools: Mutex::new(HashMap::new()),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
            preemptions: Mutex::new(Preemptions::default()),
        }
    }

    /// Records a placeholder pod event from the placeholder watch: a pod the scheduler marked
    /// `DisruptionTarget` / `PreemptionByScheduler` was preempted for a real pod on its node.
    pub fn placeholder_event(&self, pod: &Pod) {
        let Some(preemption) = pods::preemption(pod) else {
            return;
        };
        let (Some(namespace), Some(pool), Some(uid)) = (
            pod.namespace(),
            pod.labels().get(PLACEHOLDER_LABEL).cloned(),
            pod.uid(),
        ) else {
            return;
        };
        let Ok(mut p) = self.preemptions.lock() else {
            return;
        };
        if p.seen.contains(&uid) {
            return;
        }
        p.seen.push_back(uid);
        while p.seen.len() > PREEMPTIONS_REMEMBERED {
            p.seen.pop_front();
        }
        tracing::info!(%namespace, %pool, node = %preemption.node, "placeholder preempted");
        p.by_pool
            .entry((namespace, pool))
            .or_default()
            .push(preemption);
    }

    fn take_preemptions(&self, namespace: &str, pool: &str) -> Vec<Preemption> {
        self.preemptions
            .lock()
            .ok()
            .and_then(|mut p| p.by_pool.remove(&(namespace.to_owned(), pool.to_owned())))
            .unwrap_or_default()
    }

    /// Aborts in-flight wakes (their pods stay annotated `waking`, which the next leader
    /// resumes).
    pub fn stop_tasks(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
    }

    fn memory<T>(
        &self,
        key: &ObjectRef<WarmPool>,
        f: impl FnOnce(&mut PoolMemory) -> T,
    ) -> Option<T> {
        let mut pools = self.pools.lock().ok()?;
        pools.get_mut(key).map(f)
    }

    fn totals(&self) -> Totals {
        let Ok(pools) = self.pools.lock() else {
            return Totals::default();
        };
        let mut t = Totals::default();
        for m in pools.values() {
            t.serving += m.capacity.serving;
            t.pending += m.capacity.pending;
            t.sleeping += m.capacity.sleeping;
            t.waking += m.capacity.waking;
            t.placeholders += m.capacity.placeholders;
            t.recommended += m.last_recommended;
            t.pools += 1;
        }
        t
    }
}

/// What this process remembers of one pool between syncs.
struct PoolMemory {
    generation: Option<i64>,
    state: decision::State,
    cold: TimeToReady,
    placeholder: TimeToReady,
    wake: TimeToReady,
    /// Latest Ready time counted per tier (RFC 3339 in status).
    last_observed: HashMap<Tier, f64>,
    ledger: ReadyLedger,
    /// Pods with a wake call in flight, and wake attempts per pod.
    waking: HashSet<String>,
    wake_attempts: HashMap<String, u32>,
    /// Sleep mode refused by the engines (reason), until the spec changes.
    sleep_unavailable: Option<String>,
    /// Request-rate forecasts awaiting their horizon: (due, forecast).
    forecasts: VecDeque<(f64, f64)>,
    started: f64,
    /// When the last decision was made.
    last_sync: Option<f64>,
    resume_floor: u32,
    last_recommended: u32,
    last_action: Option<decision::Action>,
    capacity: Capacity,
}

impl PoolMemory {
    fn resume(spec: &WarmPoolSpec, status: Option<&WarmPoolStatus>, now: f64) -> PoolMemory {
        let prior_cold = settings::prior_time_to_ready(spec);
        let from_status = |tier: Tier, prior: TimeToReady| {
            status
                .and_then(|s| s.time_to_ready.iter().find(|t| t.tier == tier))
                .filter(|t| t.samples > 0 && t.log_mean.is_finite() && t.log_variance >= 0.0)
                .map(|t| TimeToReady {
                    samples: t.samples,
                    weight: t.weight,
                    log_mean: t.log_mean,
                    log_variance: t.log_variance,
                })
                .unwrap_or(prior)
        };
        let last_observed: HashMap<Tier, f64> = status
            .map(|s| {
                s.time_to_ready
                    .iter()
                    .filter_map(|t| {
                        let at = t.last_observed_time.as_deref()?.parse::<Timestamp>().ok()?;
                        Some((t.tier, unix(at)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let watermark = [Tier::Cold, Tier::Placeholder]
            .iter()
            .filter_map(|t| last_observed.get(t))
            .fold(0.0f64, |a, b| a.max(*b));
        // A placeholder-assisted start skips provisioning: until one is seen, assume it
        // takes what a cold start takes without the first third (a rough share of node
        // provisioning in a cold start; learning replaces it at the first observation).
        let placeholder_prior = TimeToReady::prior(prior_cold * 2.0 / 3.0);
        PoolMemory {
            generation: None,
            state: decision::State::default(),
            cold: from_status(Tier::Cold, TimeToReady::prior(prior_cold)),
            placeholder: from_status(Tier::Placeholder, placeholder_prior),
            wake: from_status(Tier::Sleeping, TimeToReady::prior(DEFAULT_PRIOR_WAKE_SECS)),
            last_observed,
            ledger: ReadyLedger::resume(watermark),
            waking: HashSet::new(),
            wake_attempts: HashMap::new(),
            sleep_unavailable: None,
            forecasts: VecDeque::new(),
            started: now,
            last_sync: None,
            resume_floor: status.and_then(|s| s.recommended_replicas).unwrap_or(0),
            last_recommended: status.and_then(|s| s.recommended_replicas).unwrap_or(0),
            last_action: None,
            capacity: Capacity::default(),
        }
    }

    fn learner(&mut self, tier: Tier) -> &mut TimeToReady {
        match tier {
            Tier::Cold => &mut self.cold,
            Tier::Placeholder => &mut self.placeholder,
            Tier::Sleeping => &mut self.wake,
        }
    }
}

fn unix(t: Timestamp) -> f64 {
    t.as_second() as f64 + f64::from(t.subsec_nanosecond()) * 1e-9
}

fn now_unix() -> f64 {
    unix(Timestamp::now())
}

fn rfc3339(unix_secs: f64) -> String {
    Timestamp::from_second(unix_secs as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The controller's entry point for one pool.
pub async fn reconcile(pool: Arc<WarmPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = pool.namespace().unwrap_or_default();
    let api: Api<WarmPool> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, pool, |event| async {
        match event {
            FinalizerEvent::Apply(pool) => sync(&pool, &ctx).await,
            FinalizerEvent::Cleanup(pool) => cleanup(&pool, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.telemetry.set_totals(&ctx.totals());
    ctx.telemetry.reconciled(now_unix() as u64);
    result
}

/// What to do after a failed sync.
pub fn error_policy(_pool: Arc<WarmPool>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %DisplayChain(error), "warm pool sync failed");
    ctx.telemetry.reconcile_error(error.kind());
    Action::requeue(ERROR_REQUEUE)
}

/// Prints an error with its sources.
pub struct DisplayChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

async fn sync(pool: &WarmPool, ctx: &Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(pool);
    let namespace = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    let now = now_unix();
    let period = settings::sync_period(&pool.spec);
    let generation = pool.metadata.generation;

    // Memory: resumed from status the first time this process sees the pool.
    {
        let mut pools = ctx.pools.lock().map_err(|_| poisoned())?;
        let memory = pools
            .entry(key.clone())
            .or_insert_with(|| PoolMemory::resume(&pool.spec, pool.status.as_ref(), now));
        if memory.generation != generation {
            // A changed spec may have enabled sleep mode on the engines, and is decided on
            // at once.
            memory.sleep_unavailable = None;
            memory.generation = generation;
            memory.last_sync = None;
        }
        // Our own status write (and any other change that is not the spec) triggers a sync
        // too; decisions keep their period instead of following the watch.
        if let Some(last) = memory.last_sync {
            let due = last + period.as_secs_f64() - SYNC_EARLY_SECS;
            if now < due {
                return Ok(Action::requeue(Duration::from_secs_f64(
                    due - now + SYNC_EARLY_SECS,
                )));
            }
        }
        memory.last_sync = Some(now);
    }

    let settings = match settings::settings(&pool.spec) {
        Ok(s) => s,
        Err(e) => {
            let message = e.to_string();
            let conditions = vec![condition(
                "Ready",
                false,
                "InvalidSpec",
                &message,
                generation,
            )];
            patch_status(ctx, pool, status_with(pool, conditions)).await?;
            return Ok(Action::requeue(period));
        }
    };

    let target = match ctx
        .targets
        .read(&ctx.client, &namespace, &pool.spec.target_ref)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            let reason = match e {
                TargetError::UnknownKind { .. } => "UnknownKind",
                TargetError::NotFound { .. } => "TargetNotFound",
                TargetError::NoScale { .. } => "NoScaleSubresource",
                TargetError::Api { .. } => "TargetUnreadable",
            };
            let message = DisplayChain(&e).to_string();
            let conditions = vec![
                condition("TargetResolved", false, reason, &message, generation),
                condition("Ready", false, reason, &message, generation),
            ];
            patch_status(ctx, pool, status_with(pool, conditions)).await?;
            return Ok(Action::requeue(period));
        }
    };
    if target.selector.is_empty() {
        let message = format!(
            "{} {} reports no pod selector on /scale",
            pool.spec.target_ref.kind, target.path.name
        );
        let conditions = vec![
            condition("TargetResolved", false, "NoSelector", &message, generation),
            condition("Ready", false, "NoSelector", &message, generation),
        ];
        patch_status(ctx, pool, status_with(pool, conditions)).await?;
        return Ok(Action::requeue(period));
    }

    let Some(store) = ctx.watches.store(&key, &namespace, &target.selector) else {
        return Ok(Action::requeue(SYNC_WAIT));
    };
    let pods: Vec<PodFacts> = store.state().iter().map(|p| pods::facts(p)).collect();
    let placeholders: Vec<Arc<Pod>> = ctx
        .placeholders
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(namespace.as_str())
                && p.labels().get(PLACEHOLDER_LABEL) == Some(&name)
                && p.metadata.deletion_timestamp.is_none()
        })
        .collect();

    // Learn: placeholders the scheduler preempted since the last sync, then starts and
    // their tiers.
    let preempted = ctx.take_preemptions(&namespace, &name);
    let observations = ctx
        .memory(&key, |m| {
            for preemption in preempted {
                m.ledger.note_preemption(preemption);
            }
            let seen = m.ledger.observe(&pods, now);
            for o in &seen {
                m.learner(o.tier).observe(o.seconds);
                let last = m.last_observed.entry(o.tier).or_insert(0.0);
                *last = last.max(o.at);
            }
            seen
        })
        .unwrap_or_default();
    for o in &observations {
        ctx.telemetry.time_to_ready(o.tier.as_str(), o.seconds);
        tracing::info!(pool = %name, pod = %o.pod, tier = o.tier.as_str(), seconds = o.seconds, "time-to-ready observed");
    }

    // Carry on sleep cycles: drained replicas go to sleep, interrupted wakes resume.
    let sleeping_tier = pool.spec.tiers.as_ref().and_then(|t| t.sleeping.clone());
    let port = sleeping_tier
        .as_ref()
        .and_then(|t| t.port)
        .unwrap_or(DEFAULT_ENGINE_PORT);
    let level = sleeping_tier
        .as_ref()
        .and_then(|t| t.level)
        .unwrap_or(DEFAULT_SLEEP_LEVEL);
    finish_drains(ctx, pool, &key, &pods, port, level, now).await?;
    for pod in pods
        .iter()
        .filter(|p| p.sleep == Some(SleepState::Waking) && !p.terminating)
    {
        start_wake(ctx, pool, &key, pod, port, pod.sleep_since.unwrap_or(now));
    }

    // Read demand as any client would.
    let (demand, metrics_condition) = match demand::read(&ctx.client, &target.path).await {
        Ok(d) => {
            let available = d.requests_per_second.is_some() || d.prompt_tokens_per_second.is_some();
            let c = if available {
                condition(
                    "MetricsAvailable",
                    true,
                    "Served",
                    "the adapter serves the target's demand metrics",
                    generation,
                )
            } else {
                condition("MetricsAvailable", false, "NoData", "the adapter has no fresh demand metrics for the target (no Ready, scraped replica)", generation)
            };
            (d, c)
        }
        Err(e) => (
            DemandSample::default(),
            condition(
                "MetricsAvailable",
                false,
                "MetricsAPIUnavailable",
                &DisplayChain(&e).to_string(),
                generation,
            ),
        ),
    };

    // Decide.
    let capacity = Capacity::of(&pods, placeholders.len() as u32);
    let snapshot = build_snapshot(&pods, &target, capacity, &demand, now, ctx, &key);
    let Some((mut rec, floor_applied)) = ctx.memory(&key, |m| {
        let mut rec = decision::decide(&settings, &mut m.state, &snapshot);
        // A new leader never asks for less than the previous one did while it warms up.
        let mut floor_applied = false;
        if now - m.started < RESUME_HOLD_SECS {
            let floor = m.resume_floor.saturating_sub(rec.sleeping_wanted);
            if rec.serving_replicas < floor {
                rec.serving_replicas = floor.min(settings.bounds.max_replicas);
                floor_applied = true;
            }
        }
        if m.sleep_unavailable.is_some() {
            rec.put_to_sleep = 0;
            rec.sleeping_wanted = rec.sleeping_wanted.min(capacity.sleeping);
        }
        (rec, floor_applied)
    }) else {
        return Err(poisoned());
    };
    rec.wake = rec.wake.min(
        pods.iter()
            .filter(|p| p.sleep == Some(SleepState::Asleep) && !p.terminating)
            .count() as u32,
    );

    // Act: wake first (wake-before-scale), then sleep, then placeholders.
    let woken = wake_sleepers(ctx, pool, &key, &pods, rec.wake, port, now).await?;
    let put_to_sleep = if sleeping_tier.is_some() {
        start_drains(ctx, pool, &pods, rec.put_to_sleep, now).await?
    } else {
        0
    };
    let placeholders_wanted = pool
        .spec
        .tiers
        .as_ref()
        .and_then(|t| t.placeholder.as_ref())
        .map_or(0, |t| rec.placeholders_wanted.min(t.max_replicas));
    reconcile_placeholders(ctx, pool, &target, &placeholders, placeholders_wanted).await?;

    let recommended = recommended_replicas(&rec, &settings.bounds);
    let (previous, action_changed) = ctx
        .memory(&key, |m| {
            let previous = m.last_recommended;
            let action_changed = m.last_action != Some(rec.action);
            m.last_recommended = recommended;
            m.last_action = Some(rec.action);
            m.capacity = capacity;
            if rec.forecast.horizon_secs > 0.0 {
                m.forecasts.push_back((
                    now + rec.forecast.horizon_secs,
                    rec.forecast.request_rate.expected,
                ));
            }
            (previous, action_changed)
        })
        .unwrap_or((0, true));
    score_forecasts(ctx, &key, &demand, now);

    // Report.
    ctx.telemetry.decision(rec.action.as_str());
    // An Event when something changes, not one per sync: the status says the rest.
    if recommended != previous || action_changed || woken > 0 || put_to_sleep > 0 {
        let note = format!(
            "recommend {recommended} replicas (was {previous}){}: {}",
            if floor_applied {
                ", held at the previous leader's recommendation"
            } else {
                ""
            },
            rec.reason
        );
        publish(
            ctx,
            pool,
            EventType::Normal,
            reason_of(rec.action),
            "Recommend",
            note,
        )
        .await;
    }
    let status = decided_status(
        pool,
        ctx,
        &key,
        &rec,
        recommended,
        woken,
        put_to_sleep,
        capacity,
        &demand,
        metrics_condition,
        now,
    );
    patch_status(ctx, pool, status).await?;
    Ok(Action::requeue(period))
}

fn poisoned() -> Error {
    Error::Poisoned
}

/// The recommendation the adapter serves: serving replicas plus the sleepers kept, which are
/// pods of the same workload.
fn recommended_replicas(rec: &Recommendation, bounds: &decision::Bounds) -> u32 {
    (rec.serving_replicas + rec.sleeping_wanted).clamp(
        bounds.min_replicas,
        bounds.max_replicas.max(bounds.min_replicas),
    )
}

fn reason_of(action: decision::Action) -> &'static str {
    match action {
        decision::Action::ScaleUp => "ScaleUp",
        decision::Action::ScaleDown => "ScaleDown",
        decision::Action::Wake => "Wake",
        decision::Action::Hold => "Hold",
    }
}

fn build_snapshot(
    pods: &[PodFacts],
    target: &Target,
    capacity: Capacity,
    demand: &DemandSample,
    now: f64,
    ctx: &Context,
    key: &ObjectRef<WarmPool>,
) -> Snapshot {
    let pending = pods
        .iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| match p.sleep {
            None if !p.ready => Some(decision::Pending {
                age_secs: (now - p.created).max(0.0),
                from: decision::Tier::Cold,
            }),
            Some(SleepState::Waking) => Some(decision::Pending {
                age_secs: (now - p.sleep_since.unwrap_or(now)).max(0.0),
                from: decision::Tier::Sleeping,
            }),
            _ => None,
        })
        .collect();
    let times = ctx
        .memory(key, |m| decision::TierTimes {
            cold: m.cold,
            placeholder: m.placeholder,
            wake: m.wake,
        })
        .unwrap_or(decision::TierTimes {
            cold: TimeToReady::prior(settings::DEFAULT_PRIOR_TIME_TO_READY_SECS as f64),
            placeholder: TimeToReady::prior(settings::DEFAULT_PRIOR_TIME_TO_READY_SECS as f64),
            wake: TimeToReady::prior(DEFAULT_PRIOR_WAKE_SECS),
        });
    Snapshot {
        now_secs: now,
        demand: decision::Demand {
            request_rate: demand.requests_per_second,
            prompt_token_rate: demand.prompt_tokens_per_second,
            generation_token_rate: demand.generation_tokens_per_second,
            rate_window_secs: demand.rate_window_seconds,
        },
        signals: decision::ServingSignals {
            queue_depth: demand.queue_depth,
            running: demand.running,
            kv_cache_usage: demand.kv_cache_usage,
            ttft_p95_secs: demand.ttft_p95_seconds,
        },
        capacity: decision::Capacity {
            desired_serving: target.spec_replicas.saturating_sub(capacity.sleeping),
            ready: capacity.serving,
            pending,
            sleeping: capacity.sleeping,
            placeholders: capacity.placeholders,
        },
        time_to_ready: times,
    }
}

/// Records how far off the request-rate forecasts whose horizon has passed were (forecasts
/// that come due while the rate is missing are dropped unscored).
fn score_forecasts(ctx: &Context, key: &ObjectRef<WarmPool>, demand: &DemandSample, now: f64) {
    let due: Vec<f64> = ctx
        .memory(key, |m| {
            let mut due = Vec::new();
            while m.forecasts.front().is_some_and(|(t, _)| *t <= now) {
                if let Some((_, f)) = m.forecasts.pop_front() {
                    due.push(f);
                }
            }
            due
        })
        .unwrap_or_default();
    let Some(actual) = demand.requests_per_second else {
        return;
    };
    for forecast in due {
        // Relative to the larger of the two, so a quiet period does not divide by ~0.
        let scale = actual.max(forecast).max(1e-9);
        ctx.telemetry
            .forecast_error((forecast - actual).abs() / scale);
    }
}

// --- Sleep and wake ---------------------------------------------------------------------------

async fn patch_pod(
    ctx: &Context,
    namespace: &str,
    pod: &str,
    patch: serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    match api
        .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone meanwhile: nothing to mark.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Moves a pod to `state` of the sleep cycle (`None`: awake, back in the Service).
async fn mark(
    ctx: &Context,
    namespace: &str,
    pod: &PodFacts,
    state: Option<SleepState>,
    now: f64,
) -> Result<(), Error> {
    let action = match state {
        Some(SleepState::Draining) => "marking a replica draining",
        Some(SleepState::Asleep) => "marking a replica asleep",
        Some(SleepState::Waking) => "marking a replica waking",
        None => "returning a replica to the Service",
    };
    patch_pod(
        ctx,
        namespace,
        &pod.name,
        pods::sleep_state_patch(state, &rfc3339(now)),
    )
    .await
    .map_err(kube_error(action))
}

/// Takes up to `count` serving replicas out of the Service; they are put to sleep once idle.
async fn start_drains(
    ctx: &Context,
    pool: &WarmPool,
    pods: &[PodFacts],
    count: u32,
    now: f64,
) -> Result<u32, Error> {
    if count == 0 {
        return Ok(0);
    }
    let namespace = pool.namespace().unwrap_or_default();
    // The most recently Ready first: the oldest replicas hold the warmest prefix caches.
    let mut serving: Vec<&PodFacts> = pods.iter().filter(|p| p.is_serving()).collect();
    serving.sort_by(|a, b| {
        b.ready_since
            .partial_cmp(&a.ready_since)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut done = 0;
    for pod in serving.into_iter().take(count as usize) {
        mark(ctx, &namespace, pod, Some(SleepState::Draining), now).await?;
        publish(
            ctx,
            pool,
            EventType::Normal,
            "Draining",
            "Sleep",
            format!("{} left the Service to be put to sleep once idle", pod.name),
        )
        .await;
        done += 1;
    }
    Ok(done)
}

/// Puts drained replicas to sleep.
async fn finish_drains(
    ctx: &Arc<Context>,
    pool: &WarmPool,
    key: &ObjectRef<WarmPool>,
    pods: &[PodFacts],
    port: u16,
    level: u8,
    now: f64,
) -> Result<(), Error> {
    let namespace = pool.namespace().unwrap_or_default();
    for pod in pods
        .iter()
        .filter(|p| p.sleep == Some(SleepState::Draining) && !p.terminating)
    {
        let in_flight = demand::pod_in_flight(&ctx.client, &namespace, &pod.name)
            .await
            .ok()
            .flatten();
        let drained_for = now - pod.sleep_since.unwrap_or(now);
        if in_flight.is_some_and(|n| n > 0.0) && drained_for < DRAIN_TIMEOUT_SECS {
            continue;
        }
        let Some(ip) = &pod.ip else { continue };
        match Engine::new(ip, port).sleep(&ctx.http, level).await {
            Ok(()) => {
                ctx.telemetry.engine_call("sleep", true);
                mark(ctx, &namespace, pod, Some(SleepState::Asleep), now).await?;
                publish(
                    ctx,
                    pool,
                    EventType::Normal,
                    "Slept",
                    "Sleep",
                    format!(
                        "{} is asleep (level {level}), holding its GPU out of the Service",
                        pod.name
                    ),
                )
                .await;
            }
            Err(e) => {
                ctx.telemetry.engine_call("sleep", false);
                // Back into the Service: a replica that cannot sleep is better serving.
                mark(ctx, &namespace, pod, None, now).await?;
                let message = format!(
                    "{} could not be put to sleep, sleeping tier paused until the spec changes: {}",
                    pod.name,
                    DisplayChain(&e)
                );
                ctx.memory(key, |m| m.sleep_unavailable = Some(message.clone()));
                publish(
                    ctx,
                    pool,
                    EventType::Warning,
                    "SleepFailed",
                    "Sleep",
                    message,
                )
                .await;
            }
        }
    }
    Ok(())
}

/// Wakes up to `count` sleeping replicas (longest asleep first).
async fn wake_sleepers(
    ctx: &Arc<Context>,
    pool: &WarmPool,
    key: &ObjectRef<WarmPool>,
    pods: &[PodFacts],
    count: u32,
    port: u16,
    now: f64,
) -> Result<u32, Error> {
    if count == 0 {
        return Ok(0);
    }
    let namespace = pool.namespace().unwrap_or_default();
    let mut asleep: Vec<&PodFacts> = pods
        .iter()
        .filter(|p| p.sleep == Some(SleepState::Asleep) && !p.terminating)
        .collect();
    asleep.sort_by(|a, b| {
        a.sleep_since
            .partial_cmp(&b.sleep_since)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut woken = 0;
    for pod in asleep.into_iter().take(count as usize) {
        mark(ctx, &namespace, pod, Some(SleepState::Waking), now).await?;
        start_wake(ctx, pool, key, pod, port, now);
        woken += 1;
    }
    Ok(woken)
}

/// Starts (or resumes) a wake call in the background: `POST /wake_up`, then
/// `GET /is_sleeping` until false; the replica rejoins the Service and the wake is timed.
fn start_wake(
    ctx: &Arc<Context>,
    pool: &WarmPool,
    key: &ObjectRef<WarmPool>,
    pod: &PodFacts,
    port: u16,
    since: f64,
) {
    let Some(ip) = pod.ip.clone() else { return };
    let fresh = ctx
        .memory(key, |m| m.waking.insert(pod.uid.clone()))
        .unwrap_or(false);
    if !fresh {
        return;
    }
    let span = tracing::info_span!("wake", pod = %pod.name);
    let ctx2 = Arc::clone(ctx);
    let pool = pool.clone();
    let key = key.clone();
    let pod = pod.clone();
    let task = async move {
        let ctx = ctx2;
        let namespace = pool.namespace().unwrap_or_default();
        let engine = Engine::new(&ip, port);
        let outcome = wake_and_wait(&ctx, &engine).await;
        ctx.telemetry.engine_call("wake_up", outcome.is_ok());
        match outcome {
            Ok(()) => {
                let now = now_unix();
                let took = (now - since).max(0.0);
                let back = mark(&ctx, &namespace, &pod, None, now).await;
                ctx.memory(&key, |m| {
                    m.waking.remove(&pod.uid);
                    m.wake_attempts.remove(&pod.uid);
                    if back.is_ok() {
                        m.wake.observe(took);
                        let last = m.last_observed.entry(Tier::Sleeping).or_insert(0.0);
                        *last = last.max(now);
                    }
                });
                if back.is_ok() {
                    ctx.telemetry.time_to_ready(Tier::Sleeping.as_str(), took);
                    publish(
                        &ctx,
                        &pool,
                        EventType::Normal,
                        "Woken",
                        "Wake",
                        format!(
                            "{} is awake and back in the Service after {took:.1}s",
                            pod.name
                        ),
                    )
                    .await;
                }
            }
            Err(e) => {
                let attempts = ctx
                    .memory(&key, |m| {
                        m.waking.remove(&pod.uid);
                        let n = m.wake_attempts.entry(pod.uid.clone()).or_insert(0);
                        *n += 1;
                        *n
                    })
                    .unwrap_or(0);
                let message = format!(
                    "{} did not wake (attempt {attempts}): {}",
                    pod.name,
                    DisplayChain(&e)
                );
                publish(
                    &ctx,
                    &pool,
                    EventType::Warning,
                    "WakeFailed",
                    "Wake",
                    message,
                )
                .await;
                if attempts >= MAX_WAKE_ATTEMPTS {
                    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
                    if api
                        .delete(&pod.name, &DeleteParams::default())
                        .await
                        .is_ok()
                    {
                        publish(&ctx, &pool, EventType::Warning, "ReplacedUnwakeable", "Wake", format!("deleted {} after {attempts} failed wakes; its ReplicaSet starts a new replica", pod.name)).await;
                    }
                }
            }
        }
    };
    if let Ok(mut tasks) = ctx.tasks.lock() {
        // Reap finished wakes so the set holds only the ones in flight.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(tracing::Instrument::instrument(task, span));
    }
}

async fn wake_and_wait(ctx: &Context, engine: &Engine) -> Result<(), super::engine::EngineError> {
    engine.wake_up(&ctx.http).await?;
    let deadline = tokio::time::Instant::now() + WAKE_DEADLINE;
    loop {
        match engine.is_sleeping(&ctx.http).await {
            Ok(false) => return Ok(()),
            Ok(true) | Err(_) if tokio::time::Instant::now() < deadline => {}
            Ok(true) => {
                return Err(super::engine::EngineError::Decode {
                    call: "is_sleeping",
                    url: String::new(),
                    reason: format!("still asleep {}s after wake_up", WAKE_DEADLINE.as_secs()),
                })
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(WAKE_POLL).await;
    }
}

// --- Placeholders ------------------------------------------------------------------------------

async fn reconcile_placeholders(
    ctx: &Context,
    pool: &WarmPool,
    target: &Target,
    existing: &[Arc<Pod>],
    wanted: u32,
) -> Result<(), Error> {
    let namespace = pool.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let have = existing.len() as u32;
    if have < wanted {
        let Some(spec) = target.template.clone() else {
            publish(
                ctx,
                pool,
                EventType::Warning,
                "NoPodTemplate",
                "Placeholder",
                format!(
                    "{} {} has no pod template where placeholders look (spec.template)",
                    pool.spec.target_ref.kind, target.path.name
                ),
            )
            .await;
            return Ok(());
        };
        let tier = pool.spec.tiers.as_ref().and_then(|t| t.placeholder.clone());
        let template = PlaceholderTemplate {
            pool: pool.name_any(),
            namespace: namespace.clone(),
            owner: pool
                .controller_owner_ref(&())
                .ok_or(Error::NoOwnerReference)?,
            priority_class: tier
                .as_ref()
                .and_then(|t| t.priority_class_name.clone())
                .unwrap_or_else(|| pods::DEFAULT_PLACEHOLDER_PRIORITY_CLASS.to_owned()),
            image: tier
                .as_ref()
                .and_then(|t| t.image.clone())
                .unwrap_or_else(|| pods::DEFAULT_PLACEHOLDER_IMAGE.to_owned()),
            shape: ReplicaShape::of(&spec),
        };
        for _ in have..wanted {
            match api.create(&PostParams::default(), &template.pod()).await {
                Ok(p) => {
                    publish(
                        ctx,
                        pool,
                        EventType::Normal,
                        "PlaceholderCreated",
                        "Placeholder",
                        format!("created {} to hold a node for a replica", p.name_any()),
                    )
                    .await;
                }
                Err(e) => {
                    publish(
                        ctx,
                        pool,
                        EventType::Warning,
                        "PlaceholderFailed",
                        "Placeholder",
                        format!("could not create a placeholder: {}", DisplayChain(&e)),
                    )
                    .await;
                    break;
                }
            }
        }
    } else if have > wanted {
        // Unscheduled placeholders hold nothing: remove those first, then the newest.
        let mut victims: Vec<&Arc<Pod>> = existing.iter().collect();
        victims.sort_by_key(|p| {
            let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
            (
                scheduled,
                std::cmp::Reverse(p.metadata.creation_timestamp.clone().map(|t| t.0)),
            )
        });
        for victim in victims.into_iter().take((have - wanted) as usize) {
            match api
                .delete(&victim.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(kube_error("deleting a placeholder")(e)),
            }
            publish(
                ctx,
                pool,
                EventType::Normal,
                "PlaceholderDeleted",
                "Placeholder",
                format!(
                    "deleted {}: fewer placeholders pay for themselves now",
                    victim.name_any()
                ),
            )
            .await;
        }
    }
    Ok(())
}

// --- Cleanup -----------------------------------------------------------------------------------

/// A deleted pool wakes every replica it put to sleep (a sleeping replica would otherwise
/// hold its GPU out of the Service forever) and deletes its placeholders (the garbage
/// collector would too, through the owner references; doing it here frees the nodes now).
async fn cleanup(pool: &WarmPool, ctx: &Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(pool);
    let namespace = pool.namespace().unwrap_or_default();
    let port = pool
        .spec
        .tiers
        .as_ref()
        .and_then(|t| t.sleeping.as_ref())
        .and_then(|t| t.port)
        .unwrap_or(DEFAULT_ENGINE_PORT);
    if let Ok(target) = ctx
        .targets
        .read(&ctx.client, &namespace, &pool.spec.target_ref)
        .await
    {
        if let Some(store) = ctx.watches.store(&key, &namespace, &target.selector) {
            for pod in store.state().iter().map(|p| pods::facts(p)) {
                let Some(state) = pod.sleep else { continue };
                if state != SleepState::Draining {
                    if let Some(ip) = &pod.ip {
                        let engine = Engine::new(ip, port);
                        let ok = wake_and_wait(ctx, &engine).await.is_ok();
                        ctx.telemetry.engine_call("wake_up", ok);
                    }
                }
                mark(ctx, &namespace, &pod, None, now_unix()).await?;
            }
        }
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let lp = kube::api::ListParams::default()
        .labels(&format!("{PLACEHOLDER_LABEL}={}", pool.name_any()));
    api.delete_collection(&DeleteParams::default(), &lp)
        .await
        .map_err(kube_error("deleting placeholders"))?;
    publish(
        ctx,
        pool,
        EventType::Normal,
        "Released",
        "Delete",
        "woke every sleeping replica and deleted the placeholders".into(),
    )
    .await;
    if let Ok(mut pools) = ctx.pools.lock() {
        pools.remove(&key);
    }
    ctx.watches.forget(&key);
    Ok(Action::await_change())
}

// --- Status and Events -------------------------------------------------------------------------

async fn publish(
    ctx: &Context,
    pool: &WarmPool,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let reference = pool.object_ref(&());
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, "could not publish an event");
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.chars().take(1000).collect(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Merges new conditions into the old ones, keeping a condition's transition time while its
/// status does not change.
fn merge_conditions(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    let mut out: Vec<Condition> = old.to_vec();
    for c in new {
        match out.iter_mut().find(|o| o.type_ == c.type_) {
            Some(o) => {
                let keep_time = o.status == c.status;
                let time = o.last_transition_time.clone();
                *o = c;
                if keep_time {
                    o.last_transition_time = time;
                }
            }
            None => out.push(c),
        }
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

fn status_with(pool: &WarmPool, conditions: Vec<Condition>) -> WarmPoolStatus {
    let mut status = pool.status.clone().unwrap_or_default();
    status.conditions = merge_conditions(&status.conditions, conditions);
    status.observed_generation = pool.metadata.generation;
    status
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; a struct of the same fields would say no more"
)]
fn decided_status(
    pool: &WarmPool,
    ctx: &Context,
    key: &ObjectRef<WarmPool>,
    rec: &Recommendation,
    recommended: u32,
    woken: u32,
    put_to_sleep: u32,
    capacity: Capacity,
    demand: &DemandSample,
    metrics_condition: Condition,
    now: f64,
) -> WarmPoolStatus {
    let generation = pool.metadata.generation;
    let mut conditions = vec![
        condition(
            "TargetResolved",
            true,
            "Found",
            "the target and its scale subresource are readable",
            generation,
        ),
        metrics_condition,
    ];
    let sleep_problem = ctx.memory(key, |m| m.sleep_unavailable.clone()).flatten();
    match &sleep_problem {
        Some(message) => conditions.push(condition(
            "Ready",
            false,
            "SleepModeUnavailable",
            message,
            generation,
        )),
        None => conditions.push(condition("Ready", true, "Decided", &rec.reason, generation)),
    }
    let mut status = status_with(pool, conditions);
    let (times, last_observed) = ctx
        .memory(key, |m| {
            (
                [
                    (Tier::Cold, m.cold),
                    (Tier::Placeholder, m.placeholder),
                    (Tier::Sleeping, m.wake),
                ],
                m.last_observed.clone(),
            )
        })
        .unwrap_or_else(|| ([(Tier::Cold, TimeToReady::prior(1.0)); 3], HashMap::new()));
    status.time_to_ready = times
        .iter()
        .map(|(tier, t)| TimeToReadyStatus {
            tier: *tier,
            p50_seconds: round(t.p50(), 2),
            p95_seconds: round(t.p95(), 2),
            samples: t.samples,
            weight: t.weight,
            log_mean: t.log_mean,
            log_variance: t.log_variance,
            last_observed_time: last_observed.get(tier).map(|t| rfc3339(*t)),
        })
        .collect();
    status.recommended_replicas = Some(recommended);
    status.capacity = Some(TierCapacity {
        serving: capacity.serving,
        pending: capacity.pending,
        sleeping: capacity.sleeping,
        waking: capacity.waking,
        placeholders: capacity.placeholders,
    });
    let f = &rec.forecast;
    let estimate = |e: &decision::forecast::Estimate| crd::Estimate {
        expected: round(e.expected, 3),
        low: round(e.low, 3),
        high: round(e.high, 3),
    };
    if f.horizon_secs > 0.0 {
        status.forecast = Some(ForecastStatus {
            horizon_seconds: round(f.horizon_secs, 1),
            requests_per_second: estimate(&f.request_rate),
            work: estimate(&f.work),
            observed_requests_per_second: demand.requests_per_second.map(|v| round(v, 3)),
            time: rfc3339(now),
        });
    }
    let c = &rec.expected_cost;
    status.last_decision = Some(DecisionStatus {
        time: rfc3339(now),
        action: rec.action.as_str().into(),
        message: rec.reason.clone(),
        recommended_replicas: recommended,
        serving: rec.serving_replicas,
        sleeping: rec.sleeping_wanted,
        placeholders: rec.placeholders_wanted,
        woken,
        put_to_sleep,
        capacity_per_replica: round(rec.capacity_per_replica, 4),
        expected_cost_per_hour: ExpectedCost {
            capacity: round(c.gpu_per_hour, 4),
            misses: round(c.misses_per_hour, 2),
            miss_cost: round(c.miss_cost_per_hour, 4),
            total: round(c.total_per_hour, 4),
            attainment: round(c.attainment, 5),
        },
    });
    let cold = &times[0].1;
    status.summary = Some(Summary {
        cold_time_to_ready_p95: Some(format!("{:.0}s (n={})", cold.p95(), cold.samples)),
        forecast: (f.horizon_secs > 0.0).then(|| {
            format!(
                "{:.2} [{:.2}, {:.2}] req/s @{:.0}s",
                f.request_rate.expected, f.request_rate.low, f.request_rate.high, f.horizon_secs
            )
        }),
    });
    status
}

fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    if v.is_finite() {
        (v * scale).round() / scale
    } else {
        0.0
    }
}

async fn patch_status(ctx: &Context, pool: &WarmPool, status: WarmPoolStatus) -> Result<(), Error> {
    let api: Api<WarmPool> =
        Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &pool.name_any(),
        &PatchParams::apply(MANAGER),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube_error("writing the WarmPool status"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(c: &mut Condition, secs: i64) {
        c.last_transition_time = Time(Timestamp::from_second(secs).unwrap());
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut ready = condition("Ready", true, "Decided", "first", Some(1));
        at(&mut ready, 100);
        let mut again = condition("Ready", true, "Decided", "second", Some(2));
        at(&mut again, 200);
        let merged = merge_conditions(&[ready.clone()], vec![again]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].message, "second");
        assert_eq!(merged[0].last_transition_time, ready.last_transition_time);
        let mut flipped = condition("Ready", false, "InvalidSpec", "bad", Some(3));
        at(&mut flipped, 300);
        let merged = merge_conditions(&merged, vec![flipped.clone()]);
        assert_eq!(merged[0].last_transition_time, flipped.last_transition_time);
    }

    #[test]
    fn conditions_are_sorted_and_new_ones_added() {
        let merged = merge_conditions(
            &[condition("TargetResolved", true, "Found", "", None)],
            vec![
                condition("Ready", true, "Decided", "", None),
                condition("MetricsAvailable", false, "NoData", "", None),
            ],
        );
        let types: Vec<&str> = merged.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["MetricsAvailable", "Ready", "TargetResolved"]);
    }

    #[test]
    fn the_recommendation_counts_sleepers_and_respects_bounds() {
        let mut rec = Recommendation {
            serving_replicas: 3,
            wake: 0,
            put_to_sleep: 0,
            sleeping_wanted: 2,
            placeholders_wanted: 1,
            forecast: Default::default(),
            expected_cost: Default::default(),
            capacity_per_replica: 0.5,
            action: decision::Action::Hold,
            reason: String::new(),
        };
        let bounds = decision::Bounds {
            min_replicas: 1,
            max_replicas: 8,
        };
        assert_eq!(recommended_replicas(&rec, &bounds), 5);
        rec.serving_replicas = 7;
        assert_eq!(recommended_replicas(&rec, &bounds), 8);
        rec.serving_replicas = 0;
        rec.sleeping_wanted = 0;
        assert_eq!(recommended_replicas(&rec, &bounds), 1);
    }
}
