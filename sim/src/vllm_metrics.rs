//! The vLLM V1 `/metrics` body (the renderer; the parser is `inferscale_metrics::parser`),
//! built from plain counters and histograms.
//!
//! Owns: the families a single-engine vLLM 0.18 server prints, in its order, with its HELP
//! texts, sorted label names (`engine`, `finished_reason`, `le`, `model_name`, `sleep_state`,
//! `source`), counters as `_total` each followed by a `_created` gauge family, the
//! pre-created series of every closed label (`finished_reason`, `sleep_state`, `source`),
//! `vllm:cache_config_info` with 0.18's label set, the `process_*` families (read from
//! `/proc` for this process, as prometheus_client reads them), values formatted like Python.
//!
//! Layout followed: vLLM 0.16–0.18 (`../shared/fixtures/vllm/vllm-0.16to0.18-…`), the newest
//! real capture and the only one taken straight from vLLM (the 0.13 capture was re-exposed
//! by Dynamo, which strips the `process_*` families). Against 0.13 it adds
//! `prompt_tokens_by_source|cached|recomputed`, `finished_reason="repetition"` and 0.18's
//! cache-config labels. What is left out, each for a reason (and listed with it in
//! `tests/conformance.rs`): `iteration_tokens_total` (the simulation has no engine step to
//! count tokens of), the opt-in `estimated_*_per_gpu` MFU counters (off by default in vLLM),
//! `python_gc_*`/`python_info` (this is not a Python process) and the
//! prometheus_fastapi_instrumentator `http_*` families (HTTP-server bookkeeping no
//! autoscaler reads).
//! Does not own: when observations happen (see [`crate::engine`]) or HTTP.

use crate::process::ProcessStats;
use crate::pyfloat::go_string;
use inferscale_metrics::profile::{
    VLLM_ITL_BUCKETS, VLLM_REQUEST_LATENCY_BUCKETS, VLLM_TTFT_BUCKETS,
};
use std::fmt::Write;

/// Content type of prometheus_client's text output (what vLLM serves).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `request_params_n` bounds in vLLM.
const N_BUCKETS: [f64; 5] = [1.0, 2.0, 5.0, 10.0, 20.0];

/// Why a request finished, in vLLM's `finished_reason` label order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    Abort,
    Error,
    /// Repetitive output detected (0.18).
    Repetition,
}

impl FinishReason {
    /// The pre-created series, in vLLM's order.
    pub const ALL: [FinishReason; 5] = [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::Abort,
        FinishReason::Error,
        FinishReason::Repetition,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
            FinishReason::Error => "error",
            FinishReason::Repetition => "repetition",
        }
    }
}

/// Where prompt tokens came from (`source` label of `vllm:prompt_tokens_by_source_total`),
/// in vLLM's order. The simulation computes every prompt token locally.
pub const PROMPT_TOKEN_SOURCES: [&str; 3] =
    ["local_compute", "local_cache_hit", "external_kv_transfer"];

/// The engine's sleep state as `vllm:engine_sleep_state` shows it: 1 on exactly one of
/// `awake`, `weights_offloaded` (level 1), `discard_all` (level 2), or on none of them
/// (level 0: scheduling paused, memory kept), as vLLM's `record_sleep_state` sets them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SleepGauge {
    #[default]
    Awake,
    /// `sleep(level)` with level 0, 1 or 2.
    Asleep(u8),
}

