//! Integration tests for runaway functions and their limits, against real redis-server
//! processes: BUSY replies while a function runs past `busy-reply-threshold`, RX.KILL
//! (NOTBUSY, OK, UNKILLABLE) on loops hidden behind calls, pcall, xpcall and coroutines,
//! SHUTDOWN NOSAVE, the `rx.time-limit-ms` and `rx.memory-limit-mb` configs, RX.STATS and
//! the per-function lines of `INFO rx`.
//!
//! Servers run with `--busy-reply-threshold 100` so BUSY starts quickly. Every long call
//! runs on its own connection in a background thread; every wait is bounded.

mod common;

use common::{info_field, wait_until, Conn, Reply, Server};
use std::collections::BTreeMap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BUSY_ARGS: &[&str] = &["--busy-reply-threshold", "100"];

/// Runaway functions, and an ordinary one to show the VM is healthy afterwards.
const SPIN_LIB: &str = "#!lua name=spinlib
redis.register_function('ok', function(keys, args) return 'ok:' .. args[1] end)
redis.register_function('spin', function() while true do end end)
redis.register_function('calls', function() local function f(n) return n + 1 end local i = 0 while true do i = f(i) end end)
redis.register_function('pc', function() while true do pcall(function() while true do end end) end end)
redis.register_function('xpc', function() while true do xpcall(function() while true do end end, function(e) return e end) end end)
redis.register_function('co', function() while true do local c = coroutine.create(function() while true do end end) coroutine.resume(c) end end)
redis.register_function('cowrap', function() local c = coroutine.wrap(function() while true do coroutine.yield(1) end end) while true do c() end end)
redis.register_function('wspin', function(keys) redis.call('SET', keys[1], 'written') while true do end end)
redis.register_function('rec', function() local function r(n) if n > 1e9 then return 0 end return 1 + r(n + 1) end return r(1) end)
";

const KILLED: &str = "ERR Script killed by user with RX.KILL...";
const NOTBUSY: &str = "NOTBUSY No scripts in execution right now.";
const UNKILLABLE: &str = "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.";

fn busy_text(function: &str) -> String {
    format!("BUSY Redis is busy running the RX function '{function}'. You can only call RX.KILL or SHUTDOWN NOSAVE.")
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(s.as_bytes().to_vec())
}

fn pong() -> Reply {
    Reply::Status("PONG".into())
}

/// `CONFIG SET name value`, asserting it is accepted and that `CONFIG GET` reads it back.
fn set_config(c: &mut Conn, name: &str, value: &str) {
    assert_eq!(
        c.q(&["CONFIG", "SET", name, value]),
        Reply::Status("OK".into())
    );
    assert_eq!(
        c.q(&["CONFIG", "GET", name]),
        Reply::Array(vec![bulk(name), bulk(value)])
    );
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn start_with_lib(server_args: &[&str]) -> (Server, Conn) {
    let s = Server::start_with(server_args, &[]);
    let mut c = s.conn();
    assert_eq!(c.q(&["RX.LOAD", SPIN_LIB]), bulk("spinlib"));
    (s, c)
}

/// Runs one command on a fresh connection in a background thread; the result is its
/// reply, or the I/O error that ended the wait (connection closed, 15 s timeout).
fn call_in_background(port: u16, args: &[&str]) -> JoinHandle<Result<Reply, String>> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        let mut c = Conn::try_connect(port).map_err(|e| e.to_string())?;
        c.set_read_timeout(Duration::from_secs(15));
        c.try_raw(&args)
            .map(|b| common::parse_reply(&b))
            .map_err(|e| e.to_string())
    })
}

/// The background call's outcome; panics if it is still running after `timeout`.
fn join_within(
    h: JoinHandle<Result<Reply, String>>,
    timeout: Duration,
    what: &str,
) -> Result<Reply, String> {
    let start = Instant::now();
    while !h.is_finished() {
        assert!(
            start.elapsed() < timeout,
            "{what}: the call had not returned after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    h.join().expect("background thread panicked")
}

/// Polls PING on fresh connections until the server answers with `function`'s BUSY reply
/// (asserted exactly). Connections that get no answer within 300 ms (a server that does not
/// serve clients at all) count as "not busy yet"; gives up after 5 s.
fn wait_for_busy(port: u16, function: &str) {
    let start = Instant::now();
    let mut last = String::from("nothing");
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(mut c) = Conn::try_connect(port) {
            c.set_read_timeout(Duration::from_millis(300));
            match c.try_raw(&["PING"]) {
                Ok(bytes) => match common::parse_reply(&bytes) {
                    Reply::Error(e) => {
                        assert_eq!(e, busy_text(function), "BUSY reply while '{function}' runs");
                        return;
                    }
                    Reply::Status(s) if s == "PONG" => last = "PONG".into(),
                    other => panic!("unexpected reply to PING while '{function}' runs: {other:?}"),
                },
                Err(e) => last = format!("no answer to PING ({e})"),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "'{function}' never made the server answer BUSY within 5 s; last answer to PING: {last}"
    );
}

/// A fresh connection with a short read timeout, for commands sent while a function is busy.
fn side_conn(s: &Server) -> Conn {
    let c = s.conn();
    c.set_read_timeout(Duration::from_secs(3));
    c
}

/// Runs `function` in the background, waits for BUSY, kills it with RX.KILL and checks the
/// killed call's reply and that the server and VM are healthy afterwards.
fn run_busy_then_kill(s: &Server, c: &mut Conn, function: &str) {
    let h = call_in_background(s.port(), &["RX.CALL", function, "0"]);
    wait_for_busy(s.port(), function);
    let mut k = side_conn(s);
    assert_eq!(
        k.q(&["RX.KILL"]),
        Reply::Status("OK".into()),
        "RX.KILL on '{function}'"
    );
    let r = join_within(h, Duration::from_secs(5), function)
        .unwrap_or_else(|e| panic!("{function}: {e}"));
    let e = r
        .err_text()
        .unwrap_or_else(|| panic!("{function}: killed call should be an error, got {r:?}"));
    assert!(e.starts_with(KILLED), "{function}: {e}");
    assert!(
        e.contains(&format!("script: {function}, on @user_function:")),
        "{function}: {e}"
    );
    assert_eq!(c.q(&["PING"]), pong(), "after killing {function}");
    assert_eq!(
        c.q(&["RX.CALL", "ok", "0", function]),
        bulk(&format!("ok:{function}")),
        "after killing {function}"
    );
    assert_eq!(
        c.q(&["RX.KILL"]).err_text(),
        Some(NOTBUSY),
        "after killing {function}"
    );
}

// ---------------------------------------------------------------------------
// Busy functions and RX.KILL

/// name, calls, errors, errors by code, refusals by code, redis calls.
type ExpectedStats<'a> = (
    &'a str,
    i64,
    i64,
    &'a [(&'a str, i64)],
    &'a [(&'a str, i64)],
    i64,
);

