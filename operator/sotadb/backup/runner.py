"""Dump, drill and restore, over an `Executor` (where scripts run) and a `Store` (where dumps
and records go: a directory, `store.BackupStore`, or S3, `object_store.S3BackupStore`).
Nothing here knows about Docker or Kubernetes; `on_docker` supplies executors for the
database's container and for scratch containers, and a Kubernetes Job will supply local
ones.

- `dump`: the dump script streams the compressed dump; its bytes go into the partial file and
  the sha256 as they arrive; the checksum results arrive on stderr. Exit status 0 and a
  complete checksum list → the file is committed and a Succeeded record saved. Anything else →
  the partial file is removed and a Failed record (with the script's last diagnostics as the
  reason) is saved; older backups are not touched.
- `check_file`: size and sha256 of the stored dump against its record, before anything is
  touched (for S3 that reads the whole object once; the replay reads it again and hashes
  what it sent).
- `drill`: replay the dump into a scratch server, read every table back, compare with the
  record. (Each table is loaded in a transaction of its own that also empties it: with
  `wal_level=minimal` its COPY writes no WAL.)
- `restore_into`: never into the live database directly. The dump is replayed into
  `{db}__sotadb_restore`; its checksums must equal the record's and the streamed bytes' sha256
  the recorded one; only then is the live database renamed away and the restored one renamed
  into its place (then the old one dropped). The live database takes no connections from the
  start (nothing written to it is lost to the swap). A failure at any step before the swap
  leaves it exactly as it was, open again.

A drill, and a restore of a backup no drill has passed, replay with `scripts.restore_script`:
every table is loaded with FREEZE and read back (its row count and checksum, as the record has
them) by a second session as soon as its load is committed, while the replay goes on. The
comparison is exact: every table of the record, with its row count and checksum, and no other.
A record taken before the checksums were sha256 of the dump's own rows
(`BackupRecord.legacy_checksums`) is compared by row counts only, and the verification message
says so.

A restore of a backup whose drill passed replays with `scripts.parallel_restore_script`
(`fanout`: several sessions share every table's rows and then the index builds; on
`bench.backup`'s 1 GB and 2 cores, 8.6 s against 12.2 s). The drill has already compared this
file's restore, row by row, with the record, and the file's sha256 is checked before and while
it is replayed, so the restore compares the row counts the server reports loading, not every
row again. (A table's rows may come back in another physical order: SQL promises none.)
"""

from __future__ import annotations

import concurrent.futures
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from sotadb import names
from sotadb.backup import checksums, fanout, scripts
from sotadb.backup.catalog import (
    CHECKSUM_VERSION,
    BackupRecord,
    Compression,
    Phase,
    TableSummary,
    Verification,
    format_time,
    unique_name,
)
from sotadb.backup.errors import BackupFailed, BackupNotFound, RestoreRefused
from sotadb.backup.executors import Captured, Executor, capture
from sotadb.backup.stores import Store, StoreUnavailable

Progress = Callable[[str], None]
Clock = Callable[[], datetime]
CHUNK: Final = 1 << 20
PROGRESS_EVERY: Final = 64 << 20  # bytes between two progress messages
DIAGNOSTIC_LINES: Final = 4


def utc_now() -> datetime:
    return datetime.now(UTC)


def _quiet(_: str) -> None:
    """The default progress sink: say nothing."""


def nothing() -> None:
    """The default hook: do nothing."""


# ---------------------------------------------------------------- dump


