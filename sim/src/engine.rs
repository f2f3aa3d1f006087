//! The simulated engine: continuous batching with a FIFO queue, timed with tokio.
//!
//! Owns: admission (context-length check, bounded queue), the batch of at most
//! `max_num_seqs` running requests, the timing model, KV-cache block accounting and every
//! observation that ends up in `/metrics`. Does not own: HTTP, JSON, or text formatting.
//!
//! Timing model (deliberately simple, monotone in load):
//! - a request waits in FIFO order for one of `max_num_seqs` batch slots (tokio's semaphore
//!   is fair), which is `vllm:num_requests_waiting`;
//! - its first token arrives `ttft + prompt_tokens × prefill_per_token` after it was
//!   scheduled, so measured TTFT = queue wait + that;
//! - each further token takes `itl × (1 + BATCH_SLOWDOWN_PER_SEQ × (running − 1))`;
//! - it holds `ceil((prompt + generated) / block_size)` KV blocks while running, and
//!   `kv_cache_usage_perc` is the sum over running requests divided by `kv_blocks` (capped at
//!   1; there is no preemption, so `num_preemptions_total` stays 0).

use crate::vllm_metrics::{render, EngineInfo, EngineStats, FinishReason, LiveGauges};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Each extra running sequence slows every decode step by 2 %: enough for the decode rate
/// to fall visibly under load (real engines lose 1–5 % per sequence on small batches),
/// small enough that a full batch of 256 is not absurd.
pub const BATCH_SLOWDOWN_PER_SEQ: f64 = 0.02;

/// Requests allowed to wait at once. Each waiter is a parked task plus its request body;
/// 4096 covers any e2e scenario while bounding memory. Beyond it the server answers 503.
pub const MAX_QUEUED_REQUESTS: usize = 4096;

/// What the engine simulates, resolved from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub model: String,
    pub max_num_seqs: usize,
    pub ttft: Duration,
    pub itl: Duration,
    pub prefill_per_token: Duration,
    pub kv_blocks: u32,
    pub block_size: u32,
    pub max_model_len: u32,
}

/// Why a request was not (fully) served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// Prompt plus requested tokens exceed `max_model_len` (vLLM answers 400).
    #[error("This model's maximum context length is {max_model_len} tokens. However, you requested {} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion.", prompt_tokens + max_tokens)]
    ContextTooLong {
        prompt_tokens: u32,
        max_tokens: u32,
        max_model_len: u32,
    },
    /// More than [`MAX_QUEUED_REQUESTS`] are already waiting.
    #[error("the simulated engine already has {0} requests waiting")]
    QueueFull(usize),
    /// The client went away; counted as `finished_reason="abort"`.
    #[error("request aborted")]
    Aborted,
}

/// Synthetic load injected through `/admin/load`, on top of real requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticLoad {
    /// Added to `vllm:num_requests_waiting`.
    pub waiting: f64,
    /// Added to `vllm:num_requests_running`.
    pub running: f64,
    /// Added to `vllm:kv_cache_usage_perc` (result capped at 1).
    pub kv_cache_usage: f64,
    /// When set, a TTFT observation of this many seconds is recorded
    /// `observations_per_second` times a second.
    pub ttft_seconds: Option<f64>,
    /// Rate of synthetic TTFT observations; 0 means 1 per second.
    pub observations_per_second: f64,
}

/// What one completed request produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Generation {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub finish_reason: FinishReason,
}

struct State {
    waiting: usize,
    running: usize,
    kv_blocks_used: u64,
    stats: EngineStats,
    synthetic: SyntheticLoad,
    /// Fractional synthetic observations carried to the next tick.
    synthetic_due: f64,
}

/// One simulated vLLM engine (`engine="0"`).
pub struct Engine {
    config: EngineConfig,
    info: EngineInfo,
    slots: Semaphore,
    state: Mutex<State>,
}

/// Unix time now, seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn blocks_for(tokens: u32, block_size: u32) -> u64 {
    u64::from(tokens.div_ceil(block_size.max(1)))
}

