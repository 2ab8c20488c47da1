//! RX.APPLY (versioned library changes, as replicated and written to the AOF) and
//! RX.CLUSTER STATUS|MANIFEST (what cluster sync sees).

use super::{command_callback, replicate_verbatim};
use crate::cluster::{bus, wire};
use crate::error::{RxError, RxResult};
use crate::ffi::{Ctx, ModuleReply};
use crate::reply::ReplySink;

command_callback!(rx_apply_cb, rx_apply);
command_callback!(rx_cluster_cb, rx_cluster);

/// RX.APPLY <payload>: applies each change that wins under the version rule and ignores
/// the others, so applying the same payload twice, or after the same change arrived over
/// the cluster bus, changes nothing. Replies with how many changes were applied. Accepted
/// only from the master link and AOF replay.
fn rx_apply(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    if args.len() != 2 {
        return Err(RxError::wrong_arity("rx.apply"));
    }
    // It rewrites versions, history included: only what a master or this server's own AOF
    // carries may do that, never a client.
    if !crate::ffi::replayed(ctx) {
        return Err(RxError::err(
            "RX.APPLY is internal: RX takes it only from its master's replication stream or its AOF",
        ));
    }
    let changes = wire::decode_entries(args[1])
        .map_err(|e| RxError::err(format!("RX.APPLY payload refused: {e}")))?;
    let (applied, errors) = bus::apply(ctx, changes, false);
    replicate_verbatim(ctx);
    // Changes that come from our master or the AOF reach the other nodes on their own.
    if !crate::ffi::replayed(ctx) {
        bus::broadcast_changes(ctx, &applied);
    }
    if let Some(first) = errors.first() {
        return Err(RxError::err(format!("RX.APPLY: {first}")));
    }
    ModuleReply(ctx).integer(applied.len() as i64);
    Ok(())
}

/// RX.CLUSTER STATUS | MANIFEST
fn rx_cluster(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    if args.len() != 2 {
        return Err(RxError::wrong_arity("rx.cluster"));
    }
    let mut out = ModuleReply(ctx);
    if args[1].eq_ignore_ascii_case(b"status") {
        bus::write_status(ctx, &mut out);
    } else if args[1].eq_ignore_ascii_case(b"manifest") {
        bus::write_manifest(&mut out);
    } else {
        return Err(RxError::err(format!(
            "unknown subcommand '{}'. Try RX.CLUSTER STATUS or RX.CLUSTER MANIFEST.",
            String::from_utf8_lossy(args[1])
        )));
    }
    Ok(())
}
