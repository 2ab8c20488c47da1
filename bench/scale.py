#!/usr/bin/env python3
"""`make bench`, scale part: RX against native Redis Functions with many libraries.

Run by bench/run.sh (or alone: python3 bench/scale.py). Measures, on Debian's redis-server:
  1. time per call with 1 library loaded and with N (default 10,000) small libraries
     loaded, for FCALL and RX.CALL, calling a function in the first library and one in
     the last one loaded. Two servers run side by side (1 library / N libraries) and the
     runs alternate between them, so machine noise hits both alike;
  2. used_memory growth per 1,000 small libraries, native and RX, after a full Lua GC;
  3. FUNCTION LOAD and RX.LOAD time for a 1 MB library (median);
  4. DEBUG RELOAD time with N libraries in native only and in RX only, and with none.
First a probe loads N libraries into each engine: if one refuses before N, the run says so
loudly, measures at the largest multiple of 500 it accepts, and exits with status 1 at the
end (so `make bench` fails, with every number still written).
Only the standard library (plain sockets, subprocess) is used. Every server this starts is
stopped by its PID on exit, and its temporary directory removed.

Environment: RX_MODULE_PATH, REDIS_SERVER, BENCH_SCALE_LIBS (10000), BENCH_SCALE_REQUESTS
(200000), BENCH_SCALE_ROUNDS (5), BENCH_SCALE_PIPELINE (16), BENCH_SCALE_LOAD_RUNS (5).
"""

import csv
import io
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.environ.get("RX_MODULE_PATH", os.path.join(ROOT, "target/release/librx.so"))
SERVER = os.environ.get("REDIS_SERVER", "redis-server")
LIBS = int(os.environ.get("BENCH_SCALE_LIBS", "10000"))
REQUESTS = int(os.environ.get("BENCH_SCALE_REQUESTS", "200000"))
ROUNDS = int(os.environ.get("BENCH_SCALE_ROUNDS", "7"))
PIPELINE = int(os.environ.get("BENCH_SCALE_PIPELINE", "16"))
LOAD_RUNS = int(os.environ.get("BENCH_SCALE_LOAD_RUNS", "5"))


class Fail(Exception):
    pass


# ---------------------------------------------------------------- a minimal RESP2 client

