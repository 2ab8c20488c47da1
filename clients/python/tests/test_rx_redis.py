"""rx_redis against a real redis-server with RX: every method, end to end.

Where a native counterpart exists, the same library or script is loaded both
ways on one server and the reply redis-py gives for the native command
(FUNCTION LOAD, FCALL, EVAL, ...) is compared with the RX client's, with the
same client settings (bytes and str replies; RESP3 too with redis-py 5+).
"""

from __future__ import annotations

import hashlib
import inspect
import re
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
import redis
from redis.exceptions import DataError, NoScriptError, ResponseError

import rx_redis
from rx_redis import RX, RXCommands, RXPipeline, wrap

from conftest import Server

LIB = """#!lua name=calls
redis.register_function('echo', function(keys, args) return args end)
redis.register_function('keys_and_args', function(keys, args) return {keys, args} end)
redis.register_function('setget', function(keys, args)
  local old = redis.call('GET', keys[1])
  redis.call('SET', keys[1], args[1])
  return old
end)
redis.register_function{function_name='read', callback=function(keys) return redis.call('GET', keys[1]) end,
  flags={'no-writes'}, description='read a key'}
redis.register_function('shapes', function() return {1, 'two', {3, 'four'}, redis.status_reply('FINE'), 3.99, true} end)
redis.register_function('status', function() return redis.status_reply('FINE') end)
redis.register_function('nothing', function() return nil end)
redis.register_function('fail', function() return redis.error_reply('MYERR custom failure') end)
redis.register_function('boom', function() error('boom') end)
redis.register_function('wrongtype', function(keys) return redis.call('LPUSH', keys[1], 'x') end)
redis.register_function('hash', function(keys, args)
  redis.call('HSET', keys[1], 'f', args[1])
  return redis.call('HGETALL', keys[1])
end)
redis.register_function('resp3', function() redis.setresp(3); return {map={a=1}} end)
redis.register_function('double', function() return {double=3.5} end)
redis.register_function{function_name='spin', callback=function() while true do end end, flags={'no-writes'}}
"""

ONE = """#!lua name=one
redis.register_function{function_name='only', callback=function() return 1 end,
  flags={'no-writes', 'allow-stale'}, description='the only one'}
"""

SCRIPT = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}"
READ_SCRIPT = "return redis.call('GET', KEYS[1])"


def outcome(call: Callable[[], Any]) -> Tuple[Any, ...]:
    """A reply, or an error as (type name, text): what a caller of redis-py sees."""
    try:
        return ("reply", call())
    except redis.RedisError as e:
        return ("error", type(e).__name__, str(e))


def normalize(reply: Any) -> Any:
    """Sorts lists of entries (libraries, functions): neither Redis nor RX defines
    their order. Flat [name, value, ...] lists keep theirs."""
    if isinstance(reply, dict):
        return {k: normalize(v) for k, v in reply.items()}
    if isinstance(reply, list):
        items = [normalize(x) for x in reply]
        if items and all(isinstance(x, (list, dict)) for x in items):
            items.sort(key=repr)
        return items
    return reply


def lib_names(listing: List[Any]) -> List[Any]:
    """The library names of a FUNCTION LIST reply, in RESP2 or RESP3 shape."""
    names = []
    for lib in listing:
        fields = lib if isinstance(lib, dict) else dict(zip(lib[::2], lib[1::2]))
        names += [v for k, v in fields.items() if k in (b"library_name", "library_name")]
    return names


def errors_as_text(results: List[Any]) -> List[Any]:
    return [("error", type(r).__name__, str(r)) if isinstance(r, Exception) else r for r in results]


@pytest.fixture
def pair(clean: Server, opts: Dict[str, object]) -> Iterator[Tuple[redis.Redis, RX]]:
    native = redis.Redis(port=clean.port, **opts)  # type: ignore[arg-type]
    rx = RX(port=clean.port, **opts)  # type: ignore[arg-type]
    try:
        yield native, rx
    finally:
        native.close()
        rx.close()


# ------------------------------------------------------------------ the API itself

