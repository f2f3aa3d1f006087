//! Parser for the Prometheus text exposition format 0.0.4 and OpenMetrics 1.0 text.
//!
//! Owns: turning a `/metrics` body into [`Record`]s (samples, `# HELP`, `# TYPE`, `# UNIT`,
//! `# EOF`) without copying the input, and counting every line it had to skip.
//! Does not own: what a metric *means* (see [`crate::profile`]) or grouping samples into
//! histograms (see [`crate::snapshot`]).
//!
//! Why our own parser: `prometheus-parse` 0.2.5 drops every line whose metric name has a `:`
//! (all of vLLM's `vllm:*` families) and splits label values at `,`; the evidence is the test
//! `prometheus_parse_cannot_read_vllm` in `tests/engine.rs`.
//!
//! Design points:
//! - The parser is line oriented: it finds the end of a line with `memchr` first, so a
//!   malformed line can never swallow the next one, and a line the caller's [`NameFilter`]
//!   rejects costs a search for the end of its name, one lookup and the newline search —
//!   its labels are never looked at.
//! - A malformed line is skipped and counted in [`ParseStats`]; parsing goes on.
//! - Label sets are validated once while parsing, which records where each label lies;
//!   [`Sample::labels`] slices those positions (or, for very long sets, walks the raw text
//!   again) and unescapes a value only when it holds a backslash, so the common case
//!   allocates nothing.

use std::borrow::Cow;

/// Which text dialect the body is in. They differ in timestamp units and in `# EOF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `text/plain; version=0.0.4`: timestamps are integer milliseconds.
    #[default]
    Prometheus,
    /// `application/openmetrics-text`: timestamps are (possibly fractional) seconds,
    /// the body ends with `# EOF`, exemplars may follow a sample.
    OpenMetrics,
}

impl Format {
    /// Picks the dialect from an HTTP `Content-Type` header value.
    pub fn from_content_type(content_type: &str) -> Format {
        if content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/openmetrics-text")
        {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// Picks the dialect from the body itself: OpenMetrics bodies end with `# EOF`.
    pub fn sniff(body: &str) -> Format {
        if body.trim_end().ends_with("# EOF") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// The declared type of a metric family (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `gaugehistogram` (OpenMetrics).
    GaugeHistogram,
    /// `summary`.
    Summary,
    /// `info` (OpenMetrics).
    Info,
    /// `stateset` (OpenMetrics).
    StateSet,
    /// `untyped` (0.0.4) and `unknown` (OpenMetrics).
    Unknown,
}

impl MetricType {
    fn from_token(token: &str) -> Option<MetricType> {
        Some(match token {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "gaugehistogram" => MetricType::GaugeHistogram,
            "summary" => MetricType::Summary,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "untyped" | "unknown" => MetricType::Unknown,
            _ => return None,
        })
    }
}

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The sample name as written, e.g. `vllm:time_to_first_token_seconds_bucket`.
    pub name: &'a str,
    /// Raw, already validated text between `{` and `}` (empty when there are no labels).
    raw_labels: &'a str,
    /// Where each label lies in `raw_labels`, recorded while the parser validated them.
    spans: LabelSpans,
    /// The sample value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
    /// Milliseconds since the Unix epoch, when the line carries a timestamp.
    pub timestamp_ms: Option<i64>,
}

impl<'a> Sample<'a> {
    /// Iterates over the labels in the order they were written.
    pub fn labels(&self) -> LabelIter<'a> {
        LabelIter {
            raw: self.raw_labels,
            rest: self.raw_labels,
            spans: self.spans,
            next: 0,
        }
    }

    /// The value of one label, unescaped, if the sample has it.
    pub fn label(&self, name: &str) -> Option<Cow<'a, str>> {
        self.labels().find(|l| l.name == name).map(|l| l.value)
    }

    /// The values of several labels, found in one walk over the label set: `values[i]` is
    /// the value of `names[i]`. An empty name matches nothing, so callers can leave slots
    /// unused. One walk instead of one per label matters on the hot path, where a bucket
    /// line needs its model label and `le`.
    pub fn labels_named<const N: usize>(&self, names: [&str; N]) -> [Option<Cow<'a, str>>; N] {
        let mut values = [const { None }; N];
        let mut found = 0;
        let wanted = names.iter().filter(|n| !n.is_empty()).count();
        if wanted == 0 {
            return values;
        }
        for label in self.labels() {
            if let Some(slot) = names.iter().position(|n| *n == label.name) {
                if values[slot].is_none() {
                    values[slot] = Some(label.value);
                    found += 1;
                    if found == wanted {
                        break;
                    }
                }
            }
        }
        values
    }

    /// The raw label text, as written between the braces (escapes not undone).
    pub fn raw_labels(&self) -> &'a str {
        self.raw_labels
    }
}

/// One `name="value"` pair of a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label<'a> {
    /// The label name.
    pub name: &'a str,
    /// Borrowed from the input unless the value held an escape sequence.
    pub value: Cow<'a, str>,
}

/// Most labels whose positions a sample keeps. vLLM's metric series carry up to 5 labels and
/// dcgm-exporter's 7 to 10 (with the pod attribution); a longer set — vLLM's
/// `cache_config_info` has one label per setting — is walked again instead.
const KEPT_LABEL_SPANS: usize = 12;

