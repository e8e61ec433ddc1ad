"""Helpers for the backup data-plane tests (imported explicitly by tests/dataplane/test_backup_*).

- Data goes in the way an app's would: pgbench and SQL run in a client container on the
  database's network, with DIRECT_DATABASE_URL (passed as the container's env, never echoed).
- What is in a database is observed with the runner's own checksum query, run as the superuser
  over the container's socket: row counts and per-table checksums, every table, every schema.
- `sotadb backup ...` runs in-process through the module's typer `app` (as `sotadb backup`
  will once main.py registers it), with SOTADB_HOME set to the session's state directory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dataplane_helpers import Database, redact, run_in_network
from typer.testing import CliRunner

from sotadb.backup import scripts
from sotadb.backup.catalog import BackupRecord, TableSummary
from sotadb.backup.checksums import parse_output
from sotadb.backup.executors import capture
from sotadb.backup.on_docker import DockerBackups
from sotadb.cli import backup_commands
from sotadb.docker.runtime import DockerRuntime

REPOSITORY: Final = Path(__file__).resolve().parents[2]

EVERY_TYPE_SQL: Final = """
CREATE SCHEMA "app-data";
CREATE TYPE "app-data".mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE "app-data"."every-type" (
    id bigserial PRIMARY KEY,
    small smallint, big bigint, num numeric(20, 6), real_ real, dbl double precision,
    flag boolean, name_ text, code varchar(12), fixed char(4),
    at_ timestamptz, day date, clock time, span interval,
    doc jsonb, raw json, blob bytea, ids integer[], tags text[], uid uuid, addr inet,
    mood "app-data".mood, spot point
);
INSERT INTO "app-data"."every-type"
    (small, big, num, real_, dbl, flag, name_, code, fixed, at_, day, clock, span,
     doc, raw, blob, ids, tags, uid, addr, mood, spot)
SELECT g, g::bigint * 1000000007, g * 3.141593, g / 7.0, g / 3.0, g % 2 = 0,
       'row ' || g || E' with \\t tab, "quotes", \\\\ backslash and ünïcödé',
       'c' || g, 'f' || (g % 10),
       timestamptz '2026-01-01 00:00:00+01' + g * interval '37 minutes 13.123456 seconds',
       date '2020-02-29' + g, time '12:34:56.789' + g * interval '1 second',
       g * interval '1 day 2 hours',
       jsonb_build_object('n', g, 'nested', jsonb_build_array(g, 'x', null, true)),
       json_build_object('n', g)::json,
       decode(md5(g::text), 'hex') || '\\x00ff'::bytea,
       ARRAY[g, g + 1, NULL], ARRAY['a', 'b' || g],
       md5(g::text)::uuid, ('10.0.' || (g % 255) || '.1')::inet,
       (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::"app-data".mood, point(g, -g)
FROM generate_series(1, 500) AS g;
INSERT INTO "app-data"."every-type" (name_, doc, dbl, real_) VALUES
    (NULL, 'null', 'NaN', '-Infinity'), ('', '{}', -0.0, 1e-30);
-- A dropped column: the live table still has it on disk, the restored one never had it.
CREATE TABLE "app-data".reshaped (a int, gone text, b numeric, c timestamptz);
INSERT INTO "app-data".reshaped SELECT g, 'x', g / 3.0, now() FROM generate_series(1, 100) g;
ALTER TABLE "app-data".reshaped DROP COLUMN gone;
"""


@dataclass(frozen=True)
class Cli:
    """`sotadb backup ...` and `sotadb daemon` through the modules' own typer app."""

    home: Path

    def __call__(self, *args: str) -> tuple[int, str, str]:
        runner = CliRunner()
        result = runner.invoke(
            _root_app(), list(args), env={"SOTADB_HOME": str(self.home)}, catch_exceptions=False
        )
        return result.exit_code, redact(result.stdout), redact(result.stderr)


def _root_app():  # the two lines main.py will add, on a fresh root app
    import typer

    root = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    root.add_typer(backup_commands.app, name="backup")
    root.command("daemon")(backup_commands.daemon)

    @root.callback()
    def _main() -> None:
        """sotadb (backup commands only)."""

    return root


def cli_subprocess(home: Path, *args: str) -> subprocess.Popen[bytes]:
    """The same CLI in a child process (to be killed mid-dump)."""
    code = (
        "import sys\n"
        "from sotadb.cli.backup_commands import app\n"
        "app(sys.argv[1:], prog_name='sotadb backup')\n"
    )
    env = {
        **os.environ,
        "SOTADB_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(
            [str(REPOSITORY / "operator"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def backups_for(runtime: DockerRuntime) -> DockerBackups:
    return DockerBackups(runtime)


def direct_sql(db: Database, sql: str, *, timeout: float = 60) -> str:
    """SQL as the app role over DIRECT_DATABASE_URL, from a client container on the network."""
    run = run_in_network(
        db.client,
        db.network,
        "psql \"$DIRECT_DATABASE_URL\" -X -q -v ON_ERROR_STOP=1 -tA -f - <<'SQL'\n" + sql + "\nSQL",
        environment={"DIRECT_DATABASE_URL": db.direct_database_url()},
        timeout=timeout,
    )
    assert run.exit_code == 0, run.output
    return run.output


def fill(db: Database, *, pgbench_scale: int = 1) -> None:
    """pgbench's tables (as the app would create them) plus every common column type in a
    hyphenated schema."""
    run = run_in_network(
        db.client,
        db.network,
        'pgbench -i -q -s "$SCALE" "$DIRECT_DATABASE_URL"',
        environment={"DIRECT_DATABASE_URL": db.direct_database_url(), "SCALE": str(pgbench_scale)},
        timeout=120,
    )
    assert run.exit_code == 0, run.output
    direct_sql(db, EVERY_TYPE_SQL)


def observe(db: Database, database: str | None = None) -> dict[str, TableSummary]:
    """Row counts and checksums of every user table, with the runner's own query."""
    executor = DockerBackups(db.runtime).executor(db.slug)
    result = capture(executor, scripts.verify_script(database=database or db.slug))
    assert result.status == 0, result.tail()
    return dict(parse_output(result.stdout.splitlines()).tables)


def contents(db: Database, database: str | None = None) -> dict[str, tuple[int, str]]:
    """Row count and md5 of the sorted rows of every user table: what `observe`'s checksums
    say, except the rows' physical order. (A drilled backup's parallel restore loads one
    table's rows in several sessions at once: they come back in another order.)"""
    result: dict[str, tuple[int, str]] = {}
    for table in observe(db, database):
        # `table` is the catalog's own quoted name (format('%I.%I')), as observe reports it.
        sql = f"SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '-') FROM ONLY {table} x"  # noqa: S608, E501
        count, digest = db.superuser_sql(sql, database=database or db.slug).split(" ")
        result[table] = (int(count), digest)
    return result


def dump_path(backups: DockerBackups, record: BackupRecord) -> Path:
    path = backups.store.dump_path(record)
    assert path is not None
    return path


def rewrite_dump(backups: DockerBackups, record: BackupRecord, old: bytes, new: bytes) -> None:
    """Change the data inside a dump and re-seal its record (size, sha256), as if pg_dump had
    written different rows: the file passes every integrity check, its data is wrong."""
    path = dump_path(backups, record)
    text = gzip.decompress(path.read_bytes())
    assert old in text
    data = gzip.compress(text.replace(old, new, 1))
    path.write_bytes(data)
    raw = json.loads((path.parent / f"{record.name}.json").read_text())
    raw.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (path.parent / f"{record.name}.json").write_text(json.dumps(raw))
