//! Fuzzing campaigns against real redis-server processes. `make fuzz` runs them all:
//! `cargo test --release --test fuzz -- --ignored --test-threads=1 --nocapture`
//! (each campaign is an `#[ignore]`d test, so a plain `cargo test` skips them).
//!
//! Campaigns (one test each):
//! * `a_payload_mutation`: mutated `RX.DUMP` and `RX.APPLY` payloads (real ones, captured
//!   from a server and from an AOF) through `RX.RESTORE` and `RX.APPLY` (which a client
//!   is refused) and, in batches, through the AOF and `DEBUG LOADAOF`.
//! * `b_library_mutation_vs_native`: mutated libraries through `FUNCTION LOAD REPLACE`
//!   (native server) and `RX.LOAD REPLACE` (RX server): both succeed or both fail.
//! * `c_codecs_vs_native`: cjson, cmsgpack and struct inputs through `EVAL` (native) and
//!   `RX.EVAL`: same reply.
//! * `d_busy_kill_multi_races`: spinning functions and scripts, in and out of MULTI/EXEC,
//!   with other clients sending RX.KILL, RX.SCRIPT KILL, PING, ... at random moments.
//! * `e_memory_bombs`: allocation bombs under a small `rx.memory-limit-mb`.
//! * `f_safe_deploys`: conditional loads, dry runs, deletes, flushes, rollbacks and history
//!   depths, alone and in MULTI/EXEC, checked against the condition each one states and
//!   the history's invariants, with DEBUG RELOAD and AOF restarts along the way.
//!
//! Every campaign ends with a dataset reload check: `DEBUG RELOAD`, then `SAVE` and a
//! restart, each followed by the same keyspace digest and `RX.LIST WITHCODE`.
//!
//! A campaign fails on a crash (process gone, or a crash report, an assertion or an RX
//! panic in the log), a hang (no reply within [`REPLY_BOUND`]), a state change after an
//! error reply, or a mismatch with native Redis. It keeps going after a failure
//! (restarting the server when it died) until its budget is spent, then fails with every
//! failure it saw. Differences of error text from native are printed as notes, not failures.
//!
//! Environment:
//! * `RX_FUZZ_SECONDS`: wall-clock budget per campaign (default 20);
//! * `RX_FUZZ_SEED`: the seed (decimal or 0x-hex; default: from the clock). Always printed;
//!   case `i` of a campaign draws from a generator seeded by (seed, campaign, i), so the
//!   same seed replays the same cases (plus `RX_FUZZ_CASES=i+1` to stop right after one);
//! * `RX_FUZZ_CASES`: at most this many cases per campaign.
//!
//! A failure prints the seed, the case number, the commands of the case (escaped as
//! redis-cli reads them; the full text also goes to `target/tmp/fuzz-failures/`) and the
//! tail of the server log.

mod common;

use common::differential::normalize_error_text;
use common::stdlib::comparable_listing;
use common::{escape_bytes, info_field, parse_reply, sha1, Conn, Reply, Server};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A reply that takes longer than this is a hang.
const REPLY_BOUND: Duration = Duration::from_secs(30);
/// A campaign stops early after this many failures, or this many kinds of failure.
const MAX_FAILURES: usize = 500;
const MAX_FAILURE_KINDS: usize = 12;

type Cmd = Vec<Vec<u8>>;

fn cmd<A: AsRef<[u8]>>(args: &[A]) -> Cmd {
    args.iter().map(|a| a.as_ref().to_vec()).collect()
}

// ---------------------------------------------------------------------------
// Configuration

fn budget() -> Duration {
    let secs = std::env::var("RX_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| *s >= 0.0)
        .unwrap_or(20.0);
    Duration::from_secs_f64(secs)
}

/// `RX_FUZZ_TRACE=1`: print every case's commands and replies (campaign e).
fn trace() -> bool {
    matches!(std::env::var("RX_FUZZ_TRACE").as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

fn case_cap() -> Option<u64> {
    std::env::var("RX_FUZZ_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn base_seed() -> u64 {
    if let Ok(s) = std::env::var("RX_FUZZ_SEED") {
        let s = s.trim();
        let parsed = match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        };
        if let Some(v) = parsed {
            return v;
        }
        panic!("RX_FUZZ_SEED={s:?} is not a number");
    }
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    splitmix(t ^ u64::from(std::process::id()).rotate_left(32)) % 1_000_000_000_000
}

// ---------------------------------------------------------------------------
// A small PRNG (splitmix64): no dependency, and the same sequence everywhere.

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(splitmix(seed))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    fn upto(&mut self, n: usize) -> usize {
        self.below(n as u64 + 1) as usize
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo) as u64 + 1) as i64
    }
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
    fn pick<'a, T>(&mut self, s: &'a [T]) -> &'a T {
        &s[self.below(s.len() as u64) as usize]
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    /// A size skewed towards small values: up to `max`, each bit length equally likely.
    fn size(&mut self, max: usize) -> usize {
        let bits = 64 - (max as u64).leading_zeros() as u64;
        let b = self.below(bits + 1);
        let cap = if b >= 63 {
            max
        } else {
            ((1usize << b) - 1).min(max)
        };
        self.upto(cap)
    }
}

// ---------------------------------------------------------------------------
// Campaign bookkeeping: cases, failures, notes, crash detection

/// Log lines that mean the server (or RX inside it) crashed or hit a bug.
const CRASH_MARKERS: &[&str] = &[
    "REDIS BUG REPORT",
    "ASSERTION FAILED",
    "crashed by signal",
    "Guru Meditation",
    "RX panic",
];

struct Campaign {
    name: &'static str,
    seed: u64,
    started: Instant,
    budget: Duration,
    cap: Option<u64>,
    cases: u64,
    failures: Vec<String>,
    /// Per kind of failure: how many, and the first case.
    kinds: BTreeMap<String, (usize, u64)>,
    notes: BTreeMap<String, (usize, Vec<String>)>,
    counters: BTreeMap<String, u64>,
    /// How much of each server log (by port) was already checked for crash markers.
    log_seen: BTreeMap<PathBuf, usize>,
}

impl Campaign {
    fn new(name: &'static str) -> Campaign {
        let base = base_seed();
        let seed = splitmix(base ^ fnv(name.as_bytes()));
        let c = Campaign {
            name,
            seed: base,
            started: Instant::now(),
            budget: budget(),
            cap: case_cap(),
            cases: 0,
            failures: Vec::new(),
            kinds: BTreeMap::new(),
            notes: BTreeMap::new(),
            counters: BTreeMap::new(),
            log_seen: BTreeMap::new(),
        };
        println!(
            "[fuzz] {name}: RX_FUZZ_SEED={base} (campaign seed {seed:#x}), budget {:?}{}",
            c.budget,
            c.cap
                .map(|n| format!(", at most {n} cases"))
                .unwrap_or_default()
        );
        c
    }

    /// The next case's number and generator, or None when the budget is spent.
    fn next_case(&mut self) -> Option<(u64, Rng)> {
        if self.started.elapsed() >= self.budget
            || self.cap.is_some_and(|n| self.cases >= n)
            || self.failures.len() >= MAX_FAILURES
            || self.kinds.len() >= MAX_FAILURE_KINDS
        {
            return None;
        }
        let i = self.cases;
        self.cases += 1;
        let s =
            splitmix(self.seed ^ fnv(self.name.as_bytes())) ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D);
        Some((i, Rng::new(s)))
    }

    fn count(&mut self, what: &str) {
        *self.counters.entry(what.to_string()).or_default() += 1;
    }

    /// A difference worth printing that is not a failure (e.g. an error text that differs
    /// from native's). The first example of each kind is kept.
    fn note(&mut self, kind: &str, example: impl FnOnce() -> String) {
        let e = self.notes.entry(kind.to_string()).or_default();
        e.0 += 1;
        if e.1.len() < 3 {
            e.1.push(example());
        }
    }

    /// Records a failure: prints the seed, the case, its commands and the server log's tail,
    /// and writes the full commands to a file.
    fn fail(&mut self, server: &Server, case: u64, kind: &str, cmds: &[Cmd], detail: &str) {
        let n = self.kinds.entry(kind.to_string()).or_insert((0, case));
        n.0 += 1;
        let seen = n.0;
        let summary = format!("case {case}: {kind}: {}", shorten(detail, 300));
        self.failures.push(summary);
        if seen > 2 {
            println!(
                "[fuzz] {} case {case}: {kind} again ({seen} times)",
                self.name
            );
            return;
        }
        let file = write_repro(self.name, self.seed, case, kind, cmds, detail);
        let mut out = format!(
            "\n[fuzz] ===== FAILURE in {} =====\n  kind: {kind}\n  replay: RX_FUZZ_SEED={} RX_FUZZ_CASES={} (case {case})\n  detail: {}\n  commands ({}; full text in {}):\n",
            self.name,
            self.seed,
            case + 1,
            shorten(detail, 2000),
            cmds.len(),
            file.display()
        );
        for c in cmds.iter().rev().take(12).rev() {
            out.push_str("    ");
            out.push_str(&shorten(&show_cmd(c), 1500));
            out.push('\n');
        }
        out.push_str(&format!(
            "  server log tail ({}):\n{}\n[fuzz] =====\n",
            server.dir().join("redis.log").display(),
            log_tail(&server.log(), 40)
        ));
        println!("{out}");
    }

    /// Crash markers that appeared in `server`'s log since the last check.
    fn new_crash_lines(&mut self, server: &Server) -> Option<String> {
        let log = server.log();
        let seen = self.log_seen.entry(server.dir().to_path_buf()).or_insert(0);
        let from = (*seen).min(log.len());
        *seen = log.len();
        let fresh = &log[from..];
        let hits: Vec<&str> = fresh
            .lines()
            .filter(|l| CRASH_MARKERS.iter().any(|m| l.contains(m)))
            .collect();
        if hits.is_empty() {
            None
        } else {
            Some(hits.join(" | "))
        }
    }

    /// Checks that `server` is alive, answers PING within the bound and logged no crash.
    /// On failure records it and restarts the server; returns false then.
    fn check_health(&mut self, server: &mut Server, case: u64, cmds: &[Cmd]) -> bool {
        self.check_health_within(server, case, cmds, REPLY_BOUND)
    }

    fn check_health_within(
        &mut self,
        server: &mut Server,
        case: u64,
        cmds: &[Cmd],
        bound: Duration,
    ) -> bool {
        let alive = server.is_alive();
        let ping = if alive {
            match Conn::try_connect(server.port()) {
                Ok(mut c) => {
                    c.set_read_timeout(bound);
                    match c.try_raw(&["PING"]) {
                        Ok(b) => match parse_reply(&b) {
                            Reply::Status(s) if s == "PONG" => Ok(()),
                            other => Err(format!("PING answered {other:?}")),
                        },
                        Err(e) => Err(format!("no answer to PING within {bound:?}: {e}")),
                    }
                }
                Err(e) => Err(format!("cannot connect: {e}")),
            }
        } else {
            Err("the server process exited".into())
        };
        let crash = self.new_crash_lines(server);
        match (ping, crash) {
            (Ok(()), None) => true,
            (Ok(()), Some(lines)) => {
                let kind = format!("crash report in the log{}", crash_signature(&server.log()));
                self.fail(server, case, &kind, cmds, &lines);
                true
            }
            (Err(e), lines) => {
                let kind = if alive {
                    "hang".to_string()
                } else {
                    format!("crash{}", crash_signature(&server.log()))
                };
                let detail = format!("{e}; log: {}", lines.unwrap_or_default());
                self.fail(server, case, &kind, cmds, &detail);
                server.restart();
                self.log_seen
                    .insert(server.dir().to_path_buf(), server.log().len());
                false
            }
        }
    }

    /// Prints the summary; panics when there were failures.
    fn finish(self) {
        let mut out = format!(
            "[fuzz] {}: {} cases in {:.1}s, {} failures (RX_FUZZ_SEED={})\n",
            self.name,
            self.cases,
            self.started.elapsed().as_secs_f64(),
            self.failures.len(),
            self.seed
        );
        if !self.counters.is_empty() {
            let c: Vec<String> = self
                .counters
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.push_str(&format!("[fuzz]   counts: {}\n", c.join(", ")));
        }
        for (kind, (n, examples)) in &self.notes {
            out.push_str(&format!("[fuzz]   note ({n}x): {kind}\n"));
            for e in examples {
                out.push_str(&format!("[fuzz]     e.g. {}\n", shorten(e, 700)));
            }
        }
        print!("{out}");
        if !self.failures.is_empty() {
            let list: Vec<String> = self
                .kinds
                .iter()
                .map(|(k, (n, first))| format!("  {n}x (first at case {first}): {k}"))
                .collect();
            panic!(
                "{}: {} failures of {} kinds (replay with RX_FUZZ_SEED={}):\n{}",
                self.name,
                self.failures.len(),
                self.kinds.len(),
                self.seed,
                list.join("\n")
            );
        }
    }
}

/// The most recent line of `log` that names a crash (the assertion, the signal or the
/// panic), as ` (<what>)`, or nothing.
fn crash_signature(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    for (i, l) in lines.iter().enumerate().rev() {
        if let Some(p) = l.find("==> ") {
            if i > 0 && lines[i - 1].contains("ASSERTION FAILED") {
                return format!(" ({})", shorten(l[p + 4..].trim(), 100));
            }
        }
        for m in ["crashed by signal", "RX panic"] {
            if let Some(p) = l.find(m) {
                return format!(" ({})", shorten(l[p..].trim(), 100));
            }
        }
    }
    String::new()
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...[{} bytes more]", &s[..cut], s.len() - cut)
}

