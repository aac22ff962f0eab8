#!/usr/bin/env bash
# Herald beside nginx + Nchan: the same load generator, the same workloads, the same
# machine, in one run. Each server in turn is pinned to core 0 and the load generator
# to core 1; every workload runs RUNS times per server (interleaved, a fresh server
# for each run) and the medians, spread and Herald/Nchan ratios go to a markdown
# table. Then the scale runs: one Herald node at its open-file limit, and three nodes
# sharing Redis with several load-generator processes on 127.0.0.x source addresses.
#
#   bench/nchan.sh [RUNS]                  # default 3 runs per workload and server
#   WORKLOADS="floor a b c d scale1 scale3" bench/nchan.sh 3
#   HERALD_BEFORE=/path/to/older/herald WORKLOADS="a b c d" bench/nchan.sh 3
#
# With HERALD_BEFORE, an older build of Herald (the binary at that path) runs each
# workload too, interleaved with the others, and a second table compares the two
# builds: how a change moved each figure, measured side by side in one run.
#
# Output: raw reports in bench/results-YYYYMMDD-nchan.jsonl (one JSON object per run),
# the table in bench/nchan-YYYYMMDD.md, and the same table between the
# `<!-- nchan:begin -->` / `<!-- nchan:end -->` markers of docs/benchmarks.md.
#
# Needs nginx with the Nchan module (Debian: nginx-light, libnginx-mod-nchan); when
# they are missing they are installed with apt-get if this runs as root, otherwise
# the script stops with a SKIP message. Loopback only; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
workloads=${WORKLOADS:-floor a b c d scale1 scale3}
events_b=${EVENTS_B:-200}
events_d=${EVENTS_D:-500}
day=$(date -u +%Y%m%d)
raw=bench/results-$day-nchan.jsonl
table=bench/nchan-$day.md
nchan_module=/usr/lib/nginx/modules/ngx_nchan_module.so
export HERALD_JWT_SECRET=bench-secret-0123456789abcdef

say() { printf '%s\n' "$*" >&2; }

# --- nginx + Nchan ------------------------------------------------------------------
if ! command -v nginx >/dev/null || [ ! -f "$nchan_module" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing nginx-light and libnginx-mod-nchan"
    # Keep the package's own nginx service from starting on port 80.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light libnginx-mod-nchan >&2 || true
    rm -f /usr/sbin/policy-rc.d
  fi
  if ! command -v nginx >/dev/null || [ ! -f "$nchan_module" ]; then
    say "SKIP: nginx with the Nchan module is not installed and could not be installed"
    say "      (apt-get install nginx-light libnginx-mod-nchan, as root)"
    exit 0
  fi
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cargo build --release -q -p herald -p herald-loadgen --bins
hub=./target/release/herald
load=./target/release/herald-loadgen
floor=./target/release/herald-floor
token=$("$hub" token --sub bench --subscribe '*' --publish '*' --ttl 7200)

servers="herald nchan"
if [ -n "${HERALD_BEFORE:-}" ]; then
  [ -x "$HERALD_BEFORE" ] || { say "HERALD_BEFORE=$HERALD_BEFORE is not an executable"; exit 1; }
  servers="herald before nchan"
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'cleanup; rm -rf "$tmp"' EXIT

wait_http() { # url
  for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  say "no answer from $1"; return 1
}

# --- servers ------------------------------------------------------------------------
server_pid=
start_herald() { # port [extra env...]
  local port=$1; shift
  env HERALD_LIMITS__MAX_CONNECTIONS=19000 HERALD_LOG=warn "$@" \
    taskset -c 0 "$hub" serve --listen "127.0.0.1:$port" >"$tmp/herald-$port.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  wait_http "http://127.0.0.1:$port/healthz"
}

nginx_conf() { # port
  mkdir -p "$tmp/nginx"
  cat >"$tmp/nginx/nginx.conf" <<EOF
load_module $nchan_module;
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 19900; multi_accept on; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 600s;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  nchan_shared_memory_size 512M;
  server {
    listen 127.0.0.1:$1 backlog=4096;
    # EventSource subscribers: GET /sub/CHANNEL
    location ~ ^/sub/(.+)\$ {
      nchan_subscriber eventsource;
      nchan_channel_id \$1;
      nchan_subscriber_first_message oldest;
    }
    # Publishers: POST /pub?id=CHANNEL with the event data as the body. The message
    # buffer keeps every event of a run, so a subscriber never misses one.
    location = /pub {
      nchan_publisher;
      nchan_channel_id \$arg_id;
      nchan_message_buffer_length 4096;
      nchan_message_timeout 10m;
    }
  }
}
EOF
}

