"""Backup and restore Jobs → the status of their DatabaseBackup / DatabaseRestore. Pure.

A Job is summed up as a `JobState` (from its own status), a finished Job's result is the
`JobReport` its container left in the termination message, and the functions here decide the
status patch from those alone. Phases only move forward (Pending → Running → Succeeded or
Failed), so an event seen late, or twice, never undoes a newer one; a patch that would change
nothing is {} and is not sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sotadb import names
from sotadb.backup.catalog import format_time
from sotadb.backup.report import JobReport

PENDING: Final = "Pending"
RUNNING: Final = "Running"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
TERMINAL: Final = frozenset({SUCCEEDED, FAILED})
_RANK: Final = {None: 0, PENDING: 1, RUNNING: 2, SUCCEEDED: 3, FAILED: 3}
VERIFICATION_FAILED: Final = "Failed"


@dataclass(frozen=True)
class JobState:
    """What the operator needs of one of its Jobs (kept in a kopf index, so keep it small)."""

    namespace: str
    name: str
    kind: str  # the sota.io/job label: backup, restore or forget
    phase: str  # Pending, Running, Succeeded or Failed
    instance: str | None = None  # the database's slug (app.kubernetes.io/instance)
    backup: str | None = None  # sota.io/backup
    restore: str | None = None  # sota.io/restore
    cron_job: str | None = None  # the CronJob that made it, if one did
    started_at: str | None = None
    completed_at: str | None = None
    failure: str | None = None  # the Failed condition's reason and message
    backup_created: bool = False  # a CronJob's run whose DatabaseBackup was created once

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL

    @property
    def backup_name(self) -> str:
        """A backup Job's DatabaseBackup: its label, or (a CronJob's run) the Job's own name."""
        return self.backup or self.name


def job_state(body: Mapping[str, Any]) -> JobState:
    metadata = body.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    status = body.get("status") or {}
    conditions = {
        c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"
    }
    failed = conditions.get("Failed")
    if "Complete" in conditions:
        phase = SUCCEEDED
    elif failed is not None:
        phase = FAILED
    elif status.get("startTime") or status.get("active"):
        phase = RUNNING
    else:
        phase = PENDING
    cron = [
        str(o.get("name"))
        for o in metadata.get("ownerReferences") or []
        if o.get("kind") == "CronJob" and o.get("controller")
    ]
    failure = None
    if failed is not None:
        failure = ": ".join(str(p) for p in (failed.get("reason"), failed.get("message")) if p)
    return JobState(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        kind=str(labels.get(names.LABEL_JOB) or ""),
        phase=phase,
        instance=labels.get(names.LABEL_INSTANCE),
        backup=labels.get(names.LABEL_BACKUP),
        restore=labels.get(names.LABEL_RESTORE),
        cron_job=cron[0] if cron else None,
        started_at=status.get("startTime"),
        completed_at=status.get("completionTime"),
        failure=failure or None,
        backup_created=annotations.get(names.ANNOTATION_BACKUP_CREATED) == "true",
    )


def termination_message(pods: Iterable[Mapping[str, Any]]) -> str | None:
    """The termination message of the Job's newest terminated container (backoffLimit 0 gives
    one pod; a pod the node lost may be replaced, and only the last one's word counts)."""
    found: list[tuple[str, str]] = []
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            if message:
                found.append((str(terminated.get("finishedAt") or ""), str(message)))
    return max(found)[1] if found else None


def _forward(current: Mapping[str, Any], phase: str) -> bool:
    return _RANK.get(phase, 0) > _RANK.get(current.get("phase"), 0)


