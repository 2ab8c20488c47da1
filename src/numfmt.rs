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

/// A formatted number held inline: `%.17g` needs at most 24 bytes.
#[derive(Clone, Copy)]
pub struct NumBuf {
    bytes: [u8; 32],
    len: u8,
    /// Set by the caller for slots that hold a formatted number.
    number: bool,
}

impl NumBuf {
    pub const EMPTY: NumBuf = NumBuf {
        bytes: [0; 32],
        len: 0,
        number: false,
    };

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn mark_number(&mut self) {
        self.number = true;
    }

    pub fn is_number(&self) -> bool {
        self.number
    }
}

/// `format_g` without allocating for integers, the usual number in a command argument.
pub fn format_g_buf(v: f64, precision: usize) -> NumBuf {
    let mut out = NumBuf::EMPTY;
    if v != 0.0 && v.fract() == 0.0 && v.abs() < 10f64.powi(precision.clamp(1, 17) as i32) {
        // Digits from the right, then the sign.
        let mut n = (v as i64).unsigned_abs();
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        while n > 0 {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let mut len = 0;
        if v < 0.0 {
            out.bytes[0] = b'-';
            len = 1;
        }
        let d = &digits[i..];
        out.bytes[len..len + d.len()].copy_from_slice(d);
        out.len = (len + d.len()) as u8;
        return out;
    }
    let s = format_g(v, precision);
    let n = s.len().min(out.bytes.len());
    out.bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
    out.len = n as u8;
    out
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
    use super::{format_g, format_g_buf};

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
            assert_eq!(format_g_buf(*v, *p).as_bytes(), want.as_bytes(), "{v} buf");
        }
        for v in [
            1.0,
            -1.0,
            9.0,
            10.0,
            -987654321.0,
            1e16 - 2.0,
            -(1e16 - 2.0),
            f64::MIN,
            1e300,
        ] {
            assert_eq!(
                format_g_buf(v, 17).as_bytes(),
                format_g(v, 17).as_bytes(),
                "{v}"
            );
        }
    }
}
