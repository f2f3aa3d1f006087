//! The metric catalogue: the names the adapter serves, and how each is read and combined.
//!
//! Owns: the catalogue. One scheme in base units — `inferscale_<signal>[_<unit>]` — plus
//! the names platform teams copy from common guides into HPAs (`vllm_num_requests_waiting`,
//! `vllm_time_to_first_token_p95` in **milliseconds**, `vllm_gpu_cache_usage_perc` as 0–1 for
//! V0 and V1 engines alike). Each entry says which per-replica value it reads, the factor to
//! its unit, and how replicas combine when one value describes several pods (a Deployment,
//! or an external metric).
//! Does not own: computing signals or combining replicas (`inferscale-metrics`, whose
//! [`inferscale_metrics::fleet`] module does the arithmetic each [`Combine`] names), or
//! HTTP shapes (`api`).

use inferscale_metrics::fleet::{self, merged_latency, Aggregate};
use inferscale_metrics::gpu::PodGpus;
use inferscale_metrics::profile::{CounterSignal, GaugeSignal, HistogramSignal};
use inferscale_metrics::saturation;
use inferscale_metrics::signals::{Missing, ModelSignals, Reading};

/// Which per-replica value a metric reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    Gauge(GaugeSignal),
    KvCacheUsageMax,
    KvCapacityTokens,
    /// Derived ([`inferscale_metrics::saturation`]): free KV-cache tokens.
    KvHeadroomTokens,
    /// Derived: share of the replica's serving capacity in use, 0–1.
    CapacityInUse,
    /// Derived: combined saturation, 0–1.
    Saturation,
    Rate(CounterSignal),
    /// A quantile (0–1) of a latency histogram over the window.
    Quantile(HistogramSignal, f64),
    MeanLatency(HistogramSignal),
    GpuUtilizationMean,
    GpuUtilizationMax,
    GpuMemoryUsedBytes,
    GpuPowerWatts,
    GpuCount,
}

/// How one value is formed from several replicas (the arithmetic is
/// [`inferscale_metrics::fleet`]'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Counts and rates add up.
    Sum,
    /// Ratios average over the replicas that have a value.
    Mean,
    /// The busiest replica.
    Max,
    /// Percentiles of the bucket-wise sum of the replicas' window histograms.
    MergedHistogram,
}

/// One served metric.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    pub name: &'static str,
    pub source: Source,
    /// Factor from base units to the metric's unit (1000 for milliseconds).
    pub scale: f64,
    pub unit: &'static str,
    pub combine: Combine,
    pub help: &'static str,
}

const fn def(
    name: &'static str,
    source: Source,
    scale: f64,
    unit: &'static str,
    combine: Combine,
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        source,
        scale,
        unit,
        combine,
        help,
    }
}

use CounterSignal as C;
use GaugeSignal as G;
use HistogramSignal as H;
use Source as S;