REDIS_PY_METHODS = [
    "function_load", "function_delete", "function_flush", "function_list", "fcall", "fcall_ro",
    "function_dump", "function_restore", "function_kill", "function_stats",
    "eval", "eval_ro", "evalsha", "evalsha_ro", "script_load", "script_exists", "script_flush",
    "script_kill",
]


@pytest.mark.parametrize("name", REDIS_PY_METHODS)
def test_methods_have_redis_py_signatures(name: str) -> None:
    native = getattr(redis.Redis, name, None)
    if native is None:
        pytest.skip(f"redis-py {redis.__version__} has no {name}")
    assert getattr(RX, name) is getattr(RXCommands, name), f"RX.{name} is not RX's own"
    plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY,
             inspect.Parameter.VAR_POSITIONAL)

    def positional(f: Callable[..., Any]) -> List[Tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()
                if p.kind in plain]

    assert positional(getattr(RX, name)) == positional(native)


def test_every_other_command_is_redis_py(pair: Tuple[redis.Redis, RX]) -> None:
    native, rx = pair
    assert isinstance(rx, redis.Redis)
    assert rx.set("plain", "1") is True
    assert rx.incr("plain") == 2
    assert rx.hset("h", mapping={"a": "1"}) == 1
    assert rx.hgetall("h") == native.hgetall("h")
    native.function_load(ONE)
    # The native commands stay reachable from an RX client.
    assert redis.Redis.fcall(rx, "only", 0) == 1
    assert rx.execute_command("FCALL", "only", 0) == 1
    with pytest.raises(ResponseError, match="Function not found"):
        rx.fcall("only", 0)  # RX has no such function: proof that fcall is RX.CALL


# ------------------------------------------------------------------ functions

def test_each_method_reaches_rx_not_native(pair: Tuple[redis.Redis, RX]) -> None:
    """What is loaded through RX is seen through RX only, and the reverse: so each
    method sent its RX command, not the native one (which would also answer)."""
    native, rx = pair
    assert rx.function_load(ONE) in (b"one", "one")
    assert native.function_list() == [] and lib_names(rx.function_list()) != []
    with pytest.raises(ResponseError, match="Function not found"):
        native.fcall("only", 0)
    assert rx.fcall("only", 0) == 1
    assert rx.fcall_ro("only", 0) == 1
    payload = rx.function_dump()
    assert rx.function_delete("one") is True
    assert rx.function_list() == []
    assert rx.function_restore(payload) is True
    assert rx.fcall("only", 0) == 1
    native.function_load(LIB)
    assert rx.function_flush() is True
    assert rx.function_list() == [] and lib_names(native.function_list()) != []

    sha = rx.script_load(READ_SCRIPT)
    assert sha == hashlib.sha1(READ_SCRIPT.encode()).hexdigest()
    assert rx.script_exists(sha) == [True] and native.script_exists(sha) == [False]
    rx.set("k", "v")
    assert rx.evalsha(sha, 1, "k") in (b"v", "v")
    assert rx.evalsha_ro(sha, 1, "k") in (b"v", "v")
    with pytest.raises(NoScriptError):
        native.evalsha(sha, 1, "k")
    ro = "return redis.call('EXISTS', KEYS[1])"
    assert rx.eval_ro(ro, 1, "k") == 1
    assert rx.script_exists(hashlib.sha1(ro.encode()).hexdigest()) == [True]
    assert native.script_exists(hashlib.sha1(ro.encode()).hexdigest()) == [False]
    native_sha = native.script_load("return 'native'")
    assert rx.script_exists(native_sha) == [False]
    assert rx.script_flush() is True
    assert rx.script_exists(sha) == [False] and native.script_exists(native_sha) == [True]


