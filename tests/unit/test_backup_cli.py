"""What `sotadb backup list` and `create` print (pure presentation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sotadb.backup.catalog import BackupRecord, Phase, Verification
from sotadb.cli import backup_commands as cli

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def test_sizes_and_ages_read_like_a_person_writes_them():
    assert cli.human_size(512) == "512 B"
    assert cli.human_size(12_345_678) == "12.3 MB"
    assert cli.human_age(NOW - timedelta(days=2, hours=3), NOW) == "2d"
    assert cli.human_age(NOW - timedelta(minutes=5), NOW) == "5m"


def test_list_marks_the_newest_good_and_shows_a_checksum_prefix():
    good = BackupRecord(
        name="db-20261124T120000Z",
        database="db",
        phase=Phase.SUCCEEDED,
        started_at=NOW - timedelta(days=1),
        size=2_000_000,
        sha256="a" * 64,
        verification=Verification.PASSED,
    )
    failed_drill = BackupRecord(
        name="db-20261125T110000Z",
        database="db",
        phase=Phase.SUCCEEDED,
        started_at=NOW - timedelta(hours=1),
        size=2_000_000,
        sha256="b" * 64,
        verification=Verification.FAILED,
    )
    failed = BackupRecord(
        name="db-20261125T115000Z",
        database="db",
        phase=Phase.FAILED,
        started_at=NOW - timedelta(minutes=10),
        message="db down",
    )
    lines = cli.list_table([good, failed_drill, failed], NOW).splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "SIZE", "AGE", "SHA256", "VERIFIED"]
    assert lines[1].split() == ["db-20261125T115000Z", "Failed", "-", "10m", "-"]
    assert lines[2].split() == [
        "db-20261125T110000Z",
        "Succeeded",
        "2.0",
        "MB",
        "1h",
        "b" * 12,
        "Failed",
    ]
    assert lines[3].endswith("newest good")


def test_exports_what_main_registers():
    assert cli.app.info.name == "backup"
    assert callable(cli.daemon)
