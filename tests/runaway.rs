//! Runaway scripts with the JIT compiler on and off: every shape of code that can run for
//! ever is stopped by a kill, by `rx.time-limit-ms` and by SHUTDOWN NOSAVE, and compiled
//! code is what runs when the JIT is on (issue 20).
//!
//! Each shape runs as an EVAL script on its own connection; the test waits until the
//! server answers BUSY, sends the kill and expects the script's error within 100 ms of it.
//! Servers run with `--busy-reply-threshold 100`.

mod common;

use common::{info_field, Conn, Reply, Server};
use std::time::{Duration, Instant};

const THRESHOLD_MS: u64 = 100;

/// Every shape of unbounded run: loops, recursion, tail calls, coroutines, protected
/// calls, callbacks from C functions and metamethods.
const SHAPES: &[(&str, &str)] = &[
    ("while", "while true do end"),
    ("repeat", "repeat until false"),
    ("numeric for", "local s = 0 for i = 1, 1e300 do s = s + i end return s"),
    ("generic for", "local n = 0 for _ in function() return 1 end do n = n + 1 end return n"),
    ("nested loops", "for i = 1, 1e300 do for j = 1, 10 do end end"),
    ("recursion", "local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end return fib(80)"),
    ("tail call", "local function f() return f() end return f()"),
    ("mutual tail calls", "local g local function f() return g() end g = function() return f() end return f()"),
    ("coroutine.wrap", "local co = coroutine.wrap(function() while true do end end) co()"),
    ("coroutine ping-pong", "local co = coroutine.create(function() while true do coroutine.yield() end end) while true do coroutine.resume(co) end"),
    ("pcall", "while true do pcall(function() while true do end end) end"),
    ("xpcall handler", "xpcall(function() error('x') end, function() while true do end end)"),
    ("gsub callback", "local s = string.rep('a', 1000) while true do s:gsub('a', function(c) return c end) end"),
    ("sort comparator", "local t = {} for i = 1, 100 do t[i] = i end table.sort(t, function(a, b) while true do end end)"),
    ("__index", "return setmetatable({}, { __index = function() while true do end end }).x"),
    ("loadstring", "loadstring('while true do end')()"),
    ("string building", "local t = {} while true do t[#t % 100 + 1] = tostring(#t) .. 'x' end"),
];

fn start(jit: &str) -> Server {
    Server::start_with(
        &["--busy-reply-threshold", &THRESHOLD_MS.to_string()],
        &["jit", jit],
    )
}

fn background(port: u16, args: Vec<String>) -> std::thread::JoinHandle<Result<Reply, String>> {
    std::thread::spawn(move || {
        let mut c = Conn::try_connect(port).map_err(|e| e.to_string())?;
        c.set_read_timeout(Duration::from_secs(20));
        c.try_raw(&args)
            .map(|b| common::parse_reply(&b))
            .map_err(|e| e.to_string())
    })
}

