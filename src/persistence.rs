//! Libraries in the RDB, as module aux data, and the reset when a dataset that replaces the
//! current one starts loading.
//!
//! Only the source of each library is saved, with its version and digest; loading replays
//! it through the same path as `RX.LOAD`, so whatever a library carries is rebuilt exactly
//! as it was loaded.
//! - Encoding 2 (written): count (unsigned), then per library name seen: name (string
//!   buffer), version (unsigned), digest (string buffer, 20 bytes; all zeros for a deleted
//!   library, a tombstone), code (string buffer, empty for a tombstone).
//! - Encoding 1 (still read): count (unsigned), then each library's code (string buffer).
//!   Such libraries get version 1 ([`LEGACY_VERSION`]), as if loaded once.

use std::ffi::c_int;
use std::os::raw::c_char;

use redis_module::native_types::RedisType;
use redis_module::raw;

use crate::cluster::bus::change_of;
use crate::cluster::meta::{Entry, DIGEST_LEN, LEGACY_VERSION};
use crate::cluster::wire::Change;
use crate::engine::Engine;
use crate::engine::LogLevel;
use crate::ffi::{api, guarded, log};
use crate::libraries::record_exact;
use crate::libraries::{load_library, set_aside};
use crate::state;

/// Redis requires exactly nine characters.
const TYPE_NAME: &str = "rxlibrary";
/// The aux encoding this RX writes; a newer one is refused rather than half-read.
pub const ENCODING_VERSION: i32 = 3;

pub static LIBRARY_TYPE: RedisType = RedisType::new(
    TYPE_NAME,
    ENCODING_VERSION,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: None,
        rdb_save: None,
        aof_rewrite: None,
        mem_usage: None,
        digest: None,
        free: None,
        aux_load: Some(aux_load),
        // Redis 7.0 calls aux_save; 7.2+ prefers aux_save2, which writes nothing when there
        // is nothing to save, so such an RDB loads even without the module.
        aux_save: Some(aux_save),
        aux_save2: Some(aux_save2),
        aux_save_triggers: raw::REDISMODULE_AUX_BEFORE_RDB as c_int,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: None,
        copy2: None,
    },
);

/// Every catalog entry, with the code of live libraries: what the RDB carries.
fn saved_entries() -> Vec<Change> {
    state::with(|s| {
        let registry = s.registry.borrow();
        let catalog = s.catalog.borrow();
        let mut out: Vec<Change> = catalog
            .iter()
            .filter_map(|(name, entry)| change_of(&registry, name, *entry))
            .collect();
        // A live library without an entry cannot happen; save it rather than lose it.
        for lib in registry.list(None) {
            if catalog.get(&lib.name).is_none() {
                out.push(Change {
                    name: lib.name.to_string(),
                    entry: Entry::live(LEGACY_VERSION, &lib.code),
                    code: lib.code.to_vec(),
                    origin: None,
                });
            }
        }
        out
    })
}

fn save(rdb: *mut raw::RedisModuleIO, entries: &[Change]) {
    let buffer = |b: &[u8]| {
        // SAFETY: rdb is the live IO handle Redis passed to the aux callback; b is valid.
        unsafe { api!(RedisModule_SaveStringBuffer)(rdb, b.as_ptr() as *const c_char, b.len()) }
    };
    // SAFETY: as above.
    unsafe { api!(RedisModule_SaveUnsigned)(rdb, entries.len() as u64) };
    for e in entries {
        buffer(e.name.as_bytes());
        // SAFETY: as above.
        unsafe { api!(RedisModule_SaveUnsigned)(rdb, e.entry.version) };
        buffer(&e.entry.digest);
        buffer(&e.code);
    }
    // Encoding 3: the library history, one string.
    buffer(&state::with(|s| {
        crate::history::encode(&s.history.borrow())
    }));
}

extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, when: c_int) {
    if when != raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
        return;
    }
    guarded("aux_save", (), || save(rdb, &saved_entries()));
}

extern "C" fn aux_save2(rdb: *mut raw::RedisModuleIO, when: c_int) {
    if when != raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
        return;
    }
    guarded("aux_save2", (), || {
        let entries = saved_entries();
        if !entries.is_empty() {
            save(rdb, &entries);
        }
    });
}

extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, encver: c_int, when: c_int) -> c_int {
    let failed = raw::REDISMODULE_ERR as c_int;
    if when != raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
        return raw::REDISMODULE_OK as c_int;
    }
    if encver > ENCODING_VERSION {
        log(
            std::ptr::null_mut(),
            LogLevel::Warning,
            format!(
                "RX: the RDB holds RX libraries in encoding {encver}, newer than this RX reads ({ENCODING_VERSION}); refusing to load them"
            )
            .as_bytes(),
        );
        return failed;
    }
    let result = std::panic::catch_unwind(|| {
        let entries = if encver == 1 {
            read_sources(rdb)?
                .into_iter()
                .map(|code| (None, Entry::live(LEGACY_VERSION, &code), code))
                .collect()
        } else {
            read_entries(rdb)?
        };
        let mut collector = LoadCollector::new();
        let loaded_names: Vec<String> = entries.iter().filter_map(|(n, ..)| n.clone()).collect();
        for (name, entry, code) in entries {
            if entry.is_tombstone() {
                // A deletion newer than what is here deletes: the registry may hold the
                // library (a bundled one loaded with the module, before the startup
                // dataset; or, in a merge, one loaded since the save).
                if let Some(name) = name {
                    let change = Change {
                        name,
                        entry,
                        code: Vec::new(),
                        origin: None,
                    };
                    if crate::libraries::accepts(&change) {
                        let _ = crate::libraries::apply_change(std::ptr::null_mut(), &change);
                    }
                }
                continue;
            }
            let name = name.or_else(|| crate::header::parse_header(&code).ok().map(|h| h.name));
            // The registry was reset when loading started, unless the dataset merges into
            // the current one; REPLACE covers both that and an RDB carrying a library twice.
            match load_library(std::ptr::null_mut(), &code, true, "RX.LOAD") {
                Ok(loaded) => record_exact(&loaded, entry),
                // It was accepted once: keep it whatever happens, with the keys and every
                // other library.
                Err(e) => match name {
                    Some(name) => {
                        set_aside(std::ptr::null_mut(), &name, &code, &e.text(), "the RDB");
                        record_exact(&name, entry);
                    }
                    None => log(
                        std::ptr::null_mut(),
                        LogLevel::Warning,
                        format!(
                            "RX: the RDB holds a library without a valid header, dropped: {}",
                            e.text()
                        )
                        .as_bytes(),
                    ),
                },
            }
            collector.after_library();
        }
        if encver >= 3 {
            // The RDB's history is the history of every library it carries, tombstones
            // included: what applying its deletions recorded above is replaced, and a
            // library without entries in it has none.
            let mut libraries: std::collections::BTreeMap<_, _> =
                crate::history::decode(&read_buffer(rdb)?)
                    .map_err(|e| format!("RX: {e} in the RDB"))?
                    .into_iter()
                    .collect();
            state::with(|s| {
                let mut history = s.history.borrow_mut();
                for name in &loaded_names {
                    history.set_entries(name, libraries.remove(name).unwrap_or_default());
                }
                for (name, entries) in libraries {
                    history.set_entries(&name, entries);
                }
            });
        }
        Ok::<(), String>(())
    });
    match result {
        Ok(Ok(())) => raw::REDISMODULE_OK as c_int,
        Ok(Err(msg)) => {
            log(std::ptr::null_mut(), LogLevel::Warning, msg.as_bytes());
            failed
        }
        Err(_) => {
            log(
                std::ptr::null_mut(),
                LogLevel::Warning,
                b"RX: internal error while loading libraries from the RDB",
            );
            failed
        }
    }
}

/// Collects the VM's garbage between the libraries of a dataset, each time it has grown by
/// a quarter of `rx.memory-limit-mb` (at least 16 MiB): library bodies may leave garbage,
/// and while loading the VM has no cap to make it collect.
struct LoadCollector {
    engine: std::rc::Rc<crate::state::ActiveEngine>,
    last: usize,
    step: usize,
}

impl LoadCollector {
    fn new() -> LoadCollector {
        let engine = state::with(|s| std::rc::Rc::clone(&s.engine));
        LoadCollector {
            last: engine.used_memory(),
            step: (crate::config::memory_limit_bytes() / 4).max(16 << 20),
            engine,
        }
    }

