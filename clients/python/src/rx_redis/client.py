"""redis-py clients whose Functions and scripting calls run through RX.

:class:`RX` is a :class:`redis.Redis` and :class:`RXCluster` a
:class:`redis.cluster.RedisCluster`: every ordinary command behaves as it does
in redis-py.  Only the Functions and scripting methods (``function_load``,
``fcall``, ``eval``, ``script_load``, ...) are redirected to the ``RX.*``
commands of the RX module, with redis-py's own signatures and with the reply
parsing redis-py applies to the native counterparts.
"""

from __future__ import annotations

import copy
import random
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Type,
    TypeVar,
    Union,
    overload,
)

import redis
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import DataError, RedisClusterException

__all__ = [
    "RX",
    "RXCluster",
    "RXCommands",
    "RXPipeline",
    "RXClusterPipeline",
    "NATIVE_COUNTERPARTS",
    "parse_stats",
    "parse_cluster_status",
    "parse_cluster_manifest",
    "wrap",
]

KeyT = Union[bytes, str, memoryview]
EncodableT = Union[bytes, memoryview, str, int, float]
Callback = Callable[..., Any]

# redis-py's option that makes a reply bypass decode_responses (FUNCTION DUMP uses it).
_NEVER_DECODE = "NEVER_DECODE"

# 16384 slots, as in every Redis Cluster.
_CLUSTER_SLOTS = 16384

#: Each RX command and the native command whose redis-py reply parsing it takes.
#: The callbacks are copied from the client itself, so the replies follow the
#: installed redis-py version and the connection's protocol.
NATIVE_COUNTERPARTS: Dict[str, str] = {
    "RX.LOAD": "FUNCTION LOAD",
    "RX.CALL": "FCALL",
    "RX.CALL_RO": "FCALL_RO",
    "RX.LIST": "FUNCTION LIST",
    "RX.DELETE": "FUNCTION DELETE",
    "RX.FLUSH": "FUNCTION FLUSH",
    "RX.DUMP": "FUNCTION DUMP",
    "RX.RESTORE": "FUNCTION RESTORE",
    "RX.KILL": "FUNCTION KILL",
    "RX.EVAL": "EVAL",
    "RX.EVALSHA": "EVALSHA",
    "RX.EVAL_RO": "EVAL_RO",
    "RX.EVALSHA_RO": "EVALSHA_RO",
    "RX.SCRIPT LOAD": "SCRIPT LOAD",
    "RX.SCRIPT EXISTS": "SCRIPT EXISTS",
    "RX.SCRIPT FLUSH": "SCRIPT FLUSH",
    "RX.SCRIPT KILL": "SCRIPT KILL",
}

# Commands whose keys follow ``numkeys`` at the third position (routing in a cluster).
_KEYED_COMMANDS = frozenset(
    ["RX.CALL", "RX.CALL_RO", "RX.EVAL", "RX.EVALSHA", "RX.EVAL_RO", "RX.EVALSHA_RO"]
)


# --------------------------------------------------------------------------- replies


def _key(name: Any) -> Any:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else name


def _as_map(reply: Any) -> Any:  # a dict, or None for a nil reply
    """A RESP2 flat ``[k, v, k, v, ...]`` list or a RESP3 map, as a dict with str keys."""
    if reply is None:
        return None
    if isinstance(reply, dict):
        return {_key(k): v for k, v in reply.items()}
    if isinstance(reply, (list, tuple)):
        it = iter(reply)
        return {_key(k): v for k, v in zip(it, it)}
    return reply


def _bool_ok(reply: Any, **options: Any) -> bool:
    return bool(_key(reply) == "OK")


def parse_stats(reply: Any) -> Dict[str, Any]:
    """``RX.STATS`` as nested dicts: ``running_script``, ``engines``, ``vm_memory_bytes``,
    ``functions`` (name -> numbers) and ``scripts`` (sha1 -> numbers)."""
    top: Dict[str, Any] = _as_map(reply)
    if isinstance(top.get("running_script"), (list, tuple, dict)):
        top["running_script"] = _as_map(top["running_script"])
    if "engines" in top:
        top["engines"] = {k: _as_map(v) for k, v in _as_map(top["engines"]).items()}
    for section in ("functions", "scripts"):
        if section not in top:
            continue
        entries = {}
        for name, numbers in _as_map(top[section]).items():
            numbers = _as_map(numbers)
            for sub in ("errors_by_code", "refusals"):
                if sub in numbers:
                    numbers[sub] = _as_map(numbers[sub]) or {}
            entries[name] = numbers
        top[section] = entries
    return top


