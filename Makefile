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

report: ## Decision-quality report: sweep every policy, refine every family off its grid's edges, LP bound, frontiers (docs/decision-quality, README section); ~17 min of one core
	cargo build --release -p inferscale-scaler
	nice -n 10 target/release/scaler simulate --sweep --quiet --jobs 2 --refine-all \
	  --trace $(SHARED)/traces/AzureLLMInferenceTrace_code.csv \
	  --trace $(SHARED)/traces/AzureLLMInferenceTrace_conv.csv --density 1,20 \
	  --time-to-ready 120s,300s --out docs/decision-quality --readme README.md

report-composed: ## hpa-adapter and hpa+warm-pool swept against docs/decision-quality's baseline runs (read back, not re-run) into docs/decision-quality/composed; ~15 min on 2 cores
	cargo build --release -p inferscale-scaler
	nice -n 10 target/release/scaler simulate --sweep --quiet --jobs 2 --policy hpa-adapter,hpa+warm-pool \
	  --trace $(SHARED)/traces/AzureLLMInferenceTrace_code.csv \
	  --trace $(SHARED)/traces/AzureLLMInferenceTrace_conv.csv --density 1,20 \
	  --time-to-ready 120s,300s --out docs/decision-quality/composed --import-runs docs/decision-quality

report-routing: ## Routing sensitivity of the best baseline, warm-pool and hpa+warm-pool (docs/decision-quality/routing.md); ~1 min
	cargo build --release -p inferscale-scaler
	INFERSCALE_SHARED=$(SHARED) hack/routing-sensitivity.sh

bench: ## Parser and signal benchmarks, per-scrape CPU by stage (criterion), then the replay benchmark
	cargo bench -p inferscale-metrics --bench parse
	cargo bench -p inferscale-adapter --bench scrape_stages
	cargo bench -p inferscale-scaler

fuzz: ## Fuzz the exposition parser for FUZZ_SECONDS (default 120)
	hack/fuzz.sh $(or $(FUZZ_SECONDS),120)

compare: ## Freshness side by side: inferscale vs Prometheus + KEDA vs KEDA metrics-api, real control plane (~1 h, not in CI)
	hack/compare.sh $(COMPARE_ARGS)

envelope: ## Scale envelope: adapter CPU and RSS at 100..10,000 targets, 10 min each (~1 h; ENVELOPE_ARGS="--targets 1000 --duration 60" for a quick look)
	nice -n 10 python3 -m tests.perf.envelope $(ENVELOPE_ARGS)

api-latency: ## API latency on the real path: TLS + front-proxy authn + SubjectAccessReview, 1,000 pods listed, 100 clients, then 10,000 targets scraped (~15 min, not in CI; API_LATENCY_ARGS; PYTEST_XDIST_WORKER=gwN beside e2e)
	python3 -m tests.perf.api_latency $(API_LATENCY_ARGS)

binaries: ## Build and cache the test binaries (kube-apiserver, etcd, kwok, prometheus, promtool, helm, ...)
	hack/build-binaries.sh

e2e: ## End-to-end tests: real control plane, HPA, simulated vLLM fleet (tests/e2e)
	hack/e2e-test.sh

image: ## Container images of adapter and scaler (static musl, FROM scratch), no registry needed
	hack/image.sh

dashboards: ## Regenerate dashboards/ and the chart's and kustomize's copies of dashboards and alerts
	hack/gen-dashboards.py
	hack/gen-deploy-files.py

.PHONY: help demo inspect-demo test setup fmt clippy report report-composed report-routing bench fuzz binaries e2e compare envelope api-latency image dashboards
