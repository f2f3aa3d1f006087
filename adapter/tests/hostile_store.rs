//! The 300,000-model attack from issue 8 through the adapter's store, measured: one pod
//! answering a 15 MB body with 300,000 distinct `model_name` values at every scrape, for a
//! whole window (1 s interval, 60 s window: 63 scrapes). The body is read the way the scrape
//! loop reads it (`EngineSnapshot::from_exposition_with` under the configured
//! [`SnapshotLimits`]) for the first [`PARSED_SCRAPES`] scrapes; the later scrapes record a
//! copy of that snapshot with its own time (the same bytes the parser would have produced,
//! without 60 more 15 MB parses in an unoptimised test build), so the store sees a whole
//! window of the attack. Before the limits this drove the adapter
//! from 56 MB to 2.1 GB in 12 s and past 5 GB in 50 s.
//!
//! The stated bound: the store keeps at most (window ÷ interval + 3) snapshots of a pod, each
//! at most `max_models` models (≈ 2 KB each), plus the signals computed from them; for the
//! defaults that is under [`STATED_BOUND_BYTES`] per pod, whatever the pod sends. Heap is
//! measured with a counting global allocator (this file is its own test binary with this one
//! test, so nothing else allocates meanwhile).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first broken assumption"
)]

use inferscale_adapter::store::{
    PodKey, ScrapeSink, SignalView, Store, Target, TargetKind, TargetRegistry,
};
use inferscale_metrics::parser::Format;
use inferscale_metrics::profile::RouteIndex;
use inferscale_metrics::snapshot::{DropKind, EngineSnapshot, SnapshotLimits};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

mod counting;
use counting::{CURRENT, PEAK};

/// What one pod may hold in the store under the default limits with a 60 s window scraped
/// every second, whatever it sends.
const STATED_BOUND_BYTES: usize = 16 << 20;

/// Peak working set of reading one body, beyond the body itself.
const STATED_PARSE_BOUND_BYTES: usize = 4 << 20;

/// Scrapes that parse the body (and measure the parse's peak); the rest copy the snapshot.
const PARSED_SCRAPES: usize = 3;

fn attack_body(models: usize) -> String {
    let mut body = String::with_capacity(models * 50 + 200);
    for i in 0..models {
        body.push_str(&format!(
            "vllm:num_requests_waiting{{model_name=\"m{i:06}\"}} 1\n"
        ));
    }
    body
}

#[test]
fn three_hundred_thousand_models_stay_within_the_stated_bound() {
    let body = attack_body(300_000);
    assert!(
        body.len() >= 15_000_000 && body.len() < 16 << 20,
        "{}",
        body.len()
    );
    let routes = RouteIndex::engines();
    let limits = SnapshotLimits::default();
    let baseline = CURRENT.load(Ordering::Relaxed);

    let store = Store::new(60.0, 18.0);
    let key = PodKey::new("llm", "attacker");
    store.upsert_target(Target {
        key: key.clone(),
        uid: "u".into(),
        kind: TargetKind::Engine,
        url: Some("http://127.0.0.1:1/metrics".into()),
        labels: BTreeMap::new(),
        node: None,
        ready: true,
        terminating: false,
        asleep: false,
        owners: vec![],
    });
    let mut parse_peak = 0;
    let mut last_parsed: Option<EngineSnapshot> = None;
    for second in 0..63 {
        let taken_at = 1000.0 + second as f64;
        let snapshot = match &last_parsed {
            Some(parsed) if second >= PARSED_SCRAPES => {
                let mut copy = parsed.clone();
                copy.taken_at = taken_at;
                copy
            }
            _ => {
                let before = CURRENT.load(Ordering::Relaxed);
                PEAK.store(before, Ordering::Relaxed);
                let parsed = EngineSnapshot::from_exposition_with(
                    &body,
                    Format::Prometheus,
                    taken_at,
                    &routes,
                    &limits,
                );
                parse_peak = parse_peak.max(PEAK.load(Ordering::Relaxed) - before);
                last_parsed = Some(parsed.clone());
                parsed
            }
        };
        assert_eq!(snapshot.models.len(), limits.max_models);
        assert_eq!(
            snapshot.dropped.get(DropKind::ModelLimit),
            300_000 - limits.max_models
        );
        store.record_engine_scrape(&key, snapshot, 0.1);
    }
    drop(last_parsed);
    let held = CURRENT.load(Ordering::Relaxed) - baseline;
    let pods = store.engine_pods(None, 1063.0);
    assert_eq!(pods.len(), 1);
    assert!(pods[0].servable.is_ok(), "the pod's other values are kept");
    eprintln!(
        "300,000-model body ({} bytes) scraped 63 times: store holds {held} bytes \
         (bound {STATED_BOUND_BYTES}); one read peaks at {parse_peak} bytes beyond the body \
         (bound {STATED_PARSE_BOUND_BYTES})",
        body.len()
    );
    assert!(held <= STATED_BOUND_BYTES, "{held} bytes held");
    assert!(
        parse_peak <= STATED_PARSE_BOUND_BYTES,
        "{parse_peak} bytes at peak"
    );
    drop(store);
}