/// Positions of a sample's labels in its raw label text, found once by the validating scan
/// so that reading labels is slicing, not scanning again (reading labels was the largest
/// cost of the filtered parse after validating them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LabelSpans {
    /// Labels recorded; `u8::MAX` when the set had too many labels or was too long for
    /// 16-bit offsets, and is walked instead.
    len: u8,
    /// Bit `i`: value `i` holds escape sequences.
    escaped: u16,
    /// Per label: name start, name end, value start, value end (after the quotes).
    at: [[u16; 4]; KEPT_LABEL_SPANS],
}

impl LabelSpans {
    const UNRECORDED: u8 = u8::MAX;

    const EMPTY: LabelSpans = LabelSpans {
        len: 0,
        escaped: 0,
        at: [[0; 4]; KEPT_LABEL_SPANS],
    };

    /// Records one label (offsets relative to the label text), or gives up recording.
    #[inline]
    fn push(&mut self, name: (usize, usize), value: (usize, usize), escaped: bool) {
        let len = usize::from(self.len);
        if self.len == Self::UNRECORDED {
            return;
        }
        if len == KEPT_LABEL_SPANS || value.1 > usize::from(u16::MAX) {
            self.len = Self::UNRECORDED;
            return;
        }
        // In range: every offset is at most value.1, checked above.
        self.at[len] = [name.0 as u16, name.1 as u16, value.0 as u16, value.1 as u16];
        self.escaped |= u16::from(escaped) << len;
        self.len += 1;
    }
}

/// Walks a label set that [`Parser`] already validated.
#[derive(Debug, Clone)]
pub struct LabelIter<'a> {
    raw: &'a str,
    /// What is left to walk, when the spans were not recorded.
    rest: &'a str,
    spans: LabelSpans,
    next: u8,
}

impl<'a> Iterator for LabelIter<'a> {
    type Item = Label<'a>;

    #[inline]
    fn next(&mut self) -> Option<Label<'a>> {
        if self.spans.len != LabelSpans::UNRECORDED {
            if self.next >= self.spans.len {
                return None;
            }
            let i = usize::from(self.next);
            self.next += 1;
            let [name_start, name_end, value_start, value_end] = self.spans.at[i].map(usize::from);
            let name = self.raw.get(name_start..name_end)?;
            let raw_value = self.raw.get(value_start..value_end)?;
            let value = if self.spans.escaped & (1 << i) != 0 {
                Cow::Owned(unescape(raw_value))
            } else {
                Cow::Borrowed(raw_value)
            };
            return Some(Label { name, value });
        }
        self.walk()
    }
}

impl<'a> LabelIter<'a> {
    /// The next label, found by scanning (label sets whose spans were not recorded).
    fn walk(&mut self) -> Option<Label<'a>> {
        let bytes = self.rest.as_bytes();
        let mut i = skip_blanks(bytes, 0);
        if i >= bytes.len() {
            return None;
        }
        // The text was validated by `scan_label_set`, so the shapes below always hold;
        // still, we stop instead of panicking if they somehow do not.
        let name_end = scan_label_name(bytes, i)?;
        let name = &self.rest[i..name_end];
        i = skip_blanks(bytes, name_end);
        if bytes.get(i) != Some(&b'=') {
            return None;
        }
        i = skip_blanks(bytes, i + 1);
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let (value_end, escaped) = scan_quoted(bytes, i + 1).ok()?;
        let raw_value = &self.rest[i + 1..value_end];
        let value = if escaped {
            Cow::Owned(unescape(raw_value))
        } else {
            Cow::Borrowed(raw_value)
        };
        i = skip_blanks(bytes, value_end + 1);
        if bytes.get(i) == Some(&b',') {
            i += 1;
        }
        self.rest = &self.rest[i..];
        Some(Label { name, value })
    }
}

/// One parsed line that carries information.
#[derive(Debug, Clone, PartialEq)]
pub enum Record<'a> {
    /// A sample line.
    Sample(Sample<'a>),
    /// `# HELP family text` (text unescaped).
    Help {
        /// The family.
        family: &'a str,
        /// The help text.
        text: Cow<'a, str>,
    },
    /// `# TYPE family type`.
    Type {
        /// The family.
        family: &'a str,
        /// Its type.
        metric_type: MetricType,
    },
    /// `# UNIT family unit` (OpenMetrics).
    Unit {
        /// The family.
        family: &'a str,
        /// Its unit.
        unit: &'a str,
    },
    /// `# EOF` (OpenMetrics); the parser stops after it.
    Eof,
}

/// Why a line was skipped. Closed set so it can label our own metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineErrorKind {
    /// The metric name is empty or has a character outside `[a-zA-Z0-9_:]`.
    InvalidMetricName,
    /// A label name, `=`, quote, comma or the closing brace is missing or wrong.
    InvalidLabelSet,
    /// A label value has an escape other than `\\`, `\"`, `\n`, or no closing quote.
    InvalidLabelValue,
    /// The value is missing or not a float (`+Inf`, `-Inf`, `NaN` are floats).
    InvalidValue,
    /// The timestamp is not an integer (0.0.4) or a float (OpenMetrics).
    InvalidTimestamp,
    /// Text follows the timestamp that is not an exemplar.
    TrailingText,
    /// A `# HELP`/`# TYPE`/`# UNIT` line without a family name, or an unknown type.
    InvalidDescriptor,
    /// The line is not valid UTF-8.
    InvalidUtf8,
}