start_before() { # port
  local port=$1
  env HERALD_LIMITS__MAX_CONNECTIONS=19000 HERALD_LOG=warn \
    taskset -c 0 "$HERALD_BEFORE" serve --listen "127.0.0.1:$port" >"$tmp/before-$port.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  wait_http "http://127.0.0.1:$port/healthz"
}

start_nchan() { # port
  nginx_conf "$1"
  taskset -c 0 nginx -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" >"$tmp/nginx/stdout.log" 2>&1 &
  local master=$!
  pids+=("$master")
  wait_http "http://127.0.0.1:$1/pub?id=probe"
  # The worker is the process that holds the connections and the RSS.
  server_pid=
  for _ in $(seq 1 100); do
    server_pid=$(pgrep -P "$master" | head -n1 || true)
    [ -n "$server_pid" ] && return 0
    sleep 0.1
  done
  say "nginx started no worker"; return 1
}

stop_servers() { cleanup; server_pid=; }

# --- one measured run ---------------------------------------------------------------
loadgen() { # server port args...
  local server=$1 port=$2; shift 2
  local common=(--url "http://127.0.0.1:$port" --hub-pid "$server_pid" --threads 1 --json --quiet
    --connect-timeout 30)
  if [ "$server" != nchan ]; then
    taskset -c 1 "$load" "${common[@]}" --token "$token" "$@" 2>"$tmp/loadgen.err"
  else
    taskset -c 1 "$load" "${common[@]}" --subscribe-path '/sub/{channel}' \
      --publish-path '/pub?id={channel}' --publish-format raw --ready-on headers \
      "$@" 2>"$tmp/loadgen.err"
  fi
}

run_one() { # workload run server args...
  local name=$1 i=$2 server=$3; shift 3
  local port; port=$(free_port)
  case $server in
    herald) start_herald "$port" ;;
    before) start_before "$port" ;;
    *) start_nchan "$port" ;;
  esac
  local report
  if ! report=$(loadgen "$server" "$port" "$@"); then
    say "$server $name run $i failed:"; cat "$tmp/loadgen.err" >&2
    report='null'
  fi
  printf '{"workload":"%s","server":"%s","run":%d,"load":"%s","report":%s}\n' \
    "$name" "$server" "$i" "$(cut -d' ' -f1-3 /proc/loadavg)" "$report" >>"$raw"
  say "$(date -u +%H:%M:%S) $name $server run $i done (load $(cut -d' ' -f1 /proc/loadavg))"
  stop_servers
}

args_a=(--connections 10000 --channels 1 --idle --idle-secs 5)
args_b=(--connections 10000 --channels 1 --events "$events_b" --payload-bytes 100 --publishers 1
  --pipeline 1 --drain-timeout 60)
args_c=(--connections 10000 --channel-per-connection --each-channel-once --payload-bytes 100
  --publishers 4 --pipeline 16 --drain-timeout 30)
args_d=(--connections 1000 --channels 10 --events "$events_d" --rate 50 --payload-bytes 100)

: >"$raw"
say "machine: $(nproc) cores, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"

# --- the machine's floor -----------------------------------------------------------
# With no hub at all, a plain loop writing one 150-byte frame to each of 10,000
# loopback sockets, read on the other core: the least time a one-core server needs to
# reach 10,000 subscribers, so the least latency it can show over them.
floor_run() { # run
  local port report
  port=$(free_port)
  taskset -c 0 "$floor" writes --listen "127.0.0.1:$port" --connections 10000 --rounds 10 \
    >"$tmp/floor.json" 2>"$tmp/floor.err" &
  local writer=$!
  pids+=("$writer")
  sleep 0.3
  taskset -c 1 "$floor" read --connect "127.0.0.1:$port" --connections 10000 --timeout 120 \
    2>>"$tmp/floor.err" || true
  wait "$writer" || true
  report=$(cat "$tmp/floor.json"); [ -n "$report" ] || report=null
  printf '{"workload":"floor_writes","server":"floor","run":%d,"load":"%s","report":%s}\n' \
    "$1" "$(cut -d' ' -f1-3 /proc/loadavg)" "$report" >>"$raw"
  stop_servers
  say "$(date -u +%H:%M:%S) floor run $1 done"
}

for i in $(seq 1 "$runs"); do
  case " $workloads " in *" floor "*) floor_run "$i" ;; esac
  for w in a b c d; do
    case " $workloads " in *" $w "*) ;; *) continue ;; esac
    declare -n args="args_$w"
    for server in $servers; do run_one "$w" "$i" "$server" "${args[@]}"; done
    unset -n args
  done
