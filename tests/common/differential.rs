//! Differential test runner: native Redis (the oracle) versus RX, on ONE server.
//!
//! Shared by tests/differential.rs (corpus tests/differential/: Functions) and
//! tests/differential_eval.rs (corpus tests/differential_eval/: EVAL family), through
//! [`run_corpus`].
//!
//! Every `*.case` file of a corpus holds several cases:
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
//!   A line starting with `% ` is a documented difference only on servers whose
//!   native Lua sandbox lacks the security fixes that RX keeps (see below); on every
//!   other server it is compared normally.  Mark with `%` exactly the lines whose
//!   native reply shows such a hole, nothing else.  `! ~ ` and `% ~ ` combine.
//! * `@@ teardown`: same syntax; run after each side, replies not compared (use it
//!   to reset configs, delete ACL users, ...).
//!
//! On the RX side, commands are mapped: `FCALL`->`RX.CALL`, `FCALL_RO`->`RX.CALL_RO`,
//! `FUNCTION LOAD|LIST|DELETE|FLUSH`->`RX.LOAD|LIST|DELETE|FLUSH`, `EVAL`->`RX.EVAL`,
//! `EVALSHA`->`RX.EVALSHA`, `EVAL_RO`->`RX.EVAL_RO`, `EVALSHA_RO`->`RX.EVALSHA_RO`,
//! `SCRIPT <sub> ...`->`RX.SCRIPT <sub> ...` (case-insensitive); everything else runs
//! unchanged.  RX error texts are mapped back to the native
//! command names before comparing (see [`ERROR_NAME_MAP`]).
//!
//! For each case, for RESP 2 and 3, for each side: fresh connection, `HELLO <proto>`,
//! `FLUSHALL`, `FUNCTION FLUSH`, `RX.FLUSH`, `SCRIPT FLUSH`, `RX.SCRIPT FLUSH` (setup
//! replies ignored: the RX commands may not exist), load the libs, run the lines (exact
//! reply bytes recorded), `DEBUG DIGEST` (recorded: key state must match), teardown.
//!
//! Servers without the sandbox fixes: before the first case, the runner probes the
//! native side once (plain EVALs, no state left behind) for three holes that RX must
//! not copy, and prints what it found (on stderr, so it shows in every run):
//! * `getfenv`/`setfenv`/`newproxy` reachable from scripts;
//! * a writable string metatable (CVE-2025-46818): `mt.__index = mt.__index` on
//!   `getmetatable('')` succeeds;
//! * CR/LF from `error()` written raw into the reply (CVE-2025-67733).
//!
//! Debian 12's redis-server 7.0.15 has all three fixes; the upstream 8.0.2 and 8.1.1
//! tarballs (scripts/servers.sh) have none.  Where any hole is found, `%` lines are
//! treated as `!` lines, and two precautions keep them from disturbing the lines and
//! cases that follow:
//! * each `%` line is sent followed by `ECHO <fence>`, and everything before the
//!   fence's reply is its reply ([`Conn::try_raw_fenced`]): a native error with CR/LF
//!   arrives as two frames there, and reading exactly one would desync the connection
//!   for the rest of the case.  Reconnecting instead would lose the connection's state
//!   (protocol, AUTH) and the evidence; the fence keeps both and shows every byte the
//!   native server sent.  So a `%` line must not run inside MULTI or as a user that
//!   may not run `ECHO`;
//! * after the native side of a case that holds `%` lines has run, the server is
//!   restarted: a poisoned string metatable leaks into later libraries, and Valkey's
//!   function VM survives `FUNCTION FLUSH`, so the per-case flushes cannot undo it.
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
//! * `RX_DIFF_DIR=path`       the ignored test `whole_corpus_from_rx_diff_dir` reads
//!   the `*.case` files of that directory (its own corpus when unset), all in one server;
//! * `RX_DIFF_DUMP=1`          print every native reply (with `--nocapture`), to
//!   write new cases.

use super::*;
use std::io::Write;
use std::path::{Path, PathBuf};