    fn after_library(&mut self) {
        if self.engine.used_memory() > self.last.saturating_add(self.step) {
            self.engine.collect_garbage();
            self.last = self.engine.used_memory();
        }
    }
}

fn read_sources(rdb: *mut raw::RedisModuleIO) -> Result<Vec<Vec<u8>>, String> {
    // SAFETY: rdb is the live IO handle; every buffer Redis returns is copied and freed.
    unsafe {
        let io_error = || api!(RedisModule_IsIOError)(rdb) != 0;
        let count = api!(RedisModule_LoadUnsigned)(rdb);
        if io_error() {
            return Err("RX: could not read the library count from the RDB".into());
        }
        let mut out = Vec::new();
        for _ in 0..count {
            let mut len = 0usize;
            let p = api!(RedisModule_LoadStringBuffer)(rdb, &mut len);
            if io_error() || p.is_null() {
                return Err("RX: truncated library data in the RDB".into());
            }
            out.push(std::slice::from_raw_parts(p as *const u8, len).to_vec());
            api!(RedisModule_Free)(p.cast());
        }
        Ok(out)
    }
}

type LoadedEntry = (Option<String>, Entry, Vec<u8>);

fn read_buffer(rdb: *mut raw::RedisModuleIO) -> Result<Vec<u8>, String> {
    // SAFETY: rdb is the live IO handle; the buffer Redis returns is copied and freed.
    unsafe {
        let mut len = 0usize;
        let p = api!(RedisModule_LoadStringBuffer)(rdb, &mut len);
        if api!(RedisModule_IsIOError)(rdb) != 0 || p.is_null() {
            return Err("RX: truncated library history in the RDB".into());
        }
        let v = std::slice::from_raw_parts(p as *const u8, len).to_vec();
        api!(RedisModule_Free)(p.cast());
        Ok(v)
    }
}

/// Encoding 2: every entry, tombstones included.
fn read_entries(rdb: *mut raw::RedisModuleIO) -> Result<Vec<LoadedEntry>, String> {
    let truncated = || "RX: truncated library data in the RDB".to_string();
    // SAFETY: rdb is the live IO handle; every buffer Redis returns is copied and freed.
    unsafe {
        let io_error = || api!(RedisModule_IsIOError)(rdb) != 0;
        let buffer = || -> Result<Vec<u8>, String> {
            let mut len = 0usize;
            let p = api!(RedisModule_LoadStringBuffer)(rdb, &mut len);
            if io_error() || p.is_null() {
                return Err(truncated());
            }
            let v = std::slice::from_raw_parts(p as *const u8, len).to_vec();
            api!(RedisModule_Free)(p.cast());
            Ok(v)
        };
        let count = api!(RedisModule_LoadUnsigned)(rdb);
        if io_error() {
            return Err("RX: could not read the library count from the RDB".into());
        }
        let mut out = Vec::new();
        for _ in 0..count {
            let name = String::from_utf8(buffer()?).map_err(|_| truncated())?;
            let version = api!(RedisModule_LoadUnsigned)(rdb);
            if io_error() {
                return Err(truncated());
            }
            let digest: [u8; DIGEST_LEN] = buffer()?.try_into().map_err(|_| truncated())?;
            let code = buffer()?;
            out.push((Some(name), Entry { version, digest }, code));
        }
        Ok(out)
    }
}

