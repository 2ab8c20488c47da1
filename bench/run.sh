#!/usr/bin/env bash
# `make bench`: RX against native Redis Functions doing identical work in one server.
# Each case alternates native and RX runs (so machine noise hits both alike) and reports
# requests/s for each, the RX/native ratio, and server-side microseconds per call from
# INFO commandstats. Then the scale part (bench/scale.py, its own servers): 1 vs 10,000
# libraries per call, memory per library, a 1 MB library's load time and DEBUG RELOAD time
# (BENCH_SCALE=0 skips it; BENCH_SCALE_LIBS=<n> sets the count). Then the real-world part:
# BullMQ's scripts recorded and replayed through EVALSHA and RX.EVALSHA (bench/bullmq/run.sh;
# BENCH_BULLMQ=0 skips it), and django-cacheops' likewise (bench/cacheops/run.sh;
# BENCH_CACHEOPS=0 skips it). Results go to stdout and bench/results.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
MODULE="${RX_MODULE_PATH:-$PWD/target/release/librx.so}"
SERVER="${REDIS_SERVER:-redis-server}"
REQUESTS="${BENCH_REQUESTS:-100000}"
ROUNDS="${BENCH_ROUNDS:-3}"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 6390)
DIR=$(mktemp -d)
OUT=bench/results.txt

"$SERVER" --port "$PORT" --bind 127.0.0.1 --dir "$DIR" --save "" --appendonly no --daemonize yes \
  --logfile "$DIR/redis.log" --loadmodule "$MODULE" >/dev/null
trap 'redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

cli() { redis-cli -p "$PORT" "$@"; }
LIB=$(cat bench/functions.lua)
cli FUNCTION LOAD REPLACE "$LIB" >/dev/null
cli RX.LOAD REPLACE "$LIB" >/dev/null
cli SET '{b}k1' 100 >/dev/null
for k in '{b}k2' '{b}k3' '{b}k4'; do cli SET "$k" 1 >/dev/null; done

# rps <pipeline> <divisor> <command...>: requests per second from redis-benchmark.
rps() {
  local p=$1 d=$2; shift 2
  redis-benchmark -p "$PORT" -n $((REQUESTS / d)) -P "$p" -q "$@" 2>/dev/null | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1
}
# usec <command name>: server-side usec_per_call from commandstats.
usec() {
  cli INFO commandstats | tr -d '\r' | grep "^cmdstat_$1:" | sed 's/.*usec_per_call=\([0-9.]*\).*/\1/'
}

# name|arguments|request divisor (the pure-Lua cases are ~100x slower per call)
declare -a CASES=(
  "const|0|1"
  "get|1 {b}k1|1"
  "write5|4 {b}k1 {b}k2 {b}k3 {b}k4|1"
  "loop|0|10"
  "concat_table|0|20"
  "concat_dots|0|50"
  "cjson|0|50"
)

{
echo "RX vs native Redis Functions, $(cli INFO server | tr -d "\r" | grep -E "^(valkey|redis)_version:" | tail -1), $REQUESTS requests x $ROUNDS rounds per side, $(nproc) cores"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC')"
printf '%-14s %3s %14s %14s %7s %10s %10s\n' case P native_rps rx_rps ratio native_us rx_us
for p in 1 16; do
  for ping in PING "GET {b}k1"; do
    n=$(rps "$p" 1 $ping)
    printf '%-14s %3s %14s %14s %7s %10s %10s\n' "${ping%% *}(ceiling)" "$p" "$n" - - - -
  done
  for c in "${CASES[@]}"; do
    name=${c%%|*}; rest=${c#*|}; args=${rest%|*}; div=${rest##*|}
    native_total=0; rx_total=0
    cli CONFIG RESETSTAT >/dev/null
    for _ in $(seq "$ROUNDS"); do
      n=$(rps "$p" "$div" FCALL "$name" $args); r=$(rps "$p" "$div" RX.CALL "$name" $args)
      native_total=$(awk -v a="$native_total" -v b="$n" 'BEGIN{print a+b}')
      rx_total=$(awk -v a="$rx_total" -v b="$r" 'BEGIN{print a+b}')
    done
    nu=$(usec fcall); ru=$(usec rx.call)
    awk -v name="$name" -v p="$p" -v n="$native_total" -v r="$rx_total" -v k="$ROUNDS" -v nu="$nu" -v ru="$ru" \
      'BEGIN{printf "%-14s %3s %14.0f %14.0f %6.2fx %10s %10s\n", name, p, n/k, r/k, r/n, nu, ru}'
  done
  # EVALSHA against RX.EVALSHA: the same script, loaded into both caches.
  sha=$(cli SCRIPT LOAD "return redis.call('GET', KEYS[1])")
  cli RX.SCRIPT LOAD "return redis.call('GET', KEYS[1])" >/dev/null
  native_total=0; rx_total=0
  cli CONFIG RESETSTAT >/dev/null
  for _ in $(seq "$ROUNDS"); do
    n=$(rps "$p" 1 EVALSHA "$sha" 1 '{b}k1'); r=$(rps "$p" 1 RX.EVALSHA "$sha" 1 '{b}k1')
    native_total=$(awk -v a="$native_total" -v b="$n" 'BEGIN{print a+b}')
    rx_total=$(awk -v a="$rx_total" -v b="$r" 'BEGIN{print a+b}')
  done
  nu=$(usec evalsha); ru=$(usec rx.evalsha)
  awk -v p="$p" -v n="$native_total" -v r="$rx_total" -v k="$ROUNDS" -v nu="$nu" -v ru="$ru" \
    'BEGIN{printf "%-14s %3s %14.0f %14.0f %6.2fx %10s %10s\n", "evalsha_get", p, n/k, r/k, r/n, nu, ru}'
done
echo
echo "Statistics bookkeeping per call (two clock reads + counters + histogram):"
cargo test --release --quiet -p rx-core --lib stats_bookkeeping_cost -- --ignored --nocapture 2>/dev/null | grep "ns per call" || echo "  (could not run the measurement)"
if [ "${BENCH_SCALE:-1}" != 0 ]; then
  echo
  python3 bench/scale.py
fi
if [ "${BENCH_BULLMQ:-1}" != 0 ]; then
  echo
  bench/bullmq/run.sh
fi
if [ "${BENCH_CACHEOPS:-1}" != 0 ]; then
  echo
  bench/cacheops/run.sh
fi
} | tee "$OUT"