def parse_cluster_status(reply: Any, **options: Any) -> Dict[str, Any]:
    """``RX.CLUSTER STATUS`` as a dict whose ``nodes`` is a list of dicts."""
    top: Dict[str, Any] = _as_map(reply)
    top["nodes"] = [_as_map(node) for node in top.get("nodes") or []]
    return top


def parse_cluster_manifest(reply: Any, **options: Any) -> List[Dict[str, Any]]:
    """``RX.CLUSTER MANIFEST`` as a list of dicts (``library_name``, ``version``,
    ``digest``, ``deleted``)."""
    return [_as_map(entry) for entry in reply or []]


class _StatsReply:
    """Reply parsing of ``RX.STATS``: the native ``FUNCTION STATS`` parsing for
    :meth:`RXCommands.function_stats`, dicts for :meth:`RXCommands.stats`, a bool
    for :meth:`RXCommands.stats_reset`."""

    def __init__(self, native: Optional[Callback]) -> None:
        self.native = native

    def __call__(self, reply: Any, **options: Any) -> Any:
        how = options.pop("rx_parse", None)
        if how == "map":
            return parse_stats(reply)
        if how == "ok":
            return _bool_ok(reply)
        if self.native is not None:
            return self.native(reply, **options)
        return reply


def _rx_callbacks(native: Any) -> Dict[str, Callback]:
    """The reply callbacks for RX commands, given a client's callbacks for native ones."""
    out: Dict[str, Callback] = {}
    for rx_name, native_name in NATIVE_COUNTERPARTS.items():
        callback = native.get(native_name)
        if callback is not None:
            out[rx_name] = callback
    out["RX.STATS"] = _StatsReply(native.get("FUNCTION STATS"))
    out["RX.CLUSTER STATUS"] = parse_cluster_status
    out["RX.CLUSTER MANIFEST"] = parse_cluster_manifest
    return out


# --------------------------------------------------------------------------- commands


