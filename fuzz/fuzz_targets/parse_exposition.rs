//! Fuzzes everything that reads untrusted `/metrics` bytes: UTF-8 repair, the parser in
//! both dialects with and without a name filter, label walking, the engine snapshot
//! builder (with the default limits and with tiny ones, checking that no limit is exceeded
//! and that nothing non-finite or non-monotone becomes a value), the dcgm-exporter reader
//! and the signals over two snapshots of the input. Any panic is a bug: bad input must be
//! skipped and counted.
#![no_main]

use inferscale_metrics::parser::{sanitize_utf8, Format, Parser, Record};
use inferscale_metrics::gpu::{join_gpus, read_gpus};
use inferscale_metrics::profile::RouteIndex;
use inferscale_metrics::signals::{replica_signals, SignalOptions};
use inferscale_metrics::profile::{CounterSignal, GaugeSignal, HistogramSignal};
use inferscale_metrics::snapshot::{EngineSnapshot, SnapshotLimits};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static ROUTES: OnceLock<RouteIndex> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let routes = ROUTES.get_or_init(RouteIndex::engines);
    let (text, _) = sanitize_utf8(data);
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let mut parser = Parser::new(&text, format);
        let mut samples = 0;
        for record in parser.by_ref() {
            if let Record::Sample(sample) = record {
                samples += 1;
                for label in sample.labels() {
                    assert!(!label.name.is_empty());
                }
            }
        }
        let stats = parser.into_stats();
        assert_eq!(samples, stats.samples);
        assert!(stats.samples + stats.skipped() <= stats.lines);
        let a = EngineSnapshot::from_exposition(&text, format, 0.0, routes);
        let b = EngineSnapshot::from_exposition(&text, format, 15.0, routes);
        let _ = replica_signals(&[&a, &b], SignalOptions::default());
        let tiny = SnapshotLimits {
            max_models: 2,
            max_series: 16,
            max_bucket_bounds: 4,
            max_model_name_bytes: 8,
        };
        let bounded = EngineSnapshot::from_exposition_with(&text, format, 0.0, routes, &tiny);
        assert!(bounded.models.len() <= tiny.max_models);
        for (name, model) in bounded.models.iter().chain(&a.models) {
            assert!(name.len() <= SnapshotLimits::DEFAULT_MAX_MODEL_NAME_BYTES);
            for g in GaugeSignal::ALL {
                assert!(model.gauge(g).is_none_or(f64::is_finite));
            }
            for c in CounterSignal::ALL {
                assert!(model.counter(c).is_none_or(f64::is_finite));
            }
            for h in HistogramSignal::ALL {
                if let Some(h) = model.histogram(h) {
                    assert!(h.upper_bounds().len() <= SnapshotLimits::DEFAULT_MAX_BUCKET_BOUNDS);
                    assert!(h.cumulative_counts().windows(2).all(|w| w[0] <= w[1]));
                }
            }
        }
        let (gpus, _) = read_gpus(&text, format);
        let _ = join_gpus(&gpus);
    }
});
