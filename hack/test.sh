#!/usr/bin/env bash
# The whole test suite: what `.ci/run` and the README's test command run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
step() { printf '\n==> %s (%ss)\n' "$1" "$SECONDS"; }

step "setup"
hack/setup.sh

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "Rust tests (unit, integration, property, doc)"
cargo test --workspace

step "golden tests against the independent Python reference"
cargo build --quiet -p inferscale-adapter
ADAPTER_BIN="$PWD/target/debug/adapter" python3 -m pytest tests/golden -q -rs

step "end-to-end: real control plane, HPA, simulated vLLM fleet"
hack/e2e-test.sh

step "done"
