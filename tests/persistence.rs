//! Integration tests for persistence and propagation of RX libraries, against real
//! redis-server processes: RDB (SAVE + restart, DEBUG RELOAD), AOF (restart, rewrite with
//! and without the RDB preamble, kill -9 under load), replication (full sync, live
//! changes, promotion, effects replication of function writes), RX.DUMP/RX.RESTORE and
//! RX.IMPORT. Where native Redis has an equivalent, the outcome is compared with it.

mod common;

use common::stdlib::{comparable_listing, library_names};
use common::{info_field, parse_reply, wait_until, Conn, Reply, Server};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Libraries

const LIB_A: &str = "#!lua name=liba
redis.register_function{function_name='a_echo', callback=function(keys, args) return args[1] end, flags={'no-writes'}, description='echo the first argument'}
redis.register_function('a_incr', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)
redis.register_function('a_stamp', function(keys, args)
  local t = redis.call('TIME')
  redis.call('SET', keys[1], t[1] .. '.' .. t[2])
  return redis.call('INCR', keys[2])
end)
";

/// `liba` again, different code: `a_echo` answers differently and `a_stamp` is gone.
const LIB_A2: &str = "#!lua name=liba
redis.register_function{function_name='a_echo', callback=function(keys, args) return 'v2:' .. args[1] end, flags={'no-writes'}}
redis.register_function('a_incr', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)
";

const LIB_B: &str = "#!lua name=libb
-- UTF-8 in the source: clé, 日本語
redis.register_function{function_name='b_ver', callback=function() return 'libb:clé' end, flags={'no-writes', 'allow-stale'}, description='version, with UTF-8: é'}
redis.register_function('b_hset', function(keys, args) redis.call('HSET', keys[1], args[1], args[2]) return redis.call('HLEN', keys[1]) end)
";

