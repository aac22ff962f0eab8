#!/usr/bin/env bash
# Fan-out and publishing through three hub nodes on this machine over Redis, over
# Redis with histories sharded on two servers, and over NATS (JetStream), beside one
# node with the memory broker. Prints one JSON report per run (from
# herald-loadgen --json) with the broker and the number of nodes.
#
# The brokers are private servers started by this script on their own ports and
# data directories (Redis without persistence, NATS with file storage) and killed at
# the end, so nothing is left behind. Loopback only; every run is bounded.
#
#   bench/nodes.sh [RUNS] [BROKERS...]     # default 1 run; memory redis sharded nats
#                                           # (also redis16, nats16: 16 partitions)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
shift || true
brokers=("$@")
[ ${#brokers[@]} -gt 0 ] || brokers=(memory redis sharded nats)
export HERALD_JWT_SECRET=bench-secret-0123456789abcdef

cargo build --release -q -p herald -p herald-loadgen
hub=./target/release/herald
load=./target/release/herald-loadgen
# Ports of their own, away from those of the other bench scripts; each is checked
# to be free before use, and each hub to be alive once ready, so a run never talks
# to a process it did not start.
ports=(28191 28192 28193)
redis_ports=(26391 26392)
nats_port=24291
data=$(mktemp -d)

# shellcheck source=bench/lib.sh
. bench/lib.sh

for port in "${ports[@]}" "${redis_ports[@]}" "$nats_port"; do port_free "$port"; done
for port in "${redis_ports[@]}"; do
  mkdir -p "$data/redis-$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$data/redis-$port" >/dev/null &
  services+=($!)
  wait_port "$port"
done
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$data/nats" >/dev/null 2>&1 &
services+=($!)
wait_port "$nats_port"

# The environment of a node over broker $1; each run gets a fresh prefix or stream.
broker_env() {
  local run=$2
  case $1 in
    memory) echo "HERALD_BROKER=memory" ;;
    redis) echo "HERALD_BROKER=redis://127.0.0.1:${redis_ports[0]} HERALD_REDIS__PREFIX=bench$run" ;;
    sharded) echo "HERALD_BROKER=redis HERALD_REDIS__PREFIX=bench$run HERALD_REDIS__SHARDS=redis://127.0.0.1:${redis_ports[0]},redis://127.0.0.1:${redis_ports[1]}" ;;
    nats) echo "HERALD_BROKER=nats://127.0.0.1:$nats_port HERALD_NATS__STREAM=BENCH$run HERALD_NATS__SUBJECT=bench$run.events" ;;
    redis16) echo "$(broker_env redis "$run") HERALD_REDIS__PARTITIONS=16" ;;
    nats16) echo "$(broker_env nats "$run") HERALD_NATS__PARTITIONS=16" ;;
  esac
}

start_hubs() {
  local broker=$1 nodes=$2 run=$3
  for port in "${ports[@]:0:$nodes}"; do
    port_free "$port"
    env $(broker_env "$broker" "$run") HERALD_LIMITS__MAX_CONNECTIONS=19000 HERALD_LOG=error \
      "$hub" serve --listen "127.0.0.1:$port" >/dev/null &
    pids+=($!)
  done
  wait_ready "${ports[@]:0:$nodes}"
}

token=$("$hub" token --sub bench --subscribe '*' --publish '*' --ttl 3600)
serial=0
run() {
  local name=$1; shift
  for broker in "${brokers[@]}"; do
    local nodes=3
    [ "$broker" = memory ] && nodes=1
    local urls
    urls=$(printf 'http://127.0.0.1:%s,' "${ports[@]:0:$nodes}")
    for i in $(seq 1 "$runs"); do
      serial=$((serial + 1))
      start_hubs "$broker" "$nodes" "$serial"
      report=$("$load" --urls "${urls%,}" --token "$token" --json --quiet "$@" 2>/dev/null)
      printf '{"workload":"%s","broker":"%s","nodes":%d,"run":%d,"load":"%s","report":%s}\n' \
        "$name" "$broker" "$nodes" "$i" "$(cut -d' ' -f1-3 /proc/loadavg)" "$report"
      stop_hubs
    done
  done
}

run fanout-3k-100/s   --connections 3000 --channels 1 --events 1000 --rate 100 --payload-bytes 100
run fanout-3k-max     --connections 3000 --channels 1 --events 2000 --payload-bytes 100 --publishers 1 --pipeline 1
run 3k-30ch-300/s     --connections 3000 --channels 30 --events 3000 --rate 300 --payload-bytes 100
run publish-300ch-max --connections 300 --channels 300 --events 20000 --payload-bytes 100 --publishers 4 --pipeline 4
