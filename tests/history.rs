//! Safe deploys against real servers: compare-and-swap loads (`IFVERSION`/`IFDIGEST`),
//! `DRYRUN`, `RX.HISTORY`, `RX.ROLLBACK` and `rx.history-depth`, and history as data: it
//! survives DEBUG RELOAD, a restart from the AOF, and reaches a replica by full sync and
//! by the replication stream.

mod common;

use common::stdlib::{field, int_field, text_field};
use common::{info_field, sha1_hex, wait_until, Conn, Reply, Server};
use std::time::Duration;

fn lib(name: &str, value: i64) -> String {
    format!(
        "#!lua name={name}\nredis.register_function('{name}_f', function() return {value} end)\n"
    )
}

fn call(c: &mut Conn, name: &str) -> Reply {
    c.q(&["RX.CALL", &format!("{name}_f"), "0"])
}

/// (version, action, digest) of each history entry, newest first.
fn history(c: &mut Conn, name: &str) -> Vec<(i64, String, String)> {
    let r = c.q(&["RX.HISTORY", name]);
    r.as_array()
        .unwrap_or_else(|| panic!("RX.HISTORY: {r:?}"))
        .iter()
        .map(|e| {
            (
                int_field(e, "version"),
                text_field(e, "action"),
                text_field(e, "digest"),
            )
        })
        .collect()
}

fn versions(c: &mut Conn, name: &str) -> Vec<i64> {
    history(c, name).into_iter().map(|(v, ..)| v).collect()
}

const ZEROS: &str = "0000000000000000000000000000000000000000";

#[test]
fn conditional_loads_change_nothing_unless_the_condition_holds() {
    let s = Server::start();
    let mut c = s.conn();
    // IFDIGEST of forty zeros: only if the library does not exist.
    assert_eq!(
        c.q(&["RX.LOAD", "IFDIGEST", ZEROS, &lib("a", 1)]).as_str(),
        Some("a")
    );
    let err = c.q(&["RX.LOAD", "IFDIGEST", ZEROS, &lib("a", 2)]);
    assert_eq!(
        err.err_text(),
        Some(
            format!(
                "CONFLICT library 'a' is at version 1 digest {}",
                sha1_hex(lib("a", 1).as_bytes())
            )
            .as_str()
        )
    );
    assert_eq!(call(&mut c, "a").as_int(), Some(1));
    // IFVERSION and IFDIGEST replace without REPLACE when they hold.
    assert_eq!(
        c.q(&["RX.LOAD", "IFVERSION", "1", &lib("a", 2)]).as_str(),
        Some("a")
    );
    assert_eq!(call(&mut c, "a").as_int(), Some(2));
    let err = c.q(&["RX.LOAD", "IFVERSION", "1", &lib("a", 3)]);
    assert!(
        err.err_text()
            .unwrap()
            .starts_with("CONFLICT library 'a' is at version 2 digest "),
        "{err:?}"
    );
    let d2 = sha1_hex(lib("a", 2).as_bytes());
    assert_eq!(
        c.q(&["RX.LOAD", "ifdigest", &d2, &lib("a", 3)]).as_str(),
        Some("a")
    );
    assert_eq!(call(&mut c, "a").as_int(), Some(3));
    assert_eq!(versions(&mut c, "a"), vec![3, 2, 1]);
    // A deleted library is at its deletion's version, with the all-zero digest.
    c.q(&["RX.DELETE", "a"]).ok();
    let err = c.q(&["RX.LOAD", "IFVERSION", "3", &lib("a", 4)]);
    assert_eq!(
        err.err_text(),
        Some(format!("CONFLICT library 'a' is at version 4 digest {ZEROS}").as_str())
    );
    assert_eq!(
        c.q(&["RX.LOAD", "IFDIGEST", ZEROS, &lib("a", 5)]).as_str(),
        Some("a")
    );
    // A library never seen is at version 0.
    assert!(c
        .q(&["RX.LOAD", "IFVERSION", "1", &lib("b", 1)])
        .err_text()
        .unwrap()
        .contains("is at version 0 digest"));
    assert_eq!(
        c.q(&["RX.LOAD", "IFVERSION", "0", &lib("b", 1)]).as_str(),
        Some("b")
    );
    // A failed condition changed nothing: no history entry, no version.
    assert_eq!(versions(&mut c, "b"), vec![1]);
    // Bad options.
    for (args, want) in [
        (vec!["IFVERSION", "x"], "IFVERSION needs a version"),
        (vec!["IFVERSION", "-1"], "IFVERSION needs a version"),
        (vec!["IFDIGEST", "abc"], "IFDIGEST needs a SHA-1 digest"),
        (vec!["IFVERSION", "1", "IFDIGEST", ZEROS], "not together"),
        (vec!["IFVERSION"], "IFVERSION needs an argument"),
        (vec!["NOPE"], "Unknown option given: NOPE"),
    ] {
        let code = lib("b", 9);
        let mut cmd = vec!["RX.LOAD"];
        cmd.extend(args.iter().copied());
        cmd.push(&code);
        let r = c.q(&cmd);
        assert!(
            r.err_text().is_some_and(|e| e.contains(want)),
            "{args:?}: {r:?}"
        );
    }
    assert_eq!(call(&mut c, "b").as_int(), Some(1));
    // Without the new options, RX.LOAD is as before.
    assert!(c
        .q(&["RX.LOAD", &lib("b", 2)])
        .err_text()
        .unwrap()
        .contains("already exists"));
    assert_eq!(
        c.q(&["RX.LOAD", "REPLACE", &lib("b", 2)]).as_str(),
        Some("b")
    );
}

