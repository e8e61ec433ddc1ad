"""Section 3: reaching PgBouncer from this host: the published 127.0.0.1 port vs the bridge IP.

Same pgbench (select-only), same clients and duration, same PgBouncer; only the path differs:
(a) 127.0.0.1:<published port> goes through docker-proxy, a userland copy loop;
(b) the container's address on the database's bridge network is plain kernel routing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Final

from bench import compare, pgbench
from bench.compare import Case
from bench.harness import Bench
from bench.report import SectionReport, Table, ratio
from bench.servers import Server
from sotadb import names

CLIENTS: Final = 20


def _host_runner(bench: Bench) -> pgbench.Runner:
    """The host's pgbench if it has one, else pgbench 17 in a container in the host's netns
    (where 127.0.0.1 is the host's loopback and the bridge addresses are routed the same)."""
    found = shutil.which("pgbench")
    if found:
        return pgbench.HostRunner(Path(found))
    return pgbench.ContainerRunner(bench.runtime.client, "host", bench.labels())


def run(bench: Bench) -> SectionReport:
    settings = bench.settings
    slug = bench.slug("host")
    with bench.database(slug) as up:
        server = Server.of("A", up)
        runner = _host_runner(bench)
        pooled = server.pooled()
        bridge = bench.runtime.pooler_endpoint(slug)
        published = up.host_ports[names.pooler_name(slug)]
        workload = pgbench.Workload(CLIENTS, settings.duration, select_only=True)
        initialise = pgbench.ContainerRunner(bench.runtime.client, server.network, bench.labels())
        pgbench.initialise(initialise, server.direct(), scale=settings.scale)
        via_proxy = pgbench.Connection(
            "127.0.0.1", published, pooled.user, pooled.database, pooled.password
        )
        via_bridge = pgbench.Connection(
            bridge.host, bridge.port, pooled.user, pooled.database, pooled.password
        )
        cases = [
            Case(
                "published",
                "127.0.0.1 published port",
                "A",
                f"docker-proxy :{published}",
                runner,
                via_proxy,
                workload,
            ),
            Case(
                "bridge",
                "bridge IP",
                "A",
                f"{bridge.host}:{bridge.port}",
                runner,
                via_bridge,
                workload,
            ),
        ]
        # Warm-up through the fast path, so neither measured case pays for a cold cache.
        pgbench.run(runner, via_bridge, pgbench.Workload(CLIENTS, 2, select_only=True))
        measured = compare.interleave(cases, settings.rounds)
    report = SectionReport("hostpath")
    report.tables.append(
        compare.table("select-only through PgBouncer, from this host", list(measured.values()))
    )
    bridge_vs_published = measured["bridge"].tps / measured["published"].tps
    report.tables.append(
        Table(
            "ratio (tps)",
            ["", "value"],
            [["bridge IP / published port", ratio(bridge_vs_published)]],
        )
    )
    report.notes += [
        f"client: {runner.description}; {CLIENTS} clients, -j 2, -S, -T {settings.duration} s x "
        f"{settings.rounds} round(s) (median shown), alternating order",
        "sotadb's own host-side code uses the bridge IP: DockerRuntime.pooler_endpoint (up's "
        "readiness query); `sotadb url --host-port` prints the published 127.0.0.1 port for "
        "users' host apps, because on Docker Desktop (macOS/Windows) bridge IPs are not "
        "routable from the host, and the published port is the only portable path",
    ]
    report.data = {
        "cases": {k: m.to_json() for k, m in measured.items()},
        "bridgeVsPublished": bridge_vs_published,
    }
    return report
