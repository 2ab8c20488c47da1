//! The engine driven through `rx_core::engine::Engine` against a fake host: no server, no
//! module API. The host keeps a small string keyspace and answers in RESP, so these tests
//! see what a script sees (replies turned into Lua values and back, errors, refusals,
//! kills, panics, the memory cap) without Redis.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use rx_core::engine::{CallOptions, Engine, Host, LogLevel, Tick};
use rx_core::reply::RespWriter;
use rx_lua::{LuaCallable, LuaEngine, ServerVersion};

/// What a fake host does when it is asked to run a command.
#[derive(Default)]
struct FakeHost {
    keys: RefCell<HashMap<Vec<u8>, Vec<u8>>>,
    /// Every command run, as text, with whether it was to be replicated.
    calls: RefCell<Vec<(String, bool)>>,
    logs: RefCell<Vec<(LogLevel, Vec<u8>)>>,
    /// After this many ticks, the host asks the script to stop (a kill).
    stop_after_ticks: Cell<Option<u32>>,
    ticks: Cell<u32>,
}

impl Host for FakeHost {
    fn call(
        &self,
        argv: &[&[u8]],
        options: CallOptions,
        on_reply: &mut dyn FnMut(&[u8]),
    ) -> Result<(), String> {
        let text: Vec<String> = argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        self.calls
            .borrow_mut()
            .push((text.join(" "), options.replicate));
        let name = text[0].to_ascii_lowercase();
        match (name.as_str(), argv.len()) {
            ("set", 3) => {
                self.keys
                    .borrow_mut()
                    .insert(argv[1].to_vec(), argv[2].to_vec());
                on_reply(b"+OK\r\n");
            }
            ("get", 2) => match self.keys.borrow().get(argv[1]) {
                Some(v) => {
                    let mut r = format!("${}\r\n", v.len()).into_bytes();
                    r.extend_from_slice(v);
                    r.extend_from_slice(b"\r\n");
                    on_reply(&r)
                }
                None if options.resp3 => on_reply(b"_\r\n"),
                None => on_reply(b"$-1\r\n"),
            },
            ("hgetall", 2) if options.resp3 => on_reply(b"%1\r\n$1\r\nf\r\n:7\r\n"),
            ("hgetall", 2) => on_reply(b"*2\r\n$1\r\nf\r\n:7\r\n"),
            ("incr", 2) => on_reply(b"-ERR value is not an integer or out of range\r\n"),
            ("set" | "get" | "incr" | "hgetall", _) => {
                return Err(format!(
                    "ERR wrong number of arguments for '{name}' command"
                ))
            }
            _ => return Err("ERR Unknown Redis command called from script".into()),
        }
        Ok(())
    }

    fn acl_check(&self, argv: &[&[u8]]) -> Result<bool, String> {
        match argv[0] {
            b"get" | b"GET" => Ok(true),
            b"set" | b"SET" => Ok(false),
            _ => Err("ERR Invalid command passed to redis.acl_check_cmd()".into()),
        }
    }

    fn log(&self, level: LogLevel, msg: &[u8]) {
        self.logs.borrow_mut().push((level, msg.to_vec()));
    }

    fn tick(&self) -> Tick {
        let n = self.ticks.get() + 1;
        self.ticks.set(n);
        match self.stop_after_ticks.get() {
            Some(limit) if n >= limit => Tick::Stop,
            _ => Tick::Continue,
        }
    }

    fn interruption(&self) -> Option<String> {
        self.stop_after_ticks
            .get()
            .filter(|&limit| self.ticks.get() >= limit)
            .map(|_| "ERR Script killed by user with FUNCTION KILL...".into())
    }
}

fn engine() -> LuaEngine {
    LuaEngine::new(&ServerVersion {
        text: "7.0.15".into(),
        num: 0x07000f,
    })
    .expect("engine starts")
}

/// Loads a library and returns its functions by name.
fn load(engine: &LuaEngine, host: &FakeHost, code: &str) -> HashMap<String, LuaCallable> {
    match Engine::load(engine, code.as_bytes(), host, None, "FUNCTION LOAD") {
        Ok(regs) => regs.into_iter().map(|r| (r.name, r.callable)).collect(),
        Err(e) => panic!("load failed: {}", String::from_utf8_lossy(&e)),
    }
}

