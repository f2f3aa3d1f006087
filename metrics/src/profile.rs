//! Engine profiles: which wire metric feeds which signal, as data.
//!
//! Owns: the mapping tables for vLLM (V0 and V1, with the renames), SGLang, TGI and NVIDIA
//! dcgm-exporter, and the name index the parser's filter uses. Adding an engine or a rename
//! is a row in a table, not new code.
//! Does not own: reading samples (see [`crate::snapshot`]) or window arithmetic.
//!
//! Sources: vLLM `vllm/v1/metrics/loggers.py` and `vllm/engine/metrics.py` 0.3–0.33 (as
//! summarised in the fixtures' METRICS-REFERENCE); SGLang's `production_metrics.md` samples of
//! 0.3.5, 0.4.0 and 0.4.3 and a real 0.5.x scrape (names and HELP texts as exposed); TGI's
//! `docs/source/reference/metrics.md` and a real 3.x scrape (the fixtures' `tgi/METRICS.md`);
//! dcgm-exporter 4.5.3-4.8.2 `etc/default-counters.csv` plus `1.x-compatibility-metrics.csv`.
//! The SGLang and TGI rows are checked against those real scrapes by golden tests
//! (`metrics/tests/engines.rs`, `tests/golden/test_engines_match_reference.py`).

use rustc_hash::FxHashMap;
use serde::Serialize;

/// Serving engines we know how to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// vLLM, V0 and V1 engines.
    Vllm,
    /// SGLang.
    Sglang,
    /// Hugging Face Text Generation Inference.
    Tgi,
}

impl Engine {
    /// A short, stable name (`vllm`, `sglang`, `tgi`).
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
            Engine::Tgi => "tgi",
        }
    }
}

/// Point-in-time values of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GaugeSignal {
    /// Requests waiting to be scheduled (summed over data-parallel engines).
    QueueDepth,
    /// Requests in the running batch (summed over data-parallel engines).
    Running,
    /// Fraction 0–1 of KV-cache blocks in use (mean over data-parallel engines).
    KvCacheUsage,
}

impl GaugeSignal {
    /// Every gauge signal.
    pub const ALL: [GaugeSignal; 3] = [
        GaugeSignal::QueueDepth,
        GaugeSignal::Running,
        GaugeSignal::KvCacheUsage,
    ];
}

/// Monotonic counters of one replica; signals are their rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterSignal {
    /// Preempted requests (their KV cache was evicted).
    Preemptions,
    /// Prompt (prefill) tokens processed.
    PromptTokens,
    /// Tokens generated.
    GenerationTokens,
    /// Finished requests; split by the profile's reason label.
    RequestsFinished,
}

impl CounterSignal {
    /// Every counter signal.
    pub const ALL: [CounterSignal; 4] = [
        CounterSignal::Preemptions,
        CounterSignal::PromptTokens,
        CounterSignal::GenerationTokens,
        CounterSignal::RequestsFinished,
    ];
}

/// Latency histograms of one replica (all in seconds on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HistogramSignal {
    /// Time from arrival to the first generated token.
    TimeToFirstToken,
    /// Time between two generated tokens of a request.
    InterTokenLatency,
    /// Time from arrival to the last token.
    EndToEndLatency,
    /// Time waiting before the first schedule.
    QueueTime,
}

impl HistogramSignal {
    /// Every histogram signal.
    pub const ALL: [HistogramSignal; 4] = [
        HistogramSignal::TimeToFirstToken,
        HistogramSignal::InterTokenLatency,
        HistogramSignal::EndToEndLatency,
        HistogramSignal::QueueTime,
    ];
}

/// What a wire metric feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// An instantaneous value.
    Gauge(GaugeSignal),
    /// A monotonic counter.
    Counter(CounterSignal),
    /// A latency histogram.
    Histogram(HistogramSignal),
    /// `vllm:cache_config_info`: KV capacity carried in the `num_gpu_blocks` and
    /// `block_size` labels.
    CacheConfig,
    /// A gauge whose value is the KV-cache capacity in tokens (SGLang's
    /// `max_total_num_tokens`); summed over the series of one pod, like cache config.
    KvCapacityTokens,
    /// `process_start_time_seconds`: a change means the server restarted.
    ProcessStart,
}

