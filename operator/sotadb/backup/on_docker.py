"""Backups on the single Docker host: the seed's `docker exec`, scratch drill containers,
restores and clones, and the daemon's pass.

- **Where scripts run**: `docker exec -u postgres sota-db-{slug}`, connecting over the
  container's unix socket, the only way in for the superuser (pg_hba: peer). The superuser
  reads every table whoever owns it, and the same session exports the snapshot pg_dump uses.
- **Files**: `$SOTADB_HOME/backups/{slug}/` (see `store`). `sotadb down --purge` keeps them:
  a purged database can be restored with `sotadb backup restore OLD BACKUP --as NEW`.
- **Drill**: a scratch container `sota-drill-{slug}-{hex}` from the same image, with no network
  (`--network none`), PGDATA on tmpfs, fsync off, and the app role and database of `slug`
  (bootstrapped by the image's own entrypoint, with a throwaway verifier), so the dump replays
  exactly as it would on a fresh server. Removed when the drill ends; a leftover (killed
  runner) is removed by the next drill of that database, and by `sotadb down`.
- **Restore in place**: the file is checked (size, sha256) before anything else; then the live
  database is closed to connections (`runner`), so apps get a clean error from PgBouncer (which
  stays up) rather than a database that changes under them, and nothing they could write is
  lost to the swap; the dump is replayed into a side database, checked, and swapped in (or the
  live one opened again); the command returns once a query through PgBouncer is answered.
  (PgBouncer retries a failed server login after 0.2 s: `server_login_retry`.)
- **Clone** (`--as NEW`): `NEW` is provisioned with `DockerRuntime.up` (the source's spec, its
  own role `app_NEW` and password), then restored like in place. Dumps carry no owners or
  grants (`--no-owner --no-privileges`) and are replayed under `SET ROLE` of the target's app
  role, so every object belongs to the target's role in both cases; the only role that can
  log in to a sotadb database is its app role, so no grant is lost.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import docker
import docker.errors
from docker.models.containers import Container

from sotadb import credentials as creds
from sotadb import names
from sotadb.backup import runner, scripts
from sotadb.backup.catalog import (
    BackupRecord,
    Compression,
    Phase,
    Verification,
    newest_good,
    retention,
)
from sotadb.backup.errors import BackupFailed, BackupNotFound, RestoreRefused
from sotadb.backup.executors import DockerExecutor, capture
from sotadb.backup.runner import Clock, Progress, utc_now
from sotadb.backup.schedule import next_due
from sotadb.backup.store import BackupStore
from sotadb.backup.stores import Store
from sotadb.docker import engine
from sotadb.docker.runtime import DockerRuntime, minimal_document
from sotadb.errors import SotadbError
from sotadb.spec import parse_database

SUPERUSER_ENV: Final[Mapping[str, str]] = {
    "PGHOST": names.POSTGRES_SOCKET_DIR,
    "PGPORT": str(names.POSTGRES_PORT),
    "PGUSER": "postgres",
    "PGCONNECT_TIMEOUT": "30",
}
COMPONENT_DRILL: Final = "backup-drill"
DRILL_READY_TIMEOUT: Final = 60.0
LATEST: Final = "latest"


def _quiet(_: str) -> None:
    """The default progress sink: say nothing."""


def drill_container_name(slug: str) -> str:
    return f"sota-drill-{slug}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class PassResult:
    """One database's part of a daemon pass."""

    slug: str
    backup: BackupRecord | None  # the backup this pass took, if one was due
    deleted: tuple[str, ...]  # names retention removed
    next_due: datetime | None
    skipped: str | None = None  # why nothing was done (busy, backups disabled, unreadable)


