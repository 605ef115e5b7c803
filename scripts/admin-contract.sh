#!/usr/bin/env bash
# The admin API against its OpenAPI document (docs/admin-api.openapi.json), by schemathesis with
# every check: `admin-contract.sh PATH/TO/tenantgate [MORE st run OPTIONS...]`, for example after
# `make test` built target/debug/tenantgate. In a network namespace that has only loopback, starts
# that binary on free ports with a throwaway config (two pools, three tenants, an admin token) in
# front of a loopback upstream (python3 -m http.server), runs schemathesis against its admin API
# and stops both by PID. Prints schemathesis's report and exits with its status: non-zero when it
# found anything. schemathesis is pinned, installed once into a virtualenv of its own under the
# user's cache.
set -euo pipefail

schemathesis_version=4.32.5
# Bounds: examples per operation, and the whole run's wall clock (the CI job's budget is shared).
max_examples=50
run_timeout=600
ready_timeout=20

if [ $# -lt 1 ]; then
    echo "usage: $0 PATH/TO/tenantgate [st run options...]" >&2
    exit 2
fi
bin=$(realpath "$1")
shift
if [ ! -x "$bin" ]; then
    echo "$bin: not an executable" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
spec="$repo/docs/admin-api.openapi.json"

# The virtualenv is reused while it holds the pinned version. Its marker file is written only
# after pip succeeded, so an interrupted install is redone rather than half-used.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/tenantgate/schemathesis-$schemathesis_version"
if [ -z "${TENANTGATE_CONTRACT_NETNS:-}" ]; then
    installed_version() {
        [ "$(cat "$venv/.installed" 2>/dev/null)" = "$schemathesis_version" ] || return 0
        "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true
    }
    if [ "$(installed_version)" = "$schemathesis_version" ] && [ -x "$venv/bin/st" ]; then
        echo "== schemathesis $schemathesis_version: already installed in $venv"
    else
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version" >&2
        echo "$schemathesis_version" >"$venv/.installed"
        echo "== schemathesis $schemathesis_version: installed into $venv"
    fi

    # The rest runs again in a network namespace of its own, which has only loopback: the
    # document's examples push pools with other upstreams (`10.0.0.5:8080`), and a push that
    # lands has the gateway health-check and probe them. There they fail at once, on no network.
    if ! unshare --net true 2>/dev/null; then
        echo "cannot make a network namespace (unshare --net, as root) to keep the gateway on loopback" >&2
        exit 1
    fi
    TENANTGATE_CONTRACT_NETNS=1 exec unshare --net "$BASH" "$0" "$bin" "$@"
fi
ip link set lo up

tmp=$(mktemp -d)
pids=()
gateway_pid=
stop() {
    local rc=$?
    trap - INT TERM EXIT
    # SIGINT stops the gateway at once; SIGTERM would drain connections for seconds first.
    if [ -n "$gateway_pid" ]; then
        kill -INT "$gateway_pid" 2>/dev/null || true
    fi
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
    exit "$rc"
}
trap stop INT TERM EXIT

gateway_log_tail() {
    echo "-- the gateway's log, last 40 lines:"
    tail -n 40 "$tmp/gateway.log" || true
}

# Free loopback ports: bound to port 0, read, released for the gateway and the upstream to take.
read -r http_port admin_port upstream_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
')

# A real upstream, so that health checks pass and promotions find a healthy pool.
mkdir -p "$tmp/upstream"
echo ok >"$tmp/upstream/healthz"
python3 -m http.server --bind 127.0.0.1 --directory "$tmp/upstream" "$upstream_port" \
    >"$tmp/upstream.log" 2>&1 &
pids+=($!)

# A token of this run only; the config keeps its SHA-256, as `tenantgate admin-token` prints it.
token=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
token_sha256=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
key_sha256=$(printf %s "contract-acme-key" | sha256sum | cut -d' ' -f1)

cat >"$tmp/gateway.toml" <<TOML
# Throwaway config of scripts/admin-contract.sh: loopback only, no TLS.
[gateway]
http_listen = "127.0.0.1:$http_port"
base_domains = ["yourapp.test"]
access_log = false

[admin]
listen = "127.0.0.1:$admin_port"
token_sha256 = "$token_sha256"

[plans.free]
rate_limit = { requests_per_second = 20, burst = 40 }

[pools.shared]
upstreams = ["127.0.0.1:$upstream_port"]
health_check = { path = "/healthz", interval_ms = 1000 }

# The OpenAPI document's examples promote to this pool and push tenant "newco" into "shared".
[pools.acme-dedicated]
upstreams = ["127.0.0.1:$upstream_port"]
health_check = { path = "/healthz", interval_ms = 1000 }

[tenants.acme]
name = "Acme Corp"
pool = "shared"
domains = ["api.acme.example"]
api_keys = [{ id = "k1", sha256 = "$key_sha256", created = "2026-01-01T00:00:00Z" }]

[tenants.globex]
name = "Globex"
status = "suspended"
pool = "shared"

[tenants.initech]
pool = "shared"
plan = "free"

[hosts."api.yourapp.test"]
tenant_source = "claim"
TOML

"$bin" run --config "$tmp/gateway.toml" >"$tmp/gateway.log" 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")

admin="http://127.0.0.1:$admin_port"
deadline=$((SECONDS + ready_timeout))
until curl -sf -o /dev/null --max-time 2 "$admin/healthz"; do
    if ! kill -0 "$gateway_pid" 2>/dev/null; then
        echo "the gateway exited before its admin API answered" >&2
        gateway_log_tail >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "the gateway's admin API did not answer GET /healthz within ${ready_timeout} s" >&2
        gateway_log_tail >&2
        exit 1
    fi
    sleep 0.2
done
echo "== tenantgate $("$bin" --version | cut -d' ' -f2) admin API on $admin (PID $gateway_pid)"

# One worker, a fixed seed and no example database: the same binary gets the same requests.
# Output is not sanitized: that would also blank query values such as `with_keys`, making the
# printed curl lines wrong, and the token it shows is this run's alone, dead with the gateway.
# It runs in the temporary folder, so no report lands in the work tree; its settings are
# scripts/admin-contract.toml (what a 422 means where the schema cannot say it).
st_args=(
    run "$spec"
    --url "$admin"
    --header "Authorization: Bearer $token"
    --checks all
    --max-examples "$max_examples"
    --seed 1
    --workers 1
    --generation-database none
    --output-sanitize false
    --no-color
    "$@"
)
echo "== st ${st_args[*]/$token/\$TOKEN}"
started=$SECONDS
status=0
(cd "$tmp" && timeout "$run_timeout" "$venv/bin/st" --config-file "$repo/scripts/admin-contract.toml" "${st_args[@]}") || status=$?
if [ "$status" = 124 ]; then
    echo "schemathesis did not finish within ${run_timeout} s" >&2
fi
if ! kill -0 "$gateway_pid" 2>/dev/null; then
    echo "the gateway died during the run" >&2
    gateway_log_tail >&2
    [ "$status" != 0 ] || status=1
fi
echo "== schemathesis exited $status after $((SECONDS - started)) s"
exit "$status"