impl LineErrorKind {
    /// All kinds, in a fixed order (index = position in [`ParseStats::skipped_by_kind`]).
    pub const ALL: [LineErrorKind; 8] = [
        LineErrorKind::InvalidMetricName,
        LineErrorKind::InvalidLabelSet,
        LineErrorKind::InvalidLabelValue,
        LineErrorKind::InvalidValue,
        LineErrorKind::InvalidTimestamp,
        LineErrorKind::TrailingText,
        LineErrorKind::InvalidDescriptor,
        LineErrorKind::InvalidUtf8,
    ];

    /// A short, stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            LineErrorKind::InvalidMetricName => "invalid_metric_name",
            LineErrorKind::InvalidLabelSet => "invalid_label_set",
            LineErrorKind::InvalidLabelValue => "invalid_label_value",
            LineErrorKind::InvalidValue => "invalid_value",
            LineErrorKind::InvalidTimestamp => "invalid_timestamp",
            LineErrorKind::TrailingText => "trailing_text",
            LineErrorKind::InvalidDescriptor => "invalid_descriptor",
            LineErrorKind::InvalidUtf8 => "invalid_utf8",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A skipped line, kept for diagnostics (only the first few are kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the body.
    pub line: usize,
    /// Why it was skipped.
    pub kind: LineErrorKind,
}

/// How many diagnostics to keep per scrape: enough to show a user what is wrong with a body,
/// few enough that a body of garbage cannot make us hold a large list.
pub const MAX_KEPT_LINE_ERRORS: usize = 8;

/// Counts for one body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Lines seen, including blank and comment lines.
    pub lines: usize,
    /// Samples returned to the caller.
    pub samples: usize,
    /// Sample lines the name filter rejected (their labels were not parsed).
    pub filtered_out: usize,
    /// Malformed lines skipped, by [`LineErrorKind`] (index order of [`LineErrorKind::ALL`]).
    pub skipped_by_kind: [usize; 8],
    /// The first [`MAX_KEPT_LINE_ERRORS`] skipped lines.
    pub first_errors: Vec<LineError>,
}

impl ParseStats {
    /// Total malformed lines skipped.
    pub fn skipped(&self) -> usize {
        self.skipped_by_kind.iter().sum()
    }

    fn record_error(&mut self, line: usize, kind: LineErrorKind) {
        self.skipped_by_kind[kind.index()] += 1;
        if self.first_errors.len() < MAX_KEPT_LINE_ERRORS {
            self.first_errors.push(LineError { line, kind });
        }
    }
}

/// Decides, from the name alone, whether a sample (or a descriptor line) is wanted.
///
/// For `# HELP`/`# TYPE`/`# UNIT` lines the argument is the family name; for samples it is
/// the sample name (with `_bucket`, `_total`, ... suffixes).
pub trait NameFilter {
    /// Whether a sample (or, for descriptors, a family) named `name` is wanted.
    fn accepts(&self, name: &str) -> bool;

    /// Whether `# HELP`/`# TYPE`/`# UNIT` lines are wanted at all. A filter that reads only
    /// sample values says no, and descriptor lines then cost one byte compare and the
    /// newline search.
    fn wants_descriptors(&self) -> bool {
        true
    }

    /// Whether every name this filter accepts is a valid metric name (it holds a fixed set
    /// of valid names), so the parser need not check accepted names again.
    fn accepts_only_valid_names(&self) -> bool {
        false
    }
}

/// Accepts everything: a full parse.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl NameFilter for AcceptAll {
    #[inline]
    fn accepts(&self, _name: &str) -> bool {
        true
    }
}

impl<F: Fn(&str) -> bool> NameFilter for F {
    #[inline]
    fn accepts(&self, name: &str) -> bool {
        self(name)
    }
}

/// Streaming parser over one body. Iterate it for [`Record`]s; read [`Parser::stats`] after.
#[derive(Debug)]
pub struct Parser<'a, F = AcceptAll> {
    text: &'a str,
    pos: usize,
    line_no: usize,
    format: Format,
    filter: F,
    stats: ParseStats,
    done: bool,
}

impl<'a> Parser<'a, AcceptAll> {
    /// A parser that returns every record.
    pub fn new(text: &'a str, format: Format) -> Self {
        Parser::with_filter(text, format, AcceptAll)
    }
}

impl<'a, F: NameFilter> Parser<'a, F> {
    /// A parser that returns only the samples and descriptors whose name `filter` accepts.
    pub fn with_filter(text: &'a str, format: Format, filter: F) -> Self {
        Parser {
            text,
            pos: 0,
            line_no: 0,
            format,
            filter,
            stats: ParseStats::default(),
            done: false,
        }
    }

    /// Counts so far (complete once the iterator returned `None`).
    pub fn stats(&self) -> &ParseStats {
        &self.stats
    }

    /// Consumes the parser and returns its counts.
    pub fn into_stats(self) -> ParseStats {
        self.stats
    }