/// One row of a profile table.
#[derive(Debug, Clone, Copy)]
pub struct Mapping {
    /// Family name as on the wire. Counters are written with their `_total` sample name;
    /// histograms by their base name (the parser sees `_bucket`, `_sum`, `_count`).
    pub family: &'static str,
    /// What it feeds.
    pub signal: Signal,
    /// When one body has two names for one signal (vLLM 0.9.2–0.11 exposes both
    /// `kv_cache_usage_perc` and the deprecated `gpu_cache_usage_perc`), the lower rank wins.
    pub rank: u8,
    /// Versions that expose this name, and how the row reads it when that is not obvious
    /// (documentation).
    pub versions: &'static str,
}

/// Everything needed to read one engine's exposition.
#[derive(Debug, Clone, Copy)]
pub struct EngineProfile {
    /// The engine these tables read.
    pub engine: Engine,
    /// Prefix every family of this engine starts with; used to recognise the engine.
    pub prefix: &'static str,
    /// Label that names the served model (absent on some series, e.g. V0 cache config).
    pub model_labels: &'static [&'static str],
    /// Label that splits one server into data-parallel engines whose series are combined.
    pub shard_label: Option<&'static str>,
    /// Label that splits finished requests by reason.
    pub reason_label: Option<&'static str>,
    /// Wire name → signal, one row per name (several names may feed one signal).
    pub mappings: &'static [Mapping],
}

const fn row(family: &'static str, signal: Signal, rank: u8, versions: &'static str) -> Mapping {
    Mapping {
        family,
        signal,
        rank,
        versions,
    }
}

use CounterSignal as C;
use GaugeSignal as G;
use HistogramSignal as H;

/// vLLM, V0 and V1 engines, 0.3 → 0.33.
pub const VLLM: EngineProfile = EngineProfile {
    engine: Engine::Vllm,
    prefix: "vllm:",
    model_labels: &["model_name"],
    shard_label: Some("engine"),
    reason_label: Some("finished_reason"),
    mappings: &[
        row(
            "vllm:num_requests_waiting",
            Signal::Gauge(G::QueueDepth),
            0,
            "all",
        ),
        row(
            "vllm:num_requests_running",
            Signal::Gauge(G::Running),
            0,
            "all",
        ),
        row(
            "vllm:kv_cache_usage_perc",
            Signal::Gauge(G::KvCacheUsage),
            0,
            ">=0.9.2",
        ),
        row(
            "vllm:gpu_cache_usage_perc",
            Signal::Gauge(G::KvCacheUsage),
            1,
            "V0, V1 <0.12 (deprecated 0.9.2)",
        ),
        row(
            "vllm:num_preemptions_total",
            Signal::Counter(C::Preemptions),
            0,
            "V1 >=0.8.0",
        ),
        row(
            "vllm:prompt_tokens_total",
            Signal::Counter(C::PromptTokens),
            0,
            "all",
        ),
        row(
            "vllm:generation_tokens_total",
            Signal::Counter(C::GenerationTokens),
            0,
            "all",
        ),
        row(
            "vllm:request_success_total",
            Signal::Counter(C::RequestsFinished),
            0,
            "all",
        ),
        row(
            "vllm:time_to_first_token_seconds",
            Signal::Histogram(H::TimeToFirstToken),
            0,
            "all",
        ),
        row(
            "vllm:inter_token_latency_seconds",
            Signal::Histogram(H::InterTokenLatency),
            0,
            ">=0.10.2",
        ),
        row(
            "vllm:time_per_output_token_seconds",
            Signal::Histogram(H::InterTokenLatency),
            1,
            "<0.15 (deprecated 0.10.2)",
        ),
        row(
            "vllm:e2e_request_latency_seconds",
            Signal::Histogram(H::EndToEndLatency),
            0,
            "all",
        ),
        row(
            "vllm:request_queue_time_seconds",
            Signal::Histogram(H::QueueTime),
            0,
            ">=0.7.3",
        ),
        row("vllm:cache_config_info", Signal::CacheConfig, 0, ">=0.5.5"),
        row(
            "process_start_time_seconds",
            Signal::ProcessStart,
            0,
            "all (prometheus_client)",
        ),
    ],
};

