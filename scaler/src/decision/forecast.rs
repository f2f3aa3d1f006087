//! Demand forecasting for the warm pool: where offered work will be one time-to-ready ahead,
//! and how it is spread at the grain of a burst.
//!
//! Owns: the [`Forecaster`] state (plain data, serialisable so a controller can keep it across
//! restarts): a Holt level + trend of offered work and of the request rate, an optional seasonal
//! profile, a fast term on the rate's derivative, the recent short-window samples whose
//! spread is the forecast's interval and the sizing's scenarios, and the requests in flight
//! whose straight-line rise is a ramp ([`Forecaster::ramp`]).
//! Does not own: turning a forecast into replicas (see [`super::decide`]).
//!
//! Work is measured in replica-seconds per second: prompt tokens × the prefill cost of a token
//! plus generated tokens × the decode cost, so one unit keeps one replica fully busy.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Holt level smoothing per [`REFERENCE_STEP_SECS`]: ~50 s of memory, like the KPA's stable
/// window; a longer memory lags a ramp by more than a cold start.
const HOLT_ALPHA: f64 = 0.1;
/// Holt trend smoothing: slower than the level so one burst does not become a trend.
const HOLT_BETA: f64 = 0.02;
/// Baseline smoothing per step: an EWMA with ~5 min of memory ([`BASELINE_MEMORY_SECS`]),
/// several of the Azure traces' burst cycles, so the baseline is the load's intensity rather
/// than its last burst. Burst samples are remembered relative to it, so a load that stops (or
/// doubles) moves every scenario within minutes instead of waiting for the memory to age out.
/// (No Holt trend here: with a memory this long a trend term oscillates on bursty load.)
const BASELINE_ALPHA: f64 = 0.016;
/// The baseline's memory, seconds (`REFERENCE_STEP_SECS / BASELINE_ALPHA`): also how far it
/// lags a ramp, and the span its slope is measured over.
const BASELINE_MEMORY_SECS: f64 = REFERENCE_STEP_SECS / BASELINE_ALPHA;
/// The fast level's trend is projected at most this far: Holt's linear trend overshoots
/// whenever a rise or a fall stops, and the sizing's horizon (a cold start) is long.
const TREND_HORIZON_SECS: f64 = 60.0;
/// The step the smoothing constants are stated for; other intervals are converted so the
/// memory in seconds stays the same.
const REFERENCE_STEP_SECS: f64 = 5.0;
/// Seasonal buckets per period (5 min each for a day): fine enough for a diurnal ramp,
/// coarse enough that each bucket sees a few decisions per period.
const SEASON_BUCKETS: usize = 288;
/// Weight of the newest period in a seasonal bucket.
const SEASON_ALPHA: f64 = 0.5;
/// The derivative term looks at most this far ahead: a rate climbing for 20 s says little
/// about the next five minutes, and extrapolating it over a whole cold start overshoots.
const FAST_LOOKAHEAD_SECS: f64 = 30.0;
/// Bounds on how far the level forecast may scale the recent burst samples.
const GROWTH_BOUNDS: (f64, f64) = (0.5, 4.0);
/// Fewest in-flight samples a ramp is fitted through: two points always lie on a line.
const RAMP_MIN_SAMPLES: usize = 3;
/// Share of the in-flight samples' variance the fitted line must explain for a rise to count
/// as a ramp: a burst's edge (flat, then a jump) fits a line badly over a time-to-ready.
const RAMP_MIN_FIT: f64 = 0.8;

/// Forecasting settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForecastSettings {
    /// Window at which bursts are measured, seconds. The Azure code trace's bursts last
    /// 5–15 s; a longer window averages them away.
    pub burst_window_secs: f64,
    /// How long short-window samples are remembered, seconds: long enough to have seen the
    /// trace's character, short enough that one old spike does not set headroom forever.
    pub memory_secs: f64,
    /// Seasonal period (e.g. 86 400 for a day); `None` for none.
    pub season_secs: Option<f64>,
}

