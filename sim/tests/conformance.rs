//! The stand-in must match the real thing: `vllm-sim`'s `/metrics` against the real vLLM V1
//! captures, and its dcgm endpoint against the real dcgm-exporter captures, in
//! `../shared/fixtures/` (or `$INFERSCALE_SHARED/fixtures`).
//!
//! Compared per metric family: presence, `# TYPE`, `# HELP` text, label names, histogram
//! bucket bounds, the values of closed labels (`finished_reason`, `sleep_state`, `source`),
//! and the order of the families both sides have. Every deliberate difference is listed
//! below with its reason, and the test fails on any difference that is not listed — and on
//! any listed one that no longer exists.
//!
//! Which vLLM version vllm-sim follows: **0.16–0.18** (the kOps capture: `prompt_tokens_
//! recomputed` exists only in 0.16–0.18 and the MFU counters in 0.18). It is the newest
//! real capture and the only one taken straight from vLLM; the ≈0.13 capture was re-exposed
//! by Dynamo, which strips the `process_*` families. Where 0.13 differs, the differences
//! are listed as version differences.
//!
//! These tests need the shared fixtures. When the folder is absent they **fail**, saying
//! where they looked, unless `INFERSCALE_ALLOW_SKIP=1` says skipping is intended; then they
//! print `SKIPPED` and return.

use inferscale_metrics::parser::{Format, MetricType, Parser, Record};
use inferscale_sim::dcgm::{render as render_dcgm, Assignment, GpuView, Node};
use inferscale_sim::engine::{Engine, EngineConfig, SleepConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

// The fixture lookup (and its visible-skip rule) is the metrics engine's: one copy.
#[path = "../../metrics/tests/support/mod.rs"]
mod fixtures_support;
use fixtures_support::shared_fixture;

/// The `process_*` families prometheus_client reads from `/proc` (the start time it has
/// everywhere).
const PROCESS_FAMILIES_FROM_PROC: [&str; 5] = [
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
];

/// Labels whose values are a closed set the exporter pre-creates.
const CLOSED_LABELS: [&str; 3] = ["finished_reason", "sleep_state", "source"];

#[derive(Debug, Clone, Default, PartialEq)]
struct Family {
    kind: Option<MetricType>,
    help: Option<String>,
    label_names: BTreeSet<String>,
    bounds: Vec<String>,
    closed_values: BTreeMap<String, BTreeSet<String>>,
}

/// Families in order of first appearance, with what the comparison looks at.
fn structure(body: &str) -> Vec<(String, Family)> {
    let mut order: Vec<String> = Vec::new();
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    fn touch<'f>(
        name: &str,
        order: &mut Vec<String>,
        families: &'f mut BTreeMap<String, Family>,
    ) -> &'f mut Family {
        if !families.contains_key(name) {
            order.push(name.to_owned());
        }
        families.entry(name.to_owned()).or_default()
    }
    let mut types: BTreeMap<String, MetricType> = BTreeMap::new();
    let mut parser = Parser::new(body, Format::Prometheus);
    let records: Vec<Record<'_>> = parser.by_ref().collect();
    assert_eq!(
        parser.stats().skipped(),
        0,
        "{:?}",
        parser.stats().first_errors
    );
    for record in &records {
        if let Record::Type {
            family,
            metric_type,
        } = record
        {
            types.insert((*family).to_owned(), *metric_type);
        }
    }
    let family_of = |sample: &str| -> String {
        if types.contains_key(sample) {
            return sample.to_owned();
        }
        for suffix in ["_bucket", "_count", "_sum"] {
            if let Some(base) = sample.strip_suffix(suffix) {
                if matches!(
                    types.get(base),
                    Some(MetricType::Histogram | MetricType::Summary)
                ) {
                    return base.to_owned();
                }
            }
        }
        sample.to_owned()
    };
    for record in records {
        match record {
            Record::Help { family, text } => {
                touch(family, &mut order, &mut families).help = Some(text.into_owned());
            }
            Record::Type {
                family,
                metric_type,
            } => {
                touch(family, &mut order, &mut families).kind = Some(metric_type);
            }
            Record::Sample(sample) => {
                let name = family_of(sample.name);
                let f = touch(&name, &mut order, &mut families);
                for label in sample.labels() {
                    match label.name {
                        "le" => {
                            if !f.bounds.contains(&label.value.to_string()) {
                                f.bounds.push(label.value.into_owned());
                            }
                        }
                        "quantile" => {}
                        name => {
                            f.label_names.insert(name.to_owned());
                            if CLOSED_LABELS.contains(&name) {
                                f.closed_values
                                    .entry(name.to_owned())
                                    .or_default()
                                    .insert(label.value.into_owned());
                            }
                        }
                    }
                }
            }
            Record::Unit { .. } | Record::Eof => {}
        }
    }
    order
        .into_iter()
        .map(|name| {
            let f = families.remove(&name).unwrap();
            (name, f)
        })
        .collect()
}

