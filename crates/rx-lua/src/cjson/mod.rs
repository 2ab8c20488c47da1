//! `cjson`: JSON encoding/decoding for Redis scripts. This file holds the library table,
//! its configuration functions and the state `encode`/`decode` share; `encode.rs` and
//! `decode.rs` the two directions; numbers are read with `rx_core::strtod`.
//!
//! Behaves like lua-cjson 2.1.0 as bundled (and patched) by Redis 7.0: the same
//! output bytes (`%.14g` numbers, `\/` escapes, sparse array rules), the same
//! configuration functions and the same error texts. Decoding works on bytes
//! (no UTF-8 validation) and, like the C code, treats a NUL byte as the end of
//! the text.
//!
//! Written from the observed behaviour of native Redis 7.0.15; the Lua 5.1
//! stack limits that bound nesting in the C implementation (8000 slots) are
//! reproduced arithmetically, while the Rust side walks nested tables without
//! recursion and keeps only a constant number of Lua references alive.

use std::ffi::{c_int, CStr};
use std::sync::{Arc, Mutex};

use mlua::{ffi, Function, LightUserData, Lua, Table, Value};

use self::glue::{arg_err, check_integer, check_string, f2i32, Args, Fail, Out, MAXCSTACK, R};
use crate::codec_glue as glue;
use decode::{json_decode, DecFrame};
use encode::{json_encode, EncFrame};

mod decode;
mod encode;
#[cfg(test)]
mod tests;

const INT_MAX: i32 = i32::MAX;

#[derive(Clone, Copy)]
struct Config {
    encode_sparse_convert: i32,
    encode_sparse_ratio: i32,
    encode_sparse_safe: i32,
    encode_max_depth: i32,
    /// 0: refuse, 1: allow ("nan", "inf"), 2: encode as null.
    encode_invalid_numbers: i32,
    encode_number_precision: i32,
    encode_keep_buffer: i32,
    decode_invalid_numbers: i32,
    decode_max_depth: i32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            encode_sparse_convert: 0,
            encode_sparse_ratio: 2,
            encode_sparse_safe: 10,
            encode_max_depth: 1000,
            encode_invalid_numbers: 0,
            encode_number_precision: 14,
            encode_keep_buffer: 1,
            decode_invalid_numbers: 1,
            decode_max_depth: 1000,
        }
    }
}

type Shared = Arc<Mutex<Config>>;

/// Where an instance's settings live.
#[derive(Clone)]
enum Settings {
    /// The global `cjson`: each library and each script has settings of its own (see
    /// [`owners`]), so one cannot change how another encodes or decodes. (Redis shares
    /// one set between every function: a flaw not copied.)
    PerOwner,
    /// An instance made by `cjson.new()`: its own settings, wherever it is used.
    Instance(Shared),
}