thread_local! {
    /// `total_commands_processed` when the whole dataset was last emptied (a FLUSHDB event
    /// for every database), if it was.
    static EMPTIED_AT_COMMAND: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// The server's `total_commands_processed`, which moves only when a command ends: two
/// readings inside one command are equal.
fn commands_processed(ctx: *mut raw::RedisModuleCtx) -> Option<u64> {
    // SAFETY: ctx is the event's live context; the info object is freed before returning.
    unsafe {
        let info = api!(RedisModule_GetServerInfo)(ctx, c"stats".as_ptr());
        if info.is_null() {
            return None;
        }
        let mut err: c_int = 0;
        let n = api!(RedisModule_ServerInfoGetFieldUnsigned)(
            info,
            c"total_commands_processed".as_ptr(),
            &mut err,
        );
        api!(RedisModule_FreeServerInfo)(ctx, info);
        (err == raw::REDISMODULE_OK as c_int).then_some(n)
    }
}

/// Notes when the whole dataset is emptied. Redis drops its functions only then (FLUSHALL
/// fires the same event but keeps them, which the loading rule below allows for).
extern "C" fn on_flush(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut std::ffi::c_void,
) {
    if subevent != raw::REDISMODULE_SUBEVENT_FLUSHDB_START || data.is_null() {
        return;
    }
    guarded("the flush event", (), || {
        // SAFETY: for FLUSHDB events Redis passes a RedisModuleFlushInfo, valid for the call.
        let dbnum = unsafe { (*data.cast::<raw::RedisModuleFlushInfoV1>()).dbnum };
        if dbnum == -1 {
            EMPTIED_AT_COMMAND.with(|e| e.set(commands_processed(ctx)));
        }
    });
}

/// Whether a dataset that starts loading replaces the libraries rather than adding to them.
/// A replication stream always replaces everything. An RDB or AOF replaces them when the
/// same command emptied the whole dataset first (`DEBUG RELOAD`, `DEBUG LOADAOF`; at
/// startup there is nothing to replace);
/// `DEBUG RELOAD NOFLUSH MERGE` loads into the dataset as it is, and so into the libraries
/// as they are (same-named ones replaced), as Redis does with its functions.
fn load_replaces_libraries(ctx: *mut raw::RedisModuleCtx, subevent: u64) -> bool {
    if subevent == raw::REDISMODULE_SUBEVENT_LOADING_REPL_START {
        return true;
    }
    let emptied = EMPTIED_AT_COMMAND.with(|e| e.take());
    emptied.is_some() && emptied == commands_processed(ctx)
}

/// Resets the registry when Redis starts loading a dataset that replaces the current one
/// (see `load_replaces_libraries`), so that what it carries is exactly what RX holds
/// afterwards, and lifts the VM's memory cap for the load; once loading ends, collects,
/// puts the cap back and adds the selected bundled libraries that the dataset did not
/// carry.
extern "C" fn on_loading(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut std::ffi::c_void,
) {
    let starts = [
        raw::REDISMODULE_SUBEVENT_LOADING_RDB_START,
        raw::REDISMODULE_SUBEVENT_LOADING_AOF_START,
        raw::REDISMODULE_SUBEVENT_LOADING_REPL_START,
    ];
    let ends = [
        raw::REDISMODULE_SUBEVENT_LOADING_ENDED,
        raw::REDISMODULE_SUBEVENT_LOADING_FAILED,
    ];
    if starts.contains(&subevent) {
        guarded("the loading event", (), || {
            let replaces = load_replaces_libraries(ctx, subevent);
            state::with(|s| s.loading_dataset.set(true));
            if replaces {
                drop(crate::libraries::reset());
            }
            crate::config::apply_memory_limit();
        });
    }
    if ends.contains(&subevent) {
        guarded("the loading event", (), || {
            let engine = state::with(|s| {
                s.loading_dataset.set(false);
                std::rc::Rc::clone(&s.engine)
            });
            engine.collect_garbage();
            crate::config::apply_memory_limit();
            let (used, cap) = (engine.used_memory(), crate::config::memory_limit_bytes());
            if used > cap {
                log(
                    std::ptr::null_mut(),
                    LogLevel::Warning,
                    format!(
                        "RX: the libraries loaded from the dataset hold {used} bytes in the Lua VM, more than rx.memory-limit-mb allows ({cap} bytes): calls will fail with 'not enough memory' until it is raised"
                    )
                    .as_bytes(),
                );
            }
            crate::stdlib::load_missing(std::ptr::null_mut())
        });
    }
}

pub fn subscribe_to_loading(ctx: *mut raw::RedisModuleCtx) {
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_LOADING,
        dataver: 1,
    };
    let flush = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_FLUSHDB,
        dataver: 1,
    };
    // SAFETY: called from OnLoad with its context; the callbacks are plain extern fns.
    unsafe {
        api!(RedisModule_SubscribeToServerEvent)(ctx, event, Some(on_loading));
        api!(RedisModule_SubscribeToServerEvent)(ctx, flush, Some(on_flush));
    }
}
