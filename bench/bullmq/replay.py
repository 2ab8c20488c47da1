#!/usr/bin/env python3
"""Replays a recorded command stream (BullMQ's from record.js here, django-cacheops' from
bench/cacheops/record.py) against native EVALSHA and against RX.EVALSHA in one server
with RX loaded, alternating sides round by round, and prints the server time per call in
total (INFO commandstats, over every round) and per script (from one more round per side
with every command in SLOWLOG, whose own cost for each command a script runs is then
counted in, on both sides alike), with the RX/native ratio.

    replay.py [--family BullMQ|cacheops] <port> <recording.jsonl> [rounds]

The family (BullMQ by default; django-cacheops' recordings come from
bench/cacheops/record.py) names the run and picks what is compared as values.

Each side starts from an empty dataset with the scripts loaded (SCRIPT LOAD, or
RX.SCRIPT LOAD), replays every command in recorded order on one connection (blocking pops
become their non-blocking form; connection housekeeping is left out), and must end with
the same replies and the same dataset as the other side: a difference fails the run.

Two things are compared as values rather than bytes, and the run says how often they
differed as bytes: JSON text (BullMQ's scripts cjson.encode Lua tables, and the order of a
table's keys differs between Lua 5.1 and LuaJIT: a documented difference), and stream
entry IDs (XADD * takes the clock).

cacheops (--family cacheops) adds a third: its cache_thing.lua names its keys by walking a
cjson-decoded condition with pairs() (`conj:<table>:<field>=<value>&...`, members
`<field>,<field>` of `schemes:<table>` sets), so with two or more fields the fields come in
LuaJIT's order on one side and Lua 5.1's on the other (the documented difference again),
and on either side in more than one order when cacheops' JSON did. Such key names and set
members are compared with their fields sorted, keys that then have one name with their
members together, and the run says how many names and members differed as written.
Everything else in them (the values, how they are written, which keys exist) must match.
"""
import base64
import hashlib
import json
import os
import re
import sys
from collections import defaultdict

# The RESP client of bench/scale.py, one directory up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from scale import Client, ReplyError, encode  # noqa: E402

SKIP = {"client", "info", "hello", "quit", "ping", "select", "monitor", "script"}
NONBLOCKING = {"bzpopmin": "zpopmin", "bzpopmax": "zpopmax", "blpop": "lpop", "brpop": "rpop"}


def plain(reply):
    """A reply with error replies, nested ones included, as ("err", text) values that compare
    equal when their texts do."""
    if isinstance(reply, ReplyError):
        return ("err", str(reply).encode())
    if isinstance(reply, list):
        return [plain(x) for x in reply]
    return reply


def request(c, *args):
    """One command whose reply may be an error (the replayed ones); `Client.call` raises
    on an error reply, which suits the set-up commands."""
    c.sock.sendall(encode(args))
    return plain(c.read())


def load(path):
    with open(path) as f:
        scripts = json.loads(f.readline())["scripts"]
        commands = []
        for line in f:
            d = json.loads(line)
            name = d["n"].lower()
            args = [base64.b64decode(a) for a in d["a"]]
            if name in SKIP:
                continue
            if name in NONBLOCKING:
                name, args = NONBLOCKING[name], args[:1]
            if name == "eval":  # the body becomes its SHA1, loaded beforehand
                name, args = "evalsha", [hashlib.sha1(args[0]).hexdigest().encode()] + args[1:]
            commands.append((name, args))
    return scripts, commands


def canonical(v):
    """A reply or value with JSON texts parsed (keys sorted): equal JSON compares equal."""
    if isinstance(v, list):
        return [canonical(x) for x in v]
    if isinstance(v, bytes) and v[:1] in (b"{", b"["):
        try:
            return ("json", json.dumps(json.loads(v), sort_keys=True))
        except ValueError:
            return v
    return v


def dataset(c):
    """Every key with its type and contents (JSON values canonical, stream IDs left out)."""
    keys, cursor = [], b"0"
    while True:
        cursor, batch = c.call("SCAN", cursor, "COUNT", "1000")
        keys.extend(batch)
        if cursor == b"0":
            break
    out = {}
    for k in sorted(keys):
        t = c.call("TYPE", k)
        if t == b"string":
            v = c.call("GET", k)
        elif t == b"hash":
            flat = c.call("HGETALL", k)
            v = sorted(zip(flat[0::2], [canonical(x) for x in flat[1::2]]))
        elif t == b"list":
            v = c.call("LRANGE", k, "0", "-1")
        elif t == b"set":
            v = sorted(c.call("SMEMBERS", k))
        elif t == b"zset":
            v = c.call("ZRANGE", k, "0", "-1", "WITHSCORES")
        elif t == b"stream":
            v = [entry[1] for entry in c.call("XRANGE", k, "-", "+")]
        else:
            v = t
        out[k] = (t, canonical(v), c.call("PTTL", k) > 0)
    return out


CONJ_KEY = re.compile(rb"(.*?conj:[^:]*:)(.*)", re.S)


def fields_sorted(data):
    """A cacheops dataset with the fields of its condition key names and scheme members
    sorted (conditions joined by '&', scheme fields by ','), the sets of keys that then
    share a name merged; and the key names and scheme members as written."""
    out, written = {}, set(data)
    for k, (t, v, ttl) in data.items():
        m = CONJ_KEY.fullmatch(k)
        name = k
        if m and t == b"set":
            name = m.group(1) + b"&".join(sorted(m.group(2).split(b"&")))
        if re.match(rb".*?schemes:", k) and t == b"set":
            written.update((k, x) for x in v)
            v = sorted({b",".join(sorted(x.split(b","))) for x in v})
        if name in out and out[name][0] == t == b"set":
            v = sorted(set(out[name][1]) | set(v))
            ttl = out[name][2] or ttl
        out[name] = (t, v, ttl)
    return out, written


