//! The warm pool as users run it: one HPA with two metrics — a reactive one and the warm
//! pool's recommendation — taking the larger, exactly as the HPA controller combines metrics.
//!
//! Owns: the timing and arithmetic of that composition. In a cluster the warm-pool controller
//! calls [`crate::decision::decide`] every decision period and writes its recommendation to the
//! WarmPool's status; inferscale's adapter serves it as the Object metric
//! `inferscale_recommended_replicas` on the workload; at each of its 15 s syncs the HPA reads it
//! with an `AverageValue` target of 1 (`GetObjectPerPodMetricReplicas`: the desired count is the
//! recommendation unless it is within the 0.1 tolerance of the pods that exist), reads its
//! reactive metric from the same adapter (a Pods metric: queue depth or prompt tokens per
//! second, fresh every 5 s), takes the larger valid proposal (`computeReplicasForMetrics`: a
//! metric that cannot be read never lets the other scale down), and stabilises and rate-limits
//! it with the usual behaviour (`normalizeDesiredReplicasWithBehaviors`). The reactive half is
//! [`Hpa`] unchanged, the warm half [`WarmPool`] unchanged: nothing here decides anything.
//! Does not own: the decision (see [`crate::decision`]) or the HPA rules (see [`super::hpa`]).
//!
//! Readiness tiers: where sleepers are pods of the workload, the recommendation the adapter
//! serves is `serving_replicas + sleeping_wanted` (see [`crate::decision`]'s contract), and the
//! awake replicas are the HPA's answer minus the sleepers.

use super::hpa::{
    object_per_pod_replicas, replicas_for_metrics, Hpa, HPA_SYNC_PERIOD_SECS, HPA_TOLERANCE,
};
use super::warm_pool::{DemandSource, WarmPool};
use super::{Decision, Policy};
use crate::observe::{Observation, SignalPath};

/// `averageValue` of the Object metric: 1 makes the desired count the recommendation itself.
pub const RECOMMENDATION_AVERAGE_VALUE: f64 = 1.0;

/// An HPA on a reactive metric and on the warm pool's recommendation.
#[derive(Debug, Clone)]
pub struct HpaWithWarmPool {
    hpa: Hpa,
    warm: WarmPool,
    /// When the HPA syncs next.
    next_sync: f64,
    /// What the adapter serves: the warm pool's latest recommendation, sleepers included.
    recommended: Option<u32>,
    /// Sleepers the warm pool keeps (pods of the workload, not serving).
    sleeping: u32,
    placeholders: u32,
}

impl HpaWithWarmPool {
    /// `hpa` reads its reactive metric through inferscale's adapter (its path is set to
    /// [`SignalPath::Direct`]); `warm` is the warm-pool policy whose recommendation the adapter
    /// serves.
    pub fn new(hpa: Hpa, warm: WarmPool) -> HpaWithWarmPool {
        HpaWithWarmPool {
            hpa: hpa.over(SignalPath::Direct),
            warm: warm.reading(DemandSource::Adapter),
            next_sync: HPA_SYNC_PERIOD_SECS,
            recommended: None,
            sleeping: 0,
            placeholders: 0,
        }
    }

    /// The warm pool inside (its latest recommendation, learned times).
    pub fn warm_pool(&self) -> &WarmPool {
        &self.warm
    }

    /// The HPA sync: both metrics' proposals, the larger one, stabilised and rate-limited.
    fn sync(&mut self, obs: &Observation) -> u32 {
        // `spec.replicas` counts sleeping pods of the workload too.
        let current = obs.desired_serving + self.sleeping;
        let normalizer = self.hpa.normalizer_mut();
        normalizer.seed(current, obs.now);
        // `status.replicas`: every pod of the workload (starting, ready, asleep).
        let status_replicas = obs.ready + obs.starting + obs.sleeping;
        let recommendation = self.recommended.and_then(|r| {
            object_per_pod_replicas(
                r as f64,
                status_replicas,
                RECOMMENDATION_AVERAGE_VALUE,
                HPA_TOLERANCE,
            )
        });
        let proposals = [self.hpa.proposal(obs, current), recommendation];
        match replicas_for_metrics(&proposals, current) {
            Some(p) => self.hpa.normalizer_mut().normalize(p, current, obs.now),
            None => current,
        }
    }
}

impl Policy for HpaWithWarmPool {
    fn name(&self) -> &str {
        "hpa+warm-pool"
    }

    fn signal_path(&self) -> SignalPath {
        SignalPath::Direct
    }

