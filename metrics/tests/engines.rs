//! Golden tests of the SGLang and TGI profiles on real scrapes (`../shared/fixtures/sglang/`
//! and `../shared/fixtures/tgi/`, never copied into the repo). Every expected number was
//! worked out by hand from the fixture text (the bucket lines are quoted in the comments);
//! `tests/golden/reference_engines.py` computes the same independently in Python, and
//! `tests/golden/test_engines_match_reference.py` compares it with `adapter inspect --json`.
//!
//! These tests need the shared fixtures. When the folder is absent they **fail**, saying
//! where they looked, unless `INFERSCALE_ALLOW_SKIP=1` says skipping is intended; then they
//! print `SKIPPED` and return (so a skip is never a silent pass).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first broken assumption"
)]

use inferscale_metrics::parser::Format;
use inferscale_metrics::profile::{CounterSignal, Engine, GaugeSignal, RouteIndex};
use inferscale_metrics::signals::{replica_signals, Missing, Reading, SignalOptions, SingleScrape};
use inferscale_metrics::snapshot::{EngineSnapshot, ModelSnapshot};

mod support;
use support::shared_fixture;

fn snapshot(body: &str, taken_at: f64) -> EngineSnapshot {
    EngineSnapshot::from_exposition(body, Format::Prometheus, taken_at, &RouteIndex::engines())
}

fn approx(actual: Reading, expected: f64) {
    match actual {
        Reading::Value(v) => assert!(
            (v - expected).abs() <= 1e-9 * expected.abs().max(1.0),
            "expected {expected}, got {v}"
        ),
        Reading::Missing(why) => panic!("expected {expected}, got missing ({why:?})"),
    }
}

fn since_start() -> SignalOptions {
    SignalOptions {
        single_scrape: SingleScrape::SinceStart,
        ..SignalOptions::default()
    }
}

fn only_model(snapshot: &EngineSnapshot) -> (&str, &ModelSnapshot) {
    assert_eq!(snapshot.models.len(), 1, "{:?}", snapshot.models.keys());
    let (name, model) = snapshot.models.iter().next().unwrap();
    (name, model)
}

fn clean(snapshot: &EngineSnapshot) {
    assert_eq!(
        snapshot.parse_stats.skipped(),
        0,
        "{:?}",
        snapshot.parse_stats.first_errors
    );
    assert_eq!(snapshot.dropped.total(), 0, "{:?}", snapshot.dropped);
}

mod sglang {
    use super::*;

    /// SGLang 0.3.5 (docs sample, gemma-2-9b-it): the oldest layout, `name=` labels,
    /// `num_requests_running|waiting`, `waiting_request_latency_seconds`.
    #[test]
    fn v0_3_5_docs_sample() {
        let Some(body) = shared_fixture("sglang/sglang-docs-2024-11-07-5bc2508-gemma-2-9b-it.txt")
        else {
            return;
        };
        let snap = snapshot(&body, 0.0);
        clean(&snap);
        assert_eq!(snap.engine, Some(Engine::Sglang));
        let (name, model) = only_model(&snap);
        assert_eq!(
            name, "google/gemma-2-9b-it",
            "the `name` label names the model"
        );
        // `sglang:num_requests_waiting{name=…} 0.0`, `…running… 0.0`, `token_usage 0.01`.
        assert_eq!(model.gauge(GaugeSignal::QueueDepth), Some(0.0));
        assert_eq!(model.gauge(GaugeSignal::Running), Some(0.0));
        assert_eq!(model.gauge(GaugeSignal::KvCacheUsage), Some(0.01));
        // `sglang:max_total_num_tokens … 161721.0`: the KV pool in tokens.
        assert_eq!(snap.kv_capacity_tokens, Some(161721.0));
        assert_eq!(model.counter(CounterSignal::PromptTokens), Some(506780.0));
        assert_eq!(
            model.counter(CounterSignal::GenerationTokens),
            Some(424549.0)
        );
        // No request counter in 0.3.5: `e2e_request_latency_seconds_count … 2104.0`.
        assert_eq!(model.counter(CounterSignal::RequestsFinished), Some(2104.0));

        let s = replica_signals(&[&snap], since_start()).unwrap();
        let m = &s.models[name];
        // TTFT: cumulative 707 at le=0.1, 1187 at le=0.25, 2124 in all; p50 rank 1062
        // → 0.1 + 0.15·(1062−707)/480.
        approx(m.time_to_first_token.p50, 0.1 + 0.15 * 355.0 / 480.0);
        approx(m.time_to_first_token.observations, 2124.0);
        // Queue time from `waiting_request_latency_seconds`: 900 at le=5, 1270 at le=10,
        // 1623 at le=20, 2104 at le=50. p50 rank 1052 → 5 + 5·152/370;
        // p90 rank 1893.6 → 20 + 30·270.6/481.
        approx(m.queue_time.p50, 5.0 + 5.0 * 152.0 / 370.0);
        approx(m.queue_time.p90, 20.0 + 30.0 * 270.6 / 481.0);
        // ITL from `time_per_output_token_seconds`: 422425 observations.
        approx(m.inter_token_latency.observations, 422425.0);
    }

