//! The `scaler simulate` command: arguments, their validation, and the runs.
//!
//! Owns: the clap definitions, raw → validated configuration (every problem reported at
//! once), building the named policies with their knobs, running them over the trace and
//! writing the plots. The sweep (`--sweep`) is [`crate::sweep`]'s; this module only resolves
//! its inputs.
//! Does not own: printing and process exit (the binary), or any simulation logic.

use crate::calibration::{
    CostModel, ModelProfile, StartupTime, NODE_PROVISIONING_SHARE, SLEEP_WAKE_LOG_SIGMA,
    SLEEP_WAKE_MEDIAN_SECS, TIME_TO_READY_LOG_SIGMA,
};
use crate::policy::hpa::{DEFAULT_CPU_TARGET, DEFAULT_QUEUE_TARGET_PER_POD};
use crate::policy::kpa::{DEFAULT_AIBRIX_KV_TARGET, DEFAULT_KPA_CONCURRENCY_TARGET};
use crate::policy::spec::{PolicySpec, Reactive};
use crate::policy::warm_pool::{DEFAULT_COST_RATIO, DEFAULT_WARM_POOL_UTILISATION};
use crate::policy::{oracle, PolicyError, PolicyKind};
use crate::replay::{
    simulate, ClientConfig, FleetConfig, Routing, RunResult, SimConfig, SimError,
    DEFAULT_MAX_RETRIES,
};
use crate::report::{PolicyRow, Report, ReportError};
use crate::svg;
use crate::trace::{Synthetic, Trace, TraceError, DEFAULT_HASH_BLOCK_TOKENS};
use std::path::{Path, PathBuf};