const LIB_C: &str = "#!lua name=libc
redis.register_function{function_name='c_sum', callback=function(keys, args) local s = 0 for i = 1, #args do s = s + tonumber(args[i]) end return s end, flags={'no-writes'}}
redis.register_function('c_push', function(keys, args) return redis.call('LPUSH', keys[1], unpack(args)) end)
";

/// Registers a function whose name `liba` owns (`a_echo`), under another library name.
const LIB_X_STEALS_A_ECHO: &str = "#!lua name=libx
redis.register_function('a_echo', function(keys, args) return 'x' end)
";

const BIG_LEN: i64 = 128 * 1024;

/// A library whose source is larger than 128 KiB.
fn big_lib() -> String {
    let data = "0123456789abcdef".repeat(BIG_LEN as usize / 16);
    format!(
        "#!lua name=libbig\nlocal data = '{data}'\nredis.register_function{{function_name='big_len', callback=function() return #data end, flags={{'no-writes'}}}}\n"
    )
}

/// Calls one no-writes function of `lib` (so it also runs on read-only replicas) and
/// returns (reply, expected reply).
fn probe(c: &mut Conn, lib: &str) -> (Reply, Reply) {
    match lib {
        "liba" => (c.q(&["RX.CALL_RO", "a_echo", "0", "probe"]), bulk("probe")),
        "libb" => (c.q(&["RX.CALL_RO", "b_ver", "0"]), bulk("libb:clé")),
        "libc" => (
            c.q(&["RX.CALL_RO", "c_sum", "0", "1", "2", "3"]),
            Reply::Int(6),
        ),
        "libbig" => (c.q(&["RX.CALL_RO", "big_len", "0"]), Reply::Int(BIG_LEN)),
        _ => panic!("no probe for {lib}"),
    }
}

fn assert_callable(c: &mut Conn, libs: &[&str], ctx: &str) {
    for lib in libs {
        let (got, want) = probe(c, lib);
        assert_eq!(got, want, "{ctx}: function of {lib}");
    }
}

fn assert_absent(c: &mut Conn, libs: &[&str], ctx: &str) {
    for lib in libs {
        let (got, _) = probe(c, lib);
        assert_eq!(
            got.err_text(),
            Some("ERR Function not found"),
            "{ctx}: {lib} should be gone"
        );
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn bulk(s: &str) -> Reply {
    Reply::Bulk(s.as_bytes().to_vec())
}

fn ok() -> Reply {
    Reply::Status("OK".into())
}

fn load(c: &mut Conn, code: &str) {
    let r = c.q(&["RX.LOAD", code]);
    assert!(matches!(r, Reply::Bulk(_)), "RX.LOAD failed: {r:?}");
}

fn load_replace(c: &mut Conn, code: &str) {
    let r = c.q(&["RX.LOAD", "REPLACE", code]);
    assert!(matches!(r, Reply::Bulk(_)), "RX.LOAD REPLACE failed: {r:?}");
}

/// `RX.LIST WITHCODE WITHVERSIONS`: every library with its functions, flags, code,
/// version and digest.
fn rx_list(c: &mut Conn) -> Reply {
    c.q(&["RX.LIST", "WITHCODE", "WITHVERSIONS"]).ok()
}

/// A listing without RX's `version` fields: a restore installs the same code (same
/// digest) at a new version, as any load does.
fn without_versions(list: Reply) -> Reply {
    let libs = list.as_array().expect("list is an array").iter();
    Reply::Array(
        libs.map(|lib| {
            let kv = lib.as_array().expect("library entry");
            Reply::Array(
                kv.chunks(2)
                    .filter(|p| p[0].as_str() != Some("version"))
                    .flatten()
                    .cloned()
                    .collect(),
            )
        })
        .collect(),
    )
}

/// Library names listed by `RX.LIST`, sorted.
fn rx_names(c: &mut Conn) -> Vec<String> {
    library_names(&c.q(&["RX.LIST"]).ok())
}

/// A listing made comparable (`common::stdlib::comparable_listing`); panics on anything else.
fn normalize(list: &Reply) -> Reply {
    comparable_listing(list).unwrap_or_else(|| panic!("not a library listing: {list:?}"))
}

fn native_list(c: &mut Conn) -> Reply {
    c.q(&["FUNCTION", "LIST", "WITHCODE"]).ok()
}

fn digest(c: &mut Conn) -> String {
    c.q(&["DEBUG", "DIGEST"])
        .ok()
        .as_str()
        .expect("digest")
        .to_string()
}

fn rx_dump(c: &mut Conn) -> Vec<u8> {
    match c.q(&["RX.DUMP"]) {
        Reply::Bulk(b) => b,
        other => panic!("RX.DUMP: {other:?}"),
    }
}

fn rx_restore(c: &mut Conn, payload: &[u8], policy: Option<&str>) -> Reply {
    let mut args: Vec<&[u8]> = vec![b"RX.RESTORE", payload];
    if let Some(p) = policy {
        args.push(p.as_bytes());
    }
    c.cmd(&args)
}

/// A master that starts a full sync at once (no diskless delay), plus extra arguments.
fn start_master(extra: &[&str]) -> Server {
    let mut args = vec!["--repl-diskless-sync-delay", "0"];
    args.extend_from_slice(extra);
    Server::start_with(&args, &[])
}

fn start_replica_of(master: &Server) -> Server {
    let port = master.port().to_string();
    Server::start_with(&["--replicaof", "127.0.0.1", &port], &[])
}

/// Waits for the replica's link to be up and for it to have processed everything the
/// master has propagated so far.
fn wait_synced(m: &mut Conn, r: &mut Conn) {
    wait_until("replica link up", Duration::from_secs(30), || {
        info_field(r, "replication", "master_link_status").as_deref() == Some("up")
    });
    wait_until(
        "replica offset to reach the master's",
        Duration::from_secs(30),
        || {
            let mo = info_field(m, "replication", "master_repl_offset");
            let ro = info_field(r, "replication", "master_repl_offset");
            mo.is_some() && mo == ro
        },
    );
}

/// Everything in the AOF's command files (`appendonlydir/*.aof`; an RDB preamble base is
/// `*.base.rdb` and not included).
fn aof_commands(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let d = dir.join("appendonlydir");
    let mut files: Vec<_> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("read {}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "aof"))
        .collect();
    files.sort();
    for f in files {
        out.extend(std::fs::read(&f).unwrap());
    }
    out
}

fn aof_file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("appendonlydir"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn contains_ci(hay: &[u8], needle: &str) -> bool {
    let hay = hay.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase().into_bytes();
    hay.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// BGREWRITEAOF, then wait until the rewrite is done and check it succeeded.
fn rewrite_aof(c: &mut Conn) {
    let r = c.q(&["BGREWRITEAOF"]);
    let text = r.as_str().unwrap_or_default().to_string();
    assert!(
        text.starts_with("Background append only file rewriting"),
        "BGREWRITEAOF: {r:?}"
    );
    wait_until("AOF rewrite to finish", Duration::from_secs(30), || {
        info_field(c, "persistence", "aof_rewrite_in_progress").as_deref() == Some("0")
            && info_field(c, "persistence", "aof_rewrite_scheduled").as_deref() == Some("0")
    });
    assert_eq!(
        info_field(c, "persistence", "aof_last_bgrewrite_status").as_deref(),
        Some("ok")
    );
}

/// Log lines at warning level (`#`) that mention `aof-use-rdb-preamble`.
fn preamble_warnings(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(" # ") && l.contains("aof-use-rdb-preamble"))
        .count()
}

/// SIGKILL the server (the harness's `restart` kills with `Child::kill`, i.e. SIGKILL on
/// Unix, no shutdown work at all) and start it again on the same directory.
/// Servers killed this way after AOF writes run with `appendfsync always`: with
/// `everysec`, Redis may hold writes in memory for up to 2 s while a background fsync is
/// pending (e.g. right after a rewrite), and a SIGKILL then loses them by design.
fn kill9_and_restart(s: &mut Server) {
    s.restart();
}

// ---------------------------------------------------------------------------
// RDB

#[test]
fn save_and_restart_restores_every_library_and_function() {
    let mut s = Server::start();
    let mut c = s.conn();
    let big = big_lib();
    for lib in [LIB_A, LIB_B, LIB_C, big.as_str()] {
        load(&mut c, lib);
    }
    assert_eq!(c.q(&["RX.CALL", "a_incr", "1", "n", "5"]), Reply::Int(5));
    assert_eq!(
        c.q(&["RX.CALL", "b_hset", "1", "h", "f", "v"]),
        Reply::Int(1)
    );
    let libs = rx_list(&mut c);
    let data = digest(&mut c);
    let all = ["liba", "libb", "libc", "libbig"];

    // SAVE, then SIGKILL: the restart loads dump.rdb.
    assert_eq!(c.q(&["SAVE"]), ok());
    s.restart();
    let mut c = s.conn();
    assert_eq!(rx_list(&mut c), libs, "after SAVE + kill + restart");
    assert_eq!(digest(&mut c), data);
    assert_callable(&mut c, &all, "after SAVE + restart");
    assert_eq!(c.q(&["RX.CALL", "a_incr", "1", "n", "1"]), Reply::Int(6));
    assert_eq!(
        c.q(&["RX.CALL", "c_push", "1", "l", "x", "y"]),
        Reply::Int(2)
    );
    // The restored libraries are registered, not only listed: their names and their
    // function names are taken.
    assert!(
        c.q(&["RX.LOAD", LIB_A]).is_error(),
        "liba loaded twice after restore"
    );
    assert!(
        c.q(&["RX.LOAD", LIB_X_STEALS_A_ECHO]).is_error(),
        "a_echo taken twice after restore"
    );
    assert_eq!(c.q(&["RX.CALL", "a_echo", "0", "still"]), bulk("still"));

    // SHUTDOWN SAVE and start again.
    let libs = rx_list(&mut c);
    let data = digest(&mut c);
    s.restart_graceful(true);
    let mut c = s.conn();
    assert_eq!(rx_list(&mut c), libs, "after SHUTDOWN SAVE + restart");
    assert_eq!(digest(&mut c), data);
    assert_callable(&mut c, &all, "after SHUTDOWN SAVE + restart");
}

#[test]
fn debug_reload_resets_the_registry_to_what_the_rdb_carries() {
    let s = Server::start();
    let mut c = s.conn();
    // The same steps natively, side by side, as the reference.
    for lib in [LIB_A, LIB_B] {
        load(&mut c, lib);
        c.q(&["FUNCTION", "LOAD", lib]).ok();
    }
    assert_eq!(c.q(&["SAVE"]), ok());
    load(&mut c, LIB_C);
    c.q(&["FUNCTION", "LOAD", LIB_C]).ok();
    assert_eq!(c.q(&["RX.DELETE", "libb"]), ok());
    c.q(&["FUNCTION", "DELETE", "libb"]).ok();

    // Load the RDB saved before libc was loaded and libb deleted.
    assert_eq!(c.q(&["DEBUG", "RELOAD", "NOSAVE"]), ok());
    assert_eq!(rx_names(&mut c), vec!["liba", "libb"]);
    assert_eq!(
        normalize(&rx_list(&mut c)),
        normalize(&native_list(&mut c)),
        "RX vs native after DEBUG RELOAD NOSAVE"
    );
    assert_callable(&mut c, &["liba", "libb"], "after DEBUG RELOAD NOSAVE");
    assert_absent(&mut c, &["libc"], "after DEBUG RELOAD NOSAVE");
    // libc's name and functions are free again.
    load(&mut c, LIB_C);

    // DEBUG RELOAD (saving first) keeps the current state.
    let libs = rx_list(&mut c);
    assert_eq!(c.q(&["DEBUG", "RELOAD"]), ok());
    assert_eq!(rx_list(&mut c), libs, "after DEBUG RELOAD");
    assert_callable(&mut c, &["liba", "libb", "libc"], "after DEBUG RELOAD");

    // An RDB saved with no library at all still resets the registry when it loads.
    assert_eq!(c.q(&["RX.FLUSH"]), ok());
    c.q(&["FUNCTION", "FLUSH"]).ok();
    assert_eq!(c.q(&["SAVE"]), ok());
    load(&mut c, LIB_A);
    c.q(&["FUNCTION", "LOAD", LIB_A]).ok();
    assert_eq!(c.q(&["DEBUG", "RELOAD", "NOSAVE"]), ok());
    assert_eq!(
        rx_list(&mut c),
        Reply::Array(vec![]),
        "library loaded after an empty SAVE survived DEBUG RELOAD NOSAVE"
    );
    assert_eq!(native_list(&mut c), Reply::Array(vec![]));
    assert_absent(&mut c, &["liba"], "after reloading an empty RDB");
    load(&mut c, LIB_A);
}

#[test]
fn debug_reload_noflush_merge_keeps_libraries_the_rdb_lacks() {
    let s = Server::start();
    let mut c = s.conn();
    load(&mut c, LIB_A);
    c.q(&["FUNCTION", "LOAD", LIB_A]).ok();
    assert_eq!(c.q(&["SAVE"]), ok());
    // Loaded after the save: not in the RDB.
    load(&mut c, LIB_B);
    c.q(&["FUNCTION", "LOAD", LIB_B]).ok();
    // Merging the RDB into the current dataset keeps both, natively and in RX.
    assert_eq!(
        c.q(&["DEBUG", "RELOAD", "NOSAVE", "NOFLUSH", "MERGE"]),
        ok()
    );
    assert_eq!(library_names(&native_list(&mut c)), vec!["liba", "libb"]);
    assert_eq!(rx_names(&mut c), vec!["liba", "libb"]);
    assert_eq!(
        normalize(&rx_list(&mut c)),
        normalize(&native_list(&mut c)),
        "RX vs native after DEBUG RELOAD NOSAVE NOFLUSH MERGE"
    );
    assert_callable(&mut c, &["liba", "libb"], "after the merge");
    // A FLUSHALL before the reload does not make the merge a reset (FLUSHALL keeps
    // functions), and a plain reload after that still resets.
    assert_eq!(c.q(&["FLUSHALL"]), ok());
    assert_eq!(
        c.q(&["DEBUG", "RELOAD", "NOSAVE", "NOFLUSH", "MERGE"]),
        ok()
    );
    assert_eq!(library_names(&native_list(&mut c)), vec!["liba", "libb"]);
    assert_eq!(rx_names(&mut c), vec!["liba", "libb"]);
    assert_eq!(c.q(&["DEBUG", "RELOAD", "NOSAVE"]), ok());
    assert_eq!(library_names(&native_list(&mut c)), vec!["liba"]);
    assert_eq!(rx_names(&mut c), vec!["liba"]);
}

// ---------------------------------------------------------------------------
// Replication

#[test]
fn full_sync_gives_a_replica_every_library_and_drops_its_own() {
    // The replica loads from disk, or straight from the socket into a temporary dataset
    // swapped in at the end (swapdb).
    for (diskless, replica_load) in [("yes", "disabled"), ("no", "disabled"), ("yes", "swapdb")] {
        let master = start_master(&["--repl-diskless-sync", diskless]);
        let mut m = master.conn();
        let big = big_lib();
        for lib in [LIB_A, LIB_B, big.as_str()] {
            load(&mut m, lib);
        }
        m.q(&["RX.CALL", "a_stamp", "2", "stamp", "cnt"]).ok();
        m.q(&["RX.CALL", "b_hset", "1", "h", "f", "v"]).ok();

        // A standalone server with a library of its own becomes a replica: the full sync
        // replaces its registry with the master's, as it does for native functions.
        let replica = Server::start_with(&["--repl-diskless-load", replica_load], &[]);
        let mut r = replica.conn();
        load(&mut r, LIB_C);
        r.q(&["FUNCTION", "LOAD", LIB_C]).ok();
        assert_eq!(
            r.q(&["REPLICAOF", "127.0.0.1", &master.port().to_string()]),
            ok()
        );
        wait_synced(&mut m, &mut r);
        let ctx = format!("diskless sync {diskless}, replica load {replica_load}");
        assert_eq!(
            rx_list(&mut r),
            rx_list(&mut m),
            "{ctx}: replica's libraries"
        );
        assert_eq!(
            native_list(&mut r),
            Reply::Array(vec![]),
            "{ctx}: native reference dropped the replica's own library"
        );
        assert_callable(&mut r, &["liba", "libb", "libbig"], &ctx);
        assert_absent(&mut r, &["libc"], &ctx);
        assert_eq!(digest(&mut r), digest(&mut m), "{ctx}: dataset");

        // A replica started with --replicaof, after the libraries were loaded.
        let replica2 = start_replica_of(&master);
        let mut r2 = replica2.conn();
        wait_synced(&mut m, &mut r2);
        assert_eq!(
            rx_list(&mut r2),
            rx_list(&mut m),
            "{ctx}: second replica's libraries"
        );
        assert_callable(&mut r2, &["liba", "libb", "libbig"], &ctx);
    }
}

#[test]
fn attached_replica_follows_load_delete_flush_and_restore() {
    let master = start_master(&[]);
    let mut m = master.conn();
    let replica = start_replica_of(&master);
    let mut r = replica.conn();
    wait_synced(&mut m, &mut r);

    let check = |m: &mut Conn, r: &mut Conn, step: &str| {
        wait_synced(m, r);
        assert_eq!(rx_list(r), rx_list(m), "replica after {step}");
    };
    load(&mut m, LIB_A);
    load(&mut m, LIB_B);
    check(&mut m, &mut r, "RX.LOAD liba, libb");
    assert_callable(&mut r, &["liba", "libb"], "replica");
    let d_ab = rx_dump(&mut m);
    load_replace(&mut m, LIB_A2);
    check(&mut m, &mut r, "RX.LOAD REPLACE");
    assert_eq!(r.q(&["RX.CALL_RO", "a_echo", "0", "z"]), bulk("v2:z"));
    assert_eq!(m.q(&["RX.DELETE", "libb"]), ok());
    check(&mut m, &mut r, "RX.DELETE");
    assert_absent(&mut r, &["libb"], "replica after RX.DELETE");
    assert_eq!(rx_restore(&mut m, &d_ab, Some("REPLACE")), ok());
    check(&mut m, &mut r, "RX.RESTORE REPLACE");
    assert_callable(
        &mut r,
        &["liba", "libb"],
        "replica after RX.RESTORE REPLACE",
    );
    assert_eq!(m.q(&["RX.FLUSH"]), ok());
    check(&mut m, &mut r, "RX.FLUSH");
    assert_eq!(rx_names(&mut r), Vec::<String>::new());
    assert_eq!(rx_restore(&mut m, &d_ab, None), ok());
    check(&mut m, &mut r, "RX.RESTORE (APPEND)");
    load(&mut m, LIB_C);
    // A failed restore changes nothing anywhere.
    assert!(rx_restore(&mut m, &d_ab, Some("APPEND")).is_error());
    check(&mut m, &mut r, "failed RX.RESTORE APPEND");
    assert_eq!(rx_restore(&mut m, &d_ab, Some("FLUSH")), ok());
    check(&mut m, &mut r, "RX.RESTORE FLUSH");
    assert_eq!(rx_names(&mut r), vec!["liba", "libb"]);
    assert_eq!(m.q(&["RX.FLUSH", "ASYNC"]), ok());
    load(&mut m, LIB_C);
    check(&mut m, &mut r, "RX.FLUSH ASYNC + RX.LOAD");
    assert_eq!(rx_names(&mut r), vec!["libc"]);
    assert_callable(&mut r, &["libc"], "replica at the end");
    assert_absent(&mut r, &["liba", "libb"], "replica at the end");
}

#[test]
fn promoted_replica_runs_every_function() {
    let master = start_master(&[]);
    let mut m = master.conn();
    load(&mut m, LIB_A); // reaches the replica through the full sync
    let replica = start_replica_of(&master);
    let mut r = replica.conn();
    wait_synced(&mut m, &mut r);
    load(&mut m, LIB_B); // through the replication stream
    load(&mut m, LIB_C);
    let d_c = rx_dump(&mut m);
    assert_eq!(m.q(&["RX.DELETE", "libc"]), ok());
    assert_eq!(rx_restore(&mut m, &d_c, Some("REPLACE")), ok()); // libc back through RX.RESTORE
    m.q(&["RX.CALL", "a_incr", "1", "n", "10"]).ok();
    m.q(&["RX.CALL", "b_hset", "1", "h", "f", "v"]).ok();
    m.q(&["RX.CALL", "c_push", "1", "l", "a", "b"]).ok();
    wait_synced(&mut m, &mut r);
    let libs = rx_list(&mut m);
    drop(m);
    drop(master);

    assert_eq!(r.q(&["REPLICAOF", "NO", "ONE"]), ok());
    assert_eq!(
        info_field(&mut r, "replication", "role").as_deref(),
        Some("master")
    );
    assert_eq!(rx_list(&mut r), libs);
    assert_callable(&mut r, &["liba", "libb", "libc"], "promoted replica");
    // Writing functions run now, on the replicated data.
    assert_eq!(r.q(&["RX.CALL", "a_incr", "1", "n", "1"]), Reply::Int(11));
    assert_eq!(
        r.q(&["RX.CALL", "a_stamp", "2", "stamp", "cnt"]),
        Reply::Int(1)
    );
    assert_eq!(
        r.q(&["RX.CALL", "b_hset", "1", "h", "g", "w"]),
        Reply::Int(2)
    );
    assert_eq!(r.q(&["RX.CALL", "c_push", "1", "l", "c"]), Reply::Int(3));
    assert_eq!(r.q(&["RX.CALL", "c_sum", "0", "4", "5"]), Reply::Int(9));
    assert_eq!(r.q(&["RX.CALL", "b_ver", "0"]), bulk("libb:clé"));
    // And the library set can change there.
    assert_eq!(r.q(&["RX.DELETE", "libc"]), ok());
    load(&mut r, LIB_C);
}

const LIB_FX: &str = "#!lua name=fx
redis.register_function('fx_stamp', function(keys, args)
  local t = redis.call('TIME')
  redis.call('SET', keys[1], t[1] .. '.' .. t[2])
  local n = redis.call('INCR', keys[2])
  redis.call('RPUSH', 'fx:log', n .. '@' .. t[1] .. '.' .. t[2])
  redis.call('ZADD', 'fx:z', tonumber(t[2]), 'm' .. n)
  return n
end)
";

#[test]
fn function_writes_reach_replica_and_aof_as_effects_not_reruns() {
    let master = start_master(&["--appendonly", "yes"]);
    let mut m = master.conn();
    let replica = start_replica_of(&master);
    let mut r = replica.conn();
    wait_synced(&mut m, &mut r);
    load(&mut m, LIB_FX);
    for i in 0..200 {
        let key = format!("stamp:{}", i % 7);
        assert_eq!(
            m.q(&["RX.CALL", "fx_stamp", "2", &key, "fx:counter"]),
            Reply::Int(i + 1)
        );
    }
    wait_synced(&mut m, &mut r);
    // TIME differs on every run: a replica re-running the function would hold other values.
    assert_eq!(
        digest(&mut r),
        digest(&mut m),
        "replica dataset differs from the master's"
    );
    for k in ["stamp:0", "stamp:6", "fx:counter"] {
        assert_eq!(r.q(&["GET", k]), m.q(&["GET", k]), "{k}");
    }
    assert_eq!(
        r.q(&["LRANGE", "fx:log", "0", "-1"]),
        m.q(&["LRANGE", "fx:log", "0", "-1"])
    );

    // The AOF holds the commands the function ran, in MULTI/EXEC, and never RX.CALL. With
    // appendfsync everysec a write can be postponed while a background fsync runs (seen
    // on Valkey 8.1: 189 of 200 transactions in the file right after the calls), so wait
    // for all of them first.
    let multis_in = |aof: &[u8]| {
        String::from_utf8_lossy(aof)
            .to_ascii_lowercase()
            .matches("\r\nmulti\r\n")
            .count()
    };
    wait_until(
        "200 transactions in the AOF",
        Duration::from_secs(10),
        || multis_in(&aof_commands(master.dir())) >= 200,
    );
    let aof = aof_commands(master.dir());
    // Library changes travel as RX.APPLY, which carries the master's versions.
    assert!(
        contains_ci(&aof, "RX.APPLY"),
        "RX.APPLY missing from the AOF"
    );
    assert!(
        !contains_ci(&aof, "RX.CALL"),
        "RX.CALL was propagated to the AOF"
    );
    assert!(!contains_ci(&aof, "\r\nTIME\r\n"), "TIME in the AOF");
    for cmd in ["MULTI", "EXEC", "SET", "INCR", "RPUSH", "ZADD"] {
        assert!(
            contains_ci(&aof, &format!("\r\n{cmd}\r\n")),
            "{cmd} missing from the AOF"
        );
    }
    let multis = multis_in(&aof);
    assert!(multis >= 200, "{multis} MULTI in the AOF for 200 calls");
}

const LIB_MIX: &str = "#!lua name=mix
redis.register_function('m_incrby', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)
redis.register_function('m_hset', function(keys, args)
  redis.call('HSET', keys[1], args[1], args[2])
  return redis.call('HINCRBY', keys[1], 'n', 1)
end)
redis.register_function('m_lpush', function(keys, args)
  redis.call('LPUSH', keys[1], args[1])
  redis.call('LTRIM', keys[1], 0, 49)
  return redis.call('LLEN', keys[1])
end)
redis.register_function('m_setex', function(keys, args)
  redis.call('SET', keys[1], args[1], 'EX', 3600)
  redis.call('EXPIRE', keys[2], 7200)
  return redis.call('TTL', keys[1])
end)
redis.register_function('m_time', function(keys, args)
  local t = redis.call('TIME')
  redis.call('SET', keys[1], t[1] .. t[2], 'PX', 5000000)
  return redis.call('INCR', 'mix:calls')
end)
redis.register_function('m_zadd', function(keys, args)
  local t = redis.call('TIME')
  return redis.call('ZADD', keys[1], tonumber(t[2]), args[1])
end)
redis.register_function('m_del', function(keys, args) return redis.call('DEL', keys[1]) end)
";

#[test]
fn ten_thousand_mixed_function_writes_leave_master_and_replica_identical() {
    let master = start_master(&[]);
    let mut m = master.conn();
    let replica = start_replica_of(&master);
    let mut r = replica.conn();
    wait_synced(&mut m, &mut r);
    load(&mut m, LIB_MIX);

    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut total = 0;
    for _batch in 0..10 {
        let mut cmds: Vec<Vec<Vec<u8>>> = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let k = next(200);
            let v = next(1_000_000);
            let args: Vec<String> = match next(7) {
                0 => vec![
                    "m_incrby".into(),
                    "1".into(),
                    format!("mix:n:{k}"),
                    format!("{}", v as i64 - 500_000),
                ],
                1 => vec![
                    "m_hset".into(),
                    "1".into(),
                    format!("mix:h:{}", k % 50),
                    format!("f{}", v % 100),
                    v.to_string(),
                ],
                2 => vec![
                    "m_lpush".into(),
                    "1".into(),
                    format!("mix:l:{}", k % 30),
                    v.to_string(),
                ],
                3 => vec![
                    "m_setex".into(),
                    "2".into(),
                    format!("mix:s:{k}"),
                    format!("mix:n:{k}"),
                    v.to_string(),
                ],
                4 => vec!["m_time".into(), "1".into(), format!("mix:t:{}", k % 20)],
                5 => vec!["m_zadd".into(), "1".into(), "mix:z".into(), format!("m{k}")],
                _ => vec!["m_del".into(), "1".into(), format!("mix:n:{}", k % 40)],
            };
            let mut cmd = vec![b"RX.CALL".to_vec()];
            cmd.extend(args.into_iter().map(String::into_bytes));
            cmds.push(cmd);
        }
        for (i, raw) in m.pipeline(cmds).into_iter().enumerate() {
            let reply = parse_reply(&raw);
            assert!(!reply.is_error(), "call {} failed: {reply:?}", total + i);
        }
        total += 1000;
    }
    assert_eq!(total, 10_000);
    wait_synced(&mut m, &mut r);
    let md = digest(&mut m);
    assert_ne!(md, "0".repeat(40), "master dataset is empty");
    assert_eq!(
        digest(&mut r),
        md,
        "replica dataset differs after 10,000 function calls"
    );
    assert_eq!(r.q(&["DBSIZE"]), m.q(&["DBSIZE"]));
    assert_eq!(r.q(&["GET", "mix:calls"]), m.q(&["GET", "mix:calls"]));
}

// ---------------------------------------------------------------------------
// AOF

#[test]
fn aof_restart_restores_every_library_and_key() {
    let mut s = Server::start_with(&["--appendonly", "yes", "--appendfsync", "always"], &[]);
    let mut c = s.conn();
    for lib in [LIB_A, LIB_B, LIB_C] {
        load(&mut c, lib);
    }
    let d_abc = rx_dump(&mut c);
    assert_eq!(c.q(&["RX.CALL", "a_incr", "1", "n", "5"]), Reply::Int(5));
    c.q(&["RX.CALL", "a_stamp", "2", "stamp", "cnt"]).ok();
    c.q(&["RX.CALL", "b_hset", "1", "h", "f", "v"]).ok();
    c.q(&["RX.CALL", "c_push", "1", "l", "x", "y", "z"]).ok();
    assert_eq!(c.q(&["RX.DELETE", "libc"]), ok());
    load_replace(&mut c, LIB_A2);
    assert_eq!(c.q(&["RX.FLUSH"]), ok());
    assert_eq!(rx_restore(&mut c, &d_abc, None), ok()); // liba, libb, libc
    load_replace(&mut c, LIB_A2);
    load(&mut c, &big_lib());
    assert_eq!(c.q(&["RX.DELETE", "libb"]), ok());
    assert_eq!(rx_restore(&mut c, &d_abc, Some("REPLACE")), ok()); // liba (original), libb, libc, libbig
                                                                   // Failures in the middle change nothing, now or on replay.
    assert!(rx_restore(&mut c, &d_abc, Some("APPEND")).is_error());
    assert!(c.q(&["RX.LOAD", LIB_C]).is_error());
    assert_eq!(c.q(&["RX.DELETE", "libc"]), ok());
    c.q(&["RX.CALL", "a_stamp", "2", "stamp", "cnt"]).ok();
    let libs = rx_list(&mut c);
    let data = digest(&mut c);
    assert_eq!(rx_names(&mut c), vec!["liba", "libb", "libbig"]);

    let aof = aof_commands(s.dir());
    // RX.LOAD, RX.DELETE, RX.FLUSH and RX.RESTORE are propagated as RX.APPLY of the
    // versioned changes they made; their effect is checked by the restart below.
    for cmd in ["RX.APPLY", "MULTI", "EXEC"] {
        assert!(contains_ci(&aof, cmd), "{cmd} missing from the AOF");
    }
    assert!(
        !contains_ci(&aof, "RX.CALL"),
        "RX.CALL was propagated to the AOF"
    );

    s.restart_graceful(false);
    let mut c = s.conn();
    assert_eq!(
        rx_list(&mut c),
        libs,
        "after SHUTDOWN NOSAVE + restart from the AOF"
    );
    assert_eq!(digest(&mut c), data);
    assert_callable(
        &mut c,
        &["liba", "libb", "libbig"],
        "after restart from the AOF",
    );
    assert_absent(&mut c, &["libc"], "after restart from the AOF");

    kill9_and_restart(&mut s);
    let mut c = s.conn();
    assert_eq!(
        rx_list(&mut c),
        libs,
        "after kill -9 + restart from the AOF"
    );
    assert_eq!(digest(&mut c), data);

    // Reloading the AOF in place (DEBUG LOADAOF) gives the same state, not duplicates.
    assert_eq!(c.q(&["DEBUG", "LOADAOF"]), ok());
    assert_eq!(rx_list(&mut c), libs, "after DEBUG LOADAOF");
    assert_eq!(digest(&mut c), data);
    assert_callable(&mut c, &["liba", "libb", "libbig"], "after DEBUG LOADAOF");
}

#[test]
fn aof_rewrite_with_rdb_preamble_keeps_libraries() {
    let mut s = Server::start_with(
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--aof-use-rdb-preamble",
            "yes",
        ],
        &[],
    );
    let mut c = s.conn();
    assert_eq!(
        info_field(&mut c, "rx", "rx_aof_rewrite_keeps_libraries").as_deref(),
        Some("1")
    );
    for lib in [LIB_A, LIB_B] {
        load(&mut c, lib);
    }
    c.q(&["RX.CALL", "a_incr", "1", "n", "3"]).ok();
    rewrite_aof(&mut c);
    assert!(
        aof_file_names(s.dir())
            .iter()
            .any(|f| f.ends_with(".base.rdb")),
        "no RDB base: {:?}",
        aof_file_names(s.dir())
    );
    // After the rewrite: into the new incremental file.
    load(&mut c, LIB_C);
    c.q(&["RX.CALL", "c_push", "1", "l", "x"]).ok();
    let libs = rx_list(&mut c);
    let data = digest(&mut c);

    kill9_and_restart(&mut s);
    let mut c = s.conn();
    assert_eq!(rx_list(&mut c), libs, "after BGREWRITEAOF + restart");
    assert_eq!(digest(&mut c), data);
    assert_callable(
        &mut c,
        &["liba", "libb", "libc"],
        "after BGREWRITEAOF + restart",
    );

    // A second rewrite, then a graceful restart.
    rewrite_aof(&mut c);
    s.restart_graceful(false);
    let mut c = s.conn();
    assert_eq!(rx_list(&mut c), libs, "after a second rewrite + restart");
    assert_eq!(digest(&mut c), data);
    assert_eq!(
        preamble_warnings(&s.log()),
        0,
        "warned although the preamble is on:\n{}",
        s.log()
    );
}

#[test]
fn aof_rewrite_without_rdb_preamble_drops_libraries_and_says_so() {
    let mut s = Server::start_with(
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--aof-use-rdb-preamble",
            "no",
        ],
        &[],
    );
    let mut c = s.conn();
    // Said at startup, in the log and in INFO.
    wait_until(
        "startup warning about aof-use-rdb-preamble",
        Duration::from_secs(5),
        || preamble_warnings(&s.log()) >= 1,
    );
    assert_eq!(
        info_field(&mut c, "rx", "rx_aof_rewrite_keeps_libraries").as_deref(),
        Some("0")
    );

    for lib in [LIB_A, LIB_B] {
        load(&mut c, lib);
    }
    c.q(&["RX.CALL", "a_incr", "1", "n", "3"]).ok();
    c.q(&["RX.CALL", "b_hset", "1", "h", "f", "v"]).ok();
    // Before any rewrite the commands are in the AOF, so a restart still has them.
    let libs = rx_list(&mut c);
    kill9_and_restart(&mut s);
    let mut c = s.conn();
    assert_eq!(
        rx_list(&mut c),
        libs,
        "before any rewrite, the AOF replays RX.LOAD"
    );

    // A rewrite without the preamble writes only commands for keys: libraries are gone
    // after the next restart, keys are not.
    rewrite_aof(&mut c);
    assert!(
        aof_file_names(s.dir())
            .iter()
            .any(|f| f.ends_with(".base.aof")),
        "no AOF base: {:?}",
        aof_file_names(s.dir())
    );
    // Loaded after the rewrite: in the new incremental file, so it survives.
    load(&mut c, LIB_C);
    let data = digest(&mut c);
    kill9_and_restart(&mut s);
    let mut c = s.conn();
    assert_eq!(digest(&mut c), data, "keys must survive the rewrite");
    assert_eq!(c.q(&["GET", "n"]), bulk("3"));
    assert_eq!(
        rx_names(&mut c),
        vec!["libc"],
        "libraries from before the rewrite should be gone"
    );
    assert_absent(
        &mut c,
        &["liba", "libb"],
        "after a rewrite without the preamble",
    );
    assert_callable(&mut c, &["libc"], "loaded after the rewrite");
    // Warned again at this startup; INFO still says so.
    assert!(
        preamble_warnings(&s.log()) >= 2,
        "no warning at restart:\n{}",
        s.log()
    );
    assert_eq!(
        info_field(&mut c, "rx", "rx_aof_rewrite_keeps_libraries").as_deref(),
        Some("0")
    );
}

#[test]
fn aof_preamble_setting_changed_at_runtime_updates_info_and_warns() {
    let mut s = Server::start_with(&["--appendonly", "yes", "--appendfsync", "always"], &[]);
    let mut c = s.conn();
    assert_eq!(
        info_field(&mut c, "rx", "rx_aof_rewrite_keeps_libraries").as_deref(),
        Some("1")
    );
    assert_eq!(
        preamble_warnings(&s.log()),
        0,
        "warned with the default configuration:\n{}",
        s.log()
    );
    load(&mut c, LIB_A);

    assert_eq!(c.q(&["CONFIG", "SET", "aof-use-rdb-preamble", "no"]), ok());
    wait_until("INFO rx to show the change", Duration::from_secs(5), || {
        info_field(&mut c, "rx", "rx_aof_rewrite_keeps_libraries").as_deref() == Some("0")
    });
    // Warned when configured (at the latest by the time a rewrite has run).
    rewrite_aof(&mut c);
    assert!(
        preamble_warnings(&s.log()) >= 1,
        "no warning after CONFIG SET aof-use-rdb-preamble no:\n{}",
        s.log()
    );

    assert_eq!(c.q(&["CONFIG", "SET", "aof-use-rdb-preamble", "yes"]), ok());
    wait_until(
        "INFO rx to show the change back",
        Duration::from_secs(5),
        || info_field(&mut c, "rx", "rx_aof_rewrite_keeps_libraries").as_deref() == Some("1"),
    );
    // With the preamble back on, a rewrite keeps the libraries again.
    load(&mut c, LIB_B);
    rewrite_aof(&mut c);
    let libs = rx_list(&mut c);
    kill9_and_restart(&mut s);
    let mut c = s.conn();
    assert_eq!(rx_list(&mut c), libs);
    assert_callable(
        &mut c,
        &["liba", "libb"],
        "after the preamble was turned back on",
    );
}

#[test]
fn kill9_during_function_write_load_loses_no_acknowledged_write() {
    const LIB_K: &str = "#!lua name=libk
redis.register_function('k_incr', function(keys) return redis.call('INCR', keys[1]) end)
";
    let mut s = Server::start_with(&["--appendonly", "yes", "--appendfsync", "always"], &[]);
    let mut c = s.conn();
    load(&mut c, LIB_K);
    load(&mut c, LIB_A);

    let acked = Arc::new(AtomicI64::new(0));
    let port = s.port();
    let writer = std::thread::spawn({
        let acked = Arc::clone(&acked);
        move || -> Result<i64, String> {
            let mut w = Conn::connect(port);
            w.set_read_timeout(Duration::from_secs(10));
            let mut last = 0;
            loop {
                match w.try_raw(&["RX.CALL", "k_incr", "1", "kill:ctr"]) {
                    Ok(raw) => match parse_reply(&raw) {
                        Reply::Int(v) if v == last + 1 => {
                            last = v;
                            acked.store(v, Ordering::SeqCst);
                        }
                        other => return Err(format!("after {last}: unexpected reply {other:?}")),
                    },
                    // The server was killed.
                    Err(_) => return Ok(last),
                }
            }
        }
    });

    wait_until(
        "200 acknowledged increments",
        Duration::from_secs(20),
        || acked.load(Ordering::SeqCst) >= 200,
    );
    // A library loaded in the middle of the load must survive too.
    load(&mut c, LIB_B);
    let libs = rx_list(&mut c);
    let mark = acked.load(Ordering::SeqCst);
    wait_until(
        "200 more acknowledged increments",
        Duration::from_secs(20),
        || acked.load(Ordering::SeqCst) >= mark + 200,
    );

    kill9_and_restart(&mut s);
    let last = writer
        .join()
        .expect("writer thread")
        .expect("writer saw only increments");
    assert!(last >= mark + 200, "writer acked {last}");
    let mut c = s.conn();
    let got = c.q(&["GET", "kill:ctr"]);
    let value: i64 = got
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("kill:ctr after restart: {got:?}"));
    eprintln!("kill -9 after {last} acknowledged increments; {value} after restart");
    // Every acknowledged increment is there; at most the one in flight is extra.
    assert!(value >= last, "lost acknowledged writes: {value} < {last}");
    assert!(
        value <= last + 1,
        "more increments than were sent: {value} > {last} + 1"
    );
    assert_eq!(rx_list(&mut c), libs, "libraries after kill -9");
    assert_callable(&mut c, &["liba", "libb"], "after kill -9");
    assert_eq!(
        c.q(&["RX.CALL", "k_incr", "1", "kill:ctr"]),
        Reply::Int(value + 1)
    );
}

// ---------------------------------------------------------------------------
// RX.DUMP / RX.RESTORE

/// The command names of one side: native FUNCTION ... or RX.
#[derive(Clone, Copy)]
enum Side {
    Native,
    Rx,
}

impl Side {
    fn load(self, c: &mut Conn, code: &str, replace: bool) -> Reply {
        let mut a: Vec<&str> = match self {
            Side::Native => vec!["FUNCTION", "LOAD"],
            Side::Rx => vec!["RX.LOAD"],
        };
        if replace {
            a.push("REPLACE");
        }
        a.push(code);
        c.q(&a)
    }
    fn dump(self, c: &mut Conn) -> Vec<u8> {
        let r = match self {
            Side::Native => c.q(&["FUNCTION", "DUMP"]),
            Side::Rx => c.q(&["RX.DUMP"]),
        };
        match r {
            Reply::Bulk(b) => b,
            other => panic!("dump: {other:?}"),
        }
    }
    fn restore(self, c: &mut Conn, payload: &[u8], policy: Option<&str>) -> Reply {
        let mut a: Vec<&[u8]> = match self {
            Side::Native => vec![b"FUNCTION", b"RESTORE"],
            Side::Rx => vec![b"RX.RESTORE"],
        };
        a.push(payload);
        if let Some(p) = policy {
            a.push(p.as_bytes());
        }
        c.cmd(&a)
    }
    fn simple(self, c: &mut Conn, sub: &str, arg: Option<&str>) -> Reply {
        let rx = format!("RX.{sub}");
        let mut a: Vec<&str> = match self {
            Side::Native => vec!["FUNCTION", sub],
            Side::Rx => vec![rx.as_str()],
        };
        if let Some(x) = arg {
            a.push(x);
        }
        c.q(&a)
    }
    fn list(self, c: &mut Conn) -> Reply {
        match self {
            Side::Native => native_list(c),
            Side::Rx => rx_list(c),
        }
    }
}

/// Runs the restore-policy scenario on one side; returns every reply and every listing.
fn restore_scenario(c: &mut Conn, side: Side) -> Vec<(String, Reply, Reply)> {
    let mut log = Vec::new();
    let mut step = |c: &mut Conn, what: &str, r: Reply| {
        let l = normalize(&side.list(c));
        log.push((what.to_string(), r, l));
    };
    let r = side.load(c, LIB_A, false);
    step(c, "load liba", r);
    let r = side.load(c, LIB_B, false);
    step(c, "load libb", r);
    let d_ab = side.dump(c);
    let r = side.simple(c, "DELETE", Some("libb"));
    step(c, "delete libb", r);
    // APPEND (the default, then explicit) with liba present: refused, libb not restored.
    let r = side.restore(c, &d_ab, None);
    step(c, "restore (append) with liba present", r);
    let r = side.restore(c, &d_ab, Some("APPEND"));
    step(c, "restore APPEND with liba present", r);
    // REPLACE: same-named libraries replaced, others kept.
    let r = side.load(c, LIB_A2, true);
    step(c, "load replace liba v2", r);
    let r = side.load(c, LIB_C, false);
    step(c, "load libc", r);
    let r = side.restore(c, &d_ab, Some("REPLACE"));
    step(c, "restore REPLACE", r);
    // FLUSH: exactly the payload's libraries.
    let r = side.load(c, LIB_A2, true);
    step(c, "load replace liba v2 again", r);
    let r = side.restore(c, &d_ab, Some("FLUSH"));
    step(c, "restore FLUSH", r);
    // A function name owned by another library: refused with APPEND and REPLACE.
    let r = side.simple(c, "FLUSH", None);
    step(c, "flush", r);
    let r = side.load(c, LIB_X_STEALS_A_ECHO, false);
    step(c, "load libx (a_echo)", r);
    let r = side.restore(c, &d_ab, None);
    step(c, "restore (append) with a_echo owned by libx", r);
    let r = side.restore(c, &d_ab, Some("REPLACE"));
    step(c, "restore REPLACE with a_echo owned by libx", r);
    let r = side.restore(c, &d_ab, Some("FLUSH"));
    step(c, "restore FLUSH with a_echo owned by libx", r);
    // Bad policy.
    let r = side.restore(c, &d_ab, Some("BOGUS"));
    step(c, "restore BOGUS", r);
    // The dump of an empty set.
    let r = side.simple(c, "FLUSH", None);
    step(c, "flush again", r);
    let d_empty = side.dump(c);
    let r = side.load(c, LIB_A, false);
    step(c, "load liba once more", r);
    let r = side.restore(c, &d_empty, None);
    step(c, "restore empty (append)", r);
    let r = side.restore(c, &d_empty, Some("FLUSH"));
    step(c, "restore empty FLUSH", r);
    log
}

#[test]
fn restore_policies_behave_like_function_restore() {
    let s = Server::start();
    let mut c = s.conn();
    let native = restore_scenario(&mut c, Side::Native);
    let rx = restore_scenario(&mut c, Side::Rx);
    assert_eq!(native.len(), rx.len());
    for ((what, nr, nl), (_, xr, xl)) in native.iter().zip(rx.iter()) {
        assert_eq!(
            xr.is_error(),
            nr.is_error(),
            "{what}: RX {xr:?} vs native {nr:?}"
        );
        if !nr.is_error() && !matches!(nr, Reply::Bulk(_)) {
            assert_eq!(xr, nr, "{what}: reply");
        }
        assert_eq!(xl, nl, "{what}: libraries after the step (RX vs native)");
    }
    // RX's own wording.
    let by = |what: &str| {
        rx.iter()
            .find(|(w, _, _)| w == what)
            .unwrap_or_else(|| panic!("{what}"))
            .1
            .clone()
    };
    let lists = |what: &str| library_names(&rx.iter().find(|(w, _, _)| w == what).unwrap().2);
    for w in [
        "restore (append) with liba present",
        "restore APPEND with liba present",
    ] {
        assert_eq!(
            by(w).err_text(),
            Some("ERR Library liba already exists"),
            "{w}"
        );
        assert_eq!(lists(w), vec!["liba"], "{w}");
    }
    assert_eq!(by("restore REPLACE"), ok());
    assert_eq!(lists("restore REPLACE"), vec!["liba", "libb", "libc"]);
    assert_eq!(by("restore FLUSH"), ok());
    assert_eq!(lists("restore FLUSH"), vec!["liba", "libb"]);
    for w in [
        "restore (append) with a_echo owned by libx",
        "restore REPLACE with a_echo owned by libx",
    ] {
        assert_eq!(
            by(w).err_text(),
            Some("ERR Function a_echo already exists"),
            "{w}"
        );
        assert_eq!(lists(w), vec!["libx"], "{w}");
    }
    assert_eq!(by("restore FLUSH with a_echo owned by libx"), ok());
    assert_eq!(
        lists("restore FLUSH with a_echo owned by libx"),
        vec!["liba", "libb"]
    );
    assert_eq!(
        by("restore BOGUS").err_text(),
        Some("ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.")
    );
    assert_eq!(lists("restore BOGUS"), vec!["liba", "libb"]);
    assert_eq!(by("restore empty (append)"), ok());
    assert_eq!(lists("restore empty (append)"), vec!["liba"]);
    assert_eq!(lists("restore empty FLUSH"), Vec::<String>::new());

    // The code that comes back is the code that was dumped, and it runs.
    c.q(&["RX.FLUSH"]).ok();
    load(&mut c, LIB_A);
    load(&mut c, LIB_B);
    let before = rx_list(&mut c);
    let d = rx_dump(&mut c);
    load_replace(&mut c, LIB_A2);
    assert_eq!(rx_restore(&mut c, &d, Some("REPLACE")), ok());
    assert_eq!(without_versions(rx_list(&mut c)), without_versions(before));
    assert_callable(&mut c, &["liba", "libb"], "after RX.RESTORE REPLACE");
}

#[test]
fn restore_policy_is_case_insensitive_like_native() {
    let s = Server::start();
    let mut c = s.conn();
    load(&mut c, LIB_A);
    c.q(&["FUNCTION", "LOAD", LIB_A]).ok();
    let d = rx_dump(&mut c);
    let nd = Side::Native.dump(&mut c);
    for p in ["flush", "Replace", "replace", "Flush"] {
        assert_eq!(
            Side::Native.restore(&mut c, &nd, Some(p)),
            ok(),
            "native {p}"
        );
        assert_eq!(rx_restore(&mut c, &d, Some(p)), ok(), "RX {p}");
    }
    let n = Side::Native.restore(&mut c, &nd, Some("append"));
    let x = rx_restore(&mut c, &d, Some("append"));
    assert_eq!(n.err_text(), Some("ERR Library liba already exists"));
    assert_eq!(x.err_text(), Some("ERR Library liba already exists"));
}

#[test]
fn restore_refuses_corrupt_and_foreign_payloads_without_changing_anything() {
    let s = Server::start();
    let mut c = s.conn();
    for lib in [LIB_A, LIB_B, LIB_C] {
        load(&mut c, lib);
    }
    c.q(&["FUNCTION", "LOAD", LIB_A]).ok();
    c.q(&["SET", "k", "v"]).ok();
    let d = rx_dump(&mut c);
    assert!(
        d.len() > 100,
        "dump of three libraries is {} bytes",
        d.len()
    );
    let before = rx_list(&mut c);
    let native_before = native_list(&mut c);
    let data = digest(&mut c);

    let n = d.len();
    let mut corrupt: Vec<(String, Vec<u8>)> = vec![];
    for cut in [n - 1, n - 20, n / 2, n / 3] {
        corrupt.push((
            format!("truncated to {cut} of {n} bytes"),
            d[..cut].to_vec(),
        ));
    }
    for pos in [n / 3, n / 2, n - 25, n - 1] {
        for bit in [0u8, 7] {
            let mut p = d.clone();
            p[pos] ^= 1 << bit;
            corrupt.push((format!("bit {bit} of byte {pos} flipped"), p));
        }
    }

    let native_dump = Side::Native.dump(&mut c);
    let key_dump = c.q(&["DUMP", "k"]).as_bytes().expect("DUMP k").to_vec();
    let foreign: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("hello".into(), b"hello".to_vec()),
        ("native FUNCTION DUMP".into(), native_dump),
        ("DUMP of a key".into(), key_dump),
    ];

    // Native says the same for any payload it cannot take.
    let native_says = Side::Native.restore(&mut c, b"hello", None);
    assert_eq!(
        native_says.err_text(),
        Some("ERR DUMP payload version or checksum are wrong")
    );
    for cases in [&corrupt, &foreign] {
        let want = native_says.err_text().unwrap();
        for (what, payload) in cases.iter() {
            for policy in [None, Some("APPEND"), Some("REPLACE"), Some("FLUSH")] {
                let r = rx_restore(&mut c, payload, policy);
                assert_eq!(r.err_text(), Some(want), "{what}, policy {policy:?}");
                assert_eq!(
                    rx_list(&mut c),
                    before,
                    "{what}, policy {policy:?}: libraries changed"
                );
            }
        }
    }
    // Arity errors change nothing either.
    assert!(c.q(&["RX.RESTORE"]).is_error());
    let a: Vec<&[u8]> = vec![b"RX.RESTORE", &d, b"FLUSH", b"extra"];
    assert!(c.cmd(&a).is_error(), "RX.RESTORE with an extra argument");
    assert_eq!(rx_list(&mut c), before);

    // Native FUNCTION RESTORE does not take an RX payload either.
    assert!(Side::Native.restore(&mut c, &d, Some("FLUSH")).is_error());
    assert_eq!(native_list(&mut c), native_before);
    assert_eq!(digest(&mut c), data, "dataset changed");
    assert_callable(&mut c, &["liba", "libb", "libc"], "after refused restores");
    // And the intact payload still restores.
    assert_eq!(rx_restore(&mut c, &d, Some("FLUSH")), ok());
    assert_eq!(without_versions(rx_list(&mut c)), without_versions(before));
}

