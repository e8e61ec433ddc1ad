"""A throw-away PostgreSQL 17 in a local directory, for the restore drill inside a Job's pod.

The Docker runtime drills in a scratch container; a Job's pod cannot start containers, so the
runner starts the server itself, with initdb and pg_ctl from the image, in the pod's scratch
emptyDir. It listens on a unix socket only, in a directory of mode 0700 (so `trust` there
admits this user alone), with the Docker drill's fast, crash-unsafe settings
(sotadb.backup.scripts.DRILL_PARAMETERS) and a smaller memory footprint to fit the pod's
limit. It has `slug`'s app role (no login) and database, so the dump replays as it would on a
fresh production server. Stopped (immediate) and deleted when the block ends.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

from sotadb import names
from sotadb.backup import scripts
from sotadb.backup.errors import BackupFailed
from sotadb.backup.executors import LocalExecutor, capture
from sotadb.backup.runner import Progress

SUPERUSER: Final = "postgres"
START_TIMEOUT: Final = 120  # seconds pg_ctl waits for the server
COMMAND_TIMEOUT: Final = 300
# Replaces the scratch container's network and memory settings (the pod has a 1 GiB limit).
LOCAL_OVERRIDES: Final[Mapping[str, str]] = {
    "listen_addresses": "",
    "shared_buffers": "128MB",
    "maintenance_work_mem": "128MB",
    "max_parallel_workers_per_gather": "0",
    "max_parallel_maintenance_workers": "0",
    "jit": "off",
}
CREATE_SQL: Final = """CREATE ROLE :"role" NOLOGIN;
CREATE DATABASE :"db" OWNER :"role" TEMPLATE template0 ENCODING 'UTF8';
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;"""


def server_conf(socket_dir: Path) -> str:
    parameters = {
        key: value
        for key, value in scripts.DRILL_PARAMETERS.items()
        if key not in ("hba_file", "unix_socket_directories")
    }
    parameters.update(LOCAL_OVERRIDES)
    parameters["unix_socket_directories"] = str(socket_dir)
    return "".join(f"{key} = '{value}'\n" for key, value in sorted(parameters.items()))


def _quiet(_: str) -> None:
    """The default progress sink: say nothing."""


@contextlib.contextmanager
def scratch_server(
    directory: Path, slug: str, *, progress: Progress = _quiet
) -> Iterator[LocalExecutor]:
    """A running server with `slug`'s role and database; an executor connected as superuser."""
    base = directory / "drill"
    shutil.rmtree(base, ignore_errors=True)  # a leftover of an earlier run in this pod
    pgdata, sockets = base / "pgdata", base / "run"
    sockets.mkdir(parents=True, mode=0o700)
    progress(f"drill: starting a scratch server in {base}")
    started = False
    try:
        _run(
            [
                "initdb", "-D", str(pgdata), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                "--locale=C.UTF-8", "--no-sync", "--no-instructions",
            ],
            "initdb",
        )  # fmt: skip
        with (pgdata / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# sotadb restore drill\n" + server_conf(sockets))
        _run(
            [
                "pg_ctl", "start", "-D", str(pgdata), "-w", "-t", str(START_TIMEOUT),
                "-l", str(base / "server.log"),
            ],
            "pg_ctl start",
            log=base / "server.log",
        )  # fmt: skip
        started = True
        executor = LocalExecutor(
            env={"PGHOST": str(sockets), "PGPORT": str(names.POSTGRES_PORT), "PGUSER": SUPERUSER}
        )
        variables = {"role": names.role_name(slug), "db": names.database_name(slug)}
        created = capture(
            executor, scripts.psql_script(CREATE_SQL, database="postgres", variables=variables)
        )
        if created.status != 0:
            raise BackupFailed(f"the scratch server refused its database: {created.tail()}")
        yield executor
    finally:
        if started:
            with contextlib.suppress(BackupFailed):
                _run(["pg_ctl", "stop", "-D", str(pgdata), "-m", "immediate"], "pg_ctl stop")
        shutil.rmtree(base, ignore_errors=True)


def _run(argv: list[str], what: str, *, log: Path | None = None) -> None:
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BackupFailed(f"the scratch server: {what} could not run ({e})") from e
    if result.returncode != 0:
        details = (result.stderr or result.stdout).strip().splitlines()[-3:]
        if log is not None and log.is_file():
            details += log.read_text(errors="replace").strip().splitlines()[-3:]
        raise BackupFailed(
            f"the scratch server: {what} exited with status {result.returncode}: "
            + "; ".join(details)
        )
