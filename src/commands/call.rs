//! RX.CALL and RX.CALL_RO: run a function, mirroring FCALL and FCALL_RO, including the
//! checks Redis makes before a script that may write is allowed to start.

use quanta::Instant;
use std::rc::Rc;

use super::command_callback;
use crate::error::{RxError, RxResult};
use crate::flags::FunctionFlags;
use crate::reply::ErrorObserver;
use crate::running::{self, RunKind, Running};
use crate::server::{api, context_flags, Ctx, ModuleHost, ModuleReply};
use crate::state;
use redis_module::raw;

command_callback!(rx_call_cb, rx_call);
command_callback!(rx_call_ro_cb, rx_call_ro);

/// RX.CALL <function> <numkeys> [key ...] [arg ...]
fn rx_call(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    run(ctx, args, false)
}

/// RX.CALL_RO <function> <numkeys> [key ...] [arg ...]
fn rx_call_ro(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    run(ctx, args, true)
}

/// Parses numkeys the way FCALL does.
pub fn parse_numkeys(raw_numkeys: &[u8], available: usize) -> RxResult<usize> {
    // The common case, a single digit, without going through str parsing.
    if let [d @ b'0'..=b'9'] = raw_numkeys {
        let n = usize::from(d - b'0');
        if n > available {
            return Err(RxError::err(
                "Number of keys can't be greater than number of args",
            ));
        }
        return Ok(n);
    }
    let n: i64 = std::str::from_utf8(raw_numkeys)
        .ok()
        .filter(|s| {
            !(s.starts_with('+') || (s.len() > 1 && s.starts_with('0')) || s.starts_with("-0"))
        })
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RxError::err("Bad number of keys provided"))?;
    if n > available as i64 {
        return Err(RxError::err(
            "Number of keys can't be greater than number of args",
        ));
    }
    if n < 0 {
        return Err(RxError::err("Number of keys can't be negative"));
    }
    Ok(n as usize)
}

/// Answers `COMMAND GETKEYS` and cluster routing: the keys follow numkeys.
pub fn report_keys(ctx: Ctx, args: &[&[u8]]) {
    if args.len() < 3 {
        return;
    }
    if let Ok(n) = parse_numkeys(args[2], args.len() - 3) {
        for pos in 3..3 + n {
            // SAFETY: ctx is a keys-position request context; pos is within argv.
            unsafe { api!(RedisModule_KeyAtPos)(ctx, pos as _) };
        }
    }
}

/// A stale replica that does not serve stale data refuses scripts that are not flagged
/// `allow-stale`, and scripts without a shebang, before they start.
pub fn refuse_on_stale_replica(ctx: Ctx) -> RxResult<()> {
    let state = context_flags(ctx);
    if state & raw::REDISMODULE_CTX_FLAGS_SLAVE != 0
        && state & raw::REDISMODULE_CTX_FLAGS_REPLICA_IS_STALE != 0
        && !crate::gates::serve_stale_data(ctx)
    {
        return Err(RxError::coded(
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        ));
    }
    Ok(())
}

/// What processCommand would refuse for a script with these flags, with its error text.
/// `now` is the call's start (one clock reading serves the whole call).
pub fn refuse_before_running(ctx: Ctx, flags: FunctionFlags, now: Instant) -> RxResult<()> {
    let state = context_flags(ctx);
    let has = |f: u32| state & f != 0;
    if flags.checks_oom() && has(raw::REDISMODULE_CTX_FLAGS_OOM) {
        return Err(RxError::coded(
            "OOM command not allowed when used memory > 'maxmemory'.",
        ));
    }
    if flags.may_write()
        && has(raw::REDISMODULE_CTX_FLAGS_SLAVE)
        && has(raw::REDISMODULE_CTX_FLAGS_READONLY)
    {
        return Err(RxError::coded(
            "READONLY You can't write against a read only replica.",
        ));
    }
    if !flags.contains(FunctionFlags::ALLOW_STALE) {
        refuse_on_stale_replica(ctx)?;
    }
    if flags.may_write() {
        crate::gates::check_write_gates(ctx, now)?;
    }
    if flags.contains(FunctionFlags::NO_CLUSTER) && has(raw::REDISMODULE_CTX_FLAGS_CLUSTER) {
        return Err(RxError::err(
            "Can not run script on cluster, 'no-cluster' flag is set.",
        ));
    }
    Ok(())
}

