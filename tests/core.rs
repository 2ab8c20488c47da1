//! Integration tests for the RX core against real redis-server processes: what the
//! differential corpus cannot express (server state, replicas, timing, sizes, re-entry).
//! Where native Redis has an equivalent, the test asserts RX answers exactly like it.

mod common;

use common::{info_field, wait_until, Conn, Reply, Server};
use std::time::{Duration, Instant};

/// The same library, loadable natively and into RX.
const LIB: &str = "#!lua name=corelib
redis.register_function('w', function(keys, args) redis.call('SET', keys[1], args[1]) return redis.call('INCR', 'counter') end)
redis.register_function{function_name='r', callback=function(keys, args) return redis.call('GET', keys[1]) end, flags={'no-writes'}}
redis.register_function{function_name='stale_ok', callback=function(keys, args) return 'served' end, flags={'no-writes', 'allow-stale'}}
redis.register_function{function_name='stale_get', callback=function(keys, args) return redis.pcall('GET', keys[1]) end, flags={'no-writes', 'allow-stale'}}
redis.register_function('echo', function(keys, args) return args[1] end)
redis.register_function('norepl', function(keys, args)
  redis.set_repl(redis.REPL_NONE)
  redis.call('SET', keys[1], 'master-only')
  redis.set_repl(redis.REPL_ALL)
  redis.call('SET', keys[2], 'everywhere')
  return 'done'
end)
";

fn load_both(c: &mut Conn) {
    assert_eq!(
        c.q(&["FUNCTION", "LOAD", "REPLACE", LIB]).ok(),
        Reply::Bulk(b"corelib".to_vec())
    );
    assert_eq!(
        c.q(&["RX.LOAD", "REPLACE", LIB]).ok(),
        Reply::Bulk(b"corelib".to_vec())
    );
}

/// Runs `FCALL`/`FCALL_RO` and the RX equivalent with the same arguments; returns both.
fn both(c: &mut Conn, ro: bool, args: &[&str]) -> (Reply, Reply) {
    let (native, rx) = if ro {
        ("FCALL_RO", "RX.CALL_RO")
    } else {
        ("FCALL", "RX.CALL")
    };
    let mut n = vec![native];
    n.extend_from_slice(args);
    let mut r = vec![rx];
    r.extend_from_slice(args);
    (c.q(&n), c.q(&r))
}

#[test]
fn command_getkeys_reports_declared_keys_like_fcall() {
    let s = Server::start();
    let mut c = s.conn();
    load_both(&mut c);
    let native = c.q(&["COMMAND", "GETKEYS", "FCALL", "echo", "2", "a", "b", "c"]);
    let rx = c.q(&["COMMAND", "GETKEYS", "RX.CALL", "echo", "2", "a", "b", "c"]);
    assert_eq!(
        rx,
        Reply::Array(vec![Reply::Bulk(b"a".to_vec()), Reply::Bulk(b"b".to_vec())])
    );
    assert_eq!(rx, native);
    let rx_ro = c.q(&["COMMAND", "GETKEYS", "RX.CALL_RO", "r", "1", "k"]);
    assert_eq!(rx_ro, Reply::Array(vec![Reply::Bulk(b"k".to_vec())]));
    // No keys, and bad numkeys: the same answers as FCALL.
    for numkeys in ["0", "-1", "9", "x"] {
        let n0 = c.q(&["COMMAND", "GETKEYS", "FCALL", "echo", numkeys, "x"]);
        let r0 = c.q(&["COMMAND", "GETKEYS", "RX.CALL", "echo", numkeys, "x"]);
        assert_eq!(n0, r0, "numkeys {numkeys}");
    }
}

