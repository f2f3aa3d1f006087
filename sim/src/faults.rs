//! Faults the simulated exporters play on their `/metrics` endpoint, for the fault suite:
//! what a broken, slow, hostile or restarting target looks like to a scraper.
//!
//! Owns: the [`Fault`] set (its JSON is the body of `POST /admin/fault`), the shared
//! [`Faults`] state both servers consult on every scrape, rewriting a rendered body for the
//! faults that corrupt exposition text, and the streamed bodies (oversized, gzip bomb, many
//! models). Does not own: routing or what a healthy body holds (see [`crate::server`],
//! [`crate::dcgm_server`]).
//!
//! Every fault stays until the next `POST /admin/fault` replaces it or `POST /admin/reset`
//! clears it; a reset also releases scrapes that are hanging. Sizes and durations are
//! capped ([`MAX_BODY_BYTES`], [`MAX_FAULT_SECONDS`], [`MAX_MODELS`]) so that a typo cannot
//! make the simulator itself the problem.

use axum::body::{Body, Bytes};
use flate2::{Compress, Compression, Crc, FlushCompress};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;

/// Largest body a fault may produce (oversized, decoded gzip bomb, many models): 64 GiB.
pub const MAX_BODY_BYTES: u64 = 64 << 30;
/// Longest a fault may hang a scrape or keep the listener closed: one hour.
pub const MAX_FAULT_SECONDS: f64 = 3600.0;
/// Most extra model names `many_models` may add.
pub const MAX_MODELS: usize = 10_000_000;

fn default_hang_seconds() -> f64 {
    60.0
}

fn default_redirect_status() -> u16 {
    302
}

fn default_gone_seconds() -> f64 {
    10.0
}

/// One fault, as `POST /admin/fault` takes it: `{"fault": "<name>", ...parameters}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// The scrape is accepted and not answered for `seconds` (default 60), then answered
    /// normally; a reset answers it at once.
    Hang {
        #[serde(default = "default_hang_seconds")]
        seconds: f64,
    },
    /// Answers status `code` (e.g. 500) with a short plain-text body.
    Status { code: u16 },
    /// Answers 200 with an HTML error page (`text/html`), as a proxy in front of a dead
    /// exporter does.
    Html {},
    /// Answers 200 `text/plain` with `bytes` pseudo-random bytes (invalid UTF-8 and stray
    /// newlines included; the same bytes every time).
    Garbage { bytes: u64 },
    /// Answers the real body, then comment lines, `bytes` in all, streamed; with
    /// `content_length` the size is announced in `Content-Length` too (else chunked).
    Oversized {
        bytes: u64,
        #[serde(default)]
        content_length: bool,
    },
    /// Answers `Content-Encoding: gzip` with a body that decodes to `decoded_bytes` (rounded
    /// up to whole MiB) of 1 MiB blank comment lines, while ≈ 1/1000 of that goes over the
    /// wire.
    GzipBomb { decoded_bytes: u64 },
    /// The queue, running and KV-usage gauges read `NaN`, `+Inf` and `-Inf` (dcgm: GPU
    /// utilisation, power and memory used).
    NonFiniteGauges {},
    /// In every histogram the last finite bucket holds more than `+Inf`: cumulative counts
    /// fall (vLLM only).
    NonMonotoneBuckets {},
    /// Every histogram loses its `+Inf` bucket and `_count`, as a truncated body does
    /// (vLLM only).
    NoInfBucket {},
    /// Every second finite bucket of every histogram is left out: a valid, coarser
    /// histogram (vLLM only).
    MissingBuckets {},
    /// Every gauge series is printed twice, the copy with another value.
    DuplicateSeries {},
    /// Answers `status` (default 302) with `Location: location`.
    Redirect {
        location: String,
        #[serde(default = "default_redirect_status")]
        status: u16,
    },
    /// After the real body, `count` more model names, one
    /// `vllm:num_requests_waiting{model_name="m000000"} 1` line (50 bytes) each, streamed
    /// (300,000 of them are issue 8's 15 MB attack; vLLM only).
    ManyModels { count: usize },
    /// The listener closes — connections are refused — for `seconds` (default 10), then
    /// opens again on the same address. The admin endpoints are unreachable meanwhile, so
    /// this one ends by itself.
    Gone {
        #[serde(default = "default_gone_seconds")]
        seconds: f64,
    },
}

