//! A script's return value to a client reply, with Redis's Lua-to-RESP rules:
//! strings are bulk strings, numbers truncate to integers, `true` is 1 (or a RESP3 boolean
//! after `redis.setresp(3)`), `false` and nil are null, and tables are checked for `err`,
//! `ok`, `double`, `big_number`, `verbatim_string`, `map` and `set` before being read as
//! an array that stops at the first nil.

use std::ffi::c_int;

use mlua::ffi;

use crate::reply::ReplySink;

/// C's `(long long)` cast of a double as x86-64 performs it: out-of-range and NaN values
/// become `i64::MIN`.
pub fn truncate_number(n: f64) -> i64 {
    // i64::MAX as f64 is 2^63, just past the range.
    if n.is_nan() || !(i64::MIN as f64..i64::MAX as f64).contains(&n) {
        i64::MIN
    } else {
        n as i64
    }
}

/// The most elements a reply may have once a table in it holds another table. A table
/// reachable many times over (`t = {u, u}`, `u = {w, w}`, ...) makes a reply of
/// astronomical size out of a few tables, which would hang the server and fill its memory
/// (native Redis does exactly that). Flat replies are not limited.
pub const MAX_NESTED_REPLY_ELEMENTS: u64 = 100_000_000;

/// Writes the value at stack index `idx` to `sink`, reading it directly with the Lua C
/// API (the hot path: no intermediate values). `script_resp3` is whether the script called
/// `redis.setresp(3)`.
///
/// A reply with nested tables is measured first, without writing anything, in time linear
/// in the tables it holds: a table that contains itself (whose reply would never end, or
/// end only at the Lua stack's limit), or more than [`MAX_NESTED_REPLY_ELEMENTS`]
/// elements, make the reply an error instead.
///
/// # Safety
/// `l` must be a valid state with at least 8 free stack slots (checked again per nesting
/// level), and `idx` must be a valid absolute index.
pub unsafe fn raw_to_reply(
    l: *mut ffi::lua_State,
    idx: c_int,
    sink: &mut dyn ReplySink,
    script_resp3: bool,
) {
    if ffi::lua_type(l, idx) == ffi::LUA_TTABLE && has_nested_table(l, idx) {
        let mut seen = rustc_hash::FxHashMap::default();
        match measure(l, idx, &mut seen) {
            Ok(_) => {}
            Err(Unreplyable::ContainsItself) => {
                return sink.error(b"ERR the reply contains a table that contains itself");
            }
            Err(Unreplyable::TooLarge) => {
                return sink.error(
                    format!("ERR reply too large: more than {MAX_NESTED_REPLY_ELEMENTS} elements")
                        .as_bytes(),
                );
            }
        }
    }
    walk(l, idx, sink, script_resp3);
}

enum Unreplyable {
    ContainsItself,
    TooLarge,
}

type Measured = rustc_hash::FxHashMap<*const std::ffi::c_void, Option<u64>>;

/// How many elements the reply of the value at `idx` has, following the rules of `walk`;
/// each table is measured once (`seen`: its count, or `None` while it is being measured,
/// so meeting it again means it contains itself).
unsafe fn measure(
    l: *mut ffi::lua_State,
    idx: c_int,
    seen: &mut Measured,
) -> Result<u64, Unreplyable> {
    if ffi::lua_type(l, idx) != ffi::LUA_TTABLE {
        return Ok(1);
    }
    let key = ffi::lua_topointer(l, idx);
    match seen.get(&key) {
        Some(Some(n)) => return Ok(*n),
        Some(None) => return Err(Unreplyable::ContainsItself),
        None => {}
    }
    if ffi::lua_checkstack(l, 8) == 0 {
        return Ok(1); // `walk` writes one error element here
    }
    seen.insert(key, None);
    let base = ffi::lua_gettop(l);
    let n = measure_children(l, idx, seen);
    ffi::lua_settop(l, base);
    let n = n?;
    seen.insert(key, Some(n));
    Ok(n)
}

/// `measure` of a table: 1 plus what its reply holds. Leaves values on the stack (the
/// caller resets it).
unsafe fn measure_children(
    l: *mut ffi::lua_State,
    t: c_int,
    seen: &mut Measured,
) -> Result<u64, Unreplyable> {
    let mut n: u64 = 1;
    let mut add = |m: u64| {
        n = n.saturating_add(m);
        if n > MAX_NESTED_REPLY_ELEMENTS {
            Err(Unreplyable::TooLarge)
        } else {
            Ok(n)
        }
    };
    for (field, kind) in [
        (c"err", ffi::LUA_TSTRING),
        (c"ok", ffi::LUA_TSTRING),
        (c"double", ffi::LUA_TNUMBER),
        (c"big_number", ffi::LUA_TSTRING),
    ] {
        let found = raw_field(l, t, field) == kind;
        ffi::lua_pop(l, 1);
        if found {
            return Ok(1);
        }
    }
    if raw_field(l, t, c"verbatim_string") == ffi::LUA_TTABLE {
        let v = ffi::lua_gettop(l);
        if raw_field(l, v, c"format") == ffi::LUA_TSTRING
            && raw_field(l, v, c"string") == ffi::LUA_TSTRING
        {
            return Ok(1);
        }
    }
    if raw_field(l, t, c"map") == ffi::LUA_TTABLE {
        let m = ffi::lua_gettop(l);
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, m) != 0 {
            let top = ffi::lua_gettop(l);
            add(measure(l, top - 1, seen)?)?;
            add(measure(l, top, seen)?)?;
            ffi::lua_pop(l, 1);
        }
        return Ok(n);
    }
    if raw_field(l, t, c"set") == ffi::LUA_TTABLE {
        let m = ffi::lua_gettop(l);
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, m) != 0 {
            add(measure(l, ffi::lua_gettop(l) - 1, seen)?)?;
            ffi::lua_pop(l, 1);
        }
        return Ok(n);
    }
    let mut i = 1;
    while ffi::lua_rawgeti(l, t, i) != ffi::LUA_TNIL {
        add(measure(l, ffi::lua_gettop(l), seen)?)?;
        ffi::lua_pop(l, 1);
        i += 1;
    }
    Ok(n)
}

