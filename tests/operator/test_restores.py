"""DatabaseRestore against the emulated API: the real operator; the test plays the workload,
Job and kubelet controllers' part openly (ready replicas, Job status, the pod's termination
message carrying the runner's report).

In place: Pending → Restoring → Succeeded (or Failed with the runner's message). As a new
database: the ManagedDatabase is created with the source's spec, Provisioning until it is
Ready, then Restoring → Succeeded. Refusals: a target that exists already, a backup that
failed or does not exist (Failed, nothing created); a backup still running is waited for.
From a store (spec.source), for a database that is gone with its DatabaseBackups: its S3
bucket (manifests/examples/restore-from-deleted.yaml, as written) or its kept backups volume.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from crdschema import Crd
from kubeemu import Kubectl, KubeEmulator
from kubernetes.client import ApiClient, CoreV1Api
from operator_harness import (
    CRDS,
    NAMESPACE,
    REPO,
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
    backup,
    create_backup,
    cron_run,
    fast_waits,  # noqa: F401 (an autouse fixture, shared)
    good_report,
    job,
    phase_of,
    ready_database,
    take_backup,
)

from sotadb import names
from sotadb.backup.report import JobReport, report_to_json
from sotadb.render import backup as render_backup
from sotadb.spec import parse_database

pytest_plugins = ["conftest_operator"]
pytestmark = pytest.mark.timeout(90)

DBR = "databaserestores.sota.io"
RESTORE_CRD = Crd.load(CRDS[2])
DATABASE_CRD = Crd.load(CRDS[0])
FROM_DELETED = REPO / "manifests" / "examples" / "restore-from-deleted.yaml"


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


# ---------------------------------------------------------------- from a store (database gone)


def s3_secret(client: ApiClient, name: str) -> None:
    """The bucket's keys, as the user stores them (test values, never printed)."""
    CoreV1Api(client).create_namespaced_secret(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {
                render_backup.S3_KEY_ID: "test-key-id",
                render_backup.S3_SECRET_KEY: "test-secret-key",
            },
        },
    )


def create_restore_from(
    kubectl: Kubectl, name: str, backup_name: str, target: str, source: dict[str, Any]
) -> None:
    document = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_RESTORE,
        "metadata": {"name": name},
        "spec": {"backup": backup_name, "target": target, "source": source},
    }
    assert RESTORE_CRD.admit(document) == []
    kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(document))


def scheduled_backup(emu: KubeEmulator, client: ApiClient) -> str:
    """A CronJob's run that succeeds; its name (and its DatabaseBackup's, owned by the
    database)."""
    run = cron_run(client, emu)
    wait_for(lambda: backup(emu, run), what="the scheduled DatabaseBackup")
    finish_job(client, run, succeeded=True, message=good_report(run))
    wait_for(lambda: phase_of(emu, run) == "Succeeded", what="the backup Succeeded")
    return run


def gone_with_its_backups(kubectl: Kubectl, emu: KubeEmulator, client: ApiClient) -> str:
    """The database (as set up) takes a scheduled backup, then is deleted: its DatabaseBackup
    goes with it (owned by it), the files stay. The backup's name."""
    run = scheduled_backup(emu, client)
    kubectl("delete", "mdb", SLUG, "--wait=true", "--timeout=30s", timeout=40)
    wait_for(lambda: backup(emu, run) is None, what="its DatabaseBackup collected")
    return run


HOLD = "sotadb.test/hold"


def hold_deletion(kubectl: Kubectl, emu: KubeEmulator, slug: str, held: bool) -> None:
    """Another controller's finalizer on the database (a slow deletion), or its removal."""
    current = (mdb(emu, slug) or {}).get("metadata", {}).get("finalizers") or []
    finalizers = [*current, HOLD] if held else [f for f in current if f != HOLD]
    patch = {"metadata": {"finalizers": finalizers}}
    kubectl("patch", "mdb", slug, "--type=merge", "-p", json.dumps(patch))


