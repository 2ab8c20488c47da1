//! Self-tests of the test harness (tests/common) against a native server.

mod common;
use common::*;

#[test]
fn raw_framing_of_simple_and_nested_replies() {
    let s = Server::start_native(&[]);
    let mut c = s.conn();
    assert_eq!(c.raw(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(c.raw(&[&b"SET"[..], b"k", b"v"]), b"+OK\r\n");
    assert_eq!(c.raw(&[&b"GET"[..], b"k"]), b"$1\r\nv\r\n");
    assert_eq!(c.raw(&[&b"GET"[..], b"nokey"]), b"$-1\r\n");
    assert_eq!(c.raw(&[&b"INCR"[..], b"n"]), b":1\r\n");
    // Nested arrays, including an empty one and a nil bulk inside.
    let r = c.raw(&[
        &b"EVAL"[..],
        b"return {1, {'a', {}, {2, {'b'}}}, 'c'}",
        b"0",
    ]);
    assert_eq!(
        r,
        b"*3\r\n:1\r\n*3\r\n$1\r\na\r\n*0\r\n*2\r\n:2\r\n*1\r\n$1\r\nb\r\n$1\r\nc\r\n"
    );
    assert_eq!(
        parse_reply(&r),
        Reply::Array(vec![
            Reply::Int(1),
            Reply::Array(vec![
                Reply::Bulk(b"a".to_vec()),
                Reply::Array(vec![]),
                Reply::Array(vec![
                    Reply::Int(2),
                    Reply::Array(vec![Reply::Bulk(b"b".to_vec())])
                ]),
            ]),
            Reply::Bulk(b"c".to_vec()),
        ])
    );
    // The next reply is still framed correctly after the nested one.
    assert_eq!(c.q(&["ECHO", "after"]), Reply::Bulk(b"after".to_vec()));
    // Pipeline.
    let rs = c.pipeline(vec![
        vec![b"ECHO".to_vec(), b"x".to_vec()],
        vec![
            b"LPUSH".to_vec(),
            b"l".to_vec(),
            b"a".to_vec(),
            b"b".to_vec(),
        ],
        vec![
            b"LRANGE".to_vec(),
            b"l".to_vec(),
            b"0".to_vec(),
            b"-1".to_vec(),
        ],
    ]);
    assert_eq!(
        rs,
        vec![
            b"$1\r\nx\r\n".to_vec(),
            b":2\r\n".to_vec(),
            b"*2\r\n$1\r\nb\r\n$1\r\na\r\n".to_vec()
        ]
    );
}

#[test]
fn resp3_maps_sets_doubles_after_hello_3() {
    let s = Server::start_native(&[]);
    let mut c = s.conn();
    let hello = c.q(&["HELLO", "3"]);
    match &hello {
        Reply::Map(kv) => assert!(kv
            .iter()
            .any(|(k, v)| k.as_str() == Some("proto") && *v == Reply::Int(3))),
        other => panic!("HELLO 3 should be a map: {:?}", other),
    }
    c.q(&["HSET", "h", "f", "v"]).ok();
    assert_eq!(
        c.raw(&[&b"HGETALL"[..], b"h"]),
        b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    c.q(&["SADD", "s", "m"]).ok();
    assert_eq!(c.raw(&[&b"SMEMBERS"[..], b"s"]), b"~1\r\n$1\r\nm\r\n");
    c.q(&["ZADD", "z", "1.5", "a"]).ok();
    assert_eq!(
        c.cmd(&[&b"ZSCORE"[..], b"z", b"a"]),
        Reply::Double("1.5".into())
    );
    assert_eq!(c.raw(&[&b"GET"[..], b"nokey"]), b"_\r\n");
    assert_eq!(
        c.cmd(&[
            &b"EVAL"[..],
            b"redis.setresp(3) return redis.call('HGETALL', 'h')",
            b"0"
        ]),
        Reply::Map(vec![(
            Reply::Bulk(b"f".to_vec()),
            Reply::Bulk(b"v".to_vec())
        )])
    );
    assert_eq!(
        c.cmd(&[&b"EVAL"[..], b"return {double=3.5}", b"0"]),
        Reply::Double("3.5".into())
    );
    assert_eq!(
        c.cmd(&[
            &b"EVAL"[..],
            b"return {big_number='123456789012345678901234567890'}",
            b"0"
        ]),
        Reply::BigNumber("123456789012345678901234567890".into())
    );
    assert_eq!(
        c.cmd(&[
            &b"EVAL"[..],
            b"redis.setresp(3) return redis.call('EXISTS', 'h') == 1",
            b"0"
        ]),
        Reply::Bool(true)
    );
    // A client-side-caching push does not get confused with replies.
    c.q(&["CLIENT", "TRACKING", "on"]).ok();
    c.q(&["GET", "k1"]);
    let mut c2 = s.conn();
    c2.q(&["SET", "k1", "x"]).ok();
    assert_eq!(c.q(&["PING"]), Reply::Status("PONG".into()));
    assert_eq!(c.pushes.len(), 1, "one invalidation push expected");
    assert!(c.pushes[0].starts_with(b">2\r\n$10\r\ninvalidate\r\n"));
}

#[test]
fn errors_are_replies_not_failures() {
    let s = Server::start_native(&[]);
    let mut c = s.conn();
    let r = c.q(&["NOSUCHCOMMAND", "a"]);
    assert!(r.is_error());
    assert!(
        r.err_text()
            .unwrap()
            .starts_with("ERR unknown command 'NOSUCHCOMMAND'"),
        "{:?}",
        r
    );
    c.q(&["SET", "k", "v"]).ok();
    assert_eq!(
        c.raw(&[&b"INCR"[..], b"k"]),
        b"-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        c.q(&["LPUSH", "k", "x"]).err_text(),
        Some("WRONGTYPE Operation against a key holding the wrong kind of value")
    );
    assert_eq!(
        c.q(&["FUNCTION", "LOAD"]).err_text(),
        Some("ERR wrong number of arguments for 'function|load' command")
    );
    // Errors nested inside an array.
    let r = c.cmd(&[
        &b"EVAL"[..],
        b"return {1, redis.error_reply('MY bad')}",
        b"0",
    ]);
    assert_eq!(
        r,
        Reply::Array(vec![Reply::Int(1), Reply::Error("MY bad".into())])
    );
}

#[test]
fn big_and_binary_bulk_strings() {
    let s = Server::start_native(&[]);
    let mut c = s.conn();
    let mut big = Vec::with_capacity(3 << 20);
    for i in 0..(3u32 << 20) {
        big.push((i % 251) as u8);
    }
    big.extend_from_slice(b"\r\n$5\r\n\0\xff");
    c.cmd(&[&b"SET"[..], b"big", &big]).ok();
    let raw = c.raw(&[&b"GET"[..], b"big"]);
    let header = format!("${}\r\n", big.len());
    assert!(raw.starts_with(header.as_bytes()));
    assert_eq!(raw.len(), header.len() + big.len() + 2);
    assert_eq!(c.cmd(&[&b"GET"[..], b"big"]), Reply::Bulk(big.clone()));
    assert_eq!(c.q(&["STRLEN", "big"]), Reply::Int(big.len() as i64));
    // Big array of bulk strings.
    let mut args: Vec<Vec<u8>> = vec![b"RPUSH".to_vec(), b"l".to_vec()];
    for i in 0..10_000 {
        args.push(format!("element-{}", i).into_bytes());
    }
    assert_eq!(c.cmd(&args), Reply::Int(10_000));
    match c.q(&["LRANGE", "l", "0", "-1"]) {
        Reply::Array(v) => {
            assert_eq!(v.len(), 10_000);
            assert_eq!(v[9_999], Reply::Bulk(b"element-9999".to_vec()));
        }
        other => panic!("{:?}", other),
    }
}

#[test]
fn restart_keeps_dir_and_stop_shuts_down() {
    let mut s = Server::start_native(&[]);
    let dir = s.dir().to_path_buf();
    s.conn().q(&["SET", "k", "v"]).ok();
    s.conn().q(&["SAVE"]).ok();
    s.restart();
    assert_eq!(s.dir(), dir.as_path());
    assert_eq!(s.conn().q(&["GET", "k"]), Reply::Bulk(b"v".to_vec()));
    assert!(s.log().contains("Ready to accept connections"));
    let port = s.port();
    s.stop();
    assert!(Conn::try_connect(port).is_err());
}

#[test]
fn fenced_read_resyncs_after_a_reply_of_two_frames() {
    // A real server: the fence's reply is consumed, the next command reads its own reply.
    let s = Server::start_native(&[]);
    let mut c = s.conn();
    assert_eq!(
        c.try_raw_fenced(&["PING"], b"fence-1").unwrap(),
        b"+PONG\r\n"
    );
    assert_eq!(c.q(&["ECHO", "next"]), Reply::Bulk(b"next".to_vec()));
    s.stop();

    // A server that lets CR/LF through an error text (CVE-2025-67733) answers with two
    // frames, the second of them not even RESP: all of it is that command's reply.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let fake = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut sock, _) = l.accept().unwrap();
        sock.write_all(b"-ERR multi\nline\r\nerror script: arg\r\n$7\r\nfence-2\r\n")
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        sock.write_all(b"+PONG\r\n").unwrap();
        let mut sink = [0u8; 4096];
        while matches!(sock.read(&mut sink), Ok(n) if n > 0) {}
    });
    let mut c = Conn::connect(port);
    assert_eq!(
        c.try_raw_fenced(&["FCALL", "arg", "0", "multi\nline\r\nerror"], b"fence-2")
            .unwrap(),
        b"-ERR multi\nline\r\nerror script: arg\r\n"
    );
    assert_eq!(c.raw(&[b"PING"]), b"+PONG\r\n");
    drop(c);
    fake.join().unwrap();
}

/// With RX_TEST_DOCKER=1 every server is a container of the test image on the host's
/// network; otherwise a local process: the server's own process id says which.
#[test]
fn servers_run_as_processes_or_in_containers_as_asked() {
    let s = Server::start();
    let pid = common::info_field(&mut s.conn(), "server", "process_id")
        .expect("INFO server has process_id");
    let process = s.process().expect("a running server");
    if common::process::docker_mode() {
        let id = process.container_id().expect("a container in docker mode");
        let inspect = common::process::docker(&[
            "inspect",
            "--format",
            "{{.State.Pid}} {{.Config.Image}}",
            id,
        ])
        .expect("docker inspect");
        let mut parts = inspect.split_whitespace();
        // The server is the container's first process: its pid on the host is the
        // container's, and inside the container it is 1.
        assert!(parts.next().is_some_and(|p| p != "0"), "{inspect}");
        assert_eq!(pid, "1", "the server is the container's init process");
        let image = std::env::var("RX_TEST_IMAGE").unwrap_or_else(|_| "rx:test".into());
        assert_eq!(parts.next(), Some(image.as_str()));
    } else {
        assert_eq!(pid, process.pid().expect("a local process").to_string());
    }
}
