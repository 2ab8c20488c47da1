"""RXCluster against a real cluster of three RX primaries, beside redis-py's
RedisCluster calling the native commands on the same cluster."""

from __future__ import annotations

import gc
import hashlib
import time
from typing import Any, Callable, Iterator, List, Tuple

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, ResponseError

from rx_redis import RXCluster, RXClusterPipeline, wrap

from conftest import Cluster

LIB = """#!lua name=clib
redis.register_function('setget', function(keys, args)
  local old = redis.call('GET', keys[1])
  redis.call('SET', keys[1], args[1])
  return old
end)
redis.register_function{function_name='read', callback=function(keys) return redis.call('GET', keys[1]) end,
  flags={'no-writes'}}
redis.register_function('keys_and_args', function(keys, args) return {keys, args} end)
redis.register_function('echo', function(keys, args) return args end)
"""

SCRIPT = "return {KEYS[1], redis.call('INCR', KEYS[1])}"


def eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not reached in time")
        time.sleep(0.05)


def outcome_type(call: Callable[[], Any]) -> str:
    try:
        call()
    except Exception as e:  # noqa: B902 - compared by type
        return type(e).__name__
    return "ok"


def names(listing: List[Any]) -> List[str]:
    out = []
    for lib in listing:
        fields = lib if isinstance(lib, dict) else dict(zip(lib[::2], lib[1::2]))
        out += [v for k, v in fields.items() if k == "library_name"]
    return sorted(out)


@pytest.fixture
def clients(cluster: Cluster) -> Iterator[Tuple[RedisCluster, RXCluster]]:
    port = cluster.nodes[0].port
    native = RedisCluster(host="127.0.0.1", port=port, decode_responses=True)
    rx = RXCluster(host="127.0.0.1", port=port, decode_responses=True)
    for node in rx.get_primaries():
        c = redis.Redis(host=node.host, port=node.port)
        c.flushall()
        c.execute_command("FUNCTION FLUSH")
        c.execute_command("SCRIPT FLUSH")
        c.execute_command("RX.SCRIPT FLUSH")
        c.close()
    rx.function_flush()
    eventually(lambda: all(rx.function_list(target_nodes=n) == [] for n in rx.get_primaries()))
    try:
        yield native, rx
    finally:
        native.close()
        rx.close()


def keys_on_every_node(rx: RXCluster, prefix: str, count: int = 30) -> List[str]:
    keys = [f"{prefix}{i}" for i in range(count)]
    assert len({rx.get_node_from_key(k).name for k in keys}) == 3
    return keys


def test_library_changes_go_to_one_node_and_reach_all(clients: Tuple[RedisCluster, RXCluster]) -> None:
    _, rx = clients
    # One node's reply, not redis-py's per-node dict: RX copies the library itself.
    assert rx.function_load(LIB) == "clib"
    eventually(lambda: all(names(rx.function_list(target_nodes=n)) == ["clib"] for n in rx.get_primaries()))
    assert names(rx.function_list()) == ["clib"]
    payload = rx.function_dump()
    assert isinstance(payload, bytes)
    assert rx.function_delete("clib") is True
    eventually(lambda: all(rx.function_list(target_nodes=n) == [] for n in rx.get_primaries()))
    assert rx.function_restore(payload) is True
    eventually(lambda: all(names(rx.function_list(target_nodes=n)) == ["clib"] for n in rx.get_primaries()))
    assert rx.function_load(LIB, replace=True) == "clib"
    assert rx.function_flush() is True
    eventually(lambda: all(rx.function_list(target_nodes=n) == [] for n in rx.get_primaries()))


def test_calls_route_by_key_like_native(clients: Tuple[RedisCluster, RXCluster]) -> None:
    native, rx = clients
    native.function_load(LIB)  # redis-py sends FUNCTION LOAD to every primary
    rx.function_load(LIB)
    eventually(lambda: all(names(rx.function_list(target_nodes=n)) == ["clib"] for n in rx.get_primaries()))

    def run(c: RedisCluster, prefix: str) -> List[Any]:
        out = []
        for i, k in enumerate(keys_on_every_node(rx, prefix)):
            out.append(c.fcall("setget", 1, k, f"v{i}"))
            out.append(c.fcall("setget", 1, k, f"w{i}"))
            out.append(c.fcall_ro("read", 1, k))
        out.append(c.fcall("keys_and_args", 2, "{tag}a", "{tag}b", "x"))
        out.append(c.fcall("echo", 0, "no keys"))
        return out

    assert run(rx, "rx:") == run(native, "native:")
    # Each RX call ran on the node that owns its key (else: a non-local key error).
    for i, k in enumerate(keys_on_every_node(rx, "rx:")):
        assert rx.get(k) == f"w{i}"
    for c in (native, rx):
        with pytest.raises(RedisClusterException, match="same key slot"):
            c.fcall("keys_and_args", 2, "a", "b")
    # Each went straight to its key's node: no MOVED redirection was followed.
    assert getattr(rx, "reinitialize_counter", 0) == 0
    k = "some-key"
    assert rx.determine_slot("RX.CALL", "read", 1, k) == rx.keyslot(k)
    assert rx.determine_slot("RX.EVALSHA_RO", "f" * 40, 2, "{t}1", "{t}2", "arg") == rx.keyslot("{t}")
    assert 0 <= rx.determine_slot("RX.EVAL", "return 1", 0) < 16384
    assert rx.determine_slot("GET", k) == rx.keyslot(k)  # others: redis-py's routing


