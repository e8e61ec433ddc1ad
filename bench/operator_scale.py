"""`python -m bench.operator_scale [--quick] [--sizes N ...] [--json PATH] [--logs DIR]`: the
operator at 10, 100 and 1,000 ManagedDatabases (`--quick`: 10 and 100), against the emulated
Kubernetes API (tests/support/kubeemu).

The operator runs as in production, in its own process: `sotadb operator` (kopf, cluster-wide,
peering `sotadb` with kopf's peering CRDs and object from manifests/, plain logs to a file).
The emulator serves from a thread of this process. For each size, with a fresh emulator:

- burst: the bench creates N databases over HTTP as fast as it can (over 10 namespaces) while
  an operator with the production resync (300 s) runs; measured: seconds from the first create
  until every database has its 12 rendered objects and a status, the operator's API requests
  per database (told apart by user agent: kopf's `kopf/…`, its client's `sotadb-operator/…`;
  kopf's peering keep-alives apart), its CPU seconds and RSS (/proc/PID/status VmRSS, VmHWM);
- restart and idle: that operator is stopped (SIGTERM), a new one with a short resync starts;
  measured: seconds until every database's resume handler ran, the writes meanwhile, then the
  writes during two resync periods (the timers demonstrably run: counted from its log).

Where the time goes is reported too: the operator's CPU seconds against this process's (the
emulator and the bench's client). By default `yaml.safe_load` is made JSON-first for the run
(`fast_yaml`), or the emulator's pure-Python YAML parsing of apply bodies dominates everything;
`--pure-yaml` measures the emulator as it is. Targets print as `target NAME: measured X
(target Y) PASS|MISS`; a MISS is not an error, only a crash makes the exit status non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pathlib
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import yaml

from bench.report import SectionReport, Table, Target, progress

REPO: Final = pathlib.Path(__file__).resolve().parents[1]
_SUPPORT = str(REPO / "tests" / "support")
if _SUPPORT not in sys.path:  # the emulator is test support, not a package of the project
    sys.path.insert(0, _SUPPORT)

from kubeemu import KubeEmulator  # noqa: E402

from sotadb.kube.api import USER_AGENT  # noqa: E402

BENCH_AGENT: Final = "sotadb-bench"
OPERATOR_AGENTS: Final = ("kopf/", USER_AGENT)
PEERING_PLURALS: Final = {"clusterkopfpeerings", "kopfpeerings"}
MANAGED: Final = "app.kubernetes.io/managed-by=sotadb"
RENDERED_PER_DATABASE: Final = 12
OWNED: Final = (
    "secrets",
    "configmaps",
    "services",
    "networkpolicies.networking.k8s.io",
    "statefulsets.apps",
    "deployments.apps",
    "persistentvolumeclaims",
    "cronjobs.batch",
)
MANIFESTS: Final = (
    REPO / "crds" / "manageddatabases.sota.io.yaml",
    REPO / "crds" / "databasebackups.sota.io.yaml",
    REPO / "manifests" / "kopf-peering-crds.yaml",
    REPO / "manifests" / "kopf-peering.yaml",
)
MB: Final = 1024 * 1024
PRODUCTION_RESYNC: Final = 300.0
IDLE_RESYNC: Final = 5.0

# Targets.
CONVERGE_SECONDS: Final = 60.0
REQUESTS_PER_DATABASE: Final = 15.0
IDLE_WRITES: Final = 0.0
RSS_MB_AT_1000: Final = 150.0


@dataclass(frozen=True)
class Measure(Target):
    """A target in the bench's summary format, for units the shared report does not know."""

    def line(self) -> str:
        verdict = "PASS" if self.passed else "MISS"
        return (
            f"target {self.name}: measured {_format(self.measured, self.unit)} "
            f"(target {self.comparison} {_format(self.threshold, self.unit)}) {verdict}"
        )


def _format(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.1f} s"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:.2f} {unit}".rstrip()


