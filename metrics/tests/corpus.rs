//! The bad-input corpus (issue 8 item 9, scrape-body half): one file per case in
//! `tests/corpus/`, each with its expected outcome in `tests/corpus/expectations.json` —
//! which lines the parser skipped (by [`LineErrorKind`]), what the snapshot builder dropped
//! (by [`DropKind`]), and which values result. Every kind not listed for a case must be 0.
//!
//! Bodies go the adapter's way: bytes → [`sanitize_utf8`] (invalid lines blanked and
//! counted) → [`EngineSnapshot::from_exposition`] with the engine profiles' filter and the
//! default [`inferscale_metrics::snapshot::SnapshotLimits`]. Expectations were written by
//! hand from the format's rules and each case's `why`, not from this code's output.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first broken assumption"
)]

use inferscale_metrics::parser::{count_invalid_utf8, sanitize_utf8, Format, LineErrorKind};
use inferscale_metrics::profile::{CounterSignal, GaugeSignal, HistogramSignal, RouteIndex};
use inferscale_metrics::snapshot::{DropKind, EngineSnapshot, ModelSnapshot};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;

const EXPECTATIONS: &str = "expectations.json";

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn gauge(name: &str) -> Option<GaugeSignal> {
    Some(match name {
        "queue_depth" => GaugeSignal::QueueDepth,
        "running" => GaugeSignal::Running,
        "kv_cache_usage" => GaugeSignal::KvCacheUsage,
        _ => return None,
    })
}

fn counter(name: &str) -> Option<CounterSignal> {
    Some(match name {
        "prompt_tokens" => CounterSignal::PromptTokens,
        "generation_tokens" => CounterSignal::GenerationTokens,
        "requests_finished" => CounterSignal::RequestsFinished,
        "preemptions" => CounterSignal::Preemptions,
        _ => return None,
    })
}

fn histogram(name: &str) -> Option<HistogramSignal> {
    Some(match name {
        "ttft" => HistogramSignal::TimeToFirstToken,
        "itl" => HistogramSignal::InterTokenLatency,
        "e2e" => HistogramSignal::EndToEndLatency,
        "queue_time" => HistogramSignal::QueueTime,
        _ => return None,
    })
}

fn close(actual: Option<f64>, expected: &Value) -> bool {
    match (actual, expected.as_f64()) {
        (None, None) => expected.is_null(),
        (Some(a), Some(e)) => (a - e).abs() <= 1e-9 * e.abs().max(1.0),
        _ => false,
    }
}

/// Checks one model's expected values; returns what differs.
fn check_model(model: &ModelSnapshot, expected: &Map<String, Value>) -> Vec<String> {
    let mut wrong = Vec::new();
    for (key, want) in expected {
        let got = if let Some(g) = gauge(key) {
            (!close(model.gauge(g), want)).then(|| format!("{:?}", model.gauge(g)))
        } else if let Some(c) = counter(key) {
            (!close(model.counter(c), want)).then(|| format!("{:?}", model.counter(c)))
        } else if let Some(h) = histogram(key) {
            let hist = model.histogram(h);
            let incomplete = model.histogram_incomplete(h);
            let ok = match want {
                Value::Null => hist.is_none() && !incomplete,
                Value::String(s) if s == "incomplete" => hist.is_none() && incomplete,
                Value::Object(fields) => hist.is_some_and(|hist| {
                    fields.iter().all(|(field, value)| match field.as_str() {
                        "count" => close(Some(hist.count()), value),
                        "p50" => close(hist.quantile(0.5), value),
                        other => panic!("unknown histogram field {other}"),
                    })
                }),
                other => panic!("bad histogram expectation {other}"),
            };
            (!ok).then(|| format!("{hist:?} incomplete={incomplete}"))
        } else {
            panic!("unknown value key {key}");
        };
        if let Some(got) = got {
            wrong.push(format!("{key}: expected {want}, got {got}"));
        }
    }
    wrong
}

