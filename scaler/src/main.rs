//! `scaler`: the what-if simulator's command line. Thin: parse, run, print.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use inferscale_scaler::cli::{write_outputs, SimulateArgs};
use inferscale_scaler::sweep;
use std::io::Write as _;

#[derive(Parser)]
#[command(
    name = "scaler",
    version,
    about = "What-if simulator for GPU inference fleets: replays request traces against autoscaling policies and prices them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a trace against scaling policies and price them; with --sweep, the whole
    /// decision-quality report (frontiers, lower bound, tables, plots).
    Simulate(Box<SimulateArgs>),
    /// Print the WarmPool CustomResourceDefinition (YAML).
    Crd,
    /// Run the warm-pool controller in a cluster (kubeconfig or in-cluster config).
    Run(inferscale_scaler::controller::RunArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Simulate(args) => simulate(*args),
        Command::Crd => {
            print!("{}", inferscale_scaler::controller::crd::crd_yaml()?);
            Ok(())
        }
        Command::Run(args) => run_controller(args),
    }
}

fn run_controller(args: inferscale_scaler::controller::RunArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(inferscale_scaler::controller::run(args))?;
    Ok(())
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let resolved = args.resolve()?;
    let quiet = args.quiet;
    let mut progress = |what: &str, fraction: f64| {
        if !quiet {
            // A one-line bar on stderr, redrawn in place; stdout stays clean for the table.
            let filled = (fraction.clamp(0.0, 1.0) * 30.0) as usize;
            let bar = format!("{}{}", "#".repeat(filled), "-".repeat(30 - filled));
            eprint!("\r{what:>40} [{bar}] {:>3.0}%", fraction * 100.0);
            if fraction >= 1.0 {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        }
    };
    if resolved.sweep {
        let summary = sweep::run(&resolved, &mut progress).context("sweeping")?;
        print!("{summary}");
        return Ok(());
    }
    let trace = resolved.load_trace().context("loading the trace")?;
    let (report, results) = resolved.run(&trace, &mut progress)?;
    if args.json {
        println!("{}", report.json()?);
    } else {
        print!("{}", report.table());
    }
    if let Some(dir) = &resolved.out {
        write_outputs(dir, &report, &results)?;
    }
    Ok(())
}
