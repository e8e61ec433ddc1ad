"""Idempotency: `up` converges. Run twice, it changes nothing; with a changed spec, it re-creates
exactly the containers whose configuration changed, and the change is live.

defaultPoolSize 20 → 25 changes pgbouncer.ini only: PostgreSQL's max_connections is
max(50, pool + 20), 50 both times, so the PostgreSQL container must be left running.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from dataplane_helpers import (
    CONNECT_TIMEOUT,
    Database,
    assert_same_secret,
    document_for,
    hold_transactions,
    open_clients,
    provisioned,
    slug_for,
)

from sotadb import names
from sotadb.docker.runtime import DockerRuntime
from sotadb.docker.state import StateStore
from sotadb.render import postgres

pytestmark = pytest.mark.dataplane

NEW_POOL = 25


@pytest.fixture(scope="module")
def converging_db(runtime: DockerRuntime) -> Iterator[Database]:
    with provisioned(runtime, slug_for("converge")) as db:
        with psycopg.connect(db.url(), autocommit=True, connect_timeout=CONNECT_TIMEOUT) as c:
            c.execute("CREATE TABLE marker (note text)")
            c.execute("INSERT INTO marker VALUES ('written before any re-spec')")
        yield db


def fingerprint(db: Database) -> dict[str, tuple[str, str]]:
    """Each container's id and start time: a re-created or restarted one changes."""
    result = {}
    for container in (db.postgres, db.pooler):
        result[container.name] = (container.id, container.attrs["State"]["StartedAt"])
    return result


def state_bytes(db: Database) -> bytes:
    return (db.runtime.store.database_dir(db.slug) / "state.json").read_bytes()


def test_second_up_changes_nothing(converging_db: Database, runtime: DockerRuntime) -> None:
    slug = converging_db.slug
    before = fingerprint(converging_db)
    network_id = converging_db.client.networks.get(converging_db.network).id
    state_before = state_bytes(converging_db)

    # As a second `sotadb up` process would: a fresh runtime over the same state directory.
    second = DockerRuntime(client=runtime.client, store=StateStore(runtime.store.home))
    again = second.up(document_for(slug))

    assert again.changed == ()
    assert fingerprint(converging_db) == before, "a container was re-created or restarted"
    assert converging_db.client.networks.get(converging_db.network).id == network_id
    assert_same_secret(again.credentials.password, converging_db.credentials.password, "password")
    assert_same_secret(again.credentials.verifier, converging_db.credentials.verifier, "verifier")
    assert state_bytes(converging_db) == state_before, "the state file was rewritten"


async def test_pool_size_change_recreates_only_pgbouncer(
    converging_db: Database, runtime: DockerRuntime
) -> None:
    slug = converging_db.slug
    before = fingerprint(converging_db)
    conf_before = converging_db.postgresql_conf()

    again = runtime.up(document_for(slug, {"pool": {"defaultPoolSize": NEW_POOL}}))

    assert again.changed == (names.pooler_name(slug),)
    after = fingerprint(converging_db)
    assert after[names.postgres_name(slug)] == before[names.postgres_name(slug)]
    assert after[names.pooler_name(slug)][0] != before[names.pooler_name(slug)][0]
    assert_same_secret(again.credentials.password, converging_db.credentials.password, "password")
    # The rendered files say so ...
    ini = converging_db.pgbouncer_ini().splitlines()
    assert f"default_pool_size = {NEW_POOL}" in ini
    assert f"max_db_connections = {NEW_POOL}" in ini
    assert converging_db.postgresql_conf() == conf_before
    assert "max_connections = '50'" in conf_before.splitlines()
    assert converging_db.superuser_sql("SHOW max_connections") == str(postgres.MIN_MAX_CONNECTIONS)
    # ... and the live pooler does it: 60 clients now get 25 concurrent server connections.
    async with open_clients(str(converging_db.url()), 60) as connections:
        load = await hold_transactions(connections, rounds=2, hold=0.2)
    assert load.peak == NEW_POOL, f"{load.peak} transactions overlapped at the peak"
    assert len(load.backends) <= NEW_POOL
    # The data went nowhere.
    with psycopg.connect(converging_db.url(), connect_timeout=CONNECT_TIMEOUT) as connection:
        notes = connection.execute("SELECT note FROM marker").fetchall()
    assert notes == [("written before any re-spec",)]