    fn decision_period(&self) -> f64 {
        self.warm.decision_period()
    }

    fn decide(&mut self, obs: &Observation) -> Decision {
        let warm = self.warm.decide(obs);
        self.recommended = Some(warm.serving + warm.sleeping);
        self.placeholders = warm.placeholders;
        let spec_replicas = if obs.now + 1e-9 >= self.next_sync {
            while self.next_sync <= obs.now + 1e-9 {
                self.next_sync += HPA_SYNC_PERIOD_SECS;
            }
            let desired = self.sync(obs);
            self.sleeping = warm.sleeping.min(desired.saturating_sub(1));
            desired
        } else {
            obs.desired_serving + self.sleeping
        };
        Decision {
            serving: spec_replicas.saturating_sub(self.sleeping),
            sleeping: self.sleeping,
            placeholders: self.placeholders,
            activator: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{PodPhase, PodView};
    use crate::policy::hpa::Behavior;
    use inferscale_metrics::fleet::FleetSignals;
    use inferscale_metrics::signals::{Latency, Missing, ModelSignals, Reading};

    use crate::policy::warm_pool::tests::observation;

    fn composed(min: u32) -> HpaWithWarmPool {
        let warm = crate::policy::warm_pool::tests::policy_with(0.001, min);
        let hpa = Hpa::queue_depth(4.0, min, 64, Behavior::default()).unwrap();
        HpaWithWarmPool::new(hpa, warm)
    }

    #[test]
    fn the_hpa_acts_only_at_its_syncs() {
        let mut p = composed(1);
        assert_eq!(p.decision_period(), 5.0);
        assert_eq!(p.signal_path(), SignalPath::Direct);
        // 5 s and 10 s: the warm pool decides, the HPA has not synced: spec stays at 2.
        assert_eq!(p.decide(&observation(5.0, 0.0, 0, 2)).serving, 2);
        assert_eq!(p.decide(&observation(10.0, 0.0, 0, 2)).serving, 2);
        assert!(p.recommended.is_some());
    }

    /// A ready pod as the adapter reads it: `prompt_rate` prompt tokens/s, nothing waiting.
    fn busy_pod(prompt_rate: f64) -> ModelSignals {
        let none = Latency::missing(Missing::NotExposed);
        ModelSignals {
            queue_depth: Reading::Value(0.0),
            running: Reading::Value(4.0),
            kv_cache_usage: Reading::Value(0.3),
            kv_cache_usage_max: Reading::Value(0.3),
            preemption_rate: Reading::Value(0.0),
            prompt_token_rate: Reading::Value(prompt_rate),
            generation_token_rate: Reading::Value(0.0),
            request_rate: Reading::Value(prompt_rate / 1000.0),
            request_rate_by_reason: Default::default(),
            time_to_first_token: none.clone(),
            inter_token_latency: none.clone(),
            end_to_end_latency: none.clone(),
            queue_time: none,
        }
    }

    fn with_pods(mut obs: Observation, pod: &ModelSignals) -> Observation {
        let pods: Vec<&ModelSignals> = (0..obs.ready).map(|_| pod).collect();
        obs.fleet = FleetSignals::of(&pods);
        obs.pods = (0..obs.ready)
            .map(|_| PodView {
                phase: PodPhase::Ready,
                signals: Some(pod.clone()),
                busy_fraction: Some(0.5),
            })
            .collect();
        obs
    }

    #[test]
    fn the_recommendation_raises_the_fleet_through_the_hpa_rate_limits() {
        let mut p = composed(1);
        // Three ready pods, each taking 15,000 prompt tokens/s and queueing nothing: the
        // queue metric proposes ceil(0 / 4 × 3) = 0. The warm pool reads 45,000 tokens/s ×
        // 1e-4 s/token = 4.5 replica-seconds of work per second; at the prior capacity of
        // 0.5 per replica that needs 9 replicas. At the first sync (15 s) the HPA takes the
        // larger proposal, 9, and its default scale-up policies allow max(3 + 4, 2 × 3) = 7.
        let pod = busy_pod(15_000.0);
        let mut serving = 3;
        for step in 1..=3 {
            let obs = with_pods(observation(step as f64 * 5.0, 0.0, 0, 3), &pod);
            serving = p.decide(&obs).serving;
        }
        let recommended = p.recommended.unwrap();
        assert!(recommended >= 9, "warm pool recommends {recommended}");
        assert_eq!(serving, 7);
    }
}
