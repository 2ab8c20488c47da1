//! How `cjson`, `cmsgpack` and `lstruct` expose their functions to Lua.
//!
//! A C library raises its errors with `luaL_error` / `luaL_argerror`, which
//! yields a *plain string* error value carrying the caller's position
//! (`user_script:1: ...`) and the name the function was called by
//! (`bad argument #1 to 'decode' ...`). An mlua callback returning `Err` raises
//! a userdata instead, so every library function is exposed through a tiny C
//! trampoline: it calls the Rust implementation, which reports a status code
//! plus payload, and the trampoline then raises the error exactly like the C
//! library would (`luaL_where(L, 1)`, `luaL_argerror`) or returns the results.
//! Arguments beyond a handful and large result lists travel in a Lua table so
//! that the Rust side never holds thousands of live registry references.

// Each codec uses part of this convention.
#![allow(dead_code)]

use mlua::{ffi, Function, Lua, LuaString, MultiValue, Table, Value};
use std::os::raw::c_int;

/// LUAI_MAXCSTACK of Lua 5.1: the most stack slots a C function may use.
pub const MAXCSTACK: i64 = 8000;

const ST_OK: i64 = 0;
const ST_ERROR: i64 = 1;
const ST_ARGERROR: i64 = 2;
const ST_RAW: i64 = 3;
const ST_TABLE: i64 = 4;
/// The function ran out of memory (the VM's cap): raised as the VM's own memory error.
const ST_MEMORY: i64 = 5;
/// LuaJIT's largest userdata (`LJ_MAX_UDATA`).
const MAX_USERDATA: usize = 0x7fff_ff00;
const INLINE_ARGS: c_int = 16;
const INLINE_RESULTS: usize = 16;

/// How a library function fails.
pub enum Fail {
    /// `luaL_error`: the message gets the caller's `chunk:line: ` prefix.
    Msg(Vec<u8>),
    /// `luaL_argerror(narg, extramsg)`.
    Arg(i32, Vec<u8>),
    /// An error raised by the VM inside the C function (no position).
    Raw(Vec<u8>),
    /// Internal (memory, ...) errors from mlua.
    Lua(mlua::Error),
}

impl From<mlua::Error> for Fail {
    fn from(e: mlua::Error) -> Self {
        Fail::Lua(e)
    }
}

pub type R<T> = Result<T, Fail>;

pub fn msg(m: impl Into<Vec<u8>>) -> Fail {
    Fail::Msg(m.into())
}

pub fn arg_err(narg: i32, m: impl Into<Vec<u8>>) -> Fail {
    Fail::Arg(narg, m.into())
}

/// Results of a library function.
pub enum Out {
    Vals(Vec<Value>),
    /// Results stored at 1..=n of the table.
    Table(Table, usize),
}

/// The arguments a library function was called with.
pub struct Args {
    n: usize,
    vals: Vec<Value>,
    table: Option<Table>,
}

impl Args {
    pub fn len(&self) -> usize {
        self.n
    }

    /// Argument `i` (1-based); nil when absent.
    pub fn get(&self, i: usize) -> R<Value> {
        if i == 0 || i > self.n {
            return Ok(Value::Nil);
        }
        match &self.table {
            Some(t) => Ok(t.raw_get(i)?),
            None => Ok(self.vals.get(i - 1).cloned().unwrap_or(Value::Nil)),
        }
    }

    pub fn is_none_or_nil(&self, i: usize) -> R<bool> {
        Ok(i > self.n || self.get(i)?.is_nil())
    }
}

unsafe extern "C-unwind" fn trampoline(l: *mut ffi::lua_State) -> c_int {
    let n = ffi::lua_gettop(l);
    if n <= INLINE_ARGS {
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_insert(l, 1);
        ffi::lua_pushinteger(l, n as _);
        ffi::lua_insert(l, 2);
        ffi::lua_call(l, n + 1, ffi::LUA_MULTRET);
    } else {
        ffi::lua_createtable(l, n, 0);
        for i in 1..=n {
            ffi::lua_pushvalue(l, i);
            ffi::lua_rawseti(l, -2, i as _);
        }
        ffi::lua_replace(l, 1);
        ffi::lua_settop(l, 1);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_insert(l, 1);
        ffi::lua_pushinteger(l, n as _);
        ffi::lua_insert(l, 2);
        ffi::lua_call(l, 2, ffi::LUA_MULTRET);
    }
    let nres = ffi::lua_gettop(l);
    match ffi::lua_tointeger(l, 1) as i64 {
        ST_OK => nres - 1,
        ST_ERROR => {
            ffi::luaL_where(l, 1);
            ffi::lua_pushvalue(l, 2);
            ffi::lua_concat(l, 2);
            ffi::lua_error(l)
        }
        ST_ARGERROR => {
            let narg = ffi::lua_tointeger(l, 2) as c_int;
            let m = ffi::lua_tolstring(l, 3, std::ptr::null_mut());
            ffi::luaL_argerror(l, narg, m)
        }
        ST_RAW => {
            ffi::lua_pushvalue(l, 2);
            ffi::lua_error(l)
        }
        ST_MEMORY => raise_memory_error(l),
        _ => {
            let cnt = ffi::lua_tointeger(l, 3) as c_int;
            ffi::lua_pushvalue(l, 2);
            ffi::lua_replace(l, 1);
            ffi::lua_settop(l, 1);
            if ffi::lua_checkstack(l, cnt) == 0 {
                ffi::lua_pushstring(l, c"stack overflow".as_ptr());
                ffi::lua_error(l);
            }
            for i in 1..=cnt {
                ffi::lua_rawgeti(l, 1, i as _);
            }
            cnt
        }
    }
}