#[test]
fn dry_runs_check_everything_and_change_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    let code = "#!lua name=d\nredis.register_function{function_name='d1', callback=function() return 1 end, flags={'no-writes'}}\nredis.register_function('d2', function() return 2 end)\n";
    let r = c.q(&["RX.LOAD", "DRYRUN", code]);
    assert_eq!(text_field(&r, "library"), "d");
    assert_eq!(text_field(&r, "action"), "create");
    let functions = field(&r, "functions");
    let functions = functions.as_array().unwrap();
    assert_eq!(functions.len(), 2);
    assert_eq!(text_field(&functions[0], "name"), "d1");
    assert_eq!(
        field(&functions[0], "flags"),
        Reply::Array(vec![Reply::Status("no-writes".into())])
    );
    assert_eq!(
        c.q(&["RX.LIST"]),
        Reply::Array(vec![]),
        "a dry run installs nothing"
    );
    assert_eq!(versions(&mut c, "d"), Vec::<i64>::new());
    c.q(&["RX.LOAD", code]);
    // The same checks as a load: exists without REPLACE, clashes, errors in the body.
    assert!(c
        .q(&["RX.LOAD", "DRYRUN", code])
        .err_text()
        .unwrap()
        .contains("already exists"));
    assert_eq!(
        text_field(&c.q(&["RX.LOAD", "REPLACE", "DRYRUN", code]), "action"),
        "unchanged"
    );
    let changed = code.replace("return 2", "return 3");
    assert_eq!(
        text_field(&c.q(&["RX.LOAD", "DRYRUN", "REPLACE", &changed]), "action"),
        "replace"
    );
    let clash = "#!lua name=e\nredis.register_function('d1', function() return 1 end)\n";
    assert_eq!(
        c.q(&["RX.LOAD", "DRYRUN", clash]).err_text(),
        Some("ERR Function d1 already exists")
    );
    let broken = "#!lua name=e\nlocal x = nil + 1\n";
    assert!(c
        .q(&["RX.LOAD", "DRYRUN", broken])
        .err_text()
        .unwrap()
        .contains("attempt to perform arithmetic"));
    let endless = "#!lua name=e\nwhile true do end\n";
    assert!(c
        .q(&["RX.LOAD", "DRYRUN", endless])
        .err_text()
        .unwrap()
        .contains("timeout"));
    let conflict = c.q(&["RX.LOAD", "DRYRUN", "IFVERSION", "7", &changed]);
    assert!(conflict
        .err_text()
        .unwrap()
        .starts_with("CONFLICT library 'd' is at version 1"));
    assert_eq!(
        text_field(
            &c.q(&["RX.LOAD", "DRYRUN", "IFVERSION", "1", &changed]),
            "action"
        ),
        "replace"
    );
    // Nothing above changed the library.
    assert_eq!(versions(&mut c, "d"), vec![1]);
    assert_eq!(c.q(&["RX.CALL", "d2", "0"]).as_int(), Some(2));
    assert_eq!(c.q(&["RX.LIST", "LIBRARYNAME", "e"]), Reply::Array(vec![]));
}

