//! The decision core's specification, with numbers worked by hand.
use super::*;

fn settings() -> Settings {
    Settings {
        objective: Objective {
            ttft_secs: 2.0,
            attainment: 0.0001,
        },
        cost: Cost::from_ratio(2.5, 0.001),
        tiers: Tiers {
            sleeping: TierSetting::OFF,
            placeholder: TierSetting::OFF,
        },
        bounds: Bounds {
            min_replicas: 1,
            max_replicas: 20,
        },
        work: WorkModel {
            prefill_secs_per_token: 1e-4,
            decode_secs_per_token: 1e-3,
            prior_capacity: 0.5,
        },
        forecast: ForecastSettings::default(),
        decision_period_secs: 5.0,
    }
}

fn snapshot(now: f64, prompt_rate: f64, desired: u32) -> Snapshot {
    Snapshot {
        now_secs: now,
        demand: Demand {
            request_rate: Some(prompt_rate / 1000.0),
            prompt_token_rate: Some(prompt_rate),
            generation_token_rate: Some(0.0),
            rate_window_secs: None,
        },
        signals: ServingSignals::default(),
        capacity: Capacity {
            desired_serving: desired,
            ready: desired,
            pending: Vec::new(),
            sleeping: 0,
            placeholders: 0,
        },
        time_to_ready: TierTimes {
            cold: TimeToReady::prior(120.0),
            placeholder: TimeToReady::prior(40.0),
            wake: TimeToReady::prior(2.0),
        },
    }
}

#[test]
fn misses_are_the_excess_share_of_each_window() {
    // Windows of 10 s with work 1.2 (10 req/s) and 3.6 (30 req/s), objective 2 s: 2 replicas
    // × 0.5 clear 1.0 × 12 / 10 = 1.2 per window-second: the first misses nothing, the second
    // 1 − 1.2/3.6 of its 30 req/s = 20/s; mean 10/s.
    let s = [(1.2, 10.0), (3.6, 30.0)];
    assert!((expected_misses_per_sec(&s, 2.0, 0.5, 10.0, 2.0) - 10.0).abs() < 1e-12);
    // 6 replicas clear 3.6: nothing missed.
    assert_eq!(expected_misses_per_sec(&s, 6.0, 0.5, 10.0, 2.0), 0.0);
    assert_eq!(expected_misses_per_sec(&[], 1.0, 0.5, 10.0, 2.0), 0.0);
}

#[test]
fn offered_work_is_prefill_plus_decode() {
    let w = settings().work;
    let d = Demand {
        request_rate: Some(1.0),
        prompt_token_rate: Some(5000.0),
        generation_token_rate: Some(200.0),
        rate_window_secs: None,
    };
    // 5000 × 1e-4 + 200 × 1e-3 = 0.5 + 0.2.
    assert!((offered_work(&w, &d).unwrap() - 0.7).abs() < 1e-12);
    assert_eq!(offered_work(&w, &Demand::default()), None);
}

#[test]
fn missing_demand_holds_the_current_scale() {
    let s = settings();
    let mut state = State::default();
    let mut snap = snapshot(0.0, 0.0, 7);
    snap.demand = Demand::default();
    let r = decide(&s, &mut state, &snap);
    assert_eq!(r.serving_replicas, 7);
    assert_eq!(r.action, Action::Hold);
    assert!(r.reason.contains("missing"), "{}", r.reason);
}

#[test]
fn steady_load_is_sized_by_capacity() {
    // 12,000 prompt tokens/s × 1e-4 = 1.2 replica-s/s over a capacity of 0.5 → 3 replicas;
    // each window has 1.2 of work: 3 × 0.5 = 1.5 ≥ 1.2 misses nothing, 2 × 0.5 = 1.0 misses
    // 1/6 of 12 req/s = 2/s = 7,200/h × 0.0025 = 18/h > one more replica's 2.5/h.
    let s = settings();
    let mut state = State::default();
    let mut last = None;
    for i in 0..60 {
        last = Some(decide(
            &s,
            &mut state,
            &snapshot(i as f64 * 5.0, 12_000.0, 3),
        ));
    }
    let r = last.unwrap();
    assert_eq!(r.serving_replicas, 3, "{}", r.reason);
    assert!((r.expected_cost.gpu_per_hour - 7.5).abs() < 1e-9);
    assert_eq!(r.expected_cost.misses_per_hour, 0.0);
    assert!((r.forecast.work.expected - 1.2).abs() < 1e-6);
}

#[test]
fn a_cheap_miss_leaves_bursts_uncovered_and_a_dear_one_covers_them() {
    // Level 0.4 with a 10 s burst of 4.0 every 5 minutes: the burst windows are ~3 of every
    // 60 samples. Covering a burst takes 6–7 replicas (4.0 × 10 s / 12 s / 0.5 = 6.7, scaled by
    // the baseline ahead over the baseline when the burst was seen) instead of 1.
    let run = |ratio: f64| {
        let mut s = settings();
        s.cost = Cost::from_ratio(2.5, ratio);
        let mut state = State::default();
        let mut last = None;
        for i in 0..360 {
            let prompt = if i % 60 < 2 { 40_000.0 } else { 4_000.0 };
            last = Some(decide(&s, &mut state, &snapshot(i as f64 * 5.0, prompt, 1)));
        }
        last.unwrap()
    };
    let cheap = run(1e-6);
    let dear = run(10.0);
    assert!(cheap.serving_replicas <= 2, "{}", cheap.reason);
    assert!(dear.serving_replicas >= 6, "{}", dear.reason);
    assert!(dear.expected_cost.attainment > cheap.expected_cost.attainment);
}