/// Why `simulate` failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The arguments have problems (all of them are listed).
    #[error("invalid arguments:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error(transparent)]
    Report(#[from] ReportError),
    /// Writing an output failed.
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Reading an input (an earlier report's runs, the README to regenerate) failed.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Jitter of copies made by `--density`: a second keeps per-second burst structure while
/// spreading duplicates so they do not arrive at the exact same instant.
const DENSITY_JITTER_SECS: f64 = 1.0;
/// Default TTFT p90 target of `hpa-ttft`, seconds: half the default 2 s objective, so the HPA
/// acts before the objective's percentile is lost.
pub const DEFAULT_TTFT_TARGET_SECS: f64 = 1.0;
/// Default prompt tokens per second per pod of `hpa-tokens`: about a third of what the
/// Llama-8B/H100 profile prefills at full compute (~31k tokens/s), where queued prompts still
/// start within a second.
pub const DEFAULT_TOKEN_TARGET_PER_POD: f64 = 10_000.0;
/// Default size of `fixed`.
pub const DEFAULT_FIXED_REPLICAS: u32 = 2;

/// Arguments of `scaler simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Trace file: CSV with TIMESTAMP, ContextTokens, GeneratedTokens columns, or JSONL
    /// (`.jsonl`) with timestamp (ms), input_length, output_length, hash_ids. Repeat for a
    /// sweep over several traces.
    #[arg(long, conflicts_with = "synthetic")]
    pub trace: Vec<PathBuf>,
    /// Synthetic trace, e.g. `poisson:rate=5,duration=3600`,
    /// `bursts:base=2,peak=20,every=600,length=60,duration=3600`, `diurnal:mean=5,duration=86400`,
    /// `ramp:from=1,to=20,duration=3600`.
    #[arg(long)]
    pub synthetic: Option<String>,
    /// Replay the trace this many times faster (shorter and denser).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Make the trace this many times denser on the same time axis (copies with 1 s jitter);
    /// comma-separated, one per `--trace` (missing ones are 1).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub density: Vec<f64>,
    /// Prompt tokens one JSONL `hash_ids` entry covers.
    #[arg(long, default_value_t = DEFAULT_HASH_BLOCK_TOKENS)]
    pub hash_block_tokens: u32,
    /// Policies to compare, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fixed,hpa-cpu,hpa-queue,hpa-ttft,hpa-tokens,keda,kpa,aibrix,hpa-adapter,warm-pool,hpa+warm-pool,oracle"
    )]
    pub policy: Vec<String>,
    /// Median cold start of a new replica (e.g. 120s, 5m); comma-separated for a sweep.
    #[arg(long, value_delimiter = ',', default_value = "120s")]
    pub time_to_ready: Vec<String>,
    /// Time-to-first-token objective (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s")]
    pub slo_ttft: String,
    /// Attainment objective (share of attainable requests within the TTFT objective): what
    /// the oracle searches for and the warm pool's objective.
    #[arg(long, default_value_t = 0.99)]
    pub slo_attainment: f64,
    /// Price of one GPU replica per hour.
    #[arg(long, default_value_t = 2.5)]
    pub gpu_cost_per_hour: f64,
    #[arg(long, default_value_t = 1)]
    pub min_replicas: u32,
    #[arg(long, default_value_t = 64)]
    pub max_replicas: u32,
    /// Ready replicas at the start (default: what the trace's first cold-start time needs).
    #[arg(long)]
    pub initial_replicas: Option<u32>,
    /// How the gateway routes: random (kube-proxy iptables), round-robin (IPVS),
    /// least-outstanding, token-aware (an endpoint picker), central-queue.
    #[arg(long, default_value = "least-outstanding")]
    pub routing: String,
    /// Seconds a client waits for the first token before it gives up on an attempt.
    #[arg(long, default_value = "60s")]
    pub client_timeout: String,
    /// Retries a client makes after a timeout or a lost connection (OpenAI client: 2).
    #[arg(long, default_value_t = DEFAULT_MAX_RETRIES)]
    pub client_retries: u32,
    /// Grace period of a deleted pod before it is killed (terminationGracePeriodSeconds).
    #[arg(long, default_value = "30s")]
    pub termination_grace: String,
    /// `fixed`: replicas.
    #[arg(long, default_value_t = DEFAULT_FIXED_REPLICAS)]
    pub fixed_replicas: u32,
    /// HPA / KEDA target of waiting requests per pod.
    #[arg(long, default_value_t = DEFAULT_QUEUE_TARGET_PER_POD)]
    pub queue_target: f64,
    /// `hpa-ttft`: target fleet TTFT p90, seconds.
    #[arg(long, default_value_t = DEFAULT_TTFT_TARGET_SECS)]
    pub ttft_target: f64,
    /// `hpa-tokens`: target prompt tokens per second per pod.
    #[arg(long, default_value_t = DEFAULT_TOKEN_TARGET_PER_POD)]
    pub token_target: f64,
    /// KPA target of in-flight requests per pod.
    #[arg(long, default_value_t = DEFAULT_KPA_CONCURRENCY_TARGET)]
    pub concurrency_target: f64,
    /// AIBrix target KV-cache usage per pod (fraction).
    #[arg(long, default_value_t = DEFAULT_AIBRIX_KV_TARGET)]
    pub kv_target: f64,
    /// HPA-CPU target utilisation (fraction).
    #[arg(long, default_value_t = DEFAULT_CPU_TARGET)]
    pub cpu_target: f64,
    /// `hpa-adapter` and `hpa+warm-pool`: the reactive metric (`queue` with `--queue-target`,
    /// `tokens` with `--token-target`, `ttft` with `--ttft-target`), read through inferscale's
    /// adapter.
    #[arg(long, default_value = "queue")]
    pub reactive: String,
    /// Warm pool: prior per-replica capacity (replica-seconds of work per second) until it has
    /// learned one.
    #[arg(long, default_value_t = DEFAULT_WARM_POOL_UTILISATION)]
    pub warm_utilisation: f64,
    /// Warm pool: penalty per request that misses the TTFT objective over the GPU-hour price.
    #[arg(long, default_value_t = DEFAULT_COST_RATIO)]
    pub cost_ratio: f64,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory for SVG plots and report.json (with `--sweep`: the whole report).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Sweep every policy over its knobs on every trace × time-to-ready, compute the lower
    /// bound and the Pareto frontiers, and write the report (tables, SVGs) to `--out`.
    #[arg(long, requires = "out")]
    pub sweep: bool,
    /// With `--sweep`: regenerate this README's decision-quality section from the report.
    #[arg(long, requires = "sweep")]
    pub readme: Option<PathBuf>,
    /// With `--sweep`: replays run at once (each on its own thread).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// With `--sweep`: the families `--policy` leaves out are read back from this earlier
    /// report's `<scenario>/runs.md` instead of being re-run (same traces, times-to-ready and
    /// replay), so a few families can be swept against every baseline's frontier.
    #[arg(long, requires = "sweep")]
    pub import_runs: Option<PathBuf>,
    /// With `--sweep`: runs of the swept families found in this earlier report's
    /// `<scenario>/runs.md` are read back instead of re-run (same traces, times-to-ready and
    /// replay: only settings it lacks are run), so a change to the refinement costs only the
    /// new runs. Their figures are as `runs.md` prints them (0.001 % and 0.001 GPU-h), so ties
    /// between runs may fall otherwise than in a fresh sweep.
    #[arg(long, requires = "sweep")]
    pub reuse_runs: Option<PathBuf>,
    /// With `--sweep`: refine every swept family (the baselines and warm-pool too) around its
    /// winners at 99 % and 99.9 % until none sits on its grid's edge or 6 rounds are done (the
    /// report lists any still there), not only hpa-adapter and hpa+warm-pool.
    #[arg(long, requires = "sweep")]
    pub refine_all: bool,
}

