//! The 300,000-model attack from issue 8, measured: one pod's 15 MB body with 300,000
//! distinct `model_name` values, parsed and turned into a snapshot under the default
//! [`SnapshotLimits`]. Before the limits this one body drove the adapter from 56 MB to
//! 2.1 GB in 12 s (one snapshot per model per scrape in the window).
//!
//! Peak heap is measured with a counting global allocator (this file is its own test binary
//! and holds this one test, so nothing else allocates meanwhile). Time is measured in the
//! `hostile` criterion bench, not here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first broken assumption"
)]
#![allow(
    unsafe_code,
    reason = "a counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to System"
)]

use inferscale_metrics::parser::Format;
use inferscale_metrics::profile::{GaugeSignal, RouteIndex};
use inferscale_metrics::snapshot::{DropKind, EngineSnapshot, SnapshotLimits};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

mod support;
use support::attack_body;

/// Heap the snapshot builder may use beyond the body itself, whatever the body: the
/// default caps hold 64 models (≈ 2 KB each while building) and at most 16,384 series keys.
const STATED_BOUND_BYTES: usize = 2 << 20;

/// A body that fills the series cap with the most expensive series there are: 100 models
/// with 1,000-byte names, each with four histograms of 100 bounds (40,000 bucket samples).
fn every_cap_body() -> String {
    let mut body = String::new();
    let families = [
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
    ];
    for model in 0..100 {
        let name = format!("{model:0>1000}");
        for family in families {
            for bound in 0..100 {
                let le = if bound == 99 {
                    "+Inf".to_owned()
                } else {
                    bound.to_string()
                };
                body.push_str(&format!(
                    "{family}_bucket{{le=\"{le}\",model_name=\"{name}\"}} {bound}\n"
                ));
            }
        }
    }
    body
}

/// Runs one parse and snapshot, returning it with its peak and retained heap, bytes.
fn measured(body: &str) -> (EngineSnapshot, usize, usize) {
    let routes = RouteIndex::engines();
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let snapshot = EngineSnapshot::from_exposition_with(
        body,
        Format::Prometheus,
        0.0,
        &routes,
        &SnapshotLimits::default(),
    );
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let kept = CURRENT.load(Ordering::Relaxed).saturating_sub(before);
    (snapshot, peak, kept)
}

// One test, so that nothing else in this binary allocates while it measures.
#[test]
fn hostile_bodies_stay_within_the_stated_bound() {
    let body = every_cap_body();
    let (snapshot, peak, kept) = measured(&body);
    println!(
        "{} MB body filling every cap: peak heap {peak} B while building, {kept} B kept",
        body.len() >> 20
    );
    assert!(peak < STATED_BOUND_BYTES, "peak {peak} B");
    // 16,384 series of 400 per model: 40 whole models and the start of a 41st.
    assert_eq!(snapshot.models.len(), 41);
    assert_eq!(
        snapshot.dropped.get(DropKind::SeriesLimit),
        100 * 4 * 100 - SnapshotLimits::DEFAULT_MAX_SERIES
    );
    drop(snapshot);

    let body = attack_body(300_000);
    assert!(
        body.len() > 14_500_000 && body.len() < 16_000_000,
        "{}",
        body.len()
    );
    let (snapshot, peak, kept) = measured(&body);
    println!(
        "15 MB body, 300,000 models: peak heap {peak} B while building, {kept} B kept in the snapshot"
    );
    assert!(peak < STATED_BOUND_BYTES, "peak {peak} B");
    assert_eq!(snapshot.models.len(), SnapshotLimits::DEFAULT_MAX_MODELS);
    assert_eq!(
        snapshot.dropped.get(DropKind::ModelLimit),
        300_000 - SnapshotLimits::DEFAULT_MAX_MODELS
    );
    assert_eq!(
        snapshot.dropped.total(),
        snapshot.dropped.get(DropKind::ModelLimit)
    );
    assert_eq!(snapshot.parse_stats.skipped(), 0);
    // The pod's own values among the first models are kept, the late sample included.
    assert_eq!(
        snapshot.models["m000001"].gauge(GaugeSignal::Running),
        Some(7.0)
    );
}
