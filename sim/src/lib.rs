//! `vllm-sim`: a mock vLLM server and a mock NVIDIA dcgm-exporter for the end-to-end tests.
//!
//! **This is a stand-in.** The e2e tests would use the third-party simulator
//! `llm-d-inference-sim`, but it cannot be obtained here (the Go module proxy answers 403
//! for every version), so this crate reproduces what the autoscaler can observe of a vLLM
//! pod. It is not vLLM and runs no model.
//!
//! What it models:
//! - **`/metrics`** in the vLLM V1 (0.13) exposition, byte-for-byte in layout: HELP/TYPE
//!   lines, sorted label names, `_total` counters each followed by a `_created` gauge
//!   family, pre-created `finished_reason` series, `vllm:cache_config_info`,
//!   `process_start_time_seconds`, Python float formatting and the ≥ 0.8.4 bucket bounds
//!   ([`vllm_metrics`]);
//! - **continuous batching**: at most `max_num_seqs` requests run, the rest wait in FIFO
//!   order; TTFT = queue wait + fixed TTFT + per-prompt-token prefill; decode steps slow
//!   down 2 % per extra running sequence; KV blocks follow prompt + generated tokens
//!   ([`engine`]);
//! - the **OpenAI completions and chat APIs** (non-streaming and SSE) with dummy text
//!   ([`openai`], [`server`]), and admin endpoints to take `/metrics` down or inject load;
//! - a **dcgm-exporter** for a fake node whose GPUs are handed to pods from an assignments
//!   file and look as busy as those pods are ([`dcgm`], [`dcgm_server`]).
//!
//! What it does not model: tokenisation (words are tokens), preemption, prefix caching,
//! stop sequences, sampling, LoRA, several data-parallel engines.

pub mod dcgm;
pub mod dcgm_server;
pub mod engine;
pub mod openai;
pub mod pyfloat;
pub mod server;
pub mod vllm_metrics;
