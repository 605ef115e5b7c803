#!/usr/bin/env bash
# Makes sure the build has protoc and the well-known .proto files (etcd-client compiles etcd's
# protocol at build time), installing Debian's protobuf-compiler and libprotobuf-dev when either is
# missing: with --no-install-recommends the first does not bring the second. Progress goes to stderr.
set -euo pipefail

have_protoc=0
command -v protoc >/dev/null 2>&1 && have_protoc=1
have_includes=0
[ -f /usr/include/google/protobuf/descriptor.proto ] && have_includes=1
if [ "$have_protoc" = 1 ] && [ "$have_includes" = 1 ]; then
    exit 0
fi
echo "protoc or the well-known .proto files are missing (etcd-client's build needs them); installing them" >&2
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install protoc: needs root and apt-get; install protobuf-compiler and libprotobuf-dev" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -q && apt-get install -y -q --no-install-recommends protobuf-compiler libprotobuf-dev; } >&2
