//! Per-replica signals from successive scrapes of one pod.
//!
//! Owns: choosing which two scrapes span the window, detecting counter resets, and turning
//! gauges, counter increases and histogram bucket deltas into [`ModelSignals`]. Every value is
//! a [`Reading`]: either a number or the reason there is none — "not enough data yet" is a
//! state, never a zero.
//!
//! Idle is not missing: a replica with nothing waiting and nothing running whose window holds
//! no observation of a latency histogram reports that latency as 0, marked idle
//! ([`Latency::idle`]) — no request waited. With requests waiting or running and no
//! observation, the latency stays missing ([`Missing::NoObservations`]).
//! Does not own: how scrapes are taken or stored long-term (the adapter's scrape loop), or
//! fleet aggregation (see [`crate::fleet`]).

use crate::histogram::Histogram;
use crate::profile::{CounterSignal, Engine, GaugeSignal, HistogramSignal};
use crate::snapshot::{CompactScrape, EngineSnapshot, ModelSnapshot};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

/// Default window for latency percentiles and rates: one minute, the window most HPA guides
/// use with `rate()`, long enough to hold several scrapes at our 5 s default interval.
pub const DEFAULT_WINDOW_SECS: f64 = 60.0;

/// The percentiles we report for every latency histogram.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

/// Why a signal has no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// The pod does not expose the metric (engine version or engine kind lacks it).
    NotExposed,
    /// A rate or window needs a second scrape.
    NeedsTwoScrapes,
    /// The server restarted inside the window and the restart time is unknown.
    CounterReset,
    /// Requests were waiting or running, but none was observed in the window: there is no
    /// latency to report yet (an idle replica reports 0 instead, see [`Latency::idle`]).
    NoObservations,
    /// The histogram was exposed without a `+Inf` bucket.
    IncompleteHistogram,
}

impl Missing {
    /// A short, stable name (`not_exposed`, `no_observations`, ...), as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Missing::NotExposed => "not_exposed",
            Missing::NeedsTwoScrapes => "needs_two_scrapes",
            Missing::CounterReset => "counter_reset",
            Missing::NoObservations => "no_observations",
            Missing::IncompleteHistogram => "incomplete_histogram",
        }
    }
}

/// A signal value or the reason it is missing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// A value, in the signal's base unit.
    Value(f64),
    /// No value, and why.
    Missing(Missing),
}

impl Reading {
    /// The value, or `None` when missing.
    pub fn value(self) -> Option<f64> {
        match self {
            Reading::Value(v) => Some(v),
            Reading::Missing(_) => None,
        }
    }

    fn from_option(value: Option<f64>, missing: Missing) -> Reading {
        value.map_or(Reading::Missing(missing), Reading::Value)
    }
}

impl Serialize for Reading {
    /// A number, or `{"missing": "<reason>"}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Reading::Value(v) => serializer.serialize_f64(*v),
            Reading::Missing(reason) => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("missing", reason.as_str())?;
                map.end()
            }
        }
    }
}

/// Percentiles of one latency histogram over the window, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Median over the window.
    pub p50: Reading,
    /// 90th percentile.
    pub p90: Reading,
    /// 95th percentile.
    pub p95: Reading,
    /// 99th percentile.
    pub p99: Reading,
    /// Observations (completed requests or tokens) in the window.
    pub observations: Reading,
    /// Mean over the window (`_sum` delta / count delta).
    pub mean: Reading,
    /// No observation in the window and nothing waiting or running: the percentiles and the
    /// mean are 0 because no request waited, not because one took no time.
    pub idle: bool,
    /// The window's histogram, kept so fleets can merge it.
    #[serde(skip)]
    pub window_histogram: Option<Histogram>,
}

impl Latency {
    /// Every percentile, the mean and the count missing for `reason`.
    pub fn missing(reason: Missing) -> Latency {
        let m = Reading::Missing(reason);
        Latency {
            p50: m,
            p90: m,
            p95: m,
            p99: m,
            observations: m,
            mean: m,
            idle: false,
            window_histogram: None,
        }
    }

    /// The latency of a window with no observation on a replica (or fleet) that had nothing to
    /// do: every percentile and the mean 0, no observations, marked [`Latency::idle`].
    pub fn idle(window_histogram: Histogram) -> Latency {
        let zero = Reading::Value(0.0);
        Latency {
            p50: zero,
            p90: zero,
            p95: zero,
            p99: zero,
            observations: zero,
            mean: zero,
            idle: true,
            window_histogram: Some(window_histogram),
        }
    }

    /// The latency of a window: [`Latency::idle`] when it holds no observation and
    /// `nothing_in_flight` (the replica — or every replica of a fleet — had nothing waiting or
    /// running at its newest scrape); otherwise [`Latency::from_window`].
    pub fn from_window_or_idle(histogram: Histogram, nothing_in_flight: bool) -> Latency {
        if nothing_in_flight && histogram.count() <= 0.0 {
            Latency::idle(histogram)
        } else {
            Latency::from_window(histogram)
        }
    }

