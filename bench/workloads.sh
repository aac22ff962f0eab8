#!/usr/bin/env bash
# Runs the standard load workloads against a release build of the hub, the hub
# pinned to core 0 and the load generator to core 1, and prints one JSON report
# per workload (from herald-loadgen --json). Loopback only; every run is bounded.
#
#   bench/workloads.sh [RUNS]     # default 1 run per workload
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
port=18090
export HERALD_JWT_SECRET=bench-secret-0123456789abcdef

cargo build --release -q -p herald -p herald-loadgen
hub=./target/release/herald
load=./target/release/herald-loadgen

start_hub() {
  HERALD_LIMITS__MAX_CONNECTIONS=19000 HERALD_LOG=warn taskset -c 0 "$hub" serve --listen 127.0.0.1:$port >/dev/null &
  hub_pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.1; done
  echo "the hub did not start" >&2; exit 1
}
hub_pid=
stop_hub() {
  [ -n "$hub_pid" ] || return 0
  kill "$hub_pid" 2>/dev/null || true
  wait "$hub_pid" 2>/dev/null || true
  hub_pid=
}
trap stop_hub EXIT

token=$("$hub" token --sub bench --subscribe '*' --publish '*' --ttl 3600)
run() {
  local name=$1; shift
  for i in $(seq 1 "$runs"); do
    start_hub
    report=$(taskset -c 1 "$load" --url "http://127.0.0.1:$port" --token "$token" --hub-pid "$hub_pid" \
      --threads 1 --json --quiet "$@" 2>/dev/null)
    printf '{"workload":"%s","run":%d,"report":%s}\n' "$name" "$i" "$report"
    stop_hub
  done
}

run idle-10k          --connections 10000 --channels 1 --idle --idle-secs 5
run fanout-10k-max    --connections 10000 --channels 1 --events 2000 --payload-bytes 100 --publishers 1 --pipeline 1
run fanout-10k-100/s  --connections 10000 --channels 1 --events 1000 --rate 100 --payload-bytes 100
run 1k-10ch-50/s      --connections 1000 --channels 10 --events 1000 --rate 50 --payload-bytes 100
