//! The VM: building the sandbox every library and script runs in (the prelude, the redis
//! API, the codecs, the hook), and its memory: the cap, collections and their pacing.

use super::*;

impl LuaEngine {
    pub fn new(version: &ServerVersion) -> mlua::Result<LuaEngine> {
        let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::DEBUG;
        #[cfg(feature = "luajit")]
        let libs = libs | StdLib::BIT | StdLib::JIT;
        // SAFETY: `debug` is loaded only so the prelude can capture `debug.getinfo` for the
        // error handler; it is removed from the globals before any user code runs, and user
        // code never sees the real globals table.
        let (lua, state) = new_state(libs)?;
        let globals = lua.globals();
        // The compiler starts off; `rx.jit` turns it on once the module is set up.
        #[cfg(feature = "luajit")]
        lua.load("jit.off() jit.flush()").set_name("=rx").exec()?;
        #[cfg(feature = "luajit")]
        let jit = Some(jit::JitControls::new(&lua, &globals.get::<Table>("jit")?)?);
        #[cfg(not(feature = "luajit"))]
        let jit: Option<jit::JitControls> = None;

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

        // `rx`: RX's own API (native servers have no such global).
        let rx_api = lua.create_table()?;
        // The error tables `rx.fcall` raises (weak keys): the handler passes them on as they
        // are, so an uncaught one ends the caller with the callee's own error reply.
        let fcall_errors = lua.create_table()?;
        let weak_keys = lua.create_table()?;
        weak_keys.raw_set("__mode", "k")?;
        fcall_errors.set_metatable(Some(weak_keys))?;
        lua.set_named_registry_value(api::FCALL_ERRORS, &fcall_errors)?;
        // SAFETY: each is a lua_CFunction written against the C API in `api`.
        unsafe {
            rx_api.raw_set("fcall", lua.create_c_function(api::rx_fcall)?)?;
            rx_api.raw_set("pfcall", lua.create_c_function(api::rx_pfcall)?)?;
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
                rx_api,
                fcall_errors,
                // SAFETY: a lua_CFunction written against the C API in `api`.
                unsafe { lua.create_c_function(api::rx_tick)? },
                // SAFETY: as above.
                unsafe { lua.create_c_function(api::rx_count)? },
            ))?;

        // Nothing dangerous stays reachable, even from the real globals.
        for name in [
            "debug", "jit", "io", "os", "package", "require", "dofile", "loadfile", "print",
            "module", "newproxy", "getfenv", "setfenv",
        ] {
            globals.raw_set(name, Value::Nil)?;
        }
        lua.gc_collect()?;
        // With LuaJIT, no instruction hook: the checks written into every chunk
        // (kill_checks.rs) reach `api::rx_tick`, which enforces the load timeout and lets
        // the host serve other clients, kill or time out a running function, in compiled
        // code as well as in the interpreter (which a hook would slow down on every
        // instruction). Plain Lua 5.1 cannot read the checks' names, and has no compiler:
        // a global hook (so coroutines are interrupted too) asks the same question.
        #[cfg(not(feature = "luajit"))]
        lua.set_global_hook(
            mlua::HookTriggers::new().every_nth_instruction(100_000),
            |_, _| match api::tick() {
                crate::engine::Tick::Continue => Ok(mlua::VmState::Continue),
                crate::engine::Tick::Stop => Err(mlua::Error::runtime("script interrupted")),
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
            pacing: Default::default(),
            env: sandbox.get("env")?,
            eval_env: sandbox.get("eval_env")?,
            begin_load: sandbox.get("begin_load")?,
            finish_load: sandbox.get("finish_load")?,
            run_library_body: sandbox.get("run_library_body")?,
            shape_of: sandbox.get("shape_of")?,
            script_code_of: sandbox.get("script_code_of")?,
            jit,
            lua,
            state,
        })
    }

    pub(crate) fn used_memory(&self) -> usize {
        self.state.memory.used()
    }

    /// A full collection cycle: frees every unreachable object now. The cap is lifted
    /// while it runs: a collection allocates too (LuaJIT resizes its string table), and
    /// one that fails halfway leaves the garbage in place, so a VM at its cap would stay
    /// there and fail every call.
    pub(crate) fn collect_garbage(&self) {
        let limit = self.state.memory.limit();
        self.state.memory.set_limit(0);
        let _ = self.lua.gc_collect();
        self.state.memory.set_limit(limit);
    }

    /// Housekeeping after a call or a library body: a failed allocation does not make
    /// LuaJIT collect, so the garbage of a run that hit the memory cap would keep later runs
    /// failing: collect fully after a run that leaves the VM near its cap. Then pace the
    /// collector from the VM's size.
    pub(crate) fn after_run(&self) {
        // SAFETY: `main` is the VM's main thread; LUA_GCCOUNT only reads the GC's total.
        let in_use = unsafe { ffi::lua_gc(self.main, ffi::LUA_GCCOUNT, 0) }.max(0) as usize * 1024;
        if in_use > self.state.memory.limit() / 2 {
            self.collect_garbage();
        }
        self.pace_collector(in_use);
    }

    /// Caps the VM's memory; allocations past it fail with "not enough memory".
    pub(crate) fn set_memory_limit(&self, bytes: usize) -> mlua::Result<()> {
        self.state.memory.set_limit(bytes);
        MEMORY_CAP.with(|c| c.set(bytes));
        Ok(())
    }

    /// Sets how much garbage may pile up before the next collection cycle starts (see
    /// `pacing`): up to `GC_GARBAGE_ALLOWANCE`, never more than a quarter of the cap.
    pub(crate) fn pace_collector(&self, in_use: usize) {
        let limit = self.state.memory.limit();
        let allowance = GC_GARBAGE_ALLOWANCE.min(limit / 4);
        let change = self.pacing.borrow_mut().observe(in_use, allowance, limit);
        if let Some(pause) = change {
            // SAFETY: `main` is the VM's main thread; SETPAUSE only stores the setting.
            unsafe { ffi::lua_gc(self.main, ffi::LUA_GCSETPAUSE, pause) };
        }
    }
}