/// SGLang (`--enable-metrics`), 0.3.5 → 0.5.x. Renames across versions are ranked rows:
/// 0.3.x names series `name=` and counts `num_requests_running|waiting`; 0.4 renamed those
/// `num_running_reqs`/`num_queue_reqs` and `name` to `model_name`; 0.5 adds
/// `inter_token_latency_seconds`, `queue_time_seconds` and `num_requests_total`.
pub const SGLANG: EngineProfile = EngineProfile {
    engine: Engine::Sglang,
    prefix: "sglang:",
    // SGLang 0.3.x labelled series with `name` instead of `model_name`.
    model_labels: &["model_name", "name"],
    shard_label: Some("dp_rank"),
    reason_label: None,
    mappings: &[
        row(
            "sglang:num_queue_reqs",
            Signal::Gauge(G::QueueDepth),
            0,
            ">=0.4",
        ),
        row(
            "sglang:num_requests_waiting",
            Signal::Gauge(G::QueueDepth),
            1,
            "0.3.x",
        ),
        row(
            "sglang:num_running_reqs",
            Signal::Gauge(G::Running),
            0,
            ">=0.4",
        ),
        row(
            "sglang:num_requests_running",
            Signal::Gauge(G::Running),
            1,
            "0.3.x",
        ),
        row(
            "sglang:token_usage",
            Signal::Gauge(G::KvCacheUsage),
            0,
            "all (fraction 0-1 of the KV pool)",
        ),
        row(
            "sglang:max_total_num_tokens",
            Signal::KvCapacityTokens,
            0,
            "0.3.x, >=0.5 (\"Maximum total number of tokens in the KV cache pool\")",
        ),
        row(
            "sglang:prompt_tokens_total",
            Signal::Counter(C::PromptTokens),
            0,
            "all",
        ),
        row(
            "sglang:generation_tokens_total",
            Signal::Counter(C::GenerationTokens),
            0,
            "all",
        ),
        row(
            "sglang:num_requests_total",
            Signal::Counter(C::RequestsFinished),
            0,
            ">=0.5",
        ),
        row(
            "sglang:e2e_request_latency_seconds_count",
            Signal::Counter(C::RequestsFinished),
            1,
            "all; read where num_requests_total is absent (<0.5): every finished request \
             observes one end-to-end latency",
        ),
        row(
            "sglang:time_to_first_token_seconds",
            Signal::Histogram(H::TimeToFirstToken),
            0,
            "all",
        ),
        row(
            "sglang:inter_token_latency_seconds",
            Signal::Histogram(H::InterTokenLatency),
            0,
            ">=0.5",
        ),
        row(
            "sglang:time_per_output_token_seconds",
            Signal::Histogram(H::InterTokenLatency),
            1,
            "<0.5",
        ),
        row(
            "sglang:e2e_request_latency_seconds",
            Signal::Histogram(H::EndToEndLatency),
            0,
            "all",
        ),
        row(
            "sglang:queue_time_seconds",
            Signal::Histogram(H::QueueTime),
            0,
            ">=0.5",
        ),
        row(
            "sglang:waiting_request_latency_seconds",
            Signal::Histogram(H::QueueTime),
            1,
            "0.3.x (absent in 0.4.x)",
        ),
        row(
            "process_start_time_seconds",
            Signal::ProcessStart,
            0,
            "single-process only (SGLang's multiprocess collector drops it)",
        ),
    ],
};