def dump(
    source: Executor,
    store: Store,
    slug: str,
    *,
    compression: Compression = Compression.GZIP,
    clock: Clock = utc_now,
    progress: Progress = _quiet,
    name: str | None = None,
) -> BackupRecord:
    """Take one backup and save its record (Succeeded or Failed). The caller holds the lock.
    `name` is the backup's name (e.g. its DatabaseBackup's); by default one from the time."""
    for removed in store.clean(slug):
        progress(f"removed {removed} (left by an interrupted run)")
    started = clock()
    if name is None:
        name = unique_name(slug, started, {r.name for r in store.records(slug)})
    file_name = f"{name}{compression.suffix}"
    tables: dict[str, TableSummary] = {}
    meta: dict[str, object] = {}
    diagnostics: list[str] = []
    compressor: list[str] = []

    def on_line(line: str) -> None:
        if line.startswith(scripts.COMPRESSOR_PREFIX):
            compressor.append(line[len(scripts.COMPRESSOR_PREFIX) :])
        elif not checksums.parse_line(line, tables, meta) and line.strip():
            diagnostics.append(line.strip())

    failed = BackupRecord(
        name=name,
        database=slug,
        phase=Phase.FAILED,
        started_at=started,
        format=compression.record_format,
    )
    try:
        with store.partial(slug, file_name) as partial:
            next_report = PROGRESS_EVERY

            def on_chunk(chunk: bytes) -> None:
                nonlocal next_report
                partial.write(chunk)
                if partial.size >= next_report:
                    next_report += PROGRESS_EVERY
                    progress(f"dumping {name}: {partial.size / 1e6:.0f} MB written")

            progress(f"dumping {slug} in {source.where}")
            status = source.run(
                scripts.dump_script(compression=compression, database=names.database_name(slug)),
                stdout=on_chunk,
                stderr=on_line,
            )
            if status != 0:
                raise BackupFailed(_reason(f"the dump in {source.where}", status, diagnostics))
            if meta.get("kind") != "meta":
                raise BackupFailed(f"the dump in {source.where} reported no checksum results")
            if missing := checksums.unaccounted(tables, meta):
                raise BackupFailed(
                    f"the dump's checksums lack {len(missing)} of its tables (first: "
                    f"{missing[0]}): their rows were not found in pg_dump's output"
                )
            written = partial.commit()
    except (BackupFailed, StoreUnavailable, checksums.ChecksumOutputInvalid, OSError) as e:
        record = _failed(failed, str(e))
        store.save(record)
        return record
    observed = checksums.observation(tables, meta)
    record = BackupRecord(
        name=name,
        database=slug,
        phase=Phase.SUCCEEDED,
        started_at=started,
        completed_at=clock(),
        file=file_name,
        location=written.location,
        size=written.size,
        sha256=written.sha256,
        format=compression.record_format,
        compressor=compressor[0] if compressor else None,
        database_size=observed.database_size,
        server_version=observed.server_version,
        tables=observed.tables,
        checksum_version=CHECKSUM_VERSION,
    )
    store.save(record)
    return record


def _failed(record: BackupRecord, reason: str) -> BackupRecord:
    """A Failed record has no completedAt (nothing was completed) and no file."""
    return BackupRecord(
        name=record.name,
        database=record.database,
        phase=Phase.FAILED,
        started_at=record.started_at,
        format=record.format,
        message=reason,
    )


def _reason(what: str, status: int, diagnostics: list[str]) -> str:
    details = "; ".join(diagnostics[-DIAGNOSTIC_LINES:]) or "no diagnostics"
    return f"{what} exited with status {status}: {details}"


# ---------------------------------------------------------------- the file itself


def check_file(store: Store, record: BackupRecord) -> None:
    """The stored dump's size and sha256 against its record, read in full; `RestoreRefused`
    when it is missing or they differ."""
    if record.phase is not Phase.SUCCEEDED or record.sha256 is None or record.size is None:
        raise RestoreRefused(f"backup {record.name} is {record.phase.value}: it has no dump")
    missing = RestoreRefused(f"backup {record.name}: its file {record.file} is missing")
    size = store.dump_size(record)
    if size is None:
        raise missing
    if size != record.size:
        raise RestoreRefused(
            f"backup {record.name}: {record.file} has {size} bytes, the record says "
            f"{record.size} (truncated or altered); nothing was restored"
        )
    try:
        reader = HashingReader(store.read(record))
        for _ in reader:
            pass
    except BackupNotFound:
        raise missing from None
    if not reader.matches(record):
        raise RestoreRefused(
            f"backup {record.name}: the sha256 of {record.file} does not match its record "
            "(the file is corrupted or altered); nothing was restored"
        )


