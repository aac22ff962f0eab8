# Helpers shared by the bench scripts that start hubs and private services: source
# it after setting `data` (a temporary folder removed at the end). Hubs started go in
# `pids`, services in `services`; both are stopped when the script exits.
pids=()
services=()
stop_hubs() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
stop_services() {
  for pid in "${services[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${services[@]}"; do wait "$pid" 2>/dev/null || true; done
  services=()
}
stop_all() {
  stop_hubs
  stop_services
  rm -rf "$data"
}
trap stop_all EXIT

# Fails when something already listens on port $1.
port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "port $1 is taken by another process" >&2; exit 1
  fi
}

# Waits until something listens on port $1 (10 s at most).
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; exit 1
}

# Waits until the hub on each port given answers /readyz 200 (10 s at most each),
# then checks that every hub started is still running.
wait_ready() {
  for port in "$@"; do
    for _ in $(seq 1 100); do
      curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && continue 2
      sleep 0.1
    done
    echo "the hub on $port did not become ready" >&2; exit 1
  done
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "a hub exited (its port was taken?)" >&2; exit 1; }
  done
}