    /// Percentiles of a window histogram; with no observation in it, every percentile and the
    /// mean are missing ([`Missing::NoObservations`]) and `observations` is 0.
    pub fn from_window(histogram: Histogram) -> Latency {
        let count = histogram.count();
        if count <= 0.0 {
            let mut latency = Latency::missing(Missing::NoObservations);
            latency.observations = Reading::Value(0.0);
            latency.window_histogram = Some(histogram);
            return latency;
        }
        let q = |q: f64| Reading::from_option(histogram.quantile(q), Missing::NoObservations);
        Latency {
            p50: q(QUANTILES[0]),
            p90: q(QUANTILES[1]),
            p95: q(QUANTILES[2]),
            p99: q(QUANTILES[3]),
            observations: Reading::Value(count),
            mean: Reading::from_option(
                histogram.sum.is_finite().then(|| histogram.sum / count),
                Missing::NoObservations,
            ),
            idle: false,
            window_histogram: Some(histogram),
        }
    }

    /// The reading for quantile `q` of the window (any `q`, not only the four reported); 0
    /// when idle.
    pub fn quantile(&self, q: f64) -> Reading {
        match &self.window_histogram {
            _ if self.idle => Reading::Value(0.0),
            Some(h) => Reading::from_option(h.quantile(q), Missing::NoObservations),
            None => self.p50,
        }
    }
}

/// Signals of one model on one replica (or of all its models combined).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSignals {
    /// Requests waiting, count.
    pub queue_depth: Reading,
    /// Requests in the running batch, count.
    pub running: Reading,
    /// KV-cache usage, fraction 0–1 (mean over data-parallel engines).
    pub kv_cache_usage: Reading,
    /// Highest KV-cache usage of any data-parallel engine, fraction 0–1.
    pub kv_cache_usage_max: Reading,
    /// Preemptions per second.
    pub preemption_rate: Reading,
    /// Prompt (prefill) tokens per second.
    pub prompt_token_rate: Reading,
    /// Generated tokens per second.
    pub generation_token_rate: Reading,
    /// Finished requests per second, all reasons.
    pub request_rate: Reading,
    /// Finished requests per second by reason (`stop`, `length`, `abort`, `error`, ...).
    pub request_rate_by_reason: BTreeMap<String, Reading>,
    /// Time to first token, seconds.
    pub time_to_first_token: Latency,
    /// Time between generated tokens, seconds.
    pub inter_token_latency: Latency,
    /// Request latency, seconds.
    pub end_to_end_latency: Latency,
    /// Time waiting in the queue, seconds.
    pub queue_time: Latency,
}

impl ModelSignals {
    /// The latency of one histogram signal.
    pub fn latency(&self, signal: HistogramSignal) -> &Latency {
        match signal {
            HistogramSignal::TimeToFirstToken => &self.time_to_first_token,
            HistogramSignal::InterTokenLatency => &self.inter_token_latency,
            HistogramSignal::EndToEndLatency => &self.end_to_end_latency,
            HistogramSignal::QueueTime => &self.queue_time,
        }
    }

    /// The reading of one gauge signal.
    pub fn gauge(&self, signal: GaugeSignal) -> Reading {
        match signal {
            GaugeSignal::QueueDepth => self.queue_depth,
            GaugeSignal::Running => self.running,
            GaugeSignal::KvCacheUsage => self.kv_cache_usage,
        }
    }

    /// The rate of one counter signal, per second.
    pub fn rate(&self, signal: CounterSignal) -> Reading {
        match signal {
            CounterSignal::Preemptions => self.preemption_rate,
            CounterSignal::PromptTokens => self.prompt_token_rate,
            CounterSignal::GenerationTokens => self.generation_token_rate,
            CounterSignal::RequestsFinished => self.request_rate,
        }
    }
}

/// The span the rates and percentiles cover.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowSpan {
    /// Start of the window, seconds; `None` when it starts at an unknown process start.
    pub start: Option<f64>,
    /// End of the window (the newest scrape), seconds.
    pub end: f64,
    /// Length in seconds, when known.
    pub seconds: Option<f64>,
    /// The window covers everything since the server started (one scrape only, or the
    /// server restarted inside the requested window).
    pub since_start: bool,
}

/// Signals of one replica.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaSignals {
    /// The engine the newest scrape came from (`None` when no known metric was read).
    pub engine: Option<Engine>,
    /// When the newest scrape was taken, seconds.
    pub taken_at: f64,
    /// The span the rates and percentiles cover.
    pub window: WindowSpan,
    /// KV-cache capacity, tokens (`num_gpu_blocks` × `block_size`).
    pub kv_capacity_tokens: Reading,
    /// All models of the pod combined.
    pub combined: ModelSignals,
    /// Per `model_name` (a single entry for single-model servers). Boxed: a map node reserves
    /// room for eleven entries, ≈ 9 KB of them unboxed, and every pod's signals are kept.
    pub models: BTreeMap<String, Box<ModelSignals>>,
}

/// What to do with percentiles when only one scrape exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingleScrape {
    /// Use the cumulative buckets: percentiles since the server started (`adapter inspect`).
    SinceStart,
    /// Report them as missing until a second scrape arrives (the adapter's serving path).
    Missing,
}

