//! Module configs, set with `CONFIG SET rx.<name>` or as module arguments
//! (`--loadmodule librx.so memory-limit-mb 512`). Redis validates the ranges and answers
//! bad values with its own clear errors.

use std::ffi::{c_int, c_longlong, c_void, CStr};
use std::os::raw::c_char;
use std::sync::atomic::{AtomicI64, Ordering};

use redis_module::raw;

use crate::server::{api, Ctx};
use crate::state;

/// The Lua VM's memory cap, in MiB.
pub static MEMORY_LIMIT_MB: AtomicI64 = AtomicI64::new(MEMORY_LIMIT_MB_DEFAULT);
pub const MEMORY_LIMIT_MB_DEFAULT: i64 = 1024;
const MEMORY_LIMIT_MB_MIN: i64 = 1;
const MEMORY_LIMIT_MB_MAX: i64 = 1 << 20;

/// A hard limit past which a function that has not written is stopped without anyone
/// calling RX.KILL. 0 (the default, as in Redis) means no limit.
pub static TIME_LIMIT_MS: AtomicI64 = AtomicI64::new(0);
const TIME_LIMIT_MS_MAX: i64 = 1 << 40;

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
        crate::server::guarded("rx.memory-limit-mb", (), apply_memory_limit);
    }
    raw::REDISMODULE_OK as c_int
}

/// Applies `rx.memory-limit-mb` to the VM.
pub fn apply_memory_limit() {
    let bytes = (MEMORY_LIMIT_MB.load(Ordering::Relaxed) as usize).saturating_mul(1 << 20);
    state::with(|s| {
        let _ = s.engine.set_memory_limit(bytes);
    });
}

pub fn register(ctx: Ctx) -> Result<(), String> {
    let configs: [(&CStr, &AtomicI64, i64, i64, i64); 2] = [
        (
            c"memory-limit-mb",
            &MEMORY_LIMIT_MB,
            MEMORY_LIMIT_MB_DEFAULT,
            MEMORY_LIMIT_MB_MIN,
            MEMORY_LIMIT_MB_MAX,
        ),
        (c"time-limit-ms", &TIME_LIMIT_MS, 0, 0, TIME_LIMIT_MS_MAX),
    ];
    for (name, value, default, min, max) in configs {
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
    // SAFETY: as above; applies values from module arguments and the config file.
    if unsafe { api!(RedisModule_LoadConfigs)(ctx) } != raw::REDISMODULE_OK as c_int {
        return Err("could not load the rx.* configs".into());
    }
    apply_memory_limit();
    Ok(())
}
