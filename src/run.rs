//! The run context shared by functions and scripts (the counterpart of Redis's
//! `script.c`): what the server refuses before a run starts, where its keys are, and the
//! run itself (marked running for kills and RX.STATS, given a host with its limits and
//! slot rule, replied to and recorded).

use quanta::Instant;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use redis_module::raw;

use crate::engine::Engine;
use crate::error::{RxError, RxResult};
use crate::ffi::{api, context_flags, Ctx, ModuleReply};
use crate::flags::FunctionFlags;
use crate::host::{CallRule, ModuleHost, NestedFunctions, RunLimits};
use crate::numkeys::parse_numkeys;
use crate::reply::{ErrorObserver, RespWriter};
use crate::running::{self, RunKind, Running};

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
    refuse_on_stale_replica_in(ctx, context_flags(ctx))
}

/// `refuse_on_stale_replica` with the context flags already read.
fn refuse_on_stale_replica_in(ctx: Ctx, state: u32) -> RxResult<()> {
    if state & raw::REDISMODULE_CTX_FLAGS_SLAVE != 0
        && state & raw::REDISMODULE_CTX_FLAGS_REPLICA_IS_STALE != 0
        && !crate::ffi::serves_stale_data(ctx)
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
        refuse_on_stale_replica_in(ctx, state)?;
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

/// `rx.fcall`: a function of any library, run inside the current run as if a client had
/// sent `RX.CALL` for it (the host keeps the caller's checks, limits and slot).
struct Nested;

static NESTED: Nested = Nested;

impl NestedFunctions for Nested {
    fn run(
        &self,
        host: &ModuleHost<'_>,
        name: &[u8],
        keys: &[&[u8]],
        args: &[&[u8]],
        resp3: bool,
    ) -> Result<Vec<u8>, String> {
        let (function, engine) =
            crate::state::with(|s| (s.registry.borrow().function(name), Rc::clone(&s.engine)));
        let Some(f) = function else {
            return Err(RxError::err("Function not found").text().into_owned());
        };
        let now = Instant::now();
        let refused = if host.read_only() && f.flags.may_write() {
            Err(RxError::err(format!(
                "rx.fcall: function '{}' may write (it is not flagged 'no-writes'), and it was called from a run that may not write",
                f.name
            )))
        } else {
            refuse_before_running(host.ctx(), f.flags, now)
        };
        if let Err(e) = refused {
            f.stats.borrow_mut().record_refusal(&e.text());
            return Err(e.text().into_owned());
        }
        host.bind_keys(keys)?;
        let redis_calls = host.redis_calls();
        let mut writer = RespWriter {
            out: Vec::new(),
            resp: if resp3 { 3 } else { 2 },
        };
        let mut reply = ErrorObserver::new(&mut writer);
        engine.call(&f.callable, &f.name, keys, args, host, &mut reply);
        let error = reply.error.take();
        let mut stats = f.stats.borrow_mut();
        stats.record_call(
            now.elapsed(),
            host.redis_calls() - redis_calls,
            error.as_deref(),
        );
        stats.nested_calls += 1;
        drop(stats);
        Ok(writer.out)
    }
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
    /// Its commands may touch keys of several slots (on a cluster node).
    pub allow_cross_slot: bool,
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
    // RX cluster: bind the run to its keys' slot (nothing outside a cluster).
    let slots = crate::cluster::slots::begin(ctx, run.command, run.allow_cross_slot);
    let limits = RunLimits {
        time_limit_ms: crate::config::TIME_LIMIT_MS.load(Ordering::Relaxed),
        busy_threshold_ms: crate::gates::busy_threshold_ms(),
    };
    let host = ModuleHost::new(
        ctx,
        run.read_only,
        run.check_oom,
        Rc::clone(&running),
        run.command,
        limits,
        slots.as_ref().map(|s| s as &dyn CallRule),
    )
    .with_nested(&NESTED);
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
