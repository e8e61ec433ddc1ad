"""Backups in S3 (or anything that speaks its API: MinIO, Ceph, R2...), through boto3.

Layout, the same as the directory store's, under `s3://{bucket}/{prefix}`:

    {prefix}/{slug}/.lock                   the lease of the run holding the lock (see below)
    {prefix}/{slug}/{name}.sql.gz           a complete dump (or .sql.zst)
    {prefix}/{slug}/{name}.json             its record: what `list` shows

- **Writing** is one multipart upload: parts of at least `PART_SIZE` are sent as the dump
  streams (the sha256 and size are taken from the same bytes), and the object exists only
  once `commit` completes the upload; the record is written after that. A failed dump aborts
  the upload. A run that dies leaves an incomplete upload, which is never listed (it is no
  object) and which the next run's `clean` aborts, together with any dump whose record was
  never written.
- **Reading** streams the object in chunks; `runner.check_file` hashes it in full before a
  restore touches anything, and the replay hashes what it sent.
- **The lock** is a lease object written with a conditional PUT (`If-None-Match: *`), renewed
  every fifth of `LEASE_SECONDS` while held and taken over once it has expired (a killed Job
  holds it for at most `LEASE_SECONDS`). A store that ignores conditional writes gives no
  mutual exclusion; on Kubernetes the operator starts one Job per database at a time anyway.
- **Errors** become `StoreUnavailable` (or `BackupNotFound`) whose message names the setting
  to fix (spec.backups.s3.bucket, credentialsSecret, endpoint). Nothing from botocore is
  chained or quoted: its messages may carry request details, and the keys must never show.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from sotadb.backup.catalog import BackupRecord
from sotadb.backup.errors import BackupBusy, BackupNotFound, RecordCorrupted
from sotadb.backup.store import DUMP_SUFFIXES, RECORD_SUFFIX, dump_stem
from sotadb.backup.stores import S3Location, Scan, StoreUnavailable

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

PART_SIZE: Final = 8 << 20  # S3's minimum is 5 MiB for every part but the last
CHUNK: Final = 1 << 20
LOCK_OBJECT: Final = ".lock"
LEASE_SECONDS: Final = 300.0  # how long a killed run's lock blocks the next one at most
CONNECT_TIMEOUT: Final = 10
READ_TIMEOUT: Final = 120

_MISSING: Final = frozenset({"NoSuchKey", "404", "NotFound"})
_NO_BUCKET: Final = frozenset({"NoSuchBucket"})
_DENIED: Final = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AllAccessDisabled",
    }
)
_CONFLICT: Final = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


class _Conflict(Exception):
    """A conditional write lost (the lock is someone else's)."""


@dataclass(frozen=True)
class StoredDump:
    location: str
    size: int
    sha256: str


class S3BackupStore:
    """`stores.Store` over one bucket and prefix."""

    def __init__(
        self,
        location: S3Location,
        client: S3Client | None = None,
        *,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.location = location
        self.client = client or _client(location)
        self.lease_seconds = lease_seconds

    # ---------------------------------------------------------------- errors

    @contextlib.contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """botocore's errors → ours, each naming the setting to fix; `from None` on purpose."""
        where = f"s3://{self.location.bucket}"
        try:
            yield
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise BackupNotFound(f"{what}: no such object in {where}") from None
            if code in _CONFLICT:
                raise _Conflict(code) from None
            if code in _NO_BUCKET:
                raise StoreUnavailable(
                    f"{what}: bucket {self.location.bucket!r} does not exist (fix: create it, "
                    "or correct spec.backups.s3.bucket)"
                ) from None
            if code in _DENIED:
                raise StoreUnavailable(
                    f"{what}: {where} refused the request ({code}) (fix: check the keys in the "
                    "Secret named by spec.backups.s3.credentialsSecret and that they may read, "
                    "write and delete objects in the bucket)"
                ) from None
            raise StoreUnavailable(f"{what}: {where} answered {code or 'an error'}") from None
        except (NoCredentialsError, PartialCredentialsError):
            raise StoreUnavailable(
                f"{what}: no S3 keys (fix: spec.backups.s3.credentialsSecret must name a Secret "
                "with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ) from None
        except ConnectionError:
            raise StoreUnavailable(
                f"{what}: cannot reach the S3 endpoint {self._endpoint()} (fix: correct "
                "spec.backups.s3.endpoint, or the network between the Job and the store)"
            ) from None
        except BotoCoreError as e:
            raise StoreUnavailable(f"{what}: {where}: {type(e).__name__}") from None

    def _endpoint(self) -> str:
        if self.location.endpoint is None:
            return f"of region {self.location.region}"
        parts = urlsplit(self.location.endpoint)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")

    # ---------------------------------------------------------------- records

    def _list(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        with self._calls(f"listing {self.location.object_url(prefix)}"):
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]

    def scan(self, slug: str) -> Scan:
        directory = self.location.directory(slug)
        records: list[BackupRecord] = []
        unreadable: list[str] = []
        for key in sorted(self._list(directory)):
            name = key[len(directory) :]
            if "/" in name or name.startswith(".") or not name.endswith(RECORD_SUFFIX):
                continue
            try:
                records.append(self._record(key))
            except (BackupNotFound, RecordCorrupted):  # deleted meanwhile, or unreadable
                unreadable.append(self.location.object_url(key))
        records.sort(key=lambda r: (r.started_at, r.name))
        return Scan(records, unreadable)

    def records(self, slug: str) -> list[BackupRecord]:
        return self.scan(slug).records

    def _record(self, key: str) -> BackupRecord:
        with self._calls(f"reading {self.location.object_url(key)}"):
            body = self.client.get_object(Bucket=self.location.bucket, Key=key)["Body"].read()
        try:
            return BackupRecord.from_json(json.loads(body))
        except ValueError as e:
            raise RecordCorrupted(
                f"{self.location.object_url(key)} is not valid JSON ({e})"
            ) from None

    def load(self, slug: str, name: str) -> BackupRecord:
        not_found = BackupNotFound(
            f"no backup {name} of {slug} (fix: `sotadb backup list {slug}` shows them)"
        )
        if "/" in name or name.startswith(".") or not name:
            raise not_found
        try:
            return self._record(self.location.key(slug, f"{name}{RECORD_SUFFIX}"))
        except BackupNotFound:
            raise not_found from None

    def save(self, record: BackupRecord) -> str:
        key = self.location.key(record.database, f"{record.name}{RECORD_SUFFIX}")
        body = (json.dumps(record.to_json(), indent=2) + "\n").encode()
        with self._calls(f"writing {self.location.object_url(key)}"):
            self.client.put_object(
                Bucket=self.location.bucket, Key=key, Body=body, ContentType="application/json"
            )
        return self.location.object_url(key)

    # ---------------------------------------------------------------- dumps

    def partial(self, slug: str, file_name: str) -> MultipartDump:
        return MultipartDump(self, self.location.key(slug, file_name))

    def _dump_key(self, record: BackupRecord) -> str | None:
        return None if record.file is None else self.location.key(record.database, record.file)

    def dump_size(self, record: BackupRecord) -> int | None:
        key = self._dump_key(record)
        if key is None:
            return None
        try:
            with self._calls(f"looking at {self.location.object_url(key)}"):
                head = self.client.head_object(Bucket=self.location.bucket, Key=key)
        except BackupNotFound:
            return None
        return head["ContentLength"]

    def read(self, record: BackupRecord) -> Iterator[bytes]:
        key = self._dump_key(record)
        if key is None:
            raise BackupNotFound(f"backup {record.name} has no dump")
        what = f"reading {self.location.object_url(key)}"
        with self._calls(what):
            body = self.client.get_object(Bucket=self.location.bucket, Key=key)["Body"]
        return self._stream(body, what)

    def _stream(self, body: StreamingBody, what: str) -> Iterator[bytes]:
        try:
            with self._calls(what):
                yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def delete(self, record: BackupRecord) -> None:
        """The record first (it stops being listed), then the dump; absent is fine."""
        keys = [self.location.key(record.database, f"{record.name}{RECORD_SUFFIX}")]
        dump = self._dump_key(record)
        if dump is not None:
            keys.append(dump)
        for key in keys:
            with self._calls(f"deleting {self.location.object_url(key)}"):
                self.client.delete_object(Bucket=self.location.bucket, Key=key)

    def clean(self, slug: str) -> list[str]:
        """Under the lock only: abort incomplete uploads, delete dumps without a record."""
        directory = self.location.directory(slug)
        removed: list[str] = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        with self._calls(f"listing incomplete uploads in {self.location.object_url(directory)}"):
            uploads = [
                (upload["Key"], upload["UploadId"])
                for page in paginator.paginate(Bucket=self.location.bucket, Prefix=directory)
                for upload in page.get("Uploads", [])
            ]
        for key, upload_id in uploads:
            with self._calls(f"aborting the upload of {self.location.object_url(key)}"):
                self.client.abort_multipart_upload(
                    Bucket=self.location.bucket, Key=key, UploadId=upload_id
                )
            removed.append(f"{key[len(directory) :]} (incomplete upload)")
        names = {key[len(directory) :] for key in self._list(directory)}
        for name in sorted(names):
            orphan = (
                "/" not in name
                and not name.startswith(".")
                and name.endswith(DUMP_SUFFIXES)
                and f"{dump_stem(name)}{RECORD_SUFFIX}" not in names
            )
            if orphan:
                key = f"{directory}{name}"
                with self._calls(f"deleting {self.location.object_url(key)}"):
                    self.client.delete_object(Bucket=self.location.bucket, Key=key)
                removed.append(name)
        return sorted(removed)

    # ---------------------------------------------------------------- the lock

    @contextlib.contextmanager
    def lock(self, slug: str) -> Iterator[None]:
        lease = Lease(self, self.location.key(slug, LOCK_OBJECT), slug)
        lease.acquire()
        try:
            yield
        finally:
            lease.release()


class MultipartDump:
    """A dump being uploaded: buffered into parts of at least `PART_SIZE`, hashed as it goes.
    The object appears only when `commit` completes the upload."""

    def __init__(self, store: S3BackupStore, key: str, part_size: int = PART_SIZE) -> None:
        self._store = store
        self._bucket = store.location.bucket
        self.key = key
        self.url = store.location.object_url(key)
        self._part_size = part_size
        self._buffer = bytearray()
        self._parts: list[CompletedPartTypeDef] = []
        self._digest = hashlib.sha256()
        self.size = 0
        self._done = False
        with store._calls(f"starting the upload of {self.url}"):
            self.upload_id = store.client.create_multipart_upload(Bucket=self._bucket, Key=key)[
                "UploadId"
            ]

    def write(self, chunk: bytes) -> None:
        self._buffer.extend(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)
        if len(self._buffer) >= self._part_size:
            self._send()

    def _send(self) -> None:
        number = len(self._parts) + 1
        with self._store._calls(f"uploading part {number} of {self.url}"):
            answer = self._store.client.upload_part(
                Bucket=self._bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=bytes(self._buffer),
            )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self._buffer.clear()

    def commit(self) -> StoredDump:
        if self._buffer or not self._parts:
            self._send()
        with self._store._calls(f"completing the upload of {self.url}"):
            self._store.client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._done = True
        with self._store._calls(f"looking at {self.url}"):
            stored = self._store.client.head_object(Bucket=self._bucket, Key=self.key)
        if stored["ContentLength"] != self.size:
            raise StoreUnavailable(
                f"{self.url} holds {stored['ContentLength']} bytes after the upload, "
                f"{self.size} were sent"
            )
        return StoredDump(self.url, self.size, self._digest.hexdigest())

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer.clear()
        # Best effort: whatever is left, the next run's `clean` aborts.
        with (
            contextlib.suppress(StoreUnavailable, BackupNotFound, _Conflict),
            self._store._calls(f"aborting the upload of {self.url}"),
        ):
            self._store.client.abort_multipart_upload(
                Bucket=self._bucket, Key=self.key, UploadId=self.upload_id
            )

    def __enter__(self) -> MultipartDump:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()


class Lease:
    """The lock object: who holds it and until when (seconds since the epoch)."""

    def __init__(self, store: S3BackupStore, key: str, slug: str) -> None:
        self._store = store
        self._key = key
        self._slug = slug
        self._holder = secrets.token_hex(8)
        self._etag: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        expires = time.time() + self._store.lease_seconds
        return json.dumps({"holder": self._holder, "expires": expires}).encode()

    def _put(self, *, if_match: str | None = None) -> str:
        """Create the lock object if absent, or replace the version `if_match` names."""
        bucket, key, body = self._store.location.bucket, self._key, self._body()
        with self._store._calls(f"taking the backup lock of {self._slug}"):
            if if_match is None:
                answer = self._store.client.put_object(
                    Bucket=bucket, Key=key, Body=body, IfNoneMatch="*"
                )
            else:
                answer = self._store.client.put_object(
                    Bucket=bucket, Key=key, Body=body, IfMatch=if_match
                )
        return answer["ETag"]

    def acquire(self) -> None:
        busy = BackupBusy(
            f"another backup, restore or retention run of {self._slug} is in progress "
            f"(fix: wait for it to finish; a lock left by a killed run expires within "
            f"{self._store.lease_seconds:.0f} s)"
        )
        try:
            self._etag = self._put()
        except _Conflict:
            etag, expires = self._current()
            if etag is not None and expires > time.time():
                raise busy from None
            try:  # expired (or vanished): take it over, unless someone else just did
                self._etag = self._put(if_match=etag)
            except _Conflict:
                raise busy from None
        self._renewer = threading.Thread(
            target=self._renew, name=f"sotadb-lease-{self._slug}", daemon=True
        )
        self._renewer.start()

    def _current(self) -> tuple[str | None, float]:
        try:
            with self._store._calls(f"reading the backup lock of {self._slug}"):
                answer = self._store.client.get_object(
                    Bucket=self._store.location.bucket, Key=self._key
                )
                body = answer["Body"].read()
        except BackupNotFound:
            return None, 0.0
        try:
            expires = float(json.loads(body)["expires"])
        except (ValueError, KeyError, TypeError):
            expires = 0.0  # unreadable: treat as expired
        return answer["ETag"], expires

    def _renew(self) -> None:
        while not self._stop.wait(self._store.lease_seconds / 5):
            try:
                self._etag = self._put(if_match=self._etag)
            except (StoreUnavailable, _Conflict, BackupNotFound):
                continue  # a later renewal may still succeed before the lease ends

    def release(self) -> None:
        """Delete the lock object if it is still ours. Failing here must not hide the run's
        own outcome: an unreleased lease simply expires."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        with contextlib.suppress(StoreUnavailable, BackupNotFound, _Conflict):
            etag, _ = self._current()
            if etag is not None and etag == self._etag:
                with self._store._calls(f"releasing the backup lock of {self._slug}"):
                    self._store.client.delete_object(
                        Bucket=self._store.location.bucket, Key=self._key
                    )


def _client(location: S3Location) -> S3Client:
    """Keys from boto3's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in a Job's env);
    never passed through our code."""
    config = Config(
        region_name=location.region,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"mode": "standard", "max_attempts": 5},
    )
    if location.endpoint is not None:
        # Path-style addressing and checksums only when required: what S3-compatible servers
        # (MinIO, Ceph, ...) accept. Integrity is ours anyway: the sha256 in the record.
        config = config.merge(
            Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
        )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=location.endpoint, config=config)