/// Parses `120s`, `2m`, `500ms`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = number.trim().parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 1e-3,
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    (v.is_finite() && v >= 0.0).then_some(v * scale)
}

/// Where requests come from.
#[derive(Debug, Clone)]
pub enum TraceSource {
    /// A file and the density applied to it.
    File(PathBuf, f64),
    Synthetic(String, Synthetic),
}

/// Validated arguments.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub sources: Vec<TraceSource>,
    pub time_scale: f64,
    pub hash_block_tokens: u32,
    pub policies: Vec<PolicyKind>,
    /// The run's configuration with the first time-to-ready.
    pub config: SimConfig,
    /// Every time-to-ready median asked for (a sweep runs each).
    pub times_to_ready: Vec<f64>,
    pub slo_attainment: f64,
    pub knobs: Knobs,
    pub out: Option<PathBuf>,
    pub readme: Option<PathBuf>,
    pub sweep: bool,
    pub jobs: usize,
    /// With a sweep: an earlier report whose runs stand in for the families not swept.
    pub import_runs: Option<PathBuf>,
    /// With a sweep: an earlier report whose runs of the swept families are read back, not
    /// re-run.
    pub reuse_runs: Option<PathBuf>,
    /// With a sweep: refine every swept family, not only the composed ones.
    pub refine_all: bool,
    /// Size the initial fleet from the trace (no `--initial-replicas` given).
    pub auto_initial: bool,
}

/// The single-run knob values of every policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knobs {
    pub fixed_replicas: u32,
    pub queue_target: f64,
    pub ttft_target: f64,
    pub token_target: f64,
    pub concurrency_target: f64,
    pub kv_target: f64,
    pub cpu_target: f64,
    pub cost_ratio: f64,
    pub warm_utilisation: f64,
    pub reactive: Reactive,
    pub min_replicas: u32,
}

impl Knobs {
    /// The policy `kind` with these knobs (the oracle: `None`, it is searched).
    pub fn spec(&self, kind: PolicyKind) -> Option<PolicySpec> {
        let min = self.min_replicas;
        Some(match kind {
            PolicyKind::Fixed => PolicySpec::Fixed {
                replicas: self.fixed_replicas,
            },
            PolicyKind::HpaCpu => PolicySpec::HpaCpu {
                target: self.cpu_target,
                min,
            },
            PolicyKind::HpaQueue => PolicySpec::HpaQueue {
                target: self.queue_target,
                min,
            },
            PolicyKind::HpaTtft => PolicySpec::HpaTtft {
                target_secs: self.ttft_target,
                min,
            },
            PolicyKind::HpaTokens => PolicySpec::HpaTokens {
                target: self.token_target,
                min,
            },
            PolicyKind::Keda => PolicySpec::Keda {
                threshold: self.queue_target,
                min,
            },
            PolicyKind::Kpa => PolicySpec::Kpa {
                target: self.concurrency_target,
                min,
            },
            PolicyKind::Aibrix => PolicySpec::Aibrix {
                target: self.kv_target,
                min,
            },
            PolicyKind::WarmPool => PolicySpec::WarmPool {
                cost_ratio: self.cost_ratio,
                capacity: self.warm_utilisation,
                min,
            },
            PolicyKind::HpaAdapter => PolicySpec::HpaAdapter {
                metric: self.reactive,
                target: self.reactive_target(),
                min,
            },
            PolicyKind::HpaWarmPool => PolicySpec::HpaWarmPool {
                metric: self.reactive,
                target: self.reactive_target(),
                cost_ratio: self.cost_ratio,
                capacity: self.warm_utilisation,
                min,
            },
            PolicyKind::Oracle => return None,
        })
    }

