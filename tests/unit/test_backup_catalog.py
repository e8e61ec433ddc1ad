"""Backup records, names, JSON, and retention (pure). Retention's rules are proved as properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sotadb.backup.catalog import (
    BackupRecord,
    Compression,
    Phase,
    TableSummary,
    Verification,
    backup_name,
    newest_good,
    protected,
    retention,
    slug_of,
    unique_name,
)
from sotadb.backup.errors import RecordCorrupted

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
SHA = "ab" * 32


def record(
    days_ago: float,
    phase: Phase = Phase.SUCCEEDED,
    verification: Verification | None = Verification.PASSED,
    *,
    slug: str = "my-app",
) -> BackupRecord:
    started = NOW - timedelta(days=days_ago)
    return BackupRecord(
        name=backup_name(slug, started),
        database=slug,
        phase=phase,
        started_at=started.replace(microsecond=0),
        completed_at=started.replace(microsecond=0) + timedelta(seconds=30)
        if phase is Phase.SUCCEEDED
        else None,
        file=f"{backup_name(slug, started)}.sql.gz" if phase is Phase.SUCCEEDED else None,
        size=1234 if phase is Phase.SUCCEEDED else None,
        sha256=SHA if phase is Phase.SUCCEEDED else None,
        verification=verification if phase is Phase.SUCCEEDED else None,
    )


# ---------------------------------------------------------------- names


def test_name_is_slug_and_utc_stamp():
    moment = datetime(2026, 11, 25, 3, 4, 5, tzinfo=UTC)
    assert backup_name("my-app", moment) == "my-app-20261125T030405Z"
    assert slug_of("my-app-20261125T030405Z") == "my-app"
    assert slug_of("my-app-latest") is None


def test_name_converts_other_time_zones_to_utc():
    moment = datetime(2026, 11, 25, 5, 4, 5, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Berlin")
    )
    assert backup_name("a", moment) == "a-20261125T050405Z"


def test_names_sort_in_time_order():
    moments = [NOW - timedelta(seconds=s) for s in (0, 59, 3600, 86400 * 40)]
    names = [backup_name("db", m) for m in moments]
    assert sorted(names) == list(reversed(names))


def test_unique_name_takes_the_next_free_second():
    taken = {backup_name("db", NOW), backup_name("db", NOW + timedelta(seconds=1))}
    assert unique_name("db", NOW, taken) == backup_name("db", NOW + timedelta(seconds=2))
    assert unique_name("db", NOW, set()) == backup_name("db", NOW)


# ---------------------------------------------------------------- JSON


def test_json_round_trip_keeps_every_field():
    original = BackupRecord(
        name="my-app-20261125T120000Z",
        database="my-app",
        phase=Phase.SUCCEEDED,
        started_at=NOW,
        completed_at=NOW + timedelta(seconds=3),
        file="my-app-20261125T120000Z.sql.gz",
        location="/var/lib/sotadb/backups/my-app/my-app-20261125T120000Z.sql.gz",
        size=42,
        sha256=SHA,
        format=Compression.GZIP.record_format,
        compressor="pigz -1",
        database_size=8_000_000,
        server_version="17.12",
        tables={
            '"app-data"."every-type"': TableSummary(rows=3, checksum="c" * 32),
            "public.t": TableSummary(rows=0, checksum="d" * 32),
        },
        verification=Verification.PASSED,
        verified_at=NOW + timedelta(seconds=9),
        message="restore drill: ok",
        checksum_version=1,
    )
    data = original.to_json()
    assert data["startedAt"] == "2026-11-25T12:00:00Z"
    assert data["phase"] == "Succeeded"
    assert data["format"] == "plain+gzip"
    assert BackupRecord.from_json(data) == original


def test_json_leaves_out_unset_fields():
    failed = record(0, Phase.FAILED)
    assert set(failed.to_json()) == {
        "version",
        "name",
        "database",
        "phase",
        "startedAt",
        "format",
        "tables",
    }


@pytest.mark.parametrize(
    ("change", "why"),
    [
        pytest.param({"version": 2}, "version", id="version"),
        pytest.param({"phase": "Done"}, "phase", id="phase"),
        pytest.param({"startedAt": "yesterday"}, "time", id="time"),
        pytest.param({"sha256": "xyz"}, "sha256", id="sha256"),
        pytest.param({"file": "../../etc/passwd"}, "file", id="path-in-file"),
        pytest.param({"size": "12"}, "size", id="size-type"),
        pytest.param({"format": "custom"}, "format", id="format"),
        pytest.param({"tables": {"t": {"rows": 1}}}, "tables", id="table-without-checksum"),
        pytest.param({"checksumVersion": 3}, "checksumVersion", id="unknown-checksum-version"),
    ],
)
def test_json_refuses_what_it_cannot_trust(change, why):
    data = {**record(0).to_json(), **change}
    with pytest.raises(RecordCorrupted):
        BackupRecord.from_json(data)


def test_compression_formats_and_suffixes():
    assert Compression.GZIP.suffix == ".sql.gz"
    assert Compression.ZSTD.suffix == ".sql.zst"
    assert Compression.of_format("plain+zstd") is Compression.ZSTD


# ---------------------------------------------------------------- good and protected


def test_good_means_succeeded_and_drill_passed():
    assert record(0).good
    assert not record(0, verification=Verification.FAILED).good
    assert not record(0, verification=None).good
    assert not record(0, Phase.FAILED).good


def test_newest_good_skips_a_newer_backup_that_failed_its_drill():
    older = record(2)
    newer_failed_drill = record(1, verification=Verification.FAILED)
    assert newest_good([older, newer_failed_drill]) is older


def test_without_any_good_backup_the_newest_undrilled_is_protected():
    undrilled = record(20, verification=None)
    failed_drill = record(10, verification=Verification.FAILED)
    assert protected([undrilled, failed_drill]) is undrilled


# ---------------------------------------------------------------- retention: examples

TABLE = [
    pytest.param([record(0.5), record(3), record(8), record(30)], 7, {8, 30}, id="expired-go"),
    pytest.param([record(30), record(40)], 7, {40}, id="newest-good-stays-although-old"),
    pytest.param(
        [record(30), record(2, verification=Verification.FAILED)],
        7,
        set(),
        id="old-good-stays-when-newer-failed-drill",
    ),
    pytest.param(
        [record(1), record(9, Phase.FAILED), record(2, Phase.FAILED)],
        7,
        {9},
        id="failed-past-retention-go",
    ),
    pytest.param([record(6.99), record(7.01)], 7, {7.01}, id="boundary"),
    pytest.param([record(10, Phase.RUNNING)], 7, set(), id="running-is-never-deleted"),
    pytest.param([], 7, set(), id="nothing"),
]


@pytest.mark.parametrize(("records", "days", "deleted_days_ago"), TABLE)
def test_retention_examples(records, days, deleted_days_ago):
    deleted = retention(records, NOW, days)
    ages = {round((NOW - r.started_at) / timedelta(days=1), 2) for r in deleted}
    assert ages == {round(d, 2) for d in deleted_days_ago}


def test_retention_refuses_zero_days():
    with pytest.raises(ValueError, match="at least one day"):
        retention([], NOW, 0)


# ---------------------------------------------------------------- retention: properties

records_strategy = st.lists(
    st.builds(
        record,
        days_ago=st.floats(min_value=0, max_value=60, allow_nan=False),
        phase=st.sampled_from(list(Phase)),
        verification=st.sampled_from([Verification.PASSED, Verification.FAILED, None]),
    ),
    max_size=25,
)
days_strategy = st.integers(min_value=1, max_value=30)


@settings(max_examples=400, deadline=None)
@given(records_strategy, days_strategy)
def test_retention_never_deletes_the_newest_good(records, days):
    keep = newest_good(records)
    deleted = retention(records, NOW, days)
    assert keep is None or all(r is not keep for r in deleted)


@settings(max_examples=400, deadline=None)
@given(records_strategy, days_strategy)
def test_retention_keeps_everything_younger_than_the_retention(records, days):
    cutoff = NOW - timedelta(days=days)
    assert all(r.started_at < cutoff for r in retention(records, NOW, days))


@settings(max_examples=400, deadline=None)
@given(records_strategy, days_strategy)
def test_retention_deletes_exactly_the_expired_ones_but_the_protected(records, days):
    cutoff = NOW - timedelta(days=days)
    keep = protected(records)
    expected = {
        id(r)
        for r in records
        if r.started_at < cutoff and r is not keep and r.phase not in (Phase.PENDING, Phase.RUNNING)
    }
    assert {id(r) for r in retention(records, NOW, days)} == expected


@settings(max_examples=300, deadline=None)
@given(records_strategy, days_strategy)
def test_retention_is_idempotent(records, days):
    deleted = {id(r) for r in retention(records, NOW, days)}
    remaining = [r for r in records if id(r) not in deleted]
    assert retention(remaining, NOW, days) == []


@settings(max_examples=300, deadline=None)
@given(records_strategy, days_strategy)
def test_a_good_backup_survives_when_one_exists(records, days):
    deleted = {id(r) for r in retention(records, NOW, days)}
    remaining = [r for r in records if id(r) not in deleted]
    if any(r.good for r in records):
        assert any(r.good for r in remaining)