// ---------------------------------------------------------------------------
// RX.IMPORT

const N1: &str = "#!lua name=n1
redis.register_function{function_name='n1_echo', callback=function(keys, args) return {args[1], #keys} end, flags={'no-writes'}, description='echo with key count'}
redis.register_function('n1_incr', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)
";
const N2: &str = "#!lua name=n2
redis.register_function{function_name='n2_hash', callback=function(keys, args) redis.call('HSET', keys[1], args[1], args[2]) return redis.call('HGETALL', keys[1]) end, flags={'allow-oom'}}
redis.register_function{function_name='n2_stale', callback=function() return redis.status_reply('FINE') end, flags={'no-writes', 'allow-stale'}, description='ok'}
";
const N2_V2: &str = "#!lua name=n2
redis.register_function{function_name='n2_hash', callback=function(keys, args) redis.call('HSET', keys[1], args[1], args[2]) return redis.call('HLEN', keys[1]) end}
redis.register_function{function_name='n2_stale', callback=function() return redis.status_reply('FINE v2') end, flags={'no-writes', 'allow-stale'}}
";
const N3: &str = "#!lua name=n3
redis.register_function('n3_err', function() return redis.error_reply('MY custom error') end)
redis.register_function('n3_json', function(keys, args) return cjson.encode({a = tonumber(args[1])}) end)
";
const N4: &str = "#!lua name=n4
redis.register_function('n4_sum', function(keys, args) return tonumber(args[1]) + tonumber(args[2]) end)
";
/// An RX-only library.
const RXONLY: &str = "#!lua name=rxonly
redis.register_function('rx_only', function() return 'mine' end)
";

/// FCALL vs RX.CALL (and the _RO forms) for every function of N1..N4, on separate keys.
fn assert_same_as_fcall(c: &mut Conn, fns: &[&str]) {
    let calls: &[(&str, bool, &[&str])] = &[
        ("n1_echo", false, &["1", "KEY", "x"]),
        ("n1_echo", true, &["1", "KEY", "y"]),
        ("n1_incr", false, &["1", "KEY:c", "7"]),
        ("n2_hash", false, &["1", "KEY:h", "f", "v"]),
        ("n2_stale", false, &["0"]),
        ("n2_stale", true, &["0"]),
        ("n3_err", false, &["0"]),
        ("n3_json", false, &["0", "5"]),
        ("n4_sum", false, &["0", "2", "40"]),
    ];
    for (f, ro, args) in calls {
        if !fns.contains(f) {
            continue;
        }
        let run = |c: &mut Conn, cmd: &str, prefix: &str| {
            let mut a: Vec<String> = vec![cmd.to_string(), f.to_string()];
            a.extend(args.iter().map(|x| x.replace("KEY", prefix)));
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            c.q(&a)
        };
        let (ncmd, xcmd) = if *ro {
            ("FCALL_RO", "RX.CALL_RO")
        } else {
            ("FCALL", "RX.CALL")
        };
        let n = run(c, ncmd, "nat");
        let x = run(c, xcmd, "rx");
        assert_eq!(x, n, "{xcmd} {f} vs {ncmd}");
    }
}

#[test]
fn import_copies_native_libraries_atomically() {
    let s = Server::start();
    let mut c = s.conn();
    // Nothing to import.
    assert_eq!(c.q(&["RX.IMPORT"]), Reply::Int(0));
    assert_eq!(rx_list(&mut c), Reply::Array(vec![]));

    load(&mut c, RXONLY);
    for lib in [N1, N2, N3] {
        c.q(&["FUNCTION", "LOAD", lib]).ok();
    }
    assert_eq!(c.q(&["RX.IMPORT"]), Reply::Int(3));
    assert_eq!(rx_names(&mut c), vec!["n1", "n2", "n3", "rxonly"]);
    // Every native library, with its functions, flags, descriptions and code.
    c.q(&["RX.DELETE", "rxonly"]).ok();
    assert_eq!(normalize(&rx_list(&mut c)), normalize(&native_list(&mut c)));
    load(&mut c, RXONLY);
    let all = [
        "n1_echo", "n1_incr", "n2_hash", "n2_stale", "n3_err", "n3_json", "n4_sum",
    ];
    assert_same_as_fcall(&mut c, &all);
    let after_import = rx_list(&mut c);

    // Native changes; importing again without REPLACE is refused as a whole.
    c.q(&["FUNCTION", "LOAD", "REPLACE", N2_V2]).ok();
    c.q(&["FUNCTION", "LOAD", N4]).ok();
    let r = c.q(&["RX.IMPORT"]);
    let e = r
        .err_text()
        .unwrap_or_else(|| panic!("RX.IMPORT over existing libraries: {r:?}"));
    assert!(
        ["n1", "n2", "n3"]
            .iter()
            .any(|n| e == format!("ERR Library {n} already exists")),
        "RX.IMPORT error: {e}"
    );
    assert_eq!(
        rx_list(&mut c),
        after_import,
        "a refused RX.IMPORT changed RX's libraries"
    );
    assert_absent_fn(&mut c, "n4_sum");

    // Exactly one conflicting name: the error names it.
    c.q(&["RX.DELETE", "n1"]).ok();
    c.q(&["RX.DELETE", "n3"]).ok();
    let before = rx_list(&mut c);
    assert_eq!(
        c.q(&["RX.IMPORT"]).err_text(),
        Some("ERR Library n2 already exists")
    );
    assert_eq!(rx_list(&mut c), before);
    assert_absent_fn(&mut c, "n1_echo");

    // REPLACE: every native library copied, same-named ones replaced, RX-only ones kept.
    assert_eq!(c.q(&["RX.IMPORT", "REPLACE"]), Reply::Int(4));
    assert_eq!(rx_names(&mut c), vec!["n1", "n2", "n3", "n4", "rxonly"]);
    c.q(&["RX.DELETE", "rxonly"]).ok();
    assert_eq!(
        normalize(&rx_list(&mut c)),
        normalize(&native_list(&mut c)),
        "after RX.IMPORT REPLACE"
    );
    assert_eq!(
        c.q(&["RX.CALL", "n2_stale", "0"]),
        Reply::Status("FINE v2".into())
    );
    assert_same_as_fcall(&mut c, &all);

    // A function name owned by an RX library that is not being replaced: refused, no change.
    c.q(&["RX.DELETE", "n4"]).ok();
    load(
        &mut c,
        "#!lua name=thief\nredis.register_function('n4_sum', function() return 0 end)",
    );
    let before = rx_list(&mut c);
    for args in [&["RX.IMPORT"][..], &["RX.IMPORT", "REPLACE"][..]] {
        let r = c.q(args);
        assert!(
            r.is_error(),
            "{args:?} with n4_sum owned by another RX library: {r:?}"
        );
        assert_eq!(rx_list(&mut c), before, "{args:?}: libraries changed");
    }
    assert_eq!(c.q(&["RX.CALL", "n4_sum", "0", "1", "2"]), Reply::Int(0));

    // Bad options are errors that change nothing.
    assert!(c.q(&["RX.IMPORT", "BOGUS"]).is_error());
    assert_eq!(rx_list(&mut c), before);

    // Imported libraries are RX libraries like any other: in the RDB too.
    c.q(&["RX.DELETE", "thief"]).ok();
    assert_eq!(c.q(&["RX.IMPORT", "REPLACE"]), Reply::Int(4));
    let libs = rx_list(&mut c);
    assert_eq!(c.q(&["DEBUG", "RELOAD"]), ok());
    assert_eq!(
        rx_list(&mut c),
        libs,
        "imported libraries after DEBUG RELOAD"
    );
    assert_same_as_fcall(&mut c, &all);
}

fn assert_absent_fn(c: &mut Conn, f: &str) {
    assert_eq!(
        c.q(&["RX.CALL", f, "0"]).err_text(),
        Some("ERR Function not found"),
        "{f}"
    );
}

#[test]
fn import_reaches_replica_and_aof() {
    let mut master = start_master(&["--appendonly", "yes"]);
    let mut m = master.conn();
    let replica = start_replica_of(&master);
    let mut r = replica.conn();
    wait_synced(&mut m, &mut r);
    for lib in [N1, N2] {
        m.q(&["FUNCTION", "LOAD", lib]).ok();
    }
    assert_eq!(m.q(&["RX.IMPORT"]), Reply::Int(2));
    wait_synced(&mut m, &mut r);
    let libs = rx_list(&mut m);
    assert_eq!(rx_list(&mut r), libs, "replica after RX.IMPORT");
    assert_eq!(
        r.q(&["RX.CALL_RO", "n2_stale", "0"]),
        Reply::Status("FINE".into())
    );
    m.q(&["FUNCTION", "LOAD", "REPLACE", N2_V2]).ok();
    assert_eq!(m.q(&["RX.IMPORT", "REPLACE"]), Reply::Int(2));
    wait_synced(&mut m, &mut r);
    let libs = rx_list(&mut m);
    assert_eq!(rx_list(&mut r), libs, "replica after RX.IMPORT REPLACE");
    assert_eq!(
        r.q(&["RX.CALL_RO", "n2_stale", "0"]),
        Reply::Status("FINE v2".into())
    );

    drop(r);
    drop(replica);
    master.restart_graceful(false);
    let mut m = master.conn();
    assert_eq!(
        rx_list(&mut m),
        libs,
        "master restarted from its AOF after RX.IMPORT"
    );
}

/// The aux encoding this RX writes (src/persistence.rs ENCODING_VERSION).
const RX_ENCODING: u64 = 3;

/// The module type id Redis writes for RX's aux data: nine 6-bit name characters, then a
/// 10-bit encoding version (moduleTypeEncodeId).
fn rx_module_type_id(encver: u64) -> u64 {
    const CHARSET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = 0u64;
    for c in b"rxlibrary" {
        id = (id << 6) | CHARSET.iter().position(|x| x == c).unwrap() as u64;
    }
    (id << 10) | encver
}

#[test]
fn rdb_from_a_newer_rx_encoding_is_refused_with_a_log_line() {
    // Checksums off, so the RDB can be edited and still pass Redis's own checks.
    let s = Server::start_with(&["--rdbchecksum", "no"], &[]);
    let mut c = s.conn();
    c.q(&[
        "RX.LOAD",
        "#!lua name=future\nredis.register_function('f', function() return 1 end)",
    ])
    .ok();
    c.q(&["SET", "k", "v"]).ok();
    c.q(&["SAVE"]).ok();
    let rdb = s.dir().join("dump.rdb");
    let mut bytes = std::fs::read(&rdb).unwrap();
    let at = rx_aux_start(&bytes);
    bytes[at + 2..at + 10].copy_from_slice(&rx_module_type_id(RX_ENCODING + 1).to_be_bytes());
    drop(c);
    s.stop();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("newer-rdb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dump.rdb"), &bytes).unwrap();

    // Start a server on that RDB by hand: it must refuse to load it, not half-load it.
    let (_, text) = common::run_to_exit(&dir, &[]);
    // Redis aborts the load and then runs its RDB checker, whose exit code is 0, so the
    // evidence is the log: RX's reason, Redis's refusal, and no "Ready" line.
    assert!(
        !text.contains("Ready to accept connections"),
        "the server accepted an RDB from a newer RX encoding:\n{text}"
    );
    assert!(
        text.contains("module AUX data for the module type 'rxlibrary'"),
        "{text}"
    );
    assert!(
        text.contains("RX: the RDB holds RX libraries in encoding 4, newer than this RX reads (3); refusing to load them"),
        "no clear log line:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Ten thousand libraries (one function each, plus cached scripts) load, answer, and come
/// back after DEBUG RELOAD. Before callables were kept in the Lua registry each one held a
/// slot of mlua's reference stack, which LuaJIT caps near 8,000: library 7,982 failed to
/// load, and a reload with cached scripts aborted the server.
#[test]
fn ten_thousand_libraries_load_and_reload() {
    const N: usize = 10_000;
    let s = Server::start();
    let mut c = s.conn();
    for i in 0..20 {
        c.q(&["RX.EVAL", &format!("return {i}"), "0"]);
    }
    let loads: Vec<Vec<Vec<u8>>> = (1..=N)
        .map(|i| {
            vec![
                b"RX.LOAD".to_vec(),
                format!(
                    "#!lua name=lib{i}\nredis.register_function('f{i}', function() return {i} end)"
                )
                .into_bytes(),
            ]
        })
        .collect();
    for (i, reply) in c.pipeline(loads).iter().enumerate() {
        let text = String::from_utf8_lossy(reply);
        assert!(
            text == format!("${}\r\nlib{}\r\n", format!("lib{}", i + 1).len(), i + 1),
            "load {}: {text}",
            i + 1
        );
    }
    let count =
        |c: &mut Conn| info_field(c, "rx", "rx_libraries").and_then(|v| v.parse::<usize>().ok());
    assert_eq!(count(&mut c), Some(N));
    assert_eq!(c.q(&["RX.CALL", "f10000", "0"]).as_int(), Some(10_000));
    assert_eq!(c.q(&["DEBUG", "RELOAD"]).as_str(), Some("OK"));
    assert_eq!(count(&mut c), Some(N));
    for i in [1, 7_982, 10_000] {
        assert_eq!(
            c.q(&["RX.CALL", &format!("f{i}"), "0"]).as_int(),
            Some(i as i64)
        );
    }
}

// ---------------------------------------------------------------------------
// Versions (see the README's Redis Cluster section)

fn manifest(c: &mut Conn) -> Reply {
    c.q(&["RX.CLUSTER", "MANIFEST"]).ok()
}

/// `(name, version, deleted)` of every entry in RX.CLUSTER MANIFEST.
fn versions(c: &mut Conn) -> Vec<(String, i64, i64)> {
    manifest(c)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let kv = e.as_array().unwrap();
            (
                kv[1].as_str().unwrap().to_string(),
                kv[3].as_int().unwrap(),
                kv[7].as_int().unwrap(),
            )
        })
        .collect()
}

#[test]
fn versions_and_tombstones_survive_reload_restart_and_reach_replicas_unchanged() {
    let mut master = start_master(&[]);
    let mut m = master.conn();
    load(&mut m, LIB_A);
    load_replace(&mut m, LIB_A2);
    load(&mut m, LIB_B);
    assert_eq!(m.q(&["RX.DELETE", "libb"]), ok());
    load(&mut m, LIB_C);
    assert_eq!(m.q(&["RX.FLUSH"]), ok());
    load(&mut m, LIB_A);
    let want = vec![
        ("liba".to_string(), 4, 0),
        ("libb".to_string(), 2, 1),
        ("libc".to_string(), 2, 1),
    ];
    assert_eq!(versions(&mut m), want);
    let before = manifest(&mut m);
    assert_eq!(m.q(&["DEBUG", "RELOAD"]), ok());
    assert_eq!(manifest(&mut m), before, "after DEBUG RELOAD");
    assert_eq!(m.q(&["SAVE"]), ok());
    master.restart();
    let mut m = master.conn();
    assert_eq!(manifest(&mut m), before, "after a restart from the RDB");

    // A full sync carries the versions; later changes reach the replica as RX.APPLY with
    // the master's versions, whatever the replica had seen.
    let replica = start_replica_of(&master);
    let mut r = replica.conn();
    wait_synced(&mut m, &mut r);
    assert_eq!(manifest(&mut r), before, "after a full sync");
    load_replace(&mut m, LIB_A2);
    assert_eq!(m.q(&["RX.DELETE", "liba"]), ok());
    load(&mut m, LIB_B);
    wait_synced(&mut m, &mut r);
    assert_eq!(
        versions(&mut m),
        vec![
            ("liba".to_string(), 6, 1),
            ("libb".to_string(), 3, 0),
            ("libc".to_string(), 2, 1),
        ]
    );
    assert_eq!(manifest(&mut r), manifest(&mut m), "live changes");
    assert_eq!(rx_list(&mut r), rx_list(&mut m));
}

/// An `RX.APPLY` payload (see src/cluster/wire.rs): `"RXAPPLY"` | 1 | count | per change
/// (name, version, digest, code) | SHA-1 of all of it.
fn apply_payload(changes: &[(&str, u64, Option<&str>)]) -> Vec<u8> {
    let mut p = b"RXAPPLY\x01".to_vec();
    p.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    for (name, version, code) in changes {
        p.extend_from_slice(&(name.len() as u16).to_le_bytes());
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&version.to_le_bytes());
        let code = code.unwrap_or("").as_bytes();
        let digest = if code.is_empty() {
            [0u8; 20]
        } else {
            common::sha1(code)
        };
        p.extend_from_slice(&digest);
        p.extend_from_slice(&(code.len() as u32).to_le_bytes());
        p.extend_from_slice(code);
    }
    let sum = common::sha1(&p);
    p.extend_from_slice(&sum);
    p
}

