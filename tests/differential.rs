//! Differential test: native Redis Functions (the oracle) versus RX, on ONE server.
//!
//! Every `tests/differential/*.case` file holds several cases:
//!
//! ```text
//! @@@ unique-case-name
//! # comment lines (and blank lines) are allowed before the first section
//! @@ lib
//! #!lua name=mylib
//! redis.register_function('hello', function(keys, args) return 'hi ' .. args[1] end)
//! @@ lib
//! #!lua name=second
//! ...
//! @@ run
//! SET k v
//! FCALL hello 0 world
//! ~ FCALL hello 0 "unordered\x00reply"
//! @@ teardown
//! CONFIG SET maxmemory 0
//! ```
//!
//! * `@@@ name` starts a case; names are unique across all files.  Lines before the
//!   first `@@@` of a file are a free-form header and are ignored.
//! * `@@ lib`: library code, verbatim, up to the next line starting with `@@`
//!   (trailing blank lines dropped).  Zero or more per case; all of them are loaded,
//!   in order, before the `run` lines, with `FUNCTION LOAD <code>` (native) or
//!   `RX.LOAD <code>` (RX).  The load replies are compared too.
//! * `@@ run`: one command per line.  Tokens are separated by blanks; `"..."`
//!   tokens take the escapes `\n \r \t \\ \" \xHH`; `'...'` tokens are literal.  A
//!   quoted token must stand alone (no `a"b"` concatenation).  Blank lines and lines
//!   starting with `#` are ignored.  A line starting with `~ ` is compared
//!   unordered: the top-level elements of the parsed replies are sorted first.
//!   A line starting with `! ` is a documented difference (README, "Known
//!   differences"): it runs on both sides, so it still must not crash or hang, but
//!   its replies are printed instead of compared.
//! * `@@ teardown`: same syntax; run after each side, replies not compared (use it
//!   to reset configs, delete ACL users, ...).
//!
//! On the RX side, commands are mapped: `FCALL`->`RX.CALL`, `FCALL_RO`->`RX.CALL_RO`,
//! `FUNCTION LOAD|LIST|DELETE|FLUSH`->`RX.LOAD|LIST|DELETE|FLUSH` (case-insensitive);
//! everything else runs unchanged.  RX error texts are mapped back to the native
//! command names before comparing (see [`ERROR_NAME_MAP`]).
//!
//! For each case, for RESP 2 and 3, for each side: fresh connection, `HELLO <proto>`,
//! `FLUSHALL`, `FUNCTION FLUSH`, `RX.FLUSH`, load the libs, run the lines (exact
//! reply bytes recorded), `DEBUG DIGEST` (recorded: key state must match), teardown.
//!
//! Writing cases: native-vs-native (below) cannot reveal orders that native leaves
//! undefined but that are stable within one server.  Keep to one function per
//! library in `FUNCTION LIST` output and mark lists of several libraries with `~`
//! (dict order, hash-seeded per server start); sort keys collected with `pairs()`
//! and mark multi-key `{map=}`/`{set=}` replies and RESP3 maps built from Lua
//! tables with `~` (Lua table order differs between Lua 5.1 and LuaJIT).  Never use
//! `error({})` or error tables without a string `err` field (crashes native 7.0.15).
//!
//! Environment (plus `REDIS_SERVER` and `RX_MODULE_PATH`, see tests/common):
//! * `RX_DIFF_FILTER=substr`   only cases whose name contains `substr`;
//! * `RX_DIFF_NATIVE_ONLY=1`   no module; the native side runs twice and is compared
//!   with itself (proves the corpus deterministic; usable before RX exists);
//! * `RX_DIFF_DIR=path`       read the `*.case` files from another directory;
//! * `RX_DIFF_DUMP=1`          print every native reply (with `--nocapture`), to
//!   write new cases.

mod common;
use common::*;

use std::path::{Path, PathBuf};

