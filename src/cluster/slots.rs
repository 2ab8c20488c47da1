//! The slot rule for commands a function runs on a cluster node, as Redis 7.0 applies it
//! to scripts: every key a script touches must hash to one slot (the slot of the declared
//! keys, or else of the first key it touches), unless the script has the
//! `allow-cross-slot-keys` flag. Keys this node does not serve are refused by
//! `RedisModule_Call` itself (errno EPERM).
//!
//! Only active on cluster nodes, for a run started by a client (not the master link nor
//! the AOF): elsewhere a run has no scope and its commands are not checked.

use std::cell::Cell;
use std::ffi::c_int;

use redis_module::raw;

use crate::ffi::{api, cluster_mode, context_flags, Ctx};
use crate::host::CallRule;

pub use rx_core::cluster::keyslot::key_slot;

/// Slot tracking for one run: the slot it is bound to (`None`: not bound yet).
pub struct SlotScope {
    slot: Cell<Option<u16>>,
}

/// Starts slot tracking for a function or script run by `command` (`<cmd> <name> <numkeys>
/// [key ...] ...`), on cluster nodes only.
#[inline]
pub fn begin(ctx: Ctx, command: &[&[u8]], allow_cross_slot: bool) -> Option<SlotScope> {
    if allow_cross_slot || !cluster_mode() {
        return None;
    }
    let replayed = raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING;
    if context_flags(ctx) & replayed != 0 {
        return None;
    }
    let numkeys = command
        .get(2)
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let slot = (numkeys > 0)
        .then(|| command.get(3).map(|k| key_slot(k)))
        .flatten();
    Some(SlotScope {
        slot: Cell::new(slot),
    })
}

/// The slot of every key of a command, if it has keys and they share one slot.
fn command_slot(ctx: Ctx, argv: &[&[u8]]) -> Option<u16> {
    // SAFETY: reading a function pointer Redis set at module load (None on servers
    // without the API).
    let get_keys = unsafe { raw::RedisModule_GetCommandKeys }?;
    // SAFETY: the strings are created and freed here with the live ctx; the positions array
    // Redis returns is freed with RedisModule_Free.
    unsafe {
        let mut strings: Vec<*mut raw::RedisModuleString> = argv
            .iter()
            .map(|a| api!(RedisModule_CreateString)(ctx, a.as_ptr().cast(), a.len()))
            .collect();
        let mut num: c_int = 0;
        let positions = get_keys(ctx, strings.as_mut_ptr(), strings.len() as c_int, &mut num);
        let mut slot: Option<u16> = None;
        let mut mixed = false;
        if !positions.is_null() {
            for i in 0..num.max(0) as usize {
                if let Some(key) = argv.get(*positions.add(i) as usize) {
                    let s = key_slot(key);
                    if slot.is_some_and(|prev| prev != s) {
                        mixed = true;
                    }
                    slot = Some(s);
                }
            }
            api!(RedisModule_Free)(positions.cast());
        }
        for s in strings {
            api!(RedisModule_FreeString)(ctx, s);
        }
        if mixed {
            None
        } else {
            slot
        }
    }
}

/// Whether this node serves `key` now: asked with a harmless `EXISTS`, which
/// `RedisModule_Call` refuses with EPERM for a key served elsewhere.
fn serves(ctx: Ctx, key: &[u8]) -> bool {
    // SAFETY: "b" takes (buffer, length), valid for the call; the reply is freed here.
    unsafe {
        let reply = api!(RedisModule_Call)(
            ctx,
            c"EXISTS".as_ptr(),
            c"b".as_ptr(),
            key.as_ptr() as *const std::os::raw::c_char,
            key.len(),
        );
        if reply.is_null() {
            return false;
        }
        api!(RedisModule_FreeCallReply)(reply);
        true
    }
}

pub const NON_LOCAL: &str = "ERR Script attempted to access a non local key in a cluster node";
pub const CROSS_SLOT: &str =
    "ERR Script attempted to access keys that do not hash to the same slot";

impl CallRule for SlotScope {
    /// Before a command runs inside a function: refuses it when its keys leave the run's
    /// slot. Returns the slot to bind the run to once the command has run (`after_call`).
    fn before_call(&self, ctx: Ctx, argv: &[&[u8]]) -> Result<Option<u16>, String> {
        let Some(slot) = command_slot(ctx, argv) else {
            return Ok(None);
        };
        match self.slot.get() {
            None => Ok(Some(slot)),
            Some(bound) if bound == slot => Ok(None),
            Some(_) => {
                // Redis checks locality first: a key served elsewhere is that error.
                let key = argv.iter().skip(1).find(|k| key_slot(k) == slot);
                if key.is_some_and(|k| !serves(ctx, k)) {
                    Err(NON_LOCAL.to_string())
                } else {
                    Err(CROSS_SLOT.to_string())
                }
            }
        }
    }

    fn bind_keys(&self, ctx: Ctx, keys: &[&[u8]]) -> Result<(), String> {
        let Some((first, rest)) = keys.split_first() else {
            return Ok(());
        };
        let slot = key_slot(first);
        if rest.iter().any(|k| key_slot(k) != slot) {
            return Err(CROSS_SLOT.to_string());
        }
        match self.slot.get() {
            Some(bound) if bound == slot => Ok(()),
            // Redis checks locality first: a key served elsewhere is that error.
            _ if !serves(ctx, first) => Err(NON_LOCAL.to_string()),
            Some(_) => Err(CROSS_SLOT.to_string()),
            None => {
                self.slot.set(Some(slot));
                Ok(())
            }
        }
    }

    /// After a command ran (`ran`: Redis accepted it), binds the run to its slot.
    fn after_call(&self, bind: Option<u16>, ran: bool) {
        if let (Some(slot), true, None) = (bind, ran, self.slot.get()) {
            self.slot.set(Some(slot));
        }
    }
}
