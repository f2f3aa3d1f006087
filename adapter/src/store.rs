//! The adapter's in-memory store: targets, their recent scrapes, and the signals derived
//! from them.
//!
//! Owns: what the pod watches say exists ([`TargetRegistry`]), what the scraper wrote
//! ([`ScrapeSink`]), and the read view the API serves from ([`SignalView`]). Each role is a
//! small trait so the HTTP layer only ever reads and the scraper only ever writes.
//! Signals are computed once per successful scrape, under the read lock (readers are not
//! blocked; the write lock is taken only to store the result), and shared as `Arc`s;
//! serving a request clones a few pointers under a read lock.
//!
//! A pod is *servable* only when it is Ready, not terminating, its last scrape succeeded and
//! is fresh. Anything else makes it missing from answers — never zero.

use inferscale_metrics::gpu::{join_gpus, GpuJoin, GpuReading, PodGpus, PodRef};
use inferscale_metrics::signals::{ReplicaSignals, ScrapeHistory, SingleScrape};
use inferscale_metrics::snapshot::EngineSnapshot;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// Namespace and name of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> PodKey {
        PodKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An object that owns a pod, directly or through a chain (ReplicaSet → Deployment).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerRef {
    /// `apiVersion` as the owner reference states it (`apps/v1`, `v1`, ...).
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

impl OwnerRef {
    /// The API group (`""` for core).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }
}

/// What a target serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// An inference server (vLLM, SGLang, TGI).
    Engine,
    /// An NVIDIA dcgm-exporter.
    GpuExporter,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Engine => "engine",
            TargetKind::GpuExporter => "dcgm",
        }
    }
}

/// A pod to scrape, as the pod watches (or the static list) see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub key: PodKey,
    pub uid: String,
    pub kind: TargetKind,
    /// Scrape URL, or `None` while the pod has no IP.
    pub url: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub node: Option<String>,
    /// The pod's Ready condition.
    pub ready: bool,
    /// The pod has a deletion timestamp.
    pub terminating: bool,
    /// The warm-pool controller has taken the replica out of its Service (draining, asleep
    /// or waking): not serving capacity.
    pub asleep: bool,
    /// Owner chain, nearest first (e.g. ReplicaSet, then Deployment).
    pub owners: Vec<OwnerRef>,
}

/// Why the last scrape failed. Closed set: it labels our own metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScrapeFailure {
    Connect,
    Timeout,
    HttpStatus,
    /// The target answered a redirect, which is never followed.
    Redirect,
    BodyTooLarge,
    Body,
    /// The body parsed but held no metric of any known engine (or exporter).
    NoKnownMetrics,
}

impl ScrapeFailure {
    pub const ALL: [ScrapeFailure; 7] = [
        ScrapeFailure::Connect,
        ScrapeFailure::Timeout,
        ScrapeFailure::HttpStatus,
        ScrapeFailure::Redirect,
        ScrapeFailure::BodyTooLarge,
        ScrapeFailure::Body,
        ScrapeFailure::NoKnownMetrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScrapeFailure::Connect => "connect_error",
            ScrapeFailure::Timeout => "timeout",
            ScrapeFailure::HttpStatus => "http_error",
            ScrapeFailure::Redirect => "redirect",
            ScrapeFailure::BodyTooLarge => "body_too_large",
            ScrapeFailure::Body => "body_error",
            ScrapeFailure::NoKnownMetrics => "no_known_metrics",
        }
    }
}

/// Why a pod is left out of answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unservable {
    NotReady,
    Terminating,
    /// Drained, asleep or waking (warm-pool sleeping tier).
    Asleep,
    NotScrapedYet,
    ScrapeFailed(ScrapeFailure),
    Stale,
}

impl Unservable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unservable::NotReady => "not_ready",
            Unservable::Terminating => "terminating",
            Unservable::Asleep => "asleep",
            Unservable::NotScrapedYet => "not_scraped_yet",
            Unservable::ScrapeFailed(_) => "scrape_failed",
            Unservable::Stale => "stale",
        }
    }
}

/// Scrape bookkeeping of one target.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScrapeHealth {
    pub last_attempt: Option<f64>,
    pub last_success: Option<f64>,
    pub last_failure: Option<ScrapeFailure>,
    pub last_duration_secs: Option<f64>,
    pub consecutive_failures: u32,
}

impl ScrapeHealth {
    /// Health after a successful scrape completed at `at`.
    fn succeeded(at: f64, duration_secs: f64) -> ScrapeHealth {
        ScrapeHealth {
            last_attempt: Some(at),
            last_success: Some(at),
            last_failure: None,
            last_duration_secs: Some(duration_secs),
            consecutive_failures: 0,
        }
    }
}

