"""In-memory engines for the API's unit tests, and the harness that serves the app over them.

`FakeRuntime` is a real implementation of `sotadb.api.service.Runtime` without Docker: it keeps
state in a real `StateStore` (so credentials are generated, sealed and kept exactly as
`DockerRuntime.up` does) and "runs" containers in a set. `FakeBackups` implements `Backups` with
real `BackupRecord`s. The data-plane tests (tests/dataplane/test_api_server.py) use the real
Docker runtime instead.

Every response the harness's client receives is recorded, and each test that uses it ends by
proving that no response (body or header) contains a password or verifier of any database in
the state store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sotadb import names
from sotadb.api.app import build_app
from sotadb.api.errors import BackupConflict
from sotadb.api.tokens import FILE_NAME, TokenStore
from sotadb.backup.catalog import BackupRecord, Phase, Verification
from sotadb.credentials import Credentials
from sotadb.docker.runtime import ContainerStatus, DatabaseStatus, UpResult
from sotadb.docker.state import DatabaseState, StateStore
from sotadb.errors import ProvisioningFailed, RuntimeUnavailable
from sotadb.spec import parse_database


class FakeRuntime:
    """`DockerRuntime` without Docker: state as the real one keeps it, containers in a set."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.running: set[str] = set()
        self.answers = True  # whether a query through PgBouncer would answer
        self.fail: Exception | None = None  # raised by every call while set
        self.up_calls = 0

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def up(self, document: Mapping[str, Any]) -> UpResult:
        self._check()
        self.up_calls += 1
        db = parse_database(document)
        previous = self.store.load(db.slug)
        credentials = previous.credentials if previous else Credentials.generate()
        ports = (
            dict(previous.host_ports)
            if previous
            else {names.postgres_name(db.slug): 15432, names.pooler_name(db.slug): 15433}
        )
        state = DatabaseState(db.slug, dict(document), credentials, ports)
        if state != previous:
            self.store.save(state)
        changed: tuple[str, ...] = ()
        if db.slug not in self.running:
            changed = (names.postgres_name(db.slug), names.pooler_name(db.slug))
            self.running.add(db.slug)
        return UpResult(db, credentials, changed, ports)

    def status(self, slug: str) -> DatabaseStatus:
        self._check()
        containers: tuple[ContainerStatus, ...] = ()
        if slug in self.running:
            containers = tuple(
                ContainerStatus(name, "running", "healthy")
                for name in (names.postgres_name(slug), names.pooler_name(slug))
            )
        state = self.store.load(slug)
        return DatabaseStatus(
            slug=slug,
            containers=containers,
            network=slug in self.running,
            volume=state is not None,
            host_ports=dict(state.host_ports) if state else {},
            answers=slug in self.running and self.answers,
        )

    def wait_until_ready(self, slug: str, credentials: Credentials, *, timeout: float = 1) -> float:
        self._check()
        if slug in self.running and self.answers:
            return 0.0
        raise ProvisioningFailed(f"{slug} did not answer within {timeout:.0f}s")

    def down(self, slug: str) -> None:
        self.running.discard(slug)


class FakeBackups:
    """`Backups` in memory, with real `BackupRecord`s."""

    def __init__(self) -> None:
        self.records: dict[str, list[BackupRecord]] = {}
        self.fail: Exception | None = None
        self.next_phase = Phase.SUCCEEDED
        self.clock = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)

    def list_backups(self, slug: str) -> list[BackupRecord]:
        if self.fail is not None:
            raise self.fail
        return list(self.records.get(slug, []))

    def create_backup(self, slug: str) -> BackupRecord:
        if self.fail is not None:
            raise self.fail
        self.clock += timedelta(minutes=1)
        name = f"{slug}-{self.clock.strftime('%Y%m%dT%H%M%SZ')}"
        if self.next_phase is Phase.SUCCEEDED:
            record = BackupRecord(
                name=name,
                database=slug,
                phase=Phase.SUCCEEDED,
                started_at=self.clock,
                completed_at=self.clock + timedelta(seconds=2),
                file=f"{name}.sql.gz",
                location=f"/srv/backups/{slug}/{name}.sql.gz",
                size=1234,
                sha256=hashlib.sha256(name.encode()).hexdigest(),
                verification=Verification.PASSED,
                verified_at=self.clock + timedelta(seconds=3),
                message="restore drill: 2 tables, checksums match",
            )
        else:
            record = BackupRecord(
                name=name,
                database=slug,
                phase=self.next_phase,
                started_at=self.clock,
                message="pg_dump exited 1: could not connect",
            )
        self.records.setdefault(slug, []).append(record)
        return record