#[test]
fn scale_down_waits_one_median_cold_start() {
    let s = settings();
    let mut state = State::default();
    let mut t = 0.0;
    for _ in 0..40 {
        decide(&s, &mut state, &snapshot(t, 20_000.0, 4));
        t += 5.0;
    }
    // Load stops; the median cold start is 120 s. At +60 s the target of 4 is still held.
    let stop = t;
    let mut at = |secs: f64, state: &mut State| {
        let mut r = None;
        while t <= stop + secs {
            r = Some(decide(&s, state, &snapshot(t, 0.0, 4)));
            t += 5.0;
        }
        r.unwrap()
    };
    let r = at(60.0, &mut state);
    assert_eq!(r.serving_replicas, 4, "{}", r.reason);
    assert!(r.reason.contains("holding"), "{}", r.reason);
    // Well after the level has decayed and 120 s have passed: back to the minimum.
    let r = at(600.0, &mut state);
    assert_eq!(r.serving_replicas, 1, "{}", r.reason);
    assert_eq!(r.action, Action::ScaleDown);
}

#[test]
fn warm_tiers_priced_like_serving_are_not_used() {
    let mut s = settings();
    s.tiers.sleeping = TierSetting {
        enabled: true,
        price_share: 1.0,
        max: 4,
    };
    s.tiers.placeholder = TierSetting {
        enabled: true,
        price_share: 1.0,
        max: 4,
    };
    let mut state = State::default();
    let mut r = None;
    for i in 0..100 {
        let prompt = if i < 50 { 20_000.0 } else { 0.0 };
        r = Some(decide(&s, &mut state, &snapshot(i as f64 * 5.0, prompt, 4)));
    }
    let r = r.unwrap();
    assert_eq!((r.sleeping_wanted, r.placeholders_wanted), (0, 0));
    assert!(r.reason.contains("kept awake"), "{}", r.reason);
}

#[test]
fn a_cheaper_sleep_tier_holds_the_cold_start_reserve_asleep() {
    let mut s = settings();
    s.tiers.sleeping = TierSetting {
        enabled: true,
        price_share: 0.3,
        max: 2,
    };
    let mut state = State::default();
    let mut t = 0.0;
    for _ in 0..40 {
        decide(&s, &mut state, &snapshot(t, 20_000.0, 4));
        t += 5.0;
    }
    // Load falls to a quarter: the target drops to 1 while 4 are held for a cold start; the
    // held excess (3) goes to sleep up to the tier's max (2).
    let mut r = None;
    for _ in 0..12 {
        r = Some(decide(&s, &mut state, &snapshot(t, 500.0, 4)));
        t += 5.0;
    }
    let r = r.unwrap();
    assert_eq!(r.sleeping_wanted, 2, "{}", r.reason);
    assert_eq!(r.serving_replicas + r.sleeping_wanted, 4);
    assert_eq!(r.put_to_sleep, 2);
}

#[test]
fn sleepers_are_woken_before_new_pods() {
    let s = settings();
    let mut state = State::default();
    let mut r = None;
    for i in 0..20 {
        let mut snap = snapshot(i as f64 * 5.0, 20_000.0, 1);
        snap.capacity.ready = 1;
        snap.capacity.sleeping = 2;
        r = Some(decide(&s, &mut state, &snap));
    }
    let r = r.unwrap();
    // 2.0 of work over 0.5 → 4 serving; 1 ready + 2 asleep: wake both.
    assert_eq!(r.serving_replicas, 4);
    assert_eq!(r.wake, 2);
    assert_eq!(r.action, Action::Wake);
}

#[test]
fn a_missed_objective_lowers_the_capacity() {
    let s = settings();
    let mut state = State::default();
    let mut snap = snapshot(0.0, 4_000.0, 1);
    snap.signals.ttft_p95_secs = Some(5.0);
    // Load per replica 0.4 missed the objective: capacity 0.5 → 0.5 + 0.05 × (0.36 − 0.5).
    let r = decide(&s, &mut state, &snap);
    assert!((r.capacity_per_replica - 0.493).abs() < 1e-12);
}

#[test]
fn state_round_trips_through_json_and_decides_the_same() {
    let s = settings();
    let mut a = State::default();
    for i in 0..30 {
        decide(
            &s,
            &mut a,
            &snapshot(i as f64 * 5.0, 9_000.0 + i as f64 * 100.0, 2),
        );
    }
    let mut b: State = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    let next = snapshot(150.0, 12_000.0, 2);
    assert_eq!(decide(&s, &mut a, &next), decide(&s, &mut b, &next));
}