/// One pod as the API sees it.
#[derive(Debug, Clone)]
pub struct EnginePod {
    pub target: Arc<Target>,
    pub signals: Option<Arc<ReplicaSignals>>,
    pub gpus: Option<Arc<PodGpus>>,
    pub servable: Result<(), Unservable>,
}

/// The pod watches' side: which targets exist.
pub trait TargetRegistry: Send + Sync {
    /// Adds or updates a target (its scrape history is kept when only metadata changed).
    fn upsert_target(&self, target: Target);
    /// Drops every target not in `keep` (of the given kind).
    fn retain_targets(&self, kind: TargetKind, keep: &HashSet<PodKey>);
}

/// The scraper's side.
pub trait ScrapeSink: Send + Sync {
    /// Targets to scrape now, with their URL.
    fn scrape_targets(&self) -> Vec<Arc<Target>>;
    fn record_engine_scrape(&self, key: &PodKey, snapshot: EngineSnapshot, duration_secs: f64);
    fn record_gpu_scrape(
        &self,
        key: &PodKey,
        gpus: Vec<GpuReading>,
        taken_at: f64,
        duration_secs: f64,
    );
    fn record_failure(&self, key: &PodKey, failure: ScrapeFailure, at: f64, duration_secs: f64);
}

/// The API's side: read-only.
pub trait SignalView: Send + Sync {
    /// Engine pods of a namespace (all namespaces with `None`), servable or not.
    fn engine_pods(&self, namespace: Option<&str>, now: f64) -> Vec<EnginePod>;
    /// Counts for readiness and our own metrics.
    fn summary(&self, now: f64) -> StoreSummary;
    /// Scrape health of every target, for our own metrics.
    fn health(&self) -> Vec<(TargetKind, ScrapeHealth)>;
    /// Changes whenever anything in the store changes (for response caching).
    fn generation(&self) -> u64;
}

/// Store-wide counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreSummary {
    pub engine_targets: usize,
    pub gpu_targets: usize,
    pub servable_engine_pods: usize,
    /// Age of the oldest fresh engine scrape, seconds.
    pub oldest_fresh_scrape_age: Option<f64>,
    /// When any scrape last completed, successful or not.
    pub last_scrape_completed: Option<f64>,
    /// Targets with an address (so the scrape loop scrapes them) whose first scrape has not
    /// completed yet. Targets without one (Pending, Failed, Evicted, Succeeded pods, pods
    /// without an IP) are never counted: nothing will ever be attempted for them.
    pub scrapable_not_attempted: usize,
}

#[derive(Debug)]
struct TargetState {
    target: Arc<Target>,
    history: ScrapeHistory,
    health: ScrapeHealth,
    signals: Option<Arc<ReplicaSignals>>,
    gpus: Vec<GpuReading>,
}

#[derive(Debug, Default)]
struct Inner {
    targets: HashMap<PodKey, TargetState>,
    /// GPUs joined to the pods that hold them, rebuilt after each dcgm-exporter scrape.
    gpus_by_pod: HashMap<PodKey, Arc<PodGpus>>,
    last_scrape_completed: Option<f64>,
    generation: u64,
}

/// The store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    inner: RwLock<Inner>,
    window_secs: f64,
    stale_after_secs: f64,
}

