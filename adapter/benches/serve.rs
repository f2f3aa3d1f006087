//! Serving and scraping costs, measured over real loopback sockets.
//!
//! 1. Answer latency: 1,000 servable pods in the store; 100 concurrent keep-alive clients
//!    each ask `pods/*/vllm_time_to_first_token_p95` (a percentile per pod, the most
//!    expensive list) and `pods/*/vllm_num_requests_waiting`. Target: p99 ≤ 5 ms. Measured
//!    twice: clients asking back to back (the server saturated by the benchmark), and
//!    clients each asking every 20 ms (5,000 requests/s offered), as pollers do.
//! 2. Scrape cost: the real scrape loop against 300 loopback targets serving a real vLLM
//!    body, at a 1 s interval for a fixed number of rounds; CPU time and resident memory per
//!    target per interval.
//!
//! The in-process client shares the two cores with the server; when `wrk` (Debian package)
//! is installed the same lists are also measured from a second process with it
//! (`-c100 -t1`, 10 s), which leaves the server more of the machine.
//!
//! Run: `cargo bench -p inferscale-adapter --bench serve`. Bounded: fixed request counts,
//! fixed rounds and durations, loopback only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark stops at the first broken assumption"
)]

use inferscale_adapter::api::cache::{ResponseCache, SERVE_STALE_FOR};
use inferscale_adapter::api::{router, AppState};
use inferscale_adapter::auth::AuthState;
use inferscale_adapter::http::serve_plain;
use inferscale_adapter::scrape::{unix_now, ScrapeConfig, Scraper};
use inferscale_adapter::store::{
    PodKey, ScrapeSink, SignalView, Store, Target, TargetKind, TargetRegistry,
};
use inferscale_adapter::telemetry::Telemetry;
use inferscale_metrics::histogram::Histogram;
use inferscale_metrics::profile::{
    CounterSignal, Engine, GaugeSignal, HistogramSignal, VLLM_TTFT_BUCKETS,
};
use inferscale_metrics::snapshot::EngineSnapshot;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PODS: usize = 1000;
const CLIENTS: usize = 100;
const REQUESTS_PER_CLIENT: usize = 40;
/// The paced run: each client asks every `PACE` (100 clients: 5,000 requests/s offered).
const PACE: Duration = Duration::from_millis(20);
const PACED_REQUESTS_PER_CLIENT: usize = 100;
/// Requests that each find their answer out of date.
const REBUILDS: usize = 100;
/// How long scrapes land during the paced run (the run lasts PACE × requests = 2 s).
const PACE_SECONDS_OF_SCRAPES: f64 = 2.0;
const SCRAPE_TARGETS: usize = 300;
const SCRAPE_ROUNDS: u64 = 10;

fn body() -> String {
    let shared = std::env::var_os("INFERSCALE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
        .join("fixtures/vllm/vllm-0.16to0.18-v1-kops-k8s-ai-conformance-qwen2.5-0.5b.txt");
    std::fs::read_to_string(&shared).unwrap_or_else(|_| {
        eprintln!(
            "shared fixture not found ({}); using the project's own",
            shared.display()
        );
        std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../metrics/tests/fixtures/vllm-v1-two-engines.txt"),
        )
        .expect("own fixture")
    })
}

fn target(i: usize, url: String) -> Target {
    Target {
        key: PodKey::new("llm", format!("vllm-{i:04}")),
        uid: format!("uid-{i}"),
        kind: TargetKind::Engine,
        url: Some(url),
        labels: [("app".to_string(), "vllm".to_string())].into(),
        node: None,
        ready: true,
        terminating: false,
        asleep: false,
        owners: vec![],
    }
}

