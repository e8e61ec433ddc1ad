"""What a backup, restore or forget Job tells the operator: one JSON object in its container's
termination message. Pure.

Kubernetes keeps at most 4096 bytes of a termination message, so `report_to_json` shortens the
free-text `message` (and, should that not be enough, the `pruned` list's tail: retention prunes
few per run, see `in_pod.MAX_PRUNED`) until the whole fits. `parse_report` reads what the
operator finds there; with `terminationMessagePolicy: FallbackToLogsOnError` that may be the
last lines of the log instead (a runner that crashed before writing its report), so anything
that is not a report gives None, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Literal, get_args

from sotadb.backup.catalog import format_time, parse_time

MAX_BYTES: Final = 4096
ELLIPSIS: Final = "…"

Kind = Literal["backup", "restore", "forget"]
ReportPhase = Literal["Succeeded", "Failed"]
Outcome = Literal["Passed", "Failed"]


@dataclass(frozen=True)
class JobReport:
    kind: Kind
    name: str  # the DatabaseBackup's name (for a restore: the backup restored)
    phase: ReportPhase
    started_at: datetime | None = None
    completed_at: datetime | None = None
    size: int | None = None
    sha256: str | None = None
    location: str | None = None
    verification: Outcome | None = None
    verified_at: datetime | None = None
    message: str | None = None
    pruned: tuple[str, ...] = field(default_factory=tuple)  # backups retention deleted
    tables: int | None = None
    rows: int | None = None


def report_to_json(report: JobReport) -> str:
    """Compact JSON of at most MAX_BYTES bytes (UTF-8); unset fields are left out."""
    text = _dump(report)
    if _fits(text):
        return text
    message = report.message or ""
    keep = _largest(len(message), lambda n: replace(report, message=message[:n] + ELLIPSIS))
    if keep is not None:
        return _dump(replace(report, message=message[:keep] + ELLIPSIS))
    shortened = replace(report, message=ELLIPSIS if message else None)
    count = _largest(len(report.pruned), lambda n: replace(shortened, pruned=report.pruned[:n]))
    return _dump(replace(shortened, pruned=report.pruned[: count or 0]))


def _largest(limit: int, variant: Callable[[int], JobReport]) -> int | None:
    """The largest n in 0..limit whose `variant(n)` fits (they grow with n), None if none."""
    if not _fits(_dump(variant(0))):
        return None
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if _fits(_dump(variant(middle))):
            low = middle
        else:
            high = middle - 1
    return low


def parse_report(text: str | None) -> JobReport | None:
    """The report in a termination message, or None for anything else."""
    if not text:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            return None
        return JobReport(
            kind=_choice(data.get("kind"), Kind),
            name=_text(data.get("name")),
            phase=_choice(data.get("phase"), ReportPhase),
            started_at=_maybe_time(data.get("startedAt")),
            completed_at=_maybe_time(data.get("completedAt")),
            size=_maybe_int(data.get("size")),
            sha256=_maybe_text(data.get("sha256")),
            location=_maybe_text(data.get("location")),
            verification=(
                None if data.get("verification") is None else _choice(data["verification"], Outcome)
            ),
            verified_at=_maybe_time(data.get("verifiedAt")),
            message=_maybe_text(data.get("message")),
            pruned=tuple(_text(name) for name in _list(data.get("pruned", []))),
            tables=_maybe_int(data.get("tables")),
            rows=_maybe_int(data.get("rows")),
        )
    except (ValueError, TypeError, RecursionError):
        return None


def _dump(report: JobReport) -> str:
    data: dict[str, Any] = {
        "kind": report.kind,
        "name": report.name,
        "phase": report.phase,
        "startedAt": _time(report.started_at),
        "completedAt": _time(report.completed_at),
        "size": report.size,
        "sha256": report.sha256,
        "location": report.location,
        "verification": report.verification,
        "verifiedAt": _time(report.verified_at),
        "message": report.message or None,
        "pruned": list(report.pruned) or None,
        "tables": report.tables,
        "rows": report.rows,
    }
    compact = {key: value for key, value in data.items() if value is not None}
    return json.dumps(compact, separators=(",", ":"), ensure_ascii=False)


def _fits(text: str) -> bool:
    return len(text.encode("utf-8")) <= MAX_BYTES


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def _choice(value: Any, allowed: Any) -> Any:
    if value not in get_args(allowed):
        raise ValueError(f"{value!r} is not one of {get_args(allowed)}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _maybe_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _maybe_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _maybe_time(value: Any) -> datetime | None:
    return None if value is None else parse_time(value)


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{value!r} is not a list")
    return value
