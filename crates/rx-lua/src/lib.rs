//! The Lua engine: one LuaJIT VM (JIT compiler off, so hooks can always interrupt it) that
//! holds every library, each function running in the same read-only sandbox Redis builds.
//! It implements the core's engine boundary (`rx_core::engine`) and reaches Redis only
//! through its `Host`: no module API here, so it is tested without a server.

// The core's modules, under the names this crate has always used.
use rx_core::{dialect, engine, flags, numfmt, reply, resp};

pub mod api;
mod barrier;
pub mod c_tail_calls;
pub mod cjson;
pub mod cmsgpack;
mod codec_glue;
pub mod convert;
pub mod lrand48;
pub mod lstruct;
pub mod lua_source;
mod pacing;
mod param_use;

use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use std::ffi::{c_int, CStr};

use mlua::{
    ffi, Function, HookTriggers, Lua, LuaOptions, RegistryKey, StdLib, Table, Value, VmState,
};

use crate::engine::{Engine, Host, Registration, Tick};
use crate::flags::FunctionFlags;
use crate::reply::ReplySink;
use api::ActiveCall;

const PRELUDE: &str = include_str!("prelude.lua");
/// The chunk name Redis gives library code; errors read `user_function:<line>: ...`.
const LIBRARY_CHUNK_NAME: &CStr = c"@user_function";
/// How often the hook looks at the clock.
const HOOK_INSTRUCTIONS: u32 = 100_000;
/// How much garbage a small VM may gather between collection cycles (see `pace_collector`).
const GC_GARBAGE_ALLOWANCE: usize = 8 << 20;
/// The VM's memory cap until `rx.memory-limit-mb` says otherwise.
const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

/// A compiled function, as the registry stores it: a slot in the Lua registry, so a call
/// pushes it with one `lua_rawgeti` instead of going through mlua's value references.
///
/// The slot is a plain `luaL_ref` (mlua's `RegistryKey` is twice the size, and a registry
/// may hold tens of thousands of these), freed as soon as the last holder goes (a deleted
/// library, an evicted script) so the function's code can be collected at once.
pub struct LuaCallable {
    id: c_int,
    /// Whose `cjson` settings the function uses (see `cjson::owners`): the slot of its
    /// library's first function, or its own for a script.
    owner: c_int,
    /// Worked out at the first call (most of 10,000 loaded functions may never run, and
    /// loading and DEBUG RELOAD should not pay for them).
    shape: std::cell::Cell<Option<Shape>>,
}

thread_local! {
    /// The VM's memory cap, for buffers the codecs build outside the VM: a result that
    /// cannot fit under the cap once copied in is refused before it grows the server.
    static MEMORY_CAP: std::cell::Cell<usize> = const { std::cell::Cell::new(DEFAULT_MEMORY_LIMIT) };
}

/// Whether a buffer of `len` bytes built outside the VM, to become a Lua string, is already
/// more than the VM's cap allows.
pub(crate) fn over_memory_cap(len: usize) -> bool {
    len > MEMORY_CAP.with(std::cell::Cell::get)
}

thread_local! {
    /// The VM whose registry holds every `LuaCallable`'s slot (there is one engine).
    static VM: std::cell::RefCell<Option<mlua::WeakLua>> = const { std::cell::RefCell::new(None) };
}

/// What a call needs to know about the function's parameters.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// How many of its two arguments (KEYS, ARGV) the function can see: a function that
    /// declares fewer parameters and no `...` can never reach the others, so a call skips
    /// building them (no table allocated, no garbage left for the collector).
    reach: u8,
    /// Which of them (bit 0: KEYS, bit 1: ARGV) it only indexes, so a call may hand it a
    /// recycled table (see `param_use`).
    indexed_only: u8,
}

impl Shape {
    /// Fresh KEYS and ARGV tables, as in Redis.
    const EVERYTHING: Shape = Shape {
        reach: 2,
        indexed_only: 0,
    };
}

impl Drop for LuaCallable {
    fn drop(&mut self) {
        if self.owner == self.id {
            cjson::owners::forget(self.owner);
        }
        // `try_with`: the last callables may drop as the thread exits, after `VM`.
        let lua = VM
            .try_with(|vm| vm.borrow().as_ref().and_then(|w| w.try_upgrade()))
            .ok()
            .flatten();
        if let Some(lua) = lua {
            // SAFETY: frees the slot `callable` took; nothing else refers to it.
            let _ = unsafe {
                lua.exec_raw::<()>((), |l| ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, self.id))
            };
        }
    }
}

impl std::fmt::Debug for LuaCallable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LuaCallable({})", self.id)
    }
}

/// Lua registry slots the per-call path reads with `lua_rawgeti`.
struct HotRefs {
    /// The prelude's error handler (Redis's `__redis__err__handler`).
    on_error: RegistryKey,
    /// The prelude's `running` table: slot 1 is the function being invoked.
    running: RegistryKey,
    /// The globals EVAL scripts see: KEYS and ARGV are set there for each run.
    eval_globals: RegistryKey,
    /// `run_frame` as a Lua C function, made once: `lua_cpcall` would allocate one per call.
    run_frame: RegistryKey,
    /// The strings "KEYS" and "ARGV", so setting them needs no string lookup per call.
    keys_name: RegistryKey,
    argv_name: RegistryKey,
    /// The recycled KEYS and ARGV tables for functions that only index them.
    recycled: [RecycledArray; 2],
}

