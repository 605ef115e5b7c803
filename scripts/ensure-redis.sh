#!/usr/bin/env bash
# Prints the path of a redis-server executable for the fleet rate-limit tests, installing one first on
# a machine that has none. Debian's redis-tools package carries the server binary (as
# redis-check-rdb, which acts as the server when called redis-server); installing it rather than the
# redis-server package starts no system service. The tests start and stop their own servers, on
# loopback ports, by PID. Progress goes to stderr; stdout is only the path.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    command -v redis-server
    exit 0
fi
tools="$(cd "$(dirname "$0")/.." && pwd)/target/tools"
link="$tools/redis-server"
if [ -x "$link" ]; then
    echo "$link"
    exit 0
fi
if [ ! -x /usr/bin/redis-check-rdb ]; then
    "$(dirname "$0")/apt-install.sh" "the fleet rate-limit tests (redis-server)" redis-tools
fi
mkdir -p "$tools"
ln -sf /usr/bin/redis-check-rdb "$link"
echo "$link"
