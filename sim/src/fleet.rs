//! `vllm-sim fleet`: many scrape targets from one lightweight process, for load tests of a
//! scraper (the adapter's scale envelope, the freshness comparison in `make compare`).
//!
//! Owns: replaying one real `/metrics` capture as a live vLLM server would serve it, and
//! serving that body on many loopback addresses at once. The replay keeps every line of the
//! capture byte for byte except the values that move on a live server: every second counters
//! (`_total`) and histograms (`_bucket`, `_count`, `_sum`) grow at fixed rates — buckets in
//! the capture's own proportions (evenly over the buckets when the capture saw no
//! observation), so every histogram stays a valid cumulative histogram — and the queue
//! gauges (`vllm:num_requests_waiting`, `vllm:num_requests_running`) take the load set on
//! the admin endpoint, for every target at once.
//!
//! Cheap per target by design: the body is rendered once per second (and at once when the
//! load changes) and gzipped once, as prometheus_client does for clients that accept gzip
//! (vLLM's `/metrics` is prometheus_client's ASGI app); a scrape only copies a reference.
//! Does not own: a simulated engine (see [`crate::engine`]) — the fleet has no requests,
//! only the exposition a scraper sees.

use crate::pyfloat::go_string;
use crate::vllm_metrics::CONTENT_TYPE;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tracing::info;

/// Observations added to every histogram per second (integral, so counts stay integers).
const OBSERVATIONS_PER_SECOND: f64 = 10.0;
/// Increase per second of token counters (names containing `token`).
const TOKENS_PER_SECOND: f64 = 500.0;
/// Increase per second of every other counter.
const EVENTS_PER_SECOND: f64 = 2.0;
/// Mean observed value assumed for a histogram the capture saw nothing in.
const DEFAULT_MEAN: f64 = 0.1;
/// How often the body moves on.
pub const FRAME_PERIOD: Duration = Duration::from_secs(1);

/// Which queue gauge a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gauge {
    Waiting,
    Running,
}

/// One line of the capture.
#[derive(Debug, Clone, PartialEq)]
enum Line {
    /// Printed as captured.
    Verbatim(String),
    /// `prefix value suffix`, the value growing by `per_second`.
    Growing {
        prefix: String,
        start: f64,
        per_second: f64,
        suffix: String,
    },
    /// `prefix value suffix`, the value the load says.
    Load {
        prefix: String,
        gauge: Gauge,
        suffix: String,
    },
}

/// The load every target reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, serde::Serialize)]
pub struct FleetLoad {
    #[serde(default)]
    pub waiting: f64,
    #[serde(default)]
    pub running: f64,
}

/// A capture that renders as it would look `seconds` later.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    lines: Vec<Line>,
}

/// Splits a sample line into (name, labels text incl. braces, value, rest after the value).
fn split_sample(line: &str) -> Option<(&str, &str, &str, &str)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let labels_end = if line[name_end..].starts_with('{') {
        // Label values may hold `}` inside quotes: find the closing brace outside them.
        let mut in_quotes = false;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in line[name_end..].char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '}' if !in_quotes => {
                    end = Some(name_end + i + 1);
                    break;
                }
                _ => {}
            }
        }
        end?
    } else {
        name_end
    };
    let labels = &line[name_end..labels_end];
    let rest = line[labels_end..].trim_start();
    let value_end = rest.find(' ').unwrap_or(rest.len());
    let value = &rest[..value_end];
    let value_start = line.len() - rest.len();
    Some((name, labels, value, &line[value_start + value_end..]))
}

/// The labels text without its `le` label, and the `le` value.
fn without_le(labels: &str) -> (String, Option<&str>) {
    let Some(start) = labels
        .find("le=\"")
        .filter(|&i| i > 0 && matches!(labels.as_bytes()[i - 1], b'{' | b','))
    else {
        return (labels.to_owned(), None);
    };
    let value_start = start + 4;
    let Some(len) = labels[value_start..].find('"') else {
        return (labels.to_owned(), None);
    };
    let value = &labels[value_start..value_start + len];
    let mut end = value_start + len + 1;
    if labels.as_bytes().get(end) == Some(&b',') {
        end += 1;
    }
    let mut rest = format!("{}{}", &labels[..start], &labels[end..]);
    if rest.ends_with(",}") {
        rest.replace_range(rest.len() - 2.., "}");
    }
    (rest, Some(value))
}

