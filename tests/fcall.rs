//! `rx.fcall`/`rx.pfcall`: one library's function calling another's inside the same run.
//! Differential first: `rx.fcall(f, keys, args)` returned by a wrapper must give the same
//! raw reply and keyspace as the client calling `RX.CALL f` directly, in RESP2 and RESP3,
//! errors included, for a corpus of callees (the standard library's among them). Then the
//! rules: flags, depth, slots in a cluster, kill during a nested call, replication, and
//! statistics.

mod common;

use common::cluster::{key_slot, Cluster};
use common::stdlib::{field, int_field};
use common::{info_field, parse_reply, wait_until, Conn, Reply, Server};

/// A map reply's pairs in key order.
fn unordered(r: Reply) -> Reply {
    match r {
        Reply::Map(mut pairs) => {
            pairs.sort_by_key(|(k, _)| format!("{k:?}"));
            Reply::Map(pairs)
        }
        other => other,
    }
}
use std::time::Duration;

/// Callees: every reply type, errors raised and returned, writes, reads of KEYS/ARGV.
const CALLEES: &str = r#"#!lua name=callees
redis.register_function('c_int', function(keys, args) return 42 end)
redis.register_function('c_float', function(keys, args) return 3.99 end)
redis.register_function('c_str', function(keys, args) return 'text' end)
redis.register_function('c_bool_t', function(keys, args) return true end)
redis.register_function('c_bool_f', function(keys, args) return false end)
redis.register_function('c_nil', function(keys, args) return nil end)
redis.register_function('c_nested', function(keys, args) return {1, 'two', {3, {'four'}}, false, 5} end)
redis.register_function('c_status', function(keys, args) return redis.status_reply('FINE') end)
redis.register_function('c_err_reply', function(keys, args) return redis.error_reply('MYERR went wrong') end)
redis.register_function('c_err_raised', function(keys, args) error('raised here') end)
redis.register_function('c_err_table', function(keys, args) error({err = 'CUSTOM table error'}) end)
redis.register_function('c_cmd_err', function(keys, args) return redis.call('INCR', keys[1]) end)
redis.register_function('c_map', function(keys, args) redis.setresp(3) return {map = {a = 1, b = 'x'}} end)
redis.register_function('c_set', function(keys, args) return {set = {x = true}} end)
redis.register_function('c_double', function(keys, args) return {double = 1.5} end)
redis.register_function('c_big', function(keys, args) return {big_number = '123456789012345678901234567890'} end)
redis.register_function('c_hgetall', function(keys, args) redis.setresp(3) return redis.call('HGETALL', keys[1]) end)
redis.register_function('c_echo', function(keys, args) return {keys, args} end)
redis.register_function('c_write', function(keys, args)
  redis.call('SET', keys[1], args[1])
  redis.call('RPUSH', keys[2], args[1], args[2])
  return redis.call('LRANGE', keys[2], 0, -1)
end)
redis.register_function{function_name = 'c_read', callback = function(keys, args) return redis.call('GET', keys[1]) end, flags = {'no-writes'}}
"#;

/// Wrappers: return what the callee replied (`via` raises errors, `pvia` returns them),
/// and the same after `redis.setresp(3)`, so RESP3 types make the round trip.
const WRAPPERS: &str = r#"#!lua name=wrappers
local function rest(args) return {unpack(args, 2)} end
redis.register_function('via', function(keys, args) return rx.fcall(args[1], keys, rest(args)) end)
redis.register_function('pvia', function(keys, args) return rx.pfcall(args[1], keys, rest(args)) end)
redis.register_function('via3', function(keys, args) redis.setresp(3) return rx.fcall(args[1], keys, rest(args)) end)
redis.register_function{function_name = 'via_ro', callback = function(keys, args) return rx.fcall(args[1], keys, rest(args)) end, flags = {'no-writes'}}
redis.register_function('depth', function(keys, args)
  local n = tonumber(args[1])
  if n <= 1 then return 1 end
  return 1 + rx.fcall('depth', {}, {n - 1})
end)
redis.register_function('spin', function(keys, args) while true do end end)
redis.register_function('call_spin', function(keys, args) return rx.fcall('spin') end)
redis.register_function('bad_args', function(keys, args)
  local cases = {
    function() return rx.fcall() end,
    function() return rx.fcall(42) end,
    function() return rx.fcall('c_int', 'k') end,
    function() return rx.fcall('c_int', {}, 7) end,
    function() return rx.fcall('c_int', {{}}) end,
    function() return rx.fcall('c_int', {}, {true}) end,
    function() return rx.pfcall('nope') end,
  }
  local out = {}
  for i, f in ipairs(cases) do
    local ok, e = pcall(f)
    out[i] = ok and (type(e) == 'table' and e.err or tostring(e)) or (type(e) == 'table' and e.err or tostring(e))
  end
  return out
end)
"#;

