//! Integration tests of the simulator, one binary with topic modules.
//!
//! Long replays live in `benches/replay.rs`; everything here runs in a few seconds in debug.

use inferscale_scaler::calibration::{CostModel, ModelProfile, StartupTime};
use inferscale_scaler::observe::{Observation, PodPhase, SignalPath};
use inferscale_scaler::policy::{Decision, Policy};
use inferscale_scaler::replay::{simulate, FleetConfig, Routing, RunResult, SimConfig};
use inferscale_scaler::trace::{Request, Synthetic, Trace};

/// A policy that holds a fixed size and remembers what it saw.
struct Fixed {
    replicas: u32,
    seen: Vec<Observation>,
}

impl Policy for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    fn signal_path(&self) -> SignalPath {
        SignalPath::Direct
    }
    fn decision_period(&self) -> f64 {
        5.0
    }
    fn decide(&mut self, observation: &Observation) -> Decision {
        if self.seen.len() < 64 {
            self.seen.push(observation.clone());
        }
        Decision::serving(self.replicas)
    }
}

fn config(profile: ModelProfile, replicas: (u32, u32, u32), routing: Routing) -> SimConfig {
    SimConfig {
        fleet: FleetConfig {
            profile,
            min_replicas: replicas.0,
            initial_replicas: replicas.1,
            max_replicas: replicas.2,
            time_to_ready: StartupTime::new(60.0, 0.25).unwrap(),
            wake: StartupTime::new(2.0, 0.3).unwrap(),
            node_provisioning_share: 0.6,
            cost: CostModel {
                gpu_cost_per_hour: 2.0,
            },
            routing,
        },
        slo_ttft_secs: 2.0,
        seed: 7,
    }
}

fn run(trace: &Trace, policy: &mut dyn Policy, config: &SimConfig) -> RunResult {
    simulate(trace, policy, config, &mut |_| {}).unwrap()
}