/// How to compute signals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalOptions {
    /// Length of the window, seconds.
    pub window_secs: f64,
    /// What to do when only one scrape exists.
    pub single_scrape: SingleScrape,
}

impl Default for SignalOptions {
    fn default() -> Self {
        SignalOptions {
            window_secs: DEFAULT_WINDOW_SECS,
            single_scrape: SingleScrape::Missing,
        }
    }
}

/// Slack when deciding whether a scrape lies inside the window: scrapes are jittered and
/// take time, so a scrape 60.4 s old still belongs to a 60 s window.
const WINDOW_SLACK_FRACTION: f64 = 0.05;

/// What tells a restart between two scrapes of a pod: the process start, and the all-models
/// `_created` time, counters and histogram counts. Kept with every scrape of a
/// [`ScrapeHistory`], so choosing a window never combines the models of older scrapes again.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RestartMarks {
    process_start: Option<f64>,
    series_created: Option<f64>,
    counters: [Option<f64>; 4],
    histogram_counts: [Option<f64>; 4],
}

impl RestartMarks {
    fn of(snapshot: &EngineSnapshot) -> RestartMarks {
        let combined = snapshot.combined();
        RestartMarks {
            process_start: snapshot.process_start,
            series_created: combined.series_created,
            counters: CounterSignal::ALL.map(|c| combined.counter(c)),
            histogram_counts: HistogramSignal::ALL
                .map(|h| combined.histogram(h).map(Histogram::count)),
        }
    }

    /// True when `later` cannot be compared with `self` because the server restarted.
    fn restarted_before(&self, later: &RestartMarks) -> bool {
        if let (Some(a), Some(b)) = (self.process_start, later.process_start) {
            if a != b {
                return true;
            }
        }
        if let (Some(a), Some(b)) = (self.series_created, later.series_created) {
            if b > a {
                return true;
            }
        }
        let fell = |before: &[Option<f64>; 4], after: &[Option<f64>; 4]| {
            before
                .iter()
                .zip(after)
                .any(|pair| matches!(pair, (Some(a), Some(b)) if b < a))
        };
        fell(&self.counters, &later.counters)
            || fell(&self.histogram_counts, &later.histogram_counts)
    }
}

/// True when `later` cannot be compared with `earlier` because the server restarted.
pub fn restarted_between(earlier: &EngineSnapshot, later: &EngineSnapshot) -> bool {
    RestartMarks::of(earlier).restarted_before(&RestartMarks::of(later))
}

/// The baseline a window is measured against; `S` is the scrape (or its position).
#[derive(Debug, Clone, Copy)]
enum Baseline<S> {
    /// A scrape after the last restart.
    Scrape(S),
    /// Process start (all counters were zero then); `at` when known. `restarted` tells a
    /// restart inside the history from a lone first scrape.
    ProcessStart { at: Option<f64>, restarted: bool },
    /// No usable baseline.
    None(Missing),
}

impl<S> Baseline<S> {
    fn map<T>(self, f: impl FnOnce(S) -> T) -> Baseline<T> {
        match self {
            Baseline::Scrape(s) => Baseline::Scrape(f(s)),
            Baseline::ProcessStart { at, restarted } => Baseline::ProcessStart { at, restarted },
            Baseline::None(reason) => Baseline::None(reason),
        }
    }

    fn as_ref(&self) -> Baseline<&S> {
        match self {
            Baseline::Scrape(s) => Baseline::Scrape(s),
            Baseline::ProcessStart { at, restarted } => Baseline::ProcessStart {
                at: *at,
                restarted: *restarted,
            },
            Baseline::None(reason) => Baseline::None(*reason),
        }
    }
}

/// Picks the baseline for the newest of `len` scrapes (oldest first), by position:
/// `taken_at(i)` is when scrape `i` was taken, `restarted(i)` whether the server restarted
/// between scrapes `i - 1` and `i`, `latest_process_start` the newest scrape's process start.
fn choose_baseline(
    len: usize,
    taken_at: impl Fn(usize) -> f64,
    restarted: impl Fn(usize) -> bool,
    latest_process_start: Option<f64>,
    options: SignalOptions,
) -> Baseline<usize> {
    let Some(latest) = len.checked_sub(1) else {
        return Baseline::None(Missing::NeedsTwoScrapes);
    };
    let latest_at = taken_at(latest);
    // Scrapes before the last restart cannot be compared with the latest one.
    let first_comparable = (1..len).rev().find(|&i| restarted(i)).unwrap_or(0);
    let comparable = first_comparable.min(latest)..latest;
    if comparable.is_empty() {
        return match (first_comparable, options.single_scrape) {
            // The restart happened between the previous scrape and the latest: the latest
            // cumulative counts are exactly what happened since the restart.
            (i, _) if i > 0 => Baseline::ProcessStart {
                // A start time after the scrape would be a clock problem, not a window.
                at: latest_process_start.filter(|&at| at < latest_at),
                restarted: true,
            },
            // One scrape: percentiles since start, but no rates (the scrape time of a saved
            // file is unknown, and an average since start is not the adapter's rate).
            (_, SingleScrape::SinceStart) => Baseline::ProcessStart {
                at: None,
                restarted: false,
            },
            (_, SingleScrape::Missing) => Baseline::None(Missing::NeedsTwoScrapes),
        };
    }
    let oldest_allowed = latest_at - options.window_secs * (1.0 + WINDOW_SLACK_FRACTION);
    let base = comparable
        .clone()
        .find(|&i| taken_at(i) >= oldest_allowed)
        // Scrapes further apart than the window: the window is the gap between the last two.
        .unwrap_or(comparable.end - 1);
    Baseline::Scrape(base)
}

