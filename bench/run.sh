#!/usr/bin/env bash
# One command for the whole benchmark: bash bench/run.sh
# Measures, on this machine, in one run:
#   1-2. the ceiling (a no-op axum handler parsing the same query string,
#      bench/src/bin/noop_ceiling.rs) and durable ingest through /webhook (SQLite, fsync'd
#      commits), 32 connections each, three pairs side by side, and the median ratio
#   2b. durable ingest with tracing off and on (sampling 1.0, to an OTLP collector
#      the bench runs), three triples of ceiling, off, on: each ratio to its ceiling
#   2c. durable ingest of leads of persons (bench/lead-persons.lua: ~30% returning)
#      with person matching off and on, five triples of ceiling, off, on
#   3. webhook -> gRPC subscriber latency at a fixed 1,000 leads/s, three runs, and a
#      fourth during a flood of 10,000 /readyz requests spread over it
#   4. fan-out to 10,000 StreamLeads subscribers: memory per idle subscriber, and the
#      time from each event's commit to its last subscriber; then 2,000 connections
#      that each send a 1 MiB body one byte short and stall: resident memory, and a
#      real webhook's answer meanwhile
#   5. replay of a 1,000,000-event store to one client that decodes every event,
#      the disk a stored lead takes, and the console's search on that store
#   5b. persons at scale: 1,000,000 leads of 30% returning persons stored with
#      matching off, the background match of them timed, then GetPerson's latency
#      (by a random person's phone) on that store, two runs of 20,000 calls
#   6. PostgreSQL: ingest with one replica and with two on the same server, and the
#      disk a stored lead takes (skipped when PostgreSQL cannot be reached)
#   7. start-up time and idle memory
# Needs wrk (installed with apt-get when missing). Results: target/bench/results.txt
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
REPLAY_EVENTS=${REPLAY_EVENTS:-1000000}
SUBSCRIBERS=${SUBSCRIBERS:-10000}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export TOKEN=$(printf 'benchbench' | md5sum | cut -d' ' -f1)   # md5("bench" + "bench")

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --bin roistat-leads
cargo build --release -p roistat-leads-bench
BIN=target/release/roistat-leads
BENCH=target/release/bench
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

start_service() { # database-url [http-port grpc-port]; sets SERVICE
  local http=${2:-18181} grpc=${3:-18182}
  # More subscribers than the default cap: the fan-out measures 10,000 besides the others.
  ROISTAT_USER=bench ROISTAT_PASSWORD=bench RUST_LOG=warn "$BIN" serve \
    --http-addr 127.0.0.1:$http --grpc-addr 127.0.0.1:$grpc --database-url "$1" \
    --grpc-max-subscribers $((SUBSCRIBERS + 100)) --console-addr 127.0.0.1:$((http + 4)) \
    >"$OUT/service-$http.log" 2>&1 &
  SERVICE=$!
  PIDS+=("$SERVICE")
  wait_ready "http://127.0.0.1:$http/readyz"
}

stop_service() { kill -TERM "${1:-$SERVICE}"; wait "${1:-$SERVICE}" || true; }

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

echo "== 1-2. the ceiling (a no-op handler, same parsing) and durable ingest (SQLite, synchronous=FULL), three pairs side by side" | tee -a "$RESULTS"
for pair in 1 2 3; do
  target/release/noop_ceiling 127.0.0.1:18180 >/dev/null &
  NOOP=$!; PIDS+=("$NOOP")
  sleep 0.5
  RUN_ID=ceiling$pair wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/lead.lua http://127.0.0.1:18180 >"$OUT/ceiling-$pair.txt"
  kill "$NOOP"; wait "$NOOP" 2>/dev/null || true
  wrk_summary "ceiling pair=$pair" "$OUT/ceiling-$pair.txt"

  rm -f "$OUT"/ingest.db*
  start_service "sqlite://$OUT/ingest.db"
  RUN_ID=ingest$pair wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/lead.lua http://127.0.0.1:18181 >"$OUT/ingest-$pair.txt"
  wrk_summary "ingest pair=$pair" "$OUT/ingest-$pair.txt"
  record "ingest pair=$pair $(curl -s http://127.0.0.1:18181/metrics | awk '/^roistat_leads_store_batch_size_(sum|count)/ {print $1"="$2}' | tr '\n' ' ')"
  stop_service
  record "ingest_to_ceiling pair=$pair ratio=$(awk -v i="$(awk '/^Requests\/sec/ {print $2}' "$OUT/ingest-$pair.txt")" -v c="$(awk '/^Requests\/sec/ {print $2}' "$OUT/ceiling-$pair.txt")" 'BEGIN {printf "%.3f", i / c}')"
done
record "ingest_to_ceiling median_ratio=$(grep '^ingest_to_ceiling pair' "$RESULTS" | sed 's/.*ratio=//' | sort -n | sed -n 2p)"

