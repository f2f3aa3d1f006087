//! Replay speed: the target is a 24 h trace of 1 M requests in ≤ 10 s on one core.
//!
//! Scenario `diurnal_24h_1m`: a synthetic diurnal day (mean 11.574 req/s ≈ 1 M requests,
//! Azure-conversation-like lengths) replayed against the Knative KPA, the most expensive
//! policy to observe (5 s direct scrapes of every pod through the metrics engine and a
//! decision every 2 s). Prints requests/s once before criterion's own timing.

use criterion::{criterion_group, criterion_main, Criterion};
use inferscale_scaler::calibration::{CostModel, ModelProfile, StartupTime};
use inferscale_scaler::policy::kpa::{Kpa, DEFAULT_KPA_CONCURRENCY_TARGET};
use inferscale_scaler::replay::{simulate, ClientConfig, FleetConfig, Routing, SimConfig};
use inferscale_scaler::trace::{Synthetic, Trace};
use std::time::Instant;

const DAY_SPEC: &str =
    "diurnal:mean=11.574,amplitude=0.6,period=86400,duration=86400,prompt=1000,output=130,seed=1";

fn day() -> Trace {
    Synthetic::parse(DAY_SPEC)
        .and_then(|s| s.generate("diurnal-24h"))
        .unwrap_or_else(|e| panic!("bench trace: {e}"))
}

fn config() -> SimConfig {
    SimConfig {
        fleet: FleetConfig {
            profile: ModelProfile::llama31_8b_h100(),
            min_replicas: 1,
            max_replicas: 64,
            initial_replicas: 4,
            time_to_ready: StartupTime {
                median_secs: 120.0,
                log_sigma: 0.25,
            },
            wake: StartupTime {
                median_secs: 2.0,
                log_sigma: 0.3,
            },
            node_provisioning_share: 0.6,
            cost: CostModel {
                gpu_cost_per_hour: 2.5,
            },
            routing: Routing::LeastOutstanding,
            client: ClientConfig::default(),
            termination_grace_secs: 30.0,
        },
        slo_ttft_secs: 2.0,
        seed: 1,
    }
}

fn replay(trace: &Trace, config: &SimConfig) -> f64 {
    let mut kpa = Kpa::knative(DEFAULT_KPA_CONCURRENCY_TARGET, 1, 64)
        .unwrap_or_else(|e| panic!("policy: {e}"));
    simulate(trace, &mut kpa, config, &mut |_| {})
        .map(|r| r.gpu_hours)
        .unwrap_or_else(|e| panic!("replay: {e}"))
}

fn bench(c: &mut Criterion) {
    let trace = day();
    let config = config();
    let started = Instant::now();
    replay(&trace, &config);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "diurnal_24h_1m: {} requests over {:.0} s replayed in {:.2} s = {:.0} requests/s",
        trace.requests.len(),
        trace.duration(),
        secs,
        trace.requests.len() as f64 / secs
    );
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.bench_function("diurnal_24h_1m", |b| b.iter(|| replay(&trace, &config)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
