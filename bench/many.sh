#!/usr/bin/env bash
# As many connections as this machine holds, over several hubs: NODES hubs (6 by
# default) with 16 partitions over one private Redis, each with its own load
# generator process (a process may hold 20,000 open files here, so one cannot hold
# them all) opening CONNECTIONS / NODES SSE connections from its own loopback
# addresses, on channels of its own (`{nK}-room-I`), then publishing 1,000 events
# to them at 100/s. Every load generator reports lost and duplicated deliveries;
# each hub's RSS is read from /proc.
#
# The Redis server is private (its own port, no persistence) and killed at the end.
# Loopback only; every run is bounded by the load generators' event counts.
#
#   bench/many.sh [CONNECTIONS] [NODES]     # default 100000 over 6
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-100000}
nodes=${2:-6}
per_node=$(((connections + nodes - 1) / nodes))
export HERALD_JWT_SECRET=bench-secret-0123456789abcdef

cargo build --release -q -p herald -p herald-loadgen --bins
hub=./target/release/herald
load=./target/release/herald-loadgen
redis_port=26791
data=$(mktemp -d)
# shellcheck source=bench/lib.sh
. bench/lib.sh

ports=()
for k in $(seq 0 $((nodes - 1))); do ports+=($((28491 + k))); done
for port in "${ports[@]}" "$redis_port"; do port_free "$port"; done
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$data" >/dev/null &
services+=($!)
wait_port "$redis_port"

for port in "${ports[@]}"; do
  env HERALD_BROKER="redis://127.0.0.1:$redis_port" HERALD_REDIS__PREFIX=many \
    HERALD_REDIS__PARTITIONS=16 HERALD_LIMITS__MAX_CONNECTIONS=19500 \
    HERALD_LIMITS__MAX_CONNECTIONS_PER_IP=0 HERALD_LOG=error \
    "$hub" serve --listen "127.0.0.1:$port" >/dev/null &
  pids+=($!)
done
wait_ready "${ports[@]}"

token=$("$hub" token --sub bench --subscribe '*' --publish '*' --ttl 3600)
loads=()
for k in $(seq 0 $((nodes - 1))); do
  # Load generator k connects from 127.0.1k.2-9: its own source addresses.
  "$load" --url "http://127.0.0.1:${ports[$k]}" --token "$token" --json --quiet \
    --hub-pid "${pids[$k]}" --source-ips "127.0.$((10 + k)).2-127.0.$((10 + k)).9" \
    --connections "$per_node" --channels 50 --channel-prefix "{n$k}-room-" \
    --connect-concurrency 64 --connect-timeout 120 --events 1000 --rate 100 \
    --payload-bytes 100 --drain-timeout 60 --timeout 900 >"$data/load-$k.json" \
    2>"$data/load-$k.err" &
  loads+=($!)
done
for k in $(seq 0 $((nodes - 1))); do
  wait "${loads[$k]}" || { echo "load generator $k failed:" >&2; cat "$data/load-$k.err" >&2; exit 1; }
done
for k in $(seq 0 $((nodes - 1))); do
  rss_kb=$(awk '/^VmRSS/ { print $2 }' "/proc/${pids[$k]}/status")
  printf '{"workload":"many-connections","connections":%d,"nodes":%d,"node":%d,"load":"%s","hub_rss_kb":%d,"report":%s}\n' \
    "$connections" "$nodes" "$k" "$(cut -d' ' -f1-3 /proc/loadavg)" "$rss_kb" \
    "$(cat "$data/load-$k.json")"
done
