#!/usr/bin/env bash
# The live demo: brings up the whole local stack (control plane, simulated vLLM fleet, adapter),
# creates a Deployment and an HPA on vllm_num_requests_waiting, drives a load ramp and shows
# what the HPA sees and decides, refreshed every second; tears everything down on exit or
# Ctrl-C. Writes out/demo.svg (replicas and queue depth over time) at the end.
#
# Usage: hack/e2e-demo.sh [--duration 240] [--peak-clients 36] [--plot out/demo.svg]
set -euo pipefail
cd "$(dirname "$0")/.."
hack/build-binaries.sh etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok
cargo build --quiet -p inferscale-adapter -p inferscale-sim
exec python3 -m tests.e2e.demo "$@"