/// Calls a function and returns its reply as RESP text.
fn call(
    engine: &LuaEngine,
    host: &FakeHost,
    f: &LuaCallable,
    keys: &[&str],
    args: &[&str],
    resp: u8,
) -> String {
    let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let mut out = RespWriter::new(resp);
    Engine::call(engine, f, "f", &keys, &args, host, &mut out);
    String::from_utf8(out.out).unwrap()
}

const LIB: &str = r#"#!lua name=fake
redis.register_function('setget', function(keys, args)
  redis.call('SET', keys[1], args[1])
  return redis.call('GET', keys[1])
end)
redis.register_function('missing', function(keys) return redis.call('GET', keys[1]) end)
redis.register_function('hash', function(keys, args)
  redis.setresp(tonumber(args[1]))
  return redis.call('HGETALL', keys[1])
end)
redis.register_function('raise', function() return redis.call('INCR', 'k') end)
redis.register_function('catch', function()
  local r = redis.pcall('INCR', 'k')
  return {type(r), r.err}
end)
redis.register_function('refused', function() return redis.call('NOSUCH') end)
redis.register_function('arity', function() return redis.pcall('GET') end)
redis.register_function('spin', function() local i = 0 while true do i = i + 1 end end)
redis.register_function('swallow', function()
  local ok = pcall(function() while true do end end)
  return 'swallowed'
end)
redis.register_function('logs', function()
  redis.log(redis.LOG_WARNING, 'careful')
  return 1
end)
redis.register_function('norepl', function(keys)
  redis.set_repl(redis.REPL_NONE)
  return redis.call('SET', keys[1], 'x')
end)
redis.register_function('acl', function()
  return {redis.acl_check_cmd('get', 'k'), redis.acl_check_cmd('set', 'k', 'v')}
end)
redis.register_function('hog', function()
  local t = {} for i = 1, 1e7 do t[i] = ('x'):rep(100) .. i end return #t
end)
redis.register_function('tiny', function() return 'fine' end)
"#;

#[test]
fn replies_travel_through_redis_call_both_ways() {
    let (e, h) = (engine(), FakeHost::default());
    let lib = load(&e, &h, LIB);
    assert_eq!(
        call(&e, &h, &lib["setget"], &["k"], &["v1"], 2),
        "$2\r\nv1\r\n"
    );
    assert_eq!(h.keys.borrow()[b"k".as_slice()], b"v1");
    // A nil bulk reply becomes false in Lua, and false is a nil reply again.
    assert_eq!(call(&e, &h, &lib["missing"], &["nope"], &[], 2), "$-1\r\n");
    assert_eq!(call(&e, &h, &lib["missing"], &["nope"], &[], 3), "_\r\n");
    // RESP2 replies stay flat; after redis.setresp(3) a map comes back as a map.
    assert_eq!(
        call(&e, &h, &lib["hash"], &["h"], &["2"], 2),
        "*2\r\n$1\r\nf\r\n:7\r\n"
    );
    assert_eq!(
        call(&e, &h, &lib["hash"], &["h"], &["3"], 3),
        "%1\r\n$1\r\nf\r\n:7\r\n"
    );
}

#[test]
fn error_replies_raise_and_pcall_catches_them() {
    let (e, h) = (engine(), FakeHost::default());
    let lib = load(&e, &h, LIB);
    assert_eq!(
        call(&e, &h, &lib["raise"], &[], &[], 2),
        // The error names the function as the caller passed it, and its line.
        "-ERR value is not an integer or out of range script: f, on @user_function:11.\r\n"
    );
    assert_eq!(
        call(&e, &h, &lib["catch"], &[], &[], 2),
        "*2\r\n$5\r\ntable\r\n$43\r\nERR value is not an integer or out of range\r\n"
    );
}

