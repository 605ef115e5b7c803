# The README's two commands:
#   make demo   run the gateway on config/gateway.toml with built-in demo backends
#   make test   run the whole test suite (what .ci/run runs, besides fmt and clippy)
# Both install cmake first on a machine that has none (Pingora's build needs it); `make test` also
# installs redis-server (scripts/ensure-redis.sh) for the fleet rate-limit tests, which start and stop
# their own servers on loopback ports.

CARGO ?= cargo
# Runs the rest of the line with cmake on PATH, or stops when it cannot be had.
WITH_CMAKE = dir=$$(scripts/ensure-cmake.sh) && PATH="$$dir:$$PATH"

.PHONY: demo test bench release

demo:
	$(WITH_CMAKE) $(CARGO) run --locked -- demo

test:
	$(WITH_CMAKE) && redis=$$(scripts/ensure-redis.sh) && TENANTGATE_REDIS_SERVER=$$redis $(CARGO) test --locked

bench:
	$(WITH_CMAKE) $(CARGO) bench --locked --bench tenant_resolution

release:
	$(WITH_CMAKE) $(CARGO) build --release --locked
