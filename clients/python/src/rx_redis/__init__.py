"""rx_redis: redis-py clients for RX, the Redis module that runs Redis Functions
libraries and EVAL scripts in LuaJIT under its own ``RX.*`` commands.

Moving a redis-py program over is one changed import::

    from rx_redis import RX            # instead of: from redis import Redis
    r = RX(host="localhost", port=6379)
    r.function_load(code, replace=True)   # RX.LOAD REPLACE
    r.fcall("myfunc", 1, "key", "arg")    # RX.CALL

:class:`RX` is a :class:`redis.Redis`, :class:`RXCluster` a
:class:`redis.cluster.RedisCluster`; :func:`wrap` turns an existing client into one.
"""

from .client import (
    NATIVE_COUNTERPARTS,
    RX,
    RXCluster,
    RXClusterPipeline,
    RXCommands,
    RXPipeline,
    parse_cluster_manifest,
    parse_cluster_status,
    parse_stats,
    wrap,
)

__version__ = "0.1.0"

__all__ = [
    "NATIVE_COUNTERPARTS",
    "RX",
    "RXCluster",
    "RXClusterPipeline",
    "RXCommands",
    "RXPipeline",
    "parse_cluster_manifest",
    "parse_cluster_status",
    "parse_stats",
    "wrap",
    "__version__",
]
