//! `adapter`: command-line entry point. Parses arguments, sets up logging, hands off.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use inferscale_adapter::config::ServeArgs;
use inferscale_adapter::inspect::{fetch, inspect, render_table};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(
    name = "adapter",
    version,
    about = "LLM inference metrics for Kubernetes autoscaling"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve custom.metrics.k8s.io and external.metrics.k8s.io from live scrapes.
    Serve(Box<ServeArgs>),
    /// Print what the adapter computes for one pod from successive scrapes.
    Inspect {
        /// Files or http(s) URLs, oldest first; each is one scrape.
        sources: Vec<String>,
        /// Scrape this URL `--count` times, `--interval` apart.
        #[arg(long)]
        url: Option<String>,
        /// Time between scrapes: real waiting with `--url`, assumed spacing for files.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Number of scrapes with `--url`.
        #[arg(long, default_value_t = 2)]
        count: usize,
        /// Window for rates and percentiles.
        #[arg(long, default_value_t = inferscale_adapter::config::default_window())]
        window: humantime::Duration,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            let config = args
                .validate()
                .map_err(|errors| anyhow::anyhow!("invalid flags:\n  {}", errors.join("\n  ")))?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(inferscale_adapter::server::run(config))?;
            Ok(())
        }
        Command::Inspect {
            sources,
            url,
            interval,
            count,
            window,
            json,
        } => {
            let mut scrapes = Vec::new();
            for (i, source) in sources.iter().enumerate() {
                scrapes.push(fetch(source, i as f64 * interval.as_secs_f64())?);
            }
            if let Some(url) = url {
                for i in 0..count.max(1) {
                    if i > 0 {
                        std::thread::sleep(interval);
                    }
                    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
                    scrapes.push(fetch(&url, now)?);
                }
            }
            let report = inspect(&scrapes, Duration::from(window).as_secs_f64())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).context("rendering JSON")?
                );
            } else {
                print!("{}", render_table(&report));
            }
            Ok(())
        }
    }
}
