#!/usr/bin/env bash
# Prints the path of a Python that has grpcio (Google's gRPC for Python: a real gRPC server and
# client for the gRPC tests), making a virtualenv of its own under the user's cache first when
# there is none with the pinned version. Progress goes to stderr; stdout is only the path.
set -euo pipefail

grpcio_version=1.85.3
venv="${XDG_CACHE_HOME:-$HOME/.cache}/tenantgate/grpcio-$grpcio_version"
# The marker is written only after pip succeeded: an interrupted install is redone, not half-used.
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$grpcio_version" ] || [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "grpcio==$grpcio_version" >&2
    echo "$grpcio_version" >"$venv/.installed"
    echo "== grpcio $grpcio_version installed into $venv" >&2
fi
echo "$venv/bin/python"
