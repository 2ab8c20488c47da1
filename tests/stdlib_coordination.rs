//! Tests of the coordination libraries of RX's bundled standard library
//! (lua-stdlib/workflow.lua, session.lua, lock.lua).
//!
//! Each library is loaded twice on the same server: natively (`FUNCTION LOAD`, the
//! portability check) and into RX (`RX.LOAD`). Every scenario runs through `FCALL` and
//! through `RX.CALL` on separate keys (hash tags `{n}` and `{r}`), asserts the exact
//! replies, errors and effects on keys, and then the two runs are compared reply by reply
//! (maps as field -> value dictionaries; time-dependent fields left out).

mod common;

use common::stdlib::{
    dict, field, fields, int_field, load_natively_and_into_rx, server_now_ms, text_field,
};
use common::{Conn, Reply, Server};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const WORKFLOW: &str = include_str!("../lua-stdlib/workflow.lua");
const SESSION: &str = include_str!("../lua-stdlib/session.lua");
const LOCK: &str = include_str!("../lua-stdlib/lock.lua");

const LIBS: [(&str, &str); 3] = [("workflow", WORKFLOW), ("session", SESSION), ("lock", LOCK)];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Engine {
    Native,
    Rx,
}

impl Engine {
    fn fcall(self) -> &'static str {
        match self {
            Engine::Native => "FCALL",
            Engine::Rx => "RX.CALL",
        }
    }
    fn fcall_ro(self) -> &'static str {
        match self {
            Engine::Native => "FCALL_RO",
            Engine::Rx => "RX.CALL_RO",
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Engine::Native => "{n}",
            Engine::Rx => "{r}",
        }
    }
}

fn call_with(c: &mut Conn, cmd: &str, f: &str, keys: &[&str], args: &[&str]) -> Reply {
    let nk = keys.len().to_string();
    let mut v: Vec<&str> = vec![cmd, f, &nk];
    v.extend_from_slice(keys);
    v.extend_from_slice(args);
    c.q(&v)
}

fn strs(r: &Reply) -> Vec<String> {
    r.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {r:?}"))
        .iter()
        .map(|x| x.as_str().expect("text element").to_string())
        .collect()
}

#[track_caller]
fn assert_err(r: &Reply, want: &str) {
    assert_eq!(r.err_text(), Some(want), "reply {r:?}");
}

fn sha1hex(c: &mut Conn, s: &str) -> String {
    c.q(&["EVAL", "return redis.sha1hex(ARGV[1])", "0", s])
        .as_str()
        .unwrap()
        .to_string()
}

/// One engine's run of a scenario: records every function reply for the comparison.
struct Run<'a> {
    c: &'a mut Conn,
    e: Engine,
    log: Vec<Reply>,
}

