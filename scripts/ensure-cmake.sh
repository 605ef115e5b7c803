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

if "$(dirname "$0")/apt-install.sh" "Pingora's build (cmake)" cmake; then
    dirname "$(command -v cmake)"
    exit 0
fi
echo "trying PyPI's cmake instead" >&2
python3 -m venv "$tools" >&2
"$tools/bin/python" -m pip install -q cmake >&2
echo "$tools/bin"
