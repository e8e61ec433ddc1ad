"""The backup directory: atomic dump files, records, the lock, and cleaning up after crashes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from sotadb.backup.catalog import BackupRecord, Phase
from sotadb.backup.errors import BackupBusy, BackupNotFound
from sotadb.backup.store import BackupStore

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def stored(store: BackupStore, name: str, payload: bytes = b"dump") -> BackupRecord:
    with store.partial("db", f"{name}.sql.gz") as partial:
        partial.write(payload)
        written = partial.commit()
    record = BackupRecord(
        name=name,
        database="db",
        phase=Phase.SUCCEEDED,
        started_at=NOW,
        file=written.path.name,
        size=written.size,
        sha256=written.sha256,
    )
    store.save(record)
    return record


def test_partial_file_is_hashed_and_renamed_on_commit(tmp_path):
    store = BackupStore(tmp_path)
    record = stored(store, "db-20261125T120000Z", b"x" * 100_000)
    path = tmp_path / "db" / "db-20261125T120000Z.sql.gz"
    assert path.read_bytes() == b"x" * 100_000
    assert record.sha256 == hashlib.sha256(b"x" * 100_000).hexdigest()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not list((tmp_path / "db").glob(".*.partial"))
    assert store.records("db") == [record]
    assert store.load("db", record.name) == record


def test_an_aborted_dump_leaves_nothing_listed(tmp_path):
    store = BackupStore(tmp_path)

    def interrupted_dump() -> None:
        with store.partial("db", "db-20261125T120000Z.sql.gz") as partial:
            partial.write(b"half")
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        interrupted_dump()
    assert list((tmp_path / "db").iterdir()) == []
    assert store.records("db") == []


def test_clean_removes_partials_and_dumps_without_record(tmp_path):
    store = BackupStore(tmp_path)
    kept = stored(store, "db-20261125T120000Z")
    directory = tmp_path / "db"
    (directory / ".db-20261125T130000Z.sql.gz.partial").write_bytes(b"half")
    (directory / "db-20261125T140000Z.sql.gz").write_bytes(b"no record")
    assert store.clean("db") == [
        ".db-20261125T130000Z.sql.gz.partial",
        "db-20261125T140000Z.sql.gz",
    ]
    assert store.records("db") == [kept]
    assert (directory / "db-20261125T120000Z.sql.gz").exists()


def test_delete_removes_record_then_file(tmp_path):
    store = BackupStore(tmp_path)
    record = stored(store, "db-20261125T120000Z")
    store.delete(record)
    assert store.records("db") == []
    assert [p.name for p in (tmp_path / "db").iterdir() if not p.name.startswith(".")] == []


def test_unreadable_records_are_reported_not_listed(tmp_path):
    store = BackupStore(tmp_path)
    stored(store, "db-20261125T120000Z")
    (tmp_path / "db" / "db-20261125T130000Z.json").write_text("{not json")
    scan = store.scan("db")
    assert [r.name for r in scan.records] == ["db-20261125T120000Z"]
    assert [p.name for p in scan.unreadable] == ["db-20261125T130000Z.json"]


def test_the_lock_is_exclusive(tmp_path):
    store = BackupStore(tmp_path)
    with store.lock("db"), pytest.raises(BackupBusy, match="in progress"), store.lock("db"):
        pass
    with store.lock("db"):
        pass


def test_unknown_or_sneaky_names_are_not_found(tmp_path):
    store = BackupStore(tmp_path)
    for name in ("nope", "../db/x", ".lock"):
        with pytest.raises(BackupNotFound):
            store.load("db", name)
