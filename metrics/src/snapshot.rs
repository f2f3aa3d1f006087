//! One scrape of one serving pod, reduced to the numbers the signals need.
//!
//! Owns: reading a `/metrics` body through the profile tables into an [`EngineSnapshot`]
//! (per `model_name`: gauges, counters, latency histograms; per pod: KV capacity and process
//! start). Data-parallel engines of one server (vLLM's `engine` label) are combined here:
//! queue and running are summed, KV usage is averaged (its maximum is kept too), counters and
//! histogram buckets are summed. The packed form a pod's older scrapes are kept in is
//! [`CompactScrape`].
//!
//! Bounded whatever a target sends: [`SnapshotLimits`] caps the distinct models, the series
//! and the bucket bounds one body may put into a snapshot, and refuses absurdly long model
//! names. What goes over a cap is skipped and counted in [`DropStats`] by [`DropKind`],
//! together with what cannot be a value (duplicate series, `NaN`/±Inf gauges and counters)
//! and histograms that cannot be read (falling cumulative counts, `NaN` counts, no `+Inf`
//! bucket); everything else the body holds is kept.
//! Does not own: anything that needs two scrapes (see [`crate::signals`]).

use crate::histogram::{Histogram, HistogramError};
use crate::parser::{parse_float, Format, NameFilter, ParseStats, Parser, Record, Sample};
use crate::profile::{
    CounterSignal, Engine, GaugeSignal, HistogramSignal, Route, RouteIndex, SamplePart, Signal,
};
use serde::Serialize;
use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};

mod compact;
pub use compact::CompactScrape;

/// Model key used for series that carry no model label (TGI, V0 `cache_config_info`).
pub const UNLABELLED_MODEL: &str = "";

/// Per-scrape bounds on what one `/metrics` body may put into a snapshot.
///
/// They keep memory and CPU per scrape bounded by configuration, whatever a target sends
/// (one pod exposing 300,000 `model_name` values once drove the adapter to gigabytes). What
/// goes over a bound is skipped and counted in [`DropStats`]; the pod's other values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotLimits {
    /// Distinct models (values of the profile's model label, the unlabelled model included)
    /// one body may carry. Default [`SnapshotLimits::DEFAULT_MAX_MODELS`].
    pub max_models: usize,
    /// Samples the profiles route (gauges, counters, `_created`, every bucket, `_sum`,
    /// `_count`, cache config, process start) kept from one body. Default
    /// [`SnapshotLimits::DEFAULT_MAX_SERIES`].
    pub max_series: usize,
    /// Distinct `le` bounds of one histogram of one model. Default
    /// [`SnapshotLimits::DEFAULT_MAX_BUCKET_BOUNDS`].
    pub max_bucket_bounds: usize,
    /// Longest model name accepted, bytes. Default
    /// [`SnapshotLimits::DEFAULT_MAX_MODEL_NAME_BYTES`].
    pub max_model_name_bytes: usize,
}

impl SnapshotLimits {
    /// A vLLM, SGLang or TGI server exposes one model name (TGI none); 64 leaves room for
    /// multi-model servers and routers scraped as one pod, while one pod's snapshot stays
    /// under ~150 KB (≈ 2 KB per model) and a 60 s window of them under ~2 MB.
    pub const DEFAULT_MAX_MODELS: usize = 64;
    /// A single-engine vLLM body routes ≈ 110 samples per model (four histograms of 19–23
    /// bounds plus gauges and counters); 16,384 holds 64 models on two data-parallel engines,
    /// or one model on 128 engines, and bounds the builder's working set to ≈ 1 MB.
    pub const DEFAULT_MAX_SERIES: usize = 16_384;
    /// The largest histogram the profiles read has 36 bounds (TGI's `*_duration`: 35 finite
    /// ones and `+Inf`); vLLM's have 20 to 23. 256 is far above any real one and keeps the
    /// builder's per-bucket lookup cheap.
    pub const DEFAULT_MAX_BUCKET_BOUNDS: usize = 256;
    /// Model names are served names or Hugging Face ids (organisation and repository, each
    /// at most 96 characters) or paths; 1 KiB admits all of them and keeps 64 names ≤ 64 KB.
    pub const DEFAULT_MAX_MODEL_NAME_BYTES: usize = 1024;
}

impl Default for SnapshotLimits {
    fn default() -> SnapshotLimits {
        SnapshotLimits {
            max_models: SnapshotLimits::DEFAULT_MAX_MODELS,
            max_series: SnapshotLimits::DEFAULT_MAX_SERIES,
            max_bucket_bounds: SnapshotLimits::DEFAULT_MAX_BUCKET_BOUNDS,
            max_model_name_bytes: SnapshotLimits::DEFAULT_MAX_MODEL_NAME_BYTES,
        }
    }
}