/// Which exporter a body comes from: the body-rewriting faults differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    Vllm,
    Dcgm,
}

/// Why a fault cannot be set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("{0} must be between {1} and {2}")]
    OutOfRange(&'static str, f64, f64),
    #[error("status code {0} is not a valid HTTP status for this fault")]
    BadStatus(u16),
    #[error("redirect location must not be empty")]
    NoLocation,
    #[error("fault {0} applies to vLLM bodies only")]
    VllmOnly(&'static str),
}

impl Fault {
    /// The fault's name as in its JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Hang { .. } => "hang",
            Fault::Status { .. } => "status",
            Fault::Html {} => "html",
            Fault::Garbage { .. } => "garbage",
            Fault::Oversized { .. } => "oversized",
            Fault::GzipBomb { .. } => "gzip_bomb",
            Fault::NonFiniteGauges {} => "non_finite_gauges",
            Fault::NonMonotoneBuckets {} => "non_monotone_buckets",
            Fault::NoInfBucket {} => "no_inf_bucket",
            Fault::MissingBuckets {} => "missing_buckets",
            Fault::DuplicateSeries {} => "duplicate_series",
            Fault::Redirect { .. } => "redirect",
            Fault::ManyModels { .. } => "many_models",
            Fault::Gone { .. } => "gone",
        }
    }

    /// Checks the parameters against the caps and the exporter.
    pub fn validate(&self, exporter: Exporter) -> Result<(), FaultError> {
        let seconds = |s: f64| {
            if s.is_finite() && (0.0..=MAX_FAULT_SECONDS).contains(&s) {
                Ok(())
            } else {
                Err(FaultError::OutOfRange("seconds", 0.0, MAX_FAULT_SECONDS))
            }
        };
        let bytes = |b: u64| {
            if (1..=MAX_BODY_BYTES).contains(&b) {
                Ok(())
            } else {
                Err(FaultError::OutOfRange("bytes", 1.0, MAX_BODY_BYTES as f64))
            }
        };
        match self {
            Fault::Hang { seconds: s } | Fault::Gone { seconds: s } => seconds(*s)?,
            Fault::Status { code } if !(100..=599).contains(code) => {
                return Err(FaultError::BadStatus(*code))
            }
            Fault::Redirect { status, .. } if !(300..=399).contains(status) => {
                return Err(FaultError::BadStatus(*status))
            }
            Fault::Redirect { location, .. } if location.is_empty() => {
                return Err(FaultError::NoLocation)
            }
            Fault::Garbage { bytes: b } | Fault::Oversized { bytes: b, .. } => bytes(*b)?,
            Fault::GzipBomb { decoded_bytes } => bytes(*decoded_bytes)?,
            Fault::ManyModels { count } if *count == 0 || *count > MAX_MODELS => {
                return Err(FaultError::OutOfRange("count", 1.0, MAX_MODELS as f64))
            }
            _ => {}
        }
        if exporter == Exporter::Dcgm
            && matches!(
                self,
                Fault::NonMonotoneBuckets {}
                    | Fault::NoInfBucket {}
                    | Fault::MissingBuckets {}
                    | Fault::ManyModels { .. }
            )
        {
            return Err(FaultError::VllmOnly(self.name()));
        }
        Ok(())
    }
}

/// The fault state one server holds: the active fault, `/metrics` switched off or not, and
/// the signal that releases hanging scrapes on reset.
#[derive(Debug)]
pub struct Faults {
    exporter: Exporter,
    state: Mutex<FaultState>,
    reset: tokio::sync::watch::Sender<u64>,
    gone: tokio::sync::watch::Sender<Option<Duration>>,
}

#[derive(Debug, Clone, Default)]
struct FaultState {
    fault: Option<Fault>,
    metrics_down: bool,
}

