#!/usr/bin/env bash
# Message send throughput against pgbench's single-row INSERT, same machine, same concurrency,
# alternating rounds (issue: committed POSTs >= 2x pgbench).
#
#   benches/load/send_vs_pgbench.sh [rounds=3] [seconds=10] [concurrency=64]   (BIN_DIR: builds to run)
#
# Needs a local Postgres reachable as postgres@127.0.0.1 (trust auth), pgbench, and release
# builds of openchatd and openchat-load (cargo build --release --bins).
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-10}
CONC=${3:-64}
PG=postgres://postgres@127.0.0.1:5432
TARGET=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
PORT=18099
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS openchat_pgbench" -c "CREATE DATABASE openchat_pgbench"
# The same shape of row a message is: ids, author, body, time.
psql -q "$PG/openchat_pgbench" -c "CREATE TABLE msg (seq bigserial PRIMARY KEY, id text UNIQUE NOT NULL, channel_id text NOT NULL, author_uid text NOT NULL, body text NOT NULL, created_at bigint NOT NULL)"
cat > "$work/insert.sql" <<'SQL'
INSERT INTO msg (id, channel_id, author_uid, body, created_at) VALUES (md5(random()::text), 'ch_bench', 'uid_bench', 'load:1/bench message body', 1);
SQL

for round in $(seq 1 "$ROUNDS"); do
  tps=$(pgbench -n -c "$CONC" -j 2 -T "$SECS" -f "$work/insert.sql" "$PG/openchat_pgbench" 2>/dev/null | awk '/^tps/ {print $3; exit}')
  echo "round $round pgbench_insert_tps=$tps"

  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS openchat_sendbench" -c "CREATE DATABASE openchat_sendbench"
  OPENCHAT_HTTP_ADDR=127.0.0.1:$PORT OPENCHAT_AUTH_MODE=headers OPENCHAT_DATA_DIR="$work/data" \
    OPENCHAT_DATABASE_URL="$PG/openchat_sendbench" OPENCHAT_DB_MAX_CONNECTIONS=8 OPENCHAT_LOG=warn OPENCHAT_RATE_LIMIT_PER_MINUTE=1000000 \
    "$TARGET/openchatd" >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
  "$TARGET/openchat-load" send --url "http://127.0.0.1:$PORT" --connections "$CONC" --duration "${SECS}s" | tail -1 > "$work/send.json"
  kill -TERM $server; wait $server || true
  rate=$(python3 -c "import json,sys; d=json.load(open('$work/send.json')); print(d['committed_per_s'])")
  echo "round $round openchatd_send_per_sec=$rate"
done
