//! Fuzzing beyond the parser (issue 8 item 8), on stable Rust: seeded random inputs and
//! mutations of a committed corpus (`tests/corpus/fuzz/`), each checked against a property
//! that does not come from the code under test.
//!
//! - **label selectors** (`Selector::parse`): never panics; what parses stays within the
//!   size caps, matches any label map without panicking, and renders back to text that
//!   parses to the same selector (round trip);
//! - **request path and query decoding** (the whole router, auth layer included): every
//!   answer is 2xx with JSON or a Kubernetes `Status` whose `code` is the HTTP status —
//!   never a 5xx, never plain text;
//! - **quantity formatting** (`format_quantity`): every finite value formats to a string of
//!   the Kubernetes decimal-SI grammar the HPA parses, and that string, read back with an
//!   independent decimal reader, is the value within half a unit of its suffix (0 only for
//!   |v| < 0.5 n); non-finite values have no quantity.
//!
//! CI runs a smoke (the default counts, seconds). The long run multiplies the counts:
//! `INFERSCALE_FUZZ_SCALE=100 cargo test --release -p inferscale-adapter --test fuzz --
//! --nocapture` (22.2 M executions; README "Fuzzing"). `INFERSCALE_FUZZ_SEED` picks
//! another seed (the seed is printed, so any failure can be replayed).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first broken assumption"
)]

use axum::body::Body;
use axum::http::Request;
use inferscale_adapter::api::router;
use inferscale_adapter::auth::AuthState;
use inferscale_adapter::quantity::format_quantity;
use inferscale_adapter::selector::{Requirement, Selector, MAX_REQUIREMENTS, MAX_SET_VALUES};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use tower::ServiceExt;

mod support;
use support::state;

const SELECTOR_EXECUTIONS: u64 = 20_000;
const QUANTITY_EXECUTIONS: u64 = 200_000;
const REQUEST_EXECUTIONS: u64 = 2_000;

