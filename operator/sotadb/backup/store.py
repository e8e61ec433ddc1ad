"""Backup files and their records in one directory per database.

Layout (`root` is `$SOTADB_HOME/backups` on Docker, the backup volume on Kubernetes):

    {root}/{slug}/.lock                              flock: one backup/restore/retention at a time
    {root}/{slug}/.{name}.sql.gz.partial             a dump being written (never listed)
    {root}/{slug}/{name}.sql.gz                      a complete dump (or .sql.zst)
    {root}/{slug}/{name}.json                        its record: what `list` shows

A dump is written under the temporary name while its sha256 and size are computed from the
same bytes, then fsynced, renamed, and the directory fsynced; only then is the record written
(atomically: temporary file, fsync, rename). So a crash at any point leaves either a complete
dump with its record, or files that are not listed and that the next run under the lock
removes (`clean`: partials, and dumps without a record). Files are created mode 0600 in
directories of mode 0700: a dump holds every row of the database.

`BackupStore` is the directory kind of `stores.Store`; `object_store.S3BackupStore` is the
S3 kind, with the same layout.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from sotadb.backup.catalog import BackupRecord, Compression
from sotadb.backup.errors import BackupBusy, BackupNotFound, RecordCorrupted
from sotadb.backup.stores import Scan
from sotadb.docker.state import write_atomically

PARTIAL_SUFFIX: Final = ".partial"
RECORD_SUFFIX: Final = ".json"
LOCK_FILE: Final = ".lock"
BUFFER: Final = 1 << 20
DUMP_SUFFIXES: Final = tuple(c.suffix for c in Compression)


__all__ = ["BackupStore", "PartialFile", "Scan", "Written", "dump_stem"]


@dataclass(frozen=True)
class Written:
    path: Path
    size: int
    sha256: str

    @property
    def location(self) -> str:
        return str(self.path)


class PartialFile:
    """A dump being written: bytes go to `.{file}.partial` and into the sha256 and the count."""

    def __init__(self, directory: Path, file_name: str) -> None:
        self.final = directory / file_name
        self.path = directory / f".{file_name}{PARTIAL_SUFFIX}"
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._handle = os.fdopen(descriptor, "wb", buffering=BUFFER)
        self._digest = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._handle.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    def commit(self) -> Written:
        """fsync, rename into place, fsync the directory: durable before anyone reads it."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self.path, self.final)
        _fsync_directory(self.final.parent)
        self._done = True
        return Written(self.final, self.size, self._digest.hexdigest())

    def abort(self) -> None:
        if not self._done:
            self._done = True
            with contextlib.suppress(OSError):
                self._handle.close()
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> PartialFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()


class BackupStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, slug: str) -> Path:
        path = self.root / slug
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def slugs(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    @contextlib.contextmanager
    def lock(self, slug: str) -> Iterator[None]:
        """Exclusive, non-blocking; released by the kernel if this process dies."""
        path = self.directory(slug) / LOCK_FILE
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BackupBusy(
                    f"another backup, restore or retention run of {slug} is in progress "
                    "(fix: wait for it to finish)"
                ) from None
            yield
        finally:
            os.close(descriptor)

    # ---------------------------------------------------------------- records

    def scan(self, slug: str) -> Scan:
        records: list[BackupRecord] = []
        unreadable: list[Path] = []
        directory = self.root / slug
        if not directory.is_dir():
            return Scan(records)
        for path in sorted(directory.glob(f"*{RECORD_SUFFIX}")):
            if path.name.startswith("."):
                continue
            try:
                records.append(BackupRecord.from_json(json.loads(path.read_text("utf-8"))))
            except (OSError, ValueError, RecordCorrupted):
                unreadable.append(path)
        records.sort(key=lambda r: (r.started_at, r.name))
        return Scan(records, unreadable)

    def records(self, slug: str) -> list[BackupRecord]:
        return self.scan(slug).records

    def load(self, slug: str, name: str) -> BackupRecord:
        path = self.root / slug / f"{name}{RECORD_SUFFIX}"
        if "/" in name or name.startswith(".") or not path.is_file():
            raise BackupNotFound(
                f"no backup {name} of {slug} (fix: `sotadb backup list {slug}` shows them)"
            )
        try:
            return BackupRecord.from_json(json.loads(path.read_text("utf-8")))
        except ValueError as e:
            raise RecordCorrupted(f"{path} is not valid JSON ({e})") from None

    def save(self, record: BackupRecord) -> Path:
        path = self.directory(record.database) / f"{record.name}{RECORD_SUFFIX}"
        write_atomically(path, json.dumps(record.to_json(), indent=2) + "\n", mode=0o600)
        _fsync_directory(path.parent)
        return path

    def dump_path(self, record: BackupRecord) -> Path | None:
        return None if record.file is None else self.root / record.database / record.file

    def partial(self, slug: str, file_name: str) -> PartialFile:
        return PartialFile(self.directory(slug), file_name)

    def dump_size(self, record: BackupRecord) -> int | None:
        path = self.dump_path(record)
        return path.stat().st_size if path is not None and path.is_file() else None

    def read(self, record: BackupRecord) -> Iterator[bytes]:
        path = self.dump_path(record)
        if path is None or not path.is_file():
            raise BackupNotFound(f"backup {record.name}: its file {record.file} is missing")
        return _chunks(path)

    def delete(self, record: BackupRecord) -> None:
        """The record first (it stops being listed), then the dump."""
        (self.root / record.database / f"{record.name}{RECORD_SUFFIX}").unlink(missing_ok=True)
        dump = self.dump_path(record)
        if dump is not None:
            dump.unlink(missing_ok=True)
        _fsync_directory(self.root / record.database)

    def clean(self, slug: str) -> list[str]:
        """Under the lock only: partial dumps, and dumps whose record was never written (or was
        deleted first). Returns the names removed."""
        directory = self.root / slug
        if not directory.is_dir():
            return []
        removed: list[str] = []
        for path in directory.iterdir():
            stale_partial = path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX)
            orphan = (
                not path.name.startswith(".")
                and path.name.endswith(DUMP_SUFFIXES)
                and not (directory / f"{dump_stem(path.name)}{RECORD_SUFFIX}").exists()
            )
            if stale_partial or orphan:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return sorted(removed)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(BUFFER):
            yield chunk


def dump_stem(file_name: str) -> str:
    for suffix in DUMP_SUFFIXES:
        if file_name.endswith(suffix):
            return file_name[: -len(suffix)]
    return file_name


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
