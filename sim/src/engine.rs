//! The simulated engine: continuous batching with a FIFO queue, timed with tokio, with vLLM's
//! sleep mode and a simulated restart.
//!
//! Owns: admission (context-length check, bounded queue), the batch of at most
//! `max_num_seqs` running requests, the timing model, KV-cache block accounting, sleep and
//! wake, and every observation that ends up in `/metrics`. Does not own: HTTP, JSON, or text
//! formatting.
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
//!
//! Sleep mode follows vLLM's engine core (`EngineCore.sleep`/`wake_up`, vLLM ≥ 0.19):
//! - `sleep(level, mode)` first pauses scheduling. `mode = abort` (vLLM's default) aborts
//!   every request the engine holds, waiting or running (`finished_reason="abort"`);
//!   `mode = wait` lets running requests finish. Requests that arrive while the engine is
//!   paused or asleep are accepted and **wait in the queue** (counted in
//!   `num_requests_waiting`) until it wakes — vLLM's `PAUSED_NEW` state — and are never run
//!   while asleep. Level 1 offloads the weights and level 2 discards them; both discard the
//!   KV cache (usage reads 0). Level 0 only pauses scheduling.
//! - `wake_up(tags)` restores the `weights` and/or `kv_cache` memory (all when no tag is
//!   given; a tag that is not asleep makes the memory part a no-op, as in vLLM), taking the
//!   configured wake time when weights come back, then resumes scheduling.
//!   `is_sleeping` is true while scheduling is paused or any memory tag sleeps. One
//!   deliberate difference: vLLM resumes scheduling after any `wake_up` call, even one that
//!   left `kv_cache` asleep; here requests stay queued until nothing sleeps, because an
//!   engine without its KV cache cannot serve.
//! - `vllm:engine_sleep_state` is set as vLLM's `record_sleep_state` sets it: after a sleep,
//!   `awake = 0` and `weights_offloaded`/`discard_all` = 1 for level 1/2; after **any**
//!   `wake_up` call `awake = 1` (even a partial one, as in vLLM).
//!
//! A simulated restart (`restart`) is what a new process looks like from outside: every
//! counter and histogram starts again from zero with a new `_created` time and a new
//! `process_start_time_seconds`, requests in flight are lost, the engine is awake.

use crate::process::ProcessStats;
use crate::vllm_metrics::{render, EngineInfo, EngineStats, FinishReason, LiveGauges, SleepGauge};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tracing::{info, warn};

/// Each extra running sequence slows every decode step by 2 %: enough for the decode rate
/// to fall visibly under load (real engines lose 1–5 % per sequence on small batches),
/// small enough that a full batch of 256 is not absurd.
pub const BATCH_SLOWDOWN_PER_SEQ: f64 = 0.02;

/// Requests allowed to wait at once. Each waiter is a parked task plus its request body;
/// 4096 covers any e2e scenario while bounding memory. Beyond it the server answers 503.
pub const MAX_QUEUED_REQUESTS: usize = 4096;

/// How often a sleep that waits for running requests looks again.
const DRAIN_POLL: Duration = Duration::from_millis(5);

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
    pub sleep: SleepConfig,
}

/// Sleep mode (vLLM's `--enable-sleep-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepConfig {
    /// Whether the sleep endpoints exist (vLLM serves them only with
    /// `VLLM_SERVER_DEV_MODE=1` and `--enable-sleep-mode`).
    pub enabled: bool,
    /// Time for `wake_up` to bring the weights back after a level-1 sleep (from CPU memory).
    pub wake_time_level1: Duration,
    /// Time for `wake_up` to bring the weights back after a level-2 sleep (reallocated and
    /// reloaded; in vLLM the reload is a separate `reload_weights` call, folded in here).
    pub wake_time_level2: Duration,
}

impl Default for SleepConfig {
    /// Off; wake times from vLLM's sleep-mode measurements of small models (level 1
    /// 0.26–0.82 s, level 2 0.85–2.58 s, vLLM blog 2025-10-26), rounded up.
    fn default() -> SleepConfig {
        SleepConfig {
            enabled: false,
            wake_time_level1: Duration::from_secs(1),
            wake_time_level2: Duration::from_secs(3),
        }
    }
}