#[test]
fn calling_rx_commands_from_scripts_is_a_clean_error() {
    let s = Server::start();
    let mut c = s.conn();
    load_both(&mut c);
    let lib = "#!lua name=reenter
redis.register_function('call_rx', function() return redis.pcall('RX.CALL', 'echo', '0', 'x') end)
redis.register_function('load_rx', function() return redis.pcall('RX.LOAD', '#!lua name=zz\\nredis.register_function(\\'z\\', function() end)') end)
redis.register_function('call_eval', function() return redis.pcall('EVAL', 'return 1', '0') end)
redis.register_function('call_fcall', function() return redis.pcall('FCALL', 'echo', '0', 'x') end)";
    c.q(&["RX.LOAD", lib]).ok();
    for f in ["call_rx", "load_rx", "call_eval", "call_fcall"] {
        let r = c.q(&["RX.CALL", f, "0"]);
        assert_eq!(
            r.err_text(),
            Some("ERR This Redis command is not allowed from script"),
            "{f}"
        );
    }
    // EVAL -> RX.CALL: refused by Redis before the module runs (no nested script run).
    let r = c.q(&[
        "EVAL",
        "return redis.pcall('RX.CALL', 'echo', '0', 'x')",
        "0",
    ]);
    assert_eq!(
        r.err_text(),
        Some("ERR This Redis command is not allowed from script")
    );
    assert_eq!(c.q(&["PING"]), Reply::Status("PONG".into()));
    assert_eq!(c.q(&["RX.LIST", "LIBRARYNAME", "zz"]), Reply::Array(vec![]));
}

#[test]
fn library_load_times_out_at_500ms_and_the_server_stays_healthy() {
    let s = Server::start();
    let mut c = s.conn();
    let code = "#!lua name=spin\nwhile true do end";
    let native = c.q(&["FUNCTION", "LOAD", code]);
    let start = Instant::now();
    let rx = c.q(&["RX.LOAD", code]);
    let took = start.elapsed();
    assert_eq!(
        native.err_text(),
        Some("ERR Error registering functions: ERR FUNCTION LOAD timeout")
    );
    assert_eq!(
        rx.err_text(),
        Some("ERR Error registering functions: ERR RX.LOAD timeout")
    );
    assert!(
        took >= Duration::from_millis(450),
        "stopped too early: {took:?}"
    );
    assert_eq!(c.q(&["PING"]), Reply::Status("PONG".into()));
    assert_eq!(c.q(&["RX.LIST"]), Reply::Array(vec![]));
    // The VM is usable afterwards.
    load_both(&mut c);
    assert_eq!(
        c.q(&["RX.CALL", "echo", "0", "ok"]),
        Reply::Bulk(b"ok".to_vec())
    );
}

