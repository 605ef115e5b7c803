#!/usr/bin/env bash
# https-compare.sh - HTTPS requests/s of tenantgate against nginx terminating the same certificate, both
# proxying to one plain-HTTP loopback nginx upstream ("ok\n"), measured in one run. Run from the project root:
#
#   benches/https-compare.sh                          # ~4 min: DURATION=8 ROUNDS=3
#   DURATION=3 ROUNDS=1 benches/https-compare.sh      # ~45 s smoke run
#   PROXIES=nginx benches/https-compare.sh            # nginx (and direct) only: no tenantgate needed
#
# Method (as ../../shared/bench/compare.sh): this script, the client and the upstream run on core LOAD_CPU,
# each proxy alone on core PROXY_CPU with one worker; rounds are interleaved (direct, nginx, tenantgate,
# direct, ...) and the tables give medians. Certificates: a throwaway ECDSA P-256 CA and a leaf for
# *.example.test + example.test (X.509 v3, PKCS#8 keys), made with openssl in the run's directory.
# Every request carries SNI bench.example.test.
#
# Workloads (WORKLOADS, default all three):
#   keepalive        wrk -t1 -c$CONNS, HTTP/1.1 over TLS, GET / (3-byte body), connections reused.
#   new-connections  the same wrk run with "Connection: close": the server answers with Connection: close,
#                    wrk reads the response, closes and reconnects (TCP + TLS handshake) for the next request.
#                    wrk, not h2load: h2load 1.52 -D with Connection: close keeps reconnecting after the
#                    duration ends and never exits. Read the numbers knowing that:
#                    - wrk keeps each connection slot's TLS session (SSL_clear after a clean shutdown), so
#                      every handshake after a slot's first is a TLS 1.3 resumption (PSK + ECDHE, no
#                      certificate signature) if the server issues tickets; the "tls" lines printed before
#                      the tables say whether each server resumed a session for openssl s_client.
#                    - wrk starts its latency clock when it writes the request, after connect and handshake:
#                      p50/p99 here exclude connection setup; the setup cost shows only in rps and cpu%.
#                    - conn/req (client TCP connects per request, from /proc/net/snmp) should be ~1.00 here
#                      and ~0.00 for keepalive; a server that closes without "Connection: close" would show
#                      up as errs (wrk read/write errors) and a lower rps.
#   h2               h2load -t1 -c$H2_CONNS -m$H2_STREAMS over h2 (ALPN); p50/p99 from h2load's per-request
#                    log. No direct row (the upstream speaks HTTP/1.1 only).
#
# Env: DURATION=8 ROUNDS=3 WARMUP=2 CONNS=64 H2_CONNS=16 H2_STREAMS=8 WORKLOADS="keepalive new-connections h2"
#      PROXIES="nginx tenantgate" (or CANDIDATE_ONLY=nginx|tenantgate)  DIRECT=1 (plain-HTTP wrk -> upstream row)
#      LOAD_CPU=0 PROXY_CPU=1  MAX_TOTAL_S=300 (refuse longer plans; hard watchdog)  START_TIMEOUT=20
#      TG_EXTRA=<TOML appended to tenantgate's config> (e.g. an [acme] section, to measure its ClientHello hook)
#      OTHER_MAX=5  OUT_DIR=<dir> (default: mktemp, kept)  TENANTGATE=<binary> (default target/release/tenantgate,
#      built with cargo build --release --locked only when missing, or always with BUILD=1)
# Exit: 0 ok; 1 setup failure / watchdog; 2 bad settings; 3 requests failed during load or a proxy died
# (tables still printed). Every process started here is stopped by PID at exit; nothing is killed by name.
set -uo pipefail

