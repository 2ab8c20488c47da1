#!/usr/bin/env bash
# The real-world part of `make bench`: BullMQ's scripts, native EVALSHA against RX.EVALSHA.
#
# Installs a pinned BullMQ (and the ioredis it drives) from npm into the cache (never into
# the repository), runs a queue workload against a server with RX through BullMQ's own
# client code and records the commands it sends (record.js), then replays them against
# native EVALSHA and RX.EVALSHA in one server, alternating, and prints server time per
# script and in total (replay.py). BENCH_BULLMQ_JOBS (default 2000) and
# BENCH_BULLMQ_ROUNDS (default 3) size it.
set -euo pipefail
cd "$(dirname "$0")/../.."
BULLMQ_VERSION=6.7.6
IOREDIS_VERSION=5.9.2 # the 5.x line runs on Debian 12's Node.js 18; 6.x needs Node 20
MODULE="${RX_MODULE_PATH:-$PWD/target/release/librx.so}"
SERVER="${REDIS_SERVER:-redis-server}"
JOBS="${BENCH_BULLMQ_JOBS:-2000}"
ROUNDS="${BENCH_BULLMQ_ROUNDS:-3}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/rx/bullmq-$BULLMQ_VERSION"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "bullmq: installing nodejs and npm"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d "$CACHE/node_modules/bullmq" ]; then
  mkdir -p "$CACHE"
  printf '{"private":true,"dependencies":{"bullmq":"%s","ioredis":"%s"}}\n' \
    "$BULLMQ_VERSION" "$IOREDIS_VERSION" >"$CACHE/package.json"
  (cd "$CACHE" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi

# shellcheck source=bench/server.sh
. bench/server.sh
start_server bullmq

echo "BullMQ $BULLMQ_VERSION (ioredis $IOREDIS_VERSION, Node.js $(node --version)), $JOBS jobs at concurrency 10:"
NODE_PATH="$CACHE/node_modules" node bench/bullmq/record.js "$PORT" "$JOBS" "$DIR/recording.jsonl"
python3 bench/bullmq/replay.py "$PORT" "$DIR/recording.jsonl" "$ROUNDS"
