#!/usr/bin/env bash
# The project's benchmark, side by side with the naive ceiling. A release build over loopback, a
# tenant seeded with $COUNT audiences through the API, and the naive actix-web + sqlx server of
# ../shared/bench/hello-db (built here, started here, on its own database in the same PostgreSQL,
# 100,000 rows). Each scenario of issue #11 is a pair (A, B) run interleaved A1 B1 A2 B2 ... so
# that the drift of a shared machine cancels out; ratios.py prints the median of each side and
# B/A. The server runs with its default settings: every limit and the tenants' share bucket on.
#
#   bash bench/run.sh                                     # RUNS=3 DURATION=15 COUNT=100000
#   RUNS=1 DURATION=5 COUNT=5000 bash bench/run.sh        # a quick look
#   REUSE_DB=1 bash bench/run.sh                          # keep the seeded databases of a last run
#   BENCH_PG=postgres://postgres@127.0.0.1:55433 bash bench/run.sh   # another PostgreSQL
#   ONLY="get create" bash bench/run.sh                   # some scenarios only
#
# Loads only 127.0.0.1; every wrk run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}" DURATION="${DURATION:-15}" CONNECTIONS="${CONNECTIONS:-64}" THREADS="${THREADS:-2}"
COUNT="${COUNT:-100000}" PORT="${PORT:-18080}" NAIVE_PORT="${NAIVE_PORT:-18081}"
LOG_LEVEL="${LOG_LEVEL:-info}"
PG="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
DB="${BENCH_DB:-bench_audiences}"
NAIVE_DB="${NAIVE_DB:-bench_naive}"
NAIVE_SRC="${NAIVE_SRC:-../shared/bench/hello-db}"
NAIVE_SCHEMA="${NAIVE_SCHEMA:-$NAIVE_SRC/../pg/schema.sql}"
NAIVE_BUILD="${NAIVE_BUILD:-/tmp/bench-hello-db}"
OUT="${RESULTS_DIR:-bench/results}"
IDS="$OUT/ids.txt"
BIN=target/release/audience-server
NAIVE_BIN="$NAIVE_BUILD/target/release/hello-db"
SCENARIOS="${ONLY:-get list_first create patch deep next not_found}"
export THREADS
export PGOPTIONS="${PGOPTIONS:--c client_min_messages=warning}"

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release --locked
if [ ! -x "$NAIVE_BIN" ]; then
  # Built from a copy, so nothing is written next to the shared source.
  rm -rf "$NAIVE_BUILD" && cp -r "$NAIVE_SRC" "$NAIVE_BUILD"
  (cd "$NAIVE_BUILD" && CARGO_TARGET_DIR="$NAIVE_BUILD/target" cargo build --release -q)
