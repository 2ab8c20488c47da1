//! The EVAL family: RX.EVAL, RX.EVALSHA, RX.EVAL_RO, RX.EVALSHA_RO and RX.SCRIPT, mirroring
//! Redis 7.0's EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT.

use quanta::Instant;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use super::{command_callback, reply_ok};
use crate::engine::Engine;
use crate::error::{RxError, RxResult};
use crate::ffi::{api, Ctx, ModuleReply};
use crate::numkeys::parse_numkeys;
use crate::reply::ReplySink;
use crate::run::{execute, refuse_before_running, refuse_on_stale_replica, report_keys, Execution};
use crate::running::{self, RunKind};
use crate::scripts::sha1_hex;
use crate::scripts::{parse_shebang, Script};
use crate::state;
use crate::state::Callable;

command_callback!(rx_eval_cb, rx_eval);
command_callback!(rx_evalsha_cb, rx_evalsha);
command_callback!(rx_eval_ro_cb, rx_eval_ro);
command_callback!(rx_evalsha_ro_cb, rx_evalsha_ro);
command_callback!(rx_script_cb, rx_script);

/// RX.EVAL <script> <numkeys> [key ...] [arg ...]
fn rx_eval(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    run(ctx, args, "rx.eval", false, false)
}

/// RX.EVALSHA <sha1> <numkeys> [key ...] [arg ...]
fn rx_evalsha(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    run(ctx, args, "rx.evalsha", true, false)
}

/// RX.EVAL_RO <script> <numkeys> [key ...] [arg ...]
fn rx_eval_ro(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    run(ctx, args, "rx.eval_ro", false, true)
}

/// RX.EVALSHA_RO <sha1> <numkeys> [key ...] [arg ...]
fn rx_evalsha_ro(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    run(ctx, args, "rx.evalsha_ro", true, true)
}

/// Compiles `body` and adds it to the cache (pinned for SCRIPT LOAD).
fn cache_script(ctx: Ctx, body: &[u8], pinned: bool) -> RxResult<Rc<Script<Callable>>> {
    let _ = ctx;
    let sha = sha1_hex(body);
    if let Some(s) = state::with(|st| st.scripts.borrow_mut().get(sha.as_bytes())) {
        if pinned {
            state::with(|st| st.scripts.borrow_mut().pin(sha.as_bytes()));
        }
        return Ok(s);
    }
    let flags = parse_shebang(body, crate::dialect::current().engine_by_name)
        .map_err(|e| RxError::Reply([&b"ERR "[..], &e].concat()))?;
    let engine = state::with(|st| Rc::clone(&st.engine));
    let callable = engine.compile_script(body).map_err(RxError::coded_bytes)?;
    let limit = crate::config::SCRIPT_CACHE_SIZE.load(Ordering::Relaxed) as usize;
    Ok(state::with(|st| {
        st.scripts.borrow_mut().insert(
            Script {
                sha,
                flags,
                callable,
                stats: Default::default(),
            },
            pinned,
            limit,
        )
    }))
}

fn run(
    ctx: Ctx,
    args: &[&[u8]],
    command: &str,
    by_sha: bool,
    read_only_command: bool,
) -> RxResult<()> {
    // SAFETY: ctx is the live context of this command.
    if unsafe { api!(RedisModule_IsKeysPositionRequest)(ctx) } != 0 {
        report_keys(ctx, args);
        return Ok(());
    }
    if args.len() < 3 {
        return Err(RxError::wrong_arity(command));
    }
    // EVALSHA answers NOSCRIPT at once for a SHA1 of the wrong length (no script can
    // match it), before numkeys is looked at.
    let no_script = || RxError::coded(crate::dialect::current().texts.noscript);
    if by_sha && args[1].len() != 40 {
        return Err(no_script());
    }
    // EVAL checks numkeys first, with the generic integer error.
    let numkeys = parse_numkeys(args[2], args.len() - 3).map_err(|e| {
        if e.text() == "ERR Bad number of keys provided" {
            RxError::err("value is not an integer or out of range")
        } else {
            e
        }
    })?;
    let script = if by_sha {
        state::with(|st| st.scripts.borrow_mut().get(args[1])).ok_or_else(no_script)?
    } else {
        cache_script(ctx, args[1], false)?
    };
    let refused = |e: RxError| {
        script.stats.borrow_mut().record_refusal(&e.text());
        e
    };
    let started = Instant::now();
    // A script without a shebang runs in Redis's compatibility mode: only a stale replica
    // is checked before it starts; each command is checked as it runs.
    let (read_only, check_oom) = match script.flags {
        None => {
            refuse_on_stale_replica(ctx).map_err(refused)?;
            (read_only_command, true)
        }
        Some(flags) => {
            refuse_before_running(ctx, flags, started).map_err(refused)?;
            if read_only_command && flags.may_write() {
                return Err(refused(RxError::err(
                    "Can not execute a script with write flag using *_ro command.",
                )));
            }
            (read_only_command || !flags.may_write(), flags.checks_oom())
        }
    };
    let (keys, argv) = args[3..].split_at(numkeys);
    let engine = state::with(|st| Rc::clone(&st.engine));
    execute(
        ctx,
        Execution {
            kind: RunKind::Script,
            name: &script.sha,
            command: args,
            read_only,
            check_oom,
            // A script without a shebang may cross slots, as in Redis.
            allow_cross_slot: script
                .flags
                .is_none_or(|f| f.contains(crate::flags::FunctionFlags::ALLOW_CROSS_SLOT_KEYS)),
            started,
        },
        &script.stats,
        |host, reply| engine.call_script(&script.callable, &script.sha, keys, argv, host, reply),
    );
    Ok(())
}