/// How `sleep` treats requests already in the engine (vLLM's `PauseMode`; `keep`, which
/// freezes running requests in place, is not simulated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseMode {
    /// Abort every request the engine holds (vLLM's default).
    Abort,
    /// Let running requests finish; waiting ones stay queued.
    Wait,
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
    /// The client went away, the engine was put to sleep with `mode=abort`, or it
    /// restarted; counted as `finished_reason="abort"` (except across a restart).
    #[error("request aborted")]
    Aborted,
}

/// Synthetic load injected through `/admin/load`, on top of real requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticLoad {
    /// Added to `vllm:num_requests_waiting`.
    pub waiting: f64,
    /// Added to `vllm:num_requests_running` (not while asleep: nothing runs then).
    pub running: f64,
    /// Added to `vllm:kv_cache_usage_perc` (result capped at 1; not while asleep).
    pub kv_cache_usage: f64,
    /// When set, a TTFT observation of this many seconds is recorded
    /// `observations_per_second` times a second while the engine serves (not asleep).
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

/// The engine's sleep state (vLLM's scheduler pause state plus the executor's sleeping
/// memory tags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SleepState {
    paused: bool,
    weights_asleep: bool,
    kv_cache_asleep: bool,
    /// Level of the sleep that put the memory to sleep (decides the wake time).
    level: u8,
    gauge: SleepGauge,
}

impl SleepState {
    fn memory_asleep(self) -> bool {
        self.weights_asleep || self.kv_cache_asleep
    }

    fn is_sleeping(self) -> bool {
        self.paused || self.memory_asleep()
    }
}

/// What parked requests watch: whether the engine serves, and the abort epoch (a request
/// that sees it change was aborted by a sleep or a restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Control {
    serving: bool,
    abort_epoch: u64,
}

struct State {
    waiting: usize,
    running: usize,
    kv_blocks_used: u64,
    stats: EngineStats,
    synthetic: SyntheticLoad,
    /// Fractional synthetic observations carried to the next tick.
    synthetic_due: f64,
    process_start: f64,
    /// Bumped by every simulated restart; a request of an earlier incarnation is not
    /// counted in the new one's statistics.
    incarnation: u64,
    sleep: SleepState,
}

