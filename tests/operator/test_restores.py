"""DatabaseRestore against the emulated API: the real operator; the test plays the workload,
Job and kubelet controllers' part openly (ready replicas, Job status, the pod's termination
message carrying the runner's report).

In place: Pending → Restoring → Succeeded (or Failed with the runner's message). As a new
database: the ManagedDatabase is created with the source's spec, Provisioning until it is
Ready, then Restoring → Succeeded. Refusals: a target that exists already, a backup that
failed or does not exist (Failed, nothing created); a backup still running is waited for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from crdschema import Crd
from kubeemu import Kubectl, KubeEmulator
from kubernetes.client import ApiClient
from operator_harness import (
    CRDS,
    NAMESPACE,
    Operator,
    WatchRecorder,
    converged,
    finish_job,
    kubernetes_problems,
    mdb,
    mdb_manifest,
    set_workloads_ready,
    start_job,
    status_of,
    strip_server_fields,
    wait_for,
)
from test_backups import (
    SLUG,
    create_backup,
    fast_waits,  # noqa: F401 (an autouse fixture, shared)
    job,
    phase_of,
    ready_database,
    take_backup,
)

from sotadb import names
from sotadb.backup.report import JobReport, report_to_json

pytest_plugins = ["conftest_operator"]
pytestmark = pytest.mark.timeout(90)

DBR = "databaserestores.sota.io"
RESTORE_CRD = Crd.load(CRDS[2])


@pytest.fixture
def operator(start_operator: Callable[..., Operator]) -> Iterator[Operator]:
    return start_operator()


def create_restore(kubectl: Kubectl, name: str, backup: str, target: str | None = None) -> None:
    spec: dict[str, Any] = {"backup": backup}
    if target is not None:
        spec["target"] = target
    document = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_RESTORE,
        "metadata": {"name": name},
        "spec": spec,
    }
    assert RESTORE_CRD.admit(document) == []
    kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(document))


def restore_status(emu: KubeEmulator, name: str) -> dict[str, Any]:
    return dict((emu.get(DBR, name, NAMESPACE) or {}).get("status") or {})


def restore_report(backup: str, *, ok: bool = True, message: str | None = None) -> str:
    return report_to_json(
        JobReport(
            kind="restore",
            name=backup,
            phase="Succeeded" if ok else "Failed",
            message=message,
            tables=3,
            rows=1000,
        )
    )


def phases(recorder: WatchRecorder, name: str) -> list[str]:
    """The distinct phases one restore went through, in order."""
    seen: list[str] = []
    for event in recorder.events:
        obj = event.get("object") or {}
        if (obj.get("metadata") or {}).get("name") != name:
            continue
        phase = (obj.get("status") or {}).get("phase")
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)
    return seen


def watch_restores(emu: KubeEmulator) -> WatchRecorder:
    return WatchRecorder(
        emu, f"/apis/sota.io/v1/namespaces/{NAMESPACE}/databaserestores?watch=true"
    )


def assert_valid(emu: KubeEmulator, name: str) -> None:
    stored = emu.get(DBR, name, NAMESPACE)
    assert stored is not None
    assert RESTORE_CRD.admit(strip_server_fields(stored) | {"status": stored["status"]}) == []


def test_in_place_goes_pending_restoring_succeeded(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api)
    take_backup(client, kube_api, kubectl, "b1")
    with watch_restores(kube_api) as recorder:
        create_restore(kubectl, "r1", "b1")
        job_name = names.restore_job_name("r1")
        made = wait_for(lambda: job(kube_api, job_name), what="the restore Job")
        wait_for(lambda: restore_status(kube_api, "r1").get("phase") == "Restoring")
        labels = made["metadata"]["labels"]
        assert labels[names.LABEL_JOB] == names.JOB_RESTORE
        assert labels[names.LABEL_RESTORE] == "r1"
        assert labels[names.LABEL_INSTANCE] == SLUG
        assert made["metadata"]["ownerReferences"][0]["kind"] == names.KIND_RESTORE
        assert kubernetes_problems(strip_server_fields(made)) is None
        status = restore_status(kube_api, "r1")
        assert status["target"] == SLUG
        assert status["startedAt"]

        start_job(client, job_name)
        finish_job(client, job_name, succeeded=True, message=restore_report("b1"))
        wait_for(lambda: restore_status(kube_api, "r1").get("phase") == "Succeeded")
        time.sleep(0.3)
    assert phases(recorder, "r1") == ["Pending", "Restoring", "Succeeded"]
    status = restore_status(kube_api, "r1")
    assert status["completedAt"]
    assert "restored backup b1 into my-app (3 tables, 1000 rows" in status["message"]
    (complete,) = status["conditions"]
    assert (complete["type"], complete["status"], complete["reason"]) == (
        "Complete",
        "True",
        "Restored",
    )
    assert_valid(kube_api, "r1")
    assert [m["metadata"]["name"] for m in kube_api.objects(MDB_RESOURCE, NAMESPACE)] == [SLUG]


MDB_RESOURCE = "manageddatabases.sota.io"


def test_in_place_failure_reports_the_runners_message(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api)
    take_backup(client, kube_api, kubectl, "b1")
    create_restore(kubectl, "r1", "b1")
    job_name = names.restore_job_name("r1")
    wait_for(lambda: restore_status(kube_api, "r1").get("phase") == "Restoring")
    text = "row counts differ for public.orders (1000 vs 999); rolled back, nothing changed"
    finish_job(
        client, job_name, succeeded=False, message=restore_report("b1", ok=False, message=text)
    )
    wait_for(lambda: restore_status(kube_api, "r1").get("phase") == "Failed")
    status = restore_status(kube_api, "r1")
    assert status["message"] == text
    assert status["conditions"][0]["reason"] == "RestoreFailed"
    assert_valid(kube_api, "r1")


def test_as_new_creates_the_database_waits_for_ready_then_restores(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api, {"pool": {"defaultPoolSize": 30}, "deletionPolicy": "Delete"})
    take_backup(client, kube_api, kubectl, "b1")
    with watch_restores(kube_api) as recorder:
        create_restore(kubectl, "r2", "b1", target="my-copy")
        made = wait_for(lambda: mdb(kube_api, "my-copy"), what="the new database")
        source = mdb(kube_api, SLUG)
        assert source is not None
        assert made["spec"] == source["spec"]
        assert made["metadata"]["annotations"][names.ANNOTATION_RESTORED_BY] == "r2"
        wait_for(lambda: restore_status(kube_api, "r2").get("phase") == "Provisioning")
        wait_for(lambda: converged(kube_api, "my-copy"), what="my-copy provisioned")
        time.sleep(1.0)
        assert restore_status(kube_api, "r2")["phase"] == "Provisioning"  # not Ready yet
        job_name = names.restore_job_name("r2")
        assert job(kube_api, job_name) is None

        set_workloads_ready(kubectl, "my-copy")
        made_job = wait_for(lambda: job(kube_api, job_name), what="the restore Job")
        assert made_job["metadata"]["labels"][names.LABEL_INSTANCE] == "my-copy"
        command = json.dumps(made_job["spec"]["template"]["spec"]["containers"])
        assert "my-copy" in command
        assert SLUG in command
        wait_for(lambda: restore_status(kube_api, "r2").get("phase") == "Restoring")
        finish_job(client, job_name, succeeded=True, message=restore_report("b1"))
        wait_for(lambda: restore_status(kube_api, "r2").get("phase") == "Succeeded")
        time.sleep(0.3)
    assert phases(recorder, "r2") == ["Pending", "Provisioning", "Restoring", "Succeeded"]
    assert restore_status(kube_api, "r2")["target"] == "my-copy"
    assert status_of(kube_api, "my-copy")["phase"] == "Ready"
    assert_valid(kube_api, "r2")


def test_a_target_that_exists_is_refused_and_nothing_is_created(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api)
    take_backup(client, kube_api, kubectl, "b1")
    kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(mdb_manifest("taken")))
    wait_for(lambda: converged(kube_api, "taken"))
    before = mdb(kube_api, "taken")
    assert before is not None
    create_restore(kubectl, "r3", "b1", target="taken")
    wait_for(lambda: restore_status(kube_api, "r3").get("phase") == "Failed")
    message = restore_status(kube_api, "r3")["message"]
    assert "ManagedDatabase taken already exists" in message
    assert "spec.target" in message
    assert job(kube_api, names.restore_job_name("r3")) is None
    after = mdb(kube_api, "taken")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"] or (
        after["spec"] == before["spec"]
    )
    assert_valid(kube_api, "r3")


def test_a_backup_not_succeeded_is_waited_for_or_refused(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api)
    create_restore(kubectl, "missing", "no-such-backup")
    wait_for(lambda: restore_status(kube_api, "missing").get("phase") == "Failed")
    assert (
        "DatabaseBackup no-such-backup does not exist"
        in restore_status(kube_api, "missing")["message"]
    )

    create_backup(kubectl, "slow")
    backup_job = names.backup_job_name("slow")
    wait_for(lambda: job(kube_api, backup_job))
    start_job(client, backup_job)
    wait_for(lambda: phase_of(kube_api, "slow") == "Running")
    create_restore(kubectl, "early", "slow")
    wait_for(lambda: restore_status(kube_api, "early").get("phase") == "Pending")
    assert restore_status(kube_api, "early")["message"] == (
        "waiting for DatabaseBackup slow to succeed (it is Running)"
    )
    finish_job(client, backup_job, succeeded=False, message=None)
    wait_for(lambda: restore_status(kube_api, "early").get("phase") == "Failed")
    assert (
        "DatabaseBackup slow failed and holds no dump"
        in restore_status(kube_api, "early")["message"]
    )
    assert job(kube_api, names.restore_job_name("early")) is None
    assert job(kube_api, names.restore_job_name("missing")) is None
    for name in ("missing", "early"):
        assert_valid(kube_api, name)
