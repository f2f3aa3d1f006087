//! One scrape of one serving pod, reduced to the numbers the signals need.
//!
//! Owns: reading a `/metrics` body through the profile tables into an [`EngineSnapshot`]
//! (per `model_name`: gauges, counters, latency histograms; per pod: KV capacity and process
//! start). Data-parallel engines of one server (vLLM's `engine` label) are combined here:
//! queue and running are summed, KV usage is averaged (its maximum is kept too), counters and
//! histogram buckets are summed.
//! Does not own: anything that needs two scrapes (see [`crate::signals`]).

use crate::histogram::{Histogram, HistogramError};
use crate::parser::{parse_float, Format, NameFilter, ParseStats, Parser, Record, Sample};
use crate::profile::{
    CounterSignal, Engine, GaugeSignal, HistogramSignal, Route, RouteIndex, SamplePart, Signal,
};
use serde::Serialize;
use std::cell::Cell;
use std::collections::BTreeMap;

/// Model key used for series that carry no model label (TGI, V0 `cache_config_info`).
pub const UNLABELLED_MODEL: &str = "";

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
    /// Histograms that were exposed but unusable (no `+Inf` bucket, e.g. a truncated body).
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
    /// KV-cache capacity in tokens: `num_gpu_blocks` × `block_size` summed over engines.
    pub kv_capacity_tokens: Option<f64>,
    /// `process_start_time_seconds`, when exposed.
    pub process_start: Option<f64>,
    /// What the parser counted (skipped lines and why).
    #[serde(skip)]
    pub parse_stats: ParseStats,
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

    /// Reads a body with the engine profiles. Never fails: malformed lines are counted in
    /// [`EngineSnapshot::parse_stats`], and what could be read is kept.
    pub fn from_exposition(
        body: &str,
        format: Format,
        taken_at: f64,
        routes: &RouteIndex,
    ) -> EngineSnapshot {
        let filter = RoutingFilter {
            index: routes,
            last_routes: Cell::new(&[]),
        };
        let mut parser = Parser::with_filter(body, format, &filter);
        let mut builder = Builder::default();
        for record in parser.by_ref() {
            if let Record::Sample(sample) = record {
                // The parser returns a sample right after the filter accepted its name, so
                // the routes the filter found are this sample's.
                debug_assert!(std::ptr::eq(
                    filter.last_routes.get(),
                    routes.lookup(sample.name)
                ));
                for route in filter.last_routes.get() {
                    builder.add(route, &sample);
                }
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
}

#[derive(Debug, Default)]
struct ModelParts {
    gauges: [Option<Ranked>; 3],
    counters: [Option<Ranked>; 4],
    finished_by_reason: BTreeMap<String, f64>,
    histograms: [Option<HistogramParts>; 4],
    series_created: Option<f64>,
}

#[derive(Debug, Default)]
struct Builder {
    engine: Option<Engine>,
    models: BTreeMap<String, ModelParts>,
    kv_capacity_tokens: Option<f64>,
    process_start: Option<f64>,
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

impl Builder {
    fn add(&mut self, route: &Route, sample: &Sample<'_>) {
        let value = sample.value;
        match route.mapping.signal {
            Signal::ProcessStart => {
                self.process_start = Some(value);
                return;
            }
            Signal::CacheConfig => {
                let [blocks, block_size] = sample
                    .labels_named(["num_gpu_blocks", "block_size"])
                    .map(|v| v.and_then(|v| parse_float(&v)));
                if let (Some(blocks), Some(size)) = (blocks, block_size) {
                    self.kv_capacity_tokens =
                        Some(self.kv_capacity_tokens.unwrap_or(0.0) + blocks * size);
                }
                self.engine.get_or_insert(route.profile.engine);
                return;
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
        let parts = match self.models.get_mut(model.as_ref()) {
            Some(parts) => parts,
            None => self.models.entry(model.into_owned()).or_default(),
        };
        if route.part == SamplePart::Created {
            parts.series_created = min_option(parts.series_created, Some(value));
            return;
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
                    Some(existing) if existing.rank < rank => return,
                    Some(existing) if existing.rank == rank => {}
                    _ => {
                        *slot = Some(HistogramParts {
                            rank,
                            ..HistogramParts::default()
                        })
                    }
                }
                let Some(hist) = slot.as_mut() else { return };
                match route.part {
                    SamplePart::Bucket => {
                        let Some(le) = le.and_then(|v| parse_float(&v)) else {
                            return;
                        };
                        // Shards of one server share bounds: add counts per bound.
                        match hist.buckets.iter_mut().find(|(bound, _)| *bound == le) {
                            Some((_, count)) => *count += value,
                            None => hist.buckets.push((le, value)),
                        }
                    }
                    SamplePart::Sum => hist.sum += value,
                    // `_count` equals the +Inf bucket; the buckets are authoritative.
                    SamplePart::Count | SamplePart::Value | SamplePart::Created => {}
                }
            }
            Signal::CacheConfig | Signal::ProcessStart => {}
        }
    }

    fn finish(self, taken_at: f64, parse_stats: ParseStats) -> EngineSnapshot {
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
                match Histogram::from_buckets(parts.buckets, parts.sum) {
                    Ok(h) => model.histograms[i] = Some(h),
                    Err(HistogramError::MissingInfBucket | HistogramError::InvalidBound) => {
                        model.incomplete_histograms[i] = true
                    }
                    Err(HistogramError::CounterReset) => {}
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
}
