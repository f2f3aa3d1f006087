//! Signals across replicas: sums, means, and percentiles of the merged histograms.
//!
//! Owns: combining [`ModelSignals`] of several replicas into one answer for a workload or a
//! model. Percentiles come from the bucket-wise sum of the replicas' window histograms —
//! the mean of per-replica p95s is not a p95 of anything and is never computed here.
//! Replicas whose value is missing are left out of that value (and counted), never averaged
//! in as zero. Idle replicas add no observations: when no replica observed anything in the
//! window, the fleet's latency is 0 (idle) if every replica with a window is idle, and missing
//! if any had requests waiting or running. This is the only place replicas are combined: the adapter (workloads,
//! namespaces, external metrics) and the simulator call it alike.

use crate::histogram::Histogram;
use crate::profile::HistogramSignal;
use crate::signals::{Latency, Missing, ModelSignals, Reading};
use serde::Serialize;

/// How one value is formed from the values of several replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Counts and rates add up.
    Sum,
    /// Ratios average over the replicas that have a value.
    Mean,
    /// The busiest replica.
    Max,
}

/// An aggregate of one signal over the replicas that had it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Aggregate {
    /// Sum over the replicas that have a value.
    pub sum: Reading,
    /// Mean over the replicas that have a value.
    pub mean: Reading,
    /// The largest value.
    pub max: Reading,
    /// Replicas that contributed.
    pub replicas: usize,
    /// Replicas whose value was missing.
    pub missing: usize,
}

impl Aggregate {
    /// Aggregates readings; missing ones are counted, not averaged in. When no replica has
    /// a value, the aggregate is missing for the first missing replica's reason
    /// ([`Missing::NotExposed`] when there are no replicas at all).
    pub fn of(readings: impl IntoIterator<Item = Reading>) -> Aggregate {
        let mut sum = 0.0;
        let mut max = f64::NEG_INFINITY;
        let mut replicas = 0;
        let mut missing = 0;
        let mut reason = None;
        for reading in readings {
            match reading {
                Reading::Value(v) => {
                    sum += v;
                    max = max.max(v);
                    replicas += 1;
                }
                Reading::Missing(why) => {
                    missing += 1;
                    reason.get_or_insert(why);
                }
            }
        }
        if replicas == 0 {
            let m = Reading::Missing(reason.unwrap_or(Missing::NotExposed));
            return Aggregate {
                sum: m,
                mean: m,
                max: m,
                replicas,
                missing,
            };
        }
        Aggregate {
            sum: Reading::Value(sum),
            mean: Reading::Value(sum / replicas as f64),
            max: Reading::Value(max),
            replicas,
            missing,
        }
    }

    /// The aggregate `combine` asks for.
    pub fn get(&self, combine: Combine) -> Reading {
        match combine {
            Combine::Sum => self.sum,
            Combine::Mean => self.mean,
            Combine::Max => self.max,
        }
    }
}

/// Signals of a set of replicas.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetSignals {
    /// Replicas given.
    pub replicas: usize,
    /// Requests waiting.
    pub queue_depth: Aggregate,
    /// Requests in the running batches.
    pub running: Aggregate,
    /// KV-cache usage, fraction 0–1.
    pub kv_cache_usage: Aggregate,
    /// Prompt tokens per second.
    pub prompt_token_rate: Aggregate,
    /// Generated tokens per second.
    pub generation_token_rate: Aggregate,
    /// Finished requests per second.
    pub request_rate: Aggregate,
    /// Preemptions per second.
    pub preemption_rate: Aggregate,
    /// Time to first token, from the merged window histograms.
    pub time_to_first_token: Latency,
    /// Inter-token latency, from the merged window histograms.
    pub inter_token_latency: Latency,
    /// Request latency, from the merged window histograms.
    pub end_to_end_latency: Latency,
    /// Time in the queue, from the merged window histograms.
    pub queue_time: Latency,
}

/// Merges the window histograms of `signal` over the replicas that have one.
///
/// The percentiles are those of the merged histogram, so they describe the requests the
/// replicas observed (idle replicas add none). With no observation at all, the result is
/// [`Latency::idle`] when every replica with a window was idle, and missing
/// ([`Missing::NoObservations`]) when any had requests waiting or running. Without any
/// window, it is missing for the first replica's reason.
pub fn merged_latency<'a>(
    replicas: impl IntoIterator<Item = &'a ModelSignals>,
    signal: HistogramSignal,
) -> Latency {
    let mut merged: Option<Histogram> = None;
    let mut reason = None;
    let mut every_window_idle = true;
    for replica in replicas {
        let latency = replica.latency(signal);
        match (&latency.window_histogram, &mut merged) {
            (Some(h), Some(m)) => m.merge(h),
            (Some(h), None) => merged = Some(h.clone()),
            (None, _) => {
                if let Reading::Missing(why) = latency.p50 {
                    reason.get_or_insert(why);
                }
            }
        }
        if latency.window_histogram.is_some() && !latency.idle {
            every_window_idle = false;
        }
    }
    match merged {
        Some(h) => Latency::from_window_or_idle(h, every_window_idle),
        None => Latency::missing(reason.unwrap_or(Missing::NotExposed)),
    }
}

