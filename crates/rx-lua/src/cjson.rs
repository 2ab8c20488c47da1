//! `cjson`: JSON encoding/decoding for Redis scripts.
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

// ===== encoding =====

/// A table being written out; it sits at stack slot `pos` (for an object, with
/// its current key above it).
#[derive(Clone, Copy)]
struct EncFrame {
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
unsafe extern "C-unwind" fn json_encode(l: *mut ffi::lua_State) -> c_int {
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

// ===== decoding =====

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
struct DecFrame {
    array: bool,
    next_idx: i64,
    /// Stack slots in use below this table (as in the C implementation).
    used: i64,
}

/// `cjson.decode(text)`.
unsafe extern "C-unwind" fn json_decode(l: *mut ffi::lua_State) -> c_int {
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
fn fast_integer(data: &[u8], start: usize) -> Option<(f64, usize)> {
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

// ===== strtod =====

/// glibc `strtod()` from `start`: the value and where parsing stopped, or
/// `None` when no number could be read.
fn strtod(data: &[u8], start: usize) -> Option<(f64, usize)> {
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
fn hex_float(data: &[u8], start: usize) -> (f64, usize) {
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
            r#"return show(cjson._NAME, cjson._VERSION, cjson.null, type(cjson.null), cjson.null == nil)"#,
            r#""cjson" | "2.1.0" | null | "userdata" | false"#,
        ),
        (r#"return show(cjson.encode({1,2,'x'}))"#, r#""[1,2,"x"]""#),
        (r#"return show(cjson.encode({}))"#, r#""{}""#),
        (r#"return show(cjson.encode({a=1}))"#, r#""{"a":1}""#),
        (
            r#"return show(cjson.encode({a={b={c={}}}}))"#,
            r#""{"a":{"b":{"c":{}}}}""#,
        ),
        (
            r#"return show(cjson.encode({1.5, 0.1, 1/3, 1e100, -0.0, 123456789012345678, 2^53, 1e-5, 0.0001, 1e15, 1e16, -1.5e-7, 5e-324, 1.7976931348623157e308}))"#,
            r#""[1.5,0.1,0.33333333333333,1e+100,-0,1.2345678901235e+17,9.007199254741e+15,1e-05,0.0001,1e+15,1e+16,-1.5e-07,4.9406564584125e-324,1.7976931348623e+308]""#,
        ),
        (
            r#"return show(cjson.encode(100), cjson.encode(-7), cjson.encode(12345678901234), cjson.encode(123456789012345))"#,
            r#""100" | "-7" | "12345678901234" | "1.2345678901234e+14""#,
        ),
        (
            r#"return show(cjson.encode('a/b"c\\d\1\31\127\128\255'))"#,
            r#"""a\/b\"c\\d\u0001\u001f\u007f\80\ff"""#,
        ),
        (
            r#"return show(cjson.encode('\0\8\9\10\11\12\13\14 ~'))"#,
            r#"""\u0000\b\t\n\u000b\f\r\u000e ~"""#,
        ),
        (
            r#"return show(cjson.encode({[1]=1,[3]=3}))"#,
            r#""[1,null,3]""#,
        ),
        (
            r#"return show(cjson.encode({[1]=1,[4]=4}))"#,
            r#""[1,null,null,4]""#,
        ),
        (
            r#"return show(pcall(cjson.encode, {[1]=1,[11]=4}))"#,
            r#"false | "Cannot serialise table: excessively sparse array""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode({[1]=1,[11]=4}) return r end))"#,
            r#"false | "user_script:1: Cannot serialise table: excessively sparse array""#,
        ),
        (
            r#"return show(pcall(cjson.encode, {[2]=1,[3]=3,[20]=1}))"#,
            r#"false | "Cannot serialise table: excessively sparse array""#,
        ),
        (r#"return show(cjson.encode({[1.5]=1}))"#, r#""{"1.5":1}""#),
        (r#"return show(cjson.encode({[0]=1}))"#, r#""{"0":1}""#),
        (r#"return show(cjson.encode({[-1]=1}))"#, r#""{"-1":1}""#),
        (
            r#"return show(cjson.encode({[1e10]=1}))"#,
            r#""{"10000000000":1}""#,
        ),
        (
            r#"return show(cjson.encode({[2^31]=1}))"#,
            r#""{"2147483648":1}""#,
        ),
        (
            r#"return show(pcall(cjson.encode, {[2^31-1]=1}))"#,
            r#"false | "Cannot serialise table: excessively sparse array""#,
        ),
        (
            r#"return show(pcall(cjson.encode, math.huge))"#,
            r#"false | "Cannot serialise number: must not be NaN or Inf""#,
        ),
        (
            r#"return show(pcall(cjson.encode, -math.huge))"#,
            r#"false | "Cannot serialise number: must not be NaN or Inf""#,
        ),
        (
            r#"return show(pcall(cjson.encode, 0/0))"#,
            r#"false | "Cannot serialise number: must not be NaN or Inf""#,
        ),
        (
            r#"return show(pcall(cjson.encode, {[true]=1}))"#,
            r#"false | "Cannot serialise boolean: table key must be a number or string""#,
        ),
        (
            r#"return show(pcall(cjson.encode, {[{}]=1}))"#,
            r#"false | "Cannot serialise table: table key must be a number or string""#,
        ),
        (
            r#"return show(cjson.encode(cjson.null), cjson.encode(nil), cjson.encode(true), cjson.encode(false))"#,
            r#""null" | "null" | "true" | "false""#,
        ),
        (
            r#"return show(pcall(cjson.encode, coroutine.create(function() end)))"#,
            r#"false | "Cannot serialise thread: type not supported""#,
        ),
        (
            r#"return show(pcall(cjson.encode, {f=function() end}))"#,
            r#"false | "Cannot serialise function: type not supported""#,
        ),
        (
            r#"return show(pcall(cjson.encode, {1, 2, {function() end}}))"#,
            r#"false | "Cannot serialise function: type not supported""#,
        ),
        (
            r#"return show(pcall(cjson.encode))"#,
            r#"false | "bad argument #1 to '?' (expected 1 argument)""#,
        ),
        (
            r#"return show(pcall(cjson.encode, 1, 2))"#,
            r#"false | "bad argument #1 to '?' (expected 1 argument)""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode(1, 2) return r end))"#,
            r#"false | "user_script:1: bad argument #1 to 'encode' (expected 1 argument)""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson:encode() return r end))"#,
            r#"false | "user_script:1: Cannot serialise function: type not supported""#,
        ),
        (
            r#"return show(cjson.encode({['a/b']=1}))"#,
            r#""{"a\/b":1}""#,
        ),
        (r#"return show(cjson.encode({[0.1]=1}))"#, r#""{"0.1":1}""#),
        (
            r#"return show(cjson.encode({1,2,nil,4}))"#,
            r#""[1,2,null,4]""#,
        ),
        (
            r#"return show(cjson.encode({1,2,[3]=nil,x=nil}))"#,
            r#""[1,2]""#,
        ),
        (
            r#"return show(cjson.encode({[1]=1,[2]=2,[3]=3,[4]=4,[5]=5,[6]=6,[7]=7,[8]=8,[9]=9,[10]=10,[12]=12}))"#,
            r#""[1,2,3,4,5,6,7,8,9,10,null,12]""#,
        ),
        (
            r#"return show(cjson.encode({[10]=1}))"#,
            r#""[null,null,null,null,null,null,null,null,null,1]""#,
        ),
        (
            r#"return show(pcall(cjson.encode, {[11]=1}))"#,
            r#"false | "Cannot serialise table: excessively sparse array""#,
        ),
        (
            r#"return show(pcall(cjson.encode, {[6]=1,[12]=1,[13]=1}))"#,
            r#"false | "Cannot serialise table: excessively sparse array""#,
        ),
        (
            r#"return show(cjson.encode(setmetatable({}, {__index=function() return 1 end})))"#,
            r#""{}""#,
        ),
        (
            r#"return show(cjson.encode(setmetatable({1,2}, {__len=function() return 5 end})))"#,
            r#""[1,2]""#,
        ),
        (
            r#"return show(cjson.encode({{}, {{}}, {a={}}}))"#,
            r#""[{},[{}],{"a":{}}]""#,
        ),
        (
            r#"return show(cjson.encode({'\226\130\172', '\240\159\152\128'}))"#,
            r#""["\e2\82\ac","\f0\9f\98\80"]""#,
        ),
        (
            r#"return show(cjson.encode({[1]='a', x=1}):len())"#,
            r#"15"#,
        ),
        (
            r#"local t = {} t[1] = t return show(pcall(cjson.encode, t))"#,
            r#"false | "Cannot serialise, excessive nesting (1001)""#,
        ),
        (
            r#"local t = {} t.a = t return show(pcall(cjson.encode, t))"#,
            r#"false | "Cannot serialise, excessive nesting (1001)""#,
        ),
        (
            r#"local t = {} local c = t for i = 1, 999 do c[1] = {} c = c[1] end return show(#cjson.encode(t))"#,
            r#"2000"#,
        ),
        (
            r#"local t = {} local c = t for i = 1, 1000 do c[1] = {} c = c[1] end return show(pcall(cjson.encode, t))"#,
            r#"false | "Cannot serialise, excessive nesting (1001)""#,
        ),
        (
            r#"local t = {} local c = t for i = 1, 999 do c.k = {} c = c.k end return show(#cjson.encode(t))"#,
            r#"5996"#,
        ),
        (
            r#"local t = {} for i = 1, 20000 do t[i] = i end return show(#cjson.encode(t))"#,
            r#"108895"#,
        ),
        (
            r#"local t = {} for i = 1, 20000 do t['k'..i] = i end return show(#cjson.encode(t))"#,
            r#"277789"#,
        ),
        (
            r#"cjson.encode_max_depth(2) return show(cjson.encode({{1}}))"#,
            r#""[[1]]""#,
        ),
        (
            r#"cjson.encode_max_depth(2) return show(pcall(cjson.encode, {{{1}}}))"#,
            r#"false | "Cannot serialise, excessive nesting (3)""#,
        ),
        (
            r#"cjson.encode_max_depth(2) return show(pcall(cjson.encode, {{},{a={}}}))"#,
            r#"false | "Cannot serialise, excessive nesting (3)""#,
        ),
        (
            r#"cjson.encode_max_depth(100000) local t={} t[1]=t return show(pcall(cjson.encode, t))"#,
            r#"false | "Cannot serialise, excessive nesting (7998)""#,
        ),
        (
            r#"cjson.encode_max_depth(100000) local t={} t.a=t return show(pcall(cjson.encode, t))"#,
            r#"false | "Cannot serialise, excessive nesting (4000)""#,
        ),
        (
            r#"cjson.encode_max_depth(100000) local t={} local u={} t.a=u u[1]=t return show(pcall(cjson.encode, t))"#,
            r#"false | "Cannot serialise, excessive nesting (5332)""#,
        ),
        (
            r#"cjson.encode_number_precision(3) return show(cjson.encode({1/3, 12345, 0.0001234, 1e-5}))"#,
            r#""[0.333,1.23e+04,0.000123,1e-05]""#,
        ),
        (
            r#"cjson.encode_number_precision(1) return show(cjson.encode({1/3, 12345, 0.5, 5e-5, 9.5, 0.95, 150}))"#,
            r#""[0.3,1e+04,0.5,5e-05,1e+01,0.9,2e+02]""#,
        ),
        (
            r#"cjson.encode_number_precision(14) return show(cjson.encode({0.1+0.2, 100, 1e21}))"#,
            r#""[0.3,100,1e+21]""#,
        ),
        (
            r#"cjson.encode_invalid_numbers(true) return show(cjson.encode({1/0,-1/0,0/0,-(0/0)}))"#,
            r#""[inf,-inf,nan,nan]""#,
        ),
        (
            r#"cjson.encode_invalid_numbers('null') return show(cjson.encode({1/0,-1/0,0/0}))"#,
            r#""[null,null,null]""#,
        ),
        (
            r#"cjson.encode_invalid_numbers(true) return show(cjson.encode({[1/0]=1}))"#,
            r#""{"inf":1}""#,
        ),
        (
            r#"cjson.encode_invalid_numbers('null') return show(cjson.encode({[1/0]=1}))"#,
            r#""{"null":1}""#,
        ),
        (
            r#"cjson.encode_invalid_numbers(false) return show(pcall(cjson.encode, {[-1/0]=1}))"#,
            r#"false | "Cannot serialise number: must not be NaN or Inf""#,
        ),
        (
            r#"cjson.encode_sparse_array(true) return show(cjson.encode({[20]=2}), cjson.encode({[1]=1,[2]=2}))"#,
            r#""{"20":2}" | "[1,2]""#,
        ),
        (
            r#"cjson.encode_sparse_array(false, 0) return show(cjson.encode({[1]=1,[20]=2}))"#,
            r#""[1,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,2]""#,
        ),
        (
            r#"cjson.encode_sparse_array(false, 1, 0) return show(pcall(cjson.encode, {[1]=1,[3]=2}))"#,
            r#"false | "Cannot serialise table: excessively sparse array""#,
        ),
        (
            r#"cjson.encode_sparse_array(false, 2, 0) return show(cjson.encode({[1]=1,[3]=2}))"#,
            r#""[1,null,2]""#,
        ),
        (
            r#"cjson.encode_sparse_array(true, 2, 0) return show(cjson.encode({[1]=1,[4]=2}))"#,
            r#""[1,null,null,2]""#,
        ),
        (
            r#"return show(cjson.encode_max_depth(), cjson.decode_max_depth(), cjson.encode_number_precision(), cjson.encode_keep_buffer(), cjson.encode_invalid_numbers(), cjson.decode_invalid_numbers(), cjson.encode_sparse_array())"#,
            r#"1000 | 1000 | 14 | true | false | true | false | 2 | 10"#,
        ),
        (
            r#"return show(cjson.encode_max_depth(2), cjson.encode_max_depth())"#,
            r#"2 | 2"#,
        ),
        (
            r#"return show(pcall(cjson.encode_max_depth, 0))"#,
            r#"false | "bad argument #1 to '?' (expected integer between 1 and 2147483647)""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode_max_depth(0) return r end))"#,
            r#"false | "user_script:1: bad argument #1 to 'encode_max_depth' (expected integer between 1 and 2147483647)""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode_max_depth('x') return r end))"#,
            r#"false | "user_script:1: bad argument #1 to 'encode_max_depth' (number expected, got string)""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode_max_depth(1, 2) return r end))"#,
            r#"false | "user_script:1: bad argument #2 to 'encode_max_depth' (found too many arguments)""#,
        ),
        (
            r#"return show(cjson.encode_max_depth(2.7), cjson.encode_max_depth('3'), cjson.encode_max_depth(nil))"#,
            r#"2 | 3 | 3"#,
        ),
        (r#"return show(cjson.encode_max_depth(2^32 + 5))"#, r#"5"#),
        (
            r#"return show(pcall(cjson.encode_max_depth, 2^31))"#,
            r#"false | "bad argument #1 to '?' (expected integer between 1 and 2147483647)""#,
        ),
        (
            r#"return show(pcall(cjson.decode_max_depth, -1))"#,
            r#"false | "bad argument #1 to '?' (expected integer between 1 and 2147483647)""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode_number_precision(15) return r end))"#,
            r#"false | "user_script:1: bad argument #1 to 'encode_number_precision' (expected integer between 1 and 14)""#,
        ),
        (
            r#"return show(pcall(cjson.encode_number_precision, 0))"#,
            r#"false | "bad argument #1 to '?' (expected integer between 1 and 14)""#,
        ),
        (
            r#"return show(cjson.encode_number_precision(5), cjson.encode(1/3))"#,
            r#"5 | "0.33333""#,
        ),
        (
            r#"return show(cjson.encode_keep_buffer(false), cjson.encode_keep_buffer('on'), cjson.encode_keep_buffer('off'), cjson.encode_keep_buffer())"#,
            r#"false | true | false | false"#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode_keep_buffer('x') return r end))"#,
            r#"false | "user_script:1: bad argument #1 to 'encode_keep_buffer' (invalid option 'x')""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode_keep_buffer(1) return r end))"#,
            r#"false | "user_script:1: bad argument #1 to 'encode_keep_buffer' (invalid option '1')""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode_keep_buffer({}) return r end))"#,
            r#"false | "user_script:1: bad argument #1 to 'encode_keep_buffer' (string expected, got table)""#,
        ),
        (
            r#"return show(cjson.encode_keep_buffer('on\0junk'))"#,
            r#"true"#,
        ),
        (
            r#"return show(cjson.encode_invalid_numbers('null'), cjson.encode_invalid_numbers('on'), cjson.encode_invalid_numbers(true), cjson.encode_invalid_numbers('off'), cjson.encode_invalid_numbers(false))"#,
            r#""null" | true | true | false | false"#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode_invalid_numbers('x') return r end))"#,
            r#"false | "user_script:1: bad argument #1 to 'encode_invalid_numbers' (invalid option 'x')""#,
        ),
        (
            r#"return show(cjson.decode_invalid_numbers(false), cjson.decode_invalid_numbers('on'))"#,
            r#"false | true"#,
        ),
        (
            r#"return show(cjson.encode_sparse_array(true), cjson.encode_sparse_array(nil, 3, 5), cjson.encode_sparse_array())"#,
            r#"true | true | true | 3 | 5"#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode_sparse_array(1) return r end))"#,
            r#"false | "user_script:1: bad argument #1 to 'encode_sparse_array' (invalid option '1')""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode_sparse_array(nil, -1) return r end))"#,
            r#"false | "user_script:1: bad argument #1 to 'encode_sparse_array' (expected integer between 0 and 2147483647)""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode_sparse_array(nil, 'x') return r end))"#,
            r#"false | "user_script:1: bad argument #2 to 'encode_sparse_array' (number expected, got string)""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode_sparse_array(nil, nil, nil, nil) return r end))"#,
            r#"false | "user_script:1: bad argument #4 to 'encode_sparse_array' (found too many arguments)""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.encode_sparse_array(true, 5, -1) return r end), cjson.encode_sparse_array())"#,
            r#"false | true | 5 | 10"#,
        ),
        (
            r#"local c = cjson.new() c.encode_max_depth(2) return show(cjson.encode_max_depth(), c.encode_max_depth(), c._NAME, c._VERSION, c.null, c.new ~= nil, c == cjson, c.encode({1}))"#,
            r#"1000 | 2 | "cjson" | "2.1.0" | null | true | false | "[1]""#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'x'))"#,
            r#"false | "Expected value but found invalid token at character 1""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.decode('x') return r end))"#,
            r#"false | "user_script:1: Expected value but found invalid token at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, ''))"#,
            r#"false | "Expected value but found T_END at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, ' '))"#,
            r#"false | "Expected value but found T_END at character 2""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '[1,2'))"#,
            r#"false | "Expected comma or array end but found T_END at character 5""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '[1,2,]'))"#,
            r#"false | "Expected value but found T_ARR_END at character 6""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '{"a":1,}'))"#,
            r#"false | "Expected object key string but found T_OBJ_END at character 8""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '{"a" 1}'))"#,
            r#"false | "Expected colon but found T_NUMBER at character 6""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '{1:2}'))"#,
            r#"false | "Expected object key string but found T_NUMBER at character 2""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '{"a":1 "b":2}'))"#,
            r#"false | "Expected comma or object end but found T_STRING at character 8""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '[1 2]'))"#,
            r#"false | "Expected comma or array end but found T_NUMBER at character 4""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '"abc'))"#,
            r#"false | "Expected value but found unexpected end of string at character 5""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '"a\\qb"'))"#,
            r#"false | "Expected value but found invalid escape code at character 3""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '"\\u12"'))"#,
            r#"false | "Expected value but found invalid unicode escape code at character 2""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '"\\u12G4"'))"#,
            r#"false | "Expected value but found invalid unicode escape code at character 2""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '"\\ud800"'))"#,
            r#"false | "Expected value but found invalid unicode escape code at character 2""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '"\\udc00\\ud800"'))"#,
            r#"false | "Expected value but found invalid unicode escape code at character 2""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '"\\ud800\\u0041"'))"#,
            r#"false | "Expected value but found invalid unicode escape code at character 2""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '"\\ud800x"'))"#,
            r#"false | "Expected value but found invalid unicode escape code at character 2""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '"ab\\'))"#,
            r#"false | "Expected value but found invalid escape code at character 4""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '[1] x'))"#,
            r#"false | "Expected the end but found invalid token at character 5""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '[1]\0garbage'))"#,
            r#"true | {[1]=1}"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '\0['))"#,
            r#"false | "JSON parser does not support UTF-16 or UTF-32""#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'a\0'))"#,
            r#"false | "JSON parser does not support UTF-16 or UTF-32""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '"a\0b"'))"#,
            r#"false | "Expected value but found unexpected end of string at character 3""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '1\0'))"#,
            r#"false | "JSON parser does not support UTF-16 or UTF-32""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '\0'))"#,
            r#"false | "Expected value but found T_END at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'nul'))"#,
            r#"false | "Expected value but found invalid token at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'tru'))"#,
            r#"false | "Expected value but found invalid token at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'fals'))"#,
            r#"false | "Expected value but found invalid token at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'true'), pcall(cjson.decode, 'false'), pcall(cjson.decode, 'null'))"#,
            r#"true | true | true | null"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '-'))"#,
            r#"false | "Expected value but found invalid number at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '- 1'))"#,
            r#"false | "Expected value but found invalid number at character 1""#,
        ),
        (r#"return show(pcall(cjson.decode, '+1'))"#, r#"true | 1"#),
        (
            r#"return show(pcall(cjson.decode, '+'))"#,
            r#"false | "Expected value but found invalid number at character 1""#,
        ),
        (r#"return show(pcall(cjson.decode, '01'))"#, r#"true | 1"#),
        (
            r#"return show(pcall(cjson.decode, '-01.5'))"#,
            r#"true | -1.5"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '0x10'))"#,
            r#"true | 16"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '-0x1p4'))"#,
            r#"true | -16"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '0x1.8'))"#,
            r#"true | 1.5"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '0x'))"#,
            r#"false | "Expected the end but found invalid token at character 2""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '0xg'))"#,
            r#"false | "Expected the end but found invalid token at character 2""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '0x.8p1'))"#,
            r#"true | 1"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '0x1P-1074'))"#,
            r#"true | 4.9406564584124654e-324"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '0x1.fffffffffffff8p1023'))"#,
            r#"true | inf"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '0x123456789abcdef123p0'))"#,
            r#"true | 3.3581272767073033e+20"#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'inf'))"#,
            r#"true | inf"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '-Infinity'))"#,
            r#"true | -inf"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '[INF, -inFinity, infinit]'))"#,
            r#"false | "Expected comma or array end but found invalid token at character 21""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '[infinit]'))"#,
            r#"false | "Expected comma or array end but found invalid token at character 5""#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'nan'))"#,
            r#"true | nan"#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'NaN'))"#,
            r#"true | nan"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '[nan(123), -nan]'))"#,
            r#"true | {[1]=nan,[2]=nan}"#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'nan(12'))"#,
            r#"false | "Expected the end but found invalid token at character 4""#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'N'))"#,
            r#"false | "Expected value but found invalid token at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'NULL'))"#,
            r#"false | "Expected value but found invalid token at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'i'))"#,
            r#"false | "Expected value but found invalid token at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '1e400'))"#,
            r#"true | inf"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '-1e400'))"#,
            r#"true | -inf"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '1e-400'))"#,
            r#"true | 0"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '.5'))"#,
            r#"false | "Expected value but found invalid token at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '-.5'))"#,
            r#"true | -0.5"#,
        ),
        (r#"return show(pcall(cjson.decode, '1.'))"#, r#"true | 1"#),
        (
            r#"return show(pcall(cjson.decode, '1.e2'))"#,
            r#"true | 100"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '1e'))"#,
            r#"false | "Expected the end but found invalid token at character 2""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '1e+'))"#,
            r#"false | "Expected the end but found invalid token at character 2""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '1E+2'))"#,
            r#"true | 100"#,
        ),
        (r#"return show(pcall(cjson.decode, '-0'))"#, r#"true | -0"#),
        (
            r#"return show(pcall(cjson.decode, '[0.1, 1e-7, 123456789012345678901234567890, 1.7976931348623157e308, 2.2250738585072014e-308, 4.9e-324, 2.4e-324]'))"#,
            r#"true | {[1]=0.10000000000000001,[2]=9.9999999999999995e-08,[3]=1.2345678901234568e+29,[4]=1.7976931348623157e+308,[5]=2.2250738585072014e-308,[6]=4.9406564584124654e-324,[7]=0}"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '9007199254740993'))"#,
            r#"true | 9007199254740992"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '0.30000000000000001665'))"#,
            r#"true | 0.29999999999999999"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '1' .. string.rep('0', 400)))"#,
            r#"true | inf"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '0.' .. string.rep('0', 400) .. '1e400'))"#,
            r#"true | 0.10000000000000001"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '1e99999999999999999999'))"#,
            r#"true | inf"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '1e-99999999999999999999'))"#,
            r#"true | 0"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '{"a":1,"a":2}'))"#,
            r#"true | {["a"]=2}"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '[[[[1]]]]'))"#,
            r#"true | {[1]={[1]={[1]={[1]=1}}}}"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '{"k":null, "l":[null, null]}'))"#,
            r#"true | {["k"]=null,["l"]={[1]=null,[2]=null}}"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '"\\t\\/\\b\\f\\n\\r\\"\\\\\\u00e9\\u20AC\\ud83d\\ude00\\u0041"'))"#,
            r#"true | "\09/\08\0c\0a\0d"\\c3\a9\e2\82\ac\f0\9f\98\80A""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '"\\u0000x"'))"#,
            r#"true | "\00x""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '[1,"\1"]'))"#,
            r#"true | {[1]=1,[2]="\01"}"#,
        ),
        (r#"return show(pcall(cjson.decode, 123))"#, r#"true | 123"#),
        (
            r#"return show(pcall(cjson.decode, 12.5))"#,
            r#"true | 12.5"#,
        ),
        (
            r#"return show(pcall(cjson.decode, -1e100))"#,
            r#"true | -1e+100"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '  [ 1 , 2 ] \r\n\t'))"#,
            r#"true | {[1]=1,[2]=2}"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '\v1'))"#,
            r#"false | "Expected value but found invalid token at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '"\255\254\128"'))"#,
            r#"true | "\ff\fe\80""#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'true false'))"#,
            r#"false | "Expected the end but found T_BOOLEAN at character 6""#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'truex'))"#,
            r#"false | "Expected the end but found invalid token at character 5""#,
        ),
        (
            r#"return show(pcall(cjson.decode, 'nullx'))"#,
            r#"false | "Expected the end but found invalid token at character 5""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '[]'), pcall(cjson.decode, '{}'))"#,
            r#"true | true | {}"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '\1'))"#,
            r#"false | "Expected value but found invalid token at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '[1,,2]'))"#,
            r#"false | "Expected value but found T_COMMA at character 4""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '{,}'))"#,
            r#"false | "Expected object key string but found T_COMMA at character 2""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '{"a"}'))"#,
            r#"false | "Expected colon but found T_OBJ_END at character 5""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '{"a":}'))"#,
            r#"false | "Expected value but found T_OBJ_END at character 6""#,
        ),
        (
            r#"return show(pcall(cjson.decode, ']'))"#,
            r#"false | "Expected value but found T_ARR_END at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, ':'))"#,
            r#"false | "Expected value but found T_COLON at character 1""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '{"a":1}}'))"#,
            r#"false | "Expected the end but found T_OBJ_END at character 8""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '{"a":[1,{"b":2}]}'))"#,
            r#"true | {["a"]={[1]=1,[2]={["b"]=2}}}"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '{"1":1, "2":2}'))"#,
            r#"true | {["1"]=1,["2"]=2}"#,
        ),
        (
            r#"return show(pcall(cjson.decode, '[1,null,3]'))"#,
            r#"true | {[1]=1,[2]=null,[3]=3}"#,
        ),
        (
            r#"return show(pcall(cjson.decode))"#,
            r#"false | "bad argument #1 to '?' (expected 1 argument)""#,
        ),
        (
            r#"return show(pcall(cjson.decode, nil))"#,
            r#"false | "bad argument #1 to '?' (string expected, got nil)""#,
        ),
        (
            r#"return show(pcall(cjson.decode, {}))"#,
            r#"false | "bad argument #1 to '?' (string expected, got table)""#,
        ),
        (
            r#"return show(pcall(cjson.decode, '1', 2))"#,
            r#"false | "bad argument #1 to '?' (expected 1 argument)""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson.decode(nil) return r end))"#,
            r#"false | "user_script:1: bad argument #1 to 'decode' (string expected, got nil)""#,
        ),
        (
            r#"return show(pcall(function() local r = cjson:decode('1') return r end))"#,
            r#"false | "user_script:1: calling 'decode' on bad self (expected 1 argument)""#,
        ),
        (
            r#"return show(pcall(cjson.decode, string.rep('[', 1000) .. string.rep(']', 1000)) and 'ok')"#,
            r#""ok""#,
        ),
        (
            r#"return show(pcall(cjson.decode, string.rep('[', 1001)))"#,
            r#"false | "Found too many nested data structures (1001) at character 1001""#,
        ),
        (
            r#"return show(pcall(cjson.decode, string.rep('{"a":', 1001)))"#,
            r#"false | "Found too many nested data structures (1001) at character 5001""#,
        ),
        (
            r#"cjson.decode_max_depth(2) return show(pcall(cjson.decode, '[[1]]'))"#,
            r#"true | {[1]={[1]=1}}"#,
        ),
        (
            r#"cjson.decode_max_depth(2) return show(pcall(cjson.decode, '[[[1]]]'))"#,
            r#"false | "Found too many nested data structures (3) at character 3""#,
        ),
        (
            r#"cjson.decode_max_depth(2) return show(pcall(cjson.decode, ' { "a" : [ {} ] }'))"#,
            r#"false | "Found too many nested data structures (3) at character 12""#,
        ),
        (
            r#"cjson.decode_max_depth(100000) return show(pcall(cjson.decode, string.rep('[', 10000)))"#,
            r#"false | "Found too many nested data structures (7999) at character 7999""#,
        ),
        (
            r#"cjson.decode_max_depth(100000) return show(pcall(cjson.decode, string.rep('{"a":', 10000)))"#,
            r#"false | "Found too many nested data structures (4000) at character 19996""#,
        ),
        (
            r#"cjson.decode_max_depth(100000) return show(pcall(cjson.decode, string.rep('[{"a":', 10000)))"#,
            r#"false | "Found too many nested data structures (5333) at character 15997""#,
        ),
        (
            r#"cjson.decode_max_depth(100000) local s = cjson.decode(string.rep('[', 7998) .. string.rep(']', 7998)) local n = 0 while s[1] do s = s[1] n = n + 1 end return show(n)"#,
            r#"7997"#,
        ),
        (
            r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '+1'))"#,
            r#"false | "Expected value but found invalid token at character 1""#,
        ),
        (
            r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '01'))"#,
            r#"false | "Expected value but found invalid number at character 1""#,
        ),
        (
            r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '[0x10]'))"#,
            r#"false | "Expected value but found invalid number at character 2""#,
        ),
        (
            r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '-inf'))"#,
            r#"false | "Expected value but found invalid number at character 1""#,
        ),
        (
            r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, 'inf'))"#,
            r#"false | "Expected value but found invalid token at character 1""#,
        ),
        (
            r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '[NaN]'))"#,
            r#"false | "Expected value but found invalid token at character 2""#,
        ),
        (
            r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '[1.5, -0, 0, 1e5]'))"#,
            r#"true | {[1]=1.5,[2]=-0,[3]=0,[4]=100000}"#,
        ),
        (
            r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '-.5'))"#,
            r#"true | -0.5"#,
        ),
        (
            r#"local t = cjson.decode('[1,2,3]') return show(#t, t[1] + t[2])"#,
            r#"3 | 3"#,
        ),
        (
            r#"local v = cjson.decode('{"a":[1,2,{"b":null}]}') return show(cjson.encode(v.a))"#,
            r#""[1,2,{"b":null}]""#,
        ),
        (
            r#"local s = string.rep('x', 100000) return show(#cjson.encode(s), cjson.decode(cjson.encode(s)) == s)"#,
            r#"100002 | true"#,
        ),
        (
            r#"local t = {} for i = 1, 300 do t[i] = {i, tostring(i), {k = i}} end local d = cjson.decode(cjson.encode(t)) return show(#d, d[300][3].k, d[7][2])"#,
            r#"300 | 300 | "7""#,
        ),
    ];