/// RX.SCRIPT LOAD <script> | EXISTS <sha1> ... | FLUSH [ASYNC|SYNC] | KILL | HELP
fn rx_script(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    let Some(sub) = args.get(1) else {
        return Err(RxError::wrong_arity("rx.script"));
    };
    let sub_name = String::from_utf8_lossy(sub).to_ascii_lowercase();
    // RX.SCRIPT runs while a script is busy only to kill it, as SCRIPT does in Redis: every
    // other subcommand gets the BUSY error other commands get.
    if sub_name != "kill" {
        if let Some(r) = running::busy() {
            return Err(RxError::coded(format!("BUSY {}", r.busy_message())));
        }
    }
    let arity = |n: usize, exact: bool| {
        if (exact && args.len() != n) || (!exact && args.len() < n) {
            Err(RxError::err(format!(
                "wrong number of arguments for 'rx.script|{sub_name}' command"
            )))
        } else {
            Ok(())
        }
    };
    match sub_name.as_str() {
        "load" => {
            arity(3, true)?;
            let script = cache_script(ctx, args[2], true)?;
            ModuleReply(ctx).bulk(script.sha.as_bytes());
        }
        "exists" => {
            arity(3, false)?;
            let known: Vec<bool> = state::with(|st| {
                let cache = st.scripts.borrow();
                args[2..].iter().map(|sha| cache.contains(sha)).collect()
            });
            let mut out = ModuleReply(ctx);
            out.array(known.len());
            for k in known {
                out.integer(k as i64);
            }
        }
        "flush" => {
            if args.len() > 3 {
                return Err(RxError::err(
                    "RX.SCRIPT FLUSH only support SYNC|ASYNC option",
                ));
            }
            if let Some(mode) = args.get(2) {
                if !mode.eq_ignore_ascii_case(b"sync") && !mode.eq_ignore_ascii_case(b"async") {
                    return Err(RxError::err(
                        "RX.SCRIPT FLUSH only support SYNC|ASYNC option",
                    ));
                }
            }
            state::with(|st| st.scripts.borrow_mut().flush());
            reply_ok(ctx);
        }
        "kill" => {
            arity(2, true)?;
            running::kill(RunKind::Script).map_err(RxError::coded)?;
            reply_ok(ctx);
        }
        "help" => {
            let lines = [
                "RX.SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "EXISTS <sha1> [<sha1> ...]",
                "    Return information about the existence of the scripts in the script cache.",
                "FLUSH [ASYNC|SYNC]",
                "    Flush the Lua scripts cache.",
                "KILL",
                "    Kill the currently executing Lua script.",
                "LOAD <script>",
                "    Load a script into the scripts cache without executing it.",
                "HELP",
                "    Print this help.",
            ];
            let mut out = ModuleReply(ctx);
            out.array(lines.len());
            for l in lines {
                out.simple(l.as_bytes());
            }
        }
        _ => {
            return Err(RxError::err(format!(
                "unknown subcommand '{}'. Try RX.SCRIPT HELP.",
                String::from_utf8_lossy(sub)
            )))
        }
    }
    Ok(())
}
