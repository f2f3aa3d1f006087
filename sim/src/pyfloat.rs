//! Number formatting as the Python `prometheus_client` library prints it.
//!
//! Owns: `floatToGoString` (Python `repr(float)` plus the switch to exponent notation for
//! values with more than six integer digits), which is what makes real vLLM output read
//! `0.0`, `2.0` and `1.7682643398898673e+09`. Does not own: label escaping or layout.

/// Formats `value` exactly as `prometheus_client.utils.floatToGoString` does.
///
/// ```no_run
/// use inferscale_sim::pyfloat::go_string;
/// assert_eq!(go_string(1768264339.8898673), "1.7682643398898673e+09");
/// ```
pub fn go_string(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value == f64::INFINITY {
        return "+Inf".to_owned();
    }
    if value == f64::NEG_INFINITY {
        return "-Inf".to_owned();
    }
    let repr = python_repr(value);
    let dot = repr.find('.');
    match dot {
        // Go switches to exponents sooner than Python; prometheus_client mimics Go for
        // positive values with more than six digits before the point.
        Some(dot) if value > 0.0 && dot > 6 => {
            let digits: String = repr[1..dot]
                .chars()
                .chain(repr[dot + 1..].chars())
                .collect();
            let mantissa = format!("{}.{}", &repr[..1], digits);
            let mantissa = mantissa.trim_end_matches(['0', '.']);
            // The literal `e+0` is the library's: 1e10 really prints as `1e+010`.
            format!("{mantissa}e+0{}", dot - 1)
        }
        _ => repr,
    }
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for decimal
/// exponents in -4..16 (always with a fractional part), scientific otherwise.
pub fn python_repr(value: f64) -> String {
    if value == 0.0 {
        return if value.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        }
        .to_owned();
    }
    // Rust's `{:e}` yields the same shortest round-trip digits as Python's repr.
    let sci = format!("{:e}", value.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if value < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let mantissa = if digits.len() == 1 {
            digits.clone()
        } else {
            format!("{}.{}", &digits[..1], &digits[1..])
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected strings are Python 3.12 output of `prometheus_client.utils.floatToGoString`
    // and `repr`, or copied from the vLLM fixtures.
    #[test]
    fn matches_python_and_the_fixtures() {
        let cases = [
            (0.0, "0.0"),
            (2.0, "2.0"),
            (66.0, "66.0"),
            (0.001, "0.001"),
            (2560.0, "2560.0"),
            (20000.0, "20000.0"),
            (0.4143967628479004, "0.4143967628479004"),
            (1.883227378129959e-05, "1.883227378129959e-05"),
            (0.0001, "0.0001"),
            (1e-05, "1e-05"),
            (1768264339.8898673, "1.7682643398898673e+09"),
            (1768264339.889982, "1.768264339889982e+09"),
            (1774011384.6, "1.7740113846e+09"),
            (1234567.0, "1.234567e+06"),
            (123456.0, "123456.0"),
            (10000000.0, "1e+07"),
            (12345678901.5, "1.23456789015e+010"),
            (-3.5, "-3.5"),
            (f64::INFINITY, "+Inf"),
        ];
        for (value, expected) in cases {
            assert_eq!(go_string(value), expected, "{value:?}");
        }
    }

    #[test]
    fn repr_switches_to_exponent_at_1e16() {
        assert_eq!(python_repr(1e15), "1000000000000000.0");
        assert_eq!(python_repr(1e16), "1e+16");
        assert_eq!(python_repr(1.5e-7), "1.5e-07");
    }
}
