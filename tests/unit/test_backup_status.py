"""The pure decisions behind the backup and restore handlers: a Job → its JobState, a JobState
and report → the status patch (forward only, {} when unchanged), lastBackup, pruning, and the
next step of a restore."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from sotadb import names
from sotadb.backup.report import JobReport
from sotadb.kube.backup_status import (
    JobState,
    backup_status_patch,
    job_state,
    last_backup_patch,
    prunable,
    restore_status_patch,
    termination_message,
)
from sotadb.kube.restore_plan import (
    ABSENT,
    BackupFacts,
    CreateTarget,
    DatabaseState,
    Fail,
    StartJob,
    Track,
    Wait,
    next_step,
)

T0 = "2026-11-25T03:00:00Z"
T1 = "2026-11-25T03:00:09Z"


def job(status: dict[str, Any], **labels: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "sota-backup-b1",
            "namespace": "shop",
            "labels": {names.LABEL_JOB: "backup", names.LABEL_BACKUP: "b1", **labels},
        },
        "status": status,
    }


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        pytest.param({}, "Pending", id="created"),
        pytest.param({"startTime": T0, "active": 1}, "Running", id="running"),
        pytest.param(
            {"conditions": [{"type": "Complete", "status": "True"}]}, "Succeeded", id="complete"
        ),
        pytest.param(
            {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]},
            "Failed",
            id="failed",
        ),
        pytest.param(
            {"startTime": T0, "conditions": [{"type": "Failed", "status": "False"}]},
            "Running",
            id="failed-false-is-not-failed",
        ),
    ],
)
def test_job_phase(status: dict[str, Any], phase: str) -> None:
    assert job_state(job(status)).phase == phase


def test_a_cronjob_run_is_named_after_itself() -> None:
    body = job({})
    body["metadata"]["labels"].pop(names.LABEL_BACKUP)
    body["metadata"]["ownerReferences"] = [
        {"kind": "CronJob", "name": "sota-backup-my-app", "controller": True}
    ]
    state = job_state(body)
    assert (state.cron_job, state.backup_name) == ("sota-backup-my-app", "sota-backup-b1")


def test_the_newest_terminated_containers_message_counts() -> None:
    def pod(finished: str, message: str | None) -> dict[str, Any]:
        terminated = {"finishedAt": finished, **({"message": message} if message else {})}
        return {"status": {"containerStatuses": [{"state": {"terminated": terminated}}]}}

    assert termination_message([]) is None
    assert termination_message([pod(T0, None)]) is None
    assert termination_message([pod(T1, "new"), pod(T0, "old")]) == "new"


def state(phase: str, **kwargs: Any) -> JobState:
    return JobState(namespace="shop", name="sota-backup-b1", kind="backup", phase=phase, **kwargs)


def good(**kwargs: Any) -> JobReport:
    at = datetime(2026, 11, 25, 3, 0, 9, tzinfo=UTC)
    fields: dict[str, Any] = {
        "kind": "backup",
        "name": "b1",
        "phase": "Succeeded",
        "completed_at": at,
        "size": 10,
        "sha256": "a" * 64,
        "location": "/x",
        "verification": "Passed",
        "verified_at": at,
    }
    return JobReport(**{**fields, **kwargs})


def test_phases_move_forward_only_and_an_unchanged_status_is_not_written() -> None:
    running = backup_status_patch({}, state("Running", started_at=T0), None)
    assert running == {"phase": "Running", "job": "sota-backup-b1", "startedAt": T0}
    assert backup_status_patch(running, state("Running", started_at=T0), None) == {}
    assert backup_status_patch(running, state("Pending"), None) == {}  # a late event
    done = backup_status_patch(running, state("Succeeded"), good())
    assert done["phase"] == "Succeeded"
    assert done["verifiedAt"] == T1
    assert done["size"] == 10
    assert backup_status_patch(done, state("Failed"), None) == {}  # over is over


@pytest.mark.parametrize(
    ("job_state_", "report", "message"),
    [
        pytest.param(
            state("Failed", failure="DeadlineExceeded: too long"),
            None,
            "the backup Job failed (DeadlineExceeded: too long); see kubectl logs -n shop "
            "job/sota-backup-b1",
            id="no-report",
        ),
        pytest.param(
            state("Failed"),
            good(phase="Failed", message="pg_dump: connection refused"),
            "pg_dump: connection refused",
            id="runner-says",
        ),
        pytest.param(
            state("Succeeded"),
            None,
            "the backup Job succeeded but left no report; see kubectl logs -n shop "
            "job/sota-backup-b1",
            id="success-without-report",
        ),
    ],
)
def test_failures_say_why(job_state_: JobState, report: JobReport | None, message: str) -> None:
    patch = backup_status_patch({"phase": "Running"}, job_state_, report)
    assert (patch["phase"], patch["message"]) == ("Failed", message)


def test_last_backup_only_for_a_newer_good_one() -> None:
    ok = {"phase": "Succeeded", "completedAt": T1, "size": 5}
    assert last_backup_patch({}, "b1", ok) == {"name": "b1", "completedAt": T1, "size": 5}
    assert last_backup_patch({}, "b1", {**ok, "verification": "Failed"}) == {}
    assert last_backup_patch({}, "b1", {**ok, "phase": "Failed"}) == {}
    newer = {"lastBackup": {"name": "b2", "completedAt": "2027-01-01T00:00:00Z"}}
    assert last_backup_patch(newer, "b1", ok) == {}
    assert (
        last_backup_patch({"lastBackup": {"name": "b1", "completedAt": T1, "size": 5}}, "b1", ok)
        == {}
    )


def test_prunable_keeps_other_databases_and_the_reporter() -> None:
    databases = {"a": "my-app", "b": "other", "c": None, "me": "my-app"}
    assert prunable(("a", "b", "c", "me"), "my-app", "me", databases) == ["a"]


def test_restore_outcome() -> None:
    restoring = {"phase": "Restoring", "target": "my-app"}
    job_done = JobState(namespace="s", name="sota-restore-r", kind="restore", phase="Succeeded")
    report = JobReport(kind="restore", name="b1", phase="Succeeded", tables=2, rows=7)
    patch = restore_status_patch(restoring, job_done, report, T1)
    assert patch["phase"] == "Succeeded"
    assert patch["message"].startswith("restored backup b1 into my-app (2 tables, 7 rows")
    assert patch["conditions"][0]["status"] == "True"
    running = JobState(namespace="s", name="sota-restore-r", kind="restore", phase="Running")
    assert restore_status_patch(restoring, running, None, T1) == {}


BACKUP_OK = BackupFacts(database="my-app", phase="Succeeded", verification="Passed")
READY = DatabaseState(exists=True, phase="Ready")


def step(**kwargs: Any) -> Any:
    arguments: dict[str, Any] = {
        "name": "r1",
        "namespace": "shop",
        "phase": None,
        "backup_name": "b1",
        "spec_target": None,
        "backup": BACKUP_OK,
        "source": READY,
        "target": READY,
        "job_exists": False,
    }
    return next_step(**{**arguments, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, StartJob("my-app", "my-app"), id="in-place"),
        pytest.param({"spec_target": "my-app"}, StartJob("my-app", "my-app"), id="target-self"),
        pytest.param(
            {"spec_target": "copy", "target": ABSENT}, CreateTarget("my-app", "copy"), id="new"
        ),
        pytest.param(
            {
                "spec_target": "copy",
                "phase": "Provisioning",
                "target": DatabaseState(exists=True, phase="Provisioning", restored_by="r1"),
            },
            Wait(
                "Provisioning",
                "waiting for the new ManagedDatabase copy to be Ready (it is Provisioning)",
            ),
            id="new-not-ready",
        ),
        pytest.param(
            {
                "spec_target": "copy",
                "phase": "Provisioning",
                "target": DatabaseState(exists=True, phase="Ready", restored_by="r1"),
            },
            StartJob("my-app", "copy"),
            id="new-ready",
        ),
        pytest.param({"phase": "Restoring", "job_exists": True}, Track(), id="running"),
        pytest.param({"phase": "Succeeded"}, None, id="over"),
    ],
)
def test_restore_steps(kwargs: dict[str, Any], expected: Any) -> None:
    assert step(**kwargs) == expected


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        pytest.param({"backup": None}, "DatabaseBackup b1 does not exist", id="no-backup"),
        pytest.param(
            {"backup": BackupFacts("my-app", "Failed", None)}, "failed and holds no dump", id="bad"
        ),
        pytest.param(
            {"backup": BackupFacts("my-app", "Succeeded", "Failed")},
            "failed its restore drill",
            id="drill-failed",
        ),
        pytest.param(
            {"spec_target": "copy", "target": DatabaseState(exists=True, phase="Ready")},
            "ManagedDatabase copy already exists",
            id="target-exists",
        ),
        pytest.param({"target": ABSENT}, "nothing to restore in place", id="in-place-missing"),
        pytest.param(
            {"spec_target": "copy", "target": ABSENT, "source": ABSENT},
            "no longer exists",
            id="source-gone",
        ),
        pytest.param({"phase": "Restoring"}, "Job disappeared", id="job-gone"),
    ],
)
def test_restore_refusals_say_what_to_do(kwargs: dict[str, Any], says: str) -> None:
    result = step(**kwargs)
    assert isinstance(result, Fail)
    assert says in result.message


def test_a_running_backup_is_waited_for() -> None:
    result = step(backup=BackupFacts("my-app", "Running", None))
    assert result == Wait("Pending", "waiting for DatabaseBackup b1 to succeed (it is Running)")


def test_final_backup_names_fit_for_the_longest_slug() -> None:
    slug = "a" * names.SLUG_MAX_LENGTH
    final = names.final_backup_name(slug, "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0")
    assert final == f"{slug}-final-0f1e2d3c"
    assert len(final) <= names.OBJECT_NAME_MAX_LENGTH
    assert len(names.backup_job_name(final)) <= names.OBJECT_NAME_MAX_LENGTH