@dataclass(frozen=True)
class Run:
    databases: int
    namespaces: int
    resync_seconds: float  # of the restarted operator (phase B)
    startup_seconds: float
    # Phase A: the burst.
    create_seconds: float  # the bench's own POSTs, all of them
    converge_seconds: float  # first POST until all converged
    requests: int  # the operator's, from the first POST until converged
    writes: int
    requests_by_verb: dict[str, int]
    peering_requests: int  # kopf's peering keep-alives meanwhile (not counted above)
    rss_samples: list[tuple[float, float]]  # (seconds since the first create, VmRSS MB)
    operator_cpu_seconds: float
    bench_cpu_seconds: float  # this process: the emulator's thread and the bench's client
    emulator_requests: int
    rss_mb: float
    peak_rss_mb: float
    # Phase B: a restarted operator, then idle.
    resume_seconds: float  # restart until every database's resume handler ran
    restart_writes: int
    idle_seconds: float
    idle_writes: int  # to anything but kopf's peering objects
    idle_requests: int
    idle_peering_writes: int
    resyncs_run: int  # "Timer 'resync' succeeded" in the idle window: the timers did run
    restarted_rss_mb: float
    restarted_peak_rss_mb: float

    @property
    def requests_per_database(self) -> float:
        return self.requests / self.databases


# ---------------------------------------------------------------- the operator's process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def operator_process(
    kubeconfig: pathlib.Path, log: pathlib.Path, resync_seconds: float
) -> Iterator[subprocess.Popen[bytes]]:
    """`sotadb operator` as in production (cluster-wide, peering `sotadb`), plain logs."""
    command = [
        sys.executable,
        "-c",
        "from sotadb.cli.main import run; run()",
        "operator",
        "--kubeconfig",
        str(kubeconfig),
        "--plain-logs",
        "--liveness",
        f"http://127.0.0.1:{_free_port()}/healthz",
        "--resync-seconds",
        str(resync_seconds),
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=environment
        )
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a live process, in MB."""
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024 / MB
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process."""
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    after_name = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(after_name[11]) + int(after_name[12])) / ticks


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def fast_yaml() -> Iterator[None]:
    """The emulator parses every server-side-apply body (`application/apply-patch+yaml`) with
    PyYAML's pure-Python `safe_load`, twice (for kmock and for the store): at 300 databases
    that was 72% of the emulator's time. The operator sends JSON (YAML's subset), so for the
    bench's duration `yaml.safe_load` tries JSON first, then libyaml, then PyYAML itself."""
    original = yaml.safe_load

    def safe_load(stream: Any) -> Any:
        if isinstance(stream, bytes | str):
            text = stream.decode() if isinstance(stream, bytes) else stream
            if text.lstrip()[:1] in ("{", "["):
                with contextlib.suppress(ValueError):
                    return json.loads(text)
            if yaml.__with_libyaml__:
                return yaml.load(text, Loader=yaml.CSafeLoader)
        return original(stream)

    yaml.safe_load = safe_load
    try:
        yield
    finally:
        yaml.safe_load = original


# ---------------------------------------------------------------- talking to the emulator


