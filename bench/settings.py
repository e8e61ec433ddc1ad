"""How much each section measures: the full run (a few minutes) or `--quick` (about one)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    quick: bool
    fresh_runs: int  # fresh `up` (and floor) runs; the median is reported
    repeat_runs: int  # `up` on an existing database, in-process
    cli_runs: int  # the same through the `sotadb` CLI (a new Python process each)
    duration: int  # pgbench -T, seconds, per run
    rounds: int  # each comparison is run this many times, alternating the order
    scale: int  # pgbench -i -s
    diagnostics: bool  # also run the control and diagnostic cases (not needed for targets)

    @classmethod
    def full(cls) -> Settings:
        return cls(
            quick=False,
            fresh_runs=3,
            repeat_runs=10,
            cli_runs=10,
            duration=7,
            rounds=3,
            scale=10,
            diagnostics=True,
        )

    @classmethod
    def smoke(cls) -> Settings:
        return cls(
            quick=True,
            fresh_runs=1,
            repeat_runs=3,
            cli_runs=2,
            duration=3,
            rounds=1,
            scale=10,
            diagnostics=False,
        )
