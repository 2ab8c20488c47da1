//! The module's one state: the engine and the library registry, owned by the main thread.
//!
//! Commands take what they need out of it (an `Rc` to the engine, an `Rc` to a function)
//! and release the borrow before any Lua runs, so a script can never observe the registry
//! half-changed.

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;

use crate::cluster::meta::Catalog;
use crate::engine::Engine;
use crate::history::History;
use crate::registry::Registry;
use crate::scripts::ScriptCache;

/// The script engine the module runs, named here only: the rest of the glue uses it
/// through `rx_core::engine::Engine`.
pub type ActiveEngine = crate::lua::LuaEngine;
/// What the engine compiles a function or script into.
pub type Callable = <ActiveEngine as Engine>::Callable;

/// Starts the engine for a server of this version (`redis.REDIS_VERSION` and its number).
pub fn start_engine(version_text: String, version_num: u32) -> Result<ActiveEngine, String> {
    crate::lua::LuaEngine::new(&crate::lua::ServerVersion {
        text: version_text,
        num: version_num,
    })
    .map_err(|e| e.to_string())
}

pub struct ModuleState {
    pub engine: Rc<ActiveEngine>,
    pub registry: RefCell<Registry<Callable>>,
    pub scripts: RefCell<ScriptCache<Callable>>,
    /// The version and digest of every library name seen, tombstones included. Kept in step
    /// with `registry`: every live library has a live entry.
    pub catalog: RefCell<Catalog>,
    /// Each library's last versions (`rx.history-depth`), deleted libraries included.
    pub history: RefCell<History>,
    /// A dataset (an RDB, the AOF, a full sync) is loading: what it carries was accepted
    /// once, so it loads back without the load timeout or the VM memory cap.
    pub loading_dataset: std::cell::Cell<bool>,
}

thread_local! {
    static STATE: OnceCell<ModuleState> = const { OnceCell::new() };
}

pub fn install(state: ModuleState) {
    STATE.with(|s| {
        let _ = s.set(state);
    });
}

/// Runs `f` with the state. Panics only if the module was never initialised, which the
/// command dispatcher turns into an error reply.
pub fn with<R>(f: impl FnOnce(&ModuleState) -> R) -> R {
    STATE.with(|s| f(s.get().expect("RX state is initialised at module load")))
}