#[test]
fn busy_function_answers_busy_and_rx_kill_stops_it() {
    let (s, mut c) = start_with_lib(BUSY_ARGS);
    assert_eq!(c.q(&["RX.KILL"]).err_text(), Some(NOTBUSY));
    c.q(&["SET", "k", "v"]).ok();
    // RX.STATS during the busy time, read as RESP3 (HELLO is not allowed while busy).
    let mut st = side_conn(&s);
    st.q(&["HELLO", "3"]).ok();
    assert_eq!(
        stats_map(&mut st, &[]).get("running_script"),
        Some(&Reply::Nil)
    );

    let h = call_in_background(s.port(), &["RX.CALL", "spin", "0", "arg1"]);
    wait_for_busy(s.port(), "spin");
    let mut other = side_conn(&s);
    assert_eq!(
        other.q(&["PING"]).err_text(),
        Some(busy_text("spin").as_str())
    );
    assert_eq!(
        other.q(&["GET", "k"]).err_text(),
        Some(busy_text("spin").as_str())
    );
    assert_eq!(
        other.q(&["SET", "k", "w"]).err_text(),
        Some(busy_text("spin").as_str())
    );

    let stats = stats_map(&mut st, &[]);
    let running = map_of(stats.get("running_script").unwrap());
    assert_eq!(running.get("name"), Some(&bulk("spin")));
    assert_eq!(
        running.get("command"),
        Some(&Reply::Array(vec![
            bulk("RX.CALL"),
            bulk("spin"),
            bulk("0"),
            bulk("arg1")
        ]))
    );
    let ms = int(running.get("duration_ms").unwrap());
    assert!((100..10_000).contains(&ms), "duration_ms {ms}");

    assert_eq!(other.q(&["RX.KILL"]), Reply::Status("OK".into()));
    let r = join_within(h, Duration::from_secs(5), "spin").unwrap();
    let e = r
        .err_text()
        .unwrap_or_else(|| panic!("killed call should be an error, got {r:?}"));
    assert!(e.starts_with(KILLED), "{e}");
    assert!(e.contains("script: spin, on @user_function:"), "{e}");

    assert_eq!(other.q(&["PING"]), pong());
    assert_eq!(other.q(&["GET", "k"]), bulk("v"));
    assert_eq!(c.q(&["RX.CALL", "ok", "0", "after"]), bulk("ok:after"));
    assert_eq!(c.q(&["RX.KILL"]).err_text(), Some(NOTBUSY));
    let stats = stats_map(&mut st, &[]);
    assert_eq!(stats.get("running_script"), Some(&Reply::Nil));
    // The killed call counts as one call with one ERR error.
    let spin = function_stats(&stats, "spin");
    assert_eq!(int(&spin["calls"]), 1);
    assert_eq!(int(&spin["errors"]), 1);
    assert_eq!(
        counts(&spin["errors_by_code"]),
        BTreeMap::from([("ERR".to_string(), 1)])
    );
    // A second run of the same function can be killed again (no state left behind).
    run_busy_then_kill(&s, &mut c, "spin");
}

/// Sends `MULTI`, the commands and `EXEC` on a fresh connection in a background thread;
/// the result is EXEC's reply.
fn transaction_in_background(port: u16, commands: &[&[&str]]) -> JoinHandle<Result<Reply, String>> {
    let commands: Vec<Vec<String>> = commands
        .iter()
        .map(|c| c.iter().map(|a| a.to_string()).collect())
        .collect();
    std::thread::spawn(move || {
        let mut c = Conn::try_connect(port).map_err(|e| e.to_string())?;
        c.set_read_timeout(Duration::from_secs(15));
        let queued = |r: Reply| match r {
            Reply::Status(s) if s == "OK" || s == "QUEUED" => Ok(()),
            other => Err(format!("not queued: {other:?}")),
        };
        queued(common::parse_reply(
            &c.try_raw(&["MULTI"]).map_err(|e| e.to_string())?,
        ))?;
        for cmd in &commands {
            queued(common::parse_reply(
                &c.try_raw(cmd).map_err(|e| e.to_string())?,
            ))?;
        }
        c.try_raw(&["EXEC"])
            .map(|b| common::parse_reply(&b))
            .map_err(|e| e.to_string())
    })
}

/// Redis asserts that no other client's command is processed while EXEC runs, so a run
/// inside a transaction must never yield: other clients wait, and a run that has not
/// written is stopped once it passes busy-reply-threshold (nobody could kill it). Before
/// the fix, a PING sent while `spin` ran inside EXEC aborted the server.
#[test]
fn a_busy_run_inside_exec_is_stopped_and_the_server_stays_up() {
    let (s, mut c) = start_with_lib(BUSY_ARGS);
    let stopped = "ERR Script stopped after running longer than busy-reply-threshold (100 ms) inside MULTI/EXEC, where Redis cannot serve other clients, so it could not be killed";
    for (what, command) in [
        ("function", vec!["RX.CALL", "spin", "0"]),
        ("pcall loop", vec!["RX.CALL", "pc", "0"]),
        ("script", vec!["RX.EVAL", "while true do end", "0"]),
    ] {
        let h = transaction_in_background(
            s.port(),
            &[&["SET", "before", "1"], &command, &["SET", "after", "1"]],
        );
        std::thread::sleep(Duration::from_millis(30));
        // Sent while the run spins inside EXEC: answered once EXEC is over.
        let mut other = s.conn();
        other.set_read_timeout(Duration::from_secs(10));
        assert_eq!(other.q(&["PING"]), pong(), "{what}: PING during EXEC");
        let reply =
            join_within(h, Duration::from_secs(10), what).unwrap_or_else(|e| panic!("{what}: {e}"));
        let items = reply
            .as_array()
            .unwrap_or_else(|| panic!("{what}: EXEC gave {reply:?}"));
        assert_eq!(items.len(), 3, "{what}: {reply:?}");
        assert_eq!(items[0], Reply::Status("OK".into()), "{what}");
        let e = items[1]
            .err_text()
            .unwrap_or_else(|| panic!("{what}: {:?}", items[1]));
        assert!(e.starts_with(stopped), "{what}: {e}");
        assert_eq!(items[2], Reply::Status("OK".into()), "{what}");
    }
    // A run that wrote cannot be stopped; it finishes, and others waited for it.
    let h = transaction_in_background(
        s.port(),
        &[&[
            "RX.EVAL",
            // Busy for a few hundred ms whatever the JIT makes of the loop: its time is in
            // the commands. (Not by TIME: Redis 8 and Valkey freeze it during a script.)
            "redis.call('SET', KEYS[1], 'w') for i = 1, 300000 do redis.call('EXISTS', KEYS[1]) end return 1",
            "1",
            "w",
        ]],
    );
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(c.q(&["PING"]), pong());
    let reply = join_within(h, Duration::from_secs(30), "writer").unwrap();
    assert_eq!(reply, Reply::Array(vec![Reply::Int(1)]));
    assert_eq!(c.q(&["GET", "w"]), bulk("w"));
    assert!(s
        .log()
        .contains("It already wrote and runs where Redis cannot serve other clients"));
    // Outside a transaction the same function is busy and killable as before.
    run_busy_then_kill(&s, &mut c, "spin");
}

#[test]
fn rx_kill_stops_loops_behind_calls_pcall_and_xpcall() {
    let (s, mut c) = start_with_lib(BUSY_ARGS);
    for f in ["calls", "pc", "xpc"] {
        run_busy_then_kill(&s, &mut c, f);
    }
}

#[test]
fn rx_kill_stops_a_loop_driven_by_coroutine_resume() {
    let (s, mut c) = start_with_lib(BUSY_ARGS);
    run_busy_then_kill(&s, &mut c, "co");
}

#[test]
fn rx_kill_stops_a_loop_driven_by_coroutine_wrap() {
    let (s, mut c) = start_with_lib(BUSY_ARGS);
    run_busy_then_kill(&s, &mut c, "cowrap");
}

#[test]
fn deep_recursion_is_an_error_and_the_server_stays_healthy() {
    let (_s, mut c) = start_with_lib(BUSY_ARGS);
    c.set_read_timeout(Duration::from_secs(10));
    let r = c.q(&["RX.CALL", "rec", "0"]);
    let e = r
        .err_text()
        .unwrap_or_else(|| panic!("expected an error, got {r:?}"));
    // The line of the call that overflowed, as native Redis names it (the differential
    // corpus compares it: sb-stack-overflow-line), with the JIT on and off.
    assert!(e.starts_with("ERR user_function:10: stack overflow"), "{e}");
    assert!(e.contains("script: rec, on @user_function:"), "{e}");
    assert_eq!(c.q(&["PING"]), pong());
    assert_eq!(c.q(&["RX.CALL", "ok", "0", "x"]), bulk("ok:x"));
    assert_eq!(c.q(&["RX.KILL"]).err_text(), Some(NOTBUSY));
}

