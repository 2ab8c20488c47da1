//! glibc's `strtod`, as Lua 5.1 and lua-cjson read numbers with it: decimal and
//! hexadecimal (`0x1.8p3`) forms, correctly rounded once.

/// glibc `strtod()` from `start`: the value and where parsing stopped, or
/// `None` when no number could be read.
pub fn strtod(data: &[u8], start: usize) -> Option<(f64, usize)> {
    let at = |i: usize| data.get(i).copied().unwrap_or(0);
    let ci = |i: usize, lit: &[u8]| {
        lit.iter()
            .enumerate()
            .all(|(k, &c)| at(i + k).to_ascii_lowercase() == c)
    };
    let mut i = start;
    while matches!(at(i), b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let mut neg = false;
    if at(i) == b'+' || at(i) == b'-' {
        neg = at(i) == b'-';
        i += 1;
    }
    let sign = |x: f64| if neg { -x } else { x };
    if ci(i, b"inf") {
        let end = if ci(i, b"infinity") { i + 8 } else { i + 3 };
        return Some((sign(f64::INFINITY), end));
    }
    if ci(i, b"nan") {
        let mut end = i + 3;
        if at(end) == b'(' {
            let mut k = end + 1;
            while at(k).is_ascii_alphanumeric() || at(k) == b'_' {
                k += 1;
            }
            if at(k) == b')' {
                end = k + 1;
            }
        }
        return Some((sign(f64::NAN), end));
    }
    if at(i) == b'0' && (at(i + 1) | 0x20) == b'x' {
        let j = i + 2;
        if at(j).is_ascii_hexdigit() || (at(j) == b'.' && at(j + 1).is_ascii_hexdigit()) {
            let (v, end) = hex_float(data, j);
            return Some((sign(v), end));
        }
        return Some((sign(0.0), i + 1));
    }
    let int_start = i;
    while at(i).is_ascii_digit() {
        i += 1;
    }
    let int_part = &data[int_start..i.min(data.len())];
    let mut frac_part: &[u8] = &[];
    if at(i) == b'.' {
        let f = i + 1;
        let mut k = f;
        while at(k).is_ascii_digit() {
            k += 1;
        }
        if int_part.is_empty() && k == f {
            return None;
        }
        frac_part = &data[f..k];
        i = k;
    } else if int_part.is_empty() {
        return None;
    }
    let mut exp_part: &[u8] = &[];
    if (at(i) | 0x20) == b'e' {
        let mut k = i + 1;
        if at(k) == b'+' || at(k) == b'-' {
            k += 1;
        }
        if at(k).is_ascii_digit() {
            while at(k).is_ascii_digit() {
                k += 1;
            }
            exp_part = &data[i + 1..k];
            i = k;
        }
    }
    let mut s = String::with_capacity(int_part.len() + frac_part.len() + exp_part.len() + 4);
    if int_part.is_empty() {
        s.push('0');
    } else {
        s.push_str(std::str::from_utf8(int_part).unwrap_or("0"));
    }
    if !frac_part.is_empty() {
        s.push('.');
        s.push_str(std::str::from_utf8(frac_part).unwrap_or("0"));
    }
    if !exp_part.is_empty() {
        s.push('e');
        s.push_str(std::str::from_utf8(exp_part).unwrap_or("0"));
    }
    let v: f64 = s.parse().unwrap_or(0.0);
    Some((sign(v), i))
}

/// Hexadecimal floating point digits (after "0x"), correctly rounded.
pub fn hex_float(data: &[u8], start: usize) -> (f64, usize) {
    let at = |i: usize| data.get(i).copied().unwrap_or(0);
    let mut i = start;
    let mut mant: u64 = 0;
    let mut digits = 0; // significant digits taken into `mant`
    let mut sticky = false;
    let mut exp2: i64 = 0;
    let mut seen_point = false;
    loop {
        let c = at(i);
        if c == b'.' && !seen_point {
            seen_point = true;
            i += 1;
            continue;
        }
        let Some(d) = hex_digit(c) else { break };
        if mant == 0 && d == 0 {
            if seen_point {
                exp2 -= 4;
            }
        } else if digits < 16 {
            mant = (mant << 4) | d as u64;
            digits += 1;
            if seen_point {
                exp2 -= 4;
            }
        } else {
            sticky |= d != 0;
            if !seen_point {
                exp2 += 4;
            }
        }
        i += 1;
    }
    if (at(i) | 0x20) == b'p' {
        let mut k = i + 1;
        let mut eneg = false;
        if at(k) == b'+' || at(k) == b'-' {
            eneg = at(k) == b'-';
            k += 1;
        }
        if at(k).is_ascii_digit() {
            let mut e: i64 = 0;
            while at(k).is_ascii_digit() {
                e = (e * 10 + (at(k) - b'0') as i64).min(1 << 40);
                k += 1;
            }
            exp2 += if eneg { -e } else { e };
            i = k;
        }
    }
    (scale_binary(mant, sticky, exp2), i)
}

/// mant * 2^exp2 rounded to nearest-even (`sticky`: nonzero bits below mant).
fn scale_binary(mant: u64, sticky: bool, exp2: i64) -> f64 {
    if mant == 0 {
        return 0.0;
    }
    let lz = mant.leading_zeros() as i64;
    let m = mant << lz; // top bit set; value = m * 2^(e - 63)
    let e = exp2 + 63 - lz;
    if e > 1023 {
        return f64::INFINITY;
    }
    // Bits to drop from the 64-bit m to fit the 53-bit (or subnormal) mantissa.
    let shift: i64 = if e >= -1022 { 11 } else { 11 + (-1022 - e) };
    if shift > 64 {
        return 0.0;
    }
    let (kept, rem, half) = if shift == 64 {
        (0u64, m as u128, 1u128 << 63)
    } else {
        (
            m >> shift,
            (m & ((1u64 << shift) - 1)) as u128,
            1u128 << (shift - 1),
        )
    };
    let round_up = rem > half || (rem == half && (sticky || kept & 1 == 1));
    let mut kept = kept + round_up as u64;
    let mut e = e;
    if e >= -1022 {
        if kept == 1u64 << 53 {
            kept >>= 1;
            e += 1;
            if e > 1023 {
                return f64::INFINITY;
            }
        }
        f64::from_bits((((e + 1023) as u64) << 52) | (kept & ((1u64 << 52) - 1)))
    } else {
        // Subnormal (kept may have rounded up into the smallest normal).
        f64::from_bits(kept)
    }
}

fn hex_digit(c: u8) -> Option<u32> {
    (c as char).to_digit(16)
}