/// A command as redis-cli reads it: every argument double-quoted, bytes escaped.
fn show_cmd(c: &Cmd) -> String {
    c.iter()
        .map(|a| format!("\"{}\"", escape_bytes(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A reply with its strings escaped (readable, unlike `{:?}` of byte vectors).
fn show_reply(r: &Reply) -> String {
    match r {
        Reply::Bulk(b) => format!("\"{}\"", escape_bytes(b)),
        Reply::Array(v) | Reply::Set(v) => {
            format!(
                "[{}]",
                v.iter().map(show_reply).collect::<Vec<_>>().join(", ")
            )
        }
        Reply::Map(v) => format!(
            "{{{}}}",
            v.iter()
                .map(|(k, x)| format!("{}: {}", show_reply(k), show_reply(x)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other:?}"),
    }
}

fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_repro(
    name: &str,
    seed: u64,
    case: u64,
    kind: &str,
    cmds: &[Cmd],
    detail: &str,
) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{name}-{seed}-{case}.txt"));
    let mut text = format!(
        "# {name}, RX_FUZZ_SEED={seed}, case {case}: {kind}\n# {}\n# commands, one per line, as redis-cli reads them:\n",
        detail.replace('\n', "\n# ")
    );
    for c in cmds {
        text.push_str(&show_cmd(c));
        text.push('\n');
    }
    let _ = std::fs::write(&file, text);
    file
}

// ---------------------------------------------------------------------------
// Talking to servers

/// Sends one command on `c` and waits at most `bound` for the reply. An error means the
/// connection is unusable afterwards (timeout, closed).
fn send(c: &mut Conn, args: &Cmd, bound: Duration) -> Result<Reply, String> {
    c.set_read_timeout(bound);
    let r = c.try_raw(args).map(|b| parse_reply(&b)).map_err(|e| {
        let what = match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("no reply within {bound:?}")
            }
            _ => format!("connection lost: {e}"),
        };
        format!("{what} to {}", shorten(&show_cmd(args), 300))
    });
    c.set_read_timeout(REPLY_BOUND);
    r
}

fn connect(s: &Server) -> Conn {
    let c = s.conn();
    c.set_read_timeout(REPLY_BOUND);
    c
}

/// What a failed command must leave alone: the RX libraries (with code, versions and
/// digests) and the keyspace.
#[derive(Clone, PartialEq)]
struct State {
    list: Vec<u8>,
    digest: Vec<u8>,
}

impl State {
    fn read(c: &mut Conn) -> Result<State, String> {
        let list = c
            .try_raw(&["RX.LIST", "WITHCODE", "WITHVERSIONS"])
            .map_err(|e| format!("RX.LIST WITHCODE: {e}"))?;
        let digest = c
            .try_raw(&["DEBUG", "DIGEST"])
            .map_err(|e| format!("DEBUG DIGEST: {e}"))?;
        if list.first() == Some(&b'-') || digest.first() == Some(&b'-') {
            return Err(format!(
                "state read failed: {} / {}",
                escape_bytes(&list),
                escape_bytes(&digest)
            ));
        }
        Ok(State { list, digest })
    }

    fn libraries(&self) -> BTreeMap<String, Lib> {
        libraries_of(&parse_reply(&self.list))
    }

    /// A readable account of how `self` differs from `before`.
    fn diff(&self, before: &State) -> String {
        let mut out = Vec::new();
        if self.digest != before.digest {
            out.push(format!(
                "keyspace digest {} -> {}",
                escape_bytes(&before.digest),
                escape_bytes(&self.digest)
            ));
        }
        let (a, b) = (before.libraries(), self.libraries());
        for name in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
            match (a.get(name), b.get(name)) {
                (Some(x), Some(y)) if x != y => out.push(format!(
                    "library {name} changed (version {} -> {}, code {} -> {} bytes)",
                    x.version,
                    y.version,
                    x.code.len(),
                    y.code.len()
                )),
                (Some(_), None) => out.push(format!("library {name} disappeared")),
                (None, Some(y)) => {
                    out.push(format!("library {name} appeared (version {})", y.version))
                }
                _ => {}
            }
        }
        if out.is_empty() {
            out.push("listing bytes differ".into());
        }
        out.join("; ")
    }
}

#[derive(Clone, PartialEq, Debug)]
struct Lib {
    version: i64,
    code: Vec<u8>,
}

/// name -> (version, code) from an `RX.LIST WITHCODE` reply.
fn libraries_of(list: &Reply) -> BTreeMap<String, Lib> {
    let mut out = BTreeMap::new();
    for lib in list.as_array().unwrap_or_default() {
        let kv = lib.as_array().unwrap_or_default();
        let field = |k: &str| {
            kv.chunks(2)
                .find(|p| p[0].as_str() == Some(k))
                .map(|p| p[1].clone())
        };
        let name = field("library_name")
            .and_then(|r| r.as_str().map(String::from))
            .unwrap_or_default();
        let version = field("version").and_then(|r| r.as_int()).unwrap_or(-1);
        let code = field("library_code")
            .and_then(|r| r.as_bytes().map(|b| b.to_vec()))
            .unwrap_or_default();
        out.insert(name, Lib { version, code });
    }
    out
}

/// `f` ran between two reads of the state; any change after an error reply is a failure.
fn check_unchanged(
    camp: &mut Campaign,
    server: &Server,
    c: &mut Conn,
    case: u64,
    cmds: &[Cmd],
    before: &State,
    why: &str,
) -> Option<State> {
    match State::read(c) {
        Ok(after) => {
            if after != *before {
                let d = after.diff(before);
                camp.fail(
                    server,
                    case,
                    "state changed after an error reply",
                    cmds,
                    &format!("{why}; {d}"),
                );
            }
            Some(after)
        }
        Err(e) => {
            camp.fail(server, case, "state unreadable", cmds, &e);
            None
        }
    }
}

// ---------------------------------------------------------------------------
// f. Dataset reload check, at the end of every campaign

/// `DEBUG RELOAD`, then `SAVE` + restart: each must keep the keyspace digest and
/// `RX.LIST WITHCODE` exactly.
fn reload_checks(camp: &mut Campaign, server: &mut Server) {
    let case = camp.cases;
    let mut c = connect(server);
    let before = match State::read(&mut c) {
        Ok(s) => s,
        Err(e) => {
            camp.fail(server, case, "state unreadable before reload", &[], &e);
            return;
        }
    };
    let libs = before.libraries().len();
    for step in ["DEBUG RELOAD", "SAVE + restart"] {
        let cmds: Vec<Cmd> = if step == "DEBUG RELOAD" {
            vec![cmd(&["DEBUG", "RELOAD"])]
        } else {
            vec![cmd(&["SAVE"]), cmd(&["<restart the server>"])]
        };
        let r = send(&mut c, &cmds[0], REPLY_BOUND);
        match r {
            Ok(Reply::Status(s)) if s == "OK" => {}
            other => {
                camp.fail(
                    server,
                    case,
                    &format!("{step} failed"),
                    &cmds,
                    &format!("{other:?}"),
                );
                if !camp.check_health(server, case, &cmds) {
                    return;
                }
                c = connect(server);
                continue;
            }
        }
        if step != "DEBUG RELOAD" {
            server.restart();
            c = connect(server);
        }
        if !camp.check_health(server, case, &cmds) {
            return;
        }
        match State::read(&mut c) {
            Ok(after) if after == before => {}
            Ok(after) => {
                let d = after.diff(&before);
                camp.fail(
                    server,
                    case,
                    &format!("{step} changed the dataset"),
                    &cmds,
                    &d,
                );
            }
            Err(e) => camp.fail(
                server,
                case,
                &format!("state unreadable after {step}"),
                &cmds,
                &e,
            ),
        }
    }
    println!(
        "[fuzz] {}: reload check ({libs} libraries): DEBUG RELOAD and SAVE + restart done",
        camp.name
    );
}

// ---------------------------------------------------------------------------
// Byte mutations shared by the campaigns

/// One random edit of `b`; `donors` give material for splicing.
fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>, donors: &[Vec<u8>]) {
    const SPECIAL: &[u8] = b"\x00\xff\x7f\x80\n\r\t \"'\\{}[]()=,.:;#!-_0123456789";
    let len = b.len();
    match rng.below(10) {
        0 if len > 0 => {
            let i = rng.below(len as u64) as usize;
            b[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len as u64) as usize;
            b[i] = if rng.chance(1, 2) {
                *rng.pick(SPECIAL)
            } else {
                rng.byte()
            };
        }
        2 => {
            let i = rng.upto(len);
            let n = rng.size(16).max(1);
            let ins: Vec<u8> = (0..n)
                .map(|_| {
                    if rng.chance(1, 2) {
                        *rng.pick(SPECIAL)
                    } else {
                        rng.byte()
                    }
                })
                .collect();
            b.splice(i..i, ins);
        }
        3 if len > 0 => {
            let i = rng.below(len as u64) as usize;
            let n = rng.size(len - i).max(1);
            b.drain(i..i + n);
        }
        4 => {
            let cut = rng.upto(len);
            b.truncate(cut);
        }
        5 if len > 0 => {
            // Duplicate a range somewhere else.
            let i = rng.below(len as u64) as usize;
            let n = rng.size(len - i).max(1);
            let piece = b[i..i + n].to_vec();
            let at = rng.upto(len);
            b.splice(at..at, piece);
        }
        6 if !donors.is_empty() => {
            // Splice: our prefix, a donor's suffix.
            let d = rng.pick(donors);
            let cut = rng.upto(len);
            let from = rng.upto(d.len());
            b.truncate(cut);
            b.extend_from_slice(&d[from..]);
        }
        7 if len > 0 => {
            // A run of one byte (long strings, repeated characters).
            let i = rng.upto(len);
            let n = rng.size(4096).max(1);
            let c = if rng.chance(1, 2) {
                b[rng.below(len as u64) as usize]
            } else {
                rng.byte()
            };
            b.splice(i..i, std::iter::repeat_n(c, n));
        }
        8 if len >= 4 => {
            // An interesting 32-bit little-endian value somewhere.
            let i = rng.below(len as u64 - 3) as usize;
            let v = *rng.pick(&INTERESTING_U32);
            b[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        _ => {
            let i = rng.upto(len);
            let n = rng.size(8).max(1);
            let ins = rng.bytes(n);
            b.splice(i..i, ins);
        }
    }
}

const INTERESTING_U32: [u32; 12] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];

// ---------------------------------------------------------------------------
// a. Payload mutation: RX.RESTORE and RX.APPLY

/// Libraries the payloads carry.
const PAYLOAD_LIBS: &[&str] = &[
    "#!lua name=pa\nredis.register_function('pa_echo', function(keys, args) return args[1] end)\n",
    "#!lua name=pb\nredis.register_function{function_name='pb_ro', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes', 'allow-stale'}, description='read a key'}\nredis.register_function('pb_set', function(keys, args) return redis.call('SET', keys[1], args[1]) end)\n",
    "#!LUA NAME=pc\n-- UTF-8: clé 日本語\nlocal prefix = 'c:'\nredis.register_function('pc_one', function() return prefix .. 1 end)\nredis.register_function('pc_two', function() return prefix .. 2 end)\nredis.register_function{function_name='pc_three', callback=function() return 3 end, flags={'allow-oom'}}\n",
    "#!lua name=pd\nlocal t = {}\nfor i = 1, 50 do t[i] = i * 2 end\nredis.register_function('pd_get', function(keys, args) return t[tonumber(args[1]) or 1] end)\n",
    "#!lua name=pe\nredis.register_function('pe_x', function() return {1, 'two', {3}} end)\n",
];

fn payload_big_lib() -> String {
    let data = "0123456789abcdef".repeat(512);
    format!("#!lua name=pbig\nlocal data = '{data}'\nredis.register_function('pbig_len', function() return #data end)\n")
}

/// Library subsets whose dumps seed the campaign; the first one is the baseline.
const DUMP_SETS: &[&[usize]] = &[&[0, 1, 2], &[], &[0], &[3, 4], &[0, 1, 2, 3, 4, 5]];

fn all_payload_libs() -> Vec<String> {
    let mut v: Vec<String> = PAYLOAD_LIBS.iter().map(|s| s.to_string()).collect();
    v.push(payload_big_lib());
    v
}

fn must_ok(c: &mut Conn, args: &Cmd) -> Reply {
    let r = c.cmd(args);
    assert!(
        !r.is_error(),
        "setup command {} failed: {r:?}",
        show_cmd(args)
    );
    r
}

fn capture_dumps(c: &mut Conn, libs: &[String]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for set in DUMP_SETS {
        must_ok(c, &cmd(&["RX.FLUSH"]));
        for &i in set.iter() {
            must_ok(c, &cmd(&[b"RX.LOAD".as_slice(), libs[i].as_bytes()]));
        }
        match c.q(&["RX.DUMP"]) {
            Reply::Bulk(b) => out.push(b),
            other => panic!("RX.DUMP: {other:?}"),
        }
    }
    out
}

/// The `RX.APPLY` payloads RX writes to the AOF for loads, replaces, deletes, flushes,
/// restores and imports.
fn capture_applies(libs: &[String], dumps: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let s = Server::start_with(&["--appendonly", "yes", "--appendfsync", "always"], &[]);
    let mut c = connect(&s);
    let l = |i: usize| libs[i].as_bytes().to_vec();
    let replaced = libs[0].replace("return args[1]", "return 'v2:' .. args[1]");
    let steps: Vec<Cmd> = vec![
        cmd(&[b"RX.LOAD".to_vec(), l(0)]),
        cmd(&[b"RX.LOAD".to_vec(), l(1)]),
        cmd(&[
            b"RX.LOAD".to_vec(),
            b"REPLACE".to_vec(),
            replaced.into_bytes(),
        ]),
        cmd(&[b"RX.LOAD".to_vec(), l(2)]),
        cmd(&[b"RX.DELETE".to_vec(), b"pb".to_vec()]),
        cmd(&[b"RX.RESTORE".to_vec(), dumps[3].clone()]),
        cmd(&[
            b"RX.RESTORE".to_vec(),
            dumps[4].clone(),
            b"REPLACE".to_vec(),
        ]),
        cmd(&[b"RX.FLUSH".to_vec()]),
        cmd(&[b"RX.RESTORE".to_vec(), dumps[0].clone(), b"FLUSH".to_vec()]),
        cmd(&[b"FUNCTION".to_vec(), b"LOAD".to_vec(), l(4)]),
        cmd(&[b"RX.IMPORT".to_vec(), b"REPLACE".to_vec()]),
        cmd(&[b"RX.LOAD".to_vec(), l(5)]),
    ];
    for st in &steps {
        must_ok(&mut c, st);
    }
    let mut out = Vec::new();
    for command in aof_commands(s.dir()) {
        if command.len() == 2 && command[0].eq_ignore_ascii_case(b"RX.APPLY") {
            out.push(command[1].clone());
        }
    }
    assert!(
        out.len() >= 8,
        "expected RX.APPLY entries in the AOF, found {}",
        out.len()
    );
    out
}

/// Every command in the AOF's `*.aof` files (RESP arrays of bulk strings).
fn aof_commands(dir: &Path) -> Vec<Cmd> {
    let d = dir.join("appendonlydir");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("read {}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "aof"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let b = std::fs::read(&f).unwrap();
        let mut pos = 0;
        let line = |pos: &mut usize| -> Option<Vec<u8>> {
            let i = b[*pos..].windows(2).position(|w| w == b"\r\n")?;
            let l = b[*pos..*pos + i].to_vec();
            *pos += i + 2;
            Some(l)
        };
        while pos < b.len() {
            let Some(h) = line(&mut pos) else { break };
            let n: usize = std::str::from_utf8(&h[1..]).unwrap().parse().unwrap();
            let mut args = Vec::new();
            for _ in 0..n {
                let h = line(&mut pos).unwrap();
                let len: usize = std::str::from_utf8(&h[1..]).unwrap().parse().unwrap();
                args.push(b[pos..pos + len].to_vec());
                pos += len + 2;
            }
            out.push(args);
        }
    }
    out
}

/// Lenient decoders of the two payload formats (the campaign's own view, to mutate
/// fields and to explain what an `RX.APPLY` changed).
#[derive(Clone, Debug)]
struct ApplyChange {
    name: Vec<u8>,
    version: u64,
    digest: [u8; 20],
    code: Vec<u8>,
}

fn dump_sources(p: &[u8]) -> Option<Vec<Vec<u8>>> {
    if p.len() < 32 || &p[..6] != b"RXDUMP" {
        return None;
    }
    let body = &p[..p.len() - 20];
    let count = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?) as usize;
    let mut pos = 12;
    let mut out = Vec::new();
    for _ in 0..count.min(100_000) {
        let len = u32::from_le_bytes(body.get(pos..pos + 4)?.try_into().ok()?) as usize;
        pos += 4;
        out.push(body.get(pos..pos.checked_add(len)?)?.to_vec());
        pos += len;
    }
    Some(out)
}

fn encode_dump(sources: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"RXDUMP".to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&(sources.len() as u32).to_le_bytes());
    for s in sources {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }
    let d = sha1(&out);
    out.extend_from_slice(&d);
    out
}

fn apply_changes(p: &[u8]) -> Option<Vec<ApplyChange>> {
    if p.len() < 28 || &p[..7] != b"RXAPPLY" {
        return None;
    }
    let body = &p[..p.len() - 20];
    // Wire version 2 ends each change with its origin (action: 1 byte, time: 8 bytes).
    let origin_len = if p[7] >= 2 { 9 } else { 0 };
    let mut pos = 8;
    let u32_at = |pos: &mut usize| -> Option<u32> {
        let v = u32::from_le_bytes(body.get(*pos..*pos + 4)?.try_into().ok()?);
        *pos += 4;
        Some(v)
    };
    let count = u32_at(&mut pos)? as usize;
    let mut out = Vec::new();
    for _ in 0..count.min(100_000) {
        let nl = u16::from_le_bytes(body.get(pos..pos + 2)?.try_into().ok()?) as usize;
        pos += 2;
        let name = body.get(pos..pos + nl)?.to_vec();
        pos += nl;
        let version = u64::from_le_bytes(body.get(pos..pos + 8)?.try_into().ok()?);
        pos += 8;
        let digest: [u8; 20] = body.get(pos..pos + 20)?.try_into().ok()?;
        pos += 20;
        let cl = u32_at(&mut pos)? as usize;
        let code = body.get(pos..pos.checked_add(cl)?)?.to_vec();
        pos += cl + origin_len;
        out.push(ApplyChange {
            name,
            version,
            digest,
            code,
        });
    }
    Some(out)
}

