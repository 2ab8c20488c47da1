//! `struct`: binary packing for Redis scripts.
//!
//! Behaves like Roberto Ierusalimschy's struct library (struct.c 1.4) as
//! bundled and patched by Redis 7.0: `pack`, `unpack` and `size` with the
//! options `> < ! x b B h H l L T i[n] I[n] f d s c[n]` and spaces, native
//! (little) endianness and alignment 1 by default, `long`/`size_t` of 8 bytes,
//! the bounds checks Redis added (`offset must be 1 or greater`,
//! `integral size overflow`, ...) and the C conversions of out-of-range
//! numbers on x86-64.
//!
//! Written from the observed behaviour of native Redis 7.0.15.

use mlua::{Lua, Table, Value};

use self::glue::{
    arg_err, check_number, check_string, f2i64, f2u64, msg, opt_integer, to_number, Args, Fail,
    Out, MAXCSTACK, R,
};

/// Largest size of an `i`/`I` integer.
const MAXINTSIZE: i64 = 32;
/// Default alignment of `!` (alignment of double on x86-64).
const MAXALIGN: i64 = 8;

/// Builds the `struct` library table.
pub fn open(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("pack", glue::function(lua, b_pack)?)?;
    t.raw_set("unpack", glue::function(lua, b_unpack)?)?;
    t.raw_set("size", glue::function(lua, b_size)?)?;
    Ok(t)
}

struct Header {
    little: bool,
    align: u64,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            little: true,
            align: 1,
        }
    }
}

/// The format string as C sees it: up to the first NUL.
fn c_string(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(p) => &b[..p],
        None => b,
    }
}

struct Fmt<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Fmt<'a> {
    fn peek(&self) -> u8 {
        self.s.get(self.i).copied().unwrap_or(0)
    }

    /// getnum(): an optional decimal count.
    fn getnum(&mut self, df: i64) -> R<i64> {
        if !self.peek().is_ascii_digit() {
            return Ok(df);
        }
        let mut a: i64 = 0;
        while self.peek().is_ascii_digit() {
            let d = (self.peek() - b'0') as i64;
            if a > (i32::MAX as i64) / 10 || a * 10 > i32::MAX as i64 - d {
                return Err(msg("integral size overflow"));
            }
            a = a * 10 + d;
            self.i += 1;
        }
        Ok(a)
    }

    /// optsize(): the size of option `opt` (0 for options without one).
    fn optsize(&mut self, opt: u8) -> R<u64> {
        Ok(match opt {
            b'B' | b'b' => 1,
            b'H' | b'h' => 2,
            b'L' | b'l' | b'T' | b'd' => 8,
            b'f' => 4,
            b'x' => 1,
            b'c' => self.getnum(1)? as u64,
            b'i' | b'I' => {
                let sz = self.getnum(4)?;
                if sz > MAXINTSIZE {
                    return Err(msg(format!(
                        "integral size {} is larger than limit of {}",
                        sz, MAXINTSIZE
                    )));
                }
                sz as u64
            }
            _ => 0,
        })
    }

    /// controloptions(): endianness, alignment, spaces; anything else is an
    /// invalid option.
    fn control(&mut self, opt: u8, h: &mut Header) -> R<()> {
        match opt {
            b' ' => {}
            b'>' => h.little = false,
            b'<' => h.little = true,
            b'!' => {
                let a = self.getnum(MAXALIGN)?;
                if !(a > 0 && a & (a - 1) == 0) {
                    return Err(msg(format!("alignment {} is not a power of 2", a)));
                }
                h.align = a as u64;
            }
            _ => {
                let mut m = b"invalid format option '".to_vec();
                m.push(opt);
                m.push(b'\'');
                return Err(Fail::Arg(1, m));
            }
        }
        Ok(())
    }
}

/// gettoalign(): padding needed before an item of `size` at offset `len`.
fn gettoalign(len: u64, h: &Header, opt: u8, size: u64) -> u64 {
    if size == 0 || opt == b'c' {
        return 0;
    }
    let size = size.min(h.align);
    size.wrapping_sub(len & size.wrapping_sub(1)) & size.wrapping_sub(1)
}

fn is_int_option(opt: u8) -> bool {
    matches!(
        opt,
        b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I'
    )
}