impl Default for ForecastSettings {
    fn default() -> ForecastSettings {
        ForecastSettings {
            burst_window_secs: 10.0,
            memory_secs: 1800.0,
            season_secs: None,
        }
    }
}

/// One short-window sample: offered work and requests per second over the burst window that
/// ended at `at`, and the baseline just before it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowSample {
    pub at: f64,
    pub work: f64,
    pub requests: f64,
    pub baseline: f64,
}

/// A point forecast with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Estimate {
    pub expected: f64,
    /// 5th percentile of the short-window scenarios.
    pub low: f64,
    /// 95th percentile of the short-window scenarios.
    pub high: f64,
}

/// The forecaster's state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Forecaster {
    last_at: Option<f64>,
    /// Holt level and trend (per second) of offered work.
    level: f64,
    trend: f64,
    /// Smoothed request rate (same memory as the level).
    request_level: f64,
    /// Slow EWMA of offered work: the load's intensity.
    baseline: f64,
    /// Per-decision samples inside the current burst window: (time, work, requests).
    recent: VecDeque<(f64, f64, f64)>,
    /// Short-window samples within memory.
    windows: VecDeque<WindowSample>,
    /// Seasonal profile: smoothed work per bucket; `NaN` until the bucket was seen.
    season: Vec<f64>,
    /// Requests in flight (running + waiting) at each decision within memory: (time, count).
    #[serde(default)]
    in_flight: VecDeque<(f64, f64)>,
}

/// A ramp seen in the requests in flight: a line through the samples of the last span.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ramp {
    /// Rise of the requests in flight, per second.
    pub slope: f64,
    /// Requests in flight on the line `lead` seconds ahead.
    pub ahead: f64,
    /// Mean of the requests in flight sampled within the window the work rates were measured
    /// over: the in-flight count those rates belong to.
    pub measured: f64,
    /// `ahead / measured`, at least 1: the factor the measured work grows by.
    pub growth: f64,
}

fn per_step(alpha: f64, dt: f64) -> f64 {
    1.0 - (1.0 - alpha).powf((dt / REFERENCE_STEP_SECS).max(0.0))
}

impl Forecaster {
    /// Feeds the rates measured over the interval that ended at `now`.
    pub fn observe(&mut self, settings: &ForecastSettings, now: f64, work: f64, requests: f64) {
        let work = if work.is_finite() { work.max(0.0) } else { 0.0 };
        let requests = if requests.is_finite() {
            requests.max(0.0)
        } else {
            0.0
        };
        let baseline_before = self.baseline;
        match self.last_at {
            None => {
                self.level = work;
                self.request_level = requests;
                self.baseline = work;
            }
            Some(last) if now > last => {
                let dt = now - last;
                let a = per_step(HOLT_ALPHA, dt);
                let b = per_step(HOLT_BETA, dt);
                let previous = self.level;
                self.level = a * work + (1.0 - a) * (self.level + self.trend * dt);
                self.trend = b * (self.level - previous) / dt + (1.0 - b) * self.trend;
                self.request_level += a * (requests - self.request_level);
                self.baseline += per_step(BASELINE_ALPHA, dt) * (work - self.baseline);
            }
            Some(_) => return,
        }
        self.last_at = Some(now);
        self.recent.push_back((now, work, requests));
        let window = settings.burst_window_secs.max(1e-9);
        while self.recent.front().is_some_and(|r| r.0 <= now - window) {
            self.recent.pop_front();
        }
        let n = self.recent.len().max(1) as f64;
        self.windows.push_back(WindowSample {
            at: now,
            work: self.recent.iter().map(|r| r.1).sum::<f64>() / n,
            requests: self.recent.iter().map(|r| r.2).sum::<f64>() / n,
            baseline: if self.windows.is_empty() {
                self.baseline
            } else {
                baseline_before
            },
        });
        while self
            .windows
            .front()
            .is_some_and(|w| w.at < now - settings.memory_secs)
        {
            self.windows.pop_front();
        }
        if let Some(period) = settings.season_secs.filter(|p| *p > 0.0) {
            if self.season.len() != SEASON_BUCKETS {
                self.season = vec![f64::NAN; SEASON_BUCKETS];
            }
            let b = bucket(now, period);
            let old = self.season[b];
            self.season[b] = if old.is_nan() {
                work
            } else {
                old + SEASON_ALPHA * (work - old)
            };
        }
    }