/// Hugging Face text-generation-inference, 2.3 → 3.x (`metrics-exporter-prometheus`: no
/// model label, counters without `_total`, no `_created`, no process start). TGI has no
/// time-to-first-token and no KV-usage metric; those signals are absent for it, never
/// derived. Token counts come from the `_sum` of the per-request token histograms, so they
/// move when a request is validated (input) or finishes (generated), not token by token;
/// finished requests are the successful ones (failures are `tgi_request_failure{err}`); the
/// inter-token latency is the per-request mean time per token.
pub const TGI: EngineProfile = EngineProfile {
    engine: Engine::Tgi,
    prefix: "tgi_",
    model_labels: &[],
    shard_label: None,
    reason_label: None,
    mappings: &[
        row("tgi_queue_size", Signal::Gauge(G::QueueDepth), 0, "all"),
        row(
            "tgi_batch_current_size",
            Signal::Gauge(G::Running),
            0,
            "all",
        ),
        row(
            "tgi_request_input_length_sum",
            Signal::Counter(C::PromptTokens),
            0,
            "all (input tokens of every validated request)",
        ),
        row(
            "tgi_request_generated_tokens_sum",
            Signal::Counter(C::GenerationTokens),
            0,
            "all (generated tokens of every successful request)",
        ),
        row(
            "tgi_request_success",
            Signal::Counter(C::RequestsFinished),
            0,
            "all (successful requests)",
        ),
        row(
            "tgi_request_mean_time_per_token_duration",
            Signal::Histogram(H::InterTokenLatency),
            0,
            "all (per-request mean)",
        ),
        row(
            "tgi_request_duration",
            Signal::Histogram(H::EndToEndLatency),
            0,
            "all",
        ),
        row(
            "tgi_request_queue_duration",
            Signal::Histogram(H::QueueTime),
            0,
            "all",
        ),
    ],
};

/// vLLM ≥ 0.8.4 time-to-first-token bucket bounds, seconds (`+Inf` implied).
pub const VLLM_TTFT_BUCKETS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];

/// vLLM ≥ 0.8.4 inter-token latency bucket bounds, seconds (`+Inf` implied).
pub const VLLM_ITL_BUCKETS: [f64; 19] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];

/// vLLM ≥ 0.8.4 request latency bucket bounds (end-to-end, queue, prefill, decode), seconds.
pub const VLLM_REQUEST_LATENCY_BUCKETS: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// Every serving-engine profile, in detection order.
pub const ENGINE_PROFILES: [&EngineProfile; 3] = [&VLLM, &SGLANG, &TGI];

/// GPU fields read from dcgm-exporter, in base units after scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuField {
    /// Fraction 0–1 of time a kernel ran (`DCGM_FI_DEV_GPU_UTIL`, percent on the wire).
    Utilization,
    /// Fraction 0–1 of time the graphics/compute engine was active (DCP field).
    GraphicsEngineActive,
    /// Fraction 0–1 of SM cycles with at least one warp resident (DCP field).
    SmActive,
    /// Fraction 0–1 of cycles the tensor pipes were active (DCP field).
    TensorActive,
    /// Frame-buffer memory in use, bytes (MiB on the wire).
    MemoryUsedBytes,
    /// Frame-buffer memory free, bytes (MiB on the wire).
    MemoryFreeBytes,
    /// Board power, watts.
    PowerWatts,
    /// GPU temperature, degrees Celsius.
    TemperatureCelsius,
    /// Last XID error code seen (0 = none).
    LastXid,
}

impl GpuField {
    /// Every field, in a fixed order.
    pub const ALL: [GpuField; 9] = [
        GpuField::Utilization,
        GpuField::GraphicsEngineActive,
        GpuField::SmActive,
        GpuField::TensorActive,
        GpuField::MemoryUsedBytes,
        GpuField::MemoryFreeBytes,
        GpuField::PowerWatts,
        GpuField::TemperatureCelsius,
        GpuField::LastXid,
    ];
}

/// One dcgm-exporter field: wire name, what it feeds, and the factor to base units.
#[derive(Debug, Clone, Copy)]
pub struct GpuMapping {
    /// The field name as on the wire (`DCGM_FI_DEV_GPU_UTIL`, ...).
    pub field_name: &'static str,
    /// What it feeds.
    pub field: GpuField,
    /// Factor to base units (1/100 for percent, 2²⁰ for MiB).
    pub scale: f64,
    /// Lower wins when both a current and a 1.x name are present.
    pub rank: u8,
}

const MIB: f64 = 1024.0 * 1024.0;

