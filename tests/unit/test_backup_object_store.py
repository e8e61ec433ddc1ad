"""The S3 store against a real S3 API (moto's server on 127.0.0.1): multipart dumps that exist
only once committed, records, cleaning up after crashes, the lease lock, streamed reads with
the runner's checks, and errors that name the setting to fix and never a key."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from s3server import S3Server, keys_checked, s3_server

from sotadb.backup import runner
from sotadb.backup.catalog import BackupRecord, Phase, TableSummary
from sotadb.backup.errors import BackupBusy, BackupNotFound, RestoreRefused
from sotadb.backup.object_store import PART_SIZE, S3BackupStore
from sotadb.backup.stores import S3Location, StoreUnavailable, open_store, parse_location

REPOSITORY = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
SLUG = "my-app"


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with s3_server() as running:
        yield running


@pytest.fixture
def env(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    return server.env


@pytest.fixture
def bucket(server: S3Server) -> str:
    return server.create_bucket()


@pytest.fixture
def store(env: dict[str, str], bucket: str) -> S3BackupStore:
    opened = open_store(f"s3://{bucket}/prod/shop")
    assert isinstance(opened, S3BackupStore)
    return opened


def keys(server: S3Server, bucket: str) -> list[str]:
    listed = server.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def uploads(server: S3Server, bucket: str) -> list[str]:
    return [
        u["Key"] for u in server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    ]


def stored(store: S3BackupStore, name: str, payload: bytes) -> BackupRecord:
    with store.partial(SLUG, f"{name}.sql.gz") as partial:
        partial.write(payload)
        written = partial.commit()
    record = BackupRecord(
        name=name,
        database=SLUG,
        phase=Phase.SUCCEEDED,
        started_at=NOW,
        file=f"{name}.sql.gz",
        location=written.location,
        size=written.size,
        sha256=written.sha256,
        tables={"public.t": TableSummary(1, "x")},
    )
    store.save(record)
    return record


# ---------------------------------------------------------------- dumps and records


def test_a_multipart_dump_exists_only_after_commit_and_reads_back_exactly(
    store: S3BackupStore, server: S3Server, bucket: str
) -> None:
    payload = os.urandom(2 * PART_SIZE + 12345)  # two full parts and a short last one
    key = "prod/shop/my-app/my-app-20261125T120000Z.sql.gz"
    with store.partial(SLUG, "my-app-20261125T120000Z.sql.gz") as partial:
        for start in range(0, len(payload), 1 << 20):
            partial.write(payload[start : start + (1 << 20)])
        assert keys(server, bucket) == []  # two parts are up, no object yet
        assert uploads(server, bucket) == [key]
        written = partial.commit()
    assert (written.location, written.size) == (f"s3://{bucket}/{key}", len(payload))
    assert written.sha256 == hashlib.sha256(payload).hexdigest()
    assert uploads(server, bucket) == []
    parts = server.client().head_object(Bucket=bucket, Key=key, PartNumber=1)["PartsCount"]
    assert parts == 3
    record = BackupRecord(
        name="my-app-20261125T120000Z",
        database=SLUG,
        phase=Phase.SUCCEEDED,
        started_at=NOW,
        file="my-app-20261125T120000Z.sql.gz",
        size=written.size,
        sha256=written.sha256,
    )
    assert store.dump_size(record) == len(payload)
    assert b"".join(store.read(record)) == payload
    runner.check_file(store, record)


def test_a_failed_dump_leaves_no_object_and_no_upload(
    store: S3BackupStore, server: S3Server, bucket: str
) -> None:
    def interrupted() -> None:
        with store.partial(SLUG, "my-app-20261125T120000Z.sql.gz") as partial:
            partial.write(os.urandom(PART_SIZE + 1))
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        interrupted()
    assert keys(server, bucket) == []
    assert uploads(server, bucket) == []
    assert store.records(SLUG) == []


def test_records_are_listed_in_time_order_and_loaded_by_name(
    store: S3BackupStore, server: S3Server, bucket: str
) -> None:
    first = stored(store, "my-app-20261125T120000Z", b"one")
    second = stored(store, "my-app-20261126T120000Z", b"two")
    assert store.records(SLUG) == [first, second]
    assert store.load(SLUG, first.name) == first
    assert keys(server, bucket) == [
        "prod/shop/my-app/my-app-20261125T120000Z.json",
        "prod/shop/my-app/my-app-20261125T120000Z.sql.gz",
        "prod/shop/my-app/my-app-20261126T120000Z.json",
        "prod/shop/my-app/my-app-20261126T120000Z.sql.gz",
    ]
    with pytest.raises(BackupNotFound, match="sotadb backup list my-app"):
        store.load(SLUG, "my-app-20200101T000000Z")
    with pytest.raises(BackupNotFound):
        store.load(SLUG, "../other/x")
    assert store.records("other-app") == []


def test_an_unreadable_record_is_reported_not_listed(
    store: S3BackupStore, server: S3Server, bucket: str
) -> None:
    good = stored(store, "my-app-20261125T120000Z", b"one")
    key = "prod/shop/my-app/my-app-20261126T120000Z.json"
    server.client().put_object(Bucket=bucket, Key=key, Body=b"{not json")
    scan = store.scan(SLUG)
    assert scan.records == [good]
    assert scan.unreadable == [f"s3://{bucket}/{key}"]


def test_delete_removes_record_and_dump_and_is_idempotent(
    store: S3BackupStore, server: S3Server, bucket: str
) -> None:
    record = stored(store, "my-app-20261125T120000Z", b"one")
    store.delete(record)
    store.delete(record)
    assert keys(server, bucket) == []


def test_clean_aborts_stale_uploads_and_removes_dumps_without_a_record(
    store: S3BackupStore, server: S3Server, bucket: str
) -> None:
    kept = stored(store, "my-app-20261125T120000Z", b"kept")
    client = server.client()
    client.create_multipart_upload(
        Bucket=bucket, Key="prod/shop/my-app/my-app-20261126T000000Z.sql.gz"
    )
    client.put_object(
        Bucket=bucket, Key="prod/shop/my-app/my-app-20261127T000000Z.sql.gz", Body=b"o"
    )
    client.put_object(
        Bucket=bucket, Key="prod/shop/other-app/other-app-20261127T000000Z.sql.gz", Body=b"o"
    )
    assert store.clean(SLUG) == [
        "my-app-20261126T000000Z.sql.gz (incomplete upload)",
        "my-app-20261127T000000Z.sql.gz",
    ]
    assert uploads(server, bucket) == []
    assert keys(server, bucket) == [
        "prod/shop/my-app/my-app-20261125T120000Z.json",
        "prod/shop/my-app/my-app-20261125T120000Z.sql.gz",
        "prod/shop/other-app/other-app-20261127T000000Z.sql.gz",
    ]
    assert store.records(SLUG) == [kept]
    assert store.clean(SLUG) == []


# ---------------------------------------------------------------- the runner's checks


@pytest.mark.parametrize(("damage", "expected"), [("flip", "sha256"), ("truncate", "truncated")])
def test_a_damaged_object_is_refused_by_the_check(
    store: S3BackupStore, server: S3Server, bucket: str, damage: str, expected: str
) -> None:
    payload = os.urandom(100_000)
    record = stored(store, "my-app-20261125T120000Z", payload)
    key = "prod/shop/my-app/my-app-20261125T120000Z.sql.gz"
    damaged = (
        payload[:50_000] + bytes([payload[50_000] ^ 1]) + payload[50_001:]
        if damage == "flip"
        else payload[:-100]
    )
    server.client().put_object(Bucket=bucket, Key=key, Body=damaged)
    with pytest.raises(RestoreRefused, match=expected):
        runner.check_file(store, record)
    server.client().delete_object(Bucket=bucket, Key=key)
    with pytest.raises(RestoreRefused, match="missing"):
        runner.check_file(store, record)


# ---------------------------------------------------------------- the lock


def test_the_lock_is_exclusive_across_stores_and_released(
    store: S3BackupStore, bucket: str, server: S3Server
) -> None:
    other = S3BackupStore(store.location)
    with store.lock(SLUG):
        with pytest.raises(BackupBusy, match="in progress"), other.lock(SLUG):
            pass
        with other.lock("other-app"):  # another database is not blocked
            pass
    with other.lock(SLUG):
        pass
    assert keys(server, bucket) == []


HOLD_LOCK = """
import sys, time
from sotadb.backup.object_store import S3BackupStore
from sotadb.backup.stores import parse_location
store = S3BackupStore(parse_location(sys.argv[1]), lease_seconds=float(sys.argv[2]))
held = store.lock("my-app")  # kept referenced: a collected generator would release it
held.__enter__()
print("held", flush=True)
time.sleep(600)
"""


def test_a_lock_left_by_a_killed_run_expires_and_is_taken_over(
    env: dict[str, str], bucket: str
) -> None:
    lease = 4.0
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, f"s3://{bucket}", str(lease)],
        env={**os.environ, "PYTHONPATH": str(REPOSITORY / "operator")},
        stdout=subprocess.PIPE,
    ) as holder:
        assert holder.stdout is not None
        held = holder.stdout.readline()
        held_at = time.monotonic()
        holder.kill()
    assert held == b"held\n"
    successor = open_store(f"s3://{bucket}")
    with pytest.raises(BackupBusy, match="expires within"), successor.lock(SLUG):
        pass
    assert time.monotonic() - held_at < lease  # the refusal above was within the lease
    time.sleep(max(0.0, lease + 0.2 - (time.monotonic() - held_at)))
    with successor.lock(SLUG):
        pass


def test_a_held_lock_is_renewed_past_its_lease(env: dict[str, str], bucket: str) -> None:
    location = parse_location(f"s3://{bucket}")
    assert isinstance(location, S3Location)
    holder = S3BackupStore(location, lease_seconds=1.0)
    with holder.lock(SLUG):
        time.sleep(1.6)
        with pytest.raises(BackupBusy), S3BackupStore(location, lease_seconds=1.0).lock(SLUG):
            pass


# ---------------------------------------------------------------- errors, and keys never shown


def assert_no_keys(text: str, server: S3Server) -> None:
    for name, value in server.secrets.items():
        assert value not in text, f"{name} leaked"


def test_a_missing_bucket_names_the_bucket_setting(
    env: dict[str, str], server: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    missing = open_store("s3://no-such-bucket-here/x")
    with pytest.raises(StoreUnavailable) as refused:
        missing.records(SLUG)
    message = str(refused.value)
    assert "no-such-bucket-here" in message
    assert "spec.backups.s3.bucket" in message
    assert refused.value.__cause__ is None
    assert refused.value.__suppress_context__
    assert_no_keys(message + caplog.text, server)


def test_an_unreachable_endpoint_names_the_endpoint_setting(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, server: S3Server
) -> None:
    monkeypatch.setenv("SOTADB_S3_ENDPOINT", "http://127.0.0.1:9")  # discard: nothing listens
    unreachable = open_store("s3://my-backups")
    assert isinstance(unreachable, S3BackupStore)
    unreachable.client.meta.config.retries = {"max_attempts": 1}
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as refused:
        unreachable.records(SLUG)
    assert "spec.backups.s3.endpoint" in str(refused.value)
    assert "http://127.0.0.1:9" in str(refused.value)
    assert time.monotonic() - started < 60
    assert_no_keys(str(refused.value), server)


def test_no_keys_names_the_credentials_secret(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, bucket: str
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreUnavailable, match=r"spec\.backups\.s3\.credentialsSecret"):
        open_store(f"s3://{bucket}").records(SLUG)


def test_refused_keys_name_the_credentials_secret_and_are_not_shown(
    env: dict[str, str], server: S3Server, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = open_store(f"s3://{bucket}")
    with keys_checked(), pytest.raises(StoreUnavailable) as refused:
        store.records(SLUG)
    message = str(refused.value)
    assert "spec.backups.s3.credentialsSecret" in message
    assert "InvalidAccessKeyId" in message
    assert server.secret_access_key not in caplog.text  # not even botocore's debug log
    assert_no_keys(message, server)
