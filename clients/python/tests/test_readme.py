"""The examples of README.md, run against a real server.

Every ```python block that connects with ``port=6379`` is run with the test server's
port instead, and what it prints must equal its ``# prints ...`` comments.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import List

import redis

from conftest import Server

README = Path(__file__).resolve().parents[1] / "README.md"


def examples() -> List[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if "port=6379" in b]


def run(block: str, port: int) -> List[str]:
    code = block.replace("port=6379", f"port={port}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    return out.getvalue().splitlines()


def expected(block: str) -> List[str]:
    return re.findall(r"# prints (.*)$", block, flags=re.M)


def test_readme_has_the_examples() -> None:
    blocks = examples()
    assert len(blocks) == 3
    assert "import redis\n" in blocks[0] and "redis.Redis(" in blocks[0]
    assert "from rx_redis import RX" in blocks[1]
    assert "rx_redis.wrap(" in blocks[2]
    # The RX version is the redis-py program with the import and the class changed.
    moved = blocks[1].replace("from rx_redis import RX", "import redis").replace("RX(", "redis.Redis(")
    assert [line.split("  #")[0] for line in moved.splitlines()] == [
        line.split("  #")[0] for line in blocks[0].splitlines()]


def test_readme_examples_run(clean: Server) -> None:
    native, moved, wrapped = examples()
    c = redis.Redis(port=clean.port)
    # The redis-py program, natively.
    assert run(native, clean.port) == expected(native) != []
    assert c.execute_command("FUNCTION LIST") != [] and c.execute_command("RX.LIST") == []
    c.flushall()
    # The moved program: the same output, from RX, with nothing loaded natively this time.
    c.execute_command("FUNCTION FLUSH")
    assert run(moved, clean.port) == expected(moved) == expected(native)
    assert c.execute_command("FUNCTION LIST") == [] and c.execute_command("RX.LIST") != []
    assert run(wrapped, clean.port) == expected(wrapped) != []
    c.close()
