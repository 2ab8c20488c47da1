//! The bundled standard library as a whole: which libraries load (the `stdlib` module
//! argument), and how they live with RX.DELETE, RX.FLUSH, persistence and restarts.

mod common;

use common::stdlib::library_names;
use common::{Reply, Server};

const ALL: [&str; 9] = [
    "cache",
    "cart",
    "counter",
    "ecommerce",
    "lock",
    "queue",
    "ratelimit",
    "session",
    "workflow",
];

#[test]
fn all_bundled_libraries_load_by_default_and_are_callable() {
    // `stdlib all` is what the module does without arguments (the harness opts out by default).
    let s = Server::start_with(&[], &["stdlib", "all"]);
    let mut c = s.conn();
    assert_eq!(library_names(&c.q(&["RX.LIST"])), ALL);
    let r = c.q(&["RX.CALL", "counter_incr", "1", "{t}:n", "5", "10"]);
    assert!(!r.is_error(), "{r:?}");
    let r = c.q(&[
        "RX.CALL",
        "lock_acquire",
        "2",
        "{t}:lock",
        "{t}:fence",
        "owner-1",
        "1000",
    ]);
    assert!(!r.is_error(), "{r:?}");
}

#[test]
fn the_module_argument_selects_libraries() {
    let s = Server::start_with(&[], &["stdlib", "lock,queue"]);
    let mut c = s.conn();
    assert_eq!(library_names(&c.q(&["RX.LIST"])), ["lock", "queue"]);
    let s = Server::start_with(&[], &["stdlib", "none"]);
    let mut c = s.conn();
    assert!(library_names(&c.q(&["RX.LIST"])).is_empty());
}

#[test]
fn an_unknown_library_in_the_argument_refuses_to_load_the_module() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bad-stdlib-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (started, text) = common::run_to_exit(&dir, &["stdlib", "lock,nope"]);
    assert!(!started, "the server started with a bad stdlib argument");
    assert!(text.contains("unknown stdlib library 'nope'"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bundled_libraries_are_ordinary_libraries_that_come_back_after_a_reload() {
    let s = Server::start_with(&[], &["stdlib", "all"]);
    let mut c = s.conn();
    // Deletable and flushable like any library...
    assert_eq!(c.q(&["RX.DELETE", "lock"]), Reply::Status("OK".into()));
    assert!(!library_names(&c.q(&["RX.LIST"])).contains(&"lock".to_string()));
    // ...and, as the module argument selects them, present again after a dataset load.
    assert_eq!(c.q(&["DEBUG", "RELOAD"]), Reply::Status("OK".into()));
    assert_eq!(library_names(&c.q(&["RX.LIST"])), ALL);
    assert_eq!(c.q(&["RX.FLUSH"]), Reply::Status("OK".into()));
    assert!(library_names(&c.q(&["RX.LIST"])).is_empty());
    assert_eq!(c.q(&["DEBUG", "RELOAD"]), Reply::Status("OK".into()));
    assert_eq!(library_names(&c.q(&["RX.LIST"])), ALL);
}

#[test]
fn a_users_library_with_a_bundled_name_is_never_overwritten() {
    let mut s = Server::start_with(&[], &["stdlib", "all"]);
    let mut c = s.conn();
    let mine = "#!lua name=lock\nredis.register_function('my_lock', function() return 'mine' end)";
    assert_eq!(
        c.q(&["RX.LOAD", "REPLACE", mine]),
        Reply::Bulk(b"lock".to_vec())
    );
    c.q(&["SAVE"]).ok();
    // After a restart from that RDB and a reload, the user's `lock` is still the one there.
    s.restart();
    let mut c = s.conn();
    assert_eq!(
        c.q(&["RX.CALL", "my_lock", "0"]),
        Reply::Bulk(b"mine".to_vec())
    );
    assert_eq!(
        c.q(&["RX.CALL", "lock_acquire", "2", "{t}:l", "{t}:f", "o", "100"])
            .err_text(),
        Some("ERR Function not found")
    );
    assert_eq!(c.q(&["DEBUG", "RELOAD"]), Reply::Status("OK".into()));
    assert_eq!(
        c.q(&["RX.CALL", "my_lock", "0"]),
        Reply::Bulk(b"mine".to_vec())
    );
    assert_eq!(library_names(&c.q(&["RX.LIST"])), ALL);
}

#[test]
fn a_deleted_bundled_library_stays_deleted_after_a_restart_in_a_cluster() {
    // In a cluster a deletion is cluster-wide: the tombstone the RDB carries must win over
    // the bundled library loaded when the module starts, before the dataset.
    let mut s = Server::start_with(&["--cluster-enabled", "yes"], &["stdlib", "all"]);
    let mut c = s.conn();
    assert_eq!(c.q(&["RX.DELETE", "lock"]), Reply::Status("OK".into()));
    c.q(&["SAVE"]).ok();
    s.restart();
    let mut c = s.conn();
    let names = library_names(&c.q(&["RX.LIST"]));
    assert!(!names.contains(&"lock".to_string()), "{names:?}");
    assert_eq!(names.len(), ALL.len() - 1);
    // Outside a cluster the bundled library comes back after a restart, as after a reload.
    let mut s = Server::start_with(&[], &["stdlib", "all"]);
    let mut c = s.conn();
    assert_eq!(c.q(&["RX.DELETE", "lock"]), Reply::Status("OK".into()));
    c.q(&["SAVE"]).ok();
    s.restart();
    let mut c = s.conn();
    assert_eq!(library_names(&c.q(&["RX.LIST"])), ALL);
}
