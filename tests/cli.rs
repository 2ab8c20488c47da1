//! The `rx` deploy tool (crates/rx-cli) end to end, against a server and a 3+3 cluster:
//! first deploy, no-op redeploy, a change, a conflict, `--prune`, history, rollback and
//! diff, with their exit codes.

mod common;

use common::cluster::Cluster;
use common::stdlib::{int_field, text_field};
use common::{Conn, Reply, Server};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The tool, built by `make build`/`make test` (`cargo build --workspace`) next to the module.
fn rx_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/rx");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "rx-cli"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the rx tool failed");
    }
    bin
}

fn rx(port: u16, args: &[&str]) -> Output {
    Command::new(rx_bin())
        .args(["--url", &format!("redis://127.0.0.1:{port}")])
        .args(args)
        .env_remove("RX_URL")
        .output()
        .expect("rx runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn write_lib(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(
        &path,
        format!("#!lua name={name}\nredis.register_function('{name}_f', function() return '{value}' end)\n"),
    )
    .unwrap();
    path
}

fn call(c: &mut Conn, name: &str) -> Reply {
    c.q(&["RX.CALL", &format!("{name}_f"), "0"])
}

fn libs_dir(s: &Server) -> PathBuf {
    let d = s.dir().join("libs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn deploy_redeploy_change_prune_history_rollback_and_diff() {
    let s = Server::start_with(&[], &["stdlib", "cart"]);
    let mut c = s.conn();
    let dir = libs_dir(&s);
    let d = dir.to_str().unwrap();
    write_lib(&dir, "one", "1");
    write_lib(&dir, "two", "2");

    let first = rx(s.port(), &["deploy", d]);
    assert_eq!(code(&first), 0, "{}{}", stdout(&first), stderr(&first));
    assert!(
        stdout(&first).contains("create     one"),
        "{}",
        stdout(&first)
    );
    assert!(stdout(&first).contains("2 change(s) applied"));
    assert_eq!(call(&mut c, "one").as_str(), Some("1"));

    let again = rx(s.port(), &["deploy", d]);
    assert_eq!(code(&again), 0);
    assert!(
        stdout(&again).contains("unchanged  one") && stdout(&again).contains("0 change(s) planned")
    );
    assert_eq!(
        c.q(&["RX.HISTORY", "one"]).as_array().unwrap().len(),
        1,
        "a no-op deploy loads nothing"
    );

    let one = write_lib(&dir, "one", "1b");
    let diff = rx(s.port(), &["diff", one.to_str().unwrap()]);
    assert_eq!(code(&diff), 1, "diff exits 1 on a difference");
    assert!(stdout(&diff).contains("-redis.register_function('one_f', function() return '1' end)"));
    assert!(stdout(&diff).contains("+redis.register_function('one_f', function() return '1b' end)"));
    let dry = rx(s.port(), &["deploy", "--dry-run", d]);
    assert_eq!(code(&dry), 0);
    assert!(stdout(&dry).contains("replace    one"));
    assert_eq!(
        call(&mut c, "one").as_str(),
        Some("1"),
        "--dry-run applies nothing"
    );

    let json = rx(s.port(), &["deploy", "--json", d]);
    assert_eq!(code(&json), 0, "{}", stderr(&json));
    let out = stdout(&json);
    assert!(
        out.starts_with('{')
            && out.contains(r#""applied":["one"]"#)
            && out.contains(r#""error":null"#),
        "{out}"
    );
    assert_eq!(call(&mut c, "one").as_str(), Some("1b"));
    assert_eq!(code(&rx(s.port(), &["diff", one.to_str().unwrap()])), 0);

    // --prune deletes what no file holds (never the bundled libraries, at version 0).
    std::fs::remove_file(dir.join("two.lua")).unwrap();
    let pruned = rx(s.port(), &["deploy", "--prune", d]);
    assert_eq!(code(&pruned), 0, "{}", stderr(&pruned));
    assert!(stdout(&pruned).contains("delete     two"));
    assert!(call(&mut c, "two").is_error());
    assert!(
        !c.q(&["RX.LIST", "LIBRARYNAME", "cart"])
            .as_array()
            .unwrap()
            .is_empty(),
        "bundled libraries stay"
    );

    let history = rx(s.port(), &["history", "one"]);
    assert_eq!(code(&history), 0);
    let lines: Vec<String> = stdout(&history).lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[1].contains("replace") && lines[2].contains("load"),
        "{lines:?}"
    );

    let back = rx(s.port(), &["rollback", "one"]);
    assert_eq!(code(&back), 0, "{}", stderr(&back));
    assert!(stdout(&back).contains("now at version 3"));
    assert_eq!(call(&mut c, "one").as_str(), Some("1"));
    let two = rx(s.port(), &["rollback", "two", "--json"]);
    assert_eq!(stdout(&two).trim(), r#"{"library":"two","version":3}"#);
    assert_eq!(call(&mut c, "two").as_str(), Some("2"));
    let missing = rx(s.port(), &["rollback", "nope"]);
    assert_eq!(code(&missing), 4);
    assert!(stderr(&missing).contains("has no history"));

    let status = rx(s.port(), &["status"]);
    assert!(stdout(&status).contains("one") && stdout(&status).contains("not a cluster"));

    // Usage and connection errors.
    assert_eq!(code(&rx(s.port(), &["deploy"])), 2);
    assert_eq!(code(&rx(s.port(), &["frobnicate"])), 2);
    assert_eq!(code(&rx(1, &["status"])), 2);
    let bad = dir.join("bad.lua");
    std::fs::write(&bad, "#!lua name=bad\nthis is not lua\n").unwrap();
    let refused = rx(s.port(), &["deploy", d]);
    assert_eq!(code(&refused), 4, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("create bad"),
        "{}",
        stderr(&refused)
    );
    assert!(c
        .q(&["RX.LIST", "LIBRARYNAME", "bad"])
        .as_array()
        .unwrap()
        .is_empty());
}

/// Another client changes a library between the deploy's reading of the digests and its
/// load: the load's IFDIGEST fails and the deploy stops with exit code 3. The interleaving
/// is made certain with CLIENT PAUSE WRITE: the deploy's reads go through, its first write
/// waits, the other client's load queues behind it, and both run in order on unpause.
#[test]
fn a_concurrent_change_stops_the_deploy_with_a_conflict() {
    let s = Server::start();
    let mut c = s.conn();
    let dir = libs_dir(&s);
    write_lib(&dir, "one", "1");
    assert_eq!(code(&rx(s.port(), &["deploy", dir.to_str().unwrap()])), 0);
    write_lib(&dir, "one", "mine");
    write_lib(&dir, "zzz", "after");

    c.q(&["CLIENT", "PAUSE", "5000", "WRITE"]).ok();
    let port = s.port();
    let d = dir.to_str().unwrap().to_string();
    let deploy = std::thread::spawn(move || rx(port, &["deploy", &d]));
    std::thread::sleep(Duration::from_millis(500));
    let mut other = s.conn();
    other
        .send(&[
            "RX.LOAD",
            "REPLACE",
            "#!lua name=one\nredis.register_function('one_f', function() return 'theirs' end)\n",
        ])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.q(&["CLIENT", "UNPAUSE"]).ok();
    let out = deploy.join().unwrap();
    let _ = other.read_frame();
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("CONFLICT library 'one' is at version 2"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        call(&mut c, "one").as_str(),
        Some("theirs"),
        "the other client's change stands"
    );
    assert!(
        call(&mut c, "zzz").is_error(),
        "nothing after the conflict was applied"
    );
}

#[test]
fn deploy_to_a_cluster_waits_until_every_node_has_the_libraries() {
    let cluster = Cluster::start(3, 1);
    let primary = cluster
        .nodes
        .iter()
        .find(|n| {
            let r = n.conn().q(&["ROLE"]);
            r.as_array().unwrap()[0].as_str() == Some("master")
        })
        .unwrap();
    let port: u16 = primary.addr().rsplit(':').next().unwrap().parse().unwrap();
    let dir = std::env::temp_dir().join(format!("rx-cli-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_lib(&dir, "clu", "v1");
    let out = rx(port, &["deploy", "--timeout", "60", dir.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("cluster: all 6 nodes in sync"),
        "{}",
        stdout(&out)
    );
    // Every node has it at once: the deploy waited for RX.CLUSTER STATUS to say so.
    for n in &cluster.nodes {
        let list = n
            .conn()
            .q(&["RX.LIST", "LIBRARYNAME", "clu", "WITHVERSIONS"]);
        assert_eq!(
            int_field(&list.as_array().unwrap()[0], "version"),
            1,
            "{}",
            n.addr()
        );
    }
    write_lib(&dir, "clu", "v2");
    assert_eq!(code(&rx(port, &["deploy", dir.to_str().unwrap()])), 0);
    let back = rx(port, &["rollback", "clu"]);
    assert_eq!(code(&back), 0, "{}", stderr(&back));
    // Each node's history holds the changes it applied: here all of them, with the
    // action and time of the node that made them.
    let want = primary.conn().q(&["RX.HISTORY", "clu", "WITHCODE"]);
    assert_eq!(want.as_array().unwrap().len(), 3);
    for n in &cluster.nodes {
        assert_eq!(
            n.conn().q(&["RX.HISTORY", "clu", "WITHCODE"]),
            want,
            "{}",
            n.addr()
        );
        let list = n.conn().q(&["RX.LIST", "LIBRARYNAME", "clu", "WITHCODE"]);
        let code = text_field(&list.as_array().unwrap()[0], "library_code");
        assert!(code.contains("return 'v1'"), "{}: {code}", n.addr());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