/// A table refilled for each call instead of made anew (see `Shape::indexed_only`).
struct RecycledArray {
    table: RegistryKey,
    /// How many leading entries may be set: all later ones are nil.
    len: std::cell::Cell<usize>,
    /// Handed to the running function: a call nested in it gets a fresh table.
    lent: std::cell::Cell<bool>,
}

/// Longer arrays get a fresh table, so a recycled one never holds on to a large array part.
const RECYCLED_MAX_LEN: usize = 64;

pub struct LuaEngine {
    lua: Lua,
    /// The VM's main thread. Every call runs on it, in a protected call of `run_frame`.
    main: *mut ffi::lua_State,
    refs: HotRefs,
    memory_limit: std::cell::Cell<usize>,
    /// Picks the collector's pause after each call (see `pace_collector`).
    pacing: std::cell::RefCell<pacing::CollectorPacing>,
    env: Table,
    eval_env: Table,
    begin_load: Function,
    finish_load: Function,
    invoke: Function,
    shape_of: Function,
    script_code_of: Function,
}

/// Which environment a call runs in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Function,
    /// An EVAL script: KEYS and ARGV are globals for the run.
    Script,
}

/// Server facts scripts can read.
pub struct ServerVersion {
    pub text: String,
    pub num: u32,
}

impl Engine for LuaEngine {
    type Callable = LuaCallable;

    fn load(
        &self,
        code: &[u8],
        host: &dyn Host,
        timeout: Option<Duration>,
        command: &str,
    ) -> Result<Vec<Registration<LuaCallable>>, Vec<u8>> {
        LuaEngine::load(self, code, host, timeout, command)
    }

    fn compile_script(&self, body: &[u8]) -> Result<LuaCallable, Vec<u8>> {
        LuaEngine::compile_script(self, body)
    }

    fn call(
        &self,
        callable: &LuaCallable,
        function_name: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
        host: &dyn Host,
        sink: &mut dyn ReplySink,
    ) {
        LuaEngine::call(self, callable, function_name, keys, args, host, sink)
    }

    fn call_script(
        &self,
        callable: &LuaCallable,
        sha: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
        host: &dyn Host,
        sink: &mut dyn ReplySink,
    ) {
        LuaEngine::call_script(self, callable, sha, keys, args, host, sink)
    }

    fn used_memory(&self) -> usize {
        LuaEngine::used_memory(self)
    }

    fn collect_garbage(&self) {
        LuaEngine::collect_garbage(self)
    }

    fn set_memory_limit(&self, bytes: usize) -> Result<(), String> {
        LuaEngine::set_memory_limit(self, bytes).map_err(|e| e.to_string())
    }
}

