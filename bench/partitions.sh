#!/usr/bin/env bash
# What each node receives from Redis when its clients are on a third of the channels:
# three hubs over one private Redis, with one partition and with PARTITIONS. The
# clients of hub k subscribe to channels of their own (`{nK}-room-I`, all in the
# partition of the tag `nK`), and hub k's load generator publishes to them; the three
# load generators run at once. Each node then reports, from its /metrics, the events
# and the bytes it read from Redis. With one partition every node reads every event
# of the deployment; with partitions, each reads what its clients need.
#
# The Redis server is private (its own port, no persistence) and killed at the end.
# Loopback only; every run is bounded by the load generator's event count.
#
#   bench/partitions.sh [PARTITIONS] [RUNS]     # default 16 partitions, 1 run
set -euo pipefail
cd "$(dirname "$0")/.."
partitions=${1:-16}
runs=${2:-1}
export HERALD_JWT_SECRET=bench-secret-0123456789abcdef

cargo build --release -q -p herald -p herald-loadgen --bins
hub=./target/release/herald
load=./target/release/herald-loadgen
ports=(28291 28292 28293)
redis_port=26591
data=$(mktemp -d)
# shellcheck source=bench/lib.sh
. bench/lib.sh

for port in "${ports[@]}" "$redis_port"; do port_free "$port"; done
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$data" >/dev/null &
services+=($!)
wait_port "$redis_port"

# Three tags in three different partitions (`$broadcast` and `$presence`, which every
# node with connections follows, have a partition of their own).
tags=$(python3 - "$partitions" <<'EOF'
import sys
count = int(sys.argv[1])
def fnv1a(text):
    h = 0xcbf29ce484222325
    for b in text.encode():
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h
taken = set()
tags = []
for i in range(10000):
    p = fnv1a(f"n{i}") % count
    if p not in taken:
        taken.add(p)
        tags.append(f"n{i}")
        if len(tags) == 3:
            break
print(" ".join(tags))
EOF
)
read -r -a tags <<<"$tags"

metric() { # port name -> the sum of the metric's values
  curl -sf "http://127.0.0.1:$1/metrics" |
    awk -v name="$2" '$1 == name || index($1, name "{") == 1 { sum += $2 } END { print sum + 0 }'
}

token=$("$hub" token --sub bench --subscribe '*' --publish '*' --ttl 3600)
serial=0
for run in $(seq 1 "$runs"); do
  for p in 1 "$partitions"; do
    serial=$((serial + 1))
    for port in "${ports[@]}"; do
      env HERALD_BROKER="redis://127.0.0.1:$redis_port" HERALD_REDIS__PREFIX="part$serial" \
        HERALD_REDIS__PARTITIONS="$p" HERALD_LIMITS__MAX_CONNECTIONS=19000 HERALD_LOG=error \
        "$hub" serve --listen "127.0.0.1:$port" >/dev/null &
      pids+=($!)
    done
    wait_ready "${ports[@]}"
    loads=()
    for k in 0 1 2; do
      "$load" --url "http://127.0.0.1:${ports[$k]}" --token "$token" --json --quiet \
        --connections 1000 --channels 30 --channel-prefix "{${tags[$k]}}-room-" \
        --events 3000 --rate 300 --payload-bytes 100 >"$data/load-$k.json" 2>"$data/load-$k.err" &
      loads+=($!)
    done
    for k in 0 1 2; do
      wait "${loads[$k]}" || { echo "load generator $k failed:" >&2; cat "$data/load-$k.err" >&2; exit 1; }
    done
    for k in 0 1 2; do
      port=${ports[$k]}
      events=$(metric "$port" herald_broker_received_events_total)
      bytes=$(metric "$port" herald_broker_received_bytes_total)
      followed=$(metric "$port" herald_broker_partitions_followed)
      printf '{"workload":"third-of-channels","partitions":%d,"node":%d,"run":%d,"load":"%s","published":%d,"received_events":%d,"received_bytes":%d,"partitions_followed":%d,"report":%s}\n' \
        "$p" "$k" "$run" "$(cut -d' ' -f1-3 /proc/loadavg)" 9000 "$events" "$bytes" "$followed" \
        "$(cat "$data/load-$k.json")"
    done
    stop_hubs
  done
done