    fn next_line(&mut self) -> Option<&'a str> {
        if self.pos >= self.text.len() {
            return None;
        }
        let rest = &self.text[self.pos..];
        let (line, advance) = match memchr::memchr(b'\n', rest.as_bytes()) {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        self.pos += advance;
        self.line_no += 1;
        self.stats.lines += 1;
        Some(line.strip_suffix('\r').unwrap_or(line))
    }

    fn parse_descriptor(&mut self, line: &'a str) -> Option<Record<'a>> {
        // `line` starts with '#'.
        let body = line[1..].trim_start_matches([' ', '\t']);
        let (keyword, rest) = split_token(body);
        match keyword {
            "HELP" | "TYPE" | "UNIT" => {}
            "EOF" if rest.trim().is_empty() => {
                self.done = true;
                return Some(Record::Eof);
            }
            // Any other comment is allowed and carries nothing.
            _ => return None,
        }
        let (family, rest) = split_token(rest);
        if family.is_empty() || !is_metric_name(family.as_bytes()) {
            self.stats
                .record_error(self.line_no, LineErrorKind::InvalidDescriptor);
            return None;
        }
        if !self.filter.accepts(family) {
            return None;
        }
        match keyword {
            "HELP" => {
                let text = if rest.contains('\\') {
                    Cow::Owned(unescape(rest))
                } else {
                    Cow::Borrowed(rest)
                };
                Some(Record::Help { family, text })
            }
            "TYPE" => match MetricType::from_token(rest.trim()) {
                Some(metric_type) => Some(Record::Type {
                    family,
                    metric_type,
                }),
                None => {
                    self.stats
                        .record_error(self.line_no, LineErrorKind::InvalidDescriptor);
                    None
                }
            },
            _ => Some(Record::Unit {
                family,
                unit: rest.trim(),
            }),
        }
    }

    fn parse_sample(&mut self, line: &'a str) -> Option<Record<'a>> {
        let bytes = line.as_bytes();
        // The name ends at the first `{` or blank; one SIMD search, then the name is checked
        // only when it matters: a filter that holds only valid names vouches for the names it
        // accepts, and a rejected name is checked just to count it if it is malformed. (A
        // byte-at-a-time scan to the first non-name character was the single costliest
        // branch of the filtered parse: one misprediction per line.)
        let name_end = memchr::memchr3(b'{', b' ', b'\t', bytes).unwrap_or(bytes.len());
        let next = bytes.get(name_end).copied();
        let name = &line[..name_end];
        let accepted = self.filter.accepts(name);
        let vouched = accepted && self.filter.accepts_only_valid_names();
        if !vouched && !is_metric_name(name.as_bytes()) {
            self.stats
                .record_error(self.line_no, LineErrorKind::InvalidMetricName);
            return None;
        }
        if !accepted {
            self.stats.filtered_out += 1;
            return None;
        }
        let mut i = name_end;
        let mut raw_labels = "";
        let mut spans = LabelSpans::EMPTY;
        if next == Some(b'{') {
            match scan_label_set(bytes, i + 1, &mut spans) {
                Ok(close) => {
                    raw_labels = &line[i + 1..close];
                    i = close + 1;
                }
                Err(kind) => {
                    self.stats.record_error(self.line_no, kind);
                    return None;
                }
            }
        }
        let rest = &line[i..];
        let (value_text, rest) = split_token(rest);
        let Some(value) = parse_float(value_text) else {
            self.stats
                .record_error(self.line_no, LineErrorKind::InvalidValue);
            return None;
        };
        let (ts_text, rest) = split_token(rest);
        let mut timestamp_ms = None;
        if !ts_text.is_empty() && ts_text != "#" {
            match parse_timestamp(ts_text, self.format) {
                Some(ts) => timestamp_ms = Some(ts),
                None => {
                    self.stats
                        .record_error(self.line_no, LineErrorKind::InvalidTimestamp);
                    return None;
                }
            }
            let rest = rest.trim_start_matches([' ', '\t']);
            if !rest.is_empty() && !rest.starts_with('#') {
                self.stats
                    .record_error(self.line_no, LineErrorKind::TrailingText);
                return None;
            }
        }
        // An exemplar (`# {trace_id="…"} 1.0`) may follow; it is not part of the sample.
        self.stats.samples += 1;
        Some(Record::Sample(Sample {
            name,
            raw_labels,
            spans,
            value,
            timestamp_ms,
        }))
    }
}

impl<'a, F: NameFilter> Iterator for Parser<'a, F> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        while !self.done {
            let line = self.next_line()?;
            let trimmed = line.trim_start_matches([' ', '\t']);
            let record = match trimmed.as_bytes().first() {
                None => continue,
                Some(b'#') if self.filter.wants_descriptors() || is_eof(trimmed) => {
                    self.parse_descriptor(trimmed)
                }
                Some(b'#') => continue,
                Some(_) => self.parse_sample(trimmed),
            };
            if record.is_some() {
                return record;
            }
        }
        None
    }
}

