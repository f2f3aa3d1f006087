//! Request traces: reading the Azure LLM inference CSVs (or any CSV with the same columns) and
//! JSONL traces with per-block prefix hashes, rescaling time, and synthetic generators.
//!
//! Owns: the [`Request`] and [`Trace`] types, the CSV and JSONL parsers, time scaling, and the
//! `kind:key=value,...` synthetic specs (Poisson, diurnal, bursts, ramps).
//!
//! JSONL: one object per line with `timestamp` (milliseconds), `input_length`,
//! `output_length` and `hash_ids` (one id per block of the prompt, equal ids meaning an equal
//! prefix up to that block) — the shape of published prefix-aware traces such as Mooncake's,
//! whose blocks are 512 tokens. Unknown fields are ignored; a bad line is refused with its
//! number.
//! Does not own: what happens to a request once it arrives (see [`crate::replay`]).
//!
//! The Azure 2023 traces (Patel et al., "Splitwise", ISCA 2024; CC-BY-4.0) have a header
//! `TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps like `2023-11-16 18:17:03.9799600`,
//! CRLF line ends and no newline after the last row. Columns are found by name, so their
//! order does not matter; a `TIMESTAMP` that is a plain number is taken as seconds.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Why a trace could not be read or generated.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read trace {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The header lacks one of the required columns.
    #[error("trace header lacks column {0} (need TIMESTAMP, ContextTokens, GeneratedTokens)")]
    MissingColumn(&'static str),
    /// A row could not be parsed.
    #[error("trace line {line}: {reason}")]
    BadRow { line: usize, reason: String },
    /// The trace has no request.
    #[error("trace has no request")]
    Empty,
    /// A synthetic spec could not be understood.
    #[error("bad synthetic spec {spec:?}: {reason}")]
    BadSpec { spec: String, reason: String },
    /// The time scale must be a positive number.
    #[error("time scale must be positive and finite, got {0}")]
    BadTimeScale(f64),
}

/// One request of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Request {
    /// Arrival, seconds since the start of the trace.
    pub arrival: f64,
    /// Prompt (context) tokens.
    pub prompt_tokens: u32,
    /// Tokens to generate (at least 1: a request always yields a first token).
    pub output_tokens: u32,
    /// The request's prefix hashes: `hashes.0..hashes.0 + hashes.1` in [`Trace::hash_table`].
    pub hashes: (u32, u32),
}

impl Request {
    /// A request without prefix hashes.
    pub fn new(arrival: f64, prompt_tokens: u32, output_tokens: u32) -> Request {
        Request {
            arrival,
            prompt_tokens,
            output_tokens,
            hashes: (0, 0),
        }
    }
}

/// Requests sorted by arrival.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    pub name: String,
    pub requests: Vec<Request>,
    /// Prefix hashes of every request (empty when the trace has none).
    #[serde(skip)]
    pub hash_table: Vec<u64>,
    /// Prompt tokens one hash covers.
    pub hash_block_tokens: u32,
}

impl Trace {
    /// Builds a trace, sorting by arrival and shifting time so the first arrival is at 0.
    pub fn new(name: impl Into<String>, mut requests: Vec<Request>) -> Result<Trace, TraceError> {
        if requests.is_empty() {
            return Err(TraceError::Empty);
        }
        requests.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
        let first = requests[0].arrival;
        for r in &mut requests {
            r.arrival -= first;
        }
        Ok(Trace {
            name: name.into(),
            requests,
            hash_table: Vec::new(),
            hash_block_tokens: DEFAULT_HASH_BLOCK_TOKENS,
        })
    }

    /// Reads a JSONL trace (see the module docs); `block_tokens` is the tokens one hash id
    /// covers.
    pub fn from_jsonl_file(path: &Path, block_tokens: u32) -> Result<Trace, TraceError> {
        let (name, text) = read_trace_file(path)?;
        parse_jsonl(&name, &text, block_tokens)
    }