impl LuaEngine {
    pub fn new(version: &ServerVersion) -> mlua::Result<LuaEngine> {
        let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::DEBUG;
        #[cfg(feature = "luajit")]
        let libs = libs | StdLib::BIT | StdLib::JIT;
        // SAFETY: `debug` is loaded only so the prelude can capture `debug.getinfo` for the
        // error handler; it is removed from the globals before any user code runs, and user
        // code never sees the real globals table.
        let lua = unsafe { Lua::unsafe_new_with(libs, LuaOptions::new().catch_rust_panics(false)) };
        lua.set_memory_limit(DEFAULT_MEMORY_LIMIT)?;
        let globals = lua.globals();
        #[cfg(feature = "luajit")]
        lua.load("jit.off() jit.flush()").set_name("=rx").exec()?;

        let redis = lua.create_table()?;
        // SAFETY: each is a lua_CFunction written against the C API in `api`.
        unsafe {
            redis.raw_set("call", lua.create_c_function(api::redis_call)?)?;
            redis.raw_set("pcall", lua.create_c_function(api::redis_pcall)?)?;
            redis.raw_set("log", lua.create_c_function(api::redis_log)?)?;
            redis.raw_set("sha1hex", lua.create_c_function(api::redis_sha1hex)?)?;
            redis.raw_set(
                "error_reply",
                lua.create_c_function(api::redis_error_reply)?,
            )?;
            redis.raw_set(
                "status_reply",
                lua.create_c_function(api::redis_status_reply)?,
            )?;
            redis.raw_set("setresp", lua.create_c_function(api::redis_setresp)?)?;
            redis.raw_set(
                "acl_check_cmd",
                lua.create_c_function(api::redis_acl_check_cmd)?,
            )?;
            redis.raw_set("set_repl", lua.create_c_function(api::redis_set_repl)?)?;
        }
        for (name, v) in [
            ("LOG_DEBUG", 0),
            ("LOG_VERBOSE", 1),
            ("LOG_NOTICE", 2),
            ("LOG_WARNING", 3),
        ] {
            redis.raw_set(name, v)?;
        }
        for (name, v) in [
            ("REPL_NONE", 0),
            ("REPL_AOF", 1),
            ("REPL_SLAVE", 2),
            ("REPL_REPLICA", 2),
            ("REPL_ALL", 3),
        ] {
            redis.raw_set(name, v)?;
        }
        let dialect = crate::dialect::current();
        if dialect.valkey_api {
            // Valkey keeps the Redis version it claims under the old names.
            let (claimed, claimed_num) = crate::dialect::VALKEY_CLAIMED_REDIS_VERSION;
            redis.raw_set("REDIS_VERSION", claimed)?;
            redis.raw_set("REDIS_VERSION_NUM", claimed_num)?;
            redis.raw_set("VALKEY_VERSION", version.text.as_str())?;
            redis.raw_set("VALKEY_VERSION_NUM", version.num)?;
            redis.raw_set("SERVER_NAME", "valkey")?;
        } else {
            redis.raw_set("REDIS_VERSION", version.text.as_str())?;
            redis.raw_set("REDIS_VERSION_NUM", version.num)?;
        }
        let dialect_table = lua.create_table()?;
        dialect_table.raw_set("api", dialect.api_name)?;
        dialect_table.raw_set("valkey", dialect.valkey_api)?;
        dialect_table.raw_set("late_names", dialect.late_function_name_checks)?;
        // SAFETY: a lua_CFunction written against the C API in `api`.
        dialect_table.raw_set("number_text", unsafe {
            lua.create_c_function(api::number_text)?
        })?;
        // SAFETY: lua_CFunctions written against the C API in `lrand48`.
        dialect_table.raw_set("math_random", unsafe {
            lua.create_c_function(lrand48::math_random)?
        })?;
        dialect_table.raw_set("math_randomseed", unsafe {
            lua.create_c_function(lrand48::math_randomseed)?
        })?;
        if dialect.os_clock {
            // SAFETY: a lua_CFunction written against the C API in `api`.
            dialect_table.raw_set("os_clock", unsafe { lua.create_c_function(api::os_clock)? })?;
        }

        let cjson = cjson::open(&lua)?;
        let cmsgpack = cmsgpack::open(&lua)?;
        let lstruct = lstruct::open(&lua)?;
        let sandbox: Table = lua
            .load(PRELUDE)
            .set_name("=rx")
            .set_mode(ChunkMode::Text)
            // SAFETY: a lua_CFunction written against the C API in `api`.
            .call((
                redis,
                cjson,
                cmsgpack,
                lstruct,
                unsafe { lua.create_c_function(api::rx_interrupted)? },
                unsafe {
                    // SAFETY: as above.
                    lua.create_c_function(api::rx_load51)?
                },
                dialect_table,
            ))?;

        // Nothing dangerous stays reachable, even from the real globals.
        for name in [
            "debug", "jit", "io", "os", "package", "require", "dofile", "loadfile", "print",
            "module", "newproxy", "getfenv", "setfenv",
        ] {
            globals.raw_set(name, Value::Nil)?;
        }
        lua.gc_collect()?;
        // One hook for the VM's whole life: it enforces the load timeout and lets the host
        // serve other clients, kill, or time out a running function. Every
        // HOOK_INSTRUCTIONS instructions costs nothing measurable (PLATFORM.md).
        // A global hook, so coroutines are interrupted too (mlua's per-thread hook only fires
        // in the thread it was set on).
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(HOOK_INSTRUCTIONS),
            |_, _| match api::tick() {
                Tick::Continue => Ok(VmState::Continue),
                Tick::Stop => Err(mlua::Error::runtime("script interrupted")),
            },
        )?;
        VM.with(|vm| *vm.borrow_mut() = Some(lua.weak()));
        let mut main = std::ptr::null_mut();
        // SAFETY: the closure only records the state pointer. Outside any coroutine mlua
        // runs it on the main thread, whose state lives as long as the VM.
        unsafe { lua.exec_raw::<()>((), |l| main = l)? };
        let refs = HotRefs {
            on_error: lua.create_registry_value(sandbox.get::<Function>("on_error")?)?,
            running: lua.create_registry_value(sandbox.get::<Table>("running")?)?,
            eval_globals: lua.create_registry_value(sandbox.get::<Table>("eval_globals")?)?,
            // SAFETY: a lua_CFunction written against the C API, below.
            run_frame: lua.create_registry_value(unsafe { lua.create_c_function(run_frame)? })?,
            keys_name: lua.create_registry_value(lua.create_string("KEYS")?)?,
            argv_name: lua.create_registry_value(lua.create_string("ARGV")?)?,
            recycled: [RecycledArray::new(&lua)?, RecycledArray::new(&lua)?],
        };
        Ok(LuaEngine {
            main,
            refs,
            memory_limit: std::cell::Cell::new(DEFAULT_MEMORY_LIMIT),
            pacing: Default::default(),
            env: sandbox.get("env")?,
            eval_env: sandbox.get("eval_env")?,
            begin_load: sandbox.get("begin_load")?,
            finish_load: sandbox.get("finish_load")?,
            invoke: sandbox.get("invoke")?,
            shape_of: sandbox.get("shape_of")?,
            script_code_of: sandbox.get("script_code_of")?,
            lua,
        })
    }

    pub(crate) fn used_memory(&self) -> usize {
        self.lua.used_memory()
    }

    /// A full collection cycle: frees every unreachable object now. The cap is lifted
    /// while it runs: a collection allocates too (LuaJIT resizes its string table), and
    /// one that fails halfway leaves the garbage in place, so a VM at its cap would stay
    /// there and fail every call.
    pub(crate) fn collect_garbage(&self) {
        let _ = self.lua.set_memory_limit(0);
        let _ = self.lua.gc_collect();
        let _ = self.lua.set_memory_limit(self.memory_limit.get());
    }

    /// Runs a library's code in the load-time sandbox and returns what it registered.
    /// `command` names the loading command in the timeout error (`RX.LOAD timeout`); no
    /// `timeout` means the body may run as long as it takes.
    /// Errors are full error replies, code included (bytes: they may quote the code).
    pub(crate) fn load(
        &self,
        code: &[u8],
        host: &dyn Host,
        timeout: Option<Duration>,
        command: &str,
    ) -> Result<Vec<Registration<LuaCallable>>, Vec<u8>> {
        let loaded = match self.load_once(code, host, timeout, command) {
            // A failed allocation does not make LuaJIT collect, so a body can fail only
            // because earlier loads or calls left garbage: collect, then try once more (a
            // body has no effects but its registrations, which a new attempt starts over).
            Err(e) if e.ends_with(b"not enough memory") => {
                self.collect_garbage();
                self.load_once(code, host, timeout, command)
            }
            other => other,
        };
        self.after_run();
        loaded
    }

    /// One attempt at loading. `cjson` settings the body makes go to the library: its
    /// functions share them (their owner is the first function's slot).
    fn load_once(
        &self,
        code: &[u8],
        host: &dyn Host,
        timeout: Option<Duration>,
        command: &str,
    ) -> Result<Vec<Registration<LuaCallable>>, Vec<u8>> {
        let settings = cjson::owners::enter(cjson::owners::LOADING);
        let mut loaded = self.load_body(code, host, timeout, command);
        drop(settings);
        let owner = match &mut loaded {
            Ok(registrations) => {
                let owner = registrations.first().map(|r| r.callable.id);
                for r in registrations.iter_mut() {
                    r.callable.owner = owner.unwrap_or(r.callable.id);
                }
                owner
            }
            Err(_) => None,
        };
        cjson::owners::settle_loading(owner);
        loaded
    }

    fn load_body(
        &self,
        code: &[u8],
        host: &dyn Host,
        timeout: Option<Duration>,
        command: &str,
    ) -> Result<Vec<Registration<LuaCallable>>, Vec<u8>> {
        // The header is not Lua; blank it but keep its newline so line numbers match Redis.
        let body = match code.iter().position(|&b| b == b'\n') {
            Some(nl) => &code[nl..],
            None => &b""[..],
        };
        let chunk = self
            .compile(body, LIBRARY_CHUNK_NAME, &self.env)
            .map_err(|e| [&b"ERR Error compiling function: "[..], &e].concat())?;

        let active = ActiveCall::loading(host, timeout.map(|t| Instant::now() + t));
        // SAFETY: `active` outlives the guard, which drops at the end of this function.
        let _active = unsafe { active.enter() };
        let ran = self.begin_load.call::<()>(()).and_then(|_| {
            self.invoke
                .call::<(bool, Value)>((chunk, Value::Nil, Value::Nil))
        });
        let registered: mlua::Result<Table> = self.finish_load.call(());

        if active.timed_out() {
            return Err(
                format!("ERR Error registering functions: ERR {command} timeout").into_bytes(),
            );
        }
        let (ok, err) = ran.map_err(|e| {
            format!(
                "ERR Error registering functions: ERR {}",
                lua_error_message(&e)
            )
            .into_bytes()
        })?;
        if !ok {
            return Err([
                &b"ERR Error registering functions: "[..],
                &error_table_message(&err),
            ]
            .concat());
        }
        let text = |e: mlua::Error| format!("ERR {e}").into_bytes();
        let registered = registered.map_err(text)?;
        let mut out = Vec::new();
        for entry in registered.sequence_values::<Table>() {
            let entry = entry.map_err(text)?;
            let mut flags = FunctionFlags::empty();
            let names: Table = entry.get("flags").map_err(text)?;
            for name in names.sequence_values::<mlua::LuaString>().flatten() {
                if let Some(f) = FunctionFlags::from_name(&name.as_bytes()) {
                    flags.insert(f);
                }
            }
            let description: Option<mlua::LuaString> = entry.get("description").map_err(text)?;
            out.push(Registration {
                name: entry.get::<String>("name").map_err(text)?,
                description: description.map(|d| d.as_bytes().to_vec()),
                flags,
                callable: entry
                    .get("callback")
                    .and_then(|f| self.callable(f, None))
                    .map_err(text)?,
            });
        }
        if crate::dialect::current().late_function_name_checks {
            check_function_names(&out)?;
        }
        Ok(out)
    }

    /// Runs a function and writes its reply (or its error) to `sink`.
    pub(crate) fn call(
        &self,
        callable: &LuaCallable,
        function_name: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
        host: &dyn Host,
        sink: &mut dyn ReplySink,
    ) {
        self.run(
            CallKind::Function,
            callable,
            function_name,
            keys,
            args,
            host,
            sink,
        )
    }

    /// Runs an EVAL script: as `call`, with KEYS and ARGV set as globals for the run.
    pub(crate) fn call_script(
        &self,
        callable: &LuaCallable,
        sha: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
        host: &dyn Host,
        sink: &mut dyn ReplySink,
    ) {
        self.run(CallKind::Script, callable, sha, keys, args, host, sink)
    }

    /// Keeps a compiled function in the Lua registry for `run`.
    fn callable(&self, f: Function, shape: Option<Shape>) -> mlua::Result<LuaCallable> {
        // SAFETY: luaL_ref pops the function (the one argument pushed) into a new registry
        // slot, in mlua's protected call; the slot number is what is left to return.
        let id = unsafe {
            self.lua.exec_raw::<c_int>(f, |l| {
                let id = ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX);
                ffi::lua_pushinteger(l, id as ffi::lua_Integer);
            })?
        };
        Ok(LuaCallable {
            id,
            owner: id,
            shape: std::cell::Cell::new(shape),
        })
    }

    /// The function's `Shape`, worked out from its bytecode on first use. Should that fail
    /// (out of memory), the call builds everything.
    fn shape(&self, callable: &LuaCallable, kind: CallKind) -> Shape {
        if let Some(shape) = callable.shape.get() {
            return shape;
        }
        // SAFETY: pushes the function from the slot `callable` keeps, as the one result.
        let function = unsafe {
            self.lua.exec_raw::<Function>((), |l| {
                ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, callable.id as _);
            })
        };
        let shape = function
            .and_then(|f| match kind {
                CallKind::Function => self.work_out_shape(&f),
                CallKind::Script => self.work_out_script_shape(&f),
            })
            .unwrap_or(Shape::EVERYTHING);
        callable.shape.set(Some(shape));
        shape
    }

    /// A script sees KEYS and ARGV (reach 2) as globals; they can be recycled if every read
    /// of them is indexed at once (see `param_use::scripts_index_only`).
    fn work_out_script_shape(&self, f: &Function) -> mlua::Result<Shape> {
        let (code, strings): (Option<Vec<i64>>, Option<Vec<Value>>) =
            self.script_code_of.call(f)?;
        let (Some(code), Some(strings)) = (code, strings) else {
            return Ok(Shape::EVERYTHING);
        };
        let code = instructions(&code);
        let strings: Vec<Option<mlua::BorrowedBytes>> = strings
            .iter()
            .map(|v| match v {
                Value::String(s) => Some(s.as_bytes()),
                _ => None,
            })
            .collect();
        if strings.len() != code.len() {
            return Ok(Shape::EVERYTHING);
        }
        let indexed_only =
            param_use::scripts_index_only(&code, |i| strings[i].as_ref().map(|b| &b[..]));
        Ok(Shape {
            reach: 2,
            indexed_only,
        })
    }

    fn work_out_shape(&self, f: &Function) -> mlua::Result<Shape> {
        type Facts = (
            u8,
            Option<Vec<i64>>,
            Option<Table>,
            Option<u32>,
            Option<mlua::LuaString>,
            Option<mlua::LuaString>,
        );
        let (reach, code, captured, params, first, second): Facts = self.shape_of.call(f)?;
        let reach = reach.min(2);
        let (Some(code), Some(captured), Some(params)) = (code, captured, params) else {
            return Ok(Shape {
                reach,
                indexed_only: 0,
            });
        };
        let code = instructions(&code);
        let names = [first, second];
        // A parameter without a name (no debug information) counts as captured.
        let captured = |slot: u32| {
            names[slot as usize]
                .as_ref()
                .is_none_or(|name| captured.contains_key(name).unwrap_or(true))
        };
        let indexed_only = param_use::indexed_only(&code, params, captured);
        Ok(Shape {
            reach,
            indexed_only,
        })
    }

    /// Compiles an EVAL script body in the EVAL environment. A shebang line is blanked (it is
    /// not Lua) so line numbers stay those of the script, as in Redis.
    pub(crate) fn compile_script(&self, body: &[u8]) -> Result<LuaCallable, Vec<u8>> {
        // LuaJIT skips a leading `#` line and reads bytecode; Lua 5.1, as Redis runs it, sees
        // a syntax error in both.
        let prefix = &b"ERR Error compiling script (new function): "[..];
        let unexpected = b"user_script:1: unexpected symbol near";
        match body.first() {
            Some(b'#') if !body.starts_with(b"#!") => {
                return Err([prefix, unexpected, b" '#'"].concat())
            }
            Some(27) => return Err([prefix, unexpected, b" 'char(27)'"].concat()),
            _ => {}
        }
        let code: &[u8] = if body.starts_with(b"#!") {
            body.iter()
                .position(|&b| b == b'\n')
                .map_or(&b""[..], |nl| &body[nl..])
        } else {
            body
        };
        let function = self
            .compile(code, c"@user_script", &self.eval_env)
            .map_err(|e| [prefix, &e].concat())?;
        self.callable(function, None)
            .map_err(|e| [prefix, lua_error_message(&e).as_bytes()].concat())
    }

    /// Compiles Lua 5.1 source (see `lua_source`), text only, into a function running in
    /// `env`. The error is Lua 5.1's message, as bytes (it may quote any byte of the code).
    fn compile(&self, code: &[u8], chunk_name: &CStr, env: &Table) -> Result<Function, Vec<u8>> {
        let prepared =
            crate::lua_source::prepare(code, crate::dialect::current().refuse_nested_long_brackets);
        if let Some(refusal) = prepared.refusal {
            return Err(refusal);
        }
        let mut failed: Option<Vec<u8>> = None;
        // SAFETY: inside mlua's protected call, with the environment pushed as the one
        // argument; the buffer and name outlive it. Exactly one value is left as the result:
        // the function (its environment set), or nil once the message is copied out.
        let compiled = unsafe {
            self.lua.exec_raw::<Option<Function>>(env, |l| {
                let status = ffi::luaL_loadbufferx(
                    l,
                    prepared.code.as_ptr().cast(),
                    prepared.code.len(),
                    chunk_name.as_ptr(),
                    c"t".as_ptr(),
                );
                if status == 0 {
                    ffi::lua_pushvalue(l, -2);
                    ffi::lua_setfenv(l, -2);
                    ffi::lua_remove(l, -2);
                } else {
                    let mut len = 0usize;
                    let p = ffi::lua_tolstring(l, -1, &mut len);
                    failed = Some(if p.is_null() {
                        b"not enough memory".to_vec()
                    } else {
                        std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec()
                    });
                    ffi::lua_settop(l, 0);
                    ffi::lua_pushnil(l);
                }
            })
        };
        match (compiled, failed) {
            (Ok(Some(f)), _) => Ok(f),
            (_, Some(message)) => Err(prepared.fix_error(&message)),
            (Err(e), None) => Err(lua_error_message(&e).into_bytes()),
            (Ok(None), None) => Err(b"not enough memory".to_vec()),
        }
    }

    /// The per-call path, written against the raw API: one protected call of `run_frame`
    /// (no closure allocated per call) in which KEYS and ARGV are built, the function runs
    /// under the error handler, and the result goes straight from the stack to `sink`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        kind: CallKind,
        callable: &LuaCallable,
        function_name: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
        host: &dyn Host,
        sink: &mut dyn ReplySink,
    ) {
        let shape = self.shape(callable, kind);
        let _settings = cjson::owners::enter(callable.owner);
        let lent_before = self.refs.recycled.each_ref().map(|r| r.lent.get());
        let active = ActiveCall::new(host);
        // SAFETY: `active` outlives the guard, which drops at the end of this function.
        let _active = unsafe { active.enter() };
        let mut frame = CallFrame {
            kind,
            callable: callable.id,
            reach: shape.reach,
            indexed_only: shape.indexed_only,
            refs: &self.refs,
            function_name,
            keys,
            args,
            sink,
            active: &active,
            replied: false,
        };
        let l = self.main;
        // SAFETY: `main` is the VM's main thread and this runs on the main thread. The two
        // pushes fit in the slots Lua keeps free (checked; as mlua's own calls do, outside
        // protection). `frame` outlives the protected call, and `run_frame` only reads it
        // through the light userdata it is given.
        let status = unsafe {
            if ffi::lua_checkstack(l, 2) == 0 {
                -1
            } else {
                ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, self.refs.run_frame.id() as _);
                ffi::lua_pushlightuserdata(
                    l,
                    (&mut frame as *mut CallFrame<'_>).cast::<std::ffi::c_void>(),
                );
                ffi::lua_pcall(l, 1, 0, 0)
            }
        };
        // Whatever this call lent goes back, also when building the arguments failed.
        for (recycled, was_lent) in self.refs.recycled.iter().zip(lent_before) {
            recycled.lent.set(was_lent);
        }
        let error = if status > 0 {
            // SAFETY: a failed lua_pcall leaves exactly its error object on the stack.
            let text = unsafe { value_text(l, -1) };
            // SAFETY: pops that error object.
            unsafe { ffi::lua_pop(l, 1) };
            text
        } else {
            None
        };
        self.after_run();
        if !frame.replied {
            let text = match (active.host().interruption(), error) {
                (Some(text), _) => text,
                (None, Some(msg)) => format!("ERR {msg}"),
                (None, None) if status > 0 => "ERR unknown error".into(),
                (None, None) => "ERR reached lua stack limit".into(),
            };
            frame.sink.error(text.as_bytes());
        }
    }

    /// Housekeeping after a call or a library body: a failed allocation does not make
    /// LuaJIT collect, so the garbage of a run that hit the memory cap would keep later runs
    /// failing: collect fully after a run that leaves the VM near its cap. Then pace the
    /// collector from the VM's size.
    fn after_run(&self) {
        // SAFETY: `main` is the VM's main thread; LUA_GCCOUNT only reads the GC's total.
        let in_use = unsafe { ffi::lua_gc(self.main, ffi::LUA_GCCOUNT, 0) }.max(0) as usize * 1024;
        if in_use > self.memory_limit.get() / 2 {
            self.collect_garbage();
        }
        self.pace_collector(in_use);
    }

    /// Caps the VM's memory; allocations past it fail with "not enough memory".
    pub(crate) fn set_memory_limit(&self, bytes: usize) -> mlua::Result<()> {
        self.memory_limit.set(bytes);
        MEMORY_CAP.with(|c| c.set(bytes));
        self.lua.set_memory_limit(bytes).map(|_| ())
    }

    /// Sets how much garbage may pile up before the next collection cycle starts (see
    /// `pacing`): up to `GC_GARBAGE_ALLOWANCE`, never more than a quarter of the cap.
    fn pace_collector(&self, in_use: usize) {
        let limit = self.memory_limit.get();
        let allowance = GC_GARBAGE_ALLOWANCE.min(limit / 4);
        let change = self.pacing.borrow_mut().observe(in_use, allowance, limit);
        if let Some(pause) = change {
            // SAFETY: `main` is the VM's main thread; SETPAUSE only stores the setting.
            unsafe { ffi::lua_gc(self.main, ffi::LUA_GCSETPAUSE, pause) };
        }
    }
}