/// Signals of the newest scrape in `history` (ordered oldest first).
///
/// Pass every scrape the caller still holds for the pod; the window is taken from them.
pub fn replica_signals(
    history: &[&EngineSnapshot],
    options: SignalOptions,
) -> Option<ReplicaSignals> {
    let latest = *history.last()?;
    let marks: Vec<RestartMarks> = history.iter().map(|s| RestartMarks::of(s)).collect();
    let baseline = choose_baseline(
        history.len(),
        |i| history[i].taken_at,
        |i| marks[i - 1].restarted_before(&marks[i]),
        latest.process_start,
        options,
    )
    .map(|i| history[i]);
    Some(signals_against(latest, baseline))
}

/// Signals of `latest` measured against `baseline`.
fn signals_against(latest: &EngineSnapshot, baseline: Baseline<&EngineSnapshot>) -> ReplicaSignals {
    let window = match &baseline {
        Baseline::Scrape(base) => WindowSpan {
            start: Some(base.taken_at),
            end: latest.taken_at,
            seconds: Some(latest.taken_at - base.taken_at),
            since_start: false,
        },
        Baseline::ProcessStart { at, .. } => WindowSpan {
            start: *at,
            end: latest.taken_at,
            seconds: at.map(|at| latest.taken_at - at),
            since_start: true,
        },
        Baseline::None(_) => WindowSpan {
            start: None,
            end: latest.taken_at,
            seconds: None,
            since_start: false,
        },
    };
    let empty = ModelSnapshot::default();
    let pair = |latest_model: &ModelSnapshot, base_model: Option<&ModelSnapshot>| {
        let base = match &baseline {
            Baseline::Scrape(_) => Some(base_model.unwrap_or(&empty)),
            _ => None,
        };
        model_signals(latest_model, base, &baseline, window.seconds)
    };
    let base_snapshot = match &baseline {
        Baseline::Scrape(base) => Some(*base),
        _ => None,
    };
    let models = latest
        .models
        .iter()
        .map(|(name, model)| {
            let base_model = base_snapshot.and_then(|b| b.models.get(name));
            (name.clone(), Box::new(pair(model, base_model)))
        })
        .collect();
    let base_combined = base_snapshot.map(EngineSnapshot::combined);
    let combined = pair(&latest.combined(), base_combined.as_ref());
    ReplicaSignals {
        engine: latest.engine,
        taken_at: latest.taken_at,
        window,
        kv_capacity_tokens: Reading::from_option(latest.kv_capacity_tokens, Missing::NotExposed),
        combined,
        models,
    }
}

