//! The fault admin API and sleep mode over real sockets on 127.0.0.1 (ephemeral ports),
//! read the way the adapter reads a pod: `reqwest` (with gzip decoding) and the metrics
//! engine's snapshot.

use inferscale_metrics::exposition::Format;
use inferscale_metrics::profile::{CounterSignal, GaugeSignal, RouteIndex};
use inferscale_metrics::snapshot::{DropKind, EngineSnapshot};
use inferscale_sim::engine::{Engine, EngineConfig, SleepConfig};
use inferscale_sim::server;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MODEL: &str = "sim-llama";

async fn start(sleep: SleepConfig) -> SocketAddr {
    let engine = Engine::new(EngineConfig {
        model: MODEL.into(),
        max_num_seqs: 4,
        ttft: Duration::from_millis(5),
        itl: Duration::from_millis(2),
        prefill_per_token: Duration::ZERO,
        kv_blocks: 2000,
        block_size: 16,
        max_model_len: 4096,
        sleep,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::run(listener, engine, std::future::pending()));
    addr
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
    let body = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    EngineSnapshot::from_exposition(&body, Format::Prometheus, 0.0, &RouteIndex::engines())
}

#[tokio::test]
async fn gone_refuses_connections_then_the_endpoint_comes_back() {
    let addr = start(SleepConfig::default()).await;
    let client = client();
    assert_eq!(
        post(
            &client,
            addr,
            "/admin/fault",
            r#"{"fault":"gone","seconds":1}"#
        )
        .await
        .status(),
        200
    );
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
    let addr = start(SleepConfig::default()).await;
    let client = client();
    post(
        &client,
        addr,
        "/admin/fault",
        r#"{"fault":"hang","seconds":600}"#,
    )
    .await;
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
    let addr = start(SleepConfig::default()).await;
    let client = client();
    post(
        &client,
        addr,
        "/admin/fault",
        r#"{"fault":"gzip_bomb","decoded_bytes":8388608}"#,
    )
    .await;
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
    let addr = start(SleepConfig::default()).await;
    let client = client();
    post(
        &client,
        addr,
        "/admin/fault",
        r#"{"fault":"many_models","count":300000}"#,
    )
    .await;
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
    let addr = start(SleepConfig::default()).await;
    let client = client();
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
    let addr = start(SleepConfig {
        enabled: true,
        wake_time_level1: Duration::from_millis(300),
        wake_time_level2: Duration::from_secs(1),
    })
    .await;
    let client = client();
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
