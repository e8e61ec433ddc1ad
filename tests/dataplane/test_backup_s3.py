"""Backups of a real database into S3 (moto's S3 server on 127.0.0.1, spoken to over HTTP by
boto3 with keys from the environment, as a Job would): the Docker flow with an S3 store —
dump, drill, list, restore with equal checksums; damaged objects refused before anything is
touched; a dump killed mid-upload leaving nothing listed; retention over backdated backups;
and the S3 keys in no output, record, message or log.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from backup_fixtures import REPOSITORY, contents, direct_sql, fill, observe
from dataplane_helpers import Database, provisioned, slug_for, wait_for
from s3server import S3Server, s3_server

from sotadb.backup import runner
from sotadb.backup.catalog import BackupRecord, Phase, TableSummary, Verification, backup_name
from sotadb.backup.errors import BackupBusy, RestoreRefused
from sotadb.backup.object_store import S3BackupStore
from sotadb.backup.on_docker import DockerBackups
from sotadb.backup.stores import open_store
from sotadb.docker.runtime import DockerRuntime

pytestmark = pytest.mark.dataplane
PREFIX = "sotadb/backups"
SEEN: list[str] = []  # every message, record and progress line the tests saw


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with s3_server() as running:
        patch = pytest.MonkeyPatch()
        for key, value in running.env.items():
            patch.setenv(key, value)
        try:
            yield running
        finally:
            patch.undo()


@pytest.fixture(scope="module")
def bucket(server: S3Server) -> str:
    return server.create_bucket("sotadb-dataplane")


@pytest.fixture(scope="module")
def backups(runtime: DockerRuntime, server: S3Server, bucket: str) -> DockerBackups:
    store = open_store(f"s3://{bucket}/{PREFIX}")
    assert isinstance(store, S3BackupStore)
    return DockerBackups(runtime, store=store)


@pytest.fixture(scope="module")
def db(runtime: DockerRuntime) -> Iterator[Database]:
    with provisioned(runtime, slug_for("bk-s3")) as database:
        fill(database, pgbench_scale=1)
        yield database


@pytest.fixture(scope="module")
def good(db: Database, backups: DockerBackups) -> BackupRecord:
    record = backups.create(db.slug, progress=SEEN.append)
    SEEN.append(json.dumps(record.to_json()))
    assert record.good, record.message
    return record


def object_keys(server: S3Server, bucket: str, under: str = "") -> list[str]:
    listed = server.client().list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/{under}")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def dump_key(record: BackupRecord) -> str:
    return f"{PREFIX}/{record.database}/{record.file}"


def pooler_started_at(db: Database) -> str:
    db.pooler.reload()
    return str(db.pooler.attrs["State"]["StartedAt"])


# ---------------------------------------------------------------- the round trip


def test_a_backup_goes_to_s3_is_drilled_listed_and_restored_exactly(
    db: Database, backups: DockerBackups, good: BackupRecord, server: S3Server, bucket: str
) -> None:
    assert good.location == f"s3://{bucket}/{dump_key(good)}"
    assert object_keys(server, bucket, db.slug) == sorted(
        [dump_key(good), f"{PREFIX}/{db.slug}/{good.name}.json"]
    )
    head = server.client().head_object(Bucket=bucket, Key=dump_key(good))
    assert head["ContentLength"] == good.size
    # (as JSON: a record keeps times to the second)
    assert [r.to_json() for r in backups.store.records(db.slug)] == [good.to_json()]
    assert observe(db) == dict(good.tables)  # the record holds what the database held

    held = contents(db)
    direct_sql(db, "DELETE FROM pgbench_accounts WHERE aid % 7 = 0; DROP TABLE pgbench_history;")
    assert observe(db) != dict(good.tables)
    backups.restore(db.slug, good.name, progress=SEEN.append)
    assert contents(db) == held  # the rows, in whatever order the parallel restore wrote them
    assert {k: v.rows for k, v in observe(db).items()} == {
        k: v.rows for k, v in good.tables.items()
    }
    assert db.superuser_sql("SELECT count(*) FROM pg_database WHERE datname LIKE '%sotadb%'") == "0"


@pytest.mark.parametrize(("damage", "expected"), [("flip", "sha256"), ("truncate", "truncated")])
def test_a_damaged_object_is_refused_before_anything_is_touched(
    damage: str,
    expected: str,
    db: Database,
    backups: DockerBackups,
    good: BackupRecord,
    server: S3Server,
    bucket: str,
) -> None:
    client = server.client()
    original = client.get_object(Bucket=bucket, Key=dump_key(good))["Body"].read()
    middle = len(original) // 2
    damaged = (
        original[:middle] + bytes([original[middle] ^ 0x01]) + original[middle + 1 :]
        if damage == "flip"
        else original[:-100]
    )
    before, pooler = observe(db), pooler_started_at(db)
    client.put_object(Bucket=bucket, Key=dump_key(good), Body=damaged)
    try:
        with pytest.raises(RestoreRefused) as refused:
            backups.restore(db.slug, good.name, progress=SEEN.append)
        SEEN.append(str(refused.value))
        assert expected in str(refused.value)
        assert "nothing was restored" in str(refused.value)
    finally:
        client.put_object(Bucket=bucket, Key=dump_key(good), Body=original)
    assert observe(db) == before
    assert pooler_started_at(db) == pooler  # PgBouncer was never stopped
    assert db.superuser_sql("SELECT count(*) FROM pg_database WHERE datname LIKE '%sotadb%'") == "0"


def test_a_dump_can_take_the_name_it_is_given(
    db: Database, backups: DockerBackups, good: BackupRecord, server: S3Server, bucket: str
) -> None:
    """A Kubernetes Job names the backup after its DatabaseBackup."""
    with backups.store.lock(db.slug):
        record = runner.dump(backups.executor(db.slug), backups.store, db.slug, name="nightly-1")
    assert (record.name, record.file) == ("nightly-1", "nightly-1.sql.gz")
    assert record.phase is Phase.SUCCEEDED, record.message
    assert record.location == f"s3://{bucket}/{PREFIX}/{db.slug}/nightly-1.sql.gz"
    runner.check_file(backups.store, record)
    assert backups.store.load(db.slug, "nightly-1").to_json() == record.to_json()
    backups.store.delete(record)
    assert [r.name for r in backups.store.records(db.slug)] == [good.name]


# ---------------------------------------------------------------- a dump killed mid-upload

DUMP_IN_CHILD = """
import sys
from pathlib import Path
from sotadb.backup.object_store import S3BackupStore
from sotadb.backup.on_docker import DockerBackups
from sotadb.backup.stores import parse_location
from sotadb.docker.runtime import DockerRuntime
from sotadb.docker.state import StateStore
home, location, slug = sys.argv[1:]
store = S3BackupStore(parse_location(location), lease_seconds=3.0)
DockerBackups(DockerRuntime(store=StateStore(Path(home))), store=store).create(slug, drill=False)
"""


def test_a_dump_killed_mid_upload_leaves_no_listed_backup_and_no_object(
    db: Database,
    backups: DockerBackups,
    good: BackupRecord,
    runtime: DockerRuntime,
    server: S3Server,
    bucket: str,
) -> None:
    # Incompressible rows, so that the dump runs to several 8 MiB parts.
    direct_sql(
        db,
        "CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) AS x "
        "FROM generate_series(1, 600000) g;",
        timeout=120,
    )
    client = server.client()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            DUMP_IN_CHILD,
            str(runtime.store.home),
            f"s3://{bucket}/{PREFIX}",
            db.slug,
        ],
        env={**os.environ, "PYTHONPATH": str(REPOSITORY / "operator")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def a_part_is_up() -> bool:
            for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
                parts = client.list_parts(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                if parts.get("Parts"):
                    return True
            assert child.poll() is None, "the dump ended before it could be killed"
            return False

        wait_for(a_part_is_up, timeout=60, what="the first uploaded part")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert child.stderr is not None
        SEEN.append(child.stderr.read().decode(errors="replace"))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        if child.stderr is not None:
            child.stderr.close()
    killed_at = time.monotonic()

    # Nothing listed, no new object (but the dead run's lease): an incomplete upload is none.
    assert [r.name for r in backups.store.records(db.slug)] == [good.name]
    assert object_keys(server, bucket, db.slug) == sorted(
        [dump_key(good), f"{PREFIX}/{db.slug}/{good.name}.json", f"{PREFIX}/{db.slug}/.lock"]
    )
    assert len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1

    # The killed run's lease still holds the lock; once it expires, the next run cleans up.
    with pytest.raises(BackupBusy):
        backups.create(db.slug, drill=False)
    time.sleep(max(0.0, 3.2 - (time.monotonic() - killed_at)))
    direct_sql(db, "DROP TABLE noise;")
    progress: list[str] = []
    record = backups.create(db.slug, drill=False, progress=progress.append)
    SEEN.extend(progress)
    assert record.phase is Phase.SUCCEEDED, record.message
    assert any("incomplete upload" in line for line in progress), progress
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert [r.name for r in backups.store.records(db.slug)] == [good.name, record.name]
    backups.store.delete(record)
    assert object_keys(server, bucket, db.slug) == sorted(
        [dump_key(good), f"{PREFIX}/{db.slug}/{good.name}.json"]
    )


# ---------------------------------------------------------------- retention


def backdated(
    backups: DockerBackups, slug: str, days_ago: float, now: datetime, **fields: object
) -> BackupRecord:
    started = (now - timedelta(days=days_ago)).replace(microsecond=0)
    name = backup_name(slug, started)
    base: dict[str, object] = {"phase": Phase.SUCCEEDED, "verification": Verification.PASSED}
    record = BackupRecord(name=name, database=slug, started_at=started, **{**base, **fields})  # type: ignore[arg-type]
    if record.phase is Phase.SUCCEEDED:
        with backups.store.partial(slug, f"{name}.sql.gz") as partial:
            partial.write(b"backdated")
            written = partial.commit()
        record = BackupRecord(
            **{
                **record.__dict__,
                "file": f"{name}.sql.gz",
                "location": written.location,
                "size": written.size,
                "sha256": written.sha256,
                "tables": {"public.t": TableSummary(1, "x")},
            }
        )
    backups.store.save(record)
    return record


def test_retention_deletes_exactly_the_expired_objects_and_keeps_the_newest_good(
    backups: DockerBackups, server: S3Server, bucket: str
) -> None:
    slug = slug_for("bk-s3-ret")
    now = datetime.now(UTC).replace(microsecond=0)
    oldest = backdated(backups, slug, 40, now)
    newest_good = backdated(backups, slug, 30, now)
    drill_failed = backdated(backups, slug, 20, now, verification=Verification.FAILED)
    failed = backdated(backups, slug, 10, now, phase=Phase.FAILED, verification=None)
    young = backdated(backups, slug, 2, now, verification=Verification.FAILED)
    deleted = backups.prune(slug, days=7, now=now)
    assert [r.name for r in deleted] == [oldest.name, drill_failed.name, failed.name]
    kept = [newest_good, young]
    assert backups.store.records(slug) == kept
    assert object_keys(server, bucket, slug) == sorted(
        key for r in kept for key in (f"{PREFIX}/{slug}/{r.name}.json", dump_key(r))
    )
    assert backups.prune(slug, days=7, now=now) == []  # applying it again deletes nothing


# ---------------------------------------------------------------- keys never shown


def test_the_s3_keys_appear_in_no_output_record_or_log(
    backups: DockerBackups,
    good: BackupRecord,
    server: S3Server,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    db: Database,
) -> None:
    caplog.set_level(logging.INFO)
    progress: list[str] = []
    verified = backups.verify(db.slug, good.name, progress=progress.append)
    assert verified.good, verified.message
    captured = capfd.readouterr()
    records = [json.dumps(r.to_json()) for r in backups.store.records(db.slug)]
    everything = "\n".join([*SEEN, *progress, *records, caplog.text, captured.out, captured.err])
    assert SEEN, "the earlier tests recorded what they saw"
    for name, value in server.secrets.items():
        assert value not in everything, f"{name} appeared"
