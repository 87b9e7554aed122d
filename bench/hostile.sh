#!/usr/bin/env bash
# The hostile-tenant benchmark (issue #8): tenant B runs a normal mix (GET by id, list pages,
# creates) with wrk while tenant A, in another organisation, runs every bounded attack in a loop
# (bench/hostile_tenant.py). Quiet and hostile runs alternate (Q1 H1 Q2 H2 ...); the table gives
# B's throughput and p99 in each, the ratio of the medians, the errors B saw, the attacks' answers,
# the server's peak resident memory and whether /health always answered 200.
#
#   bash bench/hostile.sh                          # RUNS=3 DURATION=20 COUNT=20000, ~6 minutes
#   RUNS=1 DURATION=10 COUNT=2000 bash bench/hostile.sh   # a quick look
#
# A release build, a scratch database, the server's worker on (attacks include ingestion runs),
# the default settings (every limit on). Loads only 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}" DURATION="${DURATION:-20}" CONNECTIONS="${CONNECTIONS:-32}" THREADS="${THREADS:-2}"
COUNT="${COUNT:-20000}" PORT="${PORT:-18090}" ATTACK_THREADS="${ATTACK_THREADS:-4}"
PG="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
DB="${BENCH_DB:-bench_hostile}"
OUT="${RESULTS_DIR:-bench/results/hostile}"
BIN=target/release/audience-server
export THREADS DURATION

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release --locked
rm -rf "$OUT" && mkdir -p "$OUT/work" "$OUT/landing"

psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
DATABASE_URL="$PG/$DB" LANDING_DIR="$OUT/landing" LOG_LEVEL=warn PORT="$PORT" \
  "$BIN" >"$OUT/server.log" 2>&1 &
SERVER=$!
MONITOR=
cleanup() {
  [ -n "$MONITOR" ] && kill "$MONITOR" 2>/dev/null || true
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
}
trap cleanup EXIT
until curl -fs "http://127.0.0.1:$PORT/health" >/dev/null; do sleep 0.05; done

BASE="http://127.0.0.1:$PORT"
echo "seeding tenant B with $COUNT audiences"
python3 bench/seed.py --base "$BASE" --count "$COUNT" --out "$OUT/ids.txt" \
  --org QUIET@AdobeOrg
echo "preparing tenant A (a 100 MB file with an unbalanced quote in its landing zone, big audiences)"
python3 bench/hostile_tenant.py --base "$BASE" --work "$OUT/work" --setup >"$OUT/setup.json"
psql "$PG/$DB" -qc "VACUUM ANALYZE"

# /health every 100 ms and the server's resident memory, for the whole benchmark.
python3 - "$BASE" "$SERVER" "$OUT/monitor.json" <<'PY' &
import http.client, json, sys, time, urllib.parse
base, pid, out = urllib.parse.urlparse(sys.argv[1]), sys.argv[2], sys.argv[3]
stats = {"health_checks": 0, "health_not_200": 0, "health_max_ms": 0.0, "rss_max_kb": 0}
def write():
    with open(out, "w") as f: json.dump(stats, f)
while True:
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection(base.hostname, base.port, timeout=5)
        c.request("GET", "/health"); r = c.getresponse(); r.read(); ok = r.status == 200
    except OSError:
        ok = False
    stats["health_checks"] += 1
    stats["health_not_200"] += 0 if ok else 1
    stats["health_max_ms"] = max(stats["health_max_ms"], (time.monotonic() - t0) * 1000)
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                stats["rss_max_kb"] = max(stats["rss_max_kb"], int(line.split()[1]))
    except OSError:
        write(); break
    write()
    time.sleep(0.1)
PY
MONITOR=$!

mix() { # name
  BENCH_ORG=QUIET@AdobeOrg IDS_FILE="$OUT/ids.txt" wrk -t"$THREADS" -c"$CONNECTIONS" \
    -d"${DURATION}s" --latency -s bench/lua/mix.lua "$BASE" >"$OUT/$1.txt.wrk"
}

for i in $(seq 1 "$RUNS"); do
  echo "run $i: quiet"
  mix "quiet.$i"
  echo "run $i: hostile"
  python3 bench/hostile_tenant.py --base "$BASE" --work "$OUT/work" --duration "$DURATION" \
    --threads "$ATTACK_THREADS" >"$OUT/attacks.$i.json" &
  ATTACKER=$!
  sleep 1
  mix "hostile.$i"
  wait "$ATTACKER"
done
sleep 0.3
kill "$MONITOR" 2>/dev/null || true
MONITOR=
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status")

python3 bench/hostile_summary.py "$OUT" "$HWM" | tee "$OUT/summary.md"
