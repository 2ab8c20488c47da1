//! `cjson.encode`: a Lua value to JSON text, as lua-cjson 2.1.0 writes it.

use std::ffi::c_int;

use mlua::ffi;

use super::*;

/// A table being written out; it sits at stack slot `pos` (for an object, with
/// its current key above it).
#[derive(Clone, Copy)]
pub(super) struct EncFrame {
    array: bool,
    /// No member written yet (objects).
    first: bool,
    len: i64,
    /// Next array index to write.
    idx: i64,
    depth: i32,
    /// The table's stack slot, the one the C implementation would use.
    pos: c_int,
}

/// Why `encode` fails; raised once no Rust value needs dropping.
enum EncErr {
    Depth(i32),
    Sparse,
    /// A key of this Lua type.
    Key(c_int),
    /// A value of this Lua type.
    Type(c_int),
    Number,
    /// The text would not fit under the VM's memory cap.
    Memory,
    /// The script must stop (see `WorkMeter`).
    Interrupted,
}

/// `cjson.encode(value)`.
pub(super) unsafe extern "C-unwind" fn json_encode(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: this is a closure made by `push_codec_functions`.
    let Some(st) = (unsafe { upvalue_state(l) }) else {
        return ffi::luaL_error(l, c"cjson: state released".as_ptr());
    };
    if ffi::lua_gettop(l) != 1 {
        return ffi::luaL_argerror(l, 1, c"expected 1 argument".as_ptr());
    }
    let cfg = st.cfg.get();
    trim(&mut st.out);
    trim(&mut st.enc);
    st.out.clear();
    st.enc.clear();
    let mut enc = Encoder {
        l,
        cfg,
        out: &mut st.out,
        frames: &mut st.enc,
    };
    // SAFETY: the argument is at slot 1 and the stack holds nothing else. The encoder reads
    // Lua values without raising (its errors come back as values), so it runs shielded.
    let Ok(encoded) = crate::barrier::shield(|| unsafe { enc.run() }) else {
        return crate::barrier::raise_panicked(l, c"cjson.encode");
    };
    match encoded {
        Ok(()) => {
            push_bytes(l, &st.out);
            if cfg.encode_keep_buffer == 0 {
                st.out = Vec::new();
            } else {
                trim(&mut st.out);
            }
            1
        }
        Err(e) => {
            ffi::lua_settop(l, 0);
            let tn = |t: c_int| ffi::lua_typename(l, t);
            match e {
                EncErr::Depth(d) => ffi::luaL_error(
                    l,
                    c"Cannot serialise, excessive nesting (%d)".as_ptr(),
                    d as c_int,
                ),
                EncErr::Sparse => ffi::luaL_error(
                    l,
                    c"Cannot serialise table: excessively sparse array".as_ptr(),
                ),
                EncErr::Key(t) => ffi::luaL_error(
                    l,
                    c"Cannot serialise %s: table key must be a number or string".as_ptr(),
                    tn(t),
                ),
                EncErr::Type(t) => ffi::luaL_error(
                    l,
                    c"Cannot serialise %s: type not supported".as_ptr(),
                    tn(t),
                ),
                EncErr::Number => ffi::luaL_error(
                    l,
                    c"Cannot serialise number: must not be NaN or Inf".as_ptr(),
                ),
                EncErr::Memory => glue::raise_memory_error(l),
                EncErr::Interrupted => ffi::luaL_error(l, c"script interrupted".as_ptr()),
            }
        }
    }
}

/// Bytes that JSON strings escape (lua-cjson's char2escape table).
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'/' as usize] = true;
    t[0x7f] = true;
    t
};

fn append_escaped(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        if !NEEDS_ESCAPE[c as usize] {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        start = i + 1;
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            8 => out.extend_from_slice(b"\\b"),
            9 => out.extend_from_slice(b"\\t"),
            10 => out.extend_from_slice(b"\\n"),
            12 => out.extend_from_slice(b"\\f"),
            13 => out.extend_from_slice(b"\\r"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 15) as usize]);
            }
        }
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

struct Encoder<'a> {
    l: *mut ffi::lua_State,
    cfg: Config,
    out: &'a mut Vec<u8>,
    frames: &'a mut Vec<EncFrame>,
}