/// Waits for the process to exit after SHUTDOWN NOSAVE (bounded).
fn shutdown_nosave_while_busy(s: &mut Server, h: JoinHandle<Result<Reply, String>>) {
    let mut k = side_conn(s);
    // A successful SHUTDOWN closes the connection without a reply.
    let r = k.try_raw(&["SHUTDOWN", "NOSAVE"]);
    assert!(
        r.is_err(),
        "SHUTDOWN NOSAVE replied instead of exiting: {:?}",
        r.map(|b| common::escape_bytes(&b))
    );
    wait_until("the server process to exit", Duration::from_secs(5), || {
        !s.is_alive()
    });
    let call = join_within(h, Duration::from_secs(5), "wspin");
    assert!(
        call.is_err(),
        "the busy call should end with the connection, got {call:?}"
    );
}

#[test]
fn function_that_wrote_is_unkillable_and_shutdown_nosave_stops_the_server() {
    let (mut s, _c) = start_with_lib(BUSY_ARGS);
    let h = call_in_background(s.port(), &["RX.CALL", "wspin", "1", "w"]);
    wait_for_busy(s.port(), "wspin");
    let mut k = side_conn(&s);
    assert_eq!(k.q(&["RX.KILL"]).err_text(), Some(UNKILLABLE));
    // Still running after the refused kill.
    assert_eq!(k.q(&["PING"]).err_text(), Some(busy_text("wspin").as_str()));
    assert_eq!(k.q(&["RX.KILL"]).err_text(), Some(UNKILLABLE));
    shutdown_nosave_while_busy(&mut s, h);
}

// ---------------------------------------------------------------------------
// rx.time-limit-ms

#[test]
fn time_limit_stops_non_writing_loops_by_itself() {
    let (_s, mut c) = start_with_lib(BUSY_ARGS);
    c.set_read_timeout(Duration::from_secs(10));
    set_config(&mut c, "rx.time-limit-ms", "300");
    for f in ["spin", "pc", "calls"] {
        let start = Instant::now();
        let r = c.q(&["RX.CALL", f, "0"]);
        let took = start.elapsed();
        let e = r
            .err_text()
            .unwrap_or_else(|| panic!("{f}: expected an error, got {r:?}"));
        assert!(
            e.starts_with("ERR Script stopped after running longer than rx.time-limit-ms (300 ms)"),
            "{f}: {e}"
        );
        assert!(
            e.contains(&format!("script: {f}, on @user_function:")),
            "{f}: {e}"
        );
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(5),
            "{f}: stopped after {took:?}"
        );
        assert_eq!(c.q(&["PING"]), pong());
        assert_eq!(c.q(&["RX.CALL", "ok", "0", f]), bulk(&format!("ok:{f}")));
    }
    // Off again: 0.
    set_config(&mut c, "rx.time-limit-ms", "0");
}

#[test]
fn time_limit_does_not_stop_a_function_that_wrote() {
    let (mut s, mut c) = start_with_lib(BUSY_ARGS);
    c.q(&["CONFIG", "SET", "rx.time-limit-ms", "300"]).ok();
    let mut st = side_conn(&s);
    st.q(&["HELLO", "3"]).ok();
    let h = call_in_background(s.port(), &["RX.CALL", "wspin", "1", "w"]);
    wait_for_busy(s.port(), "wspin");
    // Well past the limit, it still runs.
    wait_until("wspin to run for 900 ms", Duration::from_secs(5), || {
        let stats = stats_map(&mut st, &[]);
        match stats.get("running_script") {
            Some(r @ Reply::Map(_)) => int(map_of(r).get("duration_ms").unwrap()) >= 900,
            other => panic!("wspin stopped running: running_script = {other:?}"),
        }
    });
    assert!(!h.is_finished(), "wspin returned although it wrote");
    let mut k = side_conn(&s);
    assert_eq!(k.q(&["PING"]).err_text(), Some(busy_text("wspin").as_str()));
    assert_eq!(k.q(&["RX.KILL"]).err_text(), Some(UNKILLABLE));
    shutdown_nosave_while_busy(&mut s, h);
}

#[test]
fn limit_configs_validate_and_are_also_server_arguments() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(
        c.q(&["CONFIG", "GET", "rx.time-limit-ms"]),
        Reply::Array(vec![bulk("rx.time-limit-ms"), bulk("0")])
    );
    assert_eq!(
        c.q(&["CONFIG", "GET", "rx.memory-limit-mb"]),
        Reply::Array(vec![bulk("rx.memory-limit-mb"), bulk("1024")])
    );
    let r = c.q(&["CONFIG", "SET", "rx.time-limit-ms", "-1"]);
    assert!(
        r.err_text()
            .unwrap_or_default()
            .contains("argument must be between 0 and"),
        "{r:?}"
    );
    let r = c.q(&["CONFIG", "SET", "rx.memory-limit-mb", "abc"]);
    assert!(r.is_error(), "{r:?}");
    let r = c.q(&["CONFIG", "SET", "rx.memory-limit-mb", "0"]);
    assert!(r.is_error(), "memory limit 0: {r:?}");
    // Refused values leave the configs as they were.
    assert_eq!(
        c.q(&["CONFIG", "GET", "rx.time-limit-ms"]),
        Reply::Array(vec![bulk("rx.time-limit-ms"), bulk("0")])
    );
    assert_eq!(
        c.q(&["CONFIG", "GET", "rx.memory-limit-mb"]),
        Reply::Array(vec![bulk("rx.memory-limit-mb"), bulk("1024")])
    );

    // As server arguments (module configs in redis.conf form).
    let s3 = Server::start_with(
        &["--rx.time-limit-ms", "250", "--rx.memory-limit-mb", "256"],
        &[],
    );
    let mut c3 = s3.conn();
    assert_eq!(
        c3.q(&["CONFIG", "GET", "rx.time-limit-ms"]),
        Reply::Array(vec![bulk("rx.time-limit-ms"), bulk("250")])
    );
    assert_eq!(
        c3.q(&["CONFIG", "GET", "rx.memory-limit-mb"]),
        Reply::Array(vec![bulk("rx.memory-limit-mb"), bulk("256")])
    );
}