    fn reactive_target(&self) -> f64 {
        match self.reactive {
            Reactive::Queue => self.queue_target,
            Reactive::Tokens => self.token_target,
            Reactive::Ttft => self.ttft_target,
        }
    }
}

/// Problems found while resolving, reported together.
#[derive(Debug, Default)]
struct Problems(Vec<String>);

impl Problems {
    fn note(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    fn positive(&mut self, flag: &str, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            self.note(format!("--{flag} must be positive"));
        }
    }

    fn duration(&mut self, flag: &str, value: &str) -> f64 {
        match parse_duration(value) {
            Some(v) if v > 0.0 => v,
            _ => {
                self.note(format!("--{flag} {value:?} is not a positive duration"));
                1.0
            }
        }
    }
}

impl SimulateArgs {
    /// Checks every argument and reports all problems together: trace sources, policies,
    /// durations, numeric ranges and replica bounds, routing; then builds the configuration.
    pub fn resolve(&self) -> Result<Resolved, CliError> {
        let mut problems = Problems::default();
        let sources = self.trace_sources(&mut problems);
        let policies = self.policy_kinds(&mut problems);
        let times_to_ready: Vec<f64> = self
            .time_to_ready
            .iter()
            .map(|t| problems.duration("time-to-ready", t))
            .collect();
        let slo = problems.duration("slo-ttft", &self.slo_ttft);
        let client_timeout = problems.duration("client-timeout", &self.client_timeout);
        let grace = problems.duration("termination-grace", &self.termination_grace);
        self.check_ranges(&mut problems);
        let routing = Routing::parse(&self.routing).unwrap_or_else(|| {
            problems.note(format!(
                "--routing {:?}: one of random, round-robin, least-outstanding, token-aware, central-queue",
                self.routing
            ));
            Routing::LeastOutstanding
        });
        let reactive = Reactive::parse(&self.reactive).unwrap_or_else(|| {
            problems.note(format!(
                "--reactive {:?}: one of queue, tokens, ttft",
                self.reactive
            ));
            Reactive::Queue
        });
        let ttr = StartupTime::new(times_to_ready[0], TIME_TO_READY_LOG_SIGMA);
        let wake = StartupTime::new(SLEEP_WAKE_MEDIAN_SECS, SLEEP_WAKE_LOG_SIGMA);
        let (Ok(ttr), Ok(wake), true) = (ttr, wake, problems.0.is_empty()) else {
            return Err(CliError::Invalid(problems.0));
        };
        Ok(Resolved {
            sources,
            time_scale: self.time_scale,
            hash_block_tokens: self.hash_block_tokens,
            policies,
            config: SimConfig {
                fleet: FleetConfig {
                    profile: ModelProfile::llama31_8b_h100(),
                    min_replicas: self.min_replicas,
                    max_replicas: self.max_replicas,
                    initial_replicas: self.initial_replicas.unwrap_or(self.min_replicas),
                    time_to_ready: ttr,
                    wake,
                    node_provisioning_share: NODE_PROVISIONING_SHARE,
                    cost: CostModel {
                        gpu_cost_per_hour: self.gpu_cost_per_hour,
                    },
                    routing,
                    client: ClientConfig {
                        ttft_timeout_secs: client_timeout,
                        max_retries: self.client_retries,
                    },
                    termination_grace_secs: grace,
                },
                slo_ttft_secs: slo,
                seed: self.seed,
            },
            times_to_ready,
            slo_attainment: self.slo_attainment,
            knobs: self.knobs(reactive),
            out: self.out.clone(),
            readme: self.readme.clone(),
            sweep: self.sweep,
            jobs: self.jobs.max(1),
            import_runs: self.import_runs.clone(),
            reuse_runs: self.reuse_runs.clone(),
            refine_all: self.refine_all,
            auto_initial: self.initial_replicas.is_none(),
        })
    }