    /// Records the requests in flight (running + waiting: gauges, read at `now` with no
    /// averaging window) for [`Forecaster::ramp`]. Samples older than the memory are dropped.
    pub fn observe_in_flight(&mut self, settings: &ForecastSettings, now: f64, in_flight: f64) {
        if !in_flight.is_finite() || self.in_flight.back().is_some_and(|s| s.0 >= now) {
            return;
        }
        self.in_flight.push_back((now, in_flight.max(0.0)));
        while self
            .in_flight
            .front()
            .is_some_and(|s| s.0 < now - settings.memory_secs)
        {
            self.in_flight.pop_front();
        }
    }

    /// A ramp in the requests in flight, fitted over the last `span` seconds and carried
    /// `lead` seconds ahead: `None` unless at least three samples rise along a least-squares
    /// line that explains 80 % of their variance.
    ///
    /// The growth is the line's value `lead` ahead over the mean of the requests in flight
    /// over the last `rate_window` seconds ([`Forecaster::mean_in_flight`]) — the window the
    /// work rates are means over — so the work measured over that window is scaled by the
    /// in-flight count it was measured at, whatever the ramp's shape inside the window (the
    /// line at the window's middle is not that count where the ramp started from nothing: it
    /// may be near zero or below, and the ratio unbounded). `rate_window` of 0 (not known)
    /// takes the latest sample. `None` when nothing was in flight over the window: there is
    /// no measured work per request in flight to scale.
    pub fn ramp(&self, now: f64, span: f64, rate_window: f64, lead: f64) -> Option<Ramp> {
        let lead = lead.max(0.0);
        let samples: Vec<(f64, f64)> = self
            .in_flight
            .iter()
            .copied()
            .filter(|s| s.0 >= now - span && s.0 <= now)
            .collect();
        if samples.len() < RAMP_MIN_SAMPLES {
            return None;
        }
        let n = samples.len() as f64;
        let mean_t = samples.iter().map(|s| s.0).sum::<f64>() / n;
        let mean_y = samples.iter().map(|s| s.1).sum::<f64>() / n;
        let stt: f64 = samples.iter().map(|s| (s.0 - mean_t).powi(2)).sum();
        let sty: f64 = samples
            .iter()
            .map(|s| (s.0 - mean_t) * (s.1 - mean_y))
            .sum();
        let syy: f64 = samples.iter().map(|s| (s.1 - mean_y).powi(2)).sum();
        if stt <= 0.0 || syy <= 0.0 || sty <= 0.0 {
            return None;
        }
        let slope = sty / stt;
        // R² of a least-squares line: the explained share of the variance.
        if sty * sty / (stt * syy) < RAMP_MIN_FIT {
            return None;
        }
        let ahead = mean_y + slope * (now + lead - mean_t);
        let measured = self.mean_in_flight(now - rate_window.max(0.0), now);
        if measured <= 0.0 {
            return None;
        }
        Some(Ramp {
            slope,
            ahead,
            measured,
            growth: (ahead / measured).max(1.0),
        })
    }