class HashingReader:
    """Streams a dump in chunks and hashes what it streamed (the file may change after the
    check: what was sent is what counts). `source` is a file, or a store's chunks."""

    def __init__(self, source: Path | Iterable[bytes]) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in _file_chunks(self.source) if isinstance(self.source, Path) else self.source:
            self.digest.update(chunk)
            self.size += len(chunk)
            yield chunk

    def matches(self, record: BackupRecord) -> bool:
        return self.size == record.size and self.digest.hexdigest() == record.sha256


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


# ---------------------------------------------------------------- drill


def drill(
    scratch: Executor,
    store: Store,
    record: BackupRecord,
    *,
    slug: str,
    clock: Clock = utc_now,
    progress: Progress = _quiet,
) -> BackupRecord:
    """Replay the dump into a scratch server whose app role and database are `slug`'s, compare
    checksums, and save the record with verification Passed or Failed."""
    try:
        check_file(store, record)
        reader = HashingReader(store.read(record))
        progress(f"drill: restoring {record.name} into {scratch.where} and reading it back")
        replay = _replay(
            scratch,
            reader,
            record.compression,
            database=names.database_name(slug),
            role=names.role_name(slug),
        )
        if replay.status != 0:
            raise BackupFailed(_reason("the restore", replay.status, replay.stderr))
        if not reader.matches(record):
            raise BackupFailed("the file changed while it was being restored")
        problems = compare(record, replay)
        outcome = (
            (Verification.FAILED, "; ".join(problems))
            if problems
            else (Verification.PASSED, f"restored into a scratch server: {equal(record)}")
        )
    except (BackupFailed, RestoreRefused, BackupNotFound) as e:
        outcome = (Verification.FAILED, str(e))
    verified = record.verified(outcome[0], clock(), f"restore drill: {outcome[1]}")
    store.save(verified)
    return verified


def compare(record: BackupRecord, replay: Captured) -> list[str]:
    """The tables the replay read back (its stdout) against the record's: row counts and
    checksums, or row counts only for a record with legacy checksums."""
    observed = checksums.parse_output(replay.stdout.splitlines())
    return checksums.differences(record.tables, observed.tables, rows_only=record.legacy_checksums)


def compare_loaded(record: BackupRecord, replay: Captured) -> list[str]:
    """The rows the server loaded per table (a parallel replay's stdout) against the record's
    row counts. Tables the dump holds beyond the record's are extension-owned (left out of
    the record at dump time) and not compared."""
    loaded = fanout.parse_output(replay.stdout.splitlines())
    return checksums.differences(
        record.tables,
        {
            name: TableSummary(rows=loaded[name], checksum=summary.checksum)
            for name, summary in record.tables.items()
            if name in loaded
        },
        rows_only=True,
    )


def proven_equal(record: BackupRecord) -> str:
    """What a restore of a drilled backup proved, for messages."""
    rows = sum(t.rows for t in record.tables.values())
    when = format_time(record.verified_at) if record.verified_at else "earlier"
    return (
        f"{len(record.tables)} tables, {rows} rows, row counts equal (this file's checksums "
        f"were compared by its restore drill, {when})"
    )


def equal(record: BackupRecord) -> str:
    """What a passed comparison proved, for messages."""
    rows = sum(t.rows for t in record.tables.values())
    if record.legacy_checksums:
        return (
            f"{len(record.tables)} tables, {rows} rows, row counts equal (checksums not "
            "compared: the backup was recorded before sha256 checksums)"
        )
    return f"{len(record.tables)} tables, {rows} rows, checksums equal"


def _replay(
    target: Executor,
    reader: HashingReader,
    compression: Compression,
    *,
    database: str,
    role: str,
    settings: Mapping[str, str] | None = None,
) -> Captured:
    return capture(
        target,
        scripts.restore_script(
            compression=compression, database=database, role=role, settings=settings
        ),
        stdin=reader,
    )


# ---------------------------------------------------------------- restore


