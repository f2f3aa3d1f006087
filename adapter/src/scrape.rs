//! The scrape loop: one task per target, jittered, bounded in concurrency, time and size.
//!
//! Owns: fetching `/metrics` from every target the store lists, turning bodies into
//! snapshots (engines) or GPU readings (dcgm-exporter), and recording outcomes in the store
//! through [`ScrapeSink`]. It never serves anything.
//!
//! Each target gets a stable phase inside the interval (from its uid), so a fleet's scrapes
//! spread out instead of arriving at once, plus a small random jitter per round.

pub use crate::scrape_http::ScrapeClient;
use crate::store::{PodKey, ScrapeFailure, ScrapeSink, Target, TargetKind};
use crate::telemetry::Telemetry;
use inferscale_metrics::gpu::read_gpus;
use inferscale_metrics::parser::{count_invalid_utf8, sanitize_utf8, Format};
use inferscale_metrics::profile::RouteIndex;
use inferscale_metrics::snapshot::{EngineSnapshot, SnapshotLimits};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, error, info_span, Instrument};

/// How the loop scrapes.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub max_body_bytes: usize,
    /// Scrapes in flight at once across all targets.
    pub concurrency: usize,
    /// Keep each target's connection open between scrapes (else one connection per scrape).
    pub keep_alive: bool,
    /// What one engine body may put into a snapshot (models, series, bucket bounds, model
    /// name length); the excess is skipped and counted.
    pub limits: SnapshotLimits,
}

/// How often the supervisor reconciles tasks with the store's targets. One second keeps a
/// new pod's first scrape prompt without measurable cost.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// Fraction of the interval used as random jitter per round (on top of the stable phase).
const JITTER_FRACTION: f64 = 0.1;

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Errors building the scraper.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The HTTP client could not be built (TLS backend).
    #[error("building the HTTP client")]
    Client(#[from] crate::scrape_http::ClientError),
}

/// The loop. `run` it in a task; it ends when `shutdown` resolves.
pub struct Scraper {
    sink: Arc<dyn ScrapeSink>,
    config: ScrapeConfig,
    client: ScrapeClient,
    routes: Arc<RouteIndex>,
    permits: Arc<Semaphore>,
    telemetry: Arc<Telemetry>,
    /// Unix time (ms) the supervisor last ticked: liveness.
    heartbeat: Arc<AtomicU64>,
}

impl Scraper {
    pub fn new(
        sink: Arc<dyn ScrapeSink>,
        config: ScrapeConfig,
        telemetry: Arc<Telemetry>,
        heartbeat: Arc<AtomicU64>,
    ) -> Result<Scraper, ScrapeError> {
        let client = scrape_client(config.timeout, config.keep_alive)?;
        Ok(Scraper {
            sink,
            permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
            config,
            client,
            routes: Arc::new(RouteIndex::engines()),
            telemetry,
            heartbeat,
        })
    }