/// Valkey's checks of the functions a library body registered, made after the body ran,
/// in registration order, with its own texts and no `Error registering functions` prefix.
fn check_function_names(registered: &[Registration<LuaCallable>]) -> Result<(), Vec<u8>> {
    let mut seen = std::collections::HashSet::new();
    for r in registered {
        let valid = !r.name.is_empty()
            && r.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(b"ERR Function names can only contain letters, numbers, or underscores(_) and must be at least one character long".to_vec());
        }
        if !seen.insert(r.name.as_str()) {
            return Err(b"ERR Function already exists in the library".to_vec());
        }
    }
    Ok(())
}

/// Everything `run_frame` needs, passed through `lua_cpcall` as a light userdata.
struct CallFrame<'a> {
    kind: CallKind,
    callable: c_int,
    /// How many of KEYS and ARGV to build (see `Shape::reach`); nil stands in for
    /// the others, which the function cannot reach.
    reach: u8,
    indexed_only: u8,
    refs: &'a HotRefs,
    function_name: &'a str,
    keys: &'a [&'a [u8]],
    args: &'a [&'a [u8]],
    sink: &'a mut dyn ReplySink,
    active: &'a ActiveCall<'a>,
    replied: bool,
}

/// The protected body of `LuaEngine::run`. Any Lua error raised here (out of memory while
/// building KEYS, say) unwinds to its `lua_pcall`; errors of the function itself are caught
/// by the handler and turned into the error reply.
unsafe extern "C-unwind" fn run_frame(l: *mut ffi::lua_State) -> c_int {
    let frame = &mut *ffi::lua_touserdata(l, 1).cast::<CallFrame<'_>>();
    if ffi::lua_checkstack(l, 12) == 0 {
        return 0;
    }
    let base = ffi::lua_gettop(l);
    let registry = |r: &RegistryKey| ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, r.id() as _);
    registry(&frame.refs.running); // base+1: the running table
    ffi::lua_rawgeti(l, base + 1, 1); // base+2: the outer running function, if any
    registry(&frame.refs.on_error); // base+3: the handler
    ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, frame.callable as _); // base+4
    ffi::lua_pushvalue(l, base + 4);
    ffi::lua_rawseti(l, base + 1, 1);
    for (position, items) in [frame.keys, frame.args].into_iter().enumerate() {
        let recycled = &frame.refs.recycled[position];
        // base+5, base+6
        if position >= frame.reach as usize {
            ffi::lua_pushnil(l);
        } else if frame.indexed_only & (1 << position) != 0
            && items.len() <= RECYCLED_MAX_LEN
            && !recycled.lent.get()
        {
            recycled.refill(l, items);
            recycled.lent.set(true);
        } else {
            push_string_array(l, items);
        }
    }
    // A function gets KEYS and ARGV as its arguments; a script as globals, and no
    // arguments (its `...` is empty, as in Redis).
    let nargs = match frame.kind {
        CallKind::Function => 2,
        CallKind::Script => {
            registry(&frame.refs.eval_globals);
            set_field(l, base + 7, &frame.refs.keys_name, base + 5);
            set_field(l, base + 7, &frame.refs.argv_name, base + 6);
            ffi::lua_pop(l, 3);
            0
        }
    };
    let status = ffi::lua_pcall(l, nargs, 1, base + 3);
    let value = ffi::lua_gettop(l);
    if frame.kind == CallKind::Script {
        registry(&frame.refs.eval_globals); // value + 1
        ffi::lua_pushnil(l); // value + 2
        set_field(l, value + 1, &frame.refs.keys_name, value + 2);
        set_field(l, value + 1, &frame.refs.argv_name, value + 2);
        ffi::lua_pop(l, 2);
    }
    ffi::lua_pushvalue(l, base + 2);
    ffi::lua_rawseti(l, base + 1, 1);
    if status == 0 {
        convert::raw_to_reply(l, value, frame.sink, frame.active.resp3());
    } else {
        frame.sink.error(&raw_error_text(
            l,
            value,
            frame.function_name,
            frame.active.host().interruption(),
        ));
    }
    frame.replied = true;
    0
}