/// luaL_checknumber() for `pack`: the C code pushes a nil right after the
/// arguments, so the first missing one is reported as nil (not "no value").
fn pack_number(lua: &Lua, args: &Args, arg: usize) -> R<f64> {
    if arg > args.len() {
        return Err(arg_err(arg as i32, "number expected, got nil"));
    }
    check_number(lua, args, arg)
}

fn b_pack(lua: &Lua, args: &Args) -> R<Out> {
    let fmt_s = check_string(lua, args, 1)?;
    let fmt_b = fmt_s.as_bytes();
    let mut fmt = Fmt {
        s: c_string(&fmt_b),
        i: 0,
    };
    let mut h = Header::default();
    let mut arg = 2usize;
    let mut total: u64 = 0;
    let mut out: Vec<u8> = Vec::new();
    while fmt.i < fmt.s.len() {
        let opt = fmt.s[fmt.i];
        fmt.i += 1;
        let mut size = fmt.optsize(opt)?;
        let toalign = gettoalign(total, &h, opt, size);
        total = total.wrapping_add(toalign);
        out.resize(out.len() + toalign as usize, 0);
        match opt {
            _ if is_int_option(opt) => {
                let n = pack_number(lua, args, arg)?;
                arg += 1;
                let mut value = if n < 0.0 { f2i64(n) as u64 } else { f2u64(n) };
                let mut buff = vec![0u8; size as usize];
                for k in 0..size as usize {
                    let i = if h.little { k } else { size as usize - 1 - k };
                    buff[i] = (value & 0xff) as u8;
                    value >>= 8;
                }
                out.extend_from_slice(&buff);
            }
            b'x' => out.push(0),
            b'f' => {
                let f = pack_number(lua, args, arg)? as f32;
                arg += 1;
                out.extend_from_slice(&if h.little {
                    f.to_le_bytes()
                } else {
                    f.to_be_bytes()
                });
            }
            b'd' => {
                let d = pack_number(lua, args, arg)?;
                arg += 1;
                out.extend_from_slice(&if h.little {
                    d.to_le_bytes()
                } else {
                    d.to_be_bytes()
                });
            }
            b'c' | b's' => {
                if arg > args.len() {
                    return Err(arg_err(arg as i32, "string expected, got nil"));
                }
                let s = check_string(lua, args, arg)?;
                arg += 1;
                let s = s.as_bytes();
                let l = s.len() as u64;
                if size == 0 {
                    size = l;
                }
                if l < size {
                    // (sic) the argument index has already moved on
                    return Err(arg_err(arg as i32, "string too short"));
                }
                out.extend_from_slice(&s[..size as usize]);
                if opt == b's' {
                    out.push(0);
                    size += 1;
                }
            }
            _ => fmt.control(opt, &mut h)?,
        }
        total = total.wrapping_add(size);
    }
    Ok(Out::Vals(vec![Value::String(lua.create_string(&out)?)]))
}

/// getinteger(): an integer of `size` bytes (sizes above 8 keep the low
/// 64 bits, as the C code's shifts do).
fn getinteger(buf: &[u8], little: bool, signed: bool) -> f64 {
    let size = buf.len();
    let mut l: u64 = 0;
    for k in 0..size {
        let i = if little { size - 1 - k } else { k };
        l = (l << 8) | buf[i] as u64;
    }
    if !signed {
        return l as f64;
    }
    // x86-64 masks the shift count to 6 bits.
    let shift = ((size as i64) * 8 - 1) & 63;
    let mask = (!0u64) << shift;
    if l & mask != 0 {
        l |= mask;
    }
    l as i64 as f64
}

