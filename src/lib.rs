//! RX: Redis Functions and EVAL-style Lua scripting in an embedded LuaJIT VM.
//!
//! This crate is the module glue only. The pure parts live in `rx-core` (re-exported here
//! under their own names: `registry`, `header`, `dialect`, `engine`...), and the Lua engine
//! in `rx-lua` (`lua`), which the glue names in `state` only and drives through
//! `rx_core::engine::Engine`. Inside the glue, imports point down:
//!
//! * `commands`, `persistence`, `stdlib`, `info`: parse, call the layer below, render;
//! * `run` (the run context shared by functions and EVAL), `libraries` (library
//!   management, the only writer of the registry and the catalog together), `cluster::bus`
//!   (transport and anti-entropy);
//! * `host` (the script host, with each run's limits and slot rule handed in), `gates`
//!   (server-state refusals), `state` (the one module state), `config`, `cluster::slots`;
//! * `ffi`: the module API wrapper, which imports nothing above it.

// The glue's functions take the context pointer Redis hands to the running callback and
// pass it straight back to the module API; they never dereference it themselves.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

// The core's modules, under the names the glue has always used.
pub use rx_core::{
    dialect, engine, error, flags, glob, header, history, numfmt, numkeys, payload, registry,
    reply, resp, running, scripts, sort_in_scripts, stats,
};
// The Lua engine.
pub use rx_lua as lua;
pub mod arg_cache;
pub mod cluster;
pub mod command_facts;
pub mod commands;
pub mod config;
pub mod ffi;
pub mod gates;
pub mod host;
pub mod info;
pub mod libraries;
pub mod persistence;
pub mod run;
pub mod server_allocator;
pub mod state;
pub mod stdlib;

use std::cell::RefCell;
use std::rc::Rc;

use redis_module::{redis_module, Context, RedisString, Status};

use crate::persistence::LIBRARY_TYPE;
use crate::registry::Registry;

// Unit tests run without a server, where Redis's allocator cannot work.
#[cfg(not(test))]
type Allocator = redis_module::alloc::RedisAlloc;
#[cfg(test)]
type Allocator = std::alloc::System;
#[cfg(not(test))]
const ALLOCATOR: Allocator = redis_module::alloc::RedisAlloc;
#[cfg(test)]
const ALLOCATOR: Allocator = std::alloc::System;

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    // Calibrate the call clock now rather than inside the first call.
    let _ = quanta::Instant::now();
    let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_slice().to_vec()).collect();
    let module_args = match config::parse_module_args(&args) {
        Ok(a) => a,
        Err(e) => {
            ctx.log_warning(&format!("RX: {e}"));
            return Status::Err;
        }
    };
    let stdlib_selection = args
        .chunks(2)
        .find(|p| p[0].eq_ignore_ascii_case(b"stdlib"))
        .map_or(Ok(stdlib::Selection::All), |p| {
            stdlib::Selection::parse(&p[1])
        });
    match stdlib_selection {
        Ok(s) => stdlib::set_selection(s),
        Err(e) => {
            ctx.log_warning(&format!("RX: {e}"));
            return Status::Err;
        }
    }
    let raw_ctx = ctx.ctx;
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        ffi::log(
            std::ptr::null_mut(),
            engine::LogLevel::Warning,
            format!("RX panic: {info}").as_bytes(),
        );
        previous_hook(info);
    }));
    dialect::install(dialect::Dialect::for_server(ffi::detect_server(raw_ctx)));
    if server_allocator::install() {
        ctx.log_notice("RX: the Lua VM allocates from an arena of the server's jemalloc");
    }
    let (text, num) = ffi::server_version();
    let engine = match state::start_engine(text, num) {
        Ok(e) => e,
        Err(e) => {
            ctx.log_warning(&format!("RX: could not start the Lua engine: {e}"));
            return Status::Err;
        }
    };
    state::install(state::ModuleState {
        engine: Rc::new(engine),
        registry: RefCell::new(Registry::new()),
        scripts: RefCell::new(Default::default()),
        catalog: RefCell::new(Default::default()),
        history: RefCell::new(history::History::new(history::DEFAULT_DEPTH)),
        loading_dataset: Default::default(),
    });
    if let Err(e) = commands::register_all(raw_ctx) {
        ctx.log_warning(&format!("RX: {e}"));
        return Status::Err;
    }
    if let Err(e) = config::register(raw_ctx, &module_args) {
        ctx.log_warning(&format!("RX: {e}"));
        return Status::Err;
    }
    persistence::subscribe_to_loading(raw_ctx);
    info::register(raw_ctx);
    cluster::bus::init(raw_ctx);
    stdlib::load_missing(raw_ctx);
    Status::Ok
}

/// The crate's version as `MODULE LIST` shows module versions: 1.2.3 is 10203.
const MODULE_VERSION: i32 = {
    const fn number(s: &str) -> i32 {
        let b = s.as_bytes();
        let mut n = 0;
        let mut i = 0;
        while i < b.len() {
            n = n * 10 + (b[i] - b'0') as i32;
            i += 1;
        }
        n
    }
    number(env!("CARGO_PKG_VERSION_MAJOR")) * 10_000
        + number(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + number(env!("CARGO_PKG_VERSION_PATCH"))
};

redis_module! {
    name: "rx",
    version: MODULE_VERSION,
    allocator: (Allocator, ALLOCATOR),
    data_types: [LIBRARY_TYPE],
    init: init,
    commands: [],
}