def restore_into(
    target: Executor,
    store: Store,
    record: BackupRecord,
    *,
    slug: str,
    settings: Mapping[str, str] | None = None,
    file_checked: bool = False,
    after_swap: Callable[[], object] = nothing,
    progress: Progress = _quiet,
) -> str:
    """Restore `record` as database `slug` (owned by `slug`'s app role) through `target`, a
    superuser session on that server, with `settings` for the replaying session. See the
    module docstring for the order of steps. `file_checked`: the caller has just run
    `check_file` (the bytes streamed are hashed again either way). The live database is
    closed to connections from the start (and opened again if anything fails before the swap).
    `after_swap` runs once the restored database is live (e.g. waiting until the pooler
    answers), while the previous one is dropped. Returns what was verified."""
    dbs = scripts.restore_database_names(slug)
    role = names.role_name(slug)
    variables = {**dbs, "role": role}
    with concurrent.futures.ThreadPoolExecutor(1, "sotadb-prepare") as background:
        # The side database is made while the file is checked: it touches nothing live.
        preparing = background.submit(
            _psql, target, scripts.PREPARE_SQL, variables, "preparing the restore database"
        )
        try:
            if not file_checked:
                progress(f"checking {record.file} (size, sha256)")
                check_file(store, record)
        except BaseException:
            concurrent.futures.wait([preparing])
            _drop_side(target, variables, progress)
            raise
        preparing.result()
    swapped = closed = False
    try:
        progress(f"closing {dbs['db']}: apps get an error until the restore ends")
        _psql(target, scripts.CLOSE_SQL, variables, "closing the live database")
        closed = True
        reader = HashingReader(store.read(record))
        proven = record.verification is Verification.PASSED
        if proven:
            progress(f"restoring {record.name} into {dbs['tmp']} (parallel sessions)")
            replay = capture(
                target,
                scripts.parallel_restore_script(
                    compression=record.compression,
                    database=dbs["tmp"],
                    role=role,
                    settings=settings,
                ),
                stdin=reader,
            )
        else:
            progress(f"restoring {record.name} into {dbs['tmp']} and reading it back")
            replay = _replay(
                target,
                reader,
                record.compression,
                database=dbs["tmp"],
                role=role,
                settings=settings,
            )
        if replay.status != 0:
            raise RestoreRefused(
                _reason("the restore", replay.status, replay.stderr)
                + f"; {dbs['db']} was not changed"
            )
        if not reader.matches(record):
            raise RestoreRefused(
                f"the file changed while it was restored; {dbs['db']} was not changed"
            )
        problems = compare_loaded(record, replay) if proven else compare(record, replay)
        if problems:
            raise RestoreRefused(
                "the restored data differs from the backup's record: "
                + "; ".join(problems)
                + f"; {dbs['db']} was not changed"
            )
        progress(f"swapping {dbs['tmp']} into place as {dbs['db']}")
        try:
            _psql(target, scripts.SWAP_SQL, variables, "swapping the restored database in")
            swapped = True
        except BackupFailed:
            _psql(target, scripts.UNDO_SWAP_SQL, variables, "undoing a failed swap")
            raise
    finally:
        if not swapped:
            _drop_side(target, variables, progress)
            if closed:
                _psql(target, scripts.REOPEN_SQL, variables, "opening the live database again")
    with concurrent.futures.ThreadPoolExecutor(1, "sotadb-drop-previous") as background:
        dropping = background.submit(
            _psql, target, scripts.DROP_PREVIOUS_SQL, variables, "dropping the previous database"
        )
        after_swap()
        try:
            dropping.result()
        except BackupFailed as e:
            progress(f"could not drop {dbs['old']} ({e}); the next restore drops it")
    return proven_equal(record) if proven else equal(record)


def _drop_side(target: Executor, variables: dict[str, str], progress: Progress) -> None:
    try:
        _psql(target, scripts.DROP_SQL, variables, "dropping the restore database")
    except BackupFailed as e:
        progress(f"could not drop {variables['tmp']} ({e}); the next restore replaces it")


def _psql(target: Executor, sql: str, variables: dict[str, str], what: str) -> Captured:
    result = capture(target, scripts.psql_script(sql, database="postgres", variables=variables))
    if result.status != 0:
        raise BackupFailed(_reason(what, result.status, result.stderr))
    return result
