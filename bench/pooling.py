"""Section 2: PgBouncer (transaction mode, the default pool) against direct connections.

Two servers, provisioned from identical specs except the pool size:
  A  defaultPoolSize 20 (the default): PgBouncer keeps <= 20 server connections,
     max_connections = 50. The pooled runs, direct-20 and the reconnect runs hit A.
  B  defaultPoolSize 90: max_connections = 110, the smallest spec that admits 100 direct
     clients (sotadb derives max_connections from the pool and forbids setting it).
     Only direct-100 hits B; direct-20 on B is run too as a control of B against A.
pgbench runs in a container on the database's own network, as an app would.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Final

from bench import compare, pgbench
from bench.compare import Case, Measured
from bench.container_cpu import ContainerCpu
from bench.harness import Bench
from bench.report import SectionReport, Table, Target, progress, ratio
from bench.servers import Server
from sotadb import names

MANY: Final = 100
FEW: Final = 20
# Room above the 100 clients for the probes (pg_isready through PgBouncer every 5 s): with the
# default maxClientConnections (100) a probe can take the last slot while pgbench connects.
MAX_CLIENTS: Final = 200
SPEC_A: Final[Mapping[str, Any]] = {"pool": {"maxClientConnections": MAX_CLIENTS}}
SPEC_B: Final[Mapping[str, Any]] = {
    "pool": {"defaultPoolSize": 90, "maxClientConnections": MAX_CLIENTS}
}
POOLED_VS_DIRECT_MANY_TARGET: Final = 1.0
POOLED_VS_DIRECT_FEW_TARGET: Final = 0.85


def run(bench: Bench) -> SectionReport:
    with ExitStack() as stack:
        a = Server.of("A", stack.enter_context(bench.database(bench.slug("pool-a"), SPEC_A)))
        b = Server.of("B", stack.enter_context(bench.database(bench.slug("pool-b"), SPEC_B)))
        return _measure(bench, a, b)


def _measure(bench: Bench, a: Server, b: Server) -> SectionReport:
    settings = bench.settings
    client = bench.runtime.client
    runners = {
        server.label: pgbench.ContainerRunner(client, server.network, bench.labels())
        for server in (a, b)
    }
    for server in (a, b):
        runner = runners[server.label]
        progress(f"pgbench -i -s {settings.scale} on {server.label} (direct)")
        pgbench.initialise(runner, server.direct(), scale=settings.scale)
        progress(f"warm-up on {server.label}")
        warm = pgbench.Workload(FEW, max(2, settings.duration // 2), select_only=True)
        pgbench.run(runner, server.direct(), warm)

    def case(group: str, server: Server, pooled: bool, workload: pgbench.Workload) -> Case:
        kind = "pooled" if pooled else "direct"
        control = server is b and workload.clients == FEW
        return Case(
            key=f"{group}.{kind}{workload.clients}{'B' if control else ''}",
            label=f"{kind} {workload.clients}"
            + (" -C" if workload.reconnect else "")
            + (" (control)" if control else ""),
            server=server.label,
            path="PgBouncer" if pooled else "direct",
            runner=runners[server.label],
            connection=server.pooled() if pooled else server.direct(),
            workload=workload,
        )

    def load(clients: int, *, select_only: bool, reconnect: bool = False) -> pgbench.Workload:
        return pgbench.Workload(clients, settings.duration, select_only, reconnect)

    tpcb_cases = [
        case("tpcb", a, True, load(MANY, select_only=False)),
        case("tpcb", b, False, load(MANY, select_only=False)),
        case("tpcb", a, False, load(FEW, select_only=False)),
    ]
    if settings.diagnostics:
        tpcb_cases += [
            # The PgBouncer hop alone, without 100 clients queueing for 20 connections.
            case("tpcb", a, True, load(FEW, select_only=False)),
            # B against A: how much the two servers differ at all.
            case("tpcb", b, False, load(FEW, select_only=False)),
        ]
    select_cases = [
        case("select", a, True, load(MANY, select_only=True)),
        case("select", b, False, load(MANY, select_only=True)),
        case("select", a, False, load(FEW, select_only=True)),
    ]
    churn_cases = [
        case("reconnect", a, True, load(FEW, select_only=True, reconnect=True)),
        case("reconnect", a, False, load(FEW, select_only=True, reconnect=True)),
    ]
    cpu = {server.label: _cpu_probe(client, server) for server in (a, b)}
    tpcb = compare.interleave(tpcb_cases, settings.rounds, cpu)
    select = compare.interleave(select_cases, settings.rounds, cpu)
    churn = compare.interleave(churn_cases, settings.rounds, cpu)
    return _report(bench, a, b, tpcb, select, churn)


def _cpu_probe(client: Any, server: Server) -> compare.CpuProbe:
    containers = ContainerCpu(
        client,
        {"postgres": names.postgres_name(server.slug), "pgbouncer": names.pooler_name(server.slug)},
    )
    return containers.read


@dataclass(frozen=True)
class Ratio:
    label: str
    numerator: str  # keys of the measured cases
    denominator: str
    target: str | None = None
    threshold: float = 0.0


RATIOS: Final = (
    Ratio(
        "TPC-B pooled-100 / direct-100",
        "tpcb.pooled100",
        "tpcb.direct100",
        "pooling.tpcb.pooled100_vs_direct100",
        POOLED_VS_DIRECT_MANY_TARGET,
    ),
    Ratio(
        "TPC-B pooled-100 / direct-20",
        "tpcb.pooled100",
        "tpcb.direct20",
        "pooling.tpcb.pooled100_vs_direct20",
        POOLED_VS_DIRECT_FEW_TARGET,
    ),
    Ratio("TPC-B pooled-20 / direct-20 (the hop alone)", "tpcb.pooled20", "tpcb.direct20"),
    Ratio(
        "select-only pooled-100 / direct-100",
        "select.pooled100",
        "select.direct100",
        "pooling.select.pooled100_vs_direct100",
        POOLED_VS_DIRECT_MANY_TARGET,
    ),
    Ratio("select-only pooled-100 / direct-20", "select.pooled100", "select.direct20"),
    Ratio("-S -C pooled-20 / direct-20", "reconnect.pooled20", "reconnect.direct20"),
    Ratio("control: TPC-B direct-20 on B / on A", "tpcb.direct20B", "tpcb.direct20"),
)


def _report(
    bench: Bench,
    a: Server,
    b: Server,
    tpcb: Mapping[str, Measured],
    select: Mapping[str, Measured],
    churn: Mapping[str, Measured],
) -> SectionReport:
    settings = bench.settings
    report = SectionReport("pooling")
    server_settings = {s.label: s.settings(bench.runtime) for s in (a, b)}
    pools = {"A": "20", "B": "90"}
    report.tables.append(
        Table(
            "servers",
            ["server", "defaultPoolSize", *server_settings["A"]],
            [[label, pools[label], *values.values()] for label, values in server_settings.items()],
        )
    )
    report.tables += [
        compare.table("TPC-B (pgbench default script)", list(tpcb.values())),
        compare.table("select-only (-S)", list(select.values())),
        compare.table(
            "select-only, a new connection per transaction (-S -C)", list(churn.values())
        ),
    ]
    cpu_tables = [
        compare.cpu_table(f"CPU per transaction, ms ({title})", list(group.values()))
        for title, group in (("TPC-B", tpcb), ("select-only", select))
    ]
    report.tables += [t for t in cpu_tables if t is not None]
    measured = {**tpcb, **select, **churn}
    values = {
        r.label: measured[r.numerator].tps / measured[r.denominator].tps
        for r in RATIOS
        if r.numerator in measured and r.denominator in measured
    }
    values.update(_cpu_ceilings(measured))
    report.tables.append(
        Table("ratios (tps)", ["", "value"], [[k, ratio(v)] for k, v in values.items()])
    )
    report.targets += [
        Target(r.target, values[r.label], ">=", r.threshold, "x")
        for r in RATIOS
        if r.target is not None and r.label in values
    ]
    report.notes += [
        "fairness: 100 direct clients need max_connections >= 103 (3 are reserved for the "
        "superuser); sotadb derives max_connections = max(50, defaultPoolSize + 20) and forbids "
        "setting it, so direct-100 runs on server B (defaultPoolSize 90 -> max_connections 110); "
        "everything else runs on A, the default pool (20 -> max_connections 50). A and B differ "
        "only in those two numbers; both are initialised and warmed the same way"
        + (
            ", and the control row (direct-20 on B / on A) shows how much the servers differ"
            if settings.diagnostics
            else ""
        ),
        f"pgbench: scale {settings.scale}, -j 2, -T {settings.duration} s x {settings.rounds} "
        "round(s) per case (median shown), alternating the order per round; query mode: "
        "pgbench's default (simple protocol) for every run; run from a sotadb/postgres:17 "
        "container on the database's network, on the same 2 cores as PostgreSQL and PgBouncer",
        f"scale {settings.scale} has {settings.scale} branches: 100 direct TPC-B clients are "
        "100 backends queueing on those rows' locks on 2 cores; through PgBouncer the server "
        "sees at most 20"
        + (
            "; 'pooled 20' (TPC-B) isolates the cost of the extra hop"
            if settings.diagnostics
            else ""
        ),
        "CPU per transaction: each container's cgroup CPU (PostgreSQL with every backend; "
        "PgBouncer) read before and after each run, and pgbench's own (the shell's `times`), "
        "over the transactions it ran. These runs keep both cores busy, so tps follows CPU per "
        "transaction: the 'CPU ceiling' ratios (direct CPU / pooled CPU per transaction) are "
        "what pooling can reach here at best. A transaction through PgBouncer costs its CPU "
        "plus the client's extra for 100 connections instead of 20; on 2 shared cores both "
        "are taken from PostgreSQL",
        "-C opens a connection per transaction: the client's SCRAM exchange (PBKDF2, 4096 "
        "iterations, on the client) happens either way; through PgBouncer the server "
        "connection is reused instead of a backend being forked",
        f"maxClientConnections {MAX_CLIENTS} on both servers (default 100): pgbench's 100 "
        "clients plus the pg_isready probes through PgBouncer would otherwise race for the "
        "last slot; it sizes no pool and costs nothing",
    ]
    report.data = {
        "servers": server_settings,
        "tpcb": {k: m.to_json() for k, m in tpcb.items()},
        "select": {k: m.to_json() for k, m in select.items()},
        "reconnect": {k: m.to_json() for k, m in churn.items()},
        "ratios": values,
    }
    return report


CPU_CEILINGS: Final = (
    ("CPU ceiling: TPC-B direct-20 / pooled-100", "tpcb.direct20", "tpcb.pooled100"),
    ("CPU ceiling: TPC-B direct-100 / pooled-100", "tpcb.direct100", "tpcb.pooled100"),
    ("CPU ceiling: select-only direct-100 / pooled-100", "select.direct100", "select.pooled100"),
)


def _cpu_ceilings(measured: Mapping[str, Measured]) -> dict[str, float]:
    """Per-transaction CPU of the direct run over the pooled one's: the throughput ratio a
    CPU-bound pooled run can reach on these cores."""
    ceilings = {}
    for label, direct, pooled in CPU_CEILINGS:
        if direct not in measured or pooled not in measured:
            continue
        costs = [_cpu_per_transaction(measured[key]) for key in (direct, pooled)]
        if costs[0] is not None and costs[1]:
            ceilings[label] = costs[0] / costs[1]
    return ceilings


def _cpu_per_transaction(m: Measured) -> float | None:
    each = [m.cpu_ms_per_transaction(label) for label in compare.CPU_LABELS]
    return None if any(v is None for v in each) else sum(v for v in each if v is not None)