fn encode_apply(changes: &[ApplyChange]) -> Vec<u8> {
    let mut out = b"RXAPPLY\x01".to_vec();
    out.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    for c in changes {
        out.extend_from_slice(&(c.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&c.name);
        out.extend_from_slice(&c.version.to_le_bytes());
        out.extend_from_slice(&c.digest);
        out.extend_from_slice(&(c.code.len() as u32).to_le_bytes());
        out.extend_from_slice(&c.code);
    }
    let d = sha1(&out);
    out.extend_from_slice(&d);
    out
}

/// Offsets and widths of the length/count/version fields a lenient walk finds.
fn payload_fields(p: &[u8]) -> Vec<(usize, usize)> {
    let mut f = Vec::new();
    if p.starts_with(b"RXDUMP") {
        f.push((6, 2));
        f.push((8, 4));
        let mut pos = 12;
        while pos + 4 <= p.len().saturating_sub(20) && f.len() < 64 {
            f.push((pos, 4));
            let len = u32::from_le_bytes(p[pos..pos + 4].try_into().unwrap()) as usize;
            pos = pos.saturating_add(4).saturating_add(len);
        }
    } else if p.starts_with(b"RXAPPLY") {
        f.push((7, 1));
        f.push((8, 4));
        let origin_len = if p.get(7).is_some_and(|v| *v >= 2) {
            9
        } else {
            0
        };
        let mut pos = 12;
        let end = p.len().saturating_sub(20);
        while pos + 2 <= end && f.len() < 64 {
            f.push((pos, 2));
            let nl = u16::from_le_bytes(p[pos..pos + 2].try_into().unwrap()) as usize;
            let vpos = pos + 2 + nl;
            if vpos + 32 > end {
                break;
            }
            f.push((vpos, 8));
            f.push((vpos + 28, 4));
            let cl = u32::from_le_bytes(p[vpos + 28..vpos + 32].try_into().unwrap()) as usize;
            if origin_len > 0 {
                f.push(((vpos + 32).saturating_add(cl), 1));
            }
            pos = (vpos + 32).saturating_add(cl).saturating_add(origin_len);
        }
    }
    f.retain(|&(off, w)| off + w <= p.len());
    f
}

/// Replaces the trailing SHA-1 with the right one, so the edit reaches the parser.
fn reseal(p: &mut [u8]) {
    if p.len() >= 20 {
        let n = p.len() - 20;
        let d = sha1(&p[..n]);
        p[n..].copy_from_slice(&d);
    }
}

/// A mutated source, for structure-aware payloads.
fn mutate_source(rng: &mut Rng, code: &[u8], libs: &[String]) -> Vec<u8> {
    let mut c = code.to_vec();
    match rng.below(6) {
        0 => {
            // Rename the library (maybe invalidly), keep the body.
            let names = [
                "pa", "pb", "pz", "p-x", "", "PA", "pa pb", "pbig", "x\u{e9}",
            ];
            let nl = c.iter().position(|&b| b == b'\n').unwrap_or(c.len());
            let mut h = format!("#!lua name={}", rng.pick(&names)).into_bytes();
            h.extend_from_slice(&c[nl..]);
            c = h;
        }
        1 => {
            // Steal another library's function names.
            let other = rng.pick(libs);
            let nl = c.iter().position(|&b| b == b'\n').unwrap_or(c.len());
            let onl = other.find('\n').unwrap_or(other.len());
            let mut h = c[..nl].to_vec();
            h.extend_from_slice(&other.as_bytes()[onl..]);
            c = h;
        }
        2 => c = b"#!lua name=pbad\nerror('boom')\n".to_vec(),
        3 => c = b"#!lua name=pbad\nlocal x = \n".to_vec(),
        _ => {
            let donors: Vec<Vec<u8>> = libs.iter().map(|l| l.as_bytes().to_vec()).collect();
            for _ in 0..=rng.below(3) {
                mutate_bytes(rng, &mut c, &donors);
            }
        }
    }
    c
}

/// A payload built from parts of the seeds, encoded correctly (checksums included).
fn structured_payload(
    rng: &mut Rng,
    seeds: &[(bool, Vec<u8>)],
    libs: &[String],
) -> (bool, Vec<u8>) {
    let dump = rng.chance(1, 2);
    if dump {
        let mut pool: Vec<Vec<u8>> = libs.iter().map(|l| l.as_bytes().to_vec()).collect();
        for (is_dump, s) in seeds {
            if *is_dump {
                pool.extend(dump_sources(s).unwrap_or_default());
            }
        }
        let n = if rng.chance(1, 20) {
            rng.range(50, 300) as usize
        } else {
            rng.upto(5)
        };
        let mut sources = Vec::new();
        for i in 0..n {
            let s = if n > 20 {
                format!("#!lua name=bulk{i}\nredis.register_function('bulk{i}', function() return {i} end)\n").into_bytes()
            } else if rng.chance(1, 3) {
                let src = rng.pick(&pool).clone();
                mutate_source(rng, &src, libs)
            } else {
                rng.pick(&pool).clone()
            };
            sources.push(s);
        }
        (true, encode_dump(&sources))
    } else {
        let mut pool: Vec<ApplyChange> = Vec::new();
        for (is_dump, s) in seeds {
            if !*is_dump {
                pool.extend(apply_changes(s).unwrap_or_default());
            }
        }
        let n = rng.upto(4);
        let mut changes = Vec::new();
        for _ in 0..n {
            let mut ch = rng.pick(&pool).clone();
            match rng.below(8) {
                0 => ch.version = *rng.pick(&[0, 1, 2, 1000, u64::MAX - 1, u64::MAX]),
                1 => ch.version = ch.version.wrapping_add(rng.below(5)),
                2 => {
                    // A tombstone.
                    ch.digest = [0; 20];
                    ch.code.clear();
                }
                3 => {
                    ch.code = mutate_source(rng, &ch.code, libs);
                    ch.digest = sha1(&ch.code);
                    ch.version = ch.version.wrapping_add(rng.below(50));
                }
                4 => {
                    ch.name = rng
                        .pick(&[&b"pa"[..], b"pz", b"", b"p\xffx", b"pbig"])
                        .to_vec()
                }
                5 => ch.digest = sha1(rng.pick(libs).as_bytes()),
                _ => {}
            }
            changes.push(ch);
        }
        (false, encode_apply(&changes))
    }
}

/// Whether the difference between `before` and `after` is explained by `payload`'s
/// changes (for `RX.APPLY`, which applies each change on its own and reports the ones
/// that failed).
fn explained_by_apply(before: &State, after: &State, payload: &[u8]) -> Result<(), String> {
    if after.digest != before.digest {
        return Err("the keyspace changed".into());
    }
    let changes = apply_changes(payload).unwrap_or_default();
    let (a, b) = (before.libraries(), after.libraries());
    for name in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
        let (x, y) = (a.get(name), b.get(name));
        if x == y {
            continue;
        }
        let ok = changes.iter().any(|c| {
            c.name == name.as_bytes()
                && match y {
                    Some(lib) => lib.code == c.code && lib.version == c.version as i64,
                    None => c.digest == [0; 20],
                }
        });
        if !ok {
            return Err(format!(
                "library {name} changed in a way the payload does not hold"
            ));
        }
    }
    Ok(())
}

#[test]
#[ignore = "fuzzing campaign: run with `make fuzz`"]
fn a_payload_mutation() {
    let mut camp = Campaign::new("a_payload_mutation");
    let libs = all_payload_libs();
    // RX.APPLY is taken only from the master link and the AOF: mutated ones are replayed
    // through the AOF in batches (see `replay_applies`).
    let mut server = Server::start_with(&["--appendonly", "yes"], &[]);
    let mut c = connect(&server);
    let mut pending_applies: Vec<Vec<u8>> = Vec::new();
    let dumps = capture_dumps(&mut c, &libs);
    let applies = capture_applies(&libs, &dumps);
    let baseline = dumps[0].clone();
    let mut seeds: Vec<(bool, Vec<u8>)> = dumps.iter().map(|d| (true, d.clone())).collect();
    seeds.extend(applies.iter().map(|a| (false, a.clone())));
    let donors: Vec<Vec<u8>> = seeds.iter().map(|(_, s)| s.clone()).collect();
    println!(
        "[fuzz] a_payload_mutation: {} RX.DUMP and {} RX.APPLY payloads captured",
        dumps.len(),
        applies.len()
    );
    let setup = |c: &mut Conn| {
        must_ok(c, &cmd(&[b"RX.RESTORE".as_slice(), &baseline, b"FLUSH"]));
        for k in [
            cmd(&["SET", "fz:str", "value"]),
            cmd(&["HSET", "fz:hash", "f", "v", "g", "w"]),
            cmd(&["RPUSH", "fz:list", "a", "b", "c"]),
        ] {
            must_ok(c, &k);
        }
    };
    setup(&mut c);
    let mut state = State::read(&mut c).expect("state");

    while let Some((case, mut rng)) = camp.next_case() {
        let mut cmds: Vec<Cmd> = Vec::new();
        // Now and then, back to the baseline libraries.
        let empty = state.libraries().is_empty();
        if rng.chance(1, 25) || (empty && rng.chance(1, 3)) {
            let reset = cmd(&[b"RX.RESTORE".as_slice(), &baseline, b"FLUSH"]);
            match send(&mut c, &reset, REPLY_BOUND) {
                Ok(Reply::Status(_)) => {}
                other => camp.fail(
                    &server,
                    case,
                    "baseline restore refused",
                    std::slice::from_ref(&reset),
                    &format!("{other:?}"),
                ),
            }
            cmds.push(reset);
            state = match State::read(&mut c) {
                Ok(s) => s,
                Err(_) => State {
                    list: vec![],
                    digest: vec![],
                },
            };
        }
        // The payload: structure-aware, or a seed with byte-level edits.
        let (is_dump, mut p) = if rng.chance(1, 3) {
            structured_payload(&mut rng, &seeds, &libs)
        } else {
            rng.pick(&seeds).clone()
        };
        let edits = if rng.chance(1, 6) {
            0
        } else {
            1 + rng.below(4)
        };
        for _ in 0..edits {
            let fields = payload_fields(&p);
            if !fields.is_empty() && rng.chance(1, 3) {
                let (off, w) = *rng.pick(&fields);
                let v: u64 = match rng.below(4) {
                    0 => u64::from(*rng.pick(&INTERESTING_U32)),
                    1 => rng.next(),
                    _ => {
                        let mut cur = [0u8; 8];
                        cur[..w].copy_from_slice(&p[off..off + w]);
                        u64::from_le_bytes(cur).wrapping_add(rng.range(-3, 3) as u64)
                    }
                };
                p[off..off + w].copy_from_slice(&v.to_le_bytes()[..w]);
            } else {
                mutate_bytes(&mut rng, &mut p, &donors);
            }
        }
        if edits > 0 && rng.chance(1, 2) {
            reseal(&mut p);
        }
        // The command.
        let as_restore = is_dump != rng.chance(1, 10);
        let mut command: Cmd = if as_restore {
            let mut v = vec![b"RX.RESTORE".to_vec(), p.clone()];
            match rng.below(7) {
                0 | 1 => {}
                2 => v.push(b"FLUSH".to_vec()),
                3 => v.push(b"APPEND".to_vec()),
                4 => v.push(b"REPLACE".to_vec()),
                5 => v.push(rng.pick(&[&b"flush"[..], b"replace", b"Append"]).to_vec()),
                _ => v.push(rng.pick(&[&b"BOGUS"[..], b"", b"FLUSHALL"]).to_vec()),
            }
            v
        } else {
            vec![b"RX.APPLY".to_vec(), p.clone()]
        };
        if rng.chance(1, 40) {
            // Arity edits.
            if rng.chance(1, 2) {
                command.truncate(1);
            } else {
                command.push(b"extra".to_vec());
                command.push(b"args".to_vec());
            }
        }
        if !as_restore && command.len() == 2 {
            pending_applies.push(command[1].clone());
        }
        if pending_applies.len() >= APPLIES_PER_REPLAY {
            let batch = std::mem::take(&mut pending_applies);
            if let Err(e) = replay_applies(&server, &mut c, &batch) {
                camp.fail(&server, case, "AOF replay of RX.APPLY payloads", &cmds, &e);
            }
            camp.count("AOF replays of mutated RX.APPLY payloads");
            if !server.is_alive() {
                camp.check_health(&mut server, case, &cmds);
                c = connect(&server);
                setup(&mut c);
            }
            // Sealed payloads may apply: whatever the replay left is the new state.
            state = State::read(&mut c).unwrap_or_else(|_| state.clone());
        }
        let before = state.clone();
        cmds.push(command.clone());
        let reply = send(&mut c, &command, REPLY_BOUND);
        match reply {
            Err(e) => {
                camp.count("no reply");
                camp.fail(&server, case, "no reply", &cmds, &e);
                camp.check_health(&mut server, case, &cmds);
                c = connect(&server);
                setup(&mut c);
                state = State::read(&mut c).expect("state after restart");
                continue;
            }
            Ok(Reply::Error(e)) => {
                camp.count(if as_restore {
                    "restore error"
                } else {
                    "apply error"
                });
                let after = match State::read(&mut c) {
                    Ok(s) => s,
                    Err(err) => {
                        camp.fail(&server, case, "state unreadable", &cmds, &err);
                        camp.check_health(&mut server, case, &cmds);
                        c = connect(&server);
                        setup(&mut c);
                        state = State::read(&mut c).expect("state");
                        continue;
                    }
                };
                if after != before {
                    let partial_apply = !as_restore && e.starts_with("ERR RX.APPLY: library ");
                    let verdict = if partial_apply {
                        explained_by_apply(&before, &after, &p)
                    } else {
                        Err(after.diff(&before))
                    };
                    match verdict {
                        Ok(()) => {
                            camp.count("apply error after applying other changes");
                            camp.note("RX.APPLY replied an error after applying some of the payload's changes", || {
                                format!("{e}: {}", after.diff(&before))
                            });
                        }
                        Err(d) => camp.fail(
                            &server,
                            case,
                            "state changed after an error reply",
                            &cmds,
                            &format!("reply {e:?}; {d}"),
                        ),
                    }
                }
                state = after;
            }
            Ok(r) => {
                camp.count(if as_restore { "restore ok" } else { "apply ok" });
                let after = State::read(&mut c).unwrap_or_else(|_| state.clone());
                // RX.RESTORE ... FLUSH leaves exactly the payload's libraries.
                let flush = command.len() == 3 && command[2].eq_ignore_ascii_case(b"FLUSH");
                if as_restore && flush {
                    let want: BTreeSet<Vec<u8>> =
                        dump_sources(&p).unwrap_or_default().into_iter().collect();
                    let got: BTreeSet<Vec<u8>> =
                        after.libraries().into_values().map(|l| l.code).collect();
                    if want != got {
                        camp.fail(
                            &server,
                            case,
                            "RX.RESTORE FLUSH left other libraries than the payload's",
                            &cmds,
                            &format!(
                                "reply {r:?}; payload has {} libraries, the server {}",
                                want.len(),
                                got.len()
                            ),
                        );
                    }
                }
                state = after;
            }
        }
        if let Some(lines) = camp.new_crash_lines(&server) {
            camp.fail(&server, case, "crash report in the log", &cmds, &lines);
        }
        if !server.is_alive() {
            camp.check_health(&mut server, case, &cmds);
            c = connect(&server);
            setup(&mut c);
            state = State::read(&mut c).expect("state");
        }
    }
    reload_checks(&mut camp, &mut server);
    camp.finish();
}

/// Mutated `RX.APPLY` payloads replayed through the AOF at a time.
const APPLIES_PER_REPLAY: usize = 50;

/// Appends `RX.APPLY <payload>` for each payload to the server's open AOF file, then
/// `DEBUG LOADAOF`: the path a restart or a master's stream takes. The server must answer
/// OK and stay up (a payload it refuses is logged and skipped).
fn replay_applies(server: &Server, c: &mut Conn, payloads: &[Vec<u8>]) -> Result<(), String> {
    use std::io::Write;
    let dir = server.dir().join("appendonlydir");
    let incr = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .max()
        .ok_or("no incr AOF file")?;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&incr)
        .map_err(|e| e.to_string())?;
    for p in payloads {
        f.write_all(&common::encode_command(&[&b"RX.APPLY"[..], p]))
            .map_err(|e| e.to_string())?;
    }
    drop(f);
    match send(c, &cmd(&["DEBUG", "LOADAOF"]), REPLY_BOUND) {
        Ok(Reply::Status(s)) if s == "OK" => Ok(()),
        other => Err(format!("DEBUG LOADAOF answered {other:?}")),
    }
}

// ---------------------------------------------------------------------------
// b. Library-source mutation, RX.LOAD against native FUNCTION LOAD

