//! Policies with their knobs, as data: what `scaler simulate` builds by name and what a
//! sweep enumerates.
//!
//! Owns: [`PolicySpec`] (a policy family and the values of its knobs), its label, and building
//! the policy for a run ([`PolicySpec::build`]). Does not own: the policies (their modules)
//! or running them ([`crate::replay`]).

use super::fixed::Fixed;
use super::hpa::{Behavior, Hpa};
use super::hpa_warm_pool::HpaWithWarmPool;
use super::keda::Keda;
use super::kpa::Kpa;
use super::oracle::{self, Oracle};
use super::warm_pool::{WarmPool, WARM_POOL_PERIOD_SECS};
use super::{Policy, PolicyError};
use crate::decision::forecast::ForecastSettings;
use crate::decision::readiness::TimeToReady;
use crate::decision::{
    Bounds, Cost, Objective, Settings, TierSetting, TierTimes, Tiers, WorkModel,
};
use crate::observe::SignalPath;
use crate::replay::SimConfig;
use crate::trace::Trace;
use serde::Serialize;

/// The reactive metric of an HPA read through inferscale's adapter (alone, or beside the warm
/// pool's recommendation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reactive {
    /// `vllm:num_requests_waiting` per pod (Pods metric, `AverageValue`).
    Queue,
    /// Prompt tokens per second per pod (Pods metric, `AverageValue`).
    Tokens,
    /// The workload's TTFT p90 in seconds (Object metric on the Deployment, `Value`).
    Ttft,
}

impl Reactive {
    pub fn as_str(self) -> &'static str {
        match self {
            Reactive::Queue => "queue",
            Reactive::Tokens => "tokens",
            Reactive::Ttft => "ttft",
        }
    }

    pub fn parse(name: &str) -> Option<Reactive> {
        [Reactive::Queue, Reactive::Tokens, Reactive::Ttft]
            .into_iter()
            .find(|r| r.as_str() == name.trim())
    }

    /// The HPA on this metric with `target` per pod.
    fn hpa(self, target: f64, min: u32, max: u32) -> Result<Hpa, PolicyError> {
        match self {
            Reactive::Queue => Hpa::queue_depth(target, min, max, Behavior::default()),
            Reactive::Tokens => Hpa::prompt_token_rate(target, min, max),
            Reactive::Ttft => Hpa::ttft_p90(target, min, max),
        }
    }
}

/// A policy and its knob values. `min` is the policy's own minimum replicas (an HPA's
/// `minReplicas`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "policy", rename_all = "kebab-case")]
pub enum PolicySpec {
    Fixed {
        replicas: u32,
    },
    HpaCpu {
        target: f64,
        min: u32,
    },
    HpaQueue {
        target: f64,
        min: u32,
    },
    HpaTtft {
        target_secs: f64,
        min: u32,
    },
    HpaTokens {
        target: f64,
        min: u32,
    },
    Keda {
        threshold: f64,
        min: u32,
    },
    Kpa {
        target: f64,
        min: u32,
    },
    Aibrix {
        target: f64,
        min: u32,
    },
    WarmPool {
        cost_ratio: f64,
        capacity: f64,
        min: u32,
    },
    /// An HPA on a reactive metric served by inferscale's adapter (5 s scrapes, no Prometheus):
    /// the reactive half of [`PolicySpec::HpaWarmPool`] on its own.
    HpaAdapter {
        metric: Reactive,
        target: f64,
        min: u32,
    },
    /// The warm pool as users run it: an HPA on a reactive metric and the warm pool's
    /// recommendation, the larger of the two.
    #[serde(rename = "hpa+warm-pool")]
    HpaWarmPool {
        metric: Reactive,
        target: f64,
        cost_ratio: f64,
        capacity: f64,
        min: u32,
    },
    /// The clairvoyant plan with this headroom over the work (a heuristic reference).
    Oracle {
        headroom: f64,
    },
}

