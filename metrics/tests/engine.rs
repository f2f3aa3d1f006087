//! Integration tests of the metrics engine, by topic: the evidence against
//! `prometheus-parse`, golden values on real and hand-written fixtures, the malformed-input
//! corpus, and property tests.
//!
//! Real fixtures live in `../shared/fixtures/` (or `$INFERSCALE_SHARED/fixtures`); they are
//! not copied into the project. Tests that need them fail when the folder is absent, unless
//! `INFERSCALE_ALLOW_SKIP=1` is set (then they print SKIPPED and pass).
//! Expected values for them were worked out by hand and by an independent implementation
//! (Python `prometheus_client` 0.26.0 plus `tests/golden/reference.py`), never by this code.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first broken assumption"
)]

use inferscale_metrics::gpu::{join_gpus, read_gpus, PodRef};
use inferscale_metrics::histogram::Histogram;
use inferscale_metrics::parser::{parse_all, parse_float, Format, Parser, Record};
use inferscale_metrics::profile::{CounterSignal, GaugeSignal, HistogramSignal, RouteIndex};
use inferscale_metrics::signals::{replica_signals, Missing, Reading, SignalOptions, SingleScrape};
use inferscale_metrics::snapshot::EngineSnapshot;
use std::path::PathBuf;

mod support;
use support::{shared_fixture, shared_fixtures};

fn own_fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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

mod prometheus_parse_evidence {
    use super::*;

    fn prometheus_parse(body: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses")
    }

    /// Why we do not use prometheus-parse 0.2.5: it silently drops every `vllm:` line.
    #[test]
    fn prometheus_parse_cannot_read_vllm() {
        let body = own_fixture("vllm-v1-two-engines.txt");
        let (ours, stats) = parse_all(&body, Format::Prometheus);
        let ours_vllm = ours.iter().filter(|s| s.name.starts_with("vllm:")).count();
        assert_eq!(stats.skipped(), 0);
        assert_eq!(ours_vllm, 31, "our parser reads every vllm: sample");
        let theirs = prometheus_parse(&body);
        let theirs_vllm = theirs
            .samples
            .iter()
            .filter(|s| s.metric.starts_with("vllm:"))
            .count();
        assert_eq!(
            theirs_vllm, 0,
            "prometheus-parse 0.2.5 drops names with ':'"
        );
        // It keeps only the one colon-free family of the body.
        assert_eq!(theirs.samples.len(), 1);
    }

    #[test]
    fn prometheus_parse_reads_none_of_a_real_vllm_scrape() {
        let Some(body) = shared_fixture("vllm/vllm-0.13-v1-dynamo-qwen3-0.6b.txt") else {
            return;
        };
        assert_eq!(prometheus_parse(&body).samples.len(), 0);
        assert_eq!(parse_all(&body, Format::Prometheus).0.len(), 346);
    }

    #[test]
    fn prometheus_parse_splits_label_values_at_commas() {
        let body = "lora_info{running_lora_adapters=\"a,b\",max_lora=\"2\"} 1\n";
        let theirs = prometheus_parse(body);
        let value = theirs
            .samples
            .first()
            .and_then(|s| s.labels.get("running_lora_adapters").map(str::to_owned));
        assert_ne!(
            value.as_deref(),
            Some("a,b"),
            "prometheus-parse mangles this value"
        );
        let (ours, _) = parse_all(body, Format::Prometheus);
        assert_eq!(
            ours[0].label("running_lora_adapters").as_deref(),
            Some("a,b")
        );
    }
}

mod golden {
    use super::*;