/// RX -> native substitutions applied to the text of RX-side error replies, in order.
/// Keep every command-name mapping here.
/// `{sub}` in a native text stands for the subcommand token exactly as typed on the
/// native side (native echoes it, e.g. `'FLUSH'` or `'flush'`).
const ERROR_NAME_MAP: &[(&str, &str)] = &[
    // Whole messages whose native wording is not a simple rename.
    (
        "ERR wrong number of arguments for 'rx.flush' command",
        "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try FUNCTION HELP.",
    ),
    (
        "ERR wrong number of arguments for 'RX.FLUSH' command",
        "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try FUNCTION HELP.",
    ),
    // Arity messages: native names the container|subcommand.
    ("'rx.load'", "'function|load'"),
    ("'rx.list'", "'function|list'"),
    ("'rx.delete'", "'function|delete'"),
    ("'rx.flush'", "'function|flush'"),
    ("'rx.call_ro'", "'fcall_ro'"),
    ("'rx.call'", "'fcall'"),
    ("'RX.LOAD'", "'function|load'"),
    ("'RX.LIST'", "'function|list'"),
    ("'RX.DELETE'", "'function|delete'"),
    ("'RX.FLUSH'", "'function|flush'"),
    ("'RX.CALL_RO'", "'fcall_ro'"),
    ("'RX.CALL'", "'fcall'"),
    // Names in free text.
    ("RX.CALL_RO", "FCALL_RO"),
    ("RX.CALL", "FCALL"),
    ("rx.call_ro", "fcall_ro"),
    ("rx.call", "fcall"),
    ("RX.LOAD", "FUNCTION LOAD"),
    ("RX.LIST", "FUNCTION LIST"),
    ("RX.DELETE", "FUNCTION DELETE"),
    ("RX.FLUSH", "FUNCTION FLUSH"),
    ("rx.load", "function load"),
    ("rx.list", "function list"),
    ("rx.delete", "function delete"),
    ("rx.flush", "function flush"),
];

fn normalize_error_text(s: &str, native_args: &[Vec<u8>]) -> String {
    let sub = native_args
        .get(1)
        .map(|a| String::from_utf8_lossy(a).to_string())
        .unwrap_or_default();
    let mut s = s.to_string();
    for (rx, native) in ERROR_NAME_MAP {
        if s.contains(rx) {
            s = s.replace(rx, &native.replace("{sub}", &sub));
        }
    }
    s
}

/// Map a native command to the RX one (`FCALL` -> `RX.CALL`, ...).
fn to_rx(args: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let up = |a: &Vec<u8>| String::from_utf8_lossy(a).to_ascii_uppercase();
    if args.is_empty() {
        return vec![];
    }
    let first = up(&args[0]);
    match first.as_str() {
        "FCALL" => return [vec![b"RX.CALL".to_vec()], args[1..].to_vec()].concat(),
        "FCALL_RO" => return [vec![b"RX.CALL_RO".to_vec()], args[1..].to_vec()].concat(),
        "FUNCTION" if args.len() >= 2 => {
            let sub = up(&args[1]);
            if ["LOAD", "LIST", "DELETE", "FLUSH"].contains(&sub.as_str()) {
                return [vec![format!("RX.{}", sub).into_bytes()], args[2..].to_vec()].concat();
            }
        }
        _ => {}
    }
    args.to_vec()
}

// ---------------------------------------------------------------------------
// Corpus parsing

struct Line {
    text: String,
    lineno: usize,
    args: Vec<Vec<u8>>,
    unordered: bool,
    documented_difference: bool,
}

struct Case {
    name: String,
    file: String,
    libs: Vec<String>,
    run: Vec<Line>,
    teardown: Vec<Line>,
}

