//! Server state that decides whether a script that may write can start: disk errors
//! (MISCONF) and min-replicas (NOREPLICAS); and the busy threshold runs start with.
//! The module API has no flag for these, so they are read from INFO and CONFIG, and cached
//! for a short time so that the cost stays off the per-call path.

use quanta::Instant;
use std::cell::Cell;
use std::time::Duration;

use crate::error::{RxError, RxResult};
use crate::ffi::{call_tree, config_value, Ctx};
use crate::resp::Tree;

/// How long a reading stays fresh. Redis itself only changes these states in its cron.
const FRESH_FOR: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Default)]
struct Reading {
    rdb_error: bool,
    aof_error: bool,
    not_enough_replicas: bool,
    /// Valkey's `extended-redis-compatibility`: its messages then say `Redis`.
    extended_redis_compatibility: bool,
}

thread_local! {
    static CACHE: Cell<Option<(Instant, Reading)>> = const { Cell::new(None) };
}

/// The server's MISCONF text for a failed RDB save, naming the server as it names itself.
fn rdb_error(server: &str) -> String {
    format!("MISCONF {server} is configured to save RDB snapshots, but it's currently unable to persist to disk. Commands that may modify the data set are disabled, because this instance is configured to report errors during writes if RDB snapshotting fails (stop-writes-on-bgsave-error option). Please check the {server} logs for details about the RDB error.")
}

/// Forgets the cached reading (after CONFIG SET, for instance).
pub fn invalidate() {
    CACHE.with(|c| c.set(None));
}

/// `now` is the caller's clock reading: the per-call path reads the clock once.
pub fn check_write_gates(ctx: Ctx, now: Instant) -> RxResult<()> {
    let reading = CACHE.with(|c| match c.get() {
        Some((at, r)) if now.saturating_duration_since(at) < FRESH_FOR => r,
        _ => {
            let r = read(ctx);
            c.set(Some((now, r)));
            r
        }
    });
    if reading.rdb_error {
        let server = crate::dialect::current().server_name(reading.extended_redis_compatibility);
        return Err(RxError::coded(rdb_error(server)));
    }
    if reading.aof_error {
        return Err(RxError::coded(
            "MISCONF Errors writing to the AOF file: see the server log",
        ));
    }
    if reading.not_enough_replicas {
        return Err(RxError::coded(
            "NOREPLICAS Not enough good replicas to write.",
        ));
    }
    Ok(())
}

fn config(ctx: Ctx, name: &str) -> String {
    config_value(ctx, name).unwrap_or_default()
}

fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

fn info(ctx: Ctx, section: &str) -> String {
    match call_tree(ctx, c"INFO", &[section.as_bytes()]) {
        Some(Tree::Str(text)) => String::from_utf8_lossy(&text).into_owned(),
        _ => String::new(),
    }
}

fn read(ctx: Ctx) -> Reading {
    let persistence = info(ctx, "persistence");
    let rdb_error = config(ctx, "stop-writes-on-bgsave-error") == "yes"
        && !config(ctx, "save").trim().is_empty()
        && info_field(&persistence, "rdb_last_bgsave_status").as_deref() == Some("err");
    let aof_error = info_field(&persistence, "aof_enabled").as_deref() == Some("1")
        && info_field(&persistence, "aof_last_write_status").as_deref() == Some("err");
    let min_replicas: i64 = config(ctx, "min-replicas-to-write").parse().unwrap_or(0);
    let max_lag: i64 = config(ctx, "min-replicas-max-lag").parse().unwrap_or(0);
    let not_enough_replicas = if min_replicas > 0 && max_lag > 0 {
        let replication = info(ctx, "replication");
        let is_master = info_field(&replication, "role").as_deref() == Some("master");
        let good: i64 = info_field(&replication, "min_slaves_good_slaves")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        is_master && good < min_replicas
    } else {
        false
    };
    let extended_redis_compatibility = rdb_error
        && crate::dialect::current().server.family == crate::dialect::Family::Valkey
        && config(ctx, "extended-redis-compatibility") == "yes";
    Reading {
        rdb_error,
        aof_error,
        not_enough_replicas,
        extended_redis_compatibility,
    }
}

thread_local! {
    static BUSY_THRESHOLD_MS: Cell<u64> = const { Cell::new(5000) };
}

/// Redis's `busy-reply-threshold` (`lua-time-limit`), re-read whenever configs change.
pub fn busy_threshold_ms() -> u64 {
    BUSY_THRESHOLD_MS.with(|b| b.get())
}

pub fn refresh_busy_threshold(ctx: Ctx) {
    if let Ok(ms) = config(ctx, "busy-reply-threshold").parse::<u64>() {
        BUSY_THRESHOLD_MS.with(|b| b.set(ms));
    }
}