/// Why the snapshot builder left something out. Closed set so it can label the adapter's
/// own metrics (e.g. `..._dropped_total{kind}`), like [`crate::parser::LineErrorKind`].
///
/// The first six count **samples**, the last four count **histograms** (one per model and
/// signal whose buckets could not form a histogram; that signal then reads missing with
/// reason `incomplete_histogram`, never a made-up value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropKind {
    /// Sample of a model beyond [`SnapshotLimits::max_models`].
    ModelLimit,
    /// Sample beyond [`SnapshotLimits::max_series`].
    SeriesLimit,
    /// Sample whose model name is longer than [`SnapshotLimits::max_model_name_bytes`].
    ModelNameTooLong,
    /// Sample with the same name and label text as an earlier one in the body; the first
    /// one is kept (as Prometheus keeps the first of duplicate samples).
    DuplicateSeries,
    /// Gauge, counter or process-start sample whose value is `NaN` or ±Inf (a cache-config
    /// sample whose blocks × block size overflows too).
    NonFiniteValue,
    /// Bucket sample whose `le` label is missing, not a number or `NaN`; the histogram is
    /// read from its other buckets.
    InvalidBucketBound,
    /// Histogram whose cumulative counts fall as the bound grows.
    NonMonotoneBuckets,
    /// Histogram with a `NaN`, infinite or negative bucket count.
    InvalidBucketCount,
    /// Histogram without a `+Inf` bucket (a truncated body or not a classic histogram).
    MissingInfBucket,
    /// Histogram with more than [`SnapshotLimits::max_bucket_bounds`] bounds.
    TooManyBuckets,
}

impl DropKind {
    /// All kinds, in a fixed order (index = position in [`DropStats::by_kind`]).
    pub const ALL: [DropKind; 10] = [
        DropKind::ModelLimit,
        DropKind::SeriesLimit,
        DropKind::ModelNameTooLong,
        DropKind::DuplicateSeries,
        DropKind::NonFiniteValue,
        DropKind::InvalidBucketBound,
        DropKind::NonMonotoneBuckets,
        DropKind::InvalidBucketCount,
        DropKind::MissingInfBucket,
        DropKind::TooManyBuckets,
    ];

    /// A short, stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropKind::ModelLimit => "model_limit",
            DropKind::SeriesLimit => "series_limit",
            DropKind::ModelNameTooLong => "model_name_too_long",
            DropKind::DuplicateSeries => "duplicate_series",
            DropKind::NonFiniteValue => "non_finite_value",
            DropKind::InvalidBucketBound => "invalid_bucket_bound",
            DropKind::NonMonotoneBuckets => "non_monotone_buckets",
            DropKind::InvalidBucketCount => "invalid_bucket_count",
            DropKind::MissingInfBucket => "missing_inf_bucket",
            DropKind::TooManyBuckets => "too_many_buckets",
        }
    }

    /// Whether the kind counts histograms (else samples).
    pub fn counts_histograms(self) -> bool {
        (self as usize) >= (DropKind::NonMonotoneBuckets as usize)
    }
}

/// What the snapshot builder left out of one body, by [`DropKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropStats {
    /// Counts in the order of [`DropKind::ALL`].
    pub by_kind: [usize; 10],
}

impl DropStats {
    /// The count of one kind.
    pub fn get(&self, kind: DropKind) -> usize {
        self.by_kind[kind as usize]
    }

    /// Everything dropped, samples and histograms together.
    pub fn total(&self) -> usize {
        self.by_kind.iter().sum()
    }

    fn add(&mut self, kind: DropKind) {
        self.by_kind[kind as usize] += 1;
    }
}

/// Values of one served model in one scrape.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelSnapshot {
    gauges: [Option<f64>; 3],
    /// Highest KV-cache usage among data-parallel engines.
    kv_cache_usage_max: Option<f64>,
    counters: [Option<f64>; 4],
    /// Finished requests by reason (`finished_reason` for vLLM).
    pub finished_by_reason: BTreeMap<String, f64>,
    histograms: [Option<Histogram>; 4],
    /// Histograms that were exposed but unusable (no `+Inf` bucket, e.g. a truncated body,
    /// or buckets refused for a reason counted in [`DropStats`]).
    #[serde(skip)]
    incomplete_histograms: [bool; 4],
    /// Earliest `_created` timestamp among this model's series (V1 vLLM): a change means the
    /// counters restarted.
    pub series_created: Option<f64>,
}

impl ModelSnapshot {
    /// The value of a gauge, when exposed.
    pub fn gauge(&self, signal: GaugeSignal) -> Option<f64> {
        self.gauges[signal as usize]
    }

