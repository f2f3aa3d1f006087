//! Classic (bucketed) Prometheus histograms: window deltas, merging and quantiles.
//!
//! Owns: the arithmetic. A [`Histogram`] is cumulative bucket counts by upper bound, as on
//! the wire. Quantiles follow PromQL's `histogram_quantile` exactly (linear interpolation
//! inside a bucket, the lowest bucket starts at 0 when its bound is positive, a rank that
//! falls in the `+Inf` bucket answers the highest finite bound). Merging adds bucket counts,
//! which is what makes fleet-wide percentiles correct — averaging per-pod percentiles is not.
//! Does not own: deciding which scrapes form a window (see [`crate::signals`]).

use serde::Serialize;

/// Cumulative bucket counts of one histogram series (or a merge of several).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// Upper bounds, strictly increasing, the last one `+Inf`.
    upper_bounds: Vec<f64>,
    /// Cumulative counts, one per bound; the last equals the number of observations.
    cumulative: Vec<f64>,
    /// Sum of observed values (`_sum`); `NaN` when the exposition had no `_sum`.
    pub sum: f64,
}

/// Why buckets could not form a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    /// No `+Inf` bucket: the exposition was truncated or is not a classic histogram.
    #[error("histogram has no +Inf bucket")]
    MissingInfBucket,
    /// A bound is `NaN` or appears twice.
    #[error("histogram has a NaN or duplicated bucket bound")]
    InvalidBound,
    /// A bucket count is `NaN`, infinite or negative.
    #[error("histogram has a NaN, infinite or negative bucket count")]
    InvalidCount,
    /// A cumulative count is lower than the count of a smaller bound.
    #[error("cumulative bucket counts decrease as the bound grows")]
    NonMonotonic,
    /// A later scrape has fewer observations in some bucket: the process restarted.
    #[error("bucket counts decreased (counter reset)")]
    CounterReset,
}