/// `stack[table][name] = stack[value]` without metamethods (absolute indexes); `name` is
/// a registry slot holding the key string.
unsafe fn set_field(l: *mut ffi::lua_State, table: c_int, name: &RegistryKey, value: c_int) {
    ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, name.id() as _);
    ffi::lua_pushvalue(l, value);
    ffi::lua_rawset(l, table);
}

/// A string or number at `idx` as text; `None` for anything else (an mlua error object).
unsafe fn value_text(l: *mut ffi::lua_State, idx: c_int) -> Option<String> {
    match ffi::lua_type(l, idx) {
        ffi::LUA_TSTRING | ffi::LUA_TNUMBER => {
            let mut len = 0usize;
            let p = ffi::lua_tolstring(l, idx, &mut len);
            Some(
                String::from_utf8_lossy(std::slice::from_raw_parts(p.cast::<u8>(), len))
                    .into_owned(),
            )
        }
        _ => None,
    }
}

/// `jit.util.funcbc`'s results, flat (word, modes, word, modes, ...), as instructions.
fn instructions(flat: &[i64]) -> Vec<param_use::Instruction> {
    flat.chunks_exact(2)
        .map(|pair| param_use::Instruction {
            word: pair[0] as u32,
            modes: pair[1] as u16,
        })
        .collect()
}

