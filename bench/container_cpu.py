"""A container's CPU seconds so far, from its cgroup: read once before and once after a run, so
measuring costs nothing while the run goes (unlike sampling /proc). Linux only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

# (path, unit in seconds) per cgroup layout; the first that exists is used.
_USAGE: Final = (
    ("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage", 1e-9),  # v1: nanoseconds
    ("/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat", 1e-6),  # v2, systemd driver
    ("/sys/fs/cgroup/docker/{id}/cpu.stat", 1e-6),  # v2, cgroupfs driver
)


def cpu_seconds(container_id: str) -> float | None:
    """None when this host's cgroups are not readable (not Linux, another layout)."""
    for pattern, unit in _USAGE:
        try:
            text = Path(pattern.format(id=container_id)).read_text()
        except OSError:
            continue
        if text.startswith("usage_usec"):  # cpu.stat: "usage_usec N" is its first line
            return int(text.split()[1]) * unit
        return int(text.strip()) * unit
    return None


class ContainerCpu:
    """CPU seconds of named containers (label -> container name), read on demand."""

    def __init__(self, client: Any, containers: Mapping[str, str]) -> None:
        self._ids = {label: client.containers.get(name).id for label, name in containers.items()}

    def read(self) -> dict[str, float] | None:
        values = {label: cpu_seconds(container) for label, container in self._ids.items()}
        if any(v is None for v in values.values()):
            return None
        return {label: v for label, v in values.items() if v is not None}
