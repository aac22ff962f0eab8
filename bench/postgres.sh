#!/usr/bin/env bash
# INSERT-to-browser benchmark of the PostgreSQL source, in NOTIFY and outbox modes.
#
# Rows are INSERTed into a table by herald-loadgen (--postgres-url); the table's
# trigger (installed with `herald pg trigger --apply`) notifies the hub or writes the
# outbox; the hub routes each row to the channel named by its `channel` column, and
# the load generator's SSE subscribers time each row from its INSERT (the `t` column,
# taken just before the statement is sent) to its delivery.
#
# The hub is pinned to core 0 and the load generator to core 1; PostgreSQL is not
# pinned. Everything runs on loopback, every run is bounded, and the script works in
# a schema of its own that it drops at the end. Each line of output is one run: the
# load generator's JSON report, plus the hub's CPU time over the run.
#
#   bench/postgres.sh [RUNS]          # default 1 run per workload
#   PGURL=postgres://postgres@127.0.0.1:5432/test ROWS=20000 SUBS=100 bench/postgres.sh
#   SYNC_COMMIT=off BATCH=100 bench/postgres.sh   # INSERTs without waiting for the disk
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
rows=${ROWS:-20000}
subs=${SUBS:-100}
channels=${CHANNELS:-10}
batch=${BATCH:-10}
publishers=${PUBLISHERS:-4}
paced=${PACED_RATE:-2000}
pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432/test}
# on: each INSERT waits for its WAL flush (the default); off: measure without the disk.
sync_commit=${SYNC_COMMIT:-on}
port=18091
schema=herald_bench_$$
export HERALD_JWT_SECRET=bench-secret-0123456789abcdef

command -v psql >/dev/null || { echo "psql is needed to create the benchmark table" >&2; exit 1; }
cargo build --release -q -p herald -p herald-loadgen
bin=${CARGO_TARGET_DIR:-target}/release
hub=$bin/herald
load=$bin/herald-loadgen
dir=$(mktemp -d)
sep='?'; case $pgurl in *\?*) sep='&';; esac
url="$pgurl${sep}options=-c%20search_path%3D$schema"

hub_pid=
stop_hub() {
  [ -n "$hub_pid" ] || return 0
  kill "$hub_pid" 2>/dev/null || true
  wait "$hub_pid" 2>/dev/null || true
  hub_pid=
}
cleanup() {
  stop_hub
  psql -q "$pgurl" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

psql -q -v ON_ERROR_STOP=1 "$pgurl" >/dev/null <<SQL
CREATE SCHEMA $schema;
CREATE TABLE $schema.herald_bench (
  id bigserial PRIMARY KEY,
  channel text NOT NULL,
  t bigint NOT NULL,
  s bigint NOT NULL,
  p text NOT NULL
);
SQL

# One hub configuration per mode: rows go to the channel their `channel` column names,
# with the fields the load generator reads.
config() {
  local mode=$1
  cat >"$dir/$mode.toml" <<TOML
listen = "127.0.0.1:$port"

[postgres]
url = "$url&application_name=herald_bench"
mode = "$mode"

[postgres.outbox]
table = "$schema.herald_outbox"
notify = "${schema}_wake"

[[postgres.routes]]
notify = "${schema}_rows"
channels = ["{channel}"]
fields = ["t", "s", "p"]
TOML
}

# Installs the trigger of `mode` on the table, replacing the other one.
trigger() {
  local mode=$1
  "$hub" pg trigger --table "$schema.herald_bench" --notify "${schema}_rows" --drop --apply --url "$url" >/dev/null 2>&1 || true
  "$hub" pg trigger --table "$schema.herald_bench" --notify "${schema}_rows" --outbox --drop --apply --url "$url" >/dev/null 2>&1 || true
  local extra=()
  [ "$mode" = outbox ] && extra=(--outbox --outbox-table "$schema.herald_outbox" --wake "${schema}_wake")
  "$hub" pg trigger --table "$schema.herald_bench" --notify "${schema}_rows" \
    --columns channel,t,s,p "${extra[@]}" --apply --url "$url" >/dev/null
}

start_hub() {
  HERALD_LOG=warn taskset -c 0 "$hub" serve --config "$dir/$1.toml" >/dev/null &
  hub_pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return; sleep 0.1; done
  echo "the hub did not become ready" >&2; exit 1
}

token=$("$hub" token --sub bench --subscribe '*' --ttl 3600)
run() {
  local name=$1 mode=$2; shift 2
  config "$mode"
  trigger "$mode"
  for i in $(seq 1 "$runs"); do
    psql -q "$pgurl" -c "TRUNCATE $schema.herald_bench; DROP TABLE IF EXISTS $schema.herald_outbox CASCADE" >/dev/null
    [ "$mode" = outbox ] && trigger "$mode"
    start_hub "$mode"
    report=$(taskset -c 1 "$load" --url "http://127.0.0.1:$port" --token "$token" --hub-pid "$hub_pid" \
      --threads 1 --json --quiet --connections "$subs" --channels "$channels" --events "$rows" \
      --payload-bytes 100 --batch "$batch" --publishers "$publishers" \
      --postgres-url "$url%20-c%20synchronous_commit%3D$sync_commit" --postgres-table "$schema.herald_bench" \
      --duration 120 --drain-timeout 30 --timeout 300 "$@" 2>/dev/null)
    # The hub's CPU time over the whole run (user + system), from /proc.
    cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$hub_pid/stat")
    printf '{"workload":"%s","run":%d,"sync_commit":"%s","hub_cpu_secs":%s,"report":%s}\n' \
      "$name" "$i" "$sync_commit" "$cpu" "$report"
    stop_hub
  done
}

run notify-max       notify
run notify-$paced/s  notify --rate "$paced"
run outbox-max       outbox
run outbox-$paced/s  outbox --rate "$paced"
