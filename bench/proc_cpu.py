"""Where a benchmark's CPU goes, per process name: the processes in the containers whose names
contain a given text (read from /proc every 50 ms, so processes that come and go are counted
up to their last sample), Docker's own processes (dockerd, containerd, containerd-shim: all
of the host's, so others' Docker work lands there too), and this process (the runner, minus
the sampler itself). Linux only; elsewhere it reports nothing.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from types import TracebackType
from typing import Final

import docker

INTERVAL: Final = 0.05
DOCKER_PROCESSES: Final = ("dockerd", "containerd", "containerd-shim")
_TICK: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_CGROUP_PROCS: Final = (
    "/sys/fs/cgroup/cpuacct/docker/{id}/cgroup.procs",  # cgroup v1
    "/sys/fs/cgroup/system.slice/docker-{id}.scope/cgroup.procs",  # v2, systemd driver
    "/sys/fs/cgroup/docker/{id}/cgroup.procs",  # v2, cgroupfs driver
)


def _stat(pid: str) -> tuple[str, str, float] | None:
    """(name, start time, CPU seconds so far) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.find("(") + 1 : text.rfind(")")]
    fields = text[text.rfind(")") + 2 :].split()
    return name, fields[19], (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    """`with CpuMeter(client, "my-slug") as meter: ...`, then `meter.by_process`."""

    def __init__(self, client: docker.DockerClient, containing: str) -> None:
        self.client = client
        self.containing = containing
        self.by_process: defaultdict[str, float] = defaultdict(float)
        self.wall = 0.0
        self._seen: dict[tuple[str, str], tuple[str, float]] = {}
        self._first: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-meter", daemon=True)
        self._ids: list[str] = []
        self._docker_pids: set[str] = set()
        self._sampler_cpu = 0.0

    def __enter__(self) -> CpuMeter:
        if not Path("/proc/self/stat").exists():
            raise RuntimeError("--cpu needs Linux's /proc")
        self._runner_start = time.process_time()
        self._refresh_ids()
        self._sample(first=True)
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.wall = time.monotonic() - self._started
        self._stop.set()
        self._thread.join()
        self._sample()
        for key, (name, seconds) in self._seen.items():
            used = seconds - self._first.get(key, 0.0)
            if used > 0:
                self.by_process[name] += used
        runner = time.process_time() - self._runner_start - self._sampler_cpu
        self.by_process["runner (python)"] += max(0.0, runner)

    def _loop(self) -> None:
        started = time.thread_time()
        refreshed = time.monotonic()
        while not self._stop.wait(INTERVAL):
            if time.monotonic() - refreshed > 1.0:  # scratch containers come and go
                self._refresh_ids()
                refreshed = time.monotonic()
            self._sample()
        self._sampler_cpu = time.thread_time() - started

    def _refresh_ids(self) -> None:
        self._docker_pids = {
            entry
            for entry in os.listdir("/proc")
            if entry.isdigit() and (stat := _stat(entry)) and stat[0] in DOCKER_PROCESSES
        }
        try:
            found = self.client.api.containers(filters={"name": self.containing}, quiet=True)
            self._ids = [c["Id"] for c in found]
        except docker.errors.DockerException:
            pass

    def _pids(self) -> set[str]:
        pids: set[str] = set()
        for container in self._ids:
            for pattern in _CGROUP_PROCS:
                try:
                    pids.update(Path(pattern.format(id=container)).read_text().split())
                    break
                except OSError:
                    continue
        return pids | self._docker_pids

    def _sample(self, *, first: bool = False) -> None:
        for pid in self._pids():
            stat = _stat(pid)
            if stat is None:
                continue
            name, start, seconds = stat
            key = (pid, start)
            if first:
                self._first[key] = seconds
            self._seen[key] = (name, seconds)

    def summary(self, *, top: int = 8) -> str:
        total = sum(self.by_process.values())
        parts = [
            f"{name} {seconds:.2f}"
            for name, seconds in sorted(self.by_process.items(), key=lambda item: -item[1])[:top]
            if seconds >= 0.01
        ]
        return f"{total:.2f} CPU-s: " + ", ".join(parts)
