"""Backups that go wrong: refused restores, failed drills, a database that is down, a dump that
is killed, and retention over backdated backups.

One small database serves the module; each test leaves it running and its data as it found it.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from backup_fixtures import (
    Cli,
    backups_for,
    cli_subprocess,
    dump_path,
    fill,
    observe,
    rewrite_dump,
)
from dataplane_helpers import CONNECT_TIMEOUT, Database, provisioned, slug_for, wait_for

from sotadb.backup.catalog import BackupRecord, Phase, TableSummary, Verification, backup_name
from sotadb.backup.errors import RestoreRefused
from sotadb.backup.on_docker import DockerBackups
from sotadb.docker.runtime import DockerRuntime

pytestmark = pytest.mark.dataplane


@pytest.fixture(scope="module")
def db(runtime: DockerRuntime) -> Iterator[Database]:
    with provisioned(runtime, slug_for("bk-fail")) as database:
        fill(database, pgbench_scale=1)
        yield database


@pytest.fixture(scope="module")
def cli(runtime: DockerRuntime) -> Cli:
    return Cli(runtime.store.home)


@pytest.fixture(scope="module")
def backups(runtime: DockerRuntime) -> DockerBackups:
    return backups_for(runtime)


@pytest.fixture(scope="module")
def good(db: Database, backups: DockerBackups) -> BackupRecord:
    record = backups.create(db.slug)
    assert record.good, record.message
    return record


def started_at(container) -> str:
    container.reload()
    return container.attrs["State"]["StartedAt"]


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("damage", ["flip-one-byte", "truncate"])
def test_a_damaged_file_is_refused_before_anything_is_touched(
    damage: str, db: Database, backups: DockerBackups, good: BackupRecord, cli: Cli
):
    path = dump_path(backups, good)
    original = path.read_bytes()
    before = observe(db)
    pooler_started = started_at(db.pooler)
    try:
        if damage == "flip-one-byte":
            middle = len(original) // 2
            path.write_bytes(
                original[:middle] + bytes([original[middle] ^ 0x01]) + original[middle + 1 :]
            )
            expected = "sha256"
        else:
            path.write_bytes(original[: len(original) - 100])
            expected = "truncated"
        code, _, err = cli("backup", "restore", db.slug, good.name)
        assert code == 1
        assert "restore refused" in err
        assert expected in err
        assert "nothing was restored" in err
    finally:
        path.write_bytes(original)
    assert observe(db) == before
    assert started_at(db.pooler) == pooler_started  # PgBouncer was never stopped
    assert db.superuser_sql("SELECT count(*) FROM pg_database WHERE datname LIKE '%sotadb%'") == "0"


# ---------------------------------------------------------------- drills that fail


def test_a_tampered_record_fails_its_drill_and_is_not_the_newest_good(
    db: Database, backups: DockerBackups, good: BackupRecord, cli: Cli
):
    record = backups.create(db.slug)
    assert record.good, record.message
    path = backups.store.root / db.slug / f"{record.name}.json"
    raw = json.loads(path.read_text())
    raw["tables"]["public.pgbench_branches"]["checksum"] = "0" * 32
    path.write_text(json.dumps(raw))

    code, _, err = cli("backup", "verify", db.slug, record.name)
    assert code == 3
    assert "public.pgbench_branches: checksum differs" in err
    verified = backups.store.load(db.slug, record.name)
    assert verified.verification is Verification.FAILED
    assert backups.resolve(db.slug, "latest").name != record.name
    backups.store.delete(verified)


def test_a_backup_recorded_before_sha256_checksums_is_verified_by_row_counts(
    db: Database, backups: DockerBackups, cli: Cli
):
    """A record written before copyhash: md5 checksums of another method and no
    checksumVersion. Its drill compares the tables and their row counts, and says so."""
    record = backups.create(db.slug, drill=False)
    path = backups.store.root / db.slug / f"{record.name}.json"
    raw = json.loads(path.read_text())
    del raw["checksumVersion"]
    for name, table in raw["tables"].items():
        table["checksum"] = hashlib.md5(name.encode()).hexdigest()  # noqa: S324 (a stand-in)
    path.write_text(json.dumps(raw))
    try:
        code, _, err = cli("backup", "verify", db.slug, record.name)
        assert code == 0, err
        verified = backups.store.load(db.slug, record.name)
        assert verified.verification is Verification.PASSED
        assert "row counts equal (checksums not compared" in (verified.message or "")

        raw["tables"]["public.pgbench_branches"]["rows"] += 1
        path.write_text(json.dumps(raw))
        code, _, err = cli("backup", "verify", db.slug, record.name)
        assert code == 3
        assert "public.pgbench_branches: 1 rows restored, 2 recorded" in err
    finally:
        backups.store.delete(backups.store.load(db.slug, record.name))


def test_a_dump_that_restores_different_data_fails_its_drill(
    db: Database, backups: DockerBackups, good: BackupRecord, cli: Cli
):
    record = backups.create(db.slug, drill=False)
    # Sealed again with a matching size and sha256: only the drill can tell.
    rewrite_dump(backups, record, b"\n1\t1\t0\t", b"\n1\t1\t999\t")
    code, _, err = cli("backup", "verify", db.slug, record.name)
    assert code == 3
    assert "public.pgbench_accounts: checksum differs" in err
    listed = {r.name: r for r in backups.store.records(db.slug)}
    assert listed[record.name].verification is Verification.FAILED
    code, out, _ = cli("backup", "list", db.slug)
    newest_good_line = next(line for line in out.splitlines() if line.endswith("newest good"))
    assert not newest_good_line.startswith(record.name)
    code, _, err = cli("backup", "restore", db.slug, record.name)
    assert code == 1
    assert "failed its restore drill" in err
    backups.store.delete(listed[record.name])


# ---------------------------------------------------------------- failed and killed backups


def test_a_restore_whose_data_differs_by_one_value_is_refused_and_changes_nothing(
    db: Database, backups: DockerBackups, good: BackupRecord
):
    """The same row count, one value changed (the dump resealed, not drilled): only the
    per-table checksum of the restored rows can tell. The side database goes, the live one
    stays as it was."""
    record = backups.create(db.slug, drill=False)
    rewrite_dump(backups, record, b"\n1\t1\t0\t", b"\n1\t1\t999\t")
    before = observe(db)
    try:
        with pytest.raises(
            RestoreRefused, match=r"public\.pgbench_accounts: checksum differs \(\d+ rows each\)"
        ):
            backups.restore(db.slug, record.name)
    finally:
        backups.store.delete(backups.store.load(db.slug, record.name))
    assert observe(db) == before
    assert db.superuser_sql("SELECT count(*) FROM pg_database WHERE datname LIKE '%sotadb%'") == "0"


def test_a_backup_of_a_stopped_database_fails_and_keeps_the_good_ones(
    db: Database, backups: DockerBackups, good: BackupRecord, cli: Cli, runtime: DockerRuntime
):
    before = {r.name for r in backups.store.records(db.slug) if r.good}
    db.postgres.stop(timeout=10)
    try:
        code, _, err = cli("backup", "create", db.slug)
        assert code == 1
        assert "is not running" in err
    finally:
        runtime.up(
            {"apiVersion": "sota.io/v1", "kind": "ManagedDatabase", "metadata": {"name": db.slug}}
        )
    records = backups.store.records(db.slug)
    failed = records[-1]
    assert failed.phase is Phase.FAILED
    assert "is not running" in (failed.message or "")
    assert failed.file is None
    assert before <= {r.name for r in records if r.good}
    for name in before:
        record = backups.store.load(db.slug, name)
        assert dump_path(backups, record).stat().st_size == record.size
    backups.store.delete(failed)


def test_a_killed_dump_leaves_nothing_listed_and_is_cleaned_up(
    db: Database, backups: DockerBackups, good: BackupRecord, cli: Cli
):
    directory = backups.store.root / db.slug
    listed_before = {r.name for r in backups.store.records(db.slug)}
    # Hold a lock that pg_dump waits for, so the dump is surely in flight when it is killed.
    with psycopg.connect(db.direct_url(), connect_timeout=CONNECT_TIMEOUT) as blocker:
        blocker.execute("LOCK TABLE pgbench_tellers IN ACCESS EXCLUSIVE MODE")
        process = cli_subprocess(backups.store.root.parent, "create", db.slug)
        try:
            wait_for(
                lambda: (
                    list(directory.glob(".*.partial"))
                    and db.superuser_sql(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                        "'sotadb-backup' AND wait_event_type = 'Lock'"
                    )
                    != "0"
                ),
                timeout=60,
                what="the dump to wait on the lock",
            )
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
        blocker.rollback()
    assert {r.name for r in backups.store.records(db.slug)} == listed_before
    assert not [
        p
        for p in directory.iterdir()
        if p.name.endswith(".sql.gz") and p.name.removesuffix(".sql.gz") not in listed_before
    ]

    # The dump left in the container holds its snapshot; the next run ends it and cleans up.
    code, _, err = cli("backup", "create", db.slug, "--no-drill")
    assert code == 0, err
    assert not list(directory.glob(".*.partial"))

    # Ending a process is asynchronous, and so is its server session's exit: wait, bounded.
    def nothing_left() -> bool:
        processes = db.postgres.exec_run(
            ["bash", "-c", "ps -eo args | grep -c '^pg_dump' || true"], user="postgres"
        ).output.decode()
        sessions = db.superuser_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sotadb-backup'"
        )
        return processes.strip() == "0" and sessions == "0"

    wait_for(nothing_left, timeout=15, what="the leftover dump and its session to end")


# ---------------------------------------------------------------- retention


def fake_backup(
    backups: DockerBackups, slug: str, days_ago: float, now: datetime, **fields
) -> BackupRecord:
    started = (now - timedelta(days=days_ago)).replace(microsecond=0)
    name = backup_name(slug, started)
    record = BackupRecord(
        name=name,
        database=slug,
        started_at=started,
        **{"phase": Phase.SUCCEEDED, "verification": Verification.PASSED, **fields},
    )
    if record.phase is Phase.SUCCEEDED:
        with backups.store.partial(slug, f"{name}.sql.gz") as partial:
            partial.write(b"backdated")
            written = partial.commit()
        record = BackupRecord(
            **{
                **record.__dict__,
                "file": written.path.name,
                "size": written.size,
                "sha256": written.sha256,
                "tables": {"public.t": TableSummary(1, "x")},
            }
        )
    backups.store.save(record)
    return record


def test_retention_deletes_exactly_the_expired_and_never_the_newest_good(
    db: Database, runtime: DockerRuntime, tmp_path: Path
):
    # A state directory of its own holding only this database, so the daemon's pass sees it alone.
    home = tmp_path / "home"
    (home / "databases").mkdir(parents=True)
    (home / "key").write_bytes((runtime.store.home / "key").read_bytes())
    (home / "databases" / db.slug).mkdir()
    (home / "databases" / db.slug / "state.json").write_bytes(
        (runtime.store.home / "databases" / db.slug / "state.json").read_bytes()
    )
    from sotadb.docker.state import StateStore

    backups = DockerBackups(DockerRuntime(client=runtime.client, store=StateStore(home)))
    slug = db.slug
    now = datetime.now(UTC).replace(microsecond=0)
    only_good = fake_backup(backups, slug, 30, now)  # the newest good: older than 7 days
    old_failed = fake_backup(backups, slug, 20, now, phase=Phase.FAILED, verification=None)
    older_good = fake_backup(backups, slug, 40, now)
    failed_drill = fake_backup(backups, slug, 9, now, verification=Verification.FAILED)
    recent_failed = fake_backup(backups, slug, 2, now, phase=Phase.FAILED, verification=None)

    cli = Cli(home)
    code, out, err = cli("backup", "prune", slug, "--now", now.isoformat())
    assert code == 0, err
    remaining = {r.name for r in backups.store.records(slug)}
    assert remaining == {only_good.name, recent_failed.name}
    for gone in (old_failed, older_good, failed_drill):
        assert gone.name in out
        assert not (backups.store.root / slug / f"{gone.name}.sql.gz").exists()

    # The daemon's pass: a backup is due (none since the slot), it is taken and drilled; the
    # backdated good one then stops being the newest good and retention removes it.
    code, out, err = cli("daemon", "--once")
    assert code == 0, err
    records = backups.store.records(slug)
    assert records[-1].good, records[-1].message
    assert {r.name for r in records} == {recent_failed.name, records[-1].name}
    assert f"backup {records[-1].name} Succeeded, drill Passed" in out
    assert "next due" in out
