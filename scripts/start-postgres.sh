#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the catalog tests and print its URL.
# Uses Debian's postgresql package (installed by .ci/run); needs root to switch to the postgres user.
set -euo pipefail
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
bin=/usr/lib/postgresql/$version/bin
data=${CURATO_PG_DATA:-/tmp/curato-pg}
port=${CURATO_PG_PORT:-55432}
if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data" && chown postgres:postgres "$data"
    su postgres -c "$bin/initdb -D $data -A trust -U postgres" >/dev/null
fi
if ! su postgres -c "$bin/pg_ctl -D $data status" >/dev/null 2>&1; then
    su postgres -c "$bin/pg_ctl -D $data -l $data/server.log -o '-p $port -k /tmp -c listen_addresses=127.0.0.1' -w start" >/dev/null
fi
echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
