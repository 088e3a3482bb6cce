#!/usr/bin/env bash
# /healthz throughput and latency of openchatd (2 shards) against nginx (2 workers) returning a
# fixed 200, same wrk settings, same machine, alternating runs so both see the same noise.
#
#   benches/wrk/healthz_vs_nginx.sh [rounds] [duration] [connections]
#
# BIN_DIR=dir takes openchatd from dir instead of building it (to compare two builds).
# Needs wrk and nginx (apt-get install wrk nginx). Prints one line per run and a summary with
# the median requests/s of each and their ratio. Run by hand, not in CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
DURATION=${2:-10s}
CONNS=${3:-64}
THREADS=2
OC_PORT=18080
NG_PORT=18081
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --quiet --bin openchatd
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
OPENCHAT_SHARDS=2 OPENCHAT_HTTP_ADDR=127.0.0.1:$OC_PORT OPENCHAT_DATA_DIR="$WORK/data" OPENCHAT_LOG=warn \
  "$BIN_DIR/openchatd" &
sed -e "s|__PREFIX__|$WORK|g" -e "s|__PORT__|$NG_PORT|g" benches/wrk/nginx.conf > "$WORK/nginx.conf"
nginx -c "$WORK/nginx.conf" -p "$WORK" &
for port in $OC_PORT $NG_PORT; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
done

run() { # name port path
  local out rps p99
  out=$(wrk -t$THREADS -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$2$3")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  echo "$1 $3 rps=$rps p99=$p99" >&2
  echo "$1 $rps $p99"
}

: > "$WORK/results"
for r in $(seq 1 "$ROUNDS"); do
  run openchatd $OC_PORT /healthz >> "$WORK/results"
  run nginx $NG_PORT /healthz >> "$WORK/results"
done
run openchatd $OC_PORT /v1/client/capabilities > "$WORK/caps"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
oc=$(awk '$1=="openchatd" {print $2}' "$WORK/results" | median)
ng=$(awk '$1=="nginx" {print $2}' "$WORK/results" | median)
echo "---"
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS alternating rounds"
echo "openchatd /healthz median rps: $oc   p99s: $(awk '$1=="openchatd" {printf "%s ", $3}' "$WORK/results")"
echo "nginx     /healthz median rps: $ng   p99s: $(awk '$1=="nginx" {printf "%s ", $3}' "$WORK/results")"
echo "ratio openchatd/nginx: $(awk -v a="$oc" -v b="$ng" 'BEGIN {printf "%.2f", a/b}')"
echo "openchatd /v1/client/capabilities: $(cat "$WORK/caps")"
