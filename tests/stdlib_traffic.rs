//! Tests of the bundled traffic libraries `lua-stdlib/{cache,ratelimit,queue}.lua`.
//!
//! Each library is loaded unchanged twice on one server: natively (`FUNCTION LOAD`) and
//! into RX (`RX.LOAD`). Every scenario runs through `FCALL` and `RX.CALL`, in RESP2 and
//! RESP3, on a flushed dataset each time; the replies (maps compared as field -> value)
//! and the resulting datasets must agree. Time-dependent functions get the documented
//! `now` override so their replies are exact.

mod common;

use common::stdlib::{call_function, load_natively_and_into_rx};
use common::{Conn, Reply, Server};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const CACHE: &str = include_str!("../lua-stdlib/cache.lua");
const RATELIMIT: &str = include_str!("../lua-stdlib/ratelimit.lua");
const QUEUE: &str = include_str!("../lua-stdlib/queue.lua");

const NO: &[&str] = &[];

const LIBS: [(&str, &str); 3] = [("cache", CACHE), ("ratelimit", RATELIMIT), ("queue", QUEUE)];

type Map = BTreeMap<String, Reply>;
type Out = Result<Map, String>;

fn start() -> (Server, Conn) {
    let s = Server::start();
    let mut c = s.conn();
    load_natively_and_into_rx(&mut c, &LIBS);
    (s, c)
}

/// A map reply (RESP3 map or RESP2 flat field/value array) as field -> value.
fn norm(r: Reply) -> Out {
    let pairs: Vec<(Reply, Reply)> = match r {
        Reply::Error(e) => return Err(e),
        Reply::Map(p) => p,
        Reply::Array(v) => {
            assert!(v.len() % 2 == 0, "odd flat map: {:?}", v);
            let mut it = v.into_iter();
            let mut p = Vec::new();
            while let (Some(k), Some(val)) = (it.next(), it.next()) {
                p.push((k, val));
            }
            p
        }
        other => panic!("expected a map reply, got {:?}", other),
    };
    let mut m = Map::new();
    for (k, v) in pairs {
        let k = k.as_str().expect("map field name").to_string();
        assert!(m.insert(k.clone(), v).is_none(), "duplicate field {k}");
    }
    Ok(m)
}

fn int(m: &Map, f: &str) -> i64 {
    m.get(f)
        .and_then(|v| v.as_int())
        .unwrap_or_else(|| panic!("field {f} is not an integer in {:?}", m))
}

fn strs(m: &Map, f: &str) -> Vec<String> {
    m.get(f)
        .and_then(|v| v.as_array())
        .unwrap_or_else(|| panic!("field {f} is not an array in {:?}", m))
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

fn ok(o: &Out) -> &Map {
    o.as_ref()
        .unwrap_or_else(|e| panic!("unexpected error {e}"))
}

/// Everything in the dataset except the TTL values: key -> "type: contents [ttl]".
fn snapshot(c: &mut Conn) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let keys = c.q(&["KEYS", "*"]);
    for k in keys.as_array().unwrap() {
        let k = k.as_str().unwrap().to_string();
        let t = c.q(&["TYPE", &k]).as_str().unwrap().to_string();
        let body = match t.as_str() {
            "string" => format!(
                "{:?}",
                c.q(&["GET", &k]).as_str().unwrap_or("?").to_string()
            ),
            "hash" => {
                let v = c.q(&["HGETALL", &k]);
                let v = v.as_array().unwrap();
                let mut p: Vec<(String, String)> = v
                    .chunks(2)
                    .map(|x| (x[0].as_str().unwrap().into(), x[1].as_str().unwrap().into()))
                    .collect();
                p.sort();
                format!("{:?}", p)
            }
            "zset" => {
                let v = c.q(&["ZRANGE", &k, "0", "-1", "WITHSCORES"]);
                let p: Vec<(String, String)> = v
                    .as_array()
                    .unwrap()
                    .chunks(2)
                    .map(|x| (x[0].as_str().unwrap().into(), x[1].as_str().unwrap().into()))
                    .collect();
                format!("{:?}", p)
            }
            "set" => {
                let v = c.q(&["SMEMBERS", &k]);
                let mut m: Vec<String> = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().into())
                    .collect();
                m.sort();
                format!("{:?}", m)
            }
            other => other.to_string(),
        };
        let ttl = c.q(&["PTTL", &k]).as_int().unwrap();
        let ttl = if ttl >= 0 { " (ttl)" } else { "" };
        out.insert(k, format!("{t}: {body}{ttl}"));
    }
    out
}

struct Step {
    f: &'static str,
    keys: Vec<String>,
    args: Vec<String>,
}

