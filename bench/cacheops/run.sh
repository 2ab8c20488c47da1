#!/usr/bin/env bash
# The second real-world part of `make bench`: django-cacheops' scripts, native EVALSHA
# against RX.EVALSHA. Unlike BullMQ's, they cjson.decode their arguments and build key
# names from what they decoded.
#
# Installs a pinned django-cacheops (with the Django, redis-py and funcy it runs on) from
# PyPI into a virtualenv in the cache (never into the repository), runs a Django workload
# with cacheops against a server with RX and records the commands redis-py sends
# (record.py), then replays them against native EVALSHA and RX.EVALSHA in one server,
# alternating, and prints server time per script and in total (the BullMQ replay.py).
# BENCH_CACHEOPS_OPS (default 3000) and BENCH_CACHEOPS_ROUNDS (default 3) size it.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHEOPS_VERSION=7.2
# Django 4.2 LTS runs on Debian 12's Python 3.11; the others are the versions cacheops 7.2
# and that Django resolve to, pinned so every run installs the same code.
PACKAGES=(
  "django-cacheops==$CACHEOPS_VERSION"
  "Django==4.2.30" "asgiref==3.8.1" "sqlparse==0.5.3"
  "redis==5.2.1" "async-timeout==5.0.1" # redis-py needs async-timeout on Python < 3.11.3 (Debian 12 has 3.11.2)
  "funcy==2.0"
)
MODULE="${RX_MODULE_PATH:-$PWD/target/release/librx.so}"
SERVER="${REDIS_SERVER:-redis-server}"
OPS="${BENCH_CACHEOPS_OPS:-3000}"
ROUNDS="${BENCH_CACHEOPS_ROUNDS:-3}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/rx/cacheops-$CACHEOPS_VERSION"
# The recorder imports the blog app from the repository: no __pycache__ left in it.
export PYTHONDONTWRITEBYTECODE=1

# Debian's python3 leaves ensurepip (which venv needs) to the python3-venv package.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "cacheops: installing python3-venv"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
# The marker holds the pins it was installed with: another pin list reinstalls, and an
# install that stopped halfway (no marker) starts over.
if [ "$(cat "$CACHE/installed" 2>/dev/null)" != "${PACKAGES[*]}" ]; then
  rm -rf "$CACHE"
  mkdir -p "$(dirname "$CACHE")"
  python3 -m venv "$CACHE"
  "$CACHE/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "${PACKAGES[@]}"
  echo "${PACKAGES[*]}" >"$CACHE/installed"
fi

# shellcheck source=bench/server.sh
. bench/server.sh
start_server cacheops

echo "django-cacheops $CACHEOPS_VERSION (Django 4.2.30, redis-py 5.2.1, $("$CACHE/bin/python" --version)), $OPS operations:"
# A fixed hash seed: the order of the fields in the JSON cacheops sends follows Python's
# set order, which the seed changes from run to run (except where a field is None, whose
# hash is its address before Python 3.12).
PYTHONHASHSEED=0 "$CACHE/bin/python" bench/cacheops/record.py "$PORT" "$OPS" "$DIR/recording.jsonl"
python3 bench/bullmq/replay.py --family cacheops "$PORT" "$DIR/recording.jsonl" "$ROUNDS"
