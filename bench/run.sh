#!/usr/bin/env bash
# The project's benchmark: a release build over loopback, a tenant seeded with $COUNT audiences,
# wrk for create, get by id, a first and a deep list page of 20, and PATCH with If-Match.
# Each scenario runs $RUNS times; summarize.py reports the median run (req/s, p50, p99).
#
#   bash bench/run.sh                 # everything, about 8 minutes with the defaults
#   RUNS=1 DURATION=5 COUNT=5000 bash bench/run.sh   # a quick look
#
# Loads only 127.0.0.1; every wrk run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}" DURATION="${DURATION:-15}" CONNECTIONS="${CONNECTIONS:-64}" THREADS="${THREADS:-2}"
COUNT="${COUNT:-100000}" PORT="${PORT:-18080}" LOG_LEVEL="${LOG_LEVEL:-info}"
PG="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
DB="${BENCH_DB:-bench_audiences}"
OUT="${RESULTS_DIR:-bench/results}"
IDS="$OUT/ids.txt"
BIN=target/release/audience-server
export THREADS

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release --locked
mkdir -p "$OUT"
rm -f "$OUT"/*.txt.wrk "$OUT"/memory.txt

psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
DATABASE_URL="$PG/$DB" LOG_LEVEL=warn "$BIN" migrate

start_server() {
  local started; started=$(date +%s%N)
  DATABASE_URL="$PG/$DB" PORT="$PORT" LOG_LEVEL="$LOG_LEVEL" WORKER_ENABLED=false "$BIN" >"$OUT/server.log" 2>&1 &
  SERVER=$!
  until curl -fs "http://127.0.0.1:$PORT/health" >/dev/null; do sleep 0.01; done
  echo "ready in $(( ($(date +%s%N) - started) / 1000000 )) ms (migrated database)" | tee "$OUT/startup.txt"
}
stop_server() { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }
trap stop_server EXIT

start_server
python3 bench/seed.py --base "http://127.0.0.1:$PORT" --count "$COUNT" --out "$IDS"
psql "$PG/$DB" -qc "VACUUM ANALYZE"
# A fresh start on the seeded database, for the start-up figure and a clean memory reading.
stop_server
start_server

rss() { awk '/VmRSS|VmHWM/ {printf "%s %s kB  ", $1, $2} END {print ""}' "/proc/$SERVER/status"; }

# The PATCH script sends each audience's current etag: refresh them from the database before a run.
fresh_etags() {
  psql "$PG/$DB" -AtXF ' ' -c "SELECT id, etag FROM audiences ORDER BY random()" >"$OUT/etags.txt"
}

run() { # name, lua script, path, extra env...
  local name=$1 script=$2 path=$3; shift 3
  for i in $(seq 1 "$RUNS"); do
    [ "$script" = patch.lua ] && fresh_etags
    local ids="$IDS"; [ "$script" = patch.lua ] && ids="$OUT/etags.txt"
    env "$@" IDS_FILE="$ids" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency \
      -s "bench/lua/$script" "http://127.0.0.1:$PORT$path" >"$OUT/$name.$i.txt.wrk"
  done
  echo "$name: $(rss)" | tee -a "$OUT/memory.txt"
}

run get_by_id get.lua /
run list_first_page list.lua / START=0
run list_deep_page list.lua / START=90000
run patch_if_match patch.lua /
run create create.lua /data/core/ups/audiences

python3 bench/summarize.py "$OUT"
