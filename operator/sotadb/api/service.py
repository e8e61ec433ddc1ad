"""What the API does, without HTTP: ensure a database, describe it, list and take backups.

The engine sits behind two small Protocols, so unit tests inject in-memory ones and the data
plane uses the real thing:

- `Runtime` — the part of `sotadb.docker.runtime.DockerRuntime` the API calls (`up`, `status`,
  `wait_until_ready`, `store`). `DockerRuntime` satisfies it as it is.
- `Backups` — `list_backups(slug)` and `create_backup(slug)`, returning records shaped like
  `sotadb.backup.catalog.BackupRecord` (`BackupLike`). `DockerBackupsAdapter` is the default:
  it imports `sotadb.backup` when first used and says 503 `backups_unavailable` if it cannot.

Decisions:
- **ensure** is `Runtime.up` of the database's *stored* document when there is one (a database
  made with `sotadb up -f db.yaml` keeps its spec), else of the minimal document — the
  zero-configuration default. `up` is idempotent and never changes a stored password. One lock
  per slug serialises concurrent ensures of the same database in this process; different
  databases proceed in parallel (FastAPI runs these blocking calls in its threadpool).
- **Phase**: Ready only when a real query through PgBouncer answers (as `sotadb up` waits for);
  Stopped when the state is kept but no container exists (`sotadb down`); else Provisioning.
- **The engine is connected lazily**, on the first request that needs it, and again after a
  failure: `sotadb serve` starts without a Docker engine and answers 503 `engine_unavailable`
  until one answers. Engine errors that escape the runtime's own wrapping (docker-py's, and
  the `requests` errors under it) become `RuntimeUnavailable` here.
- Nothing here returns a password: results carry the slug, the phase and the spec only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

import docker.errors
import requests

from sotadb.api.errors import (
    ApiError,
    BackupConflict,
    BackupFailed,
    BackupsUnavailable,
    ErrorCode,
)
from sotadb.api.models import Phase
from sotadb.credentials import Credentials
from sotadb.docker.runtime import DatabaseStatus, DockerRuntime, UpResult, minimal_document
from sotadb.docker.state import StateStore
from sotadb.errors import ProvisioningFailed, RuntimeUnavailable
from sotadb.spec import DatabaseSpec, parse_database

if TYPE_CHECKING:  # imported when first used: the API runs (503 for backups) without it
    from sotadb.backup.on_docker import DockerBackups

PROBE_TIMEOUT: Final = 2.0  # seconds a status request waits for a query through PgBouncer
EXPECTED_CONTAINERS: Final = 2  # sota-db-{slug} and sota-pgbouncer-{slug}


class Runtime(Protocol):
    """What the API needs of `DockerRuntime`."""

    store: StateStore

    def up(self, document: Mapping[str, Any]) -> UpResult: ...

    def status(self, slug: str) -> DatabaseStatus: ...

    def wait_until_ready(
        self, slug: str, credentials: Credentials, *, timeout: float = ...
    ) -> float: ...


class BackupLike(Protocol):
    """The fields of a backup record the API shows (`sotadb.backup.catalog.BackupRecord`)."""

    @property
    def name(self) -> str: ...
    @property
    def phase(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def completed_at(self) -> datetime | None: ...
    @property
    def size(self) -> int | None: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def format(self) -> str: ...
    @property
    def verification(self) -> str | None: ...
    @property
    def verified_at(self) -> datetime | None: ...
    @property
    def message(self) -> str | None: ...


class Backups(Protocol):
    def list_backups(self, slug: str) -> Sequence[BackupLike]: ...

    def create_backup(self, slug: str) -> BackupLike: ...


@dataclass(frozen=True)
class DatabaseFacts:
    """A database as the API describes it: no credentials."""

    slug: str
    phase: Phase
    spec: DatabaseSpec


class Engine:
    """Connects a `Runtime` when first needed, and again after the engine failed."""

    def __init__(self, connect: Callable[[], Runtime]) -> None:
        self._connect = connect
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()

    def get(self) -> Runtime:
        with self._lock:
            if self._runtime is None:
                with engine_errors():
                    self._runtime = self._connect()
            return self._runtime

    def forget(self) -> None:
        with self._lock:
            self._runtime = None


@contextmanager
def engine_errors() -> Iterator[None]:
    """docker-py's and requests' errors that the runtime does not wrap → RuntimeUnavailable."""
    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        raise RuntimeUnavailable(
            f"the Docker engine did not answer ({type(e).__name__}; fix: start it, then retry)"
        ) from e


class DatabaseService:
    def __init__(self, engine: Engine, store: StateStore, backups: Backups) -> None:
        self.engine = engine
        self.store = store
        self.backups = backups
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # ---------------------------------------------------------------- databases

    def ensure(self, slug: str) -> DatabaseFacts:
        with self._slug_lock(slug), self._engine() as runtime:
            previous = self.store.load(slug)
            document = dict(previous.document) if previous else minimal_document(slug)
            result = runtime.up(document)
            return DatabaseFacts(slug, Phase.READY, result.db.spec)

    def inspect(self, slug: str) -> DatabaseFacts | None:
        """None when this host has no such database (no state)."""
        state = self.store.load(slug)
        if state is None:
            return None
        spec = parse_database(state.document).spec
        with self._engine() as runtime:
            status = runtime.status(slug)
            if not status.containers:
                return DatabaseFacts(slug, Phase.STOPPED, spec)
            running = [c for c in status.containers if c.state == "running"]
            if len(running) == EXPECTED_CONTAINERS:
                try:
                    runtime.wait_until_ready(slug, state.credentials, timeout=PROBE_TIMEOUT)
                except ProvisioningFailed:
                    pass
                else:
                    return DatabaseFacts(slug, Phase.READY, spec)
        return DatabaseFacts(slug, Phase.PROVISIONING, spec)

    # ---------------------------------------------------------------- backups

    def list_backups(self, slug: str) -> Sequence[BackupLike] | None:
        if self.store.load(slug) is None:
            return None
        with engine_errors():
            return self.backups.list_backups(slug)

    def create_backup(self, slug: str) -> BackupLike | None:
        facts = self.inspect(slug)
        if facts is None:
            return None
        if facts.phase is not Phase.READY:
            raise ApiError(
                409,
                ErrorCode.NOT_READY,
                f"the database is {facts.phase.value}; a backup needs it Ready "
                "(fix: POST the database first, then retry)",
            )
        with engine_errors():
            record = self.backups.create_backup(slug)
        if str(record.phase) == "Failed":
            raise BackupFailed(f"backup {record.name} failed: {record.message or 'no reason'}")
        return record

    # ---------------------------------------------------------------- helpers

    @contextmanager
    def _engine(self) -> Iterator[Runtime]:
        runtime = self.engine.get()
        try:
            with engine_errors():
                yield runtime
        except RuntimeUnavailable:
            self.engine.forget()
            raise

    def _slug_lock(self, slug: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(slug, threading.Lock())


class DockerBackupsAdapter:
    """`Backups` over `sotadb.backup.on_docker.DockerBackups` (imported when first used)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _backups(self) -> DockerBackups:
        try:
            from sotadb.backup.on_docker import DockerBackups
        except ImportError as e:
            raise BackupsUnavailable(
                f"backups are not available on this host ({type(e).__name__})"
            ) from e
        runtime = self.engine.get()
        if not isinstance(runtime, DockerRuntime):
            raise BackupsUnavailable("backups need the Docker runtime")
        return DockerBackups(runtime)

    def list_backups(self, slug: str) -> Sequence[BackupLike]:
        with _backup_errors():
            records: Sequence[BackupLike] = self._backups().store.records(slug)
            return records

    def create_backup(self, slug: str) -> BackupLike:
        with _backup_errors():
            record: BackupLike = self._backups().create(slug)
            return record


@contextmanager
def _backup_errors() -> Iterator[None]:
    """The backup package's errors, as the API's (imported lazily, like the package)."""
    try:
        yield
    except Exception as e:
        try:
            from sotadb.backup import errors as backup_errors
        except ImportError:
            raise e from None
        if isinstance(e, backup_errors.BackupBusy):
            raise BackupConflict(str(e)) from e
        if isinstance(e, backup_errors.BackupFailed):
            raise BackupFailed(str(e)) from e
        if isinstance(e, backup_errors.BackupNotFound):
            raise ApiError(404, ErrorCode.NOT_FOUND, str(e)) from e
        raise
