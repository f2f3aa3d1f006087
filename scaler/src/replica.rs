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
//! overflows"). As in V1's `Scheduler.schedule`, a step that preempted anything admits nothing
//! from the waiting queue, so a preempted request is never readmitted in the same step.
//!
//! Prefix caching (automatic prefix caching, on by default in V1): when requests carry
//! per-block prefix hashes (a trace's `hash_ids`), a replica remembers the hashes of prompts it
//! computed, least recently used first out, up to its KV capacity (freed blocks keep their
//! content until reused); an admitted request skips the prefill of its longest cached prefix
//! (never the last token, which must be computed to sample). What is simplified: no
//! speculative decoding, no priority scheduling, the decode token of a step counts against the
//! same budget as prefill, and cached blocks are charged to each sequence that uses them.

use crate::calibration::ModelProfile;
use inferscale_metrics::histogram::Histogram;
use inferscale_metrics::profile::VLLM_TTFT_BUCKETS;
use inferscale_metrics::profile::{CounterSignal, Engine, GaugeSignal, HistogramSignal};
use inferscale_metrics::snapshot::EngineSnapshot;
use std::collections::{HashMap, VecDeque};

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
    /// Prefix hashes of the prompt: `hashes.0..hashes.0 + hashes.1` in the trace's table.
    hashes: (u32, u32),
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
            hashes: (0, 0),
        }
    }

    /// The same sequence with per-block prefix hashes (a range of the trace's hash table).
    pub fn with_hashes(mut self, start: u32, len: u32) -> Sequence {
        self.hashes = (start, len);
        self
    }

    /// Tokens still to prefill.
    fn pending_prefill(&self) -> u64 {
        self.prefill_target.saturating_sub(self.prefilled) as u64
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
    /// Prompt tokens queued or mid-prefill (what a token-aware endpoint picker weighs).
    pending_prefill: u64,
    prefix: PrefixCache,
}

/// Per-block prefix hashes a replica has computed, least recently used first out.
#[derive(Debug, Clone, Default)]
pub struct PrefixCache {
    /// Hash → the tick it was last used.
    last_used: HashMap<u64, u64>,
    /// (tick, hash) in use order; entries whose tick is stale are skipped.
    order: VecDeque<(u64, u64)>,
    tick: u64,
    /// Hash blocks the cache holds at most.
    capacity: usize,
}

impl PrefixCache {
    fn touch(&mut self, hash: u64) {
        self.tick += 1;
        self.last_used.insert(hash, self.tick);
        self.order.push_back((self.tick, hash));
        while self.last_used.len() > self.capacity {
            let Some((tick, old)) = self.order.pop_front() else {
                break;
            };
            if self.last_used.get(&old) == Some(&tick) {
                self.last_used.remove(&old);
            }
        }
        if self.order.len() > 4 * self.capacity.max(16) {
            let live = &self.last_used;
            self.order.retain(|(t, h)| live.get(h) == Some(t));
        }
    }

    /// Leading hashes of `hashes` that are cached (each touched).
    fn longest_prefix(&mut self, hashes: &[u64]) -> usize {
        let mut matched = 0;
        for &h in hashes {
            if !self.last_used.contains_key(&h) {
                break;
            }
            self.touch(h);
            matched += 1;
        }
        matched
    }
}

/// Per-block prefix hashes of every request of a trace, and the tokens one hash covers.
#[derive(Debug, Clone, Copy)]
pub struct PrefixHashes<'a> {
    pub table: &'a [u64],
    pub block_tokens: u32,
}

