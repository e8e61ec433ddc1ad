"""When things happened inside a container, read from its log with the engine's timestamps."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_FRACTION = re.compile(r"\.(\d{6})\d*")


@dataclass(frozen=True)
class LogLine:
    at: float  # seconds since the epoch (the engine's clock, which is this host's)
    text: str


def read(container: Any) -> list[LogLine]:
    raw: bytes = container.logs(timestamps=True)
    lines = []
    for entry in raw.decode(errors="replace").splitlines():
        stamp, _, text = entry.partition(" ")
        try:
            # The engine writes nanoseconds; datetime takes microseconds.
            at = datetime.fromisoformat(_FRACTION.sub(r".\1", stamp, count=1)).timestamp()
        except ValueError:
            continue
        lines.append(LogLine(at, text))
    return lines


def last_time(lines: Sequence[LogLine], needle: str) -> float | None:
    found = [line.at for line in lines if needle in line.text]
    return found[-1] if found else None


def first_number(lines: Sequence[LogLine], pattern: re.Pattern[str]) -> float | None:
    for line in lines:
        match = pattern.search(line.text)
        if match:
            return float(match[1])
    return None