    /// Sample counts of every shared fixture as Python's `prometheus_client` 0.26.0
    /// `text_string_to_metric_families` reports them (tests/golden/reference.py).
    const PROMETHEUS_CLIENT_SAMPLE_COUNTS: [(&str, usize); 8] = [
        ("vllm/vllm-0.13-v1-dynamo-qwen3-0.6b.txt", 346),
        (
            "vllm/vllm-0.16to0.18-v1-kops-k8s-ai-conformance-qwen2.5-0.5b.txt",
            395,
        ),
        ("vllm/vllm-0.7.0-v0-aibrix-runtime-docs.txt", 29),
        (
            "dcgm/dcgm-exporter-GRID-A100-10C-vgpu-vks-k8s-ai-conformance.txt",
            11,
        ),
        (
            "dcgm/dcgm-exporter-GRID-A100-40C-vgpu-vks-k8s-ai-conformance.txt",
            11,
        ),
        ("dcgm/dcgm-exporter-L4-kops-k8s-ai-conformance.txt", 23),
        ("dcgm/dcgm-exporter-L40S-upcloud-k8s-ai-conformance.txt", 23),
        (
            "dcgm/dcgm-exporter-T4-ericsson-ccd-k8s-ai-conformance-nohelp.txt",
            20,
        ),
    ];

    #[test]
    fn every_shared_fixture_parses_completely() {
        let Some(dir) = shared_fixtures() else { return };
        for (rel, expected) in PROMETHEUS_CLIENT_SAMPLE_COUNTS {
            let body = std::fs::read_to_string(dir.join(rel)).unwrap();
            let (samples, stats) = parse_all(&body, Format::Prometheus);
            assert_eq!(stats.skipped(), 0, "{rel}: {:?}", stats.first_errors);
            assert_eq!(samples.len(), expected, "{rel}");
        }
    }

    /// vLLM 0.13 (2 requests served). Worked by hand from the bucket lines:
    /// TTFT cumulative counts are 0 up to le=0.01, 1 from le=0.02 to le=0.25, 2 from le=0.5.
    /// p50: rank 1 → bucket (0.01, 0.02] holds 1 → 0.01 + 0.01·1/1 = 0.02.
    /// p90: rank 1.8 → bucket (0.25, 0.5] → 0.25 + 0.25·0.8/1 = 0.45; p95 0.475; p99 0.495.
    #[test]
    fn vllm_0_13_since_start() {
        let Some(body) = shared_fixture("vllm/vllm-0.13-v1-dynamo-qwen3-0.6b.txt") else {
            return;
        };
        let routes = RouteIndex::engines();
        let snap = EngineSnapshot::from_exposition(&body, Format::Prometheus, 0.0, &routes);
        assert_eq!(snap.kv_capacity_tokens, Some(5943.0 * 16.0));
        let model = &snap.models["Qwen/Qwen3-0.6B"];
        assert_eq!(model.counter(CounterSignal::PromptTokens), Some(66.0));
        assert_eq!(model.counter(CounterSignal::GenerationTokens), Some(600.0));
        assert_eq!(model.finished_by_reason.get("length"), Some(&2.0));
        let s = replica_signals(&[&snap], since_start()).unwrap();
        let ttft = &s.models["Qwen/Qwen3-0.6B"].time_to_first_token;
        approx(ttft.p50, 0.02);
        approx(ttft.p90, 0.45);
        approx(ttft.p95, 0.475);
        approx(ttft.p99, 0.495);
        approx(ttft.observations, 2.0);
        // ITL: 598 tokens, 299 cumulative at le=0.01 and the lowest bucket starts at 0:
        // rank 299 → 0.01·299/597 with 597 counted in (0, 0.01]... as worked in reference.py.
        approx(s.combined.inter_token_latency.observations, 598.0);
        approx(s.combined.queue_depth, 0.0);
        approx(s.combined.kv_cache_usage, 0.0);
        assert_eq!(
            s.combined.prompt_token_rate,
            Reading::Missing(Missing::NeedsTwoScrapes)
        );
    }

