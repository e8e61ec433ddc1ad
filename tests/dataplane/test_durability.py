"""Durability: what PostgreSQL acknowledged stays, across `down`/`up` and across SIGKILL.

A writer thread commits one row per transaction through PgBouncer (the app's DATABASE_URL) and
records each id only after its COMMIT was acknowledged. PostgreSQL is SIGKILLed mid-stream,
comes back, and every acknowledged id must be there.

Two ways back, both measured at about 2 s here:
- `docker kill`: the engine counts it as a deliberate stop, so the `unless-stopped` restart
  policy does *not* restart the container; `sotadb up` (the reconcile) starts it again.
- The postmaster dying on its own (SIGKILL to its host PID, as the OOM killer would): the
  restart policy brings it back with no help from sotadb.

(SIGKILL keeps the host's page cache, so this proves WAL-before-acknowledgement and crash
recovery, not fsync to the disk itself.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from dataplane_helpers import (
    CONNECT_TIMEOUT,
    Database,
    assert_same_secret,
    document_for,
    exec_in,
    provisioned,
    redact,
    slug_for,
    wait_for,
)

from sotadb import names
from sotadb.docker.runtime import DockerRuntime

pytestmark = pytest.mark.dataplane

ACKED_BEFORE_KILL = 300  # the writer is this far into its stream when PostgreSQL is killed
MAX_ROWS = 100_000
WRITER_SECONDS = 60


@pytest.fixture(scope="module")
def durable_db(runtime: DockerRuntime) -> Iterator[Database]:
    with provisioned(runtime, slug_for("durable")) as db:
        with psycopg.connect(db.url(), autocommit=True, connect_timeout=CONNECT_TIMEOUT) as c:
            c.execute("CREATE TABLE acked (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
        yield db


class Writer(threading.Thread):
    """Commits ids first_id, first_id+1, ... one per transaction until stopped or failing."""

    def __init__(self, url: str, first_id: int) -> None:
        super().__init__(daemon=True)
        self._url = url
        self.first_id = first_id
        self.acked: list[int] = []
        self.error: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + WRITER_SECONDS
        try:
            with psycopg.connect(
                self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
            ) as connection:
                for row_id in range(self.first_id, self.first_id + MAX_ROWS):
                    if self.stop.is_set() or time.monotonic() > deadline:
                        return
                    connection.execute("INSERT INTO acked (id) VALUES (%s)", (row_id,))
                    self.acked.append(row_id)  # only now: the COMMIT was acknowledged
        except Exception as e:  # the kill severs the connection; keep the reason, no secret
            self.error = f"{type(e).__name__}: {redact(str(e))}"


def present_ids(db: Database, first: int, last: int) -> set[int]:
    with psycopg.connect(db.url(), connect_timeout=CONNECT_TIMEOUT) as connection:
        rows = connection.execute(
            "SELECT id FROM acked WHERE id BETWEEN %s AND %s", (first, last)
        ).fetchall()
    return {row_id for (row_id,) in rows}


@contextlib.contextmanager
def writing(db: Database, first_id: int) -> Iterator[Writer]:
    """A running writer that has `ACKED_BEFORE_KILL` acknowledged commits behind it."""
    writer = Writer(db.url(), first_id)
    writer.start()
    try:
        wait_for(
            lambda: len(writer.acked) >= ACKED_BEFORE_KILL or writer.error or not writer.is_alive(),
            timeout=30,
            what=f"{ACKED_BEFORE_KILL} acknowledged commits",
        )
        assert len(writer.acked) >= ACKED_BEFORE_KILL, f"the writer stopped: {writer.error}"
        yield writer
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert not writer.is_alive(), "the writer did not finish within 30s"


def assert_all_acknowledged_present(db: Database, writer: Writer) -> None:
    __tracebackhide__ = True
    acked = set(writer.acked)
    present = present_ids(db, writer.first_id, writer.first_id + MAX_ROWS)
    missing = sorted(acked - present)
    assert not missing, f"{len(missing)} acknowledged commits lost, first {missing[:5]}"


def crash_recovery_ran(db: Database, since: float) -> bool:
    logs = db.postgres.logs(since=int(since)).decode(errors="replace")
    return "automatic recovery in progress" in logs


def test_committed_rows_survive_down_and_up(durable_db: Database, runtime: DockerRuntime) -> None:
    slug = durable_db.slug
    with psycopg.connect(durable_db.url(), connect_timeout=CONNECT_TIMEOUT) as connection:
        connection.execute(
            "INSERT INTO acked (id) SELECT g FROM generate_series(1, 1000) AS g"
        )  # committed when the block exits
    postgres_id = durable_db.postgres.id

    runtime.down(slug)
    status = runtime.status(slug)
    assert (status.containers, status.network, status.volume) == ((), False, True)
    assert runtime.store.load(slug) is not None, "down without --purge dropped the state"

    again = runtime.up(document_for(slug))
    assert names.data_volume_name(slug) not in again.changed, "the data volume was re-created"
    assert set(again.changed) == {
        names.network_name(slug),
        names.postgres_name(slug),
        names.pooler_name(slug),
    }
    assert durable_db.postgres.id != postgres_id  # really a new container on the old volume
    assert_same_secret(again.credentials.password, durable_db.credentials.password, "password")
    assert present_ids(durable_db, 1, 1000) == set(range(1, 1001))


def test_acknowledged_commits_survive_docker_kill(
    durable_db: Database, runtime: DockerRuntime
) -> None:
    postgres = durable_db.postgres
    killed_at = time.time()
    with writing(durable_db, first_id=1_000_000) as writer:
        postgres.kill()  # SIGKILL, mid-stream
        wait_for(
            lambda: durable_db.postgres.status != "running", timeout=30, what="the kill to land"
        )
        again = runtime.up(document_for(durable_db.slug))
    assert again.changed == (), "up re-created something instead of starting the container"
    assert durable_db.postgres.id == postgres.id
    assert crash_recovery_ran(durable_db, killed_at), "PostgreSQL did not run crash recovery"
    assert_all_acknowledged_present(durable_db, writer)


def test_acknowledged_commits_survive_a_postmaster_crash(durable_db: Database) -> None:
    postgres = durable_db.postgres
    init = int(postgres.attrs["State"]["Pid"])
    restarts = int(postgres.attrs["RestartCount"])
    # PID 1 is tini; its only child is the postmaster.
    children = Path(f"/proc/{init}/task/{init}/children").read_text().split() if init else []
    pid = int(children[0]) if len(children) == 1 else 0
    command = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
    assert command.startswith(b"postgres\0"), (
        "the postmaster (the child of the PostgreSQL container's PID 1) is not visible from "
        "this host (these tests must share the Docker engine's PID namespace)"
    )
    killed_at = time.time()
    with writing(durable_db, first_id=2_000_000) as writer:
        os.kill(pid, signal.SIGKILL)  # the postmaster dies, tini exits with it: the container ends

        def restarted() -> bool:
            current = durable_db.postgres
            return (
                current.status == "running"
                and int(current.attrs["RestartCount"]) > restarts
                and int(current.attrs["State"]["Pid"]) != init
            )

        wait_for(restarted, timeout=30, what="Docker's restart policy to restart PostgreSQL")
        durable_db.runtime.wait_until_ready(durable_db.slug, durable_db.credentials, timeout=60)
    assert crash_recovery_ran(durable_db, killed_at), "PostgreSQL did not run crash recovery"
    assert_all_acknowledged_present(durable_db, writer)


def test_a_killed_stranger_in_the_container_does_not_restart_the_server(
    durable_db: Database,
) -> None:
    """A process left by `docker exec` (or `kubectl exec`) whose parent exited is re-parented to
    PID 1. Were the postmaster PID 1, reaping it after a SIGKILL would look like a crashed
    backend and end every session. tini is PID 1, so a session opened before stays usable."""
    with psycopg.connect(durable_db.url(), connect_timeout=CONNECT_TIMEOUT) as before:
        started = before.execute("SELECT pg_postmaster_start_time()").fetchone()
        orphan = exec_in(
            durable_db.postgres,
            ["bash", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
            user="postgres",
            repeatable=False,
        )
        pid = orphan.stdout.strip()
        assert orphan.exit_code == 0, orphan.stdout
        assert pid.isdigit(), orphan.stdout
        killed = exec_in(
            durable_db.postgres,
            ["bash", "-c", f'test "$(ps -o ppid= -p {pid} | tr -d " ")" = 1 && kill -KILL {pid}'],
            user="postgres",
            repeatable=False,
        )
        assert killed.exit_code == 0, "the orphan was not a child of PID 1, or was not killed"
        wait_for(
            lambda: exec_in(durable_db.postgres, ["ps", "-p", pid]).exit_code != 0,
            timeout=10,
            what="PID 1 to reap the orphan",
        )
        time.sleep(0.5)  # the postmaster would have begun its reset by now
        assert before.execute("SELECT pg_postmaster_start_time()").fetchone() == started
