//! How `redis.call`'s arguments reach the server. RX passes repeated short arguments of
//! read commands, and the keys of write commands, as strings it keeps and the server
//! shares (`src/arg_cache.rs`); everything else is a fresh object, as the server's own
//! scripting makes. Each test runs the same script natively (EVAL) and through RX
//! (RX.EVAL) in one server and compares the raw replies and what was stored.

mod common;

use common::{Conn, Server};

/// Runs `script` with EVAL (`native`) or RX.EVAL and returns the raw reply.
fn eval(c: &mut Conn, native: bool, script: &str, keys: &[&str]) -> Vec<u8> {
    let numkeys = keys.len().to_string();
    let command = if native { "EVAL" } else { "RX.EVAL" };
    let mut argv = vec![command, script, &numkeys];
    argv.extend_from_slice(keys);
    c.raw(&argv)
}

/// Runs `script` natively, then through RX, each on fresh `keys`; returns both replies.
fn both(c: &mut Conn, script: &str, keys: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let mut del = vec!["DEL"];
    del.extend_from_slice(keys);
    c.q(&del).ok();
    let native = eval(c, true, script, keys);
    c.q(&del).ok();
    let rx = eval(c, false, script, keys);
    (native, rx)
}

/// Many distinct arguments per command, strings and numbers, so that arguments of one
/// command compete for the cache's slots: each must still reach the server as itself.
/// (A first version freed a string replaced by a later argument of the same command
/// before the call: wrong replies, then a crash.)
#[test]
fn arguments_competing_for_the_cache_arrive_intact() {
    let s = Server::start();
    let mut c = s.conn();
    let script = r#"
        local out = {}
        for i = 1, 60 do
            redis.call('HSET', KEYS[1], 'f' .. i, 'v' .. i)
            redis.call('ZADD', KEYS[2], i, 'm' .. i)
        end
        for round = 1, 40 do
            local fields = {}
            for j = 1, 15 do
                fields[j] = 'f' .. ((round * 7 + j * 13) % 70)
            end
            out[#out + 1] = redis.call('HMGET', KEYS[1], unpack(fields))
            local lo, hi = round % 17, round % 17 + round / 10
            out[#out + 1] = redis.call('ZRANGEBYSCORE', KEYS[2], lo, hi)
            out[#out + 1] = redis.call('ZRANGEBYSCORE', KEYS[2], tostring(lo), '(' .. (hi + 3))
            out[#out + 1] = redis.call('ZCOUNT', KEYS[2], lo + 0.5, hi * 2)
            out[#out + 1] = redis.call('HGET', KEYS[1], 'f' .. round)
        end
        return out
    "#;
    let (native, rx) = both(&mut c, script, &["h", "z"]);
    assert_eq!(
        String::from_utf8_lossy(&rx),
        String::from_utf8_lossy(&native)
    );
    // Run again with new strings (the cache now full of the first run's), and many runs.
    for n in 0..30 {
        let script = script.replace("'f' ..", &format!("'{n}f' .."));
        let (native, rx) = both(&mut c, &script, &["h", "z"]);
        assert_eq!(
            String::from_utf8_lossy(&rx),
            String::from_utf8_lossy(&native),
            "run {n}"
        );
    }
    assert_eq!(c.q(&["PING"]).as_str(), Some("PONG"));
}

/// A value a write command stores is a fresh object, even when the same text went out
/// before as a shared argument of a read: the server encodes it (an integer, an embedded
/// string) and holds it alone, as natively.
#[test]
fn stored_values_are_the_servers_own() {
    let s = Server::start();
    let mut c = s.conn();
    let script = r#"
        -- The same texts first as arguments of reads (shared), then as stored values.
        redis.call('GET', '123456')
        redis.call('GET', 'abc')
        redis.call('EXISTS', '77')
        redis.call('SET', KEYS[1], '123456')
        redis.call('SET', KEYS[2], 'abc')
        redis.call('MSET', KEYS[3], '77', KEYS[4], 'abc')
        redis.call('SET', KEYS[5], 123456)
        redis.call('APPEND', KEYS[6], 'abc')
        local out = {}
        for i = 1, 6 do
            out[#out + 1] = redis.call('OBJECT', 'ENCODING', KEYS[i])
            out[#out + 1] = redis.call('OBJECT', 'REFCOUNT', KEYS[i])
        end
        return out
    "#;
    let keys = ["k1", "k2", "k3", "k4", "k5", "k6"];
    let (native, rx) = both(&mut c, script, &keys);
    assert_eq!(
        String::from_utf8_lossy(&rx),
        String::from_utf8_lossy(&native)
    );
    // And the values read back as they were written.
    let values = c.raw(&["MGET", "k1", "k2", "k3", "k4", "k5", "k6"]);
    assert_eq!(
        String::from_utf8_lossy(&values),
        "*6\r\n$6\r\n123456\r\n$3\r\nabc\r\n$2\r\n77\r\n$3\r\nabc\r\n$6\r\n123456\r\n$3\r\nabc\r\n"
    );
}

/// Every argument count from 1 to 17, for a read command (every argument a shared string:
/// one variadic value each) and write commands (keys shared, the rest fresh: two values
/// each), so that the calls pass from 1 to 33 values and cross each size
/// `RedisModule_Call` is made with (4, 8, 32 values, then an argument array). Replies and
/// what was stored match native EVAL.
#[test]
fn every_argument_count_reaches_the_server_whole() {
    let s = Server::start();
    let mut c = s.conn();
    let script = r#"
        local out = {}
        for n = 1, 17 do
            local hmget, hset, mset = { KEYS[1], 'f0' }, { KEYS[1] }, {}
            for j = 2, n do
                hmget[j + 1] = 'f' .. (j - 1)
                hset[j] = (j % 2 == 0) and ('f' .. j) or (j * 10 + n)
                mset[j - 1] = (j % 2 == 0) and (KEYS[1] .. ':' .. j) or ('v' .. j .. ':' .. n)
            end
            if n % 2 == 1 and n > 1 then
                out[#out + 1] = redis.call('HSET', unpack(hset))
            end
            if n % 2 == 1 and n > 1 then
                out[#out + 1] = redis.call('MSET', unpack(mset))
            end
            out[#out + 1] = redis.call('HMGET', unpack(hmget))
        end
        out[#out + 1] = redis.call('HGETALL', KEYS[1])
        local keys = {}
        for j = 2, 17, 2 do keys[#keys + 1] = KEYS[1] .. ':' .. j end
        out[#out + 1] = redis.call('MGET', unpack(keys))
        out[#out + 1] = redis.call('OBJECT', 'ENCODING', KEYS[1] .. ':2')
        return out
    "#;
    let (native, rx) = both(&mut c, script, &["h"]);
    assert_eq!(
        String::from_utf8_lossy(&rx),
        String::from_utf8_lossy(&native)
    );
    assert!(
        native.starts_with(b"*") && !native.windows(4).any(|w| w == b"-ERR"),
        "native: {}",
        String::from_utf8_lossy(&native)
    );
}