/// One difference between the real capture and the simulator, as the comparison reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Difference {
    /// The real exporter has the family, the simulator not.
    OnlyReal(String),
    /// The simulator has the family, the real capture not.
    OnlySimulated(String),
    /// Label names differ: (family, only real, only simulated).
    LabelNames(String, Vec<String>, Vec<String>),
    /// Closed-label values differ: (family, label, only real, only simulated).
    ClosedValues(String, String, Vec<String>, Vec<String>),
    /// Type, HELP or bucket bounds differ (never deliberate).
    Other(String, String),
    /// The families both have appear in another order.
    Order(String),
}

fn compare(real: &[(String, Family)], simulated: &[(String, Family)]) -> BTreeSet<Difference> {
    let real_map: BTreeMap<&str, &Family> = real.iter().map(|(n, f)| (n.as_str(), f)).collect();
    let sim_map: BTreeMap<&str, &Family> = simulated.iter().map(|(n, f)| (n.as_str(), f)).collect();
    let mut out = BTreeSet::new();
    for (name, r) in &real_map {
        let Some(s) = sim_map.get(name) else {
            out.insert(Difference::OnlyReal((*name).to_owned()));
            continue;
        };
        let never_deliberate = [
            ("type", format!("{:?}", r.kind), format!("{:?}", s.kind)),
            ("help", format!("{:?}", r.help), format!("{:?}", s.help)),
            (
                "bounds",
                format!("{:?}", r.bounds),
                format!("{:?}", s.bounds),
            ),
        ];
        for (what, real, simulated) in never_deliberate {
            if real != simulated {
                out.insert(Difference::Other(
                    (*name).into(),
                    format!("{what} {real} vs {simulated}"),
                ));
            }
        }
        if r.label_names != s.label_names {
            out.insert(Difference::LabelNames(
                (*name).into(),
                r.label_names.difference(&s.label_names).cloned().collect(),
                s.label_names.difference(&r.label_names).cloned().collect(),
            ));
        }
        for label in CLOSED_LABELS {
            let (rv, sv) = (r.closed_values.get(label), s.closed_values.get(label));
            if rv != sv {
                let empty = BTreeSet::new();
                let (rv, sv) = (rv.unwrap_or(&empty), sv.unwrap_or(&empty));
                out.insert(Difference::ClosedValues(
                    (*name).into(),
                    label.into(),
                    rv.difference(sv).cloned().collect(),
                    sv.difference(rv).cloned().collect(),
                ));
            }
        }
    }
    for name in sim_map.keys() {
        if !real_map.contains_key(name) {
            out.insert(Difference::OnlySimulated((*name).to_owned()));
        }
    }
    let common = |families: &[(String, Family)], other: &BTreeMap<&str, &Family>| -> Vec<String> {
        families
            .iter()
            .filter(|(n, _)| other.contains_key(n.as_str()))
            .map(|(n, _)| n.clone())
            .collect()
    };
    let (real_order, sim_order) = (common(real, &sim_map), common(simulated, &real_map));
    if real_order != sim_order {
        let first = real_order
            .iter()
            .zip(&sim_order)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("{a} vs {b}"))
            .unwrap_or_default();
        out.insert(Difference::Order(first));
    }
    out
}