class Client:
    """The bench's own HTTP client: one keep-alive connection, its own user agent."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def close(self) -> None:
        self.connection.close()

    def post(self, path: str, document: dict[str, Any]) -> None:
        self.connection.request(
            "POST",
            path,
            json.dumps(document),
            {"Content-Type": "application/json", "User-Agent": BENCH_AGENT},
        )
        response = self.connection.getresponse()
        body = response.read()
        if response.status >= 300:
            raise RuntimeError(f"POST {path}: {response.status} {body[:300]!r}")

    def create(self, document: dict[str, Any]) -> None:
        api_version, kind = document["apiVersion"], document["kind"]
        namespace = (document.get("metadata") or {}).get("namespace")
        root = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        plural = {
            "CustomResourceDefinition": "customresourcedefinitions",
            "ClusterKopfPeering": "clusterkopfpeerings",
            "Namespace": "namespaces",
            "ManagedDatabase": "manageddatabases",
        }[kind]
        where = f"/namespaces/{namespace}" if namespace else ""
        self.post(f"{root}{where}/{plural}", document)


def namespaces_for(count: int) -> list[str]:
    return [f"bench-{i}" for i in range(count)]


def database(index: int, namespaces: Sequence[str]) -> dict[str, Any]:
    return {
        "apiVersion": "sota.io/v1",
        "kind": "ManagedDatabase",
        "metadata": {"name": f"db-{index:04d}", "namespace": namespaces[index % len(namespaces)]},
        "spec": {},
    }


def converged_count(emu: KubeEmulator) -> int:
    """Databases with a status and every rendered object, read from the store (not logged)."""
    objects: Counter[tuple[str, str]] = Counter()
    for resource_name in OWNED:
        for obj in emu.objects(resource_name, None, labels=MANAGED):
            metadata = obj["metadata"]
            objects[(metadata["namespace"], metadata["labels"]["app.kubernetes.io/instance"])] += 1
    done = 0
    for mdb in emu.objects("manageddatabases.sota.io", None):
        metadata = mdb["metadata"]
        status = mdb.get("status") or {}
        key = (metadata["namespace"], metadata["name"])
        if status.get("phase") and objects[key] >= RENDERED_PER_DATABASE:
            done += 1
    return done


def wait_until(probe: Any, timeout: float, interval: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(interval)
    return False


def operator_watching(emu: KubeEmulator, since: int) -> bool:
    return any(
        c.verb == "watch" and c.plural == "manageddatabases" and c.user_agent.startswith("kopf/")
        for c in emu.calls(since)
    )


# ---------------------------------------------------------------- one run


def run_once(
    databases: int, namespace_count: int, resync_seconds: float, workdir: pathlib.Path
) -> Run:
    """Phase A: an operator with the production resync (300 s, so that no timer fires while it
    converges) and a burst of creates. Phase B: that operator is stopped and a new one started
    with a short resync; its restart and two resync periods are the idle measurement."""
    namespaces = namespaces_for(namespace_count)
    with KubeEmulator(bookmark_interval=30.0, history=max(100_000, databases * 40)) as emu:
        kubeconfig = emu.write_kubeconfig(workdir / f"kubeconfig-{databases}")
        client = Client(emu.port)
        try:
            for path in MANIFESTS:
                for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                    if document:
                        client.create(document)
            for name in namespaces:
                client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            log = workdir / f"operator-{databases}.log"
            with operator_process(kubeconfig, log, PRODUCTION_RESYNC) as process:
                startup = _started(emu, process, log)
                progress(f"{databases} databases: operator up in {startup:.1f} s; creating")
                burst = _burst(emu, client, process, databases, namespaces)
            log = workdir / f"operator-{databases}-restarted.log"
            with operator_process(kubeconfig, log, resync_seconds) as process:
                idle = _idle(emu, process, log, databases, resync_seconds)
        finally:
            client.close()
    return Run(
        databases=databases,
        namespaces=len(namespaces),
        resync_seconds=resync_seconds,
        startup_seconds=startup,
        **burst,
        **idle,
    )


def _started(
    emu: KubeEmulator, process: subprocess.Popen[bytes], log: pathlib.Path, timeout: float = 60
) -> float:
    """Seconds until the operator watches ManagedDatabases (kopf lists every kind first)."""
    started = time.monotonic()
    mark = emu.mark()
    if not wait_until(
        lambda: operator_watching(emu, mark) or process.poll() is not None, timeout, 0.2
    ):
        raise RuntimeError(f"the operator did not start; see {log}")
    if process.poll() is not None:
        raise RuntimeError(f"the operator exited with {process.returncode}; see {log}")
    return time.monotonic() - started


def _burst(
    emu: KubeEmulator,
    client: Client,
    process: subprocess.Popen[bytes],
    databases: int,
    namespaces: Sequence[str],
) -> dict[str, Any]:
    time.sleep(1.0)  # let it settle: the window below holds only its reactions
    cpu_operator, cpu_bench = cpu_seconds(process.pid), _own_cpu_seconds()
    mark = emu.mark()
    first = time.monotonic()
    for index in range(databases):
        client.create(database(index, namespaces))
    created = time.monotonic() - first
    progress(f"{databases} databases: created in {created:.1f} s; waiting for convergence")
    interval = 0.2 if databases <= 100 else 1.0
    timeout = max(120.0, databases * 0.6)
    last_report = time.monotonic()
    rss_samples: list[tuple[float, float]] = []

    reported: set[tuple[str | None, str | None]] = set()
    seen = mark

    def done() -> bool:
        """Status patches in the request log (cheap) until every database has had one; then
        the stored objects are counted (a copy of every object: the emulator's time)."""
        nonlocal last_report, seen
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited with {process.returncode}")
        calls = emu.calls(seen)
        seen += len(calls)
        reported.update(
            (c.namespace, c.name)
            for c in calls
            if c.resource == "manageddatabases.sota.io/status" and c.status == 200
        )
        count = converged_count(emu) if len(reported) >= databases else len(reported)
        rss_samples.append((time.monotonic() - first, memory_mb(process.pid)[0]))
        if time.monotonic() - last_report > 10:
            progress(f"  {count}/{databases} converged after {time.monotonic() - first:.0f} s")
            last_report = time.monotonic()
        return count >= databases

    if not wait_until(done, timeout, interval):
        raise RuntimeError(f"not converged in {timeout:.0f} s")
    converge = time.monotonic() - first
    operator = [c for c in emu.calls(mark) if c.user_agent.startswith(OPERATOR_AGENTS)]
    calls = [c for c in operator if not _peering(c.plural)]
    rss, peak = memory_mb(process.pid)
    progress(f"{databases} databases: converged in {converge:.1f} s")
    return {
        "create_seconds": created,
        "converge_seconds": converge,
        "requests": len(calls),
        "writes": sum(c.is_write for c in calls),
        "requests_by_verb": dict(Counter(c.verb for c in calls)),
        "peering_requests": len(operator) - len(calls),
        "rss_samples": rss_samples[:: max(1, len(rss_samples) // 20)],
        "operator_cpu_seconds": cpu_seconds(process.pid) - cpu_operator,
        "bench_cpu_seconds": _own_cpu_seconds() - cpu_bench,
        "emulator_requests": len(emu.calls(mark)),
        "rss_mb": rss,
        "peak_rss_mb": peak,
    }


def _idle(
    emu: KubeEmulator,
    process: subprocess.Popen[bytes],
    log: pathlib.Path,
    databases: int,
    resync: float,
) -> dict[str, Any]:
    mark = emu.mark()
    started = time.monotonic()
    # On a restart the operator lists every owned object, workload and database, and kopf the
    # ManagedDatabases, before any handler runs (see the report's notes): wait long enough.
    timeout = max(60.0, databases * 0.9)
    _started(emu, process, log, timeout)

    def resumed() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited with {process.returncode}; see {log}")
        return _log_count(log, "Handler 'reconcile-on-resume' succeeded") >= databases

    if not wait_until(resumed, timeout, 0.5):
        raise RuntimeError(f"the restarted operator did not resume every database; see {log}")
    resume_seconds = time.monotonic() - started
    restart = [
        c for c in emu.calls(mark) if c.user_agent.startswith(OPERATOR_AGENTS) and c.is_write
    ]
    progress(f"restarted and resumed in {resume_seconds:.1f} s; idle for two resyncs of {resync} s")
    idle_mark = emu.mark()
    timers_before = _log_count(log, "Timer 'resync' succeeded")
    idle_started = time.monotonic()
    time.sleep(2 * resync + 1.0)
    idle = [c for c in emu.calls(idle_mark) if c.user_agent.startswith(OPERATOR_AGENTS)]
    peering = [c for c in idle if c.is_write and _peering(c.plural)]
    ours = [c for c in idle if c.is_write and not _peering(c.plural)]
    rss, peak = memory_mb(process.pid)
    return {
        "resume_seconds": resume_seconds,
        "restart_writes": sum(not _peering(c.plural) for c in restart),
        "idle_seconds": time.monotonic() - idle_started,
        "idle_writes": len(ours),
        "idle_requests": len(idle),
        "idle_peering_writes": len(peering),
        "resyncs_run": _log_count(log, "Timer 'resync' succeeded") - timers_before,
        "restarted_rss_mb": rss,
        "restarted_peak_rss_mb": peak,
    }


def _peering(plural: str | None) -> bool:
    return (plural or "") in PEERING_PLURALS


def _log_count(log: pathlib.Path, text: str) -> int:
    return log.read_text(encoding="utf-8", errors="replace").count(text)


# ---------------------------------------------------------------- the section


def run_section(
    quick: bool = False,
    sizes: Sequence[int] | None = None,
    workdir: pathlib.Path | None = None,
    fast_parsing: bool = True,
) -> SectionReport:
    """The operator-scale section, for `python -m bench` (see the module docstring). The
    operator's logs go to `workdir` if given (kept), else to a temporary directory."""
    sizes = list(sizes or ((10, 100) if quick else (10, 100, 1000)))
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        if fast_parsing:
            stack.enter_context(fast_yaml())
        if workdir is None:
            home = stack.enter_context(tempfile.TemporaryDirectory(prefix="sotadb-op-scale-"))
            workdir = pathlib.Path(home)
        workdir.mkdir(parents=True, exist_ok=True)
        for size in sizes:
            resync = IDLE_RESYNC if size <= 100 else 2 * IDLE_RESYNC
            runs.append(run_once(size, min(10, size), resync, workdir))
    return report(runs)


def report(runs: Sequence[Run]) -> SectionReport:
    section = SectionReport("operator-scale")
    section.tables.append(
        Table(
            "burst: N creates, then until all converged (operator with resync 300 s)",
            [
                "databases",
                "converge",
                "create",
                "req/db",
                "writes/db",
                "operator CPU",
                "bench CPU",
                "RSS",
                "RSS peak",
            ],
            [
                [
                    str(r.databases),
                    f"{r.converge_seconds:.1f} s",
                    f"{r.create_seconds:.1f} s",
                    f"{r.requests_per_database:.2f}",
                    f"{r.writes / r.databases:.2f}",
                    f"{r.operator_cpu_seconds:.1f} s",
                    f"{r.bench_cpu_seconds:.1f} s",
                    f"{r.rss_mb:.0f} MB",
                    f"{r.peak_rss_mb:.0f} MB",
                ]
                for r in runs
            ],
        )
    )
    section.tables.append(
        Table(
            "restart and idle: a new operator on the converged databases, then two resyncs",
            [
                "databases",
                "resumed",
                "writes on restart",
                "resync",
                "idle",
                "resyncs run",
                "idle requests",
                "idle writes",
                "peering keep-alives",
                "RSS",
                "RSS peak",
            ],
            [
                [
                    str(r.databases),
                    f"{r.resume_seconds:.1f} s",
                    str(r.restart_writes),
                    f"{r.resync_seconds:.0f} s",
                    f"{r.idle_seconds:.0f} s",
                    str(r.resyncs_run),
                    str(r.idle_requests),
                    str(r.idle_writes),
                    str(r.idle_peering_writes),
                    f"{r.restarted_rss_mb:.0f} MB",
                    f"{r.restarted_peak_rss_mb:.0f} MB",
                ]
                for r in runs
            ],
        )
    )
    section.notes += [
        "converge: first create until every database has its 12 objects and a status; create: "
        "the bench's own POSTs (sequential, one connection, over the namespaces bench-0..9)",
        "req/db: the operator's requests (user agents kopf/… and sotadb-operator/…) from "
        "the first create until converged, divided by the databases; kopf's peering "
        f"keep-alives meanwhile are not counted ({sum(r.peering_requests for r in runs)} "
        "in all runs)",
        "RSS: VmRSS when converged; RSS peak: VmHWM. Over time (s, MB) at the largest size: "
        + ", ".join(
            f"{t:.0f}:{m:.0f}" for t, m in max(runs, key=lambda r: r.databases).rss_samples
        ),
        "operator CPU: the operator's process; bench CPU: this process, i.e. the in-process "
        "Python emulator (one event loop) and the bench's client. When bench CPU approaches "
        "the converge time, the emulator is the bottleneck, not the operator",
        "restart: a new operator (the first one stopped with SIGTERM) until every database's "
        "resume handler ran; idle: then two resync periods, with `resyncs run` counting the "
        "timers that ran in it; peering keep-alives are kopf's liveness on the "
        "ClusterKopfPeering `sotadb` and are not counted as writes",
        "resumed: a restarted operator first lists every owned object, workload and database "
        "into its own lean snapshots (sotadb/kube/watch.py; kopf watches no workload), then "
        "kopf lists and handles the ManagedDatabases (the backups' indexes gate the handlers "
        "until every database is indexed); each database's resume handler then reconciles "
        "without reading anything",
        "each size runs against a fresh emulator; peering is on, as in production",
    ]
    largest = max(runs, key=lambda r: r.databases)
    section.targets += [
        Measure(
            f"operator converges {largest.databases} databases",
            largest.converge_seconds,
            "<=",
            CONVERGE_SECONDS,
            "s",
        ),
        Measure(
            f"operator requests per database on create ({largest.databases})",
            largest.requests_per_database,
            "<=",
            REQUESTS_PER_DATABASE,
            "",
        ),
        Measure(
            f"operator writes per idle resync ({largest.databases})",
            largest.idle_writes,
            "<=",
            IDLE_WRITES,
            "",
        ),
    ]
    section.targets += [
        Measure(
            f"operator peak RSS at {r.databases} databases",
            r.peak_rss_mb,
            "<=",
            RSS_MB_AT_1000,
            "MB",
        )
        for r in runs
    ]
    section.targets += [
        Measure(
            f"operator resumes {largest.databases} databases after a restart",
            largest.resume_seconds,
            "<=",
            CONVERGE_SECONDS,
            "s",
        ),
        Measure(
            f"operator peak RSS after a restart at {largest.databases} databases",
            largest.restarted_peak_rss_mb,
            "<=",
            RSS_MB_AT_1000,
            "MB",
        ),
    ]
    section.data["runs"] = [
        {**asdict(r), "requestsPerDatabase": round(r.requests_per_database, 3)} for r in runs
    ]
    return section


# ---------------------------------------------------------------- `python -m bench.operator_scale`


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.operator_scale",
        description="The operator at scale against the emulated Kubernetes API.",
    )
    parser.add_argument("--quick", action="store_true", help="10 and 100 databases only")
    parser.add_argument("--sizes", type=int, nargs="+", metavar="N", help="database counts")
    parser.add_argument("--json", type=pathlib.Path, metavar="PATH", help="also write results")
    parser.add_argument(
        "--logs", type=pathlib.Path, metavar="DIR", help="keep the operator's logs here"
    )
    parser.add_argument(
        "--pure-yaml",
        action="store_true",
        help="let the emulator parse apply bodies with pure-Python PyYAML (its own default)",
    )
    arguments = parser.parse_args(argv)
    started = time.monotonic()
    try:
        section = run_section(quick=arguments.quick, sizes=arguments.sizes, workdir=arguments.logs)
    except Exception:
        import traceback

        traceback.print_exc()
        print("section operator-scale CRASHED (see the traceback above)", flush=True)
        return 1
    print(section.render())
    print()
    print("== summary " + "=" * 60)
    for target in section.targets:
        print(target.line())
    passed = sum(t.passed for t in section.targets)
    print(f"{passed}/{len(section.targets)} targets met; took {time.monotonic() - started:.0f} s")
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(section.to_json(), indent=2) + "\n")
        print(f"results written to {arguments.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
