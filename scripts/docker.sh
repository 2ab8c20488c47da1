#!/usr/bin/env bash
# RX in containers: the Docker engine, the base image and the RX image.
#
#   scripts/docker.sh engine          a Docker engine answers: installs docker.io and starts
#                                     dockerd when none does (exit 3 when that is impossible)
#   scripts/docker.sh base            the base image exists: pulled, or for Debian's
#                                     bookworm made with debootstrap when no registry answers
#   scripts/docker.sh image TAG...    builds the RX image (docker/Dockerfile) from
#                                     target/release/librx.so, tagged with every TAG
#   scripts/docker.sh clean-tests     removes containers the tests left (label rx-test=1)
#
# RX_DOCKER_BASE picks the base (default debian:bookworm-slim; redis:<version> and
# valkey/valkey:<version> work too where a registry answers). A dockerd started here has
# no bridge network (no iptables needed): containers use --network host.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${RX_DOCKER_BASE:-debian:bookworm-slim}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/rx
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

log() { echo "docker.sh: $*" >&2; }

engine() {
  if docker info >/dev/null 2>&1; then return 0; fi
  if ! command -v dockerd >/dev/null; then
    log "no Docker engine: installing docker.io"
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      docker.io >/dev/null; then
      log "cannot install docker.io"
      return 3
    fi
  fi
  if ! command -v docker >/dev/null; then
    log "docker.io installed no docker client"
    return 3
  fi
  mkdir -p "$CACHE"
  log "starting dockerd (log: $CACHE/dockerd.log)"
  # setsid: the engine outlives the make that started it.
  $SUDO setsid dockerd --iptables=false --ip-masq=false --bridge=none \
    >"$CACHE/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "dockerd did not answer within 30 s; its log ends with:"
  tail -n 20 "$CACHE/dockerd.log" >&2 || true
  return 3
}

# The Debian mirror this machine's apt uses, for debootstrap.
debian_mirror() {
  local m
  m=$(grep -rhoE '(https?://[^ ]+/debian)/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null |
    grep -v security | head -n1 | tr -d ' ' || true)
  m=${m%/}
  if [ -z "$m" ]; then
    m=$(grep -rhoE '^URIs: *https?://[^ ]+/debian/?$' /etc/apt/sources.list.d 2>/dev/null |
      head -n1 | sed 's/^URIs: *//; s:/$::' || true)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

base() {
  engine
  if docker image inspect "$BASE" >/dev/null 2>&1; then return 0; fi
  log "pulling $BASE"
  if timeout 60 docker pull -q "$BASE" >/dev/null 2>&1; then return 0; fi
  if [ "$BASE" != debian:bookworm-slim ]; then
    log "cannot pull $BASE (no registry answers?); build from a base present here"
    return 1
  fi
  if ! command -v debootstrap >/dev/null; then
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  mkdir -p "$CACHE"
  local root mirror
  root=$(mktemp -d)
  mirror=$(debian_mirror)
  log "no registry answers: making $BASE with debootstrap (minbase bookworm from $mirror, about 30 s)"
  $SUDO debootstrap --variant=minbase bookworm "$root" "$mirror" >"$CACHE/debootstrap.log" 2>&1 || {
    log "debootstrap failed; see $CACHE/debootstrap.log"
    $SUDO rm -rf "$root"
    return 1
  }
  $SUDO rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  $SUDO tar -C "$root" -c . | docker import - "$BASE" >/dev/null
  $SUDO rm -rf "$root"
  log "made $BASE"
}

image() {
  [ $# -gt 0 ] || { log "image: give at least one tag"; return 2; }
  [ -f target/release/librx.so ] || { log "build the module first (make build)"; return 1; }
  base
  local tags=()
  for t in "$@"; do tags+=(-t "$t"); done
  log "building ${*} from $BASE"
  docker build -q --network host --build-arg "BASE=$BASE" -f docker/Dockerfile "${tags[@]}" . >/dev/null
  log "built $*"
}

clean_tests() {
  local left
  left=$(docker ps -aq --filter label=rx-test=1)
  [ -z "$left" ] || docker rm -f $left >/dev/null
}

case "${1:-}" in
  engine) engine ;;
  clean-tests) clean_tests ;;
  base) base ;;
  image) shift; image "$@" ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