/// The VM's state, made with RX's allocator (`vm_memory`), and the mlua handle on it.
///
/// The state is made here rather than by mlua so that LuaJIT allocates through
/// `vm_memory::allocate`; mlua then wraps it as a state it does not own, so the engine
/// closes it (`OwnedState`). Lua's `pcall` stays LuaJIT's own: a Rust panic inside one of
/// the codecs' mlua callbacks becomes an error a script can catch, like any other error.
fn new_state(libs: StdLib) -> mlua::Result<(Lua, OwnedState)> {
    let memory = vm_memory::VmMemory::new(DEFAULT_MEMORY_LIMIT);
    let ud = &*memory as *const vm_memory::VmMemory as *mut std::os::raw::c_void;
    // SAFETY: `allocate` follows lua_Alloc's contract for the `VmMemory` at `ud`, which the
    // returned `OwnedState` keeps alive (boxed, so at a fixed address) until after it
    // closes the state.
    let main = unsafe { ffi::lua_newstate(vm_memory::allocate, ud) };
    if main.is_null() {
        return Err(mlua::Error::MemoryError("cannot create the Lua VM".into()));
    }
    let state = OwnedState { main, memory };
    // SAFETY: `main` is a fresh state with nothing on its stack; the base library opens
    // first, as mlua does for the states it makes.
    unsafe {
        ffi::luaL_requiref(main, c"_G".as_ptr(), ffi::luaopen_base, 1);
        ffi::lua_pop(main, 1);
    }
    // SAFETY: the state is fully made; mlua keeps its own handle in the state's registry,
    // released when `OwnedState` closes the state, after every handle the engine holds.
    let lua = unsafe { Lua::get_or_init_from_ptr(main) }.clone();
    lua.load_std_libs(libs)?;
    Ok((lua, state))
}

/// Closes the VM when the engine goes. It is the engine's last field: fields drop in order,
/// so every mlua handle has gone before the state closes, and the allocator's counter,
/// which closing still uses, goes after.
pub(crate) struct OwnedState {
    main: *mut ffi::lua_State,
    pub(crate) memory: Box<vm_memory::VmMemory>,
}

impl Drop for OwnedState {
    fn drop(&mut self) {
        // SAFETY: `main` was made by `new_state` and is closed once, here; nothing runs in it.
        unsafe { ffi::lua_close(self.main) };
    }
}
