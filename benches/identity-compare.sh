#!/usr/bin/env bash
# identity-compare.sh - end-to-end requests/s of one tenantgate process for requests that name their tenant
# in different ways, measured in one run so the ratios can be quoted. One plain-HTTP loopback nginx upstream
# answers "ok\n". Run from anywhere (paths are taken from the script's location):
#
#   Usage: [DURATION=8 ROUNDS=3 WARMUP=2 CONNS=64 CASES="host_only rs256 api_key hs256"] benches/identity-compare.sh
#
#   benches/identity-compare.sh                                  # ~2.5 min
#   DURATION=2 ROUNDS=1 WARMUP=0 benches/identity-compare.sh     # ~20 s smoke run
#
# Cases (CASES, default all four; host_only is the baseline of the "x host_only" column):
#   host_only  Host: acme.example.test, no credential (the tenant comes from the host name).
#   rs256      Host: api.example.test (tenant_source = "claim") + Authorization: Bearer <RS256 JWT, tid=acme>.
#   api_key    Host: api.example.test + Authorization: Bearer <acme_ + 32 alphanumerics API key>.
#   hs256      Host: api.example.test + Authorization: Bearer <HS256 JWT, tid=acme>.
# Every request of a JWT case carries the same token (as a real client does), so tenantgate's verified-token
# cache is part of what is measured. A fresh RSA-2048 key, HS256 secret and API key are made with openssl in
# OUT_DIR on every run.
#
# Method (as https-compare.sh): this script, wrk and the upstream run on core LOAD_CPU, tenantgate alone on core
# PROXY_CPU with threads = 1; rounds are interleaved (host_only, rs256, api_key, hs256, host_only, ...) and the
# table gives medians. Load: wrk -t1 -c$CONNS -d${DURATION}s --latency; p50/p99 from wrk's latency distribution.
#
# Env: DURATION=8 ROUNDS=3 WARMUP=2 (seconds per case, not recorded) CONNS=64  CASES="host_only rs256 api_key hs256"
#      LOAD_CPU=0 PROXY_CPU=1  HTTP_PORT=18180 ADMIN_PORT=18181 UPSTREAM_PORT=18182  START_TIMEOUT=20
#      MAX_TOTAL_S=300 (refuse longer plans; hard watchdog)  OUT_DIR=<dir> (default: mktemp, kept)
#      TENANTGATE=<binary> (default target/release/tenantgate; never built here)
# Exit: 0 ok; 1 setup failure / watchdog; 2 bad settings; 3 errors or non-2xx responses during load, or
# tenantgate died (table still printed). Every process started here is stopped by PID at exit.
set -uo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; fi
DURATION=${DURATION:-8}; ROUNDS=${ROUNDS:-3}; WARMUP=${WARMUP:-2}; CONNS=${CONNS:-64}
CASES=${CASES:-"host_only rs256 api_key hs256"}
LOAD_CPU=${LOAD_CPU:-0}; PROXY_CPU=${PROXY_CPU:-1}; START_TIMEOUT=${START_TIMEOUT:-20}; MAX_TOTAL_S=${MAX_TOTAL_S:-300}
HTTP_PORT=${HTTP_PORT:-18180}; ADMIN_PORT=${ADMIN_PORT:-18181}; UPSTREAM_PORT=${UPSTREAM_PORT:-18182}
T0=$SECONDS
log() { printf '[identity-compare %3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
die() { log "ERROR: $1"; exit "${2:-1}"; }

for v in DURATION ROUNDS WARMUP CONNS LOAD_CPU PROXY_CPU START_TIMEOUT MAX_TOTAL_S HTTP_PORT ADMIN_PORT UPSTREAM_PORT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')" 2
done
((DURATION >= 1 && ROUNDS >= 1 && CONNS >= 1)) || die "DURATION, ROUNDS and CONNS must be >= 1" 2
read -ra CASE_LIST <<<"$CASES"
((${#CASE_LIST[@]})) || die "CASES is empty" 2
for c in "${CASE_LIST[@]}"; do [[ $c == @(host_only|rs256|api_key|hs256) ]] || die "unknown case '$c' (host_only|rs256|api_key|hs256)" 2; done
for p in HTTP_PORT ADMIN_PORT UPSTREAM_PORT; do ((${!p} >= 1 && ${!p} <= 65535)) || die "$p out of range" 2; done
((HTTP_PORT != ADMIN_PORT && HTTP_PORT != UPSTREAM_PORT && ADMIN_PORT != UPSTREAM_PORT)) || die "HTTP_PORT, ADMIN_PORT, UPSTREAM_PORT must differ" 2
PATH=$PATH:/usr/sbin:/sbin
for c in wrk nginx openssl curl taskset sha256sum timeout ps; do
    command -v "$c" >/dev/null || die "$c not found (apt-get install wrk nginx openssl curl util-linux coreutils procps)"
done
NCPU=$(nproc --all)
((LOAD_CPU < NCPU && PROXY_CPU < NCPU)) || die "LOAD_CPU/PROXY_CPU must be < $NCPU" 2
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TENANTGATE:-$ROOT_DIR/target/release/tenantgate}
[[ -x $BIN ]] || die "no executable $BIN (build it with cargo build --release, or set TENANTGATE)"
EST=$((${#CASE_LIST[@]} * (ROUNDS * (DURATION + 1) + WARMUP + 1) + 15))
((EST <= MAX_TOTAL_S)) || die "plan needs ~${EST}s > MAX_TOTAL_S=${MAX_TOTAL_S}s; lower DURATION/ROUNDS or raise MAX_TOTAL_S" 2

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in HTTP_PORT ADMIN_PORT UPSTREAM_PORT; do
    port_open "${!p}" && die "port ${!p} ($p) on 127.0.0.1 is already taken; pick another with $p=..." 2
done
if [[ -n ${OUT_DIR:-} ]]; then mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"; else OUT_DIR=$(mktemp -d /tmp/identity-compare.XXXXXX); fi
OUT_DIR=$(cd "$OUT_DIR" && pwd); chmod 755 "$OUT_DIR"; mkdir -p "$OUT_DIR"/{logs,tmp,runs,keys}
RAW=$OUT_DIR/raw.csv
echo "round,case,rps,p50_ms,p99_ms,requests,non2xx,socket_errors" >"$RAW"

# ------------------------------------------------------------ processes: tracked by pid + start time, stopped by pid
TRACK=(); WATCHDOG=
proc_start() { local s f; s=$(cat /proc/"$1"/stat 2>/dev/null) || return 1; s=${s##*) }; read -ra f <<<"$s"; echo "${f[19]}"; }
proc_state() { local s; s=$(cat /proc/"$1"/stat 2>/dev/null) || { echo X; return; }; s=${s##*) }; echo "${s%% *}"; }
# shellcheck disable=SC2317  # alive and cleanup run from the EXIT trap
alive() { local st; st=$(proc_start "${1%%:*}") && [[ $st == "${1#*:}" ]] && [[ $(proc_state "${1%%:*}") != Z ]]; }
track() { local st; st=$(proc_start "$1") && TRACK+=("$1:$st"); }
# shellcheck disable=SC2317
cleanup() {
    local rc=$? e c i left
    trap - EXIT INT TERM
    [[ -n $WATCHDOG ]] && kill "$WATCHDOG" 2>/dev/null
    for e in "${TRACK[@]}"; do  # children (nginx workers) too, in case a parent has to be killed hard
        alive "$e" || continue
        for c in $(ps -o pid= --ppid "${e%%:*}" 2>/dev/null); do [[ " ${TRACK[*]} " == *" $c:"* ]] || track "$c"; done
    done
    for ((i = ${#TRACK[@]} - 1; i >= 0; i--)); do alive "${TRACK[i]}" && kill -TERM "${TRACK[i]%%:*}" 2>/dev/null; done
    local until=$((SECONDS + 10))  # tenantgate drains keep-alive clients for ~1 s before it exits
    while ((SECONDS < until)); do left=0; for e in "${TRACK[@]}"; do alive "$e" && left=1; done; ((left)) || break; sleep 0.1; done
    for e in "${TRACK[@]}"; do alive "$e" && kill -KILL "${e%%:*}" 2>/dev/null; done
    wait 2>/dev/null
    log "cleanup: ${#TRACK[@]} tracked pids stopped; artifacts in $OUT_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log "terminated (signal, or watchdog after MAX_TOTAL_S=${MAX_TOTAL_S}s)"; exit 1' TERM
( trap 'kill $sp 2>/dev/null; wait $sp; exit 0' TERM; sleep "$MAX_TOTAL_S" & sp=$!; wait $sp && kill -TERM $$ ) 2>/dev/null &
WATCHDOG=$!
taskset -pc "$LOAD_CPU" $$ >/dev/null || die "taskset failed"   # script, wrk and upstream on LOAD_CPU

start_proc() {  # NAME CPU cmd... -> STARTED_PID
    local name=$1 cpu=$2; shift 2
    taskset -c "$cpu" "$@" >"$OUT_DIR/logs/$name.log" 2>&1 </dev/null &
    STARTED_PID=$!; track "$STARTED_PID" || die "$name exited immediately: $(tail -5 "$OUT_DIR/logs/$name.log")"
}
wait_ready() {  # NAME PID PORT [url that must answer 200]
    local t=0
    until port_open "$3" && { [[ -z ${4:-} ]] || [[ $(curl -s -m 2 -o /dev/null -w '%{http_code}' "$4") == 200 ]]; }; do
        [[ $(proc_state "$2") == [XZ] ]] && die "$1 (pid $2) died during startup:"$'\n'"$(tail -20 "$OUT_DIR/logs/$1.log")"
        ((t++ >= START_TIMEOUT * 10)) && die "$1 not ready on port $3 within ${START_TIMEOUT}s:"$'\n'"$(tail -20 "$OUT_DIR/logs/$1.log")"
        sleep 0.1
    done
}

# ------------------------------------------------------------ credentials: RSA-2048 key, HS256 secret, API key
K=$OUT_DIR/keys
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
{
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$K/rs.key" &&
    openssl pkey -in "$K/rs.key" -pubout -out "$K/rs.pub"
} >"$OUT_DIR/logs/openssl.log" 2>&1 || die "RSA key generation failed: $(tail -5 "$OUT_DIR/logs/openssl.log")"
HS_SECRET=$(openssl rand -hex 32)
API_KEY=acme_$(openssl rand -base64 96 | tr -dc 'A-Za-z0-9' | cut -c1-32)
[[ $API_KEY =~ ^acme_[A-Za-z0-9]{32}$ ]] || die "could not make an API key (got '$API_KEY')"
API_KEY_SHA=$(printf %s "$API_KEY" | sha256sum | cut -d' ' -f1)
jwt() {  # ALG KID -> token on stdout
    local h c sig
    h=$(printf '{"alg":"%s","typ":"JWT","kid":"%s"}' "$1" "$2" | b64url)
    c=$(printf '{"sub":"user-1","tid":"acme","iss":"https://auth.example.test","aud":"bench","exp":%d}' $(($(date +%s) + 7200)) | b64url)
    case $1 in
    RS256) sig=$(printf %s "$h.$c" | openssl dgst -sha256 -sign "$K/rs.key" -binary | b64url) ;;
    HS256) sig=$(printf %s "$h.$c" | openssl dgst -sha256 -hmac "$HS_SECRET" -binary | b64url) ;;
    esac
    [[ -n $sig ]] && echo "$h.$c.$sig"
}
RS_JWT=$(jwt RS256 rs) || die "RS256 signing failed"
HS_JWT=$(jwt HS256 hs) || die "HS256 signing failed"
printf 'rs256=%s\nhs256=%s\napi_key=%s\n' "$RS_JWT" "$HS_JWT" "$API_KEY" >"$K/credentials.txt"
declare -A HOST=([host_only]=acme.example.test [rs256]=api.example.test [api_key]=api.example.test [hs256]=api.example.test)
declare -A AUTH=([host_only]="" [rs256]="Bearer $RS_JWT" [api_key]="Bearer $API_KEY" [hs256]="Bearer $HS_JWT")

# ------------------------------------------------------------ configs
cat >"$OUT_DIR/upstream.conf" <<EOF
worker_processes 1;
pid $OUT_DIR/tmp/upstream.pid;
error_log $OUT_DIR/logs/upstream.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $OUT_DIR/tmp/cb; proxy_temp_path $OUT_DIR/tmp/px; fastcgi_temp_path $OUT_DIR/tmp/fc;
  uwsgi_temp_path $OUT_DIR/tmp/uw; scgi_temp_path $OUT_DIR/tmp/sc;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  server {
    listen 127.0.0.1:$UPSTREAM_PORT default_server backlog=4096;
    location = / { default_type text/plain; return 200 "ok\n"; }
  }
}
EOF
TG_CONF=$OUT_DIR/tenantgate.toml
cat >"$TG_CONF" <<EOF
[gateway]
http_listen = "127.0.0.1:$HTTP_PORT"
base_domains = ["example.test"]
threads = 1
access_log = false

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
watch_config = false

[jwt]
issuer = "https://auth.example.test"
audience = "bench"

[[jwt.keys]]
kid = "rs"
alg = "RS256"
public_key = '''
$(cat "$K/rs.pub")
'''

[[jwt.keys]]
kid = "hs"
alg = "HS256"
secret = "$HS_SECRET"

[pools.bench]
upstreams = ["127.0.0.1:$UPSTREAM_PORT"]

[tenants.acme]
pool = "bench"

[[tenants.acme.api_keys]]
id = "bench"
sha256 = "$API_KEY_SHA"
created = "2026-01-01T00:00:00Z"

[hosts."api.example.test"]
tenant_source = "claim"
EOF

# ------------------------------------------------------------ start
log "out dir $OUT_DIR; $("$BIN" --version 2>/dev/null) ($BIN); cases: ${CASE_LIST[*]}; rounds=$ROUNDS d=${DURATION}s c=$CONNS; est ~${EST}s"
log "ports: tenantgate $HTTP_PORT admin $ADMIN_PORT, upstream $UPSTREAM_PORT; wrk+upstream on cpu $LOAD_CPU, tenantgate on cpu $PROXY_CPU"
nginx -t -q -p "$OUT_DIR" -e "$OUT_DIR/logs/upstream.error.log" -c "$OUT_DIR/upstream.conf" >"$OUT_DIR/logs/upstream.log" 2>&1 ||
    die "upstream nginx config invalid: $(cat "$OUT_DIR/logs/upstream.log")"
start_proc upstream "$LOAD_CPU" nginx -p "$OUT_DIR" -e "$OUT_DIR/logs/upstream.error.log" -c "$OUT_DIR/upstream.conf" -g 'daemon off;'
wait_ready upstream "$STARTED_PID" "$UPSTREAM_PORT"
"$BIN" check --config "$TG_CONF" >"$OUT_DIR/logs/tenantgate-check.log" 2>&1 ||
    die "tenantgate check refuses $TG_CONF:"$'\n'"$(cat "$OUT_DIR/logs/tenantgate-check.log")"
start_proc tenantgate "$PROXY_CPU" "$BIN" run --config "$TG_CONF"
TG_PID=$STARTED_PID
wait_ready tenantgate "$TG_PID" "$HTTP_PORT" "http://127.0.0.1:$ADMIN_PORT/status"
tg_alive() { [[ $(proc_state "$TG_PID") != [XZ] ]]; }

# ------------------------------------------------------------ sanity: every case answers 200 "ok"
hdrs() {  # CASE -> wrk/curl -H arguments in HDRS
    HDRS=(-H "Host: ${HOST[$1]}"); [[ -n ${AUTH[$1]} ]] && HDRS+=(-H "Authorization: ${AUTH[$1]}")
}
for c in "${CASE_LIST[@]}"; do
    hdrs "$c"
    out=$(curl -sS -m 5 "${HDRS[@]}" -w '\n%{http_code}' "http://127.0.0.1:$HTTP_PORT/" 2>&1) || true
    [[ $out == $'ok\n\n200' ]] || die "$c: GET / with Host ${HOST[$c]} answered (status last):"$'\n'"$out"
done
log "sanity: ${CASE_LIST[*]} all answer 200 ok"

# ------------------------------------------------------------ measurement
FAILED=()
measure() {  # ROUND CASE DURATION RECORD(0/1)
    local r=$1 c=$2 out=$OUT_DIR/runs/r$1-$2.txt cpid crc line
    hdrs "$c"
    timeout -k 2 $(($3 + 20)) wrk -t1 -c"$CONNS" -d"${3}s" --timeout 5s --latency "${HDRS[@]}" "http://127.0.0.1:$HTTP_PORT/" >"$out" 2>&1 &
    cpid=$!; track "$cpid"; wait "$cpid"; crc=$?
    tg_alive || { FAILED+=("tenantgate died during r$r/$c"); log "ERROR: tenantgate died: $(tail -5 "$OUT_DIR/logs/tenantgate.log")"; }
    line=$(awk -v r="$r" -v c="$c" '
        function ms(s,   v) { v = s + 0; if (s ~ /us$/) return v / 1000; if (s ~ /ms$/) return v; if (s ~ /m$/) return v * 60000; if (s ~ /s$/) return v * 1000; return v }
        /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec:/ { rps = $2 } / requests in / { n = $1 }
        /Non-2xx or 3xx responses:/ { bad = $NF } /Socket errors:/ { gsub(/,/, " "); se = $4 + $6 + $8 + $10 }
        END { if (rps != "" && p99 != "") printf "%s,%s,%.1f,%.3f,%.3f,%d,%d,%d\n", r, c, rps, p50, p99, n, bad, se }' "$out")
    if [[ $crc != 0 || -z $line ]]; then FAILED+=("r$r/$c: wrk rc=$crc"); log "ERROR: wrk failed for $c: $(tail -3 "$out" | tr '\n' ' ')"; return; fi
    ((${4})) || return
    echo "$line" >>"$RAW"
    IFS=, read -r _ _ rps p50 p99 n bad se <<<"$line"
    ((bad + se > 0)) && FAILED+=("r$r/$c: $bad non-2xx, $se socket errors")
    log "r$r $(printf '%-9s rps=%.0f' "$c" "$rps") p50=${p50}ms p99=${p99}ms requests=$n non2xx=$bad socket_errors=$se"
}

if ((WARMUP > 0)); then log "warm-up ${WARMUP}s per case"; for c in "${CASE_LIST[@]}"; do measure 0 "$c" "$WARMUP" 0; done; fi
for ((r = 1; r <= ROUNDS; r++)); do for c in "${CASE_LIST[@]}"; do measure "$r" "$c" "$DURATION" 1; done; done

# ------------------------------------------------------------ report
echo
echo "== identity end to end: wrk -t1 -c$CONNS -d${DURATION}s, tenantgate alone on cpu $PROXY_CPU, medians of $ROUNDS rounds"
awk -F, -v order="${CASE_LIST[*]}" '
    function med(s,   a, n, i, j, t) { n = split(s, a, " "); if (!n) return 0
      for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    NR > 1 { rps[$2] = rps[$2] " " $3; p50[$2] = p50[$2] " " $4; p99[$2] = p99[$2] " " $5 }
    END {
      print "| case | rps | x host_only | p50 ms | p99 ms |"; print "|---|---|---|---|---|"
      base = med(rps["host_only"]); n = split(order, cs, " ")
      for (i = 1; i <= n; i++) { c = cs[i]; if (!(c in rps)) { printf "| %s | - | - | - | - |\n", c; continue }
        m = med(rps[c]); printf "| %s | %.0f | %s | %.3f | %.3f |\n", c, m, base ? sprintf("%.3f", m / base) : "-", med(p50[c]), med(p99[c]) }
    }' "$RAW"
echo
echo "raw per-run data: $RAW; wrk outputs: $OUT_DIR/runs"
if ((${#FAILED[@]})); then log "problems during load:"; printf '  %s\n' "${FAILED[@]}" >&2; exit 3; fi
exit 0