fn snapshot(t: f64, ttft: &Histogram) -> EngineSnapshot {
    let mut s = EngineSnapshot::new(t, Engine::Vllm);
    let m = s.model_mut("meta-llama/Llama-3.1-8B-Instruct");
    m.set_gauge(GaugeSignal::QueueDepth, 3.0);
    m.set_gauge(GaugeSignal::Running, 40.0);
    m.set_gauge(GaugeSignal::KvCacheUsage, 0.42);
    m.set_counter(CounterSignal::PromptTokens, t * 100.0);
    m.set_histogram(HistogramSignal::TimeToFirstToken, ttft.clone());
    s
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Process CPU time (user + system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Pod `i`'s TTFT histogram after 50 requests.
fn pod_ttft(i: usize) -> Histogram {
    let mut ttft = Histogram::empty(&VLLM_TTFT_BUCKETS);
    for k in 0..50 {
        ttft.observe(0.05 + 0.01 * ((i + k) % 40) as f64);
    }
    ttft
}

async fn answer_latency() {
    // Two scrapes 15 s apart per pod, with 50 TTFT observations between them.
    let store = Arc::new(Store::new(60.0, 1e9));
    let now = unix_now();
    for i in 0..PODS {
        let t = target(i, format!("http://127.0.0.1:1/{i}"));
        let key = t.key.clone();
        store.upsert_target(t);
        let earlier = snapshot(now - 15.0, &Histogram::empty(&VLLM_TTFT_BUCKETS));
        store.record_engine_scrape(&key, earlier, 0.001);
        store.record_engine_scrape(&key, snapshot(now, &pod_ttft(i)), 0.001);
    }
    let state = AppState::new(store.clone(), Arc::new(Telemetry::new()));
    // The same store behind a cache that never reuses an answer the store moved past: what
    // a request pays when it is the one that rebuilds.
    let mut rebuilding_state = state.clone();
    rebuilding_state.cache = Arc::new(ResponseCache::with_ages(Duration::ZERO, SERVE_STALE_FOR));
    let addr = serve(state).await;
    let rebuilding_addr = serve(rebuilding_state).await;
    for metric in ["vllm_num_requests_waiting", "vllm_time_to_first_token_p95"] {
        let path = format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/%2A/{metric}");
        let rebuilt = rebuild_latency(&store, &format!("http://{rebuilding_addr}{path}")).await;
        println!(
            "rebuilt answer  {metric:<30} pods={PODS} one client, a scrape landing before each of {} requests  p50={:.2?} p99={:.2?} max={:.2?}",
            rebuilt.len(),
            percentile(&rebuilt, 0.5),
            percentile(&rebuilt, 0.99),
            rebuilt[rebuilt.len() - 1],
        );
    }
    for metric in ["vllm_num_requests_waiting", "vllm_time_to_first_token_p95"] {
        let url = format!(
            "http://{addr}/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/%2A/{metric}"
        );
        let client = gzip_client();
        // Warm up connections and caches.
        let first = client
            .get(&url)
            .send()
            .await
            .expect("request")
            .bytes()
            .await
            .expect("body");
        let uncompressed = reqwest::get(&url)
            .await
            .expect("request")
            .bytes()
            .await
            .expect("body");
        let (all, wall) = run_clients(&client, &url, None, REQUESTS_PER_CLIENT).await;
        println!(
            "answer latency  {metric:<30} pods={PODS} clients={CLIENTS} requests={} body={} KB (gzip {} KB)  p50={:.2?} p90={:.2?} p99={:.2?} max={:.2?}  throughput={:.0} req/s",
            all.len(),
            uncompressed.len() / 1024,
            first.len() / 1024,
            percentile(&all, 0.5),
            percentile(&all, 0.9),
            percentile(&all, 0.99),
            all[all.len() - 1],
            all.len() as f64 / wall.as_secs_f64()
        );
        // The same 100 clients at a steady pace, as pollers (HPAs, dashboards, recording
        // rules) ask, while scrapes keep landing as they do for 1,000 pods at a 5 s interval
        // (one every 5 ms): every answer goes out of date each second and is rebuilt by the
        // first request that finds it so.
        let scrapes = tokio::spawn(land_scrapes(store.clone(), PACE_SECONDS_OF_SCRAPES));
        let (paced, wall) = run_clients(&client, &url, Some(PACE), PACED_REQUESTS_PER_CLIENT).await;
        let landed = scrapes.await.expect("scrape writer");
        let after: serde_json::Value = serde_json::from_slice(
            &reqwest::get(&url)
                .await
                .expect("request")
                .bytes()
                .await
                .expect("body"),
        )
        .expect("JSON list");
        assert_eq!(
            after["items"].as_array().map(Vec::len),
            Some(PODS),
            "every pod still answered after the scrapes landed"
        );
        println!(
            "  paced: each client every {PACE:?} ({:.0} req/s offered), {landed} scrapes landing meanwhile  p50={:.2?} p90={:.2?} p99={:.2?} max={:.2?}  achieved {:.0} req/s",
            CLIENTS as f64 / PACE.as_secs_f64(),
            percentile(&paced, 0.5),
            percentile(&paced, 0.9),
            percentile(&paced, 0.99),
            paced[paced.len() - 1],
            paced.len() as f64 / wall.as_secs_f64()
        );
        wrk(&url).await;
    }
}

/// A keep-alive client that, like client-go, asks for gzip. It does not inflate, so a
/// figure is the time to receive the whole answer, not the client's own decoding.
fn gzip_client() -> reqwest::Client {
    let accept_gzip = [(
        reqwest::header::ACCEPT_ENCODING,
        reqwest::header::HeaderValue::from_static("gzip"),
    )];
    reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .no_gzip()
        .default_headers(accept_gzip.into_iter().collect())
        .build()
        .expect("client")
}

/// Serves `state` on a loopback port with the adapter's own plain-HTTP accept loop (what
/// standalone mode runs, its allow-all auth layer included; the secure server adds TLS and
/// delegated authentication and authorization to the same router).
async fn serve(state: AppState) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve_plain(
        listener,
        router(state, AuthState::standalone()),
        inferscale_adapter::http::ServeOptions::default(),
        std::future::pending(),
    ));
    addr
}