    #[test]
    fn vllm_0_16_idle_server_is_idle_not_missing() {
        let Some(body) =
            shared_fixture("vllm/vllm-0.16to0.18-v1-kops-k8s-ai-conformance-qwen2.5-0.5b.txt")
        else {
            return;
        };
        let snap =
            EngineSnapshot::from_exposition(&body, Format::Prometheus, 0.0, &RouteIndex::engines());
        assert!(snap.process_start.is_some());
        // Nothing observed since start, nothing waiting, nothing running: no request waited,
        // on the serving path (one scrape) and in inspect's since-start reading alike.
        for options in [since_start(), SignalOptions::default()] {
            let s = replica_signals(&[&snap], options).unwrap();
            approx(s.combined.queue_depth, 0.0);
            approx(s.combined.running, 0.0);
            for latency in [
                &s.combined.time_to_first_token,
                &s.combined.inter_token_latency,
                &s.combined.end_to_end_latency,
                &s.combined.queue_time,
            ] {
                assert!(latency.idle, "{options:?}");
                approx(latency.p95, 0.0);
                approx(latency.mean, 0.0);
            }
        }
    }

    #[test]
    fn vllm_0_7_v0_uses_deprecated_names() {
        let Some(body) = shared_fixture("vllm/vllm-0.7.0-v0-aibrix-runtime-docs.txt") else {
            return;
        };
        let snap =
            EngineSnapshot::from_exposition(&body, Format::Prometheus, 0.0, &RouteIndex::engines());
        let s = replica_signals(&[&snap], since_start()).unwrap();
        assert!(
            s.combined.kv_cache_usage.value().is_some(),
            "gpu_cache_usage_perc fallback"
        );
        assert!(s.combined.queue_depth.value().is_some());
    }

    #[test]
    fn hand_written_two_engines() {
        let body = own_fixture("vllm-v1-two-engines.txt");
        let snap =
            EngineSnapshot::from_exposition(&body, Format::Prometheus, 0.0, &RouteIndex::engines());
        assert_eq!(snap.kv_capacity_tokens, Some(2.0 * 1000.0 * 16.0));
        let s = replica_signals(&[&snap], since_start()).unwrap();
        let m = &s.models["llama-3-8b"];
        approx(m.running, 12.0);
        approx(m.queue_depth, 3.0);
        approx(m.kv_cache_usage, 0.625);
        approx(m.kv_cache_usage_max, 0.75);
        // Merged TTFT buckets (0.1, 0.5, 1.0, +Inf) = 4, 10, 16, 16.
        // p50: rank 8 → 0.1 + 0.4·(8−4)/6; p90: rank 14.4 → 0.5 + 0.5·(14.4−10)/6.
        approx(m.time_to_first_token.p50, 0.1 + 0.4 * 4.0 / 6.0);
        approx(m.time_to_first_token.p90, 0.5 + 0.5 * 4.4 / 6.0);
        approx(m.time_to_first_token.mean, 6.5 / 16.0);
        assert_eq!(
            m.inter_token_latency.p50,
            Reading::Missing(Missing::NotExposed)
        );
    }

    #[test]
    fn hand_written_v0_multiprocess() {
        let body = own_fixture("vllm-v0-multiprocess.txt");
        let snap =
            EngineSnapshot::from_exposition(&body, Format::Prometheus, 0.0, &RouteIndex::engines());
        assert_eq!(snap.kv_capacity_tokens, Some(2048.0 * 16.0));
        let s = replica_signals(&[&snap], since_start()).unwrap();
        approx(s.combined.kv_cache_usage, 0.25);
        // ITL from time_per_output_token: 10, 40, 50, 50 → p50 rank 25 → 0.01 + 0.015·15/30.
        approx(s.combined.inter_token_latency.p50, 0.0175);
        approx(
            s.combined.inter_token_latency.p99,
            0.025 + 0.025 * 9.5 / 10.0,
        );
    }

