#!/usr/bin/env bash
# Freshness side by side (tests/perf/compare.py): builds what it runs, then runs it in a
# network namespace of its own (loopback only). No e2e lock: that lock keeps two e2e runs off
# the same loopback pod addresses and ports, and this namespace has its own loopback device
# (its addresses and ports are not the host's), so it can run beside e2e. Its working files
# are per process (/tmp/inferscale-compare-<pid>). It shares the CPU, so its figures say the
# load they were measured under.
#
# Usage: hack/compare.sh [compare.py args...]     e.g. hack/compare.sh --pods 100 --steps 4
#        hack/compare.sh --without-keda ...          (Prometheus polled directly; no KEDA build)
# Takes about an hour at the defaults (1,000 pods, 20 steps in each of three phases); not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

# Built here, outside the namespace (which has no route to the module proxy): the control
# plane, Prometheus and KEDA (github.com/kedacore/keda/v2), all cached after the first time.
# With --without-keda, KEDA is neither built nor run.
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok prometheus)
if [[ " $* " != *" --without-keda "* ]]; then components+=(keda keda-adapter); fi
hack/build-binaries.sh "${components[@]}"
nice -n 10 cargo build --release --quiet -p inferscale-adapter -p inferscale-sim

# Root can make a network namespace directly; anyone else through a user namespace.
unshare_args=(-n)
if [[ $(id -u) != 0 ]]; then unshare_args=(-r -n); fi
cmd=(python3 -m tests.perf.compare "$@")
exec unshare "${unshare_args[@]}" \
  env INFERSCALE_E2E_PROFILE=release bash -c 'ip link set lo up && exec "$@"' compare "${cmd[@]}"
