# The README's two commands:
#   make demo   run the gateway on config/gateway.toml with built-in demo backends
#   make test   run the whole test suite (what .ci/run runs, besides fmt and clippy)
# And one more: `make fleet-demo` runs a fleet of two gateways on one etcd (README, "Running a fleet").
#
# Each installs what the build lacks first, on a machine that has none of it: cmake (Pingora's
# zlib-ng) and protoc with the well-known .proto files (etcd-client). `make test` also installs
# redis-server and etcd for the fleet tests, pebble (Let's Encrypt's ACME test server) for the
# certificate tests, which start and stop their own servers on loopback ports, and grpcio (a real
# gRPC server and client, in a virtualenv of its own) for the gRPC tests.

CARGO ?= cargo
# Runs the rest of the line with cmake and protoc at hand, or stops when they cannot be had.
WITH_BUILD_TOOLS = dir=$$(scripts/ensure-cmake.sh) && scripts/ensure-protoc.sh && PATH="$$dir:$$PATH"

.PHONY: demo test bench release fleet-demo

demo:
	$(WITH_BUILD_TOOLS) $(CARGO) run --locked -- demo

test:
	$(WITH_BUILD_TOOLS) && redis=$$(scripts/ensure-redis.sh) && etcd=$$(scripts/ensure-etcd.sh) && pebble=$$(scripts/ensure-pebble.sh) && grpc=$$(scripts/ensure-grpcio.sh) && TENANTGATE_REDIS_SERVER=$$redis TENANTGATE_ETCD=$$etcd TENANTGATE_PEBBLE_DIR=$$pebble TENANTGATE_GRPC_PYTHON=$$grpc $(CARGO) test --locked

fleet-demo:
	$(WITH_BUILD_TOOLS) && $(CARGO) build --locked && scripts/fleet-demo.sh

bench:
	$(WITH_BUILD_TOOLS) $(CARGO) bench --locked --bench tenant_resolution

release:
	$(WITH_BUILD_TOOLS) $(CARGO) build --release --locked
