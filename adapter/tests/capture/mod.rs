//! The real vLLM 0.18 capture the memory tests replay (`../shared/fixtures/vllm/…`, 52 KB),
//! or `None` after printing SKIPPED when `INFERSCALE_ALLOW_SKIP=1` and it is missing.

use std::path::PathBuf;

/// The capture's text; panics without it unless skips are allowed.
pub fn capture() -> Option<String> {
    let root = std::env::var_os("INFERSCALE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let path =
        root.join("fixtures/vllm/vllm-0.16to0.18-v1-kops-k8s-ai-conformance-qwen2.5-0.5b.txt");
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if std::env::var("INFERSCALE_ALLOW_SKIP").as_deref() == Ok("1") => {
            println!("SKIPPED: the real vLLM capture {} ({e})", path.display());
            None
        }
        Err(e) => panic!(
            "the real vLLM capture is needed: {} ({e}); set INFERSCALE_SHARED, or \
             INFERSCALE_ALLOW_SKIP=1 to skip",
            path.display()
        ),
    }
}