fn b_unpack(lua: &Lua, args: &Args) -> R<Out> {
    let fmt_s = check_string(lua, args, 1)?;
    let data_s = check_string(lua, args, 2)?;
    let fmt_b = fmt_s.as_bytes();
    let data = data_s.as_bytes();
    let ld = data.len() as u64;
    let mut pos = opt_integer(lua, args, 3, 1)? as u64;
    if pos == 0 {
        return Err(arg_err(3, "offset must be 1 or greater"));
    }
    pos -= 1;
    let mut fmt = Fmt {
        s: c_string(&fmt_b),
        i: 0,
    };
    let mut h = Header::default();
    // Results live in a Lua table: there may be thousands of them.
    let results = lua.create_table()?;
    let mut n: i64 = 0;
    while fmt.i < fmt.s.len() {
        let opt = fmt.s[fmt.i];
        fmt.i += 1;
        let mut size = fmt.optsize(opt)?;
        pos = pos.wrapping_add(gettoalign(pos, &h, opt, size));
        if !(size <= ld && pos <= ld - size) {
            return Err(arg_err(2, "data string too short"));
        }
        // luaL_checkstack(L, 2, "too many results") with fmt, data and the
        // results so far on the stack.
        if 2 + n + 2 > MAXCSTACK {
            return Err(msg("stack overflow (too many results)"));
        }
        let p = pos as usize;
        match opt {
            _ if is_int_option(opt) => {
                let v = getinteger(
                    &data[p..p + size as usize],
                    h.little,
                    opt.is_ascii_lowercase(),
                );
                n += 1;
                results.raw_set(n, v)?;
            }
            b'x' => {}
            b'f' => {
                let b: [u8; 4] = data[p..p + 4].try_into().expect("4 bytes");
                let f = if h.little {
                    f32::from_le_bytes(b)
                } else {
                    f32::from_be_bytes(b)
                };
                n += 1;
                results.raw_set(n, f as f64)?;
            }
            b'd' => {
                let b: [u8; 8] = data[p..p + 8].try_into().expect("8 bytes");
                let d = if h.little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                };
                n += 1;
                results.raw_set(n, d)?;
            }
            b'c' => {
                if size == 0 {
                    let prev = if n == 0 {
                        None
                    } else {
                        to_number(lua, &results.raw_get(n)?)
                    };
                    let Some(prev) = prev else {
                        return Err(msg("format 'c0' needs a previous size"));
                    };
                    size = f2u64(prev);
                    results.raw_set(n, Value::Nil)?;
                    n -= 1;
                    if size > ld - pos {
                        return Err(arg_err(2, "data string too short"));
                    }
                }
                n += 1;
                results.raw_set(n, lua.create_string(&data[p..p + size as usize])?)?;
            }
            b's' => {
                let Some(e) = data[p..].iter().position(|&c| c == 0) else {
                    return Err(msg("unfinished string in data"));
                };
                size = e as u64 + 1;
                n += 1;
                results.raw_set(n, lua.create_string(&data[p..p + e])?)?;
            }
            _ => fmt.control(opt, &mut h)?,
        }
        pos = pos.wrapping_add(size);
    }
    n += 1;
    results.raw_set(n, pos.wrapping_add(1) as i64 as f64)?;
    Ok(Out::Table(results, n as usize))
}

fn b_size(lua: &Lua, args: &Args) -> R<Out> {
    let fmt_s = check_string(lua, args, 1)?;
    let fmt_b = fmt_s.as_bytes();
    let mut fmt = Fmt {
        s: c_string(&fmt_b),
        i: 0,
    };
    let mut h = Header::default();
    let mut pos: u64 = 0;
    while fmt.i < fmt.s.len() {
        let opt = fmt.s[fmt.i];
        fmt.i += 1;
        let size = fmt.optsize(opt)?;
        pos = pos.wrapping_add(gettoalign(pos, &h, opt, size));
        if opt == b's' {
            return Err(arg_err(1, "option 's' has no fixed size"));
        } else if opt == b'c' && size == 0 {
            return Err(arg_err(1, "option 'c0' has no fixed size"));
        }
        if !opt.is_ascii_alphanumeric() {
            fmt.control(opt, &mut h)?;
        }
        pos = pos.wrapping_add(size);
    }
    Ok(Out::Vals(vec![Value::Number(pos as i64 as f64)]))
}

use super::codec_glue as glue;

#[cfg(test)]
mod tests {
    use super::*;

    /// Helpers shared by every case: `show(...)` renders values canonically
    /// (numbers with %.17g, strings with non-printable bytes as \xx, tables
    /// with sorted keys, cjson.null as `null`).
    const PRELUDE: &str = r#"local function esc(s) return (s:gsub('[^%w%p ]', function(c) return string.format('\\%02x', c:byte()) end)) end local function one(v) local t = type(v) if t == 'string' then return '"'..esc(v)..'"' elseif t == 'number' then if v ~= v then return 'nan' end return string.format('%.17g', v) elseif t == 'table' then local ks = {} for k, x in pairs(v) do ks[#ks+1] = '['..one(k)..']='..one(x) end table.sort(ks) return '{'..table.concat(ks, ',')..'}' elseif t == 'userdata' then if cjson and v == cjson.null then return 'null' end return 'userdata' else return tostring(v) end end local function show(...) local n = select('#', ...) local o = {} for i = 1, n do o[i] = one((select(i, ...))) end return table.concat(o, ' | ') end local function hex(s) return (s:gsub('.', function(c) return string.format('%02x', c:byte()) end)) end"#;