    /// Mean of the requests in flight over `[from, to]`: the time average of the line through
    /// consecutive samples (held at the first sample before it and at the last after it); the
    /// value at `to` when the span is empty. 0 before any sample.
    pub fn mean_in_flight(&self, from: f64, to: f64) -> f64 {
        let at = |t: f64| {
            let after = self.in_flight.iter().position(|s| s.0 >= t);
            match after {
                None => self.in_flight.back().map_or(0.0, |s| s.1),
                Some(0) => self.in_flight[0].1,
                Some(i) => {
                    let (a, b) = (self.in_flight[i - 1], self.in_flight[i]);
                    a.1 + (b.1 - a.1) * (t - a.0) / (b.0 - a.0)
                }
            }
        };
        if to <= from {
            return at(to);
        }
        let mut knots = vec![from];
        knots.extend(
            self.in_flight
                .iter()
                .map(|s| s.0)
                .filter(|&t| t > from && t < to),
        );
        knots.push(to);
        let area: f64 = knots
            .windows(2)
            .map(|k| (at(k[0]) + at(k[1])) / 2.0 * (k[1] - k[0]))
            .sum();
        area / (to - from)
    }

    /// Smoothed offered work now.
    pub fn level(&self) -> f64 {
        self.level
    }

    /// Smoothed work per request (replica-seconds), `None` before any request was seen.
    pub fn work_per_request(&self) -> Option<f64> {
        (self.request_level > 0.0).then(|| self.level / self.request_level)
    }

    /// Offered work over the latest burst window.
    pub fn latest_window(&self) -> Option<WindowSample> {
        self.windows.back().copied()
    }

    /// The short-window samples remembered, oldest first.
    pub fn windows(&self) -> impl Iterator<Item = &WindowSample> {
        self.windows.iter()
    }

    /// Seconds covered by the remembered samples.
    pub fn memory_span(&self) -> f64 {
        match (self.windows.front(), self.windows.back()) {
            (Some(a), Some(b)) => b.at - a.at,
            _ => 0.0,
        }
    }

    /// Forecast of the (fast) work level `horizon` seconds after `now`: Holt level + trend,
    /// or scaled along the seasonal baseline once a full period has been seen.
    pub fn level_at(&self, settings: &ForecastSettings, now: f64, horizon: f64) -> f64 {
        let holt = (self.level + self.trend * horizon.min(TREND_HORIZON_SECS)).max(0.0);
        if settings.season_secs.is_some() && self.season.len() == SEASON_BUCKETS {
            let seasonal = self.baseline_at(settings, now, horizon);
            if seasonal > 0.0 && self.baseline > 0.0 {
                return self.level * seasonal / self.baseline;
            }
        }
        holt
    }

    /// The fast term: the latest window's work carried forward along its rise since the
    /// window before, at most [`FAST_LOOKAHEAD_SECS`] (and at most `horizon`) ahead. It reacts
    /// to the derivative within one decision, where the level needs tens of seconds.
    pub fn fast(&self, horizon: f64) -> f64 {
        let mut it = self.windows.iter().rev();
        let (Some(last), Some(before)) = (it.next(), it.next()) else {
            return self.windows.back().map_or(self.level, |w| w.work);
        };
        let dt = last.at - before.at;
        if dt <= 0.0 {
            return last.work;
        }
        let slope = ((last.work - before.work) / dt).max(0.0);
        last.work + slope * horizon.clamp(0.0, FAST_LOOKAHEAD_SECS)
    }

    /// The baseline `horizon` seconds after `now`: the seasonal profile where a full period
    /// has been seen (scaled to the current baseline), otherwise the baseline carried along
    /// its slope over the last memory span — for its lag and for the horizon.
    pub fn baseline_at(&self, settings: &ForecastSettings, now: f64, horizon: f64) -> f64 {
        let slope = self
            .windows
            .iter()
            .find(|w| w.at >= now - BASELINE_MEMORY_SECS)
            .filter(|w| now - w.at >= BASELINE_MEMORY_SECS / 2.0)
            .map_or(0.0, |w| (self.baseline - w.baseline) / (now - w.at));
        let holt = (self.baseline + slope * (BASELINE_MEMORY_SECS + horizon)).max(0.0);
        let seasonal = settings
            .season_secs
            .filter(|p| *p > 0.0 && self.season.len() == SEASON_BUCKETS)
            .and_then(|period| {
                let then = self.season[bucket(now + horizon, period)];
                let here = self.season[bucket(now, period)];
                (then.is_finite() && here.is_finite() && here > 0.0)
                    .then(|| then * (self.baseline / here).clamp(GROWTH_BOUNDS.0, GROWTH_BOUNDS.1))
            });
        seasonal.unwrap_or(holt)
    }