fi
mkdir -p "$OUT"
rm -f "$OUT"/*.txt.wrk "$OUT"/memory.txt

db_exists() { [ "$(psql "$PG/postgres" -AtXc "SELECT 1 FROM pg_database WHERE datname = '$1'")" = 1 ]; }

SERVER= NAIVE=
start_server() {
  local started; started=$(date +%s%N)
  DATABASE_URL="$PG/$DB" PORT="$PORT" LOG_LEVEL="$LOG_LEVEL" WORKER_ENABLED=false "$BIN" >"$OUT/server.log" 2>&1 &
  SERVER=$!
  until curl -fs "http://127.0.0.1:$PORT/health" >/dev/null; do sleep 0.01; done
  echo "ready in $(( ($(date +%s%N) - started) / 1000000 )) ms (migrated database)" | tee "$OUT/startup.txt"
}
stop_server() { [ -n "$SERVER" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }; SERVER=; }
stop_all() { stop_server; [ -n "$NAIVE" ] && { kill "$NAIVE" 2>/dev/null; wait "$NAIVE" 2>/dev/null || true; }; }
trap stop_all EXIT

if [ "${REUSE_DB:-0}" = 1 ] && db_exists "$DB" && [ -s "$IDS" ]; then
  DATABASE_URL="$PG/$DB" LOG_LEVEL=warn "$BIN" migrate
else
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
  DATABASE_URL="$PG/$DB" LOG_LEVEL=warn "$BIN" migrate
  start_server
  python3 bench/seed.py --base "http://127.0.0.1:$PORT" --count "$COUNT" --out "$IDS"
  psql "$PG/$DB" -qc "VACUUM ANALYZE"
  stop_server
fi
if [ "${REUSE_DB:-0}" != 1 ] || ! db_exists "$NAIVE_DB"; then
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $NAIVE_DB WITH (FORCE)" -c "CREATE DATABASE $NAIVE_DB"
  # page_items: 100,000 rows for its keyset page; items: the same rows for its GET by id, and
  # the table its POST inserts into.
  psql "$PG/$NAIVE_DB" -qX -f "$NAIVE_SCHEMA" >/dev/null
  psql "$PG/$NAIVE_DB" -qXc "INSERT INTO items SELECT * FROM page_items" -c "VACUUM ANALYZE items"
fi
psql "$PG/$NAIVE_DB" -AtXc "SELECT id FROM items ORDER BY random() LIMIT 20000" >"$OUT/naive_ids.txt"

# A fresh start on the seeded database, for the start-up figure and a clean memory reading.
start_server
DATABASE_URL="$PG/$NAIVE_DB" "$NAIVE_BIN" 2 "$NAIVE_PORT" >"$OUT/naive.log" 2>&1 &
NAIVE=$!
until curl -s -o /dev/null "http://127.0.0.1:$NAIVE_PORT/page"; do sleep 0.05; done
python3 bench/walk.py --base "http://127.0.0.1:$PORT" --out "$OUT/next_hrefs.txt"

rss() { awk '/VmRSS|VmHWM/ {printf "%s %s kB  ", $1, $2} END {print ""}' "/proc/$SERVER/status"; }

fresh_etags() {
  psql "$PG/$DB" -AtXF ' ' -c "SELECT id, etag FROM audiences ORDER BY random()" >"$OUT/etags.txt"
}

# one SCENARIO SIDE RUN PORT LUA PATH [ENV=VALUE ...]: one wrk run into $OUT/SCENARIO__SIDE.RUN.txt.wrk
one() {
  local scenario=$1 side=$2 i=$3 port=$4 script=$5 path=$6; shift 6
  local ids="$IDS"
  # The PATCH script sends each audience's current etag: read them afresh before each run.
  [ "$script" = patch.lua ] && fresh_etags && ids="$OUT/etags.txt"
  env IDS_FILE="$ids" "$@" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -s "bench/lua/$script" "http://127.0.0.1:$port$path" >"$OUT/${scenario}__$side.$i.txt.wrk"
  printf '%-12s %-6s run %s: %s\n' "$scenario" "$side" "$i" \
    "$(awk '/Requests\/sec/ {print $2 " req/s"}' "$OUT/${scenario}__$side.$i.txt.wrk")"
}

# Each scenario: its two sides, run interleaved (A1 B1 A2 B2 ...). Ratios are B / A (req/s).
wanted() { case " $SCENARIOS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
U=/data/core/ups/audiences
for i in $(seq 1 "$RUNS"); do
  # The writes of the last round cleared visibility-map bits, which turns the deep page's
  # index-only scan into heap reads until autovacuum passes: start each round as autovacuum would
  # leave the table, so rounds compare alike.
  psql "$PG/$DB" -qXc "VACUUM audiences"
  if wanted get; then
    one get naive "$i" "$NAIVE_PORT" get.lua / IDS_FILE="$OUT/naive_ids.txt" PATH_PREFIX=/items/
    one get ours "$i" "$PORT" get.lua /
  fi
  if wanted list_first; then
    one list_first naive "$i" "$NAIVE_PORT" naive_page.lua /
    one list_first ours "$i" "$PORT" list.lua / START=0
  fi
  if wanted deep; then
    one deep first "$i" "$PORT" list.lua / START=0
    one deep deep "$i" "$PORT" list.lua / START=90000
  fi
  if wanted next; then
    one next first "$i" "$PORT" list.lua / START=0
    one next next "$i" "$PORT" paths.lua / PATHS_FILE="$OUT/next_hrefs.txt"
  fi
  if wanted not_found; then
    one not_found get "$i" "$PORT" get.lua /
    one not_found 404 "$i" "$PORT" fixed.lua /data/core/ups/no-such-resource
  fi
  # The writes last: they clear visibility-map bits the deep page's index-only scan reads.
  if wanted create; then
    one create naive "$i" "$NAIVE_PORT" create.lua /items
    one create ours "$i" "$PORT" create.lua "$U"
  fi
  if wanted patch; then
    one patch naive "$i" "$NAIVE_PORT" create.lua /items
    one patch ours "$i" "$PORT" patch.lua /
  fi
done
echo "after the runs: $(rss)" | tee "$OUT/memory.txt"

python3 bench/ratios.py "$OUT"
