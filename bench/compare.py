"""Side-by-side pgbench runs: every case once per round, alternating the order each round, so
a slow drift (checkpoints, autovacuum, the neighbours on this host) is spread over all cases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench import pgbench
from bench.report import Table, progress, tps


@dataclass(frozen=True)
class Case:
    key: str  # stable name, used in the JSON and for ratios
    label: str  # how the table shows it
    server: str
    path: str
    runner: pgbench.Runner
    connection: pgbench.Connection
    workload: pgbench.Workload


@dataclass(frozen=True)
class Measured:
    case: Case
    results: tuple[pgbench.Result, ...]

    @property
    def tps(self) -> float:
        return pgbench.median_tps(self.results)

    def row(self) -> list[str]:
        latencies = [r.latency_ms for r in self.results if r.latency_ms is not None]
        latency = f"{sum(latencies) / len(latencies):.1f} ms" if latencies else "-"
        return [
            self.case.label,
            self.case.server,
            self.case.path,
            str(self.case.workload.clients),
            tps(self.tps),
            " / ".join(tps(r.tps) for r in self.results),
            self.spread(),
            latency,
            str(sum(r.failed for r in self.results)),
        ]

    def spread(self) -> str:
        """Highest round over lowest: how much the neighbours moved this case."""
        values = [r.tps for r in self.results]
        return "-" if len(values) < 2 or min(values) <= 0 else f"{max(values) / min(values):.2f}"

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.case.label,
            "server": self.case.server,
            "path": self.case.path,
            "clients": self.case.workload.clients,
            "selectOnly": self.case.workload.select_only,
            "reconnect": self.case.workload.reconnect,
            "duration": self.case.workload.duration,
            "tps": round(self.tps, 1),
            "runs": [r.to_json() for r in self.results],
        }


HEADERS = (
    "run",
    "server",
    "path",
    "clients",
    "tps (median)",
    "tps per round",
    "max/min",
    "latency",
    "failed",
)


def interleave(cases: Sequence[Case], rounds: int) -> dict[str, Measured]:
    collected: dict[str, list[pgbench.Result]] = {case.key: [] for case in cases}
    for round_index in range(rounds):
        order = list(cases) if round_index % 2 == 0 else list(reversed(cases))
        for case in order:
            progress(f"round {round_index + 1}/{rounds}: {case.label} ({case.path})")
            result = pgbench.run(case.runner, case.connection, case.workload)
            progress(f"  {tps(result.tps)} tps")
            collected[case.key].append(result)
    return {case.key: Measured(case, tuple(collected[case.key])) for case in cases}


def table(title: str, measured: Sequence[Measured]) -> Table:
    return Table(title, HEADERS, [m.row() for m in measured])
