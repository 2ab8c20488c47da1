//! Library management, the counterpart of Redis's `functions.c`: compiling a library,
//! loading or replacing it, installing a batch all or nothing, deleting, flushing, setting
//! aside what a dataset carried but this server cannot build, and applying a versioned
//! change. The only code that changes the registry and the catalog (versions and
//! tombstones) together. It knows no command syntax and no transport: commands,
//! persistence, the bundled standard library and the cluster bus call it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use crate::cluster::meta::{Catalog, Entry, BUNDLED_VERSION, MAX_VERSION};
use crate::cluster::wire::Change;
use crate::engine::Engine;
use crate::engine::{LogLevel, LogOnlyHost};
use crate::error::{RxError, RxResult};
use crate::ffi::{log, Ctx};
use crate::header::parse_header;
use crate::history::{conflict_message, Action, LoadCondition, Origin};
use crate::registry::{FunctionInfo, Library, RegistryError, RestorePolicy};
use crate::state;
use crate::state::Callable;

thread_local! {
    /// Counts changes to the libraries; the cluster bus retries what failed to apply once
    /// it moves (say the library that owned a function name is gone).
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// How many times the libraries changed since the module loaded.
pub fn generation() -> u64 {
    GENERATION.with(Cell::get)
}

fn changed() {
    GENERATION.with(|g| g.set(g.get() + 1));
}

/// Whether a change wins against what the catalog holds (the ordering rule).
pub fn accepts(change: &Change) -> bool {
    state::with(|s| s.catalog.borrow().accepts(&change.name, &change.entry))
}

/// Forgets every library and version: a dataset that replaces the current one starts
/// loading. The libraries are returned to be dropped by the caller.
pub fn reset() -> Vec<Library<Callable>> {
    changed();
    state::with(|s| {
        s.catalog.borrow_mut().clear();
        // The dataset brings its own history (see `persistence`).
        s.history.borrow_mut().clear();
        s.registry.borrow_mut().flush()
    })
}

/// `RX.LOAD`: loads (or replaces) a library and records it as a local change. With a
/// condition, the library is loaded only if its current version or digest is the one
/// given (and may then be replaced without `REPLACE`); otherwise nothing changes and the
/// error is `CONFLICT`.
pub fn load(
    ctx: Ctx,
    code: &[u8],
    replace: bool,
    condition: Option<LoadCondition>,
) -> RxResult<(String, Change)> {
    if let Ok(header) = parse_header(code) {
        check_changeable([header.name.as_str()])?;
        check_condition(&header.name, condition)?;
    }
    let replace = replace || condition.is_some();
    let library = compile_checked(ctx, code, replace, "RX.LOAD")?;
    // Nothing else ran since the check (a library body never yields to other clients),
    // but the check is cheap, and a compare-and-swap must never act on a stale reading.
    check_condition(&library.name, condition)?;
    let name = library.name.to_string();
    let replaced = state::with(|s| s.registry.borrow_mut().install(library, replace))
        .map_err(|e| RxError::err(e.message()))?;
    let action = if replaced.is_some() {
        Action::Replace
    } else {
        Action::Load
    };
    drop(replaced);
    let change = record_live(&name, code, action);
    Ok((name, change))
}

/// What `RX.LOAD ... DRYRUN` reports.
pub struct DryRun {
    pub name: String,
    /// `create`, `replace` or `unchanged` (the same code as the live library).
    pub action: &'static str,
    /// Each function's name and flags.
    pub functions: Vec<(String, crate::flags::FunctionFlags)>,
}

/// `RX.LOAD ... DRYRUN`: every check a load makes, the library body run included, and
/// nothing changed.
pub fn dry_run(
    ctx: Ctx,
    code: &[u8],
    replace: bool,
    condition: Option<LoadCondition>,
) -> RxResult<DryRun> {
    if let Ok(header) = parse_header(code) {
        check_changeable([header.name.as_str()])?;
        check_condition(&header.name, condition)?;
    }
    let replace = replace || condition.is_some();
    let library = compile_checked(ctx, code, replace, "RX.LOAD")?;
    state::with(|s| s.registry.borrow().check_install(&library, replace))
        .map_err(|e| RxError::err(e.message()))?;
    let live_digest = state::with(|s| {
        let registry = s.registry.borrow();
        registry
            .library(&library.name)
            .map(|l| crate::cluster::meta::digest_of(&l.code))
    });
    let action = match live_digest {
        None => "create",
        Some(d) if d == crate::cluster::meta::digest_of(code) => "unchanged",
        Some(_) => "replace",
    };
    Ok(DryRun {
        name: library.name.to_string(),
        action,
        functions: library
            .functions
            .iter()
            .map(|f| (f.name.to_string(), f.flags))
            .collect(),
    })
}

/// `RX.ROLLBACK`: installs the code of the previous history entry of `name` (or of
/// version `to`) as a new version, with the checks of a load. Returns the new version.
pub fn rollback(ctx: Ctx, name: &str, to: Option<u64>) -> RxResult<Change> {
    let code = state::with(|s| {
        s.history
            .borrow()
            .rollback_target(name, to)
            .map(|e| e.code.to_vec())
    })
    .map_err(RxError::err)?;
    check_changeable([name])?;
    let library = compile_checked(ctx, &code, true, "RX.ROLLBACK")?;
    if *library.name != *name {
        return Err(RxError::err(format!(
            "the code in the history of library '{name}' is for library '{}'",
            library.name
        )));
    }
    let replaced = state::with(|s| s.registry.borrow_mut().install(library, true))
        .map_err(|e| RxError::err(e.message()))?;
    drop(replaced);
    Ok(record_live(name, &code, Action::Rollback))
}

/// Refuses a conditional load whose condition does not hold.
fn check_condition(name: &str, condition: Option<LoadCondition>) -> RxResult<()> {
    let Some(condition) = condition else {
        return Ok(());
    };
    state::with(|s| {
        let catalog = s.catalog.borrow();
        let current = catalog.get(name);
        if condition.holds(current) {
            Ok(())
        } else {
            Err(RxError::coded(format!(
                "CONFLICT {}",
                conflict_message(name, current)
            )))
        }
    })
}

/// `RX.DELETE`: deletes a library and records its tombstone.
pub fn delete(name: &str) -> RxResult<Change> {
    if state::with(|s| s.registry.borrow().library(name).is_some()) {
        check_changeable([name])?;
    }
    let removed = state::with(|s| s.registry.borrow_mut().delete(name))
        .map_err(|e| RxError::err(e.message()))?;
    drop(removed);
    Ok(record_tombstone(name))
}

/// `RX.FLUSH`: deletes every library, a tombstone each.
pub fn flush() -> RxResult<Vec<Change>> {
    let names: Vec<String> =
        state::with(|s| s.registry.borrow().names().map(str::to_string).collect());
    check_changeable(names.iter().map(String::as_str))?;
    let removed = state::with(|s| s.registry.borrow_mut().flush());
    let changes: Vec<_> = removed.iter().map(|l| record_tombstone(&l.name)).collect();
    drop(removed);
    Ok(changes)
}

/// Redis's limit for running a library body.
const LOAD_TIMEOUT: Duration = Duration::from_millis(500);

/// Compiles `code`, runs its body and installs the library, atomically: on any error the
/// registry (and a library being replaced) is exactly as before. Returns the library name.
pub fn load_library(ctx: Ctx, code: &[u8], replace: bool, command: &str) -> RxResult<String> {
    let header = parse_header(code).map_err(|e| e.to_error())?;
    let library = compile_checked(ctx, code, replace, command)?;
    let replaced = state::with(|s| s.registry.borrow_mut().install(library, replace))
        .map_err(|e| RxError::err(e.message()))?;
    drop(replaced);
    Ok(header.name)
}

/// Checks that the library may be loaded (it exists only with `replace`: Redis checks this
/// before running any of the library's code), then compiles it.
fn compile_checked(
    ctx: Ctx,
    code: &[u8],
    replace: bool,
    command: &str,
) -> RxResult<Library<Callable>> {
    let header = parse_header(code).map_err(|e| e.to_error())?;
    state::with(|s| s.registry.borrow().check_loadable(&header.name, replace))
        .map_err(|e| RxError::err(e.message()))?;
    compile_library(ctx, code, command)
}

/// Parses the header and runs the library body, without touching the registry.
pub fn compile_library(ctx: Ctx, code: &[u8], command: &str) -> RxResult<Library<Callable>> {
    let header = parse_header(code).map_err(|e| e.to_error())?;
    let (engine, loading_dataset) =
        state::with(|s| (Rc::clone(&s.engine), s.loading_dataset.get()));
    let logger = |level, msg: &[u8]| log(ctx, level, msg);
    // A dataset's libraries were accepted once: they load back however long they take, as
    // Redis loads functions from an RDB without a timeout.
    let timeout = (!loading_dataset).then_some(LOAD_TIMEOUT);
    let registrations = engine
        .load(code, &LogOnlyHost(&logger), timeout, command)
        .map_err(RxError::coded_bytes)?;
    let functions: Box<[_]> = registrations
        .into_iter()
        .map(|r| {
            Rc::new(FunctionInfo {
                name: r.name.into_boxed_str(),
                description: r.description.map(|d| Box::new(d.into_boxed_slice())),
                flags: r.flags,
                callable: r.callable,
                stats: Default::default(),
            })
        })
        .collect();
    Ok(Library {
        name: header.name.as_str().into(),
        code: code.into(),
        functions,
        set_aside: None,
    })
}

/// Compiles every source, then installs them all or none. Returns the versioned changes:
/// each library installed counts as a load; with FLUSH, each library removed and not
/// reinstalled gets a tombstone.
pub fn install_batch(
    ctx: Ctx,
    sources: &[&[u8]],
    policy: RestorePolicy,
    command: &str,
) -> RxResult<Vec<Change>> {
    let mut libraries: Vec<Library<Callable>> = Vec::with_capacity(sources.len());
    for code in sources {
        libraries.push(compile_library(ctx, code, command)?);
    }
    let installed: Vec<(String, Vec<u8>)> = libraries
        .iter()
        .map(|l| (l.name.to_string(), l.code.to_vec()))
        .collect();
    let flushed: Vec<String> = if policy == RestorePolicy::Flush {
        state::with(|s| s.registry.borrow().names().map(str::to_string).collect())
    } else {
        Vec::new()
    };
    check_changeable(
        installed
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(flushed.iter().map(String::as_str)),
    )?;
    let removed = state::with(|s| s.registry.borrow_mut().install_all(libraries, policy)).map_err(
        |e| match e {
            // FUNCTION RESTORE words this one without quotes, unlike FUNCTION LOAD.
            RegistryError::LibraryExists(name) => {
                RxError::err(format!("Library {name} already exists"))
            }
            other => RxError::err(other.message()),
        },
    )?;
    let mut changes: Vec<Change> = installed
        .iter()
        .map(|(name, code)| record_live(name, code, Action::Restore))
        .collect();
    for lib in &removed {
        if !installed.iter().any(|(n, _)| **n == *lib.name) {
            changes.push(record_tombstone(&lib.name));
        }
    }
    drop(removed);
    Ok(changes)
}

/// Refuses a local action on libraries whose versions reached the ceiling (see
/// `meta::MAX_VERSION`); called before the action changes anything.
pub fn check_changeable<'a>(names: impl IntoIterator<Item = &'a str>) -> RxResult<()> {
    state::with(|s| {
        let catalog = s.catalog.borrow();
        match names
            .into_iter()
            .find(|n| catalog.next_version(n).is_none())
        {
            Some(name) => Err(RxError::err(format!(
                "library '{name}' is at the highest version RX allows ({MAX_VERSION}) and cannot change any more"
            ))),
            None => Ok(()),
        }
    })
}