def test_function_load_matches_native(pair: Tuple[redis.Redis, RX]) -> None:
    native, rx = pair
    assert rx.function_load(LIB) == native.function_load(LIB) in (b"calls", "calls")
    assert outcome(lambda: rx.function_load(LIB)) == outcome(lambda: native.function_load(LIB))
    assert outcome(lambda: rx.function_load(LIB, replace=True)) == outcome(
        lambda: native.function_load(LIB, replace=True))
    for bad in ["#!lua name=bad\nreturn 1", "#!lua\nredis.register_function('x', function() end)",
                "#!lua name=bad\nredis.register_function('echo', function() end)",
                "#!lua name=bad\nthis is not lua"]:
        assert outcome(lambda: rx.function_load(bad)) == outcome(lambda: native.function_load(bad))


def test_function_list_matches_native(pair: Tuple[redis.Redis, RX]) -> None:
    native, rx = pair
    assert rx.function_list() == native.function_list() == []
    for code in (ONE, LIB):
        native.function_load(code)
        rx.function_load(code)
    # One function per library: the whole reply is compared as it is.
    assert rx.function_list("one") == native.function_list("one")
    assert rx.function_list("on*", withcode=True) == native.function_list("on*", withcode=True)
    assert rx.function_list("nomatch*") == native.function_list("nomatch*") == []
    # Several: libraries and functions in any order, everything else as it is.
    assert normalize(rx.function_list()) == normalize(native.function_list())
    assert normalize(rx.function_list(withcode=True)) == normalize(native.function_list(withcode=True))
    assert normalize(rx.function_list(None)) == normalize(native.function_list("*"))


def test_function_list_rx_extras(pair: Tuple[redis.Redis, RX]) -> None:
    _, rx = pair
    rx.function_load(ONE)
    plain = rx.function_list()[0]
    with_versions = rx.function_list(withversions=True)[0]
    fields = with_versions if isinstance(with_versions, dict) else dict(zip(with_versions[::2], with_versions[1::2]))
    fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in fields.items()}
    assert fields["version"] >= 1
    digest = fields["digest"].decode() if isinstance(fields["digest"], bytes) else fields["digest"]
    assert digest == hashlib.sha1(ONE.encode()).hexdigest()
    if isinstance(plain, dict):
        assert {k: with_versions[k] for k in plain} == plain and len(with_versions) == len(plain) + 2
    else:  # RESP2: the same flat list, then version and digest
        assert with_versions[: len(plain)] == plain and len(with_versions) == len(plain) + 4
    assert rx.function_list_setaside() == []
    assert rx.function_list_setaside("x*", withcode=True) == []


def call_sequence(c: redis.Redis, prefix: str, binary: bool) -> List[Tuple[Any, ...]]:
    k = prefix + "k"
    steps: List[Callable[[], Any]] = [
        lambda: c.fcall("echo", 0, "a", 1, 2.5),
        lambda: c.fcall("echo", 0),
        lambda: c.fcall("keys_and_args", 2, k, prefix + "k2", "x", "y"),
        lambda: c.fcall("setget", 1, k, "v1"),
        lambda: c.fcall("setget", 1, k, "v2"),
        lambda: c.fcall_ro("read", 1, k),
        lambda: c.fcall("read", 1, k),
        lambda: c.fcall("shapes", 0),
        lambda: c.fcall("status", 0),
        lambda: c.fcall("nothing", 0),
        lambda: c.fcall("fail", 0),
        lambda: c.fcall("boom", 0),
        lambda: c.fcall("wrongtype", 1, k),
        lambda: c.fcall("hash", 1, prefix + "h", "value"),
        lambda: c.fcall("resp3", 0),
        lambda: c.fcall("double", 0),
        lambda: c.fcall_ro("setget", 1, k, "v3"),  # a write function through the _RO call
        lambda: c.fcall("nosuchfunction", 0),
        lambda: c.fcall("echo", 5, "a"),  # numkeys larger than the arguments
        lambda: c.fcall("echo", -1),
        lambda: c.fcall("ECHO", 0, "case-insensitive names"),
    ]
    if binary:
        steps.append(lambda: c.fcall("echo", 0, b"\x00\xff\r\n binary"))
    return [outcome(step) for step in steps]