    /// (script body, expected reply). Every expectation was produced by native
    /// Redis 7.0.15 with `redis-cli EVAL "<PRELUDE> <script body>" 0`
    /// on a freshly started server (cases that change configuration ran alone).
    const CASES: &[(&str, &str)] = &[
        (
            r#"return show(hex(struct.pack('>i', 1)), hex(struct.pack('<i', 1)), hex(struct.pack('i', -1)), hex(struct.pack('b', 200)), hex(struct.pack('B', -1)), hex(struct.pack('h', 70000)))"#,
            r#""00000001" | "01000000" | "ffffffff" | "c8" | "ff" | "7011""#,
        ),
        (
            r#"return show(hex(struct.pack('l', 1)), hex(struct.pack('L', -1)), hex(struct.pack('T', 5)), hex(struct.pack('i3', 0x123456)), hex(struct.pack('>i3', 0x123456)), hex(struct.pack('H', 65535)))"#,
            r#""0100000000000000" | "ffffffffffffffff" | "0500000000000000" | "563412" | "123456" | "ffff""#,
        ),
        (
            r#"return show(hex(struct.pack('i16', -1)), hex(struct.pack('>i16', -2)), hex(struct.pack('i0', 1)), hex(struct.pack('I5', 2^40)), hex(struct.pack('I5', 2^40 - 1)), hex(struct.pack('i32', 7)))"#,
            r#""ffffffffffffffff0000000000000000" | "0000000000000000fffffffffffffffe" | "" | "0000000000" | "ffffffffff" | "0700000000000000000000000000000000000000000000000000000000000000""#,
        ),
        (
            r#"return show(pcall(struct.pack, 'i33', 1))"#,
            r#"false | "integral size 33 is larger than limit of 32""#,
        ),
        (
            r#"return show(pcall(function() local r = struct.pack('i33', 1) return r end))"#,
            r#"false | "user_script:1: integral size 33 is larger than limit of 32""#,
        ),
        (
            r#"return show(hex(struct.pack('f', 1.5)), hex(struct.pack('>d', 1.5)), hex(struct.pack('<d', -0.0)), hex(struct.pack('>f', 1e40)), hex(struct.pack('f', 0.1)), hex(struct.pack('>f', 0/0)))"#,
            r#""0000c03f" | "3ff8000000000000" | "0000000000000080" | "7f800000" | "cdcccc3d" | "ffc00000""#,
        ),
        (
            r#"return show(hex(struct.pack('s', 'abc')), hex(struct.pack('c', 'abc')), hex(struct.pack('c0', 'abc')), hex(struct.pack('c2', 'abc')), hex(struct.pack('s', 'a\0b')), hex(struct.pack('s', 12)))"#,
            r#""61626300" | "61" | "616263" | "6162" | "61006200" | "313200""#,
        ),
        (
            r#"return show(pcall(struct.pack, 'c5', 'abc'))"#,
            r#"false | "bad argument #3 to '?' (string too short)""#,
        ),
        (
            r#"return show(pcall(function() local r = struct.pack('bc5', 1, 'abc') return r end))"#,
            r#"false | "user_script:1: bad argument #4 to 'pack' (string too short)""#,
        ),
        (
            r#"return show(hex(struct.pack('x')), hex(struct.pack('!4 b i', 1, 2)), hex(struct.pack('!b h', 1, 2)), hex(struct.pack('! b d', 1, 2)), hex(struct.pack('!2 b d', 1, 2)))"#,
            r#""00" | "0100000002000000" | "01000200" | "01000000000000000000000000000040" | "01000000000000000040""#,
        ),
        (
            r#"return show(pcall(struct.pack, '!3'))"#,
            r#"false | "alignment 3 is not a power of 2""#,
        ),
        (
            r#"return show(pcall(function() local r = struct.pack('!0') return r end))"#,
            r#"false | "user_script:1: alignment 0 is not a power of 2""#,
        ),
        (
            r#"return show(pcall(struct.pack, 'i'))"#,
            r#"false | "bad argument #2 to '?' (number expected, got nil)""#,
        ),
        (
            r#"return show(pcall(struct.pack, 'i', 'x'))"#,
            r#"false | "bad argument #2 to '?' (number expected, got string)""#,
        ),
        (
            r#"return show(pcall(function() local r = struct.pack('i', {}) return r end))"#,
            r#"false | "user_script:1: bad argument #2 to 'pack' (number expected, got table)""#,
        ),
        (
            r#"return show(hex(struct.pack('i', '12')), hex(struct.pack('i', ' 0x10 ')), hex(struct.pack('i', 2^31)), hex(struct.pack('i', 2^32 + 5)), hex(struct.pack('i', 1.9)), hex(struct.pack('i', -1.9)))"#,
            r#""0c000000" | "10000000" | "00000080" | "05000000" | "01000000" | "ffffffff""#,
        ),
        (
            r#"return show(hex(struct.pack('>L', 0/0)), hex(struct.pack('>L', -2^64)), hex(struct.pack('>L', 2^63)), hex(struct.pack('>L', 1.5 * 2^63)), hex(struct.pack('>L', 1/0)), hex(struct.pack('>L', -1/0)))"#,
            r#""8000000000000000" | "8000000000000000" | "8000000000000000" | "c000000000000000" | "0000000000000000" | "8000000000000000""#,
        ),
        (
            r#"return show(hex(struct.pack('>L', 2^64 - 2^11)), hex(struct.pack('>L', -2^63 - 2^11)), hex(struct.pack('>L', -0.5)), hex(struct.pack('>L', 2^53 + 1)), hex(struct.pack('>l', -2^63)), hex(struct.pack('>L', 2^64)))"#,
            r#""fffffffffffff800" | "8000000000000000" | "0000000000000000" | "0020000000000000" | "8000000000000000" | "0000000000000000""#,
        ),
        (
            r#"return show(pcall(struct.pack))"#,
            r#"false | "bad argument #1 to '?' (string expected, got no value)""#,
        ),
        (
            r#"return show(pcall(struct.pack, 1))"#,
            r#"false | "bad argument #1 to '?' (invalid format option '1')""#,
        ),
        (
            r#"return show(pcall(function() local r = struct.pack('y') return r end))"#,
            r#"false | "user_script:1: bad argument #1 to 'pack' (invalid format option 'y')""#,
        ),
        (
            r#"return show(pcall(struct.pack, 'i12345678901'))"#,
            r#"false | "integral size overflow""#,
        ),
        (
            r#"return show(pcall(struct.pack, 'c99999999999', 'a'))"#,
            r#"false | "integral size overflow""#,
        ),
        (
            r#"return show(pcall(struct.pack, '!99999999999'))"#,
            r#"false | "integral size overflow""#,
        ),
        (
            r#"return show(pcall(struct.pack, 'i2147483647'))"#,
            r#"false | "integral size 2147483647 is larger than limit of 32""#,
        ),
        (
            r#"return show(pcall(struct.pack, 'i2147483648'))"#,
            r#"false | "integral size overflow""#,
        ),
        (
            r#"return show(hex(struct.pack('\0b', 1)), hex(struct.pack('b\0b', 1, 2)), hex(struct.pack('')))"#,
            r#""" | "01" | """#,
        ),
        (
            r#"return show(pcall(struct.pack, 'xX'))"#,
            r#"false | "bad argument #1 to '?' (invalid format option 'X')""#,
        ),
        (
            r#"return show(pcall(struct.pack, 'b5', 1))"#,
            r#"false | "bad argument #1 to '?' (invalid format option '5')""#,
        ),
        (
            r#"return show(pcall(struct.pack, '\200'))"#,
            r#"false | "bad argument #1 to '?' (invalid format option '\c8')""#,
        ),
        (
            r#"return show(hex(struct.pack('>!4 b h b i b d', 1, 2, 3, 4, 5, 6)))"#,
            r#""010000020300000000000004050000004018000000000000""#,
        ),
        (
            r#"return show(hex(struct.pack('<!8 b d b f b L', 1, 2, 3, 4, 5, 6)))"#,
            r#""01000000000000000000000000000040030000000000804005000000000000000600000000000000""#,
        ),
        (
            r#"return show(hex(struct.pack('!i3i5', 1, 2)), hex(struct.pack('!16 b i16', 1, 2)), hex(struct.pack('!b c3 i', 1, 'abc', 3)))"#,
            r#""00000100000200000000" | "0100000000000000000000000000000002000000000000000000000000000000" | "0161626303000000""#,
        ),
        (
            r#"return show(pcall(struct.pack, 'bb', 1))"#,
            r#"false | "bad argument #3 to '?' (number expected, got nil)""#,
        ),
        (r#"return show(struct.unpack('i', '\1\0\0\0'))"#, r#"1 | 5"#),
        (
            r#"return show(struct.unpack('>i', '\255\255\255\254'), struct.unpack('I', '\255\255\255\255'))"#,
            r#"-2 | 4294967295 | 5"#,
        ),
        (
            r#"return show(struct.unpack('L', '\255\255\255\255\255\255\255\255'), struct.unpack('l', '\255\255\255\255\255\255\255\255'), struct.unpack('<h', '\0\128'), struct.unpack('>H', '\128\0'))"#,
            r#"1.8446744073709552e+19 | -1 | -32768 | 32768 | 3"#,
        ),
        (
            r#"return show(struct.unpack('i16', string.rep('\255', 16)), struct.unpack('I16', string.rep('\255', 16)))"#,
            r#"-1 | 1.8446744073709552e+19 | 17"#,
        ),
        (
            r#"return show(struct.unpack('>i16', '\128' .. string.rep('\0', 15)), struct.unpack('i12', string.rep('\255', 8) .. '\1\0\0\0'), struct.unpack('>I12', '\1\0\0\0' .. string.rep('\255', 8)))"#,
            r#"0 | -1 | 1.8446744073709552e+19 | 13"#,
        ),
        (
            r#"return show(struct.unpack('i0', ''), struct.unpack('i3', '\255\255\127'), struct.unpack('i3', '\0\0\128'), struct.unpack('>I3', '\1\2\3'))"#,
            r#"0 | 8388607 | -8388608 | 66051 | 4"#,
        ),
        (
            r#"return show(pcall(struct.unpack, 'i', 'abc'))"#,
            r#"false | "bad argument #2 to '?' (data string too short)""#,
        ),
        (
            r#"return show(pcall(function() local r = struct.unpack('bbb', 'ab') return r end))"#,
            r#"false | "user_script:1: bad argument #2 to 'unpack' (data string too short)""#,
        ),
        (r#"return show(struct.unpack('b', 'ab', 2))"#, r#"98 | 3"#),
        (
            r#"return show(pcall(struct.unpack, 'b', 'ab', 3))"#,
            r#"false | "bad argument #2 to '?' (data string too short)""#,
        ),
        (
            r#"return show(pcall(struct.unpack, 'b', 'ab', 0))"#,
            r#"false | "bad argument #3 to '?' (offset must be 1 or greater)""#,
        ),
        (
            r#"return show(pcall(function() local r = struct.unpack('b', 'ab', 0) return r end))"#,
            r#"false | "user_script:1: bad argument #3 to 'unpack' (offset must be 1 or greater)""#,
        ),
        (
            r#"return show(pcall(struct.unpack, 'b', 'ab', -1))"#,
            r#"false | "bad argument #2 to '?' (data string too short)""#,
        ),
        (
            r#"return show(pcall(struct.unpack, 'x', 'ab', 0))"#,
            r#"false | "bad argument #3 to '?' (offset must be 1 or greater)""#,
        ),
        (
            r#"return show(struct.unpack('s', 'ab\0cd'))"#,
            r#""ab" | 4"#,
        ),
        (
            r#"return show(pcall(struct.unpack, 's', 'ab'))"#,
            r#"false | "unfinished string in data""#,
        ),
        (
            r#"return show(pcall(function() local r = struct.unpack('s', 'ab') return r end))"#,
            r#"false | "user_script:1: unfinished string in data""#,
        ),
        (
            r#"return show(struct.unpack('ss', 'ab\0cd\0'))"#,
            r#""ab" | "cd" | 7"#,
        ),
        (r#"return show(struct.unpack('c2', 'abcd'))"#, r#""ab" | 3"#),
        (
            r#"return show(pcall(struct.unpack, 'c0', 'abcd'))"#,
            r#"false | "format 'c0' needs a previous size""#,
        ),
        (
            r#"return show(pcall(function() local r = struct.unpack('c0', '1') return r end))"#,
            r#"false | "user_script:1: format 'c0' needs a previous size""#,
        ),
        (
            r#"return show(struct.unpack('bc0', '\2abcd'))"#,
            r#""ab" | 4"#,
        ),
        (
            r#"return show(pcall(struct.unpack, 'bc0', '\9abcd'))"#,
            r#"false | "bad argument #2 to '?' (data string too short)""#,
        ),
        (
            r#"return show(struct.unpack('c1c0', '3abcd'))"#,
            r#""abc" | 5"#,
        ),
        (
            r#"return show(pcall(struct.unpack, 'c1c0', 'xabcd'))"#,
            r#"false | "format 'c0' needs a previous size""#,
        ),
        (r#"return show(struct.unpack('bc0', '\0'))"#, r#""" | 2"#),
        (r#"return show(struct.unpack('c1c0', '0'))"#, r#""" | 2"#),
        (
            r#"return show(pcall(struct.unpack, 'bc0', '\255abc'))"#,
            r#"false | "bad argument #2 to '?' (data string too short)""#,
        ),
        (
            r#"return show(pcall(struct.unpack, 'c2c0', '-1abc'))"#,
            r#"false | "bad argument #2 to '?' (data string too short)""#,
        ),
        (
            r#"return show(struct.unpack('c3c0', '1.9ab'))"#,
            r#""a" | 5"#,
        ),
        (
            r#"return show(struct.unpack('f', '\0\0\192\63'), struct.unpack('>d', '\63\248\0\0\0\0\0\0'), struct.unpack('<f', '\1\0\128\127'))"#,
            r#"1.5 | 1.5 | nan | 5"#,
        ),
        (
            r#"return show(struct.unpack('!4 b i', '\1\0\0\0\2\0\0\0'))"#,
            r#"1 | 2 | 9"#,
        ),
        (
            r#"return show(struct.unpack('>!4 b h b i b d', struct.pack('>!4 b h b i b d', 1, 2, 3, 4, 5, 6)))"#,
            r#"1 | 2 | 3 | 4 | 5 | 6 | 25"#,
        ),
        (
            r#"return show(pcall(struct.unpack, 'y', 'a'))"#,
            r#"false | "bad argument #1 to '?' (invalid format option 'y')""#,
        ),
        (
            r#"return show(pcall(struct.unpack, 'b', 'a', 'x'))"#,
            r#"false | "bad argument #3 to '?' (number expected, got string)""#,
        ),
        (r#"return show(struct.unpack('b', 'a', 1.9))"#, r#"97 | 2"#),
        (
            r#"return show(pcall(struct.unpack, 'b'))"#,
            r#"false | "bad argument #2 to '?' (string expected, got no value)""#,
        ),
        (
            r#"return show(pcall(struct.unpack))"#,
            r#"false | "bad argument #1 to '?' (string expected, got no value)""#,
        ),
        (r#"return show(struct.unpack('b', 12))"#, r#"49 | 2"#),
        (
            r#"return show(struct.unpack('x', 'ab'), struct.unpack('', 'ab'), struct.unpack('', 'ab', 10))"#,
            r#"2 | 1 | 10"#,
        ),
        (
            r#"return show(pcall(struct.unpack, 'b', 'a', 5))"#,
            r#"false | "bad argument #2 to '?' (data string too short)""#,
        ),
        (
            r#"return show(pcall(struct.unpack, 'b', 'a', 2^64))"#,
            r#"false | "bad argument #2 to '?' (data string too short)""#,
        ),
        (
            r#"return show(pcall(struct.unpack, 'c0', 'a', 0/0))"#,
            r#"false | "bad argument #2 to '?' (data string too short)""#,
        ),
        (
            r#"return show(pcall(struct.unpack, 'i33', string.rep('a', 40)))"#,
            r#"false | "integral size 33 is larger than limit of 32""#,
        ),
        (
            r#"return show(pcall(struct.unpack, '!3', 'a'))"#,
            r#"false | "alignment 3 is not a power of 2""#,
        ),
        (r#"return show(struct.unpack('  < > b', 'a'))"#, r#"97 | 2"#),
        (
            r#"return show(select('#', struct.unpack(string.rep('b', 7997), string.rep('a', 7997))))"#,
            r#"7998"#,
        ),
        (
            r#"return show(pcall(struct.unpack, string.rep('b', 7998), string.rep('a', 7998)))"#,
            r#"false | "stack overflow (too many results)""#,
        ),
        (
            r#"return show(pcall(function() local r = struct.unpack(string.rep('b', 7998), string.rep('a', 7998)) return r end))"#,
            r#"false | "user_script:1: stack overflow (too many results)""#,
        ),
        (
            r#"return show(select('#', struct.unpack(string.rep('x', 9000), string.rep('a', 9000))))"#,
            r#"1"#,
        ),
        (
            r#"return show(pcall(struct.unpack, string.rep('b', 7997) .. 'x', string.rep('a', 7998)))"#,
            r#"false | "stack overflow (too many results)""#,
        ),
        (
            r#"return show(struct.size('i'), struct.size('bhilTfdxc3'), struct.size('!bhilTfdxc3'), struct.size('!2bi'), struct.size('c'), struct.size(''))"#,
            r#"4 | 39 | 44 | 6 | 1 | 0"#,
        ),
        (
            r#"return show(pcall(struct.size, 's'))"#,
            r#"false | "bad argument #1 to '?' (option 's' has no fixed size)""#,
        ),
        (
            r#"return show(pcall(function() local r = struct.size('c0') return r end))"#,
            r#"false | "user_script:1: bad argument #1 to 'size' (option 'c0' has no fixed size)""#,
        ),
        (
            r#"return show(struct.size('y'), struct.size('<>! '), struct.size('i3i5'), struct.size('!i3i5'), struct.size('!16 b i16'), struct.size('X5'))"#,
            r#"0 | 0 | 8 | 10 | 32 | 0"#,
        ),
        (
            r#"return show(pcall(struct.size))"#,
            r#"false | "bad argument #1 to '?' (string expected, got no value)""#,
        ),
        (
            r#"return show(pcall(struct.size, '!i3c0'))"#,
            r#"false | "bad argument #1 to '?' (option 'c0' has no fixed size)""#,
        ),
        (
            r#"return show(pcall(struct.size, 'i33'))"#,
            r#"false | "integral size 33 is larger than limit of 32""#,
        ),
        (
            r#"return show(pcall(struct.size, '#'))"#,
            r#"false | "bad argument #1 to '?' (invalid format option '#')""#,
        ),
        (
            r#"return show(pcall(struct.size, '!3'))"#,
            r#"false | "alignment 3 is not a power of 2""#,
        ),
        (r#"return show(struct.size(5))"#, r#"0"#),
    ];

    #[test]
    fn matches_native_redis() {
        crate::codec_glue::testing::assert_cases("struct", open, PRELUDE, CASES);
    }

    fn with_lib() -> Lua {
        crate::codec_glue::testing::with_lib("struct", open)
    }

    /// Errors reach `pcall` as plain strings, as luaL_error's do.
    #[test]
    fn errors_are_plain_strings() {
        let lua = with_lib();
        let r: String = lua
            .load(
                "local _, a = pcall(struct.pack, 'y') local _, b = pcall(struct.unpack, 's', 'x') \
                 local _, c = pcall(struct.size, 's') return type(a)..type(b)..type(c)",
            )
            .eval()
            .unwrap();
        assert_eq!(r, "stringstringstring");
    }

    /// Round trips through every option.
    #[test]
    fn roundtrip_all_options() {
        let lua = with_lib();
        lua.load(
            "for _, e in ipairs({'<', '>', '!', '!2', '>!4'}) do \
               local f = e .. 'bBhHlLTiIi3I5i16fdxc3sc0' \
               local s = struct.pack(f, -1, 255, -300, 65000, -2^40, 2^40, 7, -9, 9, -70000, 2^39, -5, 0.5, 1/3, 'abc', 'zero', 'tail') \
               local r = {struct.unpack(e .. 'bBhHlLTiIi3I5i16fdxc3s', s)} \
               assert(r[1] == -1 and r[2] == 255 and r[3] == -300 and r[4] == 65000) \
               assert(r[5] == -2^40 and r[6] == 2^40 and r[7] == 7 and r[8] == -9 and r[9] == 9) \
               assert(r[10] == -70000 and r[11] == 2^39 and r[12] == -5 and r[13] == 0.5 and r[14] == 1/3) \
               assert(r[15] == 'abc' and r[16] == 'zero') \
             end",
        )
        .exec()
        .unwrap();
    }
}
