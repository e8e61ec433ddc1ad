#!/usr/bin/env bash
# The README's first command, after set-up: provision a database on Docker and answer a query
# through PgBouncer from an app container on the database's network, using DATABASE_URL as is.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${SOTADB_DEMO_NAME:-my-app}
sotadb=.venv/bin/sotadb

"$sotadb" up "$name"
# The app's view: a container on sota-net-$name with DATABASE_URL in its environment.
# The URL travels by environment, never on a command line or in the output.
DATABASE_URL="$("$sotadb" url "$name" --show-password)" \
  docker run --rm --network "sota-net-$name" -e DATABASE_URL sotadb/postgres:17 \
  sh -c 'psql "$DATABASE_URL" -X -A -t -c "select '"'"'answered through PgBouncer by '"'"' || version()"'
echo "sotadb: $name is up. Try: $sotadb status; $sotadb url $name --host-port; $sotadb down $name"
