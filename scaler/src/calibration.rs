//! Calibration of the simulated fleet: how long a vLLM engine step takes, how much KV cache a
//! replica has, how long a replica takes to become ready or to wake, and what it costs.
//!
//! Owns: the named constants and the closed-form step-time model built from them.
//! Does not own: scheduling (see [`crate::replica`]) or the event loop (see [`crate::replay`]).
//!
//! # Where the numbers come from
//!
//! The default profile is **Llama-3.1-8B-Instruct in BF16 on one NVIDIA H100 80GB SXM**, served
//! by vLLM with its default scheduler settings. We did not fit these constants to a measured
//! benchmark run: they are derived from first principles (bytes moved / HBM bandwidth for
//! decode, FLOPs / peak for prefill, a roofline `max` of the two), from the model's published
//! architecture and the GPU's datasheet. The two efficiency factors are our assumptions and are
//! labelled as such. The result is in the range commonly reported for this pair (single-stream
//! inter-token latency of a few milliseconds, prefill of a 2k-token prompt well under 100 ms),
//! but it is an estimate, not a measurement; treat absolute latencies as ±30 %.
//!
//! - Model shape: Meta Llama 3.1 8B `config.json` (hidden 4096, 32 layers, 32 query heads,
//!   8 KV heads, head dim 128) and the model card (8.03 B parameters).
//! - GPU: NVIDIA H100 Tensor Core GPU datasheet, SXM5 column: 80 GB HBM3, 3.35 TB/s, 989 TFLOPS
//!   dense BF16 (the datasheet's 1,979 figure is with 2:4 sparsity).
//! - vLLM: `gpu_memory_utilization` default 0.9, KV block size 16 tokens, `max_num_seqs` 256
//!   (engine argument defaults documented in vLLM's engine-args page); chunked-prefill token
//!   budget 8192 (the V1 default for online serving on large-memory GPUs; older versions and
//!   smaller GPUs use 2048 — it is a field, change it).

use rand::Rng;
use rand_distr::{Distribution, LogNormal};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

/// Why a calibration could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibrationError {
    /// A startup distribution needs a positive median and a non-negative spread.
    #[error("startup distribution needs median > 0 and spread >= 0 (got median {median}, spread {sigma})")]
    InvalidStartup { median: f64, sigma: f64 },
    /// The profile leaves no room for the KV cache or has a non-positive rate.
    #[error("model profile is not usable: {0}")]
    InvalidProfile(&'static str),
}

/// Parameters of Llama 3.1 8B (see module docs for sources).
pub mod llama31_8b {
    /// Parameter count (model card: 8.03 B).
    pub const PARAMETERS: f64 = 8.03e9;
    /// BF16 = 2 bytes per parameter.
    pub const WEIGHT_BYTES: f64 = PARAMETERS * 2.0;
    /// Transformer layers (`num_hidden_layers`).
    pub const LAYERS: f64 = 32.0;
    /// Hidden size (`hidden_size`).
    pub const HIDDEN: f64 = 4096.0;
    /// KV heads (`num_key_value_heads`, grouped-query attention).
    pub const KV_HEADS: f64 = 8.0;
    /// Head dimension (hidden / 32 heads).
    pub const HEAD_DIM: f64 = 128.0;
    /// Bytes of KV cache per token: K and V × layers × KV heads × head dim × 2 bytes (BF16)
    /// = 131,072 bytes (128 KiB).
    pub const KV_BYTES_PER_TOKEN: f64 = 2.0 * LAYERS * KV_HEADS * HEAD_DIM * 2.0;
}

/// Parameters of the H100 80GB SXM (NVIDIA datasheet).
pub mod h100_sxm {
    /// HBM3 bandwidth, bytes/s.
    pub const HBM_BYTES_PER_SEC: f64 = 3.35e12;
    /// Dense BF16 tensor throughput, FLOP/s.
    pub const PEAK_BF16_FLOPS: f64 = 989e12;
    /// Device memory, bytes.
    pub const MEMORY_BYTES: f64 = 80e9;
}

/// Fraction of peak HBM bandwidth a decode step achieves. Our assumption: well-tuned GEMV and
/// paged-attention kernels reach 70–85 % of peak; we take 0.8.
pub const ACHIEVED_BANDWIDTH_FRACTION: f64 = 0.8;
/// Fraction of peak tensor FLOP/s that prefill achieves (model FLOP utilisation). Our
/// assumption: large-batch prefill GEMMs of an 8B model reach roughly half of peak.
pub const PREFILL_MFU: f64 = 0.5;
/// Fixed CPU-side cost of one engine step (scheduling, sampling, detokenisation, launch).
/// Our assumption: about 1 ms for vLLM V1 with CUDA graphs.
pub const STEP_OVERHEAD_SECS: f64 = 1.0e-3;
/// Memory vLLM may use (`gpu_memory_utilization` default).
pub const GPU_MEMORY_UTILIZATION: f64 = 0.9;
/// Memory taken by activations, CUDA graphs and the allocator outside the KV cache. Our
/// assumption (vLLM's profiling run typically reserves a few GB for an 8B model).
pub const NON_KV_OVERHEAD_BYTES: f64 = 4e9;
/// vLLM's default KV block size, tokens.
pub const KV_BLOCK_TOKENS: u32 = 16;
/// vLLM's default cap on sequences in the running batch.
pub const MAX_NUM_SEQS: u32 = 256;
/// Token budget of one step with chunked prefill (see module docs).
pub const MAX_NUM_BATCHED_TOKENS: u32 = 8192;