/// Valid libraries (the load-time environment has only `redis.register_function`,
/// `redis.log`, `redis.LOG_*` and `redis.REDIS_VERSION*`).
const LIB_SEEDS: &[&str] = &[
    "#!lua name=m1\nredis.register_function('m1_hello', function(keys, args) return 'hi ' .. (args[1] or '') end)\n",
    "#!lua name=m2\nlocal function helper(x) return x * 2 end\nredis.register_function{function_name='m2_double', callback=function(keys, args) return helper(tonumber(args[1]) or 0) end, flags={'no-writes'}, description='doubles'}\n",
    "#!lua name=m3\nredis.register_function{function_name='m3_a', callback=function() return 1 end, flags={'no-writes', 'allow-oom', 'allow-stale', 'no-cluster', 'allow-cross-slot-keys'}}\nredis.register_function('m3_b', function() return 2 end)\n",
    "#!LUA NAME=m4\n-- a comment\n--[[ a long\ncomment ]]\nlocal s = [[long\nstring]]\nlocal t = {1, 2, 3, x = 'y', [10] = true, n = 0x10, f = 1.5e3}\nredis.register_function('m4_f', function(keys, args) return {#t, s} end)\n",
    "#!lua name=m5\nredis.log(redis.LOG_NOTICE, 'loading m5')\nlocal v = redis.REDIS_VERSION .. ' ' .. redis.REDIS_VERSION_NUM\nredis.register_function('m5_v', function() return v end)\n",
    "#!lua   name=m6  \nlocal n = 0\nfor i = 1, 100 do n = n + i end\nif n > 10 then redis.register_function('m6_n', function() return n end) end\n",
    // Up to the first nil, not `#fns`: a mutation that leaves a hole in the list
    // (`{'a', ..., 'c'}`) would otherwise meet the border difference the README lists (`#t`
    // of a table with holes), which is not a finding. (No `ipairs` at load time.)
    "#!lua name=m7\nlocal fns = {'m7_a', 'm7_b', 'm7_c'}\nlocal i = 1\nwhile fns[i] do local f = fns[i] redis.register_function(f, function() return f end) i = i + 1 end\n",
    "#!lua name=m8\nredis.register_function{function_name='m8_desc', description='with \"quotes\", \\n escapes and unicode \u{e9}', callback=function() return 'ok' end}\n",
    "#!lua name=m9\nlocal cb = function(keys, args) return redis.call('GET', keys[1]) end\nredis.register_function{function_name = 'm9_get', callback = cb, flags = {'no-writes'}}\nredis.register_function('M9_Upper', cb)\n",
    "#!lua name=m10\nlocal t = {}\nwhile #t < 20 do t[#t + 1] = #t end\nrepeat t[1] = t[1] + 1 until t[1] > 3\nredis.register_function('m10_t', function() return t end)\n",
    "#!lua name=m11\r\nredis.register_function('m11_crlf', function()\r\n  return 'crlf'\r\nend)\r\n",
    "#!lua name=m12\nlocal a, b = 1, 2\nlocal function f(...) return select('#', ...) end\nredis.register_function('m12_va', function(keys, args) return f(unpack(args)) + a + b end)\n",
];

/// Tokens a mutation may put in: Lua syntax, the registration API, flags, odd values.
const LUA_TOKENS: &[&str] = &[
    "and",
    "break",
    "do",
    "else",
    "elseif",
    "end",
    "false",
    "for",
    "function",
    "if",
    "in",
    "local",
    "nil",
    "not",
    "or",
    "repeat",
    "return",
    "then",
    "true",
    "until",
    "while",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "#",
    "==",
    "~=",
    "<=",
    ">=",
    "<",
    ">",
    "=",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ";",
    ":",
    ",",
    ".",
    "..",
    "...",
    "redis",
    "redis.register_function",
    "register_function",
    "function_name",
    "callback",
    "flags",
    "description",
    "'no-writes'",
    "'allow-oom'",
    "'allow-stale'",
    "'no-cluster'",
    "'allow-cross-slot-keys'",
    "'bogus-flag'",
    "redis.log",
    "redis.LOG_WARNING",
    "redis.call",
    "redis.pcall",
    "redis.REDIS_VERSION",
    "redis.setresp",
    "string",
    "KEYS",
    "ARGV",
    "_G",
    "rawset",
    "setmetatable",
    "math.huge",
    "0",
    "1",
    "-1",
    "1e308",
    "0x10",
    "1.5",
    "2^53",
    "'x'",
    "\"y\"",
    "[[z]]",
    "''",
    "'\\0'",
    "'m1_hello'",
    "'m3_a'",
    "'fn with space'",
    "'\u{e9}'",
    "{}",
    "{'no-writes'}",
    "function() end",
    "function(keys, args) return 1 end",
    "error('boom')",
    "error()",
    "redis.register_function('x_dup', function() end)",
];

