//! The `scaler simulate` command: arguments, their validation, and the run.
//!
//! Owns: the clap definitions, raw → validated configuration (every problem reported at
//! once), building the named policies, running them over the trace and writing the plots.
//! Does not own: printing and process exit (the binary), or any simulation logic.

use crate::calibration::{
    CostModel, ModelProfile, StartupTime, NODE_PROVISIONING_SHARE, SLEEP_WAKE_LOG_SIGMA,
    SLEEP_WAKE_MEDIAN_SECS, TIME_TO_READY_LOG_SIGMA,
};
use crate::decision::forecast::ForecastSettings;
use crate::decision::readiness::TimeToReady;
use crate::decision::{
    Bounds, Cost, Objective, Settings, TierSetting, TierTimes, Tiers, WorkModel,
};
use crate::policy::hpa::{Behavior, Hpa, DEFAULT_CPU_TARGET, DEFAULT_QUEUE_TARGET_PER_POD};
use crate::policy::keda::Keda;
use crate::policy::kpa::{Kpa, DEFAULT_AIBRIX_KV_TARGET, DEFAULT_KPA_CONCURRENCY_TARGET};
use crate::policy::warm_pool::{
    WarmPool, DEFAULT_COST_RATIO, DEFAULT_WARM_POOL_UTILISATION, WARM_POOL_PERIOD_SECS,
};
use crate::policy::{oracle, Policy, PolicyError, PolicyKind};
use crate::replay::{simulate, FleetConfig, Routing, RunResult, SimConfig, SimError};
use crate::report::{PolicyRow, Report, ReportError};
use crate::svg;
use crate::trace::{Synthetic, Trace, TraceError};
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
    /// Writing the output directory failed.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Jitter of copies made by `--density`: a second keeps per-second burst structure while
/// spreading duplicates so they do not arrive at the exact same instant.
const DENSITY_JITTER_SECS: f64 = 1.0;

/// Arguments of `scaler simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// CSV trace with TIMESTAMP, ContextTokens, GeneratedTokens columns.
    #[arg(long, conflicts_with = "synthetic")]
    pub trace: Option<PathBuf>,
    /// Synthetic trace, e.g. `poisson:rate=5,duration=3600`,
    /// `bursts:base=2,peak=20,every=600,length=60,duration=3600`, `diurnal:mean=5,duration=86400`,
    /// `ramp:from=1,to=20,duration=3600`.
    #[arg(long)]
    pub synthetic: Option<String>,
    /// Replay the trace this many times faster (shorter and denser).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Make the trace this many times denser on the same time axis (copies with 1 s jitter).
    #[arg(long, default_value_t = 1.0)]
    pub density: f64,
    /// Policies to compare, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "hpa-cpu,hpa-queue,keda,kpa,aibrix,warm-pool,oracle"
    )]
    pub policy: Vec<String>,
    /// Median cold start of a new replica (e.g. 120s, 5m).
    #[arg(long, default_value = "120s")]
    pub time_to_ready: String,
    /// Time-to-first-token objective (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s")]
    pub slo_ttft: String,
    /// Attainment the oracle must reach (fraction of requests within the objective).
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
    /// HPA / KEDA target of waiting requests per pod.
    #[arg(long, default_value_t = DEFAULT_QUEUE_TARGET_PER_POD)]
    pub queue_target: f64,
    /// KPA target of in-flight requests per pod (also the warm pool's per-pod concurrency).
    #[arg(long, default_value_t = DEFAULT_KPA_CONCURRENCY_TARGET)]
    pub concurrency_target: f64,
    /// AIBrix-like target KV-cache usage per pod (fraction).
    #[arg(long, default_value_t = DEFAULT_AIBRIX_KV_TARGET)]
    pub kv_target: f64,
    /// HPA-CPU target utilisation (fraction).
    #[arg(long, default_value_t = DEFAULT_CPU_TARGET)]
    pub cpu_target: f64,
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
    /// Directory for SVG plots (and report.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
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

/// Validated arguments.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub source: TraceSource,
    pub time_scale: f64,
    pub density: f64,
    pub policies: Vec<PolicyKind>,
    pub config: SimConfig,
    pub slo_attainment: f64,
    pub queue_target: f64,
    pub concurrency_target: f64,
    pub kv_target: f64,
    pub cpu_target: f64,
    pub cost_ratio: f64,
    pub warm_utilisation: f64,
    pub out: Option<PathBuf>,
    /// Size the initial fleet from the trace (no `--initial-replicas` given).
    pub auto_initial: bool,
    max_replicas_arg: u32,
}

/// Where requests come from.
#[derive(Debug, Clone)]
pub enum TraceSource {
    File(PathBuf),
    Synthetic(String, Synthetic),
}

