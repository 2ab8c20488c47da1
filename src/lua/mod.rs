//! The Lua engine: one LuaJIT VM (JIT compiler off, so hooks can always interrupt it) that
//! holds every library, each function running in the same read-only sandbox Redis builds.

pub mod api;
pub mod cjson;
pub mod cmsgpack;
mod codec_glue;
pub mod convert;
pub mod lstruct;

use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use std::ffi::c_int;

use mlua::{ffi, Function, HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};

use crate::engine::{Host, Registration, Tick};
use crate::flags::FunctionFlags;
use crate::reply::ReplySink;
use api::ActiveCall;

const PRELUDE: &str = include_str!("prelude.lua");
/// The chunk name Redis gives library code; errors read `user_function:<line>: ...`.
const LIBRARY_CHUNK_NAME: &str = "@user_function";
/// How often the hook looks at the clock.
const HOOK_INSTRUCTIONS: u32 = 100_000;
/// The VM's memory cap until `rx.memory-limit-mb` says otherwise.
const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

/// A compiled function, as the registry stores it.
pub type LuaCallable = Function;

pub struct LuaEngine {
    lua: Lua,
    memory_limit: std::cell::Cell<usize>,
    env: Table,
    eval_env: Table,
    invoke_script: Function,
    begin_load: Function,
    finish_load: Function,
    invoke: Function,
}

/// Server facts scripts can read.
pub struct ServerVersion {
    pub text: String,
    pub num: u32,
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
        redis.raw_set("REDIS_VERSION", version.text.as_str())?;
        redis.raw_set("REDIS_VERSION_NUM", version.num)?;