    /// Reads a trace file: JSONL when its name ends in `.jsonl`, CSV otherwise.
    pub fn from_file(path: &Path, block_tokens: u32) -> Result<Trace, TraceError> {
        if path.extension().is_some_and(|e| e == "jsonl") {
            Trace::from_jsonl_file(path, block_tokens)
        } else {
            Trace::from_csv_file(path)
        }
    }

    /// Span from first to last arrival, seconds.
    pub fn duration(&self) -> f64 {
        self.requests.last().map_or(0.0, |r| r.arrival)
    }

    /// The same requests `factor` times faster (denser): arrival gaps divided by `factor`.
    pub fn time_scaled(mut self, factor: f64) -> Result<Trace, TraceError> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(TraceError::BadTimeScale(factor));
        }
        for r in &mut self.requests {
            r.arrival /= factor;
        }
        if factor != 1.0 {
            self.name = format!("{} (x{factor})", self.name);
        }
        Ok(self)
    }

    /// `factor` times denser without changing the time axis: each request becomes
    /// `floor(factor)` copies (plus one more with probability `fract(factor)`), each shifted by
    /// a uniform jitter of ±`jitter_secs`. Minute-scale shape and bursts are kept, the rate is
    /// multiplied — unlike [`Trace::time_scaled`], which also shortens the trace.
    pub fn densified(self, factor: f64, jitter_secs: f64, seed: u64) -> Result<Trace, TraceError> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(TraceError::BadTimeScale(factor));
        }
        if factor == 1.0 {
            return Ok(self);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let whole = factor.floor() as usize;
        let extra = factor - factor.floor();
        let mut requests = Vec::with_capacity((self.requests.len() as f64 * factor) as usize + 1);
        for r in &self.requests {
            let copies = whole + usize::from(rng.random::<f64>() < extra);
            for _ in 0..copies {
                let shift = (rng.random::<f64>() * 2.0 - 1.0) * jitter_secs;
                requests.push(Request {
                    arrival: (r.arrival + shift).max(0.0),
                    ..*r
                });
            }
        }
        let name = format!("{} (density x{factor})", self.name);
        let mut trace = Trace::new(name, requests)?;
        trace.hash_table = self.hash_table;
        trace.hash_block_tokens = self.hash_block_tokens;
        Ok(trace)
    }

    /// Reads a CSV trace file.
    pub fn from_csv_file(path: &Path) -> Result<Trace, TraceError> {
        let (name, text) = read_trace_file(path)?;
        Trace::new(name, parse_csv(&text)?)
    }
}

/// Parses CSV text with `TIMESTAMP`, `ContextTokens` and `GeneratedTokens` columns.
///
/// Accepts `\n` or `\r\n`, a missing final newline, and blank lines.
pub fn parse_csv(text: &str) -> Result<Vec<Request>, TraceError> {
    let mut lines = text.lines().enumerate();
    let header = loop {
        match lines.next() {
            Some((_, l)) if l.trim().is_empty() => continue,
            Some((_, l)) => break l,
            None => return Err(TraceError::Empty),
        }
    };
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let find = |name: &'static str| {
        columns
            .iter()
            .position(|c| c.trim_start_matches('\u{feff}').eq_ignore_ascii_case(name))
            .ok_or(TraceError::MissingColumn(name))
    };
    let (t_col, ctx_col, gen_col) = (
        find("TIMESTAMP")?,
        find("ContextTokens")?,
        find("GeneratedTokens")?,
    );
    let mut requests = Vec::new();
    for (index, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| TraceError::BadRow {
            line: index + 1,
            reason,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let field = |i: usize| {
            fields
                .get(i)
                .copied()
                .ok_or_else(|| bad(format!("missing column {}", i + 1)))
        };
        let arrival = parse_timestamp(field(t_col)?)
            .ok_or_else(|| bad(format!("bad timestamp {:?}", fields[t_col])))?;
        let tokens = |i: usize| -> Result<u32, TraceError> {
            let f = field(i)?;
            f.parse::<u32>()
                .map_err(|_| bad(format!("bad token count {f:?}")))
        };
        // A request that generated nothing still needed its prefill and a first token.
        requests.push(Request::new(
            arrival,
            tokens(ctx_col)?,
            tokens(gen_col)?.max(1),
        ));
    }
    if requests.is_empty() {
        return Err(TraceError::Empty);
    }
    Ok(requests)
}

