//! `adapter inspect`: what would the adapter compute for this pod?
//!
//! Owns: reading one or more successive scrapes (files, URLs, or one URL polled at an
//! interval), running them through the same metrics engine the scrape loop uses (the same
//! snapshot, signals and GPU code), and printing the per-replica signals as a table or JSON.
//! Two differences from serving, both so that one saved file says something: each body is
//! read as an engine *and* as a dcgm-exporter (the scrape loop reads a target as its kind
//! only), and with one scrape percentiles cover everything since the server started (the
//! adapter waits for a second scrape); with two or more, the window between them.
//! Does not own: any signal arithmetic (that is `inferscale-metrics`).

use inferscale_metrics::gpu::{join_gpus, read_gpus, GpuJoin, GpuReading};
use inferscale_metrics::parser::{
    count_invalid_utf8, sanitize_utf8, Format, LineErrorKind, ParseStats,
};
use inferscale_metrics::profile::{GpuField, RouteIndex, DCGM};
use inferscale_metrics::signals::{
    replica_signals, Latency, ModelSignals, Reading, ReplicaSignals, SignalOptions, SingleScrape,
    WindowSpan,
};
use inferscale_metrics::snapshot::{DropKind, DropStats, EngineSnapshot, UNLABELLED_MODEL};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// Largest body we read: a vLLM server with every optional family is ~60 KB and a 16-GPU
/// dcgm-exporter ~100 KB; 32 MiB leaves room for fleets behind one endpoint while refusing
/// runaway responses.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How long one HTTP scrape may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of `adapter inspect`.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
    /// An HTTP scrape failed (connection, status or body).
    #[error("cannot scrape {url}")]
    Scrape { url: String, source: reqwest::Error },
    /// A body is larger than [`MAX_BODY_BYTES`].
    #[error("{source_name} is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge { source_name: String },
    /// Nothing to inspect.
    #[error("give at least one file or URL")]
    NoSources,
}

/// One fetched body.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub source: String,
    pub body: Vec<u8>,
    pub format: Format,
    /// Seconds: real time for URLs, `index × interval` for files.
    pub taken_at: f64,
}

/// Reads a file, or scrapes a URL once.
pub fn fetch(source: &str, taken_at: f64) -> Result<Scrape, InspectError> {
    let (body, format) = if source.starts_with("http://") || source.starts_with("https://") {
        scrape_url(source).map_err(|e| InspectError::Scrape {
            url: source.into(),
            source: e,
        })?
    } else {
        let body = std::fs::read(source).map_err(|e| InspectError::ReadFile {
            path: source.into(),
            source: e,
        })?;
        // A saved file has no Content-Type: OpenMetrics bodies end with `# EOF`.
        let format = Format::sniff(&String::from_utf8_lossy(
            &body[body.len().saturating_sub(64)..],
        ));
        (body, format)
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(InspectError::TooLarge {
            source_name: source.into(),
        });
    }
    Ok(Scrape {
        source: source.into(),
        body,
        format,
        taken_at,
    })
}

/// One GET of `url` with the scrape loop's `Accept` header, and the dialect it declares.
fn scrape_url(url: &str) -> Result<(Vec<u8>, Format), reqwest::Error> {
    let client = reqwest::blocking::Client::builder()
        .timeout(SCRAPE_TIMEOUT)
        .build()?;
    let response = client
        .get(url)
        .header(reqwest::header::ACCEPT, crate::scrape::ACCEPT)
        .send()?
        .error_for_status()?;
    let format = crate::scrape::format_of(response.headers());
    Ok((response.bytes()?.to_vec(), format))
}

/// Parse counts of one scrape, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct ParseReport {
    pub source: String,
    pub lines: usize,
    /// Samples the adapter read (the families it needs).
    pub samples_read: usize,
    /// Sample lines of families the adapter does not need.
    pub samples_ignored: usize,
    pub skipped_lines: usize,
    pub skipped_by_kind: std::collections::BTreeMap<&'static str, usize>,
    /// 1-based line numbers of the first skipped lines.
    pub first_skipped_lines: Vec<usize>,
    /// What the snapshot builder left out (samples over a cap, duplicates, non-finite values;
    /// histograms whose buckets cannot form one), as the adapter counts it.
    pub dropped: usize,
    pub dropped_by_kind: std::collections::BTreeMap<&'static str, usize>,
}