impl Faults {
    pub fn new(exporter: Exporter) -> Faults {
        Faults {
            exporter,
            state: Mutex::new(FaultState::default()),
            reset: tokio::sync::watch::channel(0).0,
            gone: tokio::sync::watch::channel(None).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn exporter(&self) -> Exporter {
        self.exporter
    }

    /// The active fault, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.lock().fault.clone()
    }

    /// Sets the fault (after [`Fault::validate`]); `gone` is handed to the serve loop.
    pub fn set(&self, fault: Fault) -> Result<(), FaultError> {
        fault.validate(self.exporter)?;
        if let Fault::Gone { seconds } = fault {
            self.gone
                .send_replace(Some(Duration::from_secs_f64(seconds)));
            return Ok(());
        }
        self.lock().fault = Some(fault);
        Ok(())
    }

    pub fn set_metrics_down(&self, down: bool) {
        self.lock().metrics_down = down;
    }

    pub fn metrics_down(&self) -> bool {
        self.lock().metrics_down
    }

    /// Clears every fault and `metrics-down`, and answers hanging scrapes.
    pub fn reset(&self) {
        *self.lock() = FaultState::default();
        self.reset.send_modify(|n| *n += 1);
    }

    /// Waits `seconds`, or less if a reset comes first.
    pub async fn hang(&self, seconds: f64) {
        let mut reset = self.reset.subscribe();
        let started = *reset.borrow_and_update();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {}
            _ = reset.wait_for(|n| *n != started) => {}
        }
    }