fn executions(base: u64) -> u64 {
    let scale: u64 = std::env::var("INFERSCALE_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    base * scale
}

fn rng(target: &str) -> StdRng {
    let seed: u64 = std::env::var("INFERSCALE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1_2024_0808);
    eprintln!("{target}: seed {seed} (INFERSCALE_FUZZ_SEED)");
    StdRng::seed_from_u64(seed ^ target.len() as u64)
}

fn corpus(file: &str) -> Vec<String> {
    let path = format!("{}/tests/corpus/fuzz/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.starts_with("# "))
        .map(str::to_owned)
        .collect()
}

/// A mutation of a corpus entry: characters inserted from `alphabet`, ranges deleted or
/// repeated, another entry spliced in.
fn mutate(rng: &mut StdRng, seeds: &[String], alphabet: &[&str]) -> String {
    let mut text: Vec<char> = seeds[rng.random_range(0..seeds.len())].chars().collect();
    for _ in 0..rng.random_range(0..6) {
        let at = rng.random_range(0..=text.len());
        match rng.random_range(0..5) {
            0 | 1 => {
                let piece = alphabet[rng.random_range(0..alphabet.len())];
                text.splice(at..at, piece.chars());
            }
            2 if !text.is_empty() => {
                let end = (at + rng.random_range(1..8)).min(text.len());
                text.drain(at.min(end)..end);
            }
            3 if !text.is_empty() => {
                let start = rng.random_range(0..text.len());
                let end = (start + rng.random_range(1..16)).min(text.len());
                let copy: Vec<char> = text[start..end].to_vec();
                for _ in 0..rng.random_range(1..4) {
                    text.splice(at..at, copy.iter().copied());
                }
            }
            _ => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let cut = rng.random_range(0..=other.chars().count());
                text.splice(at..at, other.chars().skip(cut));
            }
        }
    }
    text.into_iter().collect()
}

// --- label selectors ----------------------------------------------------------------------

const SELECTOR_ALPHABET: &[&str] = &[
    "=",
    "==",
    "!=",
    "!",
    ",",
    "(",
    ")",
    " ",
    "\t",
    "in",
    "notin",
    " in (",
    ")",
    "a",
    "Z",
    "0",
    "-",
    "_",
    ".",
    "/",
    "example.com/",
    "model_name",
    "app",
    "é",
    "\u{0}",
    "%",
    "+",
    "x,y",
    ",,",
    "((",
    "))",
];

/// A selector in its string form, as the Kubernetes grammar writes it.
fn render(selector: &Selector) -> String {
    selector
        .requirements
        .iter()
        .map(|r| match r {
            Requirement::Equals(k, v) => format!("{k}={v}"),
            Requirement::NotEquals(k, v) => format!("{k}!={v}"),
            Requirement::In(k, set) => format!("{k} in ({})", set.join(",")),
            Requirement::NotIn(k, set) => format!("{k} notin ({})", set.join(",")),
            Requirement::Exists(k) => k.clone(),
            Requirement::DoesNotExist(k) => format!("!{k}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn label_selectors_parse_within_bounds_and_round_trip() {
    let seeds = corpus("selectors.txt");
    let mut rng = rng("selector");
    let labels = [
        BTreeMap::new(),
        BTreeMap::from([("app".to_owned(), "vllm".to_owned())]),
        BTreeMap::from([
            ("model_name".to_owned(), "a".to_owned()),
            ("example.com/x".to_owned(), String::new()),
        ]),
    ];
    let n = executions(SELECTOR_EXECUTIONS);
    let (mut parsed, mut refused) = (0u64, 0u64);
    for i in 0..n {
        let text = if i < seeds.len() as u64 {
            seeds[i as usize].clone()
        } else {
            mutate(&mut rng, &seeds, SELECTOR_ALPHABET)
        };
        let Ok(selector) = Selector::parse(&text) else {
            refused += 1;
            continue;
        };
        parsed += 1;
        assert!(selector.requirements.len() <= MAX_REQUIREMENTS, "{text:?}");
        let values: usize = selector
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::In(_, s) | Requirement::NotIn(_, s) => s.len(),
                _ => 0,
            })
            .sum();
        assert!(values <= MAX_SET_VALUES, "{text:?}");
        for l in &labels {
            let _ = selector.matches(l);
        }
        let again = render(&selector);
        assert_eq!(
            Selector::parse(&again).as_ref(),
            Ok(&selector),
            "{text:?} parsed, rendered as {again:?}, did not parse back the same"
        );
    }
    eprintln!("selector: {n} executions, {parsed} parsed, {refused} refused, 0 crashes");
}

// --- quantities ---------------------------------------------------------------------------

/// Reads a decimal-SI quantity as this adapter writes it (`-?digits` and an optional `m`,
/// `u` or `n`): the digits (read as a correctly rounded f64, so huge integers too) and the
/// suffix's power of ten, kept apart.
fn read_quantity(text: &str) -> Option<(f64, i32)> {
    let (digits, exponent) = match text.as_bytes().last()? {
        b'm' => (&text[..text.len() - 1], -3),
        b'u' => (&text[..text.len() - 1], -6),
        b'n' => (&text[..text.len() - 1], -9),
        _ => (text, 0),
    };
    let unsigned = digits.strip_prefix('-').unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, exponent))
}

fn random_value(rng: &mut StdRng) -> f64 {
    match rng.random_range(0..6) {
        0 => f64::from_bits(rng.random()),
        1 => rng.random_range(-1e6..1e6),
        2 => rng.random_range(-1000i64..1000) as f64 / 1000.0,
        3 => 10f64.powi(rng.random_range(-15..20)) * rng.random_range(-10.0..10.0),
        4 => [
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            9.0e15,
            1e17,
        ][rng.random_range(0..8)],
        _ => rng.random_range(-2i64.pow(62)..2i64.pow(62)) as f64,
    }
}

#[test]
fn quantities_format_in_the_kubernetes_grammar_and_read_back_within_half_a_unit() {
    let mut rng = rng("quantity");
    let n = executions(QUANTITY_EXECUTIONS);
    for _ in 0..n {
        let value = random_value(&mut rng);
        let Some(text) = format_quantity(value) else {
            assert!(!value.is_finite(), "{value:e} has no quantity");
            continue;
        };
        assert!(value.is_finite(), "{value} formatted as {text}");
        let (digits, exponent) = read_quantity(&text)
            .unwrap_or_else(|| panic!("{value:e} formatted as {text:?}: not a quantity"));
        let read = digits * 10f64.powi(exponent);
        let unit = 10f64.powi(exponent);
        // Half a unit of the suffix, plus the float error of the reading itself.
        let tolerance = unit / 2.0 + value.abs() * 4.0 * f64::EPSILON;
        assert!(
            (read - value).abs() <= tolerance,
            "{value:e} formatted as {text:?}, which reads back as {read:e}"
        );
        if text == "0" {
            assert!(value.abs() < 0.5e-9, "{value:e} formatted as 0");
        }
    }
    eprintln!("quantity: {n} executions, 0 crashes");
}

// --- request paths and queries -------------------------------------------------------------

const REQUEST_ALPHABET: &[&str] = &[
    "%",
    "%2",
    "%2F",
    "%25",
    "%FF",
    "%C3%28",
    "%E2%82",
    "%00",
    "%2A",
    "*",
    "/",
    "//",
    "..",
    "?",
    "&",
    "=",
    "+",
    "labelSelector=",
    "metricLabelSelector=",
    "app%3Dvllm",
    "a",
    "Z",
    "0",
    "-",
    "_",
    ".",
    ";",
    ":",
    "@",
    "!",
    "$",
    "'",
    "(",
    ")",
    ",",
    "~",
    "namespaces/",
    "pods/",
    "deployments.apps/",
    "%20in%20(",
    "%21%3D",
];

/// Whether `text` can be a request target at all (hyper refuses anything else before a
/// route sees it; the HTTP layer's cases are in the request corpus).
fn valid_target(text: &str) -> bool {
    text.starts_with('/')
        && text.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | b'#'
                )
        })
}

#[tokio::test]
async fn request_paths_and_queries_answer_json_or_a_status_never_a_5xx() {
    let seeds = corpus("requests.txt");
    let mut rng = rng("request");
    let app = router(state(), AuthState::standalone());
    let n = executions(REQUEST_EXECUTIONS);
    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    let mut skipped = 0u64;
    for i in 0..n {
        let target = if i < seeds.len() as u64 {
            seeds[i as usize].clone()
        } else {
            mutate(&mut rng, &seeds, REQUEST_ALPHABET)
        };
        if !valid_target(&target) {
            skipped += 1;
            continue;
        }
        let Ok(request) = Request::builder().uri(&target).body(Body::empty()) else {
            skipped += 1;
            continue;
        };
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        *by_status.entry(status).or_default() += 1;
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        assert!(status < 500, "{target:?} answered {status}");
        let is_health = ["/healthz", "/livez", "/readyz", "/metrics"]
            .iter()
            .any(|p| target.split('?').next() == Some(p));
        if is_health {
            continue;
        }
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{target:?} answered {status} with a body that is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )
        });
        if status >= 400 {
            assert!(
                json["kind"] == "Status" && json["code"] == status,
                "{target:?} answered {status} without a Status: {json}"
            );
        }
    }
    eprintln!(
        "request: {n} executions ({skipped} not a request target), answers by status \
         {by_status:?}, 0 crashes"
    );
}