    fn trace_sources(&self, problems: &mut Problems) -> Vec<TraceSource> {
        if let Some(spec) = &self.synthetic {
            return match Synthetic::parse(spec) {
                Ok(s) => vec![TraceSource::Synthetic(spec.clone(), s)],
                Err(e) => {
                    problems.note(e.to_string());
                    Vec::new()
                }
            };
        }
        if self.trace.is_empty() {
            problems.note("one of --trace or --synthetic is required");
        }
        if self.density.len() > self.trace.len().max(1) {
            problems.note("--density has more values than there are --trace files");
        }
        self.trace
            .iter()
            .enumerate()
            .map(|(i, path)| TraceSource::File(path.clone(), *self.density.get(i).unwrap_or(&1.0)))
            .collect()
    }

    fn policy_kinds(&self, problems: &mut Problems) -> Vec<PolicyKind> {
        let mut policies = Vec::new();
        for name in &self.policy {
            match PolicyKind::parse(name) {
                Ok(k) if !policies.contains(&k) => policies.push(k),
                Ok(_) => {}
                Err(e) => problems.note(e.to_string()),
            }
        }
        policies
    }

    fn check_ranges(&self, problems: &mut Problems) {
        problems.positive("time-scale", self.time_scale);
        for &d in &self.density {
            problems.positive("density", d);
        }
        problems.positive("gpu-cost-per-hour", self.gpu_cost_per_hour);
        problems.positive("queue-target", self.queue_target);
        problems.positive("ttft-target", self.ttft_target);
        problems.positive("token-target", self.token_target);
        problems.positive("concurrency-target", self.concurrency_target);
        problems.positive("kv-target", self.kv_target);
        problems.positive("cpu-target", self.cpu_target);
        problems.positive("cost-ratio", self.cost_ratio);
        problems.positive("warm-utilisation", self.warm_utilisation);
        if self.hash_block_tokens == 0 {
            problems.note("--hash-block-tokens must be positive");
        }
        if !(self.slo_attainment > 0.0 && self.slo_attainment <= 1.0) {
            problems.note("--slo-attainment must be in (0, 1]");
        }
        let initial = self.initial_replicas.unwrap_or(self.min_replicas);
        if self.min_replicas == 0 || self.min_replicas > initial || initial > self.max_replicas {
            problems.note("need 1 <= --min-replicas <= --initial-replicas <= --max-replicas");
        }
    }

    fn knobs(&self, reactive: Reactive) -> Knobs {
        Knobs {
            fixed_replicas: self.fixed_replicas,
            queue_target: self.queue_target,
            ttft_target: self.ttft_target,
            token_target: self.token_target,
            concurrency_target: self.concurrency_target,
            kv_target: self.kv_target,
            cpu_target: self.cpu_target,
            cost_ratio: self.cost_ratio,
            warm_utilisation: self.warm_utilisation,
            reactive,
            min_replicas: self.min_replicas,
        }
    }
}

impl Resolved {
    /// Loads or generates a trace and applies the scaling options.
    pub fn load(&self, source: &TraceSource) -> Result<Trace, CliError> {
        let (trace, density) = match source {
            TraceSource::File(path, density) => {
                (Trace::from_file(path, self.hash_block_tokens)?, *density)
            }
            TraceSource::Synthetic(spec, s) => (s.generate(spec)?, 1.0),
        };
        let trace = trace.time_scaled(self.time_scale)?;
        Ok(trace.densified(density, DENSITY_JITTER_SECS, self.config.seed)?)
    }

    /// Loads the first (for a single run, the only) trace.
    pub fn load_trace(&self) -> Result<Trace, CliError> {
        let source = self
            .sources
            .first()
            .ok_or_else(|| CliError::Invalid(vec!["no trace".to_owned()]))?;
        self.load(source)
    }

    /// `config` with the initial fleet sized from the trace when `--initial-replicas` was
    /// not given: what the first cold-start time needs, as if the fleet had been running.
    pub fn sized_for(&self, trace: &Trace, mut config: SimConfig) -> SimConfig {
        if self.auto_initial {
            let fleet = &mut config.fleet;
            let lead = fleet.time_to_ready.quantile(oracle::ORACLE_LEAD_QUANTILE);
            fleet.initial_replicas = oracle::initial_replicas(
                trace,
                &fleet.profile,
                lead,
                fleet.min_replicas,
                fleet.max_replicas,
            );
        }
        config
    }