/// Whether the table at `t` has a table among what its reply would be made of.
unsafe fn has_nested_table(l: *mut ffi::lua_State, t: c_int) -> bool {
    for field in [c"map", c"set", c"verbatim_string"] {
        let kind = raw_field(l, t, field);
        ffi::lua_pop(l, 1);
        if kind == ffi::LUA_TTABLE {
            return true;
        }
    }
    let mut i = 1;
    loop {
        let kind = ffi::lua_rawgeti(l, t, i);
        ffi::lua_pop(l, 1);
        match kind {
            ffi::LUA_TNIL => return false,
            ffi::LUA_TTABLE => return true,
            _ => i += 1,
        }
    }
}

unsafe fn walk(l: *mut ffi::lua_State, idx: c_int, sink: &mut dyn ReplySink, script_resp3: bool) {
    match ffi::lua_type(l, idx) {
        ffi::LUA_TSTRING => sink.bulk(raw_bytes(l, idx)),
        ffi::LUA_TBOOLEAN => {
            let b = ffi::lua_toboolean(l, idx) != 0;
            if script_resp3 {
                sink.boolean(b)
            } else if b {
                sink.integer(1)
            } else {
                sink.null()
            }
        }
        ffi::LUA_TNUMBER => sink.integer(truncate_number(ffi::lua_tonumber(l, idx))),
        ffi::LUA_TTABLE => raw_table_to_reply(l, idx, sink, script_resp3),
        _ => sink.null(),
    }
}

unsafe fn raw_bytes<'a>(l: *mut ffi::lua_State, idx: c_int) -> &'a [u8] {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, idx, &mut len);
    if p.is_null() {
        &[]
    } else {
        // SAFETY: the string stays on the stack while the caller uses the slice.
        std::slice::from_raw_parts(p.cast::<u8>(), len)
    }
}

/// Pushes `t[field]` (raw) and returns its type; the caller pops it.
unsafe fn raw_field(l: *mut ffi::lua_State, t: c_int, field: &std::ffi::CStr) -> c_int {
    ffi::lua_pushstring(l, field.as_ptr());
    ffi::lua_rawget(l, t)
}

unsafe fn raw_table_to_reply(
    l: *mut ffi::lua_State,
    t: c_int,
    sink: &mut dyn ReplySink,
    resp3: bool,
) {
    if ffi::lua_checkstack(l, 8) == 0 {
        return sink.error(b"ERR reached lua stack limit");
    }
    if raw_field(l, t, c"err") == ffi::LUA_TSTRING {
        sink.error(raw_bytes(l, -1));
        return ffi::lua_pop(l, 1);
    }
    ffi::lua_pop(l, 1);
    if raw_field(l, t, c"ok") == ffi::LUA_TSTRING {
        sink.simple(raw_bytes(l, -1));
        return ffi::lua_pop(l, 1);
    }
    ffi::lua_pop(l, 1);
    if raw_field(l, t, c"double") == ffi::LUA_TNUMBER {
        sink.double(ffi::lua_tonumber(l, -1));
        return ffi::lua_pop(l, 1);
    }
    ffi::lua_pop(l, 1);
    if raw_field(l, t, c"big_number") == ffi::LUA_TSTRING {
        sink.big_number(&crate::reply::single_line(raw_bytes(l, -1)));
        return ffi::lua_pop(l, 1);
    }
    ffi::lua_pop(l, 1);
    if raw_field(l, t, c"verbatim_string") == ffi::LUA_TTABLE {
        let v = ffi::lua_gettop(l);
        let f = raw_field(l, v, c"format");
        let s = raw_field(l, v, c"string");
        if f == ffi::LUA_TSTRING && s == ffi::LUA_TSTRING {
            sink.verbatim(raw_bytes(l, -2), raw_bytes(l, -1));
            return ffi::lua_pop(l, 3);
        }
        ffi::lua_pop(l, 2);
    }
    ffi::lua_pop(l, 1);
    if raw_field(l, t, c"map") == ffi::LUA_TTABLE {
        let m = ffi::lua_gettop(l);
        sink.map(raw_count(l, m));
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, m) != 0 {
            let top = ffi::lua_gettop(l);
            walk(l, top - 1, sink, resp3);
            walk(l, top, sink, resp3);
            ffi::lua_pop(l, 1);
        }
        return ffi::lua_pop(l, 1);
    }
    ffi::lua_pop(l, 1);
    if raw_field(l, t, c"set") == ffi::LUA_TTABLE {
        let m = ffi::lua_gettop(l);
        sink.set(raw_count(l, m));
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, m) != 0 {
            walk(l, ffi::lua_gettop(l) - 1, sink, resp3);
            ffi::lua_pop(l, 1);
        }
        return ffi::lua_pop(l, 1);
    }
    ffi::lua_pop(l, 1);
    // An array, up to the first nil.
    let mut len = 0;
    while ffi::lua_rawgeti(l, t, (len + 1) as _) != ffi::LUA_TNIL {
        ffi::lua_pop(l, 1);
        len += 1;
    }
    ffi::lua_pop(l, 1);
    sink.array(len);
    for i in 1..=len {
        ffi::lua_rawgeti(l, t, i as _);
        walk(l, ffi::lua_gettop(l), sink, resp3);
        ffi::lua_pop(l, 1);
    }
}

