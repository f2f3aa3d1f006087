# The index of commands. `make help` lists them.
SHELL := /bin/bash
# The read-only shared material (traces, fixtures) beside the checkout, unless set.
SHARED ?= $(or $(INFERSCALE_SHARED),../shared)
.DEFAULT_GOAL := help

help: ## List the commands
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

demo: ## The main job on the embedded default: local control plane, simulated vLLM fleet, HPA live
	hack/e2e-demo.sh

inspect-demo: ## adapter inspect on hand-written scrapes (no cluster)
	hack/inspect-demo.sh

test: ## The whole test suite, as CI runs it
	hack/test.sh

setup: ## Install what the tests need (Python packages, nightly for fuzzing)
	hack/setup.sh

fmt: ## Format the Rust code
	cargo fmt --all

clippy: ## Lint with warnings as errors
	cargo clippy --workspace --all-targets -- -D warnings

report: ## Decision-quality report: sweep every policy, LP bound, frontiers (docs/decision-quality, README section); 20-50 min on 2 cores
	cargo build --release -p inferscale-scaler
	nice -n 10 target/release/scaler simulate --sweep --quiet --jobs 2 \
	  --trace $(SHARED)/traces/AzureLLMInferenceTrace_code.csv \
	  --trace $(SHARED)/traces/AzureLLMInferenceTrace_conv.csv --density 1,20 \
	  --time-to-ready 120s,300s --out docs/decision-quality --readme README.md

bench: ## Parser and signal benchmarks (criterion), then the replay benchmark
	cargo bench -p inferscale-metrics --bench parse
	cargo bench -p inferscale-scaler

fuzz: ## Fuzz the exposition parser for FUZZ_SECONDS (default 120)
	hack/fuzz.sh $(or $(FUZZ_SECONDS),120)

binaries: ## Build and cache the Kubernetes test binaries (kube-apiserver, etcd, kwok, ...)
	hack/build-binaries.sh

e2e: ## End-to-end tests: real control plane, HPA, simulated vLLM fleet (tests/e2e)
	hack/e2e-test.sh

.PHONY: help demo inspect-demo test setup fmt clippy report bench fuzz binaries e2e