impl SleepGauge {
    /// `(sleep_state, value)` pairs in vLLM's order.
    pub fn series(self) -> [(&'static str, f64); 3] {
        let (awake, offloaded, discarded) = match self {
            SleepGauge::Awake => (1.0, 0.0, 0.0),
            SleepGauge::Asleep(1) => (0.0, 1.0, 0.0),
            SleepGauge::Asleep(2) => (0.0, 0.0, 1.0),
            SleepGauge::Asleep(_) => (0.0, 0.0, 0.0),
        };
        [
            ("awake", awake),
            ("weights_offloaded", offloaded),
            ("discard_all", discarded),
        ]
    }
}

/// vLLM's `build_1_2_5_buckets(max_model_len)`: 1, 2, 5, 10, 20, 50, … up to the limit.
pub fn buckets_1_2_5(max_value: u32) -> Vec<f64> {
    let mut bounds = Vec::new();
    let mut exponent = 1.0;
    loop {
        for mantissa in [1.0, 2.0, 5.0] {
            let bound = mantissa * exponent;
            if bound > f64::from(max_value) {
                return bounds;
            }
            bounds.push(bound);
        }
        exponent *= 10.0;
    }
}

/// A cumulative histogram with fixed upper bounds (`+Inf` implied).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Non-cumulative counts per bound; the last slot is the `+Inf` overflow.
    counts: Vec<u64>,
    sum: f64,
    created: f64,
}

impl Histogram {
    pub fn new(bounds: &[f64], created: f64) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            created,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let slot = self.bounds.partition_point(|&bound| bound < value);
        self.counts[slot] += 1;
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// A counter and the time it was created.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counter {
    pub value: f64,
    pub created: f64,
}

impl Counter {
    fn new(created: f64) -> Counter {
        Counter {
            value: 0.0,
            created,
        }
    }
}

/// Static facts about the simulated engine, printed as labels or constants.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineInfo {
    /// Served model name (`model_name` label).
    pub model_name: String,
    pub block_size: u32,
    pub num_gpu_blocks: u32,
    pub max_model_len: u32,
    /// Unix time the process started.
    pub process_start: f64,
}

/// Values that are read at scrape time rather than accumulated.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LiveGauges {
    pub running: f64,
    pub waiting: f64,
    /// Fraction 0–1.
    pub kv_cache_usage: f64,
    pub sleep: SleepGauge,
}

/// Everything vLLM accumulates over the life of the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStats {
    pub preemptions: Counter,
    pub prompt_tokens: Counter,
    /// Indexed like [`PROMPT_TOKEN_SOURCES`].
    pub prompt_tokens_by_source: [Counter; 3],
    pub prompt_tokens_cached: Counter,
    pub prompt_tokens_recomputed: Counter,
    pub generation_tokens: Counter,
    pub prefix_cache_queries: Counter,
    pub prefix_cache_hits: Counter,
    pub external_prefix_cache_queries: Counter,
    pub external_prefix_cache_hits: Counter,
    pub mm_cache_queries: Counter,
    pub mm_cache_hits: Counter,
    /// Indexed like [`FinishReason::ALL`].
    pub request_success: [Counter; 5],
    pub request_prompt_tokens: Histogram,
    pub request_generation_tokens: Histogram,
    pub request_max_num_generation_tokens: Histogram,
    pub request_params_n: Histogram,
    pub request_params_max_tokens: Histogram,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub request_time_per_output_token: Histogram,
    pub e2e_request_latency: Histogram,
    pub request_queue_time: Histogram,
    pub request_inference_time: Histogram,
    pub request_prefill_time: Histogram,
    pub request_decode_time: Histogram,
    pub request_prefill_kv_computed_tokens: Histogram,
}