/// Every metric name the adapter serves.
pub const METRICS: &[MetricDef] = &[
    // The scheme, base units.
    def(
        "inferscale_queue_depth",
        S::Gauge(G::QueueDepth),
        1.0,
        "requests",
        Combine::Sum,
        "Requests waiting to be scheduled.",
    ),
    def(
        "inferscale_running",
        S::Gauge(G::Running),
        1.0,
        "requests",
        Combine::Sum,
        "Requests in the running batch.",
    ),
    def(
        "inferscale_kv_cache_usage_ratio",
        S::Gauge(G::KvCacheUsage),
        1.0,
        "ratio",
        Combine::Mean,
        "KV-cache usage, 0-1.",
    ),
    def(
        "inferscale_kv_cache_usage_max_ratio",
        S::KvCacheUsageMax,
        1.0,
        "ratio",
        Combine::Max,
        "Busiest data-parallel engine's KV-cache usage, 0-1.",
    ),
    def(
        "inferscale_kv_cache_capacity_tokens",
        S::KvCapacityTokens,
        1.0,
        "tokens",
        Combine::Sum,
        "KV-cache capacity.",
    ),
    // Derived saturation (formulas: inferscale_metrics::saturation).
    def(
        "inferscale_kv_cache_headroom_tokens",
        S::KvHeadroomTokens,
        1.0,
        "tokens",
        Combine::Sum,
        "Free KV-cache tokens: (1 - KV usage) x KV capacity.",
    ),
    def(
        "inferscale_capacity_in_use_ratio",
        S::CapacityInUse,
        1.0,
        "ratio",
        Combine::Mean,
        "Share of serving capacity in use, 0-1: 1 while requests wait, else the KV-cache share.",
    ),
    def(
        "inferscale_saturation_ratio",
        S::Saturation,
        1.0,
        "ratio",
        Combine::Mean,
        "Combined saturation 0-1: 1 - (1 - KV usage) x (1 - waiting / (waiting + running)).",
    ),
    def(
        "inferscale_requests_per_second",
        S::Rate(C::RequestsFinished),
        1.0,
        "1/s",
        Combine::Sum,
        "Finished requests per second.",
    ),
    def(
        "inferscale_prompt_tokens_per_second",
        S::Rate(C::PromptTokens),
        1.0,
        "1/s",
        Combine::Sum,
        "Prompt tokens per second.",
    ),
    def(
        "inferscale_generation_tokens_per_second",
        S::Rate(C::GenerationTokens),
        1.0,
        "1/s",
        Combine::Sum,
        "Generated tokens per second.",
    ),
    def(
        "inferscale_preemptions_per_second",
        S::Rate(C::Preemptions),
        1.0,
        "1/s",
        Combine::Sum,
        "Preemptions per second.",
    ),
    def(
        "inferscale_time_to_first_token_seconds_p50",
        S::Quantile(H::TimeToFirstToken, 0.5),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Time to first token, median over the window.",
    ),
    def(
        "inferscale_time_to_first_token_seconds_p90",
        S::Quantile(H::TimeToFirstToken, 0.9),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Time to first token, 90th percentile.",
    ),
    def(
        "inferscale_time_to_first_token_seconds_p95",
        S::Quantile(H::TimeToFirstToken, 0.95),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Time to first token, 95th percentile.",
    ),
    def(
        "inferscale_time_to_first_token_seconds_p99",
        S::Quantile(H::TimeToFirstToken, 0.99),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Time to first token, 99th percentile.",
    ),
    def(
        "inferscale_time_to_first_token_seconds_mean",
        S::MeanLatency(H::TimeToFirstToken),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Time to first token, mean.",
    ),
    def(
        "inferscale_inter_token_latency_seconds_p50",
        S::Quantile(H::InterTokenLatency, 0.5),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Inter-token latency, median.",
    ),
    def(
        "inferscale_inter_token_latency_seconds_p90",
        S::Quantile(H::InterTokenLatency, 0.9),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Inter-token latency, 90th percentile.",
    ),
    def(
        "inferscale_inter_token_latency_seconds_p95",
        S::Quantile(H::InterTokenLatency, 0.95),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Inter-token latency, 95th percentile.",
    ),
    def(
        "inferscale_inter_token_latency_seconds_p99",
        S::Quantile(H::InterTokenLatency, 0.99),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Inter-token latency, 99th percentile.",
    ),
    def(
        "inferscale_end_to_end_latency_seconds_p50",
        S::Quantile(H::EndToEndLatency, 0.5),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Request latency, median.",
    ),
    def(
        "inferscale_end_to_end_latency_seconds_p90",
        S::Quantile(H::EndToEndLatency, 0.9),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Request latency, 90th percentile.",
    ),
    def(
        "inferscale_end_to_end_latency_seconds_p95",
        S::Quantile(H::EndToEndLatency, 0.95),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Request latency, 95th percentile.",
    ),
    def(
        "inferscale_end_to_end_latency_seconds_p99",
        S::Quantile(H::EndToEndLatency, 0.99),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Request latency, 99th percentile.",
    ),
    def(
        "inferscale_queue_time_seconds_p50",
        S::Quantile(H::QueueTime, 0.5),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Time waiting in the queue, median.",
    ),
    def(
        "inferscale_queue_time_seconds_p90",
        S::Quantile(H::QueueTime, 0.9),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Time waiting in the queue, 90th percentile.",
    ),
    def(
        "inferscale_queue_time_seconds_p95",
        S::Quantile(H::QueueTime, 0.95),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Time waiting in the queue, 95th percentile.",
    ),
    def(
        "inferscale_queue_time_seconds_p99",
        S::Quantile(H::QueueTime, 0.99),
        1.0,
        "s",
        Combine::MergedHistogram,
        "Time waiting in the queue, 99th percentile.",
    ),
    def(
        "inferscale_gpu_utilization_ratio",
        S::GpuUtilizationMean,
        1.0,
        "ratio",
        Combine::Mean,
        "Mean busy fraction of the pod's GPUs, 0-1.",
    ),
    def(
        "inferscale_gpu_utilization_max_ratio",
        S::GpuUtilizationMax,
        1.0,
        "ratio",
        Combine::Max,
        "Busiest GPU of the pod, 0-1.",
    ),
    def(
        "inferscale_gpu_memory_used_bytes",
        S::GpuMemoryUsedBytes,
        1.0,
        "bytes",
        Combine::Sum,
        "Frame-buffer memory used by the pod's GPUs.",
    ),
    def(
        "inferscale_gpu_power_watts",
        S::GpuPowerWatts,
        1.0,
        "W",
        Combine::Sum,
        "Power drawn by the pod's GPUs.",
    ),
    def(
        "inferscale_gpus",
        S::GpuCount,
        1.0,
        "gpus",
        Combine::Sum,
        "GPUs the pod holds.",
    ),
    // Names from common guides, kept exactly.
    def(
        "vllm_num_requests_waiting",
        S::Gauge(G::QueueDepth),
        1.0,
        "requests",
        Combine::Sum,
        "Requests waiting (vllm:num_requests_waiting).",
    ),
    def(
        "vllm_num_requests_running",
        S::Gauge(G::Running),
        1.0,
        "requests",
        Combine::Sum,
        "Requests running (vllm:num_requests_running).",
    ),
    def(
        "vllm_gpu_cache_usage_perc",
        S::Gauge(G::KvCacheUsage),
        1.0,
        "ratio",
        Combine::Mean,
        "KV-cache usage 0-1 (vllm:kv_cache_usage_perc, or gpu_cache_usage_perc on older engines).",
    ),
    def(
        "vllm_kv_cache_usage_perc",
        S::Gauge(G::KvCacheUsage),
        1.0,
        "ratio",
        Combine::Mean,
        "KV-cache usage 0-1.",
    ),
    def(
        "vllm_time_to_first_token_p50",
        S::Quantile(H::TimeToFirstToken, 0.5),
        1000.0,
        "ms",
        Combine::MergedHistogram,
        "Time to first token, median, milliseconds.",
    ),
    def(
        "vllm_time_to_first_token_p90",
        S::Quantile(H::TimeToFirstToken, 0.9),
        1000.0,
        "ms",
        Combine::MergedHistogram,
        "Time to first token, p90, milliseconds.",
    ),
    def(
        "vllm_time_to_first_token_p95",
        S::Quantile(H::TimeToFirstToken, 0.95),
        1000.0,
        "ms",
        Combine::MergedHistogram,
        "Time to first token, p95, milliseconds (a target of 500 means 500 ms).",
    ),
    def(
        "vllm_time_to_first_token_p99",
        S::Quantile(H::TimeToFirstToken, 0.99),
        1000.0,
        "ms",
        Combine::MergedHistogram,
        "Time to first token, p99, milliseconds.",
    ),
];

