#!/usr/bin/env bash
# Fuzzes the exposition parser with cargo-fuzz (libFuzzer) for $1 seconds (default 120),
# seeded with the project's own fixtures. Needs a nightly toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
mkdir -p fuzz/corpus/parse_exposition
cd fuzz
cargo +nightly fuzz run parse_exposition corpus/parse_exposition ../metrics/tests/fixtures \
  -- -max_total_time="$seconds" -print_final_stats=1