/// Checks one case; returns what differs.
fn check_case(name: &str, expected: &Map<String, Value>) -> Vec<String> {
    let bytes = std::fs::read(corpus_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let format = match expected.get("format").and_then(Value::as_str) {
        None | Some("prometheus") => Format::Prometheus,
        Some("openmetrics") => Format::OpenMetrics,
        Some(other) => panic!("{name}: unknown format {other}"),
    };
    let (text, bad_utf8_lines) = sanitize_utf8(&bytes);
    let mut snapshot = EngineSnapshot::from_exposition(&text, format, 0.0, &RouteIndex::engines());
    count_invalid_utf8(&mut snapshot.parse_stats, bad_utf8_lines);
    let mut wrong = Vec::new();

    let counts = |key: &str| {
        expected
            .get(key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let skipped = counts("skipped");
    for kind in LineErrorKind::ALL {
        let want = skipped
            .get(kind.as_str())
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        let got = snapshot.parse_stats.skipped_by_kind[kind as usize];
        if got != want {
            wrong.push(format!(
                "skipped {}: expected {want}, got {got}",
                kind.as_str()
            ));
        }
    }
    for key in skipped.keys() {
        assert!(
            LineErrorKind::ALL.iter().any(|k| k.as_str() == key),
            "{name}: unknown skipped kind {key}"
        );
    }
    let dropped = counts("dropped");
    for kind in DropKind::ALL {
        let want = dropped
            .get(kind.as_str())
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        let got = snapshot.dropped.get(kind);
        if got != want {
            wrong.push(format!(
                "dropped {}: expected {want}, got {got}",
                kind.as_str()
            ));
        }
    }
    for key in dropped.keys() {
        assert!(
            DropKind::ALL.iter().any(|k| k.as_str() == key),
            "{name}: unknown dropped kind {key}"
        );
    }

    if let Some(models) = expected.get("models").and_then(Value::as_array) {
        let want: BTreeSet<&str> = models.iter().filter_map(Value::as_str).collect();
        let got: BTreeSet<&str> = snapshot.models.keys().map(String::as_str).collect();
        if want != got {
            wrong.push(format!("models: expected {want:?}, got {got:?}"));
        }
    }
    if let Some(count) = expected.get("model_count").and_then(Value::as_u64) {
        if snapshot.models.len() as u64 != count {
            wrong.push(format!(
                "model count: expected {count}, got {}",
                snapshot.models.len()
            ));
        }
    }
    if let Some(engine) = expected.get("engine") {
        let got = snapshot.engine.map(|e| e.as_str());
        if got != engine.as_str() {
            wrong.push(format!("engine: expected {engine}, got {got:?}"));
        }
    }
    for (key, got) in [
        ("kv_capacity_tokens", snapshot.kv_capacity_tokens),
        ("process_start", snapshot.process_start),
    ] {
        if let Some(want) = expected.get(key) {
            if !close(got, want) {
                wrong.push(format!("{key}: expected {want}, got {got:?}"));
            }
        }
    }
    if let Some(values) = expected.get("values").and_then(Value::as_object) {
        for (model_name, fields) in values {
            let fields = fields.as_object().expect("values per model are objects");
            match snapshot.models.get(model_name) {
                Some(model) => wrong.extend(
                    check_model(model, fields)
                        .into_iter()
                        .map(|w| format!("model {model_name:?} {w}")),
                ),
                None => wrong.push(format!("model {model_name:?} absent")),
            }
        }
    }
    wrong
}

#[test]
fn every_corpus_body_has_its_expected_outcome() {
    let dir = corpus_dir();
    let expectations: Map<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(dir.join(EXPECTATIONS)).expect("expectations file"),
    )
    .expect("expectations are a JSON object");
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("corpus folder")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name != EXPECTATIONS)
        .collect();
    let described: BTreeSet<String> = expectations.keys().cloned().collect();
    assert_eq!(
        files, described,
        "every body needs an expectation and every expectation a body"
    );
    assert!(files.len() >= 30, "the corpus holds {} cases", files.len());

    let mut failures = Vec::new();
    for (name, expected) in &expectations {
        let expected = expected.as_object().expect("each case is an object");
        assert!(
            expected
                .get("why")
                .and_then(Value::as_str)
                .is_some_and(|w| !w.is_empty()),
            "{name}: say why"
        );
        for wrong in check_case(name, expected) {
            failures.push(format!("{name}: {wrong}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
