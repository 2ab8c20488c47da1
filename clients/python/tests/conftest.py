"""Real servers for the tests: redis-server processes with the RX module loaded.

The binary is $REDIS_SERVER, else redis-server on PATH; the module is
$RX_MODULE_PATH, else <repo>/target/release/librx.so. Each server runs on a free
loopback port in its own temporary directory and is stopped by its PID.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import pytest
import redis

REPO = Path(__file__).resolve().parents[3]


def module_path() -> str:
    path = os.environ.get("RX_MODULE_PATH") or str(REPO / "target" / "release" / "librx.so")
    if not os.path.isfile(path):
        pytest.fail(f"RX module not found at {path}: build it (make build) or set RX_MODULE_PATH")
    return path


def server_binary() -> str:
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        pytest.fail("redis-server not found: install it or set REDIS_SERVER")
    return binary


def free_port(cluster: bool = False) -> int:
    """A free loopback port; for a cluster node, one whose bus port (+10000) is free too."""
    if not cluster:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    for _ in range(200):
        port = random.randrange(20000, 30000)
        try:
            for p in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class Server:
    """One redis-server with RX, in its own directory, on a free loopback port."""

    def __init__(
        self,
        extra: Sequence[str] = (),
        module_args: Sequence[str] = ("stdlib", "none"),
        cluster: bool = False,
    ):
        self.cluster = cluster
        self.extra = list(extra)
        if cluster:
            self.extra += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                           "--cluster-node-timeout", "5000"]
        self.module_args = list(module_args)
        self.dir = tempfile.mkdtemp(prefix="rx-py-")
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None

    @property
    def log(self) -> str:
        return os.path.join(self.dir, "redis.log")

    def start(self) -> "Server":
        last_error = ""
        for _ in range(3):  # a port taken between free_port() and bind: try another
            self.port = free_port(self.cluster)
            args = [
                server_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", self.dir,
                "--save", "",
                "--appendonly", "no",
                "--logfile", self.log,
                "--busy-reply-threshold", "100",
                *self.extra,
                "--loadmodule", module_path(), *self.module_args,
            ]
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if redis.Redis(port=self.port, socket_timeout=1).ping():
                        return self
                except redis.ConnectionError:
                    time.sleep(0.05)
            self.stop(remove=False)
            last_error = self.read_log()
        raise RuntimeError(f"redis-server with RX did not start:\n{last_error}")

    def read_log(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self, remove: bool = True) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)


def _redis_major() -> int:
    return int(redis.__version__.split(".")[0])


def client_options() -> List[Dict[str, object]]:
    """The client settings every comparison runs with: bytes and str replies, and
    RESP3 where the installed redis-py speaks it."""
    options: List[Dict[str, object]] = [{"decode_responses": False}, {"decode_responses": True}]
    if _redis_major() >= 5:
        options += [{"decode_responses": False, "protocol": 3}, {"decode_responses": True, "protocol": 3}]
    return options


def _option_id(opts: Dict[str, object]) -> str:
    return ("str" if opts["decode_responses"] else "bytes") + ("-resp3" if opts.get("protocol") == 3 else "")


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    s = Server().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(params=client_options(), ids=_option_id)
def opts(request: pytest.FixtureRequest) -> Dict[str, object]:
    return dict(request.param)


@pytest.fixture
def clean(server: Server) -> Server:
    """The session's server, emptied: keys, native and RX libraries, both script caches."""
    c = redis.Redis(port=server.port)
    c.flushall()
    c.execute_command("FUNCTION FLUSH")
    c.execute_command("SCRIPT FLUSH")
    c.execute_command("RX.FLUSH")
    c.execute_command("RX.SCRIPT FLUSH")
    c.execute_command("RX.STATS RESET")
    c.close()
    return server


class Cluster:
    """Three RX primaries (no replicas) made a cluster by redis-cli --cluster create."""

    def __init__(self) -> None:
        self.nodes: List[Server] = []

    def start(self) -> "Cluster":
        try:
            for _ in range(3):
                self.nodes.append(Server(cluster=True).start())
            cli = shutil.which("redis-cli")
            if not cli:
                raise RuntimeError("redis-cli not found (Debian: apt-get install redis-tools)")
            subprocess.run(
                [cli, "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.nodes],
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
            )
            deadline = time.monotonic() + 30
            while not self.ready():
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not reach cluster_state:ok")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self) -> bool:
        for n in self.nodes:
            out = subprocess.run(
                [shutil.which("redis-cli") or "redis-cli", "-p", str(n.port), "CLUSTER", "INFO"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=10,
            ).stdout
            info = dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)
            if (info.get("cluster_state"), info.get("cluster_known_nodes"), info.get("cluster_slots_ok")) != (
                "ok", str(len(self.nodes)), "16384"
            ):
                return False
        return True

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster().start()
    try:
        yield c
    finally:
        c.stop()