impl ParseReport {
    fn new(source: &str, stats: &ParseStats, dropped: &DropStats) -> ParseReport {
        ParseReport {
            source: source.into(),
            lines: stats.lines,
            samples_read: stats.samples,
            samples_ignored: stats.filtered_out,
            skipped_lines: stats.skipped(),
            skipped_by_kind: LineErrorKind::ALL
                .iter()
                .zip(stats.skipped_by_kind)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.as_str(), n))
                .collect(),
            first_skipped_lines: stats.first_errors.iter().map(|e| e.line).collect(),
            dropped: dropped.total(),
            dropped_by_kind: DropKind::ALL
                .iter()
                .map(|&k| (k.as_str(), dropped.get(k)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// GPU part of the report (dcgm-exporter bodies).
#[derive(Debug, Clone, Serialize)]
pub struct GpuReport {
    pub gpus: Vec<GpuReading>,
    pub join: GpuJoin,
}

/// Everything `inspect` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scrapes: usize,
    pub parse: Vec<ParseReport>,
    /// Serving-engine signals, when the bodies came from an inference server.
    pub replica: Option<ReplicaSignals>,
    /// GPU readings of the newest scrape, when it came from dcgm-exporter.
    pub gpu: Option<GpuReport>,
}

/// Runs the engine over successive scrapes of one pod (oldest first).
pub fn inspect(scrapes: &[Scrape], window_secs: f64) -> Result<Report, InspectError> {
    if scrapes.is_empty() {
        return Err(InspectError::NoSources);
    }
    let routes = RouteIndex::engines();
    let mut parse = Vec::new();
    let mut snapshots = Vec::new();
    let mut newest_gpus = Vec::new();
    for scrape in scrapes {
        let (text, bad_utf8_lines) = sanitize_utf8(&scrape.body);
        let mut snapshot =
            EngineSnapshot::from_exposition(&text, scrape.format, scrape.taken_at, &routes);
        count_invalid_utf8(&mut snapshot.parse_stats, bad_utf8_lines);
        // A body is read twice, with the engine filter and the GPU filter; what either kept
        // counts as read.
        let (gpus, gpu_stats) = read_gpus(&text, scrape.format);
        let mut stats = snapshot.parse_stats.clone();
        stats.samples += gpu_stats.samples;
        stats.filtered_out -= gpu_stats.samples.min(stats.filtered_out);
        parse.push(ParseReport::new(&scrape.source, &stats, &snapshot.dropped));
        snapshots.push(snapshot);
        newest_gpus = gpus;
    }
    let history: Vec<&EngineSnapshot> = snapshots.iter().collect();
    let replica = snapshots
        .last()
        .filter(|s| s.engine.is_some())
        .and_then(|_| {
            replica_signals(
                &history,
                SignalOptions {
                    window_secs,
                    single_scrape: SingleScrape::SinceStart,
                },
            )
        });
    let gpu = (!newest_gpus.is_empty()).then(|| GpuReport {
        join: join_gpus(&newest_gpus),
        gpus: newest_gpus,
    });
    Ok(Report {
        scrapes: scrapes.len(),
        parse,
        replica,
        gpu,
    })
}

/// Formats a reading in the signal's unit for humans.
fn show(reading: Reading, unit: Unit) -> String {
    match reading {
        Reading::Value(v) => match unit {
            Unit::Count => trim_float(v, 2),
            Unit::Fraction => format!("{:.1}%", v * 100.0),
            Unit::PerSecond => format!("{}/s", trim_float(v, 3)),
            Unit::Seconds => {
                if v.abs() < 1.0 {
                    format!("{} ms", trim_float(v * 1000.0, 1))
                } else {
                    format!("{} s", trim_float(v, 3))
                }
            }
            Unit::Tokens => trim_float(v, 0),
        },
        Reading::Missing(reason) => format!("- ({})", reason.as_str().replace('_', " ")),
    }
}

fn trim_float(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[derive(Clone, Copy)]
enum Unit {
    Count,
    Fraction,
    PerSecond,
    Seconds,
    Tokens,
}

type Row = (&'static str, Unit, fn(&ModelSignals) -> Reading);

const GAUGE_AND_RATE_ROWS: [Row; 8] = [
    ("queue_depth", Unit::Count, |m| m.queue_depth),
    ("running", Unit::Count, |m| m.running),
    ("kv_cache_usage", Unit::Fraction, |m| m.kv_cache_usage),
    ("kv_cache_usage_max", Unit::Fraction, |m| {
        m.kv_cache_usage_max
    }),
    ("request_rate", Unit::PerSecond, |m| m.request_rate),
    ("prompt_token_rate", Unit::PerSecond, |m| {
        m.prompt_token_rate
    }),
    ("generation_token_rate", Unit::PerSecond, |m| {
        m.generation_token_rate
    }),
    ("preemption_rate", Unit::PerSecond, |m| m.preemption_rate),
];

type LatencyRow = (&'static str, fn(&ModelSignals) -> &Latency);

const LATENCY_ROWS: [LatencyRow; 4] = [
    ("time_to_first_token", |m| &m.time_to_first_token),
    ("inter_token_latency", |m| &m.inter_token_latency),
    ("end_to_end_latency", |m| &m.end_to_end_latency),
    ("queue_time", |m| &m.queue_time),
];

type PercentileRow = (&'static str, fn(&Latency) -> Reading);

const PERCENTILE_ROWS: [PercentileRow; 4] = [
    ("p50", |l| l.p50),
    ("p90", |l| l.p90),
    ("p95", |l| l.p95),
    ("p99", |l| l.p99),
];

/// Renders the report as aligned text tables: what each scrape parsed, the replica's
/// signals per model, and the GPUs.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    for parse in &report.parse {
        render_parse(&mut out, parse);
    }
    if let Some(replica) = &report.replica {
        render_replica(&mut out, report.scrapes, replica);
    }
    if let Some(gpu) = &report.gpu {
        render_gpus(&mut out, gpu);
    }
    if report.replica.is_none() && report.gpu.is_none() {
        let _ = writeln!(
            out,
            "\nno vLLM, SGLang, TGI or dcgm-exporter ({} fields known) metrics found",
            DCGM.len()
        );
    }
    out
}

/// One line per scrape: lines, samples read and ignored, malformed lines skipped.
fn render_parse(out: &mut String, p: &ParseReport) {
    let skipped = if p.skipped_by_kind.is_empty() {
        String::new()
    } else {
        format!(
            " {:?} (first at lines {:?})",
            p.skipped_by_kind, p.first_skipped_lines
        )
    };
    let dropped = if p.dropped_by_kind.is_empty() {
        String::new()
    } else {
        format!(", {} dropped {:?}", p.dropped, p.dropped_by_kind)
    };
    let _ = writeln!(
        out,
        "{}: {} lines, {} samples read, {} ignored, {} malformed lines skipped{skipped}{dropped}",
        p.source, p.lines, p.samples_read, p.samples_ignored, p.skipped_lines,
    );
}

/// The engine line (engine, window, KV capacity), then a table with a row per signal and a
/// column per model (plus all models combined when there are several).
fn render_replica(out: &mut String, scrapes: usize, replica: &ReplicaSignals) {
    let _ = writeln!(
        out,
        "\nengine: {}   scrapes: {}   window: {}   kv capacity: {} tokens",
        replica.engine.map_or("unknown", |e| e.as_str()),
        scrapes,
        describe_window(&replica.window),
        show(replica.kv_capacity_tokens, Unit::Tokens)
    );
    let columns = model_columns(replica);
    let mut header = vec!["SIGNAL".to_owned()];
    header.extend(columns.iter().map(|(name, _)| name.clone()));
    let mut rows = vec![header];
    rows.extend(gauge_and_rate_rows(&columns));
    rows.extend(reason_rows(&columns));
    rows.extend(latency_rows(&columns));
    out.push_str(&align(&rows));
}

fn describe_window(window: &WindowSpan) -> String {
    match (window.since_start, window.seconds) {
        (true, Some(s)) => format!("since server start ({} s)", trim_float(s, 1)),
        (true, None) => "since server start".to_owned(),
        (false, Some(s)) => format!("{} s between scrapes", trim_float(s, 1)),
        (false, None) => "none (one scrape)".to_owned(),
    }
}

/// A column per model, named for humans, and "(all models)" when there are several.
fn model_columns(replica: &ReplicaSignals) -> Vec<(String, &ModelSignals)> {
    let mut columns: Vec<(String, &ModelSignals)> = replica
        .models
        .iter()
        .map(|(name, m)| {
            let shown = if name == UNLABELLED_MODEL {
                "(unlabelled)"
            } else {
                name
            };
            (shown.to_owned(), &**m)
        })
        .collect();
    if columns.len() != 1 {
        columns.push(("(all models)".to_owned(), &replica.combined));
    }
    columns
}

/// A row named `name` with `cell` of each column.
fn row(
    name: String,
    columns: &[(String, &ModelSignals)],
    cell: impl Fn(&ModelSignals) -> String,
) -> Vec<String> {
    let mut row = vec![name];
    row.extend(columns.iter().map(|(_, m)| cell(m)));
    row
}

fn gauge_and_rate_rows(columns: &[(String, &ModelSignals)]) -> Vec<Vec<String>> {
    GAUGE_AND_RATE_ROWS
        .iter()
        .map(|&(name, unit, get)| row(name.to_owned(), columns, |m| show(get(m), unit)))
        .collect()
}

/// `request_rate{reason=...}` for every finish reason any column has.
fn reason_rows(columns: &[(String, &ModelSignals)]) -> Vec<Vec<String>> {
    let reasons: std::collections::BTreeSet<&String> = columns
        .iter()
        .flat_map(|(_, m)| m.request_rate_by_reason.keys())
        .collect();
    reasons
        .into_iter()
        .map(|reason| {
            row(format!("request_rate{{reason={reason}}}"), columns, |m| {
                m.request_rate_by_reason
                    .get(reason)
                    .map_or_else(|| "-".to_owned(), |r| show(*r, Unit::PerSecond))
            })
        })
        .collect()
}

/// p50, p90, p95, p99 and observations of each latency histogram; an idle latency's 0 says
/// so (`0 ms (idle)`: no request waited).
fn latency_rows(columns: &[(String, &ModelSignals)]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for (name, get) in LATENCY_ROWS {
        for (q, pick) in PERCENTILE_ROWS {
            rows.push(row(format!("{name}_{q}"), columns, |m| {
                let latency = get(m);
                let shown = show(pick(latency), Unit::Seconds);
                if latency.idle {
                    format!("{shown} (idle)")
                } else {
                    shown
                }
            }));
        }
        rows.push(row(format!("{name}_observations"), columns, |m| {
            show(get(m).observations, Unit::Count)
        }));
    }
    rows
}

/// A row per GPU, then how many GPUs pods hold and which are idle, per node.
fn render_gpus(out: &mut String, gpu: &GpuReport) {
    let header = [
        "GPU", "UUID", "MODEL", "NODE", "POD", "BUSY", "MEM USED", "MEM FREE", "POWER",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    rows.extend(gpu.gpus.iter().map(gpu_row));
    out.push('\n');
    out.push_str(&align(&rows));
    let idle = gpu
        .join
        .idle_by_node
        .iter()
        .map(|(node, idle)| {
            let node = if node.is_empty() { "(no node)" } else { node };
            format!("{node}×{}", idle.gpus)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "{} GPU(s) held by {} pod(s); idle: {idle}",
        gpu.gpus.len(),
        gpu.join.pods.len(),
    );
}

fn gpu_row(g: &GpuReading) -> Vec<String> {
    let gib = |v: Option<f64>| {
        v.map_or("-".to_owned(), |b| {
            format!("{:.2} GiB", b / (1u64 << 30) as f64)
        })
    };
    vec![
        g.index.clone(),
        g.uuid.clone(),
        g.model_name.clone(),
        g.node.clone().unwrap_or_else(|| "-".into()),
        g.pod
            .as_ref()
            .map_or("(idle)".into(), |p| format!("{}/{}", p.namespace, p.pod)),
        g.busy_fraction()
            .map_or("-".into(), |v| format!("{:.1}%", v * 100.0)),
        gib(g.field(GpuField::MemoryUsedBytes)),
        gib(g.field(GpuField::MemoryFreeBytes)),
        g.field(GpuField::PowerWatts)
            .map_or("-".into(), |w| format!("{} W", trim_float(w, 1))),
    ]
}

fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(body: &str, t: f64) -> Scrape {
        Scrape {
            source: format!("t{t}"),
            body: body.as_bytes().to_vec(),
            format: Format::Prometheus,
            taken_at: t,
        }
    }

    #[test]
    fn one_scrape_reports_gauges_and_since_start_window() {
        let body = "vllm:num_requests_waiting{model_name=\"m\"} 4\nvllm:time_to_first_token_seconds_bucket{le=\"0.1\",model_name=\"m\"} 1\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"m\"} 1\n";
        let report = inspect(&[scrape(body, 0.0)], 60.0).unwrap();
        let replica = report.replica.as_ref().unwrap();
        assert_eq!(replica.combined.queue_depth, Reading::Value(4.0));
        assert!(replica.window.since_start);
        let table = render_table(&report);
        assert!(table.contains("queue_depth"), "{table}");
        assert!(table.contains("50 ms"), "{table}");
    }

    #[test]
    fn an_idle_server_shows_zero_latency_marked_idle() {
        let body = "vllm:num_requests_waiting{model_name=\"m\"} 0\nvllm:num_requests_running{model_name=\"m\"} 0\nvllm:time_to_first_token_seconds_bucket{le=\"0.1\",model_name=\"m\"} 0\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"m\"} 0\n";
        let report = inspect(&[scrape(body, 0.0)], 60.0).unwrap();
        let table = render_table(&report);
        let p95 = table
            .lines()
            .find(|l| l.starts_with("time_to_first_token_p95"))
            .unwrap();
        assert!(p95.ends_with("0 ms (idle)"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        let ttft = &json["replica"]["combined"]["time_to_first_token"];
        assert_eq!(
            (ttft["p95"].as_f64(), ttft["idle"].as_bool()),
            (Some(0.0), Some(true))
        );
    }

    #[test]
    fn no_sources_is_an_error() {
        assert!(matches!(inspect(&[], 60.0), Err(InspectError::NoSources)));
    }
}