    /// For the serve loop: resolves with how long to stay gone once `gone` is set.
    pub async fn gone_requested(&self) -> Duration {
        let mut gone = self.gone.subscribe();
        loop {
            if let Some(duration) = *gone.borrow_and_update() {
                return duration;
            }
            if gone.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// For the serve loop: the listener is back.
    pub fn gone_over(&self) {
        self.gone.send_replace(None);
    }
}

/// The line with its trailing value replaced (`name{labels} value` → `name{labels} new`).
fn with_value(line: &str, value: &str) -> String {
    match line.rfind(' ') {
        Some(at) => format!("{} {value}", &line[..at]),
        None => line.to_owned(),
    }
}

fn value_of(line: &str) -> Option<f64> {
    line.rsplit(' ').next()?.parse().ok()
}

/// The names of the gauges each exporter's `non_finite_gauges` and `duplicate_series` touch.
fn gauge_names(exporter: Exporter) -> [&'static str; 3] {
    match exporter {
        Exporter::Vllm => [
            "vllm:num_requests_waiting{",
            "vllm:num_requests_running{",
            "vllm:kv_cache_usage_perc{",
        ],
        Exporter::Dcgm => [
            "DCGM_FI_DEV_GPU_UTIL{",
            "DCGM_FI_DEV_POWER_USAGE{",
            "DCGM_FI_DEV_FB_USED{",
        ],
    }
}

/// Rewrites a rendered body for the faults that corrupt exposition text; other faults
/// leave it as it is.
pub fn rewrite_body(fault: &Fault, exporter: Exporter, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + body.len() / 8);
    let gauges = gauge_names(exporter);
    let gauge = |line: &str| gauges.iter().position(|g| line.starts_with(g));
    let is_bucket = |line: &str| !line.starts_with('#') && line.contains("_bucket{");
    let is_inf_bucket = |line: &str| is_bucket(line) && line.contains("le=\"+Inf\"");
    match fault {
        Fault::NonFiniteGauges {} => {
            for line in body.lines() {
                match gauge(line) {
                    Some(i) => out.push_str(&with_value(line, ["NaN", "+Inf", "-Inf"][i])),
                    None => out.push_str(line),
                }
                out.push('\n');
            }
        }
        Fault::DuplicateSeries {} => {
            for line in body.lines() {
                out.push_str(line);
                out.push('\n');
                if gauge(line).is_some() {
                    let other = value_of(line).unwrap_or(0.0) + 100.0;
                    out.push_str(&with_value(line, &format!("{other:?}")));
                    out.push('\n');
                }
            }
        }
        Fault::NonMonotoneBuckets {} => {
            // Hold each bucket line back one line: when `+Inf` comes, the last finite
            // bucket is written with one more than `+Inf`.
            let mut held: Option<&str> = None;
            for line in body.lines() {
                if let Some(previous) = held.take() {
                    if is_inf_bucket(line) {
                        let over = value_of(line).unwrap_or(0.0) + 1.0;
                        out.push_str(&with_value(previous, &format!("{over:?}")));
                    } else {
                        out.push_str(previous);
                    }
                    out.push('\n');
                }
                if is_bucket(line) && !is_inf_bucket(line) {
                    held = Some(line);
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            if let Some(previous) = held {
                out.push_str(previous);
                out.push('\n');
            }
        }
        Fault::NoInfBucket {} => {
            let histograms: Vec<&str> = body
                .lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.strip_suffix(" histogram"))
                .collect();
            for line in body.lines() {
                let count_line = histograms
                    .iter()
                    .any(|h| line.starts_with(&format!("{h}_count")));
                if !is_inf_bucket(line) && !count_line {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        Fault::MissingBuckets {} => {
            let mut finite = 0usize;
            for line in body.lines() {
                if is_bucket(line) && !is_inf_bucket(line) {
                    finite += 1;
                    if finite % 2 == 0 {
                        continue;
                    }
                } else if !is_bucket(line) {
                    finite = 0;
                }
                out.push_str(line);
                out.push('\n');
            }
        }
        _ => out.push_str(body),
    }
    out
}

/// `bytes` pseudo-random bytes (xorshift64*, fixed seed): the same garbage every time.
pub fn garbage(bytes: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(bytes as usize);
    while (out.len() as u64) < bytes {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        let take = ((bytes - out.len() as u64) as usize).min(word.len());
        out.extend_from_slice(&word[..take]);
    }
    out
}

/// Streams `total` bytes: `head`, then comment lines (the last one cut to fit).
pub fn padded_body(head: String, total: u64) -> Body {
    const CHUNK: usize = 64 * 1024;
    let line = b"# padding: an oversized /metrics body played by vllm-sim\n";
    let mut chunk = Vec::with_capacity(CHUNK);
    while chunk.len() + line.len() <= CHUNK {
        chunk.extend_from_slice(line);
    }
    let chunk = Bytes::from(chunk);
    let head = Bytes::from(head);
    let head_len = (head.len() as u64).min(total);
    let first = head.slice(..head_len as usize);
    let rest = total - head_len;
    let stream = futures::stream::unfold((Some(first), rest), move |(first, left)| {
        let chunk = chunk.clone();
        async move {
            if let Some(first) = first {
                return Some((Ok::<_, std::io::Error>(first), (None, left)));
            }
            if left == 0 {
                return None;
            }
            let take = (chunk.len() as u64).min(left) as usize;
            Some((Ok(chunk.slice(..take)), (None, left - take as u64)))
        }
    });
    Body::from_stream(stream)
}

/// Streams `head`, then `count` lines `vllm:num_requests_waiting{model_name="m000000"} 1`.
pub fn many_models_body(head: String, count: usize) -> Body {
    const LINES_PER_CHUNK: usize = 4096;
    let stream = futures::stream::unfold((Some(head), 0usize), move |(head, next)| async move {
        if let Some(head) = head {
            return Some((Ok::<_, std::io::Error>(Bytes::from(head)), (None, next)));
        }
        if next >= count {
            return None;
        }
        let end = (next + LINES_PER_CHUNK).min(count);
        let mut chunk = String::with_capacity((end - next) * 50);
        for i in next..end {
            chunk.push_str(&format!(
                "vllm:num_requests_waiting{{model_name=\"m{i:06}\"}} 1\n"
            ));
        }
        Some((Ok(Bytes::from(chunk)), (None, end)))
    });
    Body::from_stream(stream)
}

/// One MiB comment line of blanks, compressed on its own (full flush: byte-aligned, no reference
/// to earlier data), and its CRC: repeating it N times is a valid deflate stream of N MiB.
struct BombUnit {
    compressed: Bytes,
    crc: Crc,
}

fn bomb_unit() -> &'static BombUnit {
    static UNIT: std::sync::OnceLock<BombUnit> = std::sync::OnceLock::new();
    UNIT.get_or_init(|| {
        // One comment line of blanks: long runs compress best (deflate's ≈ 1000:1 limit).
        let mut plain = vec![b' '; 1 << 20];
        plain[0] = b'#';
        plain[(1 << 20) - 1] = b'\n';
        let mut compress = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(8 * 1024);
        compress
            .compress_vec(&plain, &mut out, FlushCompress::Full)
            .expect("deflate into a buffer");
        while compress.total_in() < plain.len() as u64 {
            out.reserve(8 * 1024);
            let consumed = compress.total_in() as usize;
            compress
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Full)
                .expect("deflate into a buffer");
        }
        let mut crc = Crc::new();
        crc.update(&plain);
        BombUnit {
            compressed: Bytes::from(out),
            crc,
        }
    })
}

/// A gzip stream (one member) that decodes to `decoded_bytes` rounded up to whole MiB,
/// streamed unit by unit.
pub fn gzip_bomb_body(decoded_bytes: u64) -> Body {
    let unit = bomb_unit();
    let units = decoded_bytes.div_ceil(1 << 20).max(1);
    let mut crc = Crc::new();
    for _ in 0..units {
        crc.combine(&unit.crc);
    }
    // RFC 1952 header: magic, deflate, no flags, no mtime, max compression, unknown OS.
    let header = Bytes::from_static(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
    let mut trailer = vec![0x03, 0x00]; // final fixed-Huffman block, empty
    trailer.extend_from_slice(&crc.sum().to_le_bytes());
    trailer.extend_from_slice(&((units << 20) as u32).to_le_bytes());
    let trailer = Bytes::from(trailer);
    let compressed = unit.compressed.clone();
    let stream = futures::stream::unfold(0u64, move |sent| {
        let (header, compressed, trailer) = (header.clone(), compressed.clone(), trailer.clone());
        async move {
            let item = match sent {
                0 => header,
                n if n <= units => compressed,
                n if n == units + 1 => trailer,
                _ => return None,
            };
            Some((Ok::<_, std::io::Error>(item), sent + 1))
        }
    });
    Body::from_stream(stream)
}

/// A proxy's error page.
pub const HTML_ERROR_PAGE: &str = "<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx</center>\n</body>\n</html>\n";

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    const BODY: &str = "# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3.0
vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 1.0
vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.5
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.1\",model_name=\"m\"} 1.0
vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.5\",model_name=\"m\"} 2.0
vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"1.0\",model_name=\"m\"} 3.0
vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 3.0
vllm:time_to_first_token_seconds_count{engine=\"0\",model_name=\"m\"} 3.0
vllm:time_to_first_token_seconds_sum{engine=\"0\",model_name=\"m\"} 1.2
";

    fn lines(body: &str) -> Vec<&str> {
        body.lines().collect()
    }

    #[test]
    fn fault_json_is_tagged_by_name() {
        let f: Fault = serde_json::from_str(r#"{"fault":"hang"}"#).unwrap();
        assert_eq!(f, Fault::Hang { seconds: 60.0 });
        let f: Fault = serde_json::from_str(r#"{"fault":"status","code":500}"#).unwrap();
        assert_eq!(f.name(), "status");
        assert!(serde_json::from_str::<Fault>(r#"{"fault":"html","x":1}"#).is_err());
        assert!(serde_json::from_str::<Fault>(r#"{"fault":"hang","second":1}"#).is_err());
        assert!(serde_json::from_str::<Fault>(r#"{"fault":"nope"}"#).is_err());
    }

    #[test]
    fn parameters_are_checked() {
        let v = |f: Fault| f.validate(Exporter::Vllm);
        assert!(v(Fault::Hang { seconds: 1e9 }).is_err());
        assert!(v(Fault::Status { code: 99 }).is_err());
        assert!(v(Fault::Redirect {
            location: "x".into(),
            status: 200
        })
        .is_err());
        assert!(v(Fault::Garbage { bytes: 0 }).is_err());
        assert!(v(Fault::ManyModels { count: 300_000 }).is_ok());
        assert_eq!(
            Fault::NoInfBucket {}.validate(Exporter::Dcgm),
            Err(FaultError::VllmOnly("no_inf_bucket"))
        );
    }

    #[test]
    fn non_finite_gauges() {
        let out = rewrite_body(&Fault::NonFiniteGauges {}, Exporter::Vllm, BODY);
        assert_eq!(
            lines(&out)[1],
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} NaN"
        );
        assert_eq!(
            lines(&out)[2],
            "vllm:num_requests_running{engine=\"0\",model_name=\"m\"} +Inf"
        );
        assert_eq!(
            lines(&out)[3],
            "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} -Inf"
        );
    }

    #[test]
    fn duplicate_series() {
        let out = rewrite_body(&Fault::DuplicateSeries {}, Exporter::Vllm, BODY);
        assert_eq!(lines(&out)[1], lines(BODY)[1]);
        assert_eq!(
            lines(&out)[2],
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 103.0"
        );
        assert_eq!(lines(&out).len(), lines(BODY).len() + 3);
    }

    #[test]
    fn non_monotone_buckets() {
        let out = rewrite_body(&Fault::NonMonotoneBuckets {}, Exporter::Vllm, BODY);
        // The last finite bucket (le=1.0) now holds 4 > +Inf's 3.
        assert_eq!(
            lines(&out)[7],
            "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"1.0\",model_name=\"m\"} 4.0"
        );
        assert_eq!(lines(&out).len(), lines(BODY).len());
    }

    #[test]
    fn no_inf_bucket_and_missing_buckets() {
        let out = rewrite_body(&Fault::NoInfBucket {}, Exporter::Vllm, BODY);
        assert!(!out.contains("+Inf") && !out.contains("_count"));
        assert!(out.contains("_sum"));
        let out = rewrite_body(&Fault::MissingBuckets {}, Exporter::Vllm, BODY);
        assert!(out.contains("le=\"0.1\"") && !out.contains("le=\"0.5\""));
        assert!(out.contains("le=\"1.0\"") && out.contains("le=\"+Inf\""));
    }

    #[test]
    fn garbage_is_deterministic_and_not_utf8() {
        let g = garbage(4096);
        assert_eq!(g.len(), 4096);
        assert_eq!(g, garbage(4096));
        assert!(std::str::from_utf8(&g).is_err());
    }

    #[tokio::test]
    async fn gzip_bomb_decodes_to_the_announced_size_from_a_small_wire_body() {
        let body = gzip_bomb_body(3 << 20);
        let wire = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert!(wire.len() < 4 * 1024, "{} bytes on the wire", wire.len());
        let mut decoded = Vec::new();
        GzDecoder::new(&wire[..]).read_to_end(&mut decoded).unwrap();
        assert_eq!(decoded.len(), 3 << 20);
        assert!(decoded.starts_with(b"#   "));
        assert_eq!(decoded.iter().filter(|&&b| b == b'\n').count(), 3);
    }

    #[tokio::test]
    async fn padded_and_many_models_bodies_have_their_size() {
        let body = padded_body("head\n".into(), 200_000);
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(bytes.len(), 200_000);
        assert!(bytes.starts_with(b"head\n# padding"));
        let body = many_models_body(String::new(), 300_000);
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(bytes.len(), 300_000 * 50);
    }

    #[tokio::test]
    async fn reset_releases_a_hang() {
        let faults = std::sync::Arc::new(Faults::new(Exporter::Vllm));
        let waiting = faults.clone();
        let hang = tokio::spawn(async move { waiting.hang(3600.0).await });
        tokio::task::yield_now().await;
        faults.reset();
        tokio::time::timeout(Duration::from_secs(5), hang)
            .await
            .expect("released")
            .unwrap();
    }
}