def test_pipeline_routes_rx_calls(clients: Tuple[RedisCluster, RXCluster]) -> None:
    native, rx = clients
    rx.function_load(LIB)
    eventually(lambda: all(names(rx.function_list(target_nodes=n)) == ["clib"] for n in rx.get_primaries()))
    pipe = rx.pipeline()
    assert isinstance(pipe, RXClusterPipeline)
    keys = keys_on_every_node(rx, "pipe:")
    for k in keys:
        pipe.fcall("setget", 1, k, "p")
    for k in keys:
        pipe.fcall_ro("read", 1, k)
    assert pipe.execute() == [None] * len(keys) + ["p"] * len(keys)
    # What redis-py blocks in its cluster pipeline is blocked in RX's too.
    # (redis-py 4.3 blocks script_* and evalsha, and has no eval, in a cluster pipeline.)
    for name, args in [("script_load", ("x",)), ("script_exists", ("x",)), ("script_flush", ()),
                       ("script_kill", ()), ("evalsha", ("f" * 40, 1, "k")), ("eval", (SCRIPT, 1, "k")),
                       ("eval_ro", (SCRIPT, 1, "k")), ("fcall", ("echo", 0))]:
        native_outcome = outcome_type(lambda: getattr(native.pipeline(), name)(*args))
        assert outcome_type(lambda: getattr(rx.pipeline(), name)(*args)) == native_outcome, name
    assert outcome_type(lambda: rx.pipeline().fcall("echo", 0)) == "ok"


def test_scripts_go_to_every_primary(clients: Tuple[RedisCluster, RXCluster]) -> None:
    native, rx = clients
    sha = hashlib.sha1(SCRIPT.encode()).hexdigest()

    def run(c: RedisCluster, prefix: str) -> List[Any]:
        out: List[Any] = [c.script_exists(sha), c.script_load(SCRIPT), c.script_exists(sha, "f" * 40)]
        for k in keys_on_every_node(rx, prefix, 12):  # evalsha on each node: loaded everywhere
            out.append(c.evalsha(sha, 1, k))
            out.append(c.eval(SCRIPT, 1, k))
            out.append(c.eval_ro("return redis.call('GET', KEYS[1])", 1, k))
        out += [c.script_flush(), c.script_exists(sha)]
        return out

    got, want = run(rx, "s:rx:"), run(native, "s:native:")
    assert [repr(x).replace("s:rx:", "s:") for x in got] == [repr(x).replace("s:native:", "s:") for x in want]
    rx.script_load(SCRIPT)
    assert native.script_exists(sha) == [False]  # RX's own cache, on every primary
    for node in rx.get_primaries():
        assert redis.Redis(host=node.host, port=node.port).execute_command("RX.SCRIPT EXISTS", sha) == [1]


def test_status_stats_and_kill_per_node(clients: Tuple[RedisCluster, RXCluster]) -> None:
    _, rx = clients
    rx.function_load(LIB)

    def in_sync() -> bool:
        status = rx.cluster_status()
        return bool(status["in_sync"]) and status["libraries"] == 1

    eventually(in_sync)
    status = rx.cluster_status()
    assert status["cluster_enabled"] == 1
    assert sorted(n["address"] for n in status["nodes"]) == sorted(
        f"127.0.0.1:{n.port}" for n in rx.get_primaries())
    assert sum(n["myself"] for n in status["nodes"]) == 1
    for node in rx.get_primaries():
        mine = [n for n in rx.cluster_status(target_nodes=node)["nodes"] if n["myself"]]
        assert mine[0]["address"] == node.name
        manifest = rx.cluster_manifest(target_nodes=node)
        assert [(e["library_name"], e["deleted"]) for e in manifest if e["library_name"] == "clib"] == [("clib", 0)]
    k = keys_on_every_node(rx, "st:")[0]
    rx.fcall("setget", 1, k, "x")
    owner = rx.get_node_from_key(k)
    assert rx.stats(target_nodes=owner)["functions"]["setget"]["calls"] == 1
    others = [n for n in rx.get_primaries() if n.name != owner.name]
    assert all(rx.stats(target_nodes=n)["functions"]["setget"]["calls"] == 0 for n in others)
    with pytest.raises(ResponseError, match="NOTBUSY"):
        rx.function_kill(target_nodes=owner)
    with pytest.raises(ResponseError, match="NOTBUSY"):
        rx.script_kill()


def test_import_functions_reaches_every_node(clients: Tuple[RedisCluster, RXCluster]) -> None:
    native, rx = clients
    native.function_load(LIB)
    assert rx.import_functions() == 1
    eventually(lambda: all(names(rx.function_list(target_nodes=n)) == ["clib"] for n in rx.get_primaries()))


def test_wrap_a_cluster_client(clients: Tuple[RedisCluster, RXCluster], cluster: Cluster) -> None:
    _, rx = clients
    rx.function_load(LIB)
    eventually(lambda: all(names(rx.function_list(target_nodes=n)) == ["clib"] for n in rx.get_primaries()))
    base = RedisCluster(host="127.0.0.1", port=cluster.nodes[1].port, decode_responses=True)
    wrapped = wrap(base)
    assert isinstance(wrapped, RXCluster) and wrap(wrapped) is wrapped
    assert "RX.LOAD" not in base.command_flags  # the original is unchanged
    k = keys_on_every_node(wrapped, "wrap:")
    assert [wrapped.fcall("setget", 1, key, "1") for key in k] == [None] * len(k)
    with pytest.raises(ResponseError, match="Function not found"):
        base.fcall("setget", 1, k[0], "2")  # the original still sends FCALL
    del wrapped
    gc.collect()
    assert base.get(k[0]) == "1"  # dropping the wrapper did not close the original's connections
    base.close()
