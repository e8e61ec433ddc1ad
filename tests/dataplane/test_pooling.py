"""Transaction pooling through PgBouncer, as an app under load meets it.

- 100 concurrent clients are served by at most `default_pool_size` (20) server connections:
  measured exactly from the server's own clocks (every transaction reports its backend and
  start/end), and sampled independently in `pg_stat_activity` as the superuser.
- Client 101 gets PgBouncer's clear "no more connections allowed (max_client_conn)", fast.
- Prepared statements work in transaction mode without `pgbouncer=true` (PgBouncer's
  `max_prepared_statements`): psycopg 3 with `prepare_threshold=0` and asyncpg's statement
  cache, across many transactions on rotating server connections.

PgBouncer's own readiness probe (`pg_isready` against it every 5 s) briefly takes one of the
100 client slots; a connect refused with max_client_conn while the test fills the last slots is
retried a bounded number of times, and the retries are counted.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time

import asyncpg
import psycopg
import pytest
from dataplane_helpers import (
    CONNECT_TIMEOUT,
    MAX_CLIENT_CONN_ERROR,
    Database,
    Retries,
    connect_pooled,
    hold_transactions,
    open_clients,
)

from sotadb.spec import DEFAULT_MAX_CLIENT_CONNECTIONS, DEFAULT_POOL_SIZE

pytestmark = pytest.mark.dataplane

CLIENTS = DEFAULT_MAX_CLIENT_CONNECTIONS  # 100
POOL = DEFAULT_POOL_SIZE  # 20
HOLD = 0.2  # seconds each transaction holds its server connection


def app_server_connections(db: Database) -> int:
    """Server connections PgBouncer holds to PostgreSQL, counted by the superuser."""
    return int(
        db.superuser_sql(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE usename = :'role' AND backend_type = 'client backend'",
            role=db.role,
        )
    )


def sample_until(db: Database, stop: threading.Event, *, limit: int = 400) -> list[int]:
    samples: list[int] = []
    deadline = time.monotonic() + 60
    while not stop.is_set() and len(samples) < limit and time.monotonic() < deadline:
        samples.append(app_server_connections(db))
        stop.wait(0.05)
    return samples


async def test_100_clients_share_at_most_20_server_connections(shared_db: Database) -> None:
    retries = Retries()
    async with open_clients(str(shared_db.url()), CLIENTS, retries) as connections:
        assert len(connections) == CLIENTS
        stop = threading.Event()
        sampler = asyncio.create_task(asyncio.to_thread(sample_until, shared_db, stop))
        try:
            load = await hold_transactions(connections, rounds=2, hold=HOLD)
        finally:
            stop.set()
            samples = await sampler

    assert len(load.transactions) == 2 * CLIENTS
    # At most POOL transactions ever ran at once, on at most POOL backends, and the load
    # filled the pool to exactly its size.
    assert len(load.backends) <= POOL, f"{len(load.backends)} distinct backends"
    assert load.peak == POOL, f"{load.peak} transactions overlapped at the peak"
    # Queueing shows in wall time: 200 transactions x 0.2 s on 20 connections need 2 s.
    assert load.elapsed >= 2 * CLIENTS * HOLD / POOL * 0.95
    assert samples, "pg_stat_activity was never sampled"
    assert max(samples) <= POOL, f"pg_stat_activity showed {max(samples)} server connections"
    assert retries.count <= 5, f"{retries.count} connects were refused for max_client_conn"


async def test_client_101_gets_a_clear_error_not_a_hang(shared_db: Database) -> None:
    url = str(shared_db.url())
    async with open_clients(url, CLIENTS) as connections:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match=re.escape(MAX_CLIENT_CONN_ERROR)):
            await asyncio.wait_for(
                psycopg.AsyncConnection.connect(url, connect_timeout=CONNECT_TIMEOUT),
                timeout=CONNECT_TIMEOUT + 5,
            )
        assert time.monotonic() - started < 2, "the refusal was not immediate"
        # The limit, not breakage: with one slot free, a client gets in again.
        await connections.pop().close()
        again = await connect_pooled(url)
        try:
            assert await again.fetchval("SELECT 1") == 1
        finally:
            await again.close()


async def churn(url: str, stop: asyncio.Event, *, rounds: int = 400) -> int:
    """A client doing short transactions until told to stop, so server connections rotate."""
    connection = await connect_pooled(url)
    try:
        done = 0
        while not stop.is_set() and done < rounds:
            async with connection.transaction():
                await connection.execute("SELECT pg_sleep(0.005)")
            done += 1
        return done
    finally:
        await connection.close()


PREPARED_QUERY = "SELECT %s::int * 2, pg_backend_pid()"
PREPARED_ON_SERVER = (
    "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT $1::int * 2, "
    "pg_backend_pid()'"
)


async def test_psycopg_prepared_statements_in_transaction_mode(shared_db: Database) -> None:
    url = str(shared_db.url())
    stop = asyncio.Event()
    churners = [asyncio.create_task(churn(url, stop)) for _ in range(POOL + 5)]
    backends: set[int] = set()
    try:
        # prepare_threshold=0: every statement is prepared server-side on first use.
        async with await psycopg.AsyncConnection.connect(
            url, prepare_threshold=0, connect_timeout=CONNECT_TIMEOUT
        ) as connection:
            for i in range(200):
                async with connection.transaction():
                    cursor = await connection.execute(PREPARED_QUERY, (i,))
                    row = await cursor.fetchone()
                    assert row is not None
                    assert row[0] == 2 * i
                    backends.add(row[1])
                    if i % 50 == 0:
                        cursor = await connection.execute(PREPARED_ON_SERVER)
                        assert await cursor.fetchone() == (1,), "not prepared on its server"
                await asyncio.sleep(0)
    finally:
        stop.set()
        churned = await asyncio.gather(*churners)
    # The prepared statement was used on several server connections: PgBouncer prepared it
    # on each one as needed, and no "prepared statement does not exist" surfaced.
    assert len(backends) > 1, "the client never changed server connection"
    assert sum(churned) > 0


async def test_asyncpg_statement_cache_in_transaction_mode(shared_db: Database) -> None:
    url = str(shared_db.url())
    concurrency = 2 * POOL  # more clients than server connections

    async def client(connection: asyncpg.Connection, n: int) -> set[int]:
        backends = set()
        for i in range(25):
            async with connection.transaction():
                # asyncpg prepares each of these (named statements, cached per connection).
                assert await connection.fetchval("SELECT $1::int + $2::int", n, i) == n + i
                row = await connection.fetchrow(
                    "SELECT $1::text || '-' || $2::text AS tag, pg_backend_pid() AS pid",
                    "c",
                    str(n),
                )
                assert row["tag"] == f"c-{n}"
                backends.add(row["pid"])
                values = await connection.fetch("SELECT generate_series(1, $1::int)", 3)
                assert [v[0] for v in values] == [1, 2, 3]
        return backends

    async with open_clients(url, concurrency) as connections:
        results = await asyncio.wait_for(
            asyncio.gather(*(client(c, n) for n, c in enumerate(connections))), timeout=60
        )
        prepared = await connections[0].fetchval("SELECT count(*) FROM pg_prepared_statements")
    assert prepared >= 1, "asyncpg's statements were not prepared on the server"
    assert any(len(b) > 1 for b in results), "no client ever changed server connection"
    assert len(set().union(*results)) <= POOL
