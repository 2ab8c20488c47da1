//! `INFO rx` (totals, then a line per function and per EVAL script), and watching the
//! configuration that decides whether libraries survive.
//!
//! An AOF rewrite without the RDB preamble writes only commands for keys; module aux data
//! has no place in it, so RX's libraries would be dropped. RX does not hide that: it logs
//! a warning whenever `aof-use-rdb-preamble` is `no` and shows it in INFO.

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};

use redis_module::raw;

use crate::engine::Engine;
use crate::engine::LogLevel;
use crate::ffi::{api, config_value, guarded, log, Ctx};
use crate::state;
use crate::stats::FunctionStats;

static AOF_REWRITE_KEEPS_LIBRARIES: AtomicBool = AtomicBool::new(true);

/// Reads `aof-use-rdb-preamble` and warns when AOF rewrites would drop libraries.
pub fn check_aof_preamble(ctx: Ctx) {
    let keeps = config_value(ctx, "aof-use-rdb-preamble").as_deref() != Some("no");
    let before = AOF_REWRITE_KEEPS_LIBRARIES.swap(keeps, Ordering::Relaxed);
    if !keeps && (before || !INITIALISED.load(Ordering::Relaxed)) {
        log(
            ctx,
            LogLevel::Warning,
            b"RX WARNING: aof-use-rdb-preamble is 'no': an AOF rewrite (BGREWRITEAOF or automatic) will NOT keep RX libraries, and a restart from that AOF will start without them. Set aof-use-rdb-preamble yes (the default) to keep them.",
        );
    }
    INITIALISED.store(true, Ordering::Relaxed);
}

static INITIALISED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_config_change(
    ctx: *mut raw::RedisModuleCtx,
    _e: raw::RedisModuleEvent,
    _sub: u64,
    _data: *mut std::ffi::c_void,
) {
    guarded("the config event", (), || {
        crate::gates::invalidate();
        crate::gates::refresh_busy_threshold(ctx);
        check_aof_preamble(ctx);
    });
}

extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, for_crash_report: c_int) {
    guarded("INFO rx", (), || write_info(ctx, for_crash_report));
}

fn write_info(ctx: *mut raw::RedisModuleInfoCtx, for_crash_report: c_int) {
    // Per function and per cached EVAL script (by SHA1, sorted as RX.STATS lists them), a
    // line in the style of INFO commandstats (`cmdstat_get:calls=...`); the totals are over
    // both.
    // The compiler's state is read through Lua: not in a crash report, nor while a script
    // runs (INFO from a script, or during a busy script's yield). First, so that the VM's
    // memory below counts what reading it allocated.
    let compiler = if for_crash_report == 0 && crate::running::current().is_none() {
        state::with(|s| s.engine.compiler_usage())
    } else {
        None
    };
    let (libraries, functions, memory, entries, history_size) = state::with(|s| {
        let registry = s.registry.borrow();
        let scripts = s.scripts.borrow();
        let mut by_sha: Vec<_> = scripts.scripts().collect();
        by_sha.sort_by(|a, b| a.sha.cmp(&b.sha));
        let mut entries: Vec<Entry> = Vec::with_capacity(registry.function_count() + by_sha.len());
        entries.extend(
            registry
                .functions()
                .map(|(_, f)| Entry::new(format!("fn_{}", f.name), &f.stats.borrow())),
        );
        entries.extend(
            by_sha
                .iter()
                .map(|sc| Entry::new(format!("script_{}", sc.sha), &sc.stats.borrow())),
        );
        (
            registry.library_count(),
            registry.function_count(),
            s.engine.used_memory(),
            entries,
            s.history.borrow().size(),
        )
    });
    let scripts = entries.len() - functions;
    let totals = entries.iter().fold([0u64; 3], |acc, e| {
        [
            acc[0] + e.totals[0],
            acc[1] + e.totals[1],
            acc[2] + e.totals[2],
        ]
    });
    // SAFETY: ctx is the live info context; field names are NUL-terminated.
    unsafe {
        api!(RedisModule_InfoAddSection)(ctx, c"".as_ptr() as *mut _);
        let add = |name: &std::ffi::CStr, v: i64| {
            api!(RedisModule_InfoAddFieldLongLong)(ctx, name.as_ptr() as *mut _, v);
        };
        add(c"libraries", libraries as i64);
        add(c"functions", functions as i64);
        add(c"scripts", scripts as i64);
        add(c"vm_memory_bytes", memory as i64);
        if let Some(c) = compiler {
            add(c"jit", c.on as i64);
            add(c"jit_traces", c.traces as i64);
            add(c"jit_machine_code_bytes", c.machine_code_bytes as i64);
            add(c"jit_machine_code_limit_bytes", c.machine_code_limit as i64);
        }
        add(c"history_entries", history_size.0 as i64);
        add(c"history_code_bytes", history_size.1 as i64);
        add(
            c"aof_rewrite_keeps_libraries",
            AOF_REWRITE_KEEPS_LIBRARIES.load(Ordering::Relaxed) as i64,
        );
        add(c"calls", totals[0] as i64);
        add(c"errors", totals[1] as i64);
        add(c"refusals", totals[2] as i64);
        for e in &entries {
            let name = crate::ffi::c_string(e.name.as_bytes());
            let line = crate::ffi::c_string(e.line.as_bytes());
            api!(RedisModule_InfoAddFieldCString)(
                ctx,
                name.as_ptr() as *mut _,
                line.as_ptr() as *mut _,
            );
        }
    }
}

/// One function's or script's line of INFO rx.
struct Entry {
    /// `fn_<name>` or `script_<sha1>` (Redis prefixes `rx_`).
    name: String,
    line: String,
    /// Calls, errors and refusals, for the totals.
    totals: [u64; 3],
}

impl Entry {
    fn new(name: String, st: &FunctionStats) -> Entry {
        Entry {
            name,
            line: st.info_line(),
            totals: [st.calls, st.errors, st.refusal_count()],
        }
    }
}

pub fn register(ctx: Ctx) {
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_CONFIG,
        dataver: 1,
    };
    // SAFETY: called from OnLoad with its context; the callbacks are plain extern fns.
    unsafe {
        api!(RedisModule_RegisterInfoFunc)(ctx, Some(info));
        api!(RedisModule_SubscribeToServerEvent)(ctx, event, Some(on_config_change));
    }
    check_aof_preamble(ctx);
    crate::gates::refresh_busy_threshold(ctx);
}
