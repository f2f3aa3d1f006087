#!/usr/bin/env bash
# End-to-end tests against a real control plane (etcd, kube-apiserver with the aggregation
# layer, kube-controller-manager, kube-scheduler, kwok) with a simulated vLLM fleet and the
# adapter on the host: tests/e2e (see tests/e2e/cluster.py). Everything listens on loopback
# and is torn down at the end, whatever happens.
#
# Usage: hack/e2e-test.sh [pytest args...]      e.g. hack/e2e-test.sh -k test_b
# Env: INFERSCALE_E2E_KEEP=1 keeps the work directory (logs of every component);
#      INFERSCALE_E2E_PROFILE=release tests release builds;
#      INFERSCALE_E2E_ADAPTER_BIN / INFERSCALE_E2E_SIM_BIN run other binaries;
#      INFERSCALE_E2E_ORDER=reverse|random|random:SEED runs the tests in another order;
#      INFERSCALE_E2E_WORKERS=N control planes side by side (default 2; 1 = no pytest-xdist).
set -euo pipefail
cd "$(dirname "$0")/.."

# Built here, in the open, so a cold cache (~15 min for the Kubernetes binaries) shows its
# progress; the harness runs both again and finds everything built.
hack/build-binaries.sh etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok
# The observability and deploy tests (tests/e2e/test_observability.py, test_deploy.py).
hack/build-binaries.sh prometheus helm
# Debug: the whole workspace's bins and tests, not `-p adapter -p sim -p scaler`. Cargo unifies
# dependency features over what is built, so three packages alone give ~50 dependencies other
# features than `cargo test --workspace` did and compile them again next to the first copies
# (minutes of CPU, gigabytes of disk in `make test`). Release has no such earlier build.
build=(--workspace --bins --tests)
[[ "${INFERSCALE_E2E_PROFILE:-debug}" == release ]] &&
  build=(--release -p inferscale-adapter -p inferscale-sim -p inferscale-scaler)
cargo build --quiet "${build[@]}"

# Test files run on INFERSCALE_E2E_WORKERS control planes at once (pytest-xdist, one file per
# worker at a time; each worker's pods take their own loopback block, tests/e2e/cluster.py):
# the suite mostly waits on HPA syncs and cold starts, so two planes on two cores roughly halve
# its time. 1 runs everything on one plane, in this process.
workers=${INFERSCALE_E2E_WORKERS:-2}
parallel=()
[[ $workers != 1 ]] && parallel=(-n "$workers" --dist loadfile)
# -rs: every skip is listed with its reason (a skip is never a silent pass).
# --durations: the slowest tests, so the suite's time budget is visible in every run.
exec python3 -m pytest tests/e2e "${parallel[@]}" -x -q -rs -p no:cacheprovider --durations=15 "$@"
