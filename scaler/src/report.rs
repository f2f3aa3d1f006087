//! Summaries of simulation runs: the per-policy table and its JSON form.
//!
//! Owns: exact TTFT percentiles over every request (ground truth, not histogram estimates),
//! attainment, and rendering the table.
//! Does not own: running simulations or plotting (see [`crate::svg`]).

use crate::replay::RunResult;
use serde::Serialize;
use std::fmt::Write as _;

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// JSON serialisation failed.
    #[error("cannot serialise report: {0}")]
    Json(#[from] serde_json::Error),
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyRow {
    pub policy: String,
    pub requests: usize,
    /// Seconds; `None` when no request was served.
    pub ttft_p50: Option<f64>,
    pub ttft_p95: Option<f64>,
    pub ttft_p99: Option<f64>,
    /// Percent of attainable requests whose TTFT met the objective.
    pub within_objective_pct: f64,
    /// Requests no fleet could serve within the objective (left out of the percentage).
    pub unattainable: usize,
    pub gpu_hours: f64,
    pub cost: f64,
    pub scale_events: u32,
    pub preemptions: f64,
    pub timeouts: usize,
    pub retries: usize,
    pub gave_up: usize,
    pub unfinished: usize,
}

/// Exact `q`-quantile (nearest rank) of sorted values; unserved requests are `+inf` and
/// make high quantiles infinite, which the table shows as "inf".
pub fn sorted_quantile(sorted: &[f32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64)
}

impl PolicyRow {
    pub fn of(result: &RunResult) -> PolicyRow {
        let mut ttft = result.ttft.clone();
        ttft.sort_by(f32::total_cmp);
        PolicyRow {
            policy: result.policy.clone(),
            requests: result.requests,
            ttft_p50: sorted_quantile(&ttft, 0.5),
            ttft_p95: sorted_quantile(&ttft, 0.95),
            ttft_p99: sorted_quantile(&ttft, 0.99),
            within_objective_pct: result.attainment() * 100.0,
            unattainable: result.unattainable,
            gpu_hours: result.gpu_hours,
            cost: result.cost,
            scale_events: result.scale_events,
            preemptions: result.preemptions,
            timeouts: result.timeouts,
            retries: result.retries,
            gave_up: result.gave_up,
            unfinished: result.unfinished,
        }
    }
}

/// The whole report of one `simulate` invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub trace: String,
    pub requests: usize,
    pub trace_secs: f64,
    pub model: String,
    pub slo_ttft_secs: f64,
    pub time_to_ready_median_secs: f64,
    pub gpu_cost_per_hour: f64,
    /// Ready replicas at time 0 (every policy starts from the same fleet).
    pub initial_replicas: u32,
    /// How the gateway routed.
    pub routing: &'static str,
    pub rows: Vec<PolicyRow>,
}

fn secs(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.3}"),
        Some(_) => "inf".to_owned(),
        None => "-".to_owned(),
    }
}

impl Report {
    /// A Markdown table, one row per policy.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "trace {} ({} requests, {:.0} s, {} unattainable) | {} | TTFT objective {} s | time-to-ready {} s | {}/GPU-hour | {} initial replicas | routing {}",
            self.trace,
            self.requests,
            self.trace_secs,
            self.rows.first().map_or(0, |r| r.unattainable),
            self.model,
            self.slo_ttft_secs,
            self.time_to_ready_median_secs,
            self.gpu_cost_per_hour,
            self.initial_replicas,
            self.routing
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| policy | TTFT p50 (s) | TTFT p95 (s) | TTFT p99 (s) | within objective (attainable) | GPU-hours | cost | scale events | preemptions | timeouts | retries |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.2} % | {:.2} | {:.2} | {} | {:.0} | {} | {} |",
                r.policy,
                secs(r.ttft_p50),
                secs(r.ttft_p95),
                secs(r.ttft_p99),
                r.within_objective_pct,
                r.gpu_hours,
                r.cost,
                r.scale_events,
                r.preemptions,
                r.timeouts,
                r.retries
            );
        }
        out
    }

    pub fn json(&self) -> Result<String, ReportError> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v = [1.0f32, 2.0, 3.0, 4.0, f32::INFINITY];
        assert_eq!(sorted_quantile(&v, 0.5), Some(3.0));
        assert_eq!(sorted_quantile(&v, 0.2), Some(1.0));
        assert_eq!(sorted_quantile(&v, 0.99), Some(f64::INFINITY));
        assert_eq!(sorted_quantile(&[], 0.5), None);
    }
}
