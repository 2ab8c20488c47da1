//! The module glue of cluster sync: local changes become versioned entries, are replicated
//! as `RX.APPLY` and broadcast over the cluster bus; bus messages are received, reassembled
//! and applied; a timer broadcasts this node's state digest every [`PERIOD_MS`] and peers
//! whose digest differs exchange manifests and pull what they lack.
//!
//! Everything runs on Redis's main thread (command, bus receiver and timer callbacks), and
//! each callback is wrapped in `guarded`, so a panic never unwinds into Redis.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::os::raw::c_char;
use std::time::{Duration, Instant};

use redis_module::raw;

use super::meta::{hex, Entry};
use super::peers::Peers;
use super::wire::{self, Change, Message, Reassembler};
use crate::engine::LogLevel;
use crate::ffi::{api, context_flags, guarded, log, Ctx};
use crate::libraries;
use crate::registry::Registry;
use crate::state;
use crate::state::Callable;

/// The module cluster message type RX uses (types are per module).
pub const MSG_TYPE: u8 = 0x52;
/// How often the state digest is broadcast.
pub const PERIOD_MS: i64 = 500;
const NODE_ID_LEN: usize = raw::REDISMODULE_NODE_ID_LEN as usize;
/// At most one log line about dropped messages per this interval.
const LOG_EVERY: Duration = Duration::from_secs(5);

struct Node {
    peers: Peers,
    reassembler: Reassembler,
    next_transfer: u64,
    last_log: Option<Instant>,
    suppressed_logs: u64,
    /// Frames that arrived while a function was running (Redis serves the bus while a
    /// busy script yields) or a dataset was loading: handled by the next timer tick, never
    /// inside the running Lua nor between two libraries of an RDB.
    deferred: Vec<(String, Vec<u8>)>,
    /// `libraries::generation()` when the failures were last looked at.
    seen_generation: u64,
}

/// Deferred frames kept at most; beyond that they are dropped (anti-entropy recovers).
const MAX_DEFERRED: usize = 4096;

thread_local! {
    static NODE: RefCell<Option<Node>> = const { RefCell::new(None) };
}

/// Whether this server runs in cluster mode (set once at module load).
#[inline]
pub fn enabled() -> bool {
    crate::ffi::cluster_mode()
}

fn with_node<R>(f: impl FnOnce(&mut Node) -> R) -> Option<R> {
    NODE.with(|n| {
        n.borrow_mut().as_mut().map(|node| {
            // Entries that failed to apply may fit once the libraries changed (say the
            // library that owned their function name is gone): pull them again.
            let generation = libraries::generation();
            if node.seen_generation != generation {
                node.peers.forget_failures();
                node.seen_generation = generation;
            }
            f(node)
        })
    })
}

