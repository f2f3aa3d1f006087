//! Where the time goes in one scrape: CPU per target per scrape, stage by stage, against the
//! floor (a memchr newline scan of the same body, which no parser can beat).
//!
//! The body is the real vLLM 0.18 capture (`../shared/fixtures/vllm/vllm-0.16to0.18-…`,
//! 52 KB) replayed by `vllm-sim fleet` — the server the scale envelope scrapes — gzipped at
//! level 9 as prometheus_client serves it to clients that accept gzip. Stages, in the order
//! the adapter runs them on every scrape of an engine pod (`adapter/src/scrape.rs`):
//!
//! - `floor/memchr_lines`: counting the body's newlines;
//! - `http/get_gzipped`: a keep-alive GET over loopback with the scraper's `Accept` header and
//!   `Accept-Encoding: gzip`, the body collected but not decoded (reqwest, the scraper's client
//!   before its own, src/scrape_http.rs, which cannot skip decoding);
//! - `gzip/decode`: decoding that body (flate2, the backend both clients decode with);
//! - `utf8/sanitize`: the UTF-8 check the scraper runs before parsing;
//! - `parse/filtered`: the name-filtered parse alone (only the families the profiles need;
//!   the labels of kept samples read);
//! - `snapshot/from_exposition`: the filtered parse plus building the per-model snapshot —
//!   what the scraper calls; the snapshot's own share is this minus `parse/filtered`;
//! - `signals/window`: the replica's signals from a full 60 s window of 5 s scrapes plus the
//!   new one (`ScrapeHistory::signals_after`);
//! - `store/record`: `Store::record_engine_scrape` into a 1,000-target store whose pods each
//!   hold a full window — the signals above plus packing and pushing the scrape, health and
//!   the write lock; the store's own share is this minus `signals/window`;
//! - `whole/fetch_to_snapshot`: the scraper's own client and fetch (`scrape::scrape_client`,
//!   `scrape::fetch`: keep-alive, gzip decoded as it arrives, the body limit) fetching,
//!   checking and parsing in one go — the sum of the first stages, to check the split
//!   against; `whole/fetch_to_snapshot_reqwest` the same through the reqwest client the
//!   scraper used before (same settings), the baseline for replacing it.
//!
//! Measured as CPU time of the thread running the stage (`CLOCK_THREAD_CPUTIME_ID`,
//! nanoseconds), not wall time: the loopback server runs on a thread of its own, so the
//! `http` figures are the scraper's share only, as the scale envelope counts the adapter
//! process only. Histogram and counter values move between the window's scrapes as on a live
//! server (the replay's fixed rates), so the signals do real percentile and rate work.
//!
//! Run: `cargo bench -p inferscale-adapter --bench scrape_stages`. Bounded (criterion's
//! fixed sample counts), loopback only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark stops at the first broken assumption"
)]

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use inferscale_adapter::scrape::{fetch, scrape_client, ACCEPT};
use inferscale_adapter::store::{PodKey, ScrapeSink, Store, Target, TargetKind, TargetRegistry};
use inferscale_metrics::parser::{sanitize_utf8, Format, Parser, Record};
use inferscale_metrics::profile::RouteIndex;
use inferscale_metrics::signals::{ScrapeHistory, SingleScrape};
use inferscale_metrics::snapshot::EngineSnapshot;
use inferscale_sim::fleet::{target_router, Fleet, FleetLoad, Replay};
use std::cell::Cell;
use std::hint::black_box;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

/// The envelope's interval and the adapter's default window.
const INTERVAL_SECS: u64 = 5;
const WINDOW_SECS: f64 = 60.0;
const STORE_TARGETS: usize = 1000;
/// Scrapes pre-rendered per target for the store stage: more than criterion's iterations
/// reach (1,000 targets × 600 rounds), so every recorded scrape is newer than the last.
const STORE_ROUNDS: u64 = 600;

/// CPU time of the calling thread (ns, user + system). `CLOCK_THREAD_CPUTIME_ID` includes the
/// running slice; `/proc/thread-self/schedstat` only advances at ticks and switches.
fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Criterion measurement: CPU time of the benchmark thread, printed as durations.
struct ThreadCpu {
    wall: WallTime,
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, started: u64) -> u64 {
        thread_cpu_ns().saturating_sub(started)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, like wall time: the same duration formatting.
        self.wall.formatter()
    }
}

fn capture() -> String {
    let root = std::env::var_os("INFERSCALE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let path =
        root.join("fixtures/vllm/vllm-0.16to0.18-v1-kops-k8s-ai-conformance-qwen2.5-0.5b.txt");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the real vLLM capture is needed: {} ({e}); set INFERSCALE_SHARED",
            path.display()
        )
    })
}

fn gzip(body: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

/// Serves the replay on a loopback port from a thread of its own; returns the URL.
fn serve(replay: Replay) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    std::thread::Builder::new()
        .name("loopback-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, target_router(Fleet::new(replay, 1)))
                    .await
                    .unwrap();
            });
        })
        .unwrap();
    url
}

/// The settings of the reqwest client the scraper used before its own, with or without gzip
/// decoding.
fn client(decode_gzip: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(10))
        .gzip(decode_gzip)
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap()
}

async fn get(client: &reqwest::Client, url: &str, ask_gzip: bool) -> Vec<u8> {
    let mut request = client.get(url).header(reqwest::header::ACCEPT, ACCEPT);
    if ask_gzip {
        request = request.header(reqwest::header::ACCEPT_ENCODING, "gzip");
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success());
    response.bytes().await.unwrap().to_vec()
}