    #[test]
    fn two_scrapes_of_hand_written_fixture() {
        let before = own_fixture("vllm-v1-two-engines.txt");
        // 15 s later: engine 0 answered 4 more requests, all TTFT in (0.5, 1.0].
        let after = before
            .replace(
                "le=\"1.0\",model_name=\"llama-3-8b\"} 10.0",
                "le=\"1.0\",model_name=\"llama-3-8b\"} 14.0",
            )
            .replace(
                "engine=\"0\",le=\"+Inf\",model_name=\"llama-3-8b\"} 10.0",
                "engine=\"0\",le=\"+Inf\",model_name=\"llama-3-8b\"} 14.0",
            )
            .replace(
                "finished_reason=\"stop\",model_name=\"llama-3-8b\"} 8.0",
                "finished_reason=\"stop\",model_name=\"llama-3-8b\"} 12.0",
            )
            .replace(
                "vllm:prompt_tokens_total{engine=\"0\",model_name=\"llama-3-8b\"} 1200.0",
                "vllm:prompt_tokens_total{engine=\"0\",model_name=\"llama-3-8b\"} 1500.0",
            );
        let routes = RouteIndex::engines();
        let a = EngineSnapshot::from_exposition(&before, Format::Prometheus, 100.0, &routes);
        let b = EngineSnapshot::from_exposition(&after, Format::Prometheus, 115.0, &routes);
        let s = replica_signals(&[&a, &b], SignalOptions::default()).unwrap();
        approx(s.combined.prompt_token_rate, 300.0 / 15.0);
        approx(s.combined.request_rate, 4.0 / 15.0);
        approx(s.combined.request_rate_by_reason["stop"], 4.0 / 15.0);
        approx(s.combined.request_rate_by_reason["length"], 0.0);
        let ttft = &s.combined.time_to_first_token;
        approx(ttft.observations, 4.0);
        // All 4 in (0.5, 1.0]: p50 rank 2 → 0.5 + 0.5·2/4.
        approx(ttft.p50, 0.75);
    }

    #[test]
    fn dcgm_hand_written_attribution() {
        let body = own_fixture("dcgm-attributed.txt");
        let (gpus, stats) = read_gpus(&body, Format::Prometheus);
        assert_eq!(stats.skipped(), 0);
        assert_eq!(gpus.len(), 3);
        let join = join_gpus(&gpus);
        let pod = &join.pods[&PodRef {
            namespace: "llm".into(),
            pod: "vllm-7d9f-abcde".into(),
        }];
        assert_eq!(pod.gpus, 2);
        assert!((pod.utilization_mean.unwrap() - 0.8).abs() < 1e-12);
        assert!((pod.utilization_max.unwrap() - 0.9).abs() < 1e-12);
        assert_eq!(pod.memory_used_bytes, Some(81000.0 * 1048576.0));
        assert_eq!(pod.memory_total_bytes, Some(90000.0 * 1048576.0));
        assert_eq!(pod.power_watts, Some(551.5));
        assert_eq!(join.idle_by_node["gpu-node-1"].gpus, 1);
        assert_eq!(
            join.idle_by_node["gpu-node-1"].memory_free_bytes,
            Some(45000.0 * 1048576.0)
        );
    }

    #[test]
    fn dcgm_real_captures() {
        let Some(body) = shared_fixture("dcgm/dcgm-exporter-L4-kops-k8s-ai-conformance.txt") else {
            return;
        };
        let (gpus, _) = read_gpus(&body, Format::Prometheus);
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].model_name, "NVIDIA L4");
        assert!(gpus[0].pod.is_none());
        let Some(body) =
            shared_fixture("dcgm/dcgm-exporter-T4-ericsson-ccd-k8s-ai-conformance-nohelp.txt")
        else {
            return;
        };
        let (gpus, stats) = read_gpus(&body, Format::Prometheus);
        assert_eq!(stats.skipped(), 0);
        assert_eq!(gpus.len(), 1, "untyped samples are read the same way");
    }
}

mod malformed {
    use super::*;

