//! C's `%.<precision>g` number formatting, which Redis and Lua use for doubles. Pure.

/// Formats `v` like C's `printf("%.{precision}g", v)` for finite values.
pub fn format_g(v: f64, precision: usize) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let p = precision.max(1);
    // Integers below 10^p print as themselves; this is the common case (counters, scores)
    // and avoids exact float formatting.
    if v.fract() == 0.0 && v.abs() < 10f64.powi(p.min(17) as i32) {
        return (v as i64).to_string();
    }
    // Scientific form with p significant digits decides the exponent, as C does.
    let sci = format!("{:.*e}", p - 1, v);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= p as i32 {
        let m = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        trim_fraction(&format!("{:.*}", decimals, v)).to_string()
    }
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::format_g;

    #[test]
    #[allow(clippy::approx_constant)]
    fn matches_c_printf() {
        let cases: &[(f64, usize, &str)] = &[
            (1.5, 17, "1.5"),
            (0.1, 17, "0.10000000000000001"),
            (100.0, 17, "100"),
            (1e20, 17, "1e+20"),
            (1e16, 17, "10000000000000000"),
            (1e17, 17, "1e+17"),
            (0.0001, 17, "0.0001"),
            (0.00001, 17, "1.0000000000000001e-05"),
            (-2.5, 14, "-2.5"),
            (3.14159265358979, 14, "3.1415926535898"),
            (1e15, 14, "1e+15"),
            (123456789012.0, 14, "123456789012"),
            (0.0, 17, "0"),
            (-42.0, 17, "-42"),
            (99999999999999.0, 14, "99999999999999"),
            (100000000000000.0, 14, "1e+14"),
            (12345678901234567.0, 17, "12345678901234568"),
        ];
        for (v, p, want) in cases {
            assert_eq!(format_g(*v, *p), *want, "{v} %.{p}g");
        }
    }
}