impl PolicySpec {
    /// The policy family's name.
    pub fn family(&self) -> &'static str {
        match self {
            PolicySpec::Fixed { .. } => "fixed",
            PolicySpec::HpaCpu { .. } => "hpa-cpu",
            PolicySpec::HpaQueue { .. } => "hpa-queue",
            PolicySpec::HpaTtft { .. } => "hpa-ttft",
            PolicySpec::HpaTokens { .. } => "hpa-tokens",
            PolicySpec::Keda { .. } => "keda",
            PolicySpec::Kpa { .. } => "kpa",
            PolicySpec::Aibrix { .. } => "aibrix",
            PolicySpec::WarmPool { .. } => "warm-pool",
            PolicySpec::HpaAdapter { .. } => "hpa-adapter",
            PolicySpec::HpaWarmPool { .. } => "hpa+warm-pool",
            PolicySpec::Oracle { .. } => "oracle",
        }
    }

    /// The setting a [`PolicySpec::label`] names (how an earlier report's `runs.md` is read
    /// back); `None` when the text is no label.
    pub fn parse_label(label: &str) -> Option<PolicySpec> {
        let (family, rest) = label.trim().split_once('(')?;
        let args = rest.strip_suffix(')')?;
        let mut pairs = Vec::new();
        for arg in args.split(',') {
            match arg.split_once('=') {
                Some((k, v)) => pairs.push((k, v)),
                None => pairs.push(("", arg)),
            }
        }
        let get = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let num = |key: &str| get(key)?.trim_end_matches('s').parse::<f64>().ok();
        let min = || get("min")?.parse::<u32>().ok();
        let reactive = || {
            pairs
                .iter()
                .find_map(|(k, v)| Some((Reactive::parse(k)?, v.parse::<f64>().ok()?)))
        };
        Some(match family {
            "fixed" => PolicySpec::Fixed {
                replicas: get("")?.parse().ok()?,
            },
            "hpa-cpu" => PolicySpec::HpaCpu {
                target: num("target")?,
                min: min()?,
            },
            "hpa-queue" | "hpa-tokens" | "kpa" | "aibrix" => {
                let (target, min) = (num("target")?, min()?);
                match family {
                    "hpa-queue" => PolicySpec::HpaQueue { target, min },
                    "hpa-tokens" => PolicySpec::HpaTokens { target, min },
                    "kpa" => PolicySpec::Kpa { target, min },
                    _ => PolicySpec::Aibrix { target, min },
                }
            }
            "hpa-ttft" => PolicySpec::HpaTtft {
                target_secs: num("target")?,
                min: min()?,
            },
            "keda" => PolicySpec::Keda {
                threshold: num("threshold")?,
                min: min()?,
            },
            "warm-pool" => PolicySpec::WarmPool {
                cost_ratio: num("ratio")?,
                capacity: num("capacity")?,
                min: min()?,
            },
            "hpa-adapter" => {
                let (metric, target) = reactive()?;
                PolicySpec::HpaAdapter {
                    metric,
                    target,
                    min: min()?,
                }
            }
            "hpa+warm-pool" => {
                let (metric, target) = reactive()?;
                PolicySpec::HpaWarmPool {
                    metric,
                    target,
                    cost_ratio: num("ratio")?,
                    capacity: num("capacity")?,
                    min: min()?,
                }
            }
            "oracle" => PolicySpec::Oracle {
                headroom: num("headroom")?,
            },
            _ => return None,
        })
    }

    /// The family with its knobs, e.g. `hpa-queue(target=1,min=2)`.
    pub fn label(&self) -> String {
        match *self {
            PolicySpec::Fixed { replicas } => format!("fixed({replicas})"),
            PolicySpec::HpaCpu { target, min }
            | PolicySpec::HpaQueue { target, min }
            | PolicySpec::HpaTokens { target, min }
            | PolicySpec::Kpa { target, min }
            | PolicySpec::Aibrix { target, min } => {
                format!("{}(target={target},min={min})", self.family())
            }
            PolicySpec::HpaTtft { target_secs, min } => {
                format!("hpa-ttft(target={target_secs}s,min={min})")
            }
            PolicySpec::Keda { threshold, min } => format!("keda(threshold={threshold},min={min})"),
            PolicySpec::WarmPool {
                cost_ratio,
                capacity,
                min,
            } => format!("warm-pool(ratio={cost_ratio},capacity={capacity},min={min})"),
            PolicySpec::HpaAdapter {
                metric,
                target,
                min,
            } => format!("hpa-adapter({}={target},min={min})", metric.as_str()),
            PolicySpec::HpaWarmPool {
                metric,
                target,
                cost_ratio,
                capacity,
                min,
            } => format!(
                "hpa+warm-pool({}={target},ratio={cost_ratio},capacity={capacity},min={min})",
                metric.as_str()
            ),
            PolicySpec::Oracle { headroom } => format!("oracle(headroom={headroom:.3})"),
        }
    }

    /// Builds the policy for a run of `trace` under `config` (whose `max_replicas` bounds
    /// every policy).
    pub fn build(
        &self,
        trace: &Trace,
        config: &SimConfig,
        attainment: f64,
    ) -> Result<Box<dyn Policy>, PolicyError> {
        let f = &config.fleet;
        let max = f.max_replicas;
        Ok(match *self {
            PolicySpec::Fixed { replicas } => Box::new(Fixed::new(replicas.min(max))),
            PolicySpec::HpaCpu { target, min } => Box::new(Hpa::cpu_like(target, min, max)?),
            PolicySpec::HpaQueue { target, min } => {
                Box::new(Hpa::queue_depth(target, min, max, Behavior::default())?)
            }
            PolicySpec::HpaTtft { target_secs, min } => {
                Box::new(Hpa::ttft_p90(target_secs, min, max)?)
            }
            PolicySpec::HpaTokens { target, min } => {
                Box::new(Hpa::prompt_token_rate(target, min, max)?)
            }
            PolicySpec::Keda { threshold, min } => Box::new(Keda::new(threshold, min, max)?),
            PolicySpec::Kpa { target, min } => Box::new(Kpa::knative(target, min, max)?),
            PolicySpec::Aibrix { target, min } => Box::new(Kpa::aibrix(target, min, max)?),
            PolicySpec::WarmPool {
                cost_ratio,
                capacity,
                min,
            } => Box::new(warm_pool(config, attainment, cost_ratio, capacity, min)?),
            PolicySpec::HpaAdapter {
                metric,
                target,
                min,
            } => Box::new(
                metric
                    .hpa(target, min, max)?
                    .over(SignalPath::Direct)
                    .named("hpa-adapter"),
            ),
            PolicySpec::HpaWarmPool {
                metric,
                target,
                cost_ratio,
                capacity,
                min,
            } => Box::new(HpaWithWarmPool::new(
                metric.hpa(target, min, max)?,
                warm_pool(config, attainment, cost_ratio, capacity, min)?,
            )),
            PolicySpec::Oracle { headroom } => {
                let work = oracle::window_work(trace, &f.profile);
                let lead = f.time_to_ready.quantile(oracle::ORACLE_LEAD_QUANTILE);
                Box::new(Oracle::new(&work, headroom, lead, f.min_replicas, max))
            }
        })
    }
}

