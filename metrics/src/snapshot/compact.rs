//! The form a pod's older scrapes are kept in: an [`EngineSnapshot`] without its per-scrape
//! statistics, packed for a window of thousands of pods.
//!
//! Owns: [`CompactScrape`], lossless for everything the signals read (every gauge, counter,
//! finished reason, histogram, `_created` time, KV shard count and capacity, process start,
//! engine), so [`CompactScrape::to_snapshot`] gives back the snapshot the signals would have
//! seen. What makes it small: one slice of models instead of a `BTreeMap` (whose leaf node
//! reserves room for eleven entries, ≈ 4.6 KB for a single-model pod); bucket bounds shared
//! as `Arc<[f64]>` — with the previous scrape of the same pod, else through a process-wide
//! table, so a fleet of one engine version holds each bound list once; model names and
//! finished reasons shared with the previous scrape of the pod; cumulative counts as `u32`
//! when they are whole numbers (they are, from every real exporter). Only the counts and
//! `_sum` of each histogram are the scrape's own.
//! Does not own: which scrapes to keep (see [`crate::signals::ScrapeHistory`]).

use super::{EngineSnapshot, ModelSnapshot};
use crate::histogram::Histogram;
use crate::profile::Engine;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::sync::{Arc, Mutex, OnceLock};

/// One scrape of one pod in compact form.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactScrape {
    /// When the scrape completed, seconds.
    pub taken_at: f64,
    engine: Option<Engine>,
    kv_capacity_tokens: Option<f64>,
    process_start: Option<f64>,
    /// In the order of [`EngineSnapshot::models`] (sorted by name).
    models: Box<[CompactModel]>,
}

#[derive(Debug, Clone, PartialEq)]
struct CompactModel {
    name: Arc<str>,
    /// The snapshot's `kv_shards` entry for this model, when it has one.
    kv_shards: Option<usize>,
    gauges: [Option<f64>; 3],
    kv_cache_usage_max: Option<f64>,
    counters: [Option<f64>; 4],
    series_created: Option<f64>,
    incomplete_histograms: [bool; 4],
    finished_by_reason: Box<[(Arc<str>, f64)]>,
    histograms: [Option<CompactHistogram>; 4],
}

#[derive(Debug, Clone, PartialEq)]
struct CompactHistogram {
    /// Shared with every other histogram of the same bounds (see [`intern_bounds`]).
    bounds: Arc<[f64]>,
    cumulative: Counts,
    sum: f64,
}

/// Cumulative bucket counts. Every real exporter counts whole observations, so they almost
/// always fit a `u32` exactly, in half the bytes; anything else is kept as it came.
#[derive(Debug, Clone, PartialEq)]
enum Counts {
    Whole(Box<[u32]>),
    Any(Box<[f64]>),
}

impl Counts {
    fn new(counts: &[f64]) -> Counts {
        // `is_sign_positive` leaves out -0 (which would come back as 0) and negative counts;
        // the comparison leaves out NaN.
        let whole = |c: f64| c.is_sign_positive() && c <= f64::from(u32::MAX) && c.fract() == 0.0;
        if counts.iter().all(|&c| whole(c)) {
            Counts::Whole(counts.iter().map(|&c| c as u32).collect())
        } else {
            Counts::Any(counts.into())
        }
    }

    fn to_vec(&self) -> Vec<f64> {
        match self {
            Counts::Whole(counts) => counts.iter().map(|&c| f64::from(c)).collect(),
            Counts::Any(counts) => counts.to_vec(),
        }
    }
}

impl CompactScrape {
    /// Packs `snapshot`; `previous` (the pod's scrape before it, when kept) lends its model
    /// names, reasons and bound lists where they are equal, so most scrapes allocate only
    /// their counts.
    pub fn new(snapshot: &EngineSnapshot, previous: Option<&CompactScrape>) -> CompactScrape {
        let models = snapshot
            .models
            .iter()
            .enumerate()
            .map(|(i, (name, model))| {
                // Models rarely change between scrapes: the same position is the first guess.
                let before = previous.and_then(|p| {
                    p.models
                        .get(i)
                        .filter(|m| *m.name == **name)
                        .or_else(|| p.models.iter().find(|m| *m.name == **name))
                });
                CompactModel::new(name, model, snapshot.kv_shards.get(name).copied(), before)
            })
            .collect();
        CompactScrape {
            taken_at: snapshot.taken_at,
            engine: snapshot.engine,
            kv_capacity_tokens: snapshot.kv_capacity_tokens,
            process_start: snapshot.process_start,
            models,
        }
    }