def runner_of(made_job: dict[str, Any]) -> dict[str, Any]:
    (container,) = made_job["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_a_deleted_databases_backup_is_restored_from_its_bucket_into_a_new_database(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    example = yaml.safe_load(FROM_DELETED.read_text())
    assert RESTORE_CRD.admit(example) == []
    source = example["spec"]["source"]
    s3_secret(client, source["s3"]["credentialsSecret"])
    ready_database(kubectl, kube_api, {"backups": {"s3": source["s3"]}, "deletionPolicy": "Delete"})
    run = scheduled_backup(kube_api, client)
    assert example["spec"]["backup"] == run
    assert (example["spec"]["target"], source["database"]) == (SLUG, SLUG)
    name = example["metadata"]["name"]
    old_uid = mdb(kube_api, SLUG)["metadata"]["uid"]  # type: ignore[index]
    # Deleted, but slow to go: the restore under the same name waits for it.
    hold_deletion(kubectl, kube_api, SLUG, held=True)
    kubectl("delete", "mdb", SLUG, "--wait=false")
    wait_for(lambda: mdb(kube_api, SLUG)["metadata"]["finalizers"] == [HOLD])  # type: ignore[index]

    with watch_restores(kube_api) as recorder:
        kubectl("apply", "--validate=false", "-f", str(FROM_DELETED))
        wait_for(lambda: restore_status(kube_api, name).get("phase") == "Pending")
        assert restore_status(kube_api, name)["message"] == (
            f"waiting for ManagedDatabase {SLUG}, being deleted, to be gone"
        )
        hold_deletion(kubectl, kube_api, SLUG, held=False)
        wait_for(lambda: backup(kube_api, run) is None, what="its DatabaseBackup collected")

        def new_database() -> dict[str, Any] | None:
            found = mdb(kube_api, SLUG)
            return found if found and found["metadata"]["uid"] != old_uid else None

        made = wait_for(new_database, what="the new database")
        # The default spec, backing up to the same bucket as the old one.
        s3 = {**source["s3"], "region": "us-east-1"}
        assert made["spec"] == {"backups": {"s3": s3}}
        assert DATABASE_CRD.admit(strip_server_fields(made)) == []
        assert parse_database(made).spec.backups.s3 is not None
        assert made["metadata"]["annotations"][names.ANNOTATION_RESTORED_BY] == name
        wait_for(lambda: restore_status(kube_api, name).get("phase") == "Provisioning")
        wait_for(lambda: converged(kube_api, SLUG), what="the new database provisioned")
        set_workloads_ready(kubectl, SLUG)

        job_name = names.restore_job_name(name)
        made_job = wait_for(lambda: job(kube_api, job_name), what="the restore Job")
        assert kubernetes_problems(strip_server_fields(made_job)) is None
        runner = runner_of(made_job)
        assert runner["command"] == [
            "sotadb", "backup", "restore-job", "--database", SLUG, "--from", SLUG, "--name", run,
        ]  # fmt: skip
        env = {e["name"]: e for e in runner["env"]}
        assert env[render_backup.ENV_LOCATION]["value"] == "s3://my-backups/prod"
        assert env[render_backup.ENV_S3_ENDPOINT]["value"] == source["s3"]["endpoint"]
        key = env[render_backup.S3_SECRET_KEY]["valueFrom"]["secretKeyRef"]
        assert key == {
            "name": source["s3"]["credentialsSecret"],
            "key": render_backup.S3_SECRET_KEY,
        }
        volumes = made_job["spec"]["template"]["spec"]["volumes"]
        assert not [v for v in volumes if "persistentVolumeClaim" in v]  # S3: no volume

        wait_for(lambda: restore_status(kube_api, name).get("phase") == "Restoring")
        finish_job(client, job_name, succeeded=True, message=restore_report(run))
        wait_for(lambda: restore_status(kube_api, name).get("phase") == "Succeeded")
        time.sleep(0.3)
    assert phases(recorder, name) == ["Pending", "Provisioning", "Restoring", "Succeeded"]
    assert restore_status(kube_api, name)["target"] == SLUG
    assert_valid(kube_api, name)


def test_a_deleted_databases_backup_is_restored_from_its_kept_volume(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    ready_database(kubectl, kube_api)  # deletionPolicy Retain: the backups volume stays
    run = gone_with_its_backups(kubectl, kube_api, client)
    claim = names.backups_volume_name(SLUG)
    assert kube_api.get("persistentvolumeclaims", claim, NAMESPACE) is not None

    create_restore_from(kubectl, "undelete", run, "my-copy", {"database": SLUG})
    made = wait_for(lambda: mdb(kube_api, "my-copy"), what="the new database")
    assert made["spec"] == {}  # the default spec, with a backups volume of its own
    wait_for(lambda: converged(kube_api, "my-copy"), what="my-copy provisioned")
    set_workloads_ready(kubectl, "my-copy")
    job_name = names.restore_job_name("undelete")
    made_job = wait_for(lambda: job(kube_api, job_name), what="the restore Job")
    assert kubernetes_problems(strip_server_fields(made_job)) is None
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in made_job["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [claim]  # the old database's kept volume, not my-copy's own
    assert runner_of(made_job)["command"][-4:] == ["--from", SLUG, "--name", run]
    finish_job(client, job_name, succeeded=True, message=restore_report(run))
    wait_for(lambda: restore_status(kube_api, "undelete").get("phase") == "Succeeded")
    assert_valid(kube_api, "undelete")


def test_a_store_that_is_not_there_is_refused_or_waited_for(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, client: ApiClient
) -> None:
    # No backups volume: nothing will make one, so the restore fails and names the fix.
    create_restore_from(kubectl, "no-volume", "b1", "new-1", {"database": "gone"})
    wait_for(lambda: restore_status(kube_api, "no-volume").get("phase") == "Failed")
    message = restore_status(kube_api, "no-volume")["message"]
    assert "PersistentVolumeClaim sota-backups-gone" in message
    assert "spec.source.s3" in message
    assert_valid(kube_api, "no-volume")

    # The bucket's keys are not there yet: waited for (they may be applied next).
    s3 = {"bucket": "my-backups", "credentialsSecret": "late-keys"}
    create_restore_from(kubectl, "keys-later", "b1", "new-2", {"database": "gone", "s3": s3})
    wait_for(lambda: restore_status(kube_api, "keys-later").get("phase") == "Pending")
    assert restore_status(kube_api, "keys-later")["message"] == (
        "waiting for Secret late-keys (spec.source.s3.credentialsSecret) in namespace default"
    )
    assert_valid(kube_api, "keys-later")
    time.sleep(1.0)
    assert mdb(kube_api, "new-1") is None
    assert mdb(kube_api, "new-2") is None
    s3_secret(client, "late-keys")
    made = wait_for(lambda: mdb(kube_api, "new-2"), what="the new database, once the keys exist")
    assert made["spec"]["backups"]["s3"]["credentialsSecret"] == "late-keys"
    wait_for(lambda: restore_status(kube_api, "keys-later").get("phase") == "Provisioning")

    # The target exists (and is no restore's): refused, as for any restore as new.
    create_restore_from(kubectl, "taken", "b1", "new-2", {"database": "gone", "s3": s3})
    wait_for(lambda: restore_status(kube_api, "taken").get("phase") == "Failed")
    assert "ManagedDatabase new-2 already exists" in restore_status(kube_api, "taken")["message"]