    /// Scenarios for the windows `horizon` ahead: each remembered window's (work, requests)
    /// scaled by the baseline forecast over the baseline it was seen at.
    pub fn scenarios(
        &self,
        settings: &ForecastSettings,
        now: f64,
        horizon: f64,
    ) -> Vec<(f64, f64)> {
        let ahead = self.baseline_at(settings, now, horizon);
        self.windows
            .iter()
            .map(|w| {
                let scale = if w.baseline > 0.0 {
                    (ahead / w.baseline).min(GROWTH_BOUNDS.1)
                } else {
                    1.0
                };
                (w.work * scale, w.requests * scale)
            })
            .collect()
    }

    /// Offered work and request rate at `horizon` ahead: expected from the level forecast,
    /// interval from the 5–95 % of the scenarios.
    pub fn estimate(
        &self,
        settings: &ForecastSettings,
        now: f64,
        horizon: f64,
    ) -> (Estimate, Estimate) {
        let scenarios = self.scenarios(settings, now, horizon);
        let mut work: Vec<f64> = scenarios.iter().map(|s| s.0).collect();
        let mut requests: Vec<f64> = scenarios.iter().map(|s| s.1).collect();
        let expected = self.level_at(settings, now, horizon);
        let growth = if self.level > 0.0 {
            expected / self.level
        } else {
            1.0
        };
        let request_expected = self.request_level * growth;
        (
            Estimate {
                expected,
                low: quantile(&mut work, 0.05).unwrap_or(expected),
                high: quantile(&mut work, 0.95).unwrap_or(expected),
            },
            Estimate {
                expected: request_expected,
                low: quantile(&mut requests, 0.05).unwrap_or(request_expected),
                high: quantile(&mut requests, 0.95).unwrap_or(request_expected),
            },
        )
    }
}

fn bucket(t: f64, period: f64) -> usize {
    let phase = t.rem_euclid(period) / period;
    ((phase * SEASON_BUCKETS as f64) as usize).min(SEASON_BUCKETS - 1)
}