/// Polls PING until the server answers BUSY; returns how long after `since` that was.
fn wait_for_busy(port: u16, since: Instant, what: &str) -> Duration {
    while since.elapsed() < Duration::from_secs(10) {
        if let Ok(mut c) = Conn::try_connect(port) {
            c.set_read_timeout(Duration::from_millis(500));
            if let Ok(bytes) = c.try_raw(&["PING"]) {
                if let Reply::Error(e) = common::parse_reply(&bytes) {
                    assert!(e.starts_with("BUSY"), "{what}: {e}");
                    return since.elapsed();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{what}: the server never answered BUSY");
}

fn wait_reply(
    h: std::thread::JoinHandle<Result<Reply, String>>,
    within: Duration,
    what: &str,
) -> Reply {
    let start = Instant::now();
    while !h.is_finished() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: no reply after 10 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = start.elapsed();
    let r = h.join().unwrap().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        took < within,
        "{what}: the reply came {took:?} after the kill"
    );
    r
}

/// Runs `body` as an EVAL script in the background, waits until the server answers BUSY,
/// sends RX.SCRIPT KILL and asserts that the script ends with the kill error within
/// `within` of it. Returns how long after the start BUSY came.
fn eval_and_kill(s: &Server, body: &str, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    let h = background(s.port(), vec!["RX.EVAL".into(), body.into(), "0".into()]);
    let busy_after = wait_for_busy(s.port(), started, what);
    let mut k = s.conn();
    k.set_read_timeout(Duration::from_secs(5));
    assert_eq!(
        k.q(&["RX.SCRIPT", "KILL"]),
        Reply::Status("OK".into()),
        "{what}"
    );
    let r = wait_reply(h, within, what);
    let e = r.err_text().unwrap_or_else(|| panic!("{what}: got {r:?}"));
    assert!(
        e.starts_with("ERR Script killed by user with RX.SCRIPT KILL"),
        "{what}: {e}"
    );
    busy_after
}

fn every_shape_is_killed(jit: &str) {
    let s = start(jit);
    let mut c = s.conn();
    for (name, body) in SHAPES {
        let what = format!("{name} (jit {jit})");
        let busy_after = eval_and_kill(&s, body, Duration::from_millis(100), &what);
        assert!(
            busy_after < Duration::from_millis(THRESHOLD_MS + 100 + 50),
            "{what}: BUSY only after {busy_after:?}"
        );
        assert_eq!(c.q(&["PING"]), Reply::Status("PONG".into()), "{what}");
        assert_eq!(c.q(&["RX.EVAL", "return 1", "0"]), Reply::Int(1), "{what}");
    }
    let traces: i64 = info_field(&mut c, "rx", "rx_jit_traces")
        .unwrap()
        .parse()
        .unwrap();
    if jit == "yes" {
        assert_eq!(info_field(&mut c, "rx", "rx_jit").as_deref(), Some("1"));
        assert!(traces > 0, "the JIT compiled nothing");
    } else {
        assert_eq!(info_field(&mut c, "rx", "rx_jit").as_deref(), Some("0"));
        assert_eq!(traces, 0);
    }
}

#[test]
fn every_runaway_shape_is_killed_with_the_jit_on() {
    every_shape_is_killed("yes");
}

#[test]
fn every_runaway_shape_is_killed_with_the_jit_off() {
    every_shape_is_killed("no");
}

/// A library function spinning in compiled code: RX.KILL.
#[test]
fn a_compiled_function_is_killed_by_rx_kill() {
    for jit in ["yes", "no"] {
        let s = start(jit);
        let mut c = s.conn();
        let lib = "#!lua name=spin\nredis.register_function('spin', function() local n = 0 while true do n = n + 1 end end)";
        assert_eq!(c.q(&["RX.LOAD", lib]), Reply::Bulk(b"spin".to_vec()));
        let h = background(s.port(), vec!["RX.CALL".into(), "spin".into(), "0".into()]);
        wait_for_busy(s.port(), Instant::now(), "spin");
        let mut k = s.conn();
        assert_eq!(k.q(&["RX.KILL"]), Reply::Status("OK".into()));
        let r = wait_reply(h, Duration::from_millis(100), "spin");
        let e = r.err_text().unwrap_or_else(|| panic!("got {r:?}"));
        assert!(
            e.starts_with("ERR Script killed by user with RX.KILL"),
            "jit {jit}: {e}"
        );
    }
}

/// `rx.time-limit-ms` stops compiled loops by itself, within the limit plus 100 ms.
#[test]
fn the_time_limit_stops_compiled_loops() {
    for jit in ["yes", "no"] {
        let s = Server::start_with(&[], &["jit", jit, "time-limit-ms", "200"]);
        let mut c = s.conn();
        c.set_read_timeout(Duration::from_secs(10));
        for body in [
            "while true do end",
            "local function f() return f() end return f()",
            "for i = 1, 1e300 do end",
        ] {
            let started = Instant::now();
            let r = c.q(&["RX.EVAL", body, "0"]);
            let took = started.elapsed();
            let e = r.err_text().unwrap_or_else(|| panic!("{body}: got {r:?}"));
            assert!(e.contains("rx.time-limit-ms"), "jit {jit}, {body}: {e}");
            assert!(
                took >= Duration::from_millis(200) && took < Duration::from_millis(300),
                "jit {jit}, {body}: stopped after {took:?}"
            );
        }
    }
}

/// SHUTDOWN NOSAVE ends a server whose script spins in compiled code.
#[test]
fn shutdown_nosave_stops_a_server_running_compiled_code() {
    let mut s = start("yes");
    let h = background(
        s.port(),
        vec!["RX.EVAL".into(), "while true do end".into(), "0".into()],
    );
    wait_for_busy(s.port(), Instant::now(), "spin");
    let mut k = s.conn();
    k.set_read_timeout(Duration::from_secs(3));
    // A successful SHUTDOWN closes the connection without a reply.
    assert!(
        k.try_raw(&["SHUTDOWN", "NOSAVE"]).is_err(),
        "SHUTDOWN NOSAVE replied"
    );
    common::wait_until("the server process to exit", Duration::from_secs(5), || {
        !s.is_alive()
    });
    assert!(
        h.join().unwrap().is_err(),
        "the spinning call should end with the connection"
    );
}

/// `rx.jit` switches at run time; a result is the same either way, and switching off drops
/// the compiled code.
#[test]
fn rx_jit_switches_at_run_time() {
    let s = start("yes");
    let mut c = s.conn();
    let sum = "local s = 0 for i = 1, 1e6 do s = s + i % 7 end return s";
    assert_eq!(info_field(&mut c, "rx", "rx_jit").as_deref(), Some("1"));
    let on = c.q(&["RX.EVAL", sum, "0"]);
    let traces: i64 = info_field(&mut c, "rx", "rx_jit_traces")
        .unwrap()
        .parse()
        .unwrap();
    assert!(traces > 0);
    let code: i64 = info_field(&mut c, "rx", "rx_jit_machine_code_bytes")
        .unwrap()
        .parse()
        .unwrap();
    let limit: i64 = info_field(&mut c, "rx", "rx_jit_machine_code_limit_bytes")
        .unwrap()
        .parse()
        .unwrap();
    assert!(code > 0 && code <= limit, "{code} of {limit}");
    assert_eq!(
        c.q(&["CONFIG", "SET", "rx.jit", "no"]),
        Reply::Status("OK".into())
    );
    assert_eq!(info_field(&mut c, "rx", "rx_jit").as_deref(), Some("0"));
    assert_eq!(
        info_field(&mut c, "rx", "rx_jit_traces").as_deref(),
        Some("0")
    );
    assert_eq!(c.q(&["RX.EVAL", sum, "0"]), on);
    assert_eq!(
        c.q(&["CONFIG", "GET", "rx.jit"]),
        Reply::Array(vec![
            Reply::Bulk(b"rx.jit".to_vec()),
            Reply::Bulk(b"no".to_vec())
        ])
    );
    assert_eq!(
        c.q(&["CONFIG", "SET", "rx.jit", "yes"]),
        Reply::Status("OK".into())
    );
    assert_eq!(c.q(&["RX.EVAL", sum, "0"]), on);
    assert!(c
        .q(&["CONFIG", "SET", "rx.jit", "maybe"])
        .err_text()
        .is_some());
}

/// The kill checks are out of a script's reach: it cannot name the countdown, and what
/// reaches the tick cannot switch the checks off.
#[test]
fn scripts_cannot_reach_the_kill_checks() {
    let s = start("yes");
    let mut c = s.conn();
    // A name with a byte over 127 is not Lua 5.1: refused, as by native EVAL.
    let r = c.q(&["RX.EVAL", "\u{81} = 1e300 while true do end", "0"]);
    assert!(
        r.err_text()
            .is_some_and(|e| e.starts_with("ERR Error compiling script")),
        "{r:?}"
    );
    // The tick is reachable by its string name, and harmless: calling it gives a budget.
    let r = c.q(&["RX.EVAL", "return type(_G['\\130'])", "0"]);
    assert_eq!(r, Reply::Bulk(b"function".to_vec()));
    // It does not show in the globals.
    let r = c.q(&[
        "RX.EVAL",
        "for k in pairs(_G) do if k == '\\130' or k == '\\129' or k == '\\131' then return k end end return 'none'",
        "0",
    ]);
    assert_eq!(r, Reply::Bulk(b"none".to_vec()));
    // `goto` is a name in Lua 5.1, so there are no goto loops: a syntax error, as natively.
    for body in ["::top:: goto top", "goto = 1 return goto"] {
        let native = c.q(&["EVAL", body, "0"]);
        let rx = c.q(&["RX.EVAL", body, "0"]);
        assert_eq!(rx, native, "{body}");
    }
}

/// A chunk at Lua's limits has no room for the countdown: it gets its checks as calls,
/// runs as natively, and can still be killed.
#[test]
fn code_at_luas_limits_runs_and_is_still_killable() {
    let s = start("yes");
    let mut c = s.conn();
    let locals = |n: usize, tail: &str| {
        (0..n)
            .map(|i| format!("local v{i} = {i}\n"))
            .collect::<String>()
            + tail
    };
    for n in [199, 200] {
        assert_eq!(c.q(&["EVAL", &locals(n, "return v1"), "0"]), Reply::Int(1));
        assert_eq!(
            c.q(&["RX.EVAL", &locals(n, "return v1"), "0"]),
            Reply::Int(1),
            "{n}"
        );
    }
    let upvalues = |n: usize, body: &str| {
        let decl: String = (0..n).map(|i| format!("local u{i} = {i}\n")).collect();
        let uses: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
        format!(
            "{decl}local function f() {body} return {} end return f()",
            uses.join(" + ")
        )
    };
    let sum = |n: i64| Reply::Int(n * (n - 1) / 2);
    for n in [59, 60] {
        assert_eq!(c.q(&["EVAL", &upvalues(n, ""), "0"]), sum(n as i64));
        assert_eq!(
            c.q(&["RX.EVAL", &upvalues(n, ""), "0"]),
            sum(n as i64),
            "{n}"
        );
    }
    // One over the limit is refused natively and by RX alike.
    let native = c.q(&["EVAL", &locals(201, "return 1"), "0"]);
    assert_eq!(c.q(&["RX.EVAL", &locals(201, "return 1"), "0"]), native);
    // Spinning at the limits: killed as any other script.
    for body in [
        locals(200, "while true do end"),
        upvalues(60, "while true do end"),
    ] {
        eval_and_kill(&s, &body, Duration::from_millis(100), "at the limits");
    }
}

/// A chunk made by `loadstring` has no parameter list for a check, and a script can call it
/// again and again: a chunk that loads itself and tail-calls the result, or one handed
/// itself, must still be stopped (before the entry check, both hung the server for good).
#[test]
fn self_loading_and_self_calling_chunks_are_killed() {
    for jit in ["yes", "no"] {
        let s = start(jit);
        for body in [
            "local s = 'local s = ... return loadstring(s)(s)' return loadstring(s)(s)",
            "local f = loadstring('local g = ... return g(g)') return f(f)",
            "local f = loadstring('local g, n = ... return g(g, n + 1)') return f(f, 0)",
        ] {
            let what = format!("{body} (jit {jit})");
            eval_and_kill(&s, body, Duration::from_millis(100), &what);
        }
    }
}

/// What a script can reach cannot switch the checks off: the globals cannot be written
/// through an iterator's state (which handed out the real globals table, where `rawset`
/// could replace the tick: every later script was then unkillable), and `load` cannot
/// swallow a kill raised in its reader function. Both found by review.
#[test]
fn scripts_cannot_switch_the_checks_off() {
    for jit in ["yes", "no"] {
        let s = start(jit);
        let mut c = s.conn();
        for (what, attempt) in [
            ("pairs", "local _, g = pairs(_G) pcall(rawset, g, '\\130', gcinfo) pcall(rawset, g, '\\131', gcinfo) return 1"),
            ("ipairs", "local _, g = ipairs(_G) pcall(rawset, g, '\\130', gcinfo) pcall(rawset, g, '\\131', gcinfo) return 1"),
        ] {
            assert_eq!(c.q(&["RX.EVAL", attempt, "0"]), Reply::Int(1), "{what}");
            eval_and_kill(&s, "while true do end", Duration::from_millis(100), what);
        }
        // A kill inside load's reader ends the script; nothing after it runs.
        let body = "local f, e = load(function() while true do end end) redis.call('SET', 'after_kill', tostring(e)) return 1";
        eval_and_kill(&s, body, Duration::from_millis(100), "load reader");
        assert_eq!(c.q(&["EXISTS", "after_kill"]), Reply::Int(0), "jit {jit}");
    }
}

/// After a fast stretch, a loop whose every turn is a slow C call still reaches a tick
/// soon: budgets are capped and start afresh each run, whatever the script or an earlier
/// one did (calling the tick itself included). Found by review: such a loop went seconds,
/// once over 30 s, without a tick.
#[test]
fn slow_turns_after_a_fast_stretch_are_still_killed_promptly() {
    let s = start("yes");
    let mut c = s.conn();
    // Teach the pacing all it can: a fast loop, and the tick called directly.
    assert_eq!(
        c.q(&["RX.EVAL", "for i = 1, 3e7 do end return 1", "0"]),
        Reply::Int(1)
    );
    let body = "local t = _G['\\130'] for i = 1, 50 do t() end for i = 1, 3e7 do end local s = string.rep('a', 200) while true do s:find('.-b') end";
    eval_and_kill(&s, body, Duration::from_millis(1500), "slow turns");
}

/// A loop whose only check counts through `rx_count` (a `loadstring`'d chunk's entry)
/// and that calls a function on every turn: the nested call must not restart the run's
/// pacing, or the count never runs out and the server hangs (found by review).
#[test]
fn nested_calls_do_not_restart_the_pacing() {
    for jit in ["yes", "no"] {
        let s = start(jit);
        let mut c = s.conn();
        let lib = "#!lua name=n\nredis.register_function('n', redis.log)";
        assert_eq!(c.q(&["RX.LOAD", lib]), Reply::Bulk(b"n".to_vec()));
        let body = "local g = loadstring('local s = ... rx.pfcall(\"n\", {}, {}) return s(s)') return g(g)";
        eval_and_kill(&s, body, Duration::from_millis(100), &format!("jit {jit}"));
    }
}
