//! What the metrics engine's newer integration tests and benches share (a bench includes
//! this file with `#[path]`, as it cannot import a test module).
#![allow(dead_code)] // each test binary uses its own part

use std::path::PathBuf;

/// `$INFERSCALE_SHARED/fixtures/<rel>`, else `../shared/fixtures/<rel>` beside the checkout.
/// A missing fixture **fails** the test, saying where it looked, unless
/// `INFERSCALE_SKIP_SHARED=1` says skipping is intended; then it prints `SKIPPED` and the
/// test returns early (so a skip is never a silent pass).
pub fn shared_fixture(rel: &str) -> Option<String> {
    let root = std::env::var_os("INFERSCALE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let path = root.join("fixtures").join(rel);
    match std::fs::read_to_string(&path) {
        Ok(body) => Some(body),
        Err(error) if std::env::var_os("INFERSCALE_SKIP_SHARED").is_some_and(|v| v == "1") => {
            println!(
                "SKIPPED: {} ({error}); INFERSCALE_SKIP_SHARED=1",
                path.display()
            );
            None
        }
        Err(error) => panic!(
            "shared fixture {} unreadable ({error}); set INFERSCALE_SHARED to the shared/ folder, \
             or INFERSCALE_SKIP_SHARED=1 to skip tests that need it",
            path.display()
        ),
    }
}

/// Issue 8's attack body: `vllm:num_requests_waiting{model_name="m000000"} 1` and so on,
/// 50 bytes a line, then the pod's own model last (where a naive cap would already have
/// crowded it out).
pub fn attack_body(models: usize) -> String {
    let mut body = String::with_capacity(models * 50 + 200);
    for i in 0..models {
        body.push_str(&format!(
            "vllm:num_requests_waiting{{model_name=\"m{i:06}\"}} 1\n"
        ));
    }
    body.push_str("vllm:num_requests_running{model_name=\"m000001\"} 7\n");
    body
}
