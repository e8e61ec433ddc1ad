"""The backup runner inside a Kubernetes Job's pod: backup, restore and forget, each ending in a
`JobReport` (never an exception for a failure it can describe).

- **backup**: under the store's lock, the runner's `dump` over the network as the app role
  (libpq's PG* environment: the database's Service and the app Secret), written atomically
  into the store under the DatabaseBackup's own name; then the restore drill into a throw-away
  server in the scratch directory (`local_server`); then retention (`catalog.retention`: never
  the newest good backup), at most MAX_PRUNED per run so the report always fits. A backup of a
  name that already Succeeded is reported again, not taken twice (a re-run Job).
- **restore**: the record is loaded; a backup whose drill failed is refused; the dump is
  copied into the scratch directory while its size and sha256 are checked against the record,
  before anything in the database is touched; then that verified copy is replayed in one
  transaction as the app role (`in_place`): all or nothing.
- **forget**: the record and the dump go; already gone is success.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Final

from sotadb import names
from sotadb.backup import in_place, runner
from sotadb.backup.catalog import BackupRecord, Phase, Verification, retention
from sotadb.backup.errors import (
    BackupBusy,
    BackupNotFound,
    RecordCorrupted,
    RestoreRefused,
)
from sotadb.backup.executors import Executor, LocalExecutor, capture
from sotadb.backup.local_server import scratch_server
from sotadb.backup.report import JobReport, Kind
from sotadb.backup.runner import Clock, Progress, utc_now
from sotadb.backup.stores import Store
from sotadb.errors import SotadbError

MAX_PRUNED: Final = 32  # 32 names of <= 63 characters keep the report well under 4096 bytes
LOCK_WAIT: Final = 600.0  # seconds a Job waits for another run of the same database
LOCK_POLL: Final = 2.0
CHECK_FILE: Final = "restore-check.sql"
COPY_PREFIX: Final = "restore-"


def _quiet(_: str) -> None:
    """The default progress sink: say nothing."""


@contextlib.contextmanager
def locked(
    store: Store, slug: str, *, wait: float = LOCK_WAIT, progress: Progress = _quiet
) -> Iterator[None]:
    """The store's per-database lock, waited for (a nightly backup may hold it for a while)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with store.lock(slug):
                yield
            return
        except BackupBusy:
            if time.monotonic() >= deadline:
                raise
            progress(f"waiting for another backup, restore or retention run of {slug}")
            time.sleep(LOCK_POLL)


# ---------------------------------------------------------------- backup


def backup(
    store: Store,
    slug: str,
    name: str,
    *,
    scratch: Path,
    retention_days: int,
    drill: bool = True,
    source: Executor | None = None,
    clock: Clock = utc_now,
    progress: Progress = _quiet,
) -> JobReport:
    started = clock()
    try:
        with locked(store, slug, progress=progress):
            record = _existing(store, slug, name)
            if record is None or record.phase is not Phase.SUCCEEDED:
                runner.dump(
                    source or LocalExecutor(),
                    store,
                    slug,
                    name=name,
                    clock=clock,
                    progress=progress,
                )
                record = store.load(slug, name)  # as saved: under the DatabaseBackup's name
                if record.phase is Phase.SUCCEEDED and drill:
                    record = _drill(store, record, slug, scratch, clock, progress)
            else:
                progress(f"backup {name} was taken already; reporting it again")
            pruned = prune(store, slug, days=retention_days, now=clock(), progress=progress)
    except (SotadbError, OSError) as e:
        return JobReport(
            kind="backup", name=name, phase="Failed", started_at=started,
            completed_at=clock(), message=str(e),
        )  # fmt: skip
    return _backup_report(record, pruned)


def _existing(store: Store, slug: str, name: str) -> BackupRecord | None:
    try:
        return store.load(slug, name)
    except (BackupNotFound, RecordCorrupted):
        return None


def _drill(
    store: Store,
    record: BackupRecord,
    slug: str,
    scratch: Path,
    clock: Clock,
    progress: Progress,
) -> BackupRecord:
    try:
        with scratch_server(scratch, slug, progress=progress) as server:
            return runner.drill(server, store, record, slug=slug, clock=clock, progress=progress)
    except SotadbError as e:
        verified = record.verified(
            Verification.FAILED, clock(), f"restore drill could not run: {e}"
        )
        store.save(verified)
        return verified


def prune(
    store: Store, slug: str, *, days: int, now: datetime, progress: Progress = _quiet
) -> tuple[str, ...]:
    """Retention (the caller holds the lock): the names of the backups deleted."""
    doomed = retention(store.records(slug), now, days)[:MAX_PRUNED]
    for record in doomed:
        progress(f"retention: deleting {record.name} (older than {days} days)")
        store.delete(record)
    return tuple(record.name for record in doomed)


def _backup_report(record: BackupRecord, pruned: tuple[str, ...]) -> JobReport:
    return JobReport(
        kind="backup",
        name=record.name,
        phase="Succeeded" if record.phase is Phase.SUCCEEDED else "Failed",
        started_at=record.started_at,
        completed_at=record.completed_at,
        size=record.size,
        sha256=record.sha256,
        location=record.location,
        verification=record.verification.value if record.verification else None,
        verified_at=record.verified_at,
        message=record.message,
        pruned=pruned,
        tables=len(record.tables) if record.phase is Phase.SUCCEEDED else None,
        rows=sum(t.rows for t in record.tables.values())
        if record.phase is Phase.SUCCEEDED
        else None,
    )


