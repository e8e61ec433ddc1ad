"""Isolation: two databases side by side cannot reach each other.

An app container on one database's network probes the other database's PostgreSQL and
PgBouncer by name (must not resolve) and by address (must not connect within a few seconds,
even holding that database's real credentials). The same probes against its own database are
the control that proves the probes themselves work.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dataplane_helpers import Database, provisioned, run_in_network, slug_for

from sotadb import names
from sotadb.docker.runtime import DockerRuntime

pytestmark = pytest.mark.dataplane

PROBE_TIMEOUT = 3  # seconds for each name lookup and TCP connect

PROBES = f"""
set -u
resolve() {{ if timeout {PROBE_TIMEOUT} getent hosts "$1" >/dev/null 2>&1; then echo "$2=resolves"; else echo "$2=unknown"; fi; }}
connect() {{ if timeout {PROBE_TIMEOUT} bash -c "exec 3<>/dev/tcp/$1/5432" 2>/dev/null; then echo "$2=open"; else echo "$2=closed"; fi; }}
login() {{ if PGCONNECT_TIMEOUT={PROBE_TIMEOUT} timeout {PROBE_TIMEOUT + 2} psql -X -tA "$1" -c 'SELECT 1' >/dev/null 2>&1; then echo "$2=in"; else echo "$2=out"; fi; }}
resolve "$OTHER_DB" other-db-name & resolve "$OTHER_POOLER" other-pooler-name &
connect "$OTHER_DB_IP" other-db-ip & connect "$OTHER_POOLER_IP" other-pooler-ip &
login "$OTHER_DIRECT_URL" other-db-login &
resolve "$OWN_DB" own-db-name & connect "$OWN_DB" own-db-port & connect "$OWN_POOLER" own-pooler-port &
login "$OWN_URL" own-login &
wait
"""  # noqa: E501

EXPECTED = {
    "other-db-name": "unknown",
    "other-pooler-name": "unknown",
    "other-db-ip": "closed",
    "other-pooler-ip": "closed",
    "other-db-login": "out",
    "own-db-name": "resolves",
    "own-db-port": "open",
    "own-pooler-port": "open",
    "own-login": "in",
}


@pytest.fixture(scope="module")
def neighbour_db(runtime: DockerRuntime) -> Iterator[Database]:
    with provisioned(runtime, slug_for("neighbour")) as db:
        yield db


@pytest.mark.parametrize("direction", ["neighbour-to-app", "app-to-neighbour"])
def test_databases_cannot_reach_each_other(
    shared_db: Database, neighbour_db: Database, direction: str
) -> None:
    own, other = shared_db, neighbour_db
    if direction == "neighbour-to-app":
        own, other = neighbour_db, shared_db
    other_db, other_pooler = names.postgres_name(other.slug), names.pooler_name(other.slug)
    environment = {
        "OTHER_DB": other_db,
        "OTHER_POOLER": other_pooler,
        "OTHER_DB_IP": other.ip(other_db),
        "OTHER_POOLER_IP": other.ip(other_pooler),
        # The other database's real credentials, at an address this host can dial.
        "OTHER_DIRECT_URL": other.direct_url(),
        "OWN_DB": names.postgres_name(own.slug),
        "OWN_POOLER": names.pooler_name(own.slug),
        "OWN_URL": own.database_url(),
    }
    run = run_in_network(own.client, own.network, PROBES, environment=environment, timeout=30)
    assert run.exit_code == 0, run.output
    seen = dict(line.split("=", 1) for line in run.output.split() if "=" in line)
    assert seen == EXPECTED
