//! The real vLLM 0.18 capture the memory tests replay (`../shared/fixtures/vllm/…`, 52 KB),
//! found through the project's one fixture lookup (`metrics/tests/support`): `None` after
//! printing SKIPPED when `INFERSCALE_ALLOW_SKIP=1` and the fixtures are missing.

#[path = "../../../metrics/tests/support/mod.rs"]
mod support;

/// The capture's text; panics without it unless skips are allowed.
pub fn capture() -> Option<String> {
    support::shared_fixture("vllm/vllm-0.16to0.18-v1-kops-k8s-ai-conformance-qwen2.5-0.5b.txt")
}
