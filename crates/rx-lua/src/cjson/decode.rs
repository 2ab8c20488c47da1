//! `cjson.decode`: JSON text to Lua values, as lua-cjson 2.1.0 reads it.

use std::ffi::{c_int, CStr};

use mlua::ffi;
use rx_core::strtod::strtod;

use super::*;

/// Where a string token's bytes are.
#[derive(Clone, Copy)]
enum StrRef {
    /// `data[start..start + len]`: no escapes.
    Data(usize, usize),
    /// The state's scratch buffer.
    Scratch,
}

#[derive(Clone, Copy)]
enum Tok {
    ObjBegin,
    ObjEnd,
    ArrBegin,
    ArrEnd,
    Str(StrRef),
    Num(f64),
    Bool(bool),
    Null,
    Colon,
    Comma,
    End,
    Error(&'static CStr),
}

#[derive(Clone, Copy)]
struct Token {
    tok: Tok,
    index: usize,
}

impl Tok {
    fn name(&self) -> &'static CStr {
        match self {
            Tok::ObjBegin => c"T_OBJ_BEGIN",
            Tok::ObjEnd => c"T_OBJ_END",
            Tok::ArrBegin => c"T_ARR_BEGIN",
            Tok::ArrEnd => c"T_ARR_END",
            Tok::Str(_) => c"T_STRING",
            Tok::Num(_) => c"T_NUMBER",
            Tok::Bool(_) => c"T_BOOLEAN",
            Tok::Null => c"T_NULL",
            Tok::Colon => c"T_COLON",
            Tok::Comma => c"T_COMMA",
            Tok::End => c"T_END",
            Tok::Error(e) => e,
        }
    }
}

/// Why `decode` fails; raised once no Rust value needs dropping.
enum DecErr {
    Parse {
        expected: &'static CStr,
        found: &'static CStr,
        index: usize,
    },
    Depth {
        depth: i32,
        pos: usize,
    },
}

fn parse_error(expected: &'static CStr, t: &Token) -> DecErr {
    DecErr::Parse {
        expected,
        found: t.tok.name(),
        index: t.index,
    }
}

/// A container being filled; it sits at stack slot `used + 1` (for an object,
/// with the pending key above it).
#[derive(Clone, Copy)]
pub(super) struct DecFrame {
    array: bool,
    next_idx: i64,
    /// Stack slots in use below this table (as in the C implementation).
    used: i64,
}

/// `cjson.decode(text)`.
pub(super) unsafe extern "C-unwind" fn json_decode(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: this is a closure made by `push_codec_functions`.
    let Some(st) = (unsafe { upvalue_state(l) }) else {
        return ffi::luaL_error(l, c"cjson: state released".as_ptr());
    };
    if ffi::lua_gettop(l) != 1 {
        return ffi::luaL_argerror(l, 1, c"expected 1 argument".as_ptr());
    }
    let mut len = 0usize;
    let p = ffi::luaL_checklstring(l, 1, &mut len);
    // SAFETY: the string stays at slot 1 (nothing below writes there) until
    // this function returns.
    let data = std::slice::from_raw_parts(p.cast::<u8>(), len);
    if data.len() >= 2 && (data[0] == 0 || data[1] == 0) {
        return ffi::luaL_error(l, c"JSON parser does not support UTF-16 or UTF-32".as_ptr());
    }
    let cfg = st.cfg.get();
    trim(&mut st.scratch);
    trim(&mut st.dec);
    st.dec.clear();
    let mut p = Parser {
        data,
        pos: 0,
        cfg,
        depth: 0,
        scratch: &mut st.scratch,
        frames: &mut st.dec,
    };
    // SAFETY: the text is at slot 1 and the stack holds nothing else.
    match unsafe { p.run(l) } {
        Ok(()) => 1,
        Err(e) => {
            ffi::lua_settop(l, 0);
            match e {
                DecErr::Parse {
                    expected,
                    found,
                    index,
                } => ffi::luaL_error(
                    l,
                    c"Expected %s but found %s at character %d".as_ptr(),
                    expected.as_ptr(),
                    found.as_ptr(),
                    (index + 1) as c_int,
                ),
                DecErr::Depth { depth, pos } => ffi::luaL_error(
                    l,
                    c"Found too many nested data structures (%d) at character %d".as_ptr(),
                    depth as c_int,
                    pos as c_int,
                ),
            }
        }
    }
}

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    cfg: Config,
    depth: i32,
    scratch: &'a mut Vec<u8>,
    frames: &'a mut Vec<DecFrame>,
}