fn engine_target(i: usize) -> Target {
    Target {
        key: PodKey::new("fleet", format!("vllm-{i:05}")),
        uid: format!("uid-{i}"),
        kind: TargetKind::Engine,
        url: Some(format!("http://127.3.0.1:{}/metrics", 8000 + i)),
        labels: [("app".to_string(), "vllm".to_string())].into(),
        node: None,
        ready: true,
        terminating: false,
        asleep: false,
        owners: vec![],
    }
}

fn stages(c: &mut Criterion<ThreadCpu>) {
    let text = capture();
    let replay = Replay::new(&text);
    let load = FleetLoad {
        waiting: 3.0,
        running: 8.0,
    };
    let routes = RouteIndex::engines();
    let snapshot_at = |seconds: u64| {
        EngineSnapshot::from_exposition(
            &replay.render(seconds, load),
            Format::Prometheus,
            seconds as f64,
            &routes,
        )
    };
    let body = replay.render(0, load);
    let gzipped = gzip(&body);
    eprintln!(
        "body: {} bytes, {} gzipped (level 9)",
        body.len(),
        gzipped.len()
    );

    let mut group = c.benchmark_group("scrape_stage");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));
    group.sample_size(30);

    group.bench_function("floor/memchr_lines", |b| {
        b.iter(|| memchr::memchr_iter(b'\n', black_box(body.as_bytes())).count())
    });

    let url = serve(replay.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw_client = client(false);
    let fetched = rt.block_on(get(&raw_client, &url, true));
    assert!(
        fetched.starts_with(&[0x1f, 0x8b]),
        "the server sends gzip when asked"
    );
    group.bench_function("http/get_gzipped", |b| {
        b.iter(|| rt.block_on(get(&raw_client, &url, true)))
    });

    group.bench_function("gzip/decode", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(body.len());
            flate2::read::GzDecoder::new(black_box(gzipped.as_slice()))
                .read_to_end(&mut out)
                .unwrap();
            out
        })
    });

    group.bench_function("utf8/sanitize", |b| {
        b.iter(|| sanitize_utf8(black_box(body.as_bytes())).1)
    });

    group.bench_function("parse/filtered", |b| {
        b.iter(|| {
            // The snapshot builder reads the labels of the samples it keeps.
            Parser::with_filter(black_box(&body), Format::Prometheus, &routes)
                .map(|record| match record {
                    Record::Sample(s) => s.value + s.labels().count() as f64,
                    _ => 0.0,
                })
                .sum::<f64>()
        })
    });

    group.bench_function("snapshot/from_exposition", |b| {
        b.iter(|| {
            EngineSnapshot::from_exposition(black_box(&body), Format::Prometheus, 0.0, &routes)
        })
    });

    // One window of scrapes (0, 5, …, 60 s) and the next one.
    let window_scrapes = WINDOW_SECS as u64 / INTERVAL_SECS + 1;
    let mut history = ScrapeHistory::new(WINDOW_SECS);
    for k in 0..window_scrapes {
        history.push(snapshot_at(k * INTERVAL_SECS));
    }
    let next = snapshot_at(window_scrapes * INTERVAL_SECS);
    assert!(
        history
            .signals_after(&next, SingleScrape::Missing)
            .is_some(),
        "the window yields signals"
    );
    group.bench_function("signals/window", |b| {
        b.iter(|| black_box(&history).signals_after(black_box(&next), SingleScrape::Missing))
    });

    // The store: every target with a full window, then one scrape at a time, round robin,
    // each newer than that target's last.
    let rounds: Vec<EngineSnapshot> = (0..STORE_ROUNDS)
        .map(|k| snapshot_at(k * INTERVAL_SECS))
        .collect();
    let store = Store::new(WINDOW_SECS, 3.0 * INTERVAL_SECS as f64);
    let keys: Vec<PodKey> = (0..STORE_TARGETS)
        .map(|i| {
            let target = engine_target(i);
            let key = target.key.clone();
            store.upsert_target(target);
            key
        })
        .collect();
    for round in rounds.iter().take(window_scrapes as usize) {
        for key in &keys {
            store.record_engine_scrape(key, round.clone(), 0.001);
        }
    }
    let recorded = Cell::new(window_scrapes as usize * STORE_TARGETS);
    group.bench_function("store/record", |b| {
        b.iter_batched(
            || {
                let n = recorded.get();
                recorded.set(n + 1);
                let round = (n / STORE_TARGETS).min(rounds.len() - 1);
                (&keys[n % STORE_TARGETS], rounds[round].clone())
            },
            |(key, snapshot)| store.record_engine_scrape(key, snapshot, 0.001),
            BatchSize::SmallInput,
        )
    });
    assert!(
        recorded.get() < rounds.len() * STORE_TARGETS,
        "STORE_ROUNDS too small for the iterations criterion ran"
    );

    let scraper_client = scrape_client(Duration::from_secs(10), true).unwrap();
    group.bench_function("whole/fetch_to_snapshot", |b| {
        b.iter(|| {
            let fetched = rt.block_on(fetch(&scraper_client, &url, 16 << 20)).unwrap();
            let (text, _) = sanitize_utf8(&fetched.body);
            EngineSnapshot::from_exposition(&text, fetched.format, 0.0, &routes)
        })
    });
    let reqwest_client = client(true);
    group.bench_function("whole/fetch_to_snapshot_reqwest", |b| {
        b.iter(|| {
            let body = rt.block_on(get(&reqwest_client, &url, false));
            let (text, _) = sanitize_utf8(&body);
            EngineSnapshot::from_exposition(&text, Format::Prometheus, 0.0, &routes)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu { wall: WallTime });
    targets = stages
}
criterion_main!(benches);
