#!/usr/bin/env bash
# `make fleet-demo`: a fleet to try on one machine. Starts etcd on loopback (its data in
# target/fleet-demo, fresh each time), seeds it with the shipped config's routing table
# (`tenantgate apply`), and runs two gateways on one prefix, the first with the demo backends.
# Prints what to try; Ctrl-C stops everything it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

etcd=$(scripts/ensure-etcd.sh)
bin=target/debug/tenantgate
dir=target/fleet-demo
rm -rf "$dir"
mkdir -p "$dir"

pids=()
stop() {
    trap - INT TERM EXIT
    echo
    echo "stopping the fleet (PIDs ${pids[*]:-none})"
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap stop INT TERM EXIT

etcd_url=http://127.0.0.1:23790
"$etcd" --name fleet-demo --data-dir "$dir/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster fleet-demo=http://127.0.0.1:23800 \
    --max-txn-ops 10000 --logger zap --log-level error >"$dir/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/23790) 2>/dev/null && break
    sleep 0.1
done

for n in 1 2; do
    cat >"$dir/gateway-$n.toml" <<TOML
# Instance $n of the demo fleet: its own listeners; the routing table is the fleet's, in etcd.
[gateway]
http_listen = "127.0.0.1:808$n"

[admin]
listen = "127.0.0.1:990$n"

[store]
etcd = ["$etcd_url"]
prefix = "/tenantgate/demo"
instance = "gateway-$n"
TOML
done

echo "== seeding the store with the routing table of config/gateway.toml"
"$bin" apply --config config/gateway.toml --store "$dir/gateway-1.toml"

"$bin" demo --config "$dir/gateway-1.toml" >"$dir/gateway-1.log" 2>&1 &
pids+=($!)
"$bin" run --config "$dir/gateway-2.toml" >"$dir/gateway-2.log" 2>&1 &
pids+=($!)
for port in 9901 9902; do
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
done

cat <<TRY

tenantgate fleet demo: etcd $etcd_url, prefix /tenantgate/demo
  gateway-1  http 127.0.0.1:8081  admin 127.0.0.1:9901  (with the demo backends)
  gateway-2  http 127.0.0.1:8082  admin 127.0.0.1:9902
  logs and data in $dir

Try:
  curl -s -H 'Host: acme.yourapp.test' http://127.0.0.1:8082/hello      # through gateway-2: the shared pool
  curl -s -X POST http://127.0.0.1:9901/tenants/acme/promote -d '{"pool": "acme-dedicated"}'
                                                                        # promote acme through gateway-1
  curl -s -H 'Host: acme.yourapp.test' http://127.0.0.1:8082/hello      # through gateway-2: acme-dedicated
  curl -s http://127.0.0.1:9902/status                                  # gateway-2's store and revision
  $bin audit --store $dir/gateway-1.toml                                # the fleet's audit log
  $bin export --store $dir/gateway-1.toml                               # the fleet's table as a file

Ctrl-C stops everything.
TRY
wait -n "${pids[@]}" || true
