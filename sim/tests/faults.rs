//! The fault admin API and sleep mode over real sockets on 127.0.0.1 (ephemeral ports),
//! read the way the adapter reads a pod: `reqwest` (with gzip decoding) and the metrics
//! engine's snapshot.

use inferscale_metrics::parser::Format;
use inferscale_metrics::profile::{CounterSignal, GaugeSignal, RouteIndex};
use inferscale_metrics::snapshot::{DropKind, EngineSnapshot};
use inferscale_sim::engine::SleepConfig;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod support;
use support::{fetch_metrics, start_vllm, MODEL};

/// A simulator and a client that follows no redirect, as the adapter's should not.
async fn start(sleep: SleepConfig) -> (SocketAddr, reqwest::Client, Stop) {
    let (addr, stop) = start_vllm(4, sleep).await;
    (addr, client(), stop)
}

type Stop = tokio::sync::oneshot::Sender<()>;

/// A simulator already playing `fault`.
async fn start_with_fault(fault: &str) -> (SocketAddr, reqwest::Client, Stop) {
    let (addr, client, stop) = start(SleepConfig::default()).await;
    let set = post(&client, addr, "/admin/fault", fault).await;
    assert_eq!(set.status(), 200, "{fault}");
    (addr, client, stop)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn post(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> reqwest::Response {
    client
        .post(format!("http://{addr}{path}"))
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn snapshot(client: &reqwest::Client, addr: SocketAddr) -> EngineSnapshot {
    let body = fetch_metrics(client, addr).await;
    EngineSnapshot::from_exposition(&body, Format::Prometheus, 0.0, &RouteIndex::engines())
}

#[tokio::test]
async fn gone_refuses_connections_then_the_endpoint_comes_back() {
    let (addr, _client, _stop) = start_with_fault(r#"{"fault":"gone","seconds":1}"#).await;
    // Within the grace the listener closes; new connections are refused.
    let deadline = Instant::now() + Duration::from_secs(3);
    let refused = loop {
        let fresh = reqwest::Client::new();
        match fresh.get(format!("http://{addr}/metrics")).send().await {
            Err(error) if error.is_connect() => break true,
            _ if Instant::now() > deadline => break false,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert!(refused, "connections refused while gone");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = reqwest::Client::new()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
        {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "back within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_hanging_scrape_is_answered_by_a_reset() {
    let (addr, client, _stop) = start_with_fault(r#"{"fault":"hang","seconds":600}"#).await;
    let scraping = {
        let client = client.clone();
        tokio::spawn(async move { client.get(format!("http://{addr}/metrics")).send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!scraping.is_finished(), "still hanging");
    assert_eq!(post(&client, addr, "/admin/reset", "").await.status(), 204);
    let answered = tokio::time::timeout(Duration::from_secs(5), scraping)
        .await
        .expect("answered after the reset")
        .unwrap()
        .unwrap();
    assert_eq!(answered.status(), 200);
}

#[tokio::test]
async fn gzip_bomb_decodes_through_reqwest_to_the_announced_size() {
    let (addr, client, _stop) =
        start_with_fault(r#"{"fault":"gzip_bomb","decoded_bytes":8388608}"#).await;
    let body = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 8 << 20);
}

#[tokio::test]
async fn the_300k_model_body_is_bounded_by_the_snapshot_limits() {
    let (addr, client, _stop) = start_with_fault(r#"{"fault":"many_models","count":300000}"#).await;
    let snap = snapshot(&client, addr).await;
    assert_eq!(snap.models.len(), 64);
    assert!(
        snap.models.contains_key(MODEL),
        "the pod's own model is kept"
    );
    assert_eq!(snap.dropped.get(DropKind::ModelLimit), 300_000 - 63);
}

#[tokio::test]
async fn restart_is_seen_as_a_new_process() {
    let (addr, client, _stop) = start(SleepConfig::default()).await;
    let done = post(
        &client,
        addr,
        "/v1/completions",
        r#"{"prompt":"a b c","max_tokens":3}"#,
    )
    .await;
    assert_eq!(done.status(), 200);
    let before = snapshot(&client, addr).await;
    assert_eq!(
        before.models[MODEL].counter(CounterSignal::PromptTokens),
        Some(3.0)
    );
    let restarted = post(&client, addr, "/admin/restart", "").await;
    assert_eq!(restarted.status(), 200);
    let after = snapshot(&client, addr).await;
    assert!(after.process_start > before.process_start);
    assert!(after.models[MODEL].series_created > before.models[MODEL].series_created);
    assert_eq!(
        after.models[MODEL].counter(CounterSignal::PromptTokens),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_request_sent_while_asleep_waits_and_is_served_after_wake_up() {
    let (addr, client, _stop) = start(SleepConfig {
        enabled: true,
        wake_time_level1: Duration::from_millis(300),
        wake_time_level2: Duration::from_secs(1),
    })
    .await;
    assert_eq!(
        post(&client, addr, "/sleep?level=1", "").await.status(),
        200
    );
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .post(format!("http://{addr}/v1/completions"))
                .body(r#"{"prompt":"x","max_tokens":2}"#)
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asleep = snapshot(&client, addr).await;
    let m = &asleep.models[MODEL];
    assert_eq!(
        m.gauge(GaugeSignal::QueueDepth),
        Some(1.0),
        "queued, not served"
    );
    assert_eq!(m.gauge(GaugeSignal::Running), Some(0.0));
    assert_eq!(m.gauge(GaugeSignal::KvCacheUsage), Some(0.0));
    assert!(!waiting.is_finished());
    let woke = Instant::now();
    assert_eq!(post(&client, addr, "/wake_up", "").await.status(), 200);
    assert!(woke.elapsed() >= Duration::from_millis(300), "wake time");
    let served = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served after wake_up")
        .unwrap()
        .unwrap();
    assert_eq!(served.status(), 200);
}