/// Starts cluster sync when the server runs with `cluster-enabled yes`.
pub fn init(ctx: Ctx) {
    if context_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_CLUSTER == 0 {
        return;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ ((std::process::id() as u64) << 40);
    NODE.with(|n| {
        *n.borrow_mut() = Some(Node {
            peers: Peers::new(),
            reassembler: Reassembler::new(),
            next_transfer: seed,
            last_log: None,
            suppressed_logs: 0,
            deferred: Vec::new(),
            seen_generation: 0,
        })
    });
    crate::ffi::set_cluster_mode();
    // SAFETY: called from OnLoad with its context; the callbacks are plain extern fns that
    // live as long as the module.
    unsafe {
        api!(RedisModule_RegisterClusterMessageReceiver)(ctx, MSG_TYPE, Some(on_message));
        api!(RedisModule_CreateTimer)(ctx, PERIOD_MS, Some(on_timer), std::ptr::null_mut());
    }
}

// ---------------------------------------------------------------------------
// Local changes

/// Propagates local changes: to replicas and the AOF as one `RX.APPLY` (so they get this
/// node's versions, not versions of their own), and to every cluster node over the bus.
pub fn propagate(ctx: Ctx, changes: &[Change]) {
    if changes.is_empty() {
        return;
    }
    let payload = wire::encode_entries(changes);
    // SAFETY: "b" takes (buffer, length), valid for the call; ctx is a command context.
    unsafe {
        api!(RedisModule_Replicate)(
            ctx,
            c"RX.APPLY".as_ptr(),
            c"b".as_ptr(),
            payload.as_ptr() as *const c_char,
            payload.len(),
        );
    }
    broadcast_changes(ctx, changes);
}

/// Sends changes to every node over the bus (cluster mode only).
pub fn broadcast_changes(ctx: Ctx, changes: &[Change]) {
    if enabled() && !changes.is_empty() {
        send(ctx, None, &Message::Entries(changes.to_vec()));
    }
}

/// Applies changes that won under the rule, one by one (`libraries::apply_change`); from
/// the bus, entries that already failed here are skipped until the libraries change.
/// Returns the changes applied and an error text per change that failed.
pub fn apply(ctx: Ctx, changes: Vec<Change>, from_bus: bool) -> (Vec<Change>, Vec<String>) {
    let mut applied = Vec::new();
    let mut errors = Vec::new();
    for change in changes {
        if !libraries::accepts(&change) {
            continue;
        }
        if from_bus
            && with_node(|n| n.peers.has_failed(&change.name, &change.entry)).unwrap_or(false)
        {
            continue;
        }
        match libraries::apply_change(ctx, &change) {
            Ok(()) => applied.push(change),
            Err(e) => {
                let first =
                    with_node(|n| n.peers.failed(&change.name, change.entry, &e)).unwrap_or(true);
                if first {
                    log(
                        ctx,
                        LogLevel::Warning,
                        format!(
                            "RX: could not apply library '{}' version {} ({}): {e}",
                            change.name,
                            change.entry.version,
                            hex(&change.entry.digest)
                        )
                        .as_bytes(),
                    );
                }
                errors.push(format!("library '{}': {e}", change.name));
            }
        }
    }
    (applied, errors)
}

// ---------------------------------------------------------------------------
// The bus

fn my_id() -> Option<String> {
    // SAFETY: Redis returns a pointer to its own node's 40-byte name, or null.
    unsafe {
        let p = raw::RedisModule_GetMyClusterID.map(|f| f())?;
        if p.is_null() {
            return None;
        }
        let b = std::slice::from_raw_parts(p as *const u8, NODE_ID_LEN);
        Some(String::from_utf8_lossy(b).into_owned())
    }
}

/// Ids of every node in the cluster, this one included.
fn cluster_nodes(ctx: Ctx) -> Vec<String> {
    // SAFETY: the list and each 40-byte id belong to Redis until freed with
    // FreeClusterNodesList, which happens before returning.
    unsafe {
        let (Some(list_fn), Some(free_fn)) = (
            raw::RedisModule_GetClusterNodesList,
            raw::RedisModule_FreeClusterNodesList,
        ) else {
            return Vec::new();
        };
        let mut n = 0usize;
        let ids = list_fn(ctx, &mut n);
        if ids.is_null() {
            return Vec::new();
        }
        let out = (0..n)
            .map(|i| {
                let p = *ids.add(i);
                String::from_utf8_lossy(std::slice::from_raw_parts(p as *const u8, NODE_ID_LEN))
                    .into_owned()
            })
            .collect();
        free_fn(ids);
        out
    }
}

struct NodeInfo {
    address: String,
    role: &'static str,
    failing: bool,
}

fn node_info(ctx: Ctx, id: &str) -> Option<NodeInfo> {
    let mut ip = [0u8; 64];
    let mut master = [0u8; NODE_ID_LEN + 1];
    let mut port: c_int = 0;
    let mut flags: c_int = 0;
    let id_c = crate::ffi::c_string(id.as_bytes());
    // SAFETY: ip has room for NET_IP_STR_LEN (46) bytes plus NUL, master_id for 40; the id
    // is a NUL-terminated 40-character node name.
    let ok = unsafe {
        api!(RedisModule_GetClusterNodeInfo)(
            ctx,
            id_c.as_ptr(),
            ip.as_mut_ptr() as *mut c_char,
            master.as_mut_ptr() as *mut c_char,
            &mut port,
            &mut flags,
        )
    };
    if ok != raw::REDISMODULE_OK as c_int {
        return None;
    }
    let end = ip.iter().position(|&b| b == 0).unwrap_or(ip.len());
    let flags = flags as u32;
    Some(NodeInfo {
        address: format!("{}:{}", String::from_utf8_lossy(&ip[..end]), port),
        role: if flags & raw::REDISMODULE_NODE_MASTER != 0 {
            "master"
        } else if flags & raw::REDISMODULE_NODE_SLAVE != 0 {
            "replica"
        } else {
            "unknown"
        },
        failing: flags & (raw::REDISMODULE_NODE_PFAIL | raw::REDISMODULE_NODE_FAIL) != 0,
    })
}

/// Sends a message to one node, or to all when `target` is `None`, in as many frames as
/// it takes.
fn send(ctx: Ctx, target: Option<&str>, message: &Message) {
    let Some(transfer) = with_node(|n| {
        n.next_transfer = n.next_transfer.wrapping_add(1);
        n.next_transfer
    }) else {
        return;
    };
    let target_c = target.map(|t| crate::ffi::c_string(t.as_bytes()));
    let target_ptr = target_c.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    for frame in wire::frames(transfer, &message.encode()) {
        // SAFETY: the frame buffer and the optional NUL-terminated target id are valid for
        // the call; Redis copies the payload into its own send buffers.
        unsafe {
            api!(RedisModule_SendClusterMessage)(
                ctx,
                target_ptr,
                MSG_TYPE,
                frame.as_ptr() as *const c_char,
                frame.len() as u32,
            );
        }
    }
}

fn log_dropped(ctx: Ctx, sender: &str, why: &str) {
    let now = Instant::now();
    let line = with_node(|n| {
        if n.last_log.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            n.suppressed_logs += 1;
            return None;
        }
        n.last_log = Some(now);
        let suppressed = std::mem::take(&mut n.suppressed_logs);
        Some(format!(
            "RX: dropped a cluster message from {sender}: {why} ({suppressed} more dropped since the last report)"
        ))
    })
    .flatten();
    if let Some(line) = line {
        log(ctx, LogLevel::Warning, line.as_bytes());
    }
}

