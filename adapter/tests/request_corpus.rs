//! The bad-input corpus, API-request half (issue 8 item 9; the scrape-body half is
//! `metrics/tests/corpus`): every case in `tests/corpus/requests.json` with the answer it
//! must get — the HTTP status, and for errors the Kubernetes `Status` body with its
//! `reason` (every error the API answers is a `Status`, never plain text); for lists, how
//! many items.
//!
//! `router` cases go through the whole router (auth layer, cache, handlers) with no socket;
//! `http` cases are raw bytes on a socket to the plain-HTTP server with its default
//! [`ConnectionLimits`](inferscale_adapter::http::ConnectionLimits), where the HTTP layer
//! answers before any route (a bare status line: these never reach the API). Expectations
//! were written from the Kubernetes API conventions and HTTP/1.1, not from this code's
//! output.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first broken assumption"
)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use inferscale_adapter::api::router;
use inferscale_adapter::auth::AuthState;
use inferscale_adapter::http::{serve_plain, ServeOptions};
use serde::Deserialize;
use std::collections::BTreeMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

mod support;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    layer: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    raw: Option<String>,
    status: u16,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    items: Option<usize>,
    why: String,
}

fn corpus() -> Corpus {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/requests.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

use support::state;

/// `\xNN`, `\r`, `\n` and `\\` in a case's raw text as bytes.
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                other => panic!("unknown escape \\{}", other as char),
            }
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

async fn router_case(case: &Case) -> Result<(), String> {
    let mut request = Request::builder()
        .method(case.method.as_deref().unwrap_or("GET"))
        .uri(case.target.as_deref().unwrap());
    for (name, value) in &case.headers {
        request = request.header(name, value);
    }
    let response = router(state(), AuthState::standalone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    if status.as_u16() != case.status {
        return Err(format!(
            "status {status}, expected {}: {}",
            case.status,
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        ));
    }
    if case.method.as_deref() == Some("HEAD") {
        return Ok(());
    }
    let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    if status.is_success() {
        if let Some(items) = case.items {
            let got = json["items"].as_array().map_or(usize::MAX, Vec::len);
            if got != items {
                return Err(format!("{got} items, expected {items}: {json}"));
            }
        }
        return Ok(());
    }
    // Every error is a metav1.Status with the code and reason.
    let ok = json["kind"] == "Status"
        && json["apiVersion"] == "v1"
        && json["status"] == "Failure"
        && json["code"] == case.status
        && json["message"].as_str().is_some_and(|m| !m.is_empty())
        && case.reason.as_deref().is_none_or(|r| json["reason"] == r);
    if ok {
        Ok(())
    } else {
        Err(format!("not the expected Status: {json}"))
    }
}

async fn http_case(port: u16, case: &Case) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // A server may answer (and close) before it has read everything: ignore write errors.
    let _ = stream
        .write_all(&unescape(case.raw.as_deref().unwrap()))
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    if read.is_err() {
        return Err("no answer within 10 s".into());
    }
    let head = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
    let expected = format!("HTTP/1.1 {} ", case.status);
    if head.starts_with(&expected) {
        Ok(())
    } else {
        Err(format!("answer {head:?}, expected {expected:?}"))
    }
}

#[tokio::test]
async fn every_bad_request_gets_its_expected_answer() {
    let corpus = corpus();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = router(state(), AuthState::standalone());
    tokio::spawn(serve_plain(
        listener,
        app,
        ServeOptions::default(),
        std::future::pending(),
    ));
    let mut failures = Vec::new();
    for case in &corpus.cases {
        assert!(!case.why.is_empty(), "{}: say why", case.name);
        let result = match case.layer.as_str() {
            "router" => router_case(case).await,
            "http" => http_case(port, case).await,
            other => panic!("{}: unknown layer {other}", case.name),
        };
        if let Err(e) = result {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        corpus.cases.len(),
        failures.join("\n")
    );
    let _ = StatusCode::OK;
}

#[test]
fn the_corpus_has_at_least_fifty_cases_with_the_scrape_bodies() {
    let bodies = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../metrics/tests/corpus"
    ))
    .unwrap()
    .filter(|e| {
        e.as_ref()
            .is_ok_and(|e| e.file_name() != "expectations.json")
    })
    .count();
    let requests = corpus().cases.len();
    assert!(
        bodies + requests >= 50,
        "{bodies} bodies + {requests} requests"
    );
}