    /// The snapshot this was packed from, without its parse and drop statistics (which no
    /// signal reads).
    pub fn to_snapshot(&self) -> EngineSnapshot {
        let mut kv_shards = BTreeMap::new();
        let models = self
            .models
            .iter()
            .map(|m| {
                if let Some(shards) = m.kv_shards {
                    kv_shards.insert(m.name.to_string(), shards);
                }
                (m.name.to_string(), m.to_model())
            })
            .collect();
        EngineSnapshot {
            taken_at: self.taken_at,
            engine: self.engine,
            models,
            kv_shards,
            kv_capacity_tokens: self.kv_capacity_tokens,
            process_start: self.process_start,
            ..EngineSnapshot::default()
        }
    }
}

impl CompactModel {
    fn new(
        name: &str,
        model: &ModelSnapshot,
        kv_shards: Option<usize>,
        before: Option<&CompactModel>,
    ) -> CompactModel {
        let name = before.map_or_else(|| Arc::from(name), |b| b.name.clone());
        let finished_by_reason = model
            .finished_by_reason
            .iter()
            .map(|(reason, &value)| {
                let shared = before.and_then(|b| {
                    b.finished_by_reason
                        .iter()
                        .find(|(r, _)| **r == **reason)
                        .map(|(r, _)| r.clone())
                });
                (shared.unwrap_or_else(|| Arc::from(reason.as_str())), value)
            })
            .collect();
        let histograms = std::array::from_fn(|i| {
            model.histograms[i].as_ref().map(|h| {
                let bounds = h.upper_bounds();
                let shared = before
                    .and_then(|b| b.histograms[i].as_ref())
                    .filter(|b| same_bounds(&b.bounds, bounds))
                    .map(|b| b.bounds.clone());
                CompactHistogram {
                    bounds: shared.unwrap_or_else(|| intern_bounds(bounds)),
                    cumulative: Counts::new(h.cumulative_counts()),
                    sum: h.sum,
                }
            })
        });
        CompactModel {
            name,
            kv_shards,
            gauges: model.gauges,
            kv_cache_usage_max: model.kv_cache_usage_max,
            counters: model.counters,
            series_created: model.series_created,
            incomplete_histograms: model.incomplete_histograms,
            finished_by_reason,
            histograms,
        }
    }

    fn to_model(&self) -> ModelSnapshot {
        ModelSnapshot {
            gauges: self.gauges,
            kv_cache_usage_max: self.kv_cache_usage_max,
            counters: self.counters,
            finished_by_reason: self
                .finished_by_reason
                .iter()
                .map(|(reason, value)| (reason.to_string(), *value))
                .collect(),
            histograms: std::array::from_fn(|i| {
                self.histograms[i]
                    .as_ref()
                    .map(|h| Histogram::from_parts(h.bounds.to_vec(), h.cumulative.to_vec(), h.sum))
            }),
            incomplete_histograms: self.incomplete_histograms,
            series_created: self.series_created,
        }
    }
}

/// Bit-for-bit equality: what is shared must give back exactly the bounds it replaced.
fn same_bounds(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The process-wide bound lists, by a hash of their bits. Bounded by what is in use: when it
/// has grown to twice its size after the last sweep, lists no kept scrape shares any more are
/// dropped (a pod sending new bounds at every scrape cannot grow it without limit).
#[derive(Debug, Default)]
struct BoundsTable {
    by_hash: HashMap<u64, Vec<Arc<[f64]>>>,
    lists: usize,
    sweep_at: usize,
}

/// Lists the table may hold before its first sweep.
const FIRST_SWEEP_AT: usize = 64;

fn bounds_table() -> &'static Mutex<BoundsTable> {
    static TABLE: OnceLock<Mutex<BoundsTable>> = OnceLock::new();
    TABLE.get_or_init(|| {
        Mutex::new(BoundsTable {
            sweep_at: FIRST_SWEEP_AT,
            ..BoundsTable::default()
        })
    })
}