/// Nearest-rank `q`-quantile (sorts in place); `None` when empty.
pub fn quantile(samples: &mut [f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    Some(samples[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holt_follows_a_ramp_and_projects_it() {
        let s = ForecastSettings::default();
        let mut f = Forecaster::default();
        // Work rises 0.01 per second, sampled every 5 s for 20 minutes.
        for i in 0..240 {
            let t = i as f64 * 5.0;
            f.observe(&s, t, 0.01 * t, 1.0);
        }
        let now = 239.0 * 5.0;
        // After a long ramp the trend is close to 0.01/s; it is carried 60 s of the 100
        // asked for (Holt overshoots where a ramp stops): + 0.6.
        let ahead = f.level_at(&s, now, 100.0);
        assert!((ahead - (0.01 * now + 0.6)).abs() < 0.1, "{ahead}");
    }

    #[test]
    fn seasonal_profile_leads_a_repeating_day() {
        let s = ForecastSettings {
            season_secs: Some(1000.0),
            ..ForecastSettings::default()
        };
        let mut f = Forecaster::default();
        let shape = |t: f64| {
            if t.rem_euclid(1000.0) < 500.0 {
                1.0
            } else {
                5.0
            }
        };
        for i in 0..800 {
            let t = i as f64 * 5.0;
            f.observe(&s, t, shape(t), 1.0);
        }
        // At t = 3995 (end of a high half) the forecast 100 s ahead sees the low half coming;
        // at t = 4495 (end of a low half... ) it sees the high half.
        let now = 799.0 * 5.0;
        assert!(f.level_at(&s, now, 100.0) < 3.0);
    }

    #[test]
    fn interval_spans_the_remembered_bursts() {
        let s = ForecastSettings::default();
        let mut f = Forecaster::default();
        // A 10 s burst of 4 units every 150 s over a level of 0.5, ending between bursts.
        for i in 0..356 {
            let t = i as f64 * 5.0;
            let w = if i % 30 >= 28 { 4.0 } else { 0.5 };
            f.observe(&s, t, w, 1.0);
        }
        let (work, _) = f.estimate(&s, 1775.0, 60.0);
        // Windows are 10 s means of two 5 s samples: a burst shows as 2.25, 4.0, 2.25 — 3 of
        // every 30 windows — so the 95th percentile is a 2.25 window and the 5th the level,
        // each scaled by the baseline ahead over the baseline then (within ±20 % here).
        assert!((1.8..2.7).contains(&work.high), "{work:?}");
        assert!((0.4..0.6).contains(&work.low), "{work:?}");
    }

    #[test]
    fn a_ramp_grows_by_the_line_ahead_over_the_mean_in_flight_of_the_rate_window() {
        let s = ForecastSettings::default();
        let mut f = Forecaster::default();
        for (t, n) in [(-15.0, 0.0), (-10.0, 0.0), (-5.0, 1.0), (0.0, 2.0)] {
            f.observe_in_flight(&s, t, n);
        }
        // By hand: mean t −7.5, mean 0.75; Σ(t−t̄)² = 125, Σ(t−t̄)(y−ȳ) = 17.5 → slope 0.14;
        // Σ(y−ȳ)² = 2.75 → R² = 17.5² / (125 · 2.75) = 0.89. 20 s ahead: 0.75 + 0.14 · 27.5
        // = 4.6. Mean in flight over [−20, 0] (held at 0 before −15, straight lines between
        // samples): (0 · 5 + 0 · 5 + 0.5 · 5 + 1.5 · 5) / 20 = 0.5 → growth 9.2.
        let r = f.ramp(0.0, 15.0, 20.0, 20.0).unwrap();
        assert!((r.slope - 0.14).abs() < 1e-12, "{r:?}");
        assert!((r.ahead - 4.6).abs() < 1e-12, "{r:?}");
        assert!((r.measured - 0.5).abs() < 1e-12, "{r:?}");
        assert!((r.growth - 9.2).abs() < 1e-12, "{r:?}");
        // Rates with no window are now: the latest sample, 2 → 4.6 / 2 = 2.3.
        assert!((f.ramp(0.0, 15.0, 0.0, 20.0).unwrap().growth - 2.3).abs() < 1e-12);
        // A 10 s span holds −10, −5, 0: 0, 1, 2 on a line: R² 1, slope 0.2.
        assert!((f.ramp(0.0, 10.0, 20.0, 20.0).unwrap().slope - 0.2).abs() < 1e-12);
        // A step is not a ramp: 0, 0, 1 at −10, −5, 0 fit a line with R² = 0.75 < 0.8.
        let mut step = Forecaster::default();
        for (t, n) in [(-10.0, 0.0), (-5.0, 0.0), (0.0, 1.0)] {
            step.observe_in_flight(&s, t, n);
        }
        assert_eq!(step.ramp(0.0, 15.0, 20.0, 20.0), None);
        // A mean over a span outside the samples holds the nearest one.
        assert_eq!(f.mean_in_flight(-30.0, -20.0), 0.0);
        assert_eq!(f.mean_in_flight(5.0, 10.0), 2.0);
    }

    #[test]
    fn nearest_rank() {
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0, 4.0], 0.9), Some(4.0));
        assert_eq!(quantile(&mut [], 0.9), None);
    }
}
