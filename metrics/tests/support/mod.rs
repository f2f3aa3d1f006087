//! What the metrics engine's newer integration tests and benches share (a bench includes
//! this file with `#[path]`, as it cannot import a test module).
#![allow(dead_code, reason = "each test binary uses its own part")]

use std::path::PathBuf;

/// Set to `1` to let tests that need the shared fixtures pass without them.
pub const ALLOW_SKIP_VAR: &str = "INFERSCALE_ALLOW_SKIP";

/// `$INFERSCALE_SHARED/fixtures`, else `../shared/fixtures` beside the checkout.
///
/// When the folder is absent the calling test **fails**, naming where it looked — unless
/// `INFERSCALE_ALLOW_SKIP=1` says skipping is fine; then it prints `SKIPPED` and the test
/// returns early. A missing folder never passes as a plain `ok` unasked.
pub fn shared_fixtures() -> Option<PathBuf> {
    let root = std::env::var_os("INFERSCALE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let dir = root.join("fixtures");
    if dir.is_dir() {
        return Some(dir);
    }
    let message = format!(
        "shared fixtures not found at {} (set INFERSCALE_SHARED to the shared/ folder, or \
         {ALLOW_SKIP_VAR}=1 to skip the tests that need them)",
        dir.display()
    );
    if std::env::var(ALLOW_SKIP_VAR).as_deref() == Ok("1") {
        println!("SKIPPED: {message}");
        return None;
    }
    panic!("{message}");
}

/// One shared fixture, `rel` below the fixtures folder (see [`shared_fixtures`]).
pub fn shared_fixture(rel: &str) -> Option<String> {
    let path = shared_fixtures()?.join(rel);
    Some(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
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
