//! Command registration and the one trampoline every RX command goes through: it turns
//! arguments into byte slices, catches panics (a panic must never unwind into Redis), and
//! replies with the error a handler returns.

pub mod backup;
pub mod call;
pub mod cluster;
pub mod eval;
pub mod kill;
pub mod library;
pub mod stats;

use std::ffi::{c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::raw;

use crate::engine::LogLevel;
use crate::error::RxError;
use crate::ffi::{api, log, Ctx, ModuleReply};
use crate::reply::ReplySink;

pub type Handler = fn(Ctx, &[&[u8]]) -> Result<(), RxError>;

/// Commands with up to this many arguments are dispatched without allocating.
const INLINE_ARGS: usize = 16;

/// Runs `handler` for one command invocation.
pub fn dispatch(
    ctx: Ctx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: Handler,
) -> c_int {
    let argc = argc.max(0) as usize;
    let arg = |i: usize| -> &[u8] {
        let mut len = 0usize;
        // SAFETY: Redis passes argc valid strings that outlive the command call.
        unsafe {
            let p = api!(RedisModule_StringPtrLen)(*argv.add(i), &mut len);
            std::slice::from_raw_parts(p.cast::<u8>(), len)
        }
    };
    // Most commands are short: their argument list lives on the stack.
    let mut inline: [&[u8]; INLINE_ARGS] = [&[]; INLINE_ARGS];
    let spilled: Vec<&[u8]>;
    let args: &[&[u8]] = if argc <= INLINE_ARGS {
        for (i, slot) in inline[..argc].iter_mut().enumerate() {
            *slot = arg(i);
        }
        &inline[..argc]
    } else {
        spilled = (0..argc).map(arg).collect();
        &spilled
    };
    match catch_unwind(AssertUnwindSafe(|| handler(ctx, args))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => ModuleReply(ctx).error(e.bytes()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log(
                ctx,
                LogLevel::Warning,
                format!("RX internal error (panic): {what}").as_bytes(),
            );
            ModuleReply(ctx).error(b"ERR RX internal error, see the server log");
        }
    }
    raw::REDISMODULE_OK as c_int
}

/// Declares an `extern "C"` command callback that dispatches to `handler`.
macro_rules! command_callback {
    ($cb:ident, $handler:path) => {
        pub extern "C" fn $cb(
            ctx: *mut redis_module::raw::RedisModuleCtx,
            argv: *mut *mut redis_module::raw::RedisModuleString,
            argc: std::ffi::c_int,
        ) -> std::ffi::c_int {
            $crate::commands::dispatch(ctx, argv, argc, $handler)
        }
    };
}
pub(crate) use command_callback;

type Callback =
    extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// Every RX command: name, callback, flags. Key positions of RX.CALL/RX.CALL_RO come from
/// their getkeys callback (`getkeys-api`), so `COMMAND GETKEYS` and cluster routing work.
fn table() -> Vec<(&'static str, Callback, &'static str)> {
    vec![
        ("rx.load", library::rx_load_cb, "write deny-oom deny-script"),
        ("rx.list", library::rx_list_cb, "readonly deny-script"),
        ("rx.delete", library::rx_delete_cb, "write deny-script"),
        ("rx.flush", library::rx_flush_cb, "write deny-script"),
        ("rx.history", library::rx_history_cb, "readonly deny-script"),
        (
            "rx.rollback",
            library::rx_rollback_cb,
            "write deny-oom deny-script",
        ),
        ("rx.dump", backup::rx_dump_cb, "readonly deny-script"),
        (
            "rx.restore",
            backup::rx_restore_cb,
            "write deny-oom deny-script",
        ),
        (
            "rx.import",
            backup::rx_import_cb,
            "write deny-oom deny-script",
        ),
        (
            "rx.apply",
            cluster::rx_apply_cb,
            "write deny-oom deny-script",
        ),
        (
            "rx.cluster",
            cluster::rx_cluster_cb,
            "readonly allow-busy deny-script allow-stale",
        ),
        (
            "rx.kill",
            kill::rx_kill_cb,
            "readonly allow-busy deny-script",
        ),
        (
            "rx.stats",
            stats::rx_stats_cb,
            "readonly allow-busy deny-script",
        ),
        (
            "rx.eval",
            eval::rx_eval_cb,
            "may-replicate deny-script allow-stale getkeys-api no-mandatory-keys",
        ),
        (
            "rx.evalsha",
            eval::rx_evalsha_cb,
            "may-replicate deny-script allow-stale getkeys-api no-mandatory-keys",
        ),
        (
            "rx.eval_ro",
            eval::rx_eval_ro_cb,
            "readonly deny-script allow-stale getkeys-api no-mandatory-keys",
        ),
        (
            "rx.evalsha_ro",
            eval::rx_evalsha_ro_cb,
            "readonly deny-script allow-stale getkeys-api no-mandatory-keys",
        ),
        ("rx.script", eval::rx_script_cb, "deny-script allow-busy"),
        (
            "rx.call",
            call::rx_call_cb,
            "may-replicate deny-script allow-stale getkeys-api no-mandatory-keys",
        ),
        (
            "rx.call_ro",
            call::rx_call_ro_cb,
            "readonly deny-script allow-stale getkeys-api no-mandatory-keys",
        ),
    ]
}

pub fn register_all(ctx: Ctx) -> Result<(), String> {
    for (name, cb, flags) in table() {
        let n = CString::new(name).map_err(|e| e.to_string())?;
        let f = CString::new(flags).map_err(|e| e.to_string())?;
        // SAFETY: called from the module's OnLoad with its context; strings are NUL-terminated.
        let r = unsafe {
            api!(RedisModule_CreateCommand)(ctx, n.as_ptr(), Some(cb), f.as_ptr(), 0, 0, 0)
        };
        if r != raw::REDISMODULE_OK as c_int {
            return Err(format!("could not register {name}"));
        }
    }
    Ok(())
}

/// Replies `+OK`.
pub fn reply_ok(ctx: Ctx) {
    ModuleReply(ctx).simple(b"OK");
}

/// Propagates the running command as-is to replicas and the AOF.
pub fn replicate_verbatim(ctx: Ctx) {
    // SAFETY: ctx is the live context of a command.
    unsafe { api!(RedisModule_ReplicateVerbatim)(ctx) };
}