/// The shared copy of `bounds`, added to the table if new.
fn intern_bounds(bounds: &[f64]) -> Arc<[f64]> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for bound in bounds {
        hasher.write_u64(bound.to_bits());
    }
    let hash = hasher.finish();
    // A poisoned table still holds valid lists (every change is a push or a retain).
    let mut table = bounds_table().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = table
        .by_hash
        .get(&hash)
        .and_then(|lists| lists.iter().find(|l| same_bounds(l, bounds)))
    {
        return found.clone();
    }
    if table.lists >= table.sweep_at {
        // Only the table holds these: no kept scrape uses them.
        table.by_hash.retain(|_, lists| {
            lists.retain(|l| Arc::strong_count(l) > 1);
            !lists.is_empty()
        });
        table.lists = table.by_hash.values().map(Vec::len).sum();
        table.sweep_at = (table.lists * 2).max(FIRST_SWEEP_AT);
    }
    let shared: Arc<[f64]> = Arc::from(bounds);
    table.by_hash.entry(hash).or_default().push(shared.clone());
    table.lists += 1;
    shared
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::Format;
    use crate::profile::{GaugeSignal, HistogramSignal, RouteIndex};

    /// Two models, one on two data-parallel engines; finished reasons, `_created`, a complete
    /// and an incomplete histogram, process start and KV capacity.
    fn body(ttft_fast: u32, stops: u32) -> String {
        let mut b = String::from(concat!(
            "process_start_time_seconds 1700000000.5\n",
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"a\"} 3\n",
            "vllm:num_requests_waiting{engine=\"1\",model_name=\"a\"} 4\n",
            "vllm:num_requests_running{engine=\"0\",model_name=\"a\"} 1\n",
            "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"a\"} 0.2\n",
            "vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"a\"} 0.6\n",
            "vllm:kv_cache_usage_perc{model_name=\"b\"} 0.5\n",
            "vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"1000\"} 1\n",
            "vllm:request_success_total{finished_reason=\"length\",model_name=\"a\"} 2\n",
            "vllm:prompt_tokens_total{model_name=\"a\"} 1234\n",
            "vllm:prompt_tokens_created{model_name=\"a\"} 1699999999.25\n",
            "vllm:e2e_request_latency_seconds_bucket{le=\"1.0\",model_name=\"b\"} 1\n",
        ));
        b.push_str(&format!(
            "vllm:request_success_total{{finished_reason=\"stop\",model_name=\"a\"}} {stops}\n"
        ));
        for (le, count) in [
            ("0.1", ttft_fast),
            ("0.5", ttft_fast + 2),
            ("+Inf", ttft_fast + 3),
        ] {
            for model in ["a", "b"] {
                b.push_str(&format!(
                    "vllm:time_to_first_token_seconds_bucket{{le=\"{le}\",model_name=\"{model}\"}} {count}\n"
                ));
            }
        }
        b.push_str("vllm:time_to_first_token_seconds_sum{model_name=\"a\"} 0.75\n");
        b
    }

    fn snapshot(taken_at: f64, ttft_fast: u32, stops: u32) -> EngineSnapshot {
        EngineSnapshot::from_exposition(
            &body(ttft_fast, stops),
            Format::Prometheus,
            taken_at,
            &RouteIndex::engines(),
        )
    }

    /// The snapshot as packing keeps it: everything but the statistics.
    fn without_stats(mut s: EngineSnapshot) -> EngineSnapshot {
        s.parse_stats = Default::default();
        s.dropped = Default::default();
        s
    }

    #[test]
    fn packing_keeps_everything_the_signals_read() {
        let s = snapshot(100.0, 5, 7);
        // The body exercises what packing must keep (checked, so the roundtrip is not vacuous).
        let a = &s.models["a"];
        assert_eq!(s.kv_shards.get("a"), Some(&2));
        assert_eq!(a.gauge(GaugeSignal::QueueDepth), Some(7.0));
        assert_eq!(a.kv_cache_usage_max(), Some(0.6));
        assert_eq!(a.finished_by_reason.len(), 2);
        assert!(a.series_created.is_some());
        assert!(a.histogram(HistogramSignal::TimeToFirstToken).is_some());
        assert!(s.models["b"].histogram_incomplete(HistogramSignal::EndToEndLatency));
        assert!(s.process_start.is_some() && s.kv_capacity_tokens.is_some());

        let packed = CompactScrape::new(&s, None);
        assert_eq!(packed.to_snapshot(), without_stats(s.clone()));
        // Lent parts from an earlier scrape change nothing in what comes back.
        let next = snapshot(105.0, 9, 8);
        let packed_next = CompactScrape::new(&next, Some(&packed));
        assert_eq!(packed_next.to_snapshot(), without_stats(next));
        // A hand-built snapshot (no KV shards recorded) comes back as it was too.
        let mut hand = EngineSnapshot::new(1.0, Engine::Sglang);
        hand.model_mut("x")
            .set_gauge(GaugeSignal::KvCacheUsage, 0.3);
        hand.model_mut("y").set_histogram(
            HistogramSignal::QueueTime,
            Histogram::empty(&[-0.0, 1e-9, 3.5]),
        );
        assert_eq!(CompactScrape::new(&hand, Some(&packed)).to_snapshot(), hand);
        // Counts that are not whole numbers below 2³² are kept as they came.
        for odd in [[0.5, 2.0], [1.0, 5e9], [-0.0, 0.0]] {
            let h =
                Histogram::from_buckets(vec![(1.0, odd[0]), (f64::INFINITY, odd[1])], 1.5).unwrap();
            let mut s = EngineSnapshot::new(2.0, Engine::Vllm);
            s.model_mut("m")
                .set_histogram(HistogramSignal::QueueTime, h);
            let packed = CompactScrape::new(&s, None);
            let counts = &packed.models[0].histograms[HistogramSignal::QueueTime as usize]
                .as_ref()
                .unwrap()
                .cumulative;
            assert!(matches!(counts, Counts::Any(_)), "{odd:?}");
            let back = packed.to_snapshot();
            let back_counts = back.models["m"]
                .histogram(HistogramSignal::QueueTime)
                .unwrap()
                .cumulative_counts();
            assert_eq!(back_counts[0].to_bits(), odd[0].to_bits());
            assert_eq!(back, s);
        }
        // Counts of whole observations are packed as `u32`.
        let ttft = &packed_next.models[0].histograms[HistogramSignal::TimeToFirstToken as usize];
        assert!(matches!(
            ttft.as_ref().map(|h| &h.cumulative),
            Some(Counts::Whole(_))
        ));
    }

    #[test]
    fn bounds_names_and_reasons_are_shared_not_copied() {
        let first = CompactScrape::new(&snapshot(100.0, 5, 7), None);
        let second = CompactScrape::new(&snapshot(105.0, 9, 8), Some(&first));
        let ttft = HistogramSignal::TimeToFirstToken as usize;
        let bounds = |p: &CompactScrape, m: usize| {
            p.models[m].histograms[ttft]
                .as_ref()
                .map(|h| h.bounds.clone())
                .unwrap()
        };
        // With the pod's previous scrape.
        assert!(Arc::ptr_eq(&bounds(&first, 0), &bounds(&second, 0)));
        assert!(Arc::ptr_eq(&first.models[0].name, &second.models[0].name));
        assert!(Arc::ptr_eq(
            &first.models[0].finished_by_reason[0].0,
            &second.models[0].finished_by_reason[0].0
        ));
        // Across models and across pods (no previous scrape): through the table.
        assert!(Arc::ptr_eq(&bounds(&first, 0), &bounds(&first, 1)));
        let other_pod = CompactScrape::new(&snapshot(100.0, 1, 1), None);
        assert!(Arc::ptr_eq(&bounds(&first, 0), &bounds(&other_pod, 0)));
        // Equal as numbers is not enough: -0 and 0 are different bounds to give back.
        assert!(!same_bounds(&[0.0, f64::INFINITY], &[-0.0, f64::INFINITY]));
    }

    #[test]
    fn the_bounds_table_forgets_lists_no_scrape_uses() {
        let kept: Vec<Arc<[f64]>> = (0..10)
            .map(|i| intern_bounds(&[1e6 + i as f64, f64::INFINITY]))
            .collect();
        // A pod sending new bounds at every scrape: each list is dropped right away.
        for i in 0..10_000 {
            drop(intern_bounds(&[2e6 + i as f64, f64::INFINITY]));
        }
        let table = bounds_table().lock().unwrap();
        // Other tests intern a few lists meanwhile; the table stays near what is in use.
        assert!(table.lists <= 4 * FIRST_SWEEP_AT, "{} lists", table.lists);
        drop(table);
        for (i, list) in kept.iter().enumerate() {
            assert!(Arc::ptr_eq(
                list,
                &intern_bounds(&[1e6 + i as f64, f64::INFINITY])
            ));
        }
    }
}
