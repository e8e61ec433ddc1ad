"""The project's own error tree. Third-party errors are wrapped where they happen, `from e`.

Messages name the field (or the thing) and the fix; they never contain a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class SotadbError(Exception):
    """Base of every error sotadb raises on purpose."""


@dataclass(frozen=True)
class FieldProblem:
    """One invalid field: where it is (dotted path), what is wrong, and how to fix it."""

    field: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem} (fix: {self.fix})"


class InvalidSpec(SotadbError):
    """A ManagedDatabase or DatabaseBackup that cannot be accepted as written."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(p.field for p in self.problems)


class ForbiddenChange(InvalidSpec):
    """A change the running database cannot take (shrinking storage, a new major version)."""


class RuntimeUnavailable(SotadbError):
    """The engine we run on (Docker, the Kubernetes API) does not answer."""


class ProvisioningFailed(SotadbError):
    """A database could not be brought up; the message says which part and why."""


class StateCorrupted(SotadbError):
    """Stored state cannot be read (wrong key, tampered file)."""