/// Replays `RX.APPLY <payload>` for each payload the way a restart would: appended to the
/// AOF's open command file, then `DEBUG LOADAOF` (RX takes RX.APPLY only from its master or
/// its AOF). The server must run with `--appendonly yes`.
fn apply_through_aof(s: &Server, c: &mut Conn, payloads: &[&[u8]]) {
    let dir = s.dir().join("appendonlydir");
    let incr = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .max()
        .expect("an incr AOF file");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&incr)
        .unwrap();
    for p in payloads {
        f.write_all(&common::encode_command(&[&b"RX.APPLY"[..], p]))
            .unwrap();
    }
    drop(f);
    assert_eq!(c.q(&["DEBUG", "LOADAOF"]), ok());
}

#[test]
fn rx_apply_is_refused_from_clients() {
    let s = Server::start();
    let mut c = s.conn();
    let p = apply_payload(&[("liba", 5, Some(LIB_A))]);
    assert_eq!(
        c.cmd(&[&b"RX.APPLY"[..], &p]).err_text(),
        Some("ERR RX.APPLY is internal: RX takes it only from its master's replication stream or its AOF")
    );
    assert!(rx_names(&mut c).is_empty());
    // Inside a transaction too.
    assert_eq!(c.q(&["MULTI"]), ok());
    c.cmd(&[&b"RX.APPLY"[..], &p]);
    let exec = c.q(&["EXEC"]);
    assert!(exec.as_array().unwrap()[0].is_error(), "{exec:?}");
    assert!(rx_names(&mut c).is_empty());
}