mod traces {
    use super::*;
    use std::path::{Path, PathBuf};

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/azure_sample.csv")
    }

    #[test]
    fn crlf_without_final_newline_parses_every_row() {
        let t = Trace::from_csv_file(&fixture()).unwrap();
        assert_eq!(t.requests.len(), 5);
        assert_eq!(t.requests[0].arrival, 0.0);
        assert_eq!(t.requests[4].prompt_tokens, 374, "last row without newline");
        assert_eq!(t.requests[4].output_tokens, 14);
        // 0 generated tokens still produce a first token.
        assert_eq!(t.requests[2].output_tokens, 1);
        // Crossing midnight: 18:17:03.97996 → 00:00:00.5 next day.
        let expected = 5.0 * 3600.0 + 42.0 * 60.0 + 56.52004;
        assert!((t.requests[4].arrival - expected).abs() < 1e-6);
    }

    #[test]
    fn columns_are_found_by_name() {
        let csv = "GeneratedTokens,TIMESTAMP,ContextTokens\n5,1.5,100\n7,0.5,200";
        let r = inferscale_scaler::trace::parse_csv(csv).unwrap();
        assert_eq!(r[1].prompt_tokens, 200);
        assert_eq!(r[1].output_tokens, 7);
        assert!(inferscale_scaler::trace::parse_csv("a,b\n1,2").is_err());
        let e =
            inferscale_scaler::trace::parse_csv("TIMESTAMP,ContextTokens,GeneratedTokens\r\nx,1,2")
                .unwrap_err()
                .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn time_scaling_and_density() {
        let t = Trace::from_csv_file(&fixture()).unwrap();
        let d = t.duration();
        let faster = t.clone().time_scaled(2.0).unwrap();
        assert!((faster.duration() - d / 2.0).abs() < 1e-9);
        let denser = t.clone().densified(3.0, 1.0, 1).unwrap();
        assert_eq!(denser.requests.len(), 15);
        assert!(t.clone().time_scaled(0.0).is_err());
    }

    #[test]
    fn synthetic_poisson_rate() {
        let s = Synthetic::parse("poisson:rate=20,duration=500,seed=3").unwrap();
        let t = s.generate("p").unwrap();
        let rate = t.requests.len() as f64 / 500.0;
        assert!((rate - 20.0).abs() < 1.5, "rate {rate}");
    }

    /// The real Azure traces, when the shared folder is present.
    #[test]
    fn azure_traces_parse_when_present() {
        let shared = std::env::var("INFERSCALE_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
        for (file, rows) in [
            ("AzureLLMInferenceTrace_code.csv", 8819),
            ("AzureLLMInferenceTrace_conv.csv", 19366),
        ] {
            let path = shared.join("traces").join(file);
            if !path.exists() {
                eprintln!(
                    "skipping: {} not found (set INFERSCALE_SHARED)",
                    path.display()
                );
                continue;
            }
            let t = Trace::from_csv_file(&path).unwrap();
            assert_eq!(t.requests.len(), rows);
            assert!((3400.0..3600.0).contains(&t.duration()), "{}", t.duration());
        }
    }
}

mod queueing {
    use super::*;
    use rand::{Rng, SeedableRng};
    use statrs::function::factorial::factorial;

    /// Erlang C: probability an arrival waits in M/M/c with offered load `a` = λ/μ.
    fn erlang_c(c: u64, a: f64) -> f64 {
        let rho = a / c as f64;
        let top = a.powi(c as i32) / factorial(c) / (1.0 - rho);
        let bottom: f64 = (0..c).map(|k| a.powi(k as i32) / factorial(k)).sum::<f64>() + top;
        top / bottom
    }

    /// With one sequence per replica, a fixed step and geometric output lengths, each replica
    /// is an exponential server and the central queue makes the fleet M/M/c.
    #[test]
    fn fleet_reduces_to_m_m_c_waiting_probability() {
        let (c, lambda, mean_service) = (4u32, 3.0f64, 1.0f64);
        let step = 0.01;
        let p = step / mean_service;
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut t = 0.0;
        let requests: Vec<Request> = (0..12_000)
            .map(|_| {
                t += -(1.0 - rng.random::<f64>()).ln() / lambda;
                let mut output = 1;
                while rng.random::<f64>() > p {
                    output += 1;
                }
                Request {
                    arrival: t,
                    prompt_tokens: 1,
                    output_tokens: output,
                }
            })
            .collect();
        let trace = Trace::new("mmc", requests).unwrap();
        let cfg = config(
            ModelProfile::fixed_step(step, 1),
            (c, c, c),
            Routing::CentralQueue,
        );
        let mut policy = Fixed {
            replicas: c,
            seen: Vec::new(),
        };
        let result = run(&trace, &mut policy, &cfg);
        // Skip the first 1,000 requests (the empty-system transient).
        let waits: Vec<f64> = result.ttft[1000..]
            .iter()
            .map(|&ttft| ttft as f64 - step)
            .collect();
        let waited = waits.iter().filter(|&&w| w > 1e-6).count() as f64 / waits.len() as f64;
        let mean_wait = waits.iter().sum::<f64>() / waits.len() as f64;
        let expected = erlang_c(c as u64, lambda * mean_service);
        let expected_wait = expected / (c as f64 / mean_service - lambda);
        assert!(
            (waited - expected).abs() < 0.05,
            "P(wait) {waited} vs Erlang C {expected}"
        );
        assert!(
            (mean_wait - expected_wait).abs() < 0.2 * expected_wait,
            "E[W] {mean_wait} vs {expected_wait}"
        );
    }

    #[test]
    fn erlang_c_known_value() {
        // c = 2, a = 1: C = (1/2 / 0.5) / (1 + 1 + 1) = 1/3.
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
    }
}

mod determinism {
    use super::*;
    use inferscale_scaler::policy::hpa::{Behavior, Hpa};

    fn bursts() -> Trace {
        Synthetic::parse(
            "bursts:base=3,peak=40,every=300,length=30,duration=900,prompt=800,output=60,seed=5",
        )
        .unwrap()
        .generate("bursts")
        .unwrap()
    }

    #[test]
    fn same_seed_same_result_other_seed_other_draws() {
        let trace = bursts();
        let mut cfg = config(
            ModelProfile::llama31_8b_h100(),
            (1, 1, 20),
            Routing::LeastOutstanding,
        );
        let hpa = || Hpa::queue_depth(2.0, 1, 20, Behavior::default()).unwrap();
        let a = run(&trace, &mut hpa(), &cfg);
        let b = run(&trace, &mut hpa(), &cfg);
        assert_eq!(a, b);
        assert!(a.scale_events > 0, "the bursts should make the HPA act");
        cfg.seed = 8;
        let c = run(&trace, &mut hpa(), &cfg);
        assert_ne!(
            a.gpu_hours, c.gpu_hours,
            "cold starts are drawn from the seed"
        );
    }
}

mod signals {
    use super::*;

    #[test]
    fn starting_pods_are_missing_not_zero() {
        let trace = Synthetic::parse("poisson:rate=5,duration=200,prompt=200,output=20,seed=1")
            .unwrap()
            .generate("p")
            .unwrap();
        let cfg = config(
            ModelProfile::llama31_8b_h100(),
            (1, 1, 4),
            Routing::LeastOutstanding,
        );
        let mut policy = Fixed {
            replicas: 3,
            seen: Vec::new(),
        };
        run(&trace, &mut policy, &cfg);
        // After the first decision two pods are starting: they have no signals, and the fleet
        // queue-depth aggregate counts only the ready pod.
        let obs = &policy.seen[2];
        let starting: Vec<_> = obs
            .pods
            .iter()
            .filter(|p| p.phase == PodPhase::Starting)
            .collect();
        assert_eq!(starting.len(), 2);
        assert!(starting.iter().all(|p| p.signals.is_none()));
        assert_eq!(obs.fleet.queue_depth.replicas, 1);
        // The ready pod's TTFT percentile comes from the metrics engine's window histogram.
        let later = policy.seen.last().unwrap();
        assert!(later.fleet.time_to_first_token.p95.value().is_some());
    }
}

mod oracle_bound {
    use super::*;
    use inferscale_scaler::policy::hpa::{Behavior, Hpa};
    use inferscale_scaler::policy::kpa::Kpa;
    use inferscale_scaler::policy::oracle;

    /// The oracle reaches each policy's attainment with no more GPU-hours.
    #[test]
    fn oracle_never_costs_more_at_equal_attainment() {
        let trace = Synthetic::parse(
            "bursts:base=2,peak=25,every=240,length=40,duration=720,prompt=600,output=40,seed=9",
        )
        .unwrap()
        .generate("bursts")
        .unwrap();
        let cfg = config(
            ModelProfile::llama31_8b_h100(),
            (1, 1, 16),
            Routing::LeastOutstanding,
        );
        let policies: Vec<Box<dyn Policy>> = vec![
            Box::new(Hpa::queue_depth(2.0, 1, 16, Behavior::default()).unwrap()),
            Box::new(Kpa::knative(16.0, 1, 16).unwrap()),
        ];
        for mut policy in policies {
            let result = run(&trace, policy.as_mut(), &cfg);
            let (best, _) = oracle::search(&trace, &cfg, result.attainment()).unwrap();
            assert!(best.attainment() >= result.attainment());
            assert!(
                best.gpu_hours <= result.gpu_hours + 1e-9,
                "{}: oracle {} GPU-h vs {} at attainment {}",
                result.policy,
                best.gpu_hours,
                result.gpu_hours,
                result.attainment()
            );
        }
    }
}
