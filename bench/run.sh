#!/usr/bin/env bash
# One command for the whole benchmark: bash bench/run.sh
# Measures, on this machine, in one run:
#   1. the ceiling: a no-op axum handler parsing the same query string (examples/noop_ceiling.rs)
#   2. durable ingest through /webhook (SQLite, fsync'd commits), 32 connections
#   3. webhook -> gRPC subscriber latency at a fixed 1,000 leads/s
#   4. fan-out to 1,000 StreamLeads subscribers, and memory per idle subscriber
#   5. replay of a 1,000,000-event store to one client
#   6. start-up time and idle memory
# Needs wrk (installed with apt-get when missing). Results: target/bench/results.txt
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-32}
REPLAY_EVENTS=${REPLAY_EVENTS:-1000000}
export TOKEN=$(printf 'benchbench' | md5sum | cut -d' ' -f1)   # md5("bench" + "bench")

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --bin roistat-leads --example bench --example noop_ceiling
BIN=target/release/roistat-leads
BENCH=target/release/examples/bench
OUT=target/bench
rm -rf "$OUT" && mkdir -p "$OUT"
RESULTS=$OUT/results.txt
: > "$RESULTS"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_ready() { # url
  for _ in $(seq 1 300); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "not ready: $1" >&2; return 1
}

start_service() { # database-url
  ROISTAT_USER=bench ROISTAT_PASSWORD=bench RUST_LOG=warn "$BIN" serve \
    --http-addr 127.0.0.1:18181 --grpc-addr 127.0.0.1:18182 --database-url "$1" \
    >"$OUT/service.log" 2>&1 &
  SERVICE=$!
  PIDS+=("$SERVICE")
  wait_ready http://127.0.0.1:18181/readyz
}

stop_service() { kill -TERM "$SERVICE"; wait "$SERVICE" || true; }

record() { echo "$*" | tee -a "$RESULTS"; }

wrk_summary() { # name file
  local rps p50 p99 non2xx
  rps=$(awk '/^Requests\/sec/ {print $2}' "$2")
  p50=$(awk '$1=="50%" {print $2}' "$2")
  p99=$(awk '$1=="99%" {print $2}' "$2")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$2")
  record "$1 requests_per_s=$rps p50=$p50 p99=$p99 non_2xx=${non2xx:-0}"
}

echo "== machine" | tee -a "$RESULTS"
record "cpus=$(nproc) model=\"$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)\" mem=$(free -g | awk '/Mem/ {print $2}')GiB kernel=$(uname -r)"

echo "== 1. ceiling: no-op handler, same parsing" | tee -a "$RESULTS"
target/release/examples/noop_ceiling 127.0.0.1:18180 >/dev/null &
NOOP=$!; PIDS+=("$NOOP")
sleep 0.5
RUN_ID=ceiling wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/lead.lua http://127.0.0.1:18180 >"$OUT/ceiling.txt"
kill "$NOOP"; wait "$NOOP" 2>/dev/null || true
wrk_summary ceiling "$OUT/ceiling.txt"

echo "== 2. durable ingest (SQLite, synchronous=FULL)" | tee -a "$RESULTS"
start_service "sqlite://$OUT/ingest.db"
RUN_ID=ingest wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/lead.lua http://127.0.0.1:18181 >"$OUT/ingest.txt"
wrk_summary ingest "$OUT/ingest.txt"
record "ingest stored_leads=$(curl -s http://127.0.0.1:18181/metrics | awk '/^roistat_leads_leads_total/ {s+=$2} END {print s}') $(curl -s http://127.0.0.1:18181/metrics | awk '/^roistat_leads_store_batch_size_(sum|count)/ {print $1"="$2}' | tr '\n' ' ')"
stop_service

echo "== 3. end-to-end latency at 1,000 leads/s" | tee -a "$RESULTS"
start_service "sqlite://$OUT/e2e.db"
record "$("$BENCH" e2e --http http://127.0.0.1:18181 --grpc http://127.0.0.1:18182 --rate 1000 --seconds 10)"

echo "== 4. fan-out to 1,000 subscribers" | tee -a "$RESULTS"
record "$("$BENCH" fanout --http http://127.0.0.1:18181 --grpc http://127.0.0.1:18182 --pid "$SERVICE" --subscribers 1000 --events 20)"
stop_service

echo "== 5. replay of $REPLAY_EVENTS events" | tee -a "$RESULTS"
record "$("$BENCH" fill --database-url "sqlite://$OUT/replay.db" --events "$REPLAY_EVENTS")"
start_service "sqlite://$OUT/replay.db"
record "$("$BENCH" replay --grpc http://127.0.0.1:18182 --events "$REPLAY_EVENTS")"
stop_service

echo "== 6. start-up and idle memory" | tee -a "$RESULTS"
record "$("$BENCH" startup --binary "$BIN" --database-url "sqlite://$OUT/startup.db")"

echo
echo "results: $RESULTS"
