#!/usr/bin/env bash
# Instructions per call, native FCALL against RX.CALL, counted by valgrind's callgrind: a
# stable comparison on a noisy machine (timings vary by 10-20% between runs here; these
# counts by well under 1%).
#
#   bench/callgrind.sh [case...]      cases of bench/functions.lua (default: const get write5)
#
# For each case and side, a server runs under callgrind twice, once with CALLS calls
# (default 5000) and once with none; the difference divided by CALLS is the cost of one
# call inside the server, reading the request and writing the reply included. The server
# runs with hz 1: its timers count too, and they run for as long as the (slow) run lasts.
# RX_MODULE_PATH and REDIS_SERVER pick the module and the server.
set -euo pipefail
cd "$(dirname "$0")/.."
MODULE="${RX_MODULE_PATH:-$PWD/target/release/librx.so}"
SERVER="${REDIS_SERVER:-redis-server}"
CALLS="${CALLS:-5000}"
command -v valgrind >/dev/null || {
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
}
[ $# -gt 0 ] || set -- const get write5
LIB=$(cat bench/functions.lua)
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT

# Total instructions of one server life: start, load the library, `calls` calls, shut down.
count() { # command case calls
  local cmd=$1 case=$2 calls=$3 out=$DIR/cg.$RANDOM port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  valgrind --tool=callgrind --callgrind-out-file="$out" "$SERVER" --port "$port" \
    --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" --hz 1 --loadmodule "$MODULE" \
    stdlib none >"$DIR/server.log" 2>&1 &
  local pid=$! up=
  for _ in $(seq 1 600); do
    if redis-cli -p "$port" PING >/dev/null 2>&1; then up=1; break; fi
    sleep 0.1
  done
  [ -n "$up" ] || { echo "callgrind.sh: the server did not start; its log:" >&2; cat "$DIR/server.log" >&2; exit 1; }
  redis-cli -p "$port" FUNCTION LOAD "$LIB" >/dev/null
  redis-cli -p "$port" RX.LOAD "$LIB" >/dev/null
  redis-cli -p "$port" MSET k1 1 k2 2 k3 3 k4 4 >/dev/null
  if [ "$calls" -gt 0 ]; then
    for _ in $(seq 1 "$calls"); do echo "$cmd $case 4 k1 k2 k3 k4"; done |
      redis-cli -p "$port" >/dev/null
  fi
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$pid" || true
  awk '/^(summary|totals): / { print $2; exit }' "$out"
}

echo "instructions per call (callgrind), $CALLS calls, $("$SERVER" --version | awk '{print $3}')"
printf '%-14s %12s %12s %8s\n' case native rx ratio
for c in "$@"; do
  n0=$(count FCALL "$c" 0); n1=$(count FCALL "$c" "$CALLS")
  r0=$(count RX.CALL "$c" 0); r1=$(count RX.CALL "$c" "$CALLS")
  native=$(((n1 - n0) / CALLS)); rx=$(((r1 - r0) / CALLS))
  awk -v c="$c" -v n="$native" -v r="$rx" 'BEGIN { printf "%-14s %12d %12d %7.2fx\n", c, n, r, r / n }'
done