/// A trace file's name (its stem) and text.
fn read_trace_file(path: &Path) -> Result<(String, String), TraceError> {
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
        path: path.to_owned(),
        source,
    })?;
    let name = path
        .file_stem()
        .map_or_else(|| "trace".to_owned(), |s| s.to_string_lossy().into_owned());
    Ok((name, text))
}

/// Tokens one hash id covers in Mooncake's published traces.
pub const DEFAULT_HASH_BLOCK_TOKENS: u32 = 512;

/// One line of a JSONL trace.
#[derive(Debug, serde::Deserialize)]
struct JsonlRequest {
    timestamp: f64,
    input_length: u32,
    output_length: u32,
    #[serde(default)]
    hash_ids: Vec<u64>,
}

/// Parses a JSONL trace (see the module docs).
pub fn parse_jsonl(name: &str, text: &str, block_tokens: u32) -> Result<Trace, TraceError> {
    let mut requests = Vec::new();
    let mut table = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let row: JsonlRequest = serde_json::from_str(line).map_err(|e| TraceError::BadRow {
            line: index + 1,
            reason: e.to_string(),
        })?;
        if !(row.timestamp.is_finite() && row.timestamp >= 0.0) {
            return Err(TraceError::BadRow {
                line: index + 1,
                reason: format!("bad timestamp {}", row.timestamp),
            });
        }
        let start = table.len() as u32;
        table.extend_from_slice(&row.hash_ids);
        requests.push(Request {
            arrival: row.timestamp / 1000.0,
            prompt_tokens: row.input_length,
            output_tokens: row.output_length.max(1),
            hashes: (start, row.hash_ids.len() as u32),
        });
    }
    let mut trace = Trace::new(name, requests)?;
    trace.hash_table = table;
    trace.hash_block_tokens = block_tokens.max(1);
    Ok(trace)
}

/// Seconds from a `YYYY-MM-DD HH:MM:SS[.fraction]` timestamp (days counted from 1970-01-01,
/// so traces crossing midnight or a month stay ordered), or from a plain number of seconds.
pub fn parse_timestamp(s: &str) -> Option<f64> {
    if let Ok(seconds) = s.parse::<f64>() {
        return seconds.is_finite().then_some(seconds);
    }
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let time = time.trim_end_matches('Z');
    let mut t = time.splitn(3, ':');
    let hour: f64 = t.next()?.parse().ok()?;
    let minute: f64 = t.next()?.parse().ok()?;
    let second: f64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day) as f64;
    Some(days * 86_400.0 + hour * 3600.0 + minute * 60.0 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Token-length distribution of synthetic requests: log-normal around a median, the shape
/// of the Azure traces' prompt and output lengths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenShape {
    pub prompt_median: f64,
    pub output_median: f64,
    /// Log-sd of both lengths; 0 gives constant lengths.
    pub log_sigma: f64,
}

/// Default synthetic lengths: medians near the Azure conversation trace (about 1k prompt and
/// 130 output tokens) with a log-sd of 1 for its long tail.
pub const DEFAULT_TOKEN_SHAPE: TokenShape = TokenShape {
    prompt_median: 1000.0,
    output_median: 130.0,
    log_sigma: 1.0,
};