fn lua_tokens(src: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = src.len();
    while i < n {
        let c = src[i];
        let start = i;
        if c.is_ascii_whitespace() {
            while i < n && src[i].is_ascii_whitespace() {
                i += 1;
            }
        } else if c == b'-' && src.get(i + 1) == Some(&b'-') {
            while i < n && src[i] != b'\n' {
                i += 1;
            }
        } else if c == b'\'' || c == b'"' {
            i += 1;
            while i < n && src[i] != c && src[i] != b'\n' {
                if src[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(n);
        } else if c == b'[' && src.get(i + 1) == Some(&b'[') {
            match src[i..].windows(2).position(|w| w == b"]]") {
                Some(p) => i += p + 2,
                None => i = n,
            }
        } else if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 {
            while i < n
                && (src[i].is_ascii_alphanumeric()
                    || src[i] == b'_'
                    || src[i] == b'.' && c.is_ascii_digit()
                    || src[i] >= 0x80)
            {
                i += 1;
            }
        } else if src[i..].starts_with(b"...") {
            i += 3;
        } else if [&b".."[..], b"==", b"~=", b"<=", b">="]
            .iter()
            .any(|op| src[i..].starts_with(op))
        {
            i += 2;
        } else {
            i += 1;
        }
        out.push(src[start..i].to_vec());
    }
    out
}

/// Header lines to swap in; `{}` is the library's name.
const HEADERS: &[&str] = &[
    "#!lua name={}",
    "#!LUA name={}",
    "#!lua NAME={}",
    "#!Lua Name={}",
    "#!lua  name={}  ",
    "#!lua\tname={}",
    "#!lua name={}\r",
    "#!lua name=",
    "#!lua name={} name={}",
    "#!lua name={} foo=bar",
    "#!lua foo",
    "#!js name={}",
    "#! lua name={}",
    "#!lua \"name={}\"",
    "#!lua 'name={}'",
    "#!lua \"name={}",
    "#!lua name=\"{}\"",
    "#!lua name={}\u{0}x",
    "#!lua name={}-x",
    "#!lua name=\u{e9}",
    "#!lua",
    "#!",
    "#lua name={}",
    " #!lua name={}",
    "#!lua name={}\"",
    "#!lua \"\\x6eame={}\"",
    "#!lua name=\\\"{}\\\"",
    "#!lua name={}{}",
    "#!lua name=_",
    "#!lua name=0",
    "#!LUA NAME={} ",
    "#!lua name={} \"\"",
];

fn header_of(code: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let nl = code.iter().position(|&b| b == b'\n').unwrap_or(code.len());
    (code[..nl].to_vec(), code[nl..].to_vec())
}

fn lib_name_of(code: &[u8]) -> String {
    let (h, _) = header_of(code);
    let h = String::from_utf8_lossy(&h).to_string();
    h.to_ascii_lowercase()
        .find("name=")
        .map(|p| {
            h[p + 5..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .unwrap_or_default()
}

/// A big or odd library (limits of the parser and of registration).
fn odd_library(rng: &mut Rng) -> Vec<u8> {
    let name = format!("odd{}", rng.below(3));
    let h = format!("#!lua name={name}\n");
    let body = match rng.below(9) {
        0 => {
            let n = *rng.pick(&[1usize, 10, 200, 1000, 3000]);
            (0..n)
                .map(|i| {
                    format!("redis.register_function('{name}_f{i}', function() return {i} end)\n")
                })
                .collect::<String>()
        }
        1 => {
            let n = rng.size(300_000);
            format!(
                "local s = '{}'\nredis.register_function('{name}_s', function() return #s end)\n",
                "x".repeat(n)
            )
        }
        2 => {
            let n = *rng.pick(&[50usize, 150, 190, 199, 200, 201, 250, 1000]);
            format!(
                "local x = {}1{}\nredis.register_function('{name}_p', function() return x end)\n",
                "(".repeat(n),
                ")".repeat(n)
            )
        }
        3 => {
            let n = *rng.pick(&[100usize, 199, 200, 201, 300]);
            let locals: String = (0..n).map(|i| format!("local a{i} = {i}\n")).collect();
            format!("{locals}redis.register_function('{name}_l', function() return a0 end)\n")
        }
        4 => {
            let n = *rng.pick(&[10usize, 59, 60, 61, 100]);
            let locals: String = (0..n).map(|i| format!("local u{i} = {i}\n")).collect();
            let sum: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
            format!(
                "{locals}redis.register_function('{name}_u', function() return {} end)\n",
                sum.join(" + ")
            )
        }
        5 => {
            let n = *rng.pick(&[1000usize, 100_000]);
            let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            format!(
                "local t = {{{}}}\nredis.register_function('{name}_t', function() return #t end)\n",
                items.join(",")
            )
        }
        6 => {
            let n = *rng.pick(&[10usize, 100, 199, 200, 201, 500]);
            format!(
                "local t = {}1{}\nredis.register_function('{name}_n', function() return 1 end)\n",
                "{".repeat(n),
                "}".repeat(n)
            )
        }
        7 => {
            let n = *rng.pick(&[1usize, 100, 65, 64]);
            format!(
                "redis.register_function('{}', function() return 1 end)\n",
                "f".repeat(n)
            )
        }
        _ => {
            let n = *rng.pick(&[1000usize, 100_000, 1_000_000]);
            format!("local n = 0\nfor i = 1, {n} do n = n + 1 end\nredis.register_function('{name}_loop', function() return n end)\n")
        }
    };
    let mut v = h.into_bytes();
    v.extend_from_slice(body.as_bytes());
    v
}

fn mutate_library(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(1, 12) {
        let mut v = odd_library(rng);
        if rng.chance(1, 3) {
            let donors: Vec<Vec<u8>> = LIB_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect();
            mutate_bytes(rng, &mut v, &donors);
        }
        return v;
    }
    let seed = rng.pick(LIB_SEEDS).as_bytes().to_vec();
    let name = lib_name_of(&seed);
    let donors: Vec<Vec<u8>> = LIB_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect();
    let mut code = seed;
    for _ in 0..=rng.below(3) {
        match rng.below(6) {
            0 | 1 => {
                // Token-level.
                let mut toks = lua_tokens(&code);
                let n = toks.len();
                let t = rng.pick(LUA_TOKENS).as_bytes().to_vec();
                let i = rng.below(n.max(1) as u64) as usize;
                match rng.below(5) {
                    0 if n > 0 => toks[i] = t,
                    1 if n > 0 => {
                        toks.remove(i);
                    }
                    2 if n > 0 => {
                        let d = toks[i].clone();
                        toks.insert(i, d);
                    }
                    3 if n > 1 => {
                        let j = rng.below(n as u64) as usize;
                        toks.swap(i, j);
                    }
                    _ => {
                        toks.insert(i.min(n), b" ".to_vec());
                        toks.insert(i.min(n), t);
                    }
                }
                code = toks.concat();
            }
            2 => {
                // Header-level.
                let (_, rest) = header_of(&code);
                let h = rng.pick(HEADERS).replace("{}", &name);
                code = h.into_bytes();
                code.extend_from_slice(&rest);
            }
            _ => mutate_bytes(rng, &mut code, &donors),
        }
    }
    code
}

/// Names the cause of a load that one side accepted and the other refused, when it is
/// one of the lexer differences between RX's LuaJIT and Lua 5.1 (so that each cause is
/// reported as one kind of failure).
/// `FUNCTION LOAD`'s or `RX.LOAD`'s refusal of a body that ran past the load timeout.
fn is_load_timeout(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e) if e.ends_with("LOAD timeout"))
}

fn classify_verdict_mismatch(code: &[u8], native: &Reply, rx: &Reply) -> String {
    if let (Reply::Bulk(_), Reply::Error(e)) = (native, rx) {
        if e.contains("invalid escape sequence") {
            return "RX refuses a string escape that native accepts (e.g. '\\q')".into();
        }
        if code.contains(&0) {
            return "native loads a library with a NUL byte that RX refuses".into();
        }
        return "native loads the library, RX refuses it".into();
    }
    // Native refused and RX loaded: look for syntax only RX's lexer and parser take.
    let (_, body) = header_of(code);
    let toks: Vec<Vec<u8>> = lua_tokens(&body)
        .into_iter()
        .filter(|t| !t[0].is_ascii_whitespace() && !t.starts_with(b"--"))
        .collect();
    let mut features = BTreeSet::new();
    for (i, t) in toks.iter().enumerate() {
        let next = toks.get(i + 1).map(|n| n.as_slice()).unwrap_or(b"");
        let is_str = matches!(t[0], b'\'' | b'"') || t.starts_with(b"[[");
        if !is_str && t.iter().any(|&b| b >= 0x80) {
            features.insert("non-ASCII bytes in names");
        }
        if !is_str
            && t[0].is_ascii_digit()
            && (t.ends_with(b"LL") || t.ends_with(b"ll") || t.ends_with(b"i"))
        {
            features.insert("64-bit/imaginary number literals (1LL, 1i)");
        }
        if !is_str && t[0].is_ascii_digit() && t.contains(&b'_') {
            features.insert("digit separators (1_000)");
        }
        match (t.as_slice(), next) {
            (b"!", b"=") => features.insert("'!='"),
            (b"!", _) => features.insert("unary '!'"),
            (b"&", b"&") => features.insert("'&&'"),
            (b"|", b"|") => features.insert("'||'"),
            (b"&", _) | (b"|", _) => features.insert("bitwise '&' '|'"),
            (b"<", b"<") | (b">", b">") => features.insert("shifts '<<' '>>'"),
            (b"~", n) if n != b"=" => features.insert("'~' operators"),
            (b"?", b".") => features.insert("'?.'"),
            (b"?", b"?") => features.insert("'??'"),
            (b":", b":") => features.insert("labels '::'"),
            (b"goto", _) => features.insert("'goto'"),
            _ => false,
        };
    }
    if features.is_empty() {
        "RX loads a library that native refuses".into()
    } else {
        let f: Vec<&str> = features.into_iter().collect();
        format!(
            "RX loads a library that native refuses: LuaJIT syntax {}",
            f.join(", ")
        )
    }
}

#[test]
#[ignore = "fuzzing campaign: run with `make fuzz`"]
fn b_library_mutation_vs_native() {
    let mut camp = Campaign::new("b_library_mutation_vs_native");
    let mut rx = Server::start();
    let mut native = Server::start_native(&[]);
    let mut rc = connect(&rx);
    let mut nc = connect(&native);
    // Every seed is valid on both sides.
    for seed in LIB_SEEDS {
        let n = nc.cmd(&[b"FUNCTION".as_slice(), b"LOAD", b"REPLACE", seed.as_bytes()]);
        let r = rc.cmd(&[b"RX.LOAD".as_slice(), b"REPLACE", seed.as_bytes()]);
        assert!(
            matches!((&n, &r), (Reply::Bulk(_), Reply::Bulk(_))),
            "seed library {seed:?}: native {n:?}, rx {r:?}"
        );
    }
    must_ok(&mut rc, &cmd(&["SET", "fz:key", "v"]));
    let mut state = State::read(&mut rc).expect("state");
    while let Some((case, mut rng)) = camp.next_case() {
        if rng.chance(1, 40) {
            // SYNC: Valkey 8.1.1 frees its Lua VM in the background by default, which corrupts
            // it (fixed upstream after 8.1.1) and makes the native baseline flaky.
            let _ = send(&mut nc, &cmd(&["FUNCTION", "FLUSH", "SYNC"]), REPLY_BOUND);
            let _ = send(&mut rc, &cmd(&["RX.FLUSH"]), REPLY_BOUND);
            state = State::read(&mut rc).expect("state");
        }
        let code = mutate_library(&mut rng);
        let replace = !rng.chance(1, 10);
        let mut ncmd = cmd(&["FUNCTION", "LOAD"]);
        let mut rcmd = cmd(&["RX.LOAD"]);
        if replace {
            ncmd.push(b"REPLACE".to_vec());
            rcmd.push(b"REPLACE".to_vec());
        }
        ncmd.push(code.clone());
        rcmd.push(code.clone());
        let cmds = vec![ncmd.clone(), rcmd.clone()];
        let nr = send(&mut nc, &ncmd, REPLY_BOUND);
        let rr = send(&mut rc, &rcmd, REPLY_BOUND);
        let nr = match nr {
            Ok(r) => r,
            Err(e) => {
                camp.note("the native server failed (not an RX failure)", || {
                    e.to_string()
                });
                camp.count("native failures");
                native = Server::start_native(&[]);
                nc = connect(&native);
                let _ = send(&mut rc, &cmd(&["RX.FLUSH"]), REPLY_BOUND);
                state = State::read(&mut rc).unwrap_or(state);
                continue;
            }
        };
        let rr = match rr {
            Ok(r) => r,
            Err(e) => {
                camp.fail(&rx, case, "no reply", &cmds, &e);
                camp.check_health(&mut rx, case, &cmds);
                rc = connect(&rx);
                let _ = send(&mut nc, &cmd(&["FUNCTION", "FLUSH", "SYNC"]), REPLY_BOUND);
                let _ = send(&mut rc, &cmd(&["RX.FLUSH"]), REPLY_BOUND);
                state = State::read(&mut rc).expect("state");
                continue;
            }
        };
        match (&nr, &rr) {
            (Reply::Bulk(a), Reply::Bulk(b)) => {
                camp.count("both loaded");
                if a != b {
                    camp.fail(
                        &rx,
                        case,
                        "library name differs from native",
                        &cmds,
                        &format!("native {}, rx {}", show_reply(&nr), show_reply(&rr)),
                    );
                }
                let name = String::from_utf8_lossy(a).to_string();
                let nl = send(
                    &mut nc,
                    &cmd(&["FUNCTION", "LIST", "LIBRARYNAME", &name]),
                    REPLY_BOUND,
                );
                let rl = send(
                    &mut rc,
                    &cmd(&["RX.LIST", "LIBRARYNAME", &name]),
                    REPLY_BOUND,
                );
                if let (Ok(nl), Ok(rl)) = (nl, rl) {
                    let listing = |l: &Reply| comparable_listing(l).unwrap_or_else(|| l.clone());
                    let (nl, rl) = (listing(&nl), listing(&rl));
                    if nl != rl {
                        camp.fail(
                            &rx,
                            case,
                            "listing differs from native",
                            &cmds,
                            &format!("native {nl:?}\nrx     {rl:?}"),
                        );
                    }
                }
                state = State::read(&mut rc).unwrap_or(state);
            }
            (Reply::Error(ne), Reply::Error(re)) => {
                camp.count("both refused");
                let mapped = normalize_error_text(re, &ncmd);
                if mapped != *ne {
                    camp.count("error text differs");
                    let code_text = shorten(&escape_bytes(&code), 200);
                    camp.note("error text differs from native", || format!("native {ne:?}\n[fuzz]          rx     {re:?}\n[fuzz]          code   {code_text}"));
                }
                if let Some(after) =
                    check_unchanged(&mut camp, &rx, &mut rc, case, &cmds, &state, re)
                {
                    state = after;
                }
            }
            _ if is_load_timeout(&nr) || is_load_timeout(&rr) => {
                // The load timeout is wall-clock time, and LuaJIT runs a body at another
                // speed than Lua 5.1 (and a loaded machine slows either): a body near the
                // limit may time out on one side only.
                camp.note("a library body timed out on one side only", || {
                    format!(
                        "native {}\n[fuzz]          rx     {}",
                        show_reply(&nr),
                        show_reply(&rr)
                    )
                });
                let _ = send(&mut nc, &cmd(&["FUNCTION", "FLUSH", "SYNC"]), REPLY_BOUND);
                let _ = send(&mut rc, &cmd(&["RX.FLUSH"]), REPLY_BOUND);
                state = State::read(&mut rc).expect("state");
            }
            _ => {
                let kind = classify_verdict_mismatch(&code, &nr, &rr);
                camp.fail(
                    &rx,
                    case,
                    &kind,
                    &cmds,
                    &format!("native {}\nrx     {}", show_reply(&nr), show_reply(&rr)),
                );
                // Back to one state on both sides.
                let _ = send(&mut nc, &cmd(&["FUNCTION", "FLUSH", "SYNC"]), REPLY_BOUND);
                let _ = send(&mut rc, &cmd(&["RX.FLUSH"]), REPLY_BOUND);
                state = State::read(&mut rc).expect("state");
            }
        }
        if let Some(lines) = camp.new_crash_lines(&rx) {
            camp.fail(&rx, case, "crash report in the log", &cmds, &lines);
        }
        if !rx.is_alive() {
            camp.check_health(&mut rx, case, &cmds);
            rc = connect(&rx);
            state = State::read(&mut rc).expect("state");
        }
    }
    drop(native);
    reload_checks(&mut camp, &mut rx);
    camp.finish();
}

// ---------------------------------------------------------------------------
// c. Codecs: cjson, cmsgpack and struct through EVAL (native) and RX.EVAL

/// `canon(v)`: a text for any Lua value that is the same in Lua 5.1 and LuaJIT (keys
/// sorted, numbers in `%.17g`, strings escaped), so replies compare despite `pairs` order.
const CANON: &str = r#"local function esc(s) return (string.gsub(s, '[^%w%p ]', function(c) return string.format('\\%03d', string.byte(c)) end)) end
local function num(v) if v ~= v then return 'nan' elseif v == math.huge then return 'inf' elseif v == -math.huge then return '-inf' end return string.format('%.17g', v) end
local canon
canon = function(v)
  local t = type(v)
  if t == 'table' then
    local parts = {}
    for k, x in pairs(v) do parts[#parts + 1] = canon(k) .. '=' .. canon(x) end
    table.sort(parts)
    return '{' .. table.concat(parts, ',') .. '}'
  elseif t == 'number' then return num(v)
  elseif t == 'string' then return '"' .. esc(v) .. '"'
  elseif t == 'userdata' then if v == cjson.null then return 'null' end return 'userdata'
  end
  return tostring(v)
end
"#;

/// (name, body after CANON). Inputs come in ARGV.
const CODEC_SCRIPTS: &[(&str, &str)] = &[
    ("cjson.decode", "return canon(cjson.decode(ARGV[1]))"),
    (
        "cjson round trip",
        "local v = cjson.decode(ARGV[1]) local e = cjson.encode(v) return {#e, canon(cjson.decode(e))}",
    ),
    (
        "cjson.encode of a Lua value",
        "local v = loadstring('return ' .. ARGV[1])() local e = cjson.encode(v) return {#e, canon(cjson.decode(e))}",
    ),
    (
        "cmsgpack.unpack",
        "return {select('#', cmsgpack.unpack(ARGV[1])), canon({cmsgpack.unpack(ARGV[1])})}",
    ),
    (
        "cmsgpack round trip",
        "local n = select('#', cmsgpack.unpack(ARGV[1])) local t = {cmsgpack.unpack(ARGV[1])} local p = cmsgpack.pack(unpack(t, 1, n)) return {#p, canon({cmsgpack.unpack(p)})}",
    ),
    (
        "cmsgpack.unpack_limit",
        "return canon({cmsgpack.unpack_limit(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))})",
    ),
    (
        "cmsgpack.pack of a Lua value",
        "local v = loadstring('return ' .. ARGV[1])() local p = cmsgpack.pack(v) return {#p, canon({cmsgpack.unpack(p)})}",
    ),
    ("struct.unpack", "return canon({struct.unpack(ARGV[1], ARGV[2])})"),
    (
        "struct.unpack at an offset",
        "return canon({struct.unpack(ARGV[1], ARGV[2], tonumber(ARGV[3]))})",
    ),
    (
        "struct.pack",
        "local a = {} for i = 2, #ARGV do a[#a + 1] = tonumber(ARGV[i]) or ARGV[i] end return struct.pack(ARGV[1], unpack(a))",
    ),
    ("struct.size", "return struct.size(ARGV[1])"),
];

fn json_number(rng: &mut Rng) -> String {
    const LITERALS: &[&str] = &[
        "0",
        "-0",
        "1",
        "-1",
        "1.5",
        "1e10",
        "1E-5",
        "-1.25e+3",
        "123456789012345678901234567890",
        "1e400",
        "-1e400",
        "0.1",
        "3.14159265358979",
        "2e-308",
        "5e-324",
        "9007199254740993",
        "1.7976931348623157e308",
        "01",
        "1.",
        "-",
        ".5",
        "+1",
        "0x1F",
        "0X1p4",
        "NaN",
        "nan",
        "inf",
        "-Infinity",
        "Infinity",
        "1e",
        "1e+",
        "0.0000001",
        "1e-7",
        "100000000000000",
        "1000000000000000",
        "-9223372036854775808",
        "18446744073709551616",
    ];
    match rng.below(3) {
        0 => rng.pick(LITERALS).to_string(),
        1 => (rng.next() as i64 >> rng.below(64)).to_string(),
        _ => format!(
            "{}",
            f64::from_bits(rng.next()) * if rng.chance(1, 2) { 1.0 } else { 0.0 }
                + rng.range(-1000, 1000) as f64 / 7.0
        ),
    }
}

fn json_string(rng: &mut Rng) -> String {
    let mut s = String::from("\"");
    for _ in 0..rng.size(12) {
        match rng.below(12) {
            0 => {
                let escapes: &[&str] = &["\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"];
                s.push_str(rng.pick::<&str>(escapes))
            }
            1 => s.push_str(&format!("\\u{:04x}", rng.below(0x10000))),
            2 => s.push_str(rng.pick::<&str>(&[
                "\\ud83d\\ude00",
                "\\ud800",
                "\\udc00",
                "\\u0000",
                "\\uD834\\uDD1E",
                "\\u00e9",
                "\\uzzzz",
                "\\x41",
                "\\q",
            ])),
            3 => s.push(char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('?')),
            4 => s.push(rng.below(0x20) as u8 as char),
            _ => s.push((b'a' + rng.below(26) as u8) as char),
        }
    }
    s.push('"');
    s
}

fn json_value(rng: &mut Rng, depth: usize) -> String {
    let ws = |rng: &mut Rng| -> &'static str {
        rng.pick::<&str>(&["", "", "", " ", "\n", "\t", "\r\n  "])
    };
    let top = if depth > 5 { 4 } else { 8 };
    match rng.below(top) {
        0 | 1 => json_number(rng),
        2 => json_string(rng),
        3 => rng
            .pick(&["true", "false", "null", "tru", "nul", "True"])
            .to_string(),
        4 | 5 => {
            let n = rng.size(6);
            let items: Vec<String> = (0..n)
                .map(|_| format!("{}{}{}", ws(rng), json_value(rng, depth + 1), ws(rng)))
                .collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let n = rng.size(6);
            let items: Vec<String> = (0..n)
                .map(|_| {
                    let k = if rng.chance(1, 8) {
                        json_number(rng)
                    } else {
                        json_string(rng)
                    };
                    format!(
                        "{}{k}{}:{}{}",
                        ws(rng),
                        ws(rng),
                        ws(rng),
                        json_value(rng, depth + 1)
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

fn json_input(rng: &mut Rng) -> Vec<u8> {
    let mut v = match rng.below(12) {
        0 => {
            let n = *rng.pick(&[999usize, 1000, 1001, 5000]);
            let (o, c) = if rng.chance(1, 2) {
                ("[", "]")
            } else {
                ("{\"a\":", "}")
            };
            format!("{}1{}", o.repeat(n), c.repeat(n)).into_bytes()
        }
        1 => {
            let n = rng.size(100_000);
            format!("[{}1]", "1,".repeat(n)).into_bytes()
        }
        _ => json_value(rng, 0).into_bytes(),
    };
    if rng.chance(1, 3) {
        for _ in 0..=rng.below(3) {
            mutate_bytes(rng, &mut v, &[]);
        }
    }
    v
}

/// A Lua string literal holding exactly `b` (decimal escapes: the same in Lua 5.1 and
/// LuaJIT).
fn lua_string_literal(b: &[u8]) -> String {
    let mut s = String::from("'");
    for &c in b {
        if c.is_ascii_alphanumeric() || c == b' ' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\{c:03}"));
        }
    }
    s.push('\'');
    s
}

/// A Lua expression for cjson.encode / cmsgpack.pack: tables dense and sparse, nested,
/// odd keys and numbers.
fn lua_value(rng: &mut Rng, depth: usize) -> String {
    let top = if depth > 4 { 5 } else { 10 };
    match rng.below(top) {
        // No negative zero: Lua 5.1 folds the constant `-0` to 0 (a documented difference).
        0 => json_number(rng)
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v != 0.0)
            .map(|v| format!("{v:e}"))
            .unwrap_or_else(|| "1".into()),
        1 => rng
            .pick(&[
                "0/0",
                "1/0",
                "-1/0",
                "2^53",
                "-2^63",
                "2^64",
                "0.1",
                "0",
                "1e308",
                "5e-324",
                "4294967295",
                "4294967296",
                "-2147483649",
                "127",
                "128",
                "-32",
                "-33",
                "255",
                "256",
                "65535",
                "65536",
            ])
            .to_string(),
        2 => {
            let n = rng.size(40);
            lua_string_literal(&rng.bytes(n))
        }
        3 => rng
            .pick(&[
                "true",
                "false",
                "nil",
                "cjson.null",
                "string.rep('x', 70000)",
                "string.rep('y', 31)",
                "string.rep('z', 32)",
            ])
            .to_string(),
        4 => rng
            .pick(&[
                "{}",
                "{{}}",
                "{[1]=1,[3]=3}",
                "{[1000]=1}",
                "{[-1]=1}",
                "{[0]=0,1}",
                "{[1.5]=1}",
                "{[true]=1}",
                "{x=1,[1]=2}",
            ])
            .to_string(),
        5 | 6 => {
            let n = rng.size(8);
            let items: Vec<String> = (0..n).map(|_| lua_value(rng, depth + 1)).collect();
            format!("{{{}}}", items.join(","))
        }
        7 => {
            let n = *rng.pick(&[15usize, 16, 17, 100, 1000, 1001]);
            format!("{}1{}", "{".repeat(n), "}".repeat(n))
        }
        _ => {
            // Keys are unique: which of two equal keys in a constructor wins is not defined.
            let n = rng.size(6);
            let mut keys = BTreeSet::new();
            let mut items = Vec::new();
            for i in 0..n {
                let k = match rng.below(4) {
                    0 => format!("[{}]", i + 1),
                    1 => format!("[{}]", rng.range(-5, 100)),
                    _ => format!("[{:?}]", format!("k{}", rng.below(20))),
                };
                if keys.insert(k.clone()) {
                    items.push(format!("{k}={}", lua_value(rng, depth + 1)));
                }
            }
            format!("{{{}}}", items.join(","))
        }
    }
}

fn msgpack_value(rng: &mut Rng, depth: usize, out: &mut Vec<u8>) {
    let top = if depth > 5 { 14 } else { 20 };
    let be = |v: u64, n: usize| v.to_be_bytes()[8 - n..].to_vec();
    match rng.below(top) {
        0 => out.push(*rng.pick(&[0xc0u8, 0xc2, 0xc3, 0xc1])),
        1 => out.push(rng.below(0x80) as u8),
        2 => out.push(0xe0 | rng.below(32) as u8),
        3 => {
            let (tag, n) = *rng.pick(&[
                (0xccu8, 1usize),
                (0xcd, 2),
                (0xce, 4),
                (0xcf, 8),
                (0xd0, 1),
                (0xd1, 2),
                (0xd2, 4),
                (0xd3, 8),
            ]);
            out.push(tag);
            let v = if rng.chance(1, 3) {
                *rng.pick(&[
                    0,
                    u64::MAX,
                    1 << 63,
                    (1 << 63) - 1,
                    1 << 53,
                    (1 << 53) + 1,
                    0x80,
                    0x7f,
                ])
            } else {
                rng.next()
            };
            out.extend(be(v, n));
        }
        4 => {
            out.push(0xca);
            let any = f32::from_bits(rng.next() as u32);
            let f = *rng.pick(&[
                0.0f32,
                -0.0,
                1.5,
                f32::NAN,
                f32::INFINITY,
                f32::MIN_POSITIVE,
                1e38,
                any,
            ]);
            out.extend(f.to_be_bytes());
        }
        5 => {
            out.push(0xcb);
            let any = f64::from_bits(rng.next());
            let f = *rng.pick(&[
                0.0f64,
                -0.0,
                0.1,
                f64::NAN,
                f64::NEG_INFINITY,
                5e-324,
                1e308,
                any,
            ]);
            out.extend(f.to_be_bytes());
        }
        6..=8 => {
            let n = rng.size(40);
            let s = rng.bytes(n);
            match rng.below(4) {
                0 if s.len() < 32 => out.push(0xa0 | s.len() as u8),
                1 => {
                    out.push(0xd9);
                    out.push(s.len() as u8);
                }
                2 => {
                    out.push(0xda);
                    out.extend(be(s.len() as u64, 2));
                }
                _ => {
                    out.push(*rng.pick(&[0xdbu8, 0xc6]));
                    out.extend(be(s.len() as u64, 4));
                }
            }
            out.extend(s);
        }
        9 => {
            // Ext types, and bin8/16.
            let n = rng.size(20);
            let s = rng.bytes(n);
            let tag = *rng.pick(&[0xd4u8, 0xd5, 0xd6, 0xd7, 0xd8, 0xc7, 0xc8, 0xc9, 0xc4, 0xc5]);
            out.push(tag);
            match tag {
                0xc7 | 0xc4 => out.push(s.len() as u8),
                0xc8 | 0xc5 => out.extend(be(s.len() as u64, 2)),
                0xc9 => out.extend(be(s.len() as u64, 4)),
                _ => {}
            }
            if tag >= 0xc7 && tag != 0xc4 && tag != 0xc5 || tag >= 0xd4 {
                out.push(rng.byte());
            }
            out.extend(s);
        }
        10 => {
            // A length that claims more than there is.
            out.push(*rng.pick(&[0xdcu8, 0xdd, 0xde, 0xdf, 0xdb]));
            let v = *rng.pick(&[0xffffu64, 0xffff_ffff, 0x7fff_ffff, 1000]);
            let n = if out.last().is_some_and(|t| *t == 0xdc || *t == 0xde) {
                2
            } else {
                4
            };
            out.extend(be(v, n));
        }
        11 => {
            let n = *rng.pick(&[16usize, 17, 100, 1000, 20_000]);
            out.extend(std::iter::repeat_n(0x91u8, n));
            out.push(0xc0);
        }
        12..=16 => {
            let n = rng.size(8);
            match rng.below(3) {
                0 => out.push(0x90 | n as u8 & 0x0f),
                1 => {
                    out.push(0xdc);
                    out.extend(be(n as u64, 2));
                }
                _ => {
                    out.push(0xdd);
                    out.extend(be(n as u64, 4));
                }
            }
            for _ in 0..n.min(15) {
                msgpack_value(rng, depth + 1, out);
            }
        }
        _ => {
            let n = rng.size(6);
            match rng.below(3) {
                0 => out.push(0x80 | n as u8 & 0x0f),
                1 => {
                    out.push(0xde);
                    out.extend(be(n as u64, 2));
                }
                _ => {
                    out.push(0xdf);
                    out.extend(be(n as u64, 4));
                }
            }
            for _ in 0..2 * n.min(15) {
                msgpack_value(rng, depth + 1, out);
            }
        }
    }
}

fn msgpack_input(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..=rng.below(3) {
        msgpack_value(rng, 0, &mut v);
    }
    if rng.chance(1, 3) {
        for _ in 0..=rng.below(3) {
            mutate_bytes(rng, &mut v, &[]);
        }
    }
    v
}

/// A struct format and matching (or not) arguments.
fn struct_format(rng: &mut Rng) -> (String, Vec<String>) {
    let mut f = String::new();
    let mut args = Vec::new();
    for _ in 0..=rng.size(8) {
        match rng.below(16) {
            0 => f.push_str(
                rng.pick::<&str>(&["<", ">", "=", "!", "!1", "!2", "!4", "!8", "!3", "!16", " "]),
            ),
            1..=7 => {
                let t = *rng.pick(&["b", "B", "h", "H", "l", "L", "T", "i", "I"]);
                f.push_str(t);
                let size = if "iI".contains(t) && rng.chance(1, 2) {
                    let s = *rng.pick(&[1u32, 2, 3, 4, 5, 7, 8, 9, 16, 0, 17, 32, 99]);
                    f.push_str(&s.to_string());
                    s
                } else {
                    8
                };
                let bits = size.clamp(1, 8) * 8;
                let v: String = match rng.below(6) {
                    0 => ((rng.next() >> (64 - bits)) as i64).to_string(),
                    1 => (-((rng.next() >> (65 - bits.min(64))) as i64)).to_string(),
                    2 => rng
                        .pick(&[
                            "0",
                            "-1",
                            "1.5",
                            "-1.5",
                            "255",
                            "256",
                            "65535",
                            "4294967296",
                            "9007199254740993",
                        ])
                        .to_string(),
                    3 => rng
                        .pick(&["1e19", "-1e19", "9.3e18", "18446744073709551615"])
                        .to_string(),
                    _ => rng.range(-300, 300).to_string(),
                };
                args.push(v);
            }
            8 => {
                f.push(*rng.pick(&['f', 'd']));
                args.push(
                    rng.pick(&["0", "1.5", "-0", "3.4e38", "1e39", "1e-310", "0.1"])
                        .to_string(),
                );
            }
            9 | 10 => {
                f.push('c');
                let n = rng.size(20);
                if rng.chance(3, 4) {
                    f.push_str(&n.to_string());
                }
                args.push("x".repeat(rng.size(24)));
            }
            11 => {
                f.push('s');
                args.push(if rng.chance(1, 8) {
                    "a\0b".into()
                } else {
                    "y".repeat(rng.size(10))
                });
            }
            12 => f.push('x'),
            13 => {
                f.push_str(&rng.size(2000).to_string());
            }
            _ => f.push(*rng.pick(&['q', 'z', '%', 'c', 'i', '!', '1'])),
        }
    }
    if rng.chance(1, 10) && !args.is_empty() {
        args.pop();
    }
    if rng.chance(1, 10) {
        args.push("extra".into());
    }
    (f, args)
}

/// Whether an argument of a struct.pack case is outside what C converts to an integer
/// without undefined behaviour (native Redis casts the double).
fn outside_c_integer_range(args: &[String]) -> bool {
    args.iter().any(|a| {
        a.parse::<f64>()
            .is_ok_and(|v| !(-9.2e18..=1.8e19).contains(&v))
    })
}

/// One codec case: the script name, and the command as EVAL (native) and RX.EVAL.
fn codec_case(rng: &mut Rng, scripts: &[(String, String)]) -> (String, Cmd, Cmd, bool) {
    let which = rng.below(scripts.len() as u64) as usize;
    let (name, body) = &scripts[which];
    let mut argv: Vec<Vec<u8>> = match CODEC_SCRIPTS[which].0 {
        "cjson.decode" | "cjson round trip" => vec![json_input(rng)],
        "cjson.encode of a Lua value" | "cmsgpack.pack of a Lua value" => {
            vec![lua_value(rng, 0).into_bytes()]
        }
        "cmsgpack.unpack" | "cmsgpack round trip" => vec![msgpack_input(rng)],
        "cmsgpack.unpack_limit" => vec![
            msgpack_input(rng),
            rng.range(-2, 5).to_string().into_bytes(),
            rng.range(-2, 40).to_string().into_bytes(),
        ],
        "struct.pack" => {
            let (f, args) = struct_format(rng);
            let mut v = vec![f.into_bytes()];
            v.extend(args.into_iter().map(String::into_bytes));
            v
        }
        "struct.size" => vec![struct_format(rng).0.into_bytes()],
        _ => {
            // struct.unpack: a format and data (random, or packed by the same format).
            let (f, _) = struct_format(rng);
            let n = rng.size(64);
            let data = rng.bytes(n);
            let mut v = vec![f.into_bytes(), data];
            if CODEC_SCRIPTS[which].0 == "struct.unpack at an offset" {
                v.push(rng.range(-3, 70).to_string().into_bytes());
            }
            v
        }
    };
    let ub = CODEC_SCRIPTS[which].0 == "struct.pack"
        && outside_c_integer_range(
            &argv
                .iter()
                .skip(1)
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect::<Vec<_>>(),
        );
    let mut native = cmd(&[b"EVAL".as_slice(), body.as_bytes(), b"0"]);
    native.append(&mut argv.clone());
    let mut rx = cmd(&[b"RX.EVAL".as_slice(), body.as_bytes(), b"0"]);
    rx.append(&mut argv);
    (name.clone(), native, rx, ub)
}

#[test]
#[ignore = "fuzzing campaign: run with `make fuzz`"]
fn c_codecs_vs_native() {
    let mut camp = Campaign::new("c_codecs_vs_native");
    let mut rx = Server::start();
    let mut native = Server::start_native(&[]);
    let mut rc = connect(&rx);
    let mut nc = connect(&native);
    let scripts: Vec<(String, String)> = CODEC_SCRIPTS
        .iter()
        .map(|(n, b)| (n.to_string(), format!("{CANON}{b}")))
        .collect();
    while let Some((case, mut rng)) = camp.next_case() {
        let (name, ncmd, rcmd, ub) = codec_case(&mut rng, &scripts);
        let cmds = vec![ncmd.clone(), rcmd.clone()];
        let nr = match send(&mut nc, &ncmd, REPLY_BOUND) {
            Ok(r) => r,
            Err(e) => {
                camp.note("the native server failed (not an RX failure)", || {
                    format!("{name}: {e}: {}", shorten(&show_cmd(&ncmd), 300))
                });
                native = Server::start_native(&[]);
                nc = connect(&native);
                // RX must still answer.
                if let Err(e) = send(&mut rc, &rcmd, REPLY_BOUND) {
                    camp.fail(&rx, case, "no reply", &cmds, &e);
                    camp.check_health(&mut rx, case, &cmds);
                    rc = connect(&rx);
                }
                continue;
            }
        };
        let rr = match send(&mut rc, &rcmd, REPLY_BOUND) {
            Ok(r) => r,
            Err(e) => {
                camp.fail(&rx, case, &format!("no reply ({name})"), &cmds, &e);
                camp.check_health(&mut rx, case, &cmds);
                rc = connect(&rx);
                continue;
            }
        };
        camp.count(&name);
        match (&nr, &rr) {
            (Reply::Error(ne), Reply::Error(re)) => {
                let mapped = normalize_error_text(re, &ncmd);
                if mapped != *ne {
                    camp.count("error text differs");
                    let args = shorten(&show_cmd(&ncmd[3..].to_vec()), 200);
                    camp.note(&format!("{name}: error text differs from native"), || {
                        format!("native {ne:?}\n[fuzz]          rx     {re:?}\n[fuzz]          ARGV   {args}")
                    });
                }
            }
            (a, b) if a == b => {}
            _ => {
                let verdict = if nr.is_error() != rr.is_error() {
                    "one side failed"
                } else {
                    "replies differ"
                };
                let detail = format!(
                    "native {}\nrx     {}",
                    shorten(&show_reply(&nr), 1500),
                    shorten(&show_reply(&rr), 1500)
                );
                // The key's new name also moves it in the sorted dump: compare the texts
                // as multisets of characters once the key is renamed.
                let zero_keys = |r: &Reply| {
                    let mut chars: Vec<char> = show_reply(r)
                        .replace("{-0=", "{0=")
                        .replace(",-0=", ",0=")
                        .chars()
                        .collect();
                    chars.sort_unstable();
                    chars
                };
                if zero_keys(&nr) == zero_keys(&rr) && show_reply(&nr).contains("-0=") {
                    camp.note(
                        &format!(
                            "{name}: a -0 table key reads back as 0 in LuaJIT (Lua 5.1 keeps -0)"
                        ),
                        || {
                            format!(
                                "{detail}\n[fuzz]          ARGV {}",
                                shorten(&show_cmd(&ncmd[3..].to_vec()), 300)
                            )
                        },
                    );
                } else if ub {
                    camp.note(&format!("{name}: {verdict} where native casts an out-of-range double (undefined behaviour in C)"), || {
                        format!("{detail}\n[fuzz]          ARGV {}", shorten(&show_cmd(&ncmd[3..].to_vec()), 300))
                    });
                } else {
                    camp.fail(&rx, case, &format!("{name}: {verdict}"), &cmds, &detail);
                }
            }
        }
        if let Some(lines) = camp.new_crash_lines(&rx) {
            camp.fail(&rx, case, "crash report in the log", &cmds, &lines);
        }
        if !rx.is_alive() {
            camp.check_health(&mut rx, case, &cmds);
            rc = connect(&rx);
        }
    }
    drop(native);
    reload_checks(&mut camp, &mut rx);
    camp.finish();
}

// ---------------------------------------------------------------------------
// d. Busy functions and scripts, kills and MULTI/EXEC, with other clients racing

/// `spin`, `rospin` and `pspin` run forever when their argument is 0 (they never write,
/// so RX.KILL and rx.time-limit-ms can stop them); `wspin` writes first, and always ends.
const RACE_LIB: &str = "#!lua name=race
redis.register_function('spin', function(keys, args) local n = tonumber(args[1]) or 0 if n <= 0 then while true do end end for i = 1, n do end return n end)
redis.register_function{function_name='rospin', callback=function(keys, args) local n = tonumber(args[1]) or 0 if n <= 0 then while true do end end for i = 1, n do end return n end, flags={'no-writes'}}
redis.register_function('pspin', function(keys, args) local n = tonumber(args[1]) or 0 local i = 0 while n <= 0 or i < n do pcall(function() for j = 1, 1000 do end end) i = i + 1000 end return i end)
redis.register_function('wspin', function(keys, args) redis.call('INCR', keys[1]) local n = tonumber(args[1]) or 1 for i = 1, n do end return n end)
redis.register_function('quick', function(keys) return redis.call('INCR', keys[1]) end)
redis.register_function{function_name='ctl', callback=function(keys, args) return 'ctl:' .. (args[1] or '') end, flags={'no-writes'}}
";

const SPIN_SCRIPT: &str = "local n = tonumber(ARGV[1]) or 0 if n <= 0 then while true do end end for i = 1, n do end return n";
const WSPIN_SCRIPT: &str =
    "redis.call('INCR', KEYS[1]) for i = 1, tonumber(ARGV[1]) do end return 1";

struct Sent {
    cmd: Cmd,
    at_ms: u128,
    took_ms: u128,
    reply: Result<Reply, String>,
}

fn show_sent(who: &str, s: &Sent) -> String {
    format!(
        "{who} +{}ms ({}ms): {} -> {}",
        s.at_ms,
        s.took_ms,
        shorten(&show_cmd(&s.cmd), 120),
        match &s.reply {
            Ok(r) => shorten(&show_reply(r), 200),
            Err(e) => format!("NO REPLY: {e}"),
        }
    )
}

/// Runs `plan` (delay from `start` in ms, command) on one connection; stops at the first
/// command without a reply.
fn run_client(port: u16, plan: Vec<(u64, Cmd)>, start: Instant) -> Vec<Sent> {
    let mut out = Vec::new();
    let mut c = match Conn::try_connect(port) {
        Ok(c) => c,
        Err(e) => {
            out.push(Sent {
                cmd: cmd(&["<connect>"]),
                at_ms: 0,
                took_ms: 0,
                reply: Err(e.to_string()),
            });
            return out;
        }
    };
    for (delay, command) in plan {
        let due = start + Duration::from_millis(delay);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let t0 = Instant::now();
        let reply = send(&mut c, &command, REPLY_BOUND);
        let failed = reply.is_err();
        out.push(Sent {
            cmd: command,
            at_ms: t0.duration_since(start).as_millis(),
            took_ms: t0.elapsed().as_millis(),
            reply,
        });
        if failed {
            break;
        }
    }
    out
}

fn race_setup(c: &mut Conn) {
    must_ok(
        c,
        &cmd(&[b"RX.LOAD".as_slice(), b"REPLACE", RACE_LIB.as_bytes()]),
    );
}

/// Iterations of an empty `for` loop per millisecond (the interpreter's speed here).
fn calibrate(c: &mut Conn) -> u64 {
    let n = 5_000_000u64;
    let t = Instant::now();
    must_ok(c, &cmd(&["RX.CALL", "spin", "0", &n.to_string()]));
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    ((n as f64 / ms.max(0.1)) as u64).max(1000)
}

#[test]
#[ignore = "fuzzing campaign: run with `make fuzz`"]
fn d_busy_kill_multi_races() {
    let mut camp = Campaign::new("d_busy_kill_multi_races");
    let mut server = Server::start_with(&["--busy-reply-threshold", "100"], &[]);
    let mut c = connect(&server);
    race_setup(&mut c);
    let per_ms = calibrate(&mut c);
    println!("[fuzz] d_busy_kill_multi_races: {per_ms} loop iterations per ms");
    while let Some((case, mut rng)) = camp.next_case() {
        let threshold = *rng.pick(&[50u64, 100, 200]);
        let time_limit = if rng.chance(1, 3) {
            *rng.pick(&[150u64, 400, 1000])
        } else {
            0
        };
        let mut cmds: Vec<Cmd> = vec![
            cmd(&[
                "CONFIG",
                "SET",
                "busy-reply-threshold",
                &threshold.to_string(),
            ]),
            cmd(&["CONFIG", "SET", "rx.time-limit-ms", &time_limit.to_string()]),
        ];
        for k in &cmds {
            if let Err(e) = send(&mut c, k, REPLY_BOUND) {
                camp.fail(&server, case, "no reply", &cmds, &e);
            }
        }
        // The busy call: a function or a script, forever (non-writing only) or for a while.
        let ms = *rng.pick(&[1u64, 20, 100, 300, 700]);
        let n = (ms * per_ms).to_string();
        let forever = rng.chance(1, 3);
        let spin_arg = if forever { "0".to_string() } else { n.clone() };
        let (busy, is_script, writes): (Cmd, bool, bool) = match rng.below(7) {
            0 => (cmd(&["RX.CALL", "spin", "0", &spin_arg]), false, false),
            1 => (cmd(&["RX.CALL_RO", "rospin", "0", &spin_arg]), false, false),
            2 => (cmd(&["RX.CALL", "pspin", "0", &spin_arg]), false, false),
            3 => (cmd(&["RX.CALL", "wspin", "1", "race:w", &n]), false, true),
            4 => (cmd(&["RX.EVAL", SPIN_SCRIPT, "0", &spin_arg]), true, false),
            5 => (
                cmd(&["RX.EVAL", WSPIN_SCRIPT, "1", "race:w", &n]),
                true,
                true,
            ),
            _ => (cmd(&["RX.CALL", "quick", "1", "race:q"]), false, true),
        };
        let forever = forever && !writes && busy[1] != b"quick";
        let in_multi = rng.chance(1, 3);
        let mut main_plan: Vec<(u64, Cmd)> = Vec::new();
        if in_multi {
            main_plan.push((0, cmd(&["MULTI"])));
            if rng.chance(1, 2) {
                main_plan.push((0, cmd(&["INCR", "race:m"])));
            }
            main_plan.push((0, busy.clone()));
            if rng.chance(1, 2) {
                main_plan.push((0, cmd(&["RX.CALL", "quick", "1", "race:m"])));
            }
            main_plan.push((0, cmd(&["EXEC"])));
        } else {
            main_plan.push((0, busy.clone()));
        }
        // Other clients, at random moments.
        let span = if forever { 600 } else { ms + 200 };
        let others: Vec<Cmd> = vec![
            cmd(&["RX.KILL"]),
            cmd(&["RX.SCRIPT", "KILL"]),
            cmd(&["PING"]),
            cmd(&["RX.STATS"]),
            cmd(&["GET", "race:w"]),
            cmd(&["INCR", "race:o"]),
            cmd(&["RX.CALL", "quick", "1", "race:o"]),
            cmd(&["RX.CALL", "ctl", "0", "side"]),
            cmd(&["RX.EVAL", "return 1", "0"]),
            cmd(&["RX.LIST"]),
            cmd(&["INFO", "rx"]),
            cmd(&["FUNCTION", "KILL"]),
            cmd(&["SCRIPT", "KILL"]),
            cmd(&["DBSIZE"]),
            cmd(&["MULTI"]),
            cmd(&["EXEC"]),
        ];
        let mut side_plans: Vec<Vec<(u64, Cmd)>> = Vec::new();
        for _ in 0..=rng.below(2) {
            let mut plan: Vec<(u64, Cmd)> = (0..=rng.below(3))
                .map(|_| (rng.below(span), rng.pick(&others).clone()))
                .collect();
            plan.sort_by_key(|p| p.0);
            side_plans.push(plan);
        }
        for p in std::iter::once(&main_plan).chain(side_plans.iter()) {
            cmds.extend(p.iter().map(|(_, c)| c.clone()));
        }
        let start = Instant::now();
        let port = server.port();
        let main = std::thread::spawn(move || run_client(port, main_plan, start));
        let sides: Vec<_> = side_plans
            .into_iter()
            .map(|p| std::thread::spawn(move || run_client(port, p, start)))
            .collect();
        // A call that runs forever is stopped by a kill, the time limit, or (inside EXEC)
        // by RX itself; keep sending kills until it returns.
        let deadline = Instant::now() + REPLY_BOUND + Duration::from_secs(5);
        let mut killer: Option<Conn> = None;
        let mut kills = 0;
        while !main.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            if forever && start.elapsed() > Duration::from_millis(span + 300) && kills < 100 {
                let k = killer.get_or_insert_with(|| connect(&server));
                let kill = if is_script {
                    cmd(&["RX.SCRIPT", "KILL"])
                } else {
                    cmd(&["RX.KILL"])
                };
                cmds.push(kill.clone());
                kills += 1;
                if send(k, &kill, REPLY_BOUND).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(150));
            }
        }
        let hung = !main.is_finished();
        if hung {
            // Unblock the threads: the server is restarted below.
            camp.fail(
                &server,
                case,
                "hang: the busy call did not return",
                &cmds,
                &format!("{:?} after start", start.elapsed()),
            );
            server.restart();
        }
        let mut transcript = Vec::new();
        let mut problems = Vec::new();
        let main_sent = main.join().expect("main client thread");
        for s in &main_sent {
            transcript.push(show_sent("A", s));
            if s.cmd[0] == b"EXEC" {
                match &s.reply {
                    Ok(Reply::Array(_)) | Ok(Reply::Error(_)) => {}
                    Ok(other) => problems.push(format!("EXEC answered {}", show_reply(other))),
                    Err(_) => {}
                }
            }
        }
        for (i, h) in sides.into_iter().enumerate() {
            for s in h.join().expect("side client thread") {
                transcript.push(show_sent(&format!("B{i}"), &s));
                if let Err(e) = &s.reply {
                    problems.push(format!("no reply: {e}"));
                }
            }
        }
        if let Some(Err(e)) = main_sent.last().map(|s| &s.reply) {
            problems.push(format!("no reply to the busy client: {e}"));
        }
        let detail = format!(
            "busy-reply-threshold {threshold} ms, rx.time-limit-ms {time_limit}, {}{}; {}\n  {}",
            if forever { "forever" } else { "bounded" },
            if in_multi { ", inside MULTI/EXEC" } else { "" },
            problems.join("; "),
            transcript.join("\n  ")
        );
        camp.count(if in_multi { "in MULTI" } else { "plain" });
        let healthy = camp.check_health(&mut server, case, &cmds);
        if healthy && !problems.is_empty() && !hung {
            camp.fail(
                &server,
                case,
                "a client got no reply, or EXEC no array",
                &cmds,
                &detail,
            );
        } else if !healthy {
            // The failure was recorded; add the transcript.
            println!("[fuzz] d_busy_kill_multi_races case {case} transcript:\n  {detail}");
        }
        c = connect(&server);
        if !healthy || hung {
            race_setup(&mut c);
            continue;
        }
        match send(&mut c, &cmd(&["RX.CALL", "ctl", "0", "x"]), REPLY_BOUND) {
            Ok(Reply::Bulk(b)) if b == b"ctl:x" => {}
            other => camp.fail(
                &server,
                case,
                "control function failed after the case",
                &cmds,
                &format!("{other:?}"),
            ),
        }
    }
    let _ = send(
        &mut c,
        &cmd(&["CONFIG", "SET", "rx.time-limit-ms", "0"]),
        REPLY_BOUND,
    );
    reload_checks(&mut camp, &mut server);
    camp.finish();
}

// ---------------------------------------------------------------------------
// e. Memory bombs under a small rx.memory-limit-mb

/// Each bomb takes its size in ARGV[1]. None of them writes.
const BOMB_LIB: &str = "#!lua name=bomb
local function n_of(args) return tonumber(args[1]) or 10 end
local function reg(name, f) redis.register_function{function_name = name, callback = f, flags = {'no-writes'}} end
reg('b_rep', function(keys, args) return #string.rep(args[2] or 'x', n_of(args)) end)
reg('b_double', function(keys, args) local s = 'xy' for i = 1, n_of(args) do s = s .. s end return #s end)
reg('b_table', function(keys, args) local t = {} for i = 1, n_of(args) do t[i] = 'item' .. i end return #t end)
reg('b_hash', function(keys, args) local t = {} for i = 1, n_of(args) do t['k' .. i] = i end return 1 end)
reg('b_closures', function(keys, args) local t = {} for i = 1, n_of(args) do t[i] = function() return i end end return #t end)
reg('b_nest', function(keys, args) local t = {} for i = 1, n_of(args) do t = {t} end return 1 end)
reg('b_nest_cjson', function(keys, args) local t = {} for i = 1, n_of(args) do t = {t} end return cjson.encode(t) end)
reg('b_nest_msgpack', function(keys, args) local t = {} for i = 1, n_of(args) do t = {t} end return #cmsgpack.pack(t) end)
reg('b_self_cjson', function() local t = {} t[1] = t return cjson.encode(t) end)
reg('b_self_msgpack', function() local t = {} t[1] = t t.x = t return #cmsgpack.pack(t) end)
reg('b_big_cjson', function(keys, args) local t = {} for i = 1, n_of(args) do t[i] = string.rep('x', 100) end return #cjson.encode(t) end)
reg('b_big_decode', function(keys, args) return #cjson.decode('[' .. string.rep('\"abcdefgh\",', n_of(args)) .. '1]') end)
reg('b_big_msgpack', function(keys, args) local t = {} for i = 1, n_of(args) do t[i] = {i, 'v'} end return #cmsgpack.pack(t) end)
reg('b_unpack', function(keys, args) local t = {} for i = 1, n_of(args) do t[i] = i end return select('#', unpack(t)) end)
reg('b_gsub', function(keys, args) local s = string.rep('x', n_of(args)) return #(s:gsub('x', 'yyyy')) end)
reg('b_format', function(keys, args) local s = string.rep('x', n_of(args)) return #string.format('%s%s%s', s, s, s) end)
reg('b_concat', function(keys, args) local t = {} for i = 1, n_of(args) do t[i] = 'abcdefgh' end return #table.concat(t, ',') end)
reg('b_recurse', function() local function r(n) return 1 + r(n + 1) end return r(1) end)
reg('b_recurse_pcall', function() local function r() return pcall(r) end return tostring(r()) end)
reg('b_coroutines', function(keys, args) local t = {} for i = 1, n_of(args) do t[i] = coroutine.create(function() return {i} end) end return #t end)
reg('b_return_array', function(keys, args) local t = {} for i = 1, n_of(args) do t[i] = i end return t end)
reg('b_return_string', function(keys, args) return string.rep('r', n_of(args)) end)
reg('b_error_big', function(keys, args) error(string.rep('e', n_of(args))) end)
reg('b_struct', function(keys, args) return #struct.pack('c' .. n_of(args), 'x') end)
reg('b_return_nested', function(keys, args) local t = {} for i = 1, n_of(args) do t = {t} end return t end)
reg('b_self_return', function() local t = {} t[1] = t return t end)
reg('b_self_return_map', function() redis.setresp(3) local t = {} t.map = {k = t} return t end)
";

/// Bombs known to hang today (reply conversion of a table that contains itself has no
/// depth bound yet): each runs at most once per campaign, with a shorter bound.
const KNOWN_HANGS: &[&str] = &["b_self_return", "b_self_return_map"];

const CONTROL_LIB: &str = "#!lua name=control
redis.register_function{function_name='ctl_echo', flags={'no-writes'}, callback=function(keys, args) local t = {} for i = 1, 100 do t[i] = i end return 'ctl:' .. args[1] .. ':' .. #t .. ':' .. cjson.encode({t[1], t[100]}) end}
";

const BOMB_SCRIPTS: &[&str] = &[
    "return #string.rep('x', tonumber(ARGV[1]))",
    "local t = {} for i = 1, tonumber(ARGV[1]) do t[i] = {i} end return #t",
    "local s = 'ab' for i = 1, tonumber(ARGV[1]) do s = s .. s end return #s",
];

const GC_SCRIPT: &str = "collectgarbage('collect') collectgarbage('collect') return 1";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `rx_vm_memory_bytes` after full collections. LuaJIT halves its string buffer at each
/// collection, so this collects up to four times until the memory is at most `target`.
fn vm_memory(c: &mut Conn, target: i64) -> Option<i64> {
    let mut m = i64::MAX;
    for _ in 0..4 {
        send(
            c,
            &cmd(&[b"RX.EVAL".as_slice(), GC_SCRIPT.as_bytes(), b"0"]),
            REPLY_BOUND,
        )
        .ok()?;
        m = m.min(info_field(c, "rx", "rx_vm_memory_bytes")?.parse().ok()?);
        if m <= target {
            break;
        }
    }
    Some(m)
}

fn bomb_setup(c: &mut Conn) {
    must_ok(
        c,
        &cmd(&[b"RX.LOAD".as_slice(), b"REPLACE", BOMB_LIB.as_bytes()]),
    );
    must_ok(
        c,
        &cmd(&[b"RX.LOAD".as_slice(), b"REPLACE", CONTROL_LIB.as_bytes()]),
    );
    for s in BOMB_SCRIPTS.iter().chain([GC_SCRIPT].iter()) {
        must_ok(c, &cmd(&[b"RX.SCRIPT".as_slice(), b"LOAD", s.as_bytes()]));
    }
}

#[test]
#[ignore = "fuzzing campaign: run with `make fuzz`"]
fn e_memory_bombs() {
    let mut camp = Campaign::new("e_memory_bombs");
    let mut server = Server::start_with(&[], &["memory-limit-mb", "16"]);
    let mut c = connect(&server);
    bomb_setup(&mut c);
    let bombs: Vec<String> = BOMB_LIB
        .lines()
        .filter_map(|l| l.strip_prefix("reg('"))
        .map(|l| l[..l.find('\'').unwrap()].to_string())
        .collect();
    let baseline = vm_memory(&mut c, 0).expect("rx_vm_memory_bytes");
    // Slack for what steady state may keep: statistics, interned strings, cached scripts.
    let slack = 2 * 1024 * 1024 + baseline / 4;
    println!(
        "[fuzz] e_memory_bombs: {} bombs, rx_vm_memory_bytes baseline {baseline}",
        bombs.len()
    );
    let mut hangs_run: BTreeSet<String> = BTreeSet::new();
    let mut peak_after = baseline;
    while let Some((case, mut rng)) = camp.next_case() {
        let limit = *rng.pick(&[8u64, 16, 32]);
        let mut cmds = vec![cmd(&[
            "CONFIG",
            "SET",
            "rx.memory-limit-mb",
            &limit.to_string(),
        ])];
        if let Err(e) = send(&mut c, &cmds[0], REPLY_BOUND) {
            camp.fail(&server, case, "no reply", &cmds, &e);
        }
        let size = match rng.below(4) {
            0 => *rng.pick(&[10u64, 1000, 100_000]),
            1 => *rng.pick(&[1_000_000u64, 10_000_000]),
            2 => *rng.pick(&[20u64, 30, 40, 60]),
            _ => *rng.pick(&[100_000_000u64, 2_147_483_647, 9_007_199_254_740_992]),
        }
        .to_string();
        let (command, name) = if rng.chance(1, 6) {
            let s = rng.pick(BOMB_SCRIPTS);
            (
                cmd(&["RX.EVAL", s, "0", &size]),
                format!("script {}", shorten(s, 40)),
            )
        } else {
            let mut b = rng.pick(&bombs).clone();
            if KNOWN_HANGS.contains(&b.as_str()) && hangs_run.contains(&b) {
                b = "b_rep".into();
            }
            let args = if b == "b_return_nested" {
                (*rng.pick(&[10u64, 100, 1000, 100_000])).to_string()
            } else {
                size.clone()
            };
            (cmd(&["RX.CALL", &b, "0", &args]), b)
        };
        let known_hang = KNOWN_HANGS.contains(&name.as_str());
        if known_hang {
            hangs_run.insert(name.clone());
        }
        cmds.push(command.clone());
        let bound = if known_hang {
            Duration::from_secs(10)
        } else {
            REPLY_BOUND
        };
        // Raw bytes: a reply may be nested far deeper than a recursive parser's stack allows.
        c.set_read_timeout(bound);
        let reply = c
            .try_raw(&command)
            .map_err(|e| format!("no reply within {bound:?}: {e}"));
        c.set_read_timeout(REPLY_BOUND);
        camp.count(&name);
        if trace() {
            let mem = info_field(&mut c, "rx", "rx_vm_memory_bytes").unwrap_or_default();
            let r = reply
                .as_ref()
                .map(|b| shorten(&escape_bytes(b), 80))
                .unwrap_or_else(|e| e.clone());
            println!(
                "[fuzz] case {case}: {} -> {r} (rx_vm_memory_bytes {mem})",
                show_cmd(&cmds[0]) + " / " + &show_cmd(&command)
            );
        }
        match &reply {
            Ok(b) if b.starts_with(b"-") => {
                if contains(b, b"not enough memory") {
                    camp.count("out of memory errors");
                }
            }
            Ok(b) => {
                let depth = b.chunks(4).take_while(|w| *w == b"*1\r\n").count();
                if depth > 1000 {
                    camp.note("a reply nested deeper than 1000 levels (native Redis refuses deep replies)", || {
                        format!("{name} {}: {depth} levels, {} bytes", command[3..].iter().map(|a| String::from_utf8_lossy(a).to_string()).collect::<Vec<_>>().join(" "), b.len())
                    });
                }
            }
            Err(e) => {
                let kind = if known_hang {
                    format!("no reply from {name} (known: no depth bound converting a self-referencing table)")
                } else {
                    format!("no reply from {name}")
                };
                camp.fail(&server, case, &kind, &cmds, e);
                let bound = if known_hang {
                    Duration::from_secs(2)
                } else {
                    REPLY_BOUND
                };
                if camp.check_health_within(&mut server, case, &cmds, bound) {
                    // Alive but the connection is gone: a fresh one.
                }
                c = connect(&server);
                bomb_setup(&mut c);
                continue;
            }
        }
        if !camp.check_health(&mut server, case, &cmds) {
            c = connect(&server);
            bomb_setup(&mut c);
            continue;
        }
        // Other libraries keep working.
        let ctl = cmd(&["RX.CALL", "ctl_echo", "0", "after"]);
        match send(&mut c, &ctl, REPLY_BOUND) {
            Ok(Reply::Bulk(b)) if b == b"ctl:after:100:[1,100]" => {}
            other => {
                let mut all = cmds.clone();
                all.push(ctl.clone());
                camp.fail(
                    &server,
                    case,
                    "control function failed after a bomb",
                    &all,
                    &format!("after {name}: {other:?}"),
                );
            }
        }
        // The VM's memory comes back to its baseline once garbage is collected.
        if case % 4 == 3 {
            match vm_memory(&mut c, baseline + slack) {
                Some(m) => {
                    peak_after = peak_after.max(m);
                    if m > baseline + slack {
                        camp.fail(
                            &server,
                            case,
                            "rx_vm_memory_bytes did not come back near its baseline",
                            &cmds,
                            &format!("{m} bytes after a full collection, baseline {baseline}, allowed {}", baseline + slack),
                        );
                    }
                }
                None => camp.fail(&server, case, "INFO rx unreadable", &cmds, ""),
            }
        }
    }
    if let Some(m) = vm_memory(&mut c, baseline) {
        println!("[fuzz] e_memory_bombs: rx_vm_memory_bytes at the end {m} (baseline {baseline}, highest after a case {peak_after})");
    }
    let _ = send(
        &mut c,
        &cmd(&["CONFIG", "SET", "rx.memory-limit-mb", "16"]),
        REPLY_BOUND,
    );
    reload_checks(&mut camp, &mut server);
    camp.finish();
}

// ---------------------------------------------------------------------------
// f: safe deploys. Random conditional loads, dry runs, deletes, flushes, rollbacks and
// history depths (alone or in MULTI/EXEC) on a few libraries, checked against what the
// state before each command says must happen, and against invariants of the history.

const DEPLOY_NAMES: &[&str] = &["fa", "fb", "fc"];

/// A library for the campaign: usually good, sometimes broken, misnamed, or stealing
/// another library's function name.
fn deploy_code(rng: &mut Rng, name: &str) -> (Vec<u8>, String) {
    let tag = format!("t{}", rng.below(6));
    let code = match rng.below(10) {
        0 => format!("#!lua name={name}\nthis is not lua {tag}\n"),
        1 => {
            let other = rng.pick(DEPLOY_NAMES);
            format!("#!lua name={name}\nredis.register_function('{other}_f', function() return '{tag}' end)\n")
        }
        2 => format!("#!lua name={name}\nlocal x = '{tag}'\n"),
        _ => format!("#!lua name={name}\nredis.register_function('{name}_f', function() return '{tag}' end)\n"),
    };
    (code.into_bytes(), tag)
}

/// Every library's (version, digest) from RX.LIST WITHVERSIONS, every name's catalog
/// entry (tombstones included) from RX.CLUSTER MANIFEST, and every history.
#[derive(Clone, PartialEq, Debug)]
struct DeployState {
    live: BTreeMap<String, (i64, String)>,
    catalog: BTreeMap<String, (i64, String)>,
    history: BTreeMap<String, Vec<(i64, String, String)>>,
}

/// A field of a map reply (RESP2: alternating names and values), as text or integer.
fn entry_text(entry: &Reply, name: &str) -> String {
    entry_field(entry, name)
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn entry_int(entry: &Reply, name: &str) -> i64 {
    entry_field(entry, name)
        .and_then(|v| v.as_int())
        .unwrap_or(-1)
}

fn entry_field(entry: &Reply, name: &str) -> Option<Reply> {
    entry
        .as_array()
        .unwrap_or_default()
        .chunks(2)
        .find(|p| p[0].as_str() == Some(name))
        .map(|p| p[1].clone())
}

/// `name -> (version, digest)` from a list of library or manifest entries.
fn versions_of(reply: &Reply, what: &str) -> Result<BTreeMap<String, (i64, String)>, String> {
    Ok(reply
        .as_array()
        .ok_or_else(|| format!("{what}: {reply:?}"))?
        .iter()
        .map(|e| {
            (
                entry_text(e, "library_name"),
                (entry_int(e, "version"), entry_text(e, "digest")),
            )
        })
        .collect())
}

fn deploy_state(c: &mut Conn) -> Result<DeployState, String> {
    let list = send(c, &cmd(&["RX.LIST", "WITHVERSIONS"]), REPLY_BOUND)?;
    let live = versions_of(&list, "RX.LIST")?;
    let manifest = send(c, &cmd(&["RX.CLUSTER", "MANIFEST"]), REPLY_BOUND)?;
    let catalog = versions_of(&manifest, "RX.CLUSTER MANIFEST")?;
    let mut history = BTreeMap::new();
    for name in DEPLOY_NAMES {
        let h = send(c, &cmd(&["RX.HISTORY", name]), REPLY_BOUND)?;
        let entries = h
            .as_array()
            .ok_or_else(|| format!("RX.HISTORY: {h:?}"))?
            .iter()
            .map(|e| {
                (
                    entry_int(e, "version"),
                    entry_text(e, "action"),
                    entry_text(e, "digest"),
                )
            })
            .collect::<Vec<_>>();
        history.insert(name.to_string(), entries);
    }
    Ok(DeployState {
        live,
        catalog,
        history,
    })
}

/// Invariants that hold after any command: histories are newest first, no longer than the
/// depth, and a live library is at its newest history entry.
fn deploy_invariants(s: &DeployState, depth: usize) -> Result<(), String> {
    for (name, entries) in &s.history {
        if entries.len() > depth {
            return Err(format!(
                "{name}: {} entries with depth {depth}",
                entries.len()
            ));
        }
        if entries.windows(2).any(|w| w[0].0 <= w[1].0) {
            return Err(format!("{name}: versions not newest first: {entries:?}"));
        }
        if let (Some((v, d)), Some(newest)) = (s.live.get(name), entries.first()) {
            if (*v, d) != (newest.0, &newest.2) {
                return Err(format!(
                    "{name}: live at {v} {d}, newest history entry {newest:?}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
#[ignore = "fuzzing campaign: run with `make fuzz`"]
fn f_safe_deploys() {
    let mut camp = Campaign::new("f_safe_deploys");
    let mut server = Server::start_with(&["--appendonly", "yes"], &[]);
    let mut c = connect(&server);
    let mut depth = 10usize;
    let zeros = "0".repeat(40);
    while let Some((case, mut rng)) = camp.next_case() {
        let before = match deploy_state(&mut c) {
            Ok(s) => s,
            Err(e) => {
                camp.fail(&server, case, "state unreadable", &[], &e);
                c = connect(&server);
                continue;
            }
        };
        let name = *rng.pick(DEPLOY_NAMES);
        let (catalog_version, catalog_digest) = before
            .catalog
            .get(name)
            .cloned()
            .unwrap_or((0, zeros.clone()));
        // The command, and what its condition says about the outcome (None: no condition).
        let mut condition_holds: Option<bool> = None;
        let mut dry_run = false;
        let op = rng.below(11);
        if op == 10 {
            // rx.pfcall of a function answers exactly what RX.CALL of it answers.
            let f = *rng.pick(&["fa_f", "fb_f", "fc_f", "nope"]);
            let direct = cmd(&["RX.CALL", f, "0"]);
            let nested = cmd(&["RX.EVAL", "return rx.pfcall(ARGV[1])", "0", f]);
            let a = c.try_raw(&direct);
            let b = c.try_raw(&nested);
            camp.count("rx.pfcall comparisons");
            if a.is_err() || a.as_ref().ok() != b.as_ref().ok() {
                camp.fail(
                    &server,
                    case,
                    "rx.pfcall differs from RX.CALL",
                    &[direct, nested],
                    &format!("{a:?} vs {b:?}"),
                );
            }
            continue;
        }
        let command: Cmd = match op {
            0..=4 => {
                let (code, _) = deploy_code(&mut rng, name);
                let mut args: Vec<String> = vec!["RX.LOAD".into()];
                if rng.chance(1, 3) {
                    args.push("REPLACE".into());
                }
                match rng.below(3) {
                    0 => {
                        let v = match rng.below(3) {
                            0 => catalog_version,
                            1 => catalog_version + 1,
                            _ => (catalog_version - 1).max(0),
                        };
                        condition_holds = Some(v == catalog_version);
                        args.push("IFVERSION".into());
                        args.push(v.to_string());
                    }
                    1 => {
                        let d = match rng.below(3) {
                            0 => catalog_digest.clone(),
                            1 => zeros.clone(),
                            _ => format!("{:040x}", rng.next()),
                        };
                        condition_holds = Some(d == catalog_digest);
                        args.push("IFDIGEST".into());
                        args.push(d);
                    }
                    _ => {}
                }
                if rng.chance(1, 4) {
                    args.push("DRYRUN".into());
                    dry_run = true;
                }
                let mut v: Cmd = args.into_iter().map(String::into_bytes).collect();
                v.push(code);
                v
            }
            5 => cmd(&["RX.DELETE", name]),
            6 => {
                let mut args = vec!["RX.ROLLBACK".to_string(), name.to_string()];
                if rng.chance(1, 2) {
                    let v = match before.history[name].get(rng.below(4) as usize) {
                        Some(e) => e.0,
                        None => rng.below(5) as i64,
                    };
                    args.push("TO".into());
                    args.push(v.to_string());
                }
                args.into_iter().map(String::into_bytes).collect()
            }
            7 => {
                depth = rng.below(6) as usize;
                cmd(&["CONFIG", "SET", "rx.history-depth", &depth.to_string()])
            }
            8 if rng.chance(1, 4) => cmd(&["RX.FLUSH"]),
            _ => cmd(&["RX.HISTORY", name, "WITHCODE"]),
        };
        let in_multi = rng.chance(1, 5);
        let mut cmds = vec![command.clone()];
        let reply = if in_multi {
            cmds = vec![cmd(&["MULTI"]), command.clone(), cmd(&["EXEC"])];
            let _ = send(&mut c, &cmds[0], REPLY_BOUND);
            let _ = send(&mut c, &cmds[1], REPLY_BOUND);
            send(&mut c, &cmds[2], REPLY_BOUND).map(|r| match r {
                Reply::Array(mut v) if v.len() == 1 => v.remove(0),
                other => other,
            })
        } else {
            send(&mut c, &command, REPLY_BOUND)
        };
        camp.count(&format!("op {op}"));
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                camp.fail(&server, case, "no reply", &cmds, &e);
                camp.check_health(&mut server, case, &cmds);
                c = connect(&server);
                continue;
            }
        };
        if !camp.check_health(&mut server, case, &cmds) {
            c = connect(&server);
            continue;
        }
        let after = match deploy_state(&mut c) {
            Ok(s) => s,
            Err(e) => {
                camp.fail(&server, case, "state unreadable after", &cmds, &e);
                continue;
            }
        };
        if let Err(e) = deploy_invariants(&after, depth) {
            camp.fail(&server, case, "history invariant broken", &cmds, &e);
        }
        let is_error = reply.is_error();
        if is_error {
            camp.count("errors");
        }
        let conflict = reply.err_text().is_some_and(|e| e.starts_with("CONFLICT "));
        if conflict {
            camp.count("conflicts");
        }
        if let Some(holds) = condition_holds {
            if !holds && !conflict {
                camp.fail(
                    &server,
                    case,
                    "a condition that does not hold did not answer CONFLICT",
                    &cmds,
                    &format!("{reply:?}"),
                );
            }
            if holds && conflict {
                camp.fail(
                    &server,
                    case,
                    "a condition that holds answered CONFLICT",
                    &cmds,
                    &format!("{reply:?}"),
                );
            }
        }
        // An error, a dry run, or a history read changes nothing.
        let read_only = dry_run || op == 9 || (op == 8 && command[0] == b"RX.HISTORY");
        if (is_error || read_only) && op != 7 && after != before {
            camp.fail(
                &server,
                case,
                if is_error {
                    "a refused command changed the libraries or their history"
                } else {
                    "a dry run or a read changed something"
                },
                &cmds,
                &format!("{reply:?}: {before:?} -> {after:?}"),
            );
        }
        // Every live library's functions answer (their code was accepted by a load).
        let listing = send(&mut c, &cmd(&["RX.LIST"]), REPLY_BOUND).unwrap_or(Reply::Nil);
        let functions: Vec<String> = listing
            .as_array()
            .unwrap_or_default()
            .iter()
            .flat_map(|lib| {
                let fs = entry_field(lib, "functions").unwrap_or(Reply::Nil);
                fs.as_array()
                    .unwrap_or_default()
                    .iter()
                    .map(|f| entry_text(f, "name"))
                    .collect::<Vec<_>>()
            })
            .collect();
        for f in &functions {
            let r = send(&mut c, &cmd(&["RX.CALL", f, "0"]), REPLY_BOUND);
            if !matches!(&r, Ok(Reply::Bulk(b)) if b.starts_with(b"t")) {
                camp.fail(
                    &server,
                    case,
                    "a live function does not answer",
                    &cmds,
                    &format!("{f}: {r:?}"),
                );
            }
        }
        // Now and then: history and libraries come back identical after DEBUG RELOAD and
        // after a restart from the AOF.
        if case % 150 == 149 {
            for step in ["DEBUG RELOAD", "restart"] {
                if step == "restart" {
                    server.restart();
                } else {
                    let _ = send(&mut c, &cmd(&["DEBUG", "RELOAD"]), REPLY_BOUND);
                }
                c = connect(&server);
                // The restarted server reads its depth from its config: set it again.
                let _ = send(
                    &mut c,
                    &cmd(&["CONFIG", "SET", "rx.history-depth", &depth.to_string()]),
                    REPLY_BOUND,
                );
                match deploy_state(&mut c) {
                    Ok(s) if s == after => camp.count(&format!("{step} checks")),
                    // The AOF's tail is replayed with the depth the server starts with, so
                    // changes made while a lower depth dropped them are recorded again (see
                    // the README): the libraries and each newest entry must be equal, and
                    // every entry kept before must still be there.
                    Ok(s)
                        if step == "restart"
                            && s.live == after.live
                            && s.catalog == after.catalog
                            && after.history.iter().all(|(n, h)| {
                                (h.is_empty() || h.first() == s.history[n].first())
                                    && h.iter().all(|e| s.history[n].contains(e))
                            }) =>
                    {
                        camp.count(
                            "restart checks (history regained entries a lower depth had dropped)",
                        )
                    }
                    Ok(s) => camp.fail(
                        &server,
                        case,
                        &format!("{step} changed the libraries or their history"),
                        &cmds,
                        &format!("{after:?} -> {s:?}"),
                    ),
                    Err(e) => camp.fail(
                        &server,
                        case,
                        &format!("state unreadable after {step}"),
                        &cmds,
                        &e,
                    ),
                }
            }
        }
    }
    camp.finish();
}