echo "== 2b. tracing: durable ingest with traces off, and on (sampling 1.0, to an OTLP collector), three triples" | tee -a "$RESULTS"
"$BENCH" otlp-sink --addr 127.0.0.1:18190 >"$OUT/otlp-sink.txt" &
SINK=$!; PIDS+=("$SINK")
rps() { awk '/^Requests\/sec/ {print $2}' "$1"; }
for triple in 1 2 3; do
  target/release/noop_ceiling 127.0.0.1:18180 >/dev/null &
  NOOP=$!; PIDS+=("$NOOP")
  sleep 0.5
  RUN_ID=tceiling$triple wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/lead.lua http://127.0.0.1:18180 >"$OUT/tceiling-$triple.txt"
  kill "$NOOP"; wait "$NOOP" 2>/dev/null || true
  for tracing in off on; do
    rm -f "$OUT"/traced.db*
    if [ "$tracing" = on ]; then export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:18190; fi
    start_service "sqlite://$OUT/traced.db"
    unset OTEL_EXPORTER_OTLP_ENDPOINT
    RUN_ID=t$tracing$triple wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/lead.lua http://127.0.0.1:18181 >"$OUT/tracing-$tracing-$triple.txt"
    stop_service
    wrk_summary "ingest tracing=$tracing triple=$triple" "$OUT/tracing-$tracing-$triple.txt"
    record "tracing_ratio tracing=$tracing triple=$triple ratio=$(awk -v i="$(rps "$OUT/tracing-$tracing-$triple.txt")" -v c="$(rps "$OUT/tceiling-$triple.txt")" 'BEGIN {printf "%.3f", i / c}')"
  done
done
kill -TERM "$SINK"; wait "$SINK" || true
record "$(cat "$OUT/otlp-sink.txt")"
for tracing in off on; do
  record "tracing_ratio tracing=$tracing median=$(grep "^tracing_ratio tracing=$tracing triple" "$RESULTS" | sed 's/.*ratio=//' | sort -n | sed -n 2p)"
done

echo "== 2c. persons: durable ingest of leads of persons (30% returning), matching off and on, five triples" | tee -a "$RESULTS"
for triple in 1 2 3 4 5; do
  target/release/noop_ceiling 127.0.0.1:18180 >/dev/null &
  NOOP=$!; PIDS+=("$NOOP")
  sleep 0.5
  RUN_ID=pceiling$triple wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/lead-persons.lua http://127.0.0.1:18180 >"$OUT/pceiling-$triple.txt"
  kill "$NOOP"; wait "$NOOP" 2>/dev/null || true
  for matching in off on; do
    rm -f "$OUT"/persons.db*
    if [ "$matching" = off ]; then export ROISTAT_LEADS_PERSON_MATCHING=false; fi
    start_service "sqlite://$OUT/persons.db"
    unset ROISTAT_LEADS_PERSON_MATCHING
    RUN_ID=p$matching$triple wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/lead-persons.lua http://127.0.0.1:18181 >"$OUT/persons-$matching-$triple.txt"
    stop_service
    wrk_summary "ingest matching=$matching triple=$triple" "$OUT/persons-$matching-$triple.txt"
    record "persons_ratio matching=$matching triple=$triple ratio=$(awk -v i="$(rps "$OUT/persons-$matching-$triple.txt")" -v c="$(rps "$OUT/pceiling-$triple.txt")" 'BEGIN {printf "%.3f", i / c}')"
  done
done
for matching in off on; do
  record "persons_ratio matching=$matching median=$(grep "^persons_ratio matching=$matching triple" "$RESULTS" | sed 's/.*ratio=//' | sort -n | sed -n 3p)"
done

echo "== 3. end-to-end latency at 1,000 leads/s (three runs), then during a /readyz flood" | tee -a "$RESULTS"
start_service "sqlite://$OUT/e2e.db"
for run in 1 2 3; do
  record "$("$BENCH" e2e --http http://127.0.0.1:18181 --grpc http://127.0.0.1:18182 --rate 1000 --seconds 10)"
done
record "e2e median_p99_ms=$(grep '^e2e rate' "$RESULTS" | tail -3 | sed 's/.*p99_ms=\([0-9.]*\).*/\1/' | sort -n | sed -n 2p)"
# 10,000 probes spread over the run (a probe every 10 s is what an orchestrator sends).
"$BENCH" flood --url http://127.0.0.1:18181/readyz --requests 10000 --concurrency 8 --rate 1000 >"$OUT/flood.txt" &
FLOOD=$!
record "$("$BENCH" e2e --http http://127.0.0.1:18181 --grpc http://127.0.0.1:18182 --rate 1000 --seconds 10) during_readyz_flood"
wait "$FLOOD"
record "$(cat "$OUT/flood.txt")"

echo "== 4. fan-out to $SUBSCRIBERS subscribers" | tee -a "$RESULTS"
record "$("$BENCH" fanout --http http://127.0.0.1:18181 --grpc http://127.0.0.1:18182 --pid "$SERVICE" --subscribers "$SUBSCRIBERS" --events 100)"
stop_service