/// Checks that the differences are exactly the deliberate ones.
fn assert_only_deliberate(found: BTreeSet<Difference>, deliberate: &[(Difference, &str)]) {
    let listed: BTreeSet<Difference> = deliberate.iter().map(|(d, _)| d.clone()).collect();
    let unexpected: Vec<_> = found.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&found).collect();
    assert!(
        unexpected.is_empty() && stale.is_empty(),
        "differences not listed as deliberate: {unexpected:#?}\nlisted but gone: {stale:#?}"
    );
}

/// The simulator's body; token histograms' bounds follow `max_model_len` as vLLM's
/// `build_1_2_5_buckets(max_model_len)` does.
fn vllm_body(max_model_len: u32) -> String {
    let engine = Engine::new(EngineConfig {
        model: "Qwen/Qwen2.5-0.5B-Instruct".into(),
        max_num_seqs: 256,
        ttft: Duration::from_millis(200),
        itl: Duration::from_millis(20),
        prefill_per_token: Duration::from_micros(50),
        kv_blocks: 101625,
        block_size: 16,
        max_model_len,
        sleep: SleepConfig::default(),
    });
    engine.render_metrics()
}

fn only_real(name: &str) -> Difference {
    Difference::OnlyReal(name.to_owned())
}

fn only_simulated(name: &str) -> Difference {
    Difference::OnlySimulated(name.to_owned())
}

/// Families a real vLLM serves that the simulator leaves out, and why.
fn left_out_of_every_vllm() -> Vec<(Difference, &'static str)> {
    let mut d = vec![
        (only_real("vllm:iteration_tokens_total"), "tokens per engine step: the simulation times requests one by one and has no engine step to count"),
        (only_real("vllm:iteration_tokens_total_created"), "goes with iteration_tokens_total"),
    ];
    for python in [
        "python_gc_objects_collected_total",
        "python_gc_objects_uncollectable_total",
        "python_gc_collections_total",
        "python_info",
    ] {
        d.push((
            only_real(python),
            "Python runtime figures: vllm-sim is not a Python process",
        ));
    }
    d
}

#[test]
fn vllm_sim_matches_vllm_0_16_to_0_18() {
    let Some(real) =
        shared_fixture("vllm/vllm-0.16to0.18-v1-kops-k8s-ai-conformance-qwen2.5-0.5b.txt")
    else {
        return;
    };
    let mut deliberate = left_out_of_every_vllm();
    for mfu in ["flops", "read_bytes", "write_bytes"] {
        for suffix in ["_total", "_created"] {
            let name = format!("vllm:estimated_{mfu}_per_gpu{suffix}");
            deliberate.push((Difference::OnlyReal(name), "MFU counters are opt-in (--enable-mfu-metrics, off by default); the capture's server had them on"));
        }
    }
    for http in [
        "http_requests_total",
        "http_request_size_bytes",
        "http_response_size_bytes",
        "http_request_duration_highr_seconds",
        "http_request_duration_highr_seconds_created",
        "http_request_duration_seconds",
    ] {
        deliberate.push((only_real(http), "prometheus_fastapi_instrumentator's HTTP-server bookkeeping: no autoscaler or dashboard of ours reads it"));
    }
    if !cfg!(target_os = "linux") {
        for p in PROCESS_FAMILIES_FROM_PROC {
            deliberate.push((only_real(p), "read from /proc, which this platform lacks (prometheus_client leaves them out too)"));
        }
    }
    // The kOps server's token histograms end at 5000: its max_model_len is in 5000..10000.
    assert_only_deliberate(
        compare(&structure(&real), &structure(&vllm_body(8192))),
        &deliberate,
    );
}

