//! One simulated vLLM replica: continuous batching over a paged KV cache.
//!
//! Owns: the per-step scheduler (decodes first, then chunked prefills, then admissions from
//! the waiting queue), KV-block accounting with recompute preemption, step timing through the
//! [`ModelProfile`], and the cumulative counters and TTFT histogram a real vLLM would expose,
//! emitted as an [`EngineSnapshot`] at each scrape.
//! Does not own: routing, replica lifecycle (cold start, sleep) or time (see [`crate::replay`]).
//!
//! The scheduler follows vLLM V1's shape in simplified form: each step has a token budget;
//! running sequences are served in admission order (a decode costs one token, an unfinished
//! prefill a chunk); new sequences are admitted first-come-first-served while the batch has
//! fewer than `max_num_seqs` and the KV cache has blocks for their first chunk ("admission
//! waits when full"). When a running sequence needs a block and none is free, the most
//! recently admitted sequence is preempted: its blocks are freed and it goes back to the head
//! of the queue to recompute its prompt plus what it had generated ("preemption when it
//! overflows"). What is simplified: no prefix caching, no speculative decoding, no priority
//! scheduling, and the decode token of a step counts against the same budget as prefill.

use crate::calibration::ModelProfile;
use inferscale_metrics::histogram::Histogram;
use inferscale_metrics::profile::VLLM_TTFT_BUCKETS;
use inferscale_metrics::profile::{CounterSignal, Engine, GaugeSignal, HistogramSignal};
use inferscale_metrics::snapshot::EngineSnapshot;
use std::collections::VecDeque;

/// The served model name in emitted snapshots.
pub const MODEL_NAME: &str = "llama-3.1-8b";

/// Ground truth about one request, shared by all replicas (indexed by request id).
#[derive(Debug, Clone, Copy)]
pub struct RequestState {
    pub arrival: f64,
    /// When the first token was produced; `NaN` until then.
    pub first_token: f64,
    /// When a replica first scheduled it; `NaN` until then.
    pub scheduled: f64,
    /// When it reached the engine's queue (after any gateway wait).
    pub enqueued: f64,
}

/// A sequence inside a replica.
#[derive(Debug, Clone, Copy)]
pub struct Sequence {
    pub id: u32,
    /// Prompt tokens of the request.
    prompt: u32,
    /// Tokens to prefill: the prompt, plus tokens generated before a preemption.
    prefill_target: u32,
    prefilled: u32,
    /// Tokens generated so far (survives preemption: they were already streamed).
    generated: u32,
    output: u32,
    /// Tokens whose KV is cached.
    cached: u32,
    blocks: u32,
    /// Tokens this sequence processes in the step in flight (0 = not scheduled).
    step_tokens: u32,
}

impl Sequence {
    pub fn new(id: u32, prompt_tokens: u32, output_tokens: u32) -> Sequence {
        Sequence {
            id,
            prompt: prompt_tokens.max(1),
            prefill_target: prompt_tokens.max(1),
            prefilled: 0,
            generated: 0,
            output: output_tokens.max(1),
            cached: 0,
            blocks: 0,
            step_tokens: 0,
        }
    }

    fn prefilling(&self) -> bool {
        self.prefilled < self.prefill_target
    }
}

/// What a finished step produced.
#[derive(Debug, Default, Clone, Copy)]
pub struct StepOutcome {
    /// Sequences that completed in this step.
    pub finished: u32,
}

/// One simulated vLLM engine.
#[derive(Debug, Clone)]
pub struct Replica {
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    free_blocks: u32,
    total_blocks: u32,
    /// A step is in flight.
    pub stepping: bool,
    // Cumulative exposition state, as vLLM keeps it.
    prompt_tokens_total: f64,
    generation_tokens_total: f64,
    preemptions_total: f64,
    finished_total: f64,
    ttft: Histogram,
    /// Seconds spent stepping (the "CPU-like" busy time of the engine loop).
    pub busy_secs: f64,
}

impl Replica {
    pub fn new(profile: &ModelProfile) -> Replica {
        Replica {
            waiting: VecDeque::new(),
            running: Vec::new(),
            free_blocks: profile.kv_blocks,
            total_blocks: profile.kv_blocks,
            stepping: false,
            prompt_tokens_total: 0.0,
            generation_tokens_total: 0.0,
            preemptions_total: 0.0,
            finished_total: 0.0,
            ttft: Histogram::empty(&VLLM_TTFT_BUCKETS),
            busy_secs: 0.0,
        }
    }

    /// Requests in the engine (waiting + running).
    pub fn outstanding(&self) -> usize {
        self.waiting.len() + self.running.len()
    }

    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    pub fn running_len(&self) -> usize {
        self.running.len()
    }

