//! RX.STATS: Redis's FUNCTION STATS shape (the running function, engine counts), then
//! numbers per function. It also answers while a function is busy (allow-busy).

use super::{command_callback, reply_ok};
use crate::engine::Engine;
use crate::error::{RxError, RxResult};
use crate::ffi::{Ctx, ModuleReply};
use crate::reply::ReplySink;
use crate::running;
use crate::state;
use crate::stats::FunctionStats;

command_callback!(rx_stats_cb, rx_stats);

enum Filter {
    All,
    Library(String),
    Function(String),
}

/// RX.STATS [LIBRARY <name> | FUNCTION <name>] | RX.STATS RESET
fn rx_stats(ctx: Ctx, args: &[&[u8]]) -> RxResult<()> {
    let filter = match args.get(1..).unwrap_or_default() {
        [] => Filter::All,
        [reset] if reset.eq_ignore_ascii_case(b"reset") => {
            state::with(|s| {
                s.registry
                    .borrow()
                    .functions()
                    .for_each(|(_, f)| f.stats.reset());
                s.scripts.borrow().scripts().for_each(|sc| sc.stats.reset());
            });
            reply_ok(ctx);
            return Ok(());
        }
        [kind, name] if kind.eq_ignore_ascii_case(b"library") => {
            Filter::Library(String::from_utf8_lossy(name).into_owned())
        }
        [kind, name] if kind.eq_ignore_ascii_case(b"function") => {
            Filter::Function(String::from_utf8_lossy(name).to_ascii_lowercase())
        }
        [other, ..] => {
            return Err(RxError::err(format!(
                "Unknown argument {}",
                String::from_utf8_lossy(other)
            )))
        }
    };
    let mut out = ModuleReply(ctx);
    out.map(5);
    out.bulk(b"running_script");
    match running::current() {
        None => out.null(),
        Some(r) => {
            out.map(3);
            out.bulk(b"name");
            out.bulk(r.function.as_bytes());
            out.bulk(b"command");
            let command = r.command.borrow();
            out.array(command.len());
            for a in command.iter() {
                out.bulk(a);
            }
            out.bulk(b"duration_ms");
            out.integer(r.started.elapsed().as_millis() as i64);
        }
    }
    state::with(|s| {
        let registry = s.registry.borrow();
        out.bulk(b"engines");
        out.map(1);
        out.bulk(b"LUA");
        out.map(2);
        out.bulk(b"libraries_count");
        out.integer(registry.library_count() as i64);
        out.bulk(b"functions_count");
        out.integer(registry.function_count() as i64);
        out.bulk(b"vm_memory_bytes");
        out.integer(s.engine.used_memory() as i64);
        let selected: Vec<_> = registry
            .functions()
            .filter(|(library, f)| match &filter {
                Filter::All => true,
                Filter::Library(l) => *library == l.as_str(),
                Filter::Function(n) => f.name.eq_ignore_ascii_case(n),
            })
            .collect();
        out.bulk(b"functions");
        out.map(selected.len());
        for (library, f) in selected {
            out.bulk(f.name.as_bytes());
            write_function_stats(&mut out, library, &f.stats.borrow());
        }
        // EVAL scripts, by SHA1 (a LIBRARY or FUNCTION filter selects none).
        let scripts = s.scripts.borrow();
        let mut shown: Vec<_> = match &filter {
            Filter::All => scripts.scripts().collect(),
            _ => Vec::new(),
        };
        shown.sort_by(|a, b| a.sha.cmp(&b.sha));
        out.bulk(b"scripts");
        out.map(shown.len());
        for sc in shown {
            out.bulk(sc.sha.as_bytes());
            write_function_stats(&mut out, "", &sc.stats.borrow());
        }
    });
    Ok(())
}

fn write_counts(out: &mut dyn ReplySink, counts: &std::collections::BTreeMap<String, u64>) {
    out.map(counts.len());
    for (code, n) in counts {
        out.bulk(code.as_bytes());
        out.integer(*n as i64);
    }
}

/// The number of fields `write_function_stats` writes.
const FUNCTION_STATS_FIELDS: usize = 16;

fn write_function_stats(out: &mut dyn ReplySink, library: &str, s: &FunctionStats) {
    out.map(FUNCTION_STATS_FIELDS);
    out.bulk(b"library");
    out.bulk(library.as_bytes());
    for (name, v) in [
        ("calls", s.calls),
        ("nested_calls", s.nested_calls),
        ("errors", s.errors),
    ] {
        out.bulk(name.as_bytes());
        out.integer(v as i64);
    }
    out.bulk(b"errors_by_code");
    write_counts(out, &s.errors_by_code);
    out.bulk(b"refusals");
    write_counts(out, &s.refusals);
    for (name, v) in [
        ("total_us", s.total_us),
        ("avg_us", s.avg_us()),
        ("max_us", s.max_us),
        ("p50_us", s.percentile_us(0.5)),
        ("p99_us", s.percentile_us(0.99)),
        ("p999_us", s.percentile_us(0.999)),
        ("redis_calls", s.redis_calls),
    ] {
        out.bulk(name.as_bytes());
        out.integer(v as i64);
    }
    out.bulk(b"redis_calls_per_call");
    out.double(if s.calls == 0 {
        0.0
    } else {
        s.redis_calls as f64 / s.calls as f64
    });
    out.bulk(b"last_error");
    match &s.last_error {
        Some((e, _)) => out.bulk(e.as_bytes()),
        None => out.null(),
    }
    out.bulk(b"last_error_time_ms");
    match &s.last_error {
        Some((_, at)) => out.integer(*at as i64),
        None => out.null(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::RespWriter;
    use std::time::Duration;

    /// The declared map length must match what is written, or clients wait forever.
    #[test]
    fn function_stats_reply_is_complete_resp() {
        for resp in [2u8, 3] {
            let mut fresh = RespWriter::new(resp);
            write_function_stats(&mut fresh, "lib", &FunctionStats::default());
            let mut used = FunctionStats::default();
            used.record_call(Duration::from_micros(5), 1, Some("WRONGTYPE x"));
            used.record_refusal("OOM y");
            let mut busy = RespWriter::new(resp);
            write_function_stats(&mut busy, "lib", &used);
            for w in [fresh, busy] {
                let tree = crate::resp::parse_tree(&w.out).unwrap();
                let consumed = crate::resp::frame_len(&w.out).unwrap();
                assert_eq!(consumed, w.out.len(), "RESP{resp}: trailing bytes");
                let crate::resp::Tree::List(items) = tree else {
                    panic!()
                };
                assert_eq!(items.len(), 2 * FUNCTION_STATS_FIELDS);
            }
        }
    }
}