def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class ReplyError(Exception):
    pass


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0

    def close(self):
        self.sock.close()

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise Fail("server closed the connection")
        if self.pos > (1 << 20):
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                line = bytes(self.buf[self.pos : i])
                self.pos = i + 2
                return line
            self._fill()

    def _exact(self, n):
        while len(self.buf) - self.pos < n + 2:
            self._fill()
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n + 2
        return data

    def read(self):
        """One reply; an error reply is returned as a ReplyError instance (not raised)."""
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest
        if t == b"-":
            return ReplyError(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise Fail("unexpected reply type %r" % line[:40])

    def call(self, *args):
        self.sock.sendall(encode(args))
        r = self.read()
        if isinstance(r, ReplyError):
            raise Fail("%s: %s" % (" ".join(str(a)[:40] for a in args[:2]), r))
        return r

    def pipeline(self, commands, batch=500):
        """Sends commands in batches, returns every reply in order."""
        replies = []
        for start in range(0, len(commands), batch):
            part = commands[start : start + batch]
            self.sock.sendall(b"".join(encode(c) for c in part))
            replies.extend(self.read() for _ in part)
        return replies

    def info(self, section):
        text = self.call("INFO", section).decode()
        out = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out


# ---------------------------------------------------------------- servers

SERVERS = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, label):
        self.dir = tempfile.mkdtemp(prefix="rx-scale-")
        self.port = free_port()
        self.label = label
        self.proc = subprocess.Popen(
            [SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no", "--logfile", os.path.join(self.dir, "redis.log"),
             "--enable-debug-command", "yes",
             "--loadmodule", MODULE, "stdlib", "none"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        SERVERS.append(self)
        deadline = time.time() + 10
        while True:
            try:
                self.c = Client(self.port)
                self.c.call("PING")
                break
            except (OSError, Fail):
                if self.proc.poll() is not None or time.time() > deadline:
                    raise Fail("%s: redis-server did not start; log:\n%s" % (label, self.log()))
                time.sleep(0.05)

    def log(self):
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def stop_all():
    while SERVERS:
        SERVERS.pop().stop()


# ---------------------------------------------------------------- libraries

# Loaded first into both engines: the thin functions the per-call cases use, and a full GC
# so that memory is read without garbage in either VM.
SCALE_LIB = """#!lua name=scale
redis.register_function('const', function() return 1 end)
redis.register_function('const2', function(keys, args) return 1 end)
redis.register_function{function_name = 'get', callback = function(keys) return redis.call('GET', keys[1]) end, flags = {'no-writes'}}
redis.register_function('gcnow', function()
  collectgarbage('collect')
  collectgarbage('collect')
  return math.floor(collectgarbage('count') * 1024)
end)
"""


def small_lib(i):
    return ("#!lua name=lib%d\n"
            "redis.register_function('f%d', function(keys, args) return %d end)\n" % (i, i, i))


def big_lib():
    """About 1 MB of realistic-ish Lua: a product catalogue as a table literal, a price
    rule set as many small local functions collected into a table, and one function."""
    out = ["#!lua name=big\n", "local catalogue = {\n"]
    size = 0
    i = 0
    while size < 850_000:
        i += 1
        row = ("  ['sku%06d'] = {name = 'Product %d', price = %d.%02d, stock = %d, "
               "tags = {'cat%d', 'brand%d'}, active = %s},\n"
               % (i, i, i % 997, i % 100, (i * 37) % 1000, i % 50, i % 20,
                  "true" if i % 3 else "false"))
        out.append(row)
        size += len(row)
    out.append("}\n")
    # Lua allows 200 locals per function: group the rule functions in blocks.
    out.append("local rules = {}\n")
    r = 0
    while size < 1_040_000:
        out.append("do\n")
        for _ in range(50):
            r += 1
            fn = ("  local function rule%d(p, q)\n"
                  "    if q > %d then return p * %d / 100 end\n"
                  "    return p\n"
                  "  end\n"
                  "  rules[%d] = rule%d\n" % (r, r % 10 + 1, 100 - r % 30, r, r))
            out.append(fn)
            size += len(fn)
        out.append("end\n")
    out.append(
        "redis.register_function('big_price', function(keys, args)\n"
        "  local item = catalogue[args[1]]\n"
        "  if not item then return redis.error_reply('no such sku') end\n"
        "  local rule = rules[tonumber(args[2]) or 1]\n"
        "  return tostring(rule(item.price, tonumber(args[3]) or 1))\n"
        "end)\n")
    return "".join(out)


def count_native(c):
    # FUNCTION STATS: running_script, nil, engines, [LUA, [libraries_count, n, functions_count, m]]
    stats = c.call("FUNCTION", "STATS")
    engines = dict(zip(stats[0::2], stats[1::2]))[b"engines"]
    lua = dict(zip(engines[0::2], engines[1::2])).get(b"LUA", [])
    return dict(zip(lua[0::2], lua[1::2])).get(b"libraries_count", 0)


def count_rx(c):
    return int(c.info("rx")["rx_libraries"])


def try_load_many(c, engine, n):
    """Loads lib1..libn into one engine (pipelined). Returns the time taken in seconds and
    the first failure as (index, reply), or None."""
    cmd = ("FUNCTION", "LOAD") if engine == "native" else ("RX.LOAD",)
    commands = [cmd + (small_lib(i),) for i in range(1, n + 1)]
    started = time.perf_counter()
    replies = c.pipeline(commands)
    took = time.perf_counter() - started
    bad = [(i + 1, r) for i, r in enumerate(replies) if r != b"lib%d" % (i + 1)]
    return took, (bad[0] if bad else None)


def load_many(c, engine, n):
    """As try_load_many, but fails loudly on any error reply."""
    took, bad = try_load_many(c, engine, n)
    if bad:
        raise Fail("%s: loading %d libraries failed at lib%d: %s" % (engine, n, bad[0], bad[1]))
    return took


def probe(out):
    """How many small libraries each engine accepts, up to LIBS (beside the scale library).
    Returns the count the rest of the run uses, and a limit message (or None)."""
    s = Server("probe")
    try:
        limit = None
        for engine in ("native", "rx"):
            s.c.call("FUNCTION", "LOAD", SCALE_LIB) if engine == "native" else s.c.call("RX.LOAD", SCALE_LIB)
            _, bad = try_load_many(s.c, engine, LIBS)
            if bad:
                limit = (engine, bad[0] - 1, bad[1])
                break
    finally:
        s.stop()
        SERVERS.remove(s)
    if limit is None:
        return LIBS, None
    engine, held, error = limit
    n = max(500, (held - 10) // 500 * 500)
    message = ("%s LIMIT: with the scale library loaded, %s accepts only %d small libraries of %d: library %d got '%s'"
               % (engine.upper(), engine, held, LIBS, held + 1, error))
    out(message)
    out("Measuring at %d libraries instead (set BENCH_SCALE_LIBS to choose); this run will exit with status 1." % n)
    out("")
    return n, message


# ---------------------------------------------------------------- measurements

def rps(port, *command):
    argv = (["redis-benchmark", "-p", str(port), "-n", str(REQUESTS), "-P", str(PIPELINE), "--csv"]
            + [str(a) for a in command])
    for attempt in range(3):
        run = subprocess.run(argv, capture_output=True, text=True)
        # On a shared machine something else may signal it: run it again (a failure exit
        # is a real error and is not retried).
        if run.returncode >= 0 or attempt == 2:
            break
        print("(redis-benchmark killed by signal %d; running it again)" % -run.returncode, file=sys.stderr)
    if run.returncode != 0:
        raise Fail("redis-benchmark %s exited with %d: %s" % (" ".join(argv[7:]), run.returncode, run.stderr[-500:]))
    out = run.stdout
    rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]
    if not rows:
        raise Fail("redis-benchmark printed nothing for %s" % " ".join(map(str, command)))
    return float(rows[-1][1])


def usec_per_call(c, name):
    line = c.info("commandstats").get("cmdstat_" + name)
    if line is None:
        raise Fail("no commandstats for %s" % name)
    fields = dict(kv.split("=") for kv in line.split(","))
    if int(fields.get("failed_calls", 0)) or int(fields.get("rejected_calls", 0)):
        raise Fail("%s: calls failed during the benchmark: %s" % (name, line))
    return float(fields["usec_per_call"])


def pct(new, old):
    return (new / old - 1.0) * 100.0


def per_call(out):
    one = Server("1 library")
    many = Server("%d libraries" % LIBS)
    for s in (one, many):
        s.c.call("FUNCTION", "LOAD", SCALE_LIB)
        s.c.call("RX.LOAD", SCALE_LIB)
        s.c.call("SET", "k1", "100")
    load_s = {e: load_many(many.c, e, LIBS) for e in ("native", "rx")}
    if count_native(many.c) != LIBS + 1 or count_rx(many.c) != LIBS + 1:
        raise Fail("expected %d libraries in each engine" % (LIBS + 1))
    # Functions in the first library loaded, and one in the last. RX builds KEYS and ARGV
    # only for functions that declare them: `const` (no parameters) leaves no garbage, `get`
    # (keys) and the small libraries' `f<i>(keys, args)` do, and pay for collection cycles
    # that walk every loaded library.
    cases = [("const (first lib)", "const", "0"), ("get (first lib)", "get", "1 k1"),
             ("const2 (last lib)", "f%d" % LIBS, "0")]
    engines = [("native", "FCALL", "fcall"), ("rx", "RX.CALL", "rx.call")]
    results = {}
    for label, fn, args in cases:
        rps_sum, usec = {}, {}
        for _ in range(ROUNDS):
            for s in (one, many):
                s.c.call("CONFIG", "RESETSTAT")
                # The last library's function exists only with N loaded: with 1 library the
                # same body and parameters are `const2`.
                f = fn if (s is many or not fn.startswith("f")) else "const2"
                for engine, command, stat in engines:
                    key = (engine, s is many)
                    rps_sum[key] = rps_sum.get(key, 0.0) + rps(s.port, command, f, *args.split())
                    usec.setdefault(key, []).append(usec_per_call(s.c, stat))
        for engine, _, _ in engines:
            results[(label, engine)] = (
                rps_sum[(engine, False)] / ROUNDS, rps_sum[(engine, True)] / ROUNDS,
                statistics.median(usec[(engine, False)]), statistics.median(usec[(engine, True)]),
                min(usec[(engine, False)]), min(usec[(engine, True)]))
    many.c.call("FUNCTION", "FLUSH")
    many.c.call("RX.FLUSH")
    many.stop()
    SERVERS.remove(many)
    one.stop()
    SERVERS.remove(one)

    out("Per call with 1 library loaded and with %d (P=%d, %d requests x %d rounds, alternating servers;"
        % (LIBS, PIPELINE, REQUESTS, ROUNDS))
    out("rps = mean over rounds; us = median over rounds of the server-side usec_per_call from INFO")
    out("commandstats, and its minimum (the least disturbed round: on a shared 2-core machine the")
    out("medians of identical runs differ by up to 30%); 'last lib' with 1 library loaded calls const2,")
    out("the same function)")
    out("%-18s %-6s %10s %10s %8s %7s %7s %8s %7s | %7s %7s %8s" % (
        "case", "engine", "rps@1", "rps@%d" % LIBS, "change", "us@1", "us@%d" % LIBS, "change", "+us",
        "min@1", "min@%d" % LIBS, "change"))
    worst = {}
    for label, _, _ in cases:
        for engine, _, _ in engines:
            r1, rn, u1, un, m1, mn = results[(label, engine)]
            out("%-18s %-6s %10.0f %10.0f %7.1f%% %7.2f %7.2f %7.1f%% %+7.2f | %7.2f %7.2f %7.1f%%"
                % (label, engine, r1, rn, pct(rn, r1), u1, un, pct(un, u1), un - u1, m1, mn, pct(mn, m1)))
            median_worst, min_worst = worst.get(engine, (-1e9, -1e9))
            worst[engine] = (max(median_worst, pct(un, u1)), max(min_worst, pct(mn, m1)))
    out("Loading %d libraries, pipelined: native %.2f s (%.0f/s), rx %.2f s (%.0f/s)"
        % (LIBS, load_s["native"], LIBS / load_s["native"], load_s["rx"], LIBS / load_s["rx"]))
    return worst


def settle(c, engine):
    """A full Lua GC in the engine measured, then a couple of reads until used_memory is steady."""
    fcall = "FCALL" if engine == "native" else "RX.CALL"
    c.call(fcall, "gcnow", "0")
    c.call(fcall, "gcnow", "0")
    last = None
    for _ in range(5):
        mem = c.info("memory")
        used = int(mem["used_memory"])
        if used == last:
            break
        last = used
        time.sleep(0.05)
    rx = c.info("rx")
    return {"used": used, "vm_functions": int(mem["used_memory_vm_functions"]),
            "functions": int(mem["used_memory_functions"]), "rx_vm": int(rx["rx_vm_memory_bytes"])}


def timed(c, *command):
    started = time.perf_counter()
    c.call(*command)
    return (time.perf_counter() - started) * 1000.0


def memory_and_reload(out):
    s = Server("memory")
    c = s.c
    c.call("FUNCTION", "LOAD", SCALE_LIB)
    c.call("RX.LOAD", SCALE_LIB)
    reload_ms = {"none": statistics.median(timed(c, "DEBUG", "RELOAD") for _ in range(3))}
    mem = {}
    for engine in ("native", "rx"):
        before = settle(c, engine)
        load_many(c, engine, LIBS)
        after = settle(c, engine)
        mem[engine] = (before, after)
        runs = []
        for _ in range(3):
            runs.append(timed(c, "DEBUG", "RELOAD"))
            got = count_native(c) if engine == "native" else count_rx(c)
            if got != LIBS + 1:
                raise Fail("after DEBUG RELOAD the %s engine holds %d libraries, expected %d"
                           % (engine, got, LIBS + 1))
            if c.call("FCALL" if engine == "native" else "RX.CALL", "f%d" % LIBS, "0") != LIBS:
                raise Fail("%s: f%d does not answer after DEBUG RELOAD" % (engine, LIBS))
        reload_ms[engine] = statistics.median(runs)
        # Back to only the scale library in this engine.
        if engine == "native":
            c.call("FUNCTION", "FLUSH")
            c.call("FUNCTION", "LOAD", SCALE_LIB)
        else:
            c.call("RX.FLUSH")
            c.call("RX.LOAD", SCALE_LIB)
    s.stop()
    SERVERS.remove(s)

    nb, na = mem["native"]
    rb, ra = mem["rx"]
    native_heap = na["used"] - nb["used"]
    native_vm = na["vm_functions"] - nb["vm_functions"]
    native_total = native_heap + native_vm
    rx_heap = ra["used"] - rb["used"]
    rx_vm = ra["rx_vm"] - rb["rx_vm"]
    rx_total = rx_heap + rx_vm
    per = lambda b: b / LIBS
    out("")
    out("Memory for %d small libraries (1 function each), after a full Lua GC in the engine measured:"
        % LIBS)
    out("%-8s %14s %14s %14s %12s %14s" % ("engine", "used_memory+", "lua_vm+", "total+", "bytes/lib",
                                          "per 1000 libs"))
    out("%-8s %14d %14d %14d %12.0f %11.0f KB" % ("native", native_heap, native_vm, native_total,
                                                  per(native_total), per(native_total) * 1000 / 1024))
    out("%-8s %14d %14d %14d %12.0f %11.0f KB" % ("rx", rx_heap, rx_vm, rx_total, per(rx_total),
                                                  per(rx_total) * 1000 / 1024))
    out("  native: used_memory+ excludes its Lua VM (used_memory_vm_functions, libc malloc), so total = both;")
    out("          of used_memory+, used_memory_functions grew by %d" % (na["functions"] - nb["functions"]))
    out("  rx:     likewise: its VM allocates with libc malloc outside used_memory (crates/rx-lua/src/")
    out("          vm_memory.rs); lua_vm+ = INFO rx rx_vm_memory_bytes growth, so total = both")
    out("  per library outside the Lua VM: native %.0f B, rx %.0f B; inside: native %.0f B, rx %.0f B"
        % (per(native_heap), per(rx_heap), per(native_vm), per(rx_vm)))
    ratio = rx_total / native_total
    out("  rx/native per library: %.2fx" % ratio)
    out("")
    out("DEBUG RELOAD (save + load the RDB), median of 3 each:")
    out("  scale library only (baseline)     %9.1f ms" % reload_ms["none"])
    out("  + %d libraries in native only  %9.1f ms" % (LIBS, reload_ms["native"]))
    out("  + %d libraries in RX only      %9.1f ms  (rx/native %.2fx)"
        % (LIBS, reload_ms["rx"], reload_ms["rx"] / reload_ms["native"]))
    out("  after each reload: %d libraries in the engine, and f%d answers" % (LIBS + 1, LIBS))
    return ratio


def big_load(out):
    s = Server("1 MB library")
    c = s.c
    code = big_lib()
    times = {}
    usec = {}
    for engine, cmd, stat in (("native", ("FUNCTION", "LOAD", "REPLACE"), "function|load"),
                              ("rx", ("RX.LOAD", "REPLACE"), "rx.load")):
        c.call("CONFIG", "RESETSTAT")
        times[engine] = statistics.median(timed(c, *cmd, code) for _ in range(LOAD_RUNS))
        usec[engine] = usec_per_call(c, stat)
    native = c.call("FCALL", "big_price", "0", "sku000042", "7", "20")
    rx = c.call("RX.CALL", "big_price", "0", "sku000042", "7", "20")
    if native != rx:
        raise Fail("big library: native %r, rx %r" % (native, rx))
    s.stop()
    SERVERS.remove(s)
    out("")
    out("Loading a %.2f MB library (%d lines; REPLACE, median of %d; server = usec_per_call):"
        % (len(code) / 1e6, code.count("\n"), LOAD_RUNS))
    out("  FUNCTION LOAD %8.1f ms   (server %8.1f ms)" % (times["native"], usec["native"] / 1000))
    out("  RX.LOAD       %8.1f ms   (server %8.1f ms)   rx/native %.2fx"
        % (times["rx"], usec["rx"] / 1000, times["rx"] / times["native"]))


def main():
    lines = []

    def out(text=""):
        print(text, flush=True)
        lines.append(text)

    global LIBS
    started = time.time()
    out("Scale: %d small libraries, stdlib none" % LIBS)
    try:
        LIBS, limit = probe(out)
        worst = per_call(out)
        ratio = memory_and_reload(out)
        big_load(out)
    finally:
        stop_all()
    out("")
    out("Targets: %d libraries cost under 5%% per call vs 1 (worst case, by median / by minimum):"
        % LIBS)
    out("         native %+.1f%% / %+.1f%%, rx %+.1f%% / %+.1f%% -> %s" % (
        worst["native"] + worst["rx"] + ("met" if worst["rx"][0] < 5 else
                                          "met by minimum only" if worst["rx"][1] < 5 else "NOT met",)))
    out("         memory per library no more than native's: rx/native %.2fx -> %s"
        % (ratio, "met" if ratio <= 1.0 else "NOT met"))
    if limit:
        out("         FAILED: " + limit)
    out("(scale part took %.0f s)" % (time.time() - started))
    return 1 if limit else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        sys.exit(main())
    except Fail as e:
        print("scale bench FAILED: %s" % e, file=sys.stderr)
        stop_all()
        sys.exit(1)
