"""What a backup is, as data: its record, its name, its JSON, and which ones retention deletes.

Pure: no I/O, no clock (callers pass `now`).

Decisions:
- **Name** `{slug}-{YYYYMMDDTHHMMSSZ}` (UTC start time, second precision). Names sort in time
  order; a second backup started in the same second takes the next free second
  (`unique_name`). On Kubernetes a DatabaseBackup is limited to 40 characters, so there the
  object name is generated and this name is only the file name.
- **Record** fields mirror the DatabaseBackup status (phase, startedAt, completedAt, size,
  sha256, location, verification, verifiedAt, message), plus what a restore and a drill need:
  `file`, `format` (`plain+gzip` or `plain+zstd`), `compressor`, `databaseSize`,
  `serverVersion` and `tables` — per table (`schema.table` with SQL-quoted identifiers, e.g.
  `"app-data"."every-type"`, so the key is unambiguous) its row count and checksum, taken in
  the dump's own snapshot — and `checksumVersion`, how those checksums were taken:
  2 (`CHECKSUM_VERSION`): `sha256:` + the sha256 of the table's rows in the dump
  (`sotadb.backup.copyhash`); 1 (`LEGACY_CHECKSUM_VERSION`): the md5 of a sum of row hashes
  computed in SQL, which a restore cannot recompute. Records written before the field existed
  have none: theirs is 2 when any checksum has the `sha256:` prefix, else 1.
- **Good** = phase Succeeded *and* verification Passed. A backup that failed its drill is never
  good; one not drilled yet (verification unset) is not good either.
- **Retention** (`retention`): a backup whose start is more than `days` days before `now` is
  deleted, whatever its phase (Failed ones too), except
  (1) the newest good backup, which is never deleted, however old; when no backup is good,
      the newest Succeeded one that was never drilled takes its place (a host whose drills are
      switched off must not lose its last restore point);
  (2) backups still Pending or Running (on Kubernetes a Job may be working on them).
  Everything younger than `days` is kept. Applying it twice deletes nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from sotadb.backup.errors import RecordCorrupted

RECORD_VERSION: Final = 1
CHECKSUM_VERSION: Final = 2  # `sha256:` of each table's rows as the dump has them (copyhash)
LEGACY_CHECKSUM_VERSION: Final = 1  # md5 of a sum of row hashes, taken in SQL: not comparable
CHECKSUM_VERSIONS: Final = (LEGACY_CHECKSUM_VERSION, CHECKSUM_VERSION)
SHA256_CHECKSUM_PREFIX: Final = "sha256:"
STAMP_FORMAT: Final = "%Y%m%dT%H%M%SZ"
TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
NAME_RE: Final = re.compile(r"^(?P<slug>[a-z]([-a-z0-9]*[a-z0-9])?)-(?P<stamp>\d{8}T\d{6}Z)$")
SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")
MAX_NAME_ATTEMPTS: Final = 3600


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Verification(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"


class Compression(StrEnum):
    """How the plain SQL dump is compressed; gzip (the seed's format) is the default."""

    GZIP = "gzip"
    ZSTD = "zstd"

    @property
    def record_format(self) -> str:
        return f"plain+{self.value}"

    @property
    def suffix(self) -> str:
        return ".sql.gz" if self is Compression.GZIP else ".sql.zst"

    @classmethod
    def of_format(cls, value: str) -> Compression:
        for compression in cls:
            if compression.record_format == value:
                return compression
        raise ValueError(f"unknown backup format {value!r}")


@dataclass(frozen=True)
class TableSummary:
    rows: int
    checksum: str


@dataclass(frozen=True)
class BackupRecord:
    name: str
    database: str
    phase: Phase
    started_at: datetime
    completed_at: datetime | None = None
    file: str | None = None  # the dump's file name, in the database's backup directory
    location: str | None = None  # where it was written (path on the host or backup volume)
    size: int | None = None
    sha256: str | None = None
    format: str = Compression.GZIP.record_format
    compressor: str | None = None  # the command that compressed it (e.g. "pigz -1")
    database_size: int | None = None  # pg_database_size at dump time, bytes
    server_version: str | None = None
    tables: Mapping[str, TableSummary] = field(default_factory=dict)
    verification: Verification | None = None
    verified_at: datetime | None = None
    message: str | None = None
    checksum_version: int | None = None  # None: recorded before the field existed

    @property
    def good(self) -> bool:
        return self.phase is Phase.SUCCEEDED and self.verification is Verification.PASSED

    @property
    def legacy_checksums(self) -> bool:
        """Its checksums predate copyhash: a restore can compare its row counts, not them."""
        if self.checksum_version is not None:
            return self.checksum_version == LEGACY_CHECKSUM_VERSION
        return bool(self.tables) and not any(
            t.checksum.startswith(SHA256_CHECKSUM_PREFIX) for t in self.tables.values()
        )

    @property
    def compression(self) -> Compression:
        return Compression.of_format(self.format)

    def verified(self, outcome: Verification, at: datetime, message: str) -> BackupRecord:
        return replace(self, verification=outcome, verified_at=at, message=message)

    # ---------------------------------------------------------------- JSON

    def to_json(self) -> dict[str, Any]:
        """camelCase, the DatabaseBackup status's field names; unset fields are left out."""
        data: dict[str, Any] = {
            "version": RECORD_VERSION,
            "name": self.name,
            "database": self.database,
            "phase": self.phase.value,
            "startedAt": format_time(self.started_at),
            "completedAt": _maybe_time(self.completed_at),
            "file": self.file,
            "location": self.location,
            "size": self.size,
            "sha256": self.sha256,
            "format": self.format,
            "compressor": self.compressor,
            "databaseSize": self.database_size,
            "serverVersion": self.server_version,
            "tables": {
                key: {"rows": table.rows, "checksum": table.checksum}
                for key, table in sorted(self.tables.items())
            },
            "verification": self.verification.value if self.verification else None,
            "verifiedAt": _maybe_time(self.verified_at),
            "message": self.message,
            "checksumVersion": self.checksum_version,
        }
        return {key: value for key, value in data.items() if value is not None}

    @classmethod
    def from_json(cls, data: Any) -> BackupRecord:
        """Strict: a record that does not read back exactly is `RecordCorrupted`."""
        try:
            if not isinstance(data, Mapping):
                raise TypeError("not a JSON object")
            if data.get("version") != RECORD_VERSION:
                raise ValueError(f"version {data.get('version')!r} is not {RECORD_VERSION}")
            tables = data.get("tables") or {}
            if not isinstance(tables, Mapping):
                raise TypeError("tables is not an object")
            record = cls(
                name=_string(data["name"]),
                database=_string(data["database"]),
                phase=Phase(data["phase"]),
                started_at=parse_time(data["startedAt"]),
                completed_at=_maybe_parse(data.get("completedAt")),
                file=_maybe_string(data.get("file")),
                location=_maybe_string(data.get("location")),
                size=_maybe_int(data.get("size")),
                sha256=_maybe_string(data.get("sha256")),
                format=_string(data.get("format", Compression.GZIP.record_format)),
                compressor=_maybe_string(data.get("compressor")),
                database_size=_maybe_int(data.get("databaseSize")),
                server_version=_maybe_string(data.get("serverVersion")),
                tables={
                    _string(key): TableSummary(
                        rows=_int(value["rows"]), checksum=_string(value["checksum"])
                    )
                    for key, value in tables.items()
                },
                verification=(
                    Verification(data["verification"]) if data.get("verification") else None
                ),
                verified_at=_maybe_parse(data.get("verifiedAt")),
                message=_maybe_string(data.get("message")),
                checksum_version=_maybe_int(data.get("checksumVersion")),
            )
            Compression.of_format(record.format)
            if record.checksum_version not in (None, *CHECKSUM_VERSIONS):
                raise ValueError(f"checksumVersion {record.checksum_version} is not known")
        except (KeyError, TypeError, ValueError) as e:
            raise RecordCorrupted(f"backup record cannot be read: {e}") from None
        if record.sha256 is not None and not SHA256_RE.match(record.sha256):
            raise RecordCorrupted(f"backup record {record.name}: sha256 is not 64 hex digits")
        if record.file is not None and ("/" in record.file or record.file.startswith(".")):
            raise RecordCorrupted(
                f"backup record {record.name}: file {record.file!r} is not a name"
            )
        return record


# ---------------------------------------------------------------- names and times


def backup_name(slug: str, started_at: datetime) -> str:
    return f"{slug}-{started_at.astimezone(UTC).strftime(STAMP_FORMAT)}"


def unique_name(slug: str, started_at: datetime, taken: Collection[str]) -> str:
    """The backup name for `started_at`, or the next free second's when it is taken."""
    for offset in range(MAX_NAME_ATTEMPTS):
        name = backup_name(slug, started_at + timedelta(seconds=offset))
        if name not in taken:
            return name
    raise ValueError(f"no free backup name for {slug} within an hour of {started_at}")


def slug_of(name: str) -> str | None:
    match = NAME_RE.match(name)
    return match.group("slug") if match else None


def format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no place in a backup record")
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise TypeError(f"{text!r} is not a timestamp string")
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


# ---------------------------------------------------------------- which backups count


def newest_good(records: Iterable[BackupRecord]) -> BackupRecord | None:
    return _newest(r for r in records if r.good)


def protected(records: Sequence[BackupRecord]) -> BackupRecord | None:
    """The backup retention never deletes: the newest good one, or, when none is good, the
    newest Succeeded one that no drill has judged (never one whose drill failed)."""
    return newest_good(records) or _newest(
        r for r in records if r.phase is Phase.SUCCEEDED and r.verification is None
    )


def retention(records: Sequence[BackupRecord], now: datetime, days: int) -> list[BackupRecord]:
    """The records to delete (see the module docstring for the rules)."""
    if days < 1:
        raise ValueError("retention must be at least one day")
    keep = protected(records)
    cutoff = now - timedelta(days=days)
    return sorted(
        (
            r
            for r in records
            if r.started_at < cutoff
            and r is not keep
            and r.phase not in (Phase.PENDING, Phase.RUNNING)
        ),
        key=_order,
    )


def _newest(records: Iterable[BackupRecord]) -> BackupRecord | None:
    return max(records, key=_order, default=None)


def _order(record: BackupRecord) -> tuple[datetime, str]:
    return (record.started_at, record.name)


# ---------------------------------------------------------------- strict field readers


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _maybe_string(value: Any) -> str | None:
    return None if value is None else _string(value)


def _maybe_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _maybe_parse(value: Any) -> datetime | None:
    return None if value is None else parse_time(value)


def _maybe_time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)