#[test]
fn queued_requests_count_as_demand() {
    // Throughput flat at 1.0 of work (10,000 prompt tokens/s, 10 req/s → 0.1 per request);
    // then 200 requests wait: 200 × 0.1 / 10 s window = 2.0 more work → more replicas.
    let s = settings();
    let mut state = State::default();
    let mut flat = None;
    for i in 0..30 {
        flat = Some(decide(
            &s,
            &mut state,
            &snapshot(i as f64 * 5.0, 10_000.0, 2),
        ));
    }
    let mut snap = snapshot(150.0, 10_000.0, 2);
    snap.demand.request_rate = Some(10.0);
    snap.signals.queue_depth = Some(200.0);
    let queued = decide(&s, &mut state, &snap);
    assert!(
        queued
            .reason
            .starts_with("200 queued count as 2.00 of work"),
        "{}",
        queued.reason
    );
    assert!(queued.serving_replicas > flat.unwrap().serving_replicas);
}

#[test]
fn settings_are_validated() {
    let mut s = settings();
    assert_eq!(s.validate(), Ok(()));
    s.bounds.min_replicas = 0;
    assert!(s.validate().is_err());
    let mut s = settings();
    s.tiers.sleeping.price_share = 1.5;
    assert!(s.validate().is_err());
}

/// The e2e ramp (tests/e2e/test_warm_pool.py) as the controller sees it: one closed-loop
/// client more every 5 s from t = 0 (before: none), each client 0.19 replica-seconds of work
/// per second and one request in flight; the rates are means over a 20 s window (the e2e
/// adapter's), the requests in flight are read as they are. Decisions every 5 s from
/// t = −12.5, 2.5 s after each step (the e2e's sync phase is arbitrary), cold start learned as
/// its prior (median 12 s, p95 12·e^(1.6448536·0.25) = 18.104 s): horizon 18.104 + 5 = 23.104 s.
fn first_raise_on_the_ramp(in_flight_read: bool) -> f64 {
    let clients = |t: f64| {
        if t < 0.0 {
            0.0
        } else {
            1.0 + (t / 5.0).floor()
        }
    };
    // Mean of the work over [t − 20, t], in 0.1 s steps.
    let windowed = |t: f64| {
        (0..200)
            .map(|i| 0.19 * clients(t - 20.0 + i as f64 * 0.1))
            .sum::<f64>()
            / 200.0
    };
    let s = settings();
    let mut state = State::default();
    for i in 0..20 {
        let t = -12.5 + 5.0 * i as f64;
        let mut snap = snapshot(t, windowed(t) / 1e-4, 1);
        snap.demand.rate_window_secs = Some(20.0);
        snap.signals.running = in_flight_read.then(|| clients(t));
        snap.time_to_ready.cold = TimeToReady::prior(12.0);
        let r = decide(&s, &mut state, &snap);
        if r.serving_replicas >= 2 {
            return t;
        }
    }
    f64::INFINITY
}

#[test]
fn a_ramp_in_flight_is_met_one_cold_start_ahead() {
    // By hand at t = 7.5: in flight 0, 0, 1, 2 at t = −7.5 … 7.5 (inside the 18.1 s span) fit
    // 0.75 + 0.14·t (R² = 0.89); 23.104 s ahead the line is at 0.75 + 0.14·30.604 = 5.03. The
    // rates (0.19 × 0.5 clients, the mean over [−12.5, 7.5] = 0.095) were measured at a mean
    // of 0.5 in flight (the line through the samples 0, 0, 0, 1, 2 at −12.5 … 7.5, averaged
    // over the window: (2.5 + 7.5) / 20), so the work grows by 5.03 / 0.5 = 10.07 → 0.957,
    // over 0.5 a replica → 2. At t = 2.5 the samples 0, 0, 0, 1 fit a line with R² = 0.6: no
    // ramp yet (one step is not a ramp).
    // The rule this replaced (growth from the line 10 s back, at most 4×; horizon 18.1 s)
    // asked at 12.5 s: at 7.5 the line 10 s back is 0.4, 4.33 / 0.4 = 10.8 capped to 4 →
    // 0.38 → 1.
    assert_eq!(first_raise_on_the_ramp(true), 7.5);
    // One replica (4 slots, 0.19 each) is outgrown at 5 clients, t = 20; a 12 s cold start
    // asked for at t = 7.5 is Ready by 19.5. Without the requests in flight the decision only
    // sees the lagging rates and rises when a replica is already outgrown.
    assert!(first_raise_on_the_ramp(false) >= 20.0);
}

#[test]
fn the_horizon_is_a_p95_cold_start_plus_one_decision_period() {
    // Prior of a 120 s median: p95 120·e^(1.6448536·0.25) = 181.038 s; decisions every 5 s:
    // what one decision asks for must serve until the next one's ask lands, 186.038 s ahead.
    let s = settings();
    let r = decide(&s, &mut State::default(), &snapshot(0.0, 1000.0, 1));
    assert!(
        (r.forecast.horizon_secs - 186.038).abs() < 1e-3,
        "{}",
        r.forecast.horizon_secs
    );
}