#[test]
fn history_lists_each_change_and_rollback_installs_a_new_version() {
    let s = Server::start();
    let mut c = s.conn();
    c.q(&["RX.LOAD", &lib("h", 1)]).ok();
    c.q(&["RX.LOAD", "REPLACE", &lib("h", 2)]).ok();
    let r = c.q(&["RX.HISTORY", "h", "WITHCODE"]);
    let entries = r.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        common::stdlib::fields(&entries[0]),
        vec!["action", "bytes", "code", "digest", "time_ms", "version"]
    );
    assert_eq!(
        field(&entries[0], "code").as_bytes(),
        Some(lib("h", 2).as_bytes())
    );
    assert_eq!(int_field(&entries[0], "bytes"), lib("h", 2).len() as i64);
    assert!(int_field(&entries[0], "time_ms") >= int_field(&entries[1], "time_ms"));
    assert!(int_field(&entries[1], "time_ms") > 1_700_000_000_000);
    // Back to version 1's code, as version 3.
    assert_eq!(c.q(&["RX.ROLLBACK", "h"]).as_int(), Some(3));
    assert_eq!(call(&mut c, "h").as_int(), Some(1));
    // Rolling back again undoes the rollback.
    assert_eq!(c.q(&["RX.ROLLBACK", "h"]).as_int(), Some(4));
    assert_eq!(call(&mut c, "h").as_int(), Some(2));
    // Deleted libraries keep their history and can be rolled back.
    c.q(&["RX.DELETE", "h"]).ok();
    assert!(call(&mut c, "h").is_error());
    assert_eq!(c.q(&["RX.ROLLBACK", "h"]).as_int(), Some(6));
    assert_eq!(call(&mut c, "h").as_int(), Some(2));
    assert_eq!(c.q(&["RX.ROLLBACK", "h", "TO", "1"]).as_int(), Some(7));
    assert_eq!(call(&mut c, "h").as_int(), Some(1));
    let actions: Vec<String> = history(&mut c, "h")
        .into_iter()
        .map(|(_, a, _)| a)
        .collect();
    assert_eq!(
        actions,
        ["rollback", "rollback", "delete", "rollback", "rollback", "replace", "load"]
    );
    let with_code = c.q(&["RX.HISTORY", "h", "WITHCODE"]);
    let deletion = &with_code.as_array().unwrap()[2];
    assert_eq!(field(deletion, "code"), Reply::Nil);
    assert_eq!(text_field(deletion, "digest"), ZEROS);
    // RX.FLUSH keeps the history, so a flush can be undone library by library.
    c.q(&["RX.FLUSH"]).ok();
    assert_eq!(history(&mut c, "h")[0].1, "delete");
    assert_eq!(c.q(&["RX.ROLLBACK", "h"]).as_int(), Some(9));
    assert_eq!(call(&mut c, "h").as_int(), Some(1));
    // Errors.
    for (args, want) in [
        (
            vec!["RX.ROLLBACK", "nope"],
            "ERR library 'nope' has no history",
        ),
        (
            vec!["RX.ROLLBACK", "h", "TO", "99"],
            "has no version 99 in its history",
        ),
        (vec!["RX.ROLLBACK", "h", "TO", "5"], "is a deletion"),
        (vec!["RX.ROLLBACK", "h", "TO", "x"], "TO needs a version"),
        (
            vec!["RX.ROLLBACK", "h", "FROM", "1"],
            "Unknown argument FROM",
        ),
        (vec!["RX.ROLLBACK"], "wrong number of arguments"),
        (vec!["RX.HISTORY", "h", "NOPE"], "Unknown argument NOPE"),
    ] {
        let r = c.q(&args);
        assert!(
            r.err_text().is_some_and(|e| e.contains(want)),
            "{args:?}: {r:?}"
        );
    }
    c.q(&["RX.LOAD", &lib("solo", 1)]).ok();
    assert!(c
        .q(&["RX.ROLLBACK", "solo"])
        .err_text()
        .unwrap()
        .contains("no earlier version"));
    assert_eq!(c.q(&["RX.HISTORY", "never"]), Reply::Array(vec![]));
    // A rollback whose code no longer loads (its function name is now another library's)
    // fails like a load and changes nothing.
    c.q(&[
        "RX.LOAD",
        "REPLACE",
        "#!lua name=h\nredis.register_function('other_f', function() return 0 end)\n",
    ])
    .ok();
    c.q(&[
        "RX.LOAD",
        "#!lua name=thief\nredis.register_function('h_f', function() return 'thief' end)\n",
    ])
    .ok();
    let before = versions(&mut c, "h");
    assert_eq!(
        c.q(&["RX.ROLLBACK", "h"]).err_text(),
        Some("ERR Function h_f already exists")
    );
    assert_eq!(versions(&mut c, "h"), before);
    assert_eq!(c.q(&["RX.CALL", "other_f", "0"]).as_int(), Some(0));
}

