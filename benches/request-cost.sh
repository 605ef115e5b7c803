#!/usr/bin/env bash
# request-cost.sh - what one proxied request costs tenantgate and the Pingora floor (benches/floor_proxy.rs),
# counted, not timed: instructions and allocator calls per request under valgrind's callgrind, which a shared,
# noisy machine does not change. Both proxy the same small request (GET /, Host: bench.example.test, 3-byte
# answer) to one loopback nginx upstream over kept-alive connections, with threads = 1.
#
#   Usage: [REQUESTS=2000 CONNS=8 CANDIDATES="tenantgate floor"] benches/request-cost.sh
#
# Method: each proxy starts under callgrind with instrumentation off; WARMUP requests open the connections and
# fill the pools; then instrumentation is switched on (callgrind_control -i on), exactly REQUESTS requests are
# sent by h2load (HTTP/1.1, CONNS connections), instrumentation goes off, and the counters are dumped. Per
# request: Ir (instructions), allocations (mi_malloc_aligned + mi_zalloc_aligned calls; both binaries use
# mimalloc through Rust's global allocator), reallocations (mi_realloc_aligned), and the heaviest allocating
# callers of the candidate's own code (TOP of them).
#
# Env: REQUESTS=2000 WARMUP=200 CONNS=8 TOP=12 CANDIDATES="tenantgate floor"  PORT=18190 (floor PORT+1, admin
#      PORT+10) UPSTREAM_PORT=18192  START_TIMEOUT=120  OUT_DIR=<dir> (default: mktemp, kept)
#      CALLERS=0 (>0: callgrind --separate-callers=CALLERS, so each allocating caller is shown with the chain
#      of CALLERS functions that called it, callee first)
#      TENANTGATE=<binary> FLOOR=<binary> (default target/release/{tenantgate,examples/floor_proxy}; built
#      here when missing)
# Exit: 0 ok; 1 setup failure; 2 bad settings; 3 a request failed. Every process started here is stopped by PID.
set -uo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; fi
REQUESTS=${REQUESTS:-2000}; WARMUP=${WARMUP:-200}; CONNS=${CONNS:-8}; TOP=${TOP:-12}
CANDIDATES=${CANDIDATES:-"tenantgate floor"}
CALLERS=${CALLERS:-0}; PORT=${PORT:-18190}; UPSTREAM_PORT=${UPSTREAM_PORT:-18192}; START_TIMEOUT=${START_TIMEOUT:-120}
T0=$SECONDS
log() { printf '[request-cost %3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
die() { log "ERROR: $1"; exit "${2:-1}"; }

for v in REQUESTS WARMUP CONNS TOP CALLERS PORT UPSTREAM_PORT START_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')" 2
done
((REQUESTS >= 1 && REQUESTS <= 100000 && CONNS >= 1 && CONNS <= REQUESTS)) || die "need 1 <= CONNS <= REQUESTS <= 100000" 2
for c in $CANDIDATES; do [[ $c == @(tenantgate|floor) ]] || die "unknown candidate '$c' (tenantgate|floor)" 2; done
PATH=$PATH:/usr/sbin:/sbin
for c in valgrind callgrind_control h2load nginx curl python3; do
    command -v "$c" >/dev/null || die "$c not found (apt-get install valgrind nghttp2-client nginx curl python3)"
done
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
TENANTGATE=${TENANTGATE:-$ROOT_DIR/target/release/tenantgate}
FLOOR=${FLOOR:-$ROOT_DIR/target/release/examples/floor_proxy}
if [[ ! -x $TENANTGATE || ! -x $FLOOR ]]; then
    log "building tenantgate and the floor proxy (release)"
    (cd "$ROOT_DIR" && cargo build --release --quiet --bin tenantgate --example floor_proxy) || die "build failed"
fi
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/request-cost.XXXXXX)}
mkdir -p "$OUT_DIR"
HOST=bench.example.test

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT

wait_port() {  # name pid port
    local deadline=$((SECONDS + START_TIMEOUT))
    until curl -s -o /dev/null -m 2 -H "Host: $HOST" "http://127.0.0.1:$3/"; do
        kill -0 "$2" 2>/dev/null || die "$1 exited during start (see $OUT_DIR/$1.log)"
        ((SECONDS < deadline)) || die "$1 not answering on port $3 after ${START_TIMEOUT}s"
        sleep 0.5
    done
}

cat >"$OUT_DIR/upstream.conf" <<EOF
worker_processes 1;
pid $OUT_DIR/upstream.pid;
error_log $OUT_DIR/upstream.error.log;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        location / { return 200 "ok\n"; }
    }
}
EOF
nginx -p "$OUT_DIR" -c "$OUT_DIR/upstream.conf" -g 'daemon off; master_process off;' >"$OUT_DIR/upstream.log" 2>&1 &
PIDS+=($!)
wait_port upstream "$!" "$UPSTREAM_PORT"

cat >"$OUT_DIR/tenantgate.toml" <<EOF
[gateway]
http_listen = "127.0.0.1:$PORT"
base_domains = ["example.test"]
threads = 1
access_log = false