@dataclass(frozen=True)
class Seen:
    """One response any client of the harness received: what was asked, and all it said."""

    request: str
    status: int
    text: str  # the body, then every header


@dataclass
class Harness:
    home: Path
    app: FastAPI
    client: TestClient
    runtime: FakeRuntime
    backups: FakeBackups
    tokens: TokenStore
    connect_error: Exception | None = None
    seen: list[Seen] = field(default_factory=list)

    def token(self, project: str) -> str:
        return self.tokens.create(project)[1]

    def auth(self, project: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(project)}"}

    def secrets(self) -> dict[str, str]:
        """Every password and verifier in the state store: label → value."""
        found = {}
        for slug in self.runtime.store.slugs():
            state = self.runtime.store.load(slug)
            assert state is not None
            found[f"password of {slug}"] = state.credentials.password
            found[f"verifier of {slug}"] = state.credentials.verifier
        return found

    def record(
        self, method: str, path: str, status: int, body: str, headers: Mapping[str, str]
    ) -> None:
        text = body + "\n" + "\n".join(f"{k}: {v}" for k, v in headers.items())
        self.seen.append(Seen(f"{method} {path}", status, text))

    def assert_no_secret_in_responses(self) -> None:
        __tracebackhide__ = True
        secrets = self.secrets()
        for seen in self.seen:
            leaked = sorted(label for label, value in secrets.items() if value in seen.text)
            if leaked:  # name what leaked, never the value
                raise AssertionError(
                    f"{seen.request} ({seen.status}) contains the {', '.join(leaked)}"
                )


def make_harness(home: Path) -> Iterator[Harness]:
    store = StateStore(home)
    runtime = FakeRuntime(store)
    backups = FakeBackups()
    holder: list[Harness] = []

    def connect(_: StateStore) -> FakeRuntime:
        if holder and holder[0].connect_error is not None:
            raise holder[0].connect_error
        return runtime

    app = build_app(home, connect=connect, backups=backups)
    with TestClient(app, raise_server_exceptions=True) as client:
        harness = Harness(home, app, client, runtime, backups, TokenStore(home / FILE_NAME))
        holder.append(harness)

        def record(response: httpx.Response) -> None:
            response.read()
            harness.record(
                response.request.method,
                response.request.url.path,
                response.status_code,
                response.text,
                response.headers,
            )

        client.event_hooks["response"].append(record)
        yield harness
    harness.assert_no_secret_in_responses()


# ---------------------------------------------------------------- the fakes behave as promised


@pytest.fixture
def fake_runtime(tmp_path: Path) -> FakeRuntime:
    return FakeRuntime(StateStore(tmp_path))


def test_fake_up_is_idempotent_and_keeps_the_password(fake_runtime):
    document = {"apiVersion": names.API_VERSION, "kind": names.KIND_DATABASE}
    document["metadata"] = {"name": "shop"}
    first = fake_runtime.up(document)
    second = fake_runtime.up(document)
    assert first.changed
    assert not second.changed
    assert first.credentials == second.credentials
    assert fake_runtime.status("shop").ready


def test_fake_failure_is_raised_by_every_call(fake_runtime):
    fake_runtime.fail = RuntimeUnavailable("no engine")
    with pytest.raises(RuntimeUnavailable):
        fake_runtime.status("shop")


def test_fake_backups_busy_is_the_apis_conflict():
    backups = FakeBackups()
    backups.fail = BackupConflict("busy")
    with pytest.raises(BackupConflict):
        backups.create_backup("shop")
