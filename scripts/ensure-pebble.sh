#!/usr/bin/env bash
# Prints the folder holding Let's Encrypt's ACME test server `pebble` and its `pebble-challtestsrv`
# (DNS for pebble's validation), for the certificate tests; installs Debian's pebble package (2.4)
# first on a machine that has none. Progress goes to stderr; stdout is only the folder.
set -euo pipefail

if command -v pebble >/dev/null 2>&1 && command -v pebble-challtestsrv >/dev/null 2>&1; then
    dirname "$(command -v pebble)"
    exit 0
fi
if [ ! -x /usr/bin/pebble ] || [ ! -x /usr/bin/pebble-challtestsrv ]; then
    "$(dirname "$0")/apt-install.sh" "the certificate tests (an ACME server)" pebble
fi
echo /usr/bin
