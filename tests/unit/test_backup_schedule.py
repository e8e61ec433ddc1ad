"""The daily slot: due once a day after the database's spread minute, catching up after
downtime, retrying a failed attempt hourly (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sotadb.backup.catalog import BackupRecord, Phase, Verification, backup_name
from sotadb.backup.schedule import RETRY_AFTER, next_due, slot_in_force
from sotadb.spec import parse_database

MINUTE = 3 * 60 + 15  # 03:15 UTC
DAY = datetime(2026, 11, 25, tzinfo=UTC)
SLOT = DAY + timedelta(minutes=MINUTE)


def at(hours: float) -> datetime:
    return DAY + timedelta(hours=hours)


def attempt(started: datetime, phase=Phase.SUCCEEDED, verification=Verification.PASSED):
    return BackupRecord(
        name=backup_name("db", started),
        database="db",
        phase=phase,
        started_at=started,
        verification=verification if phase is Phase.SUCCEEDED else None,
    )


def test_slot_in_force_is_todays_once_passed_else_yesterdays():
    assert slot_in_force(at(4), MINUTE) == SLOT
    assert slot_in_force(at(3), MINUTE) == SLOT - timedelta(days=1)
    assert slot_in_force(SLOT, MINUTE) == SLOT


@pytest.mark.parametrize(
    ("now", "records", "due"),
    [
        pytest.param(at(4), [], SLOT, id="never-backed-up:-due-now"),
        pytest.param(
            at(4), [attempt(SLOT + timedelta(minutes=1))], SLOT + timedelta(days=1), id="done-today"
        ),
        pytest.param(at(4), [attempt(SLOT - timedelta(days=1))], SLOT, id="yesterdays-only"),
        pytest.param(
            at(2),
            [attempt(SLOT - timedelta(days=1, minutes=-5))],
            SLOT,
            id="before-todays-slot-yesterdays-done",
        ),
        pytest.param(at(2), [], SLOT - timedelta(days=1), id="catch-up-missed-yesterday"),
        pytest.param(
            at(4),
            [attempt(SLOT + timedelta(minutes=2), Phase.FAILED)],
            SLOT + timedelta(minutes=2) + RETRY_AFTER,
            id="failed:-retry-in-an-hour",
        ),
        pytest.param(
            at(4),
            [attempt(SLOT + timedelta(minutes=2), verification=Verification.FAILED)],
            SLOT + timedelta(minutes=2) + RETRY_AFTER,
            id="drill-failed:-retry",
        ),
        pytest.param(
            at(4),
            [attempt(SLOT + timedelta(minutes=2), verification=None)],
            SLOT + timedelta(days=1),
            id="not-drilled-counts",
        ),
        pytest.param(
            at(4),
            [attempt(SLOT - timedelta(minutes=30))],
            SLOT,
            id="manual-backup-before-the-slot-does-not-count",
        ),
    ],
)
def test_next_due(now, records, due):
    assert next_due(now, MINUTE, records) == due


@settings(max_examples=300, deadline=None)
@given(
    minute=st.integers(min_value=0, max_value=24 * 60 - 1),
    offset=st.integers(min_value=0, max_value=3 * 24 * 3600),
)
def test_a_successful_backup_when_due_moves_the_next_one_a_day_on(minute, offset):
    now = DAY + timedelta(seconds=offset)
    due = next_due(now, minute, [])
    assert due <= now
    assert now - due < timedelta(days=1)
    later = next_due(now, minute, [attempt(now)])
    assert later > now
    assert later - due == timedelta(days=1)


def test_the_slot_comes_from_the_spec():
    db = parse_database(
        {"apiVersion": "sota.io/v1", "kind": "ManagedDatabase", "metadata": {"name": "my-app"}}
    )
    assert 0 <= db.backup_minute_of_day < 6 * 60
    assert slot_in_force(at(23), db.backup_minute_of_day).date() == DAY.date()


def test_minute_out_of_range_is_refused():
    with pytest.raises(ValueError, match="minute of day"):
        slot_in_force(at(1), 24 * 60)
