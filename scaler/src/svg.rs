//! Hand-written SVG plots of simulation runs (no plotting dependency: two chart shapes do not
//! justify one).
//!
//! Owns: the timeline plot (demand vs ready and GPU-holding replicas over time) and the TTFT
//! CDF plot (all policies, log-scaled latency axis, the objective marked).
//! Does not own: the numbers (see [`crate::replay`], [`crate::report`]). Nothing here can fail,
//! so the module has no error type.

use crate::replay::RunResult;
use std::fmt::Write as _;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 420.0;
/// Margins leave room for tick labels on both vertical axes.
const LEFT: f64 = 60.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// Colour-blind-safe palette (Okabe–Ito).
const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];
/// Points per CDF curve; enough for a smooth curve from a million requests.
const CDF_POINTS: usize = 400;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn header(out: &mut String, title: &str) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
}

fn polyline(out: &mut String, points: &[(f64, f64)], colour: &str, dashed: bool) {
    let mut d = String::new();
    for (x, y) in points {
        let _ = write!(d, "{x:.1},{y:.1} ");
    }
    let dash = if dashed {
        r#" stroke-dasharray="5,3""#
    } else {
        ""
    };
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5"{dash} points="{d}"/>"#
    );
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn axes(out: &mut String, x_label: &str, y_left: &str, y_right: Option<&str>) {
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    let _ = writeln!(
        out,
        r#"<path d="M{x0},{y0} V{y1} H{x1}" stroke="black" fill="none"/>"#
    );
    if y_right.is_some() {
        let _ = writeln!(
            out,
            r#"<path d="M{x1},{y0} V{y1}" stroke="black" fill="none"/>"#
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        HEIGHT - 12.0,
        escape(x_label)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (y0 + y1) / 2.0,
        escape(y_left)
    );
    if let Some(label) = y_right {
        let _ = writeln!(
            out,
            r#"<text transform="translate({},{}) rotate(90)" text-anchor="middle">{}</text>"#,
            WIDTH - 14.0,
            (y0 + y1) / 2.0,
            escape(label)
        );
    }
}

fn legend(out: &mut String, entries: &[(&str, &str, bool)]) {
    legend_at(out, entries, LEFT + 12.0);
}

/// The legend with its lines starting at `x`.
fn legend_at(out: &mut String, entries: &[(&str, &str, bool)], x: f64) {
    for (i, (name, colour, dashed)) in entries.iter().enumerate() {
        let y = TOP + 8.0 + i as f64 * 16.0;
        let dash = if *dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            x + 20.0,
            x + 26.0,
            y + 4.0,
            escape(name)
        );
    }
}

/// Demand (requests/s, right axis) against ready and GPU-holding replicas (left axis).
pub fn timeline(result: &RunResult, title: &str) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let points = &result.timeline;
    let t_max = points.last().map_or(1.0, |p| p.t).max(1.0);
    let replicas_max = nice_max(
        points
            .iter()
            .map(|p| p.held.max(p.ready) as f64)
            .fold(1.0, f64::max),
    );
    let demand_max = nice_max(points.iter().map(|p| p.demand_rps).fold(0.0, f64::max));
    let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |t: f64| LEFT + w * t / t_max;
    let y = |v: f64, max: f64| TOP + h * (1.0 - v / max);
    axes(
        &mut out,
        "time (min)",
        "replicas",
        Some("demand (requests/s)"),
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{:.0}</text><text x="{}" y="{}">{:.1}</text><text x="{}" y="{}" text-anchor="middle">{:.0}</text>"#,
            LEFT - 6.0,
            y(f * replicas_max, replicas_max) + 4.0,
            f * replicas_max,
            WIDTH - RIGHT + 6.0,
            y(f * demand_max, demand_max) + 4.0,
            f * demand_max,
            x(f * t_max),
            HEIGHT - BOTTOM + 16.0,
            f * t_max / 60.0
        );
    }
    let demand: Vec<_> = points
        .iter()
        .map(|p| (x(p.t), y(p.demand_rps, demand_max)))
        .collect();
    let ready: Vec<_> = points
        .iter()
        .map(|p| (x(p.t), y(p.ready as f64, replicas_max)))
        .collect();
    let held: Vec<_> = points
        .iter()
        .map(|p| (x(p.t), y(p.held as f64, replicas_max)))
        .collect();
    polyline(&mut out, &demand, "#999999", false);
    polyline(&mut out, &held, PALETTE[1], true);
    polyline(&mut out, &ready, PALETTE[0], false);
    legend(
        &mut out,
        &[
            ("demand (right axis)", "#999999", false),
            ("ready replicas", PALETTE[0], false),
            ("replicas holding a GPU", PALETTE[1], true),
        ],
    );
    out.push_str("</svg>\n");
    out
}