echo "== 4b. 2,000 connections each sending a 1 MiB body one byte short, and stalling" | tee -a "$RESULTS"
start_service "sqlite://$OUT/stall.db"
record "$("$BENCH" stall --http http://127.0.0.1:18181 --pid "$SERVICE" --connections 2000)"
stop_service

echo "== 5. replay of $REPLAY_EVENTS events, and disk per lead (SQLite)" | tee -a "$RESULTS"
record "$("$BENCH" fill --database-url "sqlite://$OUT/replay.db" --events "$REPLAY_EVENTS")"
record "$("$BENCH" disk --database-url "sqlite://$OUT/replay.db") backend=sqlite"
start_service "sqlite://$OUT/replay.db"
# The first read warms the page cache; then three with the bulk reader (the
# generated messages through a codec for bulk reads), each followed by one with the
# split reader (the same, decoding on a second thread), and one with the stock client.
"$BENCH" replay --grpc http://127.0.0.1:18182 --events "$REPLAY_EVENTS" >/dev/null
for run in 1 2 3; do
  record "$("$BENCH" replay --grpc http://127.0.0.1:18182 --events "$REPLAY_EVENTS" --reader bulk)"
  record "$("$BENCH" replay --grpc http://127.0.0.1:18182 --events "$REPLAY_EVENTS" --reader split)"
done
record "replay median_events_per_s=$(grep '^replay reader=Bulk' "$RESULTS" | tail -3 | sed 's/.*events_per_s=//' | sort -n | sed -n 2p)"
record "replay split_median_events_per_s=$(grep '^replay reader=Split' "$RESULTS" | tail -3 | sed 's/.*events_per_s=//' | sort -n | sed -n 2p)"
record "$("$BENCH" replay --grpc http://127.0.0.1:18182 --events "$REPLAY_EVENTS" --reader stock)"
# The console's search on that store: each field's time to its first page.
record "$("$BENCH" search --console http://127.0.0.1:18185)"
stop_service

echo "== 5b. persons at scale: 1,000,000 leads (30% returning), the background match, GetPerson" | tee -a "$RESULTS"
rm -f "$OUT"/people.db*
FILL=$("$BENCH" person-fill --database-url "sqlite://$OUT/people.db" --leads 1000000 --returning 0.3)
record "$FILL"
PERSONS=$(echo "$FILL" | sed 's/.*persons=\([0-9]*\).*/\1/')
record "$("$BENCH" person-backfill --database-url "sqlite://$OUT/people.db" --leads 1000000)"
start_service "sqlite://$OUT/people.db"
for run in 1 2; do
  record "$("$BENCH" person-probe --grpc http://127.0.0.1:18182 --persons "$PERSONS" --requests 20000) run=$run"
done
stop_service

echo "== 6. PostgreSQL: ingest with one replica and with two" | tee -a "$RESULTS"
PG_URL=${PG_ADMIN_URL%/*}/roistat_leads_bench
if "$BENCH" createdb --admin-url "$PG_ADMIN_URL" --name roistat_leads_bench >/dev/null 2>&1; then
  start_service "$PG_URL"
  RUN_ID=pg1 wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/lead.lua http://127.0.0.1:18181 >"$OUT/pg-1.txt"
  wrk_summary "postgres replicas=1" "$OUT/pg-1.txt"
  FIRST=$SERVICE
  start_service "$PG_URL" 18183 18184
  SECOND=$SERVICE
  HALF=$((CONNECTIONS / 2))
  RUN_ID=pg2a wrk -t1 -c"$HALF" -d"$DURATION" --latency -s bench/lead.lua http://127.0.0.1:18181 >"$OUT/pg-2a.txt" &
  WRK=$!
  RUN_ID=pg2b wrk -t1 -c"$HALF" -d"$DURATION" --latency -s bench/lead.lua http://127.0.0.1:18183 >"$OUT/pg-2b.txt"
  wait "$WRK"
  wrk_summary "postgres replicas=2 replica=a" "$OUT/pg-2a.txt"
  wrk_summary "postgres replicas=2 replica=b" "$OUT/pg-2b.txt"
  record "postgres replicas=2 requests_per_s=$(awk '/^Requests\/sec/ {s+=$2} END {printf "%.0f", s}' "$OUT/pg-2a.txt" "$OUT/pg-2b.txt")"
  stop_service "$FIRST"; stop_service "$SECOND"
  record "$("$BENCH" disk --database-url "$PG_URL") backend=postgres"
else
  record "postgres skipped: $PG_ADMIN_URL cannot be reached"
fi

echo "== 7. start-up and idle memory" | tee -a "$RESULTS"
record "$("$BENCH" startup --binary "$BIN" --database-url "sqlite://$OUT/startup.db")"

echo
echo "results: $RESULTS"
