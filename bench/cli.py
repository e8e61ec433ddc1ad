"""`python -m bench [SECTION ...] [--quick] [--json PATH]`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final

from bench import hostpath, pooling, provisioning
from bench.harness import Bench
from bench.report import SectionReport, Target
from bench.settings import Settings
from sotadb.docker import engine

SECTIONS: Final[dict[str, Callable[[Bench], SectionReport]]] = {
    "provisioning": provisioning.run,
    "pooling": pooling.run,
    "hostpath": hostpath.run,
}


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="sotadb benchmarks: ratios measured side by side; a missed target is "
        "reported (MISS), not an error.",
    )
    parser.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help=f"one or more of {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke version of about a minute (CI)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument("--duration", type=int, help="pgbench -T seconds per run")
    parser.add_argument("--rounds", type=int, help="pgbench rounds per comparison")
    parser.add_argument("--scale", type=int, help="pgbench -i -s (scale factor)")
    arguments = parser.parse_args(argv)
    unknown = [s for s in arguments.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {', '.join(unknown)} (choose from {', '.join(SECTIONS)})")
    return arguments


def _settings(arguments: argparse.Namespace) -> Settings:
    settings = Settings.smoke() if arguments.quick else Settings.full()
    if arguments.duration is not None:
        settings = replace(settings, duration=max(1, arguments.duration))
    if arguments.rounds is not None:
        settings = replace(settings, rounds=max(1, arguments.rounds))
    if arguments.scale is not None:
        settings = replace(settings, scale=max(1, arguments.scale))
    return settings


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` removes what the bench created."""

    def handler(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _arguments(argv)
    settings = _settings(arguments)
    chosen = arguments.sections or list(SECTIONS)
    _stop_on_sigterm()
    started = time.monotonic()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    reports: dict[str, SectionReport] = {}
    crashed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sotadb-bench-") as home:
        bench = Bench.create(Path(home), settings)
        for image in (bench.runtime.images.postgres, bench.runtime.images.pooler):
            if not engine.image_exists(bench.runtime.client, image):
                print(f"image {image} is missing (fix: make images)", file=sys.stderr)
                return 1
        mode = "quick" if settings.quick else "full"
        print(f"sotadb bench ({mode}), run {bench.run_id}: {', '.join(chosen)}", flush=True)
        for name in chosen:
            section_started = time.monotonic()
            load_before = os.getloadavg()[0]
            try:
                report = SECTIONS[name](bench)
            except Exception:  # the bench itself broke: say so, go on, exit non-zero
                traceback.print_exc()
                crashed.append(name)
                print(f"section {name} CRASHED (see the traceback above)", flush=True)
                continue
            load_after = os.getloadavg()[0]
            report.data["loadAverage1m"] = {"before": load_before, "after": load_after}
            reports[name] = report
            print()
            print(report.render())
            print(
                f"({name} took {time.monotonic() - section_started:.0f} s; 1-minute load "
                f"average {load_before:.1f} before, {load_after:.1f} after, on "
                f"{os.cpu_count()} CPUs: other work on this host shows up as noise)",
                flush=True,
            )
    elapsed = time.monotonic() - started
    targets = [t for r in reports.values() for t in r.targets]
    _summary(targets, crashed, elapsed)
    if arguments.json is not None:
        _write_json(arguments.json, settings, started_at, elapsed, reports, crashed, bench.run_id)
    return 1 if crashed else 0


def _summary(targets: Sequence[Target], crashed: Sequence[str], elapsed: float) -> None:
    print()
    print("== summary " + "=" * 60)
    for target in targets:
        print(target.line())
    for name in crashed:
        print(f"section {name}: CRASHED (no measurement)")
    passed = sum(t.passed for t in targets)
    met = f"{passed}/{len(targets)} targets met" if targets else "no targets in these sections"
    print(f"{met}; bench took {elapsed:.0f} s", flush=True)


def _write_json(
    path: Path,
    settings: Settings,
    started_at: str,
    elapsed: float,
    reports: dict[str, SectionReport],
    crashed: Sequence[str],
    run_id: str,
) -> None:
    document: dict[str, Any] = {
        "version": 1,
        "run": run_id,
        "startedAt": started_at,
        "elapsedSeconds": round(elapsed, 1),
        "settings": asdict(settings),
        "machine": {"cpus": os.cpu_count()},
        "sections": {name: report.to_json() for name, report in reports.items()},
        "targets": [t.to_json() for r in reports.values() for t in r.targets],
        "crashed": list(crashed),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"results written to {path}")