class RXCommands:
    """The Functions and scripting methods of redis-py, sent as RX commands.

    Mixed into :class:`RX`, :class:`RXCluster` and their pipelines.  Each
    method has the signature of its redis-py namesake; keyword arguments
    marked as RX's own come after them.  In a cluster, the keyword argument
    ``target_nodes`` of redis-py's cluster client can be given to the
    methods that take ``**kwargs``.
    """

    if TYPE_CHECKING:

        def execute_command(self, *args: Any, **options: Any) -> Any:
            ...

    # ---- Functions (FUNCTION LOAD / FCALL / ...)

    def function_load(self, code: str, replace: Optional[bool] = False) -> Any:
        """Load a library (``RX.LOAD [REPLACE] <code>``); returns its name.

        ``code`` starts with the shebang ``#!lua name=<library>``; with
        ``replace`` an existing library of that name is replaced.
        """
        pieces: List[EncodableT] = ["REPLACE"] if replace else []
        pieces.append(code)
        return self.execute_command("RX.LOAD", *pieces)

    def function_delete(self, library: str) -> Any:
        """Delete the library ``library`` and its functions (``RX.DELETE``)."""
        return self.execute_command("RX.DELETE", library)

    def function_flush(self, mode: Optional[str] = "SYNC") -> Any:
        """Delete every library (``RX.FLUSH [ASYNC|SYNC]``); ``mode=None`` sends no mode."""
        pieces = [] if mode is None else [mode]
        return self.execute_command("RX.FLUSH", *pieces)

    def function_list(
        self,
        library: Optional[str] = "*",
        withcode: Optional[bool] = False,
        *,
        withversions: bool = False,
        **kwargs: Any,
    ) -> Any:
        """List libraries, their functions, descriptions and flags (``RX.LIST``),
        in the shape of ``FUNCTION LIST``.

        :param library: a glob pattern of library names (``None`` lists all).
        :param withcode: include each library's source (``library_code``).
        :param withversions: RX's own: add each library's ``version`` and ``digest``.
        """
        pieces: List[EncodableT] = []
        if library is not None:
            pieces += ["LIBRARYNAME", library]
        if withcode:
            pieces.append("WITHCODE")
        if withversions:
            pieces.append("WITHVERSIONS")
        return self.execute_command("RX.LIST", *pieces, **kwargs)

    def function_list_setaside(
        self, library: Optional[str] = None, withcode: bool = False, **kwargs: Any
    ) -> Any:
        """RX's own: the libraries a dataset carried that could not be built on this
        server (``RX.LIST SETASIDE``): ``library_name``, ``error`` and, with
        ``withcode``, ``library_code``."""
        pieces: List[EncodableT] = ["SETASIDE"]
        if library is not None:
            pieces += ["LIBRARYNAME", library]
        if withcode:
            pieces.append("WITHCODE")
        return self.execute_command("RX.LIST", *pieces, **kwargs)

    def fcall(self, function: str, numkeys: int, *keys_and_args: EncodableT) -> Any:
        """Call a function (``RX.CALL <function> <numkeys> [key ...] [arg ...]``)."""
        return self.execute_command("RX.CALL", function, numkeys, *keys_and_args)

    def fcall_ro(self, function: str, numkeys: int, *keys_and_args: EncodableT) -> Any:
        """Call a ``no-writes`` function (``RX.CALL_RO``)."""
        return self.execute_command("RX.CALL_RO", function, numkeys, *keys_and_args)

    def function_dump(self, **kwargs: Any) -> Any:
        """A binary payload holding every library (``RX.DUMP``), always as bytes."""
        kwargs[_NEVER_DECODE] = []
        return self.execute_command("RX.DUMP", **kwargs)

    def function_restore(self, payload: bytes, policy: Optional[str] = "APPEND") -> Any:
        """Restore a payload of :meth:`function_dump` (``RX.RESTORE``).

        ``policy`` is ``APPEND`` (the default), ``REPLACE`` or ``FLUSH``;
        ``None`` sends no policy (the server's default, ``APPEND``).
        """
        pieces: List[EncodableT] = [payload]
        if policy is not None:
            pieces.append(policy)
        return self.execute_command("RX.RESTORE", *pieces)

    def function_kill(self, **kwargs: Any) -> Any:
        """Stop the running function if it has not written (``RX.KILL``)."""
        return self.execute_command("RX.KILL", **kwargs)

    def function_stats(self, **kwargs: Any) -> Any:
        """``RX.STATS`` parsed as redis-py parses ``FUNCTION STATS``: it starts with
        the native fields (``running_script``, ``engines``) and goes on with RX's
        (``vm_memory_bytes``, ``functions``, ``scripts``).  :meth:`stats` gives
        the same as dicts."""
        return self.execute_command("RX.STATS", **kwargs)

    # ---- RX's own

    def stats(
        self, library: Optional[str] = None, function: Optional[str] = None, **kwargs: Any
    ) -> Any:
        """Statistics (``RX.STATS [LIBRARY <name> | FUNCTION <name>]``) as nested dicts.

        Returns ``{"running_script": None | {...}, "engines": {...},
        "vm_memory_bytes": int, "functions": {name: {...}}, "scripts": {sha1: {...}}}``;
        each function's or script's numbers are ``library``, ``calls``,
        ``errors``, ``errors_by_code`` (dict), ``refusals`` (dict), ``total_us``,
        ``avg_us``, ``max_us``, ``p50_us``, ``p99_us``, ``p999_us``,
        ``redis_calls``, ``redis_calls_per_call``, ``last_error`` and
        ``last_error_time_ms``.  Map keys are str; values keep the client's
        ``decode_responses``.
        """
        if library is not None and function is not None:
            raise DataError("stats() takes library or function, not both")
        pieces: List[EncodableT] = []
        if library is not None:
            pieces = ["LIBRARY", library]
        elif function is not None:
            pieces = ["FUNCTION", function]
        return self.execute_command("RX.STATS", *pieces, rx_parse="map", **kwargs)

    def stats_reset(self, **kwargs: Any) -> Any:
        """Zero every function's and script's statistics (``RX.STATS RESET``)."""
        return self.execute_command("RX.STATS", "RESET", rx_parse="ok", **kwargs)

    def import_functions(self, replace: bool = False) -> Any:
        """Copy every native Functions library (``FUNCTION LIST WITHCODE``) into RX,
        atomically (``RX.IMPORT [REPLACE]``); returns how many were copied."""
        pieces = ["REPLACE"] if replace else []
        return self.execute_command("RX.IMPORT", *pieces)

    def cluster_status(self, **kwargs: Any) -> Any:
        """``RX.CLUSTER STATUS`` as a dict: ``cluster_enabled``, ``node_id``,
        ``state_digest``, ``libraries``, ``entries``, ``in_sync``, ``period_ms``
        and ``nodes``, a list of dicts (``node_id``, ``address``, ``role``,
        ``myself``, ``state_digest``, ``entries``, ``last_heard_ms``, ``in_sync``)."""
        return self.execute_command("RX.CLUSTER STATUS", **kwargs)

    def cluster_manifest(self, **kwargs: Any) -> Any:
        """``RX.CLUSTER MANIFEST`` as a list of dicts: ``library_name``, ``version``,
        ``digest`` and ``deleted`` for every library name, deletions included."""
        return self.execute_command("RX.CLUSTER MANIFEST", **kwargs)

    # ---- EVAL scripts

    def eval(self, script: str, numkeys: int, *keys_and_args: EncodableT) -> Any:
        """Run a script with ``KEYS`` and ``ARGV`` (``RX.EVAL``); it is cached by SHA1."""
        return self.execute_command("RX.EVAL", script, numkeys, *keys_and_args)

    def eval_ro(self, script: str, numkeys: int, *keys_and_args: EncodableT) -> Any:
        """The read-only variant of :meth:`eval` (``RX.EVAL_RO``)."""
        return self.execute_command("RX.EVAL_RO", script, numkeys, *keys_and_args)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: EncodableT) -> Any:
        """Run a cached script by SHA1 (``RX.EVALSHA``); ``NoScriptError`` if unknown."""
        return self.execute_command("RX.EVALSHA", sha, numkeys, *keys_and_args)

    def evalsha_ro(self, sha: str, numkeys: int, *keys_and_args: EncodableT) -> Any:
        """The read-only variant of :meth:`evalsha` (``RX.EVALSHA_RO``)."""
        return self.execute_command("RX.EVALSHA_RO", sha, numkeys, *keys_and_args)

    def script_load(self, script: str) -> Any:
        """Cache a script (``RX.SCRIPT LOAD``); returns its SHA1. Never evicted."""
        return self.execute_command("RX.SCRIPT LOAD", script)

    def script_exists(self, *args: str) -> Any:
        """Whether each SHA1 is in the script cache (``RX.SCRIPT EXISTS``): a list of bools."""
        return self.execute_command("RX.SCRIPT EXISTS", *args)

    def script_flush(self, sync_type: Optional[str] = None) -> Any:
        """Empty the script cache (``RX.SCRIPT FLUSH [ASYNC|SYNC]``)."""
        if sync_type not in ["SYNC", "ASYNC", None]:
            raise DataError("SCRIPT FLUSH accepts SYNC, ASYNC or None (no argument)")
        pieces = [] if sync_type is None else [sync_type]
        return self.execute_command("RX.SCRIPT FLUSH", *pieces)

    def script_kill(self, **kwargs: Any) -> Any:
        """Stop the running script if it has not written (``RX.SCRIPT KILL``)."""
        return self.execute_command("RX.SCRIPT KILL", **kwargs)