def _changed(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    if all(current.get(key) == value for key, value in desired.items()):
        return {}
    return dict(desired)


def _logs_hint(job: JobState) -> str:
    return f"see kubectl logs -n {job.namespace} job/{job.name}"


def backup_status_patch(
    current: Mapping[str, Any], job: JobState, report: JobReport | None
) -> dict[str, Any]:
    """The DatabaseBackup status fields to write for this Job state ({} when nothing moves)."""
    if current.get("phase") in TERMINAL:
        return {}
    if not job.finished:
        desired: dict[str, Any] = {"phase": job.phase, "job": job.name}
        if job.started_at:
            desired["startedAt"] = job.started_at
        if current.get("phase") is not None and not _forward(current, job.phase):
            desired["phase"] = current["phase"]
        return _changed(current, desired)
    if job.phase == SUCCEEDED and report is not None and report.phase == SUCCEEDED:
        desired = {
            "phase": SUCCEEDED,
            "job": job.name,
            "startedAt": _time(report.started_at) or job.started_at,
            "completedAt": _time(report.completed_at) or job.completed_at,
            "size": report.size,
            "sha256": report.sha256,
            "location": report.location,
            "verification": report.verification,
            "verifiedAt": _time(report.verified_at),
            "message": report.message or _success_message(report),
        }
        return {k: v for k, v in desired.items() if v is not None}
    return _failed(job, report, "backup")


def restore_status_patch(
    current: Mapping[str, Any], job: JobState, report: JobReport | None, now: str
) -> dict[str, Any]:
    """The DatabaseRestore status fields a finished restore Job calls for ({} otherwise)."""
    if current.get("phase") in TERMINAL or not job.finished:
        return {}
    if job.phase == SUCCEEDED and report is not None and report.phase == SUCCEEDED:
        desired: dict[str, Any] = {
            "phase": SUCCEEDED,
            "job": job.name,
            "completedAt": _time(report.completed_at) or job.completed_at or now,
            "message": report.message or _restored_message(report, current),
        }
    else:
        failed = _failed(job, report, "restore")
        desired = {
            "phase": FAILED,
            "job": job.name,
            "completedAt": failed.get("completedAt") or now,
            "message": failed["message"],
        }
    conditions = complete_condition(current, desired["phase"], desired["message"], now)
    return {**desired, "conditions": conditions}


def _restored_message(report: JobReport, current: Mapping[str, Any]) -> str:
    counted = ""
    if report.tables is not None and report.rows is not None:
        counted = f" ({report.tables} tables, {report.rows} rows, counts and checksums equal)"
    return f"restored backup {report.name} into {current.get('target')}{counted}"


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def complete_condition(
    current: Mapping[str, Any], phase: str, message: str, now: str
) -> list[dict[str, Any]]:
    """The one condition a DatabaseRestore carries: Complete, True once it Succeeded."""
    state = "True" if phase == SUCCEEDED else "False"
    reason = {SUCCEEDED: "Restored", FAILED: "RestoreFailed"}.get(phase, phase or PENDING)
    conditions: list[Mapping[str, Any]] = list(current.get("conditions") or [])
    before: Mapping[str, Any] = next((c for c in conditions if c.get("type") == "Complete"), {})
    moved = before.get("status") != state
    return [
        {
            "type": "Complete",
            "status": state,
            "reason": reason,
            "message": message or phase,
            "lastTransitionTime": now if moved else before.get("lastTransitionTime", now),
        }
    ]


def _failed(job: JobState, report: JobReport | None, what: str) -> dict[str, Any]:
    if report is not None and report.phase == FAILED and report.message:
        message = report.message
    elif job.phase == SUCCEEDED:
        # A run that ends well says so in its report: without one, nothing is accounted for.
        message = f"the {what} Job succeeded but left no report; {_logs_hint(job)}"
    else:
        cause = f" ({job.failure})" if job.failure else ""
        message = f"the {what} Job failed{cause}; {_logs_hint(job)}"
    desired = {
        "phase": FAILED,
        "job": job.name,
        "startedAt": (_time(report.started_at) if report else None) or job.started_at,
        "completedAt": (_time(report.completed_at) if report else None) or job.completed_at,
        "message": message,
    }
    return {k: v for k, v in desired.items() if v is not None}


def _success_message(report: JobReport) -> str:
    verified = {
        "Passed": "its restore drill passed",
        "Failed": "its restore drill FAILED",
    }.get(report.verification or "", "not drilled")
    return f"backup stored at {report.location}; {verified}"


def last_backup_patch(
    current: Mapping[str, Any], name: str, backup_status: Mapping[str, Any]
) -> dict[str, Any]:
    """The ManagedDatabase's status.lastBackup, if this backup is newer and good: Succeeded
    and not failed by its drill (a drill switched off is no failure)."""
    if backup_status.get("phase") != SUCCEEDED:
        return {}
    if backup_status.get("verification") == VERIFICATION_FAILED:
        return {}
    completed = backup_status.get("completedAt")
    desired = {"name": name, "completedAt": completed, "size": backup_status.get("size")}
    desired = {k: v for k, v in desired.items() if v is not None}
    previous = current.get("lastBackup") or {}
    if previous == desired or str(previous.get("completedAt") or "") > str(completed or ""):
        return {}
    return desired


def prunable(
    pruned: Sequence[str], slug: str, keep: str, databases: Mapping[str, str | None]
) -> list[str]:
    """The DatabaseBackup objects to delete for a report's `pruned` names: only backups of the
    same database (`databases`: each pruned name's spec.database, None if no such object),
    never the reporting one."""
    return sorted({name for name in pruned if name != keep and databases.get(name) == slug})