/// One simulated vLLM engine (`engine="0"`).
pub struct Engine {
    config: EngineConfig,
    slots: Semaphore,
    state: Mutex<State>,
    control: watch::Sender<Control>,
    /// Sleep and wake run one at a time, as vLLM's engine core runs utility calls.
    transitions: tokio::sync::Mutex<()>,
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
        let (control, _) = watch::channel(Control {
            serving: true,
            abort_epoch: 0,
        });
        Arc::new(Engine {
            slots: Semaphore::new(config.max_num_seqs),
            state: Mutex::new(State {
                waiting: 0,
                running: 0,
                kv_blocks_used: 0,
                stats: EngineStats::new(config.max_model_len, now),
                synthetic: SyntheticLoad::default(),
                synthetic_due: 0.0,
                process_start: now,
                incarnation: 0,
                sleep: SleepState::default(),
            }),
            control,
            transitions: tokio::sync::Mutex::new(()),
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
        let (stats, live, info) = {
            let state = self.lock();
            let synthetic = state.synthetic;
            let asleep = state.sleep.is_sleeping();
            let kv = state.kv_blocks_used as f64 / f64::from(self.config.kv_blocks.max(1));
            let (running, kv_extra) = if asleep {
                (0.0, 0.0)
            } else {
                (synthetic.running, synthetic.kv_cache_usage)
            };
            let live = LiveGauges {
                running: state.running as f64 + running,
                waiting: state.waiting as f64 + synthetic.waiting,
                kv_cache_usage: (kv + kv_extra).clamp(0.0, 1.0),
                sleep: state.sleep.gauge,
            };
            let info = EngineInfo {
                model_name: self.config.model.clone(),
                block_size: self.config.block_size,
                num_gpu_blocks: self.config.kv_blocks,
                max_model_len: self.config.max_model_len,
                process_start: state.process_start,
            };
            (state.stats.clone(), live, info)
        };
        render(&info, &stats, live, ProcessStats::read().as_ref())
    }

    /// Replaces the synthetic load (all zero = none).
    pub fn set_synthetic_load(&self, load: SyntheticLoad) {
        let mut state = self.lock();
        state.synthetic = load;
        state.synthetic_due = 0.0;
    }

    /// Records the synthetic TTFT observations due after `elapsed` (none while asleep).
    pub fn tick_synthetic(&self, elapsed: Duration) {
        let mut state = self.lock();
        let Some(ttft) = state.synthetic.ttft_seconds else {
            return;
        };
        if state.sleep.is_sleeping() {
            state.synthetic_due = 0.0;
            return;
        }
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

    /// What a new process looks like: counters, histograms and `_created` start again, a
    /// new `process_start_time_seconds`, requests in flight lost, awake. Returns the new
    /// start time.
    pub fn restart(&self) -> f64 {
        let now = unix_now();
        {
            let mut state = self.lock();
            state.stats = EngineStats::new(self.config.max_model_len, now);
            state.process_start = now;
            state.incarnation += 1;
            state.synthetic_due = 0.0;
            state.sleep = SleepState::default();
        }
        self.control.send_modify(|c| {
            c.serving = true;
            c.abort_epoch += 1;
        });
        info!(process_start = now, "simulated restart");
        now
    }

    /// vLLM's `is_sleeping`: scheduling paused or any memory asleep.
    pub fn is_sleeping(&self) -> bool {
        self.lock().sleep.is_sleeping()
    }

    fn publish_serving(&self, sleep: SleepState) {
        let serving = !sleep.is_sleeping();
        self.control.send_if_modified(|c| {
            let changed = c.serving != serving;
            c.serving = serving;
            changed
        });
    }

    /// Puts the engine to sleep at `level` (0 pauses scheduling only; 1 offloads the
    /// weights; 2 discards them; both discard the KV cache). Returns once asleep.
    pub async fn sleep(&self, level: u8, mode: PauseMode) {
        let _one_at_a_time = self.transitions.lock().await;
        let sleep = {
            let mut state = self.lock();
            state.sleep.paused = true;
            state.sleep
        };
        self.publish_serving(sleep);
        if mode == PauseMode::Abort {
            self.control.send_modify(|c| c.abort_epoch += 1);
        }
        // Aborted requests leave at their next await; running ones finish under `wait`.
        while self.lock().running > 0 {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let mut state = self.lock();
        if level >= 1 {
            if state.sleep.memory_asleep() {
                warn!(
                    level,
                    "already sleeping; memory left as it is (as vLLM does)"
                );
            } else {
                state.sleep.weights_asleep = true;
                state.sleep.kv_cache_asleep = true;
                state.sleep.level = level;
                // Nothing runs, so no block is held; the cache's contents are gone.
                state.kv_blocks_used = 0;
            }
        }
        state.sleep.gauge = SleepGauge::Asleep(level);
        info!(level, ?mode, "engine asleep");
    }

    /// Wakes the engine: restores the memory `tags` name (`weights`, `kv_cache`; all when
    /// `None`; `scheduling` is vLLM's tag for level 0 and only resumes scheduling), waits
    /// the wake time when weights come back, and resumes scheduling.
    pub async fn wake_up(&self, tags: Option<Vec<String>>) {
        let _one_at_a_time = self.transitions.lock().await;
        let tags: Option<Vec<String>> =
            tags.map(|t| t.into_iter().filter(|t| t != "scheduling").collect());
        let wake_memory = tags.as_ref().is_none_or(|t| !t.is_empty());
        let before = self.lock().sleep;
        if wake_memory && before.memory_asleep() {
            let asleep = |tag: &str| match tag {
                "weights" => before.weights_asleep,
                "kv_cache" => before.kv_cache_asleep,
                _ => false,
            };
            let (weights, kv_cache) = match &tags {
                None => (before.weights_asleep, before.kv_cache_asleep),
                Some(t) if t.iter().all(|tag| asleep(tag)) => (
                    t.iter().any(|tag| tag == "weights"),
                    t.iter().any(|tag| tag == "kv_cache"),
                ),
                Some(t) => {
                    warn!(tags = ?t, "a tag is not asleep; memory left as it is (as vLLM does)");
                    (false, false)
                }
            };
            if weights {
                let wake_time = match before.level {
                    2 => self.config.sleep.wake_time_level2,
                    _ => self.config.sleep.wake_time_level1,
                };
                tokio::time::sleep(wake_time).await;
            }
            let mut state = self.lock();
            state.sleep.weights_asleep &= !weights;
            state.sleep.kv_cache_asleep &= !kv_cache;
        }
        let sleep = {
            let mut state = self.lock();
            state.sleep.paused = false;
            state.sleep.gauge = SleepGauge::Awake;
            state.sleep
        };
        self.publish_serving(sleep);
        info!(tags = ?tags, still_sleeping = sleep.is_sleeping(), "wake_up");
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

    /// Runs `work` unless the request (admitted at `epoch`) is aborted first.
    async fn unless_aborted<T>(
        &self,
        epoch: u64,
        work: impl Future<Output = T>,
    ) -> Result<T, EngineError> {
        let mut control = self.control.subscribe();
        tokio::select! {
            result = work => Ok(result),
            _ = control.wait_for(|c| c.abort_epoch != epoch) => Err(EngineError::Aborted),
        }
    }

    /// Waits for a batch slot while the engine serves; a sleep that starts meanwhile sends
    /// the request back to waiting.
    async fn schedule(&self, epoch: u64) -> Result<tokio::sync::SemaphorePermit<'_>, EngineError> {
        let mut control = self.control.subscribe();
        loop {
            self.unless_aborted(epoch, control.wait_for(|c| c.serving))
                .await?
                .map_err(|_| EngineError::Aborted)?;
            // The semaphore is never closed, so acquire only fails if it were; treat as abort.
            let slot = self
                .unless_aborted(epoch, self.slots.acquire())
                .await?
                .map_err(|_| EngineError::Aborted)?;
            if self.control.borrow().serving {
                return Ok(slot);
            }
        }
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
        let epoch = request.epoch;
        let _slot = self.schedule(epoch).await?;
        let scheduled = Instant::now();
        request.start(prompt_tokens);

        let prefill = self.config.ttft + self.config.prefill_per_token * prompt_tokens;
        self.unless_aborted(epoch, tokio::time::sleep(prefill))
            .await?;
        let first_token = Instant::now();
        {
            let mut state = self.lock();
            state.stats.add_prompt_tokens(f64::from(prompt_tokens));
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
            self.unless_aborted(epoch, tokio::time::sleep(self.config.itl.mul_f64(slowdown)))
                .await?;
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
/// away and axum dropped the handler, or a sleep or restart aborted it) counts an abort —
/// in the statistics of the incarnation that admitted it only.
struct RequestGuard<'a> {
    engine: &'a Engine,
    running: bool,
    blocks: u64,
    finished: bool,
    epoch: u64,
    incarnation: u64,
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
            epoch: engine.control.borrow().abort_epoch,
            incarnation: state.incarnation,
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
            // A sleep may have emptied the cache already.
            state.kv_blocks_used = state.kv_blocks_used.saturating_sub(self.blocks);
        } else {
            state.waiting -= 1;
        }
        if !self.finished && state.incarnation == self.incarnation {
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
            sleep: SleepConfig::default(),
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

    fn sleepy(max_num_seqs: usize) -> Arc<Engine> {
        Engine::new(EngineConfig {
            sleep: SleepConfig {
                enabled: true,
                wake_time_level1: Duration::from_secs(2),
                wake_time_level2: Duration::from_secs(5),
            },
            ..config(max_num_seqs)
        })
    }

    fn gauge_line(engine: &Engine, state: &str) -> f64 {
        let body = engine.render_metrics();
        let prefix = format!(
            "vllm:engine_sleep_state{{engine=\"0\",model_name=\"m\",sleep_state=\"{state}\"}} "
        );
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {state} line"))
            .parse()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_aborts_requests_in_flight_and_queues_new_ones_until_awake() {
        let engine = sleepy(1);
        let spawn = |engine: &Arc<Engine>| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.generate(16, 100, |_| true).await })
        };
        let (running, waiting) = (spawn(&engine), spawn(&engine));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(engine.load(), (1, 1));
        assert!(engine.lock().kv_blocks_used > 0);

        engine.sleep(1, PauseMode::Abort).await;
        assert_eq!(running.await.unwrap(), Err(EngineError::Aborted));
        assert_eq!(waiting.await.unwrap(), Err(EngineError::Aborted));
        assert!(engine.is_sleeping());
        assert_eq!(stats(&engine).request_success[2].value, 2.0, "two aborts");
        assert_eq!(engine.lock().kv_blocks_used, 0, "KV cache discarded");
        assert_eq!(gauge_line(&engine, "awake"), 0.0);
        assert_eq!(gauge_line(&engine, "weights_offloaded"), 1.0);
        assert_eq!(gauge_line(&engine, "discard_all"), 0.0);

        // Arrives while asleep: waits, is never run.
        let first_tokens = stats(&engine).time_to_first_token.count();
        let late = spawn(&engine);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(engine.load(), (1, 0));
        assert_eq!(stats(&engine).time_to_first_token.count(), first_tokens);

        let woke = Instant::now();
        engine.wake_up(None).await;
        assert_eq!(woke.elapsed(), Duration::from_secs(2), "level-1 wake time");
        assert!(!engine.is_sleeping());
        assert_eq!(gauge_line(&engine, "awake"), 1.0);
        let done = late.await.unwrap().unwrap();
        assert_eq!(done.completion_tokens, 100);
        // Its TTFT counts the time it waited for the engine to wake.
        assert!(stats(&engine).time_to_first_token.sum() > 62.0);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_mode_lets_running_requests_finish_first() {
        let engine = sleepy(4);
        let request = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.generate(16, 10, |_| true).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        engine.sleep(2, PauseMode::Wait).await;
        assert_eq!(request.await.unwrap().unwrap().completion_tokens, 10);
        assert_eq!(
            stats(&engine).request_success[1].value,
            1.0,
            "finished, not aborted"
        );
        assert_eq!(gauge_line(&engine, "discard_all"), 1.0);
        let woke = Instant::now();
        engine.wake_up(None).await;
        assert_eq!(woke.elapsed(), Duration::from_secs(5), "level-2 wake time");
    }

    #[tokio::test(start_paused = true)]
    async fn partial_wake_reads_awake_like_vllm_but_serves_only_when_all_memory_is_back() {
        let engine = sleepy(1);
        engine.sleep(1, PauseMode::Abort).await;
        engine.wake_up(Some(vec!["weights".into()])).await;
        // vLLM records awake after any wake_up call; is_sleeping stays true.
        assert_eq!(gauge_line(&engine, "awake"), 1.0);
        assert!(engine.is_sleeping());
        let request = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.generate(16, 2, |_| true).await })
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(engine.load(), (1, 0), "queued while kv_cache sleeps");
        // A tag that is not asleep: the memory part is a no-op.
        engine.wake_up(Some(vec!["weights".into()])).await;
        assert!(engine.is_sleeping());
        let woke = Instant::now();
        engine.wake_up(Some(vec!["kv_cache".into()])).await;
        assert_eq!(woke.elapsed(), Duration::ZERO, "no weights to bring back");
        assert!(!engine.is_sleeping());
        request.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn level_zero_only_pauses_scheduling() {
        let engine = sleepy(1);
        engine.sleep(0, PauseMode::Abort).await;
        assert!(engine.is_sleeping());
        for state in ["awake", "weights_offloaded", "discard_all"] {
            assert_eq!(gauge_line(&engine, state), 0.0, "{state}");
        }
        let woke = Instant::now();
        engine.wake_up(Some(vec!["scheduling".into()])).await;
        assert_eq!(woke.elapsed(), Duration::ZERO);
        assert!(!engine.is_sleeping());
    }

    #[tokio::test(start_paused = true)]
    async fn restart_starts_counters_histograms_and_start_time_again() {
        let engine = sleepy(2);
        engine.generate(8, 3, |_| true).await.unwrap();
        let start_before = engine.lock().process_start;
        let created_before = stats(&engine).prompt_tokens.created;
        assert_eq!(stats(&engine).time_to_first_token.count(), 1);
        engine.sleep(1, PauseMode::Abort).await;
        let in_flight = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.generate(8, 3, |_| true).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;

        std::thread::sleep(Duration::from_millis(2)); // a later wall-clock start time
        let started = engine.restart();
        assert_eq!(
            in_flight.await.unwrap(),
            Err(EngineError::Aborted),
            "lost with the old process"
        );
        let after = stats(&engine);
        assert!(started > start_before);
        assert_eq!(engine.lock().process_start, started);
        assert!(after.prompt_tokens.created > created_before, "new _created");
        assert_eq!(after.prompt_tokens.value, 0.0);
        assert_eq!(after.time_to_first_token.count(), 0);
        assert_eq!(
            after.request_success[2].value, 0.0,
            "the old process's abort is not counted"
        );
        assert!(!engine.is_sleeping(), "a new process starts awake");
        assert_eq!(engine.load(), (0, 0));
    }
}
