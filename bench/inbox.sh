#!/usr/bin/env bash
# Notification inbox benchmark on SQLite and PostgreSQL: seeds NOTIFICATIONS
# notifications over USERS users straight into the store, starts a release hub on
# it, then measures POST /api/notifications creates per second and the latency of
# GET /api/notifications?page=1&limit=50 and of the unread count over HTTP.
#
# Everything runs on loopback and is bounded (counts and a per-phase deadline). The
# SQLite file lives in a temporary directory; the PostgreSQL run works in a schema of
# its own that it drops at the end. Each line of output is one JSON report.
#
#   bench/inbox.sh                      # both stores, 1,000,000 over 100,000 users
#   STORES=sqlite NOTIFICATIONS=100000 USERS=10000 bench/inbox.sh
set -euo pipefail
cd "$(dirname "$0")/.."
stores=${STORES:-"sqlite postgres"}
notifications=${NOTIFICATIONS:-1000000}
users=${USERS:-100000}
creates=${CREATES:-20000}
lists=${LISTS:-20000}
concurrency=${CONCURRENCY:-32}
pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432/test}
port=18093
schema=herald_inbox_bench_$$
export HERALD_JWT_SECRET=bench-secret-0123456789abcdef

cargo build --release -q -p herald -p herald-loadgen
bin=${CARGO_TARGET_DIR:-target}/release
dir=$(mktemp -d)
hub_pid=
cleanup() {
  [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null || true
  rm -rf "$dir"
  if [[ $stores == *postgres* ]] && command -v psql >/dev/null; then
    psql -q "$pgurl" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

sep='?'; case $pgurl in *\?*) sep='&';; esac
for store in $stores; do
  case $store in
    sqlite)
      target="sqlite:$dir/inbox.db"
      export HERALD_STORE__KIND=sqlite HERALD_STORE__PATH="$dir/inbox.db";;
    postgres)
      psql -q "$pgurl" -c "CREATE SCHEMA $schema" >/dev/null
      target="$pgurl${sep}options=-c%20search_path%3D$schema"
      export HERALD_STORE__KIND=postgres HERALD_STORE__URL="$target";;
    *) echo "unknown store $store" >&2; exit 2;;
  esac
  "$bin/herald-inbox-bench" seed --store "$target" --users "$users" --notifications "$notifications" \
    | sed "s/^{/{\"store\":\"$store\",/"
  HERALD_LOG=warn HERALD_DEMO__ENABLED=false "$bin/herald" serve --listen 127.0.0.1:$port >/dev/null 2>"$dir/hub.log" &
  hub_pid=$!
  for _ in $(seq 100); do curl -fs http://127.0.0.1:$port/readyz >/dev/null && break; sleep 0.1; done
  "$bin/herald-inbox-bench" run --url http://127.0.0.1:$port --users "$users" --creates "$creates" \
    --lists "$lists" --concurrency "$concurrency" --label "$store"
  ps -o rss= -p "$hub_pid" | awk -v s="$store" '{printf "{\"store\":\"%s\",\"hub_rss_mb\":%.1f}\n", s, $1/1024}'
  kill "$hub_pid"; wait "$hub_pid" 2>/dev/null || true; hub_pid=
  if [ "$store" = sqlite ]; then
    du -m "$dir"/inbox.db* | awk '{s+=$1} END {printf "{\"store\":\"sqlite\",\"file_mb\":%d}\n", s}'
  fi
  unset HERALD_STORE__KIND HERALD_STORE__PATH HERALD_STORE__URL
done
