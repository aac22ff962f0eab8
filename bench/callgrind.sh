#!/usr/bin/env bash
# Instruction counts of the hub over a small, fixed piece of workload (c): CONNECTIONS
# subscribers on a channel each, then one publish to each channel. valgrind's callgrind
# counts instructions, not seconds, so the figure repeats for the same binary whatever
# else the machine is doing; it decides where timed runs are within their noise.
#
#   bench/callgrind.sh [HERALD_BINARY...]      # default ./target/release/herald
#   CONNECTIONS=300 TOP=40 bench/callgrind.sh target/release/herald ../before/herald
#
# Prints the total per binary and the TOP functions by inclusive count; the raw
# callgrind.out files stay in a temporary folder named on stderr.
set -eu
cd "$(dirname "$0")/.."

connections=${CONNECTIONS:-300}
top=${TOP:-30}
command -v valgrind >/dev/null || { echo "SKIP: valgrind is not installed" >&2; exit 0; }
cargo build --release -q -p herald -p herald-loadgen --bins
load=./target/release/herald-loadgen
[ $# -gt 0 ] || set -- ./target/release/herald
export HERALD_JWT_SECRET=bench-secret-0123456789abcdef
token=$(./target/release/herald token --sub bench --subscribe '*' --publish '*' --ttl 7200)
out=$(mktemp -d)
echo "callgrind output in $out" >&2

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

n=0
for bin in "$@"; do
  n=$((n + 1))
  port=$(free_port)
  file="$out/callgrind.$n.out"
  HERALD_LOG=warn valgrind -q --tool=callgrind --callgrind-out-file="$file" \
    "$bin" serve --listen "127.0.0.1:$port" >"$out/hub.$n.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$load" --url "http://127.0.0.1:$port" --token "$token" --threads 1 --quiet \
    --connect-timeout 60 --connections "$connections" --channel-per-connection \
    --each-channel-once --payload-bytes 100 --publishers 4 --pipeline 16 >"$out/load.$n.txt"
  kill -INT "$pid"
  wait "$pid" || true
  total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {print $1; exit}')
  echo "== $bin: $total instructions ($connections connections, $connections publishes)"
  callgrind_annotate --inclusive=yes "$file" 2>/dev/null |
    grep -E '^ *[0-9,]+ \(' | head -n "$top" | cut -c1-160 || true
done
