//! RX.LOAD, RX.LIST, RX.DELETE, RX.FLUSH: the library family, mirroring FUNCTION LOAD,
//! LIST, DELETE and FLUSH; and RX's own RX.HISTORY and RX.ROLLBACK (safe deploys).

use super::{command_callback, reply_ok};
use crate::cluster::bus;
use crate::cluster::meta::hex;
use crate::error::{RxError, RxResult};
use crate::ffi::{Ctx, ModuleReply};
use crate::history::LoadCondition;
use crate::libraries;
use crate::registry::Library;
use crate::reply::ReplySink;
use crate::state;

command_callback!(rx_load_cb, rx_load);
command_callback!(rx_list_cb, rx_list);
command_callback!(rx_delete_cb, rx_delete);
command_callback!(rx_flush_cb, rx_flush);
command_callback!(rx_history_cb, rx_history);
command_callback!(rx_rollback_cb, rx_rollback);

/// RX.LOAD [REPLACE] [IFVERSION <n> | IFDIGEST <sha1>] [DRYRUN] <code>
fn rx_load(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    if args.len() < 2 {
        return Err(RxError::wrong_arity("rx.load"));
    }
    let mut replace = false;
    let mut dry_run = false;
    let mut condition: Option<LoadCondition> = None;
    let options = &args[1..args.len() - 1];
    let mut i = 0;
    while i < options.len() {
        let opt = options[i];
        let value = options.get(i + 1).copied();
        if opt.eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else if opt.eq_ignore_ascii_case(b"dryrun") {
            dry_run = true;
        } else if opt.eq_ignore_ascii_case(b"ifversion") || opt.eq_ignore_ascii_case(b"ifdigest") {
            if condition.is_some() {
                return Err(RxError::err(
                    "IFVERSION and IFDIGEST can be given only once, and not together",
                ));
            }
            let Some(value) = value else {
                // The value would be the code itself: the option has no argument.
                return Err(RxError::err(format!(
                    "{} needs an argument",
                    String::from_utf8_lossy(opt).to_ascii_uppercase()
                )));
            };
            condition = Some(if opt.eq_ignore_ascii_case(b"ifversion") {
                std::str::from_utf8(value)
                    .ok()
                    .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(LoadCondition::Version)
                    .ok_or_else(|| {
                        RxError::err("IFVERSION needs a version: a non-negative integer")
                    })?
            } else {
                LoadCondition::digest(value).ok_or_else(|| {
                    RxError::err("IFDIGEST needs a SHA-1 digest: 40 hexadecimal characters")
                })?
            });
            i += 1;
        } else {
            return Err(RxError::err(format!(
                "Unknown option given: {}",
                String::from_utf8_lossy(opt)
            )));
        }
        i += 1;
    }
    let code = args[args.len() - 1];
    if dry_run {
        let report = libraries::dry_run(ctx, code, replace, condition)?;
        let mut out = ModuleReply(ctx);
        out.map(3);
        out.bulk(b"library");
        out.bulk(report.name.as_bytes());
        out.bulk(b"action");
        out.bulk(report.action.as_bytes());
        out.bulk(b"functions");
        out.array(report.functions.len());
        for (name, flags) in &report.functions {
            out.map(2);
            out.bulk(b"name");
            out.bulk(name.as_bytes());
            out.bulk(b"flags");
            let names: Vec<_> = flags.names().collect();
            out.set(names.len());
            for n in names {
                out.simple(n.as_bytes());
            }
        }
        return Ok(());
    }
    let (name, change) = libraries::load(ctx, code, replace, condition)?;
    bus::propagate(ctx, &[change]);
    ModuleReply(ctx).bulk(name.as_bytes());
    Ok(())
}

/// RX.HISTORY <library> [WITHCODE]: the library's last versions, newest first.
fn rx_history(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    if args.len() < 2 || args.len() > 3 {
        return Err(RxError::wrong_arity("rx.history"));
    }
    let with_code = match args.get(2) {
        None => false,
        Some(a) if a.eq_ignore_ascii_case(b"withcode") => true,
        Some(a) => {
            return Err(RxError::err(format!(
                "Unknown argument {}",
                String::from_utf8_lossy(a)
            )))
        }
    };
    let name = String::from_utf8_lossy(args[1]);
    let mut out = ModuleReply(ctx);
    state::with(|s| {
        let history = s.history.borrow();
        let entries: Vec<_> = history.entries(&name).collect();
        out.array(entries.len());
        for e in entries {
            out.map(5 + with_code as usize);
            out.bulk(b"version");
            crate::reply::unsigned(&mut out, e.version);
            out.bulk(b"digest");
            out.bulk(hex(&e.digest).as_bytes());
            out.bulk(b"action");
            out.bulk(e.origin.action.name().as_bytes());
            out.bulk(b"time_ms");
            crate::reply::unsigned(&mut out, e.origin.time_ms);
            out.bulk(b"bytes");
            out.integer(e.code.len() as i64);
            if with_code {
                out.bulk(b"code");
                if e.is_deletion() {
                    out.null();
                } else {
                    out.bulk(&e.code);
                }
            }
        }
    });
    Ok(())
}

/// RX.ROLLBACK <library> [TO <version>]: replies with the new version.
fn rx_rollback(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    let to = match args.len() {
        2 => None,
        4 if args[2].eq_ignore_ascii_case(b"to") => Some(
            std::str::from_utf8(args[3])
                .ok()
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| RxError::err("TO needs a version: a non-negative integer"))?,
        ),
        4 => {
            return Err(RxError::err(format!(
                "Unknown argument {}",
                String::from_utf8_lossy(args[2])
            )))
        }
        _ => return Err(RxError::wrong_arity("rx.rollback")),
    };
    let name = String::from_utf8_lossy(args[1]);
    let change = libraries::rollback(ctx, &name, to)?;
    let version = change.entry.version;
    bus::propagate(ctx, &[change]);
    crate::reply::unsigned(&mut ModuleReply(ctx), version);
    Ok(())
}