impl Store {
    /// `stale_after_secs`: a scrape older than this no longer counts (a few intervals, so
    /// one slow scrape does not flap a pod in and out of answers).
    pub fn new(window_secs: f64, stale_after_secs: f64) -> Store {
        Store {
            inner: RwLock::new(Inner::default()),
            window_secs,
            stale_after_secs,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock leaves data that is still consistent (every write
        // is a single assignment), so a poisoned lock is not a reason to stop serving.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Write access; every write is a change readers may have cached answers for.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.generation += 1;
        inner
    }

    fn servable(&self, state: &TargetState, now: f64) -> Result<(), Unservable> {
        let target = &state.target;
        if target.terminating {
            return Err(Unservable::Terminating);
        }
        if target.asleep {
            return Err(Unservable::Asleep);
        }
        if !target.ready {
            return Err(Unservable::NotReady);
        }
        let health = &state.health;
        if let Some(failure) = health.last_failure {
            return Err(Unservable::ScrapeFailed(failure));
        }
        match health.last_success {
            None => Err(Unservable::NotScrapedYet),
            Some(at) if now - at > self.stale_after_secs => Err(Unservable::Stale),
            Some(_) => Ok(()),
        }
    }

    fn rejoin_gpus(inner: &mut Inner) {
        let all: Vec<GpuReading> = inner
            .targets
            .values()
            .filter(|s| s.target.kind == TargetKind::GpuExporter)
            .flat_map(|s| s.gpus.iter().cloned())
            .collect();
        let join: GpuJoin = join_gpus(&all);
        inner.gpus_by_pod = join
            .pods
            .into_iter()
            .map(|(PodRef { namespace, pod }, gpus)| (PodKey::new(namespace, pod), Arc::new(gpus)))
            .collect();
    }
}

impl TargetRegistry for Store {
    fn upsert_target(&self, target: Target) {
        let mut inner = self.write();
        match inner.targets.get_mut(&target.key) {
            // Same pod (uid) and same endpoint: keep its scrape history.
            Some(state) if state.target.uid == target.uid && state.target.url == target.url => {
                if *state.target != target {
                    state.target = Arc::new(target);
                }
            }
            _ => {
                let key = target.key.clone();
                inner.targets.insert(
                    key,
                    TargetState {
                        target: Arc::new(target),
                        history: ScrapeHistory::new(self.window_secs),
                        health: ScrapeHealth::default(),
                        signals: None,
                        gpus: Vec::new(),
                    },
                );
            }
        }
    }

    fn retain_targets(&self, kind: TargetKind, keep: &HashSet<PodKey>) {
        let mut inner = self.write();
        let before = inner.targets.len();
        inner
            .targets
            .retain(|key, state| state.target.kind != kind || keep.contains(key));
        if kind == TargetKind::GpuExporter && inner.targets.len() != before {
            Store::rejoin_gpus(&mut inner);
        }
    }
}

/// Whether the scrape loop scrapes a target: it has an address and is not terminating.
fn is_scrapable(target: &Target) -> bool {
    target.url.is_some() && !target.terminating
}

impl ScrapeSink for Store {
    fn scrape_targets(&self) -> Vec<Arc<Target>> {
        self.read()
            .targets
            .values()
            .filter(|s| is_scrapable(&s.target))
            .map(|s| s.target.clone())
            .collect()
    }

    fn record_engine_scrape(&self, key: &PodKey, snapshot: EngineSnapshot, duration_secs: f64) {
        let taken_at = snapshot.taken_at;
        // Signals are computed and the scrape packed for keeping under the read lock
        // (readers are not blocked) from the kept history plus the new scrape; the write
        // lock only stores the results.
        let (signals, packed) = {
            let inner = self.read();
            let Some(state) = inner.targets.get(key) else {
                return;
            };
            let signals = state
                .history
                .signals_after(&snapshot, SingleScrape::Missing)
                .map(Arc::new);
            (signals, state.history.pack(&snapshot))
        };
        let mut inner = self.write();
        inner.last_scrape_completed = Some(taken_at);
        let Some(state) = inner.targets.get_mut(key) else {
            return;
        };
        state.history.push_packed(packed);
        state.signals = signals;
        state.health = ScrapeHealth::succeeded(taken_at, duration_secs);
    }

    fn record_gpu_scrape(
        &self,
        key: &PodKey,
        gpus: Vec<GpuReading>,
        taken_at: f64,
        duration_secs: f64,
    ) {
        let mut inner = self.write();
        inner.last_scrape_completed = Some(taken_at);
        let Some(state) = inner.targets.get_mut(key) else {
            return;
        };
        state.gpus = gpus;
        state.health = ScrapeHealth::succeeded(taken_at, duration_secs);
        Store::rejoin_gpus(&mut inner);
    }

    fn record_failure(&self, key: &PodKey, failure: ScrapeFailure, at: f64, duration_secs: f64) {
        let mut inner = self.write();
        inner.last_scrape_completed = Some(at);
        let Some(state) = inner.targets.get_mut(key) else {
            return;
        };
        state.health.last_attempt = Some(at);
        state.health.last_failure = Some(failure);
        state.health.last_duration_secs = Some(duration_secs);
        state.health.consecutive_failures += 1;
        if state.target.kind == TargetKind::GpuExporter {
            // GPU readings of a dead exporter must not keep attributing GPUs.
            state.gpus.clear();
            Store::rejoin_gpus(&mut inner);
        }
    }
}

impl SignalView for Store {
    fn engine_pods(&self, namespace: Option<&str>, now: f64) -> Vec<EnginePod> {
        let inner = self.read();
        inner
            .targets
            .values()
            .filter(|s| s.target.kind == TargetKind::Engine)
            .filter(|s| namespace.is_none_or(|ns| s.target.key.namespace == ns))
            .map(|s| EnginePod {
                target: s.target.clone(),
                signals: s.signals.clone(),
                gpus: inner.gpus_by_pod.get(&s.target.key).cloned(),
                servable: self.servable(s, now),
            })
            .collect()
    }

    fn summary(&self, now: f64) -> StoreSummary {
        let inner = self.read();
        let mut summary = StoreSummary {
            last_scrape_completed: inner.last_scrape_completed,
            ..StoreSummary::default()
        };
        for state in inner.targets.values() {
            if is_scrapable(&state.target) && state.health.last_attempt.is_none() {
                summary.scrapable_not_attempted += 1;
            }
            match state.target.kind {
                TargetKind::GpuExporter => summary.gpu_targets += 1,
                TargetKind::Engine => {
                    summary.engine_targets += 1;
                    if self.servable(state, now).is_ok() {
                        summary.servable_engine_pods += 1;
                        if let Some(at) = state.health.last_success {
                            let age = now - at;
                            summary.oldest_fresh_scrape_age = Some(
                                summary
                                    .oldest_fresh_scrape_age
                                    .map_or(age, |a: f64| a.max(age)),
                            );
                        }
                    }
                }
            }
        }
        summary
    }

    fn generation(&self) -> u64 {
        self.read().generation
    }

    fn health(&self) -> Vec<(TargetKind, ScrapeHealth)> {
        self.read()
            .targets
            .values()
            .map(|s| (s.target.kind, s.health))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferscale_metrics::profile::{Engine, GaugeSignal};
    use inferscale_metrics::signals::Reading;

    fn target(name: &str, ready: bool) -> Target {
        Target {
            key: PodKey::new("ns", name),
            uid: format!("uid-{name}"),
            kind: TargetKind::Engine,
            url: Some("http://127.0.0.1:1/metrics".into()),
            labels: BTreeMap::new(),
            node: None,
            ready,
            terminating: false,
            asleep: false,
            owners: vec![],
        }
    }

    fn snapshot(t: f64, waiting: f64) -> EngineSnapshot {
        let mut s = EngineSnapshot::new(t, Engine::Vllm);
        s.model_mut("m").set_gauge(GaugeSignal::QueueDepth, waiting);
        s
    }

    #[test]
    fn pod_is_missing_until_scraped_and_after_failure_or_staleness() {
        let store = Store::new(60.0, 15.0);
        store.upsert_target(target("a", true));
        let key = PodKey::new("ns", "a");
        let view = |now| store.engine_pods(Some("ns"), now).remove(0);
        assert_eq!(view(0.0).servable, Err(Unservable::NotScrapedYet));
        store.record_engine_scrape(&key, snapshot(100.0, 3.0), 0.01);
        let v = view(101.0);
        assert_eq!(v.servable, Ok(()));
        assert_eq!(v.signals.unwrap().combined.queue_depth, Reading::Value(3.0));
        assert_eq!(view(200.0).servable, Err(Unservable::Stale));
        store.record_failure(&key, ScrapeFailure::Connect, 105.0, 0.5);
        assert_eq!(
            view(106.0).servable,
            Err(Unservable::ScrapeFailed(ScrapeFailure::Connect))
        );
    }

    #[test]
    fn not_ready_pods_are_not_servable_and_history_survives_metadata_updates() {
        let store = Store::new(60.0, 15.0);
        store.upsert_target(target("a", false));
        let key = PodKey::new("ns", "a");
        store.record_engine_scrape(&key, snapshot(100.0, 1.0), 0.01);
        assert_eq!(
            store.engine_pods(None, 101.0)[0].servable,
            Err(Unservable::NotReady)
        );
        store.upsert_target(target("a", true));
        assert_eq!(
            store.engine_pods(None, 101.0)[0].servable,
            Ok(()),
            "history kept"
        );
        let mut moved = target("a", true);
        moved.uid = "new-uid".into();
        store.upsert_target(moved);
        assert_eq!(
            store.engine_pods(None, 101.0)[0].servable,
            Err(Unservable::NotScrapedYet)
        );
    }

    #[test]
    fn a_sleeping_replica_is_not_serving_capacity_and_rejoins_on_wake() {
        let store = Store::new(60.0, 15.0);
        let mut asleep = target("a", true);
        asleep.asleep = true;
        store.upsert_target(asleep);
        let key = PodKey::new("ns", "a");
        store.record_engine_scrape(&key, snapshot(100.0, 1.0), 0.01);
        assert_eq!(
            store.engine_pods(None, 101.0)[0].servable,
            Err(Unservable::Asleep)
        );
        store.upsert_target(target("a", true));
        assert_eq!(store.engine_pods(None, 101.0)[0].servable, Ok(()));
    }

    #[test]
    fn retain_drops_only_the_given_kind() {
        let store = Store::new(60.0, 15.0);
        store.upsert_target(target("a", true));
        let mut gpu = target("dcgm", true);
        gpu.kind = TargetKind::GpuExporter;
        store.upsert_target(gpu);
        store.retain_targets(TargetKind::Engine, &HashSet::new());
        let s = store.summary(0.0);
        assert_eq!((s.engine_targets, s.gpu_targets), (0, 1));
    }
}
