//! `vllm-sim`: a mock vLLM server and a mock NVIDIA dcgm-exporter for the end-to-end tests.
//!
//! **This is a stand-in.** The e2e tests would use the third-party simulator
//! `llm-d-inference-sim`, but it cannot be obtained here (the Go module proxy answers 403
//! for every version), so this crate reproduces what the autoscaler can observe of a vLLM
//! pod. It is not vLLM and runs no model.
//!
//! What it models:
//! - **`/metrics`** in the vLLM V1 0.18 exposition, byte-for-byte in layout: HELP/TYPE
//!   lines, sorted label names, `_total` counters each followed by a `_created` gauge
//!   family, pre-created `finished_reason`/`sleep_state`/`source` series,
//!   `vllm:cache_config_info`, `process_*` figures of this process, Python float formatting
//!   and the ≥ 0.8.4 bucket bounds ([`vllm_metrics`]); `tests/conformance.rs` checks
//!   families, types, label names and bucket bounds against the real captures and lists
//!   every deliberate difference with its reason;
//! - **continuous batching**: at most `max_num_seqs` requests run, the rest wait in FIFO
//!   order; TTFT = queue wait + fixed TTFT + per-prompt-token prefill; decode steps slow
//!   down 2 % per extra running sequence; KV blocks follow prompt + generated tokens
//!   ([`engine`]);
//! - **sleep mode** as vLLM's engine core does it (`--enable-sleep-mode`: `POST /sleep`,
//!   `POST /wake_up`, `GET /is_sleeping`, `vllm:engine_sleep_state`, a configurable wake
//!   time, requests queued while asleep, KV cache discarded) and a **simulated restart**
//!   ([`engine`]);
//! - the **OpenAI completions and chat APIs** (non-streaming and SSE) with dummy text
//!   ([`openai`], [`server`]);
//! - **faults** for the fault suite, toggled through admin endpoints on both servers: a
//!   hanging, failing, HTML, garbage, oversized, gzip-bomb, non-finite, broken-histogram,
//!   duplicated, redirecting, 300,000-model or vanished `/metrics` ([`faults`], the table in
//!   [`server`]);
//! - a **fleet** of scrape targets in one process (`vllm-sim fleet`): a real capture
//!   replayed with moving counters and a settable queue, on thousands of loopback addresses,
//!   for the adapter's load tests ([`fleet`]);
//! - a **dcgm-exporter** for a fake node whose GPUs are handed to pods from an assignments
//!   file and look as busy as those pods are, in the 23-family layout of a real L4 capture
//!   ([`dcgm`], [`dcgm_server`]).
//!
//! What it does not model: tokenisation (words are tokens), preemption, prefix caching,
//! stop sequences, sampling, LoRA, several data-parallel engines, engine steps (so no
//! `iteration_tokens_total`).

pub mod dcgm;
pub mod dcgm_server;
pub mod engine;
pub mod faults;
pub mod fleet;
pub mod openai;
pub mod process;
pub mod pyfloat;
pub mod server;
pub mod vllm_metrics;
