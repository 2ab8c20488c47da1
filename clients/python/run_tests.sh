#!/usr/bin/env bash
# Tests of the Python client (rx_redis) against real redis-server processes with RX.
#
# On a fresh Debian 12 machine: installs the Debian packages that are missing (as the
# Makefile's deps target does), builds the module with `make build` unless it exists,
# creates a venv with --system-site-packages (Debian's python3-redis and pytest serve it)
# in a temporary directory, installs the package into it without network
# (--no-build-isolation --no-index) and runs the tests with pytest.
#
#   RX_MODULE_PATH   the module to load (default: <repo>/target/release/librx.so)
#   REDIS_SERVER     the server binary (default: redis-server on PATH)
#   PYTHON           the interpreter for the venv (default: /usr/bin/python3, Debian's)
#   arguments        passed to pytest, e.g. clients/python/run_tests.sh -k cluster -v
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

packages="redis-server redis-tools python3 python3-venv python3-pip python3-redis python3-pytest"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

if [ -z "${RX_MODULE_PATH:-}" ]; then
  export RX_MODULE_PATH="$repo/target/release/librx.so"
  [ -f "$RX_MODULE_PATH" ] || make -C "$repo" build
fi
[ -f "$RX_MODULE_PATH" ] || { echo "run_tests.sh: no module at $RX_MODULE_PATH" >&2; exit 1; }

python="${PYTHON:-/usr/bin/python3}"
[ -x "$python" ] || python="$(command -v python3)"

venv="$(mktemp -d "${TMPDIR:-/tmp}/rx-py-venv.XXXXXX")"
trap 'rm -rf "$venv"' EXIT
"$python" -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet --no-build-isolation --no-index "$here"

cd "$here"
"$venv/bin/python" - <<'EOF'
import os, redis, rx_redis
print(f"rx_redis {rx_redis.__version__} from {os.path.dirname(rx_redis.__file__)}; redis-py {redis.__version__}")
EOF
echo "module: $RX_MODULE_PATH; server: ${REDIS_SERVER:-$(command -v redis-server)}"
"$venv/bin/python" -m pytest -p no:cacheprovider "$here/tests" "$@"