    /// Keeps one task per target until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let this = Arc::new(self);
        let mut tasks: HashMap<(PodKey, String, Option<String>), JoinHandle<()>> = HashMap::new();
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            this.heartbeat
                .store((unix_now() * 1000.0) as u64, Ordering::Relaxed);
            let targets = this.sink.scrape_targets();
            let wanted: HashMap<_, _> = targets
                .into_iter()
                .map(|t| ((t.key.clone(), t.uid.clone(), t.url.clone()), t))
                .collect();
            tasks.retain(|id, handle| {
                let wanted = wanted.contains_key(id);
                if wanted && handle.is_finished() {
                    // A target's task only ends by panicking: say so, count it, and let
                    // this round start a new one.
                    error!(pod = %id.0, "scrape task ended unexpectedly; restarting it");
                    this.telemetry.task_failure("scrape");
                }
                let keep = wanted && !handle.is_finished();
                if !keep {
                    handle.abort();
                }
                keep
            });
            for (id, target) in wanted {
                if tasks.contains_key(&id) {
                    continue;
                }
                let scraper = this.clone();
                let span = info_span!("scrape", pod = %target.key, kind = target.kind.as_str());
                tasks.insert(
                    id,
                    tokio::spawn(scraper.scrape_forever(target).instrument(span)),
                );
            }
        }
        for handle in tasks.values() {
            handle.abort();
        }
    }

    /// Stable phase of a target inside the interval.
    fn phase(&self, target: &Target) -> Duration {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        target.uid.hash(&mut hasher);
        let fraction = (hasher.finish() % 10_000) as f64 / 10_000.0;
        self.config.interval.mul_f64(fraction)
    }

    async fn scrape_forever(self: Arc<Self>, target: Arc<Target>) {
        // The first scrape comes quickly (a new pod should not wait a whole interval), the
        // rest keep the target's phase.
        tokio::time::sleep(self.phase(&target).min(Duration::from_millis(500))).await;
        loop {
            let started = Instant::now();
            {
                let Ok(_permit) = self.permits.acquire().await else {
                    return;
                };
                // Boxed: a task is as large as its largest state, and this one (the HTTP
                // request in flight) would otherwise stay allocated in every target's task
                // while it sleeps between scrapes.
                Box::pin(self.scrape_once(&target)).await;
            }
            let jitter = self
                .config
                .interval
                .mul_f64(JITTER_FRACTION * rand::random::<f64>());
            let next = self.config.interval + jitter;
            tokio::time::sleep(next.saturating_sub(started.elapsed())).await;
        }
    }

    async fn scrape_once(&self, target: &Target) {
        let Some(url) = &target.url else { return };
        let started = Instant::now();
        let result = self.fetch(url).await;
        let duration = started.elapsed().as_secs_f64();
        let now = unix_now();
        let outcome = match result {
            Err(failure) => Err(failure),
            Ok(Fetched { body, format }) => {
                let (text, bad_utf8_lines) = sanitize_utf8(&body);
                match target.kind {
                    TargetKind::Engine => {
                        let mut snapshot = EngineSnapshot::from_exposition_with(
                            &text,
                            format,
                            now,
                            &self.routes,
                            &self.config.limits,
                        );
                        count_invalid_utf8(&mut snapshot.parse_stats, bad_utf8_lines);
                        self.telemetry
                            .malformed_lines(snapshot.parse_stats.skipped());
                        self.telemetry.dropped(&snapshot.dropped);
                        if snapshot.engine.is_none() {
                            Err(ScrapeFailure::NoKnownMetrics)
                        } else {
                            self.sink
                                .record_engine_scrape(&target.key, snapshot, duration);
                            Ok(())
                        }
                    }
                    TargetKind::GpuExporter => {
                        let (gpus, stats) = read_gpus(&text, format);
                        self.telemetry
                            .malformed_lines(stats.skipped() + bad_utf8_lines);
                        if gpus.is_empty() {
                            Err(ScrapeFailure::NoKnownMetrics)
                        } else {
                            self.sink
                                .record_gpu_scrape(&target.key, gpus, now, duration);
                            Ok(())
                        }
                    }
                }
            }
        };
        self.telemetry.scrape(target.kind, outcome.err(), duration);
        if let Err(failure) = outcome {
            debug!(failure = failure.as_str(), "scrape failed");
            self.sink
                .record_failure(&target.key, failure, now, duration);
        }
    }

    async fn fetch(&self, url: &str) -> Result<Fetched, ScrapeFailure> {
        fetch(&self.client, url, self.config.max_body_bytes).await
    }
}

/// The HTTP client every scrape uses (one per scraper). With `keep_alive` each target's
/// connection stays open between scrapes, held as its bare socket (see [`crate::scrape_http`]
/// and adapter/tests/connection_memory.rs for what an idle connection costs). Without it
/// every scrape opens and closes its own connection.
pub fn scrape_client(timeout: Duration, keep_alive: bool) -> Result<ScrapeClient, ScrapeError> {
    Ok(ScrapeClient::new(timeout, keep_alive)?)
}

/// A scraped body and the exposition dialect its response declared.
#[derive(Debug)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub format: Format,
}

/// GETs a body with `client`, refusing more than `max_body_bytes` (after gzip decoding, so a
/// small compressed bomb is refused too). Redirects are never followed: a 3xx is a failed
/// scrape (`redirect`) — the value must come from the pod itself, not from wherever it
/// points.
pub async fn fetch(
    client: &ScrapeClient,
    url: &str,
    max_body_bytes: usize,
) -> Result<Fetched, ScrapeFailure> {
    let response = client.get(url, ACCEPT, max_body_bytes).await?;
    Ok(Fetched {
        format: format_of(&response.headers),
        body: response.body,
    })
}

/// What we ask targets for: the Prometheus text format first (what vLLM and dcgm-exporter
/// serve), OpenMetrics accepted.
pub const ACCEPT: &str =
    "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5";

/// The exposition dialect a response declares.
pub fn format_of(headers: &http::HeaderMap) -> Format {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(Format::from_content_type)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use inferscale_metrics::snapshot::SnapshotLimits;
    use std::collections::BTreeMap;

    #[test]
    fn a_target_sleeping_between_scrapes_holds_a_small_task() {
        let scraper = Scraper::new(
            Arc::new(Store::new(60.0, 15.0)),
            ScrapeConfig {
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(3),
                max_body_bytes: 1 << 20,
                concurrency: 1,
                keep_alive: true,
                limits: SnapshotLimits::default(),
            },
            Arc::new(Telemetry::new()),
            Arc::new(AtomicU64::new(0)),
        )
        .unwrap();
        let target = Arc::new(Target {
            key: PodKey::new("ns", "a"),
            uid: "u".into(),
            kind: TargetKind::Engine,
            url: Some("http://127.0.0.1:1/metrics".into()),
            labels: BTreeMap::new(),
            node: None,
            ready: true,
            terminating: false,
            asleep: false,
            owners: vec![],
        });
        let task = Arc::new(scraper).scrape_forever(target);
        let bytes = std::mem::size_of_val(&task);
        // 10,000 targets hold 10,000 of these for as long as they exist.
        assert!(bytes <= 256, "{bytes} bytes per target's task");
    }
}