impl PrefixHashes<'_> {
    pub const NONE: PrefixHashes<'static> = PrefixHashes {
        table: &[],
        block_tokens: 1,
    };

    fn of(&self, (start, len): (u32, u32)) -> &[u64] {
        self.table
            .get(start as usize..(start + len) as usize)
            .unwrap_or(&[])
    }
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
            pending_prefill: 0,
            prefix: PrefixCache::default(),
        }
    }

    /// Sizes the prefix cache for hashes covering `block_tokens` tokens each.
    pub fn enable_prefix_cache(&mut self, profile: &ModelProfile, block_tokens: u32) {
        self.prefix.capacity =
            (profile.kv_capacity_tokens() / block_tokens.max(1) as f64).max(1.0) as usize;
    }

    /// Prompt tokens queued or mid-prefill.
    pub fn pending_prefill_tokens(&self) -> u64 {
        self.pending_prefill
    }

    /// Prompt tokens of `hashes` this replica would find cached (without touching them).
    pub fn cached_prefix_tokens(&self, hashes: &[u64], block_tokens: u32) -> u64 {
        hashes
            .iter()
            .take_while(|h| self.prefix.last_used.contains_key(h))
            .count() as u64
            * block_tokens as u64
    }

    /// Ids of every request in the engine (waiting and running).
    pub fn request_ids(&self) -> Vec<u32> {
        self.waiting
            .iter()
            .chain(self.running.iter())
            .map(|s| s.id)
            .collect()
    }

    /// Removes a request (a client gave up, or the pod is killed), freeing its blocks.
    /// Returns whether it was here.
    pub fn abort(&mut self, id: u32) -> bool {
        if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            if let Some(seq) = self.waiting.remove(i) {
                self.pending_prefill -= seq.pending_prefill();
            }
            return true;
        }
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            let seq = self.running.remove(i);
            self.pending_prefill -= seq.pending_prefill();
            self.free_blocks += seq.blocks;
            return true;
        }
        false
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
        self.pending_prefill += sequence.pending_prefill();
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
        self.pending_prefill -= victim.pending_prefill();
        self.pending_prefill += (victim.prompt + victim.generated) as u64;
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
        hashes: PrefixHashes<'_>,
    ) -> Option<f64> {
        debug_assert!(!self.stepping);
        let preemptions_before = self.preemptions_total;
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
        // Admissions: FCFS while the batch and the cache have room for the first chunk — and
        // none at all in a step that preempted (V1: no readmission in the same step).
        let preempted = self.preemptions_total > preemptions_before;
        while !preempted && budget > 0 && (self.running.len() as u32) < profile.max_num_seqs {
            let Some(front) = self.waiting.front() else {
                break;
            };
            // The longest cached prefix is skipped (never the last prompt token).
            let prompt_hashes = hashes.of(front.hashes);
            let hit = if prompt_hashes.is_empty() || front.generated > 0 {
                0
            } else {
                (self.cached_prefix_tokens(prompt_hashes, hashes.block_tokens) as u32)
                    .min(front.prefill_target.saturating_sub(1))
            };
            let tokens = (front.prefill_target - hit).min(budget);
            let need = Self::blocks_for(hit + tokens, block);
            if need > self.free_blocks {
                break;
            }
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            if hit > 0 {
                self.prefix.longest_prefix(prompt_hashes);
                seq.prefilled = hit;
                seq.cached = hit;
                self.pending_prefill -= hit as u64;
            }
            self.free_blocks -= need;
            seq.blocks = need;
            seq.step_tokens = tokens;
            budget -= tokens;
            prefill_tokens += tokens;
            attention_pairs += tokens as f64 * (hit as f64 + tokens as f64 / 2.0);
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
    pub fn finish_step(
        &mut self,
        end: f64,
        requests: &mut [RequestState],
        hashes: PrefixHashes<'_>,
    ) -> StepOutcome {
        self.stepping = false;
        let mut computed_prefixes: Vec<(u32, u32)> = Vec::new();
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
                if seq.hashes.1 > 0 {
                    computed_prefixes.push(seq.hashes);
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
        self.pending_prefill = self.pending_prefill.saturating_sub(prompt_tokens as u64);
        for range in computed_prefixes {
            for &h in hashes.of(range) {
                self.prefix.touch(h);
            }
        }
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

    pub(super) fn state(n: usize) -> Vec<RequestState> {
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
        while let Some(d) = r.start_step(t, p, reqs, PrefixHashes::NONE) {
            t += d;
            r.finish_step(t, reqs, PrefixHashes::NONE);
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
        r.start_step(0.0, &p, &mut reqs, PrefixHashes::NONE);
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

#[cfg(test)]
mod v1_and_prefix_tests {
    use super::tests::state;
    use super::*;

    #[test]
    fn a_step_that_preempts_admits_nothing() {
        // 10 blocks of 16 tokens. Two running sequences fill the cache; a third waits. When
        // the second needs a block, the newest running one is preempted, and in that step the
        // waiting queue is not admitted from (vLLM V1 `schedule`: no readmission in the same
        // step) — the preempted sequence is back at the head of the queue.
        let mut p = ModelProfile::fixed_step(0.01, 8);
        p.kv_blocks = 10;
        let mut r = Replica::new(&p);
        let mut reqs = state(3);
        r.enqueue(Sequence::new(0, 64, 40)); // 4 blocks
        r.enqueue(Sequence::new(1, 80, 40)); // 5 blocks
        r.start_step(0.0, &p, &mut reqs, PrefixHashes::NONE);
        r.finish_step(0.01, &mut reqs, PrefixHashes::NONE);
        r.enqueue(Sequence::new(2, 8, 5));
        let mut t = 0.01;
        let preempted_before = r.preemptions();
        while r.preemptions() == preempted_before {
            let waiting_before = r.waiting_len();
            r.start_step(t, &p, &mut reqs, PrefixHashes::NONE);
            if r.preemptions() > preempted_before {
                // The step that preempted admitted nothing: the queue grew by the victim.
                assert_eq!(r.waiting_len(), waiting_before + 1);
                assert_eq!(r.waiting.front().map(|s| s.id), Some(1));
            }
            t += 0.01;
            r.finish_step(t, &mut reqs, PrefixHashes::NONE);
        }
    }

    #[test]
    fn a_cached_prefix_skips_its_prefill() {
        // Two 4,096-token prompts sharing their first 3 hash blocks of 1,024 tokens: the
        // second prefills only 1,024 tokens (the last block is never taken from the cache).
        let p = ModelProfile::llama31_8b_h100();
        let table = [11u64, 12, 13, 14, 11, 12, 13, 99];
        let hashes = PrefixHashes {
            table: &table,
            block_tokens: 1024,
        };
        let mut r = Replica::new(&p);
        r.enable_prefix_cache(&p, 1024);
        let mut reqs = state(2);
        let run = |r: &mut Replica, reqs: &mut Vec<RequestState>, id: u32, start: u32| {
            r.enqueue(Sequence::new(id, 4096, 1).with_hashes(start, 4));
            let mut t = 0.0;
            while let Some(d) = r.start_step(t, &p, reqs, hashes) {
                t += d;
                r.finish_step(t, reqs, hashes);
            }
            t
        };
        let cold = run(&mut r, &mut reqs, 0, 0);
        assert_eq!(r.cached_prefix_tokens(&table[4..8], 1024), 3 * 1024);
        let warm = run(&mut r, &mut reqs, 1, 4);
        // Cold: 4,096 tokens in one chunk; warm: 1,024 tokens attending to 4,096.
        let expect_cold = p.step_secs(0, 0, 4096, 4096.0 * 2048.0);
        let expect_warm = p.step_secs(0, 0, 1024, 1024.0 * (3072.0 + 512.0));
        assert!(
            (cold - expect_cold).abs() < 1e-12,
            "{cold} vs {expect_cold}"
        );
        assert!(
            (warm - expect_warm).abs() < 1e-12,
            "{warm} vs {expect_warm}"
        );
        assert_eq!(r.pending_prefill_tokens(), 0);
    }

    #[test]
    fn abort_frees_the_blocks_and_the_queue() {
        let p = ModelProfile::fixed_step(0.01, 8);
        let mut r = Replica::new(&p);
        let mut reqs = state(2);
        r.enqueue(Sequence::new(0, 100, 50));
        r.enqueue(Sequence::new(1, 100, 50));
        r.start_step(0.0, &p, &mut reqs, PrefixHashes::NONE);
        r.finish_step(0.01, &mut reqs, PrefixHashes::NONE);
        assert!(r.kv_usage() > 0.0);
        assert!(r.abort(0) && r.abort(1));
        assert!(!r.abort(1), "already gone");
        assert_eq!((r.outstanding(), r.kv_usage()), (0, 0.0));
        assert_eq!(r.pending_prefill_tokens(), 0);
    }
}
