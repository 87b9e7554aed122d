#!/usr/bin/env bash
# Where the time of one scenario goes: wrk drives an already running server (bench/run.sh's
# database, or any) while `perf` samples the whole machine; prints the CPU split by process
# (server, postgres, wrk, kernel), the server's hottest symbols, and, when the database has
# pg_stat_statements loaded (a private cluster: see BENCHMARKS.md), the statements of the run.
#
#   bash bench/profile.sh get.lua /                       IDS_FILE=bench/results/ids.txt
#   START=0 bash bench/profile.sh list.lua /
#   bash bench/profile.sh create.lua /data/core/ups/audiences
#
# Env: PORT (18080), DURATION (8), CONNECTIONS (64), THREADS (2), BENCH_PG / BENCH_DB (the
# database for pg_stat_statements), OUT (bench/results/profile), PERF (perf).
set -eu
cd "$(dirname "$0")/.."
script=$1 path=$2
PORT="${PORT:-18080}" DURATION="${DURATION:-8}" CONNECTIONS="${CONNECTIONS:-64}" THREADS="${THREADS:-2}"
PG="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}" DB="${BENCH_DB:-bench_audiences}"
OUT="${OUT:-bench/results/profile}" PERF="${PERF:-perf}"
IDS_FILE="${IDS_FILE:-bench/results/ids.txt}"
export THREADS IDS_FILE
mkdir -p "$OUT"
name="${script%.lua}${START:+_$START}"
pss() { psql "$PG/$DB" -AtXq "$@" 2>/dev/null; }
pss -c "SELECT pg_stat_statements_reset()" >/dev/null || echo "(no pg_stat_statements in $DB)"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "bench/lua/$script" \
  "http://127.0.0.1:$PORT$path" >"$OUT/$name.wrk" &
WRK=$!
sleep 1
"$PERF" record -a -F 499 -g -o "$OUT/$name.perf.data" -- sleep $((DURATION - 2)) 2>/dev/null >/dev/null
wait "$WRK"
grep -E "Requests/sec|Non-2xx" "$OUT/$name.wrk"
SERVER_PID="${SERVER_PID:-$(ss -Hltnp "sport = :$PORT" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)}"
# The cluster's backends, when its data directory is readable (a private cluster); else every
# process named postgres (the shared cluster serves other clients too).
PG_PIDS=""
if [ -n "${PGDATA_DIR:-}" ] && [ -r "$PGDATA_DIR/postmaster.pid" ]; then
  PG_PIDS="$(pgrep -d, -P "$(head -1 "$PGDATA_DIR/postmaster.pid")")"
fi
report() { "$PERF" report -i "$OUT/$name.perf.data" --no-children --stdio "$@" 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | sed -E 's/ {2,}/  /g' | cut -c1-150 || true; }
echo "== CPU by process (share of all samples)"
report --sort comm | head -8
echo "== the server (pid $SERVER_PID) and the database's backends, of all samples"
report --sort pid --pid "$SERVER_PID${PG_PIDS:+,$PG_PIDS}" | awk '{s[$2 ~ /postgres/ ? "postgres" : $2] += $1} END {for (k in s) printf "  %.1f%% %s\n", s[k], k}' 
echo "== the server's hottest symbols (self time, share of all samples)"
report --pid "$SERVER_PID" --sort dso,symbol | head -25
echo "== postgres' hottest symbols"
if [ -n "$PG_PIDS" ]; then report --pid "$PG_PIDS" --sort symbol | head -15; else report --comm postgres --sort symbol | head -15; fi
echo "== statements (pg_stat_statements)"
pss -F ' | ' -c "SELECT calls, round(mean_exec_time::numeric, 3) AS mean_ms,
    round((total_exec_time / greatest(calls, 1))::numeric, 3), shared_blks_hit / greatest(calls, 1) AS blks_per_call,
    left(regexp_replace(query, '\s+', ' ', 'g'), 110)
  FROM pg_stat_statements WHERE calls > 10 ORDER BY total_exec_time DESC LIMIT 8" || true