    /// SGLang 0.4.0 (docs sample after one request): `model_name=`, `num_queue_reqs`, no
    /// queue-time histogram and no KV capacity gauge.
    #[test]
    fn v0_4_0_docs_sample() {
        let Some(body) =
            shared_fixture("sglang/sglang-docs-2024-12-22-8496701-llama-3.1-8b-instruct.txt")
        else {
            return;
        };
        let snap = snapshot(&body, 0.0);
        clean(&snap);
        let (name, model) = only_model(&snap);
        assert_eq!(name, "meta-llama/Llama-3.1-8B-Instruct");
        assert_eq!(model.gauge(GaugeSignal::QueueDepth), Some(0.0));
        assert_eq!(model.counter(CounterSignal::PromptTokens), Some(7.0));
        assert_eq!(model.counter(CounterSignal::GenerationTokens), Some(8.0));
        assert_eq!(model.counter(CounterSignal::RequestsFinished), Some(1.0));
        assert_eq!(
            snap.kv_capacity_tokens, None,
            "0.4.0 exposes no KV pool size"
        );
        let s = replica_signals(&[&snap], since_start()).unwrap();
        let m = &s.models[name];
        // One TTFT observation, cumulative 0 at le=0.25 and 1 at le=0.5 → 0.25 + 0.25·0.5.
        approx(m.time_to_first_token.p50, 0.375);
        assert_eq!(m.queue_time.p50, Reading::Missing(Missing::NotExposed));
        // `func_latency_seconds{name="generate_request"}` is not a model.
        assert!(!snap.models.contains_key("generate_request"));
    }

    /// SGLang 0.4.3 (docs sample under load): 2826 queued, 162 running, TTFT mostly above
    /// the last finite bound.
    #[test]
    fn v0_4_3_docs_sample_under_load() {
        let Some(body) =
            shared_fixture("sglang/sglang-docs-2025-03-03-a7000a7-llama-3.1-8b-instruct.txt")
        else {
            return;
        };
        let snap = snapshot(&body, 0.0);
        clean(&snap);
        let (name, model) = only_model(&snap);
        assert_eq!(model.gauge(GaugeSignal::QueueDepth), Some(2826.0));
        assert_eq!(model.gauge(GaugeSignal::Running), Some(162.0));
        assert_eq!(model.gauge(GaugeSignal::KvCacheUsage), Some(0.28));
        // Go-style exponent values: `8.128902e+06`.
        assert_eq!(
            model.counter(CounterSignal::PromptTokens),
            Some(8_128_902.0)
        );
        assert_eq!(
            model.counter(CounterSignal::RequestsFinished),
            Some(11228.0)
        );
        let s = replica_signals(&[&snap], since_start()).unwrap();
        let m = &s.models[name];
        // 2513 of 11008 at le=30.0 (the last finite bound): p50 rank 5504 lands in +Inf,
        // which histogram_quantile answers with the highest finite bound.
        approx(m.time_to_first_token.p50, 30.0);
        approx(m.time_to_first_token.observations, 11008.0);
    }

    /// SGLang 0.5.x (real scrape through Dynamo, one request): scheduler gauges carry
    /// `engine_type, moe_ep_rank, pp_rank, tp_rank`, tokenizer histograms only `model_name`.
    #[test]
    fn v0_5_real_scrape() {
        let Some(body) = shared_fixture("sglang/sglang-0.5.x-dynamo-qwen3-0.6b.txt") else {
            return;
        };
        let snap = snapshot(&body, 0.0);
        clean(&snap);
        let (name, model) = only_model(&snap);
        assert_eq!(name, "Qwen/Qwen3-0.6B");
        assert_eq!(model.gauge(GaugeSignal::QueueDepth), Some(0.0));
        assert_eq!(model.gauge(GaugeSignal::Running), Some(0.0));
        assert_eq!(model.gauge(GaugeSignal::KvCacheUsage), Some(0.0));
        assert_eq!(snap.kv_capacity_tokens, Some(92962.0));
        assert_eq!(model.counter(CounterSignal::PromptTokens), Some(33.0));
        assert_eq!(model.counter(CounterSignal::GenerationTokens), Some(300.0));
        // `sglang:num_requests_total … 1.0` (ranked before the e2e count, also 1).
        assert_eq!(model.counter(CounterSignal::RequestsFinished), Some(1.0));
        let s = replica_signals(&[&snap], since_start()).unwrap();
        let m = &s.models[name];
        // ITL: 57 at le=0.002, 299 at le=0.004; p50 rank 149.5 → 0.002 + 0.002·92.5/242.
        approx(m.inter_token_latency.p50, 0.002 + 0.002 * 92.5 / 242.0);
        // Queue time: le="0.0" holds 0, le=0.1 holds 1; p50 rank 0.5 → 0.1·0.5.
        approx(m.queue_time.p50, 0.05);
        // TTFT: 0 at le=1.0, 1 at le=2.0 → 1.5.
        approx(m.time_to_first_token.p50, 1.5);
    }

