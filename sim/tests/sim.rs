//! End-to-end checks of `vllm-sim` over real sockets on 127.0.0.1 (ephemeral ports).

use inferscale_metrics::gpu::{read_gpus, PodRef};
use inferscale_metrics::parser::Format;
use inferscale_metrics::profile::{
    CounterSignal, GaugeSignal, GpuField, HistogramSignal, RouteIndex,
};
use inferscale_metrics::snapshot::{EngineSnapshot, ModelSnapshot};
use inferscale_sim::dcgm::Node;
use inferscale_sim::engine::SleepConfig;
use inferscale_sim::{dcgm_server, server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod support;
use support::{fetch_metrics, start_vllm, MODEL};

async fn scrape(client: &reqwest::Client, addr: SocketAddr) -> (EngineSnapshot, ModelSnapshot) {
    let body = fetch_metrics(client, addr).await;
    let snapshot =
        EngineSnapshot::from_exposition(&body, Format::Prometheus, 0.0, &RouteIndex::engines());
    assert_eq!(
        snapshot.parse_stats.skipped(),
        0,
        "{:?}",
        snapshot.parse_stats
    );
    let model = snapshot.models[MODEL].clone();
    (snapshot, model)
}

fn scratch_file(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("vllm-sim-{}-{nanos}-{name}", std::process::id()))
}

/// 12 requests against a batch of 4: the queue fills, the fake GPU reads saturated, and
/// every completed request is one TTFT observation.
#[tokio::test]
async fn queue_builds_beyond_max_num_seqs_and_every_request_is_observed() {
    let (addr, stop) = start_vllm(4, SleepConfig::default()).await;
    let client = reqwest::Client::new();

    let assignments = scratch_file("assignments.json");
    std::fs::write(
        &assignments,
        format!(
            r#"[{{"namespace":"llm","pod":"vllm-abc","container":"vllm","gpus":1,"metrics_url":"http://{addr}/metrics","max_num_seqs":4}}]"#
        ),
    )
    .unwrap();
    let dcgm_state =
        dcgm_server::DcgmState::new(Node::l4("kwok-node-0", 2), assignments.clone()).unwrap();
    let dcgm_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dcgm_addr = dcgm_listener.local_addr().unwrap();
    let dcgm_faults = dcgm_state.faults().clone();
    tokio::spawn(server::serve_until(
        dcgm_listener,
        dcgm_server::router(dcgm_state),
        dcgm_faults,
        std::future::pending(),
    ));

    let requests: Vec<_> = (0..12)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let path = if i % 2 == 0 { "completions" } else { "chat/completions" };
                let body = if i % 2 == 0 {
                    serde_json::json!({"model": MODEL, "prompt": "a b c d e f g h", "max_tokens": 20})
                } else {
                    serde_json::json!({"model": MODEL, "max_tokens": 20,
                        "messages": [{"role": "user", "content": "a b c d"}]})
                };
                let response = client
                    .post(format!("http://{addr}/v1/{path}"))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                serde_json::from_str::<serde_json::Value>(&response.text().await.unwrap()).unwrap()
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(40)).await;
    let (_, busy) = scrape(&client, addr).await;
    assert_eq!(busy.gauge(GaugeSignal::Running), Some(4.0));
    assert!(busy.gauge(GaugeSignal::QueueDepth).unwrap() > 0.0);
    assert!(busy.gauge(GaugeSignal::KvCacheUsage).unwrap() > 0.0);

    let dcgm_body = client
        .get(format!("http://{dcgm_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (gpus, stats) = read_gpus(&dcgm_body, Format::Prometheus);
    assert_eq!(stats.skipped(), 0);
    let held = gpus.iter().find(|g| g.index == "0").unwrap();
    assert_eq!(
        held.pod,
        Some(PodRef {
            namespace: "llm".into(),
            pod: "vllm-abc".into()
        })
    );
    assert_eq!(held.field(GpuField::Utilization), Some(1.0));
    let idle = gpus.iter().find(|g| g.index == "1").unwrap();
    assert_eq!(
        (idle.pod.as_ref(), idle.field(GpuField::Utilization)),
        (None, Some(0.0))
    );

    for request in requests {
        let body = request.await.unwrap();
        assert_eq!(body["usage"]["completion_tokens"], 20);
    }
    let (snapshot, done) = scrape(&client, addr).await;
    assert_eq!(snapshot.kv_capacity_tokens, Some(32000.0));
    assert_eq!(done.gauge(GaugeSignal::Running), Some(0.0));
    assert_eq!(done.gauge(GaugeSignal::QueueDepth), Some(0.0));
    assert_eq!(done.gauge(GaugeSignal::KvCacheUsage), Some(0.0));
    assert_eq!(done.counter(CounterSignal::RequestsFinished), Some(12.0));
    assert_eq!(done.counter(CounterSignal::GenerationTokens), Some(240.0));
    // 6 × 8 words + 6 × (4 words + 4 template tokens).
    assert_eq!(done.counter(CounterSignal::PromptTokens), Some(96.0));
    let ttft = done.histogram(HistogramSignal::TimeToFirstToken).unwrap();
    assert_eq!(ttft.count(), 12.0);
    let queue = done.histogram(HistogramSignal::QueueTime).unwrap();
    assert!(queue.sum > 0.0, "later waves waited");

    // The harness rewrites the file as pods go: the GPU is free on the next scrape.
    std::fs::write(&assignments, "[]").unwrap();
    let body = client
        .get(format!("http://{dcgm_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (gpus, _) = read_gpus(&body, Format::Prometheus);
    assert!(gpus.iter().all(|g| g.pod.is_none()));
    let _ = std::fs::remove_file(&assignments);
    let _ = stop.send(());
}

#[tokio::test]
async fn metrics_endpoint_goes_down_and_comes_back() {
    let (addr, stop) = start_vllm(2, SleepConfig::default()).await;
    let client = reqwest::Client::new();
    let status = |path: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("/metrics").await, 200);
    client
        .post(format!("http://{addr}/admin/metrics-down"))
        .send()
        .await
        .unwrap();
    assert_eq!(status("/metrics").await, 503);
    assert_eq!(status("/health").await, 200, "only /metrics is down");
    client
        .post(format!("http://{addr}/admin/metrics-up"))
        .send()
        .await
        .unwrap();
    assert_eq!(status("/metrics").await, 200);

    client
        .post(format!("http://{addr}/admin/load"))
        .body(r#"{"waiting": 9, "running": 3}"#)
        .send()
        .await
        .unwrap();
    let (_, model) = scrape(&client, addr).await;
    assert_eq!(model.gauge(GaugeSignal::QueueDepth), Some(9.0));
    assert_eq!(model.gauge(GaugeSignal::Running), Some(3.0));
    let _ = stop.send(());
}

/// The binary binds only after --startup-delay and exits 0 on SIGTERM.
#[cfg(unix)]
#[test]
fn binary_listens_after_startup_delay_and_exits_on_sigterm() {
    use std::net::TcpStream;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vllm-sim"))
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--startup-delay", "300ms"])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err(),
        "not listening while loading"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "never started listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Generous: this checks that SIGTERM ends the process cleanly, not how fast; on a loaded
    // 2-core machine a niced child can wait seconds for the CPU.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