#[test]
fn rx_apply_applies_only_what_wins_and_is_idempotent() {
    let s = Server::start_with(&["--appendonly", "yes"], &[]);
    let mut c = s.conn();
    // Outside a cluster, RX.CLUSTER STATUS says so (and there is nothing to be out of
    // sync with).
    let status = c.q(&["RX.CLUSTER", "STATUS"]);
    let st = status.as_array().unwrap();
    assert_eq!(
        (st[0].as_str(), &st[1]),
        (Some("cluster_enabled"), &Reply::Int(0))
    );
    assert!(st
        .chunks(2)
        .any(|p| p[0].as_str() == Some("in_sync") && p[1] == Reply::Int(1)));
    let p = apply_payload(&[("liba", 5, Some(LIB_A)), ("libb", 2, Some(LIB_B))]);
    // The same payload twice changes nothing the second time.
    apply_through_aof(&s, &mut c, &[&p, &p]);
    assert_eq!(
        versions(&mut c),
        vec![("liba".to_string(), 5, 0), ("libb".to_string(), 2, 0)]
    );
    assert_callable(&mut c, &["liba", "libb"], "after RX.APPLY");
    // Older versions, and a deletion at the same version as a live library, lose.
    let older = apply_payload(&[("liba", 4, Some(LIB_A2)), ("libb", 2, None)]);
    apply_through_aof(&s, &mut c, &[&older]);
    assert_eq!(
        versions(&mut c),
        vec![("liba".to_string(), 5, 0), ("libb".to_string(), 2, 0)]
    );
    assert_eq!(
        lib_field_code(&mut c, "liba").as_deref(),
        Some(LIB_A.as_bytes())
    );
    // Newer ones win: a tombstone deletes, a library replaces.
    let newer = apply_payload(&[("liba", 6, Some(LIB_A2)), ("libb", 3, None)]);
    apply_through_aof(&s, &mut c, &[&newer]);
    assert_eq!(rx_names(&mut c), vec!["liba"]);
    assert_eq!(
        lib_field_code(&mut c, "liba").as_deref(),
        Some(LIB_A2.as_bytes())
    );
    // A local load takes one more than the highest version seen, tombstones included.
    load(&mut c, LIB_B);
    assert_eq!(
        versions(&mut c),
        vec![("liba".to_string(), 6, 0), ("libb".to_string(), 4, 0)]
    );
    // A corrupt payload, or one whose version leaves no room for later changes, is refused
    // and changes nothing; a version at the ceiling is fine, and counts on without wrapping.
    let before = manifest(&mut c);
    let mut bad = apply_payload(&[("liba", 9, Some(LIB_A))]);
    bad[20] ^= 1;
    let exhausting = apply_payload(&[("liba", u64::MAX, Some(LIB_A))]);
    apply_through_aof(&s, &mut c, &[&bad, &exhausting]);
    assert_eq!(manifest(&mut c), before);
    // A version at the ceiling is accepted; the library then cannot change any more
    // (its next version would not fit), which is refused clearly instead of wrapping.
    let ceiling = i64::MAX as u64;
    apply_through_aof(
        &s,
        &mut c,
        &[&apply_payload(&[("liba", ceiling - 1, Some(LIB_A))])],
    );
    load_replace(&mut c, LIB_A2);
    assert_eq!(versions(&mut c)[0], ("liba".to_string(), i64::MAX, 0));
    let at_ceiling = manifest(&mut c);
    let refusal = "ERR library 'liba' is at the highest version RX allows (9223372036854775807) and cannot change any more";
    assert_eq!(
        c.q(&["RX.LOAD", "REPLACE", LIB_A]).err_text(),
        Some(refusal)
    );
    assert_eq!(c.q(&["RX.DELETE", "liba"]).err_text(), Some(refusal));
    assert_eq!(c.q(&["RX.FLUSH"]).err_text(), Some(refusal));
    assert_eq!(manifest(&mut c), at_ceiling);
    // The AOF replays to the same versions, so the replacement is still there.
    assert_eq!(c.q(&["DEBUG", "LOADAOF"]), ok());
    assert_eq!(manifest(&mut c), at_ceiling);
    assert_eq!(
        lib_field_code(&mut c, "liba").as_deref(),
        Some(LIB_A2.as_bytes())
    );
}