/// The number of entries `lua_next` visits in table `t`.
unsafe fn raw_count(l: *mut ffi::lua_State, t: c_int) -> usize {
    let mut n = 0;
    ffi::lua_pushnil(l);
    while ffi::lua_next(l, t) != 0 {
        ffi::lua_pop(l, 1);
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::RespWriter;
    use mlua::{Lua, Value};

    fn reply_bytes(src: &str, resp: u8, script_resp3: bool) -> Vec<u8> {
        let lua = Lua::new();
        let v: Value = lua.load(src).eval().unwrap();
        let mut raw = RespWriter::new(resp);
        // SAFETY: exec_raw hands over a valid state with the value pushed at the top.
        unsafe {
            lua.exec_raw::<()>(v, |l| {
                raw_to_reply(l, ffi::lua_gettop(l), &mut raw, script_resp3);
                ffi::lua_settop(l, 0);
            })
            .unwrap();
        }
        raw.out
    }

    fn reply(src: &str, resp: u8, script_resp3: bool) -> String {
        String::from_utf8(reply_bytes(src, resp, script_resp3)).unwrap()
    }

    #[test]
    fn scalars() {
        assert_eq!(reply("return 'hi'", 2, false), "$2\r\nhi\r\n");
        assert_eq!(reply("return 1.9", 2, false), ":1\r\n");
        assert_eq!(reply("return -1.9", 2, false), ":-1\r\n");
        assert_eq!(reply("return 0/0", 2, false), ":-9223372036854775808\r\n");
        assert_eq!(reply("return true", 3, false), ":1\r\n");
        assert_eq!(reply("return false", 3, false), "_\r\n");
        assert_eq!(reply("return false", 2, true), ":0\r\n");
        assert_eq!(reply("return true", 3, true), "#t\r\n");
        assert_eq!(reply("return nil", 2, false), "$-1\r\n");
    }

    #[test]
    fn arrays_stop_at_first_nil() {
        assert_eq!(
            reply("return {1, 2, nil, 3}", 2, false),
            "*2\r\n:1\r\n:2\r\n"
        );
        assert_eq!(reply("return {a = 1}", 2, false), "*0\r\n");
        assert_eq!(
            reply("return {1, {2, 'x'}}", 2, false),
            "*2\r\n:1\r\n*2\r\n:2\r\n$1\r\nx\r\n"
        );
    }

    #[test]
    fn special_tables() {
        assert_eq!(reply("return {err = 'E bad'}", 2, false), "-E bad\r\n");
        assert_eq!(reply("return {ok = 'FINE'}", 2, false), "+FINE\r\n");
        assert_eq!(reply("return {err = 1, ok = 'x'}", 2, false), "+x\r\n");
        assert_eq!(reply("return {double = 1.5}", 3, false), ",1.5\r\n");
        assert_eq!(reply("return {double = 1.5}", 2, false), "$3\r\n1.5\r\n");
        assert_eq!(reply("return {big_number = '123'}", 3, false), "(123\r\n");
        assert_eq!(
            reply("return {map = {a = 1}}", 3, false),
            "%1\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(
            reply("return {map = {a = 1}}", 2, false),
            "*2\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(
            reply("return {set = {x = true}}", 3, false),
            "~1\r\n$1\r\nx\r\n"
        );
        assert_eq!(
            reply(
                "return {verbatim_string = {format = 'txt', string = 'hi'}}",
                3,
                false
            ),
            "=6\r\ntxt:hi\r\n"
        );
        assert_eq!(
            reply("return {1, {err = 'x'}}", 2, false),
            "*2\r\n:1\r\n-x\r\n"
        );
    }

    #[test]
    fn binary_strings_round_trip() {
        assert_eq!(
            reply_bytes("return '\\0\\255\\r\\n'", 2, false),
            b"$4\r\n\0\xff\r\n\r\n"
        );
    }
}