impl Settings {
    fn get(&self) -> Config {
        match self {
            Settings::PerOwner => owners::current(),
            Settings::Instance(cfg) => *cfg.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    fn update<T>(&self, f: impl FnOnce(&mut Config) -> T) -> T {
        match self {
            Settings::PerOwner => owners::update(f),
            Settings::Instance(cfg) => f(&mut cfg.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }
}

/// The settings of the global `cjson` per owner: a library (all its functions and its
/// body share them) or an EVAL script, named by an id the engine gives it. Only owners
/// that changed a setting have an entry.
pub mod owners {
    use super::Config;
    use std::cell::{Cell, RefCell};

    /// The owner of a library body being loaded, until it is known what it registered.
    pub const LOADING: i32 = i32::MIN;

    thread_local! {
        static CURRENT: Cell<i32> = const { Cell::new(0) };
        static CHANGED: RefCell<rustc_hash::FxHashMap<i32, Config>> = RefCell::default();
    }

    pub(super) fn current() -> Config {
        let owner = CURRENT.with(Cell::get);
        CHANGED.with(|m| m.borrow().get(&owner).copied().unwrap_or_default())
    }

    pub(super) fn update<T>(f: impl FnOnce(&mut Config) -> T) -> T {
        let owner = CURRENT.with(Cell::get);
        CHANGED.with(|m| f(m.borrow_mut().entry(owner).or_default()))
    }

    /// Makes `owner` the one whose settings the global `cjson` uses until the guard drops.
    pub fn enter(owner: i32) -> Entered {
        Entered(CURRENT.with(|c| c.replace(owner)))
    }

    pub struct Entered(i32);

    impl Drop for Entered {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }

    /// The settings a library body made while loading now belong to the library (`to`),
    /// or are dropped (`None`: the load failed).
    pub fn settle_loading(to: Option<i32>) {
        CHANGED.with(|m| {
            let mut m = m.borrow_mut();
            if let (Some(cfg), Some(to)) = (m.remove(&LOADING), to) {
                m.insert(to, cfg);
            }
        });
    }

    /// The owner is gone (its library was deleted or replaced, its script evicted).
    pub fn forget(owner: i32) {
        // `try_with`: also called from destructors that run as the thread exits.
        let _ = CHANGED.try_with(|m| {
            if let Ok(mut m) = m.try_borrow_mut() {
                m.remove(&owner);
            }
        });
    }
}

/// Builds the `cjson` library table.
pub fn open(lua: &Lua) -> mlua::Result<Table> {
    new_instance(lua, Settings::PerOwner)
}
fn new_instance(lua: &Lua, cfg: Settings) -> mlua::Result<Table> {
    // SAFETY: `push_codec_functions` runs inside mlua's protected call (Lua
    // errors are caught), with stack room checked, and leaves exactly the two
    // functions it pushes.
    let (encode, decode): (Function, Function) =
        unsafe { lua.exec_raw((), |l| push_codec_functions(l, &cfg))? };
    let t = lua.create_table()?;
    t.raw_set("encode", encode)?;
    t.raw_set("decode", decode)?;
    let c = cfg.clone();
    t.raw_set(
        "encode_sparse_array",
        glue::function(lua, move |lua, args| {
            arg_init(args, 3)?;
            c.update(|g| {
                let a = enum_option(
                    lua,
                    args,
                    1,
                    &mut g.encode_sparse_convert,
                    &["off", "on"],
                    1,
                )?;
                let b = integer_option(lua, args, 2, &mut g.encode_sparse_ratio, 0, INT_MAX)?;
                let d = integer_option(lua, args, 3, &mut g.encode_sparse_safe, 0, INT_MAX)?;
                Ok(Out::Vals(vec![a, b, d]))
            })
        })?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "encode_max_depth",
        glue::function(lua, move |lua, args| {
            arg_init(args, 1)?;
            c.update(|g| {
                let v = integer_option(lua, args, 1, &mut g.encode_max_depth, 1, INT_MAX)?;
                Ok(Out::Vals(vec![v]))
            })
        })?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "decode_max_depth",
        glue::function(lua, move |lua, args| {
            arg_init(args, 1)?;
            c.update(|g| {
                let v = integer_option(lua, args, 1, &mut g.decode_max_depth, 1, INT_MAX)?;
                Ok(Out::Vals(vec![v]))
            })
        })?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "encode_number_precision",
        glue::function(lua, move |lua, args| {
            arg_init(args, 1)?;
            c.update(|g| {
                let v = integer_option(lua, args, 1, &mut g.encode_number_precision, 1, 14)?;
                Ok(Out::Vals(vec![v]))
            })
        })?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "encode_keep_buffer",
        glue::function(lua, move |lua, args| {
            arg_init(args, 1)?;
            c.update(|g| {
                let v = enum_option(lua, args, 1, &mut g.encode_keep_buffer, &["off", "on"], 1)?;
                Ok(Out::Vals(vec![v]))
            })
        })?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "encode_invalid_numbers",
        glue::function(lua, move |lua, args| {
            arg_init(args, 1)?;
            c.update(|g| {
                let v = enum_option(
                    lua,
                    args,
                    1,
                    &mut g.encode_invalid_numbers,
                    &["off", "on", "null"],
                    1,
                )?;
                Ok(Out::Vals(vec![v]))
            })
        })?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "decode_invalid_numbers",
        glue::function(lua, move |lua, args| {
            arg_init(args, 1)?;
            c.update(|g| {
                let v = enum_option(
                    lua,
                    args,
                    1,
                    &mut g.decode_invalid_numbers,
                    &["off", "on"],
                    1,
                )?;
                Ok(Out::Vals(vec![v]))
            })
        })?,
    )?;
    t.raw_set(
        "new",
        glue::function(lua, |lua, _args| {
            let own = Settings::Instance(Arc::new(Mutex::new(Config::default())));
            Ok(Out::Vals(vec![Value::Table(new_instance(lua, own)?)]))
        })?,
    )?;
    t.raw_set(
        "null",
        Value::LightUserData(LightUserData(std::ptr::null_mut())),
    )?;
    t.raw_set("_NAME", "cjson")?;
    t.raw_set("_VERSION", "2.1.0")?;
    Ok(t)
}

// ===== configuration helpers =====

fn arg_init(args: &Args, n: usize) -> R<()> {
    if args.len() > n {
        return Err(arg_err(n as i32 + 1, "found too many arguments"));
    }
    Ok(())
}

fn integer_option(
    lua: &Lua,
    args: &Args,
    idx: usize,
    setting: &mut i32,
    min: i32,
    max: i32,
) -> R<Value> {
    if !args.is_none_or_nil(idx)? {
        // `int value = luaL_checkinteger(...)`: keeps the low 32 bits.
        let value = check_integer(lua, args, idx)? as i32;
        if !(min <= value && value <= max) {
            // The C code always blames argument #1 here.
            return Err(arg_err(
                1,
                format!("expected integer between {} and {}", min, max),
            ));
        }
        *setting = value;
    }
    Ok(Value::Integer((*setting).into()))
}

fn enum_option(
    lua: &Lua,
    args: &Args,
    idx: usize,
    setting: &mut i32,
    options: &[&str],
    bool_true: i32,
) -> R<Value> {
    if !args.is_none_or_nil(idx)? {
        match args.get(idx)? {
            Value::Boolean(b) if bool_true != 0 => *setting = (b as i32) * bool_true,
            _ => {
                let s = check_string(lua, args, idx)?;
                let bytes = s.as_bytes();
                // luaL_checkoption compares C strings: stop at the first NUL.
                let name = match bytes.iter().position(|&b| b == 0) {
                    Some(p) => &bytes[..p],
                    None => &bytes[..],
                };
                match options.iter().position(|o| o.as_bytes() == name) {
                    Some(i) => *setting = i as i32,
                    None => {
                        let mut m = b"invalid option '".to_vec();
                        m.extend_from_slice(name);
                        m.push(b'\'');
                        return Err(Fail::Arg(idx as i32, m));
                    }
                }
            }
        }
    }
    if bool_true != 0 && (*setting == 0 || *setting == bool_true) {
        Ok(Value::Boolean(*setting != 0))
    } else {
        Ok(Value::String(
            lua.create_string(options[*setting as usize])?,
        ))
    }
}

// ===== per-instance state =====

/// What `encode` and `decode` of one `cjson` instance keep between calls: the
/// configuration they share with the configuration functions, and reusable
/// buffers. It lives inside a Lua full userdata (the functions' upvalue), so a
/// Lua error unwinding through them (a memory error from any allocating API
/// call, say) never strands a Rust owner on the C stack: the buffers belong to
/// the Lua object, and its `__gc` frees them.
struct State {
    cfg: Settings,
    /// The encoder's output.
    out: Vec<u8>,
    /// The tables being written out, outermost first.
    enc: Vec<EncFrame>,
    /// A decoded string with escapes in it.
    scratch: Vec<u8>,
    /// The containers being filled, outermost first.
    dec: Vec<DecFrame>,
}

/// The userdata's contents; `None` once collected.
type StateSlot = Option<State>;

/// The state userdata's metatable, in the registry.
const STATE_META: &CStr = c"rx.cjson.state";

/// A buffer grown past this is released after the call instead of kept.
const KEEP_MAX: usize = 1 << 20;

/// `__gc` of the state userdata.
unsafe extern "C-unwind" fn state_gc(l: *mut ffi::lua_State) -> c_int {
    let slot = ffi::lua_touserdata(l, 1).cast::<StateSlot>();
    // SAFETY: this metamethod is only reachable through STATE_META, which only
    // the state userdata carries (written in `push_codec_functions` before the
    // metatable was set); `take` makes a second call harmless.
    if let Some(slot) = slot.as_mut() {
        drop(slot.take());
    }
    0
}

/// Pushes `encode` and `decode` closures sharing a new state for `cfg`.
///
/// # Safety
/// Runs inside a protected call on a valid state with 3 free stack slots.
unsafe fn push_codec_functions(l: *mut ffi::lua_State, cfg: &Settings) {
    if ffi::luaL_newmetatable(l, STATE_META.as_ptr()) != 0 {
        ffi::lua_pushcfunction(l, state_gc);
        ffi::lua_setfield(l, -2, c"__gc".as_ptr());
        ffi::lua_pushboolean(l, 0);
        ffi::lua_setfield(l, -2, c"__metatable".as_ptr());
    }
    let slot = ffi::lua_newuserdata(l, std::mem::size_of::<StateSlot>()).cast::<StateSlot>();
    if !slot.is_aligned() {
        ffi::luaL_error(l, c"cjson: misaligned userdata".as_ptr());
        return;
    }
    // Nothing below allocates before the userdata owns these values (an empty
    // Vec does not allocate, cloning the settings does not either).
    slot.write(Some(State {
        cfg: cfg.clone(),
        out: Vec::new(),
        enc: Vec::new(),
        scratch: Vec::new(),
        dec: Vec::new(),
    }));
    ffi::lua_pushvalue(l, -2);
    ffi::lua_setmetatable(l, -2);
    ffi::lua_remove(l, -2); // the metatable
    ffi::lua_pushvalue(l, -1);
    ffi::lua_pushcclosure(l, json_encode, 1);
    ffi::lua_pushvalue(l, -2);
    ffi::lua_pushcclosure(l, json_decode, 1);
    ffi::lua_remove(l, -3); // the userdata, now held by both closures
}

/// The state of the running `encode`/`decode` closure.
///
/// # Safety
/// Called from a closure made by `push_codec_functions`. The userdata is an
/// upvalue of the running function, so it outlives the call; the functions of
/// this file run no Lua code (only raw, metamethod-free API calls; no userdata
/// reachable by scripts has a Lua finalizer), so no other reference to the
/// state exists while the returned one is in use.
unsafe fn upvalue_state<'a>(l: *mut ffi::lua_State) -> Option<&'a mut State> {
    let slot = ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)).cast::<StateSlot>();
    slot.as_mut().and_then(|s| s.as_mut())
}

/// Pushes bytes as a Lua string.
unsafe fn push_bytes(l: *mut ffi::lua_State, b: &[u8]) {
    if b.is_empty() {
        ffi::lua_pushlstring_(l, c"".as_ptr(), 0);
    } else {
        ffi::lua_pushlstring_(l, b.as_ptr().cast(), b.len());
    }
}

/// Releases a buffer that grew large, keeps a small one for the next call.
fn trim<T>(v: &mut Vec<T>) {
    if v.capacity() * std::mem::size_of::<T>() > KEEP_MAX {
        *v = Vec::new();
    }
}