impl RecycledArray {
    fn new(lua: &Lua) -> mlua::Result<RecycledArray> {
        Ok(RecycledArray {
            table: lua.create_registry_value(lua.create_table_with_capacity(4, 0)?)?,
            len: std::cell::Cell::new(0),
            lent: std::cell::Cell::new(false),
        })
    }

    /// Pushes the table holding exactly `items` at 1..n (every later entry nil, so `#t` is n).
    unsafe fn refill(&self, l: *mut ffi::lua_State, items: &[&[u8]]) {
        ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, self.table.id() as _);
        let old = self.len.get();
        // Should a push fail (out of memory), the next refill still clears every entry set.
        self.len.set(old.max(items.len()));
        for (i, item) in items.iter().enumerate() {
            ffi::lua_pushlstring(l, item.as_ptr().cast(), item.len());
            ffi::lua_rawseti(l, -2, (i + 1) as ffi::lua_Integer);
        }
        for i in items.len()..old {
            ffi::lua_pushnil(l);
            ffi::lua_rawseti(l, -2, (i + 1) as ffi::lua_Integer);
        }
        self.len.set(items.len());
    }
}

/// Pushes a new array of byte strings.
unsafe fn push_string_array(l: *mut ffi::lua_State, items: &[&[u8]]) {
    ffi::lua_createtable(l, items.len().min(i32::MAX as usize) as c_int, 0);
    for (i, item) in items.iter().enumerate() {
        ffi::lua_pushlstring(l, item.as_ptr().cast(), item.len());
        ffi::lua_rawseti(l, -2, (i + 1) as ffi::lua_Integer);
    }
}

