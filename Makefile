# The index of commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

demo: ## Run the main job on the embedded default (see README)
	hack/demo.sh

test: ## The whole test suite, as CI runs it
	hack/test.sh

setup: ## Install what the tests need (Python packages, nightly for fuzzing)
	hack/setup.sh

fmt: ## Format the Rust code
	cargo fmt --all

clippy: ## Lint with warnings as errors
	cargo clippy --workspace --all-targets -- -D warnings

bench: ## Parser and signal benchmarks (criterion), then the replay benchmark
	cargo bench -p inferscale-metrics --bench parse
	cargo bench -p inferscale-scaler

fuzz: ## Fuzz the exposition parser for FUZZ_SECONDS (default 120)
	hack/fuzz.sh $(or $(FUZZ_SECONDS),120)

binaries: ## Build and cache the Kubernetes test binaries (kube-apiserver, etcd, kwok, ...)
	hack/build-binaries.sh

.PHONY: help demo test setup fmt clippy bench fuzz binaries
