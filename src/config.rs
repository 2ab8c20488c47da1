//! Module configs, set with `CONFIG SET rx.<name>` or as module arguments
//! (`--loadmodule librx.so memory-limit-mb 512`). Redis validates the ranges and answers
//! bad values with its own clear errors.

use std::ffi::{c_int, c_longlong, c_void, CStr};
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use redis_module::raw;

use crate::engine::Engine;
use crate::ffi::{api, Ctx};
use crate::state;

/// The Lua VM's memory cap, in MiB.
pub static MEMORY_LIMIT_MB: AtomicI64 = AtomicI64::new(MEMORY_LIMIT_MB_DEFAULT);
pub const MEMORY_LIMIT_MB_DEFAULT: i64 = 1024;
const MEMORY_LIMIT_MB_MIN: i64 = 1;
const MEMORY_LIMIT_MB_MAX: i64 = 1 << 20;

/// How many scripts that arrived through RX.EVAL the cache keeps (least recently used go
/// first); scripts loaded with RX.SCRIPT LOAD are never evicted.
pub static SCRIPT_CACHE_SIZE: AtomicI64 = AtomicI64::new(500);

/// A hard limit past which a function that has not written is stopped without anyone
/// calling RX.KILL. 0 (the default, as in Redis) means no limit.
pub static TIME_LIMIT_MS: AtomicI64 = AtomicI64::new(0);
const TIME_LIMIT_MS_MAX: i64 = 1 << 40;

/// `rx.jit`: LuaJIT compiles hot code to machine code. Scripts stay killable either way
/// (the checks `rx_lua::kill_checks` writes into them).
pub static JIT: AtomicBool = AtomicBool::new(true);

/// Entries of history kept per library; 0 turns history off.
pub static HISTORY_DEPTH: AtomicI64 = AtomicI64::new(crate::history::DEFAULT_DEPTH as i64);

unsafe extern "C" fn get_numeric(_name: *const c_char, privdata: *mut c_void) -> c_longlong {
    // SAFETY: privdata is one of the statics above, registered with this callback.
    (*(privdata as *const AtomicI64)).load(Ordering::Relaxed)
}

unsafe extern "C" fn set_numeric(
    name: *const c_char,
    val: c_longlong,
    privdata: *mut c_void,
    _err: *mut *mut raw::RedisModuleString,
) -> c_int {
    // SAFETY: as above; name is the NUL-terminated config name.
    (*(privdata as *const AtomicI64)).store(val, Ordering::Relaxed);
    if CStr::from_ptr(name).to_bytes() == b"memory-limit-mb" {
        crate::ffi::guarded("rx.memory-limit-mb", (), apply_memory_limit);
    }
    if CStr::from_ptr(name).to_bytes() == b"history-depth" {
        crate::ffi::guarded("rx.history-depth", (), apply_history_depth);
    }
    raw::REDISMODULE_OK as c_int
}

unsafe extern "C" fn get_jit(_name: *const c_char, _privdata: *mut c_void) -> c_int {
    JIT.load(Ordering::Relaxed) as c_int
}

unsafe extern "C" fn set_jit(
    _name: *const c_char,
    val: c_int,
    _privdata: *mut c_void,
    _err: *mut *mut raw::RedisModuleString,
) -> c_int {
    JIT.store(val != 0, Ordering::Relaxed);
    crate::ffi::guarded("rx.jit", (), apply_jit);
    raw::REDISMODULE_OK as c_int
}

/// Applies `rx.jit` to the VM. A config is set between commands (CONFIG SET is refused
/// while a script is busy), so no compiled code is running.
pub fn apply_jit() {
    let on = JIT.load(Ordering::Relaxed);
    // An engine without a compiler (the Lua 5.1 build) stays as it is; INFO says so.
    state::with(|s| {
        let _ = s.engine.set_compiler(on);
    });
}

/// `rx.memory-limit-mb` in bytes.
pub fn memory_limit_bytes() -> usize {
    (MEMORY_LIMIT_MB.load(Ordering::Relaxed) as usize).saturating_mul(1 << 20)
}

/// Applies `rx.memory-limit-mb` to the VM; while a dataset loads, the VM has no cap (what
/// the dataset carries was accepted once and must load back).
pub fn apply_memory_limit() {
    state::with(|s| {
        let bytes = if s.loading_dataset.get() {
            usize::MAX
        } else {
            memory_limit_bytes()
        };
        let _ = s.engine.set_memory_limit(bytes);
    });
}

/// Applies `rx.history-depth`: histories longer than it lose their oldest entries.
pub fn apply_history_depth() {
    let depth = HISTORY_DEPTH.load(Ordering::Relaxed).max(0) as usize;
    state::with(|s| s.history.borrow_mut().set_depth(depth));
}

