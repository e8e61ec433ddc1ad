"""Side-by-side pgbench runs: every case once per round, alternating the order each round, so
a slow drift (checkpoints, autovacuum, the neighbours on this host) is spread over all cases."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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


# Cumulative CPU seconds of the servers' containers by label ("postgres", "pgbouncer").
CpuProbe = Callable[[], Mapping[str, float] | None]


@dataclass(frozen=True)
class Measured:
    case: Case
    results: tuple[pgbench.Result, ...]
    # CPU seconds over every round, by label, with pgbench's own as "pgbench"; empty when
    # not measured.
    cpu_seconds: Mapping[str, float] = field(default_factory=dict)

    def cpu_ms_per_transaction(self, label: str) -> float | None:
        if label not in self.cpu_seconds:
            return None
        transactions = sum(r.transactions for r in self.results)
        return 1000 * self.cpu_seconds[label] / max(1, transactions)

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


def interleave(
    cases: Sequence[Case], rounds: int, cpu: Mapping[str, CpuProbe] | None = None
) -> dict[str, Measured]:
    """`cpu`: per server label, a probe read before and after each of its runs."""
    collected: dict[str, list[pgbench.Result]] = {case.key: [] for case in cases}
    used: dict[str, dict[str, float]] = {case.key: {} for case in cases}
    measured_cpu = {case.key: cpu is not None and case.server in cpu for case in cases}
    for round_index in range(rounds):
        order = list(cases) if round_index % 2 == 0 else list(reversed(cases))
        for case in order:
            progress(f"round {round_index + 1}/{rounds}: {case.label} ({case.path})")
            probe = None if cpu is None else cpu.get(case.server)
            before = None if probe is None else probe()
            result = pgbench.run(case.runner, case.connection, case.workload)
            after = None if probe is None else probe()
            if before is None or after is None or result.client_cpu_seconds is None:
                measured_cpu[case.key] = False
            else:
                spent = {k: after[k] - before[k] for k in after}
                spent["pgbench"] = result.client_cpu_seconds
                for label, seconds in spent.items():
                    used[case.key][label] = used[case.key].get(label, 0.0) + seconds
            progress(f"  {tps(result.tps)} tps")
            collected[case.key].append(result)
    return {
        case.key: Measured(
            case, tuple(collected[case.key]), dict(used[case.key]) if measured_cpu[case.key] else {}
        )
        for case in cases
    }


def table(title: str, measured: Sequence[Measured]) -> Table:
    return Table(title, HEADERS, [m.row() for m in measured])


CPU_LABELS = ("postgres", "pgbouncer", "pgbench")


def cpu_table(title: str, measured: Sequence[Measured]) -> Table | None:
    """CPU milliseconds per transaction by container (pgbench: the client): where a CPU-bound
    run's time goes. None when nothing was measured."""
    rows = []
    for m in measured:
        each = [m.cpu_ms_per_transaction(label) for label in CPU_LABELS]
        if any(v is None for v in each):
            continue
        values = [v for v in each if v is not None]
        rows.append([m.case.label, *(f"{v:.3f}" for v in values), f"{sum(values):.3f}"])
    return Table(title, ["run", *CPU_LABELS, "total"], rows) if rows else None
