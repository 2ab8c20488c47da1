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
        write_status(&bus::status(ctx), &mut out);
    } else if args[1].eq_ignore_ascii_case(b"manifest") {
        write_manifest(&mut out);
    } else {
        return Err(RxError::err(format!(
            "unknown subcommand '{}'. Try RX.CLUSTER STATUS or RX.CLUSTER MANIFEST.",
            String::from_utf8_lossy(args[1])
        )));
    }
    Ok(())
}

/// The `RX.CLUSTER STATUS` reply.
fn write_status(status: &bus::ClusterStatus, out: &mut dyn ReplySink) {
    out.map(8);
    out.bulk(b"cluster_enabled");
    out.integer(status.cluster_enabled as i64);
    out.bulk(b"node_id");
    match &status.node_id {
        Some(id) => out.bulk(id.as_bytes()),
        None => out.null(),
    }
    out.bulk(b"state_digest");
    out.bulk(status.state_digest.as_bytes());
    out.bulk(b"libraries");
    out.integer(status.libraries as i64);
    out.bulk(b"entries");
    out.integer(status.entries as i64);
    out.bulk(b"in_sync");
    out.integer(status.in_sync as i64);
    out.bulk(b"period_ms");
    out.integer(status.period_ms);
    out.bulk(b"nodes");
    out.array(status.nodes.len());
    for n in &status.nodes {
        out.map(8);
        out.bulk(b"node_id");
        out.bulk(n.node_id.as_bytes());
        out.bulk(b"address");
        match &n.address {
            Some(a) => out.bulk(a.as_bytes()),
            None => out.null(),
        }
        out.bulk(b"role");
        out.bulk(n.role.as_bytes());
        out.bulk(b"myself");
        out.integer(n.myself as i64);
        out.bulk(b"state_digest");
        match &n.state_digest {
            Some(d) => out.bulk(d.as_bytes()),
            None => out.null(),
        }
        out.bulk(b"entries");
        match n.entries {
            Some(e) => out.integer(e as i64),
            None => out.null(),
        }
        out.bulk(b"last_heard_ms");
        out.integer(n.last_heard_ms);
        out.bulk(b"in_sync");
        out.integer(n.in_sync as i64);
    }
}

/// The `RX.CLUSTER MANIFEST` reply: every entry, tombstones included.
fn write_manifest(out: &mut dyn ReplySink) {
    let entries = bus::manifest();
    out.array(entries.len());
    for (name, e) in entries {
        out.map(4);
        out.bulk(b"library_name");
        out.bulk(name.as_bytes());
        out.bulk(b"version");
        crate::reply::unsigned(out, e.version);
        out.bulk(b"digest");
        out.bulk(crate::cluster::meta::hex(&e.digest).as_bytes());
        out.bulk(b"deleted");
        out.integer(e.is_tombstone() as i64);
    }
}