const fn gpu(field_name: &'static str, field: GpuField, scale: f64, rank: u8) -> GpuMapping {
    GpuMapping {
        field_name,
        field,
        scale,
        rank,
    }
}

/// dcgm-exporter fields, current names first, then the 1.x names of `--use-old-namespace`.
pub const DCGM: &[GpuMapping] = &[
    gpu("DCGM_FI_DEV_GPU_UTIL", GpuField::Utilization, 0.01, 0),
    gpu(
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        GpuField::GraphicsEngineActive,
        1.0,
        0,
    ),
    gpu("DCGM_FI_PROF_SM_ACTIVE", GpuField::SmActive, 1.0, 0),
    gpu(
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        GpuField::TensorActive,
        1.0,
        0,
    ),
    gpu("DCGM_FI_DEV_FB_USED", GpuField::MemoryUsedBytes, MIB, 0),
    gpu("DCGM_FI_DEV_FB_FREE", GpuField::MemoryFreeBytes, MIB, 0),
    gpu("DCGM_FI_DEV_POWER_USAGE", GpuField::PowerWatts, 1.0, 0),
    gpu("DCGM_FI_DEV_GPU_TEMP", GpuField::TemperatureCelsius, 1.0, 0),
    gpu("DCGM_FI_DEV_XID_ERRORS", GpuField::LastXid, 1.0, 0),
    gpu("dcgm_gpu_utilization", GpuField::Utilization, 0.01, 1),
    gpu("dcgm_fb_used", GpuField::MemoryUsedBytes, MIB, 1),
    gpu("dcgm_fb_free", GpuField::MemoryFreeBytes, MIB, 1),
    gpu("dcgm_power_usage", GpuField::PowerWatts, 1.0, 1),
    gpu("dcgm_gpu_temp", GpuField::TemperatureCelsius, 1.0, 1),
    gpu("dcgm_xid_errors", GpuField::LastXid, 1.0, 1),
];

/// Which part of a family a sample name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplePart {
    /// A gauge or counter value, or an info metric.
    Value,
    /// `<family>_bucket`.
    Bucket,
    /// `<family>_sum`.
    Sum,
    /// `<family>_count`.
    Count,
    /// `<family>_created` (V1 vLLM): when the series started counting.
    Created,
}

/// Where a sample name goes: which row of which profile, and which part of it.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The engine's tables.
    pub profile: &'static EngineProfile,
    /// The row of the family.
    pub mapping: &'static Mapping,
    /// Which part of the family the sample is.
    pub part: SamplePart,
}

/// Sample name → [`Route`], built once from the tables; also the parser's name filter.
#[derive(Debug, Clone)]
pub struct RouteIndex {
    routes: FxHashMap<Box<str>, Vec<Route>>,
}

impl RouteIndex {
    /// The index over all engine profiles.
    pub fn engines() -> RouteIndex {
        let mut routes: FxHashMap<Box<str>, Vec<Route>> = FxHashMap::default();
        for profile in ENGINE_PROFILES {
            for mapping in profile.mappings {
                for (name, part) in sample_names(mapping) {
                    routes
                        .entry(name.into_boxed_str())
                        .or_default()
                        .push(Route {
                            profile,
                            mapping,
                            part,
                        });
                }
            }
        }
        RouteIndex { routes }
    }