extern "C" fn on_message(
    ctx: *mut raw::RedisModuleCtx,
    sender_id: *const c_char,
    _kind: u8,
    payload: *const u8,
    len: u32,
) {
    guarded("the cluster message receiver", (), || {
        if sender_id.is_null() || (payload.is_null() && len > 0) {
            return;
        }
        // SAFETY: Redis passes the sender's 40-byte node name and `len` payload bytes, both
        // valid for the duration of this callback.
        let (sender, frame) = unsafe {
            (
                String::from_utf8_lossy(std::slice::from_raw_parts(
                    sender_id as *const u8,
                    NODE_ID_LEN,
                ))
                .into_owned(),
                if len == 0 {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(payload, len as usize)
                },
            )
        };
        let loading = context_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_LOADING != 0;
        if loading || crate::running::current().is_some() {
            with_node(|n| {
                if n.deferred.len() < MAX_DEFERRED {
                    n.deferred.push((sender, frame.to_vec()));
                }
            });
            return;
        }
        take_frame(ctx, &sender, frame);
    });
}

fn take_frame(ctx: Ctx, sender: &str, frame: &[u8]) {
    let now = Instant::now();
    let complete = with_node(|n| n.reassembler.accept(sender, frame, now));
    match complete {
        Some(Ok(Some(bytes))) => match Message::decode(&bytes) {
            Ok(m) => handle(ctx, sender, m, now),
            Err(e) => log_dropped(ctx, sender, &e.to_string()),
        },
        Some(Ok(None)) | None => {}
        Some(Err(e)) => log_dropped(ctx, sender, &e.to_string()),
    }
}

fn handle(ctx: Ctx, sender: &str, message: Message, now: Instant) {
    match message {
        Message::State { digest, count } => {
            let mine = state::with(|s| s.catalog.borrow().state_digest());
            let send_manifest = with_node(|n| {
                n.peers.heard(sender, digest, count, now);
                digest != mine && n.peers.should_send_manifest(sender, now)
            })
            .unwrap_or(false);
            if send_manifest {
                // Our manifest lets the peer pull what it lacks; our state, answered with
                // the peer's manifest, lets us pull what we lack without waiting a period.
                send(ctx, Some(sender), &Message::Manifest(manifest()));
                let count = state::with(|s| s.catalog.borrow().len() as u32);
                send(
                    ctx,
                    Some(sender),
                    &Message::State {
                        digest: mine,
                        count,
                    },
                );
            }
        }
        Message::Manifest(entries) => {
            let wanted: Vec<(String, Entry)> = state::with(|s| {
                s.catalog
                    .borrow()
                    .to_pull(&entries)
                    .into_iter()
                    .cloned()
                    .collect()
            });
            let names = with_node(|n| n.peers.start_pulls(wanted, now)).unwrap_or_default();
            if !names.is_empty() {
                send(ctx, Some(sender), &Message::Pull(names));
            }
        }
        Message::Pull(names) => {
            let changes = current_changes(&names);
            if !changes.is_empty() {
                send(ctx, Some(sender), &Message::Entries(changes));
            }
        }
        Message::Entries(changes) => {
            let _ = apply(ctx, changes, true);
        }
    }
}

pub fn manifest() -> Vec<(String, Entry)> {
    state::with(|s| {
        s.catalog
            .borrow()
            .iter()
            .map(|(n, e)| (n.to_string(), *e))
            .collect()
    })
}

/// What this node holds for `names`, as changes a peer can apply.
fn current_changes(names: &[String]) -> Vec<Change> {
    state::with(|s| {
        let catalog = s.catalog.borrow();
        let registry = s.registry.borrow();
        names
            .iter()
            .filter_map(|name| {
                let mut change = change_of(&registry, name, *catalog.get(name)?)?;
                // The peer's history gets the action and time of the node that made it.
                change.origin = s
                    .history
                    .borrow()
                    .entries(name)
                    .find(|e| e.version == change.entry.version && e.digest == change.entry.digest)
                    .map(|e| e.origin);
                Some(change)
            })
            .collect()
    })
}

