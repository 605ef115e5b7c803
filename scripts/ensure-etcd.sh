#!/usr/bin/env bash
# Prints the path of an etcd server for the fleet tests and `make fleet-demo`, installing Debian's
# etcd-server package first on a machine that has none. The package's own service is not started
# (policy-rc.d refuses it): the tests start and stop their own servers, on loopback ports, by PID.
# Progress goes to stderr; stdout is only the path.
set -euo pipefail

if command -v etcd >/dev/null 2>&1; then
    command -v etcd
    exit 0
fi
if [ -x /usr/bin/etcd ]; then
    echo /usr/bin/etcd
    exit 0
fi
echo "etcd is missing (the fleet tests need it); installing etcd-server" >&2
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install etcd: needs root and apt-get; install etcd (3.4 or later) and put it on PATH" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Debian's package would start a system etcd on the default ports; nothing here wants one.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    made_policy=1
fi
{ apt-get update -q && apt-get install -y -q --no-install-recommends etcd-server; } >&2 || status=$?
if [ "$made_policy" = 1 ]; then
    rm -f "$policy"
fi
if [ "${status:-0}" != 0 ]; then
    exit "$status"
fi
command -v etcd