        let cjson = cjson::open(&lua)?;
        let cmsgpack = cmsgpack::open(&lua)?;
        let lstruct = lstruct::open(&lua)?;
        let sandbox: Table = lua
            .load(PRELUDE)
            .set_name("=rx")
            .set_mode(ChunkMode::Text)
            // SAFETY: a lua_CFunction written against the C API in `api`.
            .call((redis, cjson, cmsgpack, lstruct, unsafe {
                lua.create_c_function(api::rx_interrupted)?
            }))?;

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
        Ok(LuaEngine {
            memory_limit: std::cell::Cell::new(DEFAULT_MEMORY_LIMIT),
            env: sandbox.get("env")?,
            eval_env: sandbox.get("eval_env")?,
            invoke_script: sandbox.get("invoke_script")?,
            begin_load: sandbox.get("begin_load")?,
            finish_load: sandbox.get("finish_load")?,
            invoke: sandbox.get("invoke")?,
            lua,
        })
    }

    pub fn used_memory(&self) -> usize {
        self.lua.used_memory()
    }

    /// Runs a library's code in the load-time sandbox and returns what it registered.
    /// `command` names the loading command in the timeout error (`RX.LOAD timeout`).
    /// Errors are full error texts, code included.
    pub fn load(
        &self,
        code: &[u8],
        host: &dyn Host,
        timeout: Duration,
        command: &str,
    ) -> Result<Vec<Registration<LuaCallable>>, String> {
        // The header is not Lua; blank it but keep its newline so line numbers match Redis.
        let body = match code.iter().position(|&b| b == b'\n') {
            Some(nl) => &code[nl..],
            None => &b""[..],
        };
        let chunk = self
            .lua
            .load(body)
            .set_name(LIBRARY_CHUNK_NAME)
            .set_mode(ChunkMode::Text)
            .set_environment(self.env.clone())
            .into_function()
            .map_err(|e| format!("ERR Error compiling function: {}", lua_error_message(&e)))?;

        let active = ActiveCall::loading(host, Instant::now() + timeout);
        // SAFETY: `active` outlives the guard, which drops at the end of this function.
        let _active = unsafe { active.enter() };
        let ran = self.begin_load.call::<()>(()).and_then(|_| {
            self.invoke
                .call::<(bool, Value)>((chunk, Value::Nil, Value::Nil))
        });
        let registered: mlua::Result<Table> = self.finish_load.call(());

        if active.timed_out() {
            return Err(format!(
                "ERR Error registering functions: ERR {command} timeout"
            ));
        }
        let (ok, err) = ran.map_err(|e| {
            format!(
                "ERR Error registering functions: ERR {}",
                lua_error_message(&e)
            )
        })?;
        if !ok {
            let text = error_table_message(&err);
            return Err(format!(
                "ERR Error registering functions: {}",
                String::from_utf8_lossy(&text)
            ));
        }
        let registered = registered.map_err(|e| format!("ERR {e}"))?;
        let mut out = Vec::new();
        for entry in registered.sequence_values::<Table>() {
            let entry = entry.map_err(|e| format!("ERR {e}"))?;
            let mut flags = FunctionFlags::empty();
            let names: Table = entry.get("flags").map_err(|e| format!("ERR {e}"))?;
            for name in names.sequence_values::<mlua::LuaString>().flatten() {
                if let Some(f) = FunctionFlags::from_name(&name.as_bytes()) {
                    flags.insert(f);
                }
            }
            let description: Option<mlua::LuaString> =
                entry.get("description").map_err(|e| format!("ERR {e}"))?;
            out.push(Registration {
                name: entry
                    .get::<String>("name")
                    .map_err(|e| format!("ERR {e}"))?,
                description: description.map(|d| d.as_bytes().to_vec()),
                flags,
                callable: entry.get("callback").map_err(|e| format!("ERR {e}"))?,
            });
        }
        Ok(out)
    }

    /// Runs a function and writes its reply (or its error) to `sink`.
    ///
    /// The whole call happens inside one protected section with the raw Lua API: KEYS and
    /// ARGV are built, `invoke` runs the function under the error handler, and the result
    /// goes straight from the Lua stack to `sink`.
    pub fn call(
        &self,
        callable: &LuaCallable,
        function_name: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
        host: &dyn Host,
        sink: &mut dyn ReplySink,
    ) {
        self.run(
            &self.invoke,
            callable,
            function_name,
            keys,
            args,
            host,
            sink,
        )
    }

    /// Runs an EVAL script: as `call`, with KEYS and ARGV set as globals for the run.
    pub fn call_script(
        &self,
        callable: &LuaCallable,
        sha: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
        host: &dyn Host,
        sink: &mut dyn ReplySink,
    ) {
        self.run(&self.invoke_script, callable, sha, keys, args, host, sink)
    }

    /// Compiles an EVAL script body in the EVAL environment. A shebang line is blanked (it is
    /// not Lua) so line numbers stay those of the script, as in Redis.
    pub fn compile_script(&self, body: &[u8]) -> Result<LuaCallable, String> {
        // LuaJIT skips a leading `#` line and reads bytecode; Lua 5.1, as Redis runs it, sees
        // a syntax error in both.
        let prefix =
            "ERR Error compiling script (new function): user_script:1: unexpected symbol near";
        match body.first() {
            Some(b'#') if !body.starts_with(b"#!") => return Err(format!("{prefix} '#'")),
            Some(27) => return Err(format!("{prefix} 'char(27)'")),
            _ => {}
        }
        let code: &[u8] = if body.starts_with(b"#!") {
            body.iter()
                .position(|&b| b == b'\n')
                .map_or(&b""[..], |nl| &body[nl..])
        } else {
            body
        };
        self.lua
            .load(code)
            .set_name("@user_script")
            .set_mode(ChunkMode::Text)
            .set_environment(self.eval_env.clone())
            .into_function()
            .map_err(|e| {
                format!(
                    "ERR Error compiling script (new function): {}",
                    lua_error_message(&e)
                )
            })
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        invoker: &Function,
        callable: &LuaCallable,
        function_name: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
        host: &dyn Host,
        sink: &mut dyn ReplySink,
    ) {
        let active = ActiveCall::new(host);
        // SAFETY: `active` outlives the guard, which drops at the end of this function.
        let _active = unsafe { active.enter() };
        let mut replied = false;
        // SAFETY: exec_raw runs the closure inside a protected call, with `invoke` and the
        // callable pushed at indexes 1 and 2 and room checked below; every stack index used
        // is one this closure pushed.
        let result = unsafe {
            self.lua.exec_raw::<()>((invoker, callable), |l| {
                if ffi::lua_checkstack(l, 8) == 0 {
                    return;
                }
                push_string_array(l, keys);
                push_string_array(l, args);
                ffi::lua_call(l, 3, 2);
                let (ok, value) = (ffi::lua_gettop(l) - 1, ffi::lua_gettop(l));
                if ffi::lua_toboolean(l, ok) != 0 {
                    convert::raw_to_reply(l, value, sink, active.resp3());
                } else {
                    sink.error(&raw_error_text(
                        l,
                        value,
                        function_name,
                        active.host().interruption(),
                    ));
                }
                replied = true;
                ffi::lua_settop(l, 0);
            })
        };
        // A failed allocation does not make LuaJIT collect, so the garbage of a call that hit
        // the memory cap would keep later calls failing: collect fully after a call that
        // leaves the VM near its cap.
        if self.near_memory_limit() {
            let _ = self.lua.gc_collect();
        }
        if !replied {
            let text = match (&result, active.host().interruption()) {
                (_, Some(text)) => text,
                (Err(e), None) => format!("ERR {}", lua_error_message(e)),
                (Ok(()), None) => "ERR reached lua stack limit".into(),
            };
            sink.error(text.as_bytes());
        }
    }

    /// Caps the VM's memory; allocations past it fail with "not enough memory".
    pub fn set_memory_limit(&self, bytes: usize) -> mlua::Result<()> {
        self.memory_limit.set(bytes);
        self.lua.set_memory_limit(bytes).map(|_| ())
    }

    /// More than half of the cap in use: worth a full collection.
    fn near_memory_limit(&self) -> bool {
        self.lua.used_memory() > self.memory_limit.get() / 2
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
fn lua_error_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::MemoryError(_) => "not enough memory".into(),
        mlua::Error::CallbackError { cause, .. } => lua_error_message(cause),
        other => other.to_string(),
    }
}