def test_fcall_replies_match_native(pair: Tuple[redis.Redis, RX], opts: Dict[str, object]) -> None:
    native, rx = pair
    native.function_load(LIB)
    rx.function_load(LIB)
    binary = not opts["decode_responses"]
    got = call_sequence(rx, "x:", binary)
    want = call_sequence(native, "n:", binary)
    # Replies that echo the key names differ only by the prefix.
    def unprefix(v: Any) -> Any:
        return repr(v).replace("n:", "P:").replace("x:", "P:")
    assert [unprefix(g) for g in got] == [unprefix(w) for w in want]
    # The RX calls changed RX's keys and the native ones the native keys: same data.
    assert rx.get("x:k") == native.get("n:k") is not None


def test_pipelines_match_native(pair: Tuple[redis.Redis, RX]) -> None:
    native, rx = pair
    native.function_load(LIB)
    rx.function_load(LIB)
    for transaction in (True, False):
        results = []
        for c, k in ((native, "n:p"), (rx, "x:p")):
            p = c.pipeline(transaction=transaction)
            p.set(k, "v").fcall("echo", 0, "a").fcall_ro("read", 1, k).fcall("fail", 0)
            p.function_list("calls").script_load(READ_SCRIPT).eval(READ_SCRIPT, 1, k)
            p.script_exists(hashlib.sha1(READ_SCRIPT.encode()).hexdigest())
            results.append(errors_as_text(p.execute(raise_on_error=False)))
        assert normalize(results[0]) == normalize(results[1])
    assert isinstance(rx.pipeline(), RXPipeline)


def test_function_delete_and_flush_match_native(pair: Tuple[redis.Redis, RX]) -> None:
    native, rx = pair
    for c in (native, rx):
        c.function_load(LIB)
        c.function_load(ONE)
    assert rx.function_delete("one") == native.function_delete("one") is True
    assert outcome(lambda: rx.function_delete("one")) == outcome(lambda: native.function_delete("one"))
    assert rx.function_list() != []
    assert rx.function_flush() == native.function_flush() is True
    assert rx.function_list() == native.function_list() == []
    for mode in ("ASYNC", "SYNC", None):
        native.function_load(ONE)
        rx.function_load(ONE)
        assert rx.function_flush(mode) == native.function_flush(mode if mode else "SYNC")
        assert rx.function_list() == []
    # The server's error names the command it got.
    bad = outcome(lambda: rx.function_flush("BAD"))
    assert bad[0] == "error" and "RX.FLUSH" in bad[2]
    assert tuple(x.replace("RX.FLUSH", "FUNCTION FLUSH") for x in bad) == outcome(
        lambda: native.function_flush("BAD"))


def test_rx_and_native_libraries_are_apart(pair: Tuple[redis.Redis, RX]) -> None:
    native, rx = pair
    native.function_load(ONE)
    assert rx.function_list() == []
    rx.function_load(LIB)
    rx.function_flush()
    assert len(native.function_list()) == 1


def test_dump_and_restore_match_native(pair: Tuple[redis.Redis, RX]) -> None:
    native, rx = pair
    for c in (native, rx):
        c.function_load(LIB)
        c.function_load(ONE)
    before = normalize(rx.function_list(withcode=True))
    payloads = {}
    for name, c in (("native", native), ("rx", rx)):
        payload = c.function_dump()
        assert isinstance(payload, bytes)  # even with decode_responses=True
        payloads[name] = payload
    assert rx.function_dump() == payloads["rx"]  # the same libraries, the same payload

    def restore_steps(c: redis.Redis, payload: bytes) -> List[Tuple[Any, ...]]:
        return [
            outcome(lambda: c.function_restore(payload)),  # APPEND onto the same: collides
            outcome(lambda: c.function_flush()),
            outcome(lambda: c.function_restore(payload)),
            outcome(lambda: c.function_restore(payload, "REPLACE")),
            outcome(lambda: c.function_restore(payload, "FLUSH")),
            outcome(lambda: c.function_restore(payload, None)),  # no policy: APPEND
            outcome(lambda: c.function_restore(b"not a payload", "FLUSH")),
            outcome(lambda: c.function_restore(payload, "BADPOLICY")),
        ]

    def native_steps() -> List[Tuple[Any, ...]]:
        steps = restore_steps(native, payloads["native"])
        # redis-py cannot send FUNCTION RESTORE without a policy: it sends None.
        assert steps[5][0] == "error"
        steps[5] = outcome(lambda: native.execute_command("FUNCTION RESTORE", payloads["native"]))
        return steps

    def same_collision(steps: List[Tuple[Any, ...]]) -> List[Tuple[Any, ...]]:
        # Which library collides first depends on the order of the payload, undefined natively.
        return [tuple(re.sub(r"Library \w+ already exists", "Library <name> already exists", x)
                      if isinstance(x, str) else x for x in step) for step in steps]

    assert same_collision(restore_steps(rx, payloads["rx"])) == same_collision(native_steps())
    native.function_flush()
    native.function_restore(payloads["native"])
    assert normalize(rx.function_list(withcode=True)) == before == normalize(native.function_list(withcode=True))