    /// Routes for one sample name (several when profiles share a name, e.g.
    /// `process_start_time_seconds`).
    #[inline]
    pub fn lookup(&self, sample_name: &str) -> &[Route] {
        self.routes
            .get(sample_name)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Whether any profile reads a sample named `sample_name`.
    #[inline]
    pub fn wants(&self, sample_name: &str) -> bool {
        self.routes.contains_key(sample_name)
    }

    /// Number of distinct sample names the adapter reads.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when no route exists.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// The sample names a mapping's family appears under on the wire.
fn sample_names(mapping: &Mapping) -> Vec<(String, SamplePart)> {
    let family = mapping.family;
    match mapping.signal {
        Signal::Histogram(_) => vec![
            (format!("{family}_bucket"), SamplePart::Bucket),
            (format!("{family}_sum"), SamplePart::Sum),
            (format!("{family}_count"), SamplePart::Count),
            (format!("{family}_created"), SamplePart::Created),
        ],
        // prometheus_client pairs a `_total` counter with a `_created` gauge; counters
        // without the suffix (TGI's, or a histogram's `_sum`/`_count` read as a counter)
        // have none.
        Signal::Counter(_) => match family.strip_suffix("_total") {
            Some(base) => vec![
                (family.to_owned(), SamplePart::Value),
                (format!("{base}_created"), SamplePart::Created),
            ],
            None => vec![(family.to_owned(), SamplePart::Value)],
        },
        _ => vec![(family.to_owned(), SamplePart::Value)],
    }
}

impl crate::parser::NameFilter for &RouteIndex {
    #[inline]
    fn accepts(&self, name: &str) -> bool {
        self.wants(name)
    }

    /// The engine reads sample values only.
    fn wants_descriptors(&self) -> bool {
        false
    }

    /// The index holds names built from the profile tables, all valid (tested).
    fn accepts_only_valid_names(&self) -> bool {
        true
    }
}

/// dcgm field name → mapping.
pub fn gpu_mapping(field_name: &str) -> Option<&'static GpuMapping> {
    DCGM.iter().find(|m| m.field_name == field_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_names_at_most_two_model_labels() {
        // The snapshot builder reads a sample's labels in one walk with two model slots.
        for profile in ENGINE_PROFILES {
            assert!(profile.model_labels.len() <= 2, "{:?}", profile.engine);
        }
    }

    #[test]
    fn every_routed_name_is_a_valid_metric_name() {
        // The parser trusts the index to accept only valid names.
        let index = RouteIndex::engines();
        for name in index.routes.keys() {
            assert!(crate::parser::is_metric_name(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn every_signal_has_a_vllm_row() {
        for g in GaugeSignal::ALL {
            assert!(
                VLLM.mappings.iter().any(|m| m.signal == Signal::Gauge(g)),
                "{g:?}"
            );
        }
        for c in CounterSignal::ALL {
            assert!(
                VLLM.mappings.iter().any(|m| m.signal == Signal::Counter(c)),
                "{c:?}"
            );
        }
        for h in HistogramSignal::ALL {
            assert!(
                VLLM.mappings
                    .iter()
                    .any(|m| m.signal == Signal::Histogram(h)),
                "{h:?}"
            );
        }
    }

    #[test]
    fn renames_rank_new_name_first() {
        let rank = |name: &str| {
            VLLM.mappings
                .iter()
                .find(|m| m.family == name)
                .unwrap()
                .rank
        };
        assert!(rank("vllm:kv_cache_usage_perc") < rank("vllm:gpu_cache_usage_perc"));
        assert!(
            rank("vllm:inter_token_latency_seconds") < rank("vllm:time_per_output_token_seconds")
        );
    }

    #[test]
    fn index_routes_histogram_parts_and_counter_created() {
        let index = RouteIndex::engines();
        let parts = |n: &str| index.lookup(n).iter().map(|r| r.part).collect::<Vec<_>>();
        assert_eq!(
            parts("vllm:time_to_first_token_seconds_bucket"),
            vec![SamplePart::Bucket]
        );
        assert_eq!(
            parts("vllm:time_to_first_token_seconds_count"),
            vec![SamplePart::Count]
        );
        assert_eq!(
            parts("vllm:prompt_tokens_created"),
            vec![SamplePart::Created]
        );
        assert_eq!(
            parts("process_start_time_seconds").len(),
            2,
            "vLLM and SGLang"
        );
        assert!(!index.wants("vllm:iteration_tokens_total_bucket"));
    }

    #[test]
    fn gpu_fields_scale_to_base_units() {
        assert_eq!(gpu_mapping("DCGM_FI_DEV_FB_USED").unwrap().scale, 1048576.0);
        assert_eq!(gpu_mapping("DCGM_FI_DEV_GPU_UTIL").unwrap().scale, 0.01);
        for field in GpuField::ALL {
            assert!(
                DCGM.iter().any(|m| m.field == field && m.rank == 0),
                "{field:?}"
            );
        }
    }
}