    /// Sets a gauge (the simulator and tests build snapshots by hand).
    pub fn set_gauge(&mut self, signal: GaugeSignal, value: f64) {
        self.gauges[signal as usize] = Some(value);
        if signal == GaugeSignal::KvCacheUsage {
            self.kv_cache_usage_max = Some(value);
        }
    }

    /// The highest KV-cache usage of any data-parallel engine, when exposed.
    pub fn kv_cache_usage_max(&self) -> Option<f64> {
        self.kv_cache_usage_max
    }

    /// The value of a counter, when exposed.
    pub fn counter(&self, signal: CounterSignal) -> Option<f64> {
        self.counters[signal as usize]
    }

    /// Sets a counter.
    pub fn set_counter(&mut self, signal: CounterSignal, value: f64) {
        self.counters[signal as usize] = Some(value);
    }

    /// A histogram, when exposed completely.
    pub fn histogram(&self, signal: HistogramSignal) -> Option<&Histogram> {
        self.histograms[signal as usize].as_ref()
    }

    /// Sets a histogram.
    pub fn set_histogram(&mut self, signal: HistogramSignal, histogram: Histogram) {
        self.histograms[signal as usize] = Some(histogram);
    }

    /// True when the body had this histogram but it could not be used.
    pub fn histogram_incomplete(&self, signal: HistogramSignal) -> bool {
        self.incomplete_histograms[signal as usize]
    }