    /// Runs every named policy on `trace`; `progress(policy, fraction)` is called during
    /// replays.
    pub fn run(
        &self,
        trace: &Trace,
        progress: &mut dyn FnMut(&str, f64),
    ) -> Result<(Report, Vec<RunResult>), CliError> {
        let config = self.sized_for(trace, self.config.clone());
        let mut results = Vec::new();
        for &kind in &self.policies {
            let result = match self.knobs.spec(kind) {
                None => {
                    progress("oracle (search)", 0.0);
                    let (result, _) = oracle::search(trace, &config, self.slo_attainment)?;
                    progress("oracle (search)", 1.0);
                    result
                }
                Some(spec) => {
                    let mut policy = spec.build(trace, &config, self.slo_attainment)?;
                    let name = kind.as_str();
                    simulate(trace, policy.as_mut(), &config, &mut |f| progress(name, f))?
                }
            };
            results.push(result);
        }
        let report = Report {
            trace: trace.name.clone(),
            requests: trace.requests.len(),
            trace_secs: trace.duration(),
            model: config.fleet.profile.name.clone(),
            slo_ttft_secs: config.slo_ttft_secs,
            time_to_ready_median_secs: config.fleet.time_to_ready.median_secs,
            gpu_cost_per_hour: config.fleet.cost.gpu_cost_per_hour,
            initial_replicas: config.fleet.initial_replicas,
            routing: config.fleet.routing.as_str(),
            rows: results.iter().map(PolicyRow::of).collect(),
        };
        Ok((report, results))
    }
}

/// Writes `body` to `path`.
pub fn write(path: &Path, body: &str) -> Result<(), CliError> {
    std::fs::write(path, body).map_err(|source| CliError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Creates `dir` and its parents.
pub fn create_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::Write {
        path: dir.to_owned(),
        source,
    })
}

/// Writes `timeline-<policy>.svg` per run, `ttft-cdf.svg` and `report.json` into `dir`.
pub fn write_outputs(dir: &Path, report: &Report, results: &[RunResult]) -> Result<(), CliError> {
    create_dir(dir)?;
    for r in results {
        let title = format!(
            "{} — {} (time-to-ready {} s)",
            r.policy, report.trace, report.time_to_ready_median_secs
        );
        write(
            &dir.join(format!("timeline-{}.svg", r.policy)),
            &svg::timeline(r, &title),
        )?;
    }
    let refs: Vec<&RunResult> = results.iter().collect();
    let title = format!("TTFT CDF — {}", report.trace);
    write(
        &dir.join("ttft-cdf.svg"),
        &svg::ttft_cdf(&refs, report.slo_ttft_secs, &title),
    )?;
    write(&dir.join("report.json"), &report.json()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn resolve(args: &[&str]) -> Result<Resolved, CliError> {
        let mut argv = vec!["scaler"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().args.resolve()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120s"), Some(120.0));
        assert_eq!(parse_duration("5m"), Some(300.0));
        assert_eq!(parse_duration("500ms"), Some(0.5));
        assert_eq!(parse_duration("2"), Some(2.0));
        assert_eq!(parse_duration("2 parsecs"), None);
        assert_eq!(parse_duration("-1s"), None);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let Err(CliError::Invalid(problems)) = resolve(&[
            "--synthetic",
            "poisson:rate=1,duration=10",
            "--policy",
            "hpa-magic",
            "--slo-ttft",
            "soon",
            "--routing",
            "telepathy",
            "--cost-ratio",
            "0",
        ]) else {
            panic!("should be refused");
        };
        let all = problems.join("\n");
        for expected in ["hpa-magic", "slo-ttft", "routing", "cost-ratio"] {
            assert!(all.contains(expected), "{all}");
        }
    }

    #[test]
    fn densities_pair_with_traces_and_times_with_the_sweep() {
        let r = resolve(&[
            "--trace",
            "a.csv",
            "--trace",
            "b.csv",
            "--density",
            "1,20",
            "--time-to-ready",
            "120s,5m",
        ])
        .unwrap();
        assert_eq!(r.times_to_ready, vec![120.0, 300.0]);
        assert!(
            matches!(&r.sources[1], TraceSource::File(p, d) if p == Path::new("b.csv") && *d == 20.0)
        );
        assert_eq!(r.config.fleet.routing, Routing::LeastOutstanding);
    }
}