def stop_everything_busy(kill: Callable[[], Any]) -> None:
    """After a failed kill, so that the server serves the next tests."""
    client = kill.__self__  # type: ignore[attr-defined]
    for command in ("RX.KILL", "RX.SCRIPT KILL", "FUNCTION KILL", "SCRIPT KILL"):
        try:
            client.execute_command(command)
        except redis.RedisError:
            pass


def run_until_killed(start: Callable[[], Any], kill: Callable[[], Any]) -> Tuple[Any, BaseException]:
    """Starts a busy call in a thread, kills it, and returns the kill's reply and the
    error the busy caller got."""
    caught: List[BaseException] = []

    def victim() -> None:
        try:
            start()
        except BaseException as e:  # noqa: B902 - handed to the test
            caught.append(e)

    thread = threading.Thread(target=victim, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                reply = kill()
                break
            except ResponseError as e:
                if "NOTBUSY" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
    finally:
        if thread.is_alive() and not caught:
            stop_everything_busy(kill)
    thread.join(20)
    assert not thread.is_alive(), "the busy call did not end after the kill"
    assert caught, "the busy call returned normally"
    return reply, caught[0]


def test_function_kill_matches_native(pair: Tuple[redis.Redis, RX], clean: Server, opts: Dict[str, object]) -> None:
    native, rx = pair
    assert outcome(rx.function_kill) == outcome(native.function_kill)
    assert outcome(rx.function_kill)[0] == "error"
    native.function_load(LIB)
    rx.function_load(LIB)
    results = {}
    for name, cls in (("native", redis.Redis), ("rx", RX)):
        busy = cls(port=clean.port, **opts)  # type: ignore[arg-type]
        killer = pair[0] if name == "native" else pair[1]
        reply, error = run_until_killed(lambda: busy.fcall("spin", 0), killer.function_kill)
        busy.close()
        results[name] = (reply, type(error))
    assert results["rx"] == results["native"]
    assert rx.ping()


# ------------------------------------------------------------------ EVAL scripts

def test_script_commands_match_native(pair: Tuple[redis.Redis, RX]) -> None:
    native, rx = pair
    sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
    unknown = "f" * 40

    def steps(c: redis.Redis, k: str) -> List[Tuple[Any, ...]]:
        return [
            outcome(lambda: c.script_exists(sha, unknown)),
            outcome(lambda: c.evalsha(sha, 1, k, "a")),
            outcome(lambda: c.script_load(SCRIPT)),
            outcome(lambda: c.script_exists(sha, unknown)),
            outcome(lambda: c.script_exists(sha)),
            outcome(lambda: c.evalsha(sha, 1, k, "a")),
            outcome(lambda: c.evalsha(sha.upper(), 1, k, "b")),
            outcome(lambda: c.eval(SCRIPT, 1, k, "c")),
            outcome(lambda: c.eval_ro(READ_SCRIPT, 1, k)),
            outcome(lambda: c.eval_ro(SCRIPT, 1, k, "d")),  # writes inside a read-only script
            outcome(lambda: c.evalsha_ro(sha, 1, k, "e")),
            outcome(lambda: c.eval("return redis.error_reply('MYERR from script')", 0)),
            outcome(lambda: c.eval("error('boom')", 0)),
            outcome(lambda: c.eval("return {1, 'x', {2}, false, 3.7}", 0)),
            outcome(lambda: c.eval("return redis.status_reply('FINE')", 0)),
            outcome(lambda: c.eval("this is not lua", 0)),
            outcome(lambda: c.eval("return 1", -1)),
            outcome(lambda: c.script_flush()),
            outcome(lambda: c.script_exists(sha)),
            outcome(lambda: c.evalsha(sha, 1, k, "f")),
            outcome(lambda: c.script_flush("ASYNC")),
            outcome(lambda: c.script_flush("SYNC")),
        ]

    got = steps(rx, "x:s")
    want = steps(native, "n:s")
    assert [repr(g).replace("x:", "P:") for g in got] == [repr(w).replace("n:", "P:") for w in want]
    with pytest.raises(NoScriptError):
        rx.evalsha(unknown, 0)
    with pytest.raises(DataError):
        rx.script_flush("LATER")


def test_scripts_go_to_rx_cache_only(pair: Tuple[redis.Redis, RX]) -> None:
    native, rx = pair
    sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
    rx.eval(SCRIPT, 1, "k", "a")
    assert rx.script_exists(sha) == [True]
    assert native.script_exists(sha) == [False]
    other = "return 42"
    native.script_load(other)
    assert rx.script_exists(hashlib.sha1(other.encode()).hexdigest()) == [False]


def test_script_kill_matches_native(pair: Tuple[redis.Redis, RX], clean: Server, opts: Dict[str, object]) -> None:
    native, rx = pair
    assert outcome(rx.script_kill) == outcome(native.script_kill)
    assert outcome(rx.script_kill)[0] == "error"
    results = {}
    for name, cls in (("native", redis.Redis), ("rx", RX)):
        busy = cls(port=clean.port, **opts)  # type: ignore[arg-type]
        killer = native if name == "native" else rx
        reply, error = run_until_killed(lambda: busy.eval("while true do end", 0), killer.script_kill)
        busy.close()
        results[name] = (reply, type(error))
    assert results["rx"] == results["native"]


def test_register_script_pipeline_and_lock_run_in_rx(pair: Tuple[redis.Redis, RX]) -> None:
    native, rx = pair
    script = rx.register_script("return redis.call('INCR', KEYS[1])")
    assert script(keys=["counter"]) == 1
    assert rx.script_exists(script.sha) == [True]
    assert native.script_exists(script.sha) == [False]
    # In a pipeline, redis-py loads missing scripts first: into RX's cache.
    rx.script_flush()
    p = rx.pipeline()
    script(keys=["counter"], client=p)
    p.get("counter")
    assert p.execute() == [2, b"2" if rx.get_encoder().decode_responses is False else "2"]
    assert rx.script_exists(script.sha) == [True]
    assert native.script_exists(script.sha) == [False]
    # redis-py's Lock is built on register_script: it runs in RX too.
    from redis.lock import Lock

    release_sha = hashlib.sha1(Lock.LUA_RELEASE_SCRIPT.encode()).hexdigest()
    with rx.lock("the-lock", timeout=10):
        assert rx.get("the-lock") is not None
    assert rx.get("the-lock") is None
    assert rx.script_exists(release_sha) == [True]
    assert native.script_exists(release_sha) == [False]


# ------------------------------------------------------------------ RX's own

def test_stats(pair: Tuple[redis.Redis, RX]) -> None:
    native, rx = pair
    native.function_load(LIB)
    rx.function_load(LIB)
    # function_stats: native FUNCTION STATS' reply, then RX's fields.
    n, r = native.function_stats(), rx.function_stats()
    if isinstance(n, dict):
        assert {k: r[k] for k in n} == n
    else:
        assert r[: len(n)] == n and len(r) > len(n)
    rx.fcall("echo", 0, "a")
    rx.fcall("echo", 0, "b")
    with pytest.raises(ResponseError):
        rx.fcall("fail", 0)
    rx.eval("return 1", 0)
    stats = rx.stats()
    assert stats["running_script"] is None
    assert stats["engines"]["LUA"] == {"libraries_count": 1, "functions_count": LIB.count("register_function")}
    assert stats["vm_memory_bytes"] > 0
    echo = stats["functions"]["echo"]
    assert echo["library"] in (b"calls", "calls")
    assert (echo["calls"], echo["errors"], echo["errors_by_code"], echo["refusals"]) == (2, 0, {}, {})
    fail = stats["functions"]["fail"]
    assert (fail["calls"], fail["errors"], fail["errors_by_code"]) == (1, 1, {"MYERR": 1})
    assert list(stats["scripts"]) == [hashlib.sha1(b"return 1").hexdigest()]
    assert stats["scripts"][hashlib.sha1(b"return 1").hexdigest()]["calls"] == 1
    assert list(rx.stats(function="echo")["functions"]) == ["echo"]
    assert sorted(rx.stats(library="calls")["functions"]) == sorted(stats["functions"])
    with pytest.raises(DataError):
        rx.stats(library="calls", function="echo")
    assert rx.stats_reset() is True
    assert rx.stats()["functions"]["echo"]["calls"] == 0


def test_import_functions(pair: Tuple[redis.Redis, RX]) -> None:
    native, rx = pair
    native.function_load(ONE)
    native.function_load(LIB)
    assert rx.import_functions() == 2
    assert rx.fcall("only", 0) == 1
    assert normalize(rx.function_list(withcode=True)) == normalize(native.function_list(withcode=True))
    with pytest.raises(ResponseError):
        rx.import_functions()
    assert rx.import_functions(replace=True) == 2


def test_cluster_status_and_manifest_outside_a_cluster(pair: Tuple[redis.Redis, RX]) -> None:
    _, rx = pair
    status = rx.cluster_status()
    assert status["cluster_enabled"] == 0
    assert status["nodes"] == []
    assert status["libraries"] == 0
    rx.function_load(ONE)
    status = rx.cluster_status()
    assert status["libraries"] == 1 and status["in_sync"] == 1

    def entry(name: str) -> Dict[str, Any]:
        # The manifest keeps deleted names (tombstones) of earlier tests too.
        found = [e for e in rx.cluster_manifest() if e["library_name"] in (name, name.encode())]
        assert len(found) == 1, found
        return found[0]

    one = entry("one")
    assert one["deleted"] == 0
    digest = one["digest"]
    assert (digest.decode() if isinstance(digest, bytes) else digest) == hashlib.sha1(ONE.encode()).hexdigest()
    rx.function_load(ONE, replace=True)
    assert entry("one")["version"] == one["version"] + 1
    rx.function_delete("one")
    gone = entry("one")
    assert (gone["deleted"], gone["version"]) == (1, one["version"] + 2)


# ------------------------------------------------------------------ wrap

def test_wrap_a_redis_client(clean: Server, opts: Dict[str, object]) -> None:
    base = redis.Redis(port=clean.port, **opts)  # type: ignore[arg-type]
    rx = wrap(base)
    assert isinstance(rx, RX)
    assert rx.connection_pool is base.connection_pool
    assert wrap(rx) is rx
    rx.function_load(ONE)
    assert rx.fcall("only", 0) == 1
    with pytest.raises(ResponseError, match="Function not found"):
        base.fcall("only", 0)  # the original still sends FCALL
    assert lib_names(rx.function_list()) == ["one" if opts["decode_responses"] else b"one"]
    with pytest.raises(TypeError):
        wrap(base.pipeline())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wrap("not a client")  # type: ignore[arg-type]
    del base
    import gc

    gc.collect()
    assert rx.fcall("only", 0) == 1  # the original lives on with the wrapper
    rx.close()


def test_public_names() -> None:
    assert rx_redis.__all__
    for name in rx_redis.__all__:
        assert hasattr(rx_redis, name), name