impl<'a> Run<'a> {
    fn new(c: &'a mut Conn, e: Engine) -> Run<'a> {
        Run {
            c,
            e,
            log: Vec::new(),
        }
    }
    fn key(&self, name: &str) -> String {
        format!("{}:{}", self.e.tag(), name)
    }
    fn call(&mut self, f: &str, keys: &[&str], args: &[&str]) -> Reply {
        let r = call_with(self.c, self.e.fcall(), f, keys, args);
        self.log.push(r.clone());
        r
    }
    fn call_ro(&mut self, f: &str, keys: &[&str], args: &[&str]) -> Reply {
        let r = call_with(self.c, self.e.fcall_ro(), f, keys, args);
        self.log.push(r.clone());
        r
    }
    fn q(&mut self, args: &[&str]) -> Reply {
        self.c.q(args)
    }
    fn int(&mut self, args: &[&str]) -> i64 {
        let r = self.c.q(args);
        r.as_int().unwrap_or_else(|| panic!("{args:?} -> {r:?}"))
    }
}

/// A reply made comparable across engines: maps become sorted dictionaries, fields that
/// depend on the clock are removed.
fn normalize(r: &Reply) -> Reply {
    match r {
        Reply::Map(_) => {
            let mut d = dict(r);
            for f in ["expires_at", "created_at", "updated_at"] {
                d.remove(f);
            }
            if d.get("acquired") == Some(&Reply::Int(0)) {
                d.remove("ttl"); // remaining time of someone else's lock
            }
            if let Some(Reply::Array(h)) = d.get("history").cloned() {
                let h = h
                    .iter()
                    .map(|e| {
                        let s = e.as_str().unwrap();
                        let cut = s.find(",\"at\":").expect("history entry has at");
                        Reply::Bulk(format!("{}}}", &s[..cut]).into_bytes())
                    })
                    .collect();
                d.insert("history".into(), Reply::Array(h));
            }
            Reply::Map(
                d.into_iter()
                    .map(|(k, v)| (Reply::Bulk(k.into_bytes()), v))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

/// Runs `scenario` through FCALL and through RX.CALL (RESP3) and compares the replies.
fn both_engines(scenario: fn(&mut Run)) {
    let s = Server::start();
    let mut c = s.conn();
    c.q(&["HELLO", "3"]).ok();
    load_natively_and_into_rx(&mut c, &LIBS);
    let mut logs = Vec::new();
    for e in [Engine::Native, Engine::Rx] {
        let mut run = Run::new(&mut c, e);
        scenario(&mut run);
        logs.push(run.log);
    }
    let (native, rx) = (&logs[0], &logs[1]);
    assert_eq!(native.len(), rx.len(), "number of calls");
    for (i, (n, r)) in native.iter().zip(rx.iter()).enumerate() {
        assert_eq!(normalize(n), normalize(r), "call #{i}: FCALL vs RX.CALL");
    }
}

// ---------------------------------------------------------------------------
// Loading

#[test]
fn libraries_load_natively_and_into_rx_with_the_same_functions_and_flags() {
    let s = Server::start();
    let mut c = s.conn();
    load_natively_and_into_rx(&mut c, &LIBS);
    let expected: [(&str, &[&str], &[&str]); 3] = [
        (
            "workflow",
            &["workflow_create", "workflow_state", "workflow_transition"],
            &["workflow_state"],
        ),
        (
            "session",
            &[
                "session_create",
                "session_destroy",
                "session_destroy_all",
                "session_get",
            ],
            &[],
        ),
        (
            "lock",
            &["lock_acquire", "lock_extend", "lock_release"],
            &[],
        ),
    ];
    for (lib, names, no_writes) in expected {
        let mut listings = Vec::new();
        for cmd in [
            &["FUNCTION", "LIST", "LIBRARYNAME"][..],
            &["RX.LIST", "LIBRARYNAME"][..],
        ] {
            let mut args = cmd.to_vec();
            args.push(lib);
            let r = c.q(&args);
            let libs = r.as_array().unwrap();
            assert_eq!(libs.len(), 1, "{cmd:?} {lib}: {r:?}");
            let l = dict(&libs[0]);
            assert_eq!(l["library_name"].as_str(), Some(lib));
            // name -> (description, flags)
            let mut fns = BTreeMap::new();
            for f in l["functions"].as_array().unwrap() {
                let f = dict(f);
                let mut flags = strs(&f["flags"]);
                flags.sort();
                let desc = f["description"]
                    .as_str()
                    .expect("every function has a description");
                assert!(!desc.is_empty());
                fns.insert(
                    f["name"].as_str().unwrap().to_string(),
                    (desc.to_string(), flags),
                );
            }
            let got: Vec<&str> = fns.keys().map(|s| s.as_str()).collect();
            assert_eq!(got, names, "{cmd:?}");
            for (name, (_, flags)) in &fns {
                assert!(name.starts_with(&format!("{lib}_")), "{name}");
                let want: Vec<String> = if no_writes.contains(&name.as_str()) {
                    vec!["no-writes".into()]
                } else {
                    vec![]
                };
                assert_eq!(flags, &want, "flags of {name}");
            }
            listings.push(fns);
        }
        assert_eq!(
            listings[0], listings[1],
            "FUNCTION LIST vs RX.LIST for {lib}"
        );
    }
    // RESP2 clients get a flat field/value array.
    let r = c.q(&[
        "RX.CALL",
        "lock_acquire",
        "2",
        "{t}:l",
        "{t}:f",
        "me",
        "1000",
    ]);
    assert!(matches!(r, Reply::Array(ref v) if v.len() == 8), "{r:?}");
    assert_eq!(int_field(&r, "acquired"), 1);
    let r = c.q(&["FCALL", "lock_release", "1", "{t}:l", "me"]);
    assert!(matches!(r, Reply::Array(ref v) if v.len() == 6), "{r:?}");
    assert_eq!(int_field(&r, "released"), 1);
    // Write functions are refused by the read-only variants; workflow_state is allowed.
    for e in [Engine::Native, Engine::Rx] {
        let r = call_with(
            &mut c,
            e.fcall_ro(),
            "lock_acquire",
            &["{t}:l", "{t}:f"],
            &["me", "10"],
        );
        assert!(r.is_error(), "{e:?}: {r:?}");
        let r = call_with(
            &mut c,
            e.fcall_ro(),
            "workflow_state",
            &["{t}:w", "{t}:h"],
            &[],
        );
        assert_err(&r, "ERR workflow not found");
    }
    assert_eq!(c.q(&["DBSIZE"]), Reply::Int(1)); // only the fence counter {t}:f
}

// ---------------------------------------------------------------------------
// workflow

fn workflow_scenario(r: &mut Run) {
    let (w, h) = (r.key("wf"), r.key("hist"));
    let (w, h) = (w.as_str(), h.as_str());
    let default_json = "{\"created\":[\"running\",\"cancelled\"],\"running\":[\"paused\",\"completed\",\"failed\",\"cancelled\"],\"paused\":[\"running\",\"cancelled\"],\"completed\":[],\"failed\":[],\"cancelled\":[]}";

    // create: success with the default table
    let before = server_now_ms(r.c);
    let x = r.call("workflow_create", &[w, h], &["job-1", "created"]);
    assert_eq!(
        fields(&x),
        ["allowed", "history_limit", "id", "state", "version"]
    );
    assert_eq!(text_field(&x, "id"), "job-1");
    assert_eq!(text_field(&x, "state"), "created");
    assert_eq!(int_field(&x, "version"), 0);
    assert_eq!(int_field(&x, "history_limit"), 100);
    assert_eq!(strs(&field(&x, "allowed")), ["running", "cancelled"]);
    assert_eq!(r.q(&["HGET", w, "state"]).as_str(), Some("created"));
    assert_eq!(
        r.q(&["HGET", w, "transitions"]).as_str(),
        Some(default_json)
    );
    let created_at: i64 = r
        .q(&["HGET", w, "created_at"])
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(created_at >= before && created_at <= server_now_ms(r.c));
    assert_eq!(r.int(&["EXISTS", h]), 0);

    // create: every validation error, none of which writes
    let (w2, h2, str_key) = (r.key("wf2"), r.key("hist2"), r.key("str"));
    let (w2, h2, str_key) = (w2.as_str(), h2.as_str(), str_key.as_str());
    r.q(&["SET", str_key, "x"]).ok();
    assert_err(
        &r.call("workflow_create", &[w2], &["a", "created"]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("workflow_create", &[w2, h2, str_key], &["a", "created"]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("workflow_create", &[w2, h2], &["a"]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call(
            "workflow_create",
            &[w2, h2],
            &["a", "created", "", "5", "x"],
        ),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("workflow_create", &[w2, h2], &["", "created"]),
        "ERR id must be a non-empty string",
    );
    assert_err(
        &r.call("workflow_create", &[w2, h2], &["a", ""]),
        "ERR state must be a non-empty string",
    );
    for bad in [
        "not json",
        "[]",
        "{}",
        "[\"a\"]",
        "{\"a\":\"b\"}",
        "{\"a\":[1]}",
        "{\"a\":{\"x\":\"y\"}}",
        "{\"\":[\"a\"]}",
        "{\"a\":[\"\"]}",
        "{\"a\":[null]}",
        "\"a\"",
    ] {
        assert_err(
            &r.call("workflow_create", &[w2, h2], &["a", "a", bad]),
            "ERR transitions must be a JSON object mapping each state to an array of states",
        );
    }
    for bad in ["0", "-1", "x", "1.5", "01", "10001", " 5"] {
        assert_err(
            &r.call("workflow_create", &[w2, h2], &["a", "created", "", bad]),
            "ERR history limit must be an integer between 1 and 10000",
        );
    }
    assert_err(
        &r.call("workflow_create", &[w2, h2], &["a", "nope"]),
        "ERR unknown state nope",
    );
    assert_err(
        &r.call("workflow_create", &[w2, h2], &["a", "c", "{\"a\":[\"b\"]}"]),
        "ERR unknown state c",
    );
    assert_err(
        &r.call("workflow_create", &[w, h], &["job-1", "created"]),
        "ERR workflow already exists",
    );
    assert_err(
        &r.call("workflow_create", &[str_key, h2], &["a", "created"]),
        "ERR workflow key holds the wrong kind of value",
    );
    assert_err(
        &r.call("workflow_create", &[w2, str_key], &["a", "created"]),
        "ERR history key holds the wrong kind of value",
    );
    assert_eq!(r.int(&["EXISTS", w2, h2]), 0);
    assert_eq!(r.q(&["GET", str_key]).as_str(), Some("x"));

    // transition: success path and its effects
    let x = r.call("workflow_transition", &[w, h], &["running"]);
    assert_eq!(fields(&x), ["allowed", "from", "id", "state", "version"]);
    assert_eq!(text_field(&x, "from"), "created");
    assert_eq!(text_field(&x, "state"), "running");
    assert_eq!(int_field(&x, "version"), 1);
    assert_eq!(
        strs(&field(&x, "allowed")),
        ["paused", "completed", "failed", "cancelled"]
    );
    assert_eq!(r.q(&["HGET", w, "state"]).as_str(), Some("running"));
    assert_eq!(r.q(&["HGET", w, "version"]).as_str(), Some("1"));
    assert_eq!(r.int(&["LLEN", h]), 1);

    // transition: errors
    assert_err(
        &r.call("workflow_transition", &[w, h], &["created"]),
        "ERR invalid transition from running to created",
    );
    assert_err(
        &r.call("workflow_transition", &[w, h], &["nowhere"]),
        "ERR invalid transition from running to nowhere",
    );
    assert_err(
        &r.call("workflow_transition", &[w, h], &["paused", "paused"]),
        "ERR workflow is in state running, not paused",
    );
    assert_err(
        &r.call("workflow_transition", &[w, h], &["paused", ""]),
        "ERR expected state must be a non-empty string",
    );
    assert_err(
        &r.call("workflow_transition", &[w, h], &[""]),
        "ERR state must be a non-empty string",
    );
    assert_err(
        &r.call("workflow_transition", &[w, h], &[]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("workflow_transition", &[w, h], &["a", "b", "c"]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("workflow_transition", &[w], &["paused"]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("workflow_transition", &[w2, h2], &["running"]),
        "ERR workflow not found",
    );
    assert_err(
        &r.call("workflow_transition", &[str_key, h], &["paused"]),
        "ERR workflow key holds the wrong kind of value",
    );
    assert_err(
        &r.call("workflow_transition", &[w, str_key], &["paused"]),
        "ERR history key holds the wrong kind of value",
    );
    assert_eq!(r.q(&["HGET", w, "version"]).as_str(), Some("1"));
    assert_eq!(r.int(&["LLEN", h]), 1);
    assert_eq!(r.int(&["EXISTS", w2, h2]), 0);

    // more transitions, with the compare-and-set form
    let x = r.call("workflow_transition", &[w, h], &["paused", "running"]);
    assert_eq!(int_field(&x, "version"), 2);
    assert_eq!(strs(&field(&x, "allowed")), ["running", "cancelled"]);
    r.call("workflow_transition", &[w, h], &["running"]).ok();
    let x = r.call("workflow_transition", &[w, h], &["completed"]);
    assert_eq!(int_field(&x, "version"), 4);
    assert_eq!(field(&x, "allowed"), Reply::Array(vec![]));
    assert_err(
        &r.call("workflow_transition", &[w, h], &["cancelled"]),
        "ERR invalid transition from completed to cancelled",
    );
    let hist = strs(&r.q(&["LRANGE", h, "0", "-1"]));
    let pairs: Vec<(i64, String, String)> = hist
        .iter()
        .map(|e| {
            let s = history_entry(e);
            (s.0, s.1, s.2)
        })
        .collect();
    assert_eq!(
        pairs,
        [
            (4, "running".to_string(), "completed".to_string()),
            (3, "paused".into(), "running".into()),
            (2, "running".into(), "paused".into()),
            (1, "created".into(), "running".into()),
        ]
    );

    // custom table, bounded history
    let x = r.call(
        "workflow_create",
        &[w2, h2],
        &[
            "doc",
            "draft",
            "{\"draft\":[\"review\"],\"review\":[\"draft\",\"published\"]}",
            "2",
        ],
    );
    assert_eq!(int_field(&x, "history_limit"), 2);
    assert_eq!(strs(&field(&x, "allowed")), ["review"]);
    for to in ["review", "draft", "review", "published"] {
        r.call("workflow_transition", &[w2, h2], &[to]).ok();
    }
    assert_eq!(r.int(&["LLEN", h2]), 2);
    let hist: Vec<i64> = strs(&r.q(&["LRANGE", h2, "0", "-1"]))
        .iter()
        .map(|e| history_entry(e).0)
        .collect();
    assert_eq!(hist, [4, 3]);
    assert_err(
        &r.call("workflow_transition", &[w2, h2], &["draft"]),
        "ERR invalid transition from published to draft",
    );
    // a state known only as a target is a valid initial (final) state
    let (w3, h3) = (r.key("wf3"), r.key("hist3"));
    let x = r.call(
        "workflow_create",
        &[&w3, &h3],
        &["d2", "published", "{\"draft\":[\"published\"]}", "1"],
    );
    assert_eq!(field(&x, "allowed"), Reply::Array(vec![]));

    // state (read-only; also through the _RO commands)
    let x = r.call_ro("workflow_state", &[w, h], &[]);
    assert_eq!(
        fields(&x),
        [
            "allowed",
            "created_at",
            "history",
            "history_limit",
            "id",
            "state",
            "updated_at",
            "version"
        ]
    );
    assert_eq!(text_field(&x, "state"), "completed");
    assert_eq!(int_field(&x, "version"), 4);
    assert_eq!(int_field(&x, "created_at"), created_at);
    assert!(int_field(&x, "updated_at") >= created_at);
    assert_eq!(strs(&field(&x, "history")), hist_of(r, h, 4));
    let x = r.call("workflow_state", &[w, h], &["1"]);
    assert_eq!(strs(&field(&x, "history")), hist_of(r, h, 1));
    let x = r.call("workflow_state", &[w, h], &["0"]);
    assert_eq!(field(&x, "history"), Reply::Array(vec![]));
    for bad in ["-1", "x", "1001", "01"] {
        assert_err(
            &r.call("workflow_state", &[w, h], &[bad]),
            "ERR history count must be an integer between 0 and 1000",
        );
    }
    assert_err(
        &r.call("workflow_state", &[w, h], &["1", "2"]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("workflow_state", &[w], &[]),
        "ERR wrong number of keys",
    );
    let (none, noneh) = (r.key("none"), r.key("noneh"));
    assert_err(
        &r.call("workflow_state", &[&none, &noneh], &[]),
        "ERR workflow not found",
    );
    assert_err(
        &r.call("workflow_state", &[str_key, h], &[]),
        "ERR workflow key holds the wrong kind of value",
    );
    // a hash that is not a workflow is refused, never half-read
    let bad = r.key("badwf");
    r.q(&["HSET", &bad, "id", "x"]).ok();
    assert_err(
        &r.call("workflow_state", &[&bad, &noneh], &[]),
        "ERR workflow key holds the wrong kind of value",
    );
    assert_err(
        &r.call("workflow_transition", &[&bad, &noneh], &["a"]),
        "ERR workflow key holds the wrong kind of value",
    );
    assert_eq!(r.int(&["EXISTS", &none, &noneh]), 0);
}

fn hist_of(r: &mut Run, h: &str, n: usize) -> Vec<String> {
    let mut v = strs(&r.q(&["LRANGE", h, "0", "-1"]));
    v.truncate(n);
    v
}

/// (version, from, to) of a history entry; checks its shape.
fn history_entry(e: &str) -> (i64, String, String) {
    let rest = e
        .strip_prefix("{\"version\":")
        .unwrap_or_else(|| panic!("entry {e}"));
    let (ver, rest) = rest.split_once(",\"from\":\"").unwrap();
    let (from, rest) = rest.split_once("\",\"to\":\"").unwrap();
    let (to, rest) = rest.split_once("\",\"at\":").unwrap();
    let at = rest.strip_suffix('}').unwrap();
    assert!(at.parse::<i64>().unwrap() > 1_600_000_000_000, "{e}");
    (ver.parse().unwrap(), from.to_string(), to.to_string())
}

#[test]
fn workflow_create_transition_state_and_errors_match_between_fcall_and_rx_call() {
    both_engines(workflow_scenario);
}

// ---------------------------------------------------------------------------
// session

fn session_scenario(r: &mut Run) {
    let (seq, s) = (r.key("session-seq"), r.key("sessions:alice"));
    let (seq, s) = (seq.as_str(), s.as_str());
    let (list, strk, none) = (r.key("list"), r.key("str"), r.key("none"));
    let (list, strk, none) = (list.as_str(), strk.as_str(), none.as_str());
    r.q(&["RPUSH", list, "x"]).ok();
    r.q(&["SET", strk, "abc"]).ok();
    let id1 = sha1hex(r.c, "1:alice");
    let id2 = sha1hex(r.c, "2:alice");

    // create
    let before = server_now_ms(r.c);
    let x = r.call("session_create", &[seq, s], &["alice", "100", "hello"]);
    assert_eq!(fields(&x), ["expires_at", "id", "sessions", "ttl", "user"]);
    assert_eq!(text_field(&x, "id"), id1);
    assert_eq!(text_field(&x, "user"), "alice");
    assert_eq!(int_field(&x, "ttl"), 100);
    assert_eq!(int_field(&x, "sessions"), 1);
    let exp1 = int_field(&x, "expires_at");
    assert!(exp1 >= before + 100_000 && exp1 <= server_now_ms(r.c) + 100_000);
    assert_eq!(r.q(&["GET", seq]).as_str(), Some("1"));
    assert_eq!(r.q(&["HGET", s, "user"]).as_str(), Some("alice"));
    assert_eq!(
        r.q(&["HGET", s, &format!("d:{id1}")]).as_str(),
        Some("hello")
    );
    assert_eq!(r.q(&["HGET", s, &format!("t:{id1}")]).as_str(), Some("100"));
    assert_eq!(
        r.q(&["HGET", s, &format!("e:{id1}")]).as_str(),
        Some(exp1.to_string().as_str())
    );
    let pttl = r.int(&["PTTL", s]);
    assert!(pttl > 95_000 && pttl <= 100_000, "{pttl}");

    let x = r.call("session_create", &[seq, s], &["alice", "10"]);
    assert_eq!(text_field(&x, "id"), id2);
    assert_eq!(int_field(&x, "sessions"), 2);
    assert_eq!(r.q(&["HGET", s, &format!("d:{id2}")]).as_str(), Some(""));
    // the key lives as long as its longest-lived session
    assert!(r.int(&["PTTL", s]) > 90_000);

    // create: errors, none of which writes
    assert_err(
        &r.call("session_create", &[s], &["alice", "10"]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("session_create", &[seq, s], &["alice"]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("session_create", &[seq, s], &["alice", "1", "d", "x"]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("session_create", &[seq, s], &["", "10"]),
        "ERR user must be a non-empty string",
    );
    for bad in [
        "0",
        "-1",
        "abc",
        "1.5",
        "01",
        "315360001",
        "",
        "99999999999",
    ] {
        assert_err(
            &r.call("session_create", &[seq, s], &["alice", bad]),
            "ERR ttl must be an integer between 1 and 315360000 (seconds)",
        );
    }
    assert_err(
        &r.call("session_create", &[seq, s], &["bob", "10"]),
        "ERR session key belongs to another user",
    );
    assert_err(
        &r.call("session_create", &[strk, none], &["alice", "10"]),
        "ERR counter key holds the wrong kind of value",
    );
    assert_err(
        &r.call("session_create", &[list, none], &["alice", "10"]),
        "ERR counter key holds the wrong kind of value",
    );
    assert_err(
        &r.call("session_create", &[seq, list], &["alice", "10"]),
        "ERR session key holds the wrong kind of value",
    );
    assert_eq!(r.q(&["GET", seq]).as_str(), Some("2"));
    assert_eq!(r.int(&["HLEN", s]), 7);
    assert_eq!(r.int(&["EXISTS", none]), 0);

    // a hash that is not a session key is refused and left alone
    let foreign = r.key("foreign");
    r.q(&["HSET", &foreign, "a", "b"]).ok();
    let wrong = "ERR session key holds the wrong kind of value";
    assert_err(
        &r.call("session_create", &[seq, &foreign], &["alice", "10"]),
        wrong,
    );
    assert_err(&r.call("session_get", &[&foreign], &[&id1]), wrong);
    assert_err(&r.call("session_destroy", &[&foreign], &[&id1]), wrong);
    assert_err(&r.call("session_destroy_all", &[&foreign], &[]), wrong);
    assert_eq!(r.q(&["HGET", &foreign, "a"]).as_str(), Some("b"));
    assert_eq!(r.q(&["GET", seq]).as_str(), Some("2"));

    // get: found, sliding expiry
    let x = r.call("session_get", &[s], &[&id1]);
    assert_eq!(
        fields(&x),
        ["data", "expires_at", "found", "id", "ttl", "user"]
    );
    assert_eq!(int_field(&x, "found"), 1);
    assert_eq!(text_field(&x, "id"), id1);
    assert_eq!(text_field(&x, "user"), "alice");
    assert_eq!(text_field(&x, "data"), "hello");
    assert_eq!(int_field(&x, "ttl"), 100);
    let exp = int_field(&x, "expires_at");
    assert!(exp >= exp1);
    assert_eq!(
        r.q(&["HGET", s, &format!("e:{id1}")]).as_str(),
        Some(exp.to_string().as_str())
    );
    // get: not found
    let x = r.call("session_get", &[s], &["nope"]);
    assert_eq!(
        dict(&x),
        BTreeMap::from([
            ("found".to_string(), Reply::Int(0)),
            ("id".to_string(), Reply::Bulk(b"nope".to_vec())),
        ])
    );
    let x = r.call("session_get", &[none], &[&id1]);
    assert_eq!(int_field(&x, "found"), 0);
    assert_eq!(r.int(&["EXISTS", none]), 0);
    // get: errors
    assert_err(
        &r.call("session_get", &[s], &[""]),
        "ERR session id must be a non-empty string",
    );
    assert_err(
        &r.call("session_get", &[s], &[]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("session_get", &[s], &[&id1, "x"]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("session_get", &[], &[&id1]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("session_get", &[s, seq], &[&id1]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("session_get", &[list], &[&id1]),
        "ERR session key holds the wrong kind of value",
    );

    // destroy
    let x = r.call("session_destroy", &[s], &[&id2]);
    assert_eq!(fields(&x), ["destroyed", "id", "sessions"]);
    assert_eq!(int_field(&x, "destroyed"), 1);
    assert_eq!(int_field(&x, "sessions"), 1);
    assert_eq!(r.int(&["HEXISTS", s, &format!("d:{id2}")]), 0);
    assert_eq!(r.int(&["HLEN", s]), 4);
    let x = r.call("session_destroy", &[s], &[&id2]);
    assert_eq!(int_field(&x, "destroyed"), 0);
    assert_eq!(int_field(&x, "sessions"), 1);
    let x = r.call("session_destroy", &[none], &[&id2]);
    assert_eq!(
        (int_field(&x, "destroyed"), int_field(&x, "sessions")),
        (0, 0)
    );
    assert_eq!(r.int(&["EXISTS", none]), 0);
    assert_err(
        &r.call("session_destroy", &[s], &[""]),
        "ERR session id must be a non-empty string",
    );
    assert_err(
        &r.call("session_destroy", &[s], &[]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("session_destroy", &[], &[&id1]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("session_destroy", &[list], &[&id1]),
        "ERR session key holds the wrong kind of value",
    );
    let x = r.call("session_get", &[s], &[&id2]);
    assert_eq!(int_field(&x, "found"), 0);

    // destroy_all
    r.call("session_create", &[seq, s], &["alice", "50", "third"])
        .ok();
    assert_err(
        &r.call("session_destroy_all", &[s], &["x"]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("session_destroy_all", &[], &[]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("session_destroy_all", &[s, seq], &[]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("session_destroy_all", &[list], &[]),
        "ERR session key holds the wrong kind of value",
    );
    let x = r.call("session_destroy_all", &[s], &[]);
    assert_eq!(
        dict(&x),
        BTreeMap::from([("destroyed".to_string(), Reply::Int(2))])
    );
    assert_eq!(r.int(&["EXISTS", s]), 0);
    let x = r.call("session_destroy_all", &[s], &[]);
    assert_eq!(int_field(&x, "destroyed"), 0);
    assert_eq!(int_field(&r.call("session_get", &[s], &[&id1]), "found"), 0);
    // ids are never reused: the counter survives destroy_all
    assert_eq!(r.q(&["GET", seq]).as_str(), Some("3"));
    let x = r.call("session_create", &[seq, s], &["alice", "5"]);
    assert_eq!(text_field(&x, "id"), sha1hex(r.c, "4:alice"));
    assert_eq!(int_field(&x, "sessions"), 1);
    // a binary-safe, odd user name
    let odd = r.key("sessions:odd");
    let x = r.call(
        "session_create",
        &[seq, &odd],
        &["a:b\r\n\u{e9}", "5", "d\0x"],
    );
    let id = text_field(&x, "id");
    assert_eq!(id, sha1hex(r.c, "5:a:b\r\n\u{e9}"));
    let x = r.call("session_get", &[&odd], &[&id]);
    assert_eq!(field(&x, "data"), Reply::Bulk(b"d\0x".to_vec()));
    assert_eq!(text_field(&x, "user"), "a:b\r\n\u{e9}");
}

#[test]
fn session_create_get_destroy_and_errors_match_between_fcall_and_rx_call() {
    both_engines(session_scenario);
}

#[test]
fn sessions_slide_on_get_and_expire_when_idle() {
    let s = Server::start();
    let mut c = s.conn();
    load_natively_and_into_rx(&mut c, &LIBS);
    let mut ids = Vec::new();
    for e in [Engine::Native, Engine::Rx] {
        let (seq, key) = (format!("{}:seq", e.tag()), format!("{}:s", e.tag()));
        let keep = call_with(
            &mut c,
            e.fcall(),
            "session_create",
            &[&seq, &key],
            &["u", "1"],
        );
        let idle = call_with(
            &mut c,
            e.fcall(),
            "session_create",
            &[&seq, &key],
            &["u", "1"],
        );
        ids.push((
            e,
            seq,
            key,
            text_field(&keep, "id"),
            text_field(&idle, "id"),
        ));
    }
    std::thread::sleep(Duration::from_millis(600));
    for (e, _, key, keep, _) in &ids {
        let x = call_with(&mut c, e.fcall(), "session_get", &[key], &[keep]);
        assert_eq!(int_field(&x, "found"), 1, "{e:?}");
    }
    std::thread::sleep(Duration::from_millis(600));
    // 1.2 s after creation: the idle session is gone, the one read at 0.6 s is alive
    for (e, _, key, keep, idle) in &ids {
        let x = call_with(&mut c, e.fcall(), "session_get", &[key], &[idle]);
        assert_eq!(int_field(&x, "found"), 0, "{e:?}");
        assert_eq!(
            c.q(&["HEXISTS", key, &format!("d:{idle}")]),
            Reply::Int(0),
            "pruned"
        );
        let x = call_with(&mut c, e.fcall(), "session_get", &[key], &[keep]);
        assert_eq!(int_field(&x, "found"), 1, "{e:?}");
    }
    std::thread::sleep(Duration::from_millis(1150));
    for (e, seq, key, keep, _) in &ids {
        assert_eq!(
            c.q(&["EXISTS", key]),
            Reply::Int(0),
            "{e:?}: key expired with its last session"
        );
        let x = call_with(&mut c, e.fcall(), "session_get", &[key], &[keep]);
        assert_eq!(int_field(&x, "found"), 0, "{e:?}");
        assert_eq!(c.q(&["GET", seq]).as_str(), Some("2"));
    }
}

// ---------------------------------------------------------------------------
// lock

fn lock_scenario(r: &mut Run) {
    let (l, f) = (r.key("lock"), r.key("fence"));
    let (l, f) = (l.as_str(), f.as_str());
    let (strk, list, none) = (r.key("str"), r.key("list"), r.key("none"));
    let (strk, list, none) = (strk.as_str(), list.as_str(), none.as_str());
    r.q(&["SET", strk, "abc"]).ok();
    r.q(&["RPUSH", list, "x"]).ok();

    // acquire
    let x = r.call("lock_acquire", &[l, f], &["A", "10000"]);
    assert_eq!(fields(&x), ["acquired", "fence", "holds", "ttl"]);
    assert_eq!(
        (
            int_field(&x, "acquired"),
            int_field(&x, "fence"),
            int_field(&x, "holds"),
            int_field(&x, "ttl")
        ),
        (1, 1, 1, 10000)
    );
    assert_eq!(r.q(&["HGET", l, "owner"]).as_str(), Some("A"));
    assert_eq!(r.q(&["HGET", l, "holds"]).as_str(), Some("1"));
    assert_eq!(r.q(&["HGET", l, "fence"]).as_str(), Some("1"));
    assert_eq!(r.q(&["GET", f]).as_str(), Some("1"));
    let pttl = r.int(&["PTTL", l]);
    assert!(pttl > 9000 && pttl <= 10000, "{pttl}");
    // re-entry by the same owner: same fence, one more hold, TTL reset
    let x = r.call("lock_acquire", &[l, f], &["A", "20000"]);
    assert_eq!(
        (
            int_field(&x, "acquired"),
            int_field(&x, "fence"),
            int_field(&x, "holds"),
            int_field(&x, "ttl")
        ),
        (1, 1, 2, 20000)
    );
    assert!(r.int(&["PTTL", l]) > 10000);
    assert_eq!(r.q(&["GET", f]).as_str(), Some("1"));
    // another owner: not acquired, told how long to wait, nothing changes
    let x = r.call("lock_acquire", &[l, f], &["B", "10000"]);
    assert_eq!(fields(&x), ["acquired", "ttl"]);
    assert_eq!(int_field(&x, "acquired"), 0);
    let wait = int_field(&x, "ttl");
    assert!(wait > 10000 && wait <= 20000, "{wait}");
    assert_eq!(r.q(&["HGET", l, "owner"]).as_str(), Some("A"));
    assert_eq!(r.q(&["HGET", l, "holds"]).as_str(), Some("2"));
    assert_eq!(r.q(&["GET", f]).as_str(), Some("1"));
    assert_err(
        &r.call("lock_release", &[l], &["B"]),
        "ERR lock is held by another owner",
    );
    assert_err(
        &r.call("lock_extend", &[l], &["B", "5000"]),
        "ERR lock is held by another owner",
    );

    // extend
    let x = r.call("lock_extend", &[l], &["A", "30000"]);
    assert_eq!(fields(&x), ["extended", "fence", "holds", "ttl"]);
    assert_eq!(
        (
            int_field(&x, "extended"),
            int_field(&x, "fence"),
            int_field(&x, "holds"),
            int_field(&x, "ttl")
        ),
        (1, 1, 2, 30000)
    );
    assert!(r.int(&["PTTL", l]) > 20000);
    assert_eq!(r.q(&["HGET", l, "holds"]).as_str(), Some("2"));

    // release: one hold at a time
    let x = r.call("lock_release", &[l], &["A"]);
    assert_eq!(fields(&x), ["fence", "holds", "released"]);
    assert_eq!(
        (
            int_field(&x, "released"),
            int_field(&x, "holds"),
            int_field(&x, "fence")
        ),
        (0, 1, 1)
    );
    assert_eq!(r.q(&["HGET", l, "holds"]).as_str(), Some("1"));
    let x = r.call("lock_release", &[l], &["A"]);
    assert_eq!(
        (
            int_field(&x, "released"),
            int_field(&x, "holds"),
            int_field(&x, "fence")
        ),
        (1, 0, 1)
    );
    assert_eq!(r.int(&["EXISTS", l]), 0);
    assert_err(
        &r.call("lock_release", &[l], &["A"]),
        "ERR lock is not held",
    );
    assert_err(
        &r.call("lock_extend", &[l], &["A", "1000"]),
        "ERR lock is not held",
    );
    assert_eq!(r.int(&["EXISTS", l]), 0);
    // the next holder gets a larger fencing token
    let x = r.call("lock_acquire", &[l, f], &["B", "10000"]);
    assert_eq!(
        (
            int_field(&x, "acquired"),
            int_field(&x, "fence"),
            int_field(&x, "holds")
        ),
        (1, 2, 1)
    );

    // acquire: errors, none of which writes
    let ttl_err = "ERR ttl must be an integer between 1 and 31536000000 (milliseconds)";
    assert_err(
        &r.call("lock_acquire", &[l], &["A", "10"]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("lock_acquire", &[l, f, none], &["A", "10"]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("lock_acquire", &[none, f], &["A"]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("lock_acquire", &[none, f], &["A", "10", "x"]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("lock_acquire", &[none, f], &["", "10"]),
        "ERR owner must be a non-empty string",
    );
    for bad in [
        "0",
        "-5",
        "x",
        "1.5",
        "010",
        "31536000001",
        "",
        "9999999999999999",
    ] {
        assert_err(&r.call("lock_acquire", &[none, f], &["A", bad]), ttl_err);
    }
    assert_err(
        &r.call("lock_acquire", &[strk, f], &["A", "10"]),
        "ERR lock key holds the wrong kind of value",
    );
    assert_err(
        &r.call("lock_acquire", &[none, strk], &["A", "10"]),
        "ERR fence key holds the wrong kind of value",
    );
    assert_err(
        &r.call("lock_acquire", &[none, list], &["A", "10"]),
        "ERR fence key holds the wrong kind of value",
    );
    // a hash that is not a lock is refused and left alone
    let foreign = r.key("foreign");
    r.q(&["HSET", &foreign, "a", "b"]).ok();
    let wrong = "ERR lock key holds the wrong kind of value";
    assert_err(&r.call("lock_acquire", &[&foreign, f], &["A", "10"]), wrong);
    assert_err(&r.call("lock_release", &[&foreign], &["A"]), wrong);
    assert_err(&r.call("lock_extend", &[&foreign], &["A", "10"]), wrong);
    assert_eq!(r.int(&["HLEN", &foreign]), 1);
    assert_eq!(r.int(&["PTTL", &foreign]), -1);
    assert_eq!(r.int(&["EXISTS", none]), 0);
    assert_eq!(r.q(&["GET", f]).as_str(), Some("2"));
    assert_eq!(r.q(&["GET", strk]).as_str(), Some("abc"));

    // release / extend: errors
    assert_err(
        &r.call("lock_release", &[], &["B"]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("lock_release", &[l, f], &["B"]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("lock_release", &[l], &[]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("lock_release", &[l], &["B", "x"]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("lock_release", &[l], &[""]),
        "ERR owner must be a non-empty string",
    );
    assert_err(
        &r.call("lock_release", &[list], &["B"]),
        "ERR lock key holds the wrong kind of value",
    );
    assert_err(
        &r.call("lock_extend", &[], &["B", "10"]),
        "ERR wrong number of keys",
    );
    assert_err(
        &r.call("lock_extend", &[l], &["B"]),
        "ERR wrong number of arguments",
    );
    assert_err(
        &r.call("lock_extend", &[l], &["", "10"]),
        "ERR owner must be a non-empty string",
    );
    for bad in ["0", "x", "31536000001"] {
        assert_err(&r.call("lock_extend", &[l], &["B", bad]), ttl_err);
    }
    assert_err(
        &r.call("lock_extend", &[list], &["B", "10"]),
        "ERR lock key holds the wrong kind of value",
    );
    assert_eq!(r.q(&["HGET", l, "owner"]).as_str(), Some("B"));
    assert_eq!(r.q(&["HGET", l, "holds"]).as_str(), Some("1"));
    let x = r.call("lock_release", &[l], &["B"]);
    assert_eq!(int_field(&x, "released"), 1);
}

#[test]
fn lock_acquire_release_extend_and_errors_match_between_fcall_and_rx_call() {
    both_engines(lock_scenario);
}

#[test]
fn an_expired_lock_can_be_taken_by_another_owner_with_a_larger_fence() {
    let s = Server::start();
    let mut c = s.conn();
    load_natively_and_into_rx(&mut c, &LIBS);
    for e in [Engine::Native, Engine::Rx] {
        let (l, f) = (format!("{}:l", e.tag()), format!("{}:f", e.tag()));
        let x = call_with(&mut c, e.fcall(), "lock_acquire", &[&l, &f], &["A", "100"]);
        assert_eq!(int_field(&x, "fence"), 1);
        let x = call_with(&mut c, e.fcall(), "lock_acquire", &[&l, &f], &["B", "100"]);
        assert_eq!(int_field(&x, "acquired"), 0);
        std::thread::sleep(Duration::from_millis(150));
        let x = call_with(&mut c, e.fcall(), "lock_acquire", &[&l, &f], &["B", "100"]);
        assert_eq!(
            (int_field(&x, "acquired"), int_field(&x, "fence")),
            (1, 2),
            "{e:?}"
        );
        assert_err(
            &call_with(&mut c, e.fcall(), "lock_release", &[&l], &["A"]),
            "ERR lock is held by another owner",
        );
    }
}

#[test]
fn a_lock_is_never_held_by_two_owners_at_once() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 100;
    let s = Server::start();
    let mut c = s.conn();
    load_natively_and_into_rx(&mut c, &LIBS);
    let port = s.port();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Conn::connect(port);
                let me = format!("owner-{t}");
                let mut fences = Vec::new();
                for round in 0..ROUNDS {
                    let mut tries = 0;
                    let fence = loop {
                        let x = c.q(&[
                            "RX.CALL",
                            "lock_acquire",
                            "2",
                            "{t}:lock",
                            "{t}:fence",
                            &me,
                            "10000",
                        ]);
                        if int_field(&x, "acquired") == 1 {
                            break int_field(&x, "fence");
                        }
                        tries += 1;
                        assert!(tries < 200_000, "{me} starved in round {round}");
                        std::thread::yield_now();
                    };
                    // critical section
                    assert_eq!(
                        c.q(&["INCR", "{t}:inside"]),
                        Reply::Int(1),
                        "two holders at once"
                    );
                    assert_eq!(
                        c.q(&["HGET", "{t}:lock", "owner"]).as_str(),
                        Some(me.as_str())
                    );
                    // re-entry inside the section keeps the same fence
                    let x = c.q(&[
                        "RX.CALL",
                        "lock_acquire",
                        "2",
                        "{t}:lock",
                        "{t}:fence",
                        &me,
                        "10000",
                    ]);
                    assert_eq!((int_field(&x, "fence"), int_field(&x, "holds")), (fence, 2));
                    let x = c.q(&["RX.CALL", "lock_release", "1", "{t}:lock", &me]);
                    assert_eq!(int_field(&x, "released"), 0);
                    assert_eq!(c.q(&["DECR", "{t}:inside"]), Reply::Int(0));
                    let x = c.q(&["RX.CALL", "lock_release", "1", "{t}:lock", &me]);
                    assert_eq!(int_field(&x, "released"), 1);
                    fences.push(fence);
                }
                fences
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for h in handles {
        let fences = h.join().expect("worker thread");
        // each owner sees strictly increasing fencing tokens
        assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
        all.extend(fences);
    }
    let n = (THREADS * ROUNDS) as i64;
    assert_eq!(all.len() as i64, n, "every acquisition got its own fence");
    assert_eq!(all.iter().next(), Some(&1));
    assert_eq!(all.iter().next_back(), Some(&n));
    assert_eq!(
        c.q(&["GET", "{t}:fence"]).as_str(),
        Some(n.to_string().as_str())
    );
    assert_eq!(c.q(&["EXISTS", "{t}:lock"]), Reply::Int(0));
}

// ---------------------------------------------------------------------------
// Cluster safety

#[test]
fn every_function_touches_only_the_keys_it_is_given() {
    let s = Server::start();
    let mut c = s.conn();
    load_natively_and_into_rx(&mut c, &LIBS);
    assert_eq!(c.q(&["DBSIZE"]), Reply::Int(0));
    let mut passed: BTreeSet<String> = BTreeSet::new();
    for e in [Engine::Native, Engine::Rx] {
        let p = |n: &str| format!("{{t}}:{}:{}", e.fcall(), n);
        let (w, h, seq, sess, l, f) = (
            p("wf"),
            p("hist"),
            p("seq"),
            p("sess"),
            p("lock"),
            p("fence"),
        );
        let mut call = |c: &mut Conn, f_: &str, keys: &[&str], args: &[&str]| -> Reply {
            for k in keys {
                passed.insert(k.to_string());
            }
            let r = call_with(c, e.fcall(), f_, keys, args);
            assert!(!r.is_error(), "{e:?} {f_}: {r:?}");
            r
        };
        call(
            &mut c,
            "workflow_create",
            &[&w, &h],
            &["id", "created", "", "3"],
        );
        for to in ["running", "paused", "running", "completed"] {
            call(&mut c, "workflow_transition", &[&w, &h], &[to]);
        }
        call(&mut c, "workflow_state", &[&w, &h], &["5"]);
        let x = call(&mut c, "session_create", &[&seq, &sess], &["u", "100", "d"]);
        let id = text_field(&x, "id");
        call(&mut c, "session_create", &[&seq, &sess], &["u", "100"]);
        call(&mut c, "session_get", &[&sess], &[&id]);
        call(&mut c, "session_destroy", &[&sess], &[&id]);
        call(&mut c, "session_create", &[&seq, &sess], &["u", "100"]);
        call(&mut c, "session_destroy_all", &[&sess], &[]);
        call(&mut c, "session_create", &[&seq, &sess], &["u", "100"]);
        call(&mut c, "lock_acquire", &[&l, &f], &["o", "10000"]);
        call(&mut c, "lock_acquire", &[&l, &f], &["o", "10000"]);
        call(&mut c, "lock_extend", &[&l], &["o", "20000"]);
        call(&mut c, "lock_release", &[&l], &["o"]);
        call(&mut c, "lock_acquire", &[&l, &f], &["other", "10000"]);
    }
    let keys: BTreeSet<String> = strs(&c.q(&["KEYS", "*"])).into_iter().collect();
    assert!(!keys.is_empty());
    let stray: Vec<&String> = keys.difference(&passed).collect();
    assert!(stray.is_empty(), "keys not passed in KEYS: {stray:?}");
    // all of them carry the one hash tag, so they hash to one cluster slot
    for k in &passed {
        assert!(k.starts_with("{t}:"), "{k}");
    }
    // and RX.CALL declares them, so cluster clients route them
    let r = c.q(&[
        "COMMAND",
        "GETKEYS",
        "RX.CALL",
        "lock_acquire",
        "2",
        "{t}:a",
        "{t}:b",
        "o",
        "10",
    ]);
    assert_eq!(strs(&r), ["{t}:a", "{t}:b"]);
}