fn start() -> Server {
    let s = Server::start_with(&[], &["stdlib", "counter,lock,cache"]);
    let mut c = s.conn();
    c.q(&["RX.LOAD", CALLEES]).ok();
    c.q(&["RX.LOAD", WRAPPERS]).ok();
    s
}

/// (callee, keys, args), each run on a fresh keyspace holding the same seed keys.
fn corpus() -> Vec<(&'static str, Vec<&'static str>, Vec<&'static str>)> {
    vec![
        ("c_int", vec![], vec![]),
        ("c_float", vec![], vec![]),
        ("c_str", vec![], vec![]),
        ("c_bool_t", vec![], vec![]),
        ("c_bool_f", vec![], vec![]),
        ("c_nil", vec![], vec![]),
        ("c_nested", vec![], vec![]),
        ("c_status", vec![], vec![]),
        ("c_err_reply", vec![], vec![]),
        ("c_err_raised", vec![], vec![]),
        ("c_err_table", vec![], vec![]),
        ("c_cmd_err", vec!["str"], vec![]),
        ("c_map", vec![], vec![]),
        ("c_set", vec![], vec![]),
        ("c_double", vec![], vec![]),
        ("c_big", vec![], vec![]),
        ("c_hgetall", vec!["h"], vec![]),
        ("c_echo", vec!["k1", "k2"], vec!["a", "", "3"]),
        ("c_write", vec!["w1", "w2"], vec!["v", "u"]),
        ("c_read", vec!["str"], vec![]),
        ("counter_incr", vec!["cnt"], vec!["5", "100"]),
        ("counter_incr", vec!["cnt"], vec!["0", "100"]),
        ("lock_acquire", vec!["lk"], vec!["owner1", "5000"]),
        ("cache_set", vec!["ce", "cd"], vec!["value", "60000"]),
    ]
}

fn seed(c: &mut Conn) {
    c.q(&["FLUSHALL"]).ok();
    c.q(&["SET", "str", "hello"]).ok();
    c.q(&["HSET", "h", "f1", "v1", "f2", "v2"]).ok();
    c.q(&["SET", "cnt", "7"]).ok();
}

/// Every key with its type and value, sorted (DEBUG DIGEST does not see TTLs' exact values).
fn keyspace(c: &mut Conn) -> Vec<(String, Vec<u8>)> {
    let mut keys: Vec<String> = c
        .q(&["KEYS", "*"])
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let dump = c.raw(&["DUMP", &k]);
            let ttl = c.q(&["PTTL", &k]).as_int().unwrap() > 0;
            (format!("{k} ttl={ttl}"), dump)
        })
        .collect()
}