# --------------------------------------------------------------------------- pipelines

_P = TypeVar("_P")


def _adopt(obj: Any, cls: Type[_P]) -> _P:
    """Give a pipeline made by redis-py the RX methods: the same object, with a class
    that adds :class:`RXCommands` in front of its own (nothing else changes)."""
    base = type(obj)
    if not issubclass(cls, base):
        cls = type(cls.__name__, (cls, base), {"__module__": __name__})
    obj.__class__ = cls
    return obj  # type: ignore[no-any-return]


class RXPipeline(RXCommands, Pipeline):
    """The pipeline of :class:`RX` (``RX(...).pipeline()``): redis-py's, with the RX
    methods; scripts of ``register_script`` are loaded into RX's cache."""

    def load_scripts(self) -> None:
        # As redis-py's Pipeline.load_scripts, against RX's script cache.
        scripts = list(self.scripts)
        immediate = self.immediate_execute_command
        shas = [s.sha for s in scripts]
        exists = immediate("RX.SCRIPT EXISTS", *shas)
        if not all(exists):
            for s, exist in zip(scripts, exists):
                if not exist:
                    s.sha = immediate("RX.SCRIPT LOAD", s.script)


# --------------------------------------------------------------------------- Redis


class RX(RXCommands, redis.Redis):
    """A :class:`redis.Redis` whose Functions and scripting methods run through RX.

    Takes exactly :class:`redis.Redis`'s arguments (``RX(host=..., port=...)``,
    ``RX.from_url(...)``, ``RX(connection_pool=...)``).  ``fcall``,
    ``function_load``, ``eval``, ``evalsha``, ``script_load``, ... send
    ``RX.CALL``, ``RX.LOAD``, ``RX.EVAL``, ... and parse the replies as redis-py
    parses the native ones; :meth:`register_script` (and redis-py's ``Lock``,
    which uses it) therefore runs scripts in RX too.  Every other command is
    redis-py's.  The native commands stay reachable:
    ``redis.Redis.fcall(r, ...)`` or ``r.execute_command("FCALL", ...)``.
    """

    #: The client this one was made from by :func:`wrap`, kept alive with it.
    _rx_wrapped: Optional[redis.Redis] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx_install_callbacks()

    def _rx_install_callbacks(self) -> None:
        self.response_callbacks.update(_rx_callbacks(self.response_callbacks))

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> RXPipeline:
        """redis-py's pipeline, with the RX methods."""
        return _adopt(super().pipeline(transaction, shard_hint), RXPipeline)