    #[test]
    fn corpus_keeps_every_good_line_and_counts_every_bad_one() {
        let body = own_fixture("malformed-corpus.txt");
        let (samples, stats) = parse_all(&body, Format::Prometheus);
        let names: Vec<_> = samples.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["good_1", "good_2", "good_3", "good_4", "good_5", "good_6"]
        );
        assert_eq!(
            samples[2].label("a").as_deref(),
            Some("a,b=c}d \"q\" \\ \n")
        );
        assert_eq!(samples[3].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(samples[5].value, f64::INFINITY);
        assert_eq!(stats.skipped(), 14, "{:?}", stats.first_errors);
    }

    #[test]
    fn bad_lines_inside_a_real_scrape_lose_nothing_else() {
        let body = own_fixture("vllm-v1-two-engines.txt");
        let damaged = body.replace(
            "vllm:num_requests_waiting{engine=\"1\",model_name=\"llama-3-8b\"} 1.0",
            "vllm:num_requests_waiting{engine=\"1\",model_name=\"llama-3-8b} 1.0",
        );
        let snap = EngineSnapshot::from_exposition(
            &damaged,
            Format::Prometheus,
            0.0,
            &RouteIndex::engines(),
        );
        assert_eq!(snap.parse_stats.skipped(), 1);
        let m = &snap.models["llama-3-8b"];
        assert_eq!(
            m.gauge(GaugeSignal::QueueDepth),
            Some(2.0),
            "the other engine still counts"
        );
        assert_eq!(m.gauge(GaugeSignal::Running), Some(12.0));
        assert!(m.histogram(HistogramSignal::TimeToFirstToken).is_some());
    }