    #[test]
    fn newer_names_win_over_older_ones() {
        let body = concat!(
            "sglang:num_requests_waiting{name=\"m\"} 9\n",
            "sglang:num_queue_reqs{model_name=\"m\"} 2\n",
            "sglang:e2e_request_latency_seconds_count{model_name=\"m\"} 40\n",
            "sglang:num_requests_total{model_name=\"m\"} 41\n",
        );
        let snap = snapshot(body, 0.0);
        let m = &snap.models["m"];
        assert_eq!(m.gauge(GaugeSignal::QueueDepth), Some(2.0));
        assert_eq!(m.counter(CounterSignal::RequestsFinished), Some(41.0));
    }
}

mod tgi {
    use super::*;

    const FIXTURE: &str = "tgi/tgi-3.x-datadog-integrations-core-payload.txt";

    /// TGI 3.x (DataDog's real scrape): no model label, no TTFT, no KV usage; duration
    /// buckets at 0.0001·1.5^k.
    #[test]
    fn v3_real_scrape() {
        let Some(body) = shared_fixture(FIXTURE) else {
            return;
        };
        let snap = snapshot(&body, 0.0);
        clean(&snap);
        assert_eq!(snap.engine, Some(Engine::Tgi));
        let (name, model) = only_model(&snap);
        assert_eq!(name, "", "TGI series carry no model label");
        assert_eq!(model.gauge(GaugeSignal::QueueDepth), Some(0.0));
        assert_eq!(model.gauge(GaugeSignal::Running), Some(0.0));
        assert_eq!(model.gauge(GaugeSignal::KvCacheUsage), None);
        assert_eq!(snap.kv_capacity_tokens, None);
        assert_eq!(snap.process_start, None);
        // `tgi_request_input_length_sum 662`, `tgi_request_generated_tokens_sum 3423`,
        // `tgi_request_success 109`.
        assert_eq!(model.counter(CounterSignal::PromptTokens), Some(662.0));
        assert_eq!(model.counter(CounterSignal::GenerationTokens), Some(3423.0));
        assert_eq!(model.counter(CounterSignal::RequestsFinished), Some(109.0));

        let s = replica_signals(&[&snap], since_start()).unwrap();
        let m = &s.models[""];
        assert_eq!(
            m.time_to_first_token.p50,
            Reading::Missing(Missing::NotExposed)
        );
        // tgi_request_duration: 51 at le=3.787675244106352, 77 at le=5.681512866159528;
        // p50 rank 54.5.
        let (lo, hi) = (3.787675244106352, 5.681512866159528);
        approx(m.end_to_end_latency.p50, lo + (hi - lo) * 3.5 / 26.0);
        approx(m.end_to_end_latency.observations, 109.0);
        // tgi_request_mean_time_per_token_duration: 9 at le=0.0656840835571289, 109 at
        // le=0.09852612533569335.
        let (lo, hi) = (0.0656840835571289, 0.09852612533569335);
        approx(m.inter_token_latency.p50, lo + (hi - lo) * 45.5 / 100.0);
        // tgi_request_queue_duration: 29 at le=1.683411219602823, 55 at
        // le=2.5251168294042348.
        let (lo, hi) = (1.683411219602823, 2.5251168294042348);
        approx(m.queue_time.p50, lo + (hi - lo) * 25.5 / 26.0);
    }

    /// Two scrapes 15 s apart: 12 more successful requests with 120 input and 360 generated
    /// tokens (the later body written by editing those three lines of the fixture).
    #[test]
    fn v3_rates_over_two_scrapes() {
        let Some(body) = shared_fixture(FIXTURE) else {
            return;
        };
        let later = body
            .replace("tgi_request_success 109\n", "tgi_request_success 121\n")
            .replace(
                "tgi_request_input_length_sum 662\n",
                "tgi_request_input_length_sum 782\n",
            )
            .replace(
                "tgi_request_generated_tokens_sum 3423\n",
                "tgi_request_generated_tokens_sum 3783\n",
            );
        assert_ne!(body, later);
        let (a, b) = (snapshot(&body, 100.0), snapshot(&later, 115.0));
        let s = replica_signals(&[&a, &b], SignalOptions::default()).unwrap();
        approx(s.combined.request_rate, 12.0 / 15.0);
        approx(s.combined.prompt_token_rate, 120.0 / 15.0);
        approx(s.combined.generation_token_rate, 360.0 / 15.0);
    }
}
