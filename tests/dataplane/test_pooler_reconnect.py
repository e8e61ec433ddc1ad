"""PgBouncer reaches PostgreSQL again after PostgreSQL restarts while another container on its
network took PostgreSQL's address.

PgBouncer dials `sota-db-{slug}` by name. Its resolver (c-ares 1.34 in Debian's build) keeps
every answer in its own query cache for the record's TTL, which Docker's embedded DNS sets to
600 s, whatever PgBouncer's `dns_max_ttl` says; so if PostgreSQL came back at another address,
PgBouncer would keep dialling the old one for up to ten minutes. The runtime gives PostgreSQL a
fixed address on its network, outside the range Docker hands to other containers, as a
Kubernetes Service's ClusterIP is fixed.

The squatter is what an app attached while PostgreSQL was down would be: Docker 20.10 gives a
new container the lowest free address, which is PostgreSQL's while it is stopped. Two ways back
are checked: the reconcile (`sotadb up` starts the stopped container) and a plain `docker
start`, the same path as the restart policy after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

import asyncpg
import docker.errors
import pytest
from dataplane_helpers import (
    CLIENT_IMAGE,
    CONNECT_TIMEOUT,
    SESSION_TAG,
    TEST_LABEL,
    Database,
    provisioned,
    slug_for,
)
from docker.models.containers import Container

from sotadb import names
from sotadb.docker.runtime import DockerRuntime, minimal_document

pytestmark = pytest.mark.dataplane

RECOVERY_TIMEOUT = 30.0  # seconds from PostgreSQL's restart to a query through PgBouncer
ATTEMPT_TIMEOUT = 2 * CONNECT_TIMEOUT
SQUATTER_SECONDS = 120  # the squatter exits on its own even if the cleanup never runs


async def _select_one(url: str) -> object:
    connection = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    try:
        return await connection.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT)
    finally:
        await connection.close(timeout=CONNECT_TIMEOUT)


def _query_once(db: Database) -> str | None:
    """One query through PgBouncer with the app's DATABASE_URL, bounded as a whole (PgBouncer
    holds a client's login while it has no server connection); None, or the error's kind."""
    try:
        value = asyncio.run(asyncio.wait_for(_select_one(db.url()), ATTEMPT_TIMEOUT))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        return type(e).__name__  # never the message: a driver may quote the URL
    return None if value == 1 else f"unexpected value {value!r}"


def _wait_for_query(db: Database, timeout: float) -> float:
    """Seconds until a query through PgBouncer succeeds; bounded in time and in attempts."""
    __tracebackhide__ = True
    started = time.monotonic()
    last = "no attempt yet"
    for _ in range(int(timeout / 0.25) + 1):
        outcome = _query_once(db)
        if outcome is None:
            return time.monotonic() - started
        last = outcome
        if time.monotonic() - started > timeout:
            break
        time.sleep(0.25)
    raise AssertionError(
        f"no query through PgBouncer succeeded within {timeout:.0f}s of PostgreSQL's restart "
        f"(last error: {last}; PgBouncer log tail: {_log_tail(db.pooler)})"
    )


def _log_tail(container: Container) -> str:
    return container.logs(tail=3).decode(errors="replace").strip().replace("\n", " | ")


@contextlib.contextmanager
def _squatter(db: Database) -> Iterator[Container]:
    """A container on the database's network, started while PostgreSQL is stopped."""
    container = db.client.containers.run(
        CLIENT_IMAGE,
        entrypoint=["sleep", str(SQUATTER_SECONDS)],
        network=db.network,
        labels={TEST_LABEL: SESSION_TAG},
        user=f"{names.POSTGRES_UID}:{names.POSTGRES_UID}",
        detach=True,
    )
    try:
        yield container
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def _start_by_reconcile(runtime: DockerRuntime, db: Database) -> None:
    runtime.up(minimal_document(db.slug), wait=False)


def _start_by_docker(runtime: DockerRuntime, db: Database) -> None:
    db.postgres.start()


RESTARTS: dict[str, Callable[[DockerRuntime, Database], None]] = {
    "sotadb-up": _start_by_reconcile,
    "docker-start": _start_by_docker,
}


@pytest.mark.parametrize("restart", list(RESTARTS), ids=list(RESTARTS))
def test_pooler_reaches_postgres_after_its_address_was_taken(
    runtime: DockerRuntime, restart: str
) -> None:
    with provisioned(runtime, slug_for(f"readdr-{restart[:6]}")) as db:
        # PgBouncer has resolved PostgreSQL's name and its resolver holds the answer.
        _wait_for_query(db, RECOVERY_TIMEOUT)
        postgres_ip = db.ip(names.postgres_name(db.slug))
        db.postgres.stop(timeout=30)
        with _squatter(db) as squatter:
            squatter.reload()
            squatter_ip = squatter.attrs["NetworkSettings"]["Networks"][db.network]["IPAddress"]
            assert squatter_ip != postgres_ip, "another container took PostgreSQL's address"
            RESTARTS[restart](runtime, db)
            assert db.ip(names.postgres_name(db.slug)) == postgres_ip, (
                "PostgreSQL came back at another address"
            )
            _wait_for_query(db, RECOVERY_TIMEOUT)
