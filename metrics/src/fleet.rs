//! Signals across replicas: sums, means, and percentiles of the merged histograms.
//!
//! Owns: combining [`ModelSignals`] of several replicas into one answer for a workload or a
//! model. Percentiles come from the bucket-wise sum of the replicas' window histograms —
//! the mean of per-replica p95s is not a p95 of anything and is never computed here.
//! Replicas whose value is missing are left out of that value (and counted), never averaged
//! in as zero. This is the only place replicas are combined: the adapter (workloads,
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
pub fn merged_latency<'a>(
    replicas: impl IntoIterator<Item = &'a ModelSignals>,
    signal: HistogramSignal,
) -> Latency {
    let mut merged: Option<Histogram> = None;
    let mut reason = None;
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
    }
    match merged {
        Some(h) => Latency::from_window(h),
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
