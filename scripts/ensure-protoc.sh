#!/usr/bin/env bash
# Makes sure the build has protoc and the well-known .proto files (etcd-client compiles etcd's
# protocol at build time), installing Debian's protobuf-compiler and libprotobuf-dev when either is
# missing: with --no-install-recommends the first does not bring the second. Progress goes to stderr.
set -euo pipefail

if command -v protoc >/dev/null 2>&1 && [ -f /usr/include/google/protobuf/descriptor.proto ]; then
    exit 0
fi
"$(dirname "$0")/apt-install.sh" "etcd-client's build (protoc, the well-known .proto files)" \
    protobuf-compiler libprotobuf-dev