/// Makes a byte body that may not be valid UTF-8 parseable: lines that are not valid UTF-8
/// are blanked and counted; it parses nothing itself. Returns the text to hand to
/// [`Parser`] and the number of blanked lines (for [`count_invalid_utf8`]).
///
/// Bodies from the network are bytes; rather than reject a whole scrape for one bad byte we
/// blank out the offending lines (keeping line numbers) and count them.
pub fn sanitize_utf8(body: &[u8]) -> (Cow<'_, str>, usize) {
    match std::str::from_utf8(body) {
        Ok(text) => (Cow::Borrowed(text), 0),
        Err(_) => {
            let mut out = String::with_capacity(body.len());
            let mut bad_lines = 0;
            for line in body.split_inclusive(|b| *b == b'\n') {
                match std::str::from_utf8(line) {
                    Ok(text) => out.push_str(text),
                    Err(_) => {
                        bad_lines += 1;
                        if line.ends_with(b"\n") {
                            out.push('\n');
                        }
                    }
                }
            }
            (Cow::Owned(out), bad_lines)
        }
    }
}

/// Adds `count` lines of [`LineErrorKind::InvalidUtf8`] to `stats` (see [`sanitize_utf8`]).
pub fn count_invalid_utf8(stats: &mut ParseStats, count: usize) {
    stats.skipped_by_kind[LineErrorKind::InvalidUtf8.index()] += count;
}

/// `# EOF` (with optional trailing blanks) ends an OpenMetrics body even for filters that
/// skip descriptors.
#[inline]
fn is_eof(line: &str) -> bool {
    line.len() >= 5 && line.as_bytes()[1] == b' ' && line[2..].trim_end() == "EOF"
}

/// Byte classes for label names, one table lookup per byte instead of several range
/// compares (label names are scanned byte by byte, values follow them).
const NAME_START: u8 = 1;
const LABEL_START: u8 = 4;
const LABEL_CHAR: u8 = 8;

const BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let alpha = c.is_ascii_alphabetic() || c == b'_';
        let digit = c.is_ascii_digit();
        let mut class = 0;
        if alpha || c == b':' {
            class |= NAME_START;
        }
        if digit {
            class |= LABEL_CHAR;
        }
        if alpha {
            class |= LABEL_START | LABEL_CHAR;
        }
        table[b] = class;
        b += 1;
    }
    table
};

#[inline]
fn is_name_start(b: u8) -> bool {
    BYTE_CLASS[b as usize] & NAME_START != 0
}

/// `[a-zA-Z0-9_:]` by arithmetic rather than a table, so that [`is_metric_name`]'s fold
/// compiles to vector compares.
#[inline]
fn is_name_char(b: u8) -> bool {
    let lower = b | 0x20;
    (lower.wrapping_sub(b'a') < 26) | (b.wrapping_sub(b'0') < 10) | (b == b'_') | (b == b':')
}

/// Whether `bytes` is a whole metric name, `[a-zA-Z_:][a-zA-Z0-9_:]*`. No early exit: names
/// are short and almost always valid, and a branch-free fold runs on vector units.
#[inline]
pub(crate) fn is_metric_name(bytes: &[u8]) -> bool {
    match bytes.first() {
        Some(&first) if is_name_start(first) => {
            bytes.iter().fold(true, |valid, &b| valid & is_name_char(b))
        }
        _ => false,
    }
}

/// End of the label name starting at `start`, if there is one (label names have no `:`).
#[inline]
fn scan_label_name(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start) {
        Some(&b) if BYTE_CLASS[b as usize] & LABEL_START != 0 => {}
        _ => return None,
    }
    let mut i = start + 1;
    while i < bytes.len() && BYTE_CLASS[bytes[i] as usize] & LABEL_CHAR != 0 {
        i += 1;
    }
    Some(i)
}

#[inline]
fn skip_blanks(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
        i += 1;
    }
    i
}

/// Scans a quoted value starting just after its opening quote. Returns the index of the
/// closing quote and whether the value holds escapes.
///
/// A plain byte loop: label values are mostly a few bytes long (`"0"`, a model name), where
/// `memchr2`'s set-up costs more than the scan itself.
#[inline]
fn scan_quoted(bytes: &[u8], start: usize) -> Result<(usize, bool), LineErrorKind> {
    let mut i = start;
    let mut escaped = false;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Ok((i, escaped)),
            b'\\' => match bytes.get(i + 1) {
                Some(b'\\' | b'"' | b'n') => {
                    escaped = true;
                    i += 2;
                }
                _ => return Err(LineErrorKind::InvalidLabelValue),
            },
            _ => i += 1,
        }
    }
    Err(LineErrorKind::InvalidLabelValue)
}

/// Validates `name="value", ...}` starting just after `{`; returns the index of the `}` and
/// records where each label lies (relative to `start`) in `spans`.
fn scan_label_set(
    bytes: &[u8],
    start: usize,
    spans: &mut LabelSpans,
) -> Result<usize, LineErrorKind> {
    let mut i = skip_blanks(bytes, start);
    loop {
        match bytes.get(i) {
            Some(b'}') => return Ok(i),
            None => return Err(LineErrorKind::InvalidLabelSet),
            _ => {}
        }
        let name_start = i;
        let name_end = scan_label_name(bytes, i).ok_or(LineErrorKind::InvalidLabelSet)?;
        i = skip_blanks(bytes, name_end);
        if bytes.get(i) != Some(&b'=') {
            return Err(LineErrorKind::InvalidLabelSet);
        }
        i = skip_blanks(bytes, i + 1);
        if bytes.get(i) != Some(&b'"') {
            return Err(LineErrorKind::InvalidLabelSet);
        }
        let (close, escaped) = scan_quoted(bytes, i + 1)?;
        spans.push(
            (name_start - start, name_end - start),
            (i + 1 - start, close - start),
            escaped,
        );
        i = skip_blanks(bytes, close + 1);
        match bytes.get(i) {
            Some(b',') => i = skip_blanks(bytes, i + 1),
            Some(b'}') => return Ok(i),
            _ => return Err(LineErrorKind::InvalidLabelSet),
        }
    }
}

