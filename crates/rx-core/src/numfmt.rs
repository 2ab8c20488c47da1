//! C's `%.<precision>g` number formatting, which Redis and Lua use for doubles (glibc's
//! output, `nan`/`-nan`/`inf`/`-inf` included). Pure, and the one implementation RX has:
//! `redis.call` arguments, replies and cjson all use it.

/// 10^i as doubles, exact.
const POW10: [f64; 18] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17,
];

/// "00" to "99".
const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// The longest integer `integer_text` writes: a sign and 20 digits.
const INTEGER_MAX: usize = 21;

/// `%.<precision>g` of `v` when it is a non-zero integer with no more than `precision`
/// digits: then it prints as its digits (no exponent, no fraction), the common case
/// (counters, scores, ids) that needs no float formatting. Written right-aligned in `buf`.
fn integer_text(v: f64, precision: usize, buf: &mut [u8; INTEGER_MAX]) -> Option<&[u8]> {
    let limit = POW10[precision.clamp(1, POW10.len() - 1)];
    if v == 0.0 || v.fract() != 0.0 || v.abs() >= limit {
        return None;
    }
    let mut n = (v as i64).unsigned_abs();
    let mut i = buf.len();
    while n >= 100 {
        let r = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
    }
    if n >= 10 {
        let r = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    if v < 0.0 {
        i -= 1;
        buf[i] = b'-';
    }
    Some(&buf[i..])
}

/// Formats `v` like glibc's `printf("%.{precision}g", v)`.
pub fn format_g(v: f64, precision: usize) -> String {
    let mut buf = [0u8; INTEGER_MAX];
    if let Some(digits) = integer_text(v, precision, &mut buf) {
        return String::from_utf8_lossy(digits).into_owned();
    }
    if v.is_nan() {
        return if v.is_sign_negative() { "-nan" } else { "nan" }.to_string();
    }
    if v.is_infinite() {
        return if v < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let p = precision.max(1) as i32;
    // For a normal double whose shortest round-trip digits are no more than `p`, those
    // digits are exactly what rounding to `p` digits yields, as long as the p-digit grid is
    // coarser than an ulp: up to 15 digits (DBL_DIG). At 16 and 17 the exact value's
    // further digits show (`%.17g` of 0.1 is 0.10000000000000001).
    let short = if v.is_normal() && p <= 15 {
        format!("{v:e}")
    } else {
        String::new()
    };
    if let Some((mant, exp)) = short.split_once('e') {
        let (neg, mant) = match mant.strip_prefix('-') {
            Some(m) => (true, m),
            None => (false, mant),
        };
        let digits: String = mant.chars().filter(|c| *c != '.').collect();
        let digits = digits.trim_end_matches('0');
        if let Ok(exp) = exp.parse::<i32>() {
            if !digits.is_empty() && digits.len() <= p as usize {
                return g_from_digits(neg, digits, exp, p);
            }
        }
    }
    // Scientific form with p significant digits decides the exponent, as C does.
    let sci = format!("{:.*e}", (p - 1) as usize, v);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= p {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim_fraction(mant), exp.abs())
    } else {
        let fixed = format!("{:.*}", (p - 1 - exp) as usize, v);
        trim_fraction(&fixed).to_string()
    }
}

/// Appends `format_g(v, precision)` to `out`, integers without any allocation.
pub fn append_g(out: &mut Vec<u8>, v: f64, precision: usize) {
    let mut buf = [0u8; INTEGER_MAX];
    match integer_text(v, precision, &mut buf) {
        Some(digits) => out.extend_from_slice(digits),
        None => out.extend_from_slice(format_g(v, precision).as_bytes()),
    }
}

/// `%g` output for the significant `digits` (no trailing zeros) of a number
/// d.ddd x 10^exp.
fn g_from_digits(neg: bool, digits: &str, exp: i32, p: i32) -> String {
    let mut s = String::with_capacity(digits.len() + 8);
    if neg {
        s.push('-');
    }
    if exp < -4 || exp >= p {
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        s.push('e');
        s.push(if exp < 0 { '-' } else { '+' });
        s.push_str(&format!("{:02}", exp.abs()));
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            s.push_str(digits);
            s.extend(std::iter::repeat_n('0', int_len - digits.len()));
        } else {
            s.push_str(&digits[..int_len]);
            s.push('.');
            s.push_str(&digits[int_len..]);
        }
    } else {
        s.push_str("0.");
        s.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        s.push_str(digits);
    }
    s
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// A formatted number held inline: `%.17g` needs at most 24 bytes.
#[derive(Clone, Copy)]
pub struct NumBuf {
    bytes: [u8; 32],
    len: u8,
}

impl NumBuf {
    pub const EMPTY: NumBuf = NumBuf {
        bytes: [0; 32],
        len: 0,
    };

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// `format_g` into a fixed buffer, without allocating for integers (the usual number in a
/// command argument).
#[inline]
pub fn format_g_buf(v: f64, precision: usize) -> NumBuf {
    let mut out = NumBuf::EMPTY;
    let mut buf = [0u8; INTEGER_MAX];
    let general;
    let text = match integer_text(v, precision, &mut buf) {
        Some(digits) => digits,
        None => {
            general = format_g(v, precision);
            general.as_bytes()
        }
    };
    let n = text.len().min(out.bytes.len());
    out.bytes[..n].copy_from_slice(&text[..n]);
    out.len = n as u8;
    out
}

/// A number argument as Redis 7.2.5+, 8 and Valkey 8 write it for `redis.call`: an integer
/// when the value is one within ±2^62 (`-0.0` is `0`), else the shortest digits that read
/// back as the same double, laid out as fpconv does (plain up to a few zeros, `e±X`
/// otherwise). The digits are the true shortest; fpconv's Grisu2 may rarely pick a longer
/// string for the same value.
pub fn format_shortest_buf(v: f64) -> NumBuf {
    let limit = (i64::MAX / 2) as f64;
    let text = if (-limit..=limit).contains(&v) && (v as i64) as f64 == v {
        (v as i64).to_string()
    } else {
        shortest_text(v)
    };
    let mut out = NumBuf::EMPTY;
    let n = text.len().min(out.bytes.len());
    out.bytes[..n].copy_from_slice(&text.as_bytes()[..n]);
    out.len = n as u8;
    out
}

fn shortest_text(v: f64) -> String {
    let neg = v.is_sign_negative();
    let sign = if neg { "-" } else { "" };
    if v.is_nan() {
        return format!("{sign}nan");
    }
    if v.is_infinite() {
        return format!("{sign}inf");
    }
    // Rust writes the shortest round-tripping digits as `d.ddde<x>`.
    let sci = format!("{:e}", v.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let n = digits.len() as i32;
    // The value is digits * 10^k.
    let k = exponent - (n - 1);
    let magnitude = (k + n - 1).abs();
    let body = if k >= 0 && magnitude < n + 7 {
        format!("{digits}{}", "0".repeat(k as usize))
    } else if k < 0 && (k > -7 || magnitude < 4) {
        let offset = n + k;
        if offset <= 0 {
            format!("0.{}{digits}", "0".repeat((-offset) as usize))
        } else {
            let (whole, fraction) = digits.split_at(offset as usize);
            format!("{whole}.{fraction}")
        }
    } else {
        let shown = n.min(18 - neg as i32) as usize;
        let (first, rest) = digits[..shown].split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        let exp_sign = if k + shown as i32 - 1 < 0 { '-' } else { '+' };
        format!("{first}{point}{rest}e{exp_sign}{magnitude}")
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::{append_g, format_g, format_g_buf, format_shortest_buf};

    #[test]
    fn shortest_arguments_follow_fpconv_layout() {
        let cases: &[(f64, &str)] = &[
            (0.1, "0.1"),
            (-(2f64.powi(63)), "-9223372036854776000"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
            (1e-7, "1e-7"),
            (0.000123, "0.000123"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e21, "1e+21"),
            (2f64.powi(62), "4611686018427387904"),
            (-0.0, "0"),
            (123456.5, "123456.5"),
            (1e15, "1000000000000000"),
            (1e16, "10000000000000000"),
            (-1.5e-10, "-1.5e-10"),
            (3.0, "3"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (-f64::NAN, "-nan"),
            (f64::NAN, "nan"),
            (2.5e-5, "0.000025"),
            (12345.678, "12345.678"),
            (1.5e22, "1.5e+22"),
        ];
        for (v, want) in cases {
            assert_eq!(
                std::str::from_utf8(format_shortest_buf(*v).as_bytes()).unwrap(),
                *want,
                "{v}"
            );
        }
    }

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

    /// The integer shortcut of `append_g` prints what `format_g` prints, at
    /// every precision, around every power of ten and at the limits.
    #[test]
    fn integer_format_matches_general_format() {
        let mut xs: Vec<f64> = vec![0.0, -0.0, 1.0, -1.0, 7.0, 2f64.powi(53), -(2f64.powi(63))];
        for e in 0..=16 {
            let p = 10f64.powi(e);
            for d in [-2.0, -1.0, 0.0, 1.0, 2.0] {
                xs.push(p + d);
                xs.push(-(p + d));
            }
            xs.push(p * 3.0 + 0.5);
            xs.push(p - 0.5);
        }
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let digits = (seed % 16) as i32;
            let v = (seed >> 8) % 10u64.pow(digits as u32).max(1);
            xs.push(if seed & 1 == 1 { -(v as f64) } else { v as f64 });
        }
        for &x in &xs {
            for prec in 1..=17 {
                let mut out = Vec::new();
                append_g(&mut out, x, prec);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    format_g(x, prec),
                    "{x} %.{prec}g"
                );
            }
        }
    }

    /// `%.14g` formatting as glibc prints it.
    #[test]
    fn number_format() {
        let cases: &[(f64, usize, &str)] = &[
            (0.1, 14, "0.1"),
            (1.0 / 3.0, 14, "0.33333333333333"),
            (1e21, 14, "1e+21"),
            (123456789012345.0, 14, "1.2345678901234e+14"),
            (12345678901234.0, 14, "12345678901234"),
            (0.0001, 14, "0.0001"),
            (0.00001, 14, "1e-05"),
            (-0.0, 14, "-0"),
            (9.5, 1, "1e+01"),
            (0.95, 1, "0.9"),
            (5e-324, 14, "4.9406564584125e-324"),
            (f64::INFINITY, 14, "inf"),
        ];
        for &(x, p, want) in cases {
            assert_eq!(format_g(x, p), want, "{} %.{}g", x, p);
        }
    }

    /// Not-a-number keeps its sign, as glibc prints it (native `redis.call('ECHO', 0/0)`
    /// sends `-nan`).
    #[test]
    fn non_finite_values() {
        assert_eq!(format_g(f64::NAN, 17), "nan");
        assert_eq!(format_g(-f64::NAN, 17), "-nan");
        assert_eq!(format_g(f64::NEG_INFINITY, 17), "-inf");
        assert_eq!(format_g_buf(-f64::NAN, 17).as_bytes(), b"-nan");
    }
}