/// Everything the replica model needs to time an engine step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelProfile {
    /// Human name, e.g. "Llama-3.1-8B BF16 on H100-80GB-SXM".
    pub name: String,
    /// Fixed time per step, seconds.
    pub step_overhead_secs: f64,
    /// Bytes read per step regardless of batch (weights), over achieved bandwidth: seconds.
    pub weight_read_secs: f64,
    /// Seconds to read the KV cache of one context token.
    pub kv_read_secs_per_token: f64,
    /// Seconds of compute per processed token (linear layers), at the prefill MFU.
    pub compute_secs_per_token: f64,
    /// Seconds of attention compute per (token × context token) pair.
    pub attention_secs_per_token_pair: f64,
    /// KV-cache blocks of one replica.
    pub kv_blocks: u32,
    /// Tokens per KV block.
    pub block_tokens: u32,
    /// Cap on running sequences.
    pub max_num_seqs: u32,
    /// Tokens per step (decode tokens count one each).
    pub max_batched_tokens: u32,
}

impl ModelProfile {
    /// The default: Llama-3.1-8B BF16 on one H100 80GB SXM (see module docs).
    pub fn llama31_8b_h100() -> ModelProfile {
        use h100_sxm::*;
        use llama31_8b::*;
        let bandwidth = HBM_BYTES_PER_SEC * ACHIEVED_BANDWIDTH_FRACTION;
        let flops = PEAK_BF16_FLOPS * PREFILL_MFU;
        let kv_bytes = MEMORY_BYTES * GPU_MEMORY_UTILIZATION - WEIGHT_BYTES - NON_KV_OVERHEAD_BYTES;
        let kv_tokens = kv_bytes / KV_BYTES_PER_TOKEN;
        ModelProfile {
            name: "Llama-3.1-8B BF16 on H100-80GB-SXM (vLLM)".to_owned(),
            step_overhead_secs: STEP_OVERHEAD_SECS,
            weight_read_secs: WEIGHT_BYTES / bandwidth,
            kv_read_secs_per_token: KV_BYTES_PER_TOKEN / bandwidth,
            // 2 FLOPs per parameter per token for the dense layers.
            compute_secs_per_token: 2.0 * PARAMETERS / flops,
            // QK^T and AV: 2 matmuls × 2 FLOPs × layers × hidden per (query, key) pair.
            attention_secs_per_token_pair: 4.0 * LAYERS * HIDDEN / flops,
            kv_blocks: (kv_tokens / KV_BLOCK_TOKENS as f64) as u32,
            block_tokens: KV_BLOCK_TOKENS,
            max_num_seqs: MAX_NUM_SEQS,
            max_batched_tokens: MAX_NUM_BATCHED_TOKENS,
        }
    }

    /// A profile whose step takes exactly `step_secs` whatever the batch: the simulator then
    /// reduces to a textbook queue (used by the closed-form tests).
    pub fn fixed_step(step_secs: f64, max_num_seqs: u32) -> ModelProfile {
        ModelProfile {
            name: format!("fixed {step_secs} s step"),
            step_overhead_secs: step_secs,
            weight_read_secs: 0.0,
            kv_read_secs_per_token: 0.0,
            compute_secs_per_token: 0.0,
            attention_secs_per_token_pair: 0.0,
            kv_blocks: u32::MAX / 2,
            block_tokens: KV_BLOCK_TOKENS,
            max_num_seqs,
            max_batched_tokens: u32::MAX / 2,
        }
    }

    /// Checks the profile can serve at least one request.
    pub fn validate(&self) -> Result<(), CalibrationError> {
        if self.kv_blocks == 0 {
            return Err(CalibrationError::InvalidProfile("no KV-cache blocks"));
        }
        if self.max_num_seqs == 0 || self.max_batched_tokens == 0 || self.block_tokens == 0 {
            return Err(CalibrationError::InvalidProfile(
                "max_num_seqs, max_batched_tokens and block_tokens must be positive",
            ));
        }
        if self.step_overhead_secs + self.weight_read_secs <= 0.0 {
            return Err(CalibrationError::InvalidProfile("a step must take time"));
        }
        Ok(())
    }

    /// Duration of one engine step.
    ///
    /// `decode_seqs` sequences produce one token each while reading `decode_context` cached
    /// tokens in total; `prefill_tokens` prompt tokens are processed attending to
    /// `prefill_attention_pairs` (query, key) pairs. Roofline: the step is bound by memory
    /// traffic (weights + KV reads) or by compute, whichever is larger, plus a fixed overhead.
    #[inline]
    pub fn step_secs(
        &self,
        decode_seqs: u32,
        decode_context: u64,
        prefill_tokens: u32,
        prefill_attention_pairs: f64,
    ) -> f64 {
        let memory = self.weight_read_secs + self.kv_read_secs_per_token * decode_context as f64;
        let compute = self.compute_secs_per_token * (decode_seqs + prefill_tokens) as f64
            + self.attention_secs_per_token_pair
                * (prefill_attention_pairs + decode_context as f64);
        self.step_overhead_secs + memory.max(compute)
    }

