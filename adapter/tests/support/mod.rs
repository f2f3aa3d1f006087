//! What several adapter test binaries share: the one-pod API state the request corpus and
//! the request fuzzer send their requests to.

use inferscale_adapter::api::AppState;
use inferscale_adapter::store::TargetRegistry;
use inferscale_adapter::store::{OwnerRef, PodKey, ScrapeSink, Store, Target, TargetKind};
use inferscale_adapter::telemetry::Telemetry;
use inferscale_metrics::profile::{Engine, GaugeSignal};
use inferscale_metrics::snapshot::EngineSnapshot;
use std::collections::BTreeMap;
use std::sync::Arc;

fn clock() -> f64 {
    1016.0
}

/// One Ready pod `llm/vllm-a` (label app=vllm, Deployment vllm, model llama, 3 waiting),
/// scraped twice.
pub fn state() -> AppState {
    let store = Arc::new(Store::new(60.0, 18.0));
    store.upsert_target(Target {
        key: PodKey::new("llm", "vllm-a"),
        uid: "uid-a".into(),
        kind: TargetKind::Engine,
        url: Some("http://127.0.0.1:1/metrics".into()),
        labels: BTreeMap::from([("app".to_owned(), "vllm".to_owned())]),
        node: Some("gpu-node-1".into()),
        ready: true,
        terminating: false,
        asleep: false,
        owners: vec![OwnerRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "vllm".into(),
        }],
    });
    for t in [1000.0, 1015.0] {
        let mut s = EngineSnapshot::new(t, Engine::Vllm);
        s.model_mut("llama").set_gauge(GaugeSignal::QueueDepth, 3.0);
        store.record_engine_scrape(&PodKey::new("llm", "vllm-a"), s, 0.01);
    }
    let mut state = AppState::new(store, Arc::new(Telemetry::new()));
    state.clock = clock;
    state
}