fn lib_field_code(c: &mut Conn, name: &str) -> Option<Vec<u8>> {
    let list = c.q(&["RX.LIST", "LIBRARYNAME", name, "WITHCODE"]);
    let lib = list.as_array()?.first()?.as_array()?.to_vec();
    lib.chunks(2)
        .find(|p| p[0].as_str() == Some("library_code"))
        .and_then(|p| p[1].as_bytes().map(|b| b.to_vec()))
}

/// RDB length encoding.
fn rdb_len(n: usize) -> Vec<u8> {
    if n < 64 {
        vec![n as u8]
    } else if n < 16384 {
        vec![0x40 | (n >> 8) as u8, n as u8]
    } else {
        let mut v = vec![0x80];
        v.extend_from_slice(&(n as u32).to_be_bytes());
        v
    }
}

fn read_rdb_len(b: &[u8], pos: &mut usize) -> usize {
    let first = b[*pos];
    match first >> 6 {
        0 => {
            *pos += 1;
            (first & 0x3f) as usize
        }
        1 => {
            let n = (((first & 0x3f) as usize) << 8) | b[*pos + 1] as usize;
            *pos += 2;
            n
        }
        _ => {
            assert_eq!(first, 0x80, "only 32-bit lengths are expected here");
            let n = u32::from_be_bytes([b[*pos + 1], b[*pos + 2], b[*pos + 3], b[*pos + 4]]);
            *pos += 5;
            n as usize
        }
    }
}