    /// Adds another model's values (used for the all-models view of a pod).
    pub fn absorb(&mut self, other: &ModelSnapshot, kv_shards: (usize, usize)) {
        for signal in GaugeSignal::ALL {
            let i = signal as usize;
            self.gauges[i] = match (self.gauges[i], other.gauges[i]) {
                (Some(a), Some(b)) if signal == GaugeSignal::KvCacheUsage => {
                    // Weighted mean over the engines each side averaged.
                    let (n_self, n_other) = kv_shards;
                    let total = (n_self + n_other).max(1) as f64;
                    Some((a * n_self as f64 + b * n_other as f64) / total)
                }
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
        }
        self.kv_cache_usage_max = max_option(self.kv_cache_usage_max, other.kv_cache_usage_max);
        for i in 0..self.counters.len() {
            self.counters[i] = sum_option(self.counters[i], other.counters[i]);
        }
        for (reason, value) in &other.finished_by_reason {
            *self.finished_by_reason.entry(reason.clone()).or_insert(0.0) += value;
        }
        for i in 0..self.histograms.len() {
            match (&mut self.histograms[i], &other.histograms[i]) {
                (Some(mine), Some(theirs)) => mine.merge(theirs),
                (mine @ None, Some(theirs)) => *mine = Some(theirs.clone()),
                _ => {}
            }
            self.incomplete_histograms[i] |= other.incomplete_histograms[i];
        }
        self.series_created = min_option(self.series_created, other.series_created);
    }
}

fn sum_option(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

fn max_option(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min_option(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One scrape of one serving pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineSnapshot {
    /// When the scrape completed, seconds (Unix time for live scrapes).
    pub taken_at: f64,
    /// The engine recognised from the family names, if any.
    pub engine: Option<Engine>,
    /// Per served model name ([`UNLABELLED_MODEL`] for series without one).
    pub models: BTreeMap<String, ModelSnapshot>,
    /// Data-parallel engines seen per model for KV usage (to weight the all-models mean).
    #[serde(skip)]
    kv_shards: BTreeMap<String, usize>,
    /// KV-cache capacity in tokens: `num_gpu_blocks` × `block_size` summed over engines
    /// (vLLM), or the KV pool size summed over series (SGLang `max_total_num_tokens`).
    pub kv_capacity_tokens: Option<f64>,
    /// `process_start_time_seconds`, when exposed.
    pub process_start: Option<f64>,
    /// What the parser counted (skipped lines and why).
    #[serde(skip)]
    pub parse_stats: ParseStats,
    /// What the snapshot builder left out (over a limit, duplicate, non-finite, unusable
    /// histograms) and why.
    #[serde(skip)]
    pub dropped: DropStats,
}

impl EngineSnapshot {
    /// An empty snapshot taken at `taken_at` (the simulator fills it with setters).
    pub fn new(taken_at: f64, engine: Engine) -> EngineSnapshot {
        EngineSnapshot {
            taken_at,
            engine: Some(engine),
            ..EngineSnapshot::default()
        }
    }

    /// The snapshot for one model, created if absent.
    pub fn model_mut(&mut self, model: &str) -> &mut ModelSnapshot {
        self.models.entry(model.to_owned()).or_default()
    }

    /// All models of the pod combined into one.
    pub fn combined(&self) -> ModelSnapshot {
        let mut all = ModelSnapshot::default();
        let mut shards_so_far = 0;
        for (name, model) in &self.models {
            let shards = self.kv_shards.get(name).copied().unwrap_or(1);
            all.absorb(model, (shards_so_far, shards));
            if model.gauge(GaugeSignal::KvCacheUsage).is_some() {
                shards_so_far += shards;
            }
        }
        all
    }

    /// Reads a body with the engine profiles under the default [`SnapshotLimits`].
    pub fn from_exposition(
        body: &str,
        format: Format,
        taken_at: f64,
        routes: &RouteIndex,
    ) -> EngineSnapshot {
        EngineSnapshot::from_exposition_with(
            body,
            format,
            taken_at,
            routes,
            &SnapshotLimits::default(),
        )
    }

    /// Reads a body with the engine profiles. Never fails: malformed lines are counted in
    /// [`EngineSnapshot::parse_stats`], what the builder left out in
    /// [`EngineSnapshot::dropped`], and what could be read is kept.
    pub fn from_exposition_with(
        body: &str,
        format: Format,
        taken_at: f64,
        routes: &RouteIndex,
        limits: &SnapshotLimits,
    ) -> EngineSnapshot {
        let filter = RoutingFilter {
            index: routes,
            last_routes: Cell::new(&[]),
        };
        let mut parser = Parser::with_filter(body, format, &filter);
        let mut builder = Builder::new(*limits);
        for record in parser.by_ref() {
            if let Record::Sample(sample) = record {
                // The parser returns a sample right after the filter accepted its name, so
                // the routes the filter found are this sample's.
                debug_assert!(std::ptr::eq(
                    filter.last_routes.get(),
                    routes.lookup(sample.name)
                ));
                builder.add_sample(filter.last_routes.get(), &sample);
            }
        }
        builder.finish(taken_at, parser.into_stats())
    }
}

/// The route index as the parser's name filter, keeping the routes it found for the last
/// accepted name: the builder needs them for the very sample the parser returns next, and
/// hashing every wanted name once instead of twice is a few percent of the whole parse.
struct RoutingFilter<'r> {
    index: &'r RouteIndex,
    last_routes: Cell<&'r [Route]>,
}

impl NameFilter for &RoutingFilter<'_> {
    #[inline]
    fn accepts(&self, name: &str) -> bool {
        let routes = self.index.lookup(name);
        self.last_routes.set(routes);
        !routes.is_empty()
    }

    fn wants_descriptors(&self) -> bool {
        false
    }

    fn accepts_only_valid_names(&self) -> bool {
        (&self.index).accepts_only_valid_names()
    }
}

/// A value that several engines (shards) or names (renames) may contribute to.
#[derive(Debug, Clone, Copy)]
struct Ranked {
    rank: u8,
    sum: f64,
    max: f64,
    shards: usize,
}

#[derive(Debug, Default)]
struct HistogramParts {
    rank: u8,
    buckets: Vec<(f64, f64)>,
    sum: f64,
    /// More bounds than [`SnapshotLimits::max_bucket_bounds`] were offered.
    too_many_buckets: bool,
}

#[derive(Debug, Default)]
struct ModelParts {
    gauges: [Option<Ranked>; 3],
    counters: [Option<Ranked>; 4],
    finished_by_reason: BTreeMap<String, f64>,
    histograms: [Option<HistogramParts>; 4],
    series_created: Option<f64>,
}

#[derive(Debug)]
struct Builder<'a> {
    limits: SnapshotLimits,
    engine: Option<Engine>,
    models: BTreeMap<String, ModelParts>,
    kv_capacity_tokens: Option<f64>,
    process_start: Option<f64>,
    /// Every sample kept, to refuse duplicates: its name (as the address of the name's
    /// routes in the index, one per name, cheaper to compare than the name) and its raw
    /// label text borrowed from the body. At most `limits.max_series` entries. Ordered, not
    /// hashed: a body can be written so that its label sets collide under a fast hash,
    /// which would make every insert a long probe; a tree costs O(log n) whatever it holds.
    seen: HashSet<(usize, &'a str), ahash::RandomState>,
    dropped: DropStats,
}

/// Keeps the value from the best-ranked name; equal ranks (shards) accumulate.
fn add_ranked(slot: &mut Option<Ranked>, rank: u8, value: f64) {
    match slot {
        Some(existing) if existing.rank < rank => {}
        Some(existing) if existing.rank == rank => {
            existing.sum += value;
            existing.max = existing.max.max(value);
            existing.shards += 1;
        }
        _ => {
            *slot = Some(Ranked {
                rank,
                sum: value,
                max: value,
                shards: 1,
            })
        }
    }
}

impl<'a> Builder<'a> {
    fn new(limits: SnapshotLimits) -> Builder<'a> {
        Builder {
            limits,
            engine: None,
            models: BTreeMap::new(),
            kv_capacity_tokens: None,
            process_start: None,
            seen: HashSet::with_capacity_and_hasher(256, ahash::RandomState::new()),
            dropped: DropStats::default(),
        }
    }

    /// Admits one routed sample: under the series cap, not a duplicate of an earlier one.
    fn add_sample(&mut self, routes: &[Route], sample: &Sample<'a>) {
        if self.seen.len() >= self.limits.max_series {
            self.dropped.add(DropKind::SeriesLimit);
            return;
        }
        let key = (routes.as_ptr() as usize, sample.raw_labels());
        if !self.seen.insert(key) {
            self.dropped.add(DropKind::DuplicateSeries);
            return;
        }
        // Several routes only for names two profiles share (`process_start_time_seconds`);
        // count a sample's drop once.
        let mut dropped = None;
        for route in routes {
            if let Err(kind) = self.add(route, sample) {
                dropped = Some(kind);
            }
        }
        if let Some(kind) = dropped {
            self.dropped.add(kind);
            // Only kept samples hold a series slot: junk before a pod's real series must not
            // crowd them out.
            self.seen.remove(&key);
        }
    }

    fn add(&mut self, route: &Route, sample: &Sample<'_>) -> Result<(), DropKind> {
        let value = sample.value;
        let non_finite_value =
            !value.is_finite() && matches!(route.part, SamplePart::Value | SamplePart::Created);
        match route.mapping.signal {
            Signal::ProcessStart if non_finite_value => return Err(DropKind::NonFiniteValue),
            Signal::ProcessStart => {
                self.process_start = Some(value);
                return Ok(());
            }
            Signal::CacheConfig => {
                let [blocks, block_size] = sample
                    .labels_named(["num_gpu_blocks", "block_size"])
                    .map(|v| v.and_then(|v| parse_float(&v)));
                if let (Some(blocks), Some(size)) = (blocks, block_size) {
                    let tokens = blocks * size;
                    if !tokens.is_finite() {
                        return Err(DropKind::NonFiniteValue);
                    }
                    self.kv_capacity_tokens = Some(self.kv_capacity_tokens.unwrap_or(0.0) + tokens);
                }
                self.engine.get_or_insert(route.profile.engine);
                return Ok(());
            }
            Signal::KvCapacityTokens if non_finite_value => return Err(DropKind::NonFiniteValue),
            Signal::KvCapacityTokens => {
                self.kv_capacity_tokens = Some(self.kv_capacity_tokens.unwrap_or(0.0) + value);
                self.engine.get_or_insert(route.profile.engine);
                return Ok(());
            }
            Signal::Gauge(_) | Signal::Counter(_) if non_finite_value => {
                return Err(DropKind::NonFiniteValue)
            }
            _ => {}
        }
        self.engine.get_or_insert(route.profile.engine);
        // Every label this sample needs, in one walk: the model (labels in order of
        // preference), `le` of a bucket, the finish reason of a finished-requests counter.
        let model_labels = route.profile.model_labels;
        let reason_label = match route.mapping.signal {
            Signal::Counter(CounterSignal::RequestsFinished) => route.profile.reason_label,
            _ => None,
        };
        let [model_first, model_second, le, reason] = sample.labels_named([
            model_labels.first().copied().unwrap_or(""),
            model_labels.get(1).copied().unwrap_or(""),
            if route.part == SamplePart::Bucket {
                "le"
            } else {
                ""
            },
            reason_label.unwrap_or(""),
        ]);
        debug_assert!(model_labels.len() <= 2, "one walk reads two model labels");
        let model = model_first.or(model_second).unwrap_or_default();
        if model.len() > self.limits.max_model_name_bytes {
            return Err(DropKind::ModelNameTooLong);
        }
        let models_full = self.models.len() >= self.limits.max_models;
        let parts = match self.models.get_mut(model.as_ref()) {
            Some(parts) => parts,
            None if models_full => return Err(DropKind::ModelLimit),
            None => self.models.entry(model.into_owned()).or_default(),
        };
        if route.part == SamplePart::Created {
            parts.series_created = min_option(parts.series_created, Some(value));
            return Ok(());
        }
        let rank = route.mapping.rank;
        match route.mapping.signal {
            Signal::Gauge(signal) => add_ranked(&mut parts.gauges[signal as usize], rank, value),
            Signal::Counter(signal) => {
                add_ranked(&mut parts.counters[signal as usize], rank, value);
                if signal == CounterSignal::RequestsFinished {
                    if let Some(reason) = reason {
                        *parts
                            .finished_by_reason
                            .entry(reason.into_owned())
                            .or_insert(0.0) += value;
                    }
                }
            }
            Signal::Histogram(signal) => {
                let slot = &mut parts.histograms[signal as usize];
                match slot {
                    Some(existing) if existing.rank < rank => return Ok(()),
                    Some(existing) if existing.rank == rank => {}
                    _ => {
                        *slot = Some(HistogramParts {
                            rank,
                            ..HistogramParts::default()
                        })
                    }
                }
                let Some(hist) = slot.as_mut() else {
                    return Ok(());
                };
                match route.part {
                    SamplePart::Bucket => {
                        let Some(le) = le.and_then(|v| parse_float(&v)).filter(|b| !b.is_nan())
                        else {
                            return Err(DropKind::InvalidBucketBound);
                        };
                        // Shards of one server share bounds: add counts per bound. Bodies
                        // list bounds in increasing order, so look from the end.
                        let full = hist.buckets.len() >= self.limits.max_bucket_bounds;
                        match hist
                            .buckets
                            .iter_mut()
                            .rev()
                            .find(|(bound, _)| *bound == le)
                        {
                            Some((_, count)) => *count += value,
                            None if full => hist.too_many_buckets = true,
                            None => hist.buckets.push((le, value)),
                        }
                    }
                    SamplePart::Sum => hist.sum += value,
                    // `_count` equals the +Inf bucket; the buckets are authoritative.
                    SamplePart::Count | SamplePart::Value | SamplePart::Created => {}
                }
            }
            Signal::CacheConfig | Signal::KvCapacityTokens | Signal::ProcessStart => {}
        }
        Ok(())
    }

    fn finish(mut self, taken_at: f64, parse_stats: ParseStats) -> EngineSnapshot {
        let mut models = BTreeMap::new();
        let mut kv_shards = BTreeMap::new();
        for (name, parts) in self.models {
            let mut model = ModelSnapshot {
                finished_by_reason: parts.finished_by_reason,
                series_created: parts.series_created,
                ..ModelSnapshot::default()
            };
            for signal in GaugeSignal::ALL {
                if let Some(r) = parts.gauges[signal as usize] {
                    model.gauges[signal as usize] = Some(match signal {
                        GaugeSignal::KvCacheUsage => {
                            model.kv_cache_usage_max = Some(r.max);
                            kv_shards.insert(name.clone(), r.shards);
                            r.sum / r.shards as f64
                        }
                        GaugeSignal::QueueDepth | GaugeSignal::Running => r.sum,
                    });
                }
            }
            for signal in CounterSignal::ALL {
                model.counters[signal as usize] = parts.counters[signal as usize].map(|r| r.sum);
            }
            for (i, parts) in parts.histograms.into_iter().enumerate() {
                let Some(parts) = parts else { continue };
                let built = if parts.too_many_buckets {
                    Err(DropKind::TooManyBuckets)
                } else {
                    Histogram::from_buckets(parts.buckets, parts.sum).map_err(|e| match e {
                        HistogramError::MissingInfBucket => DropKind::MissingInfBucket,
                        HistogramError::InvalidCount => DropKind::InvalidBucketCount,
                        // NaN bounds were refused sample by sample and bounds of one
                        // histogram are merged, so no bound is invalid here; one scrape's
                        // buckets cannot reset (only a window delta can).
                        HistogramError::NonMonotonic
                        | HistogramError::InvalidBound
                        | HistogramError::CounterReset => DropKind::NonMonotoneBuckets,
                    })
                };
                match built {
                    Ok(h) => model.histograms[i] = Some(h),
                    Err(kind) => {
                        model.incomplete_histograms[i] = true;
                        self.dropped.add(kind);
                    }
                }
            }
            models.insert(name, model);
        }
        EngineSnapshot {
            taken_at,
            engine: self.engine,
            models,
            kv_shards,
            kv_capacity_tokens: self.kv_capacity_tokens,
            process_start: self.process_start,
            parse_stats,
            dropped: self.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(body: &str) -> EngineSnapshot {
        EngineSnapshot::from_exposition(body, Format::Prometheus, 0.0, &RouteIndex::engines())
    }

    #[test]
    fn data_parallel_engines_are_combined() {
        let s = snap(concat!(
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3\n",
            "vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 4\n",
            "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.2\n",
            "vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.6\n",
        ));
        let m = &s.models["m"];
        assert_eq!(m.gauge(GaugeSignal::QueueDepth), Some(7.0));
        assert!((m.gauge(GaugeSignal::KvCacheUsage).unwrap() - 0.4).abs() < 1e-12);
        assert_eq!(m.kv_cache_usage_max(), Some(0.6));
        assert_eq!(s.engine, Some(Engine::Vllm));
    }

    #[test]
    fn new_name_wins_over_deprecated_regardless_of_order() {
        let s = snap(concat!(
            "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.9\n",
            "vllm:kv_cache_usage_perc{model_name=\"m\"} 0.3\n",
            "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.9\n",
        ));
        assert_eq!(s.models["m"].gauge(GaugeSignal::KvCacheUsage), Some(0.3));
    }

    #[test]
    fn truncated_histogram_is_marked_incomplete_not_zero() {
        let s = snap("vllm:time_to_first_token_seconds_bucket{le=\"0.1\",model_name=\"m\"} 2\n");
        let m = &s.models["m"];
        assert!(m.histogram(HistogramSignal::TimeToFirstToken).is_none());
        assert!(m.histogram_incomplete(HistogramSignal::TimeToFirstToken));
    }

    #[test]
    fn cache_config_without_model_label_gives_pod_capacity() {
        let s = snap("vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"100\"} 1.0\n");
        assert_eq!(s.kv_capacity_tokens, Some(1600.0));
    }

    fn snap_with(body: &str, limits: SnapshotLimits) -> EngineSnapshot {
        EngineSnapshot::from_exposition_with(
            body,
            Format::Prometheus,
            0.0,
            &RouteIndex::engines(),
            &limits,
        )
    }

    fn kinds(s: &EngineSnapshot) -> Vec<(&'static str, usize)> {
        DropKind::ALL
            .iter()
            .map(|&k| (k.as_str(), s.dropped.get(k)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    #[test]
    fn models_over_the_cap_are_skipped_and_counted_the_first_ones_kept() {
        let body: String = (0..5)
            .map(|i| format!("vllm:num_requests_waiting{{model_name=\"m{i}\"}} {i}\n"))
            .collect();
        let limits = SnapshotLimits {
            max_models: 3,
            ..SnapshotLimits::default()
        };
        let s = snap_with(&body, limits);
        assert_eq!(s.models.keys().collect::<Vec<_>>(), ["m0", "m1", "m2"]);
        assert_eq!(kinds(&s), [("model_limit", 2)]);
        // A known model's later samples still count.
        let body = format!("{body}vllm:num_requests_running{{model_name=\"m1\"}} 7\n");
        let s = snap_with(&body, limits);
        assert_eq!(s.models["m1"].gauge(GaugeSignal::Running), Some(7.0));
    }

    #[test]
    fn series_over_the_cap_are_skipped_and_counted() {
        let body: String = (0..10)
            .map(|i| format!("vllm:num_requests_waiting{{engine=\"{i}\",model_name=\"m\"}} 1\n"))
            .collect();
        let s = snap_with(
            &body,
            SnapshotLimits {
                max_series: 4,
                ..SnapshotLimits::default()
            },
        );
        assert_eq!(s.models["m"].gauge(GaugeSignal::QueueDepth), Some(4.0));
        assert_eq!(kinds(&s), [("series_limit", 6)]);
    }

    #[test]
    fn dropped_samples_do_not_hold_series_slots() {
        // 3 samples of models over the cap, then the pod's own model: still within 2 series.
        let body = concat!(
            "vllm:num_requests_waiting{model_name=\"a\"} 1\n",
            "vllm:num_requests_waiting{model_name=\"b\"} 1\n",
            "vllm:num_requests_waiting{model_name=\"c\"} 1\n",
            "vllm:num_requests_running{model_name=\"a\"} 5\n",
        );
        let s = snap_with(
            body,
            SnapshotLimits {
                max_models: 1,
                max_series: 2,
                ..SnapshotLimits::default()
            },
        );
        assert_eq!(s.models["a"].gauge(GaugeSignal::Running), Some(5.0));
        assert_eq!(kinds(&s), [("model_limit", 2)]);
    }

    #[test]
    fn duplicate_series_keep_the_first_value() {
        let s = snap(concat!(
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3\n",
            "vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 1\n",
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 300\n",
        ));
        assert_eq!(s.models["m"].gauge(GaugeSignal::QueueDepth), Some(4.0));
        assert_eq!(kinds(&s), [("duplicate_series", 1)]);
    }

    #[test]
    fn non_finite_gauges_and_counters_are_not_values() {
        let s = snap(concat!(
            "vllm:num_requests_waiting{model_name=\"m\"} NaN\n",
            "vllm:num_requests_running{model_name=\"m\"} +Inf\n",
            "vllm:kv_cache_usage_perc{model_name=\"m\"} 0.5\n",
            "vllm:prompt_tokens_total{model_name=\"m\"} -Inf\n",
            "process_start_time_seconds NaN\n",
        ));
        let m = &s.models["m"];
        assert_eq!(m.gauge(GaugeSignal::QueueDepth), None);
        assert_eq!(m.gauge(GaugeSignal::Running), None);
        assert_eq!(m.gauge(GaugeSignal::KvCacheUsage), Some(0.5));
        assert_eq!(m.counter(CounterSignal::PromptTokens), None);
        assert_eq!(s.process_start, None);
        assert_eq!(kinds(&s), [("non_finite_value", 4)]);
    }

    fn ttft(buckets: &[(&str, &str)]) -> String {
        buckets
            .iter()
            .map(|(le, n)| {
                format!(
                    "vllm:time_to_first_token_seconds_bucket{{le=\"{le}\",model_name=\"m\"}} {n}\n"
                )
            })
            .collect::<String>()
            + "vllm:num_requests_waiting{model_name=\"m\"} 2\n"
    }

    #[test]
    fn unusable_histograms_are_dropped_counted_and_marked_the_rest_kept() {
        let cases: [(&[(&str, &str)], &str); 4] = [
            (
                &[("0.1", "5"), ("0.5", "3"), ("+Inf", "6")],
                "non_monotone_buckets",
            ),
            (&[("0.1", "NaN"), ("+Inf", "6")], "invalid_bucket_count"),
            (&[("0.1", "-1"), ("+Inf", "6")], "invalid_bucket_count"),
            (&[("0.1", "1"), ("0.5", "2")], "missing_inf_bucket"),
        ];
        for (buckets, kind) in cases {
            let s = snap(&ttft(buckets));
            let m = &s.models["m"];
            assert!(
                m.histogram(HistogramSignal::TimeToFirstToken).is_none(),
                "{kind}"
            );
            assert!(
                m.histogram_incomplete(HistogramSignal::TimeToFirstToken),
                "{kind}"
            );
            assert_eq!(m.gauge(GaugeSignal::QueueDepth), Some(2.0), "{kind}");
            assert_eq!(kinds(&s), [(kind, 1)]);
            assert!(DropKind::ALL
                .iter()
                .any(|k| k.as_str() == kind && k.counts_histograms()));
        }
    }

    #[test]
    fn too_many_bucket_bounds_drop_the_histogram() {
        let buckets: Vec<(String, String)> = (1..=10)
            .map(|i| (format!("{i}"), format!("{i}")))
            .chain([("+Inf".to_owned(), "10".to_owned())])
            .collect();
        let refs: Vec<(&str, &str)> = buckets
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let body = ttft(&refs);
        let limits = SnapshotLimits {
            max_bucket_bounds: 5,
            ..SnapshotLimits::default()
        };
        let s = snap_with(&body, limits);
        assert!(s.models["m"].histogram_incomplete(HistogramSignal::TimeToFirstToken));
        assert_eq!(kinds(&s), [("too_many_buckets", 1)]);
        let s = snap_with(&body, SnapshotLimits::default());
        assert!(s.models["m"]
            .histogram(HistogramSignal::TimeToFirstToken)
            .is_some());
        assert_eq!(s.dropped.total(), 0);
    }

    #[test]
    fn buckets_without_a_numeric_le_are_counted_and_ignored() {
        let body = ttft(&[("0.1", "1"), ("NaN", "1"), ("x", "1"), ("+Inf", "2")])
            + "vllm:time_to_first_token_seconds_bucket{model_name=\"m\"} 9\n";
        let s = snap(&body);
        let h = s.models["m"]
            .histogram(HistogramSignal::TimeToFirstToken)
            .unwrap();
        assert_eq!(h.count(), 2.0);
        assert_eq!(h.upper_bounds(), &[0.1, f64::INFINITY]);
        assert_eq!(kinds(&s), [("invalid_bucket_bound", 3)]);
    }

    #[test]
    fn long_model_names_are_refused() {
        let long = "x".repeat(2000);
        let body = format!(
            "vllm:num_requests_waiting{{model_name=\"{long}\"}} 1\nvllm:num_requests_waiting{{model_name=\"ok\"}} 1\n"
        );
        let s = snap(&body);
        assert_eq!(s.models.keys().collect::<Vec<_>>(), ["ok"]);
        assert_eq!(kinds(&s), [("model_name_too_long", 1)]);
    }

    #[test]
    fn drop_kind_names_are_unique_and_indexed_in_order() {
        for (i, kind) in DropKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
        let mut names: Vec<_> = DropKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropKind::ALL.len());
    }
}
