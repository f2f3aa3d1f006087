//! What the socket-level tests of `vllm-sim` share.

use inferscale_sim::engine::{Engine, EngineConfig, SleepConfig};
use inferscale_sim::server;
use std::net::SocketAddr;
use std::time::Duration;

/// The served model name.
pub const MODEL: &str = "sim-llama";

/// A `vllm-sim serve` on an ephemeral 127.0.0.1 port, with fast timings; it stops when the
/// returned sender is dropped or sent to.
pub async fn start_vllm(
    max_num_seqs: usize,
    sleep: SleepConfig,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let engine = Engine::new(EngineConfig {
        model: MODEL.into(),
        max_num_seqs,
        ttft: Duration::from_millis(5),
        itl: Duration::from_millis(5),
        prefill_per_token: Duration::from_micros(50),
        kv_blocks: 2000,
        block_size: 16,
        max_model_len: 4096,
        sleep,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::run(listener, engine, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// The body of one `GET /metrics`.
pub async fn fetch_metrics(client: &reqwest::Client, addr: SocketAddr) -> String {
    client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