/// The warm pool as the simulator runs it: the decision core's settings from the run's
/// objective, prices and calibration; priors from the calibration's cold start and wake.
fn warm_pool(
    config: &SimConfig,
    attainment: f64,
    cost_ratio: f64,
    capacity: f64,
    min: u32,
) -> Result<WarmPool, PolicyError> {
    let f = &config.fleet;
    let cold = f.time_to_ready;
    WarmPool::new(
        Settings {
            objective: Objective {
                ttft_secs: config.slo_ttft_secs,
                attainment,
            },
            cost: Cost::from_ratio(f.cost.gpu_cost_per_hour, cost_ratio),
            tiers: Tiers {
                sleeping: TierSetting::OFF,
                placeholder: TierSetting::OFF,
            },
            bounds: Bounds {
                min_replicas: min.clamp(1, f.max_replicas),
                max_replicas: f.max_replicas,
            },
            work: WorkModel {
                prefill_secs_per_token: oracle::prefill_secs_per_token(&f.profile),
                decode_secs_per_token: oracle::decode_secs_per_token(&f.profile),
                prior_capacity: capacity,
            },
            forecast: ForecastSettings::default(),
            decision_period_secs: WARM_POOL_PERIOD_SECS,
        },
        TierTimes {
            cold: TimeToReady::prior(cold.median_secs),
            placeholder: TimeToReady::prior(cold.median_secs * (1.0 - f.node_provisioning_share)),
            wake: TimeToReady::prior(f.wake.median_secs),
        },
    )
}