impl SimulateArgs {
    /// Checks every argument and reports all problems together.
    pub fn resolve(&self) -> Result<Resolved, CliError> {
        let mut problems = Vec::new();
        let source = match (&self.trace, &self.synthetic) {
            (Some(path), _) => Some(TraceSource::File(path.clone())),
            (None, Some(spec)) => match Synthetic::parse(spec) {
                Ok(s) => Some(TraceSource::Synthetic(spec.clone(), s)),
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            },
            (None, None) => {
                problems.push("one of --trace or --synthetic is required".to_owned());
                None
            }
        };
        let mut policies = Vec::new();
        for name in &self.policy {
            match PolicyKind::parse(name) {
                Ok(k) if !policies.contains(&k) => policies.push(k),
                Ok(_) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        let mut duration = |flag: &str, value: &str| match parse_duration(value) {
            Some(v) if v > 0.0 => v,
            _ => {
                problems.push(format!("--{flag} {value:?} is not a positive duration"));
                1.0
            }
        };
        let time_to_ready = duration("time-to-ready", &self.time_to_ready);
        let slo = duration("slo-ttft", &self.slo_ttft);
        let mut positive = |flag: &str, v: f64| {
            if !(v.is_finite() && v > 0.0) {
                problems.push(format!("--{flag} must be positive"));
            }
        };
        positive("time-scale", self.time_scale);
        positive("density", self.density);
        positive("gpu-cost-per-hour", self.gpu_cost_per_hour);
        positive("queue-target", self.queue_target);
        positive("concurrency-target", self.concurrency_target);
        positive("kv-target", self.kv_target);
        positive("cpu-target", self.cpu_target);
        positive("cost-ratio", self.cost_ratio);
        if !(self.warm_utilisation > 0.0 && self.warm_utilisation <= 1.0) {
            problems.push("--warm-utilisation must be in (0, 1]".to_owned());
        }
        if !(self.slo_attainment > 0.0 && self.slo_attainment <= 1.0) {
            problems.push("--slo-attainment must be in (0, 1]".to_owned());
        }
        let initial = self.initial_replicas.unwrap_or(self.min_replicas);
        let max_replicas = self.max_replicas;
        if self.min_replicas == 0 || self.min_replicas > initial || initial > self.max_replicas {
            problems.push(
                "need 1 <= --min-replicas <= --initial-replicas <= --max-replicas".to_owned(),
            );
        }
        let ttr = StartupTime::new(time_to_ready, TIME_TO_READY_LOG_SIGMA);
        let wake = StartupTime::new(SLEEP_WAKE_MEDIAN_SECS, SLEEP_WAKE_LOG_SIGMA);
        let (Some(source), Ok(ttr), Ok(wake), true) = (source, ttr, wake, problems.is_empty())
        else {
            return Err(CliError::Invalid(problems));
        };
        Ok(Resolved {
            source,
            time_scale: self.time_scale,
            density: self.density,
            policies,
            config: SimConfig {
                fleet: FleetConfig {
                    profile: ModelProfile::llama31_8b_h100(),
                    min_replicas: self.min_replicas,
                    max_replicas: self.max_replicas,
                    initial_replicas: initial,
                    time_to_ready: ttr,
                    wake,
                    node_provisioning_share: NODE_PROVISIONING_SHARE,
                    cost: CostModel {
                        gpu_cost_per_hour: self.gpu_cost_per_hour,
                    },
                    routing: Routing::LeastOutstanding,
                },
                slo_ttft_secs: slo,
                seed: self.seed,
            },
            slo_attainment: self.slo_attainment,
            queue_target: self.queue_target,
            concurrency_target: self.concurrency_target,
            kv_target: self.kv_target,
            cpu_target: self.cpu_target,
            cost_ratio: self.cost_ratio,
            warm_utilisation: self.warm_utilisation,
            out: self.out.clone(),
            auto_initial: self.initial_replicas.is_none(),
            max_replicas_arg: max_replicas,
        })
    }
}

impl Resolved {
    /// Loads or generates the trace and applies the scaling options.
    pub fn load_trace(&self) -> Result<Trace, CliError> {
        let trace = match &self.source {
            TraceSource::File(path) => Trace::from_csv_file(path)?,
            TraceSource::Synthetic(spec, s) => s.generate(spec)?,
        };
        let trace = trace.time_scaled(self.time_scale)?;
        Ok(trace.densified(self.density, DENSITY_JITTER_SECS, self.config.seed)?)
    }

    /// Sets the initial fleet from the trace when `--initial-replicas` was not given.
    pub fn size_initial_fleet(&mut self, trace: &Trace) {
        if !self.auto_initial {
            return;
        }
        let fleet = &mut self.config.fleet;
        let lead = fleet.time_to_ready.quantile(oracle::ORACLE_LEAD_QUANTILE);
        fleet.initial_replicas = oracle::initial_replicas(
            trace,
            &fleet.profile,
            lead,
            fleet.min_replicas,
            self.max_replicas_arg,
        );
    }

    /// Builds a (non-oracle) policy by kind.
    pub fn build_policy(&self, kind: PolicyKind) -> Result<Box<dyn Policy>, CliError> {
        let f = &self.config.fleet;
        let (min, max) = (f.min_replicas, f.max_replicas);
        Ok(match kind {
            PolicyKind::HpaCpu => Box::new(Hpa::cpu_like(self.cpu_target, min, max)?),
            PolicyKind::HpaQueue => Box::new(Hpa::queue_depth(
                self.queue_target,
                min,
                max,
                Behavior::default(),
            )?),
            PolicyKind::Keda => Box::new(Keda::new(self.queue_target, min, max)?),
            PolicyKind::Kpa => Box::new(Kpa::knative(self.concurrency_target, min, max)?),
            PolicyKind::Aibrix => Box::new(Kpa::aibrix(self.kv_target, min, max)?),
            PolicyKind::WarmPool => {
                let cold = f.time_to_ready;
                Box::new(WarmPool::new(
                    Settings {
                        objective: Objective {
                            ttft_secs: self.config.slo_ttft_secs,
                            attainment: self.slo_attainment,
                        },
                        cost: Cost::from_ratio(f.cost.gpu_cost_per_hour, self.cost_ratio),
                        tiers: Tiers {
                            sleeping: TierSetting::OFF,
                            placeholder: TierSetting::OFF,
                        },
                        bounds: Bounds {
                            min_replicas: min,
                            max_replicas: max,
                        },
                        work: WorkModel {
                            prefill_secs_per_token: oracle::prefill_secs_per_token(&f.profile),
                            decode_secs_per_token: oracle::decode_secs_per_token(&f.profile),
                            prior_capacity: self.warm_utilisation,
                        },
                        forecast: ForecastSettings::default(),
                        decision_period_secs: WARM_POOL_PERIOD_SECS,
                    },
                    TierTimes {
                        cold: TimeToReady::prior(cold.median_secs),
                        placeholder: TimeToReady::prior(
                            cold.median_secs * (1.0 - f.node_provisioning_share),
                        ),
                        wake: TimeToReady::prior(f.wake.median_secs),
                    },
                )?)
            }
            PolicyKind::Oracle => {
                return Err(CliError::Invalid(vec![
                    "the oracle is built by searching, not by name".to_owned(),
                ]))
            }
        })
    }

    /// Runs every policy; `progress(policy, fraction)` is called during replays.
    pub fn run(
        &self,
        trace: &Trace,
        progress: &mut dyn FnMut(&str, f64),
    ) -> Result<(Report, Vec<RunResult>), CliError> {
        let mut results = Vec::new();
        for &kind in &self.policies {
            let result = if kind == PolicyKind::Oracle {
                progress("oracle (search)", 0.0);
                let (result, _) = oracle::search(trace, &self.config, self.slo_attainment)?;
                progress("oracle (search)", 1.0);
                result
            } else {
                let mut policy = self.build_policy(kind)?;
                let name = kind.as_str();
                simulate(trace, policy.as_mut(), &self.config, &mut |f| {
                    progress(name, f)
                })?
            };
            results.push(result);
        }
        let report = Report {
            trace: trace.name.clone(),
            requests: trace.requests.len(),
            trace_secs: trace.duration(),
            model: self.config.fleet.profile.name.clone(),
            slo_ttft_secs: self.config.slo_ttft_secs,
            time_to_ready_median_secs: self.config.fleet.time_to_ready.median_secs,
            gpu_cost_per_hour: self.config.fleet.cost.gpu_cost_per_hour,
            initial_replicas: self.config.fleet.initial_replicas,
            rows: results.iter().map(PolicyRow::of).collect(),
        };
        Ok((report, results))
    }
}

fn write(path: &Path, body: &str) -> Result<(), CliError> {
    std::fs::write(path, body).map_err(|source| CliError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Writes `timeline-<policy>.svg` per run, `ttft-cdf.svg` and `report.json` into `dir`.
pub fn write_outputs(dir: &Path, report: &Report, results: &[RunResult]) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::Write {
        path: dir.to_owned(),
        source,
    })?;
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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120s"), Some(120.0));
        assert_eq!(parse_duration("5m"), Some(300.0));
        assert_eq!(parse_duration("500ms"), Some(0.5));
        assert_eq!(parse_duration("2"), Some(2.0));
        assert_eq!(parse_duration("2 parsecs"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
