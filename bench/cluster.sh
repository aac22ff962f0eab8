#!/usr/bin/env bash
# Publishes per second over a Redis Cluster of one primary and of three, side by
# side: three hubs with `redis.cluster` and PARTITIONS partitions, publishers spread
# over the hubs as fast as they go (workload "publish-300ch-max" of bench/nodes.sh),
# 300 subscribers so every event is also delivered. Besides the load generator's
# report, each run records the CPU seconds every Redis primary and every hub used,
# read from /proc, so a figure capped by this machine's cores shows as such.
#
# The cluster's servers are private (their own ports, no persistence) and killed at
# the end. Loopback only; every run is bounded by the load generator's event count.
#
#   bench/cluster.sh [PARTITIONS] [RUNS]     # default 16 partitions, 1 run
set -euo pipefail
cd "$(dirname "$0")/.."
partitions=${1:-16}
runs=${2:-1}
export HERALD_JWT_SECRET=bench-secret-0123456789abcdef

cargo build --release -q -p herald -p herald-loadgen --bins
hub=./target/release/herald
load=./target/release/herald-loadgen
ports=(28391 28392 28393)
redis_ports=(26691 26692 26693)
data=$(mktemp -d)
# shellcheck source=bench/lib.sh
. bench/lib.sh

for port in "${ports[@]}" "${redis_ports[@]}"; do
  port_free "$port"
  port_free $((port + 10000))
done

# Starts a cluster of $1 primaries (no replicas) on the first of redis_ports.
start_cluster() {
  local count=$1 nodes=()
  for port in "${redis_ports[@]:0:$count}"; do
    mkdir -p "$data/$port"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --cluster-enabled yes --cluster-config-file nodes.conf --dir "$data/$port" >/dev/null &
    services+=($!)
    wait_port "$port"
    nodes+=("127.0.0.1:$port")
  done
  if [ "$count" = 1 ]; then
    # `redis-cli --cluster create` wants three primaries: give the one every slot.
    redis-cli -p "${redis_ports[0]}" cluster addslotsrange 0 16383 >/dev/null
  else
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  fi
  for port in "${redis_ports[@]:0:$count}"; do
    for _ in $(seq 1 100); do
      redis-cli -p "$port" cluster info | grep -q cluster_state:ok && continue 2
      sleep 0.1
    done
    echo "the cluster did not form" >&2; exit 1
  done
}

# CPU seconds (user + system) the processes $@ have used.
cpu_seconds() {
  local ticks=0
  for pid in "$@"; do
    ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo "scale=2; $ticks / $(getconf CLK_TCK)" | bc
}

token=$("$hub" token --sub bench --subscribe '*' --publish '*' --ttl 3600)
urls=$(printf 'http://127.0.0.1:%s,' "${ports[@]}")
serial=0
for run in $(seq 1 "$runs"); do
  for primaries in 1 3; do
    serial=$((serial + 1))
    start_cluster "$primaries"
    seeds=$(printf 'redis://127.0.0.1:%s,' "${redis_ports[@]:0:$primaries}")
    for port in "${ports[@]}"; do
      env HERALD_BROKER="${seeds%,}" HERALD_REDIS__CLUSTER=true HERALD_REDIS__PREFIX="cl$serial" \
        HERALD_REDIS__PARTITIONS="$partitions" HERALD_LIMITS__MAX_CONNECTIONS=19000 \
        HERALD_LOG=error "$hub" serve --listen "127.0.0.1:$port" >/dev/null &
      pids+=($!)
    done
    wait_ready "${ports[@]}"
    redis_before=$(cpu_seconds "${services[@]}")
    hubs_before=$(cpu_seconds "${pids[@]}")
    report=$("$load" --urls "${urls%,}" --token "$token" --json --quiet --connections 300 \
      --channels 300 --events 30000 --payload-bytes 100 --publishers 6 --pipeline 4 2>/dev/null)
    redis_cpu=$(echo "$(cpu_seconds "${services[@]}") - $redis_before" | bc)
    hubs_cpu=$(echo "$(cpu_seconds "${pids[@]}") - $hubs_before" | bc)
    printf '{"workload":"publish-300ch-max","primaries":%d,"partitions":%d,"run":%d,"load":"%s","redis_cpu_s":%s,"hubs_cpu_s":%s,"report":%s}\n' \
      "$primaries" "$partitions" "$run" "$(cut -d' ' -f1-3 /proc/loadavg)" "$redis_cpu" \
      "$hubs_cpu" "$report"
    stop_hubs
    stop_services
    rm -rf "${data:?}"/*
  done
done