#[test]
fn history_depth_bounds_the_entries_kept() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(
        c.q(&["CONFIG", "GET", "rx.history-depth"])
            .as_array()
            .unwrap()[1]
            .as_str(),
        Some("10")
    );
    for v in 1..=25 {
        c.q(&["RX.LOAD", "REPLACE", &lib("deep", v)]).ok();
    }
    assert_eq!(
        versions(&mut c, "deep"),
        (16..=25).rev().collect::<Vec<_>>()
    );
    c.q(&["CONFIG", "SET", "rx.history-depth", "3"]).ok();
    assert_eq!(versions(&mut c, "deep"), vec![25, 24, 23]);
    assert_eq!(
        info_field(&mut c, "rx", "rx_history_entries").as_deref(),
        Some("3")
    );
    let bytes: usize = (23..=25).map(|v| lib("deep", v).len()).sum();
    assert_eq!(
        info_field(&mut c, "rx", "rx_history_code_bytes"),
        Some(bytes.to_string())
    );
    c.q(&["CONFIG", "SET", "rx.history-depth", "0"]).ok();
    assert_eq!(versions(&mut c, "deep"), Vec::<i64>::new());
    c.q(&["RX.LOAD", "REPLACE", &lib("deep", 26)]).ok();
    assert_eq!(
        versions(&mut c, "deep"),
        Vec::<i64>::new(),
        "0 turns history off"
    );
    assert!(c.q(&["CONFIG", "SET", "rx.history-depth", "-1"]).is_error());
    assert!(c
        .q(&["CONFIG", "SET", "rx.history-depth", "1001"])
        .is_error());
}

/// Two clients race `IFDIGEST` loads of the same library from the same starting digest:
/// exactly one wins each round, and the other gets CONFLICT.
#[test]
fn concurrent_compare_and_swap_loads_have_exactly_one_winner() {
    let s = Server::start();
    let port = s.port();
    let mut c = s.conn();
    c.q(&["RX.LOAD", &lib("race", 0)]).ok();
    for round in 1..=100i64 {
        let list = c.q(&["RX.LIST", "LIBRARYNAME", "race", "WITHVERSIONS"]);
        let digest = text_field(&list.as_array().unwrap()[0], "digest");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let racers: Vec<_> = (0..2i64)
            .map(|who| {
                let barrier = barrier.clone();
                let digest = digest.clone();
                std::thread::spawn(move || {
                    let mut c = Conn::connect(port);
                    barrier.wait();
                    c.q(&[
                        "RX.LOAD",
                        "IFDIGEST",
                        &digest,
                        &lib("race", round * 10 + who),
                    ])
                })
            })
            .collect();
        let replies: Vec<Reply> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let wins = replies
            .iter()
            .filter(|r| r.as_str() == Some("race"))
            .count();
        let conflicts = replies
            .iter()
            .filter(|r| {
                r.err_text()
                    .is_some_and(|e| e.starts_with("CONFLICT library 'race' is at version"))
            })
            .count();
        assert_eq!((wins, conflicts), (1, 1), "round {round}: {replies:?}");
        let winner = if replies[0].as_str().is_some() { 0 } else { 1 };
        assert_eq!(call(&mut c, "race").as_int(), Some(round * 10 + winner));
    }
    assert_eq!(versions(&mut c, "race")[0], 101);
}

