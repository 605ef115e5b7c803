#!/usr/bin/env bash
# Prints the directory of a working cmake (Pingora's zlib-ng build needs one), installing it first on
# a machine that has none: Debian's package when apt-get can be used, else PyPI's `cmake` wheel in a
# virtual environment under target/tools. Progress goes to stderr; stdout is only the directory.
set -euo pipefail

if command -v cmake >/dev/null 2>&1; then
    dirname "$(command -v cmake)"
    exit 0
fi
tools="$(cd "$(dirname "$0")/.." && pwd)/target/tools"
if [ -x "$tools/bin/cmake" ]; then
    echo "$tools/bin"
    exit 0
fi

echo "cmake is missing (Pingora's build needs it); installing it" >&2
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    if { apt-get update -q && apt-get install -y -q --no-install-recommends cmake; } >&2; then
        dirname "$(command -v cmake)"
        exit 0
    fi
    echo "apt-get could not install cmake; trying PyPI" >&2
fi
python3 -m venv "$tools" >&2
"$tools/bin/python" -m pip install -q cmake >&2
echo "$tools/bin"
