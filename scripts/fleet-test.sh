#!/usr/bin/env bash
# The fleet test (tests/fleet.rs): three server processes on a private PostgreSQL cluster, under
# load, with kill -9, SIGTERM and a PostgreSQL restart; once directly and once through pgbouncer.
# Installs what it needs: PostgreSQL's server binaries (initdb, pg_ctl) and Debian's pgbouncer,
# when missing and running as root.
#
# Environment (optional):
#   FLEET_PGBOUNCER_MODE  session (default) or transaction; see docs/OPERATIONS.md "Behind pgbouncer"
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_packages+=(postgresql)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || need_packages+=(pgbouncer)
if [ ${#need_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian's ${need_packages[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${need_packages[@]}" >/dev/null
    else
        echo "fleet-test: install ${need_packages[*]} (Debian: apt-get install ${need_packages[*]})" >&2
        exit 1
    fi
fi
# The package may start its own pgbouncer service; the test starts its own on a free port.
cargo test --locked --test fleet -- --ignored --nocapture --test-threads=1