#[test]
fn host_refusals_are_script_errors() {
    let (e, h) = (engine(), FakeHost::default());
    let lib = load(&e, &h, LIB);
    let refused = call(&e, &h, &lib["refused"], &[], &[], 2);
    assert!(
        refused.starts_with("-ERR Unknown Redis command called from script"),
        "{refused}"
    );
    // redis.pcall turns the refusal into a returned error table.
    assert_eq!(
        call(&e, &h, &lib["arity"], &[], &[], 2),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
}

#[test]
fn a_stop_from_the_host_ends_the_run_with_its_text_even_under_pcall() {
    let (e, h) = (engine(), FakeHost::default());
    let lib = load(&e, &h, LIB);
    for name in ["spin", "swallow"] {
        h.ticks.set(0);
        h.stop_after_ticks.set(Some(3));
        let reply = call(&e, &h, &lib[name], &[], &[], 2);
        assert!(
            reply.starts_with("-ERR Script killed by user with FUNCTION KILL..."),
            "{name}: {reply}"
        );
        assert!(h.ticks.get() >= 3);
    }
    // The engine runs the next call normally.
    h.stop_after_ticks.set(None);
    assert_eq!(call(&e, &h, &lib["tiny"], &[], &[], 2), "$4\r\nfine\r\n");
}

#[test]
fn logs_replication_and_acl_checks_reach_the_host() {
    let (e, h) = (engine(), FakeHost::default());
    let lib = load(&e, &h, LIB);
    assert_eq!(call(&e, &h, &lib["logs"], &[], &[], 2), ":1\r\n");
    assert_eq!(
        h.logs.borrow().as_slice(),
        &[(LogLevel::Warning, b"careful".to_vec())]
    );
    assert_eq!(call(&e, &h, &lib["norepl"], &["k"], &[], 2), "+OK\r\n");
    assert_eq!(
        h.calls.borrow().last().unwrap(),
        &("SET k x".to_string(), false)
    );
    // The next run replicates again: set_repl lasts one run.
    call(&e, &h, &lib["setget"], &["k"], &["v"], 2);
    assert!(h.calls.borrow().iter().rev().take(2).all(|(_, r)| *r));
    assert_eq!(
        call(&e, &h, &lib["acl"], &[], &[], 2),
        "*2\r\n:1\r\n$-1\r\n"
    );
}

#[test]
fn the_memory_cap_fails_the_run_and_not_the_engine() {
    let (e, h) = (engine(), FakeHost::default());
    let lib = load(&e, &h, LIB);
    Engine::set_memory_limit(&e, 64 << 20).unwrap();
    let reply = call(&e, &h, &lib["hog"], &[], &[], 2);
    assert!(reply.contains("not enough memory"), "{reply}");
    Engine::collect_garbage(&e);
    assert!(Engine::used_memory(&e) < 64 << 20);
    assert_eq!(call(&e, &h, &lib["tiny"], &[], &[], 2), "$4\r\nfine\r\n");
}

#[test]
fn eval_scripts_see_keys_and_argv_as_globals() {
    let (e, h) = (engine(), FakeHost::default());
    let script = Engine::compile_script(
        &e,
        b"redis.call('SET', KEYS[1], ARGV[1]) return {KEYS[1], ARGV[1], #ARGV}",
    )
    .unwrap();
    let mut out = RespWriter::new(2);
    Engine::call_script(&e, &script, "sha", &[b"a"], &[b"1", b"2"], &h, &mut out);
    assert_eq!(
        String::from_utf8(out.out).unwrap(),
        "*3\r\n$1\r\na\r\n$1\r\n1\r\n:2\r\n"
    );
    assert_eq!(h.calls.borrow()[0].0, "SET a 1");
}

#[test]
fn a_library_body_cannot_call_redis() {
    let (e, h) = (engine(), FakeHost::default());
    let err = Engine::load(
        &e,
        b"#!lua name=x\nredis.call('SET', 'k', 'v')",
        &h,
        None,
        "FUNCTION LOAD",
    )
    .map(|regs| regs.len())
    .expect_err("the load fails");
    assert!(h.calls.borrow().is_empty());
    assert!(String::from_utf8_lossy(&err).starts_with("ERR "), "{err:?}");
}