#[test]
fn history_survives_debug_reload_and_an_aof_restart() {
    let mut s = Server::start_with(&["--appendonly", "yes"], &[]);
    let mut c = s.conn();
    c.q(&["RX.LOAD", &lib("p", 1)]).ok();
    c.q(&["RX.LOAD", "REPLACE", &lib("p", 2)]).ok();
    c.q(&["RX.DELETE", "p"]).ok();
    c.q(&["RX.ROLLBACK", "p"]).ok();
    let before = history(&mut c, "p");
    let with_code = c.q(&["RX.HISTORY", "p", "WITHCODE"]);
    assert_eq!(before.len(), 4);
    c.q(&["DEBUG", "RELOAD"]).ok();
    assert_eq!(
        c.q(&["RX.HISTORY", "p", "WITHCODE"]),
        with_code,
        "after DEBUG RELOAD"
    );
    // Changes after the last rewrite are in the AOF's tail as RX.APPLY, with their origin.
    c.q(&["RX.LOAD", "REPLACE", &lib("p", 3)]).ok();
    let after_tail = c.q(&["RX.HISTORY", "p", "WITHCODE"]);
    s.restart();
    let mut c = s.conn();
    assert_eq!(
        c.q(&["RX.HISTORY", "p", "WITHCODE"]),
        after_tail,
        "after a restart from the AOF"
    );
    assert_eq!(call(&mut c, "p").as_int(), Some(3));
    assert_eq!(c.q(&["RX.ROLLBACK", "p"]).as_int(), Some(6));
    assert_eq!(call(&mut c, "p").as_int(), Some(2));
}

#[test]
fn history_reaches_replicas_by_full_sync_and_by_the_stream() {
    let m = Server::start_with(&["--repl-diskless-sync-delay", "0"], &[]);
    let mut mc = m.conn();
    mc.q(&["RX.LOAD", &lib("r", 1)]).ok();
    mc.q(&["RX.LOAD", "REPLACE", &lib("r", 2)]).ok();
    let port = m.port().to_string();
    let r = Server::start_with(&["--replicaof", "127.0.0.1", &port], &[]);
    let mut rc = r.conn();
    let synced = |mc: &mut Conn, rc: &mut Conn| {
        wait_until("the replica to catch up", Duration::from_secs(30), || {
            info_field(rc, "replication", "master_link_status").as_deref() == Some("up")
                && info_field(mc, "replication", "master_repl_offset")
                    == info_field(rc, "replication", "master_repl_offset")
        })
    };
    synced(&mut mc, &mut rc);
    assert_eq!(
        rc.q(&["RX.HISTORY", "r", "WITHCODE"]),
        mc.q(&["RX.HISTORY", "r", "WITHCODE"]),
        "full sync"
    );
    mc.q(&["RX.ROLLBACK", "r"]).ok();
    mc.q(&["RX.DELETE", "r"]).ok();
    synced(&mut mc, &mut rc);
    let want = mc.q(&["RX.HISTORY", "r", "WITHCODE"]);
    assert_eq!(
        rc.q(&["RX.HISTORY", "r", "WITHCODE"]),
        want,
        "replication stream"
    );
    assert_eq!(
        history(&mut rc, "r")
            .into_iter()
            .map(|(_, a, _)| a)
            .collect::<Vec<_>>(),
        ["delete", "rollback", "replace", "load"]
    );
    // A replica cannot change libraries itself.
    assert!(rc
        .q(&["RX.ROLLBACK", "r"])
        .err_text()
        .unwrap()
        .starts_with("READONLY"));
}