fn tokenize(line: &str) -> Result<Vec<Vec<u8>>, String> {
    let b = line.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let hex = |c: u8| -> Option<u8> { (c as char).to_digit(16).map(|d| d as u8) };
    while i < b.len() {
        if b[i] == b' ' || b[i] == b'\t' {
            i += 1;
            continue;
        }
        let mut tok = Vec::new();
        if b[i] == b'"' {
            i += 1;
            loop {
                if i >= b.len() {
                    return Err("unterminated double quote".into());
                }
                match b[i] {
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b'\\' => {
                        let c = *b.get(i + 1).ok_or("dangling backslash")?;
                        i += 2;
                        match c {
                            b'n' => tok.push(b'\n'),
                            b'r' => tok.push(b'\r'),
                            b't' => tok.push(b'\t'),
                            b'\\' => tok.push(b'\\'),
                            b'"' => tok.push(b'"'),
                            b'x' => {
                                let h = b.get(i).and_then(|&c| hex(c));
                                let l = b.get(i + 1).and_then(|&c| hex(c));
                                match (h, l) {
                                    (Some(h), Some(l)) => tok.push(h * 16 + l),
                                    _ => return Err("bad \\x escape".into()),
                                }
                                i += 2;
                            }
                            c => return Err(format!("unknown escape \\{}", c as char)),
                        }
                    }
                    c => {
                        tok.push(c);
                        i += 1;
                    }
                }
            }
            if i < b.len() && b[i] != b' ' && b[i] != b'\t' {
                return Err("quoted token must be followed by a blank".into());
            }
        } else if b[i] == b'\'' {
            i += 1;
            let start = i;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            if i >= b.len() {
                return Err("unterminated single quote".into());
            }
            tok.extend_from_slice(&b[start..i]);
            i += 1;
            if i < b.len() && b[i] != b' ' && b[i] != b'\t' {
                return Err("quoted token must be followed by a blank".into());
            }
        } else {
            while i < b.len() && b[i] != b' ' && b[i] != b'\t' {
                tok.push(b[i]);
                i += 1;
            }
        }
        out.push(tok);
    }
    Ok(out)
}

fn parse_command_line(raw: &str, lineno: usize, file: &str) -> Option<Line> {
    let t = raw.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let (documented_difference, t2) = match t.strip_prefix("! ") {
        Some(rest) => (true, rest.trim_start()),
        None => (false, t),
    };
    let (unordered, body) = match t2.strip_prefix("~ ") {
        Some(rest) => (true, rest.trim_start()),
        None => (false, t2),
    };
    let args = tokenize(body).unwrap_or_else(|e| panic!("{}:{}: {}: {}", file, lineno, e, raw));
    Some(Line {
        text: t.to_string(),
        lineno,
        args,
        unordered,
        documented_difference,
    })
}

fn parse_case_file(path: &Path) -> Vec<Case> {
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {}", path.display(), e));
    let mut cases: Vec<Case> = Vec::new();
    #[derive(PartialEq)]
    enum Sec {
        Header,
        Intro,
        Lib,
        Run,
        Teardown,
    }
    let mut sec = Sec::Header;
    let mut lib_buf: Vec<&str> = Vec::new();
    fn flush_lib(cases: &mut [Case], lib_buf: &mut Vec<&str>) {
        let mut lines = std::mem::take(lib_buf);
        while lines.last().map(|l| l.trim().is_empty()) == Some(true) {
            lines.pop();
        }
        cases.last_mut().unwrap().libs.push(lines.join("\n"));
    }
    for (idx, line) in text.lines().enumerate() {
        let lineno = idx + 1;
        if let Some(section) = line.strip_prefix("@@") {
            if sec == Sec::Lib {
                flush_lib(&mut cases, &mut lib_buf);
            }
            if let Some(name) = line.strip_prefix("@@@") {
                let name = name.trim();
                assert!(!name.is_empty(), "{}:{}: empty case name", file, lineno);
                cases.push(Case {
                    name: name.to_string(),
                    file: file.clone(),
                    libs: vec![],
                    run: vec![],
                    teardown: vec![],
                });
                sec = Sec::Intro;
                continue;
            }
            assert!(
                sec != Sec::Header,
                "{}:{}: section before the first @@@ case",
                file,
                lineno
            );
            sec = match section.trim() {
                "lib" => Sec::Lib,
                "run" => Sec::Run,
                "teardown" => Sec::Teardown,
                other => panic!("{}:{}: unknown section {:?}", file, lineno, other),
            };
            continue;
        }
        match sec {
            Sec::Header => {}
            Sec::Intro => {
                let t = line.trim();
                assert!(
                    t.is_empty() || t.starts_with('#'),
                    "{}:{}: text outside a section: {}",
                    file,
                    lineno,
                    line
                );
            }
            Sec::Lib => lib_buf.push(line),
            Sec::Run => {
                if let Some(l) = parse_command_line(line, lineno, &file) {
                    cases.last_mut().unwrap().run.push(l);
                }
            }
            Sec::Teardown => {
                if let Some(l) = parse_command_line(line, lineno, &file) {
                    cases.last_mut().unwrap().teardown.push(l);
                }
            }
        }
    }
    if sec == Sec::Lib {
        flush_lib(&mut cases, &mut lib_buf);
    }
    cases
}