fn st(f: &'static str, keys: &[&str], args: &[&str]) -> Step {
    Step {
        f,
        keys: keys.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

/// Field values equal; fields in `loose` may differ by up to 2 s (TTL read back).
fn same(a: &Out, b: &Out, loose: &[&str]) -> bool {
    match (a, b) {
        (Err(x), Err(y)) => x == y,
        (Ok(x), Ok(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| match y.get(k) {
                    None => false,
                    Some(w) if loose.contains(&k.as_str()) => match (v.as_int(), w.as_int()) {
                        (Some(p), Some(q)) => (p - q).abs() <= 2000,
                        _ => v == w,
                    },
                    Some(w) => v == w,
                })
        }
        _ => false,
    }
}

/// Runs `steps` through FCALL and RX.CALL, in RESP2 and RESP3, each on a flushed
/// dataset. Asserts that every run gives the same replies and dataset; returns the
/// replies and the final dataset of the native RESP2 run.
fn differential(
    s: &Server,
    steps: &[Step],
    loose: &[&str],
    setup: &[&[&str]],
) -> (Vec<Out>, BTreeMap<String, String>) {
    let mut first: Option<(Vec<Out>, BTreeMap<String, String>)> = None;
    for proto in ["2", "3"] {
        for cmd in ["FCALL", "RX.CALL"] {
            let mut c = s.conn();
            c.q(&["HELLO", proto]).ok();
            c.q(&["FLUSHALL"]).ok();
            for line in setup {
                c.q(line).ok();
            }
            let outs: Vec<Out> = steps
                .iter()
                .map(|stp| {
                    if stp.f == "raw" {
                        let a: Vec<&str> = stp.args.iter().map(|s| s.as_str()).collect();
                        c.q(&a).ok();
                        return Ok(Map::new());
                    }
                    let k: Vec<&str> = stp.keys.iter().map(|s| s.as_str()).collect();
                    let a: Vec<&str> = stp.args.iter().map(|s| s.as_str()).collect();
                    norm(call_function(&mut c, cmd, stp.f, &k, &a))
                })
                .collect();
            let snap = snapshot(&mut s.conn());
            match &first {
                None => first = Some((outs, snap)),
                Some((o0, s0)) => {
                    for (i, (a, b)) in o0.iter().zip(outs.iter()).enumerate() {
                        assert!(
                            same(a, b, loose),
                            "step {i} ({} {:?} {:?}) differs: FCALL/RESP2 {:?} vs {cmd}/RESP{proto} {:?}",
                            steps[i].f,
                            steps[i].keys,
                            steps[i].args,
                            a,
                            b
                        );
                    }
                    assert_eq!(s0, &snap, "dataset after {cmd}/RESP{proto}");
                }
            }
        }
    }
    let mut c = s.conn();
    c.q(&["FLUSHALL"]).ok();
    first.unwrap()
}

/// Each (function, keys, args, error) must fail with exactly that error through both
/// engines, and must not change the dataset.
fn assert_errors(s: &Server, setup: &[&[&str]], cases: &[(&str, &[&str], &[&str], &str)]) {
    let mut c = s.conn();
    c.q(&["FLUSHALL"]).ok();
    for line in setup {
        c.q(line).ok();
    }
    let before = snapshot(&mut c);
    for (f, keys, args, want) in cases {
        for cmd in ["FCALL", "RX.CALL"] {
            let r = call_function(&mut c, cmd, f, keys, args);
            assert_eq!(
                r.err_text(),
                Some(*want),
                "{cmd} {f} {:?} {:?} gave {:?}",
                keys,
                args,
                r
            );
        }
    }
    assert_eq!(
        before,
        snapshot(&mut c),
        "an error reply changed the dataset"
    );
    c.q(&["FLUSHALL"]).ok();
}

// ---------------------------------------------------------------------------

#[test]
fn libraries_load_natively_and_into_rx_with_honest_flags() {
    let (_s, mut c) = start();
    let ro = [
        "ratelimit_status",
        "queue_stats",
        "cache_get",
        "cache_dependents",
    ];
    let all = [
        "ratelimit_token_bucket",
        "ratelimit_sliding_window",
        "ratelimit_status",
        "queue_push",
        "queue_pop",
        "queue_claim",
        "queue_ack",
        "queue_stats",
        "cache_set",
        "cache_get",
        "cache_delete",
        "cache_invalidate",
        "cache_dependents",
    ];
    for list in ["FUNCTION", "RX.LIST"] {
        let r = if list == "FUNCTION" {
            c.q(&["FUNCTION", "LIST"])
        } else {
            c.q(&["RX.LIST"])
        };
        let mut seen = BTreeMap::new();
        for lib in r.as_array().unwrap() {
            let lib = lib.as_array().unwrap();
            let fns = lib[5].as_array().unwrap();
            for f in fns {
                let f = f.as_array().unwrap();
                let name = f[1].as_str().unwrap().to_string();
                assert!(
                    f[3].as_str().is_some_and(|d| !d.is_empty()),
                    "{name} has a description"
                );
                let flags: Vec<String> = f[5]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_string())
                    .collect();
                seen.insert(name, flags);
            }
        }
        for f in all {
            let flags = seen.get(f).unwrap_or_else(|| panic!("{list}: {f} missing"));
            let want: Vec<String> = if ro.contains(&f) {
                vec!["no-writes".into()]
            } else {
                vec![]
            };
            assert_eq!(flags, &want, "{list}: flags of {f}");
            assert!(
                f.starts_with("cache_") || f.starts_with("ratelimit_") || f.starts_with("queue_")
            );
        }
        assert_eq!(seen.len(), all.len(), "{list}: {:?}", seen.keys());
    }
    // Read-only functions run through FCALL_RO / RX.CALL_RO; writers are refused there.
    for cmd in ["FCALL_RO", "RX.CALL_RO"] {
        let r = call_function(
            &mut c,
            cmd,
            "ratelimit_status",
            &["{t}:b"],
            &["token_bucket", "5", "1", "0"],
        );
        assert_eq!(int(ok(&norm(r)), "remaining"), 5);
        let r = call_function(
            &mut c,
            cmd,
            "ratelimit_token_bucket",
            &["{t}:b"],
            &["5", "1", "1", "0"],
        );
        assert!(r.is_error(), "{cmd} must refuse a writer: {:?}", r);
    }
}

#[test]
fn ratelimit_token_bucket_refills_and_refuses() {
    let (s, _c) = start();
    let b = "{rl}:bucket";
    let tb = |args: &[&str]| st("ratelimit_token_bucket", &[b], args);
    let steps = vec![
        tb(&["10", "2", "4", "1000"]),    // 10 -> 6
        tb(&["10", "2", "6", "1000"]),    // 6 -> 0
        tb(&["10", "2", "1", "1000"]),    // empty: retry 500 ms
        tb(&["10", "2", "3", "1500"]),    // 1 token: needs 2 more = 1000 ms
        tb(&["10", "2", "1", "1500"]),    // 1 -> 0
        tb(&["10", "2", "10", "100000"]), // capped at capacity
        tb(&["10", "2", "1", "50000"]),   // clock going back: no refill, no error
        st(
            "ratelimit_status",
            &[b],
            &["token_bucket", "10", "2", "102000"],
        ),
    ];
    let (o, snap) = differential(&s, &steps, &[], &[]);
    let m: Vec<(i64, i64, i64, i64)> = o
        .iter()
        .map(|x| {
            let m = ok(x);
            (
                int(m, "allowed"),
                int(m, "remaining"),
                int(m, "retry_after_ms"),
                int(m, "limit"),
            )
        })
        .take(7)
        .collect();
    assert_eq!(
        m,
        vec![
            (1, 6, 0, 10),
            (1, 0, 0, 10),
            (0, 0, 500, 10),
            (0, 1, 1000, 10),
            (1, 0, 0, 10),
            (1, 0, 0, 10),
            (0, 0, 500, 10),
        ]
    );
    assert_eq!(int(ok(&o[0]), "reset_after_ms"), 2000);
    let status = ok(&o[7]);
    assert_eq!(
        status.get("type").and_then(|v| v.as_str()),
        Some("token_bucket")
    );
    assert_eq!(int(status, "remaining"), 4);
    assert_eq!(int(status, "used"), 6);
    assert_eq!(int(status, "reset_after_ms"), 3000);
    assert_eq!(int(status, "retry_after_ms"), 0);
    // The bucket is one hash with a TTL; nothing else was created.
    assert_eq!(snap.len(), 1);
    assert_eq!(
        snap[b],
        r#"hash: [("tokens", "0"), ("ts", "100000")] (ttl)"#
    );
}

#[test]
fn ratelimit_sliding_window_counts_a_moving_window() {
    let (s, _c) = start();
    let w = "{rl}:window";
    let sw = |args: &[&str]| st("ratelimit_sliding_window", &[w], args);
    let steps = vec![
        sw(&["3", "1000", "1", "1000"]),
        sw(&["3", "1000", "2", "1200"]),
        sw(&["3", "1000", "1", "1300"]), // full: the entry at 1000 leaves at 2000
        sw(&["3", "1000", "2", "2000"]), // 1000 left; 1200 x2 still in: 1 free, need 2
        sw(&["3", "1000", "1", "2000"]),
        st(
            "ratelimit_status",
            &[w],
            &["sliding_window", "3", "1000", "2100"],
        ),
        st(
            "ratelimit_status",
            &[w],
            &["sliding_window", "3", "1000", "5000"],
        ),
    ];
    let (o, snap) = differential(&s, &steps, &[], &[]);
    let m: Vec<(i64, i64, i64)> = o[..5]
        .iter()
        .map(|x| {
            let m = ok(x);
            (
                int(m, "allowed"),
                int(m, "remaining"),
                int(m, "retry_after_ms"),
            )
        })
        .collect();
    assert_eq!(
        m,
        vec![(1, 2, 0), (1, 0, 0), (0, 0, 700), (0, 1, 200), (1, 0, 0)]
    );
    assert_eq!(int(ok(&o[4]), "reset_after_ms"), 1000);
    let s1 = ok(&o[5]);
    assert_eq!(
        (
            int(s1, "used"),
            int(s1, "remaining"),
            int(s1, "retry_after_ms")
        ),
        (3, 0, 100)
    );
    let s2 = ok(&o[6]);
    assert_eq!(
        (
            int(s2, "used"),
            int(s2, "remaining"),
            int(s2, "reset_after_ms")
        ),
        (0, 3, 0)
    );
    assert_eq!(snap.len(), 1);
    assert_eq!(
        snap[w],
        r#"zset: [("1200:0", "1200"), ("1200:1", "1200"), ("2000:0", "2000")] (ttl)"#
    );
}

#[test]
fn ratelimit_validation_errors_are_exact_and_write_nothing() {
    let (s, _c) = start();
    let setup: &[&[&str]] = &[
        &["SET", "{rl}:str", "x"],
        &["HSET", "{rl}:hash", "tokens", "1", "ts", "1"],
    ];
    let b: &[&str] = &["{rl}:b"];
    let wrongn = "ERR wrong number of arguments";
    let tb = "ratelimit_token_bucket";
    let sw = "ratelimit_sliding_window";
    let rs = "ratelimit_status";
    let cases: &[(&str, &[&str], &[&str], &str)] = &[
        (tb, b, &["10", "1"], wrongn),
        (tb, b, &["10", "1", "1", "5", "6"], wrongn),
        (
            tb,
            &[],
            &["10", "1", "1"],
            "ERR ratelimit needs exactly one key",
        ),
        (
            tb,
            &["{rl}:a", "{rl}:b"],
            &["10", "1", "1"],
            "ERR ratelimit needs exactly one key",
        ),
        (
            tb,
            b,
            &["0", "1", "1"],
            "ERR capacity must be a positive integer",
        ),
        (
            tb,
            b,
            &["-3", "1", "1"],
            "ERR capacity must be a positive integer",
        ),
        (
            tb,
            b,
            &["1.5", "1", "1"],
            "ERR capacity must be a positive integer",
        ),
        (
            tb,
            b,
            &["ten", "1", "1"],
            "ERR capacity must be a positive integer",
        ),
        (
            tb,
            b,
            &["10", "0", "1"],
            "ERR refill rate must be a positive number",
        ),
        (
            tb,
            b,
            &["10", "-1", "1"],
            "ERR refill rate must be a positive number",
        ),
        (
            tb,
            b,
            &["10", "1e3", "1"],
            "ERR refill rate must be a positive number",
        ),
        (
            tb,
            b,
            &["10", "inf", "1"],
            "ERR refill rate must be a positive number",
        ),
        (
            tb,
            b,
            &["10", "1", "0"],
            "ERR cost must be a positive integer",
        ),
        (
            tb,
            b,
            &["10", "1", "x"],
            "ERR cost must be a positive integer",
        ),
        (tb, b, &["10", "1", "11"], "ERR cost exceeds capacity"),
        (
            tb,
            b,
            &["10", "1", "1", "-5"],
            "ERR now must be a non-negative integer",
        ),
        (
            tb,
            b,
            &["10", "1", "1", "soon"],
            "ERR now must be a non-negative integer",
        ),
        (
            tb,
            &["{rl}:str"],
            &["10", "1", "1"],
            "ERR key is not a token bucket",
        ),
        (sw, b, &["10", "1000"], wrongn),
        (
            sw,
            &[],
            &["10", "1000", "1"],
            "ERR ratelimit needs exactly one key",
        ),
        (
            sw,
            b,
            &["0", "1000", "1"],
            "ERR limit must be a positive integer",
        ),
        (
            sw,
            b,
            &["10", "0", "1"],
            "ERR window must be a positive integer (ms)",
        ),
        (
            sw,
            b,
            &["10", "1.5", "1"],
            "ERR window must be a positive integer (ms)",
        ),
        (
            sw,
            b,
            &["10", "1000", "0"],
            "ERR cost must be a positive integer",
        ),
        (sw, b, &["10", "1000", "11"], "ERR cost exceeds limit"),
        (
            sw,
            b,
            &["10", "1000", "1", "x"],
            "ERR now must be a non-negative integer",
        ),
        (
            sw,
            &["{rl}:hash"],
            &["10", "1000", "1"],
            "ERR key is not a sliding window",
        ),
        (rs, b, &["token_bucket", "10"], wrongn),
        (
            rs,
            b,
            &["leaky", "10", "1"],
            "ERR type must be token_bucket or sliding_window",
        ),
        (
            rs,
            &[],
            &["token_bucket", "10", "1"],
            "ERR ratelimit needs exactly one key",
        ),
        (
            rs,
            b,
            &["token_bucket", "0", "1"],
            "ERR capacity must be a positive integer",
        ),
        (
            rs,
            b,
            &["token_bucket", "10", "0"],
            "ERR refill rate must be a positive number",
        ),
        (
            rs,
            b,
            &["token_bucket", "10", "1", "-1"],
            "ERR now must be a non-negative integer",
        ),
        (
            rs,
            b,
            &["sliding_window", "0", "10"],
            "ERR limit must be a positive integer",
        ),
        (
            rs,
            b,
            &["sliding_window", "10", "0"],
            "ERR window must be a positive integer (ms)",
        ),
        (
            rs,
            &["{rl}:hash"],
            &["sliding_window", "10", "100"],
            "ERR key is not a sliding window",
        ),
        (
            rs,
            &["{rl}:str"],
            &["token_bucket", "10", "1"],
            "ERR key is not a token bucket",
        ),
    ];
    assert_errors(&s, setup, cases);
}

fn qkeys(tag: &str) -> Vec<String> {
    ["pending", "inflight", "prio", "stats"]
        .iter()
        .map(|k| format!("{{{tag}}}:q:{k}"))
        .collect()
}

#[test]
fn queue_priorities_claims_visibility_and_acks() {
    let (s, _c) = start();
    let k = qkeys("q");
    let k: Vec<&str> = k.iter().map(|s| s.as_str()).collect();
    let q = |f: &'static str, args: &[&str]| st(f, &k, args);
    let steps = vec![
        q("queue_push", &["low", "1"]),            // 0
        q("queue_push", &["high", "9"]),           // 1
        q("queue_push", &["mid", "5"]),            // 2
        q("queue_push", &["neg", "-4"]),           // 3
        q("queue_push", &["low", "2"]),            // 4: re-push updates the priority
        q("queue_claim", &["2", "1000", "10000"]), // 5: high, mid until 11000
        q("queue_push", &["high", "3"]),           // 6: error, in flight
        q("queue_ack", &["mid", "nope"]),          // 7
        q("queue_stats", &["10500"]),              // 8
        q("queue_claim", &["1", "1000", "10500"]), // 9: low; high not yet back
        q("queue_stats", &["11000"]),              // 10: high expired (deadline 11000)
        q("queue_pop", &["5", "11000"]),           // 11: high comes back first, then neg
        q("queue_ack", &["high"]),                 // 12: too late, it was requeued and popped
        q("queue_pop", &["3", "11000"]),           // 13: empty
        q("queue_claim", &["3", "100", "12000"]), // 14: low (deadline 11500) requeued, claimed again
        q("queue_ack", &["low"]),                 // 15
        q("queue_stats", &["12000"]),             // 16
    ];
    let (o, snap) = differential(&s, &steps, &[], &[]);
    let pushes: Vec<(i64, i64)> = [0, 1, 2, 3, 4]
        .iter()
        .map(|&i| (int(ok(&o[i]), "added"), int(ok(&o[i]), "length")))
        .collect();
    assert_eq!(pushes, vec![(1, 1), (1, 2), (1, 3), (1, 4), (0, 4)]);
    let c5 = ok(&o[5]);
    assert_eq!(strs(c5, "items"), vec!["high", "mid"]);
    assert_eq!(
        c5["priorities"],
        Reply::Array(vec![Reply::Int(9), Reply::Int(5)])
    );
    assert_eq!(
        (
            int(c5, "deadline_ms"),
            int(c5, "length"),
            int(c5, "requeued")
        ),
        (11000, 2, 0)
    );
    assert_eq!(o[6], Err("ERR item is in flight".to_string()));
    assert_eq!((int(ok(&o[7]), "acked"), int(ok(&o[7]), "missing")), (1, 1));
    let s8 = ok(&o[8]);
    assert_eq!(
        [
            "length",
            "in_flight",
            "expired",
            "pushed",
            "claimed",
            "acked",
            "popped",
            "requeued"
        ]
        .iter()
        .map(|f| int(s8, f))
        .collect::<Vec<_>>(),
        vec![2, 1, 0, 5, 2, 1, 0, 0]
    );
    assert_eq!(strs(ok(&o[9]), "items"), vec!["low"]);
    assert_eq!(int(ok(&o[9]), "requeued"), 0);
    assert_eq!(int(ok(&o[10]), "expired"), 1);
    let p11 = ok(&o[11]);
    assert_eq!(strs(p11, "items"), vec!["high", "neg"]);
    assert_eq!(
        p11["priorities"],
        Reply::Array(vec![Reply::Int(9), Reply::Int(-4)])
    );
    assert_eq!((int(p11, "requeued"), int(p11, "length")), (1, 0));
    assert!(!p11.contains_key("deadline_ms"));
    assert_eq!(
        (int(ok(&o[12]), "acked"), int(ok(&o[12]), "missing")),
        (0, 1)
    );
    assert_eq!(strs(ok(&o[13]), "items"), Vec::<String>::new());
    let c14 = ok(&o[14]);
    assert_eq!(strs(c14, "items"), vec!["low"]);
    assert_eq!((int(c14, "requeued"), int(c14, "deadline_ms")), (1, 12100));
    assert_eq!(int(ok(&o[15]), "acked"), 1);
    let s16 = ok(&o[16]);
    assert_eq!(
        [
            "length",
            "in_flight",
            "expired",
            "pushed",
            "claimed",
            "acked",
            "popped",
            "requeued"
        ]
        .iter()
        .map(|f| int(s16, f))
        .collect::<Vec<_>>(),
        vec![0, 0, 0, 5, 4, 2, 2, 2]
    );
    // Only the stats hash is left: empty sorted sets and hashes vanish.
    assert_eq!(snap.len(), 1, "{:?}", snap);
    assert_eq!(
        snap[k[3]],
        r#"hash: [("acked", "2"), ("claimed", "4"), ("popped", "2"), ("pushed", "5"), ("requeued", "2")]"#
    );
}

#[test]
fn queue_validation_errors_are_exact_and_write_nothing() {
    let (s, _c) = start();
    let k = qkeys("q");
    let k: Vec<&str> = k.iter().map(|s| s.as_str()).collect();
    let setup: &[&[&str]] = &[
        &["SET", "{q}:str", "x"],
        &["ZADD", k[1], "99999999999999", "busy"],
        &["HSET", k[2], "busy", "1"],
        &["ZADD", k[0], "1", "waiting"],
    ];
    let kk: &[&str] = &k;
    let wrongn = "ERR wrong number of arguments";
    let four = "ERR queue needs exactly four keys: pending, inflight, priority, stats";
    let bad_pending: &[&str] = &["{q}:str", k[1], k[2], k[3]];
    let bad_inflight: &[&str] = &[k[0], "{q}:str", k[2], k[3]];
    let bad_prio: &[&str] = &[k[0], k[1], k[0], k[3]];
    let bad_stats: &[&str] = &[k[0], k[1], k[2], k[1]];
    let bad_stats2: &[&str] = &[k[0], k[1], k[2], "{q}:str"];
    let cases: &[(&str, &[&str], &[&str], &str)] = &[
        ("queue_push", &k[..3], &["a", "1"], four),
        ("queue_pop", &[], &["1"], four),
        ("queue_stats", &k[..3], &[], four),
        (
            "queue_push",
            bad_prio,
            &["a", "1"],
            "ERR queue keys must be distinct",
        ),
        (
            "queue_claim",
            bad_stats,
            &["1", "10"],
            "ERR queue keys must be distinct",
        ),
        (
            "queue_push",
            bad_pending,
            &["a", "1"],
            "ERR pending key holds the wrong type",
        ),
        (
            "queue_pop",
            bad_inflight,
            &["1"],
            "ERR inflight key holds the wrong type",
        ),
        (
            "queue_ack",
            bad_stats2,
            &["a"],
            "ERR stats key holds the wrong type",
        ),
        ("queue_push", kk, &["a"], wrongn),
        ("queue_push", kk, &["a", "1", "2"], wrongn),
        (
            "queue_push",
            kk,
            &["a", "x"],
            "ERR priority must be an integer",
        ),
        (
            "queue_push",
            kk,
            &["a", "1.5"],
            "ERR priority must be an integer",
        ),
        (
            "queue_push",
            kk,
            &["a", "99999999999999999"],
            "ERR priority must be an integer",
        ),
        ("queue_push", kk, &["busy", "1"], "ERR item is in flight"),
        ("queue_pop", kk, &[], wrongn),
        ("queue_pop", kk, &["1", "2", "3"], wrongn),
        (
            "queue_pop",
            kk,
            &["0"],
            "ERR count must be a positive integer",
        ),
        (
            "queue_pop",
            kk,
            &["-1"],
            "ERR count must be a positive integer",
        ),
        (
            "queue_pop",
            kk,
            &["1", "x"],
            "ERR now must be a non-negative integer",
        ),
        ("queue_claim", kk, &["1"], wrongn),
        (
            "queue_claim",
            kk,
            &["0", "100"],
            "ERR count must be a positive integer",
        ),
        (
            "queue_claim",
            kk,
            &["1", "0"],
            "ERR visibility timeout must be a positive integer (ms)",
        ),
        (
            "queue_claim",
            kk,
            &["1", "100", "-1"],
            "ERR now must be a non-negative integer",
        ),
        ("queue_ack", kk, &[], wrongn),
        ("queue_stats", kk, &["1", "2"], wrongn),
        (
            "queue_stats",
            kk,
            &["later"],
            "ERR now must be a non-negative integer",
        ),
    ];
    assert_errors(&s, setup, cases);
}

#[test]
fn cache_set_get_invalidate_and_stale_edges() {
    let (s, _c) = start();
    let (e1, e2, e3) = ("{c}:e:1", "{c}:e:2", "{c}:e:3");
    let (d1, d2) = ("{c}:dep:user1", "{c}:dep:user2");
    let steps = vec![
        st("cache_set", &[e1, d1, d2], &["v1", "60000"]), // 0
        st("cache_set", &[e2, d1], &["v2", "60000"]),     // 1
        st("cache_get", &[e1, d2, d1], &[]),              // 2: any order
        st("cache_dependents", &[d1], &[]),               // 3
        st("cache_invalidate", &[d1, e1], &[]),           // 4: e2 missing
        st("cache_invalidate", &[d1, e1, e2, "{c}:other"], &[]), // 5
        st("cache_get", &[e1, d1, d2], &[]),              // 6: gone
        st("cache_get", &[e2, d1], &[]),                  // 7: gone
        st("cache_set", &[e3, d2], &["v3", "60000"]),     // 8
        st("cache_dependents", &[d2], &[]),               // 9: e1's old edge stays
        st("raw", &[], &["DEL", d2]),                     // 10: the index is lost
        st("cache_get", &[e3, d2], &[]),                  // 11: stale
        st("cache_delete", &[e3, d2], &[]),               // 12
        st("cache_set", &[e1], &["plain", "60000"]),      // 13: no dependencies
        st("cache_get", &[e1], &[]),                      // 14
        st("cache_set", &[e1, d1], &["again", "60000"]),  // 15
        st("cache_get", &[e1], &[]),                      // 16: wrong dependency list
        st("cache_delete", &[e1, d1], &[]),               // 17
        st("cache_set", &[e2, d1, d2], &["final", "60000"]), // 18
    ];
    let (o, snap) = differential(&s, &steps, &["ttl_ms"], &[]);
    let s0 = ok(&o[0]);
    assert_eq!(
        ["stored", "replaced", "dependencies", "ttl_ms"].map(|f| int(s0, f)),
        [1, 0, 2, 60000]
    );
    let g2 = ok(&o[2]);
    assert_eq!((int(g2, "hit"), int(g2, "stale")), (1, 0));
    assert_eq!(g2["value"], Reply::Bulk(b"v1".to_vec()));
    assert!((50000..=60000).contains(&int(g2, "ttl_ms")));
    assert_eq!(strs(ok(&o[3]), "dependents"), vec![e1, e2]);
    assert_eq!(int(ok(&o[3]), "count"), 2);
    assert_eq!(
        o[4],
        Err("ERR every dependent must be passed in KEYS (read them with cache_dependents)".into())
    );
    assert_eq!(
        (int(ok(&o[5]), "dependents"), int(ok(&o[5]), "deleted")),
        (2, 2)
    );
    for i in [6, 7] {
        let g = ok(&o[i]);
        assert_eq!(
            (int(g, "hit"), int(g, "stale"), int(g, "ttl_ms")),
            (0, 0, -2)
        );
        assert_eq!(g["value"], Reply::Nil);
    }
    assert_eq!(strs(ok(&o[9]), "dependents"), vec![e1, e3]);
    let g11 = ok(&o[11]);
    assert_eq!((int(g11, "hit"), int(g11, "stale")), (0, 1));
    assert_eq!(g11["value"], Reply::Nil);
    assert!(int(g11, "ttl_ms") > 0);
    assert_eq!(
        (int(ok(&o[12]), "deleted"), int(ok(&o[12]), "edges_removed")),
        (1, 0)
    );
    assert_eq!(int(ok(&o[13]), "dependencies"), 0);
    assert_eq!(ok(&o[14])["value"], Reply::Bulk(b"plain".to_vec()));
    assert_eq!(int(ok(&o[15]), "replaced"), 1);
    assert_eq!(
        o[16],
        Err("ERR dependency keys do not match the entry".into())
    );
    assert_eq!(
        (int(ok(&o[17]), "deleted"), int(ok(&o[17]), "edges_removed")),
        (1, 1)
    );
    let want: BTreeMap<String, String> = [
        (
            e2,
            r#"hash: [("dep:1", "{c}:dep:user1"), ("dep:2", "{c}:dep:user2"), ("ndeps", "2"), ("value", "final")] (ttl)"#,
        ),
        (d1, r#"set: ["{c}:e:2"] (ttl)"#),
        (d2, r#"set: ["{c}:e:2"] (ttl)"#),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(snap, want);
}

#[test]
fn cache_entries_expire_and_dependency_sets_outlive_their_dependents() {
    let (_s, mut c) = start();
    for cmd in ["FCALL", "RX.CALL"] {
        c.q(&["FLUSHALL"]).ok();
        norm(call_function(
            &mut c,
            cmd,
            "cache_set",
            &["{c}:short", "{c}:d"],
            &["s", "150"],
        ))
        .unwrap();
        norm(call_function(
            &mut c,
            cmd,
            "cache_set",
            &["{c}:long", "{c}:d"],
            &["l", "60000"],
        ))
        .unwrap();
        norm(call_function(
            &mut c,
            cmd,
            "cache_set",
            &["{c}:short2", "{c}:d"],
            &["s", "100"],
        ))
        .unwrap();
        let pttl = c.q(&["PTTL", "{c}:d"]).as_int().unwrap();
        assert!(
            pttl > 50000,
            "{cmd}: the dependency set keeps the longest TTL ({pttl})"
        );
        std::thread::sleep(Duration::from_millis(250));
        let g = norm(call_function(
            &mut c,
            cmd,
            "cache_get",
            &["{c}:short", "{c}:d"],
            NO,
        ))
        .unwrap();
        assert_eq!((int(&g, "hit"), int(&g, "ttl_ms")), (0, -2), "{cmd}");
        let g = norm(call_function(
            &mut c,
            cmd,
            "cache_get",
            &["{c}:long", "{c}:d"],
            NO,
        ))
        .unwrap();
        assert_eq!(int(&g, "hit"), 1, "{cmd}");
        // Expired members stay listed; invalidation takes them too and deletes what exists.
        let d = norm(call_function(
            &mut c,
            cmd,
            "cache_dependents",
            &["{c}:d"],
            NO,
        ))
        .unwrap();
        assert_eq!(int(&d, "count"), 3);
        let keys: Vec<String> = strs(&d, "dependents");
        let mut all = vec!["{c}:d"];
        all.extend(keys.iter().map(|s| s.as_str()));
        let i = norm(call_function(&mut c, cmd, "cache_invalidate", &all, NO)).unwrap();
        assert_eq!((int(&i, "dependents"), int(&i, "deleted")), (3, 1), "{cmd}");
        assert_eq!(c.q(&["DBSIZE"]), Reply::Int(0));
    }
}

#[test]
fn cache_validation_errors_are_exact_and_write_nothing() {
    let (s, _c) = start();
    let (e, e1, d1, d2, sx) = ("{c}:e:new", "{c}:e:1", "{c}:d1", "{c}:d2", "{c}:str");
    let setup: &[&[&str]] = &[
        &["SET", sx, "x"],
        &["HSET", e1, "value", "v", "ndeps", "1", "dep:1", d1],
        &["SADD", d1, e1],
        &["SADD", d2, "{c}:e:9"],
    ];
    let wrongn = "ERR wrong number of arguments";
    let distinct = "ERR dependency keys must be distinct from each other and from the entry";
    let mismatch = "ERR dependency keys do not match the entry";
    let missing = "ERR every dependent must be passed in KEYS (read them with cache_dependents)";
    let cases: &[(&str, &[&str], &[&str], &str)] = &[
        (
            "cache_set",
            &[],
            &["v", "100"],
            "ERR the entry key is required",
        ),
        ("cache_set", &[e, d1, d1], &["v", "100"], distinct),
        ("cache_set", &[e, e], &["v", "100"], distinct),
        (
            "cache_set",
            &[sx, d1],
            &["v", "100"],
            "ERR entry key is not a cache entry",
        ),
        (
            "cache_set",
            &[e, sx],
            &["v", "100"],
            "ERR dependency key is not a set",
        ),
        ("cache_set", &[e], &["v"], wrongn),
        ("cache_set", &[e], &["v", "100", "x"], wrongn),
        (
            "cache_set",
            &[e],
            &["v", "0"],
            "ERR ttl must be a positive integer (ms)",
        ),
        (
            "cache_set",
            &[e],
            &["v", "1.5"],
            "ERR ttl must be a positive integer (ms)",
        ),
        (
            "cache_set",
            &[e],
            &["v", "-1"],
            "ERR ttl must be a positive integer (ms)",
        ),
        ("cache_get", &[], &[], "ERR the entry key is required"),
        ("cache_get", &[e1, d1], &["x"], wrongn),
        ("cache_get", &[e1], &[], mismatch),
        ("cache_get", &[e1, d2], &[], mismatch),
        ("cache_get", &[e1, d1, d2], &[], mismatch),
        (
            "cache_get",
            &[sx],
            &[],
            "ERR entry key is not a cache entry",
        ),
        (
            "cache_get",
            &[e1, sx],
            &[],
            "ERR dependency key is not a set",
        ),
        ("cache_delete", &[e1, d1], &["x"], wrongn),
        (
            "cache_delete",
            &[sx],
            &[],
            "ERR entry key is not a cache entry",
        ),
        ("cache_delete", &[], &[], "ERR the entry key is required"),
        (
            "cache_invalidate",
            &[],
            &[],
            "ERR the dependency key is required",
        ),
        ("cache_invalidate", &[d1, e1], &["x"], wrongn),
        (
            "cache_invalidate",
            &[sx],
            &[],
            "ERR dependency key is not a set",
        ),
        ("cache_invalidate", &[d1], &[], missing),
        ("cache_invalidate", &[d2, e1], &[], missing),
        (
            "cache_dependents",
            &[],
            &[],
            "ERR exactly one dependency key is required",
        ),
        (
            "cache_dependents",
            &[d1, d2],
            &[],
            "ERR exactly one dependency key is required",
        ),
        ("cache_dependents", &[d1], &["x"], wrongn),
        (
            "cache_dependents",
            &[sx],
            &[],
            "ERR dependency key is not a set",
        ),
    ];
    assert_errors(&s, setup, cases);
}

// ---------------------------------------------------------------------------
// Concurrency

/// Runs `threads` clients calling `f` until `dur` has passed; returns (allowed, elapsed).
fn hammer(
    s: &Server,
    cmd: &'static str,
    f: &'static str,
    key: &str,
    args: &[&str],
    dur: Duration,
) -> (i64, Duration) {
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let port = s.port();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            let key = key.to_string();
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            std::thread::spawn(move || {
                let mut c = Conn::connect(port);
                let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
                barrier.wait();
                let start = Instant::now();
                let mut allowed = 0;
                while start.elapsed() < dur {
                    let m = norm(call_function(&mut c, cmd, f, &[&key], &a)).unwrap();
                    allowed += int(&m, "allowed");
                }
                allowed
            })
        })
        .collect();
    // Started before the clients are released, so `elapsed` covers every admission.
    let t0 = Instant::now();
    barrier.wait();
    let allowed: i64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    (allowed, t0.elapsed())
}

#[test]
fn rate_limiters_never_admit_more_than_their_capacity_under_contention() {
    let (s, _c) = start();
    for cmd in ["FCALL", "RX.CALL"] {
        // Token bucket: capacity 20, 20 tokens/s.
        let key = format!("{{{cmd}}}:tb");
        let (allowed, elapsed) = hammer(
            &s,
            cmd,
            "ratelimit_token_bucket",
            &key,
            &["20", "20", "1"],
            Duration::from_millis(800),
        );
        let bound = 20 + (20.0 * elapsed.as_secs_f64()).ceil() as i64;
        assert!(allowed >= 20, "{cmd}: token bucket admitted only {allowed}");
        assert!(
            allowed <= bound,
            "{cmd}: token bucket admitted {allowed} > {bound} in {:?}",
            elapsed
        );
        // Sliding window: 15 per 250 ms.
        let key = format!("{{{cmd}}}:sw");
        let (allowed, elapsed) = hammer(
            &s,
            cmd,
            "ratelimit_sliding_window",
            &key,
            &["15", "250", "1"],
            Duration::from_millis(800),
        );
        let windows = (elapsed.as_millis() as f64 / 250.0).ceil() as i64;
        assert!(
            allowed >= 15,
            "{cmd}: sliding window admitted only {allowed}"
        );
        assert!(
            allowed <= 15 * windows,
            "{cmd}: sliding window admitted {allowed} > {} in {:?}",
            15 * windows,
            elapsed
        );
        // And the window itself never holds more than the limit.
        let mut c = s.conn();
        assert!(c.q(&["ZCARD", &key]).as_int().unwrap() <= 15);
    }
}

#[test]
fn claimed_queue_items_are_delivered_exactly_once_to_concurrent_consumers() {
    let (s, mut c) = start();
    for (cmd, tag) in [("FCALL", "qn"), ("RX.CALL", "qx")] {
        let k = qkeys(tag);
        let cmds: Vec<Vec<Vec<u8>>> = (0..200)
            .map(|i| {
                let mut v: Vec<Vec<u8>> = vec![cmd.into(), "queue_push".into(), "4".into()];
                v.extend(k.iter().map(|s| s.clone().into_bytes()));
                v.push(format!("item{i}").into_bytes());
                v.push((i % 7).to_string().into_bytes());
                v
            })
            .collect();
        for r in c.pipeline(cmds) {
            assert!(!r.starts_with(b"-"), "{}", String::from_utf8_lossy(&r));
        }
        let barrier = Arc::new(Barrier::new(8));
        let port = s.port();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let barrier = barrier.clone();
                let k = k.clone();
                std::thread::spawn(move || {
                    let mut c = Conn::connect(port);
                    let kr: Vec<&str> = k.iter().map(|s| s.as_str()).collect();
                    let mut got: Vec<(String, i64)> = Vec::new();
                    barrier.wait();
                    loop {
                        let m = norm(call_function(
                            &mut c,
                            cmd,
                            "queue_claim",
                            &kr,
                            &["3", "60000"],
                        ))
                        .unwrap();
                        let items = strs(&m, "items");
                        let prios = m["priorities"].as_array().unwrap().to_vec();
                        if items.is_empty() {
                            break;
                        }
                        for (it, p) in items.into_iter().zip(prios) {
                            got.push((it, p.as_int().unwrap()));
                        }
                    }
                    got
                })
            })
            .collect();
        let mut all: Vec<(String, i64)> = Vec::new();
        for h in handles {
            let got = h.join().unwrap();
            // Each consumer sees priorities in non-increasing order.
            assert!(
                got.windows(2).all(|w| w[0].1 >= w[1].1),
                "{cmd}: priority order"
            );
            all.extend(got);
        }
        let names: BTreeSet<&str> = all.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(all.len(), 200, "{cmd}: deliveries");
        assert_eq!(names.len(), 200, "{cmd}: an item was delivered twice");
        let kr: Vec<&str> = k.iter().map(|s| s.as_str()).collect();
        let mut ack = vec![];
        ack.extend(names.iter().copied());
        let a = norm(call_function(&mut c, cmd, "queue_ack", &kr, &ack)).unwrap();
        assert_eq!((int(&a, "acked"), int(&a, "missing")), (200, 0));
        let st = norm(call_function(&mut c, cmd, "queue_stats", &kr, NO)).unwrap();
        assert_eq!(
            [
                "length",
                "in_flight",
                "pushed",
                "claimed",
                "acked",
                "requeued"
            ]
            .map(|f| int(&st, f)),
            [0, 0, 200, 200, 200, 0]
        );
    }
}

