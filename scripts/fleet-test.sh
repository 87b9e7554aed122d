#!/usr/bin/env bash
# The fleet test (tests/fleet.rs): three server processes on a private PostgreSQL cluster, under
# load, with kill -9, SIGTERM and a PostgreSQL restart; once directly and once through pgbouncer in
# transaction-pooling mode.
#
# Installs what it needs when missing and running as root: PostgreSQL's server binaries (initdb,
# pg_ctl) and Debian's pgbouncer. Transaction pooling with sqlx needs pgbouncer 1.21 or later
# (prepared statements tracked across server connections, docs/OPERATIONS.md "Behind pgbouncer");
# Debian 12 ships 1.18, so when the installed one is older this script builds the pgbouncer of
# Debian's next release from its Debian source package (apt-get source, through the machine's
# configured Debian mirror) into target/pgbouncer, once.
#
# Environment (optional):
#   FLEET_PGBOUNCER       a pgbouncer binary to use instead
#   FLEET_PGBOUNCER_MODE  transaction (default) or session
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

as_root() { [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; }

apt_install() {
    if ! as_root; then
        echo "fleet-test: install $* (Debian: apt-get install $*)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    apt-get install -y -qq "$@" >/dev/null
}

need_packages=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_packages+=(postgresql)
[ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null 2>&1 || need_packages+=(pgbouncer)
if [ ${#need_packages[@]} -gt 0 ]; then
    echo "installing Debian's ${need_packages[*]}"
    apt_install "${need_packages[@]}"
fi

# The version of a pgbouncer binary as a comparable number: 1.24.1 -> 12401.
version_of() {
    "$1" --version 2>/dev/null | awk '/PgBouncer/ {split($2, v, "."); printf "%d\n", v[1] * 10000 + v[2] * 100 + v[3]; exit}'
}

# The machine's Debian mirror, as configured for apt (deb822 or one-line format).
debian_mirror() {
    { awk '/^URIs:/ {print $2}' /etc/apt/sources.list.d/*.sources 2>/dev/null
      awk '$1 == "deb" {print $2}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
    } | grep -v security | head -1
}

build_pgbouncer() {
    local dest=$ROOT/target/pgbouncer work=$ROOT/target/pgbouncer-src
    if [ -x "$dest/bin/pgbouncer" ] && [ "$(version_of "$dest/bin/pgbouncer")" -ge 12100 ]; then
        echo "$dest/bin/pgbouncer"
        return
    fi
    local mirror
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || { echo "fleet-test: no Debian mirror configured for apt" >&2; exit 1; }
    echo "building pgbouncer from Debian's trixie source package (installed: $("$system" --version | head -1))" >&2
    apt_install build-essential pkg-config dpkg-dev libevent-dev libssl-dev libc-ares-dev >&2
    rm -rf "$work" && mkdir -p "$work/lists/partial"
    echo "deb-src $mirror trixie main" >"$work/sources.list"
    local opts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
                -o "Dir::State::Lists=$work/lists")
    apt-get update -qq "${opts[@]}" >&2
    (cd "$work" && apt-get source --download-only -qq "${opts[@]}" pgbouncer >&2 2>/dev/null)
    tar -xzf "$work"/pgbouncer_*.orig.tar.gz -C "$work"
    (cd "$work"/pgbouncer-*/ &&
        ./configure --prefix="$dest" --without-systemd >"$work/configure.log" 2>&1 &&
        make -j2 >"$work/make.log" 2>&1 &&
        make install >"$work/install.log" 2>&1) ||
        { echo "fleet-test: building pgbouncer failed; see $work/*.log" >&2; exit 1; }
    echo "$dest/bin/pgbouncer"
}

if [ -z "${FLEET_PGBOUNCER:-}" ]; then
    system=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
    if [ "${FLEET_PGBOUNCER_MODE:-transaction}" = transaction ] && [ "$(version_of "$system")" -lt 12100 ]; then
        FLEET_PGBOUNCER=$(build_pgbouncer)
    else
        FLEET_PGBOUNCER=$system
    fi
fi
export FLEET_PGBOUNCER
echo "pgbouncer: $FLEET_PGBOUNCER ($("$FLEET_PGBOUNCER" --version | head -1)), ${FLEET_PGBOUNCER_MODE:-transaction} pooling"
cargo test --locked --test fleet -- --ignored --nocapture --test-threads=1