/// Splits off the next blank-separated token.
#[inline]
fn split_token(text: &str) -> (&str, &str) {
    let text = text.trim_start_matches([' ', '\t']);
    match text
        .as_bytes()
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
    {
        Some(end) => (&text[..end], &text[end + 1..]),
        None => (text, ""),
    }
}

/// Parses a float as the text format writes it (sample values, `le` and `quantile` label
/// values): what Go's `strconv.ParseFloat` accepts, `+Inf`, `-Inf` and `NaN` in any case.
#[inline]
pub fn parse_float(text: &str) -> Option<f64> {
    if let Some(value) = parse_short_decimal(text.as_bytes()) {
        return Some(value);
    }
    if text.is_empty() {
        return None;
    }
    // Rust's float parser also accepts "infinity", "inf" and "nan" case-insensitively, which
    // is the same set Go's strconv.ParseFloat takes.
    text.parse::<f64>().ok()
}

/// Exact powers of ten: every one up to 10^22 is a double without rounding.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Clinger's fast path for the values exporters actually print (`0.0`, `42`, `1234.5`):
/// at most 15 digits, an optional `-` and `.`, no exponent. The digits as an integer are
/// below 2^53 and the power of ten is exact, so one IEEE division gives the correctly
/// rounded result — the same double `str::parse` returns, at a fraction of its cost (the
/// general parser was a tenth of the filtered parse). Anything else returns `None` and goes
/// to the general parser.
#[inline]
fn parse_short_decimal(bytes: &[u8]) -> Option<f64> {
    let (negative, digits) = match bytes.first()? {
        b'-' => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    if digits.len() > 16 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut count = 0;
    let mut dot_at = None;
    for (i, &b) in digits.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                count += 1;
            }
            b'.' if dot_at.is_none() => dot_at = Some(i),
            _ => return None,
        }
    }
    if count == 0 || count > 15 {
        return None;
    }
    let fraction_digits = dot_at.map_or(0, |at| digits.len() - at - 1);
    let value = mantissa as f64 / POW10[fraction_digits];
    Some(if negative { -value } else { value })
}

fn parse_timestamp(text: &str, format: Format) -> Option<i64> {
    match format {
        Format::Prometheus => text.parse::<i64>().ok(),
        Format::OpenMetrics => {
            let seconds = text.parse::<f64>().ok()?;
            seconds
                .is_finite()
                .then(|| (seconds * 1000.0).round() as i64)
        }
    }
}