#[test]
fn limit_configs_are_accepted_as_module_arguments() {
    let s2 = Server::start_with(&[], &["time-limit-ms", "200", "memory-limit-mb", "512"]);
    let mut c2 = s2.conn();
    let get = |c: &mut Conn, name: &str| {
        c.q(&["CONFIG", "GET", name])
            .as_array()
            .and_then(|a| a.get(1)?.as_str().map(String::from))
    };
    assert_eq!(
        get(&mut c2, "rx.time-limit-ms").as_deref(),
        Some("200"),
        "module argument time-limit-ms 200"
    );
    assert_eq!(
        get(&mut c2, "rx.memory-limit-mb").as_deref(),
        Some("512"),
        "module argument memory-limit-mb 512"
    );
    // The module-argument limit is in force.
    assert_eq!(c2.q(&["RX.LOAD", SPIN_LIB]), bulk("spinlib"));
    c2.set_read_timeout(Duration::from_secs(10));
    let e = c2.q(&["RX.CALL", "spin", "0"]);
    assert!(
        e.err_text()
            .unwrap_or_default()
            .starts_with("ERR Script stopped after running longer than rx.time-limit-ms (200 ms)"),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------
// rx.memory-limit-mb

const MEM_LIB: &str = "#!lua name=memlib
redis.register_function('rep', function() return #string.rep('x', 2^30) end)
redis.register_function('double', function() local s = 'x' for i = 1, 40 do s = s .. s end return #s end)
redis.register_function('table', function() local t = {} for i = 1, 1e9 do t[i] = i end return #t end)
redis.register_function('mb16', function() return #string.rep('x', 16 * 1024 * 1024) end)
redis.register_function('echo', function(keys, args) return args[1] end)
";

#[test]
fn memory_limit_turns_allocation_bombs_into_errors() {
    let s = Server::start();
    let mut c = s.conn();
    c.set_read_timeout(Duration::from_secs(10));
    assert_eq!(c.q(&["RX.LOAD", MEM_LIB]), bulk("memlib"));
    set_config(&mut c, "rx.memory-limit-mb", "64");
    for f in ["rep", "double", "table"] {
        let start = Instant::now();
        let r = c.q(&["RX.CALL", f, "0"]);
        assert!(
            r.err_text()
                .unwrap_or_default()
                .contains("not enough memory"),
            "{f}: {r:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{f} took {:?}",
            start.elapsed()
        );
        assert_eq!(c.q(&["PING"]), pong(), "after {f}");
        assert_eq!(c.q(&["RX.CALL", "echo", "0", f]), bulk(f), "after {f}");
    }
    // 16 MB fits under 64 MB, right after the bombs.
    let r = c.q(&["RX.CALL", "mb16", "0"]);
    let vm = info_field(&mut c, "rx", "rx_vm_memory_bytes");
    assert_eq!(
        r,
        Reply::Int(16 << 20),
        "16 MB string at limit 64 MB after the bombs (rx_vm_memory_bytes now {vm:?})"
    );
    // Under 8 MB it does not; raising the limit back makes it work again.
    c.q(&["CONFIG", "SET", "rx.memory-limit-mb", "8"]).ok();
    let r = c.q(&["RX.CALL", "mb16", "0"]);
    assert!(
        r.err_text()
            .unwrap_or_default()
            .contains("not enough memory"),
        "mb16 at 8 MB: {r:?}"
    );
    assert_eq!(c.q(&["RX.CALL", "echo", "0", "small"]), bulk("small"));
    c.q(&["CONFIG", "SET", "rx.memory-limit-mb", "64"]).ok();
    assert_eq!(c.q(&["RX.CALL", "mb16", "0"]), Reply::Int(16 << 20));
    // VM memory stays bounded by the limit.
    let vm: i64 = info_field(&mut c, "rx", "rx_vm_memory_bytes")
        .unwrap()
        .parse()
        .unwrap();
    assert!(vm > 0 && vm <= 64 << 20, "rx_vm_memory_bytes {vm}");
}

// ---------------------------------------------------------------------------
// RX.STATS and INFO rx

const STATS_LIB: &str = "#!lua name=statlib
redis.register_function('okw', function(keys, args) redis.call('SET', keys[1], args[1]) return redis.call('GET', keys[1]) end)
redis.register_function('boom', function() redis.call('PING') error('boom') end)
redis.register_function('wt', function(keys) return redis.call('LPUSH', keys[1], 'x') end)
redis.register_function{function_name='ro', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}
redis.register_function('idle', function() return 1 end)
";
const OTHER_LIB: &str = "#!lua name=otherlib
redis.register_function('solo', function() return 1 end)
";
const OOM_TEXT: &str = "OOM command not allowed when used memory > 'maxmemory'.";
const RO_TEXT: &str = "ERR Can not execute a script with write flag using *_ro command.";

/// Loads the two libraries and makes a known mix of calls; returns the epoch-ms window in
/// which the last error happened.
fn stats_fixture(c: &mut Conn) -> (i64, i64) {
    assert_eq!(c.q(&["RX.LOAD", STATS_LIB]), bulk("statlib"));
    assert_eq!(c.q(&["RX.LOAD", OTHER_LIB]), bulk("otherlib"));
    c.q(&["SET", "str", "abc"]).ok();
    for i in 1..=3 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        assert_eq!(c.q(&["RX.CALL", "okw", "1", &k, &v]), bulk(&v));
    }
    for _ in 0..2 {
        let r = c.q(&["RX.CALL", "boom", "0"]);
        assert!(r.err_text().unwrap_or_default().starts_with("ERR"), "{r:?}");
        assert!(r.err_text().unwrap_or_default().contains("boom"), "{r:?}");
    }
    let r = c.q(&["RX.CALL", "wt", "1", "str"]);
    assert!(
        r.err_text().unwrap_or_default().starts_with("WRONGTYPE"),
        "{r:?}"
    );
    assert_eq!(c.q(&["RX.CALL_RO", "ro", "1", "k1"]), bulk("v1"));
    assert_eq!(
        c.q(&["RX.CALL_RO", "okw", "1", "k1", "x"]).err_text(),
        Some(RO_TEXT)
    );
    assert_eq!(c.q(&["RX.CALL", "solo", "0"]), Reply::Int(1));
    let before = now_ms();
    c.q(&["CONFIG", "SET", "maxmemory", "1"]).ok();
    assert_eq!(
        c.q(&["RX.CALL", "okw", "1", "k4", "v4"]).err_text(),
        Some(OOM_TEXT)
    );
    // no-writes functions still run over maxmemory.
    assert_eq!(c.q(&["RX.CALL", "ro", "1", "k2"]), bulk("v2"));
    c.q(&["CONFIG", "SET", "maxmemory", "0"]).ok();
    let after = now_ms();
    assert_eq!(c.q(&["EXISTS", "k4"]), Reply::Int(0));
    (before, after)
}

/// A RESP3 map reply as name -> value (panics on anything else).
fn map_of(r: &Reply) -> BTreeMap<String, Reply> {
    match r {
        Reply::Map(items) => items
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str()
                        .unwrap_or_else(|| panic!("map key {k:?}"))
                        .to_string(),
                    v.clone(),
                )
            })
            .collect(),
        other => panic!("expected a map, got {other:?}"),
    }
}

fn int(r: &Reply) -> i64 {
    r.as_int()
        .unwrap_or_else(|| panic!("expected an integer, got {r:?}"))
}

fn double(r: &Reply) -> f64 {
    match r {
        Reply::Double(s) => s.parse().unwrap_or_else(|_| panic!("bad double {s:?}")),
        other => panic!("expected a double, got {other:?}"),
    }
}

fn counts(r: &Reply) -> BTreeMap<String, i64> {
    map_of(r).into_iter().map(|(k, v)| (k, int(&v))).collect()
}

/// `RX.STATS <filter...>` on a RESP3 connection, as a map.
fn stats_map(c: &mut Conn, filter: &[&str]) -> BTreeMap<String, Reply> {
    let mut args = vec!["RX.STATS"];
    args.extend_from_slice(filter);
    let m = map_of(&c.q(&args));
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        [
            "engines",
            "functions",
            "running_script",
            "scripts",
            "vm_memory_bytes"
        ],
        "RX.STATS keys"
    );
    m
}

fn lua_engine(stats: &BTreeMap<String, Reply>) -> BTreeMap<String, Reply> {
    let engines = map_of(&stats["engines"]);
    assert_eq!(engines.keys().collect::<Vec<_>>(), ["LUA"]);
    map_of(&engines["LUA"])
}

fn functions(stats: &BTreeMap<String, Reply>) -> BTreeMap<String, BTreeMap<String, Reply>> {
    map_of(&stats["functions"])
        .into_iter()
        .map(|(k, v)| (k, map_of(&v)))
        .collect()
}

fn function_stats(stats: &BTreeMap<String, Reply>, name: &str) -> BTreeMap<String, Reply> {
    functions(stats)
        .remove(name)
        .unwrap_or_else(|| panic!("no stats for {name}"))
}

const FUNCTION_FIELDS: [&str; 16] = [
    "library",
    "calls",
    "nested_calls",
    "errors",
    "errors_by_code",
    "refusals",
    "total_us",
    "avg_us",
    "max_us",
    "p50_us",
    "p99_us",
    "p999_us",
    "redis_calls",
    "redis_calls_per_call",
    "last_error",
    "last_error_time_ms",
];

fn resp3(s: &Server) -> Conn {
    let mut c = s.conn();
    c.q(&["HELLO", "3"]).ok();
    c
}

fn code_counts(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn rx_stats_counts_calls_errors_and_refusals_exactly() {
    let s = Server::start();
    let mut c = resp3(&s);
    let (before, after) = stats_fixture(&mut c);
    let stats = stats_map(&mut c, &[]);
    assert_eq!(stats["running_script"], Reply::Nil);
    let lua = lua_engine(&stats);
    assert_eq!(
        lua.keys().collect::<Vec<_>>(),
        ["functions_count", "libraries_count"]
    );
    assert_eq!(int(&lua["libraries_count"]), 2);
    assert_eq!(int(&lua["functions_count"]), 6);
    assert!(int(&stats["vm_memory_bytes"]) > 0);
    let fns = functions(&stats);
    assert_eq!(
        fns.keys().collect::<Vec<_>>(),
        ["boom", "idle", "okw", "ro", "solo", "wt"]
    );
    let mut expected_fields: Vec<&str> = FUNCTION_FIELDS.to_vec();
    expected_fields.sort();
    for (name, f) in &fns {
        assert_eq!(
            f.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            expected_fields,
            "{name}: fields"
        );
        let lib = if name == "solo" {
            "otherlib"
        } else {
            "statlib"
        };
        assert_eq!(f["library"], bulk(lib), "{name}");
        let calls = int(&f["calls"]);
        let total = int(&f["total_us"]);
        let avg = int(&f["avg_us"]);
        assert_eq!(
            avg,
            if calls == 0 { 0 } else { total / calls },
            "{name}: avg_us == total_us / calls"
        );
        assert!(int(&f["max_us"]) <= total, "{name}: max_us > total_us");
        let per_call = double(&f["redis_calls_per_call"]);
        let want = if calls == 0 {
            0.0
        } else {
            int(&f["redis_calls"]) as f64 / calls as f64
        };
        assert!(
            (per_call - want).abs() < 1e-9,
            "{name}: redis_calls_per_call {per_call} want {want}"
        );
    }
    // (name, calls, errors, errors_by_code, refusals, redis_calls)
    let want: [ExpectedStats; 6] = [
        ("okw", 3, 0, &[], &[("ERR", 1), ("OOM", 1)], 6),
        ("boom", 2, 2, &[("ERR", 2)], &[], 2),
        ("wt", 1, 1, &[("WRONGTYPE", 1)], &[], 1),
        ("ro", 2, 0, &[], &[], 2),
        ("idle", 0, 0, &[], &[], 0),
        ("solo", 1, 0, &[], &[], 0),
    ];
    for (name, calls, errors, by_code, refusals, redis_calls) in want {
        let f = &fns[name];
        assert_eq!(int(&f["calls"]), calls, "{name}: calls");
        assert_eq!(int(&f["errors"]), errors, "{name}: errors");
        assert_eq!(
            counts(&f["errors_by_code"]),
            code_counts(by_code),
            "{name}: errors_by_code"
        );
        assert_eq!(
            counts(&f["refusals"]),
            code_counts(refusals),
            "{name}: refusals"
        );
        assert_eq!(int(&f["redis_calls"]), redis_calls, "{name}: redis_calls");
    }
    assert_eq!(double(&fns["okw"]["redis_calls_per_call"]), 2.0);
    // last_error: the latest error or refusal, with its time; nil when none.
    assert_eq!(fns["okw"]["last_error"], bulk(OOM_TEXT));
    let t = int(&fns["okw"]["last_error_time_ms"]);
    assert!(
        before <= t && t <= after,
        "okw last_error_time_ms {t} not in [{before}, {after}]"
    );
    let boom_err = fns["boom"]["last_error"].as_str().unwrap().to_string();
    assert!(
        boom_err.starts_with("ERR")
            && boom_err.contains("boom")
            && boom_err.contains("script: boom"),
        "{boom_err}"
    );
    let wt_err = fns["wt"]["last_error"].as_str().unwrap().to_string();
    assert!(
        wt_err.starts_with("WRONGTYPE Operation against a key holding the wrong kind of value"),
        "{wt_err}"
    );
    for name in ["ro", "idle", "solo"] {
        assert_eq!(fns[name]["last_error"], Reply::Nil, "{name}");
        assert_eq!(fns[name]["last_error_time_ms"], Reply::Nil, "{name}");
    }
    for field in [
        "total_us", "avg_us", "max_us", "p50_us", "p99_us", "p999_us",
    ] {
        assert_eq!(int(&fns["idle"][field]), 0, "idle: {field}");
    }
    assert!(int(&fns["okw"]["p50_us"]) > 0 && int(&fns["okw"]["total_us"]) > 0);

    // Filters: the same shape, fewer functions; engine counts stay global.
    let lib = stats_map(&mut c, &["LIBRARY", "otherlib"]);
    assert_eq!(functions(&lib).keys().collect::<Vec<_>>(), ["solo"]);
    assert_eq!(int(&lua_engine(&lib)["functions_count"]), 6);
    assert_eq!(function_stats(&lib, "solo"), fns["solo"]);
    let lib = stats_map(&mut c, &["LIBRARY", "statlib"]);
    assert_eq!(
        functions(&lib).keys().collect::<Vec<_>>(),
        ["boom", "idle", "okw", "ro", "wt"]
    );
    let one = stats_map(&mut c, &["FUNCTION", "OKW"]);
    assert_eq!(functions(&one).keys().collect::<Vec<_>>(), ["okw"]);
    assert_eq!(function_stats(&one, "okw"), fns["okw"]);
    assert!(functions(&stats_map(&mut c, &["LIBRARY", "nosuch"])).is_empty());
    assert!(functions(&stats_map(&mut c, &["FUNCTION", "nosuch"])).is_empty());

    // RESP2: the same data as flat arrays.
    let mut c2 = s.conn();
    let r = c2.q(&["RX.STATS", "FUNCTION", "okw"]);
    let top = r
        .as_array()
        .unwrap_or_else(|| panic!("RESP2 RX.STATS: {r:?}"));
    assert_eq!(top.len(), 10, "{r:?}");
    assert_eq!(
        (&top[0], &top[1], &top[2], &top[4], &top[6]),
        (
            &bulk("running_script"),
            &Reply::Nil,
            &bulk("engines"),
            &bulk("vm_memory_bytes"),
            &bulk("functions")
        )
    );
    assert_eq!(
        top[3],
        Reply::Array(vec![
            bulk("LUA"),
            Reply::Array(vec![
                bulk("libraries_count"),
                Reply::Int(2),
                bulk("functions_count"),
                Reply::Int(6)
            ])
        ])
    );
    assert!(int(&top[5]) > 0);
    let fns2 = top[7].as_array().unwrap();
    assert_eq!(fns2.len(), 2);
    assert_eq!(fns2[0], bulk("okw"));
    let okw2 = fns2[1].as_array().unwrap();
    assert_eq!(okw2.len(), 2 * FUNCTION_FIELDS.len());
    let okw2: BTreeMap<String, Reply> = okw2
        .chunks(2)
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].clone()))
        .collect();
    assert_eq!(okw2["calls"], Reply::Int(3));
    assert_eq!(okw2["redis_calls_per_call"], bulk("2"));
    assert_eq!(
        okw2["refusals"],
        Reply::Array(vec![bulk("ERR"), Reply::Int(1), bulk("OOM"), Reply::Int(1)])
    );

    // Replacing a library starts its functions' statistics afresh; others keep theirs.
    assert_eq!(c.q(&["RX.LOAD", "REPLACE", OTHER_LIB]), bulk("otherlib"));
    let after_replace = stats_map(&mut c, &[]);
    assert_eq!(int(&function_stats(&after_replace, "solo")["calls"]), 0);
    assert_eq!(function_stats(&after_replace, "okw"), fns["okw"]);

    // Bad arguments.
    assert!(c.q(&["RX.STATS", "BOGUS"]).is_error());
    assert!(c.q(&["RX.STATS", "LIBRARY"]).is_error());

    // RESET zeroes everything.
    assert_eq!(c.q(&["RX.STATS", "RESET"]), Reply::Status("OK".into()));
    let stats = stats_map(&mut c, &[]);
    assert_eq!(int(&lua_engine(&stats)["functions_count"]), 6);
    for (name, f) in functions(&stats) {
        for field in [
            "calls",
            "errors",
            "total_us",
            "avg_us",
            "max_us",
            "p50_us",
            "p99_us",
            "p999_us",
            "redis_calls",
        ] {
            assert_eq!(int(&f[field]), 0, "{name}: {field} after RESET");
        }
        assert!(
            counts(&f["errors_by_code"]).is_empty() && counts(&f["refusals"]).is_empty(),
            "{name} after RESET"
        );
        assert_eq!(
            double(&f["redis_calls_per_call"]),
            0.0,
            "{name} after RESET"
        );
        assert_eq!(
            (&f["last_error"], &f["last_error_time_ms"]),
            (&Reply::Nil, &Reply::Nil),
            "{name} after RESET"
        );
    }
    assert_eq!(info_field(&mut c, "rx", "rx_calls").as_deref(), Some("0"));
    // Counting starts again.
    assert_eq!(c.q(&["RX.CALL", "solo", "0"]), Reply::Int(1));
    assert_eq!(
        int(&function_stats(&stats_map(&mut c, &[]), "solo")["calls"]),
        1
    );
}

