#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests: installs Debian's package
# when the server binaries are missing, starts the cluster when it is down, and, when local trust
# authentication is not configured, gives the postgres user a password.
# With --url, prints only the URL to use.
set -euo pipefail

url_trust="postgres://postgres@127.0.0.1:5432/postgres"
url_password="postgres://postgres:postgres@127.0.0.1:5432/postgres"

answers() { PGCONNECT_TIMEOUT=3 psql "$1" -Atc 'select 1' >/dev/null 2>&1; }

if [ "${1:-}" = "--url" ]; then
  if answers "$url_trust"; then echo "$url_trust"; else echo "$url_password"; fi
  exit 0
fi

if answers "$url_trust" || answers "$url_password"; then
  echo "PostgreSQL answers on 127.0.0.1:5432"
  exit 0
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "Installing PostgreSQL from Debian's packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql postgresql-client >/dev/null
fi

version="$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)"
if [ -z "$version" ]; then
  echo "no PostgreSQL cluster configured under /etc/postgresql" >&2
  exit 1
fi
if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  echo "Starting cluster $version/main"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi

for _ in $(seq 1 30); do
  if answers "$url_trust" || answers "$url_password"; then break; fi
  # A fresh Debian cluster asks TCP clients for a password: set one through the local socket.
  as_root su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null 2>&1 || true
  sleep 1
done
if answers "$url_trust" || answers "$url_password"; then
  echo "PostgreSQL answers on 127.0.0.1:5432"
else
  echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
  exit 1
fi
