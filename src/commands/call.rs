//! RX.CALL and RX.CALL_RO: run a function, mirroring FCALL and FCALL_RO, including the
//! checks Redis makes before a script that may write is allowed to start.

use quanta::Instant;
use std::rc::Rc;

use super::command_callback;
use crate::engine::Engine;
use crate::error::{RxError, RxResult};
use crate::ffi::{api, Ctx};
use crate::flags::FunctionFlags;
use crate::numkeys::parse_numkeys;
use crate::run::{execute, refuse_before_running, report_keys, Execution};
use crate::running::RunKind;
use crate::state;

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
    execute(
        ctx,
        Execution {
            kind: RunKind::Function,
            name: &function.name,
            command: args,
            read_only: host_read_only,
            check_oom: function.flags.checks_oom(),
            allow_cross_slot: function
                .flags
                .contains(FunctionFlags::ALLOW_CROSS_SLOT_KEYS),
            started,
        },
        &function.stats,
        |host, reply| engine.call(&function.callable, &function.name, keys, argv, host, reply),
    );
    Ok(())
}