/// The error reply for a failed call, from the handler's `{err=, source=, line=}` at
/// `idx`: Redis's "<err> script: <function>, on <source>:<line>.". A kill or a time
/// limit replaces the error text but keeps the location.
unsafe fn raw_error_text(
    l: *mut ffi::lua_State,
    idx: c_int,
    function_name: &str,
    interruption: Option<String>,
) -> Vec<u8> {
    let field = |name: &std::ffi::CStr| -> (c_int, Vec<u8>, f64) {
        ffi::lua_pushstring(l, name.as_ptr());
        let t = ffi::lua_rawget(l, idx);
        let mut len = 0usize;
        let bytes = if t == ffi::LUA_TSTRING {
            let p = ffi::lua_tolstring(l, -1, &mut len);
            std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec()
        } else {
            Vec::new()
        };
        let n = if t == ffi::LUA_TNUMBER {
            ffi::lua_tonumber(l, -1)
        } else {
            0.0
        };
        ffi::lua_pop(l, 1);
        (t, bytes, n)
    };
    let (mut msg, located) = match ffi::lua_type(l, idx) {
        ffi::LUA_TTABLE => {
            let (t, err, _) = field(c"err");
            let msg = if t == ffi::LUA_TSTRING {
                err
            } else {
                b"ERR unknown error".to_vec()
            };
            let (ts, source, _) = field(c"source");
            let (tl, _, line) = field(c"line");
            let located =
                (ts == ffi::LUA_TSTRING && tl == ffi::LUA_TNUMBER).then_some((source, line as i64));
            (msg, located)
        }
        ffi::LUA_TSTRING => {
            let mut len = 0usize;
            let p = ffi::lua_tolstring(l, idx, &mut len);
            (
                [
                    &b"ERR "[..],
                    std::slice::from_raw_parts(p.cast::<u8>(), len),
                ]
                .concat(),
                None,
            )
        }
        _ => (b"ERR unknown error".to_vec(), None),
    };
    if let Some(text) = interruption {
        msg = text.into_bytes();
    }
    crate::lua_source::restore_goto(&mut msg);
    if let Some((source, line)) = located {
        msg.extend_from_slice(format!(" script: {function_name}, on ").as_bytes());
        msg.extend_from_slice(&source);
        msg.extend_from_slice(format!(":{line}.").as_bytes());
    }
    msg
}

