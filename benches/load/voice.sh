#!/usr/bin/env bash
# Voice forwarding: rounds of openchat-voice-load against a fresh openchatd each, the server on
# core 0 with one shard and the generator on core 1 (issue: >= 150,000 forwarded RTP packets/s
# per core with SRTP, < 0.1 % loss; join -> first packet p50 < 300 ms). See docs/benchmarks.md.
#
#   benches/load/voice.sh [rounds=3] [publishers=16] [subscribers=190] [seconds=15] [generator flags...]
#
# BIN_DIR picks the binaries (default target/release), e.g. a baseline build of another commit.
# Generator flags: --spin (poll without sleeping; see the loopback caveat in the notes),
# --video-kbps N. Needs release builds: cargo build --release --features test-peer --bin openchatd --bin openchat-voice-load
set -euo pipefail
ROUNDS=${1:-3}
PUBS=${2:-16}
SUBS=${3:-190}
SECS=${4:-15}
shift $(( $# < 4 ? $# : 4 ))
TARGET=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
PORT=18080
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

for round in $(seq 1 "$ROUNDS"); do
  rm -rf "$work/data"
  OPENCHAT_AUTH_MODE=headers OPENCHAT_SHARDS=1 OPENCHAT_HTTP_ADDR=127.0.0.1:$PORT \
    OPENCHAT_DATA_DIR="$work/data" OPENCHAT_RTC_UDP_PORT=51000 OPENCHAT_RATE_LIMIT_PER_MINUTE=100000 \
    OPENCHAT_RTC_MAX_CALL_PARTICIPANTS=1000 OPENCHAT_LOG=warn \
    taskset -c 0 "$TARGET/openchatd" 2>"$work/server.log" &
  server=$!
  for _ in $(seq 1 50); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
    sleep 0.1
  done
  echo "round $round"
  taskset -c 1 "$TARGET/openchat-voice-load" --addr 127.0.0.1:$PORT --publishers "$PUBS" \
    --subscribers "$SUBS" --duration "$SECS" --warmup 3 --server-pid "$server" "$@"
  echo "server rss: $(awk '/VmRSS/ {print $2, $3}' /proc/$server/status)"
  kill "$server"
  wait "$server" 2>/dev/null || true
done