/// A value just pushed: a scalar, or a new (empty) container.
enum Pushed {
    Scalar,
    Open(bool),
}

fn hex_digit(c: u8) -> Option<u32> {
    (c as char).to_digit(16)
}

fn push_utf8(buf: &mut Vec<u8>, cp: u32) {
    if cp <= 0x7f {
        buf.push(cp as u8);
    } else if cp <= 0x7ff {
        buf.push(((cp >> 6) | 0xc0) as u8);
        buf.push(((cp & 0x3f) | 0x80) as u8);
    } else if cp <= 0xffff {
        buf.push(((cp >> 12) | 0xe0) as u8);
        buf.push((((cp >> 6) & 0x3f) | 0x80) as u8);
        buf.push(((cp & 0x3f) | 0x80) as u8);
    } else {
        buf.push(((cp >> 18) | 0xf0) as u8);
        buf.push((((cp >> 12) & 0x3f) | 0x80) as u8);
        buf.push((((cp >> 6) & 0x3f) | 0x80) as u8);
        buf.push(((cp & 0x3f) | 0x80) as u8);
    }
}

/// A plain decimal integer of at most 15 digits (optionally negative) at
/// `start`, which `strtod` reads exactly: its value and end.
pub(super) fn fast_integer(data: &[u8], start: usize) -> Option<(f64, usize)> {
    let mut i = start;
    let neg = data.get(i) == Some(&b'-');
    if neg {
        i += 1;
    }
    let first = i;
    let mut n: u64 = 0;
    while let Some(&c) = data.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        n = n * 10 + u64::from(c - b'0');
        i += 1;
        if i - first > 15 {
            return None;
        }
    }
    if i == first {
        return None;
    }
    // A fraction, an exponent or a hex prefix: the general reader decides.
    if matches!(data.get(i), Some(b'.' | b'e' | b'E' | b'x' | b'X')) {
        return None;
    }
    let v = n as f64;
    Some((if neg { -v } else { v }, i))
}

impl<'a> Parser<'a> {
    /// The byte at `i`, 0 past the end (Lua strings are NUL terminated).
    fn at(&self, i: usize) -> u8 {
        self.data.get(i).copied().unwrap_or(0)
    }

    fn starts_with(&self, i: usize, lit: &[u8]) -> bool {
        lit.iter().enumerate().all(|(k, &c)| self.at(i + k) == c)
    }

    fn starts_with_ci(&self, i: usize, lit: &[u8]) -> bool {
        lit.iter()
            .enumerate()
            .all(|(k, &c)| self.at(i + k).to_ascii_lowercase() == c)
    }

    fn hex4(&self, i: usize) -> Option<u32> {
        let mut v = 0;
        for k in 0..4 {
            v = (v << 4) | hex_digit(self.at(i + k))?;
        }
        Some(v)
    }

    /// json_is_invalid_number(): numbers strtod() takes but JSON does not.
    fn is_invalid_number(&self) -> bool {
        let mut p = self.pos;
        if self.at(p) == b'+' {
            return true;
        }
        if self.at(p) == b'-' {
            p += 1;
        }
        let c = self.at(p);
        if c == b'0' {
            let c2 = self.at(p + 1);
            return (c2 | 0x20) == b'x' || c2.is_ascii_digit();
        }
        // `*p <= '9'` with a signed char: bytes >= 0x80 count as "ordinary".
        if (c as i8) <= b'9' as i8 {
            return false;
        }
        self.starts_with_ci(p, b"inf") || self.starts_with_ci(p, b"nan")
    }

    fn error_token(&self, e: &'static CStr) -> Token {
        Token {
            tok: Tok::Error(e),
            index: self.pos,
        }
    }