    /// KV capacity of a replica, tokens.
    pub fn kv_capacity_tokens(&self) -> f64 {
        self.kv_blocks as f64 * self.block_tokens as f64
    }
}

/// A positive duration drawn from a log-normal distribution given by its median and the
/// standard deviation of its logarithm (the usual shape of startup times: a floor of fixed
/// work and a long right tail from image pulls and node provisioning).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StartupTime {
    pub median_secs: f64,
    pub log_sigma: f64,
}

impl StartupTime {
    pub fn new(median_secs: f64, log_sigma: f64) -> Result<StartupTime, CalibrationError> {
        let valid = median_secs.is_finite() && median_secs > 0.0 && log_sigma.is_finite();
        if !valid || log_sigma < 0.0 {
            return Err(CalibrationError::InvalidStartup {
                median: median_secs,
                sigma: log_sigma,
            });
        }
        Ok(StartupTime {
            median_secs,
            log_sigma,
        })
    }

    /// One draw, seconds, never below [`StartupTime::floor_secs`].
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        if self.log_sigma == 0.0 {
            return self.median_secs;
        }
        match LogNormal::new(self.median_secs.ln(), self.log_sigma) {
            Ok(d) => d.sample(rng).max(self.floor_secs()),
            Err(_) => self.median_secs,
        }
    }

    /// The fastest a start can be: `median × e^(−3σ)` (the 0.13th percentile). Node
    /// provisioning, image pull and weight load each take a least time, so the log-normal's
    /// far-left tail is cut; the lower bound relies on this floor.
    pub fn floor_secs(&self) -> f64 {
        self.median_secs * (-3.0 * self.log_sigma).exp()
    }

    /// The `q`-quantile, seconds (what a clairvoyant planner must lead by to be on time with
    /// probability `q`).
    pub fn quantile(&self, q: f64) -> f64 {
        if self.log_sigma == 0.0 {
            return self.median_secs;
        }
        let z = Normal::new(0.0, 1.0).map_or(0.0, |n| n.inverse_cdf(q.clamp(1e-9, 1.0 - 1e-9)));
        self.median_secs * (self.log_sigma * z).exp()
    }
}

/// Spread of cold-start time: a log-sd of 0.25 puts the 5–95 % range at about ×0.66–×1.5 of
/// the median, what we see between a cached image on a warm node and a fresh pull.
pub const TIME_TO_READY_LOG_SIGMA: f64 = 0.25;

/// Median wake time from vLLM sleep mode (level 1: weights offloaded to host memory). First
/// principles: 16 GB of weights over PCIe Gen5 x16 at an effective ~25 GB/s is ~0.65 s, plus
/// re-creating the KV cache allocation and CUDA-graph state; we take 2 s. Not a measurement.
pub const SLEEP_WAKE_MEDIAN_SECS: f64 = 2.0;
/// Spread of wake time (log-sd); host-memory contention gives a modest tail.
pub const SLEEP_WAKE_LOG_SIGMA: f64 = 0.3;

/// Share of a cold start spent provisioning the GPU node (the rest: image pull, weight load,
/// CUDA-graph capture). Node provisioning is commonly 3–4 min on the large clouds' GPU pools
/// and an 8B model's pod start 1–2 min, so at a 300 s cold start the node is ~60 % of it. A
/// placeholder pod that keeps the node up saves this share. Our assumption, not a measurement.
pub const NODE_PROVISIONING_SHARE: f64 = 0.6;

/// Cost of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostModel {
    /// Price of one replica (one GPU) per hour, any currency.
    pub gpu_cost_per_hour: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_is_in_the_published_range() {
        let p = ModelProfile::llama31_8b_h100();
        p.validate().unwrap();
        // One stream, 1k context: weights dominate → ~6–8 ms per token.
        let itl = p.step_secs(1, 1000, 0, 0.0);
        assert!((0.005..0.009).contains(&itl), "itl {itl}");
        // 2k-token prompt prefill alone: tens of ms.
        let prefill = p.step_secs(0, 0, 2048, 2048.0 * 1024.0);
        assert!((0.03..0.12).contains(&prefill), "prefill {prefill}");
        // KV capacity: ~52 GB / 128 KiB ≈ 400k tokens.
        let cap = p.kv_capacity_tokens();
        assert!((350_000.0..450_000.0).contains(&cap), "cap {cap}");
    }

    #[test]
    fn lognormal_quantile_matches_median() {
        let s = StartupTime::new(120.0, 0.25).unwrap();
        assert!((s.quantile(0.5) - 120.0).abs() < 1e-6);
        assert!(s.quantile(0.99) > 120.0 * 1.7);
        assert!(StartupTime::new(0.0, 0.1).is_err());
        assert!(StartupTime::new(10.0, -1.0).is_err());
    }
}