/// RX -> native substitutions applied to the text of RX-side error replies, in order.
/// Keep every command-name mapping here (and in [`ERROR_NAME_MAP_NOCASE`]).
/// `{sub}` in a native text stands for the subcommand token exactly as typed on the
/// native side (native echoes it, e.g. `'FLUSH'` or `'flush'`).
pub const ERROR_NAME_MAP: &[(&str, &str)] = &[
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

/// EVAL family: RX -> native substitutions matched case-insensitively, applied in
/// order after [`ERROR_NAME_MAP`].  The replacement is lowercased when the matched
/// text is all lowercase, else used as written (native's free text says `EVAL`,
/// `SCRIPT FLUSH`; its arity messages say `'eval'`, `'script|load'`).
/// `{script_sub}` stands for `script|<sub>` (lowercase) when the native command was
/// `SCRIPT <known subcommand> ...`, else `script`: native's arity error for
/// `SCRIPT LOAD` is `wrong number of arguments for 'script|load' command`, while RX
/// (one command `RX.SCRIPT`) may name just `'rx.script'`.
pub const ERROR_NAME_MAP_NOCASE: &[(&str, &str)] = &[
    // Arity messages.
    ("'rx.evalsha_ro'", "'evalsha_ro'"),
    ("'rx.evalsha'", "'evalsha'"),
    ("'rx.eval_ro'", "'eval_ro'"),
    ("'rx.eval'", "'eval'"),
    ("'rx.script|", "'script|"),
    ("'rx.script'", "'{script_sub}'"),
    // Names in free text (e.g. `Please use EVAL.`, `Try SCRIPT HELP.`).
    ("rx.evalsha_ro", "EVALSHA_RO"),
    ("rx.evalsha", "EVALSHA"),
    ("rx.eval_ro", "EVAL_RO"),
    ("rx.eval", "EVAL"),
    ("rx.script", "SCRIPT"),
];

/// Subcommands of native `SCRIPT` (7.0) that have their own arity entry.
const SCRIPT_SUBCOMMANDS: &[&str] = &["debug", "exists", "flush", "help", "kill", "load"];

/// Replace every ASCII-case-insensitive occurrence of `pat` (ASCII) in `s`.
fn replace_nocase(s: &str, pat: &str, native: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let pat = pat.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    let mut from = 0;
    while let Some(off) = lower[from..].find(&pat) {
        let i = from + off;
        let found = &s[i..i + pat.len()];
        out.push_str(&s[last..i]);
        if found.chars().any(|c| c.is_ascii_uppercase()) {
            out.push_str(native);
        } else {
            out.push_str(&native.to_ascii_lowercase());
        }
        last = i + pat.len();
        from = last;
    }
    out.push_str(&s[last..]);
    out
}

pub fn normalize_error_text(s: &str, native_args: &[Vec<u8>]) -> String {
    let sub = native_args
        .get(1)
        .map(|a| String::from_utf8_lossy(a).to_string())
        .unwrap_or_default();
    let is_script = native_args
        .first()
        .map(|a| a.eq_ignore_ascii_case(b"SCRIPT"))
        .unwrap_or(false);
    let script_sub = if is_script && SCRIPT_SUBCOMMANDS.contains(&sub.to_ascii_lowercase().as_str())
    {
        format!("script|{}", sub.to_ascii_lowercase())
    } else {
        "script".to_string()
    };
    let mut s = s.to_string();
    for (rx, native) in ERROR_NAME_MAP {
        if s.contains(rx) {
            s = s.replace(rx, &native.replace("{sub}", &sub));
        }
    }
    for (rx, native) in ERROR_NAME_MAP_NOCASE {
        if s.to_ascii_lowercase().contains(rx) {
            let native = native.replace("{script_sub}", &script_sub);
            s = replace_nocase(&s, rx, &native);
        }
    }
    s
}

/// Map a native command to the RX one (`FCALL` -> `RX.CALL`, ...).
pub fn to_rx(args: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let up = |a: &Vec<u8>| String::from_utf8_lossy(a).to_ascii_uppercase();
    if args.is_empty() {
        return vec![];
    }
    let first = up(&args[0]);
    match first.as_str() {
        "FCALL" => return [vec![b"RX.CALL".to_vec()], args[1..].to_vec()].concat(),
        "FCALL_RO" => return [vec![b"RX.CALL_RO".to_vec()], args[1..].to_vec()].concat(),
        "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" | "SCRIPT" => {
            return [
                vec![format!("RX.{}", first).into_bytes()],
                args[1..].to_vec(),
            ]
            .concat()
        }
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

pub struct Line {
    pub text: String,
    pub lineno: usize,
    pub args: Vec<Vec<u8>>,
    pub unordered: bool,
    /// `! `: never compared.
    pub documented_difference: bool,
    /// `% `: not compared where the native sandbox lacks the fixes ([`SandboxHoles`]).
    pub unpatched_difference: bool,
}

pub struct Case {
    pub name: String,
    pub file: String,
    pub libs: Vec<String>,
    pub run: Vec<Line>,
    pub teardown: Vec<Line>,
}

pub fn tokenize(line: &str) -> Result<Vec<Vec<u8>>, String> {
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
    let (documented_difference, unpatched_difference, t2) =
        match (t.strip_prefix("! "), t.strip_prefix("% ")) {
            (Some(rest), _) => (true, false, rest.trim_start()),
            (_, Some(rest)) => (false, true, rest.trim_start()),
            _ => (false, false, t),
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
        unpatched_difference,
    })
}

pub fn parse_case_file(path: &Path) -> Vec<Case> {
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

pub fn load_corpus(default_dir: &Path) -> Vec<Case> {
    let dir = match std::env::var("RX_DIFF_DIR") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => default_dir.to_path_buf(),
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
            out.push(b'-');
            match std::str::from_utf8(&line[1..]) {
                Ok(text) => out.extend_from_slice(f(text).as_bytes()),
                // Not text (an error quoting a byte of the script): compared as it is.
                Err(_) => out.extend_from_slice(&line[1..]),
            }
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

pub fn normalize_rx_reply(b: &[u8], native_args: &[Vec<u8>]) -> Vec<u8> {
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
pub fn unordered_canon(b: &[u8]) -> String {
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
// Probing the native sandbox

/// The holes of the native Lua sandbox that RX deliberately does not copy, as probed on
/// the server under test. Where any is found, `% ` lines are documented differences.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SandboxHoles {
    /// `getfenv`, `setfenv` or `newproxy` is reachable from scripts.
    pub fenv: bool,
    /// The string metatable is writable (CVE-2025-46818).
    pub string_metatable: bool,
    /// CR/LF in an `error()` text reaches the wire unsanitised (CVE-2025-67733).
    pub error_crlf: bool,
}

impl SandboxHoles {
    pub fn any(&self) -> bool {
        self.fenv || self.string_metatable || self.error_crlf
    }

    /// One line for the test output.
    pub fn describe(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        format!(
            "getfenv/setfenv/newproxy exposed: {}; string metatable writable (CVE-2025-46818): {}; \
             CR/LF from error() on the wire (CVE-2025-67733): {} => `%` lines are {}",
            yes(self.fenv),
            yes(self.string_metatable),
            yes(self.error_crlf),
            if self.any() {
                "documented differences here (printed, not compared)"
            } else {
                "compared normally"
            }
        )
    }
}

/// The three probes, plain EVALs on native's script VM (no module needed):
/// * how many of `getfenv`, `setfenv`, `newproxy` are globals (0 on a fixed server);
/// * whether `mt.__index = mt.__index` on the string metatable succeeds under `pcall`
///   (it changes nothing when it does; a fixed server raises "Attempt to modify a
///   readonly table");
/// * whether an `error()` text with a LF comes back with the LF (a fixed server turns
///   CR and LF into spaces). A lone LF cannot desync the connection, unlike CR LF.
///
/// The scripts are flushed from the cache afterwards.
pub fn probe_sandbox(port: u16) -> Result<SandboxHoles, String> {
    let mut c = Conn::try_connect(port).map_err(|e| format!("connect: {e}"))?;
    let mut eval = |script: &str| -> Result<Vec<u8>, String> {
        c.try_raw(&["EVAL", script, "0"])
            .map_err(|e| format!("EVAL {script:?}: {e}"))
    };
    let unexpected =
        |what: &str, b: &[u8]| format!("{what} probe: unexpected reply {}", escape_bytes(b));

    let b = eval(
        "local n = 0 for _, k in ipairs({'getfenv', 'setfenv', 'newproxy'}) do \
         if rawget(_G, k) ~= nil then n = n + 1 end end return n",
    )?;
    let fenv = match b.as_slice() {
        b":0\r\n" => false,
        [b':', ..] => true,
        _ => return Err(unexpected("getfenv", &b)),
    };

    let b = eval(
        "local mt = getmetatable('') \
         return tostring((pcall(function() mt.__index = mt.__index end)))",
    )?;
    let string_metatable = match b.as_slice() {
        b"$5\r\nfalse\r\n" => false,
        b"$4\r\ntrue\r\n" => true,
        _ => return Err(unexpected("string metatable", &b)),
    };

    let b = eval("error('rx-probe\\nline', 0)")?;
    let error_crlf = match b.as_slice() {
        [b'-', body @ .., b'\r', b'\n'] if body.starts_with(b"ERR rx-probe") => {
            body.contains(&b'\n') || body.contains(&b'\r')
        }
        _ => return Err(unexpected("error CR/LF", &b)),
    };

    c.try_raw(&["SCRIPT", "FLUSH"])
        .map_err(|e| format!("SCRIPT FLUSH: {e}"))?;
    Ok(SandboxHoles {
        fenv,
        string_metatable,
        error_crlf,
    })
}

/// `<name> <version>` of the server on `port`, from `INFO server`.
fn server_version(port: u16) -> String {
    let Ok(mut c) = Conn::try_connect(port) else {
        return "?".into();
    };
    let info = c.try_raw(&["INFO", "server"]).unwrap_or_default();
    let info = String::from_utf8_lossy(&info);
    let field = |f: &str| {
        info.lines().find_map(|l| {
            l.strip_prefix(&format!("{f}:"))
                .map(|v| v.trim().to_string())
        })
    };
    match field("valkey_version") {
        Some(v) => format!("valkey {v}"),
        None => format!(
            "redis {}",
            field("redis_version").unwrap_or_else(|| "?".into())
        ),
    }
}

/// A fresh fence token for [`Conn::try_raw_fenced`].
fn new_fence() -> Vec<u8> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("rx-diff-fence-{}-{}", std::process::id(), n).into_bytes()
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
    /// A `%` line on a server found without the sandbox fixes.
    unpatched_difference: bool,
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

/// Runs one side of a case. `unpatched`: the server lacks the sandbox fixes, so `%`
/// lines are fenced (see the module documentation) and recorded as documented.
fn run_side(
    server: &Server,
    case: &Case,
    proto: u8,
    side: Side,
    unpatched: bool,
) -> Result<Vec<Recorded>, Crash> {
    let mut c = Conn::try_connect(server.port()).map_err(|e| Crash {
        command: "<connect>".into(),
        error: e.to_string(),
    })?;
    let mut exec = |args: Vec<Vec<u8>>, label: &str, fenced: bool| -> Result<Vec<u8>, Crash> {
        let reply = if fenced {
            c.try_raw_fenced(&args, &new_fence())
        } else {
            c.try_raw(&args)
        };
        reply.map_err(|e| Crash {
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
        vec!["SCRIPT", "FLUSH"],
        vec!["RX.SCRIPT", "FLUSH"],
    ] {
        let args: Vec<Vec<u8>> = setup.iter().map(|s| s.as_bytes().to_vec()).collect();
        exec(args, &setup.join(" "), false)?;
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
        let bytes = exec(args, &label, false)?;
        rec.push(Recorded {
            label,
            args: native_args,
            bytes,
            unordered: false,
            documented_difference: false,
            unpatched_difference: false,
        });
    }
    for l in &case.run {
        let args = match side {
            Side::Native => l.args.clone(),
            Side::Rx => to_rx(&l.args),
        };
        let label = format!("line {}: {}", l.lineno, l.text);
        let fenced = l.unpatched_difference && unpatched;
        let bytes = exec(args, &label, fenced)?;
        rec.push(Recorded {
            label,
            args: l.args.clone(),
            bytes,
            unordered: l.unordered,
            documented_difference: l.documented_difference,
            unpatched_difference: fenced,
        });
    }
    let bytes = exec(
        vec![b"DEBUG".to_vec(), b"DIGEST".to_vec()],
        "DEBUG DIGEST",
        false,
    )?;
    rec.push(Recorded {
        label: "DEBUG DIGEST (key state)".into(),
        args: vec![b"DEBUG".to_vec(), b"DIGEST".to_vec()],
        bytes,
        unordered: false,
        documented_difference: false,
        unpatched_difference: false,
    });
    for l in &case.teardown {
        let args = match side {
            Side::Native => l.args.clone(),
            Side::Rx => to_rx(&l.args),
        };
        exec(
            args,
            &format!("teardown line {}: {}", l.lineno, l.text),
            false,
        )?;
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

/// One test per corpus file: `corpus_tests!("tests/differential": call_errors, flags)`
/// makes `corpus::call_errors` running `tests/differential/call_errors.case`, and so on,
/// plus `corpus::every_case_file_has_its_test`, so a new file cannot go unrun.
// Unused in the test binaries without a corpus (this module is compiled into each).
#[allow(unused_macros)]
macro_rules! corpus_tests {
    ($dir:literal: $($file:ident),+ $(,)?) => {
        mod corpus {
            use std::path::{Path, PathBuf};

            fn corpus_dir() -> PathBuf {
                Path::new(env!("CARGO_MANIFEST_DIR")).join($dir)
            }

            $(
                #[test]
                fn $file() {
                    $crate::common::differential::run_case_file(
                        &corpus_dir().join(concat!(stringify!($file), ".case")),
                    );
                }
            )+

            #[test]
            fn every_case_file_has_its_test() {
                $crate::common::differential::assert_corpus_listed(
                    &corpus_dir(),
                    &[$(stringify!($file)),+],
                );
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use corpus_tests;

/// Every `*.case` file in `dir` is one of `listed` (file stems), and case names are
/// unique across the directory.
pub fn assert_corpus_listed(dir: &Path, listed: &[&str]) {
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {}", dir.display(), e))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "case"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "corpus files versus corpus_tests! in the test file"
    );
    // load_corpus panics on a case name used twice.
    let _ = load_corpus(dir);
}

/// Runs the cases of one corpus file (those `RX_DIFF_FILTER` selects).
pub fn run_case_file(path: &Path) {
    let filter = std::env::var("RX_DIFF_FILTER").unwrap_or_default();
    let cases: Vec<Case> = parse_case_file(path)
        .into_iter()
        .filter(|c| c.name.contains(&filter))
        .collect();
    if cases.is_empty() {
        assert!(!filter.is_empty(), "{} has no cases", path.display());
        println!(
            "no case of {} matches RX_DIFF_FILTER={filter:?}",
            path.display()
        );
        return;
    }
    run_cases(&cases);
}

/// Runs every case of the corpus in `$RX_DIFF_DIR` (else `dir`) in one server.
pub fn run_corpus(dir: &Path) {
    let filter = std::env::var("RX_DIFF_FILTER").unwrap_or_default();
    let cases: Vec<Case> = load_corpus(dir)
        .into_iter()
        .filter(|c| c.name.contains(&filter))
        .collect();
    assert!(
        !cases.is_empty(),
        "no cases match RX_DIFF_FILTER={:?}",
        filter
    );
    run_cases(&cases);
}

/// Runs `cases` on one fresh server, native side then RX side, prints
/// `N cases, M commands compared, K failures`, and panics on any failure.
fn run_cases(cases: &[Case]) {
    let native_only = env_flag("RX_DIFF_NATIVE_ONLY");
    let dump = env_flag("RX_DIFF_DUMP");

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
    let holes = probe_sandbox(server.port())
        .unwrap_or_else(|e| panic!("probing the native Lua sandbox failed: {e}"));
    // Straight to stderr, past the test harness's capture: every run shows what was found.
    let _ = writeln!(
        std::io::stderr(),
        "differential: {} ({}): native sandbox: {}",
        server_version(server.port()),
        redis_server_bin(),
        holes.describe()
    );

    let mut failures: Vec<String> = Vec::new();
    let mut documented: Vec<String> = Vec::new();
    let mut compared = 0usize;
    'cases: for case in cases {
        for proto in [2u8, 3] {
            let mut runs = Vec::new();
            for (side, side_name) in [(a_side, "native"), (b_side, b_name)] {
                match run_side(&server, case, proto, side, holes.any()) {
                    Ok(r) => {
                        runs.push(r);
                        // What a native hole changed may outlive the flushes (a poisoned
                        // string metatable in Valkey's function VM): start afresh.
                        if side == Side::Native
                            && holes.any()
                            && case.run.iter().any(|l| l.unpatched_difference)
                        {
                            server.restart();
                        }
                    }
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
                if (ra.documented_difference || ra.unpatched_difference) && b_side == Side::Rx {
                    documented.push(format!(
                        "{}, case {:?} RESP{} {}\n    native: {}\n        rx: {}",
                        if ra.documented_difference {
                            "documented difference"
                        } else {
                            "documented difference on a server without the sandbox fixes (%)"
                        },
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
