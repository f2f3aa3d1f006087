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
    Simulate(SimulateArgs),
}

fn main() -> anyhow::Result<()> {
    let Cli {
        command: Command::Simulate(args),
    } = Cli::parse();
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