/// Where RX's aux record (in the current encoding) lies in an RDB: its first byte, the
/// offset of each of its values, and the byte after its EOF opcode.
struct AuxRecord {
    start: usize,
    values: Vec<usize>,
    end: usize,
}

/// The offset of RX's aux record (in the current encoding): opcode 0xF7 (MODULE_AUX), then
/// the module type id as a 64-bit length (0x81 + 8 big-endian bytes).
fn rx_aux_start(bytes: &[u8]) -> usize {
    let mut needle = vec![0xF7u8, 0x81];
    needle.extend_from_slice(&rx_module_type_id(RX_ENCODING).to_be_bytes());
    bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("RX aux record in the RDB")
}

/// The record's values, walked without compression (the RDB is saved with
/// `rdbcompression no`).
fn rx_aux_record(bytes: &[u8]) -> AuxRecord {
    let start = rx_aux_start(bytes);
    // After the id: UINT opcode + `when`, then the data as (opcode, value) up to EOF (0).
    let mut pos = start + 10;
    assert_eq!(&bytes[pos..pos + 2], &[2, 1]);
    pos += 2;
    let mut values = Vec::new();
    while bytes[pos] != 0 {
        values.push(pos);
        let opcode = bytes[pos];
        pos += 1;
        let n = read_rdb_len(bytes, &mut pos);
        if opcode == 5 {
            pos += n;
        }
    }
    AuxRecord {
        start,
        values,
        end: pos + 1,
    }
}

