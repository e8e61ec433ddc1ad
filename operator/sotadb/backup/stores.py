"""Where backups live: the `Store` the runner works with, and `open_store(location)`.

A location is either a directory (the Docker host's `$SOTADB_HOME/backups`, or the backups
volume mounted into a Kubernetes Job) or `s3://bucket/prefix` (spec.backups.s3). Both keep
the same layout, `{root}/{slug}/{name}.sql.gz` beside `{root}/{slug}/{name}.json`, and the
same guarantees: a dump is listed only once it is complete and has its record; whatever an
interrupted run left behind is removed by the next run's `clean` under the lock.

Parsing a location is pure (this module imports no S3 client); `open_store` imports the S3
store only when a location asks for it. The S3 endpoint and region come from the environment
(SOTADB_S3_ENDPOINT, AWS_DEFAULT_REGION), the keys from boto3's own chain
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY): they are never part of a location, a message or
a record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self

from sotadb import spec
from sotadb.backup.catalog import BackupRecord
from sotadb.errors import SotadbError

LOCATION_ENV: Final = "SOTADB_BACKUP_LOCATION"
ENDPOINT_ENV: Final = "SOTADB_S3_ENDPOINT"
REGION_ENV: Final = "AWS_DEFAULT_REGION"
DEFAULT_REGION: Final = spec.S3_DEFAULT_REGION
S3_SCHEME: Final = "s3://"

# The rules of spec.backups.s3, so that a location set by hand is held to them too.
_BUCKET_RE: Final = re.compile(spec.S3_BUCKET_PATTERN)
_PREFIX_RE: Final = re.compile(spec.S3_PREFIX_PATTERN)
_ENDPOINT_RE: Final = re.compile(spec.S3_ENDPOINT_PATTERN)
_REGION_RE: Final = re.compile(spec.S3_REGION_PATTERN)


class InvalidLocation(SotadbError):
    """A backup location (or the S3 settings beside it) cannot be used; the message says how
    to fix it."""


class StoreUnavailable(SotadbError):
    """The store could not be reached or refused us; the message names the setting to fix."""


# ---------------------------------------------------------------- what the runner needs


@dataclass(frozen=True)
class Scan:
    """A database's records, and what could not be read (paths or object keys)."""

    records: list[BackupRecord]
    unreadable: Sequence[Path | str] = field(default_factory=list)