/// Longest synthetic prompt; Llama 3.1 serves 128k but the Azure traces stay below 8k-ish, and
/// unbounded log-normal tails would produce prompts no replica can hold.
const MAX_SYNTHETIC_PROMPT: f64 = 16_000.0;
/// Longest synthetic output, the usual `max_tokens` cap.
const MAX_SYNTHETIC_OUTPUT: f64 = 4_000.0;

/// Arrival-rate shape of a synthetic trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateShape {
    /// Constant rate, requests/s.
    Poisson { rate: f64 },
    /// `mean × (1 + amplitude × sin(2πt/period))`, lowest at the start (night).
    Diurnal {
        mean: f64,
        amplitude: f64,
        period: f64,
    },
    /// `base` with `peak` for `length` seconds every `every` seconds.
    Bursts {
        base: f64,
        peak: f64,
        every: f64,
        length: f64,
    },
    /// Linear from `from` to `to` over the duration.
    Ramp { from: f64, to: f64 },
}

impl RateShape {
    /// Instantaneous rate at `t`, requests/s.
    pub fn rate_at(&self, t: f64, duration: f64) -> f64 {
        match *self {
            RateShape::Poisson { rate } => rate,
            RateShape::Diurnal {
                mean,
                amplitude,
                period,
            } => {
                let phase = 2.0 * std::f64::consts::PI * t / period - std::f64::consts::FRAC_PI_2;
                mean * (1.0 + amplitude * phase.sin())
            }
            RateShape::Bursts {
                base,
                peak,
                every,
                length,
            } => {
                if t.rem_euclid(every) >= every - length {
                    peak
                } else {
                    base
                }
            }
            RateShape::Ramp { from, to } => from + (to - from) * (t / duration.max(1e-9)),
        }
        .max(0.0)
    }

    fn max_rate(&self) -> f64 {
        match *self {
            RateShape::Poisson { rate } => rate,
            RateShape::Diurnal {
                mean, amplitude, ..
            } => mean * (1.0 + amplitude.abs()),
            RateShape::Bursts { base, peak, .. } => base.max(peak),
            RateShape::Ramp { from, to } => from.max(to),
        }
    }
}

/// A synthetic trace description.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Synthetic {
    pub shape: RateShape,
    pub duration: f64,
    pub tokens: TokenShape,
    pub seed: u64,
}

