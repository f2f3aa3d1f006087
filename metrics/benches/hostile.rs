//! Time to parse and snapshot hostile bodies under the default `SnapshotLimits` (the memory
//! bound is a test: `tests/hostile_body.rs`):
//! - `300k-models-15MB`: issue 8's attack, one pod exposing 300,000 distinct `model_name`
//!   values in a 15 MB body (before the limits: 1.25–1.35 s and 281 MB peak per scrape);
//! - `duplicates-vllm`: a real-sized vLLM body whose every line appears twice.
//!
//! Run: `cargo bench -p inferscale-metrics --bench hostile`.

#![allow(clippy::expect_used, reason = "a bench stops at a missing fixture")]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use inferscale_metrics::parser::Format;
use inferscale_metrics::profile::RouteIndex;
use inferscale_metrics::snapshot::EngineSnapshot;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

#[path = "../tests/support/mod.rs"]
mod support;
use support::attack_body;

fn hostile_benches(c: &mut Criterion) {
    let routes = RouteIndex::engines();
    let own =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vllm-v1-two-engines.txt");
    let vllm = std::fs::read_to_string(own).expect("own fixture");
    let doubled: String = vllm.lines().flat_map(|l| [l, "\n", l, "\n"]).collect();
    for (name, body, samples) in [
        ("300k-models-15MB", attack_body(300_000), 10),
        ("duplicates-vllm", doubled, 50),
    ] {
        let mut group = c.benchmark_group(format!("hostile/{name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.sample_size(samples);
        group.measurement_time(Duration::from_secs(5));
        group.bench_function("snapshot", |b| {
            b.iter(|| {
                EngineSnapshot::from_exposition(black_box(&body), Format::Prometheus, 0.0, &routes)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, hostile_benches);
criterion_main!(benches);
