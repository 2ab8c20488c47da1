//! RX.DUMP, RX.RESTORE and RX.IMPORT: moving libraries between servers, and from native
//! Redis Functions into RX.

use super::{command_callback, reply_ok};
use crate::cluster::bus;
use crate::error::{RxError, RxResult};
use crate::ffi::{call_tree, Ctx, ModuleReply};
use crate::libraries;
use crate::payload;
use crate::registry::RestorePolicy;
use crate::reply::ReplySink;
use crate::resp::Tree;
use crate::state;

command_callback!(rx_dump_cb, rx_dump);
command_callback!(rx_restore_cb, rx_restore);
command_callback!(rx_import_cb, rx_import);

/// RX.DUMP: a payload holding every library.
fn rx_dump(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    if args.len() != 1 {
        return Err(RxError::wrong_arity("rx.dump"));
    }
    let sources: Vec<Vec<u8>> = state::with(|s| {
        s.registry
            .borrow()
            .list(None)
            .map(|l| l.code.to_vec())
            .collect()
    });
    let payload = payload::encode(sources.iter().map(|c| c.as_slice()));
    ModuleReply(ctx).bulk(&payload);
    Ok(())
}

fn parse_policy(arg: Option<&&[u8]>) -> RxResult<RestorePolicy> {
    match arg {
        None => Ok(RestorePolicy::Append),
        Some(p) if p.eq_ignore_ascii_case(b"append") => Ok(RestorePolicy::Append),
        Some(p) if p.eq_ignore_ascii_case(b"replace") => Ok(RestorePolicy::Replace),
        Some(p) if p.eq_ignore_ascii_case(b"flush") => Ok(RestorePolicy::Flush),
        Some(_) => Err(RxError::err(
            "Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
        )),
    }
}

/// RX.RESTORE <payload> [FLUSH|APPEND|REPLACE]
fn rx_restore(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    if args.len() < 2 || args.len() > 3 {
        return Err(RxError::wrong_arity("rx.restore"));
    }
    let policy = parse_policy(args.get(2))?;
    let sources = payload::decode(args[1]).map_err(|e| RxError::err(e.message()))?;
    let changes = libraries::install_batch(ctx, &sources, policy, "RX.RESTORE")?;
    bus::propagate(ctx, &changes);
    reply_ok(ctx);
    Ok(())
}

/// The native libraries' sources, from `FUNCTION LIST WITHCODE`.
fn native_library_sources(ctx: Ctx) -> RxResult<Vec<Vec<u8>>> {
    let tree = call_tree(ctx, c"FUNCTION", &[&b"LIST"[..], b"WITHCODE"]);
    let Some(Tree::List(libraries)) = tree else {
        return Err(RxError::err("could not read the native library list"));
    };
    libraries
        .iter()
        .map(|lib| match lib.field(b"library_code") {
            Some(Tree::Str(code)) => Ok(code.clone()),
            _ => Err(RxError::err("could not read a native library's code")),
        })
        .collect()
}

/// RX.IMPORT [REPLACE]: copies every native Redis Functions library into RX, atomically.
/// Replicated as RX.APPLY of the libraries installed, so replicas and the AOF get exactly
/// the same libraries (and versions) whatever their own native libraries are.
fn rx_import(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    let policy = match args.len() {
        1 => RestorePolicy::Append,
        2 if args[1].eq_ignore_ascii_case(b"replace") => RestorePolicy::Replace,
        2 => {
            return Err(RxError::err(format!(
                "Unknown option given: {}",
                String::from_utf8_lossy(args[1])
            )))
        }
        _ => return Err(RxError::wrong_arity("rx.import")),
    };
    let sources = native_library_sources(ctx)?;
    let refs: Vec<&[u8]> = sources.iter().map(|c| c.as_slice()).collect();
    let changes = libraries::install_batch(ctx, &refs, policy, "RX.IMPORT")?;
    bus::propagate(ctx, &changes);
    ModuleReply(ctx).integer(sources.len() as i64);
    Ok(())
}