    fn next_token(&mut self) -> Token {
        while matches!(self.at(self.pos), b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
        let index = self.pos;
        let single = |p: &mut Self, tok: Tok| {
            p.pos += 1;
            Token { tok, index }
        };
        match self.at(index) {
            b'{' => single(self, Tok::ObjBegin),
            b'}' => single(self, Tok::ObjEnd),
            b'[' => single(self, Tok::ArrBegin),
            b']' => single(self, Tok::ArrEnd),
            b',' => single(self, Tok::Comma),
            b':' => single(self, Tok::Colon),
            0 => Token {
                tok: Tok::End,
                index,
            },
            b'"' => self.string_token(),
            b'-' | b'0'..=b'9' => {
                if self.cfg.decode_invalid_numbers == 0 && self.is_invalid_number() {
                    return self.error_token(c"invalid number");
                }
                self.number_token()
            }
            b'f' | b'i' | b'I' | b'n' | b'N' | b't' | b'+' => {
                if self.starts_with(index, b"true") {
                    self.pos += 4;
                    Token {
                        tok: Tok::Bool(true),
                        index,
                    }
                } else if self.starts_with(index, b"false") {
                    self.pos += 5;
                    Token {
                        tok: Tok::Bool(false),
                        index,
                    }
                } else if self.starts_with(index, b"null") {
                    self.pos += 4;
                    Token {
                        tok: Tok::Null,
                        index,
                    }
                } else if self.cfg.decode_invalid_numbers != 0 && self.is_invalid_number() {
                    self.number_token()
                } else {
                    self.error_token(c"invalid token")
                }
            }
            _ => self.error_token(c"invalid token"),
        }
    }

    fn number_token(&mut self) -> Token {
        let index = self.pos;
        match fast_integer(self.data, self.pos).or_else(|| strtod(self.data, self.pos)) {
            Some((v, end)) => {
                self.pos = end;
                Token {
                    tok: Tok::Num(v),
                    index,
                }
            }
            None => self.error_token(c"invalid number"),
        }
    }

    fn string_token(&mut self) -> Token {
        let index = self.pos;
        let start = index + 1;
        // Fast path: no escape before the closing quote; the bytes are used
        // where they are.
        let rest = self.data.get(start..).unwrap_or(&[]);
        let stop = rest
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c == 0)
            .unwrap_or(rest.len());
        if rest.get(stop) == Some(&b'"') {
            self.pos = start + stop + 1;
            return Token {
                tok: Tok::Str(StrRef::Data(start, stop)),
                index,
            };
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&rest[..stop]);
        self.pos = start + stop;
        loop {
            let ch = self.at(self.pos);
            if ch == b'"' {
                break;
            }
            if ch == 0 {
                return self.error_token(c"unexpected end of string");
            }
            if ch == b'\\' {
                let mapped = match self.at(self.pos + 1) {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 8,
                    b't' => 9,
                    b'n' => 10,
                    b'f' => 12,
                    b'r' => 13,
                    b'u' => {
                        if self.unicode_escape() {
                            continue;
                        }
                        return self.error_token(c"invalid unicode escape code");
                    }
                    _ => return self.error_token(c"invalid escape code"),
                };
                self.scratch.push(mapped);
                self.pos += 2;
                continue;
            }
            self.scratch.push(ch);
            self.pos += 1;
        }
        self.pos += 1;
        Token {
            tok: Tok::Str(StrRef::Scratch),
            index,
        }
    }

    /// `\uXXXX` (and surrogate pairs) at `self.pos`, appended as UTF-8.
    fn unicode_escape(&mut self) -> bool {
        let p = self.pos;
        let Some(mut cp) = self.hex4(p + 2) else {
            return false;
        };
        let mut len = 6;
        if cp & 0xf800 == 0xd800 {
            if cp & 0x400 != 0 {
                return false;
            }
            if self.at(p + 6) != b'\\' || self.at(p + 7) != b'u' {
                return false;
            }
            let Some(low) = self.hex4(p + 8) else {
                return false;
            };
            if low & 0xfc00 != 0xdc00 {
                return false;
            }
            cp = (((cp & 0x3ff) << 10) | (low & 0x3ff)) + 0x10000;
            len = 12;
        }
        push_utf8(self.scratch, cp);
        self.pos += len;
        true
    }

    /// Pushes a string token's bytes.
    unsafe fn push_str(&self, l: *mut ffi::lua_State, r: StrRef) {
        match r {
            StrRef::Data(start, len) => push_bytes(l, &self.data[start..start + len]),
            StrRef::Scratch => push_bytes(l, self.scratch),
        }
    }