/// Undoes `\\`, `\"` and `\n`. Any other backslash sequence is kept as written (HELP text
/// in 0.0.4 only escapes `\\` and `\n`; label values were validated before).
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Convenience: every sample of a body, with the counts. Allocates the sample list; the
/// adapter's hot path iterates [`Parser`] directly instead.
pub fn parse_all(text: &str, format: Format) -> (Vec<Sample<'_>>, ParseStats) {
    let mut parser = Parser::new(text, format);
    let samples = parser
        .by_ref()
        .filter_map(|record| match record {
            Record::Sample(sample) => Some(sample),
            _ => None,
        })
        .collect();
    (samples, parser.into_stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(text: &str) -> (Vec<Sample<'_>>, ParseStats) {
        parse_all(text, Format::sniff(text))
    }

    #[test]
    fn colon_names_and_sorted_labels_with_le_in_the_middle() {
        let body = "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.5\",model_name=\"Qwen/Qwen3-0.6B\"} 2.0\n";
        let (s, stats) = samples(body);
        assert_eq!(stats.skipped(), 0);
        assert_eq!(s[0].name, "vllm:time_to_first_token_seconds_bucket");
        assert_eq!(s[0].label("le").as_deref(), Some("0.5"));
        assert_eq!(s[0].label("model_name").as_deref(), Some("Qwen/Qwen3-0.6B"));
        assert_eq!(s[0].value, 2.0);
    }

    #[test]
    fn escaped_and_structural_characters_inside_label_values() {
        let body = r#"m{a="x\"y",b="back\\slash",c="line\nbreak",d="a,b=c}d",e=""} 1"#;
        let (s, stats) = samples(body);
        assert_eq!(stats.skipped(), 0, "{:?}", stats.first_errors);
        let labels: Vec<_> = s[0].labels().collect();
        assert_eq!(labels.len(), 5);
        assert_eq!(labels[0].value, "x\"y");
        assert_eq!(labels[1].value, "back\\slash");
        assert_eq!(labels[2].value, "line\nbreak");
        assert_eq!(labels[3].value, "a,b=c}d");
        assert!(matches!(labels[3].value, Cow::Borrowed(_)));
        assert_eq!(labels[4].value, "");
    }

    #[test]
    fn special_floats_timestamps_and_trailing_comma() {
        let body = "a +Inf\nb -Inf\nc NaN\nd{x=\"1\",} 3 1700000000123\ne 1e+09\n";
        let (s, stats) = samples(body);
        assert_eq!(stats.skipped(), 0, "{:?}", stats.first_errors);
        assert_eq!(s[0].value, f64::INFINITY);
        assert_eq!(s[1].value, f64::NEG_INFINITY);
        assert!(s[2].value.is_nan());
        assert_eq!(s[3].timestamp_ms, Some(1_700_000_000_123));
        assert_eq!(s[3].label("x").as_deref(), Some("1"));
        assert_eq!(s[4].value, 1e9);
    }

    #[test]
    fn openmetrics_timestamps_are_seconds_and_exemplars_are_ignored() {
        let body = "# TYPE foo counter\n# UNIT foo seconds\nfoo_total 17 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67\n# EOF\nfoo_total 99\n";
        let mut parser = Parser::new(body, Format::OpenMetrics);
        let records: Vec<_> = parser.by_ref().collect();
        assert_eq!(
            records[0],
            Record::Type {
                family: "foo",
                metric_type: MetricType::Counter
            }
        );
        assert_eq!(
            records[1],
            Record::Unit {
                family: "foo",
                unit: "seconds"
            }
        );
        match &records[2] {
            Record::Sample(s) => {
                assert_eq!(s.value, 17.0);
                assert_eq!(s.timestamp_ms, Some(1_520_879_607_789));
            }
            other => panic!("expected a sample, got {other:?}"),
        }
        assert_eq!(records[3], Record::Eof);
        assert_eq!(records.len(), 4, "nothing after # EOF");
        assert_eq!(parser.stats().skipped(), 0);
    }

    #[test]
    fn help_text_is_unescaped_and_other_comments_ignored() {
        let body = "# a free comment\n# HELP x line one\\nline two \\\\ done\n";
        let records: Vec<_> = Parser::new(body, Format::Prometheus).collect();
        assert_eq!(
            records,
            vec![Record::Help {
                family: "x",
                text: Cow::Owned("line one\nline two \\ done".into())
            }]
        );
    }

    #[test]
    fn crlf_and_missing_final_newline() {
        let body = "a 1\r\nb{l=\"v\"} 2\r\nc 3";
        let (s, stats) = samples(body);
        assert_eq!(stats.skipped(), 0);
        assert_eq!(
            s.iter().map(|s| s.value).collect::<Vec<_>>(),
            vec![1.0, 2.0, 3.0]
        );
        assert_eq!(s[1].label("l").as_deref(), Some("v"));
    }

    #[test]
    fn malformed_lines_are_skipped_counted_and_do_not_stop_the_parse() {
        let body = concat!(
            "good_one 1\n",
            "9bad_name 1\n",
            "m{unterminated=\"x} 1\n",
            "m{noquote=x} 1\n",
            "m{a=\"bad\\escape\"} 1\n",
            "m{a=\"1\"} notafloat\n",
            "m 1 12.5\n",
            "m 1 2 extra\n",
            "# TYPE m nonsense\n",
            "m-dash 1\n",
            "good_two{a=\"2\"} 2\n",
        );
        let (s, stats) = samples(body);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].name, "good_two");
        assert_eq!(stats.skipped(), 9, "{:?}", stats.first_errors);
        assert_eq!(stats.first_errors.len(), MAX_KEPT_LINE_ERRORS);
        assert_eq!(
            stats.first_errors[0],
            LineError {
                line: 2,
                kind: LineErrorKind::InvalidMetricName
            }
        );
        assert_eq!(stats.first_errors[1].kind, LineErrorKind::InvalidLabelValue);
        assert_eq!(stats.first_errors[2].kind, LineErrorKind::InvalidLabelSet);
        assert_eq!(stats.first_errors[4].kind, LineErrorKind::InvalidValue);
        assert_eq!(stats.first_errors[5].kind, LineErrorKind::InvalidTimestamp);
        assert_eq!(stats.first_errors[6].kind, LineErrorKind::TrailingText);
        assert_eq!(stats.first_errors[7].kind, LineErrorKind::InvalidDescriptor);
    }

    #[test]
    fn name_filter_skips_labels_of_unwanted_lines() {
        // The unwanted line has a broken label set: it must be filtered, not counted as bad.
        let body = "keep{a=\"1\"} 1\ndrop{broken 2\n# HELP drop x\n# TYPE keep gauge\n";
        let mut parser = Parser::with_filter(body, Format::Prometheus, |name: &str| {
            name.starts_with("keep")
        });
        let records: Vec<_> = parser.by_ref().collect();
        assert_eq!(records.len(), 2);
        assert_eq!(parser.stats().filtered_out, 1);
        assert_eq!(parser.stats().skipped(), 0);
    }

    #[test]
    fn recorded_label_spans_read_the_same_as_a_walk() {
        let many: Vec<String> = (0..14).map(|i| format!("l{i}=\"v{i}\"")).collect();
        let twelve = many[..12].join(",");
        let fourteen = many.join(",");
        let long_value = "x".repeat(70_000);
        let cases = [
            (
                r#"m{a="1",b="x\"y\\z\nw", c = "}" ,d="a,b=c",} 1"#.to_owned(),
                4,
                true,
            ),
            (format!("m{{{twelve}}} 1"), 12, true),
            (format!("m{{{fourteen}}} 1"), 14, false),
            (format!("m{{a=\"{long_value}\",b=\"2\"}} 1"), 2, false),
            ("m{} 1".to_owned(), 0, true),
            ("m 1".to_owned(), 0, true),
        ];
        for (line, count, recorded) in cases {
            let (samples, stats) = samples(&line);
            assert_eq!(stats.skipped(), 0, "{line:.80}");
            let sample = &samples[0];
            assert_eq!(
                sample.spans.len != LabelSpans::UNRECORDED,
                recorded,
                "{line:.80}"
            );
            let by_spans: Vec<Label<'_>> = sample.labels().collect();
            let walked: Vec<Label<'_>> = LabelIter {
                raw: sample.raw_labels,
                rest: sample.raw_labels,
                spans: LabelSpans {
                    len: LabelSpans::UNRECORDED,
                    ..LabelSpans::EMPTY
                },
                next: 0,
            }
            .collect();
            assert_eq!(by_spans.len(), count, "{line:.80}");
            assert_eq!(by_spans, walked, "{line:.80}");
        }
        let (samples, _) = samples(r#"m{a="1",b="x\"y\\z\nw", c = "}"} 1"#);
        let labels: Vec<(&str, String)> = samples[0]
            .labels()
            .map(|l| (l.name, l.value.into_owned()))
            .collect();
        let expected = [("a", "1"), ("b", "x\"y\\z\nw"), ("c", "}")];
        assert_eq!(
            labels,
            expected.map(|(n, v)| (n, v.to_owned())).to_vec(),
            "escapes undone"
        );
    }

    #[test]
    fn malformed_names_are_counted_whatever_the_filter_says() {
        struct ValidNamesOnly;
        impl NameFilter for ValidNamesOnly {
            fn accepts(&self, name: &str) -> bool {
                name == "keep"
            }
            fn accepts_only_valid_names(&self) -> bool {
                true
            }
        }
        let body = "keep 1\nbad-name{a=\"1\"} 2\n1starts_with_digit 3\n{a=\"1\"} 4\nother 5\n";
        let mut vouched = Parser::with_filter(body, Format::Prometheus, ValidNamesOnly);
        assert_eq!(vouched.by_ref().count(), 1);
        let mut closure = Parser::with_filter(body, Format::Prometheus, |n: &str| n == "keep");
        assert_eq!(closure.by_ref().count(), 1);
        let mut all = Parser::new(body, Format::Prometheus);
        assert_eq!(all.by_ref().count(), 2);
        for stats in [vouched.stats(), closure.stats(), all.stats()] {
            let bad_names = stats.skipped_by_kind[LineErrorKind::InvalidMetricName.index()];
            assert_eq!(bad_names, 3, "{stats:?}");
        }
        assert_eq!(vouched.stats().filtered_out, 1);
        assert_eq!(all.stats().filtered_out, 0);
    }

    #[test]
    fn invalid_utf8_lines_are_blanked_and_counted() {
        let mut body = b"a 1\n".to_vec();
        body.extend_from_slice(b"b{x=\"\xff\"} 2\n");
        body.extend_from_slice(b"c 3\n");
        let (text, bad) = sanitize_utf8(&body);
        assert_eq!(bad, 1);
        let (s, _) = samples(&text);
        assert_eq!(s.iter().map(|s| s.name).collect::<Vec<_>>(), vec!["a", "c"]);
    }

    #[test]
    fn short_decimals_parse_to_the_same_double_as_the_general_parser() {
        let cases = [
            "0",
            "-0",
            "0.0",
            "1.",
            ".5",
            "42",
            "-42.125",
            "0.1",
            "0.3",
            "1234.5678",
            "999999999999999",
            "99999999999999.9",
            "0.000000000000001",
            "3.0000000000000004",
            "123456789012345678",
            "1e3",
            "+1",
            "-",
            ".",
            "1.2.3",
            "NaN",
            "+Inf",
            "1_0",
            "",
        ];
        for text in cases {
            let general = text.parse::<f64>().ok();
            let value = parse_float(text);
            assert_eq!(
                value.map(f64::to_bits),
                general.map(f64::to_bits),
                "{text:?}: {value:?} vs {general:?}"
            );
        }
        // Exhaustive over a dense set of short decimals, both signs.
        for mantissa in (0u64..2_000_000).step_by(7).chain([999_999_999_999_999]) {
            for fraction_digits in [0usize, 1, 2, 3, 6, 9, 14] {
                let digits = format!("{mantissa:0>width$}", width = fraction_digits + 1);
                let (int, frac) = digits.split_at(digits.len() - fraction_digits);
                for sign in ["", "-"] {
                    let text = if fraction_digits == 0 {
                        format!("{sign}{int}")
                    } else {
                        format!("{sign}{int}.{frac}")
                    };
                    let general: f64 = text.parse().unwrap();
                    assert_eq!(
                        parse_float(&text).map(f64::to_bits),
                        Some(general.to_bits()),
                        "{text}"
                    );
                }
            }
        }
    }

    #[test]
    fn format_detection() {
        assert_eq!(
            Format::from_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type("text/plain; version=0.0.4"),
            Format::Prometheus
        );
        assert_eq!(Format::sniff("a 1\n# EOF\n"), Format::OpenMetrics);
    }
}