#[test]
fn vllm_sim_differs_from_vllm_0_13_only_where_0_18_does() {
    let Some(real) = shared_fixture("vllm/vllm-0.13-v1-dynamo-qwen3-0.6b.txt") else {
        return;
    };
    let mut deliberate = left_out_of_every_vllm();
    deliberate.retain(|(d, _)| !matches!(d, Difference::OnlyReal(n) if n.starts_with("python_")));
    let dynamo = "the 0.13 capture was re-exposed by Dynamo, which keeps only vllm: families";
    deliberate.push((only_simulated("process_start_time_seconds"), dynamo));
    if cfg!(target_os = "linux") {
        for p in PROCESS_FAMILIES_FROM_PROC {
            deliberate.push((only_simulated(p), dynamo));
        }
    }
    for family in [
        "vllm:prompt_tokens_by_source_total",
        "vllm:prompt_tokens_by_source_created",
        "vllm:prompt_tokens_cached_total",
        "vllm:prompt_tokens_cached_created",
        "vllm:prompt_tokens_recomputed_total",
        "vllm:prompt_tokens_recomputed_created",
    ] {
        deliberate.push((only_simulated(family), "added in vLLM 0.16"));
    }
    for family in ["vllm:request_success_total", "vllm:request_success_created"] {
        deliberate.push((
            Difference::ClosedValues(
                family.into(),
                "finished_reason".into(),
                vec![],
                vec!["repetition".into()],
            ),
            "finished_reason=\"repetition\" is newer than 0.13",
        ));
    }
    deliberate.push((
        Difference::LabelNames(
            "vllm:cache_config_info".into(),
            vec![],
            vec!["cpu_offload_params".into(), "mamba_cache_mode".into()],
        ),
        "CacheConfig fields added after 0.13",
    ));
    // Qwen3-0.6B's max_model_len is 40960: token bounds end at 20000.
    assert_only_deliberate(
        compare(&structure(&real), &structure(&vllm_body(40960))),
        &deliberate,
    );
}

fn dcgm_body(held: bool) -> String {
    let holder = Assignment {
        namespace: "llm".into(),
        pod: "vllm-0".into(),
        container: "vllm".into(),
        gpus: 1,
        metrics_url: None,
        max_num_seqs: None,
    };
    let view = GpuView {
        holder: held.then_some(&holder),
        busy: 0.3,
        energy_mj: 4742776.0,
    };
    render_dcgm(&Node::l4("i-030791dc5a37cd257", 1), &[view])
}

/// The L4 and L40S captures are full default-counter scrapes of one GPU. The vGPU captures
/// (11 families: no profiling counters on vGPU) and the T4 one (no HELP/TYPE) show other
/// hardware and are not the layout the simulator claims.
#[test]
fn dcgm_sim_matches_dcgm_exporter_on_l4_and_l40s() {
    for capture in [
        "dcgm/dcgm-exporter-L4-kops-k8s-ai-conformance.txt",
        "dcgm/dcgm-exporter-L40S-upcloud-k8s-ai-conformance.txt",
    ] {
        let Some(real) = shared_fixture(capture) else {
            return;
        };
        let real = structure(&real);
        assert_eq!(real.len(), 23, "{capture}");
        assert_only_deliberate(compare(&real, &structure(&dcgm_body(false))), &[]);
        // A GPU held by a pod carries the Kubernetes attribution after the template's
        // labels; no capture has one (none had a GPU workload), so this difference is the
        // rendering rule of METRICS-REFERENCE §3.1, listed for every family.
        let attributed: Vec<(Difference, &str)> = real
            .iter()
            .map(|(name, _)| {
                (
                    Difference::LabelNames(
                        name.clone(),
                        vec![],
                        vec!["container".into(), "namespace".into(), "pod".into()],
                    ),
                    "pod attribution, absent from every capture",
                )
            })
            .collect();
        assert_only_deliberate(compare(&real, &structure(&dcgm_body(true))), &attributed);
    }
}
