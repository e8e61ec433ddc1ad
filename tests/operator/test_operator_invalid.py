"""Invalid specs and forbidden changes reach the operator (the emulator has no admission: the
CRD's schema and CEL rules are not enforced), which must refuse them visibly and safely.

A refused spec ends in `status.phase: Failed` with a Ready=False condition whose reason says
why (InvalidSpec, ForbiddenChange) and whose message names the field and the fix, one Warning
Event, and no change to anything the database owns. Fixing the spec recovers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubeemu import Kubectl, KubeEmulator, Write
from kubernetes.client import ApiClient, CoreV1Api
from operator_harness import (
    MDB,
    NAMESPACE,
    Operator,
    all_labelled,
    condition,
    converged,
    data_claim,
    mdb,
    mdb_manifest,
    operator_writes,
    owned_objects,
    status_of,
    wait_for,
)

pytest_plugins = ["conftest_operator"]
pytestmark = pytest.mark.timeout(60)

LONG_NAME = "a" * 41


def apply(kubectl: Kubectl, document: dict[str, Any]) -> None:
    kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(document))


def failed(emu: KubeEmulator, name: str) -> dict[str, Any]:
    wait_for(lambda: status_of(emu, name).get("phase") == "Failed", what=f"{name} Failed")
    return status_of(emu, name)


def warnings_for(emu: KubeEmulator, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in emu.objects("events", NAMESPACE)
        if e.get("type") == "Warning" and e["involvedObject"].get("name") == name
    ]


def only_own_writes(writes: list[Write], name: str) -> bool:
    """Writes to the ManagedDatabase itself (status, kopf's annotations) and Events only."""
    allowed = {(MDB, name), (f"{MDB}/status", name)}
    return all((w.resource, w.name) in allowed or w.resource == "events" for w in writes)


@pytest.mark.parametrize(
    ("name", "spec", "field", "fix"),
    [
        (
            "my-app",
            {"pool": {"defaultPoolSize": 0}},
            "spec.pool.defaultPoolSize",
            "use a whole number at least 1",
        ),
        (
            "my-app",
            {"pool": {"defaultPoolSiz": 30}},
            "spec.pool.defaultPoolSiz",
            "remove it (check its spelling)",
        ),
        (LONG_NAME, {}, "metadata.name", "use 1-40 lowercase letters"),
    ],
    ids=["pool-size-0", "unknown-field", "name-of-41-characters"],
)
def test_an_invalid_spec_fails_visibly_and_creates_nothing(
    name: str,
    spec: dict[str, Any],
    field: str,
    fix: str,
    start_operator: Callable[..., Operator],
    kubectl: Kubectl,
    kube_api: KubeEmulator,
) -> None:
    start_operator(resync_seconds=0.5)
    mark = kube_api.mark()
    apply(kubectl, mdb_manifest(name, spec))
    status = failed(kube_api, name)

    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert field in ready["message"]
    assert fix in ready["message"]
    assert status["observedGeneration"] == 1
    events = wait_for(lambda: warnings_for(kube_api, name), what="a Warning event")
    assert [(e["reason"], field in e["message"]) for e in events] == [("InvalidSpec", True)]
    assert all_labelled(kube_api) == []  # nothing owned was created
    assert only_own_writes(operator_writes(kube_api, mark), name)

    # Resyncs of a failed database neither write nor post again.
    idle = kube_api.mark()
    time.sleep(1.2)
    assert operator_writes(kube_api, idle) == []

    if name == LONG_NAME:  # a name cannot be fixed, but the database can still be deleted
        kubectl("delete", "mdb", name, "--wait", "--timeout=20s", timeout=30)
        assert mdb(kube_api, name) is None
        return
    # Fixing the spec recovers.
    if "defaultPoolSiz" in spec["pool"]:
        kubectl(
            "patch",
            "mdb",
            name,
            "--type",
            "json",
            "-p",
            '[{"op":"remove","path":"/spec/pool/defaultPoolSiz"}]',
        )
    else:
        kubectl(
            "patch",
            "mdb",
            name,
            "--type",
            "merge",
            "-p",
            '{"spec":{"pool":{"defaultPoolSize":25}}}',
        )
    wait_for(lambda: converged(kube_api, name), what="recovered")
    status = status_of(kube_api, name)
    assert status["phase"] == "Provisioning"
    assert condition(status, "Ready")["reason"] == "Provisioning"
    assert status["observedGeneration"] == 2
    assert len(all_labelled(kube_api)) == 12


def test_a_forbidden_change_fails_and_changes_nothing_until_it_is_undone(
    start_operator: Callable[..., Operator],
    kubectl: Kubectl,
    kube_api: KubeEmulator,
    client: ApiClient,
) -> None:
    start_operator()
    apply(kubectl, mdb_manifest("my-app", {"storage": {"size": "2Gi"}}))
    wait_for(lambda: converged(kube_api, "my-app"), what="provisioned")
    CoreV1Api(client).create_namespaced_persistent_volume_claim(
        NAMESPACE,
        data_claim("my-app", size="2Gi"),  # type: ignore[arg-type]  # a dict is fine
    )
    before = {
        k: o["metadata"]["resourceVersion"] for k, o in owned_objects(kube_api, "my-app").items()
    }
    assert len(before) == 13

    mark = kube_api.mark()
    kubectl(
        "patch", "mdb", "my-app", "--type", "merge", "-p", '{"spec":{"storage":{"size":"1Gi"}}}'
    )
    status = failed(kube_api, "my-app")
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ForbiddenChange")
    assert "spec.storage.size: cannot shrink from 2Gi to 1Gi" in ready["message"]
    assert "keep it at 2Gi or larger" in ready["message"]
    assert status["appliedSpec"]["storage"]["size"] == "2Gi"  # what runs is unchanged
    events = wait_for(lambda: warnings_for(kube_api, "my-app"), what="a Warning event")
    assert [e["reason"] for e in events] == ["ForbiddenChange"]
    time.sleep(0.5)  # anything late would show
    assert only_own_writes(operator_writes(kube_api, mark), "my-app")
    after = {
        k: o["metadata"]["resourceVersion"] for k, o in owned_objects(kube_api, "my-app").items()
    }
    assert after == before

    # Growing instead is allowed: back to Provisioning, and both volumes grow.
    kubectl(
        "patch", "mdb", "my-app", "--type", "merge", "-p", '{"spec":{"storage":{"size":"3Gi"}}}'
    )
    wait_for(
        lambda: (
            converged(kube_api, "my-app")
            and status_of(kube_api, "my-app").get("observedGeneration") == 3
        ),
        what="recovered",
    )
    status = status_of(kube_api, "my-app")
    assert status["phase"] == "Provisioning"
    assert status["appliedSpec"]["storage"]["size"] == "3Gi"
    for claim in ("data-sota-db-my-app-0", "sota-backups-my-app"):
        stored = kube_api.get("persistentvolumeclaims", claim, NAMESPACE)
        assert stored is not None
        assert stored["spec"]["resources"]["requests"]["storage"] == "3Gi", claim