fn load_corpus() -> Vec<Case> {
    let dir = match std::env::var("RX_DIFF_DIR") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential"),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {}", dir.display(), e))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().map(|x| x == "case").unwrap_or(false))
        .collect();
    files.sort();
    let mut all: Vec<Case> = Vec::new();
    for f in &files {
        all.extend(parse_case_file(f));
    }
    let mut seen = std::collections::HashMap::new();
    for c in &all {
        if let Some(prev) = seen.insert(c.name.clone(), c.file.clone()) {
            panic!(
                "duplicate case name {:?} (in {} and {})",
                c.name, prev, c.file
            );
        }
    }
    all
}

// ---------------------------------------------------------------------------
// Reply normalisation

/// Copy one frame from `b[*pos..]` to `out`, rewriting error texts with `f`.
fn map_errors(
    b: &[u8],
    pos: &mut usize,
    out: &mut Vec<u8>,
    f: &dyn Fn(&str) -> String,
) -> Result<(), String> {
    let start = *pos;
    let end_line = b[start..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or("unterminated")?
        + start;
    let line = &b[start..end_line];
    *pos = end_line + 2;
    let n = || -> Result<i64, String> {
        std::str::from_utf8(&line[1..])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "bad length".to_string())
    };
    match line.first().copied().ok_or("empty")? {
        b'-' => {
            let t = f(&String::from_utf8_lossy(&line[1..]));
            out.push(b'-');
            out.extend_from_slice(t.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        b'!' => {
            let len = n()? as usize;
            let body = &b[*pos..*pos + len];
            *pos += len + 2;
            let t = f(&String::from_utf8_lossy(body));
            out.extend_from_slice(format!("!{}\r\n", t.len()).as_bytes());
            out.extend_from_slice(t.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        b'$' | b'=' => {
            let len = n()?;
            let take = if len >= 0 { len as usize + 2 } else { 0 };
            out.extend_from_slice(&b[start..*pos + take]);
            *pos += take;
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            out.extend_from_slice(&b[start..*pos]);
            let mut k = n()?.max(0);
            if line[0] == b'%' || line[0] == b'|' {
                k *= 2;
            }
            if line[0] == b'|' {
                k += 1;
            }
            for _ in 0..k {
                map_errors(b, pos, out, f)?;
            }
        }
        _ => out.extend_from_slice(&b[start..*pos]),
    }
    Ok(())
}

fn normalize_rx_reply(b: &[u8], native_args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    match map_errors(b, &mut pos, &mut out, &|t: &str| {
        normalize_error_text(t, native_args)
    }) {
        Ok(()) if pos == b.len() => out,
        _ => b.to_vec(),
    }
}

/// Order-insensitive canonical form: top-level elements sorted.
fn unordered_canon(b: &[u8]) -> String {
    let key = |r: &Reply| format!("{:?}", r);
    match parse_reply(b) {
        Reply::Array(mut v) => {
            v.sort_by_key(key);
            format!("{:?}", Reply::Array(v))
        }
        Reply::Set(mut v) => {
            v.sort_by_key(key);
            format!("{:?}", Reply::Set(v))
        }
        Reply::Map(mut v) => {
            v.sort_by_key(|(k, val)| (key(k), key(val)));
            format!("{:?}", Reply::Map(v))
        }
        other => format!("{:?}", other),
    }
}

// ---------------------------------------------------------------------------
// Running

struct Recorded {
    label: String,
    /// The command as written in the corpus (native form).
    args: Vec<Vec<u8>>,
    bytes: Vec<u8>,
    unordered: bool,
    documented_difference: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Native,
    Rx,
}

struct Crash {
    command: String,
    error: String,
}

fn run_side(server: &Server, case: &Case, proto: u8, side: Side) -> Result<Vec<Recorded>, Crash> {
    let mut c = Conn::try_connect(server.port()).map_err(|e| Crash {
        command: "<connect>".into(),
        error: e.to_string(),
    })?;
    let mut exec = |args: Vec<Vec<u8>>, label: &str| -> Result<Vec<u8>, Crash> {
        c.try_raw(&args).map_err(|e| Crash {
            command: label.to_string(),
            error: e.to_string(),
        })
    };
    let p = proto.to_string();
    for setup in [
        vec!["HELLO", p.as_str()],
        vec!["FLUSHALL"],
        vec!["FUNCTION", "FLUSH"],
        vec!["RX.FLUSH"],
    ] {
        let args: Vec<Vec<u8>> = setup.iter().map(|s| s.as_bytes().to_vec()).collect();
        exec(args, &setup.join(" "))?;
    }
    let mut rec = Vec::new();
    for (i, lib) in case.libs.iter().enumerate() {
        let args = match side {
            Side::Native => vec![
                b"FUNCTION".to_vec(),
                b"LOAD".to_vec(),
                lib.as_bytes().to_vec(),
            ],
            Side::Rx => vec![b"RX.LOAD".to_vec(), lib.as_bytes().to_vec()],
        };
        let label = format!(
            "<load lib #{}: {}>",
            i + 1,
            lib.lines().next().unwrap_or("")
        );
        let native_args = vec![
            b"FUNCTION".to_vec(),
            b"LOAD".to_vec(),
            lib.as_bytes().to_vec(),
        ];
        let bytes = exec(args, &label)?;
        rec.push(Recorded {
            label,
            args: native_args,
            bytes,
            unordered: false,
            documented_difference: false,
        });
    }
    for l in &case.run {
        let args = match side {
            Side::Native => l.args.clone(),
            Side::Rx => to_rx(&l.args),
        };
        let label = format!("line {}: {}", l.lineno, l.text);
        let bytes = exec(args, &label)?;
        rec.push(Recorded {
            label,
            args: l.args.clone(),
            bytes,
            unordered: l.unordered,
            documented_difference: l.documented_difference,
        });
    }
    let bytes = exec(vec![b"DEBUG".to_vec(), b"DIGEST".to_vec()], "DEBUG DIGEST")?;
    rec.push(Recorded {
        label: "DEBUG DIGEST (key state)".into(),
        args: vec![b"DEBUG".to_vec(), b"DIGEST".to_vec()],
        bytes,
        unordered: false,
        documented_difference: false,
    });
    for l in &case.teardown {
        let args = match side {
            Side::Native => l.args.clone(),
            Side::Rx => to_rx(&l.args),
        };
        exec(args, &format!("teardown line {}: {}", l.lineno, l.text))?;
    }
    Ok(rec)
}

/// Keep huge escaped replies readable.
fn shorten(s: &str) -> String {
    const MAX: usize = 3000;
    if s.len() <= MAX {
        return s.to_string();
    }
    let head: String = s.chars().take(2000).collect();
    let tail: String = s
        .chars()
        .rev()
        .take(600)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{} ...[{} chars elided]... {}", head, s.len() - 2600, tail)
}

/// The useful part of the log of the current server run: the crash report's stack
/// trace when there is one, else the last lines.
fn crash_log_excerpt(log: &str) -> String {
    let run = match log.rfind("Redis is starting") {
        Some(i) => &log[log[..i].rfind('\n').map(|j| j + 1).unwrap_or(0)..],
        None => log,
    };
    let lines: Vec<&str> = run.lines().collect();
    if let Some(i) = lines.iter().position(|l| {
        l.contains("crashed by signal") || l.contains("ASSERTION FAILED") || l.contains("panicked")
    }) {
        let st = lines
            .iter()
            .position(|l| l.contains("STACK TRACE"))
            .unwrap_or(i);
        let from = i.min(st);
        return lines[from.saturating_sub(2)..(from + 45).min(lines.len())].join("\n");
    }
    lines[lines.len().saturating_sub(25)..].join("\n")
}

fn env_flag(name: &str) -> bool {
    matches!(std::env::var(name).as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

#[test]
fn differential_corpus() {
    let native_only = env_flag("RX_DIFF_NATIVE_ONLY");
    let dump = env_flag("RX_DIFF_DUMP");
    let filter = std::env::var("RX_DIFF_FILTER").unwrap_or_default();
    let cases: Vec<Case> = load_corpus()
        .into_iter()
        .filter(|c| c.name.contains(&filter))
        .collect();
    assert!(
        !cases.is_empty(),
        "no cases match RX_DIFF_FILTER={:?}",
        filter
    );

    let mut server = if native_only {
        Server::start_native(&[])
    } else {
        Server::start()
    };
    let (a_side, b_side, b_name) = if native_only {
        (Side::Native, Side::Native, "native(2nd)")
    } else {
        (Side::Native, Side::Rx, "rx")
    };

    let mut failures: Vec<String> = Vec::new();
    let mut documented: Vec<String> = Vec::new();
    let mut compared = 0usize;
    'cases: for case in &cases {
        for proto in [2u8, 3] {
            let mut runs = Vec::new();
            for (side, side_name) in [(a_side, "native"), (b_side, b_name)] {
                match run_side(&server, case, proto, side) {
                    Ok(r) => runs.push(r),
                    Err(crash) => {
                        // A crashing server may still be writing its crash report.
                        let deadline =
                            std::time::Instant::now() + std::time::Duration::from_secs(3);
                        while server.is_alive() && std::time::Instant::now() < deadline {
                            std::thread::sleep(std::time::Duration::from_millis(50));
                        }
                        let alive = server.is_alive();
                        let log_tail = crash_log_excerpt(&server.log());
                        failures.push(format!(
                            "CRASH/HANG in case {:?} ({}), RESP{}, side {}, at {}: {} (server {}); log tail:\n{}",
                            case.name,
                            case.file,
                            proto,
                            side_name,
                            crash.command,
                            crash.error,
                            if alive { "still running: hung or dropped the connection" } else { "died" },
                            log_tail
                        ));
                        server.restart();
                        continue 'cases;
                    }
                }
            }
            let (a, b) = (&runs[0], &runs[1]);
            if dump {
                println!("=== {} ({}) RESP{}", case.name, case.file, proto);
                for r in a {
                    println!("  {}\n    -> {}", r.label, escape_bytes(&r.bytes));
                }
            }
            if a.len() != b.len() {
                failures.push(format!(
                    "case {:?}: different number of replies ({} vs {})",
                    case.name,
                    a.len(),
                    b.len()
                ));
                continue;
            }
            for (ra, rb) in a.iter().zip(b.iter()) {
                if ra.documented_difference && b_side == Side::Rx {
                    documented.push(format!(
                        "documented difference, case {:?} RESP{} {}\n    native: {}\n        rx: {}",
                        case.name,
                        proto,
                        ra.label,
                        shorten(&escape_bytes(&ra.bytes)),
                        shorten(&escape_bytes(&rb.bytes))
                    ));
                    continue;
                }
                compared += 1;
                let bn = if b_side == Side::Rx {
                    normalize_rx_reply(&rb.bytes, &ra.args)
                } else {
                    rb.bytes.clone()
                };
                let same = if ra.unordered {
                    unordered_canon(&ra.bytes) == unordered_canon(&bn)
                } else {
                    ra.bytes == bn
                };
                if !same {
                    let first_diff = ra
                        .bytes
                        .iter()
                        .zip(bn.iter())
                        .position(|(x, y)| x != y)
                        .unwrap_or(ra.bytes.len().min(bn.len()));
                    failures.push(format!(
                        "MISMATCH case {:?} ({}) RESP{} {}\n    native: {}\n    {:>6}: {}{}{}",
                        case.name,
                        case.file,
                        proto,
                        ra.label,
                        shorten(&escape_bytes(&ra.bytes)),
                        b_name,
                        shorten(&escape_bytes(&rb.bytes)),
                        if bn != rb.bytes {
                            format!("\n    (rx normalised: {})", shorten(&escape_bytes(&bn)))
                        } else {
                            String::new()
                        },
                        if ra.bytes.len() > 200 || bn.len() > 200 {
                            format!(
                                "\n    (lengths {} vs {}, first difference at byte {})",
                                ra.bytes.len(),
                                bn.len(),
                                first_diff
                            )
                        } else {
                            String::new()
                        }
                    ));
                }
            }
        }
    }
    for d in &documented {
        println!("{}\n", d);
    }
    for f in &failures {
        println!("{}\n", f);
    }
    println!(
        "{} cases, {} commands compared, {} failures",
        cases.len(),
        compared,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} differential failures (see output above)",
        failures.len()
    );
}

// ---------------------------------------------------------------------------
// Self-tests of the runner's pure parts (no server needed).

#[test]
fn runner_tokenizer() {
    let t = tokenize(r#"FCALL f 0 "a\x00b\n\"q\"\\" 'lit\x00' plain"#).unwrap();
    assert_eq!(
        t,
        vec![
            b"FCALL".to_vec(),
            b"f".to_vec(),
            b"0".to_vec(),
            b"a\x00b\n\"q\"\\".to_vec(),
            b"lit\\x00".to_vec(),
            b"plain".to_vec()
        ]
    );
    assert_eq!(
        tokenize(r#"SET "" ''"#).unwrap(),
        vec![b"SET".to_vec(), vec![], vec![]]
    );
    assert_eq!(tokenize("\"\\xff\\xFE\"").unwrap(), vec![vec![0xff, 0xfe]]);
    assert!(tokenize("\"unterminated").is_err());
    assert!(tokenize("\"a\"b").is_err());
    assert!(tokenize("\"\\q\"").is_err());
    assert!(tokenize("\"\\x1\"").is_err());
}

#[test]
fn runner_command_mapping() {
    let m = |s: &str| -> Vec<String> {
        to_rx(&tokenize(s).unwrap())
            .iter()
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect()
    };
    assert_eq!(m("FCALL f 0 a"), vec!["RX.CALL", "f", "0", "a"]);
    assert_eq!(m("fcall_ro f 0"), vec!["RX.CALL_RO", "f", "0"]);
    assert_eq!(
        m("function load replace code"),
        vec!["RX.LOAD", "replace", "code"]
    );
    assert_eq!(m("FUNCTION List WITHCODE"), vec!["RX.LIST", "WITHCODE"]);
    assert_eq!(m("FUNCTION DELETE x"), vec!["RX.DELETE", "x"]);
    assert_eq!(m("FUNCTION FLUSH"), vec!["RX.FLUSH"]);
    assert_eq!(m("FUNCTION STATS"), vec!["FUNCTION", "STATS"]);
    assert_eq!(m("FUNCTION"), vec!["FUNCTION"]);
    assert_eq!(m("SET k v"), vec!["SET", "k", "v"]);
}

#[test]
fn runner_error_normalisation() {
    let args = tokenize("FUNCTION FLUSH ASYNC SYNC").unwrap();
    assert_eq!(
        normalize_rx_reply(
            b"-ERR wrong number of arguments for 'rx.flush' command\r\n",
            &args
        ),
        b"-ERR unknown subcommand or wrong number of arguments for 'FLUSH'. Try FUNCTION HELP.\r\n"
            .to_vec()
    );
    let args = tokenize("FCALL").unwrap();
    assert_eq!(
        normalize_rx_reply(
            b"-ERR wrong number of arguments for 'rx.call' command\r\n",
            &args
        ),
        b"-ERR wrong number of arguments for 'fcall' command\r\n".to_vec()
    );
    assert_eq!(
        normalize_rx_reply(
            b"-ERR wrong number of arguments for 'rx.call_ro' command\r\n",
            &args
        ),
        b"-ERR wrong number of arguments for 'fcall_ro' command\r\n".to_vec()
    );
    assert_eq!(
        normalize_rx_reply(
            b"-ERR wrong number of arguments for 'rx.load' command\r\n",
            &args
        ),
        b"-ERR wrong number of arguments for 'function|load' command\r\n".to_vec()
    );
    assert_eq!(
        normalize_rx_reply(b"-ERR RX.FLUSH only supports SYNC|ASYNC option\r\n", &args),
        b"-ERR FUNCTION FLUSH only supports SYNC|ASYNC option\r\n".to_vec()
    );
    // Nested errors are rewritten, bulk strings are not; blob errors get a new length.
    assert_eq!(
        normalize_rx_reply(
            b"*3\r\n$7\r\nRX.CALL\r\n-ERR RX.CALL x\r\n!10\r\nRX.LOAD xy\r\n",
            &args
        ),
        b"*3\r\n$7\r\nRX.CALL\r\n-ERR FCALL x\r\n!16\r\nFUNCTION LOAD xy\r\n".to_vec()
    );
    // Maps and attributes are walked too.
    assert_eq!(
        normalize_rx_reply(b"|1\r\n+a\r\n-RX.LIST\r\n%1\r\n+k\r\n-RX.DELETE\r\n", &args),
        b"|1\r\n+a\r\n-FUNCTION LIST\r\n%1\r\n+k\r\n-FUNCTION DELETE\r\n".to_vec()
    );
}

#[test]
fn runner_unordered_comparison() {
    assert_eq!(
        unordered_canon(b"*3\r\n$1\r\nb\r\n:1\r\n$1\r\na\r\n"),
        unordered_canon(b"*3\r\n$1\r\na\r\n$1\r\nb\r\n:1\r\n")
    );
    assert_eq!(
        unordered_canon(b"%2\r\n+x\r\n:1\r\n+y\r\n:2\r\n"),
        unordered_canon(b"%2\r\n+y\r\n:2\r\n+x\r\n:1\r\n")
    );
    assert_ne!(
        unordered_canon(b"~2\r\n+x\r\n+y\r\n"),
        unordered_canon(b"*2\r\n+x\r\n+y\r\n")
    );
}

#[test]
fn runner_case_file_parsing() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("case-parse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("t.case");
    std::fs::write(
        &f,
        "header text\n@@@ one\n# comment\n@@ lib\n#!lua name=a\nline2\n\n\n@@ lib\n#!lua name=b\n@@ run\nSET k v\n\n# skipped\n~ SMEMBERS s\n@@ teardown\nDEL k\n@@@ two\n@@ run\nPING\n",
    )
    .unwrap();
    let cases = parse_case_file(&f);
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0].name, "one");
    assert_eq!(
        cases[0].libs,
        vec![
            "#!lua name=a\nline2".to_string(),
            "#!lua name=b".to_string()
        ]
    );
    assert_eq!(cases[0].run.len(), 2);
    assert!(!cases[0].run[0].unordered);
    assert!(cases[0].run[1].unordered);
    assert_eq!(
        cases[0].run[1].args,
        vec![b"SMEMBERS".to_vec(), b"s".to_vec()]
    );
    assert_eq!(cases[0].teardown.len(), 1);
    assert_eq!(cases[1].run[0].args, vec![b"PING".to_vec()]);
    std::fs::remove_dir_all(&dir).ok();
}
