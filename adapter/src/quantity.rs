//! Kubernetes `Quantity` strings for metric values.
//!
//! Owns: turning an `f64` into the decimal quantity the HPA decodes (`3`, `3500m`, `475u`).
//! The HPA reads custom metrics with `Quantity.MilliValue()`, so milli precision is what
//! matters for decisions; smaller values keep micro or nano precision so `kubectl get --raw`
//! never shows a real but tiny latency as `0`.

/// Formats a finite value as a decimal-SI quantity with the coarsest exact-enough suffix.
/// Returns `None` for NaN and infinities, which have no quantity form (and which we never
/// serve: a value we cannot state is missing, not a number).
pub fn format_quantity(value: f64) -> Option<String> {
    if !value.is_finite() {
        return None;
    }
    // Integers print as integers. Every f64 from 2^53 up is an integer; those (and any
    // integer too large for i64) print their exact decimal expansion, never through an
    // `as i64` cast, which saturates (1e17 would read 9223372036854775807m).
    if value.fract() == 0.0 {
        if value.abs() < 9.0e15 {
            return Some(format!("{}", value as i64));
        }
        return Some(format!("{value:.0}"));
    }
    for (scale, suffix) in [(1e3, "m"), (1e6, "u"), (1e9, "n")] {
        let scaled = value * scale;
        if scaled.abs() >= 9.0e15 {
            // Too large to carry the extra digits: milli (or coarser) precision already
            // exceeds what any HPA target can distinguish.
            return Some(format!("{}{suffix}", scaled.round() as i64));
        }
        let rounded = scaled.round();
        // Exact at this scale (within float noise), or the finest scale we offer.
        if (scaled - rounded).abs() <= 1e-9 * scaled.abs().max(1.0) || suffix == "n" {
            if rounded == 0.0 {
                continue;
            }
            return Some(format!("{}{suffix}", rounded as i64));
        }
    }
    Some("0".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_fractions_and_small_values() {
        assert_eq!(format_quantity(3.0).as_deref(), Some("3"));
        assert_eq!(format_quantity(0.0).as_deref(), Some("0"));
        assert_eq!(format_quantity(3.5).as_deref(), Some("3500m"));
        assert_eq!(format_quantity(0.475).as_deref(), Some("475m"));
        assert_eq!(format_quantity(-2.25).as_deref(), Some("-2250m"));
        assert_eq!(format_quantity(0.0005).as_deref(), Some("500u"));
        assert_eq!(format_quantity(1.0 / 3.0).as_deref(), Some("333333333n"));
        assert_eq!(format_quantity(1e-12).as_deref(), Some("0"));
        assert_eq!(format_quantity(f64::NAN), None);
        assert_eq!(format_quantity(f64::INFINITY), None);
    }

    #[test]
    fn huge_integers_print_their_exact_value_not_a_saturated_cast() {
        assert_eq!(format_quantity(1e17).as_deref(), Some("100000000000000000"));
        assert_eq!(
            format_quantity(-2f64.powi(70)).as_deref(),
            Some("-1180591620717411303424")
        );
        assert_eq!(format_quantity(9.0e15).as_deref(), Some("9000000000000000"));
    }

    #[test]
    fn float_noise_does_not_leak_into_the_suffix() {
        assert_eq!(format_quantity(0.1 + 0.2).as_deref(), Some("300m"));
        assert_eq!(format_quantity(0.9750000000000001).as_deref(), Some("975m"));
    }
}
