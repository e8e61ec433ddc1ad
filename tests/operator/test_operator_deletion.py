"""Deleting a ManagedDatabase leaves exactly what its deletionPolicy promises, even if the
operator dies midway.

The data PVC is made by the test, as the StatefulSet controller would (the volumeClaimTemplate's
labels, no ownerReference: persistentVolumeClaimRetentionPolicy Retain). Everything owned is
removed by the emulator's garbage collection once the ManagedDatabase is gone; the operator
only orphans what Retain keeps, or deletes the data PVC under Delete.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import kmock
import pytest
from kubeemu import Kubectl, KubeEmulator
from kubernetes.client import ApiClient, CoreV1Api
from operator_harness import (
    MINIMAL,
    NAMESPACE,
    Operator,
    all_labelled,
    app_password,
    converged,
    data_claim,
    fail_next,
    mdb,
    mdb_manifest,
    operator_calls,
    wait_for,
)

pytest_plugins = ["conftest_operator"]
pytestmark = pytest.mark.timeout(60)

SLUG = "my-app"
FINALIZER = "sota.io/finalizer"
RETAINED = [
    ("PersistentVolumeClaim", "data-sota-db-my-app-0"),
    ("PersistentVolumeClaim", "sota-backups-my-app"),
    ("Secret", "sota-db-my-app-app"),
    ("Secret", "sota-db-my-app-auth"),
]


def create_database(
    kubectl: Kubectl, emu: KubeEmulator, client: ApiClient, policy: str | None = None
) -> None:
    """A provisioned database with its data volume, as after the StatefulSet controller ran."""
    if policy is None:
        kubectl("apply", "--validate=false", "-f", str(MINIMAL))
    else:
        kubectl(
            "apply",
            "--validate=false",
            "-f",
            "-",
            input=json.dumps(mdb_manifest(SLUG, {"deletionPolicy": policy})),
        )
    wait_for(lambda: converged(emu, SLUG), what="provisioned")
    claim = data_claim(SLUG)
    CoreV1Api(client).create_namespaced_persistent_volume_claim(NAMESPACE, claim)  # type: ignore[arg-type]
    body = mdb(emu, SLUG)
    assert body is not None
    assert FINALIZER in body["metadata"]["finalizers"]  # held while the database lives


def delete(kubectl: Kubectl, *, wait: bool) -> None:
    kubectl("delete", "mdb", SLUG, f"--wait={str(wait).lower()}", "--timeout=30s", timeout=40)


def owner_uids(emu: KubeEmulator, kind: str, name: str) -> list[str]:
    resource = {"Secret": "secrets", "PersistentVolumeClaim": "persistentvolumeclaims"}[kind]
    obj = emu.get(resource, name, NAMESPACE)
    assert obj is not None, f"{kind}/{name} is gone"
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or []]


def assert_retained(emu: KubeEmulator) -> None:
    assert mdb(emu, SLUG) is None
    assert all_labelled(emu) == RETAINED  # everything else was collected
    for kind, name in RETAINED:
        assert owner_uids(emu, kind, name) == [], f"{kind}/{name} still has an owner"


def test_retain_keeps_credentials_and_volumes_and_a_new_database_adopts_them(
    start_operator: Callable[..., Operator],
    kubectl: Kubectl,
    kube_api: KubeEmulator,
    client: ApiClient,
) -> None:
    start_operator()
    create_database(kubectl, kube_api, client)
    password = app_password(kube_api, SLUG)
    secret_uid = kube_api.get("secrets", "sota-db-my-app-app", NAMESPACE)["metadata"]["uid"]  # type: ignore[index]

    delete(kubectl, wait=True)
    assert_retained(kube_api)

    mark = kube_api.mark()
    kubectl("apply", "--validate=false", "-f", str(MINIMAL))
    wait_for(lambda: converged(kube_api, SLUG), what="provisioned again")
    assert (app_password(kube_api, SLUG) == password) is True  # the same password
    secret = kube_api.get("secrets", "sota-db-my-app-app", NAMESPACE)
    assert secret is not None
    assert secret["metadata"]["uid"] == secret_uid  # adopted, not re-created
    new_uid = mdb(kube_api, SLUG)["metadata"]["uid"]  # type: ignore[index]
    assert owner_uids(kube_api, "Secret", "sota-db-my-app-app") == [new_uid]
    assert owner_uids(kube_api, "Secret", "sota-db-my-app-auth") == [new_uid]
    assert owner_uids(kube_api, "PersistentVolumeClaim", "sota-backups-my-app") == [new_uid]
    assert [
        c for c in operator_calls(kube_api, mark) if c.verb == "create" and c.resource == "secrets"
    ] == []
    assert len(all_labelled(kube_api)) == 13  # the 12 rendered and the data volume


def test_delete_removes_everything(
    start_operator: Callable[..., Operator],
    kubectl: Kubectl,
    kube_api: KubeEmulator,
    client: ApiClient,
) -> None:
    start_operator()
    create_database(kubectl, kube_api, client, policy="Delete")
    assert len(all_labelled(kube_api)) == 13
    mark = kube_api.mark()
    delete(kubectl, wait=True)
    assert mdb(kube_api, SLUG) is None
    assert all_labelled(kube_api) == []
    deleted = [
        (c.verb, c.resource, c.name) for c in operator_calls(kube_api, mark) if c.verb == "delete"
    ]
    assert deleted == [("delete", "persistentvolumeclaims", "data-sota-db-my-app-0")]


@pytest.mark.parametrize(
    ("policy", "fault"),
    [
        # Retain: the app Secret is orphaned, orphaning the auth Secret fails, the operator dies.
        ("Retain", ("patch v1/secrets", kmock.name("sota-db-my-app-auth"))),
        # Delete: deleting the data volume fails, the operator dies.
        ("Delete", ("delete v1/persistentvolumeclaims", kmock.name("data-sota-db-my-app-0"))),
    ],
)
def test_an_operator_dying_midway_through_deletion_leaves_nothing_half_deleted(
    policy: str,
    fault: tuple[str, kmock.Criteria],
    start_operator: Callable[..., Operator],
    kubectl: Kubectl,
    kube_api: KubeEmulator,
    client: ApiClient,
) -> None:
    operator = start_operator()
    create_database(kubectl, kube_api, client, policy=policy)
    fail_next(kube_api, *fault)

    mark = kube_api.mark()
    delete(kubectl, wait=False)
    wait_for(
        lambda: any(c.status == 500 for c in operator_calls(kube_api, mark)),
        what="the injected failure",
    )
    operator.kill()

    body = mdb(kube_api, SLUG)
    assert body is not None  # held: deletion started, not finished
    assert body["metadata"].get("deletionTimestamp")
    assert FINALIZER in body["metadata"]["finalizers"]
    if policy == "Retain":  # half done: one Secret orphaned, one still owned
        assert owner_uids(kube_api, "Secret", "sota-db-my-app-app") == []
        assert owner_uids(kube_api, "Secret", "sota-db-my-app-auth") != []
    else:
        assert kube_api.get("persistentvolumeclaims", "data-sota-db-my-app-0", NAMESPACE)

    operator.start()
    wait_for(lambda: mdb(kube_api, SLUG) is None, what="deletion to complete")
    if policy == "Retain":
        assert_retained(kube_api)
    else:
        assert all_labelled(kube_api) == []


@pytest.mark.parametrize("kill", ["before-delete", "right-after-delete"])
def test_a_database_deleted_while_the_operator_is_dead_is_deleted_by_the_next_one(
    kill: str,
    start_operator: Callable[..., Operator],
    kubectl: Kubectl,
    kube_api: KubeEmulator,
    client: ApiClient,
) -> None:
    operator = start_operator()
    create_database(kubectl, kube_api, client)
    if kill == "before-delete":
        operator.kill()
    delete(kubectl, wait=False)
    if kill == "right-after-delete":
        operator.kill()
    body = mdb(kube_api, SLUG)
    if kill == "before-delete":
        assert body is not None
    if body is not None:  # (right after the delete, the operator may have finished already)
        assert body["metadata"].get("deletionTimestamp")
        assert FINALIZER in body["metadata"]["finalizers"]

    operator.start()
    wait_for(lambda: mdb(kube_api, SLUG) is None, what="deletion to complete")
    assert_retained(kube_api)