#[test]
fn rx_stats_latency_percentiles_are_ordered_and_bounded_by_max() {
    let s = Server::start();
    let mut c = resp3(&s);
    stats_fixture(&mut c);
    // Some spread in latency for one function.
    for i in 0..50 {
        c.q(&["RX.CALL", "okw", "1", "spread", &"x".repeat(i * 1000)])
            .ok();
    }
    // Calls of a few milliseconds, where a histogram bucket spans tens of microseconds.
    let slow = "#!lua name=slowlib
redis.register_function('slow', function(keys, args) local t = 0 for i = 1, tonumber(args[1]) do t = t + i end return t end)";
    assert_eq!(c.q(&["RX.LOAD", slow]), bulk("slowlib"));
    c.q(&["RX.CALL", "slow", "0", "3000000"]).ok();
    let one = function_stats(&stats_map(&mut c, &["FUNCTION", "slow"]), "slow");
    assert_eq!(int(&one["calls"]), 1);
    let (p50, max) = (int(&one["p50_us"]), int(&one["max_us"]));
    assert_eq!(int(&one["total_us"]), max, "one call: total_us == max_us");
    assert!(
        p50 <= max,
        "one call of {max} us: p50_us {p50} > max_us {max}"
    );
    for n in ["1000000", "2000000", "4000000"] {
        c.q(&["RX.CALL", "slow", "0", n]).ok();
    }
    for (name, f) in functions(&stats_map(&mut c, &[])) {
        if int(&f["calls"]) == 0 {
            continue;
        }
        let (p50, p99, p999, max) = (
            int(&f["p50_us"]),
            int(&f["p99_us"]),
            int(&f["p999_us"]),
            int(&f["max_us"]),
        );
        assert!(p50 >= 1, "{name}: p50_us {p50}");
        assert!(
            p50 <= p99 && p99 <= p999 && p999 <= max,
            "{name}: want p50 <= p99 <= p999 <= max, got p50_us={p50} p99_us={p99} p999_us={p999} max_us={max}"
        );
    }
}

