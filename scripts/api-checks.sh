#!/usr/bin/env bash
# Proves the OpenAPI document true against the running server, and checks the browsable API.
#
#   1. installs what it needs: npm packages (tools/package-lock.json), a Python venv
#      (tools/requirements.txt), Debian's chromium when missing and running as root
#   2. builds the debug binary and checks that openapi/openapi.json is what it generates
#   3. lints the document with Redocly's recommended rules (redocly.yaml)
#   4. compares our /data/core/ups audiences paths with Adobe's document (scripts/compare_upstream.py)
#   5. creates a scratch database, starts the server on a free port
#   6. schemathesis against the served document (tools/schemathesis.toml): no server errors, every
#      status, content type and body as documented; the stateful phase follows the document's links
#   7. a TypeScript client generated from the document (openapi-typescript + openapi-fetch),
#      compiled with strict tsc and run against the server (tools/client-example/)
#   8. the landing zones through a real Azure client: the official Azure Storage SDK for Python
#      uploads (Put Blob, Put Block + Put Block List), lists, downloads and deletes, by IP address
#      and by host name, and an AIS run ingests an uploaded file (tools/landing_sdk_check.py)
#   9. the Swagger UI browser test in headless chromium (tools/swagger-ui.test.mjs)
#  10. stops the server, drops the database; exits non-zero when any check failed
#
# Every check runs even when an earlier one failed; the summary at the end lists them all.
#
# Environment (all optional):
#   API_CHECKS_ADMIN_URL  a PostgreSQL URL whose user may create databases (else TEST_DATABASE_URL,
#                         else postgres://postgres@127.0.0.1:5432/postgres)
#   ST_MAX_EXAMPLES       schemathesis examples per operation and phase (default 40)
#   ST_SEED               schemathesis seed (default fixed, so CI runs repeat; set another to explore)
#   ST_TIMEOUT            seconds before schemathesis is stopped and counted as failed (default 300)
#   CHROMIUM              the browser (default /usr/bin/chromium)
#   API_CHECKS_OUT        where logs and the screenshot go (default target/api-checks)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ADMIN_URL=${API_CHECKS_ADMIN_URL:-${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}
ST_MAX_EXAMPLES=${ST_MAX_EXAMPLES:-40}
ST_SEED=${ST_SEED:-20261122}
ST_TIMEOUT=${ST_TIMEOUT:-300}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
OUT=${API_CHECKS_OUT:-$ROOT/target/api-checks}
mkdir -p "$OUT"

STARTED=$SECONDS
FAILED=()
PASSED=()
SERVER_PID=
DB_NAME=

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'api-checks: %s\n' "$*" >&2; cleanup; exit 1; }

# Runs one check: its name, then the command. Records the outcome and its duration.
check() {
    local name=$1 t0=$SECONDS
    shift
    say "$name"
    if "$@"; then
        PASSED+=("$name ($((SECONDS - t0)) s)")
    else
        FAILED+=("$name ($((SECONDS - t0)) s)")
        printf 'api-checks: FAILED: %s\n' "$name" >&2
    fi
}

cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
        SERVER_PID=
    fi
    if [[ -n $DB_NAME ]]; then
        psql "$ADMIN_URL" -qX -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null 2>&1
        DB_NAME=
    fi
}
trap cleanup EXIT
trap 'die "interrupted"' INT TERM