    #[test]
    fn matches_native_redis() {
        crate::codec_glue::testing::assert_cases("cjson", open, PRELUDE, CASES);
    }

    fn with_lib() -> Lua {
        crate::codec_glue::testing::with_lib("cjson", open)
    }

    /// Errors reach `pcall` as plain strings, as luaL_error's do (native:
    /// `EVAL "local ok, e = pcall(cjson.decode, '{') return type(e)" 0` -> "string").
    #[test]
    fn errors_are_plain_strings() {
        let lua = with_lib();
        let r: String = lua
            .load(
                "local _, a = pcall(cjson.decode, '{') local _, b = pcall(cjson.encode) \
                 local _, c = pcall(cjson.encode, print) return type(a)..type(b)..type(c)",
            )
            .eval()
            .unwrap();
        assert_eq!(r, "stringstringstring");
    }

    /// Nesting is walked without recursion, so the deepest structures native
    /// Redis accepts work on a small thread stack. Native (fresh server):
    /// `EVAL "cjson.decode_max_depth(100000) cjson.encode_max_depth(100000)
    ///  local s = string.rep('[', 7997) .. string.rep(']', 7997) local e =
    ///  cjson.encode(cjson.decode(s)) local t = {} local c = t for i = 1, 3998
    ///  do c.k = {} c = c.k end return {#e, e:sub(7994, 8000), #cjson.encode(t)}" 0`
    /// -> 15994, "[[[{}]]", 23990.
    #[test]
    fn deep_nesting_on_small_stack() {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let lua = with_lib();
                let r: String = lua
                    .load(
                        "cjson.decode_max_depth(100000) cjson.encode_max_depth(100000) \
                         local s = string.rep('[', 7997) .. string.rep(']', 7997) \
                         local e = cjson.encode(cjson.decode(s)) local t = {} local c = t \
                         for i = 1, 3998 do c.k = {} c = c.k end \
                         return #e .. ' ' .. e:sub(7994, 8000) .. ' ' .. #cjson.encode(t)",
                    )
                    .eval()
                    .unwrap();
                assert_eq!(r, "15994 [[[{}]] 23990");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// Big documents do not exhaust mlua's reference slots.
    #[test]
    fn large_documents_roundtrip() {
        let lua = with_lib();
        lua.load(
            "local t = {} for i = 1, 100000 do t['k' .. i] = {i, 'v' .. i, {x = i}} end \
             local d = cjson.decode(cjson.encode(t)) \
             for i = 1, 100000 do local v = d['k' .. i] \
               assert(v[1] == i and v[2] == 'v' .. i and v[3].x == i) end \
             for i = 1, 20000 do assert(not pcall(cjson.decode, '[[[{\"a\":')) end",
        )
        .exec()
        .unwrap();
    }

    /// The integer shortcut of the number reader agrees with `strtod`.
    #[test]
    fn integer_parse_matches_strtod() {
        let cases = [
            "0",
            "-0",
            "7",
            "-7",
            "00012",
            "-00",
            "123456789012345",
            "-123456789012345",
            "1234567890123456",
            "99999999999999999999",
            "1.5",
            "1e5",
            "1E5",
            "0x10",
            "0X1p4",
            "12,",
            "12]",
            "12 ",
            "-",
            "-x",
            "5.",
            "9007199254740993",
        ];
        for c in cases {
            let data = c.as_bytes();
            if let Some(fast) = fast_integer(data, 0) {
                let slow = strtod(data, 0).expect("strtod reads it");
                assert_eq!(fast.1, slow.1, "end of {c}");
                assert_eq!(fast.0.to_bits(), slow.0.to_bits(), "value of {c}");
            }
        }
        assert!(fast_integer(b"1.5", 0).is_none());
        assert!(fast_integer(b"0x10", 0).is_none());
        assert!(fast_integer(b"1234567890123456", 0).is_none());
        assert_eq!(
            fast_integer(b"-0", 0).map(|v| v.0.to_bits()),
            Some((-0.0f64).to_bits())
        );
    }

    /// Errors raised deep in a structure (the stack full of tables) and the
    /// stack-limit errors, identical to the previous implementation's.
    #[test]
    fn deep_errors() {
        let lua = with_lib();
        let r: String = lua
            .load(
                "cjson.decode_max_depth(100000) cjson.encode_max_depth(100000) \
                 local t = {} local cur = t for i = 1, 7990 do cur[1] = {} cur = cur[1] end cur[1] = print \
                 local m = {} cur = m for i = 1, 3000 do cur[1] = {k = {}} cur = cur[1].k end cur.y = {[true] = 1} \
                 local r = {} \
                 r[#r+1] = select(2, pcall(cjson.encode, t)) \
                 r[#r+1] = select(2, pcall(cjson.encode, m)) \
                 r[#r+1] = select(2, pcall(cjson.decode, string.rep('[', 7990) .. 'x')) \
                 r[#r+1] = select(2, pcall(cjson.decode, string.rep('[{\"a\":', 2660) .. '1,}')) \
                 r[#r+1] = select(2, pcall(cjson.decode, string.rep('[', 7999) .. string.rep(']', 7999))) \
                 return table.concat(r, '|')",
            )
            .eval()
            .unwrap();
        assert_eq!(
            r,
            "Cannot serialise function: type not supported|\
             Cannot serialise, excessive nesting (5333)|\
             Expected value but found invalid token at character 7991|\
             Expected object key string but found T_OBJ_END at character 15963|\
             Found too many nested data structures (7999) at character 7999"
        );
    }

    /// Instances made by `cjson.new` keep their own configuration and state,
    /// and are collected (their `__gc` frees the buffers).
    #[test]
    fn instances_are_independent_and_collected() {
        let lua = with_lib();
        let r: String = lua
            .load(
                "local a = cjson.new() a.encode_number_precision(3) a.encode_keep_buffer(false) \
                 local x = a.encode({1/3, 12345}) .. cjson.encode({1/3, 12345}) \
                 for i = 1, 2000 do local c = cjson.new() c.encode({i, 'v'}) c.decode('[1]') end \
                 collectgarbage() collectgarbage() \
                 return x .. a.encode(1/3)",
            )
            .eval()
            .unwrap();
        assert_eq!(r, "[0.333,1.23e+04][0.33333333333333,12345]0.333");
    }
}