fn model_signals(
    latest: &ModelSnapshot,
    base: Option<&ModelSnapshot>,
    baseline: &Baseline<&EngineSnapshot>,
    window_secs: Option<f64>,
) -> ModelSignals {
    let gauge = |g: GaugeSignal| Reading::from_option(latest.gauge(g), Missing::NotExposed);
    let queue_depth = gauge(GaugeSignal::QueueDepth);
    let running = gauge(GaugeSignal::Running);
    // Both exposed and 0: a replica whose gauges are unknown is never called idle.
    let nothing_in_flight = queue_depth == Reading::Value(0.0) && running == Reading::Value(0.0);
    let no_window = match baseline {
        Baseline::None(reason) => *reason,
        Baseline::ProcessStart {
            restarted: false, ..
        } => Missing::NeedsTwoScrapes,
        // Since a restart whose time we do not know: counts are right, durations are not.
        _ => Missing::CounterReset,
    };
    let rate_of = |now: Option<f64>, before: Option<f64>| -> Reading {
        let Some(now) = now else {
            return Reading::Missing(Missing::NotExposed);
        };
        let increase = match (baseline, before) {
            (Baseline::Scrape(_), Some(before)) if now >= before => now - before,
            // The series appeared after the baseline (pre-created series are the norm in V1,
            // so this is a new label value): it counted from zero.
            (Baseline::Scrape(_), None) => now,
            (Baseline::Scrape(_), Some(_)) => return Reading::Missing(Missing::CounterReset),
            (Baseline::ProcessStart { .. }, _) => now,
            (Baseline::None(reason), _) => return Reading::Missing(*reason),
        };
        match window_secs {
            Some(secs) if secs > 0.0 => Reading::Value(increase / secs),
            _ => Reading::Missing(no_window),
        }
    };
    let rate = |c: CounterSignal| rate_of(latest.counter(c), base.and_then(|b| b.counter(c)));
    let request_rate_by_reason = latest
        .finished_by_reason
        .iter()
        .map(|(reason, &now)| {
            let before = base.map(|b| b.finished_by_reason.get(reason).copied().unwrap_or(0.0));
            (reason.clone(), rate_of(Some(now), before))
        })
        .collect();
    let latency = |h: HistogramSignal| -> Latency {
        let Some(now) = latest.histogram(h) else {
            return Latency::missing(if latest.histogram_incomplete(h) {
                Missing::IncompleteHistogram
            } else {
                Missing::NotExposed
            });
        };
        let window = match baseline {
            // One scrape, so no window yet; but a server that has observed nothing since it
            // started has observed nothing in any window, and with nothing waiting or running
            // it is idle from its first scrape.
            Baseline::None(_) if nothing_in_flight && now.count() <= 0.0 => now.clone(),
            Baseline::None(reason) => return Latency::missing(*reason),
            Baseline::ProcessStart { .. } => now.clone(),
            Baseline::Scrape(_) => match base.and_then(|b| b.histogram(h)) {
                None => now.clone(),
                Some(before) => match now.delta_since(before) {
                    Ok(delta) => delta,
                    Err(_) => return Latency::missing(Missing::CounterReset),
                },
            },
        };
        Latency::from_window_or_idle(window, nothing_in_flight)
    };
    ModelSignals {
        queue_depth,
        running,
        kv_cache_usage: gauge(GaugeSignal::KvCacheUsage),
        kv_cache_usage_max: Reading::from_option(latest.kv_cache_usage_max(), Missing::NotExposed),
        preemption_rate: rate(CounterSignal::Preemptions),
        prompt_token_rate: rate(CounterSignal::PromptTokens),
        generation_token_rate: rate(CounterSignal::GenerationTokens),
        request_rate: rate(CounterSignal::RequestsFinished),
        request_rate_by_reason,
        time_to_first_token: latency(HistogramSignal::TimeToFirstToken),
        inter_token_latency: latency(HistogramSignal::InterTokenLatency),
        end_to_end_latency: latency(HistogramSignal::EndToEndLatency),
        queue_time: latency(HistogramSignal::QueueTime),
    }
}

/// Keeps the scrapes of one pod that a window of `window_secs` can still need.
///
/// Scrapes are kept packed ([`CompactScrape`], with their [`RestartMarks`]): a 60 s window of
/// 5 s scrapes holds 13–14 of them per pod, and whole snapshots made that most of the
/// adapter's memory. Signals unpack only the newest scrape and the chosen baseline.
#[derive(Debug, Clone)]
pub struct ScrapeHistory {
    scrapes: std::collections::VecDeque<PackedScrape>,
    window_secs: f64,
}

/// A scrape packed for a [`ScrapeHistory`] ([`ScrapeHistory::pack`]): packing can happen
/// outside whatever lock guards the history, [`ScrapeHistory::push_packed`] only moves it in.
#[derive(Debug, Clone)]
pub struct PackedScrape {
    scrape: CompactScrape,
    marks: RestartMarks,
}

/// Upper bound on scrapes kept per pod, whatever the window: at a 1 s interval and a 5 min
/// window this still covers the window; it bounds memory for 1,000-pod fleets.
pub const MAX_SCRAPES_PER_POD: usize = 320;

impl ScrapeHistory {
    /// An empty history for windows of `window_secs`.
    pub fn new(window_secs: f64) -> ScrapeHistory {
        ScrapeHistory {
            scrapes: std::collections::VecDeque::new(),
            window_secs,
        }
    }

    /// Adds the newest scrape and forgets the ones no window can need any more (it keeps
    /// one scrape older than the window, the baseline when scrapes are sparse).
    pub fn push(&mut self, snapshot: EngineSnapshot) {
        let packed = self.pack(&snapshot);
        self.push_packed(packed);
    }

    /// `snapshot` packed to be kept; the newest kept scrape lends it what they share (model
    /// names, reasons, bucket bounds).
    pub fn pack(&self, snapshot: &EngineSnapshot) -> PackedScrape {
        PackedScrape {
            scrape: CompactScrape::new(snapshot, self.scrapes.back().map(|p| &p.scrape)),
            marks: RestartMarks::of(snapshot),
        }
    }

    /// [`ScrapeHistory::push`] of a scrape packed by [`ScrapeHistory::pack`].
    pub fn push_packed(&mut self, packed: PackedScrape) {
        self.scrapes.push_back(packed);
        let newest = self.scrapes.back().map_or(0.0, |p| p.scrape.taken_at);
        let horizon = newest - self.window_secs * (1.0 + WINDOW_SLACK_FRACTION);
        while self.scrapes.len() > 2 && self.scrapes[1].scrape.taken_at < horizon {
            self.scrapes.pop_front();
        }
        while self.scrapes.len() > MAX_SCRAPES_PER_POD {
            self.scrapes.pop_front();
        }
    }