impl Encoder<'_> {
    fn number(&mut self, x: f64) -> Result<(), EncErr> {
        match self.cfg.encode_invalid_numbers {
            0 => {
                if !x.is_finite() {
                    return Err(EncErr::Number);
                }
            }
            1 => {
                if x.is_nan() {
                    self.out.extend_from_slice(b"nan");
                    return Ok(());
                }
            }
            _ => {
                if !x.is_finite() {
                    self.out.extend_from_slice(b"null");
                    return Ok(());
                }
            }
        }
        crate::numfmt::append_g(self.out, x, self.cfg.encode_number_precision as usize);
        Ok(())
    }

    /// Writes the key at stack slot `idx` and the colon.
    unsafe fn key(&mut self, idx: c_int) -> Result<(), EncErr> {
        let l = self.l;
        match ffi::lua_type(l, idx) {
            ffi::LUA_TNUMBER => {
                self.out.push(b'"');
                self.number(ffi::lua_tonumber(l, idx))?;
                self.out.extend_from_slice(b"\":");
            }
            ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let p = ffi::lua_tolstring(l, idx, &mut len);
                // SAFETY: the string stays on the stack while it is copied.
                append_escaped(self.out, std::slice::from_raw_parts(p.cast::<u8>(), len));
                self.out.push(b':');
            }
            t => return Err(EncErr::Key(t)),
        }
        Ok(())
    }

    /// Writes the value at stack slot `pos` (the top); for a table, writes the
    /// opening bracket and returns the frame to continue with (for an object,
    /// with the nil key `lua_next` starts from pushed above it).
    unsafe fn value(&mut self, pos: c_int, parent_depth: i32) -> Result<Option<EncFrame>, EncErr> {
        let l = self.l;
        match ffi::lua_type(l, pos) {
            ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let p = ffi::lua_tolstring(l, pos, &mut len);
                // SAFETY: the string stays on the stack while it is copied.
                append_escaped(self.out, std::slice::from_raw_parts(p.cast::<u8>(), len));
            }
            ffi::LUA_TNUMBER => self.number(ffi::lua_tonumber(l, pos))?,
            ffi::LUA_TBOOLEAN => {
                let b = ffi::lua_toboolean(l, pos) != 0;
                self.out
                    .extend_from_slice(if b { b"true" } else { b"false" });
            }
            ffi::LUA_TNIL => self.out.extend_from_slice(b"null"),
            ffi::LUA_TLIGHTUSERDATA if ffi::lua_touserdata(l, pos).is_null() => {
                self.out.extend_from_slice(b"null")
            }
            ffi::LUA_TTABLE => {
                let depth = parent_depth + 1;
                // json_check_encode_depth: the depth limit, then lua_checkstack(3).
                if depth > self.cfg.encode_max_depth
                    || pos as i64 + 3 > MAXCSTACK
                    || ffi::lua_checkstack(l, 3) == 0
                {
                    return Err(EncErr::Depth(depth));
                }
                let len = self.array_length(pos)?;
                let array = len > 0;
                self.out.push(if array { b'[' } else { b'{' });
                if !array {
                    ffi::lua_pushnil(l);
                }
                return Ok(Some(EncFrame {
                    array,
                    first: true,
                    len: len.into(),
                    idx: 1,
                    depth,
                    pos,
                }));
            }
            t => return Err(EncErr::Type(t)),
        }
        Ok(None)
    }

    /// lua_array_length() for the table at `pos` (the top): >0 array length,
    /// otherwise encode as an object.
    unsafe fn array_length(&self, pos: c_int) -> Result<i32, EncErr> {
        let l = self.l;
        let mut max: i32 = 0;
        let mut items: i32 = 0;
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, pos) != 0 {
            let k = if ffi::lua_type(l, -2) == ffi::LUA_TNUMBER {
                ffi::lua_tonumber(l, -2)
            } else {
                f64::NAN
            };
            if k != 0.0 && k.floor() == k && k >= 1.0 {
                if k > max as f64 {
                    max = f2i32(k);
                }
                items = items.wrapping_add(1);
                ffi::lua_settop(l, pos + 1);
            } else {
                ffi::lua_settop(l, pos);
                return Ok(-1);
            }
        }
        let cfg = &self.cfg;
        if cfg.encode_sparse_ratio > 0
            && max > items.wrapping_mul(cfg.encode_sparse_ratio)
            && max > cfg.encode_sparse_safe
        {
            if cfg.encode_sparse_convert == 0 {
                return Err(EncErr::Sparse);
            }
            return Ok(-1);
        }
        Ok(max)
    }

    /// Writes the value at slot 1 without recursion: the tables being written
    /// sit on the Lua stack as in the C implementation, their frames in
    /// `self.frames`.
    unsafe fn run(&mut self) -> Result<(), EncErr> {
        let l = self.l;
        let mut meter = glue::WorkMeter::new();
        if let Some(f) = self.value(1, 0)? {
            self.frames.push(f);
        }
        while let Some(&top) = self.frames.last() {
            let child_pos = if top.array {
                if top.idx > top.len {
                    self.out.push(b']');
                    self.frames.pop();
                    ffi::lua_settop(l, top.pos - 1);
                    continue;
                }
                if top.idx > 1 {
                    self.out.push(b',');
                }
                ffi::lua_rawgeti_(l, top.pos, top.idx as c_int);
                if let Some(f) = self.frames.last_mut() {
                    f.idx += 1;
                }
                top.pos + 1
            } else {
                if ffi::lua_next(l, top.pos) == 0 {
                    self.out.push(b'}');
                    self.frames.pop();
                    ffi::lua_settop(l, top.pos - 1);
                    continue;
                }
                if top.first {
                    if let Some(f) = self.frames.last_mut() {
                        f.first = false;
                    }
                } else {
                    self.out.push(b',');
                }
                self.key(top.pos + 1)?;
                top.pos + 2
            };
            match self.value(child_pos, top.depth)? {
                Some(f) => self.frames.push(f),
                None => ffi::lua_settop(l, child_pos - 1),
            }
            // A table reachable many times over encodes to far more than it holds: stop
            // once the text could not fit in the VM anyway, or the script must stop.
            if crate::over_memory_cap(self.out.len()) {
                return Err(EncErr::Memory);
            }
            if !meter.step() {
                return Err(EncErr::Interrupted);
            }
        }
        Ok(())
    }
}