# --- 1. tools ---------------------------------------------------------------------------------
say "tools"
command -v node >/dev/null || die "node is not installed (node 20 or later with npm is needed)"
command -v psql >/dev/null || die "psql is not installed (the PostgreSQL client creates the scratch database)"
if [[ ${CI:-} == true || ! -d tools/node_modules/@redocly/cli || ! -d tools/node_modules/playwright-core ]]; then
    (cd tools && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
fi
if [[ ! -x tools/.venv/bin/python ]]; then
    python3 -m venv tools/.venv || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi
tools/.venv/bin/pip install --quiet --disable-pip-version-check -r tools/requirements.txt \
    || die "pip install -r tools/requirements.txt failed"
if [[ ! -x $CHROMIUM ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "installing Debian's chromium"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || die "apt-get install chromium failed"
    else
        die "$CHROMIUM is missing: install Debian's chromium (apt-get install chromium) or set CHROMIUM"
    fi
fi

# --- 2. build, and the committed document is the generated one --------------------------------
say "build"
cargo build --locked --bin audience-server || die "cargo build failed"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/audience-server

document_is_current() {
    "$BIN" openapi --out "$OUT/openapi.generated.json" &&
        diff -q openapi/openapi.json "$OUT/openapi.generated.json" >/dev/null ||
        { echo "openapi/openapi.json is out of date: run cargo run -- openapi --out openapi/openapi.json" >&2; return 1; }
}
check "committed document is current" document_is_current

# --- 3. lint -------------------------------------------------------------------------------------
check "redocly lint (recommended rules)" tools/node_modules/.bin/redocly lint openapi/openapi.json

# --- 4. Adobe's document -------------------------------------------------------------------------
check "comparison with Adobe's document" tools/.venv/bin/python scripts/compare_upstream.py

# --- 5. a server on a scratch database -----------------------------------------------------------
say "server"
DB_NAME="api_checks_$$_$(date +%s)"
psql "$ADMIN_URL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$DB_NAME\"" >/dev/null \
    || { DB_NAME=; die "cannot create a database through $ADMIN_URL (set API_CHECKS_ADMIN_URL)"; }
DB_URL=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$ADMIN_URL" "$DB_NAME")
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
mkdir -p "$OUT/landing"
DATABASE_URL=$DB_URL HOST=127.0.0.1 PORT=$PORT LANDING_DIR=$OUT/landing RUST_LOG=${RUST_LOG:-warn} \
    "$BIN" serve >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 120); do
    if curl -fsS "$BASE/health" >/dev/null 2>&1; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited; see $OUT/server.log"
    sleep 0.5
done
curl -fsS "$BASE/health" >/dev/null || die "the server did not become healthy; see $OUT/server.log"
echo "server at $BASE (database $DB_NAME), log $OUT/server.log"

# --- 6. schemathesis -----------------------------------------------------------------------------
# Two runs: the service's operations in one sandbox, the test-control operations (/_local) in
# another. Faults, clock offsets and resets are per sandbox, so what the second run asks of
# /_local (a fault that answers 503, a reset) cannot reach the first run's requests.
run_schemathesis() {
    local sandbox=$1 filter=$2
    timeout "$ST_TIMEOUT" tools/.venv/bin/schemathesis --config-file tools/schemathesis.toml \
        run "$BASE/openapi.json" \
        --url "$BASE" \
        "$filter" "Test control" \
        -H "Authorization: Bearer api-checks-token" \
        -H "x-api-key: api-checks" \
        -H "x-gw-ims-org-id: 1BD6382559DF0C130A49422D@AdobeOrg" \
        -H "x-sandbox-name: $sandbox" \
        --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
        --max-examples "$ST_MAX_EXAMPLES" \
        --seed "$ST_SEED" \
        --generation-database none \
        --request-timeout 10 \
        --workers 2 \
        --no-color \
        --report junit --report-dir "$OUT/schemathesis-$sandbox"
}
check "schemathesis (seed $ST_SEED, $ST_MAX_EXAMPLES examples)" \
    run_schemathesis api-checks --exclude-tag
check "schemathesis, test control (/_local) in its own sandbox" \
    run_schemathesis api-checks-control --include-tag

# --- 7. a client generated from the document ----------------------------------------------------
generated_client() {
    (cd tools/client-example &&
        ../node_modules/.bin/openapi-typescript ../../openapi/openapi.json -o generated/openapi.d.ts --silent &&
        ../node_modules/.bin/tsc -p . &&
        BASE_URL="$BASE" node dist/audiences.mjs)
}
check "generated TypeScript client compiles and works" generated_client

# --- 8. the landing zones through the Azure Storage SDK ---------------------------------------
check "Azure Storage SDK against the landing zones" tools/.venv/bin/python tools/landing_sdk_check.py "$BASE"

# --- 9. Swagger UI in a browser ------------------------------------------------------------------
check "Swagger UI browser test" env BASE_URL="$BASE" CHROMIUM="$CHROMIUM" \
    SCREENSHOT="$OUT/swagger-ui.png" node tools/swagger-ui.test.mjs

# The server must still be up: a crash during the checks is a failure even if they passed.
check "server still healthy" curl -fsS -o /dev/null "$BASE/health"

# --- 10. summary ----------------------------------------------------------------------------------
cleanup
say "summary ($((SECONDS - STARTED)) s)"
for p in "${PASSED[@]}"; do echo "  ok      $p"; done
for f in "${FAILED[@]}"; do echo "  FAILED  $f"; done
[[ ${#FAILED[@]} -eq 0 ]]
