# Shared by scripts/demo and scripts/test: start and stop local servers.
# shellcheck shell=bash

started_pids=()

# Stops every process this script started; safe to call more than once.
stop_started() {
  local pid
  for pid in "${started_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${started_pids[@]}"; do
    # redis-server may take up to a second to exit on SIGTERM.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  started_pids=()
}

# Prints a TCP port on 127.0.0.1 that is free now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts connections on 127.0.0.1:$1.
wait_for_port() {
  local port=$1 what=$2
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "$what did not start listening on port $port" >&2
  return 1
}

# start_redis DIR: starts redis-server with AOF on and its data in DIR; sets REDIS_URL.
start_redis() {
  local dir=$1 port
  port=$(free_port)
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes --save "" \
    --logfile "$dir/redis.log" &
  started_pids+=($!)
  wait_for_port "$port" redis-server
  REDIS_URL="redis://127.0.0.1:$port/"
}

# start_server PORT ARGS...: starts target/debug/thoonk-server serve; sets SERVER_PORT.
start_server() {
  local port=$1
  shift
  target/debug/thoonk-server --redis "$REDIS_URL" serve --listen "127.0.0.1:$port" "$@" &
  started_pids+=($!)
  wait_for_port "$port" thoonk-server
  SERVER_PORT=$port
}