/// The numeric configs: name, storage, default, min, max.
fn numeric_configs() -> [(&'static CStr, &'static AtomicI64, i64, i64, i64); 4] {
    [
        (
            c"memory-limit-mb",
            &MEMORY_LIMIT_MB,
            MEMORY_LIMIT_MB_DEFAULT,
            MEMORY_LIMIT_MB_MIN,
            MEMORY_LIMIT_MB_MAX,
        ),
        (c"time-limit-ms", &TIME_LIMIT_MS, 0, 0, TIME_LIMIT_MS_MAX),
        (c"script-cache-size", &SCRIPT_CACHE_SIZE, 500, 0, 1_000_000),
        (
            c"history-depth",
            &HISTORY_DEPTH,
            crate::history::DEFAULT_DEPTH as i64,
            0,
            crate::history::MAX_DEPTH as i64,
        ),
    ]
}

/// Module arguments: `<config> <value>` pairs (`memory-limit-mb 512 time-limit-ms 2000`).
/// Returns the value each named config starts from.
pub fn parse_module_args(args: &[Vec<u8>]) -> Result<Vec<(&'static str, i64)>, String> {
    if !args.len().is_multiple_of(2) {
        return Err("module arguments must be <config> <value> pairs".into());
    }
    let known = numeric_configs();
    let mut out = Vec::new();
    for pair in args.chunks(2) {
        let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
        if name == "stdlib" {
            // Handled by `stdlib::Selection::parse`.
            continue;
        }
        if name == "jit" {
            let on = match pair[1].to_ascii_lowercase().as_slice() {
                b"yes" => 1,
                b"no" => 0,
                _ => return Err("module argument 'jit' must be yes or no".into()),
            };
            out.push(("jit", on));
            continue;
        }
        let Some((cname, _, _, min, max)) =
            known.iter().find(|(n, ..)| n.to_bytes() == name.as_bytes())
        else {
            return Err(format!("unknown module argument '{name}'"));
        };
        let value: i64 = std::str::from_utf8(&pair[1])
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|v| (*min..=*max).contains(v))
            .ok_or_else(|| {
                format!("module argument '{name}' must be an integer between {min} and {max}")
            })?;
        out.push((cname.to_str().unwrap_or_default(), value));
    }
    Ok(out)
}

/// Registers the configs; `module_args` (from `parse_module_args`) set their starting
/// values, and the server's own config (`rx.<name>` lines) still overrides them.
pub fn register(ctx: Ctx, module_args: &[(&'static str, i64)]) -> Result<(), String> {
    for (name, value, default, min, max) in numeric_configs() {
        let default = module_args
            .iter()
            .rev()
            .find(|(n, _)| n.as_bytes() == name.to_bytes())
            .map_or(default, |(_, v)| *v);
        // SAFETY: called from OnLoad; the statics live forever.
        let r = unsafe {
            api!(RedisModule_RegisterNumericConfig)(
                ctx,
                name.as_ptr(),
                default,
                raw::REDISMODULE_CONFIG_DEFAULT,
                min,
                max,
                Some(get_numeric),
                Some(set_numeric),
                None,
                value as *const AtomicI64 as *mut c_void,
            )
        };
        if r != raw::REDISMODULE_OK as c_int {
            return Err(format!(
                "could not register config rx.{}",
                name.to_string_lossy()
            ));
        }
    }
    let jit_default = module_args
        .iter()
        .rev()
        .find(|(n, _)| *n == "jit")
        .is_none_or(|(_, v)| *v != 0);
    JIT.store(jit_default, Ordering::Relaxed);
    // SAFETY: called from OnLoad; the callbacks touch the `JIT` static and, through
    // `apply_jit` (guarded), the engine, which is installed before the configs are.
    let r = unsafe {
        api!(RedisModule_RegisterBoolConfig)(
            ctx,
            c"jit".as_ptr(),
            jit_default as c_int,
            raw::REDISMODULE_CONFIG_DEFAULT,
            Some(get_jit),
            Some(set_jit),
            None,
            std::ptr::null_mut(),
        )
    };
    if r != raw::REDISMODULE_OK as c_int {
        return Err("could not register config rx.jit".into());
    }
    // SAFETY: as above; applies values from module arguments and the config file.
    if unsafe { api!(RedisModule_LoadConfigs)(ctx) } != raw::REDISMODULE_OK as c_int {
        return Err("could not load the rx.* configs".into());
    }
    apply_memory_limit();
    apply_history_depth();
    apply_jit();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_module_args;

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn module_args_are_validated_pairs() {
        assert_eq!(parse_module_args(&[]).unwrap(), vec![]);
        assert_eq!(
            parse_module_args(&args(&["TIME-LIMIT-MS", "200", "memory-limit-mb", "512"])).unwrap(),
            vec![("time-limit-ms", 200), ("memory-limit-mb", 512)]
        );
        assert!(parse_module_args(&args(&["time-limit-ms"]))
            .unwrap_err()
            .contains("pairs"));
        assert!(parse_module_args(&args(&["nope", "1"]))
            .unwrap_err()
            .contains("unknown module argument 'nope'"));
        assert!(parse_module_args(&args(&["memory-limit-mb", "0"]))
            .unwrap_err()
            .contains("between 1 and"));
        assert!(parse_module_args(&args(&["time-limit-ms", "x"]))
            .unwrap_err()
            .contains("integer"));
    }
}