/// Latency of answers that must be rebuilt: a scrape lands before every request.
async fn rebuild_latency(store: &Arc<Store>, url: &str) -> Vec<Duration> {
    let client = gzip_client();
    let mut latencies = Vec::with_capacity(REBUILDS);
    for round in 0..=REBUILDS {
        let i = round % PODS;
        let mut ttft = pod_ttft(i);
        ttft.observe(0.2 * (round + 1) as f64);
        let key = PodKey::new("llm", format!("vllm-{i:04}"));
        store.record_engine_scrape(&key, snapshot(unix_now(), &ttft), 0.001);
        let t = Instant::now();
        let response = client.get(url).send().await.expect("request");
        assert!(response.status().is_success());
        let _ = response.bytes().await.expect("body");
        if round > 0 {
            // The first request also opened the connection.
            latencies.push(t.elapsed());
        }
    }
    latencies.sort();
    latencies
}

/// Records a scrape of one pod after another, one every 5 ms (1,000 pods at a 5 s interval),
/// for `seconds`; returns how many landed.
async fn land_scrapes(store: Arc<Store>, seconds: f64) -> usize {
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    // Each pod's TTFT histogram as the set-up left it, growing by one observation per scrape
    // (a histogram that shrank would read as a restart).
    let mut ttft: Vec<Histogram> = (0..PODS).map(pod_ttft).collect();
    let started = Instant::now();
    let mut landed = 0;
    while started.elapsed().as_secs_f64() < seconds {
        ticks.tick().await;
        let i = landed % PODS;
        ttft[i].observe(0.2);
        let key = PodKey::new("llm", format!("vllm-{i:04}"));
        store.record_engine_scrape(&key, snapshot(unix_now(), &ttft[i]), 0.001);
        landed += 1;
    }
    landed
}