impl Synthetic {
    /// Parses `kind:key=value,...`, e.g. `poisson:rate=5,duration=3600` or
    /// `bursts:base=2,peak=20,every=600,length=60,duration=3600`. Optional keys for every kind:
    /// `prompt`, `output` (median tokens), `sigma` (log-sd of lengths), `seed`.
    pub fn parse(spec: &str) -> Result<Synthetic, TraceError> {
        let bad = |reason: &str| TraceError::BadSpec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
        let mut keys: Vec<(&str, f64)> = Vec::new();
        for pair in rest.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad("expected key=value"))?;
            let v: f64 = v
                .trim()
                .parse()
                .map_err(|_| bad(&format!("{k} is not a number")))?;
            if !v.is_finite() || v < 0.0 {
                return Err(bad(&format!("{k} must be a non-negative number")));
            }
            keys.push((k.trim(), v));
        }
        let get = |k: &str| keys.iter().rev().find(|(name, _)| *name == k).map(|p| p.1);
        let need = |k: &str| get(k).ok_or_else(|| bad(&format!("missing {k}")));
        let duration = need("duration")?;
        let shape = match kind.trim() {
            "poisson" => RateShape::Poisson {
                rate: need("rate")?,
            },
            "diurnal" => RateShape::Diurnal {
                mean: need("mean")?,
                amplitude: get("amplitude").unwrap_or(0.8),
                period: get("period").unwrap_or(86_400.0),
            },
            "bursts" | "burst" => RateShape::Bursts {
                base: need("base")?,
                peak: need("peak")?,
                every: need("every")?,
                length: need("length")?,
            },
            "ramp" => RateShape::Ramp {
                from: need("from")?,
                to: need("to")?,
            },
            _ => return Err(bad("kind must be poisson, diurnal, bursts or ramp")),
        };
        if let RateShape::Diurnal { period, .. } = shape {
            if period <= 0.0 {
                return Err(bad("period must be positive"));
            }
        }
        if let RateShape::Bursts { every, .. } = shape {
            if every <= 0.0 {
                return Err(bad("every must be positive"));
            }
        }
        Ok(Synthetic {
            shape,
            duration,
            tokens: TokenShape {
                prompt_median: get("prompt").unwrap_or(DEFAULT_TOKEN_SHAPE.prompt_median),
                output_median: get("output").unwrap_or(DEFAULT_TOKEN_SHAPE.output_median),
                log_sigma: get("sigma").unwrap_or(DEFAULT_TOKEN_SHAPE.log_sigma),
            },
            seed: get("seed").map_or(0, |s| s as u64),
        })
    }

    /// Generates the trace: a non-homogeneous Poisson process by thinning (exact for any
    /// bounded rate function), lengths drawn independently.
    pub fn generate(&self, name: &str) -> Result<Trace, TraceError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let max_rate = self.shape.max_rate();
        let bad = |reason: &str| TraceError::BadSpec {
            spec: name.to_owned(),
            reason: reason.to_owned(),
        };
        if max_rate <= 0.0 {
            return Err(bad("rate is zero everywhere"));
        }
        let gap = Exp::new(max_rate).map_err(|_| bad("bad rate"))?;
        let length = |median: f64| {
            LogNormal::new(median.max(1.0).ln(), self.tokens.log_sigma.max(0.0))
                .map_err(|_| bad("bad token shape"))
        };
        let prompt = length(self.tokens.prompt_median)?;
        let output = length(self.tokens.output_median)?;
        let mut requests = Vec::new();
        let mut t = 0.0;
        loop {
            t += gap.sample(&mut rng);
            if t > self.duration {
                break;
            }
            if rng.random::<f64>() * max_rate > self.shape.rate_at(t, self.duration) {
                continue;
            }
            requests.push(Request::new(
                t,
                prompt.sample(&mut rng).clamp(1.0, MAX_SYNTHETIC_PROMPT) as u32,
                output.sample(&mut rng).clamp(1.0, MAX_SYNTHETIC_OUTPUT) as u32,
            ));
        }
        if requests.is_empty() {
            return Err(TraceError::Empty);
        }
        // Keep the synthetic clock as generated (first arrival > 0 is fine).
        let first = requests[0].arrival;
        let mut trace = Trace::new(name, requests)?;
        for r in &mut trace.requests {
            r.arrival += first;
        }
        Ok(trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_timestamp() {
        let a = parse_timestamp("2023-11-16 18:17:03.9799600").unwrap();
        let b = parse_timestamp("2023-11-17 00:00:00").unwrap();
        assert!((b - a - (5.0 * 3600.0 + 42.0 * 60.0 + 56.02004)).abs() < 1e-6);
        assert_eq!(parse_timestamp("12.5"), Some(12.5));
        assert_eq!(parse_timestamp("2023-13-01 00:00:00"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn days_from_civil_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn spec_errors_name_the_problem() {
        let e = Synthetic::parse("poisson:rate=5").unwrap_err().to_string();
        assert!(e.contains("missing duration"), "{e}");
        assert!(Synthetic::parse("wave:duration=1").is_err());
        assert!(Synthetic::parse("poisson:rate=x,duration=1").is_err());
    }

    #[test]
    fn burst_rate_shape() {
        let s = RateShape::Bursts {
            base: 1.0,
            peak: 10.0,
            every: 100.0,
            length: 10.0,
        };
        assert_eq!(s.rate_at(50.0, 1000.0), 1.0);
        assert_eq!(s.rate_at(95.0, 1000.0), 10.0);
    }
}
