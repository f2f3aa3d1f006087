#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, from package registries only.
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# Python reference implementation for the golden tests (tests/golden/requirements.txt).
python3 -m pip install --quiet --disable-pip-version-check -r tests/golden/requirements.txt
# YAML for the install tests (chart, kustomize, alerts, dashboards; tests/deploy/requirements.txt).
python3 -m pip install --quiet --disable-pip-version-check -r tests/deploy/requirements.txt
# pytest-xdist: the end-to-end files run on two control planes at once (tests/e2e/requirements.txt).
python3 -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt

# The end-to-end harness makes its certificates with openssl (Debian package).
if ! command -v openssl >/dev/null; then
  if command -v apt-get >/dev/null; then
    apt-get install -y openssl >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y openssl >/dev/null; }
  else
    echo "setup: openssl not found; install it" >&2
    exit 1
  fi
fi
