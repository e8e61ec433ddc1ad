"""Section 1: how fast `up` gives a database that answers through PgBouncer.

A fresh `up` (new slug, new volume) is set beside its floor (bench.floor: the same image doing
only initdb, start and a first query), interleaved run by run so both see the same machine.
Then `up` on an existing database, in-process and through the `sotadb` CLI.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from bench import floor, timeline
from bench.harness import Bench, BenchError
from bench.report import SectionReport, Table, Target, progress, ratio, seconds
from sotadb import names
from sotadb.docker import engine
from sotadb.docker.runtime import minimal_document

FLOOR_RATIO_TARGET: Final = 2.0
REPEAT_UP_TARGET: Final = 0.5
CLI_TIMEOUT: Final = 180.0
WAITING_MESSAGE: Final = "waiting for a query"
READY_LINE: Final = "database system is ready to accept connections"
_INITDB_DONE: Final = re.compile(r"initdb done in ([0-9.]+)s")


@dataclass(frozen=True)
class FreshUp:
    seconds: float  # up() call → it returned (it returns after a query through PgBouncer)
    containers_started: float | None  # → up() began waiting for the query
    initdb_seconds: float | None  # the entrypoint's own measurement
    postgres_ready: float | None  # → the real server logged "ready to accept connections"
    down_seconds: float | None = None  # down --purge afterwards

    @property
    def pooler_lag(self) -> float | None:
        """From PostgreSQL ready to the first query through PgBouncer answered."""
        return None if self.postgres_ready is None else self.seconds - self.postgres_ready

    def to_json(self) -> dict[str, float | None]:
        return {
            "seconds": self.seconds,
            "containersStarted": self.containers_started,
            "initdbSeconds": self.initdb_seconds,
            "postgresReady": self.postgres_ready,
            "poolerLag": self.pooler_lag,
            "downSeconds": self.down_seconds,
        }


def run(bench: Bench) -> SectionReport:
    settings = bench.settings
    fresh: list[FreshUp] = []
    floors: list[floor.FloorRun] = []
    repeats: list[float] = []
    cli: list[float] = []
    cli_help: list[float] = []
    for index in range(settings.fresh_runs):
        slug = bench.slug(f"prov{index}")
        if index % 2 == 0:  # alternate which goes first, so neither always runs on a warm disk
            floors.append(_floor(bench, index))
        try:
            up = _fresh_up(bench, slug)
            if index == settings.fresh_runs - 1:
                repeats = _repeat_up(bench, slug, settings.repeat_runs)
                cli = _cli_up(bench, slug, settings.cli_runs)
                cli_help = _cli_help(bench, max(1, settings.cli_runs // 2))
        finally:
            started = time.monotonic()
            bench.runtime.down(slug, purge=True)
            down_seconds = time.monotonic() - started
        fresh.append(replace(up, down_seconds=down_seconds))
        if index % 2 == 1:
            floors.append(_floor(bench, index))
    return _report(fresh, floors, repeats, cli, cli_help)


def _floor(bench: Bench, index: int) -> floor.FloorRun:
    progress(f"floor run {index + 1}: initdb + start + first query")
    return floor.measure(bench, index)


def _fresh_up(bench: Bench, slug: str) -> FreshUp:
    progress(f"fresh up of {slug}")
    marks: dict[str, float] = {}
    wall_start = time.time()
    started = time.monotonic()

    def note(message: str) -> None:
        if message.startswith(WAITING_MESSAGE):
            marks["started"] = time.monotonic() - started

    result = bench.runtime.up(minimal_document(slug), progress=note)
    elapsed = time.monotonic() - started
    if not result.changed:
        raise BenchError(f"{slug} was expected to be new, but up changed nothing")
    container = engine.find_container(bench.runtime.client, names.postgres_name(slug))
    lines = timeline.read(container) if container is not None else []
    ready_at = timeline.last_time(lines, READY_LINE)
    return FreshUp(
        seconds=elapsed,
        containers_started=marks.get("started"),
        initdb_seconds=timeline.first_number(lines, _INITDB_DONE),
        postgres_ready=None if ready_at is None else ready_at - wall_start,
    )


def _repeat_up(bench: Bench, slug: str, count: int) -> list[float]:
    progress(f"{count} x up on the existing {slug} (in-process)")
    timings = []
    for _ in range(count):
        started = time.monotonic()
        result = bench.runtime.up(minimal_document(slug))
        timings.append(time.monotonic() - started)
        if result.changed:
            raise BenchError(f"a repeated up changed {', '.join(result.changed)}")
    return timings


def _cli_command() -> list[str]:
    script = Path(sys.executable).parent / "sotadb"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from sotadb.cli.main import run; run()"]


def _cli(bench: Bench, arguments: list[str]) -> float:
    environment = {**os.environ, "SOTADB_HOME": str(bench.home)}
    started = time.monotonic()
    done = subprocess.run(
        [*_cli_command(), *arguments],
        env=environment,
        capture_output=True,  # stdout holds the (masked) URL: not printed
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise BenchError(f"sotadb {arguments[0]} failed: {done.stderr[-400:]}")
    return elapsed


def _cli_up(bench: Bench, slug: str, count: int) -> list[float]:
    progress(f"{count} x `sotadb up {slug}` (CLI, a new process each)")
    return [_cli(bench, ["up", slug]) for _ in range(count)]


def _cli_help(bench: Bench, count: int) -> list[float]:
    progress(f"{count} x `sotadb --help` (Python start-up and imports only)")
    return [_cli(bench, ["--help"]) for _ in range(count)]


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _s(value: float | None) -> str:
    return "-" if value is None else seconds(value)


def _report(
    fresh: list[FreshUp],
    floors: list[floor.FloorRun],
    repeats: list[float],
    cli: list[float],
    cli_help: list[float],
) -> SectionReport:
    report = SectionReport("provisioning")
    rows = []
    for index, (up, low) in enumerate(zip(fresh, floors, strict=True)):
        rows.append(
            [
                f"run {index + 1}",
                _s(up.seconds),
                _s(up.containers_started),
                _s(up.initdb_seconds),
                _s(up.postgres_ready),
                _s(up.pooler_lag),
                _s(low.seconds),
                _s(low.initdb_seconds),
                _s(up.down_seconds),
            ]
        )
    up_median = statistics.median(u.seconds for u in fresh)
    floor_median = statistics.median(f.seconds for f in floors)
    lag_median = _median([u.pooler_lag for u in fresh])
    rows.append(
        [
            "median",
            _s(up_median),
            _s(_median([u.containers_started for u in fresh])),
            _s(_median([u.initdb_seconds for u in fresh])),
            _s(_median([u.postgres_ready for u in fresh])),
            _s(lag_median),
            _s(floor_median),
            _s(_median([f.initdb_seconds for f in floors])),
            _s(_median([u.down_seconds for u in fresh])),
        ]
    )
    headers = [
        "",
        "sotadb up",
        "containers started",
        "initdb",
        "postgres ready",
        "-> query via pgbouncer",
        "floor",
        "floor initdb",
        "down --purge",
    ]
    report.tables.append(
        Table(
            "fresh up (new slug, new volume) vs floor (initdb + start + first query)", headers, rows
        )
    )
    floor_ratio = up_median / floor_median
    report.tables.append(
        Table(
            "ratio",
            ["", "value"],
            [["fresh up / floor (medians)", ratio(floor_ratio)]],
        )
    )
    repeat_rows = [
        _spread_row("up, in-process (wait for a query included)", repeats),
        _spread_row("`sotadb up NAME` (CLI, new process)", cli),
        _spread_row("`sotadb --help` (CLI start-up alone)", cli_help),
    ]
    report.tables.append(
        Table("up on an existing database", ["", "n", "median", "min", "max"], repeat_rows)
    )
    report.targets += [
        Target("provisioning.fresh_up_vs_floor", floor_ratio, "<=", FLOOR_RATIO_TARGET, "x"),
        Target(
            "provisioning.repeat_up_in_process",
            statistics.median(repeats),
            "<",
            REPEAT_UP_TARGET,
            "s",
        ),
    ]
    report.notes += [
        "columns after 'sotadb up' are offsets from the start of up(); 'postgres ready' is the "
        "real server's 'ready to accept connections' log line (engine timestamps), "
        "'-> query via pgbouncer' the time from there until up() had its answer",
        "floor: same image and initdb flags as the entrypoint, `exec postgres`, first "
        "`SELECT 1` over TCP polled from the host like wait_until_ready (no bootstrap server, "
        "no role/database, no PgBouncer, no network); created through the same docker-py "
        "client as sotadb, so neither side pays a `docker` CLI start-up",
        f"the repeat-up target applies to the in-process number; the CLI adds a Python process "
        f"(median {_s(_median(list(cli)))} in all, of which start-up and imports alone take "
        f"about {_s(_median(list(cli_help)))})",
    ]
    if lag_median is not None and lag_median > 0.3:
        report.notes.append(
            f"PgBouncer answered a median {lag_median:.2f} s after PostgreSQL was ready; "
            "pgbouncer.ini sets server_login_retry = 1, so a server login that failed while "
            "PostgreSQL was still bootstrapping is retried only a second later"
        )
    report.data = {
        "freshUp": [u.to_json() for u in fresh],
        "floor": [{"seconds": f.seconds, "initdbSeconds": f.initdb_seconds} for f in floors],
        "repeatUpInProcess": repeats,
        "repeatUpCli": cli,
        "cliHelp": cli_help,
        "freshUpVsFloor": floor_ratio,
    }
    return report


def _spread_row(label: str, values: list[float]) -> list[str]:
    if not values:
        return [label, "0", "-", "-", "-"]
    return [
        label,
        str(len(values)),
        seconds(statistics.median(values)),
        seconds(min(values)),
        seconds(max(values)),
    ]
