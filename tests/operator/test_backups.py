"""Backups on Kubernetes, against the emulated API: the real operator (kopf + sotadb's
handlers), the user's tools (kubectl, the ``kubernetes`` client), and the test playing the Job
controller's and kubelet's part openly: it sets a Job's status and creates its pod with a
terminated container whose termination message is the runner's report (written with the
runner's own ``report_to_json``).

DatabaseBackup → exactly one Job, even across restarts; the Job's outcome → the backup's phase
and the ManagedDatabase's lastBackup; a CronJob's run → its own DatabaseBackup; retention's
`pruned` → those objects deleted; deleting a backup → a forget Job first;
`deletionPolicy: Snapshot` → a final backup, then the data goes and the backups stay; an idle
operator sends nothing; whatever it sends validates.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from crdschema import Crd
from kubeemu import Kubectl, KubeEmulator
from kubernetes.client import ApiClient, BatchV1Api, CoreV1Api
from operator_harness import (
    CRDS,
    MINIMAL,
    NAMESPACE,
    Operator,
    converged,
    data_claim,
    finish_job,
    is_custom,
    kubernetes_problems,
    mdb,
    mdb_manifest,
    operator_calls,
    operator_writes,
    report,
    sent_objects,
    set_workloads_ready,
    start_job,
    status_of,
    strip_server_fields,
    wait_for,
)

from sotadb import names
from sotadb.backup.report import JobReport, report_to_json
from sotadb.kube import backup_handlers, restore_handlers, tracking
from sotadb.spec import parse_database

pytest_plugins = ["conftest_operator"]
pytestmark = pytest.mark.timeout(90)

SLUG = "my-app"
DBB = "databasebackups.sota.io"
JOBS = "jobs.batch"
SHA = "ab" * 32
BACKUP_CRD = Crd.load(CRDS[1])
DATABASE_CRD = Crd.load(CRDS[0])


@pytest.fixture(autouse=True)
def fast_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short waits and polls keep tests quick; what is waited for is the same."""
    for module in (backup_handlers, restore_handlers, tracking):
        monkeypatch.setattr(module, "WAIT_SECONDS", 0.3)
        monkeypatch.setattr(module, "POLL_SECONDS", 1.0)


def quiet(emu: KubeEmulator, seconds: float = 0.5) -> None:
    def still() -> bool:
        mark = emu.mark()
        time.sleep(seconds)
        return not [c for c in operator_calls(emu, mark) if c.verb != "watch"]

    wait_for(still, timeout=20, what="the operator to go quiet")


def ready_database(kubectl: Kubectl, emu: KubeEmulator, spec: dict[str, Any] | None = None) -> None:
    if spec is None:
        kubectl("apply", "--validate=false", "-f", str(MINIMAL))
    else:
        kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(mdb_manifest(SLUG, spec)))
    wait_for(lambda: converged(emu, SLUG), what="provisioned")
    set_workloads_ready(kubectl, SLUG)
    wait_for(lambda: status_of(emu, SLUG).get("phase") == "Ready", what="Ready")


def create_backup(kubectl: Kubectl, name: str, database: str = SLUG) -> None:
    document = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_BACKUP,
        "metadata": {"name": name},
        "spec": {"database": database},
    }
    assert BACKUP_CRD.admit(document) == []
    kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(document))


def backup(emu: KubeEmulator, name: str) -> dict[str, Any] | None:
    return emu.get(DBB, name, NAMESPACE)


def backup_status(emu: KubeEmulator, name: str) -> dict[str, Any]:
    return dict((backup(emu, name) or {}).get("status") or {})


def phase_of(emu: KubeEmulator, name: str) -> str | None:
    return backup_status(emu, name).get("phase")


def job(emu: KubeEmulator, name: str) -> dict[str, Any] | None:
    return emu.get(JOBS, name, NAMESPACE)