/// `name`'s catalog entry as a change (for a peer, or for the RDB): with the code of a
/// live library, without code for a tombstone, and no origin. `None` if the library is
/// missing.
pub fn change_of(registry: &Registry<Callable>, name: &str, entry: Entry) -> Option<Change> {
    let code = if entry.is_tombstone() {
        Vec::new()
    } else {
        registry.library(name)?.code.to_vec()
    };
    Some(Change {
        name: name.to_string(),
        entry,
        code,
        origin: None,
    })
}

extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guarded("the cluster sync timer", (), || {
        let deferred = with_node(|n| std::mem::take(&mut n.deferred)).unwrap_or_default();
        for (sender, frame) in deferred {
            take_frame(ctx, &sender, &frame);
        }
        let (digest, count) = state::with(|s| {
            let c = s.catalog.borrow();
            (c.state_digest(), c.len() as u32)
        });
        send(ctx, None, &Message::State { digest, count });
        let now = Instant::now();
        let members = cluster_nodes(ctx);
        with_node(|n| {
            n.reassembler.expire(now);
            n.peers.tidy(now, &members);
        });
    });
    guarded("re-arming the cluster sync timer", (), || {
        // SAFETY: re-arms this one-shot timer from its own callback, on the main thread.
        unsafe {
            api!(RedisModule_CreateTimer)(ctx, PERIOD_MS, Some(on_timer), std::ptr::null_mut());
        }
    });
}

// ---------------------------------------------------------------------------
// What RX.CLUSTER STATUS shows

/// This node's view of cluster sync (rendered by `RX.CLUSTER STATUS`).
pub struct ClusterStatus {
    pub cluster_enabled: bool,
    pub node_id: Option<String>,
    pub state_digest: String,
    pub libraries: usize,
    pub entries: usize,
    /// Every node that is not failing was heard recently with this node's digest.
    pub in_sync: bool,
    pub period_ms: i64,
    pub nodes: Vec<NodeStatus>,
}

/// One node as this node last heard it.
pub struct NodeStatus {
    pub node_id: String,
    pub address: Option<String>,
    pub role: &'static str,
    pub myself: bool,
    pub state_digest: Option<String>,
    pub entries: Option<u32>,
    /// -1: never heard.
    pub last_heard_ms: i64,
    pub in_sync: bool,
}

/// What this node knows of cluster sync now.
pub fn status(ctx: Ctx) -> ClusterStatus {
    let (digest, entries, live) = state::with(|s| {
        let c = s.catalog.borrow();
        (
            c.state_digest(),
            c.len(),
            s.registry.borrow().library_count(),
        )
    });
    let now = Instant::now();
    let me = if enabled() { my_id() } else { None };
    let ids: Vec<String> = if enabled() {
        cluster_nodes(ctx)
    } else {
        Vec::new()
    };
    let mut failing = Vec::new();
    let nodes: Vec<NodeStatus> = ids
        .iter()
        .map(|id| {
            let myself = me.as_deref() == Some(id.as_str());
            let info = node_info(ctx, id);
            failing.push(info.as_ref().is_some_and(|i| i.failing));
            let (address, role) = match &info {
                Some(i) => (Some(i.address.clone()), i.role),
                None => (None, "unknown"),
            };
            if myself {
                return NodeStatus {
                    node_id: id.clone(),
                    address,
                    role,
                    myself,
                    state_digest: Some(hex(&digest)),
                    entries: Some(entries as u32),
                    last_heard_ms: 0,
                    in_sync: true,
                };
            }
            let peer = with_node(|n| {
                n.peers
                    .get(id)
                    .copied()
                    .map(|p| (p, n.peers.in_sync(id, &digest, now)))
            })
            .flatten();
            NodeStatus {
                node_id: id.clone(),
                address,
                role,
                myself,
                state_digest: peer.map(|(p, _)| hex(&p.digest)),
                entries: peer.map(|(p, _)| p.count),
                last_heard_ms: peer
                    .map_or(-1, |(p, _)| now.duration_since(p.heard).as_millis() as i64),
                in_sync: peer.is_some_and(|(_, s)| s),
            }
        })
        .collect();
    // Failing nodes cannot be expected to answer; everyone else must agree.
    let in_sync = nodes
        .iter()
        .zip(&failing)
        .all(|(n, failing)| n.in_sync || *failing);
    ClusterStatus {
        cluster_enabled: enabled(),
        node_id: me,
        state_digest: hex(&digest),
        libraries: live,
        entries,
        in_sync,
        period_ms: PERIOD_MS,
        nodes,
    }
}