    #[test]
    fn garbage_and_binary_are_skipped_and_counted_by_kind() {
        use inferscale_metrics::parser::LineErrorKind as K;
        // (body, the one kind it is skipped as; None: nothing to skip)
        let cases: [(&str, Option<K>); 13] = [
            ("", None),
            ("\n\n\n", None),
            ("#", None),
            ("{", Some(K::InvalidMetricName)),
            ("}", Some(K::InvalidMetricName)),
            ("\u{0}\u{1}", Some(K::InvalidMetricName)),
            ("# TYPE", Some(K::InvalidDescriptor)),
            ("a{", Some(K::InvalidLabelSet)),
            ("a{b", Some(K::InvalidLabelSet)),
            ("a{b=", Some(K::InvalidLabelSet)),
            ("a{b=\"", Some(K::InvalidLabelValue)),
            ("a{b=\"\\", Some(K::InvalidLabelValue)),
            ("a 1 2 3 4", Some(K::TrailingText)),
        ];
        for (body, kind) in cases {
            let mut parser = Parser::new(body, Format::Prometheus);
            let samples = parser
                .by_ref()
                .filter(|r| matches!(r, Record::Sample(_)))
                .count();
            let stats = parser.into_stats();
            assert_eq!(samples, 0, "{body:?}");
            let mut expected = [0; K::ALL.len()];
            if let Some(kind) = kind {
                expected[K::ALL.iter().position(|k| *k == kind).unwrap()] = 1;
            }
            assert_eq!(stats.skipped_by_kind, expected, "{body:?}");
            let first: Vec<_> = stats
                .first_errors
                .iter()
                .map(|e| (e.line, e.kind))
                .collect();
            assert_eq!(
                first,
                kind.map(|k| (1, k)).into_iter().collect::<Vec<_>>(),
                "{body:?}"
            );
        }
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn bounds() -> impl Strategy<Value = Vec<f64>> {
        proptest::collection::btree_set(1u32..10_000, 1..25)
            .prop_map(|set| set.into_iter().map(|b| b as f64 / 100.0).collect())
    }

    fn hist_from(bounds: &[f64], observations: &[f64]) -> Histogram {
        let mut h = Histogram::empty(bounds);
        for &o in observations {
            h.observe(o);
        }
        h
    }

    proptest! {
        /// The parser's fast path for short decimals must give the very double the general
        /// float parser gives, for every decimal text exporters print and a few they don't.
        #[test]
        fn sample_values_parse_like_the_general_float_parser(
            text in "[-+]?[0-9]{0,18}(\\.[0-9]{0,18})?([eE][-+]?[0-9]{1,3})?",
        ) {
            let general = text.parse::<f64>().ok().map(f64::to_bits);
            prop_assert_eq!(parse_float(&text).map(f64::to_bits), general, "{}", text);
        }

        #[test]
        fn percentiles_are_monotone_in_q(
            bounds in bounds(),
            observations in proptest::collection::vec(0.0f64..120.0, 1..200),
            qs in proptest::collection::vec(0.0f64..=1.0, 2..10),
        ) {
            let h = hist_from(&bounds, &observations);
            let mut qs = qs;
            qs.sort_by(f64::total_cmp);
            let values: Vec<f64> = qs.iter().map(|&q| h.quantile(q).unwrap()).collect();
            for w in values.windows(2) {
                prop_assert!(w[0] <= w[1], "{values:?} for {qs:?}");
            }
        }

        #[test]
        fn merging_histograms_equals_histogram_of_merged_observations(
            bounds in bounds(),
            a in proptest::collection::vec(0.0f64..120.0, 0..100),
            b in proptest::collection::vec(0.0f64..120.0, 0..100),
        ) {
            let mut merged = hist_from(&bounds, &a);
            merged.merge(&hist_from(&bounds, &b));
            let all: Vec<f64> = a.iter().chain(&b).copied().collect();
            let direct = hist_from(&bounds, &all);
            prop_assert_eq!(merged.cumulative_counts(), direct.cumulative_counts());
            for q in [0.5, 0.9, 0.95, 0.99] {
                prop_assert_eq!(merged.quantile(q), direct.quantile(q));
            }
        }

        #[test]
        fn window_delta_equals_histogram_of_window_observations(
            bounds in bounds(),
            before in proptest::collection::vec(0.0f64..120.0, 0..100),
            during in proptest::collection::vec(0.0f64..120.0, 0..100),
        ) {
            let earlier = hist_from(&bounds, &before);
            let all: Vec<f64> = before.iter().chain(&during).copied().collect();
            let later = hist_from(&bounds, &all);
            let delta = later.delta_since(&earlier).unwrap();
            let direct = hist_from(&bounds, &during);
            prop_assert_eq!(delta.cumulative_counts(), direct.cumulative_counts());
        }

        #[test]
        fn rendered_samples_parse_back(
            name in "[a-zA-Z_:][a-zA-Z0-9_:]{0,30}",
            labels in proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,12}", "\\PC{0,20}", 0..6),
            value in proptest::num::f64::NORMAL | proptest::num::f64::ZERO,
        ) {
            let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let rendered: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let line = format!("{name}{{{}}} {value:?}\n", rendered.join(","));
            let (samples, stats) = parse_all(&line, Format::Prometheus);
            prop_assert_eq!(stats.skipped(), 0, "{}", line);
            prop_assert_eq!(samples.len(), 1);
            prop_assert_eq!(samples[0].name, name.as_str());
            prop_assert_eq!(samples[0].value, value);
            let parsed: Vec<(String, String)> = samples[0].labels().map(|l| (l.name.to_owned(), l.value.into_owned())).collect();
            let expected: Vec<(String, String)> = labels.into_iter().collect();
            prop_assert_eq!(parsed, expected);
        }

        #[test]
        fn any_input_is_survived_and_accounted(body in "\\PC{0,400}") {
            let mut parser = Parser::new(&body, Format::Prometheus);
            let mut records = 0usize;
            for record in parser.by_ref() {
                if matches!(record, Record::Sample(_)) { records += 1; }
            }
            let stats = parser.stats();
            prop_assert_eq!(records, stats.samples);
            prop_assert!(stats.samples + stats.skipped() <= stats.lines);
        }
    }
}