class DockerBackups:
    def __init__(self, runtime: DockerRuntime, store: Store | None = None) -> None:
        self.runtime = runtime
        self.client: docker.DockerClient = runtime.client
        self.store: Store = store or BackupStore(runtime.store.home / "backups")

    def executor(self, slug: str) -> DockerExecutor:
        return DockerExecutor(self.client, names.postgres_name(slug), env=SUPERUSER_ENV)

    # ---------------------------------------------------------------- create and drill

    def create(
        self,
        slug: str,
        *,
        compression: Compression = Compression.GZIP,
        drill: bool = True,
        clock: Clock = utc_now,
        progress: Progress = _quiet,
    ) -> BackupRecord:
        """Dump (and by default drill) one database. The record says how it went; a database
        that is down gives a Failed record, not an exception."""
        self._require_known(slug)
        with self.store.lock(slug):
            record = runner.dump(
                self.executor(slug),
                self.store,
                slug,
                compression=compression,
                clock=clock,
                progress=progress,
            )
            if record.phase is Phase.SUCCEEDED and drill:
                record = self._drill(slug, record, clock=clock, progress=progress)
        return record

    def verify(self, slug: str, name: str, *, progress: Progress = _quiet) -> BackupRecord:
        """Run the restore drill again on an existing backup."""
        with self.store.lock(slug):
            record = self.resolve(slug, name)
            if record.phase is not Phase.SUCCEEDED:
                raise BackupNotFound(f"backup {record.name} is {record.phase.value}: no dump")
            return self._drill(slug, record, clock=utc_now, progress=progress)

    def _drill(
        self, slug: str, record: BackupRecord, *, clock: Clock, progress: Progress
    ) -> BackupRecord:
        try:
            with self.scratch(slug, progress=progress) as scratch:
                return runner.drill(
                    scratch, self.store, record, slug=slug, clock=clock, progress=progress
                )
        except SotadbError as e:
            verified = record.verified(
                Verification.FAILED, clock(), f"restore drill could not run: {e}"
            )
            self.store.save(verified)
            return verified

    @contextlib.contextmanager
    def scratch(self, slug: str, *, progress: Progress = _quiet) -> Iterator[DockerExecutor]:
        """A throwaway PostgreSQL with `slug`'s app role and database, for as long as the block
        runs."""
        labels = {**names.common_labels(slug, COMPONENT_DRILL)}
        for stale in engine.labelled(self.client, labels):
            progress(f"removing {stale.name} (left by an interrupted drill)")
            engine.remove_container(stale, timeout=0)
        name = drill_container_name(slug)
        environment = {
            "SOTADB_APP_ROLE": names.role_name(slug),
            "SOTADB_APP_DATABASE": names.database_name(slug),
            # A verifier nobody knows the password of: the role must exist, nobody logs in.
            "SOTADB_APP_VERIFIER": creds.scram_verifier(creds.generate_password()),
            **scripts.drill_server_env(),
        }
        progress(f"drill: starting scratch server {name}")
        container: Container = engine.call(
            f"create container {name}",
            lambda: self.client.containers.create(
                self.runtime.images.postgres,
                command=scripts.drill_server_command(),
                name=name,
                environment=environment,
                labels=labels,
                network_mode="none",
                tmpfs={
                    names.POSTGRES_DATA_MOUNT: f"uid={names.POSTGRES_UID},"
                    f"gid={names.POSTGRES_UID},mode=0700",
                    names.POSTGRES_SOCKET_DIR: f"uid={names.POSTGRES_UID},"
                    f"gid={names.POSTGRES_UID},mode=2775",
                },
                shm_size="256m",
                user=f"{names.POSTGRES_UID}:{names.POSTGRES_UID}",
                detach=True,
            ),
        )
        try:
            engine.call(f"start container {name}", container.start)
            executor = DockerExecutor(self.client, name, env=SUPERUSER_ENV)
            self._wait_for_scratch(container, executor)
            yield executor
        finally:
            engine.remove_container(container, timeout=0)

    def _wait_for_scratch(self, container: Container, executor: DockerExecutor) -> None:
        """pg_isready over TCP answers only once the real server (after the entrypoint's
        socket-only bootstrap server) is up; then a real query over the socket."""
        deadline = time.monotonic() + DRILL_READY_TIMEOUT
        probe = scripts.Script(
            "pg_isready -q -h 127.0.0.1 -p \"$PGPORT\" && psql -X -q -c 'SELECT 1' >/dev/null"
        )
        while time.monotonic() < deadline:
            container.reload()
            if container.status in ("exited", "dead"):
                logs = container.logs(tail=5).decode(errors="replace").strip()
                raise BackupFailed(f"scratch server {container.name} exited: {logs}")
            if container.status == "running" and capture(executor, probe).status == 0:
                return
            time.sleep(0.1)
        raise BackupFailed(f"scratch server {container.name} not ready in {DRILL_READY_TIMEOUT}s")

    # ---------------------------------------------------------------- restore

    def resolve(self, slug: str, name: str) -> BackupRecord:
        if name == LATEST:
            found = newest_good(self.store.records(slug))
            if found is None:
                raise BackupNotFound(f"{slug} has no good backup (Succeeded and drill Passed)")
            return found
        return self.store.load(slug, name)

    def restore(
        self,
        slug: str,
        name: str,
        *,
        as_name: str | None = None,
        force: bool = False,
        progress: Progress = _quiet,
    ) -> BackupRecord:
        """Restore backup `name` of `slug` into `slug` itself, or into a new database
        `as_name`. Returns the record that was restored."""
        target = as_name or slug
        with contextlib.ExitStack() as locks:
            locks.enter_context(self.store.lock(slug))
            record = self.resolve(slug, name)
            if record.verification is Verification.FAILED and not force:
                raise RestoreRefused(
                    f"backup {record.name} failed its restore drill ({record.message}); "
                    "nothing was restored (fix: pick another backup, or --force)"
                )
            if as_name is not None:  # checked before the clone is made
                progress(f"checking {record.file} (size, sha256)")
                runner.check_file(self.store, record)
                locks.enter_context(self.store.lock(as_name))
                self._provision_clone(slug, as_name, progress)
            else:  # checked by restore_into, while it makes its side database
                self._require_known(slug)
            # PgBouncer stays up: while the database is closed it passes the server's error on
            # to apps, and once the restored one is in place it connects to that.
            verified = runner.restore_into(
                self.executor(target),
                self.store,
                record,
                slug=target,
                file_checked=as_name is not None,
                after_swap=functools.partial(self._wait_for_pooler, target),
                progress=progress,
            )
            progress(f"restored and verified: {verified}")
        return record

    def _wait_for_pooler(self, slug: str) -> None:
        """Until a query through PgBouncer is answered (when PgBouncer runs at all)."""
        pooler = engine.find_container(self.client, names.pooler_name(slug))
        state = self.runtime.store.load(slug)
        if pooler is not None and pooler.status == "running" and state is not None:
            self.runtime.wait_until_ready(slug, state.credentials)

    def _provision_clone(self, slug: str, as_name: str, progress: Progress) -> None:
        if self.runtime.store.load(as_name) is not None:
            raise RestoreRefused(
                f"{as_name} already exists; --as makes a new database "
                f"(fix: pick another name, or restore into it: sotadb backup restore {as_name} ...)"
            )
        source = self.runtime.store.load(slug)
        document: dict[str, Any] = minimal_document(as_name)
        if source is not None and source.document.get("spec"):
            document["spec"] = dict(source.document["spec"])
        progress(f"provisioning {as_name}")
        self.runtime.up(document, progress=progress)

    # ---------------------------------------------------------------- retention and the daemon

    def prune(self, slug: str, *, days: int, now: datetime) -> list[BackupRecord]:
        with self.store.lock(slug):
            self.store.clean(slug)
            doomed = retention(self.store.records(slug), now, days)
            for record in doomed:
                self.store.delete(record)
        return doomed

    def retention_days(self, slug: str) -> int:
        state = self.runtime.store.load(slug)
        if state is None:
            raise BackupNotFound(f"no database {slug} on this host (fix: `sotadb up {slug}`)")
        return parse_database(state.document).spec.backups.retention_days

    def daemon_pass(
        self, *, clock: Clock = utc_now, progress: Progress = _quiet
    ) -> list[PassResult]:
        """For each database on this host: take the daily backup if it is due, then apply
        retention. A database whose backup lock is held is skipped this pass."""
        results: list[PassResult] = []
        for slug in self.runtime.store.slugs():
            try:
                results.append(self._pass_one(slug, clock, progress))
            except SotadbError as e:  # busy, down, unreadable state: the next pass tries again
                results.append(PassResult(slug, None, (), None, skipped=str(e)))
            except Exception as e:  # the daemon outlives one database's unexpected error
                reason = f"unexpected {type(e).__name__}: {e}"
                results.append(PassResult(slug, None, (), None, skipped=reason))
        return results

    def _pass_one(self, slug: str, clock: Clock, progress: Progress) -> PassResult:
        state = self.runtime.store.load(slug)
        if state is None:
            return PassResult(slug, None, (), None, skipped="no longer on this host")
        db = parse_database(state.document)
        backup: BackupRecord | None = None
        if db.spec.backups.enabled:
            now = clock()
            if next_due(now, db.backup_minute_of_day, self.store.records(slug)) <= now:
                backup = self.create(slug, clock=clock, progress=progress)
        deleted = self.prune(slug, days=db.spec.backups.retention_days, now=clock())
        upcoming = (
            next_due(clock(), db.backup_minute_of_day, self.store.records(slug))
            if db.spec.backups.enabled
            else None
        )
        return PassResult(
            slug,
            backup,
            tuple(r.name for r in deleted),
            upcoming,
            skipped=None if db.spec.backups.enabled else "spec.backups.enabled is false",
        )

    # ---------------------------------------------------------------- helpers

    def _require_known(self, slug: str) -> None:
        if self.runtime.store.load(slug) is None:
            raise BackupNotFound(f"no database {slug} on this host (fix: `sotadb up {slug}`)")


def remove_drill_containers(client: docker.DockerClient, slug: str) -> None:
    for container in engine.labelled(client, names.common_labels(slug, COMPONENT_DRILL)):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
