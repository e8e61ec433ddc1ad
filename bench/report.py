"""What a section hands back: tables, notes, targets and raw numbers; and how they print."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Comparison = Literal["<=", "<", ">="]


@dataclass(frozen=True)
class Target:
    name: str
    measured: float
    comparison: Comparison
    threshold: float
    unit: str  # "x" for ratios, "s" for seconds

    @property
    def passed(self) -> bool:
        if self.comparison == "<=":
            return self.measured <= self.threshold
        if self.comparison == "<":
            return self.measured < self.threshold
        return self.measured >= self.threshold

    def line(self) -> str:
        verdict = "PASS" if self.passed else "MISS"
        return (
            f"target {self.name}: measured {_number(self.measured, self.unit)} "
            f"(target {self.comparison} {_number(self.threshold, self.unit)}) {verdict}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": round(self.measured, 4),
            "comparison": self.comparison,
            "threshold": self.threshold,
            "unit": self.unit,
            "pass": self.passed,
        }


@dataclass(frozen=True)
class Table:
    title: str
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]

    def render(self) -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

        def line(cells: Sequence[str]) -> str:
            first, *rest = cells
            parts = [first.ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)
            ]
            return "  ".join(parts).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([self.title, line(self.headers), rule, *(line(r) for r in self.rows)])


@dataclass
class SectionReport:
    name: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        parts = [f"== {self.name} " + "=" * max(0, 70 - len(self.name))]
        parts += [table.render() + "\n" for table in self.tables]
        if self.notes:
            parts.append("notes:")
            parts += [f"  - {note}" for note in self.notes]
        return "\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "notes": self.notes,
            "targets": [t.to_json() for t in self.targets],
            "data": self.data,
        }


def progress(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the tables and the summary."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


def seconds(value: float) -> str:
    return f"{value:.3f} s"


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def tps(value: float) -> str:
    return f"{value:,.0f}"


def _number(value: float, unit: str) -> str:
    return ratio(value) if unit == "x" else seconds(value)
