//! `vllm-sim`: mock vLLM server (`serve`) and mock dcgm-exporter (`dcgm`) for the e2e
//! tests — a stand-in because `llm-d-inference-sim` cannot be obtained here. See the
//! library docs (`inferscale_sim`) for what it models.

use anyhow::{ensure, Context, Result};
use clap::{Parser, Subcommand};
use inferscale_sim::dcgm::Node;
use inferscale_sim::engine::{Engine, EngineConfig, SleepConfig};
use inferscale_sim::{dcgm_server, fleet, server};
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

/// The fault and admin endpoints, printed under both subcommands' `--help`.
const ADMIN_HELP: &str = "\
Admin endpoints (loopback test harness only; each stays until replaced or reset):
  POST /admin/fault  {\"fault\": NAME, PARAMETER: VALUE...}   /metrics plays one fault, e.g.
      curl -X POST http://127.0.0.1:8000/admin/fault -d '{\"fault\":\"status\",\"code\":500}'
    NAME and parameters ([x=...] optional, with its default):
      hang [seconds=60]            accepted, not answered for `seconds` (a reset answers it)
      status code=N                answers that status
      html                         200 text/html error page
      garbage bytes=N              200 with N pseudo-random bytes (invalid UTF-8)
      oversized bytes=N [content_length=false]   real body padded to N bytes, streamed
      gzip_bomb decoded_bytes=N    Content-Encoding: gzip, decodes to N bytes (~N/1000 on the wire)
      non_finite_gauges            queue/running/KV gauges NaN, +Inf, -Inf (dcgm: util, power, memory)
      non_monotone_buckets         each histogram's last finite bucket above +Inf   (vLLM only)
      no_inf_bucket                each histogram without +Inf bucket and _count    (vLLM only)
      missing_buckets              every second finite bucket left out (valid)      (vLLM only)
      duplicate_series             every gauge series twice, the copy +100
      redirect location=URL [status=302]   answers 3xx with that Location
      many_models count=N          N extra model names, 50-byte lines (300000 = 15 MB) (vLLM only)
      gone [seconds=10]            listener closed (connections refused), then reopened
  GET  /admin/fault                the active fault (null if none)
  POST /admin/reset                clears the fault, metrics-down and synthetic load
  POST /admin/metrics-down | /admin/metrics-up    /metrics answers 503 | again
vLLM server only:
  POST /admin/load {waiting, running, kv_cache_usage, ttft_seconds, observations_per_second}
  POST /admin/restart              counters, histograms, _created and process start begin again";

#[derive(Subcommand)]
enum Command {
    /// A vLLM-like OpenAI server with vLLM V1 (0.18 layout) /metrics.
    #[command(after_help = ADMIN_HELP)]
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
        /// Serve vLLM's sleep-mode endpoints: POST /sleep?level=0|1|2[&mode=abort|wait],
        /// POST /wake_up[?tags=weights&tags=kv_cache], GET /is_sleeping. Requests that
        /// arrive while asleep wait in the queue until the engine wakes (as in vLLM).
        #[arg(long)]
        enable_sleep_mode: bool,
        /// How long /wake_up takes to bring the weights back after a level-1 sleep.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        wake_time_level1: Duration,
        /// How long /wake_up takes after a level-2 sleep (weights discarded).
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        wake_time_level2: Duration,
    },
    /// Many scrape targets in one process: a real /metrics capture replayed (counters and
    /// histograms grow every second, the queue gauges as set on the admin endpoint) on
    /// consecutive loopback addresses, for load tests of a scraper. Each target costs two file
    /// descriptors (listener and connection).
    #[command(after_help = "\
Admin endpoints (on --admin):
  POST /admin/load {\"waiting\": W, \"running\": R}   every target reports W waiting and R running
      from the next scrape on; answers {\"at\": unix seconds, \"load\": ...}
  GET  /admin/stats                             targets, scrapes answered, body sizes

Example: 5,000 targets on 127.3.0.1..., the vLLM 0.18 capture
  vllm-sim fleet --capture ../shared/fixtures/vllm/vllm-0.16to0.18-v1-kops-k8s-ai-conformance-qwen2.5-0.5b.txt \\
    --first-address 127.3.0.1 --count 5000 --admin 127.0.0.1:7999")]
    Fleet {
        /// A real /metrics capture (Prometheus text format) to replay.
        #[arg(long)]
        capture: PathBuf,
        /// First target address; the others follow it (host bytes .0 and .255 skipped).
        #[arg(long, default_value = "127.3.0.1", conflicts_with = "addresses_file")]
        first_address: std::net::Ipv4Addr,
        /// Number of targets from --first-address.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// File of target addresses, one IP per line (instead of --first-address/--count).
        #[arg(long)]
        addresses_file: Option<PathBuf>,
        /// Port every target listens on.
        #[arg(long, default_value_t = 8000)]
        port: u16,
        /// Address of the admin endpoint (loopback).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
    /// A dcgm-exporter for one fake node.
    #[command(after_help = ADMIN_HELP)]
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
            enable_sleep_mode,
            wake_time_level1,
            wake_time_level2,
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
                sleep: SleepConfig {
                    enabled: enable_sleep_mode,
                    wake_time_level1,
                    wake_time_level2,
                },
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
        Command::Fleet {
            capture,
            first_address,
            count,
            addresses_file,
            port,
            admin,
        } => {
            let text = std::fs::read_to_string(&capture)
                .with_context(|| format!("reading {}", capture.display()))?;
            let addresses = match addresses_file {
                Some(file) => std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|ip| {
                        ip.parse::<IpAddr>()
                            .map(|ip| std::net::SocketAddr::new(ip, port))
                            .with_context(|| format!("{}: not an IP address: {ip}", file.display()))
                    })
                    .collect::<Result<Vec<_>>>()?,
                None => fleet::consecutive_addresses(first_address, count, port),
            };
            for address in addresses.iter().chain(admin.iter()) {
                ensure!(
                    address.ip().is_loopback(),
                    "{address} is not a loopback address (the fleet is for local load tests)"
                );
            }
            let state = fleet::Fleet::new(fleet::Replay::new(&text), addresses.len());
            fleet::run(state, &addresses, admin, server::shutdown_signal()).await?;
        }
        Command::Dcgm {
            host,
            port,
            node,
            gpus,
            assignments,
        } => {
            let state = dcgm_server::DcgmState::new(Node::l4(&node, gpus), assignments)?;
            let faults = state.faults().clone();
            let listener = tokio::net::TcpListener::bind((host, port))
                .await
                .with_context(|| format!("binding {host}:{port}"))?;
            info!(%host, port, %node, gpus, "fake dcgm-exporter serving");
            server::serve_until(
                listener,
                dcgm_server::router(state),
                faults,
                server::shutdown_signal(),
            )
            .await?;
        }
    }
    info!("stopped");
    Ok(())
}