/// RX.LIST [LIBRARYNAME <pattern>] [WITHCODE] [WITHVERSIONS] [SETASIDE]
fn rx_list(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    let mut with_code = false;
    let mut with_versions = false;
    let mut set_aside = false;
    let mut pattern: Option<&[u8]> = None;
    let mut i = 1;
    while i < args.len() {
        let arg = args[i];
        if !with_code && arg.eq_ignore_ascii_case(b"withcode") {
            with_code = true;
        } else if !with_versions && arg.eq_ignore_ascii_case(b"withversions") {
            with_versions = true;
        } else if !set_aside && arg.eq_ignore_ascii_case(b"setaside") {
            set_aside = true;
        } else if pattern.is_none() && arg.eq_ignore_ascii_case(b"libraryname") {
            if i + 1 >= args.len() {
                return Err(RxError::err("library name argument was not given"));
            }
            i += 1;
            pattern = Some(args[i]);
        } else {
            return Err(RxError::err(format!(
                "Unknown argument {}",
                String::from_utf8_lossy(arg)
            )));
        }
        i += 1;
    }
    let mut out = ModuleReply(ctx);
    if set_aside {
        write_set_aside(&mut out, pattern, with_code);
        return Ok(());
    }
    state::with(|s| {
        let registry = s.registry.borrow();
        let catalog = s.catalog.borrow();
        let libs: Vec<_> = registry.list(pattern).collect();
        out.array(libs.len());
        for lib in libs {
            let entry = with_versions.then(|| {
                catalog
                    .get(&lib.name)
                    .copied()
                    .unwrap_or_else(|| crate::cluster::meta::Entry::live(0, &lib.code))
            });
            write_library(&mut out, lib, with_code, entry);
        }
    });
    Ok(())
}

/// RX.LIST SETASIDE: the libraries a dataset carried that could not be built here, with
/// why, and their code on request, so that nothing is lost.
fn write_set_aside(out: &mut dyn ReplySink, pattern: Option<&[u8]>, with_code: bool) {
    state::with(|s| {
        let registry = s.registry.borrow();
        let libs: Vec<_> = registry
            .set_aside_libraries()
            .filter(|l| pattern.is_none_or(|p| crate::glob::glob_match(p, l.name.as_bytes(), true)))
            .collect();
        out.array(libs.len());
        for lib in libs {
            out.map(if with_code { 3 } else { 2 });
            out.bulk(b"library_name");
            out.bulk(lib.name.as_bytes());
            out.bulk(b"error");
            out.bulk(
                lib.set_aside
                    .as_deref()
                    .map_or("", String::as_str)
                    .as_bytes(),
            );
            if with_code {
                out.bulk(b"library_code");
                out.bulk(&lib.code);
            }
        }
    });
}

/// FUNCTION LIST's fields, then, when `entry` is given (WITHVERSIONS), RX's own: `version`
/// and `digest` (see the Cluster section of the README).
fn write_library<F>(
    out: &mut dyn ReplySink,
    lib: &Library<F>,
    with_code: bool,
    entry: Option<crate::cluster::meta::Entry>,
) {
    out.map(3 + with_code as usize + 2 * entry.is_some() as usize);
    out.bulk(b"library_name");
    out.bulk(lib.name.as_bytes());
    out.bulk(b"engine");
    out.bulk(b"LUA");
    out.bulk(b"functions");
    out.array(lib.functions.len());
    for f in &lib.functions {
        out.map(3);
        out.bulk(b"name");
        out.bulk(f.name.as_bytes());
        out.bulk(b"description");
        match &f.description {
            Some(d) if crate::dialect::current().function_engine_c_strings => {
                out.bulk(d.split(|&b| b == 0).next().unwrap_or_default())
            }
            Some(d) => out.bulk(d),
            None => out.null(),
        }
        out.bulk(b"flags");
        let names: Vec<_> = f.flags.names().collect();
        out.set(names.len());
        for n in names {
            out.simple(n.as_bytes());
        }
    }
    if with_code {
        out.bulk(b"library_code");
        out.bulk(&lib.code);
    }
    if let Some(entry) = entry {
        out.bulk(b"version");
        crate::reply::unsigned(out, entry.version);
        out.bulk(b"digest");
        out.bulk(hex(&entry.digest).as_bytes());
    }
}

/// RX.DELETE <library>
fn rx_delete(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    if args.len() != 2 {
        return Err(RxError::wrong_arity("rx.delete"));
    }
    let name = String::from_utf8_lossy(args[1]);
    let change = libraries::delete(&name)?;
    bus::propagate(ctx, &[change]);
    reply_ok(ctx);
    Ok(())
}

/// RX.FLUSH [ASYNC|SYNC]. Lua objects cannot be freed off the main thread, so ASYNC frees
/// synchronously too (the VM's garbage collector reclaims the memory incrementally).
fn rx_flush(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    if args.len() > 2 {
        return Err(RxError::wrong_arity("rx.flush"));
    }
    if let Some(mode) = args.get(1) {
        if !mode.eq_ignore_ascii_case(b"sync") && !mode.eq_ignore_ascii_case(b"async") {
            return Err(RxError::err("RX.FLUSH only supports SYNC|ASYNC option"));
        }
    }
    let changes = libraries::flush()?;
    bus::propagate(ctx, &changes);
    reply_ok(ctx);
    Ok(())
}