impl EngineStats {
    /// All series at zero, created at `now` (Unix seconds), token buckets up to
    /// `max_model_len` as vLLM builds them.
    pub fn new(max_model_len: u32, now: f64) -> EngineStats {
        let tokens = buckets_1_2_5(max_model_len);
        let latency = &VLLM_REQUEST_LATENCY_BUCKETS[..];
        EngineStats {
            preemptions: Counter::new(now),
            prompt_tokens: Counter::new(now),
            prompt_tokens_by_source: [Counter::new(now); 3],
            prompt_tokens_cached: Counter::new(now),
            prompt_tokens_recomputed: Counter::new(now),
            generation_tokens: Counter::new(now),
            prefix_cache_queries: Counter::new(now),
            prefix_cache_hits: Counter::new(now),
            external_prefix_cache_queries: Counter::new(now),
            external_prefix_cache_hits: Counter::new(now),
            mm_cache_queries: Counter::new(now),
            mm_cache_hits: Counter::new(now),
            request_success: [Counter::new(now); 5],
            request_prompt_tokens: Histogram::new(&tokens, now),
            request_generation_tokens: Histogram::new(&tokens, now),
            request_max_num_generation_tokens: Histogram::new(&tokens, now),
            request_params_n: Histogram::new(&N_BUCKETS, now),
            request_params_max_tokens: Histogram::new(&tokens, now),
            time_to_first_token: Histogram::new(&VLLM_TTFT_BUCKETS, now),
            inter_token_latency: Histogram::new(&VLLM_ITL_BUCKETS, now),
            request_time_per_output_token: Histogram::new(&VLLM_ITL_BUCKETS, now),
            e2e_request_latency: Histogram::new(latency, now),
            request_queue_time: Histogram::new(latency, now),
            request_inference_time: Histogram::new(latency, now),
            request_prefill_time: Histogram::new(latency, now),
            request_decode_time: Histogram::new(latency, now),
            request_prefill_kv_computed_tokens: Histogram::new(&tokens, now),
        }
    }

    /// Counts `tokens` prompt tokens, all computed locally (no prefix cache, no KV transfer).
    pub fn add_prompt_tokens(&mut self, tokens: f64) {
        self.prompt_tokens.value += tokens;
        self.prompt_tokens_by_source[0].value += tokens;
    }

    /// Counts one finished request.
    pub fn finish(&mut self, reason: FinishReason) {
        let index = FinishReason::ALL
            .iter()
            .position(|&r| r == reason)
            .unwrap_or(0);
        self.request_success[index].value += 1.0;
    }
}

/// Prometheus label-value escaping (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes the text exposition.
struct Writer<'a> {
    out: String,
    /// `engine="0"`: sorts before every label we add (`finished_reason`, `le`).
    engine: &'static str,
    /// Escaped served model name; `model_name` sorts after those labels.
    model: &'a str,
}

impl Writer<'_> {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, extra_before_model: &str, value: f64) {
        self.sample_around(name, extra_before_model, "", value);
    }

    /// A sample with labels that sort before `model_name` (`finished_reason`, `le`) and
    /// after it (`sleep_state`, `source`), each given as `name="value",`.
    fn sample_around(&mut self, name: &str, before_model: &str, after_model: &str, value: f64) {
        let after = after_model.strip_suffix(',').unwrap_or(after_model);
        let comma = if after.is_empty() { "" } else { "," };
        let _ = writeln!(
            self.out,
            "{name}{{{},{before_model}model_name=\"{}\"{comma}{after}}} {}",
            self.engine,
            self.model,
            go_string(value)
        );
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, help, "gauge");
        self.sample(name, "", value);
    }

    fn created(&mut self, base: &str, help: &str, series: &[(&str, f64)]) {
        let name = format!("{base}_created");
        self.header(&name, help, "gauge");
        for (extra, created) in series {
            self.sample(&name, extra, *created);
        }
    }

    fn counter(&mut self, base: &str, help: &str, counter: Counter) {
        let total = format!("{base}_total");
        self.header(&total, help, "counter");
        self.sample(&total, "", counter.value);
        self.created(base, help, &[("", counter.created)]);
    }

    /// A counter with one series per value of a label that sorts after `model_name`.
    fn counter_after_model(
        &mut self,
        base: &str,
        help: &str,
        label: &str,
        series: &[(&str, Counter)],
    ) {
        let total = format!("{base}_total");
        self.header(&total, help, "counter");
        for (value, counter) in series {
            self.sample_around(&total, "", &format!("{label}=\"{value}\""), counter.value);
        }
        let created = format!("{base}_created");
        self.header(&created, help, "gauge");
        for (value, counter) in series {
            self.sample_around(
                &created,
                "",
                &format!("{label}=\"{value}\""),
                counter.created,
            );
        }
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.header(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, count) in histogram.counts.iter().enumerate() {
            cumulative += count;
            let le = histogram.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            let extra = format!("le=\"{}\",", go_string(le));
            self.sample(&bucket, &extra, cumulative as f64);
        }
        self.sample(&format!("{name}_count"), "", histogram.count() as f64);
        self.sample(&format!("{name}_sum"), "", histogram.sum);
        self.created(name, help, &[("", histogram.created)]);
    }
}