DURATION=${DURATION:-8}; ROUNDS=${ROUNDS:-3}; WARMUP=${WARMUP:-2}; CONNS=${CONNS:-64}
H2_CONNS=${H2_CONNS:-16}; H2_STREAMS=${H2_STREAMS:-8}; WORKLOADS=${WORKLOADS:-"keepalive new-connections h2"}
PROXIES=${CANDIDATE_ONLY:-${PROXIES-"nginx tenantgate"}}; DIRECT=${DIRECT:-1}
LOAD_CPU=${LOAD_CPU:-0}; PROXY_CPU=${PROXY_CPU:-1}; MAX_TOTAL_S=${MAX_TOTAL_S:-300}
START_TIMEOUT=${START_TIMEOUT:-20}; OTHER_MAX=${OTHER_MAX:-5}
SNI=bench.example.test
T0=$SECONDS
log() { printf '[https-compare %3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
die() { log "ERROR: $1"; exit "${2:-1}"; }

for v in DURATION ROUNDS WARMUP CONNS H2_CONNS H2_STREAMS DIRECT LOAD_CPU PROXY_CPU MAX_TOTAL_S START_TIMEOUT OTHER_MAX; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')" 2
done
((DURATION >= 1 && ROUNDS >= 1 && CONNS >= 1 && H2_CONNS >= 1 && H2_STREAMS >= 1)) || die "DURATION/ROUNDS/CONNS/H2_* must be >= 1" 2
for w in $WORKLOADS; do [[ $w == @(keepalive|new-connections|h2) ]] || die "unknown workload '$w'" 2; done
for p in $PROXIES; do [[ $p == @(nginx|tenantgate) ]] || die "unknown proxy '$p' (nginx|tenantgate)" 2; done
PATH=$PATH:/usr/sbin:/sbin
need=(wrk nginx openssl curl taskset ps); [[ " $WORKLOADS " == *" h2 "* ]] && need+=(h2load)
for c in "${need[@]}"; do command -v "$c" >/dev/null || die "$c not found (apt-get install wrk nginx openssl curl util-linux procps nghttp2-client)"; done
NCPU=$(nproc --all); CLK_TCK=$(getconf CLK_TCK)
((LOAD_CPU < NCPU && PROXY_CPU < NCPU)) || die "LOAD_CPU/PROXY_CPU must be < $NCPU" 2

if [[ " $PROXIES " == *" tenantgate "* ]]; then
    [[ -f Cargo.toml ]] || die "run this from the project root" 2
    TG_BIN=${TENANTGATE:-$PWD/target/release/tenantgate}
    if [[ ! -x $TG_BIN || ${BUILD:-0} == 1 ]]; then log "building $TG_BIN"; cargo build --release --locked || die "cargo build failed"; fi
    [[ -x $TG_BIN ]] || die "no $TG_BIN"
fi

CONFIGS=(); ((DIRECT)) && CONFIGS+=(direct); CONFIGS+=($PROXIES)
((${#CONFIGS[@]})) || die "nothing to measure" 2
runs_per_round=0
for w in $WORKLOADS; do for c in "${CONFIGS[@]}"; do [[ $w == h2 && $c == direct ]] || runs_per_round=$((runs_per_round + 1)); done; done
EST=$((ROUNDS * runs_per_round * (DURATION + 2) + ${#CONFIGS[@]} * (WARMUP + 1) + 20))
((EST <= MAX_TOTAL_S)) || die "plan needs ~${EST}s > MAX_TOTAL_S=${MAX_TOTAL_S}s; lower DURATION/ROUNDS/WORKLOADS" 2

if [[ -n ${OUT_DIR:-} ]]; then mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"; else OUT_DIR=$(mktemp -d /tmp/https-compare.XXXXXX); fi
OUT_DIR=$(cd "$OUT_DIR" && pwd); chmod 755 "$OUT_DIR"; mkdir -p "$OUT_DIR"/{logs,tmp,runs,tls}
RAW=$OUT_DIR/raw.csv
echo "round,workload,config,rps,p50_us,p99_us,requests,errors,proxy_cpu_pct,proxy_rss_kib,other_cpu_pct,conn_per_req,load_cpu_pct" >"$RAW"

# ------------------------------------------------------------ processes: tracked by pid + start time
TRACK=(); WATCHDOG=
proc_start() { local s; s=$(cat /proc/"$1"/stat 2>/dev/null) || return 1; s=${s##*) }; set -- $s; echo "${20}"; }
proc_state() { local s; s=$(cat /proc/"$1"/stat 2>/dev/null) || { echo X; return; }; s=${s##*) }; echo "${s%% *}"; }
track() { local st; st=$(proc_start "$1") && TRACK+=("$1:$st"); }
alive() { local st; st=$(proc_start "${1%%:*}") && [[ $st == "${1#*:}" ]] && [[ $(proc_state "${1%%:*}") != Z ]]; }
tree_pids() { ps -e -o pid=,ppid= | awk -v r="$1" '{ k[$2] = k[$2] " " $1 }
    END { q[1] = r; n = 1; i = 1; while (i <= n) { p = q[i++]; print p; m = split(k[p], a, " "); for (j = 1; j <= m; j++) q[++n] = a[j] } }'; }
track_tree() { local p; for p in $(tree_pids "$1"); do [[ " ${TRACK[*]} " == *" $p:"* ]] || track "$p"; done; }
cleanup() {
    local rc=$? e i left
    trap - EXIT INT TERM
    [[ -n $WATCHDOG ]] && kill "$WATCHDOG" 2>/dev/null
    for e in "${TRACK[@]}"; do alive "$e" && track_tree "${e%%:*}"; done
    for ((i = ${#TRACK[@]} - 1; i >= 0; i--)); do alive "${TRACK[i]}" && kill -TERM "${TRACK[i]%%:*}" 2>/dev/null; done
    for _ in $(seq 50); do left=0; for e in "${TRACK[@]}"; do alive "$e" && left=1; done; ((left)) || break; sleep 0.1; done
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
taskset -pc "$LOAD_CPU" $$ >/dev/null || die "taskset failed"   # script, client and upstream on LOAD_CPU

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
USED=" "
pick_port() {  # VAR: a free port below the ephemeral range (the new-connections load churns through that)
    local p; while :; do p=$((20000 + RANDOM % 12000)); [[ $USED == *" $p "* ]] || port_open "$p" || break; done
    USED+="$p "; printf -v "$1" %s "$p"
}
pick_port UP_PORT; pick_port NGINX_PORT; pick_port TG_HTTP; pick_port TG_HTTPS; pick_port TG_ADMIN
declare -A PORT=([direct]=$UP_PORT [nginx]=$NGINX_PORT [tenantgate]=$TG_HTTPS) ROOT=()

start_proc() {  # NAME CPU cmd... -> STARTED_PID
    local name=$1 cpu=$2; shift 2
    taskset -c "$cpu" "$@" >"$OUT_DIR/logs/$name.log" 2>&1 </dev/null &
    STARTED_PID=$!; track "$STARTED_PID" || die "$name exited immediately: $(tail -5 "$OUT_DIR/logs/$name.log")"
}
wait_ready() {  # NAME PID PORT [health url]
    local t=0
    until port_open "$3" && { [[ -z ${4:-} ]] || [[ $(curl -s -m 2 -o /dev/null -w '%{http_code}' "$4") == 200 ]]; }; do
        [[ $(proc_state "$2") == [XZ] ]] && die "$1 (pid $2) died during startup:"$'\n'"$(tail -20 "$OUT_DIR/logs/$1.log")"
        ((t++ >= START_TIMEOUT * 10)) && die "$1 not ready on port $3 within ${START_TIMEOUT}s:"$'\n'"$(tail -20 "$OUT_DIR/logs/$1.log")"
        sleep 0.1
    done
    sleep 0.2; [[ $(proc_state "$2") == [XZ] ]] && die "$1 exited right after starting"
    track_tree "$2"
}

# ------------------------------------------------------------ certificate: CA + leaf, ECDSA P-256, PKCS#8, X.509 v3
TLS=$OUT_DIR/tls
{
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$TLS/ca.key" &&
    openssl req -x509 -new -key "$TLS/ca.key" -sha256 -days 2 -subj "/CN=tenantgate bench CA" -out "$TLS/ca.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$TLS/leaf.key" &&
    openssl req -new -key "$TLS/leaf.key" -subj "/CN=*.example.test" -out "$TLS/leaf.csr" &&
    printf '%s\n' 'subjectAltName = DNS:*.example.test, DNS:example.test' 'basicConstraints = critical, CA:FALSE' \
        'keyUsage = critical, digitalSignature' 'extendedKeyUsage = serverAuth' >"$TLS/leaf.ext" &&
    openssl x509 -req -in "$TLS/leaf.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial -days 2 -sha256 \
        -extfile "$TLS/leaf.ext" -out "$TLS/leaf.crt" &&
    cat "$TLS/leaf.crt" "$TLS/ca.pem" >"$TLS/leaf.pem" &&
    openssl verify -CAfile "$TLS/ca.pem" "$TLS/leaf.crt"
} >"$OUT_DIR/logs/openssl.log" 2>&1 || die "certificate generation failed: $(tail -5 "$OUT_DIR/logs/openssl.log")"
chmod 644 "$TLS"/*   # nginx workers may run as nobody

# ------------------------------------------------------------ configs
nginx_conf() {  # TAG SERVER-BLOCKS
    cat <<EOF
worker_processes 1;
pid $OUT_DIR/tmp/$1.pid;
error_log $OUT_DIR/logs/$1.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $OUT_DIR/tmp/$1-cb; proxy_temp_path $OUT_DIR/tmp/$1-px; fastcgi_temp_path $OUT_DIR/tmp/$1-fc;
  uwsgi_temp_path $OUT_DIR/tmp/$1-uw; scgi_temp_path $OUT_DIR/tmp/$1-sc;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
$2
}
EOF
}
nginx_conf upstream "  server {
    listen 127.0.0.1:$UP_PORT default_server backlog=4096;
    location = / { default_type text/plain; return 200 \"ok\n\"; }
  }" >"$OUT_DIR/upstream.conf"
nginx_conf nginx "  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 128; keepalive_requests 1000000; keepalive_timeout 75s; }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl http2 default_server backlog=4096;
    server_name $SNI;
    ssl_certificate $TLS/leaf.pem;
    ssl_certificate_key $TLS/leaf.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host \$host;
    }
  }" >"$OUT_DIR/nginx.conf"
cat >"$OUT_DIR/tenantgate.toml" <<EOF
[gateway]
http_listen = "127.0.0.1:$TG_HTTP"
https_listen = "127.0.0.1:$TG_HTTPS"
base_domains = ["example.test"]
threads = 1
access_log = false

[admin]
listen = "127.0.0.1:$TG_ADMIN"
watch_config = false

[[certificates]]
cert = "$TLS/leaf.pem"
key = "$TLS/leaf.key"
default = true

[pools.bench]
upstreams = ["127.0.0.1:$UP_PORT"]

[tenants.bench]
pool = "bench"

${TG_EXTRA:-}
EOF
# wrk: SNI and the request come from the URL host (bench.example.test); connect to 127.0.0.1 instead of resolving it
cat >"$OUT_DIR/report.lua" <<'EOF'
function wrk.resolve(host, service) wrk.addrs = wrk.lookup("127.0.0.1", service) end
done = function(s, latency, requests)
  local e = s.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n", s.requests, s.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
EOF

# ------------------------------------------------------------ start
log "out dir $OUT_DIR; configs: ${CONFIGS[*]}; workloads: $WORKLOADS; rounds=$ROUNDS d=${DURATION}s; est ~${EST}s"
log "ports: upstream $UP_PORT, nginx $NGINX_PORT, tenantgate https $TG_HTTPS admin $TG_ADMIN; client+upstream on cpu $LOAD_CPU, proxy on cpu $PROXY_CPU"
for t in upstream nginx; do
    [[ $t == nginx && " $PROXIES " != *" nginx "* ]] && continue
    nginx -t -q -p "$OUT_DIR" -e "$OUT_DIR/logs/$t.error.log" -c "$OUT_DIR/$t.conf" >"$OUT_DIR/logs/$t.log" 2>&1 ||
        die "$t nginx config invalid: $(cat "$OUT_DIR/logs/$t.log")"
    [[ $t == upstream ]] && cpu=$LOAD_CPU || cpu=$PROXY_CPU
    start_proc "$t" "$cpu" nginx -p "$OUT_DIR" -e "$OUT_DIR/logs/$t.error.log" -c "$OUT_DIR/$t.conf" -g 'daemon off;'
    [[ $t == upstream ]] && { wait_ready upstream "$STARTED_PID" "$UP_PORT"; UPSTREAM_ROOT=$STARTED_PID; }
    [[ $t == nginx ]] && { wait_ready nginx "$STARTED_PID" "$NGINX_PORT"; ROOT[nginx]=$STARTED_PID; }
done
if [[ " $PROXIES " == *" tenantgate "* ]]; then
    "$TG_BIN" check --config "$OUT_DIR/tenantgate.toml" >"$OUT_DIR/logs/tenantgate-check.log" 2>&1 ||
        die "tenantgate check refuses $OUT_DIR/tenantgate.toml (binary older than the TLS support? BUILD=1 rebuilds):"$'\n'"$(cat "$OUT_DIR/logs/tenantgate-check.log")"
    start_proc tenantgate "$PROXY_CPU" "$TG_BIN" run --config "$OUT_DIR/tenantgate.toml"
    wait_ready tenantgate "$STARTED_PID" "$TG_HTTPS" "http://127.0.0.1:$TG_ADMIN/healthz"
    ROOT[tenantgate]=$STARTED_PID
fi

# ------------------------------------------------------------ sanity: body, chain + SAN against the CA, ALPN h2, resumption
url() { [[ $1 == direct ]] && echo "http://$SNI:${PORT[$1]}/" || echo "https://$SNI:${PORT[$1]}/"; }
TLSINFO=()
for c in "${CONFIGS[@]}"; do
    p=${PORT[$c]}
    out=$(curl -sS -m 5 --cacert "$TLS/ca.pem" --resolve "$SNI:$p:127.0.0.1" --http1.1 -w '|%{http_code}' "$(url "$c")" 2>&1) || true
    [[ $out == $'ok\n|200' ]] || die "$c: GET $(url "$c") over HTTP/1.1 gave '$(echo "$out" | tr '\n' ' ' | head -c 200)' (want 200 'ok')"
    [[ $c == direct ]] && continue
    out=$(curl -sS -m 5 --cacert "$TLS/ca.pem" --resolve "$SNI:$p:127.0.0.1" --http2 -w '|%{http_code}|%{http_version}' "$(url "$c")" 2>&1) || true
    [[ $out == $'ok\n|200|2' ]] || die "$c: GET over h2 (ALPN) gave '$(echo "$out" | tr '\n' ' ' | head -c 200)' (want 200 'ok' over HTTP/2)"
    req=$'GET / HTTP/1.1\r\nHost: '$SNI$'\r\nConnection: close\r\n\r\n'
    s1=$(printf '%s' "$req" | timeout 10 openssl s_client -connect "127.0.0.1:$p" -servername "$SNI" -sess_out "$OUT_DIR/tmp/$c.sess" -ign_eof 2>&1)
    s2=$(printf '%s' "$req" | timeout 10 openssl s_client -connect "127.0.0.1:$p" -servername "$SNI" -sess_in "$OUT_DIR/tmp/$c.sess" -ign_eof 2>&1)
    TLSINFO+=("$(printf '%-11s %s; session resumption on reconnect: %s' "$c" "$(grep -m1 -E '^(New|Reused),' <<<"$s1")" \
        "$(grep -q '^Reused,' <<<"$s2" && echo yes || echo no)")")
done
log "sanity checks passed (body, certificate chain + SAN via curl --cacert, ALPN h2)"

# ------------------------------------------------------------ measurement
ticks() { local t=0 p s; for p in "$@"; do s=$(cat /proc/"$p"/stat 2>/dev/null) || continue; s=${s##*) }; set -- $s; t=$((t + ${12} + ${13})); done; echo $t; }
self_ticks() { local s; s=$(cat /proc/$$/stat); s=${s##*) }; set -- $s; echo $((${12} + ${13} + ${14} + ${15})); }
box_ticks() { awk -v c="cpu${1:-}" '$1 == c { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }  # busy total
active_opens() { awk '/^Tcp:/ { if (h) { print $6; exit } h = 1 }' /proc/net/snmp; }
rss_kib() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/^VmRSS:/ { print $2 }' /proc/"$p"/status 2>/dev/null || echo 0))); done; echo $t; }
sampler() { local peak=0 r; trap 'kill $! 2>/dev/null; echo $peak; exit 0' TERM; while :; do r=$(rss_kib "$@"); ((r > peak)) && peak=$r; sleep 0.25 & wait $!; done; }

FAILED=()
measure() {  # ROUND WORKLOAD CONFIG DURATION RECORD(0/1)
    local r=$1 wl=$2 cfg=$3 dur=$4 rec=$5 p=${PORT[$3]} pids="" ours out spid= cpid crc res rss=0 t0 t1 b0 b1 l0 l1 o0 o1 a0 a1 w0 w1 line
    out=$OUT_DIR/runs/r$r-$wl-$cfg.txt
    [[ $cfg != direct ]] && { pids=$(tree_pids "${ROOT[$cfg]}" | tr '\n' ' '); for x in $pids; do [[ " ${TRACK[*]} " == *" $x:"* ]] || track "$x"; done; }
    ours=$(for x in "$UPSTREAM_ROOT" "${ROOT[@]}"; do tree_pids "$x"; done | tr '\n' ' ')
    [[ -n $pids ]] && { sampler $pids >"$out.rss" & spid=$!; track "$spid"; }
    b0=$(box_ticks); l0=$(box_ticks "$LOAD_CPU"); o0=$(($(ticks $ours) + $(self_ticks))); t0=$(ticks $pids); a0=$(active_opens); w0=$EPOCHREALTIME
    case $wl in
    h2) timeout -k 2 $((dur + 20)) h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$dur" --log-file="$out.log" \
            --connect-to="127.0.0.1:$p" "$(url "$cfg")" >"$out" 2>&1 & ;;
    *)  hdr=(); [[ $wl == new-connections ]] && hdr=(-H "Connection: close")
        timeout -k 2 $((dur + 20)) wrk -t1 -c"$CONNS" -d"${dur}s" --timeout 5s --latency -s "$OUT_DIR/report.lua" \
            -H "Host: $SNI" "${hdr[@]}" "$(url "$cfg")" >"$out" 2>&1 & ;;
    esac
    cpid=$!; track "$cpid"; wait "$cpid"; crc=$?
    w1=$EPOCHREALTIME; a1=$(active_opens); t1=$(ticks $pids); b1=$(box_ticks); l1=$(box_ticks "$LOAD_CPU"); o1=$(($(ticks $ours) + $(self_ticks)))
    [[ -n $spid ]] && { kill -TERM "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; rss=$(tail -1 "$out.rss"); }
    [[ $cfg != direct && $(proc_state "${ROOT[$cfg]}") == [XZ] ]] && { FAILED+=("$cfg died during r$r/$wl"); log "ERROR: $cfg died"; }
    if [[ $wl == h2 ]]; then  # RESULT line from h2load's summary + percentiles of its per-request log (3rd column, us)
        res=$(awk '/^finished in/ { gsub(/s,/, "", $3); d = $3 }
                   /^requests:/ { n = $8; f = $10 }  /^status codes:/ { bad = $7 + $9 }
                   END { if (d != "") printf "RESULT requests=%d duration_us=%d errors=%d", n, d * 1e6, f + bad }' "$out")
        [[ -n $res ]] && res+=$(awk '{ print $3 }' "$out.log" 2>/dev/null | sort -n | awk '{ a[NR] = $1 }
            END { i = int(NR * .5 + .5); j = int(NR * .99 + .5); printf " p50_us=%d p99_us=%d", (i ? a[i] : 0), (j ? a[j] : 0) }')
        rm -f "$out.log"
    else
        res=$(grep '^RESULT ' "$out")
    fi
    if [[ $crc != 0 || -z $res ]]; then FAILED+=("$cfg r$r/$wl: client rc=$crc"); log "ERROR: client failed for $cfg $wl: $(tail -3 "$out" | tr '\n' ' ')"; return; fi
    line=$(awk -v r="$r" -v w="$wl" -v c="$cfg" -v tk=$((t1 - t0)) -v hz="$CLK_TCK" -v wall="$w0 $w1" -v rss="${rss:-0}" \
        -v px="$([[ $cfg == direct ]] && echo 0 || echo 1)" -v o=$((o1 - o0)) -v box="$b0 $b1" -v lc="$l0 $l1" -v ao=$((a1 - a0)) '
        { for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
          split(wall, wt, " "); split(box, bt, " "); d = f["duration_us"] / 1e6
          split(lc, lt, " "); load = (lt[4] - lt[2]) ? 100 * (lt[3] - lt[1]) / (lt[4] - lt[2]) : 0
          x = bt[3] - bt[1] - o; if (x < 0) x = 0; other = (bt[4] - bt[2]) ? 100 * x / (bt[4] - bt[2]) : 0
          printf "%s,%s,%s,%.1f,%d,%d,%d,%d,%.1f,%d,%.0f,%.3f,%.0f\n", r, w, c, d ? f["requests"] / d : 0, f["p50_us"], f["p99_us"],
                 f["requests"], f["errors"], px ? 100 * tk / hz / (wt[2] - wt[1]) : -1, px ? rss : -1, other,
                 f["requests"] ? ao / f["requests"] : 0, load }' <<<"$res")
    ((rec)) || return
    echo "$line" >>"$RAW"
    IFS=, read -r _ _ _ rps p50 p99 _ errs cpu _ oth cpr ld <<<"$line"
    ((errs > 0)) && FAILED+=("$cfg r$r/$wl: $errs errors")
    log "r$r $(printf '%-15s %-10s' "$wl" "$cfg") rps=${rps%.*} p50=${p50}us p99=${p99}us cpu=${cpu/#-1.0/-}% load=$ld% errs=$errs conn/req=$cpr other=$oth%"
}

if ((WARMUP > 0)); then log "warm-up ${WARMUP}s per config"; for c in "${CONFIGS[@]}"; do measure 0 keepalive "$c" "$WARMUP" 0; done; fi
for ((r = 1; r <= ROUNDS; r++)); do
    for wl in $WORKLOADS; do for c in "${CONFIGS[@]}"; do
        [[ $wl == h2 && $c == direct ]] || measure "$r" "$wl" "$c" "$DURATION" 1
    done; done
done

# ------------------------------------------------------------ report
report() {
    awk -F, -v wl="$1" -v order="${CONFIGS[*]}" '
    function sorted(s, a,   n, i, j, t) { n = split(s, a, " ")
      for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }; return n }
    function med(s,   a, n) { n = sorted(s, a); return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    function mx(s,   a, n) { n = sorted(s, a); return a[n] }
    function mn(s,   a, n) { n = sorted(s, a); return a[1] }
    NR > 1 && $2 == wl { c = $3; seen[c] = 1; rps[c] = rps[c] " " $4; p50[c] = p50[c] " " $5; p99[c] = p99[c] " " $6
      err[c] += $8; cpu[c] = cpu[c] " " $9; rss[c] = rss[c] " " $10; oth[c] = oth[c] " " $11; cpr[c] = cpr[c] " " $12; ld[c] = ld[c] " " $13 }
    END {
      n = split(order, cfg, " "); for (i = 1; i <= n; i++) if (seen[cfg[i]]) m[cfg[i]] = med(rps[cfg[i]])
      printf "%-11s %9s %7s %8s %8s %6s %8s %8s %5s %8s %5s %6s\n", "name", "rps", "spread", "p50_ms", "p99_ms", "cpu%", "rss_MiB", "x_nginx", "errs", "conn/req", "load%", "other%"
      for (i = 1; i <= n; i++) { c = cfg[i]; if (!seen[c]) continue; cp = med(cpu[c]); r = mx(rss[c])
        printf "%-11s %9.0f %6.1f%% %8.3f %8.3f %6s %8s %8s %5d %8.2f %5.0f %6d\n", c, m[c], m[c] ? 100 * (mx(rps[c]) - mn(rps[c])) / m[c] : 0,
          med(p50[c]) / 1000, med(p99[c]) / 1000, cp < 0 ? "-" : sprintf("%.0f", cp), r < 0 ? "-" : sprintf("%.1f", r / 1024),
          m["nginx"] ? sprintf("%.3f", m[c] / m["nginx"]) : "-", err[c], med(cpr[c]), med(ld[c]), mx(oth[c]) }
    }' "$RAW"
}
echo
echo "https-compare: $(date -u +%FT%TZ) $(uname -r) ${NCPU} cpus; client+upstream on cpu $LOAD_CPU, proxy on cpu $PROXY_CPU (1 worker); rounds=$ROUNDS interleaved, medians; SNI $SNI, ECDSA P-256 cert"
for i in "${TLSINFO[@]}"; do echo "tls $i"; done
for wl in $WORKLOADS; do
    echo
    case $wl in
    keepalive) echo "== keepalive: HTTP/1.1 over TLS, wrk -t1 -c$CONNS -d${DURATION}s, GET / (3 B), connections reused (direct = plain HTTP to the upstream)" ;;
    new-connections) echo "== new-connections: wrk -t1 -c$CONNS -d${DURATION}s -H 'Connection: close': one request per TCP+TLS connection (wrk resumes TLS sessions; p50/p99 exclude connect+handshake)" ;;
    h2) echo "== h2: h2load -t1 -c$H2_CONNS -m$H2_STREAMS -D ${DURATION}s, HTTP/2 over TLS (ALPN), GET /" ;;
    esac
    report "$wl"
done
echo
echo "spread = (max-min)/median rps over rounds; cpu% = proxy process tree, 100 = one core; rss = peak summed VmRSS of the proxy tree;"
echo "conn/req = client TCP connects per request; load% = busy % of cpu $LOAD_CPU (client + upstream): near 100 with proxy cpu% well under 100"
echo "means the client, not the proxy, was the limit; other% = max CPU used by processes this script did not start (% of the box; >$OTHER_MAX = noisy, re-run)."
echo "raw per-run data: $RAW"
noisy=$(awk -F, -v m="$OTHER_MAX" 'NR > 1 && $11 > m' "$RAW" | wc -l)
((noisy > 0)) && log "WARNING: $noisy runs had other% > $OTHER_MAX: something else used the CPU; numbers are noisy"
if ((${#FAILED[@]})); then log "problems during load:"; printf '  %s\n' "${FAILED[@]}" >&2; exit 3; fi
exit 0
