"""Running pgbench (in a container on a database's network, or on this host) and reading it.

The password reaches pgbench only through PGPASSWORD in its environment: never on a command
line, never printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import docker
import requests.exceptions  # docker-py raises its transport's errors on time-outs

from bench.harness import POSTGRES_IMAGE, BenchError

# Slack on top of -T for connecting, the pre-run vacuum and container start-up.
RUN_SLACK_SECONDS = 120.0
OUTPUT_TAIL = 600


@dataclass(frozen=True)
class Connection:
    host: str
    port: int
    user: str
    database: str
    password: str = field(repr=False)

    def arguments(self) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", self.user]


@dataclass(frozen=True)
class Result:
    tps: float
    transactions: int
    failed: int
    latency_ms: float | None
    connection_ms: float | None  # average connection time, with -C
    client_cpu_seconds: float | None = None  # pgbench's own user + system CPU, when known

    def to_json(self) -> dict[str, Any]:
        return {
            "tps": round(self.tps, 1),
            "transactions": self.transactions,
            "failed": self.failed,
            "latencyMs": self.latency_ms,
            "connectionMs": self.connection_ms,
        }


class Runner(Protocol):
    description: str

    def run(self, arguments: Sequence[str], password: str, timeout: float) -> str:
        """Run pgbench with `arguments`; return its output, raise BenchError if it failed."""
        ...


class ContainerRunner:
    """pgbench from sotadb/postgres:17, in a throw-away container on `network`."""

    def __init__(self, client: Any, network: str, labels: Mapping[str, str]) -> None:
        self.client = client
        self.network = network
        self.labels = dict(labels)
        self.description = f"pgbench 17 in a {POSTGRES_IMAGE} container on network {network}"

    def run(self, arguments: Sequence[str], password: str, timeout: float) -> str:
        container = self.client.containers.run(
            POSTGRES_IMAGE,
            # `times` after pgbench: its CPU (user and system), for the CPU-per-transaction
            # table. The exit status stays pgbench's.
            command=["sh", "-c", 'pgbench "$@"; status=$?; times; exit $status', "sh", *arguments],
            environment={"PGPASSWORD": password},
            network=self.network,
            labels=self.labels,
            detach=True,
        )
        try:
            exit_code = _wait(container, timeout)
            output: str = container.logs().decode(errors="replace")
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        if exit_code != 0:
            raise BenchError(f"pgbench failed ({exit_code}): {output[-OUTPUT_TAIL:]}")
        return output


def _wait(container: Any, timeout: float) -> int:
    """The container's exit code: one blocking engine call (no polling during the run)."""
    try:
        status: dict[str, Any] = container.wait(timeout=timeout)
    except requests.exceptions.RequestException as e:
        raise BenchError(f"pgbench did not finish within {timeout:.0f}s") from e
    code: int = status.get("StatusCode", -1)
    return code


class HostRunner:
    """The host's own pgbench binary."""

    def __init__(self, executable: Path) -> None:
        self.executable = executable
        self.description = f"this host's {executable}"

    def run(self, arguments: Sequence[str], password: str, timeout: float) -> str:
        try:
            done = subprocess.run(
                [str(self.executable), *arguments],
                env={**os.environ, "PGPASSWORD": password},
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"pgbench did not finish within {timeout:.0f}s") from e
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise BenchError(f"pgbench failed ({done.returncode}): {output[-OUTPUT_TAIL:]}")
        return output


def initialise(runner: Runner, connection: Connection, *, scale: int) -> None:
    arguments = ["-i", "-q", "-s", str(scale), *connection.arguments(), connection.database]
    runner.run(arguments, connection.password, timeout=600)


@dataclass(frozen=True)
class Workload:
    clients: int
    duration: int
    select_only: bool = False
    reconnect: bool = False  # -C: a new connection for every transaction
    threads: int = 2

    def arguments(self) -> list[str]:
        # Query mode: pgbench's default (simple protocol), for every run alike.
        arguments = ["-c", str(self.clients), "-j", str(min(self.threads, self.clients))]
        arguments += ["-T", str(self.duration)]
        if self.select_only:
            arguments.append("-S")
        if self.reconnect:
            arguments.append("-C")
        return arguments


def run(runner: Runner, connection: Connection, workload: Workload) -> Result:
    arguments = [*workload.arguments(), *connection.arguments(), connection.database]
    output = runner.run(arguments, connection.password, workload.duration + RUN_SLACK_SECONDS)
    return parse(output)


_TPS = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)
_PROCESSED = re.compile(r"^number of transactions actually processed: ([0-9]+)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: ([0-9]+)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
_CONNECTION = re.compile(r"^average connection time = ([0-9.]+) ms", re.MULTILINE)
# The shell's `times`: its own line, then its children's (pgbench): "0m1.230s 0m0.450s".
_TIMES = re.compile(r"^(\d+)m([0-9.]+)s (\d+)m([0-9.]+)s\s*$", re.MULTILINE)


def parse(output: str) -> Result:
    found = _TPS.search(output)
    processed = _PROCESSED.search(output)
    if found is None or processed is None:
        raise BenchError(f"pgbench printed no tps: {output[-OUTPUT_TAIL:]}")
    failed = _FAILED.search(output)
    latency = _LATENCY.search(output)
    connection = _CONNECTION.search(output)
    return Result(
        tps=float(found[1]),
        transactions=int(processed[1]),
        failed=int(failed[1]) if failed else 0,
        latency_ms=float(latency[1]) if latency else None,
        connection_ms=float(connection[1]) if connection else None,
        client_cpu_seconds=_children_cpu(output),
    )


def _children_cpu(output: str) -> float | None:
    found = _TIMES.findall(output)
    if len(found) < 2:
        return None
    user_minutes, user_seconds, system_minutes, system_seconds = found[-1]
    return (
        60 * (int(user_minutes) + int(system_minutes)) + float(user_seconds) + float(system_seconds)
    )


def median_tps(results: Sequence[Result]) -> float:
    """The median over rounds: a neighbour's burst on this shared host moves it least."""
    return statistics.median(r.tps for r in results)
