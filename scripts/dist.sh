#!/usr/bin/env bash
# make dist: a release tarball in dist/ named rx-<version>-linux-<arch>-glibc<version>.tar.gz
# with librx.so and the rx deploy tool (debug info stripped), the README, the standard library's sources and
# documentation, and SHA256SUMS of those; next to it, the tarball's own .sha256. Then the
# packaged module is loaded into a redis-server, which must list it with its version.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:?usage: scripts/dist.sh VERSION}
# getconf, not `ldd --version | head`: with pipefail, head closing the pipe early is an error.
glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
name=rx-$version-linux-$(uname -m)-glibc$glibc
stage=dist/$name
rm -rf "$stage" "dist/$name.tar.gz" "dist/$name.tar.gz.sha256"
mkdir -p "$stage/stdlib"
objcopy --strip-debug target/release/librx.so "$stage/librx.so"
objcopy --strip-debug target/release/rx "$stage/rx"
cp README.md "$stage/"
cp lua-stdlib/README.md lua-stdlib/*.lua "$stage/stdlib/"
(cd "$stage" && find . -type f ! -name SHA256SUMS | sort | sed 's|^\./||' | xargs sha256sum >SHA256SUMS)
tar -C dist -czf "dist/$name.tar.gz" "$name"
(cd dist && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
rm -rf "$stage"

# The packaged module loads and says its version (MODULE LIST: 1.2.3 is 10203).
check=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$check"' EXIT
tar -C "$check" -xzf "dist/$name.tar.gz"
(cd "$check/$name" && sha256sum --quiet -c SHA256SUMS)
IFS=. read -r major minor patch <<<"${version%%[-+]*}"
expected=$((major * 10000 + minor * 100 + patch))
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --dir "$check" \
  --loadmodule "$check/$name/librx.so" >"$check/server.log" 2>&1 &
pid=$!
up=
for _ in $(seq 1 50); do
  if redis-cli -p "$port" PING >/dev/null 2>&1; then up=1; break; fi
  sleep 0.1
done
if [ -z "$up" ]; then
  echo "dist: a redis-server with the packaged module did not start; its log:" >&2
  cat "$check/server.log" >&2
  exit 1
fi
listed=$(redis-cli -p "$port" MODULE LIST | paste -sd' ')
case "$listed" in
  *"name rx ver $expected "*) ;;
  *) echo "dist: the packaged module does not list as rx version $expected: $listed" >&2; exit 1 ;;
esac
echo "dist/$name.tar.gz ($(du -h "dist/$name.tar.gz" | cut -f1)): $listed"
cat "dist/$name.tar.gz.sha256"
