//! The call path: running a function or a script with KEYS and ARGV, on the raw Lua
//! API (one protected call per run, arrays recycled when the function's shape allows).

use super::*;

impl LuaEngine {
    /// Keeps a compiled function in the Lua registry for `run`.
    pub(crate) fn callable(&self, f: Function, shape: Option<Shape>) -> mlua::Result<LuaCallable> {
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
    pub(crate) fn shape(&self, callable: &LuaCallable, kind: CallKind) -> Shape {
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
    pub(crate) fn work_out_script_shape(&self, f: &Function) -> mlua::Result<Shape> {
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

    pub(crate) fn work_out_shape(&self, f: &Function) -> mlua::Result<Shape> {
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

    /// The per-call path, written against the raw API: one protected call of `run_frame`
    /// (no closure allocated per call) in which KEYS and ARGV are built, the function runs
    /// under the error handler, and the result goes straight from the stack to `sink`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
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
pub(crate) unsafe extern "C-unwind" fn run_frame(l: *mut ffi::lua_State) -> c_int {
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
    pub(crate) fn new(lua: &Lua) -> mlua::Result<RecycledArray> {
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