/// Raises the VM's own error for running out of memory (LUA_ERRMEM, "not enough memory"),
/// so a library function that ran out reads as every other out-of-memory failure, inside
/// pcall or not: it asks for more than the cap leaves, which fails the same way. Should
/// that allocation succeed after all, the plain message is raised instead.
///
/// # Safety
/// A Lua C function's state; nothing on the Rust stack needs dropping (this unwinds).
pub unsafe fn raise_memory_error(l: *mut ffi::lua_State) -> c_int {
    ffi::lua_settop(l, 0);
    ffi::lua_newuserdata(l, MAX_USERDATA);
    ffi::lua_settop(l, 0);
    ffi::lua_pushstring(l, c"not enough memory".as_ptr());
    ffi::lua_error(l)
}

/// Counts a codec's steps and, every so often, asks whether the running script must stop
/// (a kill, a time limit) and lets a busy server serve others, as the VM's instruction
/// hook does for Lua code: a C function can otherwise run for as long as its input makes
/// it (a table reachable many times over packs to astronomical sizes).
pub struct WorkMeter(u32);

/// Steps between two questions.
const STEPS_PER_TICK: u32 = 1 << 16;

impl WorkMeter {
    pub fn new() -> WorkMeter {
        WorkMeter(0)
    }

    /// False once the script must stop: the caller fails (with any error: the run's
    /// interruption replaces it, and pcall cannot catch it).
    pub fn step(&mut self) -> bool {
        self.0 = self.0.wrapping_add(1);
        !self.0.is_multiple_of(STEPS_PER_TICK)
            || crate::api::tick() == crate::engine::Tick::Continue
    }
}

/// The error a codec fails with once its `WorkMeter` says the script must stop.
pub fn interrupted() -> Fail {
    Fail::Raw(b"script interrupted".to_vec())
}

/// The error a library function returns when its result would not fit under the VM's
/// memory cap.
pub fn out_of_memory() -> Fail {
    Fail::Lua(mlua::Error::MemoryError("not enough memory".into()))
}

unsafe extern "C-unwind" fn make_trampoline(l: *mut ffi::lua_State) -> c_int {
    ffi::lua_settop(l, 1);
    ffi::lua_pushcclosure(l, trampoline, 1);
    1
}

/// Wraps a Rust implementation as a Lua C function with C-library error
/// semantics.
pub fn function<F>(lua: &Lua, f: F) -> mlua::Result<Function>
where
    F: Fn(&Lua, &Args) -> R<Out> + mlua::MaybeSend + 'static,
{
    let inner = lua.create_function(move |lua, mv: MultiValue| {
        let mut it = mv.into_iter();
        let n = match it.next() {
            Some(Value::Integer(i)) => i as usize,
            Some(Value::Number(x)) => x as usize,
            _ => 0,
        };
        let args = if n <= INLINE_ARGS as usize {
            Args {
                n,
                vals: it.collect(),
                table: None,
            }
        } else {
            let table = match it.next() {
                Some(Value::Table(t)) => Some(t),
                _ => None,
            };
            Args {
                n,
                vals: Vec::new(),
                table,
            }
        };
        let int = |i: i64| Value::Integer(i as _);
        let out = match f(lua, &args) {
            Ok(Out::Vals(v)) if v.len() <= INLINE_RESULTS => {
                let mut out = Vec::with_capacity(v.len() + 1);
                out.push(int(ST_OK));
                out.extend(v);
                out
            }
            Ok(Out::Vals(v)) => {
                let n = v.len();
                let t = lua.create_table_with_capacity(n, 0)?;
                for (i, x) in v.into_iter().enumerate() {
                    t.raw_set(i + 1, x)?;
                }
                vec![int(ST_TABLE), Value::Table(t), int(n as i64)]
            }
            Ok(Out::Table(t, n)) => vec![int(ST_TABLE), Value::Table(t), int(n as i64)],
            Err(Fail::Msg(m)) => vec![int(ST_ERROR), Value::String(lua.create_string(&m)?)],
            Err(Fail::Arg(k, m)) => vec![
                int(ST_ARGERROR),
                int(k as i64),
                Value::String(lua.create_string(&m)?),
            ],
            Err(Fail::Raw(m)) => vec![int(ST_RAW), Value::String(lua.create_string(&m)?)],
            Err(Fail::Lua(e)) if is_memory_error(&e) => vec![int(ST_MEMORY)],
            Err(Fail::Lua(e)) => {
                let m = super::lua_error_message(&e);
                vec![int(ST_RAW), Value::String(lua.create_string(&m)?)]
            }
        };
        Ok(MultiValue::from_vec(out))
    })?;
    // SAFETY: `make_trampoline` only uses the Lua C API on its own stack.
    let make = unsafe { lua.create_c_function(make_trampoline)? };
    make.call::<Function>(inner)
}