#[test]
fn memory_bombs_fail_with_an_error_and_leave_the_server_working() {
    let s = Server::start();
    let mut c = s.conn();
    load_both(&mut c);
    let lib = "#!lua name=bombs
redis.register_function('rep', function() return #string.rep('x', 2^30 + 1) end)
redis.register_function('double', function() local s = 'x' for i = 1, 40 do s = s .. s end return #s end)
redis.register_function('table', function() local t = {} for i = 1, 2^40 do t[i] = i end return #t end)";
    c.q(&["RX.LOAD", lib]).ok();
    c.set_read_timeout(Duration::from_secs(120));
    for f in ["rep", "double", "table"] {
        let r = c.q(&["RX.CALL", f, "0"]);
        assert!(r.is_error(), "{f} should fail, got {r:?}");
        assert_eq!(
            c.q(&["RX.CALL", "echo", "0", "still"]),
            Reply::Bulk(b"still".to_vec()),
            "after {f}"
        );
    }
    assert_eq!(c.q(&["PING"]), Reply::Status("PONG".into()));
}

#[test]
fn large_binary_values_round_trip() {
    let s = Server::start();
    let mut c = s.conn();
    load_both(&mut c);
    let mut big = vec![0u8; 32 << 20];
    for (i, b) in big.iter_mut().enumerate() {
        *b = (i * 7 % 256) as u8;
    }
    let r = c.cmd(&[&b"RX.CALL"[..], b"echo", b"0", &big]);
    assert_eq!(r, Reply::Bulk(big.clone()));
    let key = b"k\x00\xff\r\n".to_vec();
    c.cmd(&[&b"RX.CALL"[..], b"w", b"1", &key, &big]).ok();
    assert_eq!(c.cmd(&[&b"GET"[..], &key]), Reply::Bulk(big));
}

#[test]
fn bad_arity_and_numkeys_are_errors() {
    let s = Server::start();
    let mut c = s.conn();
    load_both(&mut c);
    assert_eq!(
        c.q(&["RX.CALL"]).err_text(),
        Some("ERR wrong number of arguments for 'rx.call' command")
    );
    assert_eq!(
        c.q(&["RX.CALL", "echo"]).err_text(),
        Some("ERR wrong number of arguments for 'rx.call' command")
    );
    assert_eq!(
        c.q(&["RX.CALL_RO", "r"]).err_text(),
        Some("ERR wrong number of arguments for 'rx.call_ro' command")
    );
    assert_eq!(
        c.q(&["RX.LOAD"]).err_text(),
        Some("ERR wrong number of arguments for 'rx.load' command")
    );
    assert_eq!(
        c.q(&["RX.DELETE"]).err_text(),
        Some("ERR wrong number of arguments for 'rx.delete' command")
    );
    for (numkeys, want) in [
        ("-1", "ERR Number of keys can't be negative"),
        (
            "3",
            "ERR Number of keys can't be greater than number of args",
        ),
        ("x", "ERR Bad number of keys provided"),
        ("99999999999999999999", "ERR Bad number of keys provided"),
    ] {
        let (n, r) = both(&mut c, false, &["echo", numkeys, "a"]);
        assert_eq!(r.err_text(), Some(want), "numkeys {numkeys}");
        assert_eq!(n, r, "numkeys {numkeys}");
    }
}

#[test]
fn read_only_replica_refuses_writing_functions_and_replicates_libraries_and_writes() {
    let master = Server::start();
    let mut m = master.conn();
    load_both(&mut m);
    let port = master.port().to_string();
    let replica = Server::start_with(&["--replicaof", "127.0.0.1", &port], &[]);
    let mut r = replica.conn();
    wait_until("replica link", Duration::from_secs(10), || {
        info_field(&mut r, "replication", "master_link_status").as_deref() == Some("up")
    });
    // Libraries loaded on the master before the sync: RX.LOAD was propagated... only to
    // replicas attached at the time; a fresh replica gets them with the RDB (next issue).
    // Load again now that the replica is attached, and watch it arrive.
    m.q(&["RX.LOAD", "REPLACE", LIB]).ok();
    wait_until("library on replica", Duration::from_secs(5), || {
        r.q(&["RX.LIST", "LIBRARYNAME", "corelib"])
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });
    // Writes made by a function reach the replica as effects.
    m.q(&["RX.CALL", "w", "1", "k", "v1"]).ok();
    wait_until("write on replica", Duration::from_secs(5), || {
        r.q(&["GET", "k"]) == Reply::Bulk(b"v1".to_vec())
    });
    assert_eq!(r.q(&["GET", "counter"]), Reply::Bulk(b"1".to_vec()));
    // redis.set_repl(REPL_NONE) keeps a write off the replica, for FCALL and RX.CALL alike.
    for (cmd, a, b) in [
        ("FCALL", "n:local", "n:both"),
        ("RX.CALL", "x:local", "x:both"),
    ] {
        assert_eq!(
            m.q(&[cmd, "norepl", "2", a, b]),
            Reply::Bulk(b"done".to_vec())
        );
        wait_until("replicated write", Duration::from_secs(5), || {
            r.q(&["EXISTS", b]) == Reply::Int(1)
        });
        assert_eq!(
            r.q(&["EXISTS", a]),
            Reply::Int(0),
            "{cmd}: REPL_NONE write reached the replica"
        );
        assert_eq!(m.q(&["EXISTS", a]), Reply::Int(1));
    }
    // A function that may write is refused on the read-only replica, exactly as FCALL.
    let (n, x) = both(&mut r, false, &["w", "1", "k", "v2"]);
    assert_eq!(
        x.err_text(),
        Some("READONLY You can't write against a read only replica.")
    );
    assert_eq!(n, x);
    // no-writes functions run there.
    let (n, x) = both(&mut r, true, &["r", "1", "k"]);
    assert_eq!(x, Reply::Bulk(b"v1".to_vec()));
    assert_eq!(n, x);
    let (n, x) = both(&mut r, false, &["r", "1", "k"]);
    assert_eq!(n, x);
}

#[test]
fn stale_replica_runs_only_allow_stale_functions() {
    let s = Server::start();
    let mut c = s.conn();
    load_both(&mut c);
    // Point it at a master that does not exist, and forbid serving stale data.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port().to_string();
    drop(dead);
    c.q(&["CONFIG", "SET", "replica-serve-stale-data", "no"])
        .ok();
    c.q(&["REPLICAOF", "127.0.0.1", &dead_port]).ok();
    let (n, x) = both(&mut c, true, &["r", "1", "k"]);
    assert_eq!(
        x.err_text(),
        Some("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.")
    );
    assert_eq!(n, x);
    let (n, x) = both(&mut c, true, &["stale_ok", "0"]);
    assert_eq!(x, Reply::Bulk(b"served".to_vec()));
    assert_eq!(n, x);
    // An allow-stale function may run, but not a command that a stale replica refuses.
    let (n, x) = both(&mut c, true, &["stale_get", "1", "k"]);
    assert_eq!(
        x.err_text(),
        Some("ERR Can not execute the command on a stale replica")
    );
    assert_eq!(n, x);
    // A script without a shebang is refused before it starts.
    let script = "return redis.call('GET', KEYS[1])";
    let (n, x) = eval_both(&mut c, script, &["1", "k"]);
    assert_eq!(
        x.err_text(),
        Some("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.")
    );
    assert_eq!(n, x);
    // A shebang script flagged allow-stale meets the command check instead.
    let script = "#!lua flags=no-writes,allow-stale\nreturn redis.pcall('GET', KEYS[1])";
    let (n, x) = eval_both(&mut c, script, &["1", "k"]);
    assert_eq!(
        x.err_text(),
        Some("ERR Can not execute the command on a stale replica")
    );
    assert_eq!(n, x);
    // Commands allowed on a stale replica still run.
    let script = "#!lua flags=no-writes,allow-stale\nreturn redis.call('ECHO', 'still')";
    let (n, x) = eval_both(&mut c, script, &["0"]);
    assert_eq!(x, Reply::Bulk(b"still".to_vec()));
    assert_eq!(n, x);
}

/// Runs `EVAL` and `RX.EVAL` with the same arguments; returns both.
fn eval_both(c: &mut Conn, script: &str, args: &[&str]) -> (Reply, Reply) {
    let mut n = vec!["EVAL", script];
    n.extend_from_slice(args);
    let mut r = vec!["RX.EVAL", script];
    r.extend_from_slice(args);
    (c.q(&n), c.q(&r))
}

#[test]
fn scripts_without_shebang_meet_the_write_gates_at_their_first_write() {
    let s = Server::start();
    let mut c = s.conn();
    c.q(&["CONFIG", "SET", "min-replicas-to-write", "1"]).ok();
    c.q(&["CONFIG", "SET", "min-replicas-max-lag", "10"]).ok();
    std::thread::sleep(Duration::from_millis(150));
    // Reads run; the first write is refused with the server's own text.
    let script = "local v = redis.call('GET', KEYS[1]) return redis.pcall('SET', KEYS[1], 'x')";
    let (n, x) = eval_both(&mut c, script, &["1", "k"]);
    assert_eq!(
        x.err_text(),
        Some("NOREPLICAS Not enough good replicas to write.")
    );
    assert_eq!(n, x);
    let (n, x) = eval_both(
        &mut c,
        "return redis.call('SET', KEYS[1], 'x')",
        &["1", "k"],
    );
    assert_eq!(n, x);
    assert_eq!(c.q(&["EXISTS", "k"]), Reply::Int(0));
    // A user who may not run the command gets the ACL refusal first: the script engine
    // checks the ACL before the write gates.
    c.q(&["ACL", "SETUSER", "u", "on", "nopass", "~*", "+@all", "-set"])
        .ok();
    let mut u = s.conn();
    u.q(&["AUTH", "u", "x"]).ok();
    let (n, x) = eval_both(
        &mut u,
        "return redis.pcall('SET', KEYS[1], 'x')",
        &["1", "k"],
    );
    let text = x.err_text().unwrap_or_default().to_string();
    assert!(
        text.contains("ACL failure") || text.contains("can't run this command"),
        "{x:?}"
    );
    assert_eq!(n, x);
    c.q(&["CONFIG", "SET", "min-replicas-to-write", "0"]).ok();
    // A read-only replica: the write is refused with READONLY.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port().to_string();
    drop(dead);
    c.q(&["REPLICAOF", "127.0.0.1", &dead_port]).ok();
    let (n, x) = eval_both(&mut c, script, &["1", "k"]);
    assert_eq!(
        x.err_text(),
        Some("READONLY You can't write against a read only replica.")
    );
    assert_eq!(n, x);
    // Commands scripts may never run keep their own text.
    let (n, x) = eval_both(&mut c, "return redis.pcall('WATCH', 'k')", &["0"]);
    assert_eq!(
        x.err_text(),
        Some("ERR This Redis command is not allowed from script")
    );
    assert_eq!(n, x);
}

#[test]
fn min_replicas_refuses_writing_functions_like_fcall() {
    let s = Server::start();
    let mut c = s.conn();
    load_both(&mut c);
    c.q(&["CONFIG", "SET", "min-replicas-to-write", "1"]).ok();
    c.q(&["CONFIG", "SET", "min-replicas-max-lag", "10"]).ok();
    // The write gate reading is cached briefly; wait it out.
    std::thread::sleep(Duration::from_millis(150));
    let (n, x) = both(&mut c, false, &["w", "1", "k", "v"]);
    assert_eq!(
        x.err_text(),
        Some("NOREPLICAS Not enough good replicas to write.")
    );
    assert_eq!(n, x);
    let (n, x) = both(&mut c, false, &["r", "1", "k"]);
    assert_eq!(n, x);
    assert!(!x.is_error());
    c.q(&["CONFIG", "SET", "min-replicas-to-write", "0"]).ok();
    std::thread::sleep(Duration::from_millis(150));
    let (n, x) = both(&mut c, false, &["w", "1", "k", "v"]);
    assert!(!n.is_error() && !x.is_error(), "{n:?} {x:?}");
}

#[test]
fn disk_errors_refuse_writing_functions_like_fcall() {
    let s = Server::start_with(&["--enable-protected-configs", "yes"], &[]);
    let mut c = s.conn();
    load_both(&mut c);
    // Make BGSAVE fail: the RDB file name is an existing directory.
    std::fs::create_dir_all(s.dir().join("blocked.rdb")).unwrap();
    c.q(&["CONFIG", "SET", "dbfilename", "blocked.rdb"]).ok();
    c.q(&["CONFIG", "SET", "save", "3600 1"]).ok();
    c.q(&["BGSAVE"]).ok();
    wait_until("failed bgsave", Duration::from_secs(10), || {
        info_field(&mut c, "persistence", "rdb_last_bgsave_status").as_deref() == Some("err")
    });
    std::thread::sleep(Duration::from_millis(150));
    let (n, x) = both(&mut c, false, &["w", "1", "k", "v"]);
    assert!(
        x.err_text()
            .unwrap_or_default()
            .contains("is configured to save RDB snapshots"),
        "{x:?}"
    );
    assert_eq!(n, x);
    let (n, x) = both(&mut c, true, &["r", "1", "k"]);
    assert_eq!(n, x);
    assert!(!x.is_error());
    // Valkey names itself unless extended-redis-compatibility is on, read as the reply is
    // made (elsewhere the config does not exist and nothing changes).
    if c.q(&["CONFIG", "SET", "extended-redis-compatibility", "yes"]) == Reply::Status("OK".into())
    {
        std::thread::sleep(Duration::from_millis(150));
        let (n, x) = both(&mut c, false, &["w", "1", "k", "v"]);
        assert!(
            x.err_text()
                .unwrap_or_default()
                .starts_with("MISCONF Redis"),
            "{x:?}"
        );
        assert_eq!(n, x);
    }
}

#[test]
fn failed_replace_keeps_the_old_library_callable() {
    let s = Server::start();
    let mut c = s.conn();
    load_both(&mut c);
    for bad in [
        "#!lua name=corelib\nredis.register_function('w2', function() return 1 end) error('late failure')",
        "#!lua name=corelib\nsyntax error here",
        "#!lua name=corelib\nlocal x = 1",
        "#!lua name=corelib\nwhile true do end",
    ] {
        let n = c.q(&["FUNCTION", "LOAD", "REPLACE", bad]);
        let r = c.q(&["RX.LOAD", "REPLACE", bad]);
        assert!(r.is_error() && n.is_error(), "{bad}: {r:?}");
        assert_eq!(c.q(&["RX.CALL", "echo", "0", "alive"]), Reply::Bulk(b"alive".to_vec()), "{bad}");
        assert_eq!(c.q(&["RX.CALL", "w2", "0"]).err_text(), Some("ERR Function not found"));
    }
}

/// Native Redis keeps one set of cjson settings for every function and script, so one
/// library (or one EVAL) can change how every other encodes and decodes. In RX each library
/// and each script has its own: before the fix, `cjson.decode_max_depth(1)` in one script
/// broke the decoding of every library until a restart.
#[test]
fn cjson_settings_belong_to_each_library_and_script() {
    let s = Server::start();
    let mut c = s.conn();
    let precise = "#!lua name=precise
redis.register_function('enc', function() return cjson.encode({3.14159}) end)
redis.register_function('dec', function() return cjson.decode('[[1]]')[1][1] end)";
    let coarse = "#!lua name=coarse
redis.register_function('coarse_init', function() return cjson.encode_number_precision(1) end)
redis.register_function('coarse_enc', function() return cjson.encode({3.14159}) end)
redis.register_function('coarse_depth', function(keys, args) return cjson.decode_max_depth(tonumber(args[1])) end)
redis.register_function('coarse_dec', function() return cjson.decode('[[1]]')[1][1] end)";
    c.q(&["RX.LOAD", precise]).ok();
    c.q(&["RX.LOAD", coarse]).ok();
    let bulk = |s: &str| Reply::Bulk(s.as_bytes().to_vec());
    // A library's setting holds for its own functions only (a library body cannot reach
    // cjson, as in Redis).
    assert_eq!(c.q(&["RX.CALL", "coarse_init", "0"]), Reply::Int(1));
    assert_eq!(c.q(&["RX.CALL", "coarse_enc", "0"]), bulk("[3]"));
    assert_eq!(c.q(&["RX.CALL", "enc", "0"]), bulk("[3.14159]"));
    // A setting made in one function holds for the library's other functions, across calls.
    assert_eq!(c.q(&["RX.CALL", "coarse_depth", "0", "1"]), Reply::Int(1));
    let refused = c.q(&["RX.CALL", "coarse_dec", "0"]);
    assert!(
        refused
            .err_text()
            .unwrap()
            .contains("Found too many nested data structures"),
        "{refused:?}"
    );
    assert_eq!(c.q(&["RX.CALL", "dec", "0"]), Reply::Int(1));
    // A script's settings are its own too.
    assert_eq!(
        c.q(&["RX.EVAL_RO", "cjson.decode_max_depth(1) return 1", "0"]),
        Reply::Int(1)
    );
    assert_eq!(c.q(&["RX.CALL", "dec", "0"]), Reply::Int(1));
    assert_eq!(
        c.q(&[
            "RX.EVAL",
            "return cjson.encode({0.5, cjson.decode('[[2]]')[1][1]})",
            "0"
        ]),
        bulk("[0.5,2]")
    );
    // A replaced library starts from the defaults again.
    c.q(&["RX.LOAD", "REPLACE", coarse]).ok();
    assert_eq!(c.q(&["RX.CALL", "coarse_enc", "0"]), bulk("[3.14159]"));
    assert_eq!(c.q(&["RX.CALL", "coarse_dec", "0"]), Reply::Int(1));
}

/// The test module `rmcall` (examples/rm_call_module.rs): calls commands through
/// RedisModule_Call as any module may.
fn rm_call_module() -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/release/examples/librm_call_module.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --release --examples` first",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

/// RX called by another module through RedisModule_Call: its functions run and write
/// (the calling module's client has no ACL user, so nothing is checked against one, as for
/// that module's own calls); busy ones are killable outside a transaction and stopped
/// inside MULTI/EXEC or under a script, where yielding would abort the server. Before the
/// fix, every `redis.call` of such a function failed with `errno 95`.
#[test]
fn rx_called_from_another_module_runs_and_never_yields_where_it_must_not() {
    let module = rm_call_module();
    let s = Server::start_with(
        &["--busy-reply-threshold", "100", "--loadmodule", &module],
        &[],
    );
    let mut c = s.conn();
    c.q(&[
        "RX.LOAD",
        "#!lua name=m\nredis.register_function('spin', function() while true do end end)\nredis.register_function('w', function(k) redis.call('SET', k[1], 'v') return redis.call('GET', k[1]) end)",
    ])
    .ok();
    let bulk = |s: &str| Reply::Bulk(s.as_bytes().to_vec());
    assert_eq!(c.q(&["rmcall.call", "RX.CALL", "w", "1", "k"]), bulk("v"));
    assert_eq!(c.q(&["GET", "k"]), bulk("v"));

    // Outside a transaction: busy, and RX.KILL stops it.
    let port = s.port();
    let spin = std::thread::spawn(move || {
        let mut c = Conn::connect(port);
        c.q(&["rmcall.call", "RX.CALL", "spin", "0"])
    });
    let mut probe = s.conn();
    wait_until("BUSY", Duration::from_secs(5), || {
        probe.q(&["PING"]).is_error()
    });
    assert_eq!(probe.q(&["RX.KILL"]), Reply::Status("OK".into()));
    let killed = spin.join().unwrap();
    assert!(
        killed
            .err_text()
            .unwrap_or_default()
            .starts_with("ERR Script killed by user with RX.KILL..."),
        "{killed:?}"
    );

    // Inside MULTI/EXEC and under a script: stopped at the threshold, server up.
    c.q(&["MULTI"]).ok();
    c.q(&["rmcall.call", "RX.CALL", "spin", "0"]);
    let exec = c.q(&["EXEC"]);
    let stopped = exec.as_array().unwrap()[0]
        .err_text()
        .unwrap_or_default()
        .to_string();
    assert!(
        stopped.contains("busy-reply-threshold (100 ms) inside MULTI/EXEC"),
        "{stopped}"
    );
    let under_script = c.q(&[
        "EVAL",
        "return redis.call('rmcall.call', 'RX.CALL', 'spin', '0')",
        "0",
    ]);
    assert!(
        under_script
            .err_text()
            .unwrap_or_default()
            .contains("busy-reply-threshold (100 ms) inside a script"),
        "{under_script:?}"
    );
    assert_eq!(c.q(&["PING"]), Reply::Status("PONG".into()));
}

#[test]
fn a_panic_under_redis_call_is_an_error_reply_and_the_server_lives() {
    // RX_TEST_PANIC_COMMAND makes redis.call panic inside RX's own code for that command:
    // a panic that reached LuaJIT would abort the server.
    let s = Server::start_with_env(&[("RX_TEST_PANIC_COMMAND", "echo")]);
    let mut c = s.conn();
    c.q(&["RX.LOAD", "REPLACE", LIB]).ok();
    let reply = c.q(&["RX.EVAL", "return redis.call('ECHO', 'x')", "0"]);
    let text = reply.err_text().unwrap_or_default().to_string();
    assert!(
        text.starts_with("ERR RX internal error (panic) in redis.call"),
        "{reply:?}"
    );
    // pcall sees it as an error table; the script goes on.
    let caught = c.q(&[
        "RX.EVAL",
        "local r = redis.pcall('echo', 'x') return {type(r), r.err ~= nil, redis.call('PING')}",
        "0",
    ]);
    assert_eq!(
        caught,
        Reply::Array(vec![
            Reply::Bulk(b"table".to_vec()),
            Reply::Int(1),
            Reply::Status("PONG".into()),
        ])
    );
    // Functions too, and the server answers everything else as before.
    assert_eq!(
        c.q(&["RX.CALL", "echo", "0", "v"]),
        Reply::Bulk(b"v".to_vec())
    );
    for _ in 0..3 {
        assert!(c
            .q(&["RX.EVAL", "return redis.call('ECHO', 'x')", "0"])
            .is_error());
    }
    assert_eq!(c.q(&["PING"]), Reply::Status("PONG".into()));
    assert_eq!(
        c.q(&["RX.EVAL", "return redis.call('SET', 'k', 'v')", "0"]),
        Reply::Status("OK".into())
    );
    let log = std::fs::read_to_string(s.dir().join("redis.log")).unwrap_or_default();
    assert!(
        log.contains("RX internal error (panic) in redis.call"),
        "{log}"
    );
}

/// `MODULE LIST` shows the crate's version (1.2.3 as 10203), which `make dist` names its
/// tarball after.
#[test]
fn module_list_shows_the_crate_version() {
    let s = Server::start();
    let list = s.conn().q(&["MODULE", "LIST"]);
    let rx = list
        .as_array()
        .expect("MODULE LIST is an array")
        .iter()
        .find(|m| common::stdlib::text_field(m, "name") == "rx")
        .expect("rx is listed");
    let v: Vec<i64> = env!("CARGO_PKG_VERSION")
        .split(['.', '-', '+'])
        .take(3)
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        common::stdlib::int_field(rx, "ver"),
        v[0] * 10_000 + v[1] * 100 + v[2]
    );
}
