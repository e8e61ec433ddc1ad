"""Backups recorded before the checksums were the sha256 of the dump's own rows (pure).

Their checksums (an md5 of a sum of row hashes, computed in SQL) cannot be recomputed from a
restored database, so a drill or restore of such a backup compares the tables and their row
counts only, and its verification message says so. Which kind a record is: its
`checksumVersion`, or for a record written before that field existed, whether its checksums
carry the `sha256:` prefix.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sotadb.backup import in_place, runner
from sotadb.backup.catalog import (
    CHECKSUM_VERSION,
    LEGACY_CHECKSUM_VERSION,
    BackupRecord,
    Phase,
    TableSummary,
)
from sotadb.backup.executors import Captured

SHA = "sha256:" + "ab" * 32
MD5 = "0f" * 16


def record(tables: dict[str, TableSummary], version: int | None) -> BackupRecord:
    return BackupRecord(
        name="my-app-20261125T120000Z",
        database="my-app",
        phase=Phase.SUCCEEDED,
        started_at=datetime(2026, 11, 25, 12, tzinfo=UTC),
        tables=tables,
        checksum_version=version,
    )


def replay_output(tables: dict[str, tuple[int, str]]) -> Captured:
    """What a replay prints: one copyhash result line per table read back."""
    lines = [
        f'{{"kind": "table", "name": "{name}", "rows": {rows}, "checksum": "{checksum}"}}'
        for name, (rows, checksum) in tables.items()
    ]
    return Captured(status=0, stdout="\n".join(lines) + "\n")


LEGACY = {"public.a": TableSummary(10, MD5), "public.b": TableSummary(0, MD5)}
CURRENT = {"public.a": TableSummary(10, SHA), "public.b": TableSummary(0, SHA)}


@pytest.mark.parametrize(
    ("tables", "version", "legacy"),
    [
        pytest.param(LEGACY, None, True, id="md5-without-a-version"),
        pytest.param(CURRENT, None, False, id="sha256-without-a-version"),
        pytest.param(LEGACY, LEGACY_CHECKSUM_VERSION, True, id="version-1"),
        pytest.param(CURRENT, CHECKSUM_VERSION, False, id="version-2"),
        # a tampered checksum in a current record does not turn the comparison off
        pytest.param({**CURRENT, "public.b": TableSummary(0, MD5)}, None, False, id="one-md5"),
        pytest.param({}, None, False, id="no-tables"),
    ],
)
def test_which_records_have_legacy_checksums(tables, version, legacy):
    found = record(tables, version)
    assert found.legacy_checksums is legacy
    assert BackupRecord.from_json(found.to_json()).legacy_checksums is legacy


def test_a_legacy_record_is_compared_by_tables_and_row_counts_only():
    legacy = record(LEGACY, None)
    read_back = {"public.a": (10, SHA), "public.b": (0, SHA)}
    assert runner.compare(legacy, replay_output(read_back)) == []
    assert runner.equal(legacy) == (
        "2 tables, 10 rows, row counts equal (checksums not compared: the backup was "
        "recorded before sha256 checksums)"
    )
    assert runner.compare(legacy, replay_output({**read_back, "public.a": (9, SHA)})) == [
        "public.a: 9 rows restored, 10 recorded"
    ]
    assert runner.compare(legacy, replay_output({"public.a": (10, SHA)})) == [
        "public.b: in the backup's record but missing after restore"
    ]


def test_a_current_record_is_compared_by_checksums_too():
    current = record(CURRENT, CHECKSUM_VERSION)
    assert (
        runner.compare(current, replay_output({"public.a": (10, SHA), "public.b": (0, SHA)})) == []
    )
    assert runner.equal(current) == "2 tables, 10 rows, checksums equal"
    differs = replay_output({"public.a": (10, "sha256:" + "cd" * 32), "public.b": (0, SHA)})
    assert runner.compare(current, differs) == ["public.a: checksum differs (10 rows each)"]


def test_the_in_place_check_compares_checksums_unless_told_rows_only():
    assert "(true AND e.checksum <> o.checksum)" in in_place.check_sql(CURRENT)
    assert "(false AND e.checksum <> o.checksum)" in in_place.check_sql(LEGACY, rows_only=True)
