//! The Lua engine: one LuaJIT VM (JIT compiler off, so hooks can always interrupt it) that
//! holds every library, each function running in the same read-only sandbox Redis builds.
//! It implements the core's engine boundary (`rx_core::engine`) and reaches Redis only
//! through its `Host`: no module API here, so it is tested without a server.

// The core's modules, under the names this crate has always used.
use rx_core::{dialect, engine, flags, numfmt, reply, resp};

pub mod api;
mod barrier;
mod calling;
mod compile;
mod errors;
mod library;
mod vm;
mod vm_memory;
pub use vm_memory::{use_block_allocator, BlockAllocator};

use calling::run_frame;
pub(crate) use errors::lua_error_message;
use errors::{error_table_message, raw_error_text};
pub mod c_tail_calls;
pub mod cjson;
pub mod cmsgpack;
mod codec_glue;
#[cfg(feature = "luajit")]
mod jit;
#[cfg(not(feature = "luajit"))]
mod jit {
    pub(crate) struct JitControls;
}
pub mod convert;
pub mod kill_checks;
pub mod lrand48;
pub mod lstruct;
pub mod lua_source;
mod pacing;
mod param_use;

use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use std::ffi::{c_int, CStr};

use mlua::{ffi, Function, Lua, RegistryKey, StdLib, Table, Value};

use crate::engine::{Engine, Host, Registration};
use crate::flags::FunctionFlags;
use crate::reply::ReplySink;
use api::ActiveCall;

const PRELUDE: &str = include_str!("prelude.lua");
/// The chunk name Redis gives library code; errors read `user_function:<line>: ...`.
const LIBRARY_CHUNK_NAME: &CStr = c"@user_function";
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
    /// Picks the collector's pause after each call (see `pace_collector`).
    pacing: std::cell::RefCell<pacing::CollectorPacing>,
    env: Table,
    eval_env: Table,
    begin_load: Function,
    finish_load: Function,
    run_library_body: Function,
    shape_of: Function,
    script_code_of: Function,
    /// The JIT compiler's switches (`None` for plain Lua 5.1).
    #[cfg_attr(not(feature = "luajit"), allow(dead_code))]
    jit: Option<jit::JitControls>,
    /// Last: the state closes after every handle above has gone (see `vm::OwnedState`).
    state: vm::OwnedState,
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

    fn call_script(
        &self,
        callable: &LuaCallable,
        sha: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
        host: &dyn Host,
        sink: &mut dyn ReplySink,
    ) {
        // An EVAL script: KEYS and ARGV are globals for the run.
        self.run(CallKind::Script, callable, sha, keys, args, host, sink)
    }

    fn used_memory(&self) -> usize {
        LuaEngine::used_memory(self)
    }

    fn collect_garbage(&self) {
        LuaEngine::collect_garbage(self)
    }

    fn set_compiler(&self, on: bool) -> Result<(), String> {
        #[cfg(feature = "luajit")]
        if let Some(jit) = &self.jit {
            return jit.set(on).map_err(|e| e.to_string());
        }
        let _ = on;
        Err("this engine has no compiler".into())
    }

    fn compiler_usage(&self) -> Option<rx_core::engine::CompilerUsage> {
        #[cfg(feature = "luajit")]
        if let Some(jit) = &self.jit {
            return jit.usage().ok();
        }
        None
    }

    fn set_memory_limit(&self, bytes: usize) -> Result<(), String> {
        LuaEngine::set_memory_limit(self, bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    /// RX's LuaJIT is built with a fixed PRNG seed (.cargo/config.toml), so two VMs with the
    /// same history order tables with string keys alike.
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
