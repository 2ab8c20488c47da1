# Sourced by the real-world benchmarks (bench/bullmq/run.sh, bench/cacheops/run.sh):
# `start_server <name>` starts one server with RX ($SERVER, $MODULE, `stdlib none`) on a
# free loopback port in a temporary directory, sets PORT and DIR, and stops it and removes
# the directory on exit; if it does not answer within 5 s, prints its log and exits 1.
start_server() {
  local name=$1 up=
  DIR=$(mktemp -d)
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$SERVER" --port "$PORT" --bind 127.0.0.1 --dir "$DIR" --save "" --appendonly no --daemonize yes \
    --logfile "$DIR/redis.log" --loadmodule "$MODULE" stdlib none ${RX_BENCH_MODULE_ARGS:-} >/dev/null
  trap 'redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
  for _ in $(seq 50); do
    if redis-cli -p "$PORT" ping >/dev/null 2>&1; then up=1; break; fi
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "$name: the server did not start; its log:" >&2
    cat "$DIR/redis.log" >&2
    exit 1
  fi
}