    /// Fraction of KV blocks in use.
    pub fn kv_usage(&self) -> f64 {
        if self.total_blocks == 0 {
            return 0.0;
        }
        1.0 - self.free_blocks as f64 / self.total_blocks as f64
    }

    /// Adds a request to the engine's waiting queue.
    pub fn enqueue(&mut self, sequence: Sequence) {
        self.waiting.push_back(sequence);
    }

    /// Blocks needed to hold `tokens` cached tokens.
    #[inline]
    fn blocks_for(tokens: u32, block_tokens: u32) -> u32 {
        tokens.div_ceil(block_tokens)
    }

    /// Frees the blocks of the most recently admitted running sequence other than `keep`
    /// and requeues it for recomputation. Returns false when there is nothing to preempt.
    fn preempt_last(&mut self, keep: usize) -> bool {
        if self.running.len() <= keep + 1 {
            return false;
        }
        let Some(victim) = self.running.pop() else {
            return false;
        };
        self.requeue_for_recompute(victim);
        true
    }

    /// Frees a preempted sequence's blocks and puts it at the head of the queue to recompute
    /// its prompt and every token generated so far.
    fn requeue_for_recompute(&mut self, mut victim: Sequence) {
        self.free_blocks += victim.blocks;
        victim.prefill_target = victim.prompt + victim.generated;
        victim.blocks = 0;
        victim.cached = 0;
        victim.prefilled = 0;
        victim.step_tokens = 0;
        self.preemptions_total += 1.0;
        self.waiting.push_front(victim);
    }

    /// Plans the next step; returns its duration, or `None` when there is nothing to do.
    pub fn start_step(
        &mut self,
        now: f64,
        profile: &ModelProfile,
        requests: &mut [RequestState],
    ) -> Option<f64> {
        debug_assert!(!self.stepping);
        let block = profile.block_tokens;
        let mut budget = profile.max_batched_tokens;
        let mut decode_seqs = 0u32;
        let mut decode_context = 0u64;
        let mut prefill_tokens = 0u32;
        let mut attention_pairs = 0.0f64;
        let mut i = 0;
        while i < self.running.len() {
            if budget == 0 {
                self.running[i].step_tokens = 0;
                i += 1;
                continue;
            }
            let seq = self.running[i];
            let tokens = if seq.prefilling() {
                (seq.prefill_target - seq.prefilled).min(budget)
            } else {
                1
            };
            let need = Self::blocks_for(seq.cached + tokens, block).saturating_sub(seq.blocks);
            let mut preempted_self = false;
            while need > self.free_blocks {
                if !self.preempt_last(i) {
                    // Only this sequence is left and it does not fit: preempt it too so the
                    // cache never overflows (it retries when alone with an empty cache).
                    let victim = self.running.remove(i);
                    self.requeue_for_recompute(victim);
                    preempted_self = true;
                    break;
                }
            }
            if preempted_self {
                continue;
            }
            let seq = &mut self.running[i];
            self.free_blocks -= need;
            seq.blocks += need;
            seq.step_tokens = tokens;
            budget -= tokens;
            if seq.prefilling() {
                prefill_tokens += tokens;
                attention_pairs += tokens as f64 * (seq.cached as f64 + tokens as f64 / 2.0);
            } else {
                decode_seqs += 1;
                decode_context += seq.cached as u64;
            }
            i += 1;
        }
        // Admissions: FCFS while the batch and the cache have room for the first chunk.
        while budget > 0 && (self.running.len() as u32) < profile.max_num_seqs {
            let Some(front) = self.waiting.front() else {
                break;
            };
            let tokens = front.prefill_target.min(budget);
            let need = Self::blocks_for(tokens, block);
            if need > self.free_blocks {
                break;
            }
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            self.free_blocks -= need;
            seq.blocks = need;
            seq.step_tokens = tokens;
            budget -= tokens;
            prefill_tokens += tokens;
            attention_pairs += tokens as f64 * tokens as f64 / 2.0;
            if let Some(state) = requests.get_mut(seq.id as usize) {
                if state.scheduled.is_nan() {
                    state.scheduled = now;
                }
            }
            self.running.push(seq);
        }
        if decode_seqs == 0 && prefill_tokens == 0 {
            return None;
        }
        self.stepping = true;
        let secs = profile.step_secs(decode_seqs, decode_context, prefill_tokens, attention_pairs);
        self.busy_secs += secs;
        Some(secs)
    }

