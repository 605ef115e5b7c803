#!/usr/bin/env bash
# Installs Debian packages the build or the tests lack: `apt-install.sh WHAT PACKAGE...`, WHAT
# naming in the messages what needs them. Needs root and apt-get, and says so when either is
# missing. No package's service starts (policy-rc.d refuses them while it runs): the tests start
# their own servers, on loopback ports, and stop them by PID. Progress goes to stderr.
set -euo pipefail

what=$1
shift
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install $* for $what: needs root and apt-get; install them by hand" >&2
    exit 1
fi
echo "installing $* ($what needs them)" >&2
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    made_policy=1
fi
status=0
{ apt-get update -q && apt-get install -y -q --no-install-recommends "$@"; } >&2 || status=$?
if [ "$made_policy" = 1 ]; then
    rm -f "$policy"
fi
exit "$status"