/// A histogram series of the capture: its buckets in order and its totals.
#[derive(Debug, Default)]
struct SeriesBuckets {
    /// (bound, cumulative count) as captured.
    buckets: Vec<(f64, f64)>,
    count: f64,
    sum: f64,
}

impl Replay {
    /// Reads a capture in the Prometheus text format (no timestamps expected; a sample line
    /// whose value is not a number is kept verbatim).
    pub fn new(capture: &str) -> Replay {
        // First pass: every histogram series (name without `_bucket`, labels without `le`).
        let mut histograms: HashMap<(String, String), SeriesBuckets> = HashMap::new();
        for line in capture.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((name, labels, value, _)) = split_sample(line) else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if let Some(base) = name.strip_suffix("_bucket") {
                let (rest, le) = without_le(labels);
                let Some(bound) = le.and_then(|le| le.parse::<f64>().ok()) else {
                    continue;
                };
                histograms
                    .entry((base.to_owned(), rest))
                    .or_default()
                    .buckets
                    .push((bound, value));
            }
        }
        for line in capture.lines() {
            let Some((name, labels, value, _)) = split_sample(line) else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            for (suffix, is_count) in [("_count", true), ("_sum", false)] {
                if let Some(base) = name.strip_suffix(suffix) {
                    if let Some(series) = histograms.get_mut(&(base.to_owned(), labels.to_owned()))
                    {
                        if is_count {
                            series.count = value;
                        } else {
                            series.sum = value;
                        }
                    }
                }
            }
        }
        for series in histograms.values_mut() {
            series.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }

        let lines = capture
            .lines()
            .map(|line| Replay::classify(line, &histograms))
            .collect();
        Replay { lines }
    }

    fn classify(line: &str, histograms: &HashMap<(String, String), SeriesBuckets>) -> Line {
        let verbatim = || Line::Verbatim(line.to_owned());
        if line.starts_with('#') {
            return verbatim();
        }
        let Some((name, labels, value, suffix)) = split_sample(line) else {
            return verbatim();
        };
        let Ok(start) = value.parse::<f64>() else {
            return verbatim();
        };
        let prefix = line[..line.len() - suffix.len() - value.len()].to_owned();
        let suffix = suffix.to_owned();
        let gauge = match name {
            "vllm:num_requests_waiting" => Some(Gauge::Waiting),
            "vllm:num_requests_running" => Some(Gauge::Running),
            _ => None,
        };
        if let Some(gauge) = gauge {
            return Line::Load {
                prefix,
                gauge,
                suffix,
            };
        }
        let growing = |per_second: f64| Line::Growing {
            prefix: prefix.clone(),
            start,
            per_second,
            suffix: suffix.clone(),
        };
        if let Some(base) = name.strip_suffix("_bucket") {
            let (rest, le) = without_le(labels);
            let series = histograms.get(&(base.to_owned(), rest));
            let bound = le.and_then(|le| le.parse::<f64>().ok());
            if let (Some(series), Some(bound)) = (series, bound) {
                let position = series.buckets.iter().position(|&(b, _)| b == bound);
                let total = series.buckets.last().map_or(0.0, |&(_, c)| c);
                let fraction = match position {
                    Some(_) if total > 0.0 => start / total,
                    // Nothing observed in the capture: spread evenly over the buckets.
                    Some(i) => (i + 1) as f64 / series.buckets.len() as f64,
                    None => 1.0,
                };
                return growing((OBSERVATIONS_PER_SECOND * fraction).floor());
            }
            return verbatim();
        }
        for (suffix_name, is_count) in [("_count", true), ("_sum", false)] {
            if let Some(base) = name.strip_suffix(suffix_name) {
                if let Some(series) = histograms.get(&(base.to_owned(), labels.to_owned())) {
                    if is_count {
                        return growing(OBSERVATIONS_PER_SECOND);
                    }
                    let mean = if series.count > 0.0 && series.sum.is_finite() {
                        series.sum / series.count
                    } else {
                        DEFAULT_MEAN
                    };
                    return growing(OBSERVATIONS_PER_SECOND * mean);
                }
            }
        }
        if name.ends_with("_total") {
            let rate = if name.contains("token") {
                TOKENS_PER_SECOND
            } else {
                EVENTS_PER_SECOND
            };
            return growing(rate);
        }
        verbatim()
    }

    /// The body `seconds` after the capture, reporting `load`.
    pub fn render(&self, seconds: u64, load: FleetLoad) -> String {
        let mut out = String::with_capacity(self.lines.iter().map(Line::len_hint).sum());
        for line in &self.lines {
            match line {
                Line::Verbatim(text) => out.push_str(text),
                Line::Growing {
                    prefix,
                    start,
                    per_second,
                    suffix,
                } => {
                    out.push_str(prefix);
                    out.push_str(&go_string(start + per_second * seconds as f64));
                    out.push_str(suffix);
                }
                Line::Load {
                    prefix,
                    gauge,
                    suffix,
                } => {
                    out.push_str(prefix);
                    out.push_str(&go_string(match gauge {
                        Gauge::Waiting => load.waiting,
                        Gauge::Running => load.running,
                    }));
                    out.push_str(suffix);
                }
            }
            out.push('\n');
        }
        out
    }
}