/// One entry's line of INFO rx (`calls=3,errors=0,...`) as field -> value.
fn info_entry_fields(line: &str, v: &str) -> BTreeMap<String, i64> {
    v.split(',')
        .map(|kv| {
            let (a, b) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("bad INFO field {kv:?} in {line}"));
            (
                a.to_string(),
                b.trim()
                    .parse::<i64>()
                    .unwrap_or_else(|_| panic!("bad value in {line}")),
            )
        })
        .collect()
}

type InfoEntries = BTreeMap<String, BTreeMap<String, i64>>;

/// INFO rx as its plain fields, the `rx_fn_<name>` lines (name -> field -> value) and the
/// `rx_script_<sha1>` lines (SHA1 -> field -> value).
fn info_rx(c: &mut Conn) -> (BTreeMap<String, String>, InfoEntries, InfoEntries) {
    let info = c.q(&["INFO", "rx"]);
    let text = String::from_utf8_lossy(info.as_bytes().unwrap_or_default()).into_owned();
    let mut plain = BTreeMap::new();
    let mut per_fn = BTreeMap::new();
    let mut per_script = BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if let Some(name) = k.strip_prefix("rx_fn_") {
            per_fn.insert(name.to_string(), info_entry_fields(line, v));
        } else if let Some(sha) = k.strip_prefix("rx_script_") {
            per_script.insert(sha.to_string(), info_entry_fields(line, v));
        } else {
            plain.insert(k.to_string(), v.trim().to_string());
        }
    }
    (plain, per_fn, per_script)
}

/// The fields of an INFO rx entry line, in their documented order.
const INFO_ENTRY_FIELDS: [&str; 10] = [
    "calls",
    "errors",
    "refusals",
    "usec",
    "usec_per_call",
    "max_usec",
    "p50_usec",
    "p99_usec",
    "p999_usec",
    "redis_calls",
];

/// An INFO rx entry line carries the numbers RX.STATS gives for the same function or script.
fn assert_info_entry_matches_stats(
    name: &str,
    info: &BTreeMap<String, i64>,
    stats: &BTreeMap<String, Reply>,
) {
    assert_eq!(info.len(), INFO_ENTRY_FIELDS.len(), "{name}: {info:?}");
    let refusals: i64 = counts(&stats["refusals"]).values().sum();
    let want = [
        int(&stats["calls"]),
        int(&stats["errors"]),
        refusals,
        int(&stats["total_us"]),
        int(&stats["avg_us"]),
        int(&stats["max_us"]),
        int(&stats["p50_us"]),
        int(&stats["p99_us"]),
        int(&stats["p999_us"]),
        int(&stats["redis_calls"]),
    ];
    for (k, w) in INFO_ENTRY_FIELDS.iter().zip(want) {
        assert_eq!(info.get(*k), Some(&w), "{name}: INFO {k} vs RX.STATS");
    }
}

#[test]
fn info_rx_per_function_lines_match_rx_stats() {
    let s = Server::start();
    let mut c = resp3(&s);
    stats_fixture(&mut c);
    let (plain, per_fn, per_script) = info_rx(&mut c);
    assert!(per_script.is_empty(), "{per_script:?}");
    let stats = stats_map(&mut c, &[]);
    let fns = functions(&stats);
    assert_eq!(
        per_fn.keys().collect::<Vec<_>>(),
        fns.keys().collect::<Vec<_>>()
    );
    assert_eq!(plain.get("rx_calls").map(String::as_str), Some("9"));
    assert_eq!(plain.get("rx_errors").map(String::as_str), Some("3"));
    assert_eq!(plain.get("rx_refusals").map(String::as_str), Some("2"));
    assert_eq!(plain.get("rx_functions").map(String::as_str), Some("6"));
    assert_eq!(plain.get("rx_libraries").map(String::as_str), Some("2"));
    let vm: i64 = plain["rx_vm_memory_bytes"].parse().unwrap();
    assert_eq!(
        vm,
        int(&stats["vm_memory_bytes"]),
        "rx_vm_memory_bytes vs RX.STATS vm_memory_bytes"
    );
    for (name, info) in &per_fn {
        assert_info_entry_matches_stats(name, info, &fns[name]);
    }
    // The exact counts, through INFO alone.
    assert_eq!(
        (
            per_fn["okw"]["calls"],
            per_fn["okw"]["refusals"],
            per_fn["okw"]["redis_calls"]
        ),
        (3, 2, 6)
    );
    assert_eq!((per_fn["boom"]["calls"], per_fn["boom"]["errors"]), (2, 2));
    assert_eq!(
        (
            per_fn["wt"]["errors"],
            per_fn["ro"]["calls"],
            per_fn["idle"]["calls"]
        ),
        (1, 2, 0)
    );
    // The field order is the documented one.
    let line = {
        let info = c.q(&["INFO", "rx"]);
        String::from_utf8_lossy(info.as_bytes().unwrap())
            .lines()
            .find(|l| l.starts_with("rx_fn_okw:"))
            .unwrap()
            .to_string()
    };
    let order: Vec<&str> = line["rx_fn_okw:".len()..]
        .split(',')
        .map(|kv| kv.split('=').next().unwrap())
        .collect();
    assert_eq!(order, INFO_ENTRY_FIELDS);
}