// ---------------------------------------------------------------------------
// Cluster safety

#[test]
fn every_function_touches_only_the_keys_it_is_given() {
    let (_s, mut c) = start();
    for cmd in ["FCALL", "RX.CALL"] {
        c.q(&["FLUSHALL"]).ok();
        assert_eq!(c.q(&["DBSIZE"]), Reply::Int(0));
        let mut passed: BTreeSet<String> = BTreeSet::new();
        let mut run = |c: &mut Conn, f: &str, keys: &[&str], args: &[&str]| -> Out {
            passed.extend(keys.iter().map(|k| k.to_string()));
            for k in keys {
                assert!(k.starts_with("{t}:"));
            }
            norm(call_function(c, cmd, f, keys, args))
        };
        run(
            &mut c,
            "ratelimit_token_bucket",
            &["{t}:tb"],
            &["5", "1", "1"],
        )
        .unwrap();
        run(
            &mut c,
            "ratelimit_sliding_window",
            &["{t}:sw"],
            &["5", "1000", "1"],
        )
        .unwrap();
        run(
            &mut c,
            "ratelimit_status",
            &["{t}:tb"],
            &["token_bucket", "5", "1"],
        )
        .unwrap();
        run(
            &mut c,
            "ratelimit_status",
            &["{t}:sw"],
            &["sliding_window", "5", "1000"],
        )
        .unwrap();
        let q = ["{t}:q:p", "{t}:q:f", "{t}:q:h", "{t}:q:s"];
        for (i, item) in ["a", "b", "c", "d"].iter().enumerate() {
            run(&mut c, "queue_push", &q, &[item, &i.to_string()]).unwrap();
        }
        run(&mut c, "queue_claim", &q, &["1", "1"]).unwrap();
        run(&mut c, "queue_claim", &q, &["1", "60000"]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        run(&mut c, "queue_pop", &q, &["1"]).unwrap(); // requeues the expired claim
        run(&mut c, "queue_ack", &q, &["c"]).unwrap();
        run(&mut c, "queue_stats", &q, &[]).unwrap();
        run(
            &mut c,
            "cache_set",
            &["{t}:e1", "{t}:d1", "{t}:d2"],
            &["v", "60000"],
        )
        .unwrap();
        run(&mut c, "cache_set", &["{t}:e2", "{t}:d1"], &["v", "60000"]).unwrap();
        run(&mut c, "cache_get", &["{t}:e1", "{t}:d1", "{t}:d2"], &[]).unwrap();
        run(&mut c, "cache_dependents", &["{t}:d1"], &[]).unwrap();
        run(
            &mut c,
            "cache_invalidate",
            &["{t}:d1", "{t}:e1", "{t}:e2"],
            &[],
        )
        .unwrap();
        run(&mut c, "cache_set", &["{t}:e3", "{t}:d3"], &["v", "60000"]).unwrap();
        run(&mut c, "cache_delete", &["{t}:e3", "{t}:d3"], &[]).unwrap();
        run(&mut c, "cache_set", &["{t}:e4", "{t}:d4"], &["v", "60000"]).unwrap();
        let keys = c.q(&["KEYS", "*"]);
        let keys: BTreeSet<String> = keys
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert!(!keys.is_empty());
        let extra: Vec<&String> = keys.difference(&passed).collect();
        assert!(
            extra.is_empty(),
            "{cmd}: keys not passed in KEYS: {:?}",
            extra
        );
        // And COMMAND GETKEYS sees exactly the declared keys, so cluster routing works.
        let gk = c.q(&[
            "COMMAND",
            "GETKEYS",
            cmd,
            "queue_stats",
            "4",
            q[0],
            q[1],
            q[2],
            q[3],
        ]);
        assert_eq!(gk.as_array().unwrap().len(), 4);
    }
}
