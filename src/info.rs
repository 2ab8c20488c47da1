//! `INFO rx`, and watching the configuration that decides whether libraries survive.
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

fn write_info(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    let (libraries, functions, memory) = state::with(|s| {
        let r = s.registry.borrow();
        (
            r.library_count(),
            r.function_count(),
            s.engine.used_memory(),
        )
    });
    // Per function, in the style of INFO commandstats (`cmdstat_get:calls=...`).
    let per_function: Vec<(String, String, [u64; 3])> = state::with(|s| {
        s.registry
            .borrow()
            .functions()
            .map(|(_, f)| {
                let st = f.stats.borrow();
                let line = format!(
                    "calls={},errors={},refusals={},usec={},usec_per_call={},max_usec={},p50_usec={},p99_usec={},p999_usec={},redis_calls={}",
                    st.calls,
                    st.errors,
                    st.refusal_count(),
                    st.total_us,
                    st.avg_us(),
                    st.max_us,
                    st.percentile_us(0.5),
                    st.percentile_us(0.99),
                    st.percentile_us(0.999),
                    st.redis_calls
                );
                (format!("fn_{}", f.name), line, [st.calls, st.errors, st.refusal_count()])
            })
            .collect()
    });
    let totals = per_function.iter().fold([0u64; 3], |acc, (_, _, t)| {
        [acc[0] + t[0], acc[1] + t[1], acc[2] + t[2]]
    });
    // SAFETY: ctx is the live info context; field names are NUL-terminated.
    unsafe {
        api!(RedisModule_InfoAddSection)(ctx, c"".as_ptr() as *mut _);
        let add = |name: &std::ffi::CStr, v: i64| {
            api!(RedisModule_InfoAddFieldLongLong)(ctx, name.as_ptr() as *mut _, v);
        };
        add(c"libraries", libraries as i64);
        add(c"functions", functions as i64);
        add(c"vm_memory_bytes", memory as i64);
        add(
            c"aof_rewrite_keeps_libraries",
            AOF_REWRITE_KEEPS_LIBRARIES.load(Ordering::Relaxed) as i64,
        );
        add(c"calls", totals[0] as i64);
        add(c"errors", totals[1] as i64);
        add(c"refusals", totals[2] as i64);
        for (name, line, _) in &per_function {
            let name = crate::ffi::c_string(name.as_bytes());
            let line = crate::ffi::c_string(line.as_bytes());
            api!(RedisModule_InfoAddFieldCString)(
                ctx,
                name.as_ptr() as *mut _,
                line.as_ptr() as *mut _,
            );
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
