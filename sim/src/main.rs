//! `vllm-sim`: mock vLLM server (`serve`) and mock dcgm-exporter (`dcgm`) for the e2e
//! tests — a stand-in because `llm-d-inference-sim` cannot be obtained here. See the
//! library docs (`inferscale_sim`) for what it models.

use anyhow::{ensure, Context, Result};
use clap::{Parser, Subcommand};
use inferscale_sim::dcgm::Node;
use inferscale_sim::engine::{Engine, EngineConfig};
use inferscale_sim::{dcgm_server, server};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use tracing::info;

#[derive(Parser)]
#[command(
    version,
    about = "Mock vLLM server and dcgm-exporter for end-to-end tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A vLLM-like OpenAI server with vLLM V1 /metrics.
    Serve {
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        #[arg(long, default_value_t = 8000)]
        port: u16,
        #[arg(long, default_value = "sim-llama")]
        model: String,
        #[arg(long, default_value_t = 256)]
        max_num_seqs: usize,
        #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
        ttft: Duration,
        #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
        itl: Duration,
        #[arg(long, default_value = "50us", value_parser = humantime::parse_duration)]
        prefill_per_token: Duration,
        #[arg(long, default_value_t = 2000)]
        kv_blocks: u32,
        #[arg(long, default_value_t = 16)]
        block_size: u32,
        #[arg(long, default_value_t = 8192)]
        max_model_len: u32,
        /// Time before listening at all, like vLLM loading weights.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        startup_delay: Duration,
    },
    /// A dcgm-exporter for one fake node.
    Dcgm {
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        #[arg(long, default_value_t = 9400)]
        port: u16,
        #[arg(long)]
        node: String,
        #[arg(long, default_value_t = 1)]
        gpus: u32,
        /// JSON list of {namespace, pod, container, gpus, metrics_url?, max_num_seqs?}.
        #[arg(long)]
        assignments: PathBuf,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve {
            host,
            port,
            model,
            max_num_seqs,
            ttft,
            itl,
            prefill_per_token,
            kv_blocks,
            block_size,
            max_model_len,
            startup_delay,
        } => {
            ensure!(
                max_num_seqs > 0 && kv_blocks > 0 && block_size > 0 && max_model_len > 0,
                "--max-num-seqs, --kv-blocks, --block-size and --max-model-len must be positive"
            );
            let engine = Engine::new(EngineConfig {
                model,
                max_num_seqs,
                ttft,
                itl,
                prefill_per_token,
                kv_blocks,
                block_size,
                max_model_len,
            });
            tokio::select! {
                () = tokio::time::sleep(startup_delay) => {},
                () = server::shutdown_signal() => return Ok(()),
            }
            let listener = tokio::net::TcpListener::bind((host, port))
                .await
                .with_context(|| format!("binding {host}:{port}"))?;
            info!(%host, port, "vllm-sim serving");
            server::run(listener, engine, server::shutdown_signal()).await?;
        }
        Command::Dcgm {
            host,
            port,
            node,
            gpus,
            assignments,
        } => {
            let state = dcgm_server::DcgmState::new(Node::l4(&node, gpus), assignments)?;
            let listener = tokio::net::TcpListener::bind((host, port))
                .await
                .with_context(|| format!("binding {host}:{port}"))?;
            info!(%host, port, %node, gpus, "fake dcgm-exporter serving");
            server::serve_until(
                listener,
                dcgm_server::router(state),
                server::shutdown_signal(),
            )
            .await?;
        }
    }
    info!("stopped");
    Ok(())
}