#[test]
fn an_rdb_in_encoding_1_still_loads_with_version_1() {
    // Write an RDB, then rewrite RX's aux record the way encoding 1 laid it out.
    let s = Server::start_with(&["--rdbchecksum", "no", "--rdbcompression", "no"], &[]);
    let mut c = s.conn();
    load(&mut c, LIB_B);
    load_replace(&mut c, LIB_B);
    load_replace(&mut c, LIB_B);
    assert_eq!(versions(&mut c), vec![("libb".to_string(), 3, 0)]);
    assert_eq!(c.q(&["SAVE"]), ok());
    let mut bytes = std::fs::read(s.dir().join("dump.rdb")).unwrap();
    let record = rx_aux_record(&bytes);
    let (start, end) = (record.start, record.end);
    let mut v1 = vec![0xF7u8, 0x81];
    v1.extend_from_slice(&rx_module_type_id(1).to_be_bytes());
    v1.extend_from_slice(&[2, 1, 2, 1, 5]);
    v1.extend(rdb_len(LIB_B.len()));
    v1.extend_from_slice(LIB_B.as_bytes());
    v1.push(0);
    bytes.splice(start..end, v1);
    drop(c);
    s.stop();

    let s = Server::start_with(&["--rdbchecksum", "no"], &[]);
    let mut c = s.conn();
    std::fs::write(s.dir().join("dump.rdb"), &bytes).unwrap();
    assert_eq!(c.q(&["DEBUG", "RELOAD", "NOSAVE"]), ok());
    assert_eq!(versions(&mut c), vec![("libb".to_string(), 1, 0)]);
    assert_callable(&mut c, &["libb"], "after loading an encoding-1 RDB");
}

/// Encoding 2 is encoding 3 without the history string at the end: such an RDB (written
/// before history existed) loads, with its versions, and no history.
#[test]
fn an_rdb_in_encoding_2_still_loads_without_history() {
    let s = Server::start_with(&["--rdbchecksum", "no", "--rdbcompression", "no"], &[]);
    let mut c = s.conn();
    load(&mut c, LIB_B);
    load_replace(&mut c, LIB_B);
    assert_eq!(c.q(&["RX.HISTORY", "libb"]).as_array().unwrap().len(), 2);
    assert_eq!(c.q(&["SAVE"]), ok());
    let mut bytes = std::fs::read(s.dir().join("dump.rdb")).unwrap();
    let record = rx_aux_record(&bytes);
    let (start, last_value) = (record.start, *record.values.last().unwrap());
    // The values end just before the record's EOF opcode.
    let pos = record.end - 1;
    assert_eq!(
        bytes[last_value], 5,
        "the history is the last value, a string"
    );
    bytes.drain(last_value..pos);
    bytes[start + 2..start + 10].copy_from_slice(&rx_module_type_id(2).to_be_bytes());
    drop(c);
    s.stop();

    let s = Server::start_with(&["--rdbchecksum", "no"], &[]);
    let mut c = s.conn();
    std::fs::write(s.dir().join("dump.rdb"), &bytes).unwrap();
    assert_eq!(c.q(&["DEBUG", "RELOAD", "NOSAVE"]), ok());
    assert_eq!(versions(&mut c), vec![("libb".to_string(), 2, 0)]);
    assert_eq!(c.q(&["RX.HISTORY", "libb"]), Reply::Array(vec![]));
    assert_callable(&mut c, &["libb"], "after loading an encoding-2 RDB");
}

// ---------------------------------------------------------------------------
// What a dataset carries always loads back

/// A library that keeps 35 MB alive, and one that leaves 40 MB of garbage at load: both
/// fit under a 64 MB cap when loaded one after the other.
const LIB_BIG_TABLE: &str = "#!lua name=a_big
local t = {} for i = 1, 5000 do t[i] = ('x'):rep(7000) .. i end
redis.register_function('big', function() return #t end)";
const LIB_CHURN: &str = "#!lua name=b_churn
local n = 0 for i = 1, 4000 do local s = ('y'):rep(10000) .. i n = n + #s end
redis.register_function('churn', function() return n end)";

/// Before the fix, the RDB's libraries were built again under the load timeout and the VM
/// cap with the earlier libraries' garbage uncollected: the restart aborted ("Short read or
/// OOM loading DB") and DEBUG RELOAD left no keys and no libraries.
#[test]
fn libraries_accepted_under_a_memory_cap_load_back_with_every_key() {
    let mut s = Server::start_with(&[], &["memory-limit-mb", "64"]);
    let mut c = s.conn();
    for i in 0..100 {
        c.q(&["SET", &format!("k{i}"), "v"]).ok();
    }
    load(&mut c, LIB_BIG_TABLE);
    load(&mut c, LIB_CHURN);
    let check = |c: &mut Conn, when: &str| {
        assert_eq!(c.q(&["DBSIZE"]), Reply::Int(100), "{when}");
        assert_eq!(c.q(&["RX.CALL", "big", "0"]), Reply::Int(5000), "{when}");
        assert_eq!(
            c.q(&["RX.CALL", "churn", "0"]),
            Reply::Int(40_014_893),
            "{when}"
        );
    };
    check(&mut c, "after loading");
    assert_eq!(c.q(&["SAVE"]), ok());
    s.restart();
    let mut c = s.conn();
    check(&mut c, "after a restart");
    assert_eq!(c.q(&["DEBUG", "RELOAD"]), ok());
    check(&mut c, "after DEBUG RELOAD");
    // The cap is back in force once loading is over.
    let bomb = "#!lua name=bomb\nredis.register_function('bomb', function() local t = {} for i = 1, 1e8 do t[i] = ('z'):rep(100) .. i end end)";
    load(&mut c, bomb);
    assert!(c
        .q(&["RX.CALL", "bomb", "0"])
        .err_text()
        .unwrap()
        .contains("not enough memory"));
    check(&mut c, "after an allocation bomb");
}

/// A library body that runs for about a second (0.8 s with the JIT on, 1.9 s off: the
/// JIT gains little on `%`): RX.LOAD refuses it (500 ms timeout), but once a dataset
/// carries it (here the AOF), loading it takes as long as it takes.
const LIB_SLOW: &str = "#!lua name=slow
local x = 0 for i = 1, 1e8 do x = (x * 31 + i) % 1000003 end
redis.register_function('slow', function() return 'loaded' end)";

/// A library that cannot be built on this server (its body fails), as a master or an AOF
/// written elsewhere may carry.
const LIB_BROKEN: &str = "#!lua name=broken
needs_another_server()
redis.register_function('never', function() return 1 end)";
const LIB_FIXED: &str = "#!lua name=broken
redis.register_function('fixed', function() return 'fixed' end)";

fn set_aside_list(c: &mut Conn) -> Reply {
    c.q(&["RX.LIST", "SETASIDE", "WITHCODE"]).ok()
}

#[test]
fn a_dataset_library_that_cannot_be_built_is_set_aside_with_its_code() {
    let mut s = Server::start_with(&["--appendonly", "yes"], &[]);
    let mut c = s.conn();
    c.q(&["SET", "key", "value"]).ok();
    load(&mut c, LIB_B);
    let slow_refused = c.q(&["RX.LOAD", LIB_SLOW]);
    assert!(
        slow_refused.err_text().unwrap().contains("RX.LOAD timeout"),
        "{slow_refused:?}"
    );
    apply_through_aof(
        &s,
        &mut c,
        &[&apply_payload(&[
            ("broken", 3, Some(LIB_BROKEN)),
            ("slow", 1, Some(LIB_SLOW)),
        ])],
    );
    let check = |c: &mut Conn, when: &str| {
        assert_eq!(c.q(&["GET", "key"]), bulk("value"), "{when}");
        assert_callable(c, &["libb"], when);
        assert_eq!(c.q(&["RX.CALL", "slow", "0"]), bulk("loaded"), "{when}");
        assert_eq!(rx_names(c), vec!["libb", "slow"], "{when}");
        let kept = set_aside_list(c);
        let kept = kept.as_array().unwrap();
        assert_eq!(kept.len(), 1, "{when}: {kept:?}");
        let fields = kept[0].as_array().unwrap();
        assert_eq!(
            fields[0..2],
            [bulk("library_name"), bulk("broken")],
            "{when}"
        );
        assert_eq!(fields[2], bulk("error"), "{when}");
        let error = String::from_utf8_lossy(fields[3].as_bytes().unwrap()).to_string();
        assert!(
            error.contains("nonexistent global variable 'needs_another_server'"),
            "{when}: {error}"
        );
        assert_eq!(
            fields[4..6],
            [bulk("library_code"), bulk(LIB_BROKEN)],
            "{when}"
        );
        // Its name is taken and its version kept.
        assert_eq!(
            c.q(&["RX.LOAD", LIB_FIXED]).err_text(),
            Some("ERR Library 'broken' already exists"),
            "{when}"
        );
        assert!(
            versions(c).contains(&("broken".to_string(), 3, 0)),
            "{when}"
        );
    };
    check(&mut c, "after the AOF");
    assert!(s.log().contains("library 'broken' from the master's stream or the AOF could not be loaded on this server and is set aside"));
    // The RDB keeps it too (DEBUG RELOAD saves and loads an RDB), and so does the AOF
    // across a restart.
    assert_eq!(c.q(&["DEBUG", "RELOAD"]), ok());
    check(&mut c, "after DEBUG RELOAD");
    assert!(s
        .log()
        .contains("library 'broken' from the RDB could not be loaded"));
    s.restart();
    let mut c = s.conn();
    check(&mut c, "after a restart from the AOF");
    // Replacing it ends it, with the next version.
    assert_eq!(c.q(&["RX.LOAD", "REPLACE", LIB_FIXED]), bulk("broken"));
    assert_eq!(c.q(&["RX.CALL", "fixed", "0"]), bulk("fixed"));
    assert_eq!(set_aside_list(&mut c), Reply::Array(vec![]));
    assert!(versions(&mut c).contains(&("broken".to_string(), 4, 0)));
    // Deleting a set-aside library works like deleting any other.
    apply_again_as_rdb_entry(&mut s);
}

/// Sets a library aside again through the AOF, then deletes it.
fn apply_again_as_rdb_entry(s: &mut Server) {
    let mut c = s.conn();
    apply_through_aof(
        s,
        &mut c,
        &[&apply_payload(&[("broken", 9, Some(LIB_BROKEN))])],
    );
    assert_eq!(set_aside_list(&mut c).as_array().unwrap().len(), 1);
    assert_eq!(c.q(&["RX.DELETE", "broken"]), ok());
    assert_eq!(set_aside_list(&mut c), Reply::Array(vec![]));
    assert!(versions(&mut c).contains(&("broken".to_string(), 10, 1)));
}
