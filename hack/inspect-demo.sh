#!/usr/bin/env bash
# What the adapter computes for one vLLM pod, without a cluster: `adapter inspect` over two
# successive scrapes of a data-parallel vLLM server (a hand-written fixture and a copy 15 s
# later with four more requests), then over a pod-attributed dcgm-exporter scrape.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p inferscale-adapter
adapter=target/release/adapter
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fixture=metrics/tests/fixtures/vllm-v1-two-engines.txt
sed -e 's/engine="0",le="1.0",model_name="llama-3-8b"} 10.0/engine="0",le="1.0",model_name="llama-3-8b"} 14.0/' \
    -e 's/engine="0",le="+Inf",model_name="llama-3-8b"} 10.0/engine="0",le="+Inf",model_name="llama-3-8b"} 14.0/' \
    -e 's/finished_reason="stop",model_name="llama-3-8b"} 8.0/finished_reason="stop",model_name="llama-3-8b"} 12.0/' \
    -e 's/vllm:num_requests_waiting{engine="0",model_name="llama-3-8b"} 2.0/vllm:num_requests_waiting{engine="0",model_name="llama-3-8b"} 9.0/' \
    "$fixture" > "$work/later.txt"
echo "== adapter inspect --interval 15s (two scrapes of one vLLM pod)"
"$adapter" inspect --interval 15s "$fixture" "$work/later.txt"
echo
echo "== adapter inspect (dcgm-exporter, GPUs joined to pods)"
"$adapter" inspect metrics/tests/fixtures/dcgm-attributed.txt