/// Looks a metric up by name.
pub fn lookup(name: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.name == name)
}

impl MetricDef {
    /// True when the value comes from dcgm-exporter rather than the serving engine.
    pub fn is_gpu(&self) -> bool {
        matches!(
            self.source,
            S::GpuUtilizationMean
                | S::GpuUtilizationMax
                | S::GpuMemoryUsedBytes
                | S::GpuPowerWatts
                | S::GpuCount
        )
    }

    /// The value for one replica, in the metric's unit.
    pub fn replica_value(
        &self,
        signals: &ModelSignals,
        kv_capacity_tokens: Reading,
        gpus: Option<&PodGpus>,
    ) -> Reading {
        let base = match self.source {
            S::Gauge(g) => signals.gauge(g),
            S::KvCacheUsageMax => signals.kv_cache_usage_max,
            S::KvCapacityTokens => kv_capacity_tokens,
            S::KvHeadroomTokens => {
                saturation::kv_headroom_tokens(signals.kv_cache_usage, kv_capacity_tokens)
            }
            S::CapacityInUse => {
                saturation::capacity_in_use(signals.kv_cache_usage, signals.queue_depth)
            }
            S::Saturation => {
                saturation::saturation(signals.kv_cache_usage, signals.running, signals.queue_depth)
            }
            S::Rate(c) => signals.rate(c),
            S::Quantile(h, q) => signals.latency(h).quantile(q),
            S::MeanLatency(h) => signals.latency(h).mean,
            S::GpuUtilizationMean => gpu_value(gpus, |g| g.utilization_mean),
            S::GpuUtilizationMax => gpu_value(gpus, |g| g.utilization_max),
            S::GpuMemoryUsedBytes => gpu_value(gpus, |g| g.memory_used_bytes),
            S::GpuPowerWatts => gpu_value(gpus, |g| g.power_watts),
            S::GpuCount => gpu_value(gpus, |g| Some(g.gpus as f64)),
        };
        scale(base, self.scale)
    }