/// Runs [`CLIENTS`] concurrent keep-alive clients, each sending `requests` requests back to
/// back, or one every `pace`; returns the sorted latencies and the wall time.
async fn run_clients(
    client: &reqwest::Client,
    url: &str,
    pace: Option<Duration>,
    requests: usize,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = client.clone();
            let url = url.to_owned();
            tokio::spawn(async move {
                // Open this client's keep-alive connection before timing, as a long-running
                // client (the HPA, a dashboard) has one.
                let _ = client
                    .get(&url)
                    .send()
                    .await
                    .expect("request")
                    .bytes()
                    .await;
                // Spread the clients over the period, as independent pollers are. The
                // schedule holds whatever the answers take (missed ticks are caught up), and
                // latency counts from the scheduled time, so a slow answer is not hidden by
                // the requests it delayed.
                let mut ticks = pace.map(|pace| {
                    let offset = pace.mul_f64(i as f64 / CLIENTS as f64);
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, pace)
                });
                let mut latencies = Vec::with_capacity(requests);
                for _ in 0..requests {
                    let t = match ticks.as_mut() {
                        Some(ticks) => ticks.tick().await.into_std(),
                        None => Instant::now(),
                    };
                    let response = client.get(&url).send().await.expect("request");
                    assert!(response.status().is_success());
                    let _ = response.bytes().await.expect("body");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    let wall = started.elapsed();
    all.sort();
    (all, wall)
}

/// Measures `url` with wrk from a second process, if wrk is installed.
async fn wrk(url: &str) {
    let output = tokio::process::Command::new("wrk")
        .args([
            "-t1",
            "-c100",
            "-d10s",
            "--latency",
            "-H",
            "Accept-Encoding: gzip",
            url,
        ])
        .output()
        .await;
    match output {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let summary: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains('%')
                        || l.starts_with("Requests/sec")
                })
                .map(str::trim)
                .collect();
            println!("  wrk -c100 -t1 (second process): {}", summary.join("  "));
        }
        _ => println!(
            "  (wrk not installed: `apt-get install wrk` to measure from a second process)"
        ),
    }
}

async fn scrape_cost() {
    let body = Arc::new(body());
    let app = {
        let body = body.clone();
        axum::Router::new().route(
            "/{pod}/metrics",
            axum::routing::get(move || {
                let body = body.clone();
                async move { (*body).clone() }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let store = Arc::new(Store::new(60.0, 30.0));
    for i in 0..SCRAPE_TARGETS {
        store.upsert_target(target(i, format!("http://{addr}/{i}/metrics")));
    }
    let rss_before = rss_bytes();
    let interval = Duration::from_secs(1);
    let scraper = Scraper::new(
        store.clone(),
        ScrapeConfig {
            interval,
            timeout: Duration::from_millis(900),
            max_body_bytes: 16 << 20,
            concurrency: 64,
            keep_alive: true,
            limits: Default::default(),
        },
        Arc::new(Telemetry::new()),
        Arc::new(AtomicU64::new(0)),
    )
    .expect("scraper");
    // Let the first round complete before measuring steady state.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let loop_task = tokio::spawn(scraper.run(async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_before = cpu_time();
    let started = Instant::now();
    tokio::time::sleep(interval * SCRAPE_ROUNDS as u32).await;
    let cpu = cpu_time() - cpu_before;
    let wall = started.elapsed();
    let _ = stop_tx.send(());
    let _ = loop_task.await;
    let servable = store.summary(unix_now()).servable_engine_pods;
    let scrapes = SCRAPE_TARGETS as f64 * wall.as_secs_f64() / (interval.as_secs_f64() * 1.05);
    println!(
        "scrape cost     targets={SCRAPE_TARGETS} body={} KB interval={interval:?}: CPU {:.0} µs per target per scrape (server side of the loopback included), RSS {:.0} KB per target, {servable} servable",
        body.len() / 1024,
        cpu.as_secs_f64() * 1e6 / scrapes,
        (rss_bytes().saturating_sub(rss_before)) as f64 / 1024.0 / SCRAPE_TARGETS as f64,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: both run once.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        scrape_cost().await;
        answer_latency().await;
    });
}