def run_side(c, side, scripts, commands, breakdown):
    prefix = b"RX." if side == "rx" else b""
    c.call("FLUSHALL", "SYNC")
    c.call("SCRIPT", "FLUSH", "SYNC")
    c.call("RX.SCRIPT", "FLUSH")
    for s in scripts.values():
        c.call(prefix + b"SCRIPT", "LOAD", s["body"].encode())
    c.call("CONFIG", "RESETSTAT")
    c.call("CONFIG", "SET", "slowlog-log-slower-than", "0" if breakdown else "-1")
    # Commands scripts run are logged too: room for all of them.
    c.call("CONFIG", "SET", "slowlog-max-len", "10000000")
    c.call("SLOWLOG", "RESET")
    replies = []
    for name, args in commands:
        cmd = name.encode()
        if name in ("evalsha", "evalsha_ro"):
            cmd = prefix + cmd
        replies.append(request(c, cmd, *args))
    log = c.call("SLOWLOG", "GET", "10000000") if breakdown else []
    c.call("CONFIG", "SET", "slowlog-log-slower-than", "10000")
    c.call("SLOWLOG", "RESET")
    per_script = defaultdict(lambda: [0, 0])
    for entry in log:
        argv = entry[3]
        if argv and argv[0].lower() in (b"evalsha", b"rx.evalsha"):
            sha = argv[1].decode()
            per_script[sha][0] += 1
            per_script[sha][1] += entry[2]
    stats = c.call("INFO", "commandstats").decode()
    total = 0
    want = "cmdstat_%s:" % ("rx.evalsha" if side == "rx" else "evalsha")
    for line in stats.splitlines():
        if line.startswith(want):
            fields = dict(kv.split("=") for kv in line.split(":", 1)[1].split(","))
            total = int(fields["usec"])
    return replies, per_script, total, dataset(c)


def main():
    argv = sys.argv[1:]
    family = "BullMQ"
    if argv[:1] == ["--family"]:
        family, argv = argv[1], argv[2:]
    port, path = int(argv[0]), argv[1]
    rounds = int(argv[2]) if len(argv) > 2 else 3
    scripts, commands = load(path)
    c = Client(port)
    # One unmeasured round per side first: the first replay in a fresh server pays for
    # warming its allocator and caches, which would count against whichever side ran first.
    for side in ("native", "rx"):
        run_side(c, side, scripts, commands, False)
    acc = {"native": defaultdict(lambda: [0, 0]), "rx": defaultdict(lambda: [0, 0])}
    totals = {"native": [], "rx": []}
    reference = None
    json_order = [0]
    field_order = 0  # cacheops key names and members that differed as written
    for r in range(rounds + 1):
        breakdown = r == rounds
        for side in (("native", "rx") if r % 2 == 0 else ("rx", "native")):
            replies, per_script, total, data = run_side(c, side, scripts, commands, breakdown)
            written = set()
            if family == "cacheops":
                data, written = fields_sorted(data)
            if reference is None:
                reference = (side, replies, data, written)
            else:
                field_order = max(field_order, len(written ^ reference[3]))
                pairs = list(zip(reference[1], replies))
                bad = [i for i, (a, b) in enumerate(pairs) if canonical(a) != canonical(b)]
                byte_diffs = sum(1 for a, b in pairs if a != b)
                if side == "rx" or reference[0] == "rx":
                    json_order[0] = max(json_order[0], byte_diffs)
                if bad or data != reference[2]:
                    i = bad[0] if bad else None
                    keys = [k for k in set(data) | set(reference[2])
                            if data.get(k) != reference[2].get(k)]
                    print("replay: %s differs from %s: %d replies%s; %d keys differ%s" % (
                        side, reference[0], len(bad),
                        "" if i is None else " (first: %s %r -> %r vs %r)" % (
                            commands[i][0], commands[i][1][:3], reference[1][i], replies[i]),
                        len(keys), "" if not keys else " (first: %r: %r vs %r)" % (
                            keys[0], reference[2].get(keys[0]), data.get(keys[0]))))
                    sys.exit(1)
            for sha, (n, us) in per_script.items():
                acc[side][sha][0] += n
                acc[side][sha][1] += us
            if not breakdown:
                totals[side].append(total)
    print("%s replay: %d commands, %d rounds per side: the same replies and datasets "
          "(%d replies equal as JSON values, not as bytes%s)" % (
              family, len(commands), rounds, json_order[0],
              "" if family != "cacheops" else "; %d key names and set members on one side "
              "only as written, equal with their fields sorted" % field_order))
    print("%-28s %7s %10s %10s %7s" % ("script (SLOWLOG round)", "calls", "native_us", "rx_us", "ratio"))
    rows = []
    for sha, (n, us) in acc["native"].items():
        rn, rus = acc["rx"].get(sha, (0, 0))
        if n == 0 or rn == 0:
            continue
        name = scripts.get(sha, {}).get("name", sha[:12])
        rows.append((n, name, us / n, rus / rn))
    for calls, name, nus, rus in sorted(rows, reverse=True):
        print("%-28s %7d %10.2f %10.2f %6.2fx" % (name, calls, nus, rus, rus / nus))
    calls = sum(n for n, _ in acc["native"].values())
    print("%-28s %7d %10.2f %10.2f %6.2fx   (INFO commandstats, per round: native %s, rx %s us)" % (
        "total", calls, sum(totals["native"]) / rounds / calls, sum(totals["rx"]) / rounds / calls,
        sum(totals["rx"]) / sum(totals["native"]),
        "/".join(map(str, totals["native"])), "/".join(map(str, totals["rx"]))))


if __name__ == "__main__":
    main()