/// EVAL scripts count in INFO rx as functions do: the totals include their runs, and each
/// cached script has a line keyed by its SHA1 with the numbers RX.STATS gives it.
#[test]
fn info_rx_counts_scripts_and_lists_them_by_sha1() {
    let s = Server::start();
    let mut c = resp3(&s);
    // Functions: 9 calls, 3 errors, 2 refusals (see stats_fixture).
    stats_fixture(&mut c);
    let load = |c: &mut Conn, body: &str| {
        let r = c.q(&["RX.SCRIPT", "LOAD", body]);
        let sha = r.as_str().unwrap_or_else(|| panic!("{r:?}")).to_string();
        assert_eq!(sha, common::sha1_hex(body.as_bytes()));
        sha
    };
    let incr = load(&mut c, "return redis.call('INCR', KEYS[1])");
    for _ in 0..3 {
        assert!(!c.q(&["RX.EVALSHA", &incr, "1", "n"]).is_error());
    }
    // "str" holds "abc": INCR fails, and the script with it.
    let r = c.q(&["RX.EVALSHA", &incr, "1", "str"]);
    assert!(
        r.err_text()
            .unwrap_or_default()
            .starts_with("ERR value is not an integer"),
        "{r:?}"
    );
    // A script with a shebang and no no-writes flag: *_RO refuses it before it runs.
    let writer_body = "#!lua\nreturn redis.call('SET', KEYS[1], 'x')";
    let writer = common::sha1_hex(writer_body.as_bytes());
    assert_eq!(
        c.q(&["RX.EVAL", writer_body, "1", "w"]),
        Reply::Status("OK".into())
    );
    assert_eq!(
        c.q(&["RX.EVALSHA_RO", &writer, "1", "w"]).err_text(),
        Some(RO_TEXT)
    );
    let idle = load(&mut c, "return 1");

    let (plain, per_fn, per_script) = info_rx(&mut c);
    let stats = stats_map(&mut c, &[]);
    // Totals: functions (9, 3, 2) plus scripts (5, 1, 1).
    assert_eq!(plain.get("rx_calls").map(String::as_str), Some("14"));
    assert_eq!(plain.get("rx_errors").map(String::as_str), Some("4"));
    assert_eq!(plain.get("rx_refusals").map(String::as_str), Some("3"));
    assert_eq!(plain.get("rx_scripts").map(String::as_str), Some("3"));
    assert_eq!(plain.get("rx_functions").map(String::as_str), Some("6"));
    // The same scripts as RX.STATS, with the same numbers.
    let scripts: BTreeMap<String, BTreeMap<String, Reply>> = map_of(&stats["scripts"])
        .into_iter()
        .map(|(k, v)| (k, map_of(&v)))
        .collect();
    let mut want_shas = vec![incr.clone(), writer.clone(), idle.clone()];
    want_shas.sort();
    assert_eq!(scripts.keys().cloned().collect::<Vec<_>>(), want_shas);
    assert_eq!(per_script.keys().cloned().collect::<Vec<_>>(), want_shas);
    for (sha, info) in &per_script {
        assert_info_entry_matches_stats(sha, info, &scripts[sha]);
    }
    let fns = functions(&stats);
    for (name, info) in &per_fn {
        assert_info_entry_matches_stats(name, info, &fns[name]);
    }
    // The exact counts, through INFO alone.
    let counts_of = |sha: &str| {
        let e = &per_script[sha];
        (e["calls"], e["errors"], e["refusals"], e["redis_calls"])
    };
    assert_eq!(counts_of(&incr), (4, 1, 0, 4));
    assert_eq!(counts_of(&writer), (1, 0, 1, 1));
    assert_eq!(counts_of(&idle), (0, 0, 0, 0));
    // Script lines have the fields of function lines, in the same order.
    let info = c.q(&["INFO", "rx"]);
    let text = String::from_utf8_lossy(info.as_bytes().unwrap()).into_owned();
    let prefix = format!("rx_script_{incr}:");
    let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap();
    let order: Vec<&str> = line[prefix.len()..]
        .split(',')
        .map(|kv| kv.split('=').next().unwrap())
        .collect();
    assert_eq!(order, INFO_ENTRY_FIELDS);
    // RX.STATS RESET zeroes scripts in INFO too; RX.SCRIPT FLUSH removes their lines.
    assert_eq!(c.q(&["RX.STATS", "RESET"]), Reply::Status("OK".into()));
    let (plain, _, per_script) = info_rx(&mut c);
    assert_eq!(plain.get("rx_calls").map(String::as_str), Some("0"));
    assert!(
        per_script[&incr].values().all(|&v| v == 0),
        "{per_script:?}"
    );
    assert_eq!(c.q(&["RX.SCRIPT", "FLUSH"]), Reply::Status("OK".into()));
    let (plain, _, per_script) = info_rx(&mut c);
    assert!(per_script.is_empty(), "{per_script:?}");
    assert_eq!(plain.get("rx_scripts").map(String::as_str), Some("0"));
}

/// Deleting libraries (and flushing scripts) gives their memory back to the VM at once:
/// each function's registry slot is freed when its last holder goes, not when the next
/// library happens to be loaded.
#[test]
fn deleted_libraries_and_scripts_free_their_memory() {
    let s = Server::start();
    let mut c = s.conn();
    c.q(&[
        "RX.LOAD",
        "#!lua name=gc\nredis.register_function('gcnow', function() collectgarbage('collect') collectgarbage('collect') return 1 end)",
    ]);
    let vm = |c: &mut Conn| {
        assert_eq!(c.q(&["RX.CALL", "gcnow", "0"]), Reply::Int(1));
        info_field(c, "rx", "rx_vm_memory_bytes")
            .and_then(|v| v.parse::<i64>().ok())
            .expect("rx_vm_memory_bytes")
    };
    let base = vm(&mut c);
    // Each library and script carries a 4 KB string constant, so its code is easy to see.
    let loads: Vec<Vec<Vec<u8>>> = (0..500)
        .map(|i| {
            vec![
                b"RX.LOAD".to_vec(),
                format!(
                    "#!lua name=big{i}\nlocal s = '{}{i}'\nredis.register_function('big{i}', function() return #s end)",
                    "x".repeat(4096)
                )
                .into_bytes(),
            ]
        })
        .collect();
    c.pipeline(loads);
    let scripts: Vec<Vec<Vec<u8>>> = (0..200)
        .map(|i| {
            vec![
                b"RX.SCRIPT".to_vec(),
                b"LOAD".to_vec(),
                format!("local s = '{}{i}' return #s", "y".repeat(4096)).into_bytes(),
            ]
        })
        .collect();
    c.pipeline(scripts);
    let loaded = vm(&mut c);
    assert!(loaded > base + 2_000_000, "base {base}, loaded {loaded}");

    let deletes: Vec<Vec<Vec<u8>>> = (0..500)
        .map(|i| vec![b"RX.DELETE".to_vec(), format!("big{i}").into_bytes()])
        .collect();
    c.pipeline(deletes);
    assert_eq!(c.q(&["RX.SCRIPT", "FLUSH"]).as_str(), Some("OK"));
    let after = vm(&mut c);
    assert!(
        after < base + 200_000,
        "base {base}, loaded {loaded}, after delete and flush {after}"
    );
}