impl Line {
    fn len_hint(&self) -> usize {
        match self {
            Line::Verbatim(text) => text.len() + 1,
            Line::Growing { prefix, .. } | Line::Load { prefix, .. } => prefix.len() + 24,
        }
    }
}

/// One rendered body, plain and gzipped.
#[derive(Debug)]
struct Frame {
    plain: Bytes,
    gzip: Bytes,
}

/// State shared by every listener.
pub struct Fleet {
    replay: Replay,
    started: Instant,
    load: RwLock<FleetLoad>,
    frame: RwLock<Arc<Frame>>,
    scrapes: AtomicU64,
    targets: usize,
}

impl Fleet {
    pub fn new(replay: Replay, targets: usize) -> Arc<Fleet> {
        let fleet = Arc::new(Fleet {
            frame: RwLock::new(Arc::new(Frame {
                plain: Bytes::new(),
                gzip: Bytes::new(),
            })),
            replay,
            started: Instant::now(),
            load: RwLock::new(FleetLoad::default()),
            scrapes: AtomicU64::new(0),
            targets,
        });
        fleet.render();
        fleet
    }

    /// Renders the current body (called every [`FRAME_PERIOD`] and when the load changes).
    pub fn render(&self) {
        let load = *self.load.read().unwrap_or_else(|e| e.into_inner());
        let seconds = self.started.elapsed().as_secs();
        let plain = self.replay.render(seconds, load);
        // prometheus_client's ASGI app: gzip.compress(output), level 9.
        let mut encoder =
            flate2::write::GzEncoder::new(Vec::with_capacity(8192), flate2::Compression::best());
        // Writing into a Vec cannot fail.
        let gzip = encoder
            .write_all(plain.as_bytes())
            .and_then(|()| encoder.finish())
            .unwrap_or_default();
        let frame = Arc::new(Frame {
            plain: Bytes::from(plain),
            gzip: Bytes::from(gzip),
        });
        *self.frame.write().unwrap_or_else(|e| e.into_inner()) = frame;
    }

    /// Sets the load every target reports; the next scrape sees it.
    pub fn set_load(&self, load: FleetLoad) {
        *self.load.write().unwrap_or_else(|e| e.into_inner()) = load;
        self.render();
    }

    /// Scrapes answered so far.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::Relaxed)
    }

    fn current(&self) -> Arc<Frame> {
        self.frame.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The router every target listener serves: `/metrics` and `/health`.
pub fn target_router(fleet: Arc<Fleet>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { StatusCode::OK }))
        .with_state(fleet)
}

