//! Parse throughput and signal cost, side by side in one run:
//! - `floor/memchr_lines`: counting newlines with memchr — no parser can beat it;
//! - `ours/filtered`: the adapter's path — only the families the profiles need, labels of
//!   other lines never looked at, wanted samples' labels read;
//! - `ours/snapshot`: the filtered parse plus building the per-model snapshot;
//! - `ours/full`: every sample with every label walked and unescaped;
//! - `prometheus_parse/full`: `prometheus-parse` 0.2.5 on the same bytes (the baseline; it
//!   reads 0 vLLM samples, so it does less work than we do on vLLM bodies);
//! - `prometheus_parse/colon_free`: the same body with `vllm:` renamed `vllm_`, so that
//!   prometheus-parse does the same work we do — the fair comparison on vLLM bodies.
//!
//! The filtered path uses the engine profiles' filter on serving-engine bodies and the
//! dcgm-exporter field filter on GPU bodies, as the adapter does.
//!
//! Inputs: each fixture in `../shared/fixtures/` (when present), the project's own
//! hand-written fixture, and a ~5 MB fleet-sized body (100 vLLM scrapes with distinct
//! model names, as a federation or a multi-pod exporter would serve).
//!
//! Run: `cargo bench -p inferscale-metrics --bench parse`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark stops at the first broken assumption"
)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use inferscale_metrics::parser::{Format, Parser, Record};
use inferscale_metrics::profile::{gpu_mapping, RouteIndex};
use inferscale_metrics::signals::{replica_signals, SignalOptions};
use inferscale_metrics::snapshot::{EngineSnapshot, SnapshotLimits};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

fn shared_dir() -> Option<PathBuf> {
    let root = std::env::var_os("INFERSCALE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let dir = root.join("fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "shared fixtures not found at {}; benchmarking own fixtures only",
            dir.display()
        );
        None
    }
}

fn inputs() -> Vec<(String, String)> {
    let mut inputs = Vec::new();
    let own =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vllm-v1-two-engines.txt");
    let own_body = std::fs::read_to_string(own).expect("own fixture");
    let mut fleet_template = own_body.clone();
    if let Some(dir) = shared_dir() {
        for sub in ["vllm", "dcgm"] {
            let mut files: Vec<_> = std::fs::read_dir(dir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "txt"))
                .collect();
            files.sort();
            for path in files {
                let body = std::fs::read_to_string(&path).expect("fixture");
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                if name.starts_with("vllm-0.16") {
                    fleet_template = body.clone();
                }
                inputs.push((name, body));
            }
        }
    }
    inputs.push(("own-vllm-v1-two-engines".into(), own_body));
    inputs.push(("fleet-5MB".into(), fleet_body(&fleet_template, 5 << 20)));
    inputs
}

/// Concatenates copies of a vLLM body, each with its own model name, up to `target` bytes.
fn fleet_body(template: &str, target: usize) -> String {
    let mut body = String::with_capacity(target + template.len());
    let mut i = 0;
    while body.len() < target {
        body.push_str(&template.replace("model_name=\"", &format!("model_name=\"replica-{i}/")));
        i += 1;
    }
    body
}

fn parse_benches(c: &mut Criterion) {
    let routes = RouteIndex::engines();
    // The fleet body carries 100 model names, over the default cap of 64: raise the cap so
    // that every input is read in full and the figures stay comparable across versions.
    let limits = SnapshotLimits {
        max_models: 1024,
        ..SnapshotLimits::default()
    };
    for (name, body) in inputs() {
        let mut group = c.benchmark_group(format!("parse/{name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.measurement_time(Duration::from_secs(2));
        group.warm_up_time(Duration::from_millis(500));
        group.sample_size(20);
        group.bench_function(BenchmarkId::new("floor", "memchr_lines"), |b| {
            b.iter(|| memchr::memchr_iter(b'\n', black_box(body.as_bytes())).count())
        });
        let is_gpu_body = body.contains("DCGM_FI_");
        group.bench_function(BenchmarkId::new("ours", "filtered"), |b| {
            b.iter(|| {
                // The adapter reads the labels of the samples it keeps.
                let read = |record: Record<'_>| match record {
                    Record::Sample(s) => s.value + s.labels().count() as f64,
                    _ => 0.0,
                };
                if is_gpu_body {
                    let filter = |name: &str| gpu_mapping(name).is_some();
                    Parser::with_filter(black_box(&body), Format::Prometheus, filter)
                        .map(read)
                        .sum::<f64>()
                } else {
                    Parser::with_filter(black_box(&body), Format::Prometheus, &routes)
                        .map(read)
                        .sum::<f64>()
                }
            })
        });
        group.bench_function(BenchmarkId::new("ours", "snapshot"), |b| {
            b.iter(|| {
                EngineSnapshot::from_exposition_with(
                    black_box(&body),
                    Format::Prometheus,
                    0.0,
                    &routes,
                    &limits,
                )
            })
        });
        group.bench_function(BenchmarkId::new("ours", "full"), |b| {
            b.iter(|| {
                let mut acc = 0usize;
                for record in Parser::new(black_box(&body), Format::Prometheus) {
                    if let Record::Sample(s) = record {
                        for label in s.labels() {
                            acc += label.name.len() + label.value.len();
                        }
                    }
                }
                acc
            })
        });
        group.bench_function(BenchmarkId::new("prometheus_parse", "full"), |b| {
            b.iter(|| {
                prometheus_parse::Scrape::parse(black_box(&body).lines().map(|l| Ok(l.to_owned())))
                    .map(|s| s.samples.len())
                    .unwrap_or(0)
            })
        });
        if body.contains("vllm:") {
            let colon_free = body.replace("vllm:", "vllm_");
            group.bench_function(BenchmarkId::new("prometheus_parse", "colon_free"), |b| {
                b.iter(|| {
                    prometheus_parse::Scrape::parse(
                        black_box(&colon_free).lines().map(|l| Ok(l.to_owned())),
                    )
                    .map(|s| s.samples.len())
                    .unwrap_or(0)
                })
            });
        }
        group.finish();
    }
}

fn signal_benches(c: &mut Criterion) {
    let routes = RouteIndex::engines();
    let (_, body) = inputs()
        .into_iter()
        .find(|(n, _)| n.starts_with("vllm-0.13"))
        .unwrap_or_else(|| {
            let own = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/vllm-v1-two-engines.txt");
            (
                "own".into(),
                std::fs::read_to_string(own).expect("own fixture"),
            )
        });
    let earlier = EngineSnapshot::from_exposition(&body, Format::Prometheus, 0.0, &routes);
    let later = EngineSnapshot::from_exposition(&body, Format::Prometheus, 15.0, &routes);
    let mut group = c.benchmark_group("signals");
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(30);
    group.bench_function("replica_signals_from_two_scrapes", |b| {
        b.iter(|| replica_signals(black_box(&[&earlier, &later]), SignalOptions::default()))
    });
    group.bench_function("parse_two_scrapes_and_compute_signals", |b| {
        b.iter(|| {
            let a =
                EngineSnapshot::from_exposition(black_box(&body), Format::Prometheus, 0.0, &routes);
            let b2 = EngineSnapshot::from_exposition(
                black_box(&body),
                Format::Prometheus,
                15.0,
                &routes,
            );
            replica_signals(&[&a, &b2], SignalOptions::default()).map(|s| s.taken_at)
        })
    });
    group.finish();
}

criterion_group!(benches, parse_benches, signal_benches);
criterion_main!(benches);