def iso(moment: str) -> datetime:
    return datetime.strptime(moment, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def good_report(name: str, *, pruned: tuple[str, ...] = (), size: int = 12345) -> str:
    return report_to_json(
        JobReport(
            kind="backup",
            name=name,
            phase="Succeeded",
            started_at=iso("2026-11-25T03:00:00Z"),
            completed_at=iso("2026-11-25T03:00:09Z"),
            size=size,
            sha256=SHA,
            location=f"{names.BACKUP_DIR}/{SLUG}/{name}.sql.gz",
            verification="Passed",
            verified_at=iso("2026-11-25T03:00:20Z"),
            pruned=pruned,
            tables=3,
            rows=1000,
        )
    )


def take_backup(
    client: ApiClient, emu: KubeEmulator, kubectl: Kubectl, name: str, **kw: Any
) -> None:
    """An on-demand backup that runs and succeeds."""
    create_backup(kubectl, name)
    job_name = names.backup_job_name(name)
    wait_for(lambda: job(emu, job_name), what=f"Job {job_name}")
    finish_job(client, job_name, succeeded=True, message=good_report(name, **kw))
    wait_for(lambda: phase_of(emu, name) == "Succeeded", what=f"{name} Succeeded")


@pytest.fixture
def operator(start_operator: Callable[..., Operator]) -> Iterator[Operator]:
    return start_operator()


# ---------------------------------------------------------------- the schedule


def test_the_cronjob_runs_at_the_spread_minute_and_validates(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    ready_database(kubectl, kube_api)
    body = mdb(kube_api, SLUG)
    assert body is not None
    cron = kube_api.get("cronjobs.batch", names.backup_cronjob_name(SLUG), NAMESPACE)
    assert cron is not None
    db = parse_database(body)
    assert cron["spec"]["schedule"] == db.backup_schedule
    minute, hour = (int(x) for x in cron["spec"]["schedule"].split()[:2])
    assert hour * 60 + minute == db.backup_minute_of_day < 6 * 60
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert kubernetes_problems(strip_server_fields(cron)) is None
    template = cron["spec"]["jobTemplate"]["spec"]["template"]
    assert template["metadata"]["labels"][names.LABEL_JOB] == names.JOB_BACKUP
    # Another database gets another minute (the spread), from the same rule.
    other = parse_database({**body, "metadata": {**body["metadata"], "name": "other"}})
    assert other.backup_schedule != db.backup_schedule


# ---------------------------------------------------------------- one backup, one Job


def test_a_database_backup_creates_exactly_one_job_even_across_restarts(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    ready_database(kubectl, kube_api)
    mark = kube_api.mark()
    create_backup(kubectl, "manual-1")
    job_name = names.backup_job_name("manual-1")
    created = wait_for(lambda: job(kube_api, job_name), what="the Job")
    wait_for(lambda: phase_of(kube_api, "manual-1") == "Pending", what="Pending")
    quiet(kube_api)

    owner = backup(kube_api, "manual-1")
    assert owner is not None
    assert created["metadata"]["ownerReferences"] == [
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND_BACKUP,
            "name": "manual-1",
            "uid": owner["metadata"]["uid"],
            "controller": True,
        }
    ]
    labels = created["metadata"]["labels"]
    assert labels[names.LABEL_JOB] == names.JOB_BACKUP
    assert labels[names.LABEL_BACKUP] == "manual-1"
    assert labels[names.LABEL_INSTANCE] == SLUG
    assert kubernetes_problems(strip_server_fields(created)) is None
    assert backup_status(kube_api, "manual-1")["job"] == job_name
    assert "sota.io/finalizer" in owner["metadata"]["finalizers"]

    posts = [c for c in operator_calls(kube_api, mark) if c.verb == "create" and c.resource == JOBS]
    assert len(posts) == 1

    operator.restart()
    quiet(kube_api, seconds=1.2)
    operator.restart()
    quiet(kube_api, seconds=1.2)
    assert [j["metadata"]["name"] for j in kube_api.objects(JOBS, NAMESPACE)] == [job_name]
    posts = [c for c in operator_calls(kube_api, mark) if c.verb == "create" and c.resource == JOBS]
    assert len(posts) == 1  # a restarted operator finds the Job in its index: no second POST


def test_a_backup_of_a_database_that_does_not_exist_fails_with_the_fix(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    create_backup(kubectl, "orphan", database="nope")
    wait_for(lambda: phase_of(kube_api, "orphan") == "Failed", what="Failed")
    message = backup_status(kube_api, "orphan")["message"]
    assert "ManagedDatabase nope does not exist in namespace default" in message
    assert "spec.database" in message
    assert kube_api.objects(JOBS, NAMESPACE) == []


# ---------------------------------------------------------------- the Job drives the phase


def test_job_success_drives_succeeded_and_the_databases_last_backup(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api)
    quiet(kube_api)
    mark = kube_api.mark()
    create_backup(kubectl, "manual-1")
    job_name = names.backup_job_name("manual-1")
    wait_for(lambda: job(kube_api, job_name), what="the Job")

    start_job(client, job_name)
    wait_for(lambda: phase_of(kube_api, "manual-1") == "Running", what="Running")
    assert backup_status(kube_api, "manual-1")["startedAt"]

    finish_job(client, job_name, succeeded=True, message=good_report("manual-1"))
    wait_for(lambda: phase_of(kube_api, "manual-1") == "Succeeded", what="Succeeded")
    wait_for(lambda: status_of(kube_api, SLUG).get("lastBackup"), what="lastBackup")
    quiet(kube_api)

    status = backup_status(kube_api, "manual-1")
    assert {k: status[k] for k in ("size", "sha256", "verification", "verifiedAt")} == {
        "size": 12345,
        "sha256": SHA,
        "verification": "Passed",
        "verifiedAt": "2026-11-25T03:00:20Z",
    }
    assert status["startedAt"] == "2026-11-25T03:00:00Z"
    assert status["completedAt"] == "2026-11-25T03:00:09Z"
    assert status["location"] == f"{names.BACKUP_DIR}/{SLUG}/manual-1.sql.gz"
    assert status_of(kube_api, SLUG)["lastBackup"] == {
        "name": "manual-1",
        "completedAt": "2026-11-25T03:00:09Z",
        "size": 12345,
    }
    stored = backup(kube_api, "manual-1")
    assert stored is not None
    assert BACKUP_CRD.admit(strip_server_fields(stored) | {"status": stored["status"]}) == []
    db = mdb(kube_api, SLUG)
    assert db is not None
    assert DATABASE_CRD.admit(strip_server_fields(db) | {"status": db["status"]}) == []

    calls = [c for c in operator_calls(kube_api, mark) if c.verb != "watch"]
    report(
        f"operator requests for one on-demand backup, create to Succeeded: {len(calls)}: "
        + ", ".join(f"{c.verb} {c.resource}" for c in calls)
    )
    assert len(calls) <= 12
    pod_reads = [c for c in calls if c.resource == "pods"]
    assert [c.verb for c in pod_reads] == ["list"]  # once, when the Job finished
    assert not [c for c in kube_api.calls(mark) if c.resource == "pods" and c.verb == "watch"]


def test_job_failure_drives_failed_with_the_runners_message(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api)
    create_backup(kubectl, "broken")
    job_name = names.backup_job_name("broken")
    wait_for(lambda: job(kube_api, job_name), what="the Job")
    failed = JobReport(
        kind="backup",
        name="broken",
        phase="Failed",
        message="pg_dump: error: connection to server failed: database is down; fix it",
    )
    finish_job(client, job_name, succeeded=False, message=report_to_json(failed))
    wait_for(lambda: phase_of(kube_api, "broken") == "Failed", what="Failed")
    assert backup_status(kube_api, "broken")["message"] == failed.message
    assert "lastBackup" not in status_of(kube_api, SLUG)

    # A pod that died without a report (killed, out of memory): the Job's own reason.
    create_backup(kubectl, "killed")
    job_name = names.backup_job_name("killed")
    wait_for(lambda: job(kube_api, job_name), what="the Job")
    finish_job(client, job_name, succeeded=False, message=None)
    wait_for(lambda: phase_of(kube_api, "killed") == "Failed", what="Failed")
    message = backup_status(kube_api, "killed")["message"]
    assert "BackoffLimitExceeded" in message
    assert f"kubectl logs -n default job/{job_name}" in message
    assert "lastBackup" not in status_of(kube_api, SLUG)


# ---------------------------------------------------------------- the CronJob's runs


def cron_run(client: ApiClient, emu: KubeEmulator, minutes: int = 29012345) -> str:
    """The CronJob controller's part: a Job from the template, owned by the CronJob, named as
    Kubernetes names it (`{cronjob}-{minutes since the epoch}`); its name."""
    cron = emu.get("cronjobs.batch", names.backup_cronjob_name(SLUG), NAMESPACE)
    assert cron is not None
    run = f"{names.backup_cronjob_name(SLUG)}-{minutes}"
    template = cron["spec"]["jobTemplate"]
    BatchV1Api(client).create_namespaced_job(
        NAMESPACE,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": run,
                "labels": {
                    **(template.get("metadata") or {}).get("labels", {}),
                    **template["spec"]["template"]["metadata"]["labels"],
                },
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "CronJob",
                        "name": cron["metadata"]["name"],
                        "uid": cron["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template["spec"],
        },
    )
    return run


def marked(emu: KubeEmulator, job_name: str) -> bool:
    """The Job carries the annotation saying its DatabaseBackup was created once."""
    annotations = ((job(emu, job_name) or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(names.ANNOTATION_BACKUP_CREATED) == "true"


def job_deletions(emu: KubeEmulator, since: int) -> list[tuple[str | None, str | None]]:
    """(name, propagationPolicy) of every Job the operator deleted since the mark."""
    return [
        (c.name, c.params.get("propagationPolicy"))
        for c in operator_calls(emu, since)
        if c.verb == "delete" and c.resource == JOBS
    ]


def test_a_cronjob_run_gets_a_database_backup_of_the_same_name(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api)
    run = cron_run(client, kube_api)
    made = wait_for(lambda: backup(kube_api, run), what="the scheduled DatabaseBackup")
    assert made["spec"] == {"database": SLUG}
    assert made["metadata"]["labels"][names.LABEL_SCHEDULED] == "true"
    uid = mdb(kube_api, SLUG)["metadata"]["uid"]  # type: ignore[index]
    assert [o["uid"] for o in made["metadata"]["ownerReferences"]] == [uid]
    wait_for(lambda: phase_of(kube_api, run) == "Pending", what="Pending")
    assert backup_status(kube_api, run)["job"] == run
    wait_for(lambda: marked(kube_api, run), what="the run marked as having its backup")

    finish_job(client, run, succeeded=True, message=good_report(run))
    wait_for(lambda: phase_of(kube_api, run) == "Succeeded", what="Succeeded")
    wait_for(lambda: (status_of(kube_api, SLUG).get("lastBackup") or {}).get("name") == run)
    quiet(kube_api)
    assert [b["metadata"]["name"] for b in kube_api.objects(DBB, NAMESPACE)] == [run]
    assert len(kube_api.objects(JOBS, NAMESPACE)) == 1  # the operator made no Job of its own


def test_an_on_demand_backup_named_like_a_cronjob_run_has_a_job_of_its_own(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    """`{slug}-{minutes}` is a natural name for a backup; its Job must not be the CronJob's
    run of that minute (`sota-backup-{slug}-{minutes}`), nor take that run's place."""
    ready_database(kubectl, kube_api)
    run = cron_run(client, kube_api)
    wait_for(lambda: backup(kube_api, run), what="the scheduled DatabaseBackup")
    on_demand = f"{SLUG}-29012345"
    create_backup(kubectl, on_demand)
    own_job = names.backup_job_name(on_demand)
    assert own_job != run
    assert not own_job.startswith(f"{names.backup_cronjob_name(SLUG)}-")
    made = wait_for(lambda: job(kube_api, own_job), what="the on-demand backup's own Job")
    assert made["metadata"]["labels"][names.LABEL_BACKUP] == on_demand
    assert kubernetes_problems(strip_server_fields(made)) is None
    wait_for(lambda: backup_status(kube_api, on_demand).get("job") == own_job)

    finish_job(client, run, succeeded=True, message=good_report(run, size=111))
    finish_job(client, own_job, succeeded=True, message=good_report(on_demand, size=222))
    wait_for(lambda: phase_of(kube_api, run) == "Succeeded", what="the run Succeeded")
    wait_for(lambda: phase_of(kube_api, on_demand) == "Succeeded", what="the backup Succeeded")
    quiet(kube_api)
    assert (backup_status(kube_api, run)["size"], backup_status(kube_api, run)["job"]) == (
        111,
        run,
    )
    assert backup_status(kube_api, on_demand)["size"] == 222
    assert sorted(b["metadata"]["name"] for b in kube_api.objects(DBB, NAMESPACE)) == sorted(
        [run, on_demand]
    )
    assert sorted(j["metadata"]["name"] for j in kube_api.objects(JOBS, NAMESPACE)) == sorted(
        [run, own_job]
    )


def test_deleting_a_running_scheduled_backup_stops_its_job_for_good(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api)
    run = cron_run(client, kube_api)
    wait_for(lambda: backup(kube_api, run), what="the scheduled DatabaseBackup")
    start_job(client, run)
    wait_for(lambda: phase_of(kube_api, run) == "Running", what="Running")
    wait_for(lambda: marked(kube_api, run))
    mark = kube_api.mark()

    kubectl("delete", "dbb", run, "--wait=true", "--timeout=20s", timeout=30)
    assert backup(kube_api, run) is None
    assert job(kube_api, run) is None  # stopped: deleted with its pod, not left running
    assert job_deletions(kube_api, mark) == [(run, "Background")]
    # The Job's last events (and a restarted operator's replay) make no backup again.
    quiet(kube_api)
    operator.restart()
    quiet(kube_api, seconds=1.2)
    assert kube_api.objects(DBB, NAMESPACE) == []
    assert not [c for c in operator_calls(kube_api, mark) if c.verb == "create"]


def test_deleting_a_running_on_demand_backup_stops_its_job(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api)
    create_backup(kubectl, "slow")
    job_name = names.backup_job_name("slow")
    wait_for(lambda: job(kube_api, job_name), what="the Job")
    start_job(client, job_name)
    wait_for(lambda: phase_of(kube_api, "slow") == "Running", what="Running")
    mark = kube_api.mark()
    kubectl("delete", "dbb", "slow", "--wait=true", "--timeout=20s", timeout=30)
    assert job(kube_api, job_name) is None
    assert job_deletions(kube_api, mark) == [(job_name, "Background")]
    assert job(kube_api, names.forget_job_name("slow")) is None  # no dump was stored


def test_a_deleted_scheduled_backup_is_not_made_again_from_its_finished_run(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    """A finished run stays (the CronJob's history) after its backup is deleted and
    forgotten: a restarted operator sees it again and must not bring the backup back."""
    ready_database(kubectl, kube_api)
    run = cron_run(client, kube_api)
    wait_for(lambda: backup(kube_api, run), what="the scheduled DatabaseBackup")
    finish_job(client, run, succeeded=True, message=good_report(run))
    wait_for(lambda: phase_of(kube_api, run) == "Succeeded", what="Succeeded")
    wait_for(lambda: marked(kube_api, run))

    # A run marked by nobody (an operator stopped between creating the backup and marking
    # the run, or one older than the mark) is marked while its backup is there.
    operator.stop()
    BatchV1Api(client).patch_namespaced_job(
        run, NAMESPACE, {"metadata": {"annotations": {names.ANNOTATION_BACKUP_CREATED: None}}}
    )
    assert not marked(kube_api, run)
    operator.start()
    wait_for(lambda: marked(kube_api, run), what="the run marked again")

    mark = kube_api.mark()
    kubectl("delete", "dbb", run, "--wait=false")
    forget = names.forget_job_name(run)
    wait_for(lambda: job(kube_api, forget), what="the forget Job")
    finish_job(client, forget, succeeded=True, message=None)
    wait_for(lambda: backup(kube_api, run) is None, what="the backup gone")
    assert job_deletions(kube_api, mark) == []  # the finished run is the CronJob's history
    operator.restart()
    quiet(kube_api, seconds=1.2)
    assert job(kube_api, run) is not None
    assert backup(kube_api, run) is None
    creates = [c.resource for c in operator_calls(kube_api, mark) if c.verb == "create"]
    assert creates == [JOBS]  # the forget Job, nothing else


# ---------------------------------------------------------------- retention and deletion


def test_pruned_backups_go_and_a_deleted_backup_is_forgotten_first(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api)
    take_backup(client, kube_api, kubectl, "old-1")
    take_backup(client, kube_api, kubectl, "old-2")
    take_backup(client, kube_api, kubectl, "new-1", pruned=("old-1", "old-2", "elsewhere"))
    wait_for(lambda: backup(kube_api, "old-1") is None and backup(kube_api, "old-2") is None)
    quiet(kube_api)
    assert backup(kube_api, "new-1") is not None
    forgets = [j for j in kube_api.objects(JOBS, NAMESPACE) if "forget" in j["metadata"]["name"]]
    assert forgets == []  # retention removed those files already

    kubectl("delete", "dbb", "new-1", "--wait=false")
    forget = names.forget_job_name("new-1")
    made = wait_for(lambda: job(kube_api, forget), what="the forget Job")
    assert made["metadata"]["labels"][names.LABEL_JOB] == names.JOB_FORGET
    assert kubernetes_problems(strip_server_fields(made)) is None
    time.sleep(1.0)
    assert backup(kube_api, "new-1") is not None  # held by the finalizer until forgotten
    finish_job(client, forget, succeeded=True, message=None)
    wait_for(lambda: backup(kube_api, "new-1") is None, what="new-1 gone")


def test_deleting_a_failed_backup_needs_no_forget_job(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api)
    create_backup(kubectl, "broken")
    job_name = names.backup_job_name("broken")
    wait_for(lambda: job(kube_api, job_name), what="the Job")
    finish_job(client, job_name, succeeded=False, message=None)
    wait_for(lambda: phase_of(kube_api, "broken") == "Failed")
    kubectl("delete", "dbb", "broken", "--wait=true", "--timeout=20s", timeout=30)
    assert backup(kube_api, "broken") is None
    assert job(kube_api, names.forget_job_name("broken")) is None


def test_snapshot_policy_takes_a_final_backup_then_keeps_the_backups(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api, {"deletionPolicy": "Snapshot"})
    CoreV1Api(client).create_namespaced_persistent_volume_claim(NAMESPACE, data_claim(SLUG))  # type: ignore[arg-type]
    take_backup(client, kube_api, kubectl, "earlier")
    # Owned by the database, as a scheduled one is (so that only Snapshot keeps it).
    uid = mdb(kube_api, SLUG)["metadata"]["uid"]  # type: ignore[index]
    kubectl(
        "patch",
        "dbb",
        "earlier",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "metadata": {
                    "ownerReferences": [
                        {
                            "apiVersion": names.API_VERSION,
                            "kind": names.KIND_DATABASE,
                            "name": SLUG,
                            "uid": uid,
                        }
                    ]
                }
            }
        ),
    )
    kubectl("delete", "mdb", SLUG, "--wait=false")
    final = names.final_backup_name(SLUG, uid)
    wait_for(lambda: backup(kube_api, final), what="the final backup")
    final_job = names.backup_job_name(final)
    wait_for(lambda: job(kube_api, final_job), what="the final backup's Job")
    time.sleep(1.0)
    assert mdb(kube_api, SLUG) is not None  # waits for the final backup
    assert kube_api.get("persistentvolumeclaims", names.data_claim_name(SLUG), NAMESPACE)

    finish_job(client, final_job, succeeded=True, message=good_report(final))
    wait_for(lambda: mdb(kube_api, SLUG) is None, what="the database gone")
    assert kube_api.get("persistentvolumeclaims", names.data_claim_name(SLUG), NAMESPACE) is None
    claim = kube_api.get("persistentvolumeclaims", names.backups_volume_name(SLUG), NAMESPACE)
    assert claim is not None
    assert not claim["metadata"].get("ownerReferences")
    kept = {b["metadata"]["name"]: b for b in kube_api.objects(DBB, NAMESPACE)}
    assert sorted(kept) == sorted(["earlier", final])
    assert all(not b["metadata"].get("ownerReferences") for b in kept.values())
    assert kept[final]["status"]["phase"] == "Succeeded"
    # Garbage collection took the rest.
    assert kube_api.get("secrets", names.app_secret_name(SLUG), NAMESPACE) is None
    assert kube_api.get("statefulsets.apps", names.postgres_name(SLUG), NAMESPACE) is None


# ---------------------------------------------------------------- idle, and validity


def test_idle_with_backups_sends_nothing_and_everything_sent_validates(
    start_operator: Callable[..., Operator],
    kubectl: Kubectl,
    kube_api: KubeEmulator,
    client: ApiClient,
) -> None:
    operator = start_operator(resync_seconds=1.0)
    ready_database(kubectl, kube_api)
    take_backup(client, kube_api, kubectl, "done-1")
    create_backup(kubectl, "running-1")
    wait_for(lambda: job(kube_api, names.backup_job_name("running-1")))
    start_job(client, names.backup_job_name("running-1"))
    wait_for(lambda: phase_of(kube_api, "running-1") == "Running")
    quiet(kube_api, seconds=1.5)

    mark = kube_api.mark()
    time.sleep(3.0)  # resyncs, and the polls of the running backup
    assert operator_writes(kube_api, mark) == []
    assert [(c.verb, c.path) for c in operator_calls(kube_api, mark) if c.verb != "watch"] == []

    operator.restart()
    quiet(kube_api, seconds=1.5)
    assert operator_writes(kube_api, mark) == []
    calls = operator_calls(kube_api, mark)
    assert [(c.verb, c.path) for c in calls if c.name is not None] == []  # no reads by name
    report(f"idle with backups: 0 writes in 3 s and across a restart ({len(calls)} reads)")

    sent = sent_objects(kube_api)
    builtin = {
        what: problem
        for what, doc in sent
        if not is_custom(doc) and (problem := kubernetes_problems(doc)) is not None
    }
    assert builtin == {}
    assert {doc["kind"] for _, doc in sent} >= {"Job"}
    for obj in kube_api.objects(DBB, NAMESPACE):
        assert BACKUP_CRD.admit(strip_server_fields(obj) | {"status": obj["status"]}) == [], obj