# ---------------------------------------------------------------- restore


def restore(
    store: Store,
    *,
    target: str,
    source: str,
    name: str,
    scratch: Path,
    database: Executor | None = None,
    clock: Clock = utc_now,
    progress: Progress = _quiet,
) -> JobReport:
    """Restore backup `name` of database `source` into database `target` (the connecting app
    role's own), all or nothing."""
    started = clock()
    record: BackupRecord | None = None
    try:
        with locked(store, source, progress=progress):
            record = store.load(source, name)
            if record.verification is Verification.FAILED:
                raise RestoreRefused(
                    f"backup {name} failed its restore drill ({record.message}); nothing was "
                    "restored (fix: restore another backup)"
                )
            copy = verified_copy(store, record, scratch, progress=progress)
        try:
            _replay_in_place(database or LocalExecutor(), record, copy, target, progress)
        finally:
            copy.unlink(missing_ok=True)
            (scratch / CHECK_FILE).unlink(missing_ok=True)
    except (SotadbError, OSError) as e:
        return JobReport(
            kind="restore", name=name, phase="Failed", started_at=started,
            completed_at=clock(), message=str(e),
            sha256=record.sha256 if record else None, size=record.size if record else None,
        )  # fmt: skip
    return JobReport(
        kind="restore",
        name=name,
        phase="Succeeded",
        started_at=started,
        completed_at=clock(),
        size=record.size,
        sha256=record.sha256,
        location=record.location,
        message=f"restored {name} of {source} into {target}: {runner.equal(record)}",
        tables=len(record.tables),
        rows=sum(t.rows for t in record.tables.values()),
    )


def verified_copy(
    store: Store, record: BackupRecord, scratch: Path, *, progress: Progress = _quiet
) -> Path:
    """The dump copied into `scratch`, its size and sha256 equal to the record's (else
    RestoreRefused). The copy is what is replayed: the stored one may change meanwhile, and
    an S3 object is read once."""
    if record.phase is not Phase.SUCCEEDED or record.sha256 is None or record.size is None:
        raise RestoreRefused(f"backup {record.name} is {record.phase.value}: it has no dump")
    size = store.dump_size(record)
    if size is None:
        raise RestoreRefused(f"backup {record.name}: its file {record.file} is missing")
    if size != record.size:
        raise RestoreRefused(
            f"backup {record.name}: {record.file} has {size} bytes, the record says "
            f"{record.size} (truncated or altered); nothing was restored"
        )
    progress(f"copying {record.file} and checking its sha256")
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / f"{COPY_PREFIX}{record.file}"
    reader = runner.HashingReader(store.read(record))
    try:
        with copy.open("wb") as out:
            for chunk in reader:
                out.write(chunk)
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    if not reader.matches(record):
        copy.unlink(missing_ok=True)
        raise RestoreRefused(
            f"backup {record.name}: the sha256 of {record.file} does not match its record "
            "(the file is corrupted or altered); nothing was restored"
        )
    return copy


def _replay_in_place(
    database: Executor, record: BackupRecord, copy: Path, target: str, progress: Progress
) -> None:
    check_file = copy.parent / CHECK_FILE
    check_file.write_text(
        in_place.check_sql(record.tables, rows_only=record.legacy_checksums), encoding="utf-8"
    )
    progress(f"restoring {record.name} into {target} in one transaction")
    result = capture(
        database,
        in_place.in_place_restore_script(
            compression=record.compression,
            database=names.database_name(target),
            check_file=str(check_file),
        ),
        stdin=runner.HashingReader(copy),
    )
    if result.status != 0:
        details = [line.strip() for line in result.stderr if line.strip()]
        errors = [
            line for line in details if "ERROR" in line or "FATAL" in line or "sotadb" in line
        ]
        reason = "; ".join((errors or details)[-runner.DIAGNOSTIC_LINES :]) or "no diagnostics"
        raise RestoreRefused(
            f"the restore of {record.name} into {target} was rolled back, nothing changed "
            f"(exit status {result.status}): {reason}"
        )


# ---------------------------------------------------------------- forget


def forget(store: Store, slug: str, name: str, *, clock: Clock = utc_now) -> JobReport:
    """Delete backup `name`'s record and dump; a backup that is not there is already forgotten."""
    started = clock()
    try:
        with locked(store, slug):
            try:
                record = store.load(slug, name)
                store.delete(record)
                message = f"deleted {record.file or 'the record'} of {name}"
            except BackupNotFound:
                message = f"{name} was already gone"
            except RecordCorrupted:  # unreadable: the record goes by name, its dump with clean
                store.delete(
                    BackupRecord(name=name, database=slug, phase=Phase.FAILED, started_at=started)
                )
                message = f"deleted the unreadable record of {name}"
            store.clean(slug)  # a dump whose record is gone is an orphan now: removed
    except (SotadbError, OSError) as e:
        return JobReport(
            kind="forget", name=name, phase="Failed", started_at=started,
            completed_at=clock(), message=str(e),
        )  # fmt: skip
    return JobReport(
        kind="forget",
        name=name,
        phase="Succeeded",
        started_at=started,
        completed_at=clock(),
        message=message,
    )


def failed(kind: Kind, name: str, message: str, *, started: datetime) -> JobReport:
    """A report for a failure nothing above could describe (the CLI's last resort)."""
    return JobReport(
        kind=kind,
        name=name,
        phase="Failed",
        started_at=started,
        completed_at=utc_now(),
        message=message,
    )
