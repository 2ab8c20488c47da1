#!/bin/sh
# The image's entry point: the server with RX loaded.
#
#   docker run rx                               a server on 6379, data in /data
#   docker run rx --port 6380 --rx.time-limit-ms 1000
#   docker run rx /etc/redis/my.conf --port 6380 a configuration file (named *.conf) first
#   docker run rx redis-cli -p 6380 PING        any other command runs as given
#
# RX_MODULE_ARGS holds the module's arguments. Without a configuration file the server
# starts with protected mode off, so clients outside the container can connect without a
# password; pass --protected-mode yes (or a password) to keep it.
set -e

server=$(command -v valkey-server || command -v redis-server || true)
if [ -z "$server" ]; then
  echo "rx-entrypoint: no valkey-server or redis-server in this image" >&2
  exit 1
fi
case "${1:-}" in
  redis-server | valkey-server) shift ;;
  '' | -*) ;;
  *.conf) ;;
  *) exec "$@" ;;
esac

conf=
case "${1:-}" in
  -* | '') ;;
  *) conf=$1; shift ;;
esac

# shellcheck disable=SC2086 # RX_MODULE_ARGS is a list of words
if [ -n "$conf" ]; then
  set -- "$conf" --loadmodule "$RX_MODULE" $RX_MODULE_ARGS "$@"
else
  set -- --protected-mode no --loadmodule "$RX_MODULE" $RX_MODULE_ARGS "$@"
fi

# Run as the server's own user when there is one, owning its data directory.
if [ "$(id -u)" = 0 ]; then
  for user in redis valkey; do
    if id "$user" >/dev/null 2>&1; then
      find . \! -user "$user" -exec chown "$user:$user" '{}' + 2>/dev/null || true
      exec setpriv --reuid="$user" --regid="$user" --init-groups "$server" "$@"
    fi
  done
fi
exec "$server" "$@"