fn run(ctx: Ctx, args: &[&[u8]], read_only_command: bool) -> RxResult<()> {
    // SAFETY: ctx is the live context of this command.
    if unsafe { api!(RedisModule_IsKeysPositionRequest)(ctx) } != 0 {
        report_keys(ctx, args);
        return Ok(());
    }
    let command = if read_only_command {
        "rx.call_ro"
    } else {
        "rx.call"
    };
    if args.len() < 3 {
        return Err(RxError::wrong_arity(command));
    }
    let (engine, function) = state::with(|s| {
        let f = s.registry.borrow().function(args[1]);
        (Rc::clone(&s.engine), f)
    });
    let function = function.ok_or_else(|| RxError::err("Function not found"))?;
    let refused = |e: RxError| {
        function.stats.borrow_mut().record_refusal(&e.text());
        e
    };
    let started = Instant::now();
    refuse_before_running(ctx, function.flags, started).map_err(refused)?;
    let numkeys = parse_numkeys(args[2], args.len() - 3)?;
    if read_only_command && function.flags.may_write() {
        return Err(refused(RxError::err(
            "Can not execute a script with write flag using *_ro command.",
        )));
    }
    let (keys, argv) = args[3..].split_at(numkeys);
    let host_read_only = read_only_command || !function.flags.may_write();
    // RX cluster: bind the run to its keys' slot (nothing outside a cluster).
    let _slots = crate::cluster::slots::begin(
        ctx,
        args,
        function
            .flags
            .contains(FunctionFlags::ALLOW_CROSS_SLOT_KEYS),
    );
    execute(
        ctx,
        Execution {
            kind: RunKind::Function,
            name: &function.name,
            command: args,
            read_only: host_read_only,
            check_oom: function.flags.checks_oom(),
            started,
        },
        &function.stats,
        |host, reply| engine.call(&function.callable, &function.name, keys, argv, host, reply),
    );
    Ok(())
}

/// How a function or script runs.
pub struct Execution<'a> {
    pub kind: RunKind,
    /// The function name, or the script's SHA1.
    pub name: &'a str,
    /// The whole command, for RX.STATS while it runs.
    pub command: &'a [&'a [u8]],
    /// Write commands are refused inside (no-writes, or a _RO command).
    pub read_only: bool,
    /// Deny-oom commands are refused inside over maxmemory.
    pub check_oom: bool,
    /// When the command started: the run's duration, busy threshold and time limit count
    /// from here.
    pub started: Instant,
}

/// Runs a function or script that passed its checks: marks it running (for RX.KILL,
/// RX.SCRIPT KILL and RX.STATS), gives it a host, replies, and records its statistics.
pub fn execute(
    ctx: Ctx,
    run: Execution<'_>,
    stats: &crate::stats::StatsCell,
    body: impl FnOnce(&ModuleHost<'_>, &mut dyn crate::reply::ReplySink),
) {
    let running = Running::for_call(run.kind, run.name, run.started);
    let marker = running::start(Rc::clone(&running));
    let host = ModuleHost::new(
        ctx,
        run.read_only,
        run.check_oom,
        Rc::clone(&running),
        run.command,
    );
    let mut client = ModuleReply(ctx);
    let mut reply = ErrorObserver::new(&mut client);
    body(&host, &mut reply);
    let took = run.started.elapsed();
    stats
        .borrow_mut()
        .record_call(took, host.redis_calls(), reply.error.as_deref());
    drop(host);
    drop(marker);
    Running::recycle(running);
}

#[cfg(test)]
mod tests {
    use super::parse_numkeys;

    #[test]
    fn numkeys_rules_match_fcall() {
        assert_eq!(parse_numkeys(b"2", 3).unwrap(), 2);
        assert_eq!(parse_numkeys(b"0", 0).unwrap(), 0);
        assert_eq!(
            parse_numkeys(b"-1", 3).unwrap_err().text(),
            "ERR Number of keys can't be negative"
        );
        assert_eq!(
            parse_numkeys(b"4", 3).unwrap_err().text(),
            "ERR Number of keys can't be greater than number of args"
        );
        assert_eq!(
            parse_numkeys(b"x", 3).unwrap_err().text(),
            "ERR Bad number of keys provided"
        );
        assert_eq!(
            parse_numkeys(b"1.5", 3).unwrap_err().text(),
            "ERR Bad number of keys provided"
        );
        assert_eq!(
            parse_numkeys(b"", 3).unwrap_err().text(),
            "ERR Bad number of keys provided"
        );
    }
}