    /// The newest scrape, unpacked (without its parse and drop statistics).
    pub fn latest(&self) -> Option<EngineSnapshot> {
        self.scrapes.back().map(|p| p.scrape.to_snapshot())
    }

    /// Scrapes kept.
    pub fn len(&self) -> usize {
        self.scrapes.len()
    }

    /// True before the first scrape.
    pub fn is_empty(&self) -> bool {
        self.scrapes.is_empty()
    }

    /// Signals of the newest scrape.
    pub fn signals(&self, single_scrape: SingleScrape) -> Option<ReplicaSignals> {
        let newest = self.scrapes.back()?;
        let latest = newest.scrape.to_snapshot();
        Some(self.signals_of(
            &latest,
            &newest.marks,
            self.scrapes.len() - 1,
            single_scrape,
        ))
    }

    /// Signals `next` would have once pushed, computed without changing the history
    /// (scrapes `push` would drop are older than the window and do not change the baseline
    /// choice).
    pub fn signals_after(
        &self,
        next: &EngineSnapshot,
        single_scrape: SingleScrape,
    ) -> Option<ReplicaSignals> {
        let marks = RestartMarks::of(next);
        Some(self.signals_of(next, &marks, self.scrapes.len(), single_scrape))
    }

    /// Signals of `latest` (with `latest_marks`) after the oldest `earlier` kept scrapes.
    fn signals_of(
        &self,
        latest: &EngineSnapshot,
        latest_marks: &RestartMarks,
        earlier: usize,
        single_scrape: SingleScrape,
    ) -> ReplicaSignals {
        let marks = |i: usize| {
            if i == earlier {
                latest_marks
            } else {
                &self.scrapes[i].marks
            }
        };
        let taken_at = |i: usize| {
            if i == earlier {
                latest.taken_at
            } else {
                self.scrapes[i].scrape.taken_at
            }
        };
        let options = SignalOptions {
            window_secs: self.window_secs,
            single_scrape,
        };
        // The baseline is always an earlier scrape, never `latest` itself.
        let base = choose_baseline(
            earlier + 1,
            taken_at,
            |i| marks(i - 1).restarted_before(marks(i)),
            latest.process_start,
            options,
        )
        .map(|i| self.scrapes[i].scrape.to_snapshot());
        signals_against(latest, base.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.1, 0.5, 1.0];

    fn scrape(t: f64, waiting: f64, prompt: f64, ttft: &[f64]) -> EngineSnapshot {
        let mut s = EngineSnapshot::new(t, Engine::Vllm);
        let m = s.model_mut("m");
        m.set_gauge(GaugeSignal::QueueDepth, waiting);
        m.set_counter(CounterSignal::PromptTokens, prompt);
        let mut h = Histogram::empty(&BOUNDS);
        for &v in ttft {
            h.observe(v);
        }
        m.set_histogram(HistogramSignal::TimeToFirstToken, h);
        s
    }

    fn options() -> SignalOptions {
        SignalOptions::default()
    }

    #[test]
    fn single_scrape_has_gauges_but_no_rates_or_window() {
        let a = scrape(0.0, 3.0, 10.0, &[0.2]);
        let s = replica_signals(&[&a], options()).unwrap();
        assert_eq!(s.combined.queue_depth, Reading::Value(3.0));
        assert_eq!(
            s.combined.prompt_token_rate,
            Reading::Missing(Missing::NeedsTwoScrapes)
        );
        assert_eq!(
            s.combined.time_to_first_token.p95,
            Reading::Missing(Missing::NeedsTwoScrapes)
        );
    }

    #[test]
    fn single_scrape_since_start_uses_cumulative_buckets() {
        let a = scrape(0.0, 0.0, 10.0, &[0.2, 0.2, 0.7]);
        let opts = SignalOptions {
            single_scrape: SingleScrape::SinceStart,
            ..options()
        };
        let s = replica_signals(&[&a], opts).unwrap();
        assert!(s.window.since_start);
        assert_eq!(
            s.combined.time_to_first_token.observations,
            Reading::Value(3.0)
        );
        // rank 1.5 of 3, bucket (0.1,0.5] holds 2 → 0.1 + 0.4 * 1.5/2 = 0.4.
        let p50 = s.combined.time_to_first_token.p50.value().unwrap();
        assert!((p50 - 0.4).abs() < 1e-12);
    }

    #[test]
    fn window_percentiles_use_bucket_deltas() {
        let a = scrape(0.0, 0.0, 100.0, &[0.05; 10]);
        let b = scrape(
            30.0,
            2.0,
            400.0,
            &[[0.05; 10].as_slice(), &[0.7, 0.7]].concat(),
        );
        let s = replica_signals(&[&a, &b], options()).unwrap();
        assert_eq!(s.window.seconds, Some(30.0));
        assert_eq!(s.combined.prompt_token_rate, Reading::Value(10.0));
        let ttft = &s.combined.time_to_first_token;
        assert_eq!(ttft.observations, Reading::Value(2.0));
        // Both new observations in (0.5, 1.0]: p50 rank 1 of 2 → 0.75.
        assert!((ttft.p50.value().unwrap() - 0.75).abs() < 1e-12);
    }

    /// `scrape` with the running gauge exposed too.
    fn scrape_running(t: f64, waiting: f64, running: f64, ttft: &[f64]) -> EngineSnapshot {
        let mut s = scrape(t, waiting, 100.0, ttft);
        s.model_mut("m").set_gauge(GaugeSignal::Running, running);
        s
    }

    #[test]
    fn idle_replica_reports_zero_latency_marked_idle() {
        // One request before the window, none in it, nothing waiting or running now.
        let a = scrape_running(0.0, 0.0, 0.0, &[0.05]);
        let b = scrape_running(15.0, 0.0, 0.0, &[0.05]);
        let s = replica_signals(&[&a, &b], options()).unwrap();
        let ttft = &s.combined.time_to_first_token;
        assert!(ttft.idle);
        for reading in [
            ttft.p50,
            ttft.p90,
            ttft.p95,
            ttft.p99,
            ttft.mean,
            ttft.observations,
        ] {
            assert_eq!(reading, Reading::Value(0.0));
        }
        assert_eq!(ttft.quantile(0.75), Reading::Value(0.0), "any quantile");
        assert_eq!(s.models["m"].time_to_first_token, *ttft, "per model too");
        assert_eq!(s.combined.prompt_token_rate, Reading::Value(0.0));
        let json = serde_json::to_value(ttft).unwrap();
        assert_eq!(json["p95"], 0.0);
        assert_eq!(json["idle"], true);
    }

    #[test]
    fn busy_replica_without_observations_is_missing_not_zero() {
        // Requests waiting (or only running) but none observed in the window.
        for (waiting, running) in [(2.0, 0.0), (0.0, 3.0), (2.0, 3.0)] {
            let a = scrape_running(0.0, waiting, running, &[0.05]);
            let b = scrape_running(15.0, waiting, running, &[0.05]);
            let s = replica_signals(&[&a, &b], options()).unwrap();
            let ttft = &s.combined.time_to_first_token;
            assert!(!ttft.idle);
            assert_eq!(ttft.p99, Reading::Missing(Missing::NoObservations));
            assert_eq!(ttft.observations, Reading::Value(0.0));
        }
        // A replica whose running count is not exposed is never called idle.
        let a = scrape(0.0, 0.0, 100.0, &[0.05]);
        let b = scrape(15.0, 0.0, 100.0, &[0.05]);
        let s = replica_signals(&[&a, &b], options()).unwrap();
        assert_eq!(
            s.combined.time_to_first_token.p99,
            Reading::Missing(Missing::NoObservations)
        );
    }

    #[test]
    fn a_replica_with_observations_is_not_idle_even_with_nothing_in_flight() {
        // Two requests of 0.7 s in the window, all done: p50 rank 1 of 2 in (0.5, 1] → 0.75.
        let a = scrape_running(0.0, 0.0, 0.0, &[]);
        let b = scrape_running(15.0, 0.0, 0.0, &[0.7, 0.7]);
        let s = replica_signals(&[&a, &b], options()).unwrap();
        let ttft = &s.combined.time_to_first_token;
        assert!(!ttft.idle);
        assert!((ttft.p50.value().unwrap() - 0.75).abs() < 1e-12);
    }

    #[test]
    fn one_scrape_of_a_server_that_observed_nothing_and_has_nothing_to_do_is_idle() {
        // Serving path: rates wait for a second scrape, but a fresh idle server's latency
        // is already known to be "no request waited".
        let fresh = scrape_running(0.0, 0.0, 0.0, &[]);
        let s = replica_signals(&[&fresh], options()).unwrap();
        assert!(s.combined.time_to_first_token.idle);
        assert_eq!(s.combined.time_to_first_token.p95, Reading::Value(0.0));
        assert_eq!(
            s.combined.prompt_token_rate,
            Reading::Missing(Missing::NeedsTwoScrapes)
        );
        // Something waiting, or observations since start whose window is unknown: missing.
        for busy in [
            scrape_running(0.0, 1.0, 0.0, &[]),
            scrape_running(0.0, 0.0, 0.0, &[0.2]),
        ] {
            let s = replica_signals(&[&busy], options()).unwrap();
            assert_eq!(
                s.combined.time_to_first_token.p95,
                Reading::Missing(Missing::NeedsTwoScrapes)
            );
        }
        // inspect's since-start reading of the fresh server says the same.
        let opts = SignalOptions {
            single_scrape: SingleScrape::SinceStart,
            ..options()
        };
        let s = replica_signals(&[&fresh], opts).unwrap();
        assert!(s.combined.time_to_first_token.idle);
    }

    #[test]
    fn window_picks_oldest_scrape_inside_it() {
        let scrapes: Vec<_> = (0..20)
            .map(|i| scrape(i as f64 * 5.0, 0.0, i as f64 * 50.0, &[]))
            .collect();
        let refs: Vec<_> = scrapes.iter().collect();
        let s = replica_signals(&refs, options()).unwrap();
        // Newest at 95 s; 60 s window (+5% slack) → oldest inside is 35 s.
        assert_eq!(s.window.start, Some(35.0));
        assert_eq!(s.combined.prompt_token_rate, Reading::Value(10.0));
    }

    #[test]
    fn restart_between_last_two_scrapes_uses_counts_since_restart() {
        let mut a = scrape(0.0, 0.0, 1000.0, &[0.05; 50]);
        a.process_start = Some(-100.0);
        let mut b = scrape(20.0, 0.0, 30.0, &[0.7]);
        b.process_start = Some(10.0);
        let s = replica_signals(&[&a, &b], options()).unwrap();
        assert!(s.window.since_start);
        assert_eq!(s.window.seconds, Some(10.0));
        assert_eq!(s.combined.prompt_token_rate, Reading::Value(3.0));
        assert_eq!(
            s.combined.time_to_first_token.observations,
            Reading::Value(1.0)
        );
    }

    #[test]
    fn restart_detected_from_falling_counter_without_start_time() {
        let a = scrape(0.0, 0.0, 1000.0, &[0.05; 50]);
        let b = scrape(20.0, 0.0, 30.0, &[0.7]);
        let s = replica_signals(&[&a, &b], options()).unwrap();
        assert_eq!(
            s.combined.prompt_token_rate,
            Reading::Missing(Missing::CounterReset)
        );
        // The buckets since the restart are still real observations.
        assert_eq!(
            s.combined.time_to_first_token.observations,
            Reading::Value(1.0)
        );
    }

    #[test]
    fn restart_earlier_in_history_starts_window_after_it() {
        let a = scrape(0.0, 0.0, 1000.0, &[]);
        let b = scrape(10.0, 0.0, 10.0, &[]);
        let c = scrape(20.0, 0.0, 110.0, &[]);
        let s = replica_signals(&[&a, &b, &c], options()).unwrap();
        assert_eq!(s.window.start, Some(10.0));
        assert_eq!(s.combined.prompt_token_rate, Reading::Value(10.0));
    }

    #[test]
    fn history_forgets_scrapes_outside_window_but_keeps_a_baseline() {
        let mut h = ScrapeHistory::new(60.0);
        for i in 0..100 {
            h.push(scrape(i as f64 * 5.0, 0.0, 0.0, &[]));
        }
        assert!(h.len() <= 15, "kept {}", h.len());
        let next = scrape(500.0, 0.0, 0.0, &[]);
        let predicted = h.signals_after(&next, SingleScrape::Missing);
        h.push(next);
        assert_eq!(predicted, h.signals(SingleScrape::Missing));
        let s = h.signals(SingleScrape::Missing).unwrap();
        assert!(s.window.seconds.unwrap() >= 60.0 - 1e-9);
    }

    #[test]
    fn a_packed_history_gives_the_signals_of_every_scrape_kept_whole() {
        // 5 s scrapes with moving counters and buckets; a restart seen only as falling counts
        // (scrape 20), one with a new process start (scrape 35), a 90 s gap (after 45), a
        // second model from scrape 10 on.
        let mut whole: Vec<EngineSnapshot> = Vec::new();
        let mut history = ScrapeHistory::new(60.0);
        let mut t = 1000.0;
        for i in 0..60_u32 {
            t += if i == 46 { 90.0 } else { 5.0 };
            let since_restart = if i >= 35 {
                i - 35
            } else if i >= 20 {
                i - 20
            } else {
                i
            };
            let observed: Vec<f64> = (0..since_restart).map(|k| f64::from(k % 7) / 5.0).collect();
            let mut s = scrape(
                t,
                f64::from(i % 3),
                f64::from(since_restart) * 40.0,
                &observed,
            );
            s.process_start = Some(if i >= 35 { t - 1.0 } else { 0.0 });
            if i >= 10 {
                let m = s.model_mut("second");
                m.set_counter(CounterSignal::RequestsFinished, f64::from(i));
                m.finished_by_reason.insert("stop".into(), f64::from(i));
            }
            for single in [SingleScrape::Missing, SingleScrape::SinceStart] {
                let all: Vec<&EngineSnapshot> = whole.iter().chain([&s]).collect();
                let expected = replica_signals(
                    &all,
                    SignalOptions {
                        window_secs: 60.0,
                        single_scrape: single,
                    },
                );
                assert!(expected.is_some());
                assert_eq!(history.signals_after(&s, single), expected, "scrape {i}");
            }
            history.push(s.clone());
            whole.push(s);
            let all: Vec<&EngineSnapshot> = whole.iter().collect();
            assert_eq!(
                history.signals(SingleScrape::Missing),
                replica_signals(&all, options()),
                "scrape {i}"
            );
            assert_eq!(history.latest().as_ref(), whole.last());
        }
        assert!(history.len() < whole.len() / 3, "kept {}", history.len());
    }

    #[test]
    fn missing_serialises_as_reason() {
        let json = serde_json::to_string(&Reading::Missing(Missing::NeedsTwoScrapes)).unwrap();
        assert_eq!(json, r#"{"missing":"needs_two_scrapes"}"#);
        assert_eq!(serde_json::to_string(&Reading::Value(1.5)).unwrap(), "1.5");
    }
}
