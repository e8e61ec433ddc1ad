"""The Job report in a termination message: round trip, the 4096-byte limit, garbage."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sotadb.backup.report import MAX_BYTES, JobReport, parse_report, report_to_json

STARTED = datetime(2026, 11, 25, 3, 14, 15, tzinfo=UTC)
FULL = JobReport(
    kind="backup",
    name="sota-backup-my-app-29400000",
    phase="Succeeded",
    started_at=STARTED,
    completed_at=datetime(2026, 11, 25, 3, 15, 0, tzinfo=UTC),
    size=123_456_789,
    sha256="ab" * 32,
    location="/var/lib/sotadb/backups/my-app/sota-backup-my-app-29400000.sql.gz",
    verification="Passed",
    verified_at=datetime(2026, 11, 25, 3, 16, 0, tzinfo=UTC),
    message="restore drill: 6 tables, 100613 rows, checksums equal",
    pruned=("old-1", "old-2"),
    tables=6,
    rows=100_613,
)


@pytest.mark.parametrize(
    "report",
    [
        pytest.param(FULL, id="every-field"),
        pytest.param(JobReport(kind="forget", name="x", phase="Succeeded"), id="minimal"),
        pytest.param(
            JobReport(kind="restore", name="b", phase="Failed", message="rolled back: ünïcödé"),
            id="failed-restore",
        ),
    ],
)
def test_a_report_reads_back_exactly(report: JobReport) -> None:
    assert parse_report(report_to_json(report)) == report


def test_the_wire_format_is_camel_case_and_leaves_out_unset_fields() -> None:
    data = json.loads(report_to_json(FULL))
    assert data["startedAt"] == "2026-11-25T03:14:15Z"
    assert data["verifiedAt"] == "2026-11-25T03:16:00Z"
    assert data["pruned"] == ["old-1", "old-2"]
    minimal = json.loads(report_to_json(JobReport(kind="forget", name="x", phase="Failed")))
    assert minimal == {"kind": "forget", "name": "x", "phase": "Failed"}


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("x" * 10_000, id="ascii"),
        pytest.param("ü" * 5_000, id="two-byte"),
        pytest.param("日本" * 3_000, id="three-byte"),
        pytest.param('"\\\x01' * 3_000, id="escaped"),
    ],
)
def test_a_long_message_is_shortened_to_fit_4096_bytes(message: str) -> None:
    text = report_to_json(JobReport(kind="backup", name="b", phase="Failed", message=message))
    assert len(text.encode()) <= MAX_BYTES
    parsed = parse_report(text)
    assert parsed is not None
    assert parsed.message is not None
    assert parsed.message.endswith("…")
    assert message.startswith(parsed.message[:-1])
    assert len(parsed.message) > 500  # shortened, not emptied


def test_when_the_message_is_not_enough_the_pruned_tail_goes() -> None:
    pruned = tuple(f"{'b' * 55}-{i:05d}" for i in range(200))
    text = report_to_json(JobReport(kind="backup", name="b", phase="Succeeded", pruned=pruned))
    assert len(text.encode()) <= MAX_BYTES
    parsed = parse_report(text)
    assert parsed is not None
    assert 0 < len(parsed.pruned) < len(pruned)
    assert parsed.pruned == pruned[: len(parsed.pruned)]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("pg_dump: error: connection to server failed\n", id="log-lines"),
        pytest.param("[1, 2]", id="not-an-object"),
        pytest.param('{"kind": "backup", "name": "b"}', id="no-phase"),
        pytest.param('{"kind": "vacuum", "name": "b", "phase": "Succeeded"}', id="bad-kind"),
        pytest.param('{"kind": "backup", "name": "b", "phase": "Done"}', id="bad-phase"),
        pytest.param('{"kind": "backup", "name": 7, "phase": "Failed"}', id="name-not-text"),
        pytest.param(
            '{"kind": "backup", "name": "b", "phase": "Failed", "size": "12"}', id="size-text"
        ),
        pytest.param(
            '{"kind": "backup", "name": "b", "phase": "Failed", "size": true}', id="size-bool"
        ),
        pytest.param(
            '{"kind": "backup", "name": "b", "phase": "Failed", "startedAt": "yesterday"}',
            id="bad-time",
        ),
        pytest.param(
            '{"kind": "backup", "name": "b", "phase": "Failed", "pruned": "x"}', id="pruned-text"
        ),
        pytest.param(
            '{"kind": "backup", "name": "b", "phase": "Failed", "verification": "Maybe"}',
            id="bad-verification",
        ),
        pytest.param("[" * 100_000, id="deep-nesting"),
    ],
)
def test_anything_but_a_report_is_none(text: str | None) -> None:
    assert parse_report(text) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_parsing_never_raises(text: str) -> None:
    parse_report(text)