/// Renders the body vLLM 0.18 (one engine, `engine="0"`) would serve; `process` holds this
/// process's own figures where the platform has them.
pub fn render(
    info: &EngineInfo,
    stats: &EngineStats,
    live: LiveGauges,
    process: Option<&ProcessStats>,
) -> String {
    let model = escape(&info.model_name);
    let mut w = Writer {
        out: String::with_capacity(56 * 1024),
        engine: "engine=\"0\"",
        model: &model,
    };
    let plain = |w: &mut Writer<'_>, name: &str, help: &str, kind: &str, value: f64| {
        w.header(name, help, kind);
        let _ = writeln!(w.out, "{name} {}", go_string(value));
    };
    if let Some(p) = process {
        plain(
            &mut w,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            "gauge",
            p.virtual_memory_bytes,
        );
        plain(
            &mut w,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            p.resident_memory_bytes,
        );
    }
    plain(
        &mut w,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        "gauge",
        info.process_start,
    );
    if let Some(p) = process {
        plain(
            &mut w,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
            p.cpu_seconds,
        );
        plain(
            &mut w,
            "process_open_fds",
            "Number of open file descriptors.",
            "gauge",
            p.open_fds,
        );
        plain(
            &mut w,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            "gauge",
            p.max_fds,
        );
    }
    w.gauge(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        live.running,
    );
    w.gauge(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        live.waiting,
    );
    w.header(
        "vllm:engine_sleep_state",
        "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
        "gauge",
    );
    for (state, value) in live.sleep.series() {
        w.sample_around(
            "vllm:engine_sleep_state",
            "",
            &format!("sleep_state=\"{state}\""),
            value,
        );
    }
    w.gauge(
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        live.kv_cache_usage,
    );
    for (base, help, counter) in [
        (
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            stats.prefix_cache_queries,
        ),
        (
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            stats.prefix_cache_hits,
        ),
        (
            "vllm:external_prefix_cache_queries",
            "External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of queried tokens.",
            stats.external_prefix_cache_queries,
        ),
        (
            "vllm:external_prefix_cache_hits",
            "External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of cached tokens.",
            stats.external_prefix_cache_hits,
        ),
        (
            "vllm:mm_cache_queries",
            "Multi-modal cache queries, in terms of number of queried items.",
            stats.mm_cache_queries,
        ),
        (
            "vllm:mm_cache_hits",
            "Multi-modal cache hits, in terms of number of cached items.",
            stats.mm_cache_hits,
        ),
        (
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine.",
            stats.preemptions,
        ),
        (
            "vllm:prompt_tokens",
            "Number of prefill tokens processed.",
            stats.prompt_tokens,
        ),
    ] {
        w.counter(base, help, counter);
    }
    let by_source: Vec<(&str, Counter)> = PROMPT_TOKEN_SOURCES
        .iter()
        .copied()
        .zip(stats.prompt_tokens_by_source)
        .collect();
    w.counter_after_model(
        "vllm:prompt_tokens_by_source",
        "Number of prompt tokens by source.",
        "source",
        &by_source,
    );
    w.counter(
        "vllm:prompt_tokens_cached",
        "Number of cached prompt tokens (local + external).",
        stats.prompt_tokens_cached,
    );
    w.counter(
        "vllm:prompt_tokens_recomputed",
        "Number of cached tokens recomputed for forward pass.",
        stats.prompt_tokens_recomputed,
    );
    w.counter(
        "vllm:generation_tokens",
        "Number of generation tokens processed.",
        stats.generation_tokens,
    );
    let success_help = "Count of successfully processed requests.";
    w.header("vllm:request_success_total", success_help, "counter");
    let reasons: Vec<String> = FinishReason::ALL
        .iter()
        .map(|r| format!("finished_reason=\"{}\",", r.as_str()))
        .collect();
    for (extra, counter) in reasons.iter().zip(&stats.request_success) {
        w.sample("vllm:request_success_total", extra, counter.value);
    }
    let created: Vec<(&str, f64)> = reasons
        .iter()
        .zip(&stats.request_success)
        .map(|(extra, counter)| (extra.as_str(), counter.created))
        .collect();
    w.created("vllm:request_success", success_help, &created);
    let histograms: [(&str, &str, &Histogram); 14] = [
        (
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.",
            &stats.request_prompt_tokens,
        ),
        (
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            &stats.request_generation_tokens,
        ),
        (
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            &stats.request_max_num_generation_tokens,
        ),
        (
            "vllm:request_params_n",
            "Histogram of the n request parameter.",
            &stats.request_params_n,
        ),
        (
            "vllm:request_params_max_tokens",
            "Histogram of the max_tokens request parameter.",
            &stats.request_params_max_tokens,
        ),
        (
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            &stats.time_to_first_token,
        ),
        (
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            &stats.inter_token_latency,
        ),
        (
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            &stats.request_time_per_output_token,
        ),
        (
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            &stats.e2e_request_latency,
        ),
        (
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            &stats.request_queue_time,
        ),
        (
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            &stats.request_inference_time,
        ),
        (
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            &stats.request_prefill_time,
        ),
        (
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            &stats.request_decode_time,
        ),
        (
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            &stats.request_prefill_kv_computed_tokens,
        ),
    ];
    for (name, help, histogram) in histograms {
        w.histogram(name, help, histogram);
    }
    w.header(
        "vllm:cache_config_info",
        "Information of the LLMEngine CacheConfig",
        "gauge",
    );
    // The labels are every CacheConfig field of 0.18, sorted; the ones a scraper reads
    // (block_size, num_gpu_blocks) are the simulation's, the rest vLLM's defaults with
    // prefix caching off (the simulation has none).
    let _ = writeln!(
        w.out,
        "vllm:cache_config_info{{block_size=\"{}\",cache_dtype=\"auto\",calculate_kv_scales=\"False\",cpu_kvcache_space_bytes=\"None\",cpu_offload_gb=\"0\",cpu_offload_params=\"set()\",enable_prefix_caching=\"False\",engine=\"0\",gpu_memory_utilization=\"0.9\",is_attention_free=\"False\",kv_cache_memory_bytes=\"None\",kv_offloading_backend=\"native\",kv_offloading_size=\"None\",kv_sharing_fast_prefill=\"False\",mamba_block_size=\"None\",mamba_cache_dtype=\"auto\",mamba_cache_mode=\"none\",mamba_page_size_padded=\"None\",mamba_ssm_cache_dtype=\"auto\",num_cpu_blocks=\"None\",num_gpu_blocks=\"{}\",num_gpu_blocks_override=\"None\",prefix_caching_hash_algo=\"sha256\",sliding_window=\"None\",swap_space=\"4.0\"}} 1.0",
        info.block_size, info.num_gpu_blocks
    );
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferscale_metrics::parser::Format;
    use inferscale_metrics::profile::{CounterSignal, GaugeSignal, HistogramSignal, RouteIndex};
    use inferscale_metrics::snapshot::EngineSnapshot;

    fn info() -> EngineInfo {
        EngineInfo {
            model_name: "sim-llama".into(),
            block_size: 16,
            num_gpu_blocks: 2000,
            max_model_len: 40960,
            process_start: 1768264339.8898673,
        }
    }

    #[test]
    fn token_buckets_match_the_fixture() {
        // The 0.13 fixture (max_model_len 40960) ends at 20000.
        let expected = [
            1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
            20000.0,
        ];
        assert_eq!(buckets_1_2_5(40960), expected);
    }

    #[test]
    fn body_reads_back_through_inferscale_metrics_with_nothing_skipped() {
        let mut stats = EngineStats::new(40960, 1768264339.9);
        stats.prompt_tokens.value = 66.0;
        stats.generation_tokens.value = 600.0;
        stats.finish(FinishReason::Length);
        stats.finish(FinishReason::Length);
        stats.time_to_first_token.observe(0.2);
        stats.time_to_first_token.observe(0.3);
        let live = LiveGauges {
            running: 3.0,
            waiting: 5.0,
            kv_cache_usage: 0.25,
            sleep: SleepGauge::Awake,
        };
        let body = render(&info(), &stats, live, None);
        let snapshot =
            EngineSnapshot::from_exposition(&body, Format::Prometheus, 0.0, &RouteIndex::engines());
        assert_eq!(
            snapshot.parse_stats.skipped(),
            0,
            "{:?}",
            snapshot.parse_stats
        );
        assert_eq!(snapshot.kv_capacity_tokens, Some(32000.0));
        assert_eq!(snapshot.process_start, Some(1768264339.8898673));
        let model = &snapshot.models["sim-llama"];
        assert_eq!(model.gauge(GaugeSignal::QueueDepth), Some(5.0));
        assert_eq!(model.gauge(GaugeSignal::Running), Some(3.0));
        assert_eq!(model.gauge(GaugeSignal::KvCacheUsage), Some(0.25));
        assert_eq!(model.counter(CounterSignal::PromptTokens), Some(66.0));
        assert_eq!(model.counter(CounterSignal::RequestsFinished), Some(2.0));
        let ttft = model.histogram(HistogramSignal::TimeToFirstToken).unwrap();
        assert_eq!(ttft.count(), 2.0);
    }

    #[test]
    fn layout_follows_vllm_0_18() {
        let mut stats = EngineStats::new(40960, 1768264339.8898673);
        stats.request_prompt_tokens.observe(33.0);
        let body = render(&info(), &stats, LiveGauges::default(), None);
        // Lines written by hand from the 0.13 and 0.16-0.18 fixtures, model name swapped.
        for line in [
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"sim-llama\"} 0.0",
            "# TYPE vllm:prompt_tokens_created gauge",
            "vllm:prompt_tokens_created{engine=\"0\",model_name=\"sim-llama\"} 1.7682643398898673e+09",
            "vllm:request_success_total{engine=\"0\",finished_reason=\"abort\",model_name=\"sim-llama\"} 0.0",
            "vllm:request_success_total{engine=\"0\",finished_reason=\"repetition\",model_name=\"sim-llama\"} 0.0",
            "vllm:prompt_tokens_by_source_total{engine=\"0\",model_name=\"sim-llama\",source=\"local_compute\"} 0.0",
            "vllm:engine_sleep_state{engine=\"0\",model_name=\"sim-llama\",sleep_state=\"awake\"} 1.0",
            "vllm:request_prompt_tokens_bucket{engine=\"0\",le=\"20.0\",model_name=\"sim-llama\"} 0.0",
            "vllm:request_prompt_tokens_bucket{engine=\"0\",le=\"50.0\",model_name=\"sim-llama\"} 1.0",
            "vllm:request_prompt_tokens_bucket{engine=\"0\",le=\"+Inf\",model_name=\"sim-llama\"} 1.0",
            "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"2560.0\",model_name=\"sim-llama\"} 0.0",
            "vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"7680.0\",model_name=\"sim-llama\"} 0.0",
        ] {
            assert!(body.lines().any(|l| l == line), "missing {line}");
        }
        let count = body.find("vllm:request_prompt_tokens_count").unwrap();
        let sum = body.find("vllm:request_prompt_tokens_sum").unwrap();
        assert!(count < sum, "V1 prints _count before _sum");
    }
}