fn is_memory_error(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => is_memory_error(cause),
        _ => false,
    }
}

/// `lua_typename(lua_type(v))` as Lua 5.1 spells it.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::LightUserData(_) => "userdata",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        Value::UserData(_) => "userdata",
        Value::Error(_) => "userdata",
        #[allow(unreachable_patterns)]
        _ => "userdata",
    }
}

fn arg_type_name(args: &Args, i: usize) -> R<&'static str> {
    if i > args.len() {
        Ok("no value")
    } else {
        Ok(type_name(&args.get(i)?))
    }
}

fn type_error(args: &Args, i: usize, expected: &str) -> Fail {
    match arg_type_name(args, i) {
        Ok(got) => arg_err(i as i32, format!("{} expected, got {}", expected, got)),
        Err(e) => e,
    }
}

/// `lua_tonumber` (strings are converted the way the VM converts them).
pub fn to_number(lua: &Lua, v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Number(x) => Some(*x),
        Value::String(_) => lua.coerce_number(v.clone()).ok().flatten(),
        _ => None,
    }
}

/// `luaL_checknumber`.
pub fn check_number(lua: &Lua, args: &Args, i: usize) -> R<f64> {
    match to_number(lua, &args.get(i)?) {
        Some(x) => Ok(x),
        None => Err(type_error(args, i, "number")),
    }
}

/// `luaL_checkinteger` (x86-64 conversion semantics).
pub fn check_integer(lua: &Lua, args: &Args, i: usize) -> R<i64> {
    Ok(f2i64(check_number(lua, args, i)?))
}

/// `luaL_optinteger`.
pub fn opt_integer(lua: &Lua, args: &Args, i: usize, def: i64) -> R<i64> {
    if args.is_none_or_nil(i)? {
        Ok(def)
    } else {
        check_integer(lua, args, i)
    }
}

/// `luaL_checklstring` (numbers are converted to strings).
pub fn check_string(lua: &Lua, args: &Args, i: usize) -> R<LuaString> {
    let v = args.get(i)?;
    match v {
        Value::String(s) => Ok(s),
        Value::Integer(_) | Value::Number(_) => match lua.coerce_string(v)? {
            Some(s) => Ok(s),
            None => Err(type_error(args, i, "string")),
        },
        _ => Err(type_error(args, i, "string")),
    }
}

/// 2^63 as a double.
const TWO63: f64 = 9_223_372_036_854_775_808.0;

/// C's `(int64_t)x` as compiled for x86-64 (out of range -> INT64_MIN).
pub fn f2i64(x: f64) -> i64 {
    if (-TWO63..TWO63).contains(&x) {
        x as i64
    } else {
        i64::MIN
    }
}

/// C's `(uint64_t)x` as compiled by gcc for x86-64.
pub fn f2u64(x: f64) -> u64 {
    if x >= TWO63 {
        (f2i64(x - TWO63) as u64) ^ (1u64 << 63)
    } else {
        f2i64(x) as u64
    }
}

/// C's `(int)x` as compiled for x86-64 (out of range -> INT_MIN).
pub fn f2i32(x: f64) -> i32 {
    if x.is_nan() || x >= 2147483648.0 || x <= -2147483649.0 {
        i32::MIN
    } else {
        x as i32
    }
}

/// Test helpers shared by the codecs' tests.
#[cfg(test)]
pub mod testing {
    use mlua::{Lua, Table};

    pub type Open = fn(&Lua) -> mlua::Result<Table>;

    /// A plain Lua state with the library installed as the global `name`.
    pub fn with_lib(name: &str, open: Open) -> Lua {
        let lua = Lua::new();
        lua.globals().set(name, open(&lua).unwrap()).unwrap();
        lua
    }

    /// Runs `prelude code` the way EVAL names a script; the string it returns, or a
    /// description of anything else.
    pub fn run(name: &str, open: Open, prelude: &str, code: &str) -> String {
        // Each case starts from default settings, as a new script would.
        crate::cjson::owners::forget(0);
        let lua = with_lib(name, open);
        let chunk = format!("{} {}", prelude, code);
        match lua
            .load(chunk.as_str())
            .set_name("=user_script")
            .eval::<mlua::Value>()
        {
            Ok(mlua::Value::String(s)) => String::from_utf8_lossy(&s.as_bytes()).into_owned(),
            Ok(other) => format!("<non-string result {:?}>", other),
            Err(e) => format!("<error {}>", e),
        }
    }

    /// Asserts every (script, native Redis output) case, listing all that differ.
    pub fn assert_cases(name: &str, open: Open, prelude: &str, cases: &[(&str, &str)]) {
        let mut failures = Vec::new();
        for (code, want) in cases {
            let got = run(name, open, prelude, code);
            if got != *want {
                failures.push(format!("case: {}\n  want: {}\n  got:  {}", code, want, got));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases differ:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
}
