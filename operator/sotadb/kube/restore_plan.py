"""What a DatabaseRestore does next, decided from what is observed. Pure.

Pending → (a new database only) Provisioning until it is Ready → Restoring → Succeeded or
Failed. `next_step` is called again after every wait, so each decision is taken from the
present state alone (level-based): an operator restarted midway carries on where it was.

A restore names a DatabaseBackup, or (spec.source) a backup in a store whose database may be
gone: then no DatabaseBackup is consulted (the restore Job checks the record, its sha256 and
its drill), and the target is always a new database.
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
class StoreFacts:
    """spec.source: the database whose backup it is, and what its store needs that is not
    there (looked up only before the new database is created)."""

    database: str
    missing_volume: str | None = None  # the kept backups PVC it reads, if absent
    missing_secret: str | None = None  # the S3 credentials Secret, if absent


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
    store: StoreFacts | None = None,
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
    if store is not None and spec_target is not None:
        return _from_store(name, namespace, phase, store, spec_target, target)
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
    if not source.exists:
        create: Step = Fail(
            f"ManagedDatabase {backup.database}, whose spec a new database copies, no longer "
            f"exists; restore from its backups' store instead: keep spec.backup and "
            f"spec.target and set spec.source (database: {backup.database}, and s3: its "
            f"spec.backups.s3 if its backups went to a bucket)"
        )
    else:
        create = CreateTarget(source=backup.database, target=into)
    taken = (
        f"ManagedDatabase {into} already exists; a restore as a new database must not "
        f"overwrite one: choose a new name in spec.target, or leave spec.target out to "
        f"restore {backup.database} in place"
    )
    return _new_database(name, phase, backup.database, into, target, create, taken)


def _from_store(
    name: str,
    namespace: str,
    phase: str | None,
    store: StoreFacts,
    into: str,
    target: DatabaseState,
) -> Step:
    create: Step = CreateTarget(source=store.database, target=into)
    if store.missing_volume is not None:
        create = Fail(
            f"PersistentVolumeClaim {store.missing_volume}, the backups volume of "
            f"{store.database}, does not exist in namespace {namespace} (only deletionPolicy "
            f"Retain and Snapshot keep it); if its backups went to a bucket, set "
            f"spec.source.s3 to its spec.backups.s3"
        )
    elif store.missing_secret is not None:
        create = Wait(
            PENDING,
            f"waiting for Secret {store.missing_secret} (spec.source.s3.credentialsSecret) "
            f"in namespace {namespace}",
        )
    taken = (
        f"ManagedDatabase {into} already exists; a restore from spec.source creates a new "
        f"database: choose a name that does not exist in spec.target"
    )
    return _new_database(name, phase, store.database, into, target, create, taken)


def _new_database(
    name: str,
    phase: str | None,
    source: str,
    into: str,
    target: DatabaseState,
    create: Step,
    taken: str,
) -> Step:
    """Into a new database: `create` it (or why not), wait until it is Ready, restore."""
    ours = target.exists and target.restored_by == name
    if target.exists and not ours:
        if target.deleting:  # e.g. the database to restore under its own name, going
            return Wait(PENDING, f"waiting for ManagedDatabase {into}, being deleted, to be gone")
        return Fail(taken)
    if not target.exists:
        if phase == PROVISIONING:
            return Fail(f"ManagedDatabase {into} was deleted while it was being provisioned")
        return create
    if target.deleting:
        return Fail(f"ManagedDatabase {into} is being deleted")
    if target.phase != DATABASE_READY:
        return Wait(
            PROVISIONING,
            f"waiting for the new ManagedDatabase {into} to be Ready (it is {target.phase})",
        )
    return StartJob(source=source, target=into)
