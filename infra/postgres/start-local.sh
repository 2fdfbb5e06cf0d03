#!/usr/bin/env bash
# A PostgreSQL server of our own for tests and local hunts: 127.0.0.1 only, its own data directory
# and port, role `minima` (password `minima`, may create databases), databases `optuna_test` and
# `mlflow_test`. Idempotent: installs the server (apt-get) only when it is missing, initialises the
# cluster once, starts it only when it is down. Stop it with: infra/postgres/start-local.sh stop
#
#   MINIMA_HUNT_PG_PORT  (default 55432)   MINIMA_HUNT_PGDATA  (default /tmp/minima-hunt-pg)
set -euo pipefail

PORT="${MINIMA_HUNT_PG_PORT:-55432}"
PGDATA="${MINIMA_HUNT_PGDATA:-/tmp/minima-hunt-pg}"
ROLE=minima
DATABASES=(optuna_test mlflow_test)

find_bindir() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$dir" && -x "$dir/pg_ctl" ]]; then
        echo "$dir"
    elif command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
    fi
}

BINDIR="$(find_bindir)"
if [[ -z "$BINDIR" ]]; then
    if [[ "$(id -u)" != 0 ]]; then
        echo "start-local.sh: PostgreSQL is not installed; run as root (apt-get) or install it" >&2
        exit 1
    fi
    echo "installing PostgreSQL (apt-get)"
    # the package would create (and try to start) a cluster of its own on 5432: we run ours instead
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/minima-hunt.conf
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold postgresql >/dev/null
    BINDIR="$(find_bindir)"
fi

# initdb and postgres refuse to run as root: run them as the `postgres` user then
if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    AS=(runuser -u postgres --)
    OWNER=postgres
else
    AS=()
    OWNER="$(id -un)"
fi

pg_ctl() { "${AS[@]}" "$BINDIR/pg_ctl" -D "$PGDATA" "$@"; }
sql() { "${AS[@]}" "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGDATA" -p "$PORT" -U postgres -d postgres "$@"; }

if [[ "${1:-start}" == stop ]]; then
    if [[ -f "$PGDATA/PG_VERSION" ]] && pg_ctl status >/dev/null 2>&1; then
        pg_ctl stop -m fast -w >/dev/null
        echo "stopped PostgreSQL in $PGDATA"
    fi
    exit 0
fi

if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
    mkdir -p "$PGDATA"
    chown "$OWNER" "$PGDATA"
    chmod 700 "$PGDATA"
    "${AS[@]}" "$BINDIR/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    # a throw-away test server: loopback only, socket in the data directory, durability traded for speed
    cat >>"$PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PGDATA'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
fi

if ! pg_ctl status >/dev/null 2>&1; then
    pg_ctl start -w -t 60 -l "$PGDATA/server.log" >/dev/null || {
        tail -n 20 "$PGDATA/server.log" >&2
        exit 1
    }
fi

if [[ -z "$(sql -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" ]]; then
    sql -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$ROLE'"
fi
for db in "${DATABASES[@]}"; do
    if [[ -z "$(sql -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]]; then
        sql -c "CREATE DATABASE $db OWNER $ROLE"
    fi
done
echo "PostgreSQL on 127.0.0.1:$PORT (data $PGDATA):" \
    "MINIMA_HUNT_TEST_PG=postgresql+psycopg2://$ROLE:$ROLE@127.0.0.1:$PORT"
