# tenantgate: build the release binary in one stage, run it in a slim one as a non-root user.
#   docker build -t tenantgate .
#   docker run --rm -p 8080:8080 tenantgate                       # the shipped config
#   docker run --rm -p 8080:8080 -v $PWD/my.toml:/etc/tenantgate/gateway.toml:ro tenantgate
# Builder and runtime share one Debian release, so the binary finds the glibc it was linked against.
ARG DEBIAN=trixie

FROM rust:1-slim-${DEBIAN} AS build
# Pingora's zlib-ng needs cmake and a C/C++ compiler; etcd-client compiles etcd's protocol with
# protoc and the well-known .proto files.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin tenantgate

FROM debian:${DEBIAN}-slim
# The config folder is the gateway's: API changes are written to the config file, and the audit log
# is kept beside it.
RUN useradd --system --user-group --uid 10001 --no-create-home --shell /usr/sbin/nologin tenantgate \
 && mkdir -p /etc/tenantgate /etc/certs \
 && chown tenantgate:tenantgate /etc/tenantgate /etc/certs
COPY --from=build /src/target/release/tenantgate /usr/local/bin/tenantgate
COPY --chown=tenantgate:tenantgate config/gateway.toml /etc/tenantgate/gateway.toml
USER tenantgate
# The shipped config names ../certs/ (here /etc/certs): development certificates make the image start
# as it is. Mount your real certificates over /etc/certs (same file names, or your own config).
RUN tenantgate certs dev --config /etc/tenantgate/gateway.toml
# The data plane (HTTP, HTTPS) and /metrics for Prometheus (with `[metrics] listen = "0.0.0.0:9464"`);
# the admin API stays on the container's loopback unless the config says otherwise.
EXPOSE 8080 8443 9464
ENTRYPOINT ["/usr/local/bin/tenantgate"]
CMD ["run", "--config", "/etc/tenantgate/gateway.toml"]