/// The version of a local change: one more than any seen for that name. Callers checked
/// `check_changeable` before changing anything, so the ceiling is never hit here.
fn local_version(catalog: &Catalog, name: &str) -> u64 {
    catalog.next_version(name).unwrap_or(MAX_VERSION)
}

/// Records a library installed by a local action (load, restore, import, rollback): its
/// version is one more than any seen for that name.
pub fn record_live(name: &str, code: &[u8], action: Action) -> Change {
    record(
        name,
        |c| Entry::live(local_version(c, name), code),
        code,
        action,
    )
}

/// Records a library deleted by a local action.
pub fn record_tombstone(name: &str) -> Change {
    record(
        name,
        |c| Entry::tombstone(local_version(c, name)),
        &[],
        Action::Delete,
    )
}

/// Records a library at an exact version (an RDB entry, a bundled library).
pub fn record_exact(name: &str, entry: Entry) {
    state::with(|s| s.catalog.borrow_mut().set(name, entry));
}

fn record(name: &str, make: impl FnOnce(&Catalog) -> Entry, code: &[u8], action: Action) -> Change {
    changed();
    let origin = Origin {
        action,
        time_ms: now_ms(),
    };
    let entry = state::with(|s| {
        let mut catalog = s.catalog.borrow_mut();
        let entry = make(&catalog);
        catalog.set(name, entry);
        s.history.borrow_mut().record(name, entry, origin, code);
        entry
    });
    Change {
        name: name.to_string(),
        entry,
        code: code.to_vec(),
        origin: Some(origin),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Adds an applied change to the history: with the origin it carries, or, from a payload
/// older than origins, what this node can tell (a deletion, a load or a replace).
fn record_applied(change: &Change, existed: bool) {
    let origin = change.origin.unwrap_or_else(|| Origin {
        action: if change.entry.is_tombstone() {
            Action::Delete
        } else if existed {
            Action::Replace
        } else {
            Action::Load
        },
        time_ms: now_ms(),
    });
    state::with(|s| {
        s.history
            .borrow_mut()
            .record(&change.name, change.entry, origin, &change.code)
    });
}

/// The version a bundled library takes when (re)loaded: [`BUNDLED_VERSION`] when the name
/// was never seen. `None` in cluster mode when the name carries a tombstone: a deletion is
/// cluster-wide and a bundled library does not undo it.
pub fn bundled_version(name: &str) -> Option<u64> {
    state::with(|s| {
        let catalog = s.catalog.borrow();
        match catalog.get(name) {
            None => Some(BUNDLED_VERSION),
            Some(e) if e.is_tombstone() && crate::ffi::cluster_mode() => None,
            Some(_) => catalog.next_version(name),
        }
    })
}

/// Applies one change that won under the ordering rule (see `accepts`): a library is
/// compiled exactly as `RX.LOAD` does (no borrow of the module state is held while Lua
/// runs), a tombstone deletes.
pub fn apply_change(ctx: Ctx, change: &Change) -> Result<(), String> {
    let applied = apply_one(ctx, change);
    if applied.is_ok() {
        changed();
    }
    applied
}

fn apply_one(ctx: Ctx, change: &Change) -> Result<(), String> {
    let existed = state::with(|s| s.registry.borrow().library(&change.name).is_some());
    let applied = apply_to_registry(ctx, change);
    if applied.is_ok() {
        record_applied(change, existed);
    }
    applied
}

fn apply_to_registry(ctx: Ctx, change: &Change) -> Result<(), String> {
    if change.entry.is_tombstone() {
        let removed = state::with(|s| {
            s.catalog.borrow_mut().set(&change.name, change.entry);
            s.registry.borrow_mut().delete(&change.name).ok()
        });
        drop(removed);
        return Ok(());
    }
    match parse_header(&change.code) {
        Ok(h) if h.name == change.name => {}
        Ok(h) => return Err(format!("the code is for library '{}'", h.name)),
        Err(e) => return Err(e.message()),
    }
    let installed = compile_library(ctx, &change.code, "RX.LOAD")
        .map_err(|e| e.to_string())
        .and_then(|library| {
            state::with(|s| {
                let r = s.registry.borrow_mut().install(library, true);
                if r.is_ok() {
                    s.catalog.borrow_mut().set(&change.name, change.entry);
                }
                r
            })
            .map_err(|e| e.message())
        });
    match installed {
        Ok(replaced) => {
            drop(replaced);
            Ok(())
        }
        // The master (or this server, before it wrote its AOF) accepted the change: keep
        // its code rather than lose it. Changes from the bus are retried instead (`cluster::bus::apply`).
        Err(e) if crate::ffi::replayed(ctx) => {
            set_aside(
                ctx,
                &change.name,
                &change.code,
                &e,
                "the master's stream or the AOF",
            );
            state::with(|s| s.catalog.borrow_mut().set(&change.name, change.entry));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Keeps a library that a dataset carried but that cannot be built here (see
/// `Library::set_aside`), and says so loudly.
pub fn set_aside(ctx: Ctx, name: &str, code: &[u8], error: &str, from: &str) {
    log(
        ctx,
        LogLevel::Warning,
        format!(
            "RX: library '{name}' from {from} could not be loaded on this server and is set aside (its code is kept and saved; see RX.LIST SETASIDE WITHCODE, then RX.LOAD REPLACE or RX.DELETE it): {error}"
        )
        .as_bytes(),
    );
    let replaced = state::with(|s| s.registry.borrow_mut().set_aside(name, code, error));
    drop(replaced);
}