/// The `err` text of an error value the handler produced (or Lua's own message).
fn error_table_message(v: &Value) -> Vec<u8> {
    match v {
        Value::Table(t) => match t.raw_get::<Value>("err") {
            Ok(Value::String(s)) => s.as_bytes().to_vec(),
            _ => b"ERR unknown error".to_vec(),
        },
        Value::String(s) => [&b"ERR "[..], &s.as_bytes()].concat(),
        _ => b"ERR unknown error".to_vec(),
    }
}

/// Lua's own message, without mlua's decorations.
pub(crate) fn lua_error_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::MemoryError(_) => "not enough memory".into(),
        mlua::Error::CallbackError { cause, .. } => lua_error_message(cause),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    /// RX's LuaJIT is built with a fixed PRNG seed (.cargo/config.toml), so the string hash,
    /// and with it the order of tables with string keys, is the same on every start.
    #[test]
    fn luajit_is_built_with_the_fixed_seed() {
        let lua = mlua::Lua::new();
        let prng: i64 = lua.load("return jit.security('prng')").eval().unwrap();
        assert_eq!(prng, 0, "LuaJIT was built without LUAJIT_SECURITY_PRNG=0");
        // And the order is the same in two fresh VMs.
        let order = || -> String {
            let vm = mlua::Lua::new();
            vm.load("local t = {alpha=1, beta=2, gamma=3, delta=4, epsilon=5, zeta=6} local k = {} for n in pairs(t) do k[#k+1] = n end return table.concat(k, ',')")
                .eval()
                .unwrap()
        };
        assert_eq!(order(), order());
    }
}