    /// Applies the step in flight at its end time `end`.
    pub fn finish_step(&mut self, end: f64, requests: &mut [RequestState]) -> StepOutcome {
        self.stepping = false;
        let mut outcome = StepOutcome::default();
        let mut freed = 0u32;
        let ttft = &mut self.ttft;
        let mut prompt_tokens = 0.0;
        let mut generation_tokens = 0.0;
        self.running.retain_mut(|seq| {
            let tokens = seq.step_tokens;
            if tokens == 0 {
                return true;
            }
            seq.step_tokens = 0;
            seq.cached += tokens;
            if seq.prefilling() {
                seq.prefilled += tokens;
                prompt_tokens += tokens as f64;
                if seq.prefilling() {
                    return true;
                }
                // The step that completes a prefill samples the next token.
                seq.generated += 1;
                generation_tokens += 1.0;
                if let Some(state) = requests.get_mut(seq.id as usize) {
                    if state.first_token.is_nan() {
                        state.first_token = end;
                        // vLLM measures TTFT from the request reaching the engine.
                        ttft.observe(end - state.enqueued);
                    }
                }
            } else {
                seq.generated += 1;
                generation_tokens += 1.0;
            }
            if seq.generated >= seq.output {
                freed += seq.blocks;
                outcome.finished += 1;
                return false;
            }
            true
        });
        self.free_blocks += freed;
        self.prompt_tokens_total += prompt_tokens;
        self.generation_tokens_total += generation_tokens;
        self.finished_total += outcome.finished as f64;
        outcome
    }

    /// The replica's `/metrics` as a snapshot taken at `now` (cumulative counters, gauges and
    /// the TTFT histogram, like a vLLM V1 server).
    pub fn snapshot(&self, now: f64) -> EngineSnapshot {
        let mut snapshot = EngineSnapshot::new(now, Engine::Vllm);
        snapshot.kv_capacity_tokens = None;
        let model = snapshot.model_mut(MODEL_NAME);
        model.set_gauge(GaugeSignal::QueueDepth, self.waiting.len() as f64);
        model.set_gauge(GaugeSignal::Running, self.running.len() as f64);
        model.set_gauge(GaugeSignal::KvCacheUsage, self.kv_usage());
        model.set_counter(CounterSignal::PromptTokens, self.prompt_tokens_total);
        model.set_counter(
            CounterSignal::GenerationTokens,
            self.generation_tokens_total,
        );
        model.set_counter(CounterSignal::Preemptions, self.preemptions_total);
        model.set_counter(CounterSignal::RequestsFinished, self.finished_total);
        model.set_histogram(HistogramSignal::TimeToFirstToken, self.ttft.clone());
        snapshot
    }

    pub fn preemptions(&self) -> f64 {
        self.preemptions_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: usize) -> Vec<RequestState> {
        vec![
            RequestState {
                arrival: 0.0,
                first_token: f64::NAN,
                scheduled: f64::NAN,
                enqueued: 0.0,
            };
            n
        ]
    }

    fn run_until_idle(r: &mut Replica, p: &ModelProfile, reqs: &mut [RequestState]) -> f64 {
        let mut t = 0.0;
        while let Some(d) = r.start_step(t, p, reqs) {
            t += d;
            r.finish_step(t, reqs);
        }
        t
    }

    #[test]
    fn single_request_takes_prefill_plus_decodes() {
        let p = ModelProfile::fixed_step(0.01, 8);
        let mut r = Replica::new(&p);
        let mut reqs = state(1);
        r.enqueue(Sequence::new(0, 100, 5));
        let t = run_until_idle(&mut r, &p, &mut reqs);
        // One prefill step (yields token 1) + 4 decode steps.
        assert!((t - 0.05).abs() < 1e-12, "{t}");
        assert!((reqs[0].first_token - 0.01).abs() < 1e-12);
        assert_eq!(r.kv_usage(), 0.0, "blocks returned");
    }

    #[test]
    fn max_num_seqs_bounds_the_batch() {
        let p = ModelProfile::fixed_step(0.01, 2);
        let mut r = Replica::new(&p);
        let mut reqs = state(3);
        for id in 0..3 {
            r.enqueue(Sequence::new(id, 10, 3));
        }
        r.start_step(0.0, &p, &mut reqs);
        assert_eq!(r.running_len(), 2);
        assert_eq!(r.waiting_len(), 1);
    }

    #[test]
    fn full_cache_preempts_newest_and_everything_finishes() {
        let mut p = ModelProfile::fixed_step(0.01, 8);
        p.kv_blocks = 10; // 160 tokens
        let mut r = Replica::new(&p);
        let mut reqs = state(2);
        r.enqueue(Sequence::new(0, 60, 40));
        r.enqueue(Sequence::new(1, 60, 40));
        run_until_idle(&mut r, &p, &mut reqs);
        assert!(r.preemptions() >= 1.0);
        assert!(reqs.iter().all(|s| !s.first_token.is_nan()));
        assert_eq!(r.outstanding(), 0);
        assert_eq!(r.kv_usage(), 0.0);
    }
}