impl Engine {
    pub fn new(config: EngineConfig) -> Arc<Engine> {
        let now = unix_now();
        let info = EngineInfo {
            model_name: config.model.clone(),
            block_size: config.block_size,
            num_gpu_blocks: config.kv_blocks,
            max_model_len: config.max_model_len,
            process_start: now,
        };
        Arc::new(Engine {
            slots: Semaphore::new(config.max_num_seqs),
            state: Mutex::new(State {
                waiting: 0,
                running: 0,
                kv_blocks_used: 0,
                stats: EngineStats::new(config.max_model_len, now),
                synthetic: SyntheticLoad::default(),
                synthetic_due: 0.0,
            }),
            info,
            config,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The state lock guards plain numbers; a panic while holding it cannot leave them
    /// worse than slightly off, so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Real (not synthetic) requests waiting and running.
    pub fn load(&self) -> (usize, usize) {
        let state = self.lock();
        (state.waiting, state.running)
    }

    /// The `/metrics` body now.
    pub fn render_metrics(&self) -> String {
        let (stats, live) = {
            let state = self.lock();
            let synthetic = state.synthetic;
            let kv = state.kv_blocks_used as f64 / f64::from(self.config.kv_blocks.max(1));
            let live = LiveGauges {
                running: state.running as f64 + synthetic.running,
                waiting: state.waiting as f64 + synthetic.waiting,
                kv_cache_usage: (kv + synthetic.kv_cache_usage).clamp(0.0, 1.0),
            };
            (state.stats.clone(), live)
        };
        render(&self.info, &stats, live)
    }

    /// Replaces the synthetic load (all zero = none).
    pub fn set_synthetic_load(&self, load: SyntheticLoad) {
        let mut state = self.lock();
        state.synthetic = load;
        state.synthetic_due = 0.0;
    }

    /// Records the synthetic TTFT observations due after `elapsed`.
    pub fn tick_synthetic(&self, elapsed: Duration) {
        let mut state = self.lock();
        let Some(ttft) = state.synthetic.ttft_seconds else {
            return;
        };
        let rate = match state.synthetic.observations_per_second {
            r if r > 0.0 => r,
            _ => 1.0,
        };
        state.synthetic_due += rate * elapsed.as_secs_f64();
        while state.synthetic_due >= 1.0 {
            state.synthetic_due -= 1.0;
            state.stats.time_to_first_token.observe(ttft.max(0.0));
        }
    }

    /// Rejects a request vLLM would reject before queueing it.
    pub fn check_context(&self, prompt_tokens: u32, max_tokens: u32) -> Result<(), EngineError> {
        if u64::from(prompt_tokens) + u64::from(max_tokens) > u64::from(self.config.max_model_len) {
            return Err(EngineError::ContextTooLong {
                prompt_tokens,
                max_tokens,
                max_model_len: self.config.max_model_len,
            });
        }
        Ok(())
    }

    /// Runs one request through queue, prefill and decode. `on_token(i)` is called as
    /// token `i` (0-based) is produced; returning `false` aborts the request (client gone).
    pub async fn generate(
        &self,
        prompt_tokens: u32,
        max_tokens: u32,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<Generation, EngineError> {
        self.check_context(prompt_tokens, max_tokens)?;
        let arrived = Instant::now();
        let mut request = RequestGuard::enqueue(self)?;
        // The semaphore is never closed, so acquire only fails if it were; treat as abort.
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| EngineError::Aborted)?;
        let scheduled = Instant::now();
        request.start(prompt_tokens);

        let prefill = self.config.ttft + self.config.prefill_per_token * prompt_tokens;
        tokio::time::sleep(prefill).await;
        let first_token = Instant::now();
        {
            let mut state = self.lock();
            state.stats.prompt_tokens.value += f64::from(prompt_tokens);
            state.stats.generation_tokens.value += 1.0;
            state
                .stats
                .time_to_first_token
                .observe((first_token - arrived).as_secs_f64());
        }
        request.grow(prompt_tokens + 1);
        if !on_token(0) {
            return Err(EngineError::Aborted);
        }
        let mut last_token = first_token;
        for i in 1..max_tokens {
            let running = self.lock().running.max(1);
            let slowdown = 1.0 + BATCH_SLOWDOWN_PER_SEQ * (running - 1) as f64;
            tokio::time::sleep(self.config.itl.mul_f64(slowdown)).await;
            let now = Instant::now();
            {
                let mut state = self.lock();
                state.stats.generation_tokens.value += 1.0;
                state
                    .stats
                    .inter_token_latency
                    .observe((now - last_token).as_secs_f64());
            }
            last_token = now;
            request.grow(prompt_tokens + i + 1);
            if !on_token(i) {
                return Err(EngineError::Aborted);
            }
        }

        let finished = Instant::now();
        let decode = (finished - first_token).as_secs_f64();
        {
            let mut state = self.lock();
            let stats = &mut state.stats;
            let prompt = f64::from(prompt_tokens);
            let generated = f64::from(max_tokens);
            stats.request_prompt_tokens.observe(prompt);
            stats.request_generation_tokens.observe(generated);
            stats.request_max_num_generation_tokens.observe(generated);
            stats.request_params_n.observe(1.0);
            stats.request_params_max_tokens.observe(generated);
            stats.request_prefill_kv_computed_tokens.observe(prompt);
            if max_tokens > 1 {
                stats
                    .request_time_per_output_token
                    .observe(decode / f64::from(max_tokens - 1));
            }
            stats
                .e2e_request_latency
                .observe((finished - arrived).as_secs_f64());
            stats
                .request_queue_time
                .observe((scheduled - arrived).as_secs_f64());
            stats
                .request_inference_time
                .observe((finished - scheduled).as_secs_f64());
            stats
                .request_prefill_time
                .observe((first_token - scheduled).as_secs_f64());
            stats.request_decode_time.observe(decode);
            stats.finish(FinishReason::Length);
        }
        request.finish();
        Ok(Generation {
            prompt_tokens,
            completion_tokens: max_tokens,
            finish_reason: FinishReason::Length,
        })
    }
}

/// Keeps the gauges right however a request ends: dropping it unfinished (the client went
/// away and axum dropped the handler) counts an abort.
struct RequestGuard<'a> {
    engine: &'a Engine,
    running: bool,
    blocks: u64,
    finished: bool,
}

impl<'a> RequestGuard<'a> {
    fn enqueue(engine: &'a Engine) -> Result<RequestGuard<'a>, EngineError> {
        let mut state = engine.lock();
        if state.waiting >= MAX_QUEUED_REQUESTS {
            return Err(EngineError::QueueFull(state.waiting));
        }
        state.waiting += 1;
        Ok(RequestGuard {
            engine,
            running: false,
            blocks: 0,
            finished: false,
        })
    }

    fn start(&mut self, prompt_tokens: u32) {
        let blocks = blocks_for(prompt_tokens, self.engine.config.block_size);
        let mut state = self.engine.lock();
        state.waiting -= 1;
        state.running += 1;
        state.kv_blocks_used += blocks;
        self.running = true;
        self.blocks = blocks;
    }

    fn grow(&mut self, tokens: u32) {
        let blocks = blocks_for(tokens, self.engine.config.block_size);
        if blocks != self.blocks {
            let mut state = self.engine.lock();
            state.kv_blocks_used = state.kv_blocks_used + blocks - self.blocks;
            self.blocks = blocks;
        }
    }

    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.engine.lock();
        if self.running {
            state.running -= 1;
            state.kv_blocks_used -= self.blocks;
        } else {
            state.waiting -= 1;
        }
        if !self.finished {
            state.stats.finish(FinishReason::Abort);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_num_seqs: usize) -> EngineConfig {
        EngineConfig {
            model: "m".into(),
            max_num_seqs,
            ttft: Duration::from_millis(100),
            itl: Duration::from_millis(10),
            prefill_per_token: Duration::from_millis(1),
            kv_blocks: 100,
            block_size: 16,
            max_model_len: 1024,
        }
    }

    fn stats(engine: &Engine) -> EngineStats {
        engine.lock().stats.clone()
    }

    #[tokio::test(start_paused = true)]
    async fn single_request_timing_follows_the_model() {
        let engine = Engine::new(config(4));
        let result = engine.generate(20, 5, |_| true).await.unwrap();
        assert_eq!(result.completion_tokens, 5);
        let stats = stats(&engine);
        // TTFT = 100 ms + 20 × 1 ms; four more tokens at 10 ms (alone in the batch).
        assert!((stats.time_to_first_token.sum() - 0.12).abs() < 1e-3);
        assert_eq!(stats.inter_token_latency.count(), 4);
        assert!((stats.e2e_request_latency.sum() - 0.16).abs() < 1e-3);
        assert_eq!(stats.prompt_tokens.value, 20.0);
        assert_eq!(stats.generation_tokens.value, 5.0);
        assert_eq!(engine.load(), (0, 0));
        assert_eq!(engine.lock().kv_blocks_used, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_max_num_seqs_wait_in_the_queue() {
        let engine = Engine::new(config(2));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                engine.generate(16, 4, |_| true).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(engine.load(), (3, 2));
        // Still in prefill (116 ms): two 16-token prompts hold one block each of 100.
        assert!(engine
            .render_metrics()
            .contains("vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.02\n"));
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let stats = stats(&engine);
        assert_eq!(stats.time_to_first_token.count(), 5);
        assert!(stats.request_queue_time.sum() > 0.0);
        assert_eq!(engine.load(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_vanished_client_counts_as_abort_and_frees_its_slot() {
        let engine = Engine::new(config(1));
        let result = engine.generate(8, 10, |i| i < 2).await;
        assert_eq!(result, Err(EngineError::Aborted));
        assert_eq!(engine.load(), (0, 0));
        let stats = stats(&engine);
        assert_eq!(stats.request_success[2].value, 1.0);
        assert_eq!(engine.lock().kv_blocks_used, 0);
    }

    #[tokio::test]
    async fn context_length_is_enforced() {
        let engine = Engine::new(config(1));
        let result = engine.generate(1000, 100, |_| true).await;
        assert!(matches!(result, Err(EngineError::ContextTooLong { .. })));
    }

    #[test]
    fn synthetic_ttft_observations_follow_the_rate() {
        let engine = Engine::new(config(1));
        engine.set_synthetic_load(SyntheticLoad {
            waiting: 7.0,
            ttft_seconds: Some(3.0),
            observations_per_second: 4.0,
            ..SyntheticLoad::default()
        });
        for _ in 0..10 {
            engine.tick_synthetic(Duration::from_millis(100));
        }
        assert_eq!(stats(&engine).time_to_first_token.count(), 4);
        assert!(engine
            .render_metrics()
            .contains("vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 7.0\n"));
    }
}
