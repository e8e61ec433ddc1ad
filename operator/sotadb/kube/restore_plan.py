"""What a DatabaseRestore does next, decided from what is observed. Pure.

Pending → (a new database only) Provisioning until it is Ready → Restoring → Succeeded or
Failed. `next_step` is called again after every wait, so each decision is taken from the
present state alone (level-based): an operator restarted midway carries on where it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sotadb.kube.backup_status import FAILED, SUCCEEDED, TERMINAL, VERIFICATION_FAILED

PENDING: Final = "Pending"
PROVISIONING: Final = "Provisioning"
RESTORING: Final = "Restoring"
DATABASE_READY: Final = "Ready"


@dataclass(frozen=True)
class BackupFacts:
    database: str
    phase: str | None
    verification: str | None


@dataclass(frozen=True)
class DatabaseState:
    exists: bool
    phase: str | None = None
    deleting: bool = False
    restored_by: str | None = None  # the sota.io/restored-by annotation


ABSENT: Final = DatabaseState(exists=False)


@dataclass(frozen=True)
class Fail:
    message: str


@dataclass(frozen=True)
class Wait:
    phase: str
    message: str


@dataclass(frozen=True)
class CreateTarget:
    source: str
    target: str


@dataclass(frozen=True)
class StartJob:
    source: str
    target: str


@dataclass(frozen=True)
class Track:
    """The restore Job runs: its events (or the poll) finish the restore."""


Step = Fail | Wait | CreateTarget | StartJob | Track


def target_of(spec_target: str | None, backup: BackupFacts) -> str:
    return spec_target or backup.database


def next_step(
    *,
    name: str,
    namespace: str,
    phase: str | None,
    backup_name: str,
    spec_target: str | None,
    backup: BackupFacts | None,
    source: DatabaseState,
    target: DatabaseState,
    job_exists: bool,
) -> Step | None:
    """None once the restore is over (Succeeded or Failed)."""
    if phase in TERMINAL:
        return None
    if phase == RESTORING:
        if job_exists:
            return Track()
        return Fail(
            "the restore Job disappeared before it reported; create a new DatabaseRestore "
            "to try again (the database is either fully restored or untouched)"
        )
    if backup is None:
        return Fail(
            f"DatabaseBackup {backup_name} does not exist in namespace {namespace}; name one "
            f"that does in spec.backup (kubectl get dbb -n {namespace})"
        )
    if backup.phase == FAILED:
        return Fail(
            f"DatabaseBackup {backup_name} failed and holds no dump; restore a Succeeded one "
            f"(kubectl get dbb -n {namespace})"
        )
    if backup.phase != SUCCEEDED:
        return Wait(
            PENDING,
            f"waiting for DatabaseBackup {backup_name} to succeed (it is "
            f"{backup.phase or 'not started'})",
        )
    if backup.verification == VERIFICATION_FAILED:
        return Fail(
            f"DatabaseBackup {backup_name} failed its restore drill, so it may not restore "
            f"faithfully; restore a backup whose drill passed (kubectl get dbb -n {namespace})"
        )
    into = target_of(spec_target, backup)
    if into == backup.database:
        return _in_place(into, target)
    return _as_new(name, phase, backup, into, source, target)


def _in_place(into: str, target: DatabaseState) -> Step:
    if not target.exists or target.deleting:
        state = "is being deleted" if target.deleting else "does not exist"
        return Fail(
            f"ManagedDatabase {into} {state}, so there is nothing to restore in place; set "
            f"spec.target to a new name to restore into a new database"
        )
    if target.phase != DATABASE_READY:
        return Wait(
            PENDING, f"waiting for ManagedDatabase {into} to be Ready (it is {target.phase})"
        )
    return StartJob(source=into, target=into)


def _as_new(
    name: str,
    phase: str | None,
    backup: BackupFacts,
    into: str,
    source: DatabaseState,
    target: DatabaseState,
) -> Step:
    ours = target.exists and target.restored_by == name
    if target.exists and not ours:
        return Fail(
            f"ManagedDatabase {into} already exists; a restore as a new database must not "
            f"overwrite one: choose a new name in spec.target, or leave spec.target out to "
            f"restore {backup.database} in place"
        )
    if not target.exists:
        if phase == PROVISIONING:
            return Fail(f"ManagedDatabase {into} was deleted while it was being provisioned")
        if not source.exists:
            return Fail(
                f"ManagedDatabase {backup.database}, whose spec a new database copies, no "
                f"longer exists; create {backup.database} again and restore in place "
                f"(leave spec.target out)"
            )
        return CreateTarget(source=backup.database, target=into)
    if target.deleting:
        return Fail(f"ManagedDatabase {into} is being deleted")
    if target.phase != DATABASE_READY:
        return Wait(
            PROVISIONING,
            f"waiting for the new ManagedDatabase {into} to be Ready (it is {target.phase})",
        )
    return StartJob(source=backup.database, target=into)