    /// json_decode_descend(): room for a container needing `slots` slots above
    /// the `used` ones.
    unsafe fn descend(
        &mut self,
        l: *mut ffi::lua_State,
        used: i64,
        slots: i64,
    ) -> Result<(), DecErr> {
        self.depth += 1;
        if self.depth > self.cfg.decode_max_depth
            || used + slots > MAXCSTACK
            || ffi::lua_checkstack(l, slots as c_int) == 0
        {
            return Err(DecErr::Depth {
                depth: self.depth,
                pos: self.pos,
            });
        }
        Ok(())
    }

    /// json_process_value(): pushes the value starting with token `t`.
    unsafe fn value(
        &mut self,
        l: *mut ffi::lua_State,
        t: Token,
        used: i64,
    ) -> Result<Pushed, DecErr> {
        match t.tok {
            Tok::Str(r) => self.push_str(l, r),
            Tok::Num(x) => ffi::lua_pushnumber(l, x),
            Tok::Bool(b) => ffi::lua_pushboolean(l, b as c_int),
            Tok::Null => ffi::lua_pushlightuserdata(l, std::ptr::null_mut()),
            Tok::ObjBegin => {
                self.descend(l, used, 3)?;
                ffi::lua_createtable(l, 0, 0);
                return Ok(Pushed::Open(false));
            }
            Tok::ArrBegin => {
                self.descend(l, used, 2)?;
                ffi::lua_createtable(l, 0, 0);
                return Ok(Pushed::Open(true));
            }
            _ => return Err(parse_error(c"value", &t)),
        }
        Ok(Pushed::Scalar)
    }

    /// Decodes the text; the value ends up at slot 2.
    unsafe fn run(&mut self, l: *mut ffi::lua_State) -> Result<(), DecErr> {
        let first = self.next_token();
        if let Pushed::Open(array) = self.value(l, first, 1)? {
            self.fill(l, array)?;
        }
        let t = self.next_token();
        if !matches!(t.tok, Tok::End) {
            return Err(parse_error(c"the end", &t));
        }
        Ok(())
    }

    /// Stores the value at the top into the container of `frame` (below it,
    /// with its key for an object).
    unsafe fn store(l: *mut ffi::lua_State, frame: &mut DecFrame) {
        let table = (frame.used + 1) as c_int;
        if frame.array {
            ffi::lua_rawseti_(l, table, frame.next_idx as c_int);
            frame.next_idx += 1;
        } else {
            ffi::lua_rawset(l, table);
        }
    }

    /// Parses the contents of the container just pushed at slot 2, and
    /// everything nested in it, without recursion: the open containers sit on
    /// the Lua stack as in the C implementation, their frames in `frames`.
    unsafe fn fill(&mut self, l: *mut ffi::lua_State, array: bool) -> Result<(), DecErr> {
        self.frames.push(DecFrame {
            array,
            next_idx: 1,
            used: 1,
        });
        let mut opened = true;
        while let Some(&top) = self.frames.last() {
            let array = top.array;
            let mut t = self.next_token();
            let mut close = if array {
                matches!(t.tok, Tok::ArrEnd)
            } else {
                matches!(t.tok, Tok::ObjEnd)
            };
            if !opened && !close {
                if !matches!(t.tok, Tok::Comma) {
                    let what = if array {
                        c"comma or array end"
                    } else {
                        c"comma or object end"
                    };
                    return Err(parse_error(what, &t));
                }
                t = self.next_token();
                // A closing bracket right after a comma is an error below.
                close = false;
            }
            if close {
                self.depth -= 1;
                self.frames.pop();
                if let Some(parent) = self.frames.last_mut() {
                    Self::store(l, parent);
                }
                opened = false;
                continue;
            }
            let child_used = if array {
                top.used + 1
            } else {
                match t.tok {
                    Tok::Str(r) => self.push_str(l, r),
                    _ => return Err(parse_error(c"object key string", &t)),
                }
                let c = self.next_token();
                if !matches!(c.tok, Tok::Colon) {
                    return Err(parse_error(c"colon", &c));
                }
                t = self.next_token();
                top.used + 2
            };
            match self.value(l, t, child_used)? {
                Pushed::Scalar => {
                    if let Some(f) = self.frames.last_mut() {
                        Self::store(l, f);
                    }
                    opened = false;
                }
                Pushed::Open(arr) => {
                    self.frames.push(DecFrame {
                        array: arr,
                        next_idx: 1,
                        used: child_used,
                    });
                    opened = true;
                }
            }
        }
        Ok(())
    }
}