impl FleetSignals {
    /// Combines the signals of `replicas` (one entry per replica or per model of one).
    pub fn of(replicas: &[&ModelSignals]) -> FleetSignals {
        let agg = |f: fn(&ModelSignals) -> Reading| Aggregate::of(replicas.iter().map(|r| f(r)));
        let lat = |h| merged_latency(replicas.iter().copied(), h);
        FleetSignals {
            replicas: replicas.len(),
            queue_depth: agg(|r| r.queue_depth),
            running: agg(|r| r.running),
            kv_cache_usage: agg(|r| r.kv_cache_usage),
            prompt_token_rate: agg(|r| r.prompt_token_rate),
            generation_token_rate: agg(|r| r.generation_token_rate),
            request_rate: agg(|r| r.request_rate),
            preemption_rate: agg(|r| r.preemption_rate),
            time_to_first_token: lat(HistogramSignal::TimeToFirstToken),
            inter_token_latency: lat(HistogramSignal::InterTokenLatency),
            end_to_end_latency: lat(HistogramSignal::EndToEndLatency),
            queue_time: lat(HistogramSignal::QueueTime),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::Latency;

    const BOUNDS: [f64; 3] = [0.1, 0.5, 1.0];

    /// A replica's TTFT over a window holding `observations`; `nothing_in_flight` as the
    /// gauges at its newest scrape would say.
    fn replica(observations: &[f64], nothing_in_flight: bool) -> ModelSignals {
        let mut window = Histogram::empty(&BOUNDS);
        for &v in observations {
            window.observe(v);
        }
        let gauge = Reading::Value(if nothing_in_flight { 0.0 } else { 2.0 });
        let none = Latency::missing(Missing::NotExposed);
        ModelSignals {
            queue_depth: gauge,
            running: gauge,
            kv_cache_usage: Reading::Missing(Missing::NotExposed),
            kv_cache_usage_max: Reading::Missing(Missing::NotExposed),
            preemption_rate: Reading::Missing(Missing::NotExposed),
            prompt_token_rate: Reading::Missing(Missing::NotExposed),
            generation_token_rate: Reading::Missing(Missing::NotExposed),
            request_rate: Reading::Missing(Missing::NotExposed),
            request_rate_by_reason: Default::default(),
            time_to_first_token: Latency::from_window_or_idle(window, nothing_in_flight),
            inter_token_latency: none.clone(),
            end_to_end_latency: none.clone(),
            queue_time: none,
        }
    }

    fn ttft(replicas: &[&ModelSignals]) -> Latency {
        merged_latency(replicas.iter().copied(), HistogramSignal::TimeToFirstToken)
    }

    #[test]
    fn idle_replicas_add_no_observations_to_a_fleet() {
        // Four requests of 0.3 s on one replica, another idle. Merged: 4 observations in
        // (0.1, 0.5]; p50 rank 2 → 0.1 + 0.4·2/4 = 0.3 s; p95 rank 3.8 → 0.1 + 0.4·3.8/4 = 0.48 s.
        let served = replica(&[0.3; 4], true);
        let idle = replica(&[], true);
        let fleet = ttft(&[&served, &idle]);
        assert!(!fleet.idle);
        assert!((fleet.p50.value().unwrap() - 0.3).abs() < 1e-12);
        assert!((fleet.p95.value().unwrap() - 0.48).abs() < 1e-12);
        assert_eq!(fleet.observations, Reading::Value(4.0));
        assert_eq!(
            fleet,
            ttft(&[&served]),
            "the same as without the idle replica"
        );
    }

    #[test]
    fn a_fleet_with_no_observations_is_idle_only_if_every_replica_is() {
        let idle = replica(&[], true);
        let busy = replica(&[], false);
        let all_idle = ttft(&[&idle, &idle]);
        assert!(all_idle.idle);
        assert_eq!(all_idle.p99, Reading::Value(0.0));
        assert_eq!(all_idle.quantile(0.95), Reading::Value(0.0));
        let mixed = ttft(&[&idle, &busy]);
        assert!(!mixed.idle);
        assert_eq!(mixed.p95, Reading::Missing(Missing::NoObservations));
        assert_eq!(
            mixed.quantile(0.95),
            Reading::Missing(Missing::NoObservations)
        );
    }

    #[test]
    fn a_busy_replica_without_observations_does_not_hide_the_others_requests() {
        // 2 requests of 0.7 s on one replica, another with requests queued and none observed:
        // the answer is the observed requests' (p50 rank 1 of 2 in (0.5, 1] → 0.75 s).
        let served = replica(&[0.7, 0.7], false);
        let busy = replica(&[], false);
        let fleet = ttft(&[&served, &busy]);
        assert!((fleet.p50.value().unwrap() - 0.75).abs() < 1e-12);
    }

    #[test]
    fn replicas_without_a_window_are_left_out() {
        let unknown = ModelSignals {
            time_to_first_token: Latency::missing(Missing::NeedsTwoScrapes),
            ..replica(&[], true)
        };
        let idle = replica(&[], true);
        assert!(ttft(&[&unknown, &idle]).idle);
        assert_eq!(
            ttft(&[&unknown]).p95,
            Reading::Missing(Missing::NeedsTwoScrapes)
        );
    }

    #[test]
    fn missing_replicas_are_counted_not_averaged_as_zero() {
        let a = Aggregate::of([
            Reading::Value(4.0),
            Reading::Missing(Missing::NeedsTwoScrapes),
            Reading::Value(2.0),
        ]);
        assert_eq!(a.sum, Reading::Value(6.0));
        assert_eq!(a.mean, Reading::Value(3.0));
        assert_eq!(a.replicas, 2);
        assert_eq!(a.missing, 1);
        assert_eq!(a.get(Combine::Max), Reading::Value(4.0));
        let none = Aggregate::of([
            Reading::Missing(Missing::NeedsTwoScrapes),
            Reading::Missing(Missing::NotExposed),
        ]);
        assert_eq!(
            none.mean,
            Reading::Missing(Missing::NeedsTwoScrapes),
            "first reason"
        );
        assert_eq!(
            Aggregate::of([]).sum,
            Reading::Missing(Missing::NotExposed),
            "no replicas"
        );
    }
}