impl Histogram {
    /// Builds a histogram from `(upper_bound, cumulative_count)` pairs in any order.
    ///
    /// Refuses what cannot be a histogram instead of repairing it: counts that fall as the
    /// bound grows, and `NaN`, infinite or negative counts. Prometheus' `histogram_quantile`
    /// raises such counts to the running maximum at query time (`ensureMonotonic`), but every
    /// exporter we read (prometheus_client, metrics-exporter-prometheus) derives cumulative
    /// counts from per-bucket counts at collection time, so a decreasing series is a broken
    /// or hostile body, and interpolating through it would serve a made-up percentile.
    pub fn from_buckets(
        mut buckets: Vec<(f64, f64)>,
        sum: f64,
    ) -> Result<Histogram, HistogramError> {
        if buckets.iter().any(|(bound, _)| bound.is_nan()) {
            return Err(HistogramError::InvalidBound);
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(HistogramError::InvalidBound);
        }
        match buckets.last() {
            Some((bound, _)) if *bound == f64::INFINITY => {}
            _ => return Err(HistogramError::MissingInfBucket),
        }
        if buckets
            .iter()
            .any(|&(_, count)| !count.is_finite() || count < 0.0)
        {
            return Err(HistogramError::InvalidCount);
        }
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(HistogramError::NonMonotonic);
        }
        let (upper_bounds, cumulative) = buckets.into_iter().unzip();
        Ok(Histogram {
            upper_bounds,
            cumulative,
            sum,
        })
    }

    /// A histogram from parts another histogram gave out (`upper_bounds`,
    /// `cumulative_counts`, `sum`), unchecked: the compact form of older scrapes stores those
    /// parts and rebuilds them.
    pub(crate) fn from_parts(upper_bounds: Vec<f64>, cumulative: Vec<f64>, sum: f64) -> Histogram {
        Histogram {
            upper_bounds,
            cumulative,
            sum,
        }
    }

    /// A histogram with the given bounds (`+Inf` appended if absent) and no observations.
    pub fn empty(bounds: &[f64]) -> Histogram {
        let mut upper_bounds: Vec<f64> = bounds.to_vec();
        if upper_bounds.last() != Some(&f64::INFINITY) {
            upper_bounds.push(f64::INFINITY);
        }
        let cumulative = vec![0.0; upper_bounds.len()];
        Histogram {
            upper_bounds,
            cumulative,
            sum: 0.0,
        }
    }

    /// Records one observation (used by the simulator, which produces the same histograms a
    /// vLLM server would expose).
    pub fn observe(&mut self, value: f64) {
        let first = self.upper_bounds.partition_point(|&bound| bound < value);
        for count in &mut self.cumulative[first..] {
            *count += 1.0;
        }
        self.sum += value;
    }

    /// Upper bounds, increasing, the last one `+Inf`.
    pub fn upper_bounds(&self) -> &[f64] {
        &self.upper_bounds
    }

    /// Cumulative counts, one per upper bound.
    pub fn cumulative_counts(&self) -> &[f64] {
        &self.cumulative
    }

    /// Number of observations (the `+Inf` bucket).
    pub fn count(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(0.0)
    }

    /// The observations made between `earlier` and `self`.
    ///
    /// Fails with [`HistogramError::CounterReset`] when any bucket went down. Bounds that
    /// only one side has are handled by [`Histogram::merge`]'s step rule.
    pub fn delta_since(&self, earlier: &Histogram) -> Result<Histogram, HistogramError> {
        let before = earlier.on_bounds(&self.upper_bounds);
        let mut cumulative = Vec::with_capacity(self.cumulative.len());
        for (now, before) in self.cumulative.iter().zip(&before) {
            if now < before {
                return Err(HistogramError::CounterReset);
            }
            cumulative.push(now - before);
        }
        Ok(Histogram {
            upper_bounds: self.upper_bounds.clone(),
            cumulative,
            sum: self.sum - earlier.sum,
        })
    }

    /// Cumulative counts of `self` read at other bounds: at a bound `b` the count of `self`'s
    /// largest own bound `<= b` (a step function; exact when the bound sets are equal).
    fn on_bounds(&self, bounds: &[f64]) -> Vec<f64> {
        if bounds == self.upper_bounds.as_slice() {
            return self.cumulative.clone();
        }
        bounds
            .iter()
            .map(|&b| {
                let at = self.upper_bounds.partition_point(|&own| own <= b);
                if at == 0 {
                    0.0
                } else {
                    self.cumulative[at - 1]
                }
            })
            .collect()
    }

    /// Adds `other`'s observations to `self`.
    ///
    /// Same bounds (the normal case in one fleet) add bucket by bucket. Different bounds
    /// (replicas on vLLM versions with different bucket lists) merge onto the union of
    /// bounds, each side read as a step function, which never invents observations below a
    /// bound that a side did not measure.
    pub fn merge(&mut self, other: &Histogram) {
        self.sum += other.sum;
        if self.upper_bounds == other.upper_bounds {
            for (mine, theirs) in self.cumulative.iter_mut().zip(&other.cumulative) {
                *mine += theirs;
            }
            return;
        }
        let mut bounds: Vec<f64> = self
            .upper_bounds
            .iter()
            .chain(&other.upper_bounds)
            .copied()
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let mine = self.on_bounds(&bounds);
        let theirs = other.on_bounds(&bounds);
        self.cumulative = mine.iter().zip(&theirs).map(|(a, b)| a + b).collect();
        self.upper_bounds = bounds;
    }

    /// The `q`-quantile with PromQL `histogram_quantile` semantics, or `None` when the
    /// histogram holds no observation (PromQL answers `NaN` there; we never turn that into
    /// a number).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if q.is_nan() {
            return None;
        }
        if q < 0.0 {
            return Some(f64::NEG_INFINITY);
        }
        if q > 1.0 {
            return Some(f64::INFINITY);
        }
        let n = self.upper_bounds.len();
        if n < 2 {
            return None;
        }
        let observations = self.cumulative[n - 1];
        if observations <= 0.0 {
            return None;
        }
        let rank = q * observations;
        // First bucket (ignoring +Inf) whose cumulative count reaches the rank.
        let b = self.cumulative[..n - 1].partition_point(|&count| count < rank);
        if b == n - 1 {
            return Some(self.upper_bounds[n - 2]);
        }
        if b == 0 && self.upper_bounds[0] <= 0.0 {
            return Some(self.upper_bounds[0]);
        }
        let (start, below) = if b == 0 {
            (0.0, 0.0)
        } else {
            (self.upper_bounds[b - 1], self.cumulative[b - 1])
        };
        let end = self.upper_bounds[b];
        let in_bucket = self.cumulative[b] - below;
        Some(start + (end - start) * ((rank - below) / in_bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(f64, f64)]) -> Histogram {
        Histogram::from_buckets(pairs.to_vec(), f64::NAN).unwrap()
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn interpolates_inside_a_bucket() {
        // 10 observations: 4 in (0, 1], 6 in (1, 2].
        let h = hist(&[(1.0, 4.0), (2.0, 10.0), (INF, 10.0)]);
        // rank 5 → 1 into the (1,2] bucket of 6 → 1 + 1/6.
        assert!((h.quantile(0.5).unwrap() - (1.0 + 1.0 / 6.0)).abs() < 1e-12);
        // rank 2 → lowest bucket starts at 0 → 0.5.
        assert!((h.quantile(0.2).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(h.quantile(1.0), Some(2.0));
    }

    #[test]
    fn rank_in_inf_bucket_answers_highest_finite_bound() {
        let h = hist(&[(1.0, 1.0), (2.0, 2.0), (INF, 10.0)]);
        assert_eq!(h.quantile(0.99), Some(2.0));
    }

    #[test]
    fn non_positive_lowest_bound_is_returned_as_is() {
        let h = hist(&[(-1.0, 5.0), (1.0, 10.0), (INF, 10.0)]);
        assert_eq!(h.quantile(0.1), Some(-1.0));
    }

    #[test]
    fn empty_histogram_has_no_quantile() {
        assert_eq!(hist(&[(1.0, 0.0), (INF, 0.0)]).quantile(0.5), None);
        assert_eq!(
            hist(&[(INF, 3.0)]).quantile(0.5),
            None,
            "one bucket is not enough"
        );
    }

    #[test]
    fn out_of_range_q() {
        let h = hist(&[(1.0, 1.0), (INF, 1.0)]);
        assert_eq!(h.quantile(-0.1), Some(f64::NEG_INFINITY));
        assert_eq!(h.quantile(1.1), Some(f64::INFINITY));
        assert_eq!(h.quantile(f64::NAN), None);
    }

    #[test]
    fn missing_inf_bucket_is_an_error() {
        assert_eq!(
            Histogram::from_buckets(vec![(1.0, 1.0)], 0.0),
            Err(HistogramError::MissingInfBucket)
        );
    }

    #[test]
    fn non_monotonic_counts_are_refused_not_repaired() {
        assert_eq!(
            Histogram::from_buckets(vec![(1.0, 5.0), (2.0, 4.0), (INF, 6.0)], 0.0),
            Err(HistogramError::NonMonotonic)
        );
        // Equal neighbours are fine: an empty bucket.
        assert!(Histogram::from_buckets(vec![(1.0, 5.0), (2.0, 5.0), (INF, 6.0)], 0.0).is_ok());
    }

    #[test]
    fn nan_infinite_or_negative_counts_are_refused() {
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            assert_eq!(
                Histogram::from_buckets(vec![(1.0, bad), (INF, 6.0)], 0.0),
                Err(HistogramError::InvalidCount),
                "{bad}"
            );
        }
    }

    #[test]
    fn delta_and_reset() {
        let before = hist(&[(1.0, 2.0), (2.0, 3.0), (INF, 3.0)]);
        let after = hist(&[(1.0, 2.0), (2.0, 7.0), (INF, 8.0)]);
        let delta = after.delta_since(&before).unwrap();
        assert_eq!(delta.cumulative_counts(), &[0.0, 4.0, 5.0]);
        assert_eq!(
            before.delta_since(&after),
            Err(HistogramError::CounterReset)
        );
    }

    #[test]
    fn merge_with_different_bounds_uses_step_rule() {
        let mut a = hist(&[(1.0, 1.0), (INF, 2.0)]);
        let b = hist(&[(0.5, 1.0), (1.0, 3.0), (INF, 3.0)]);
        a.merge(&b);
        assert_eq!(a.upper_bounds(), &[0.5, 1.0, INF]);
        assert_eq!(a.cumulative_counts(), &[1.0, 4.0, 5.0]);
    }
}
