"""`sotadb backup job | restore-job | forget-job`: the runner's commands in a Kubernetes Job.

They run in the operator image, in pods rendered by sotadb.render.backup, and read their
settings from the environment that pod sets (each option names its variable). The result is
one JSON `JobReport` in the termination message (SOTADB_TERMINATION_LOG, by default
/dev/termination-log; the operator reads it from the pod's status) and on stdout; progress goes
to stderr (the pod's log). Nothing here prints a password: libpq reads PGPASSWORD itself.

Exit status: 0 done; 1 failed (the report says why; a restore that failed changed nothing);
2 bad arguments; 3 the backup was written but its restore drill failed (the report's phase is
Succeeded, its verification Failed: the backup exists and is never the newest good one).
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Final

import typer
from rich.console import Console

from sotadb import names
from sotadb.backup import in_pod
from sotadb.backup.report import JobReport, Kind, report_to_json
from sotadb.backup.runner import utc_now
from sotadb.backup.stores import open_store
from sotadb.errors import SotadbError
from sotadb.render import backup as render_backup
from sotadb.spec import DEFAULT_RETENTION_DAYS

EXIT_FAILED: Final = 1
EXIT_INVALID: Final = 2
EXIT_DRILL_FAILED: Final = 3
BACKUP_NAME_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

progress_console = Console(stderr=True, highlight=False)


class Terminated(SotadbError):
    """SIGTERM (the Job's deadline, a deleted pod): the run unwinds and reports Failed."""


def register(app: typer.Typer) -> None:
    app.command("job")(backup_job)
    app.command("restore-job")(restore_job)
    app.command("forget-job")(forget_job)


def _check_name(value: str) -> str:
    """A backup name becomes file names and a Job label: a DNS-1123 label of <= 63."""
    if len(value) > names.NAME_MAX_LENGTH or not BACKUP_NAME_RE.match(value):
        raise typer.BadParameter(
            f"{value!r} is not a DNS-1123 label of at most {names.NAME_MAX_LENGTH} characters "
            "(lower-case letters, digits and '-', starting and ending with one): use the "
            "DatabaseBackup's name"
        )
    return value


def _check_slug(value: str) -> str:
    if len(value) > names.SLUG_MAX_LENGTH or not names.SLUG_RE.match(value):
        raise typer.BadParameter(
            f"{value!r} is not a ManagedDatabase name (a DNS-1035 label of at most "
            f"{names.SLUG_MAX_LENGTH} characters)"
        )
    return value


Database = Annotated[
    str, typer.Option("--database", "-d", help="The ManagedDatabase.", callback=_check_slug)
]
Location = Annotated[
    str,
    typer.Option(
        envvar=render_backup.ENV_LOCATION,
        help="The backup store: a directory (the backups PVC) or s3://bucket/prefix.",
    ),
]
Scratch = Annotated[
    Path,
    typer.Option(
        envvar=render_backup.ENV_SCRATCH_DIR,
        help="A writable directory for the drill's server and a restore's verified copy.",
    ),
]
TerminationLog = Annotated[
    Path,
    typer.Option(envvar="SOTADB_TERMINATION_LOG", help="Where the JSON report is written."),
]


def _progress(started: float) -> Callable[[str], None]:
    def report(message: str) -> None:
        progress_console.print(f"[{time.monotonic() - started:7.1f}s] {message}", markup=False)

    return report


@contextmanager
def _terminate_gracefully() -> Iterator[None]:
    def stop(signum: int, _: FrameType | None) -> None:
        raise Terminated(f"the runner was stopped by signal {signum} (the Job's deadline?)")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(
    kind: Kind,
    name: str,
    termination_log: Path,
    work: Callable[[Callable[[str], None]], JobReport],
) -> None:
    """Run one flow, always leave a report, exit with the status the report calls for."""
    progress = _progress(time.monotonic())
    started = utc_now()
    try:
        with _terminate_gracefully():
            report = work(progress)
    except (SotadbError, OSError) as e:
        report = in_pod.failed(kind, name, str(e), started=started)
    except Exception as e:  # the report must say something, whatever broke
        report = in_pod.failed(kind, name, f"unexpected {type(e).__name__}: {e}", started=started)
    text = report_to_json(report)
    try:
        termination_log.write_text(text, encoding="utf-8")
    except OSError as e:
        progress(f"could not write the report to {termination_log}: {e}")
    typer.echo(text)
    progress(f"{kind} {name}: {report.phase}" + (f": {report.message}" if report.message else ""))
    if report.phase == "Failed":
        raise typer.Exit(EXIT_FAILED)
    if report.verification == "Failed":
        raise typer.Exit(EXIT_DRILL_FAILED)


def backup_job(
    database: Database,
    name: Annotated[
        str,
        typer.Option(
            envvar=render_backup.ENV_BACKUP_NAME,
            help="The DatabaseBackup (a scheduled run: its Job's name).",
            callback=_check_name,
        ),
    ],
    location: Location = names.BACKUP_DIR,
    scratch_dir: Scratch = Path(names.BACKUP_SCRATCH_DIR),
    retention_days: Annotated[
        int, typer.Option(envvar=render_backup.ENV_RETENTION_DAYS, min=1)
    ] = DEFAULT_RETENTION_DAYS,
    drill: Annotated[bool, typer.Option(help="Restore it into a scratch server.")] = True,
    termination_log: TerminationLog = Path(names.TERMINATION_LOG),
) -> None:
    """Take backup NAME of the database (dump, drill, retention) as its app role."""
    _run(
        "backup",
        name,
        termination_log,
        lambda progress: in_pod.backup(
            open_store(location),
            database,
            name,
            scratch=scratch_dir,
            retention_days=retention_days,
            drill=drill,
            progress=progress,
        ),
    )


def restore_job(
    database: Database,
    source: Annotated[
        str,
        typer.Option("--from", help="The database whose backup it is.", callback=_check_slug),
    ],
    name: Annotated[str, typer.Option(help="The DatabaseBackup to restore.", callback=_check_name)],
    location: Location = names.BACKUP_DIR,
    scratch_dir: Scratch = Path(names.BACKUP_SCRATCH_DIR),
    termination_log: TerminationLog = Path(names.TERMINATION_LOG),
) -> None:
    """Replace the database's data with backup NAME of --from, in one transaction."""
    _run(
        "restore",
        name,
        termination_log,
        lambda progress: in_pod.restore(
            open_store(location),
            target=database,
            source=source,
            name=name,
            scratch=scratch_dir,
            progress=progress,
        ),
    )


def forget_job(
    database: Database,
    name: Annotated[
        str, typer.Option(help="The DatabaseBackup whose file goes.", callback=_check_name)
    ],
    location: Location = names.BACKUP_DIR,
    termination_log: TerminationLog = Path(names.TERMINATION_LOG),
) -> None:
    """Delete backup NAME's file and record (already gone: success)."""
    _run(
        "forget",
        name,
        termination_log,
        lambda progress: in_pod.forget(open_store(location), database, name),
    )
