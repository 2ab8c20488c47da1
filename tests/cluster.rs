//! RX in a real Redis Cluster on loopback (3 primaries, 3 replicas, started with
//! `redis-server --cluster-enabled yes` and joined with `redis-cli --cluster create`):
//! routing answers equal FCALL's, and libraries stay in sync on every node by themselves.

mod common;

use common::cluster::{key_slot, Cluster, Node};
use common::{sha1_hex, Conn, Reply};
use std::time::{Duration, Instant};

const KV: &str = "#!lua name=kv
redis.register_function('kv_set', function(keys, args) redis.call('SET', keys[1], args[1]) return redis.call('GET', keys[1]) end)
redis.register_function{function_name='kv_get', callback=function(keys, args) return redis.call('GET', keys[1]) end, flags={'no-writes'}}
redis.register_function{function_name='kv_two', callback=function(keys, args) return {redis.call('EXISTS', keys[1]), redis.call('EXISTS', keys[2])} end, flags={'no-writes'}}
redis.register_function{function_name='kv_const', callback=function(keys, args) return 'const' end, flags={'no-writes'}}
redis.register_function{function_name='kv_touch', callback=function(keys, args) local n = 0 for i = 1, #args do n = n + redis.call('EXISTS', args[i]) end return n end, flags={'no-writes'}}
redis.register_function{function_name='kv_touch_cross', callback=function(keys, args) local n = 0 for i = 1, #args do n = n + redis.call('EXISTS', args[i]) end return n end, flags={'no-writes', 'allow-cross-slot-keys'}}
redis.register_function{function_name='kv_nocluster', callback=function(keys, args) return 1 end, flags={'no-cluster'}}
";

fn ok() -> Reply {
    Reply::Status("OK".into())
}

fn role(n: &Node) -> String {
    let r = n.conn().q(&["ROLE"]);
    r.as_array().unwrap()[0].as_str().unwrap().to_string()
}

fn primaries(c: &Cluster) -> Vec<usize> {
    (0..c.nodes.len())
        .filter(|&i| role(&c.nodes[i]) == "master")
        .collect()
}

fn list_raw(n: &Node) -> Vec<u8> {
    n.conn().raw(&["RX.LIST", "WITHCODE", "WITHVERSIONS"])
}

/// Waits until every node's `RX.LIST WITHCODE` equals `reference`'s; returns how long.
fn wait_converged(c: &Cluster, reference: usize, timeout: Duration, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let expected = list_raw(&c.nodes[reference]);
        if c.nodes.iter().all(|n| list_raw(n) == expected) {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            let lists: Vec<String> = c
                .nodes
                .iter()
                .map(|n| common::escape_bytes(&n.conn().raw(&["RX.CLUSTER", "MANIFEST"])))
                .collect();
            panic!(
                "{what}: not converged within {timeout:?}\nmanifests:\n{}\nlogs:\n{}",
                lists.join("\n"),
                c.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `field` of library `name` in a node's RX.LIST, if it has that library.
fn lib_field(n: &Node, name: &str, field: &str) -> Option<Reply> {
    let list = n.conn().q(&["RX.LIST", "WITHCODE", "WITHVERSIONS"]);
    for lib in list.as_array().unwrap() {
        let kv = lib.as_array().unwrap();
        let get = |k: &str| {
            kv.chunks(2)
                .find(|p| p[0].as_str() == Some(k))
                .map(|p| p[1].clone())
        };
        if get("library_name").and_then(|v| v.as_str().map(String::from)) == Some(name.into()) {
            return get(field);
        }
    }
    None
}

/// A key whose slot is served by node `owner` (by index).
fn key_on(c: &Cluster, owner: usize, prefix: &str) -> String {
    (0..100_000)
        .map(|i| format!("{prefix}:{i}"))
        .find(|k| c.owner_of(key_slot(k.as_bytes())) == owner)
        .unwrap()
}

fn both(conn: &mut Conn, rx: &[&str]) -> (Reply, Reply) {
    let mut native: Vec<&str> = rx.to_vec();
    native[0] = match rx[0] {
        "RX.CALL" => "FCALL",
        "RX.CALL_RO" => "FCALL_RO",
        other => panic!("{other}"),
    };
    (conn.q(rx), conn.q(&native))
}

#[test]
fn slot_function_matches_redis() {
    let n = Node::start();
    let mut c = n.conn();
    for k in ["foo", "{user1000}.following", "a{}b", "x{y}z", ""] {
        assert_eq!(
            c.q(&["CLUSTER", "KEYSLOT", k]),
            Reply::Int(key_slot(k.as_bytes()) as i64),
            "{k}"
        );
    }
}

#[test]
fn routing_and_calls_match_fcall_across_the_cluster() {
    let c = Cluster::start(3, 1);
    let masters = primaries(&c);
    assert_eq!(masters.len(), 3);
    // Native Functions must be loaded on every primary by hand; RX on one node.
    for &m in &masters {
        assert_eq!(
            c.nodes[m].conn().q(&["FUNCTION", "LOAD", KV]),
            Reply::Bulk(b"kv".to_vec())
        );
    }
    common::wait_until("native kv on the replicas", Duration::from_secs(10), || {
        c.nodes.iter().all(|n| {
            n.conn()
                .q(&["FUNCTION", "LIST"])
                .as_array()
                .map(|a| a.len())
                == Some(1)
        })
    });
    assert_eq!(
        c.nodes[masters[0]].conn().q(&["RX.LOAD", KV]),
        Reply::Bulk(b"kv".to_vec())
    );
    wait_converged(&c, masters[0], Duration::from_secs(2), "kv everywhere");

    // Calls through a cluster-aware client, keys spread over every slot range.
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..300 {
        let key = format!("user:{i}");
        let val = format!("value-{i}");
        owners.insert(c.owner_of(key_slot(key.as_bytes())));
        let set = c.route(
            Some(key.as_bytes()),
            &[b"RX.CALL", b"kv_set", b"1", key.as_bytes(), val.as_bytes()],
        );
        assert_eq!(set, Reply::Bulk(val.clone().into_bytes()), "{key}");
        for (rx, native) in [("RX.CALL_RO", "FCALL_RO"), ("RX.CALL", "FCALL")] {
            let a = c.route(
                Some(key.as_bytes()),
                &[rx.as_bytes(), b"kv_get", b"1", key.as_bytes()],
            );
            let b = c.route(
                Some(key.as_bytes()),
                &[native.as_bytes(), b"kv_get", b"1", key.as_bytes()],
            );
            assert_eq!(a, b, "{rx} {key}");
            assert_eq!(a, Reply::Bulk(val.clone().into_bytes()));
        }
    }
    assert_eq!(owners.len(), 3, "keys did not reach every primary");

    let (x, y) = (masters[0], masters[1]);
    let mut on_x = c.nodes[x].conn();
    let key_y = key_on(&c, y, "moved");
    // MOVED for a key served elsewhere, the same text as FCALL's.
    let (rx, native) = both(&mut on_x, &["RX.CALL", "kv_get", "1", &key_y]);
    assert!(rx.err_text().unwrap().starts_with("MOVED "), "{rx:?}");
    assert_eq!(rx, native);
    let (rx, native) = both(&mut on_x, &["RX.CALL_RO", "kv_get", "1", &key_y]);
    assert_eq!(rx, native);
    // CROSSSLOT for declared keys in different slots.
    let key_x = key_on(&c, x, "here");
    let key_x2 = (0..)
        .map(|i| format!("here2:{i}"))
        .find(|k| {
            c.owner_of(key_slot(k.as_bytes())) == x
                && key_slot(k.as_bytes()) != key_slot(key_x.as_bytes())
        })
        .unwrap();
    let (rx, native) = both(&mut on_x, &["RX.CALL", "kv_two", "2", &key_x, &key_x2]);
    assert!(rx.err_text().unwrap().starts_with("CROSSSLOT"), "{rx:?}");
    assert_eq!(rx, native);
    // numkeys 0 runs wherever it is sent.
    for n in &c.nodes {
        let mut conn = n.conn();
        conn.q(&["READONLY"]).ok();
        let (rx, native) = both(&mut conn, &["RX.CALL_RO", "kv_const", "0"]);
        assert_eq!(rx, Reply::Bulk(b"const".to_vec()));
        assert_eq!(rx, native);
    }
    // A replica redirects unless the connection is READONLY, as for FCALL_RO.
    let replica = (0..c.nodes.len()).find(|i| !masters.contains(i)).unwrap();
    let master_of_replica = {
        let r = c.nodes[replica].conn().q(&["ROLE"]);
        let port = r.as_array().unwrap()[2].as_int().unwrap() as u16;
        c.nodes.iter().position(|n| n.port == port).unwrap()
    };
    let key_r = key_on(&c, master_of_replica, "ro");
    let mut on_r = c.nodes[replica].conn();
    let (rx, native) = both(&mut on_r, &["RX.CALL_RO", "kv_get", "1", &key_r]);
    assert!(rx.err_text().unwrap().starts_with("MOVED "), "{rx:?}");
    assert_eq!(rx, native);
    assert_eq!(on_r.q(&["READONLY"]), ok());
    let (rx, native) = both(&mut on_r, &["RX.CALL_RO", "kv_get", "1", &key_r]);
    assert_eq!(rx, native);
    assert!(!rx.is_error(), "{rx:?}");

    // Inside a function: a key served by another node, as FCALL words it.
    let (rx, native) = both(&mut on_x, &["RX.CALL", "kv_touch", "0", &key_y]);
    assert!(native.is_error(), "{native:?}");
    assert_eq!(rx, native);
    // Two local keys of different slots, undeclared: refused unless allow-cross-slot-keys.
    let (rx, native) = both(&mut on_x, &["RX.CALL", "kv_touch", "0", &key_x, &key_x2]);
    assert_eq!(rx, native);
    let (rx, native) = both(
        &mut on_x,
        &["RX.CALL", "kv_touch", "1", &key_x, &key_x, &key_x2],
    );
    assert_eq!(rx, native);
    let (rx, native) = both(
        &mut on_x,
        &["RX.CALL", "kv_touch_cross", "0", &key_x, &key_x2],
    );
    assert_eq!(rx, native);
    assert!(!rx.is_error(), "{rx:?}");
    // Scripts: without a shebang they may cross slots; with one, they may not.
    for script in [
        "return redis.call('EXISTS', ARGV[1]) + redis.call('EXISTS', ARGV[2])",
        "#!lua flags=no-writes\nreturn redis.call('EXISTS', ARGV[1]) + redis.call('EXISTS', ARGV[2])",
    ] {
        let rx = on_x.q(&["RX.EVAL", script, "0", &key_x, &key_x2]);
        let native = on_x.q(&["EVAL", script, "0", &key_x, &key_x2]);
        assert_eq!(
            rx.err_text().map(|e| e.split(" script:").next().unwrap().to_string()),
            native.err_text().map(|e| e.split(" script:").next().unwrap().to_string()),
            "{script}: {rx:?} / {native:?}"
        );
        assert_eq!(rx.is_error(), native.is_error());
    }
    // no-cluster functions are refused on a cluster node.
    let (rx, native) = both(&mut on_x, &["RX.CALL", "kv_nocluster", "0"]);
    assert!(rx.is_error());
    assert_eq!(rx, native);

    // ASK while the slot migrates from x to y.
    let key_m = key_on(&c, x, "migrating");
    let slot = key_slot(key_m.as_bytes()).to_string();
    let (id_x, id_y) = (c.nodes[x].id(), c.nodes[y].id());
    let mut on_y = c.nodes[y].conn();
    assert_eq!(
        on_y.q(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &id_x]),
        ok()
    );
    assert_eq!(
        on_x.q(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &id_y]),
        ok()
    );
    let (rx, native) = both(&mut on_x, &["RX.CALL", "kv_get", "1", &key_m]);
    assert!(rx.err_text().unwrap().starts_with("ASK "), "{rx:?}");
    assert_eq!(rx, native);
    // Without ASKING the importing node redirects back; with it, the call runs there.
    let (rx, native) = both(&mut on_y, &["RX.CALL", "kv_get", "1", &key_m]);
    assert!(rx.err_text().unwrap().starts_with("MOVED "), "{rx:?}");
    assert_eq!(rx, native);
    on_y.q(&["ASKING"]).ok();
    let rx = on_y.q(&["RX.CALL", "kv_get", "1", &key_m]);
    on_y.q(&["ASKING"]).ok();
    let native = on_y.q(&["FCALL", "kv_get", "1", &key_m]);
    assert_eq!(rx, Reply::Nil);
    assert_eq!(rx, native);
    for conn in [&mut on_x, &mut on_y] {
        assert_eq!(conn.q(&["CLUSTER", "SETSLOT", &slot, "STABLE"]), ok());
    }
}

const SYNCED_V1: &str = "#!lua name=synced\nredis.register_function{function_name='synced_ver', callback=function() return 'v1' end, flags={'no-writes'}}";

fn status_in_sync(n: &Node) -> bool {
    let s = n.conn().q(&["RX.CLUSTER", "STATUS"]);
    let kv = s.as_array().unwrap();
    kv.chunks(2)
        .find(|p| p[0].as_str() == Some("in_sync"))
        .map(|p| p[1] == Reply::Int(1))
        .unwrap_or(false)
}

fn wait_status_in_sync(c: &Cluster, timeout: Duration) {
    let start = Instant::now();
    while !c.nodes.iter().all(status_in_sync) {
        if start.elapsed() > timeout {
            let all: Vec<String> = c
                .nodes
                .iter()
                .map(|n| format!("{:?}", n.conn().q(&["RX.CLUSTER", "STATUS"])))
                .collect();
            panic!("RX.CLUSTER STATUS never in sync:\n{}", all.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn libraries_converge_on_every_node_by_themselves() {
    let mut c = Cluster::start(3, 1);
    let masters = primaries(&c);
    let (a, b) = (masters[0], masters[1]);

    // Load on one node: on all six within a second.
    assert_eq!(
        c.nodes[a].conn().q(&["RX.LOAD", SYNCED_V1]),
        Reply::Bulk(b"synced".to_vec())
    );
    let took = wait_converged(&c, a, Duration::from_secs(1), "load on one node");
    eprintln!("load reached all 6 nodes in {took:?}");
    for n in &c.nodes {
        assert_eq!(lib_field(n, "synced", "version"), Some(Reply::Int(1)));
        assert_eq!(
            lib_field(n, "synced", "digest"),
            Some(Reply::Bulk(sha1_hex(SYNCED_V1.as_bytes()).into_bytes()))
        );
        let mut conn = n.conn();
        conn.q(&["READONLY"]).ok();
        assert_eq!(
            conn.q(&["RX.CALL_RO", "synced_ver", "0"]),
            Reply::Bulk(b"v1".to_vec())
        );
    }
    // Replicas refuse changes, as for FUNCTION LOAD.
    let replica = (0..c.nodes.len()).find(|i| !masters.contains(i)).unwrap();
    assert!(c.nodes[replica]
        .conn()
        .q(&["RX.LOAD", "REPLACE", SYNCED_V1])
        .err_text()
        .unwrap()
        .starts_with("READONLY"));
    wait_status_in_sync(&c, Duration::from_secs(3));

    // Two concurrent loads of different code on two nodes: identical everywhere, and the
    // rule decides (same version: the higher digest wins).
    let code_a =
        "#!lua name=synced\nredis.register_function('synced_ver', function() return 'from a' end)";
    let code_b =
        "#!lua name=synced\nredis.register_function('synced_ver', function() return 'from b' end)";
    let (pa, pb) = (c.nodes[a].port, c.nodes[b].port);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = [(pa, code_a), (pb, code_b)]
        .into_iter()
        .map(|(port, code)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::connect(port);
                barrier.wait();
                conn.q(&["RX.LOAD", "REPLACE", code])
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Reply::Bulk(b"synced".to_vec()));
    }
    wait_converged(&c, a, Duration::from_secs(2), "concurrent loads");
    let version = lib_field(&c.nodes[a], "synced", "version").unwrap();
    let code = lib_field(&c.nodes[a], "synced", "library_code").unwrap();
    let (da, db) = (sha1_hex(code_a.as_bytes()), sha1_hex(code_b.as_bytes()));
    match version {
        // Both loads took version 2: the higher digest wins.
        Reply::Int(2) => {
            let winner = if da > db { code_a } else { code_b };
            assert_eq!(code.as_bytes().unwrap(), winner.as_bytes());
        }
        // One node saw the other's load first, so its own came later and wins.
        Reply::Int(3) => assert!([code_a, code_b].contains(&code.as_str().unwrap())),
        other => panic!("unexpected version {other:?}"),
    }

    // Delete on one node: gone everywhere, as a tombstone.
    assert_eq!(c.nodes[b].conn().q(&["RX.DELETE", "synced"]), ok());
    let took = wait_converged(&c, b, Duration::from_secs(1), "delete");
    eprintln!("delete reached all 6 nodes in {took:?}");
    for n in &c.nodes {
        assert_eq!(lib_field(n, "synced", "version"), None);
        let m = common::escape_bytes(&n.conn().raw(&["RX.CLUSTER", "MANIFEST"]));
        assert!(m.contains("synced") && m.contains(&"0".repeat(40)), "{m}");
    }

    // A 1 MB library syncs (many bus frames).
    let filler = "x".repeat(1024 * 1024);
    let big = format!(
        "#!lua name=big\nlocal s = '{filler}'\nredis.register_function('big_len', function() return #s end)"
    );
    let t0 = Instant::now();
    assert_eq!(
        c.nodes[b].conn().q(&["RX.LOAD", &big]),
        Reply::Bulk(b"big".to_vec())
    );
    let took = wait_converged(&c, b, Duration::from_secs(5), "1 MB library");
    eprintln!(
        "1 MB library on all 6 nodes in {took:?} ({:?} with the load)",
        t0.elapsed()
    );
    let mut conn = c.nodes[a].conn();
    assert_eq!(
        conn.q(&["RX.CALL", "big_len", "0"]),
        Reply::Int(1024 * 1024)
    );

    // RX.RESTORE on one node: the libraries it installs reach every node. The payload
    // comes from a standalone server, so RESTORE is the only way the library got in.
    let payload = {
        let standalone = common::Server::start();
        let mut conn = standalone.conn();
        conn.q(&["RX.LOAD", "#!lua name=restored\nredis.register_function('restored_f', function() return 'restored' end)"]);
        conn.cmd(&["RX.DUMP"]).as_bytes().unwrap().to_vec()
    };
    let restore = vec![b"RX.RESTORE".to_vec(), payload, b"APPEND".to_vec()];
    assert_eq!(c.nodes[a].conn().cmd(&restore), ok());
    wait_converged(&c, a, Duration::from_secs(1), "restore on one node");
    for n in &c.nodes {
        assert_eq!(lib_field(n, "restored", "version"), Some(Reply::Int(1)));
    }

    // A primary restarted with an empty dataset converges (its RDB is never written here).
    let restarted = masters[2];
    c.nodes[restarted].restart();
    assert_eq!(lib_field(&c.nodes[restarted], "big", "version"), None);
    let took = wait_converged(&c, a, Duration::from_secs(15), "restarted primary");
    eprintln!("restarted empty primary converged in {took:?}");
    // Its replica resyncs from it (a full sync of what it had then) and converges too.
    let its_replica = (0..c.nodes.len())
        .find(|&i| {
            let r = c.nodes[i].conn().q(&["ROLE"]);
            let r = r.as_array().unwrap();
            r[0].as_str() == Some("slave") && r[2].as_int() == Some(c.nodes[restarted].port as i64)
        })
        .expect("the restarted primary keeps its replica");
    common::wait_until("the replica's link", Duration::from_secs(15), || {
        let mut conn = c.nodes[its_replica].conn();
        common::info_field(&mut conn, "replication", "master_link_status").as_deref() == Some("up")
    });
    wait_converged(&c, a, Duration::from_secs(5), "restarted primary's replica");

    // A replica restarted from an empty directory (a new node): meets the cluster,
    // replicates its old primary again and converges.
    let old = replica;
    let old_id = c.nodes[old].id();
    let its_master = {
        let r = c.nodes[old].conn().q(&["ROLE"]);
        let port = r.as_array().unwrap()[2].as_int().unwrap() as u16;
        c.nodes.iter().position(|n| n.port == port).unwrap()
    };
    c.nodes[old].kill();
    for entry in std::fs::read_dir(&c.nodes[old].dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap() != "redis.log" {
            std::fs::remove_file(&p).unwrap();
        }
    }
    c.nodes[old].restart();
    let new_id = c.nodes[old].id();
    assert_ne!(new_id, old_id);
    for (i, n) in c.nodes.iter().enumerate() {
        if i != old {
            n.conn().q(&["CLUSTER", "FORGET", &old_id]).ok();
        }
    }
    let (seed, seed_bus) = (c.nodes[a].port.to_string(), c.nodes[a].bus_port.to_string());
    assert_eq!(
        c.nodes[old]
            .conn()
            .q(&["CLUSTER", "MEET", "127.0.0.1", &seed, &seed_bus]),
        ok()
    );
    c.wait_ok(Duration::from_secs(20));
    let master_id = c.nodes[its_master].id();
    assert_eq!(
        c.nodes[old].conn().q(&["CLUSTER", "REPLICATE", &master_id]),
        ok()
    );
    let took = wait_converged(&c, a, Duration::from_secs(15), "emptied replica");
    eprintln!("replica from an empty directory converged in {took:?}");
    common::wait_until("the new replica's link", Duration::from_secs(15), || {
        let mut conn = c.nodes[old].conn();
        common::info_field(&mut conn, "replication", "master_link_status").as_deref() == Some("up")
    });

    // A seventh node joins and converges.
    let seventh = Node::start();
    assert_eq!(
        seventh
            .conn()
            .q(&["CLUSTER", "MEET", "127.0.0.1", &seed, &seed_bus]),
        ok()
    );
    c.nodes.push(seventh);
    c.wait_ok(Duration::from_secs(20));
    let took = wait_converged(&c, a, Duration::from_secs(10), "seventh node");
    eprintln!("seventh node converged in {took:?}");

    // Two libraries claiming one function name, loaded at once on two nodes (b runs its
    // load right after a sleep, before it reads the bus): each node keeps what it had and
    // logs the refusal once, without retrying; deleting one lets the other reach all.
    let clash1 = "#!lua name=clash1\nredis.register_function('f_clash', function() return 1 end)";
    let clash2 = "#!lua name=clash2\nredis.register_function('f_clash', function() return 2 end)";
    let mut on_b = c.nodes[b].conn();
    let mut pipeline = common::encode_command(&["DEBUG", "SLEEP", "0.5"]);
    pipeline.extend(common::encode_command(&["RX.LOAD", clash2]));
    on_b.send_bytes(&pipeline).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        c.nodes[a].conn().q(&["RX.LOAD", clash1]),
        Reply::Bulk(b"clash1".to_vec())
    );
    assert_eq!(common::parse_reply(&on_b.read_frame().unwrap()), ok());
    assert_eq!(
        common::parse_reply(&on_b.read_frame().unwrap()),
        Reply::Bulk(b"clash2".to_vec())
    );
    let refusals = |n: &Node| n.log().matches("could not apply library 'clash2'").count();
    common::wait_until("a's refusal of clash2", Duration::from_secs(3), || {
        refusals(&c.nodes[a]) > 0
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(refusals(&c.nodes[a]), 1, "clash2 retried on a");
    assert!(lib_field(&c.nodes[a], "clash2", "version").is_none());
    assert!(lib_field(&c.nodes[b], "clash1", "version").is_none());
    assert!(!status_in_sync(&c.nodes[a]));
    assert_eq!(c.nodes[b].conn().q(&["RX.DELETE", "clash2"]), ok());
    let took = wait_converged(&c, a, Duration::from_secs(5), "clash resolved");
    eprintln!("after the clash, deleting one library converged in {took:?}");
    for n in &c.nodes {
        assert_eq!(lib_field(n, "clash1", "version"), Some(Reply::Int(1)));
    }
    wait_status_in_sync(&c, Duration::from_secs(5));
    let status = c.nodes[6].conn().q(&["RX.CLUSTER", "STATUS"]);
    let nodes = status
        .as_array()
        .unwrap()
        .chunks(2)
        .find(|p| p[0].as_str() == Some("nodes"))
        .map(|p| p[1].as_array().unwrap().len());
    assert_eq!(nodes, Some(7));

    // RX.FLUSH on one node empties every node, the seventh included.
    assert_eq!(c.nodes[6].conn().q(&["RX.FLUSH"]), ok());
    wait_converged(&c, 6, Duration::from_secs(1), "flush on one node");
    for n in &c.nodes {
        assert_eq!(n.conn().q(&["RX.LIST"]), Reply::Array(vec![]));
    }
}