[admin]
listen = "127.0.0.1:$((PORT + 10))"

[pools.bench]
upstreams = ["127.0.0.1:$UPSTREAM_PORT"]

[tenants.bench]
name = "Bench"
pool = "bench"
EOF

measure() {  # name port command...
    local name=$1 port=$2; shift 2
    local out=$OUT_DIR/$name.callgrind
    rm -f "$out"*
    log "$name: starting under callgrind"
    valgrind --tool=callgrind --instr-atstart=no --separate-callers="$CALLERS" --callgrind-out-file="$out" "$@" >"$OUT_DIR/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$name" "$pid" "$port"
    h2load --h1 -n "$WARMUP" -c "$CONNS" -H ":authority: $HOST" "http://127.0.0.1:$port/" >"$OUT_DIR/$name.warmup" 2>&1 ||
        die "$name: warm-up failed ($OUT_DIR/$name.warmup)"
    if ! callgrind_control -z "$pid" >/dev/null 2>&1 || ! callgrind_control -i on "$pid" >/dev/null 2>&1; then
        die "$name: callgrind_control failed"
    fi
    h2load --h1 -n "$REQUESTS" -c "$CONNS" -H ":authority: $HOST" "http://127.0.0.1:$port/" >"$OUT_DIR/$name.h2load" 2>&1
    local rc=$?
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1 || die "$name: dump failed"
    kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    ((rc == 0)) || die "$name: h2load failed ($OUT_DIR/$name.h2load)" 3
    grep -q "succeeded, 0 failed, 0 errored" "$OUT_DIR/$name.h2load" ||
        die "$name: some requests failed: $(grep 'requests:' "$OUT_DIR/$name.h2load")" 3
    grep -q "status codes: $REQUESTS 2xx," "$OUT_DIR/$name.h2load" ||
        die "$name: not every answer was 2xx: $(grep 'status codes' "$OUT_DIR/$name.h2load")" 3
    local dump
    # One dump was asked for: callgrind names it <out>.1 (the final dump at exit is never written: KILL).
    dump=$out.1
    [[ -s $dump ]] || dump=
    [[ -n $dump ]] || die "$name: no callgrind dump ($out.1)"
    echo "$name $dump" >>"$OUT_DIR/dumps"
}

rm -f "$OUT_DIR/dumps"
for c in $CANDIDATES; do
    case $c in
        tenantgate) measure tenantgate "$PORT" "$TENANTGATE" run --config "$OUT_DIR/tenantgate.toml" ;;
        floor) CANDIDATE_PORT=$((PORT + 1)) UPSTREAM_ADDR=127.0.0.1:$UPSTREAM_PORT BENCH_HOST=$HOST \
            measure floor $((PORT + 1)) "$FLOOR" ;;
    esac
done

python3 - "$OUT_DIR/dumps" "$REQUESTS" "$TOP" <<'PY'
import re, sys
from collections import Counter
dumps, requests, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ALLOC = {"mi_malloc_aligned", "mi_zalloc_aligned"}
REALLOC = {"mi_realloc_aligned"}

def read(path):
    names, fn, cfn = {}, None, None
    ir, allocs, reallocs, callers = 0, 0, 0, Counter()
    def name(kind_value):
        m = re.match(r"\((\d+)\)(?: (.*))?", kind_value)
        if not m:
            return kind_value
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), "?")
    pending_call = None
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if line.startswith("fn="):
            fn = name(line[3:]); continue
        if line.startswith("cfn="):
            cfn = name(line[4:]); continue
        if line.startswith("calls="):
            pending_call = int(line[6:].split()[0]); continue
        if line.startswith(("summary:", "totals:")):
            ir = int(line.split()[1]); continue
        if pending_call is not None:  # the line after `calls=` is that call's cost
            callee = cfn.split("'")[0]
            if callee in ALLOC:
                allocs += pending_call; callers[fn] += pending_call
            elif callee in REALLOC:
                reallocs += pending_call
            pending_call = None
    return ir, allocs, reallocs, callers

rows = [l.split() for l in open(dumps)]
print(f"per request, {requests} requests counted (callgrind; instructions and allocator calls, not time)")
print(f"{'candidate':<12} {'Ir/req':>10} {'allocs/req':>11} {'reallocs/req':>13} {'x floor Ir':>11}")
result = {n: read(p) for n, p in rows}
floor = result.get("floor")
for n, _ in rows:
    ir, a, r, _c = result[n]
    ratio = f"{ir / floor[0]:.3f}" if floor and floor[0] else "-"
    print(f"{n:<12} {ir / requests:>10.0f} {a / requests:>11.2f} {r / requests:>13.2f} {ratio:>11}")
for n, _ in rows:
    callers = result[n][3]
    print(f"\n{n}: who calls the allocator (calls per request, top {top})")
    for f, count in callers.most_common(top):
        print(f"  {count / requests:7.2f}  " + "\n           <- ".join(p[:110] for p in f.split("'")))
PY
log "raw dumps and logs in $OUT_DIR"