    /// The value for several replicas. `replicas` holds each replica's signals and its
    /// value from [`MetricDef::replica_value`]; missing replicas are left out, never zero.
    pub fn combined_value<'a>(
        &self,
        replicas: impl IntoIterator<Item = (&'a ModelSignals, Reading)>,
    ) -> Reading {
        let replicas = replicas.into_iter();
        let aggregate = match self.combine {
            Combine::Sum => fleet::Combine::Sum,
            Combine::Mean => fleet::Combine::Mean,
            Combine::Max => fleet::Combine::Max,
            Combine::MergedHistogram => return self.merged(replicas.map(|(s, _)| s)),
        };
        Aggregate::of(replicas.map(|(_, r)| r)).get(aggregate)
    }

    /// A latency value over the bucket-wise sum of the replicas' window histograms.
    fn merged<'a>(&self, replicas: impl IntoIterator<Item = &'a ModelSignals>) -> Reading {
        match self.source {
            S::Quantile(h, q) => scale(merged_latency(replicas, h).quantile(q), self.scale),
            S::MeanLatency(h) => scale(merged_latency(replicas, h).mean, self.scale),
            // Only latency histograms merge; a test holds every catalogue entry to it.
            _ => Reading::Missing(Missing::NotExposed),
        }
    }
}

fn gpu_value(gpus: Option<&PodGpus>, get: impl Fn(&PodGpus) -> Option<f64>) -> Reading {
    match gpus {
        Some(g) => get(g).map_or(Reading::Missing(Missing::NotExposed), Reading::Value),
        None => Reading::Missing(Missing::NotExposed),
    }
}

fn scale(reading: Reading, factor: f64) -> Reading {
    match reading {
        Reading::Value(v) => Reading::Value(v * factor),
        missing => missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_guide_names_present() {
        let mut names: Vec<_> = METRICS.iter().map(|m| m.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        let ttft = lookup("vllm_time_to_first_token_p95").unwrap();
        assert_eq!(ttft.scale, 1000.0, "milliseconds");
        assert!(lookup("vllm_num_requests_waiting").is_some());
        assert!(lookup("vllm_gpu_cache_usage_perc").is_some());
        assert!(lookup("nope").is_none());
    }

    #[test]
    fn only_latency_histograms_merge() {
        for m in METRICS {
            let histogram = matches!(m.source, S::Quantile(..) | S::MeanLatency(_));
            assert_eq!(
                histogram,
                m.combine == Combine::MergedHistogram,
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn names_are_valid_path_segments() {
        for m in METRICS {
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                m.name
            );
        }
    }
}