/// Empirical CDF of TTFT for each run, log latency axis from 10 ms to 1000 s.
pub fn ttft_cdf(results: &[&RunResult], slo_secs: f64, title: &str) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let (lo, hi) = (-2.0f64, 3.0f64);
    let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |secs: f64| LEFT + w * ((secs.max(1e-2).log10() - lo) / (hi - lo)).clamp(0.0, 1.0);
    let y = |f: f64| TOP + h * (1.0 - f);
    axes(
        &mut out,
        "TTFT (s, log scale)",
        "fraction of requests",
        None,
    );
    for e in -2..=3 {
        let v = 10f64.powi(e);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x(v),
            HEIGHT - BOTTOM + 16.0,
            v
        );
    }
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{f:.2}</text>"#,
            LEFT - 6.0,
            y(f) + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<line x1="{0}" y1="{TOP}" x2="{0}" y2="{1}" stroke="red" stroke-dasharray="2,2"/><text x="{2}" y="{3}" fill="red">objective</text>"#,
        x(slo_secs),
        HEIGHT - BOTTOM,
        x(slo_secs) + 4.0,
        HEIGHT - BOTTOM - 6.0
    );
    let mut entries = Vec::new();
    for (i, result) in results.iter().enumerate() {
        let mut ttft = result.ttft.clone();
        ttft.sort_by(f32::total_cmp);
        let n = ttft.len();
        if n == 0 {
            continue;
        }
        let points: Vec<(f64, f64)> = (1..=CDF_POINTS)
            .map(|k| {
                let idx = (k * n / CDF_POINTS).clamp(1, n) - 1;
                (x(ttft[idx] as f64), y((idx + 1) as f64 / n as f64))
            })
            .filter(|(px, _)| px.is_finite())
            .collect();
        let colour = PALETTE[i % PALETTE.len()];
        polyline(&mut out, &points, colour, false);
        entries.push((result.policy.as_str(), colour, false));
    }
    // Legend bottom-right, where CDFs are flat near 1.
    for (i, (name, colour, _)) in entries.iter().enumerate() {
        let y0 = HEIGHT - BOTTOM - 20.0 - (entries.len() - 1 - i) as f64 * 16.0;
        let x0 = WIDTH - RIGHT - 140.0;
        let _ = writeln!(
            out,
            r#"<line x1="{x0}" y1="{y0}" x2="{}" y2="{y0}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            x0 + 20.0,
            x0 + 26.0,
            y0 + 4.0,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Pareto frontiers of each policy family: GPU-hours (x) against the share of attainable
/// requests that missed the objective (y, log scale from 0.01 % to 100 %, lower is better),
/// with the lower bound dashed in black. `curves`: (family, [(GPU-hours, attainment)]).
pub fn frontiers(curves: &[(&str, Vec<(f64, f64)>)], bound: &[(f64, f64)], title: &str) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let x_max = nice_max(
        curves
            .iter()
            .flat_map(|(_, p)| p.iter().map(|p| p.0))
            .chain(bound.iter().map(|b| b.0))
            .fold(0.0, f64::max),
    );
    let (lo, hi) = (-4.0f64, 0.0f64);
    let (w, h) = (WIDTH - LEFT - RIGHT - 110.0, HEIGHT - TOP - BOTTOM);
    let x = |g: f64| LEFT + w * g / x_max;
    let y = |attainment: f64| {
        let miss = (1.0 - attainment).clamp(10f64.powf(lo), 1.0).log10();
        TOP + h * (miss - lo) / (hi - lo)
    };
    axes(
        &mut out,
        "GPU-hours",
        "share of attainable requests missing the objective",
        None,
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let e = lo + (hi - lo) * f;
        let label = match e as i32 {
            -4 => "0.01 %",
            -3 => "0.1 %",
            -2 => "1 %",
            -1 => "10 %",
            _ => "100 %",
        };
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{label}</text><text x="{}" y="{}" text-anchor="middle">{:.1}</text>"#,
            LEFT - 6.0,
            TOP + h * f + 4.0,
            x(f * x_max),
            HEIGHT - BOTTOM + 16.0,
            f * x_max
        );
    }
    let mut entries = Vec::new();
    let colours = |i: usize| PALETTE[i % PALETTE.len()];
    for (i, (name, points)) in curves.iter().enumerate() {
        let colour = colours(i);
        let dashed = i >= PALETTE.len();
        let xy: Vec<(f64, f64)> = points.iter().map(|&(g, a)| (x(g), y(a))).collect();
        polyline(&mut out, &xy, colour, dashed);
        for &(px, py) in &xy {
            let _ = writeln!(
                out,
                r#"<circle cx="{px:.1}" cy="{py:.1}" r="2.5" fill="{colour}"/>"#
            );
        }
        entries.push((*name, colour, dashed));
    }
    if !bound.is_empty() {
        let xy: Vec<(f64, f64)> = bound.iter().map(|&(g, a)| (x(g), y(a))).collect();
        polyline(&mut out, &xy, "#000000", true);
        entries.push(("lower bound (LP)", "#000000", true));
    }
    legend_at(&mut out, &entries, WIDTH - RIGHT - 100.0);
    out.push_str("</svg>\n");
    out
}
