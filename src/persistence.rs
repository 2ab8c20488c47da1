//! Libraries in the RDB, as module aux data, and the reset when a dataset starts loading.
//!
//! Only the source of each library is saved; loading replays it through the same path as
//! `RX.LOAD`, so whatever a library carries is rebuilt exactly as it was loaded.
//! Encoding 1: count (unsigned), then each library's code (string buffer).

use std::ffi::c_int;
use std::os::raw::c_char;

use redis_module::native_types::RedisType;
use redis_module::raw;

use crate::commands::library::load_library;
use crate::engine::LogLevel;
use crate::server::{api, guarded, log};
use crate::state;

/// Redis requires exactly nine characters.
const TYPE_NAME: &str = "rxlibrary";
/// The aux encoding this RX writes; a newer one is refused rather than half-read.
pub const ENCODING_VERSION: i32 = 1;

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

fn library_sources() -> Vec<Vec<u8>> {
    state::with(|s| {
        s.registry
            .borrow()
            .list(None)
            .map(|l| l.code.clone())
            .collect()
    })
}

fn save(rdb: *mut raw::RedisModuleIO, sources: &[Vec<u8>]) {
    // SAFETY: rdb is the live IO handle Redis passed to the aux callback.
    unsafe {
        api!(RedisModule_SaveUnsigned)(rdb, sources.len() as u64);
        for code in sources {
            api!(RedisModule_SaveStringBuffer)(rdb, code.as_ptr() as *const c_char, code.len());
        }
    }
}

extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, when: c_int) {
    if when != raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
        return;
    }
    guarded("aux_save", (), || save(rdb, &library_sources()));
}

extern "C" fn aux_save2(rdb: *mut raw::RedisModuleIO, when: c_int) {
    if when != raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
        return;
    }
    guarded("aux_save2", (), || {
        let sources = library_sources();
        if !sources.is_empty() {
            save(rdb, &sources);
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
        let sources = read_sources(rdb)?;
        for code in sources {
            // The registry was reset when loading started; REPLACE covers an RDB that
            // carries a library twice.
            load_library(std::ptr::null_mut(), &code, true, "RX.LOAD").map_err(|e| {
                let name = crate::header::parse_header(&code)
                    .map(|h| h.name)
                    .unwrap_or_default();
                format!("RX: failed loading library '{name}' from the RDB: {e}")
            })?;
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

/// Resets the registry whenever Redis starts loading a dataset (RDB, AOF or a replication
/// stream), so that what it carries is exactly what RX holds afterwards; once loading ends,
/// adds the selected bundled libraries that the dataset did not carry.
extern "C" fn on_loading(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut std::ffi::c_void,
) {
    let starts = [
        raw::REDISMODULE_SUBEVENT_LOADING_RDB_START,
        raw::REDISMODULE_SUBEVENT_LOADING_AOF_START,
        raw::REDISMODULE_SUBEVENT_LOADING_REPL_START,
    ];
    if subevent == raw::REDISMODULE_SUBEVENT_LOADING_ENDED {
        guarded("the loading event", (), || {
            crate::stdlib::load_missing(std::ptr::null_mut())
        });
    }
    if starts.contains(&subevent) {
        guarded("the loading event", (), || {
            let removed = state::with(|s| s.registry.borrow_mut().flush());
            drop(removed);
        });
    }
}

pub fn subscribe_to_loading(ctx: *mut raw::RedisModuleCtx) {
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_LOADING,
        dataver: 1,
    };
    // SAFETY: called from OnLoad with its context; the callback is a plain extern fn.
    unsafe { api!(RedisModule_SubscribeToServerEvent)(ctx, event, Some(on_loading)) };
}
