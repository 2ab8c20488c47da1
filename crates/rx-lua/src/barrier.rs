//! Panics stop at the Lua C functions. A Rust panic that unwound into LuaJIT would be
//! caught there as a foreign exception and deleted, which Rust answers by aborting the
//! process (the server). Lua errors cannot cross a Rust catch either (Rust aborts on a
//! foreign exception), so a C function runs its Rust work under `shield`, with no Lua
//! call that can raise inside, and raises afterwards. What the host does for a script
//! (`redis.call`, the hook, logging) is shielded on the module's side; functions made with
//! mlua (the codecs' entry points) are shielded by mlua. The parsers that push Lua values
//! as they read (a reply into Lua, `cjson.decode`) cannot be: a push can raise "not enough
//! memory" at any point. They are covered by the fuzz campaigns instead.

use std::ffi::{c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua::ffi;

/// The work panicked (the panic hook has logged it).
pub struct Panicked;

/// Runs `f`, which must not raise a Lua error, catching a panic.
pub fn shield<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| Panicked)
}

/// Raises the Lua error a panic in `what` becomes.
/// # Safety
/// A valid state, inside a C function called by Lua.
pub unsafe fn raise_panicked(l: *mut ffi::lua_State, what: &CStr) -> c_int {
    ffi::luaL_error(
        l,
        c"RX internal error (panic) in %s: see the server log".as_ptr(),
        what.as_ptr(),
    )
}
