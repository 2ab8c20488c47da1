//! LuaJIT's compiler: on or off at run time (`rx.jit`), and what it holds, for INFO.
//!
//! Compiled code cannot be interrupted by a hook; the checks `kill_checks` writes into
//! every chunk keep scripts killable with the compiler on, so it can be.

use mlua::{Function, Lua, Table, Value};

/// The most machine code LuaJIT keeps, in KiB (its `maxmcode`): past it, it flushes every
/// trace and starts over, so memory for compiled code stays bounded.
const MAX_MACHINE_CODE_KIB: u64 = 2048;
/// The most traces LuaJIT keeps (its `maxtrace`).
const MAX_TRACES: i64 = 1000;

/// The `jit` library's functions RX uses, kept from before the sandbox hides `jit`.
pub(crate) struct JitControls {
    on: Function,
    off: Function,
    flush: Function,
    status: Function,
    traceinfo: Function,
    tracemc: Function,
}

impl JitControls {
    /// Takes what RX needs from the `jit` table and `jit.util`, and fixes the limits.
    pub(crate) fn new(lua: &Lua, jit: &Table) -> mlua::Result<JitControls> {
        let util: Table = lua
            .load("return (debug.getregistry()._PRELOAD['jit.util'])()")
            .set_name("=rx")
            .eval()?;
        let opt: Table = lua
            .load("return (debug.getregistry()._PRELOAD['jit.opt'] or function() return nil end)() or jit.opt")
            .set_name("=rx")
            .eval()?;
        let start: Function = opt.get("start")?;
        start.call::<()>((
            format!("maxmcode={MAX_MACHINE_CODE_KIB}"),
            format!("maxtrace={MAX_TRACES}"),
        ))?;
        Ok(JitControls {
            on: jit.get("on")?,
            off: jit.get("off")?,
            flush: jit.get("flush")?,
            status: jit.get("status")?,
            traceinfo: util.get("traceinfo")?,
            tracemc: util.get("tracemc")?,
        })
    }

    pub(crate) fn set(&self, on: bool) -> mlua::Result<()> {
        if on {
            self.on.call::<()>(())
        } else {
            self.off.call::<()>(())?;
            self.flush.call::<()>(())
        }
    }

    pub(crate) fn usage(&self) -> mlua::Result<rx_core::engine::CompilerUsage> {
        let on: bool = self
            .status
            .call::<mlua::MultiValue>(())?
            .into_iter()
            .next()
            .is_some_and(|v| matches!(v, Value::Boolean(true)));
        let mut traces = 0;
        let mut machine_code_bytes = 0;
        for trace in 1..=MAX_TRACES {
            if matches!(self.traceinfo.call::<Value>(trace)?, Value::Nil) {
                continue;
            }
            traces += 1;
            if let Value::String(code) = self.tracemc.call::<Value>(trace)? {
                machine_code_bytes += code.as_bytes().len() as u64;
            }
        }
        Ok(rx_core::engine::CompilerUsage {
            on,
            traces,
            machine_code_bytes,
            machine_code_limit: MAX_MACHINE_CODE_KIB * 1024,
        })
    }
}