done

# --- scale --------------------------------------------------------------------------
rss_sum() { # pids...
  local total=0 kb
  for p in "$@"; do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  echo $((total * 1024))
}

# Runs loadgen processes (one per source range) against URLS at once, sampling the
# hubs' summed RSS meanwhile; writes one line per process and one with the peak RSS.
scale_run() { # name urls per_process hub_pids_var ranges...
  local name=$1 urls=$2 per=$3; shift 3
  local -n hubs=$1; shift
  local before; before=$(rss_sum "${hubs[@]}")
  local peak=$before k=0 lpids=()
  for range in "$@"; do
    taskset -c 1 "$load" --urls "$urls" --token "$token" --threads 1 --json --quiet \
      --connections "$per" --channels 100 --channel-prefix "s$k-" --events 1000 --rate 100 \
      --payload-bytes 100 --source-ips "$range" --connect-timeout 60 --connect-concurrency 128 \
      --drain-timeout 30 >"$tmp/scale-$k.json" 2>"$tmp/scale-$k.err" &
    lpids+=($!)
    k=$((k + 1))
  done
  local running=1 now
  while [ $running = 1 ]; do
    running=0
    for p in "${lpids[@]}"; do kill -0 "$p" 2>/dev/null && running=1; done
    now=$(rss_sum "${hubs[@]}")
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.5
  done
  for p in "${lpids[@]}"; do wait "$p" || true; done
  for j in $(seq 0 $((k - 1))); do
    local report; report=$(cat "$tmp/scale-$j.json")
    [ -n "$report" ] || { say "scale loadgen $j failed:"; cat "$tmp/scale-$j.err" >&2; report=null; }
    printf '{"workload":"%s","server":"herald","run":1,"process":%d,"load":"%s","report":%s}\n' \
      "$name" "$j" "$(cut -d' ' -f1-3 /proc/loadavg)" "$report" >>"$raw"
  done
  printf '{"workload":"%s","server":"herald","run":1,"rss_before_bytes":%d,"rss_peak_bytes":%d}\n' \
    "$name" "$before" "$peak" >>"$raw"
}

case " $workloads " in *" scale1 "*)
  port=$(free_port)
  # Ask for more than the open-file limit allows: the hub lowers it and says so.
  start_herald "$port" HERALD_LIMITS__MAX_CONNECTIONS=50000
  grep -i "open-file" "$tmp/herald-$port.log" >&2 || say "(no open-file message from the hub)"
  one=("$server_pid")
  scale_run scale1 "http://127.0.0.1:$port" 9950 one 127.0.0.2-127.0.0.5 127.0.0.6-127.0.0.9
  stop_servers
  say "$(date -u +%H:%M:%S) scale1 done"
;; esac

case " $workloads " in *" scale3 "*)
  if redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    prefix=nchanbench$$
    nodes=() urls=""
    for _ in 1 2 3; do
      port=$(free_port)
      start_herald "$port" HERALD_BROKER=redis://127.0.0.1:6379 HERALD_REDIS__PREFIX=$prefix
      nodes+=("$server_pid")
      urls="${urls:+$urls,}http://127.0.0.1:$port"
    done
    scale_run scale3 "$urls" 12500 nodes 127.0.0.10-127.0.0.13 127.0.0.14-127.0.0.17 \
      127.0.0.18-127.0.0.21 127.0.0.22-127.0.0.25
    stop_servers
    redis-cli -h 127.0.0.1 --scan --pattern "{$prefix}:*" | xargs -r redis-cli -h 127.0.0.1 DEL >/dev/null
    say "$(date -u +%H:%M:%S) scale3 done"
  else
    say "SKIP scale3: no Redis on 127.0.0.1:6379"
  fi
;; esac

# --- the table ----------------------------------------------------------------------
python3 bench/nchan_table.py "$raw" "$runs" "$events_b" "$events_d" >"$table"
python3 - "$table" docs/benchmarks.md <<'EOF'
import sys
table, doc = open(sys.argv[1]).read(), sys.argv[2]
text = open(doc).read()
begin, end = "<!-- nchan:begin -->", "<!-- nchan:end -->"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + begin + "\n" + table + end + rest.split(end, 1)[1]
else:
    text = text.rstrip("\n") + "\n\n" + begin + "\n" + table + end + "\n"
open(doc, "w").write(text)
EOF
cat "$table"
say "raw reports: $raw; table: $table and docs/benchmarks.md"
