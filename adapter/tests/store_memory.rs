//! What the store holds per target, counted: issue 13's goal is 10,000 targets in 512 MiB.
//!
//! 1,000 engine targets, each scraped once per 5 s for a whole 60 s window plus one scrape
//! (14 rounds), every scrape read from the real vLLM 0.18 capture (`../shared/fixtures/vllm/
//! vllm-0.16to0.18-…`, 52 KB) replayed with moving counters and buckets by `vllm-sim`'s
//! `Replay` — the bodies the scale envelope serves. Heap is measured with a counting global
//! allocator (this file is its own test binary with this one test, so nothing else allocates
//! meanwhile): the store's bytes per target, and the two parts of it, the kept history of one
//! pod and the signals computed from it.
//!
//! When the store kept whole snapshots (main at 6f63163) this test counted 115,963 bytes per
//! target: one pod's history 101,068 bytes (≈ 7.2 KB per scrape, most of it the eleven-entry
//! leaf node of each snapshot's model map, and every histogram's own copy of its bounds), its
//! signals 12,774 bytes (the same leaf node, of per-model signals); 10,000 targets would have
//! held 1.1 GiB in the store alone. [`STATED_BOUND_PER_TARGET`] is the bound the packed
//! history and boxed signals have to stay under.
//!
//! Needs `../shared` (or `INFERSCALE_SHARED`); without it the test fails, unless
//! `INFERSCALE_ALLOW_SKIP=1`, then it prints SKIPPED.

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
use inferscale_metrics::signals::{ScrapeHistory, SingleScrape};
use inferscale_metrics::snapshot::EngineSnapshot;
use inferscale_sim::fleet::{FleetLoad, Replay};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

mod capture;
mod counting;
use capture::capture;
use counting::CURRENT;

const TARGETS: usize = 1000;
const INTERVAL_SECS: u64 = 5;
const WINDOW_SECS: f64 = 60.0;
/// A whole window of scrapes (0, 5, …, 60 s) and the next one.
const ROUNDS: u64 = WINDOW_SECS as u64 / INTERVAL_SECS + 2;

/// Heap the store may hold per target with a full window of the real capture (≈ 22.9 KB
/// when this was written): 10,000 targets in at most 320 MiB of store, leaving room in
/// 512 MiB for the scrapes in flight, the HTTP connections and the runtime.
const STATED_BOUND_PER_TARGET: usize = 32 * 1024;

fn engine_target(i: usize) -> Target {
    Target {
        key: PodKey::new("fleet", format!("vllm-{i:05}")),
        uid: format!("uid-{i}"),
        kind: TargetKind::Engine,
        url: Some(format!("http://127.3.0.1:{}/metrics", 8000 + i)),
        labels: BTreeMap::from([("app".to_owned(), "vllm".to_owned())]),
        node: None,
        ready: true,
        terminating: false,
        asleep: false,
        owners: vec![],
    }
}

fn held_since(baseline: usize) -> usize {
    CURRENT.load(Ordering::Relaxed).saturating_sub(baseline)
}

#[test]
fn a_thousand_targets_with_a_full_window_stay_within_the_stated_bytes_per_target() {
    let Some(text) = capture() else { return };
    let replay = Replay::new(&text);
    let load = FleetLoad {
        waiting: 3.0,
        running: 8.0,
    };
    let routes = RouteIndex::engines();
    let rounds: Vec<EngineSnapshot> = (0..ROUNDS)
        .map(|k| {
            EngineSnapshot::from_exposition(
                &replay.render(k * INTERVAL_SECS, load),
                Format::Prometheus,
                1000.0 + (k * INTERVAL_SECS) as f64,
                &routes,
            )
        })
        .collect();

    // One pod's kept history, and the signals computed from it, alone.
    let before = CURRENT.load(Ordering::Relaxed);
    let mut history = ScrapeHistory::new(WINDOW_SECS);
    for round in &rounds {
        history.push(round.clone());
    }
    let history_bytes = held_since(before);
    let before = CURRENT.load(Ordering::Relaxed);
    let signals = history.signals(SingleScrape::Missing).unwrap();
    let signals_bytes = held_since(before);
    assert!(signals.combined.time_to_first_token.p99.value().is_some());
    drop(signals);
    drop(history);

    let before = CURRENT.load(Ordering::Relaxed);
    let store = Store::new(WINDOW_SECS, 3.0 * INTERVAL_SECS as f64);
    for i in 0..TARGETS {
        store.upsert_target(engine_target(i));
    }
    let targets_bytes = held_since(before);
    for round in &rounds {
        for i in 0..TARGETS {
            let key = PodKey::new("fleet", format!("vllm-{i:05}"));
            store.record_engine_scrape(&key, round.clone(), 0.001);
        }
    }
    let store_bytes = held_since(before);
    let now = rounds.last().unwrap().taken_at + 1.0;
    let pods = store.engine_pods(None, now);
    assert_eq!(pods.len(), TARGETS);
    assert!(pods.iter().all(|p| p.servable.is_ok()));
    let window = pods[0].signals.as_ref().unwrap().window;
    assert_eq!(window.seconds, Some(WINDOW_SECS), "a whole window is kept");
    drop(pods);

    let per_target = store_bytes / TARGETS;
    eprintln!(
        "{TARGETS} targets, {ROUNDS} scrapes each of the real vLLM capture: store holds \
         {store_bytes} bytes = {per_target} per target (bound {STATED_BOUND_PER_TARGET}); of \
         which targets alone {} per target; one pod's history {history_bytes} bytes, its \
         signals {signals_bytes} bytes",
        targets_bytes / TARGETS
    );
    assert!(
        per_target <= STATED_BOUND_PER_TARGET,
        "{per_target} bytes per target"
    );
    drop(store);
}