class Committed(Protocol):
    """A complete dump: where it is, how big, its sha256 (of the bytes as stored)."""

    @property
    def location(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...


class DumpWriter(Protocol):
    """A dump being written. Nothing is listed, or readable under the final name, before
    `commit`; `abort` (and leaving the `with` block without commit) throws it away."""

    @property
    def size(self) -> int: ...
    def write(self, chunk: bytes) -> None: ...
    def commit(self) -> Committed: ...
    def abort(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class Store(Protocol):
    """Backup dumps and their records, per database (`slug`)."""

    def lock(self, slug: str) -> AbstractContextManager[None]:
        """One backup, restore, retention or forget run of `slug` at a time; `BackupBusy`."""
        ...

    def scan(self, slug: str) -> Scan: ...
    def records(self, slug: str) -> list[BackupRecord]: ...
    def load(self, slug: str, name: str) -> BackupRecord:
        """`BackupNotFound` when there is no such record."""
        ...

    def save(self, record: BackupRecord) -> object: ...
    def partial(self, slug: str, file_name: str) -> DumpWriter: ...
    def dump_size(self, record: BackupRecord) -> int | None:
        """The stored dump's size in bytes, None when it is missing."""
        ...

    def read(self, record: BackupRecord) -> Iterator[bytes]:
        """The dump's bytes in chunks, as stored (`BackupNotFound` when it is missing)."""
        ...

    def delete(self, record: BackupRecord) -> None:
        """The record first (it stops being listed), then the dump; absent is fine."""
        ...

    def clean(self, slug: str) -> list[str]:
        """Under the lock: remove what interrupted runs left; returns the names removed."""
        ...


# ---------------------------------------------------------------- locations


@dataclass(frozen=True)
class DirectoryLocation:
    path: Path


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str = DEFAULT_REGION

    @property
    def url(self) -> str:
        """`s3://bucket/prefix`: what SOTADB_BACKUP_LOCATION holds (no endpoint, no keys)."""
        return s3_url(self.bucket, self.prefix)

    def key(self, slug: str, file_name: str) -> str:
        """The object key of a file of `slug`: `{prefix}/{slug}/{file}`."""
        return f"{self.directory(slug)}{file_name}"

    def directory(self, slug: str) -> str:
        """The key prefix of `slug`'s objects, ending in `/`."""
        return f"{self.prefix}/{slug}/" if self.prefix else f"{slug}/"

    def object_url(self, key: str) -> str:
        return f"{S3_SCHEME}{self.bucket}/{key}"


Location = DirectoryLocation | S3Location


def s3_url(bucket: str, prefix: str = "") -> str:
    return f"{S3_SCHEME}{bucket}/{prefix}" if prefix else f"{S3_SCHEME}{bucket}"


def parse_location(location: str, env: Mapping[str, str] | None = None) -> Location:
    """A directory path, or `s3://bucket[/prefix]` with the endpoint and region from `env`
    (default: this process's environment). `InvalidLocation` names what to fix."""
    env = os.environ if env is None else env
    text = location.strip()
    if not text:
        raise InvalidLocation(
            f"the backup location is empty (fix: set {LOCATION_ENV} to a directory or "
            "s3://bucket/prefix)"
        )
    if text.startswith(S3_SCHEME):
        return _parse_s3(text[len(S3_SCHEME) :], env)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise InvalidLocation(
            f"backup location scheme {scheme}:// is not supported (fix: use a directory "
            "or s3://bucket/prefix)"
        )
    return DirectoryLocation(Path(text))


def _parse_s3(rest: str, env: Mapping[str, str]) -> S3Location:
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    check_bucket(bucket)
    if len(prefix) > spec.S3_PREFIX_MAX_LENGTH or not _PREFIX_RE.fullmatch(prefix):
        raise InvalidLocation(
            f"S3 prefix {prefix!r} is not allowed (fix: spec.backups.s3.prefix takes path "
            "segments of letters, digits, '.', '_' and '-' separated by '/', e.g. "
            "backups/prod)"
        )
    endpoint = env.get(ENDPOINT_ENV) or None
    if endpoint is not None and (
        len(endpoint) > spec.S3_ENDPOINT_MAX_LENGTH or not _ENDPOINT_RE.fullmatch(endpoint)
    ):
        raise InvalidLocation(
            f"{ENDPOINT_ENV} is not an http(s)://host[:port] URL (fix: correct "
            "spec.backups.s3.endpoint, e.g. http://minio.storage:9000)"
        )
    region = env.get(REGION_ENV) or DEFAULT_REGION
    if len(region) > spec.S3_REGION_MAX_LENGTH or not _REGION_RE.fullmatch(region):
        raise InvalidLocation(
            f"{REGION_ENV} {region!r} is not a region name (fix: correct "
            "spec.backups.s3.region, e.g. eu-central-1)"
        )
    return S3Location(bucket=bucket, prefix=prefix, endpoint=endpoint, region=region)


def check_bucket(bucket: str) -> None:
    low, high = spec.S3_BUCKET_MIN_LENGTH, spec.S3_BUCKET_MAX_LENGTH
    if not (low <= len(bucket) <= high and _BUCKET_RE.fullmatch(bucket)):
        raise InvalidLocation(
            f"S3 bucket name {bucket!r} is not valid (fix: spec.backups.s3.bucket takes "
            f"{low}-{high} lowercase letters, digits, '-' and '.', starting and ending with a "
            "letter or digit, e.g. my-backups)"
        )


def open_store(location: str, env: Mapping[str, str] | None = None) -> Store:
    """The store at `location` (see `parse_location`). Opening does no I/O beyond creating a
    client; the first operation reports an unreachable endpoint or a missing bucket."""
    parsed = parse_location(location, env)
    if isinstance(parsed, S3Location):
        from sotadb.backup.object_store import S3BackupStore  # boto3 only when asked for

        return S3BackupStore(parsed)
    from sotadb.backup.store import BackupStore

    return BackupStore(parsed.path)