/// Garbage left by earlier calls never makes a later call fail under a small memory cap:
/// the collector's pace (how much garbage may gather between cycles) is bounded by the cap.
#[test]
fn garbage_never_fails_calls_under_a_small_memory_cap() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(
        c.q(&["CONFIG", "SET", "rx.memory-limit-mb", "16"]).as_str(),
        Some("OK")
    );
    c.q(&[
        "RX.LOAD",
        "#!lua name=churn\nredis.register_function('churn', function(keys, args) local t = {} for i = 1, 2000 do t[i] = string.rep('x', 512) .. args[1] .. ':' .. i end return #t end)",
    ]);
    // Each call leaves about 1 MB of new strings as garbage: 200 calls are 200 MB, far
    // past the cap.
    for i in 0..200 {
        assert_eq!(
            c.q(&["RX.CALL", "churn", "0", &i.to_string()]),
            Reply::Int(2000),
            "call {i} under a 16 MB cap"
        );
    }
    let used: i64 = info_field(&mut c, "rx", "rx_vm_memory_bytes")
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(used < 16 << 20, "VM at {used} bytes, over its 16 MB cap");
}

/// Values whose reply or encoding would never end: a table reachable from itself, or
/// reachable many times over. Native Redis hangs on these (or fills its memory); RX
/// answers an error, and a codec working through one can be killed or timed out like Lua
/// code.
#[test]
fn endless_replies_and_encodings_are_errors_or_killable() {
    let (s, mut c) = start_with_lib(BUSY_ARGS);
    let contains_itself = "ERR the reply contains a table that contains itself";
    for script in [
        "local t = {} t[1] = t return t",
        "local t = {} t[1] = t t[2] = t return t",
        "local t = {} t.map = {a = t} return t",
        "local t = {1, {2, {}}} t[2][2][1] = t return t",
    ] {
        assert_eq!(
            c.q(&["RX.EVAL", script, "0"]).err_text(),
            Some(contains_itself),
            "{script}"
        );
    }
    // Thirty levels of a table holding the level below twice: 2^31 elements.
    let doubling = "local t = {} for i = 1, 30 do t = {t, t} end return t";
    assert_eq!(
        c.q(&["RX.EVAL", doubling, "0"]).err_text(),
        Some("ERR reply too large: more than 100000000 elements")
    );
    // Shared (not cyclic) tables of a sensible size are fine, as are deep chains.
    assert_eq!(
        c.q(&["RX.EVAL", "local u = {1, 2} return {u, u, {u}}", "0"]),
        Reply::Array(vec![
            Reply::Array(vec![Reply::Int(1), Reply::Int(2)]),
            Reply::Array(vec![Reply::Int(1), Reply::Int(2)]),
            Reply::Array(vec![Reply::Array(vec![Reply::Int(1), Reply::Int(2)])]),
        ])
    );
    // cmsgpack packs a table reachable ten times over at every level (10^16 values): busy,
    // then killed, also from inside pcall.
    for script in [
        "local t = {} for i = 1, 10 do t[i] = t end return #cmsgpack.pack(t)",
        "local t = {} for i = 1, 10 do t[i] = t end return {pcall(cmsgpack.pack, t)}",
    ] {
        let h = call_in_background(s.port(), &["RX.EVAL", script, "0"]);
        wait_for_busy_script(s.port());
        assert_eq!(
            side_conn(&s).q(&["RX.SCRIPT", "KILL"]),
            Reply::Status("OK".into())
        );
        let r = join_within(h, Duration::from_secs(5), script).unwrap();
        assert!(
            r.err_text()
                .unwrap_or_default()
                .starts_with("ERR Script killed by user with RX.SCRIPT KILL..."),
            "{script}: {r:?}"
        );
    }
    assert_eq!(c.q(&["RX.CALL", "ok", "0", "after"]), bulk("ok:after"));
}

/// Polls PING until it answers an RX script's BUSY error (5 s at most).
fn wait_for_busy_script(port: u16) {
    let mut probe = Conn::connect(port);
    wait_until("an RX script turns busy", Duration::from_secs(5), || {
        probe.q(&["PING"]).err_text() == Some("BUSY Redis is busy running an RX script. You can only call RX.SCRIPT KILL or SHUTDOWN NOSAVE.")
    });
}

/// Running out of memory inside cjson, cmsgpack or struct reads as every other
/// out-of-memory failure: `ERR not enough memory`, and `not enough memory` under pcall.
/// Before the fix, an allocation failing in the codecs' glue replied mlua's own text
/// (`ERR memory error: not enough memory stack traceback: ...`).
#[test]
fn out_of_memory_inside_a_codec_reads_like_any_other() {
    let (_s, mut c) = start_with_lib(&[]);
    set_config(&mut c, "rx.memory-limit-mb", "16");
    for script in [
        "return #cmsgpack.unpack(cmsgpack.pack(('x'):rep(6e6)))",
        "return #cmsgpack.pack(('x'):rep(9e6))",
        "return #cjson.encode(('x'):rep(9e6))",
        "return #struct.pack('c0', ('x'):rep(9e6))",
        "local u = {} for i = 1, 100 do u[i] = ('y'):rep(100) end local t = {} for i = 1, 2000 do t[i] = u end return #cjson.encode(t)",
        "local u = {} for i = 1, 100 do u[i] = ('y'):rep(100) end local t = {} for i = 1, 2000 do t[i] = u end return #cmsgpack.pack(t)",
    ] {
        assert_eq!(c.q(&["RX.EVAL", script, "0"]).err_text(), Some("ERR not enough memory"), "{script}");
        let caught = format!("return {{pcall(function() {script} end)}}");
        assert_eq!(
            c.q(&["RX.EVAL", &caught, "0"]),
            Reply::Array(vec![Reply::Nil, bulk("not enough memory")]),
            "{script}"
        );
    }
    assert_eq!(c.q(&["RX.CALL", "ok", "0", "after"]), bulk("ok:after"));
}

/// Found by `make fuzz`: after an out-of-memory failure the collection that should give the
/// memory back could itself run out of memory halfway (LuaJIT allocates while collecting),
/// leaving the VM at its cap so that every later call, of any function, failed with
/// `ERR not enough memory`.
#[test]
fn the_vm_gives_memory_back_after_running_out() {
    let (_s, mut c) = start_with_lib(&[]);
    c.q(&["RX.LOAD", "#!lua name=bombs
redis.register_function('hash', function(keys, args) local t = {} for i = 1, tonumber(args[1]) do t['k' .. i] = i end return 1 end)
redis.register_function('nest', function(keys, args) local t = {} for i = 1, tonumber(args[1]) do t = {t} end return 1 end)"]).ok();
    for round in 0..3 {
        set_config(&mut c, "rx.memory-limit-mb", "16");
        assert_eq!(
            c.q(&["RX.CALL", "hash", "0", "100000000"]).err_text(),
            Some("ERR not enough memory")
        );
        set_config(&mut c, "rx.memory-limit-mb", "8");
        assert_eq!(
            c.q(&["RX.CALL", "nest", "0", "10000000"]).err_text(),
            Some("ERR not enough memory")
        );
        assert_eq!(
            c.q(&["RX.CALL", "ok", "0", "x"]),
            bulk("ok:x"),
            "round {round}"
        );
        let vm: i64 = info_field(&mut c, "rx", "rx_vm_memory_bytes")
            .unwrap()
            .parse()
            .unwrap();
        assert!(vm < 4 << 20, "round {round}: the VM still holds {vm} bytes");
    }
}