# --------------------------------------------------------------------------- cluster

_DEFAULT_NODE = RedisCluster.DEFAULT_NODE
_PRIMARIES = RedisCluster.PRIMARIES

# RX keeps libraries identical on every node by itself, so library commands go to one
# node; the script cache is per node, as in Redis, so script commands go to every
# primary. Node-local questions (stats, kills, status) go to the default node unless
# target_nodes says otherwise.
_RX_CLUSTER_FLAGS: Dict[str, str] = {
    "RX.LOAD": _DEFAULT_NODE,
    "RX.DELETE": _DEFAULT_NODE,
    "RX.FLUSH": _DEFAULT_NODE,
    "RX.RESTORE": _DEFAULT_NODE,
    "RX.IMPORT": _DEFAULT_NODE,
    "RX.LIST": _DEFAULT_NODE,
    "RX.DUMP": _DEFAULT_NODE,
    "RX.STATS": _DEFAULT_NODE,
    "RX.KILL": _DEFAULT_NODE,
    "RX.SCRIPT KILL": _DEFAULT_NODE,
    "RX.CLUSTER STATUS": _DEFAULT_NODE,
    "RX.CLUSTER MANIFEST": _DEFAULT_NODE,
    "RX.SCRIPT LOAD": _PRIMARIES,
    "RX.SCRIPT EXISTS": _PRIMARIES,
    "RX.SCRIPT FLUSH": _PRIMARIES,
}

# Merging the per-node replies of the commands sent to every primary: as redis-py
# merges their native counterparts.
_RX_CLUSTER_RESULTS = {
    "RX.SCRIPT LOAD": "SCRIPT LOAD",
    "RX.SCRIPT EXISTS": "SCRIPT EXISTS",
    "RX.SCRIPT FLUSH": "SCRIPT FLUSH",
}


class _RXClusterRouting:
    """Routing of RX commands in a cluster: flags, reply callbacks, key slots."""

    if TYPE_CHECKING:
        command_flags: Dict[str, Any]
        result_callbacks: Any
        cluster_response_callbacks: Any

        def keyslot(self, key: KeyT) -> int:
            ...

        def get_default_node(self) -> Any:
            ...

    def _rx_install(self) -> None:
        self.command_flags.update(_RX_CLUSTER_FLAGS)
        for rx_name, native_name in _RX_CLUSTER_RESULTS.items():
            merge = self.result_callbacks.get(native_name)
            if merge is not None:
                self.result_callbacks[rx_name] = merge
        self.cluster_response_callbacks.update(_rx_callbacks(self._rx_node_callbacks()))

    def _rx_node_callbacks(self) -> Any:
        # Each node's replies are parsed by that node's redis.Redis; its callbacks for
        # the native commands are the ones to copy.
        try:
            node = self.get_default_node()
            callbacks = node.redis_connection.response_callbacks
        except AttributeError:
            callbacks = None
        if callbacks is None:
            callbacks = redis.Redis().response_callbacks
        return callbacks

    def determine_slot(self, *args: Any, **kwargs: Any) -> Any:
        """The slot of an RX call: that of its keys (``numkeys`` of them after the
        function name or script), any slot when there are none.  Other commands
        are routed by redis-py."""
        command = _key(args[0]).upper() if args else ""
        if command not in _KEYED_COMMANDS:
            return super().determine_slot(*args, **kwargs)  # type: ignore[misc]
        if len(args) < 3:
            raise RedisClusterException(f"Invalid args in command: {args}")
        keys = args[3 : 3 + int(args[2])]
        if not keys:
            return random.randrange(0, _CLUSTER_SLOTS)
        slots = {self.keyslot(k) for k in keys}
        if len(slots) != 1:
            raise RedisClusterException(f"{command} - all keys must map to the same key slot")
        return slots.pop()


