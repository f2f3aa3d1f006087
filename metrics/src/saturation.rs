//! Derived saturation signals of one replica: how much room it has left, and one 0–1 figure
//! to scale on.
//!
//! Owns: the three formulas. With `u` the KV-cache usage (0–1, clamped), `C` the KV-cache
//! capacity in tokens (`num_gpu_blocks × block_size`), `r` the running and `q` the waiting
//! requests:
//!
//! - **KV headroom** (tokens) = `(1 − u) · C`: how many more tokens of context fit.
//! - **Capacity in use** (0–1) = `1` when `q > 0`, else `u`. An engine queues only when it
//!   cannot admit (its KV blocks, batch slots or token budget are full), so a replica with a
//!   queue is full; otherwise the KV cache is the capacity it measures. (Batch slots,
//!   `--max-num-seqs`, are not exposed by vLLM, so a replica bound by slots with no queue
//!   reads as its KV share.)
//! - **Saturation** (0–1) = `1 − (1 − u) · (1 − w)`, `w = q / (q + r)` (0 with no requests):
//!   either resource drives it to 1 — KV memory filling up, or requests waiting instead of
//!   running. With nothing waiting it equals `u`; a replica with as many requests waiting as
//!   running is at least 0.5.
//!
//! Each is missing when an input is, never 0. Across replicas (a Deployment) headroom adds
//! up and the two ratios average, so they read as the fleet's share.
//! Does not own: reading the inputs (`signals`) or combining replicas (`fleet`).

use crate::signals::{Missing, Reading};

fn usage(kv_cache_usage: Reading) -> Result<f64, Missing> {
    match kv_cache_usage {
        Reading::Value(u) => Ok(u.clamp(0.0, 1.0)),
        Reading::Missing(m) => Err(m),
    }
}

fn count(reading: Reading) -> Result<f64, Missing> {
    match reading {
        Reading::Value(v) => Ok(v.max(0.0)),
        Reading::Missing(m) => Err(m),
    }
}

fn reading(value: Result<f64, Missing>) -> Reading {
    value.map_or_else(Reading::Missing, Reading::Value)
}

/// Free KV-cache tokens: `(1 − u) · C`.
pub fn kv_headroom_tokens(kv_cache_usage: Reading, kv_capacity_tokens: Reading) -> Reading {
    reading(usage(kv_cache_usage).and_then(|u| Ok((1.0 - u) * count(kv_capacity_tokens)?)))
}

/// Share of the replica's serving capacity in use: 1 with a queue, else the KV share.
pub fn capacity_in_use(kv_cache_usage: Reading, waiting: Reading) -> Reading {
    reading(usage(kv_cache_usage).and_then(|u| {
        let q = count(waiting)?;
        Ok(if q > 0.0 { 1.0 } else { u })
    }))
}

/// Combined saturation: `1 − (1 − u) · (1 − q / (q + r))`.
pub fn saturation(kv_cache_usage: Reading, running: Reading, waiting: Reading) -> Reading {
    reading(usage(kv_cache_usage).and_then(|u| {
        let (r, q) = (count(running)?, count(waiting)?);
        let waiting_share = if q + r > 0.0 { q / (q + r) } else { 0.0 };
        Ok(1.0 - (1.0 - u) * (1.0 - waiting_share))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: fn(f64) -> Reading = Reading::Value;

    fn value(r: Reading) -> f64 {
        r.value().unwrap_or(f64::NAN)
    }

    #[test]
    fn headroom_is_the_free_share_of_the_cache_in_tokens() {
        // 5943 blocks × 16 tokens, a quarter in use: 71,316 tokens free.
        assert_eq!(value(kv_headroom_tokens(V(0.25), V(95_088.0))), 71_316.0);
        assert_eq!(value(kv_headroom_tokens(V(1.2), V(1000.0))), 0.0);
        let no_capacity = kv_headroom_tokens(V(0.25), Reading::Missing(Missing::NotExposed));
        assert_eq!(no_capacity, Reading::Missing(Missing::NotExposed));
    }

    #[test]
    fn a_queue_means_full_otherwise_the_kv_share() {
        assert_eq!(value(capacity_in_use(V(0.3), V(0.0))), 0.3);
        assert_eq!(value(capacity_in_use(V(0.3), V(2.0))), 1.0);
        assert_eq!(
            capacity_in_use(Reading::Missing(Missing::NotExposed), V(0.0)),
            Reading::Missing(Missing::NotExposed)
        );
    }

    #[test]
    fn saturation_rises_with_memory_or_with_waiting() {
        // Idle: 0. Nothing waiting: the KV share.
        assert_eq!(value(saturation(V(0.0), V(0.0), V(0.0))), 0.0);
        assert_eq!(value(saturation(V(0.4), V(4.0), V(0.0))), 0.4);
        // As many waiting as running, KV 20 %: 1 − 0.8 × 0.5 = 0.6.
        assert!((value(saturation(V(0.2), V(4.0), V(4.0))) - 0.6).abs() < 1e-12);
        // Three waiting for every one running, KV 0: 0.75. A full cache: 1.
        assert_eq!(value(saturation(V(0.0), V(1.0), V(3.0))), 0.75);
        assert_eq!(value(saturation(V(1.0), V(4.0), V(0.0))), 1.0);
        assert!(
            saturation(V(0.2), Reading::Missing(Missing::NotExposed), V(1.0))
                .value()
                .is_none()
        );
    }
}
