#!/usr/bin/env bash
# Prints the path of an etcd server for the fleet tests and `make fleet-demo`, installing Debian's
# etcd-server package first on a machine that has none (its own service is not started). Progress
# goes to stderr; stdout is only the path.
set -euo pipefail

if command -v etcd >/dev/null 2>&1; then
    command -v etcd
    exit 0
fi
if [ ! -x /usr/bin/etcd ]; then
    "$(dirname "$0")/apt-install.sh" "the fleet tests (etcd 3.4 or later)" etcd-server
fi
echo /usr/bin/etcd
