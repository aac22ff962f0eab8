#!/usr/bin/env bash
# Runs the fan-out workloads over WebSocket and over SSE, one after the other, against
# a release build of the hub: the hub pinned to core 0 and the load generator to core 1.
# Prints one JSON line per run: the workload, the transport, the machine's load average
# (from /proc/loadavg) before and after, and the herald-loadgen --json report.
# Loopback only; every run is bounded in events and time.
#
#   bench/ws-sse.sh [RUNS]     # default 1 run per workload and transport
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
export HERALD_JWT_SECRET=bench-secret-0123456789abcdef

cargo build --release -q -p herald -p herald-loadgen
hub=./target/release/herald
load=./target/release/herald-loadgen

hub_pid=
# A free port for each hub, and a check that the hub answering is ours: the machine
# may run other hubs.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_hub() {
  port=$(free_port)
  HERALD_LIMITS__MAX_CONNECTIONS=19000 HERALD_LOG=warn taskset -c 0 "$hub" serve --listen 127.0.0.1:$port >/dev/null &
  hub_pid=$!
  for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; then
      kill -0 "$hub_pid" 2>/dev/null && return
      break
    fi
    sleep 0.1
  done
  echo "the hub did not start on port $port" >&2; exit 1
}
stop_hub() {
  [ -n "$hub_pid" ] || return 0
  kill "$hub_pid" 2>/dev/null || true
  wait "$hub_pid" 2>/dev/null || true
  hub_pid=
}
trap stop_hub EXIT

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

token=$("$hub" token --sub bench --subscribe '*' --publish '*' --ttl 3600)
run() {
  local name=$1; shift
  for i in $(seq 1 "$runs"); do
    for transport in ws sse; do
      start_hub
      before=$(loadavg)
      report=$(taskset -c 1 "$load" --url "http://127.0.0.1:$port" --token "$token" --hub-pid "$hub_pid" \
        --transport "$transport" --threads 1 --json --quiet --timeout 120 "$@" 2>/dev/null)
      after=$(loadavg)
      printf '{"workload":"%s","transport":"%s","run":%d,"loadavg_before":"%s","loadavg_after":"%s","report":%s}\n' \
        "$name" "$transport" "$i" "$before" "$after" "$report"
      stop_hub
    done
  done
}

run idle-10k          --connections 10000 --channels 1 --idle --idle-secs 5
run fanout-10k-100/s  --connections 10000 --channels 1 --events 1000 --rate 100 --payload-bytes 100
run 1k-10ch-50/s      --connections 1000 --channels 10 --events 1000 --rate 50 --payload-bytes 100
