"""What the backup and restore handlers share: kopf indexes of sotadb's Jobs, DatabaseBackups,
DatabaseRestores and a few facts per ManagedDatabase; reading a finished Job's report.

The indexes hold small frozen snapshots, never bodies, so that a handler reads nothing from
the API to decide, and an idle resync or a restart sends no request at all.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import kopf
import urllib3

from sotadb import names
from sotadb.backup.report import JobReport, parse_report
from sotadb.kube import resources
from sotadb.kube.api import ApiError, KubeApi, is_retryable
from sotadb.kube.backup_status import TERMINAL, JobState, job_state, termination_message

JOBS_INDEX: Final = "sota_jobs"
BACKUPS_INDEX: Final = "sota_backups"
RESTORES_INDEX: Final = "sota_restores"
FACTS_INDEX: Final = "sota_database_facts"
BACKUPS: Final = (names.GROUP, names.VERSION, names.PLURAL_BACKUP)
RESTORES: Final = (names.GROUP, names.VERSION, names.PLURAL_RESTORE)
DATABASES: Final = (names.GROUP, names.VERSION, names.PLURAL_DATABASE)
JOBS: Final = ("batch", "v1", "jobs")
# Only Jobs that say what they run are ours to watch (selected on the server).
JOB_SELECTOR: Final = names.LABEL_JOB
OURS: Final[Mapping[str, Any]] = {
    names.LABEL_JOB: kopf.PRESENT,
    names.LABEL_MANAGED_BY: names.MANAGED_BY,
}
# A timer on unfinished backups and restores catches a Job event missed or failed.
POLL_SECONDS: Final = 30.0
# How soon a waiting handler (a forget Job, a final snapshot, a new database) looks again.
WAIT_SECONDS: Final = 5.0
CALL_ERRORS: Final = (ApiError, urllib3.exceptions.HTTPError, OSError)
# Status fields kept in the index: what the handlers compare (not conditions or kopf's own).
_KEPT_STATUS: Final = (
    "phase",
    "job",
    "target",
    "startedAt",
    "completedAt",
    "size",
    "sha256",
    "location",
    "verification",
    "verifiedAt",
    "message",
    "conditions",
)
Logger = logging.Logger | logging.LoggerAdapter[Any]
Key = tuple[str, str]


@dataclass(frozen=True)
class Snapshot:
    """A DatabaseBackup or DatabaseRestore, as far as the handlers care."""

    namespace: str
    name: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)
    owner_uids: tuple[str, ...] = ()
    deleting: bool = False
    forgotten: bool = False

    @property
    def phase(self) -> str | None:
        value = self.status.get("phase")
        return None if value is None else str(value)

    @property
    def database(self) -> str:
        """A backup's database."""
        return str(self.spec.get("database") or "")


@dataclass(frozen=True)
class DatabaseFacts:
    """What backups and restores need of a ManagedDatabase without reading it."""

    uid: str
    phase: str | None
    last_backup: Mapping[str, Any]
    deleting: bool
    restored_by: str | None


def snapshot_of(body: Mapping[str, Any]) -> Snapshot:
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    annotations = metadata.get("annotations") or {}
    return Snapshot(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        spec=dict(body.get("spec") or {}),
        status={k: status[k] for k in _KEPT_STATUS if k in status},
        owner_uids=tuple(str(o.get("uid")) for o in metadata.get("ownerReferences") or []),
        deleting=bool(metadata.get("deletionTimestamp")),
        forgotten=annotations.get(names.ANNOTATION_FORGOTTEN) == "true",
    )


def database_facts(body: Mapping[str, Any]) -> DatabaseFacts:
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    return DatabaseFacts(
        uid=str(metadata.get("uid") or ""),
        phase=status.get("phase"),
        last_backup=dict(status.get("lastBackup") or {}),
        deleting=bool(metadata.get("deletionTimestamp")),
        restored_by=(metadata.get("annotations") or {}).get(names.ANNOTATION_RESTORED_BY),
    )


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lookup(indexes: Mapping[str, Any], index: str, key: Key) -> Any:
    """The one value an index holds under `key`, or None."""
    found = indexes.get(index)
    if found is None or key not in found:
        return None
    values = list(found[key])
    return values[-1] if values else None


def values(indexes: Mapping[str, Any], index: str) -> list[Any]:
    found = indexes.get(index) or {}
    return [value for key in list(found) if (value := lookup(indexes, index, key)) is not None]


def owner_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Job's ownerReference to the object it works for, so it is collected with it. No
    blockOwnerDeletion: that would need rights over the object's finalizers."""
    metadata = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion") or names.API_VERSION,
        "kind": body.get("kind"),
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "controller": True,
    }


def read_report(api: KubeApi, job: JobState) -> JobReport | None:
    """A finished Job's report, from its pod's termination message (one LIST by the Job
    controller's label; pods are never watched)."""
    pods = api.list(resources.POD, job.namespace, f"{names.LABEL_JOB_NAME}={job.name}")
    report = parse_report(termination_message(pods))
    if report is None or report.kind != job.kind:
        return None
    return report


@contextlib.contextmanager
def existing_is_fine() -> Iterator[None]:
    """Around a POST of a deterministically named object: 409 means it exists already (a
    retry, or a restarted operator), which is what was wanted."""
    try:
        yield
    except ApiError as e:
        if e.status != 409:
            raise


@contextlib.contextmanager
def as_kopf_errors() -> Iterator[None]:
    """API errors → kopf's, at the handler boundary: retryable ones temporary, others
    permanent."""
    try:
        yield
    except CALL_ERRORS as e:
        if is_retryable(e):
            raise kopf.TemporaryError(str(e), delay=WAIT_SECONDS) from None
        raise kopf.PermanentError(str(e)) from None


def unfinished(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in TERMINAL


def register_indexes(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.startup(registry=registry)
    def watch_only_our_jobs(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.label_selectors[JOBS] = JOB_SELECTOR

    @kopf.index(*JOBS, id=JOBS_INDEX, labels=OURS, registry=registry)
    def jobs_index(body: kopf.Body, **_: Any) -> dict[Key, JobState]:
        state = job_state(body)
        return {(state.namespace, state.name): state}

    @kopf.index(*BACKUPS, id=BACKUPS_INDEX, registry=registry)
    def backups_index(body: kopf.Body, **_: Any) -> dict[Key, Snapshot]:
        snapshot = snapshot_of(body)
        return {(snapshot.namespace, snapshot.name): snapshot}

    @kopf.index(*RESTORES, id=RESTORES_INDEX, registry=registry)
    def restores_index(body: kopf.Body, **_: Any) -> dict[Key, Snapshot]:
        snapshot = snapshot_of(body)
        return {(snapshot.namespace, snapshot.name): snapshot}

    @kopf.index(*DATABASES, id=FACTS_INDEX, registry=registry)
    def facts_index(body: kopf.Body, **_: Any) -> dict[Key, DatabaseFacts]:
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        return {key: database_facts(body)}
