#!/usr/bin/env bash
# Brings up the compose files with the rx:latest image (make docker) and checks them:
#   docker/compose.yml          one server: a library loads and answers;
#   docker/compose.cluster.yml  3 primaries and 3 replicas: the cluster forms, and a library
#                               loaded on one node reaches all six by itself.
# Free ports are picked on loopback; everything is taken down (volumes too) at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/docker.sh engine
COMPOSE=${COMPOSE:-docker-compose}
CLI=${CLI:-redis-cli}
PROJECT=rxtest$$
log() { echo "test-compose: $*"; }
fail() {
  log "FAIL: $*"
  # What the cluster's set-up said, and what the first node sees, while they still exist.
  if [ -n "${ports:-}" ]; then
    "$COMPOSE" -p "$PROJECT-cluster" -f docker/compose.cluster.yml ps 2>&1 || true
    "$COMPOSE" -p "$PROJECT-cluster" -f docker/compose.cluster.yml logs --no-color --tail 8 2>&1 || true
    "$CLI" -p "${ports[0]}" CLUSTER NODES 2>&1 || true
  fi
  exit 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# N free ports whose cluster bus ports (+10000) are free too, from a random start below
# Linux's ephemeral range (32768 and up), where an outgoing connection could take a port
# between this check and the node's bind.
free_ports() {
  local n=$1 p=$((10000 + RANDOM % 12000)) out=()
  while [ ${#out[@]} -lt "$n" ]; do
    if port_free "$p" && port_free $((p + 10000)); then out+=("$p"); fi
    p=$((p + 1))
  done
  echo "${out[@]}"
}

wait_for() { # what timeout_s command...
  local what=$1 t=$2; shift 2
  local deadline=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out after ${t}s waiting for $what"
    sleep 0.2
  done
}

down() { "$COMPOSE" -p "$PROJECT-$1" -f "docker/compose$2.yml" down -v >/dev/null 2>&1 || true; }
trap 'down single ""; down cluster .cluster' EXIT

LIB='#!lua name=composed
redis.register_function{function_name = "hello", flags = {"no-writes"},
  callback = function(keys, args) return "hello " .. args[1] end}'

# --- one server ---
read -r port < <(free_ports 1)
log "one server on port $port"
RX_PORT=$port "$COMPOSE" -p "$PROJECT-single" -f docker/compose.yml up -d
wait_for "the server on $port" 30 "$CLI" -p "$port" PING
[ "$("$CLI" -p "$port" RX.LOAD "$LIB")" = composed ] || fail "RX.LOAD"
[ "$("$CLI" -p "$port" RX.CALL hello 0 compose)" = "hello compose" ] || fail "RX.CALL"
"$CLI" -p "$port" MODULE LIST | tr '\n' ' '; echo
down single ""
log "one server: ok"

# --- the cluster ---
read -r -a ports < <(free_ports 6)
log "cluster on ports ${ports[*]}"
env_ports=()
for i in 1 2 3 4 5 6; do env_ports+=("RX_NODE${i}_PORT=${ports[$((i - 1))]}"); done
env "${env_ports[@]}" "$COMPOSE" -p "$PROJECT-cluster" -f docker/compose.cluster.yml up -d
cluster_ok() {
  for p in "${ports[@]}"; do
    "$CLI" -p "$p" CLUSTER INFO | grep -q '^cluster_state:ok' || return 1
    [ "$("$CLI" -p "$p" CLUSTER INFO | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')" = 6 ] || return 1
    [ "$("$CLI" -p "$p" CLUSTER NODES | grep -c slave)" = 3 ] || return 1
  done
}
wait_for "cluster_state:ok and 3 replicas on all six nodes" 60 cluster_ok
log "the cluster formed:"
"$CLI" -p "${ports[0]}" CLUSTER NODES | awk '{print "  " $2, $3}'
t0=$(date +%s%N)
[ "$("$CLI" -p "${ports[0]}" RX.LOAD "$LIB")" = composed ] || fail "RX.LOAD on the first node"
everywhere() {
  for p in "${ports[@]}"; do
    "$CLI" -p "$p" RX.LIST LIBRARYNAME composed | grep -q '^composed$' || return 1
  done
}
wait_for "the library on all six nodes" 10 everywhere
log "the library loaded on ${ports[0]} is on all six nodes after $((($(date +%s%N) - t0) / 1000000)) ms"
for p in "${ports[@]}"; do
  r=$("$CLI" -p "$p" RX.CALL_RO hello 0 "node $p")
  [ "$r" = "hello node $p" ] || fail "RX.CALL on $p: $r"
  echo "  $p: $("$CLI" -p "$p" INFO replication | tr -d '\r' | sed -n 's/^role://p'), RX.CALL_RO -> $r"
done
"$CLI" -p "${ports[0]}" RX.CLUSTER STATUS | sed -n 1,12p | paste -sd' '
down cluster .cluster
log "cluster: ok"
