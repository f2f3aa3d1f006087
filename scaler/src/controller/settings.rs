//! From a `WarmPool` spec to the decision core's [`Settings`]: defaults filled in, values
//! checked by the core's own validation.
//!
//! Owns: the defaults of every optional field (each documented in the CRD) and the mapping.
//! Pure: no Kubernetes client, no I/O.

use super::crd::WarmPoolSpec;
use crate::calibration::ModelProfile;
use crate::decision::forecast::ForecastSettings;
use crate::decision::{
    Bounds, Cost, Objective, Settings, SettingsError, TierSetting, Tiers, WorkModel,
};
use crate::policy::oracle;

/// Seconds between decisions when the spec does not say: the HPA's own default sync period,
/// so the recommendation is never staler than one HPA loop.
pub const DEFAULT_SYNC_PERIOD_SECS: u32 = 15;
/// Cold-start time assumed before one is observed: node provisioning (3–4 min on the large
/// clouds) is often avoided by a warm node pool, weight loading is not; three minutes sits in
/// between.
pub const DEFAULT_PRIOR_TIME_TO_READY_SECS: u32 = 180;
/// Wake time assumed before one is observed: vLLM's sleep-mode measurements put level-1
/// wakes at 0.3–6 s depending on model size.
pub const DEFAULT_PRIOR_WAKE_SECS: f64 = 5.0;
/// Default sleep level: level 1 keeps weights in CPU memory, so a wake is a copy, not a load.
pub const DEFAULT_SLEEP_LEVEL: u8 = 1;
/// vLLM's default HTTP port.
pub const DEFAULT_ENGINE_PORT: u16 = 8000;
/// Share of a replica kept busy within a TTFT objective of a second or two, until learned.
pub const DEFAULT_PRIOR_CAPACITY: f64 = 0.5;
/// The price a ratio-only spec is expressed in: one replica-hour.
const UNIT_PRICE: f64 = 1.0;

/// The core's settings for a spec; errors name the field.
pub fn settings(spec: &WarmPoolSpec) -> Result<Settings, SettingsError> {
    let period = f64::from(spec.sync_period_seconds.unwrap_or(DEFAULT_SYNC_PERIOD_SECS));
    let cost = match (
        spec.cost.miss_cost_ratio,
        spec.cost.gpu_price_per_replica_hour,
        spec.cost.miss_price,
    ) {
        (Some(ratio), _, _) => Cost::from_ratio(UNIT_PRICE, ratio),
        (None, Some(gpu), Some(miss)) => Cost {
            gpu_price_per_replica_hour: gpu,
            miss_price: miss,
        },
        _ => {
            return Err(SettingsError::OutOfRange(
                "cost: set missCostRatio, or gpuPricePerReplicaHour and missPrice",
            ))
        }
    };
    let tiers = spec.tiers.clone().unwrap_or_default();
    let forecast = spec.forecast.clone().unwrap_or_default();
    let defaults = ForecastSettings::default();
    let work = spec.work_model.clone().unwrap_or_default();
    // Defaults: the simulator's calibrated profile (Llama-3.1-8B BF16 on an H100), so the
    // controller and the simulator size the same fleet the same way.
    let profile = ModelProfile::llama31_8b_h100();
    let settings = Settings {
        objective: Objective {
            ttft_secs: f64::from(spec.objective.time_to_first_token_milliseconds) / 1000.0,
            attainment: spec.objective.attainment,
        },
        cost,
        tiers: Tiers {
            sleeping: tiers.sleeping.map_or(TierSetting::OFF, |t| TierSetting {
                enabled: true,
                price_share: t.price_factor.unwrap_or(1.0),
                max: t.max_replicas,
            }),
            placeholder: tiers.placeholder.map_or(TierSetting::OFF, |t| TierSetting {
                enabled: true,
                price_share: t.price_factor.unwrap_or(1.0),
                max: t.max_replicas,
            }),
        },
        bounds: Bounds {
            min_replicas: spec.bounds.min_replicas,
            max_replicas: spec.bounds.max_replicas,
        },
        work: WorkModel {
            prefill_secs_per_token: work
                .prefill_seconds_per_token
                .unwrap_or_else(|| oracle::prefill_secs_per_token(&profile)),
            decode_secs_per_token: work
                .decode_seconds_per_token
                .unwrap_or_else(|| oracle::decode_secs_per_token(&profile)),
            prior_capacity: work.prior_capacity.unwrap_or(DEFAULT_PRIOR_CAPACITY),
        },
        forecast: ForecastSettings {
            burst_window_secs: forecast
                .burst_window_seconds
                .map_or(defaults.burst_window_secs, f64::from),
            memory_secs: forecast
                .memory_seconds
                .map_or(defaults.memory_secs, f64::from),
            season_secs: forecast.season_seconds.map(f64::from),
        },
        decision_period_secs: period,
    };
    settings.validate()?;
    Ok(settings)
}

/// The prior median cold start of a spec, seconds.
pub fn prior_time_to_ready(spec: &WarmPoolSpec) -> f64 {
    f64::from(
        spec.forecast
            .as_ref()
            .and_then(|f| f.prior_time_to_ready_seconds)
            .unwrap_or(DEFAULT_PRIOR_TIME_TO_READY_SECS),
    )
}

/// Seconds between decisions.
pub fn sync_period(spec: &WarmPoolSpec) -> std::time::Duration {
    std::time::Duration::from_secs(u64::from(
        spec.sync_period_seconds.unwrap_or(DEFAULT_SYNC_PERIOD_SECS),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::crd::{self, WarmPoolSpec};

    fn spec() -> WarmPoolSpec {
        serde_json::from_value(serde_json::json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama"},
            "objective": {"timeToFirstTokenMilliseconds": 1500, "attainment": 0.99},
            "cost": {"gpuPricePerReplicaHour": 2.5, "missPrice": 0.01},
            "bounds": {"minReplicas": 1, "maxReplicas": 8},
            "tiers": {"sleeping": {"maxReplicas": 2, "priceFactor": 0.4}},
            "syncPeriodSeconds": 5
        }))
        .unwrap()
    }

    #[test]
    fn maps_the_spec_with_defaults() {
        let s = settings(&spec()).unwrap();
        assert_eq!(s.objective.ttft_secs, 1.5);
        assert_eq!(s.cost.miss_price, 0.01);
        assert!(s.tiers.sleeping.enabled);
        assert_eq!(s.tiers.sleeping.price_share, 0.4);
        assert!(!s.tiers.placeholder.enabled);
        assert_eq!(s.decision_period_secs, 5.0);
        assert_eq!(s.work.prior_capacity, DEFAULT_PRIOR_CAPACITY);
        assert_eq!(prior_time_to_ready(&spec()), 180.0);
    }

    #[test]
    fn a_ratio_prices_misses_in_replica_hours() {
        let mut spec = spec();
        spec.cost = crd::Cost {
            gpu_price_per_replica_hour: None,
            miss_price: None,
            miss_cost_ratio: Some(0.002),
        };
        let s = settings(&spec).unwrap();
        assert_eq!(s.cost.gpu_price_per_replica_hour, 1.0);
        assert_eq!(s.cost.miss_price, 0.002);
    }
}