class RXClusterPipeline(_RXClusterRouting, RXCommands, ClusterPipeline):
    """The pipeline of :class:`RXCluster`: redis-py's cluster pipeline, with the RX
    methods routed as in :class:`RXCluster`.  The methods redis-py blocks in its
    cluster pipeline (``evalsha``, ``script_load``, ...) are blocked here too."""


for _name in [n for n in vars(RXCommands) if not n.startswith("_")]:
    _blocked = vars(ClusterPipeline).get(_name)
    if _blocked is not None:
        setattr(RXClusterPipeline, _name, _blocked)


class RXCluster(_RXClusterRouting, RXCommands, RedisCluster):
    """A :class:`redis.cluster.RedisCluster` whose Functions and scripting methods run
    through RX.

    Takes :class:`RedisCluster`'s arguments.  Routing:

    * ``fcall``/``fcall_ro``/``eval*``/``evalsha*`` go to the node serving their
      keys' slot (any node without keys); keys of different slots raise
      ``RedisClusterException``, as for ``FCALL`` in redis-py;
    * ``function_load``/``delete``/``flush``/``restore``, ``import_functions``,
      ``function_list`` and ``function_dump`` go to one node (the default node):
      RX copies library changes to every node itself, so their reply is that one
      node's, not redis-py's per-node dict for the native commands;
    * ``script_load``/``script_exists``/``script_flush`` go to every primary, with
      redis-py's merged reply, since each node has its own script cache;
    * ``function_kill``, ``script_kill``, ``stats``, ``cluster_status`` and
      ``cluster_manifest`` go to the default node, or to ``target_nodes=...``.
    """

    #: The client this one was made from by :func:`wrap`, whose nodes it borrows.
    _rx_wrapped: Optional[RedisCluster] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx_install()

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> RXClusterPipeline:
        """redis-py's cluster pipeline, with the RX methods."""
        pipe = _adopt(super().pipeline(transaction, shard_hint), RXClusterPipeline)
        pipe.command_flags.update(_RX_CLUSTER_FLAGS)
        return pipe

    def close(self) -> None:
        # A client made by wrap() borrows its original's nodes and connections.
        if self._rx_wrapped is not None:
            return
        super().close()


# --------------------------------------------------------------------------- wrap


@overload
def wrap(client: redis.Redis) -> RX:
    ...


# Where redis-py has no type information (Debian's 4.3.4), both parameters are Any:
# the first overload then wins, and mypy notes that this one never matches.
@overload
def wrap(client: RedisCluster) -> RXCluster:  # type: ignore[misc]
    ...


def wrap(client: Union[redis.Redis, RedisCluster]) -> Union[RX, RXCluster]:
    """An RX client over an existing redis-py client's connections.

    * a :class:`redis.Redis` gives an :class:`RX` on the same connection pool
      (so the same server, credentials, ``decode_responses``, protocol), with
      the original's reply callbacks;
    * a :class:`redis.cluster.RedisCluster` gives an :class:`RXCluster` sharing
      its nodes and connections;
    * an :class:`RX` or :class:`RXCluster` is returned as it is.

    The original client is left unchanged (its ``fcall`` still sends
    ``FCALL``) and is kept alive as long as the RX client is.
    """
    if isinstance(client, (RX, RXCluster)):
        return client
    if isinstance(client, (Pipeline, ClusterPipeline)):
        raise TypeError("wrap() takes a client, not a pipeline: wrap the client, then call pipeline()")
    if isinstance(client, RedisCluster):
        rxc: RXCluster = copy.copy(client)
        rxc.__class__ = RXCluster
        rxc.command_flags = copy.copy(client.command_flags)
        rxc.result_callbacks = copy.copy(client.result_callbacks)
        rxc.cluster_response_callbacks = copy.copy(client.cluster_response_callbacks)
        rxc._rx_wrapped = client
        rxc._rx_install()
        return rxc
    if isinstance(client, redis.Redis):
        rx = RX(connection_pool=client.connection_pool)
        rx.response_callbacks.update(client.response_callbacks)
        rx._rx_install_callbacks()
        rx._rx_wrapped = client
        return rx
    raise TypeError(f"wrap() takes a redis.Redis or redis.cluster.RedisCluster, not {type(client).__name__}")