#[test]
fn nested_calls_reply_exactly_as_direct_calls_in_resp2_and_resp3() {
    let s = start();
    let mut c = s.conn();
    let mut compared = 0;
    for resp in ["2", "3"] {
        c.q(&["HELLO", resp]);
        for (callee, keys, args) in corpus() {
            let numkeys = keys.len().to_string();
            let mut direct = vec!["RX.CALL", callee, &numkeys];
            direct.extend(keys.iter());
            direct.extend(args.iter());
            seed(&mut c);
            let want = c.raw(&direct);
            let want_keys = keyspace(&mut c);
            let wrappers: &[&str] = if resp == "2" {
                &["via", "pvia"]
            } else {
                &["via3"]
            };
            for wrapper in wrappers {
                let mut nested = vec!["RX.CALL", wrapper, &numkeys];
                nested.extend(keys.iter());
                nested.push(callee);
                nested.extend(args.iter());
                seed(&mut c);
                let got = c.raw(&nested);
                if *wrapper == "via3" && callee == "c_nested" {
                    // RESP3's null comes back to Lua as nil, as from redis.call after
                    // redis.setresp(3): inside an array it ends the array (README).
                    assert_eq!(
                        got,
                        b"*3\r\n:1\r\n$3\r\ntwo\r\n*2\r\n:3\r\n*1\r\n$4\r\nfour\r\n"
                    );
                    compared += 1;
                    continue;
                }
                // A map passes through a Lua table, whose iteration order is its own
                // (README): maps compare as sets of pairs, everything else byte for byte.
                if got != want && got.starts_with(b"%") {
                    assert_eq!(
                        unordered(parse_reply(&got)),
                        unordered(parse_reply(&want)),
                        "RESP{resp} {wrapper} {callee}"
                    );
                } else {
                    assert_eq!(
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&want),
                        "RESP{resp} {wrapper} {callee} {keys:?} {args:?}"
                    );
                }
                assert_eq!(
                    keyspace(&mut c),
                    want_keys,
                    "keyspace: RESP{resp} {wrapper} {callee}"
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, corpus().len() * 3);
    // From an EVAL script too.
    seed(&mut c);
    c.q(&["HELLO", "2"]);
    assert_eq!(
        c.q(&[
            "RX.EVAL",
            "return rx.fcall('c_echo', {KEYS[1]}, {ARGV[1], 5})",
            "1",
            "k",
            "a"
        ]),
        Reply::Array(vec![
            Reply::Array(vec![Reply::Bulk(b"k".to_vec())]),
            Reply::Array(vec![Reply::Bulk(b"a".to_vec()), Reply::Bulk(b"5".to_vec())]),
        ])
    );
}

#[test]
fn bad_arguments_depth_and_missing_functions_are_clear_errors() {
    let s = start();
    let mut c = s.conn();
    let r = c.q(&["RX.CALL", "bad_args", "0"]);
    let texts: Vec<String> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        texts[0].contains("rx.fcall needs a function name"),
        "{texts:?}"
    );
    assert!(
        texts[1].contains("rx.fcall needs a function name"),
        "{texts:?}"
    );
    assert!(
        texts[2].contains("rx.fcall: keys must be a table"),
        "{texts:?}"
    );
    assert!(
        texts[3].contains("rx.fcall: args must be a table"),
        "{texts:?}"
    );
    assert!(
        texts[4].contains("rx.fcall: keys[1] must be a string or a number"),
        "{texts:?}"
    );
    assert!(
        texts[5].contains("rx.fcall: args[1] must be a string or a number"),
        "{texts:?}"
    );
    assert_eq!(texts[6], "ERR Function not found");
    // Recursion works up to the bound: 32 calls deep (33 runs), not one more.
    assert_eq!(c.q(&["RX.CALL", "depth", "0", "33"]).as_int(), Some(33));
    let e = c.q(&["RX.CALL", "depth", "0", "34"]);
    assert!(
        e.err_text()
            .unwrap()
            .starts_with("ERR rx.fcall: calls nested more than 32 deep"),
        "{e:?}"
    );
    // `rx` is read-only, like `redis`.
    let e = c.q(&["RX.EVAL", "rx.fcall = nil", "0"]);
    assert!(
        e.err_text()
            .unwrap()
            .contains("Attempt to modify a readonly table"),
        "{e:?}"
    );
}

#[test]
fn read_only_runs_call_only_no_writes_functions_and_server_state_is_checked() {
    let s = start();
    let mut c = s.conn();
    c.q(&["SET", "str", "v"]).ok();
    let e = c.q(&["RX.CALL", "via_ro", "2", "w1", "w2", "c_write", "x", "y"]);
    assert!(
        e.err_text()
            .unwrap()
            .starts_with("ERR rx.fcall: function 'c_write' may write"),
        "{e:?}"
    );
    assert_eq!(
        c.q(&["EXISTS", "w1"]).as_int(),
        Some(0),
        "refused before the callee ran"
    );
    assert_eq!(
        c.q(&["RX.CALL", "via_ro", "1", "str", "c_read"]).as_str(),
        Some("v")
    );
    let e = c.q(&["RX.CALL_RO", "via", "2", "w1", "w2", "c_write", "x", "y"]);
    assert!(e.is_error(), "{e:?}");
    let e = c.q(&[
        "RX.EVAL_RO",
        "return rx.fcall('c_write', {KEYS[1], KEYS[2]}, {'a', 'b'})",
        "2",
        "w1",
        "w2",
    ]);
    assert!(e.err_text().unwrap().contains("may write"), "{e:?}");
    assert_eq!(
        c.q(&[
            "RX.EVAL_RO",
            "return rx.fcall('c_read', {KEYS[1]}, {})",
            "1",
            "str"
        ])
        .as_str(),
        Some("v")
    );
    // Over maxmemory, a callee without allow-oom is refused as a direct call would be.
    c.q(&["CONFIG", "SET", "maxmemory", "1"]).ok();
    let direct = c.q(&["RX.CALL", "c_write", "2", "w1", "w2", "x", "y"]);
    let nested = c.q(&[
        "RX.EVAL",
        "#!lua flags=allow-oom\nreturn rx.fcall('c_write', {KEYS[1], KEYS[2]}, {'x', 'y'})",
        "2",
        "w1",
        "w2",
    ]);
    c.q(&["CONFIG", "SET", "maxmemory", "0"]).ok();
    assert!(direct.err_text().unwrap().starts_with("OOM "), "{direct:?}");
    assert!(nested.err_text().unwrap().starts_with("OOM "), "{nested:?}");
}

#[test]
fn statistics_count_nested_calls_and_a_kill_stops_the_whole_run() {
    let s = Server::start_with(&["--busy-reply-threshold", "100"], &[]);
    let mut c = s.conn();
    c.q(&["RX.LOAD", CALLEES]).ok();
    c.q(&["RX.LOAD", WRAPPERS]).ok();
    for _ in 0..3 {
        c.q(&["RX.CALL", "via", "0", "c_int"]);
    }
    c.q(&["RX.CALL", "c_int", "0"]);
    let stats = c.q(&["RX.STATS", "FUNCTION", "c_int"]);
    let f = field(&field(&stats, "functions"), "c_int");
    assert_eq!(int_field(&f, "calls"), 4);
    assert_eq!(int_field(&f, "nested_calls"), 3);
    let via = field(
        &field(&c.q(&["RX.STATS", "FUNCTION", "via"]), "functions"),
        "via",
    );
    assert_eq!(int_field(&via, "calls"), 3);
    assert_eq!(int_field(&via, "nested_calls"), 0);
    // A callee spinning forever: one run, one BUSY, one kill.
    let port = s.port();
    let spinner = std::thread::spawn(move || Conn::connect(port).q(&["RX.CALL", "call_spin", "0"]));
    let mut other = s.conn();
    wait_until("BUSY from the nested spin", Duration::from_secs(10), || {
        other
            .q(&["PING"])
            .err_text()
            .is_some_and(|e| e.starts_with("BUSY"))
    });
    assert_eq!(other.q(&["RX.KILL"]), Reply::Status("OK".into()));
    let r = spinner.join().unwrap();
    assert!(
        r.err_text().unwrap().contains("Script killed by user"),
        "{r:?}"
    );
    assert_eq!(other.q(&["PING"]), Reply::Status("PONG".into()));
}

#[test]
fn effects_of_nested_calls_reach_replicas_once() {
    let m = Server::start_with(&["--repl-diskless-sync-delay", "0"], &[]);
    let mut mc = m.conn();
    mc.q(&["RX.LOAD", CALLEES]).ok();
    mc.q(&["RX.LOAD", WRAPPERS]).ok();
    let port = m.port().to_string();
    let r = Server::start_with(&["--replicaof", "127.0.0.1", &port], &[]);
    let mut rc = r.conn();
    mc.q(&["RX.CALL", "via", "2", "w1", "w2", "c_write", "x", "y"]);
    mc.q(&["RX.CALL", "via", "2", "w1", "w2", "c_write", "z", "q"]);
    wait_until("the replica to catch up", Duration::from_secs(30), || {
        info_field(&mut rc, "replication", "master_link_status").as_deref() == Some("up")
            && info_field(&mut mc, "replication", "master_repl_offset")
                == info_field(&mut rc, "replication", "master_repl_offset")
    });
    assert_eq!(rc.q(&["GET", "w1"]).as_str(), Some("z"));
    assert_eq!(
        rc.q(&["LRANGE", "w2", "0", "-1"]),
        mc.q(&["LRANGE", "w2", "0", "-1"])
    );
    assert_eq!(
        rc.q(&["LLEN", "w2"]).as_int(),
        Some(4),
        "each nested write replicated once"
    );
}

#[test]
fn in_a_cluster_the_callees_keys_must_share_the_callers_slot() {
    let cluster = Cluster::start(3, 0);
    // Keys with one hash tag share a slot; route the call to the node that serves it.
    let (a, b, other) = ("{t}a", "{t}b", "elsewhere");
    assert_ne!(key_slot(a.as_bytes()), key_slot(other.as_bytes()));
    let owner = cluster.owner_of(key_slot(a.as_bytes()));
    let mut c = cluster.nodes[owner].conn();
    c.q(&["RX.LOAD", CALLEES]).ok();
    c.q(&["RX.LOAD", WRAPPERS]).ok();
    wait_until(
        "the libraries on every node",
        Duration::from_secs(30),
        || {
            cluster.nodes.iter().all(|n| {
                !n.conn()
                    .q(&["RX.LIST", "LIBRARYNAME", "wrappers"])
                    .as_array()
                    .unwrap()
                    .is_empty()
            })
        },
    );
    let ok = c.q(&["RX.CALL", "via", "2", a, b, "c_write", "x", "y"]);
    assert_eq!(ok.as_array().map(|v| v.len()), Some(2), "{ok:?}");
    let cross = c.q(&[
        "RX.EVAL",
        "return rx.fcall('c_write', {KEYS[1], ARGV[1]}, {'x', 'y'})",
        "1",
        a,
        other,
    ]);
    assert!(
        cross
            .err_text()
            .is_some_and(|e| e.contains("keys that do not hash to the same slot")
                || e.contains("non local key")),
        "{cross:?}"
    );
    let allowed = c.q(&[
        "RX.EVAL",
        "#!lua flags=allow-cross-slot-keys\nreturn rx.fcall('c_echo', {ARGV[1]}, {})",
        "1",
        a,
        b,
    ]);
    assert!(!allowed.is_error(), "{allowed:?}");
}