async fn metrics(State(fleet): State<Arc<Fleet>>, headers: HeaderMap) -> Response {
    fleet.scrapes.fetch_add(1, Ordering::Relaxed);
    let frame = fleet.current();
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    if gzip {
        (
            [
                (header::CONTENT_TYPE, CONTENT_TYPE),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            frame.gzip.clone(),
        )
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], frame.plain.clone()).into_response()
    }
}

/// The admin router: `POST /admin/load` sets the load of every target and answers once the
/// next scrape will see it, with that moment (`at`, Unix seconds); `GET /admin/stats`.
pub fn admin_router(fleet: Arc<Fleet>) -> Router {
    Router::new()
        .route("/admin/load", post(set_load))
        .route("/admin/stats", get(stats))
        .with_state(fleet)
}

async fn set_load(State(fleet): State<Arc<Fleet>>, Json(load): Json<FleetLoad>) -> Response {
    if !(load.waiting.is_finite() && load.running.is_finite()) {
        return (
            StatusCode::BAD_REQUEST,
            "waiting and running must be finite",
        )
            .into_response();
    }
    fleet.set_load(load);
    Json(json!({"at": crate::engine::unix_now(), "load": load})).into_response()
}

async fn stats(State(fleet): State<Arc<Fleet>>) -> Response {
    let frame = fleet.current();
    Json(json!({
        "targets": fleet.targets,
        "scrapes": fleet.scrapes(),
        "body_bytes": frame.plain.len(),
        "gzip_bytes": frame.gzip.len(),
    }))
    .into_response()
}

/// Consecutive IPv4 addresses from `first` (skipping `.0` and `.255` host bytes), each with
/// `port`.
pub fn consecutive_addresses(
    first: std::net::Ipv4Addr,
    count: usize,
    port: u16,
) -> Vec<SocketAddr> {
    let mut out = Vec::with_capacity(count);
    let mut next = u32::from(first);
    while out.len() < count {
        let ip = std::net::Ipv4Addr::from(next);
        next = next.wrapping_add(1);
        if matches!(ip.octets()[3], 0 | 255) {
            continue;
        }
        out.push(SocketAddr::from((ip, port)));
    }
    out
}

