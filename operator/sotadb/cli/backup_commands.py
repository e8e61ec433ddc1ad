"""`sotadb backup create | list | restore | verify | prune` and `sotadb daemon`: backups on this
host's Docker engine.

Exit status: 0 done; 1 failed (the backup, the restore, or the engine), with one line on
stderr saying why and what to do; 2 bad arguments; 3 the backup was written but its restore
drill failed (it is kept, marked Failed, and never counts as the newest good backup).
Progress goes to stderr; stdout carries only results (`-o json` for scripts). No password,
verifier or row data is ever printed.

The daily schedule — either run the daemon as a service:

    sotadb daemon                       # loops: due backups, then retention; sleeps until due

or call one pass from a timer, e.g. cron (every 10 minutes; a pass is cheap when nothing is
due, and the per-database lock makes overlapping passes harmless):

    */10 * * * *  root  SOTADB_HOME=/var/lib/sotadb /usr/local/bin/sotadb daemon --once

or systemd:

    # /etc/systemd/system/sotadb-backup.service
    [Unit]
    Description=sotadb: take due backups, apply retention
    After=docker.service
    Requires=docker.service
    [Service]
    Type=oneshot
    Environment=SOTADB_HOME=/var/lib/sotadb
    ExecStart=/usr/local/bin/sotadb daemon --once

    # /etc/systemd/system/sotadb-backup.timer
    [Unit]
    Description=sotadb backups, every 10 minutes
    [Timer]
    OnCalendar=*:0/10
    Persistent=true
    [Install]
    WantedBy=timers.target

    systemctl enable --now sotadb-backup.timer
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import FrameType
from typing import Annotated, Final

import typer
from rich.console import Console

from sotadb.backup.catalog import (
    BackupRecord,
    Compression,
    Phase,
    Verification,
    format_time,
    newest_good,
)
from sotadb.backup.errors import RestoreRefused
from sotadb.backup.on_docker import LATEST, DockerBackups, PassResult
from sotadb.docker.runtime import DockerRuntime
from sotadb.errors import SotadbError

from . import job_commands, output

EXIT_FAILED: Final = 1
EXIT_INVALID: Final = 2
EXIT_DRILL_FAILED: Final = 3
SHA_PREFIX: Final = 12
MIN_SLEEP: Final = 1.0
MAX_SLEEP: Final = 15 * 60.0

progress_console = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="backup",
    help="Back up, list, verify and restore databases on this host (pg_dump, gzip, sha256).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
job_commands.register(app)  # `sotadb backup job | restore-job | forget-job`: Kubernetes Jobs


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"


@contextmanager
def _user_errors() -> Iterator[None]:
    """Our errors (and OS errors) become one line on stderr and exit status 1."""
    try:
        yield
    except (SotadbError, OSError) as e:
        output.fail(str(e))
        raise typer.Exit(EXIT_FAILED) from None


@contextmanager
def _terminate_gracefully() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C: partial files are removed, the script in the container is
    ended, PgBouncer is started again after an interrupted restore."""

    def stop(signum: int, _: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _backups() -> DockerBackups:
    return DockerBackups(DockerRuntime())


def _reporter(started: float) -> Callable[[str], None]:
    def report(message: str) -> None:
        progress_console.print(f"  {time.monotonic() - started:6.2f}s  {message}")

    return report


def _parse_now(now: str | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(now.replace("Z", "+00:00"))
    except ValueError:
        output.fail(f"--now {now!r} is not an ISO 8601 time (e.g. 2026-11-25T04:00:00Z)")
        raise typer.Exit(EXIT_INVALID) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------- presentation (pure)


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def human_age(started: datetime, now: datetime) -> str:
    seconds = max(0, int((now - started).total_seconds()))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


def verified_text(record: BackupRecord) -> str:
    if record.verification is None:
        return "-" if record.phase is Phase.SUCCEEDED else ""
    return record.verification.value


def list_table(records: list[BackupRecord], now: datetime) -> str:
    good = newest_good(records)
    header = ("NAME", "PHASE", "SIZE", "AGE", "SHA256", "VERIFIED", "")
    rows = [header] + [
        (
            r.name,
            r.phase.value,
            human_size(r.size),
            human_age(r.started_at, now),
            (r.sha256 or "-")[:SHA_PREFIX],
            verified_text(r),
            "newest good" if r is good else "",
        )
        for r in sorted(records, key=lambda r: (r.started_at, r.name), reverse=True)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def record_summary(record: BackupRecord) -> str:
    lines = [
        f"name      {record.name}",
        f"phase     {record.phase.value}",
    ]
    if record.phase is Phase.SUCCEEDED:
        lines += [
            f"size      {human_size(record.size)} ({record.size} bytes, {record.format})",
            f"sha256    {record.sha256}",
            f"location  {record.location}",
            f"tables    {len(record.tables)} ({sum(t.rows for t in record.tables.values())} rows)",
            f"drill     {verified_text(record) or 'not run'}",
        ]
    if record.message:
        lines.append(f"message   {record.message}")
    return "\n".join(lines)


# ---------------------------------------------------------------- commands


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Database name (the slug).")],
    compression: Annotated[
        Compression, typer.Option(help="gzip (.sql.gz, the default) or zstd (.sql.zst).")
    ] = Compression.GZIP,
    drill: Annotated[
        bool, typer.Option("--drill/--no-drill", help="Restore-test the backup afterwards.")
    ] = True,
    output_format: Annotated[Output, typer.Option("--output", "-o")] = Output.TEXT,
) -> None:
    """Dump a database now (pg_dump → gzip, sha256), then restore-test it in a scratch server."""
    with _user_errors(), _terminate_gracefully():
        started = time.monotonic()
        backups = _backups()
        with progress_console.status(f"backing up {name}"):
            record = backups.create(
                name, compression=compression, drill=drill, progress=_reporter(started)
            )
        _show(record, output_format)
        if record.phase is not Phase.SUCCEEDED:
            output.fail(f"backup of {name} failed: {record.message}")
            raise typer.Exit(EXIT_FAILED)
        if record.verification is Verification.FAILED:
            output.fail(f"backup {record.name} was written but FAILED its drill: {record.message}")
            raise typer.Exit(EXIT_DRILL_FAILED)
        progress_console.print(f"[green]{record.name}[/green] in {time.monotonic() - started:.2f}s")


@app.command("list")
def list_backups(
    name: Annotated[str, typer.Argument(help="Database name (the slug).")],
    output_format: Annotated[Output, typer.Option("--output", "-o")] = Output.TEXT,
) -> None:
    """Show a database's backups: size, age, checksum and drill outcome."""
    with _user_errors():
        backups = _backups()
        scan = backups.store.scan(name)
        for path in scan.unreadable:
            output.fail(f"{path} cannot be read; it is not listed")
        if output_format is Output.JSON:
            output.emit(output.to_json([r.to_json() for r in scan.records]))
            return
        if not scan.records:
            output.emit(f"no backups of {name} (take one: sotadb backup create {name})")
            return
        output.emit(list_table(scan.records, datetime.now(UTC)))


@app.command("restore")
def restore(
    name: Annotated[str, typer.Argument(help="Database the backup was taken of.")],
    backup: Annotated[str, typer.Argument(help=f"Backup name (see `list`), or {LATEST}.")],
    as_name: Annotated[
        str | None,
        typer.Option("--as", help="Restore into a new database of this name instead."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Restore even a backup that failed its drill.")
    ] = False,
) -> None:
    """Replace a database's contents with a backup (checked first), or clone it with --as."""
    with _user_errors(), _terminate_gracefully():
        started = time.monotonic()
        backups = _backups()
        try:
            with progress_console.status("restoring"):
                record = backups.restore(
                    name, backup, as_name=as_name, force=force, progress=_reporter(started)
                )
        except RestoreRefused as e:
            output.fail(f"restore refused: {e}")
            raise typer.Exit(EXIT_FAILED) from None
        target = as_name or name
        output.emit(f"restored {record.name} into {target}")
        progress_console.print(
            f"[green]{target} restored[/green] in {time.monotonic() - started:.2f}s"
        )


@app.command("verify")
def verify(
    name: Annotated[str, typer.Argument(help="Database name (the slug).")],
    backup: Annotated[str, typer.Argument(help="Backup name (see `list`).")],
    output_format: Annotated[Output, typer.Option("--output", "-o")] = Output.TEXT,
) -> None:
    """Run the restore drill again on an existing backup and record the outcome."""
    with _user_errors(), _terminate_gracefully():
        started = time.monotonic()
        record = _backups().verify(name, backup, progress=_reporter(started))
        _show(record, output_format)
        if record.verification is not Verification.PASSED:
            output.fail(f"backup {record.name} FAILED its drill: {record.message}")
            raise typer.Exit(EXIT_DRILL_FAILED)


@app.command("prune")
def prune(
    name: Annotated[str, typer.Argument(help="Database name (the slug).")],
    days: Annotated[
        int | None, typer.Option(min=1, help="Keep this many days (default: the spec's).")
    ] = None,
    now: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    """Apply retention now: delete backups older than the retention, never the newest good."""
    with _user_errors():
        backups = _backups()
        keep = days if days is not None else backups.retention_days(name)
        deleted = backups.prune(name, days=keep, now=_parse_now(now))
        for record in deleted:
            output.emit(
                f"deleted {record.name} ({record.phase.value}, {format_time(record.started_at)})"
            )
        progress_console.print(f"{len(deleted)} backups of {name} deleted (retention {keep} days)")


def daemon(
    once: Annotated[bool, typer.Option("--once", help="Run one pass and exit.")] = False,
    now: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    """Take each database's daily backup at its slot and apply retention, forever (or --once)."""
    with _user_errors(), _terminate_gracefully():
        backups = _backups()
        fixed = _parse_now(now) if now is not None else None

        def clock() -> datetime:
            return fixed if fixed is not None else datetime.now(UTC)

        failures = 0
        wake = threading.Event()
        while True:
            started = time.monotonic()
            results = backups.daemon_pass(clock=clock, progress=_reporter(started))
            for result in results:
                failures += _report_pass(result)
            if once:
                break
            wake.wait(_sleep_seconds([r.next_due for r in results], clock()))
        if failures:
            raise typer.Exit(EXIT_FAILED)


def _report_pass(result: PassResult) -> int:
    """One line per database on stdout; returns 1 when its backup failed."""
    parts = [result.slug]
    failed = 0
    if result.backup is not None:
        record: BackupRecord = result.backup
        verdict = record.phase.value
        if record.phase is Phase.SUCCEEDED:
            verdict += f", drill {verified_text(record) or 'not run'}"
        parts.append(f"backup {record.name} {verdict}")
        if record.phase is not Phase.SUCCEEDED or record.verification is Verification.FAILED:
            failed = 1
            output.fail(f"{record.name}: {record.message}")
    if result.deleted:
        parts.append(f"deleted {', '.join(result.deleted)}")
    if result.skipped:
        parts.append(f"skipped: {result.skipped}")
    if result.next_due is not None:
        parts.append(f"next due {format_time(result.next_due)}")
    output.emit("; ".join(parts))
    return failed


def _sleep_seconds(due: list[datetime | None], now: datetime) -> float:
    upcoming = [d for d in due if d is not None]
    if not upcoming:
        return MAX_SLEEP
    wait = (min(upcoming) - now) / timedelta(seconds=1)
    return min(MAX_SLEEP, max(MIN_SLEEP, wait))


def _show(record: BackupRecord, output_format: Output) -> None:
    if output_format is Output.JSON:
        output.emit(output.to_json(record.to_json()))
    else:
        output.emit(record_summary(record))
