#!/usr/bin/env bash
# The throughput figures of docs/benchmarks.md for two builds side by side, in alternating
# rounds on the same machine: message send on Postgres (with the pgbench ratio of
# send_vs_pgbench.sh), fan-out latency to 1,000 realtime sockets, and RSS per idle socket.
#
#   benches/load/regress.sh BASE_BIN_DIR NEW_BIN_DIR [rounds=2]
#
# Each BIN_DIR holds openchatd and openchat-load release builds. The caps on connections
# (OPENCHAT_MAX_CONNECTIONS*) are raised only for builds that know them (a build refuses
# unknown OPENCHAT_* variables).
set -euo pipefail
BASE=$1
NEW=$2
ROUNDS=${3:-2}
PG=postgres://postgres@127.0.0.1:5432
PORT=18097
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

start() { # bin_dir database
  local bin=$1 db=$2 caps=()
  if "$bin/openchatd" --help 2>/dev/null | grep -q OPENCHAT_MAX_CONNECTIONS_PER_ADDR; then
    caps=(OPENCHAT_MAX_CONNECTIONS=100000 OPENCHAT_MAX_CONNECTIONS_PER_ADDR=100000)
  fi
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  rm -rf "$work/data"
  env "${caps[@]}" OPENCHAT_HTTP_ADDR=127.0.0.1:$PORT OPENCHAT_AUTH_MODE=headers OPENCHAT_SHARDS=2 \
    OPENCHAT_DATA_DIR="$work/data" OPENCHAT_DATABASE_URL="$PG/$db" OPENCHAT_LOG=warn \
    OPENCHAT_RATE_LIMIT_PER_MINUTE=1000000 "$bin/openchatd" >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return; sleep 0.1; done
  echo "server did not start"; cat "$work/server.log"; exit 1
}
stop() { kill -TERM "$server"; wait "$server" || true; }
field() { python3 -c "import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(d$1)" "$work/out.json"; }

for round in $(seq 1 "$ROUNDS"); do
  for which in base new; do
    bin=$BASE; [ "$which" = new ] && bin=$NEW
    # send: the pgbench ratio, as send_vs_pgbench.sh measures it (one round, 10 s, 64 connections)
    ratio_out=$(BIN_DIR="$bin" "$here/send_vs_pgbench.sh" 1 10 64 2>/dev/null | grep '^round' | tr '\n' ' ')
    echo "round $round $which send: $ratio_out"
    # fan-out: 1,000 sockets, 200 messages/s for 20 s
    start "$bin" openchat_regress
    "$bin/openchat-load" fanout --url "http://127.0.0.1:$PORT" --subscribers 1000 --rate 200 \
      --duration 20s --senders 4 > "$work/out.json" 2>/dev/null || true
    echo "round $round $which fanout: ack_to_frame_p99_us=$(field "['ack_to_frame']['p99_us']" 2>/dev/null || echo '?') send_to_frame_p99_us=$(field "['send_to_frame']['p99_us']" 2>/dev/null || echo '?') missing=$(field "['frames_missing']" 2>/dev/null || echo '?')"
    stop
    # idle: 10,000 sockets held 30 s
    start "$bin" openchat_regress
    "$bin/openchat-load" idle --url "http://127.0.0.1:$PORT" --sockets 10000 --hold 30s \
      --server-pid "$server" > "$work/out.json" 2>/dev/null || true
    echo "round $round $which idle: server_kib_per_socket=$(field "['server_kib_per_socket']" 2>/dev/null || echo '?')"
    stop
  done
done