/// Serves `/metrics` on every address until `shutdown` resolves, moving the body on every
/// [`FRAME_PERIOD`].
pub async fn run(
    fleet: Arc<Fleet>,
    addresses: &[SocketAddr],
    admin: Option<SocketAddr>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let router = target_router(fleet.clone());
    for address in addresses {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address} (each target needs a file descriptor for its listener and one per connection)"))?;
        let mut stop = stop_rx.clone();
        let router = router.clone();
        tasks.spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|&s| s).await;
                })
                .await;
        });
    }
    if let Some(admin) = admin {
        let listener = TcpListener::bind(admin)
            .await
            .with_context(|| format!("binding the admin address {admin}"))?;
        let mut stop = stop_rx.clone();
        let router = admin_router(fleet.clone());
        tasks.spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|&s| s).await;
                })
                .await;
        });
    }
    info!(
        targets = addresses.len(),
        admin = ?admin,
        body_bytes = fleet.current().plain.len(),
        gzip_bytes = fleet.current().gzip.len(),
        "vllm-sim fleet serving"
    );
    let mut frames = tokio::time::interval(FRAME_PERIOD);
    frames.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = frames.tick() => fleet.render(),
        }
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    info!(scrapes = fleet.scrapes(), "vllm-sim fleet stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferscale_metrics::histogram::Histogram;
    use inferscale_metrics::parser::Format;
    use inferscale_metrics::profile::{GaugeSignal, HistogramSignal, RouteIndex};
    use inferscale_metrics::snapshot::EngineSnapshot;

    const CAPTURE: &str = "\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 0.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 1.0
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine=\"0\",model_name=\"m\"} 100.0
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine=\"0\",model_name=\"m\"} 1.7e+09
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.1\",model_name=\"m\"} 0.0
vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.5\",model_name=\"m\"} 0.0
vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 0.0
vllm:time_to_first_token_seconds_count{engine=\"0\",model_name=\"m\"} 0.0
vllm:time_to_first_token_seconds_sum{engine=\"0\",model_name=\"m\"} 0.0
vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"1.0\",model_name=\"m\"} 3.0
vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 4.0
vllm:e2e_request_latency_seconds_count{engine=\"0\",model_name=\"m\"} 4.0
vllm:e2e_request_latency_seconds_sum{engine=\"0\",model_name=\"m\"} 2.0
";

    #[test]
    fn split_sample_finds_value_after_quoted_braces() {
        let (name, labels, value, rest) = split_sample("a{b=\"x}y\",c=\"\\\"}\"} 1.5 123").unwrap();
        assert_eq!(
            (name, labels, value, rest),
            ("a", "{b=\"x}y\",c=\"\\\"}\"}", "1.5", " 123")
        );
        assert_eq!(split_sample("up 1").unwrap(), ("up", "", "1", ""));
    }

    #[test]
    fn le_is_removed_wherever_it_stands() {
        assert_eq!(
            without_le("{a=\"1\",le=\"0.5\",b=\"2\"}"),
            ("{a=\"1\",b=\"2\"}".into(), Some("0.5"))
        );
        assert_eq!(without_le("{le=\"+Inf\"}"), ("{}".into(), Some("+Inf")));
        assert_eq!(
            without_le("{a=\"1\",le=\"1\"}"),
            ("{a=\"1\"}".into(), Some("1"))
        );
        assert_eq!(without_le("{file=\"1\"}"), ("{file=\"1\"}".into(), None));
    }

    fn snapshot(body: &str) -> EngineSnapshot {
        EngineSnapshot::from_exposition(body, Format::Prometheus, 0.0, &RouteIndex::engines())
    }

    #[test]
    fn replay_moves_counters_and_histograms_and_reports_the_load() {
        let replay = Replay::new(CAPTURE);
        let captured_load = FleetLoad {
            waiting: 0.0,
            running: 1.0,
        };
        let at0 = replay.render(0, captured_load);
        assert_eq!(
            at0, CAPTURE,
            "second 0 with the captured load is the capture itself"
        );
        let later = replay.render(
            10,
            FleetLoad {
                waiting: 7.0,
                running: 3.0,
            },
        );
        assert!(later.contains("vllm:prompt_tokens_total{engine=\"0\",model_name=\"m\"} 5100.0\n"));
        assert!(
            later.contains("vllm:prompt_tokens_created{engine=\"0\",model_name=\"m\"} 1.7e+09\n")
        );
        let s = snapshot(&later);
        let m = s.combined();
        assert_eq!(m.gauge(GaugeSignal::QueueDepth), Some(7.0));
        assert_eq!(m.gauge(GaugeSignal::Running), Some(3.0));
        // No observation in the capture: spread evenly (floor(10 · i/3) per second).
        let ttft: &Histogram = m.histogram(HistogramSignal::TimeToFirstToken).unwrap();
        assert_eq!(ttft.cumulative_counts(), &[30.0, 60.0, 100.0]);
        assert!((ttft.sum - 10.0).abs() < 1e-9, "sum {}", ttft.sum);
        // Observed in the capture: its proportions (3 of 4 under 1 s), its mean (0.5 s).
        let e2e = m.histogram(HistogramSignal::EndToEndLatency).unwrap();
        assert_eq!(e2e.cumulative_counts(), &[3.0 + 70.0, 4.0 + 100.0]);
        assert!((e2e.sum - 52.0).abs() < 1e-9);
        assert_eq!(s.dropped.total(), 0);
        assert_eq!(s.parse_stats.skipped(), 0);
    }

    #[test]
    fn addresses_skip_network_and_broadcast_host_bytes() {
        let a = consecutive_addresses(std::net::Ipv4Addr::new(127, 3, 0, 253), 4, 8000);
        let s: Vec<String> = a.iter().map(ToString::to_string).collect();
        assert_eq!(
            s,
            [
                "127.3.0.253:8000",
                "127.3.0.254:8000",
                "127.3.1.1:8000",
                "127.3.1.2:8000"
            ]
        );
    }
}
