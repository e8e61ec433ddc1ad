"""Workload events from the operator's own watch (sotadb/kube/workloads.py), against the emulated
API: kopf watches no Deployment or StatefulSet; the operator's lean watch lists them (every
one with the injection on, only ours without); a database's readiness follows them, also
after a restart, which writes nothing; and nothing is reported from a half-listed view."""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import operator_harness
import pytest
from kubeemu import Kubectl, KubeEmulator
from operator_harness import (
    NAMESPACE,
    Operator,
    condition,
    mdb_manifest,
    operator_calls,
    operator_writes,
    set_workloads_ready,
    status_of,
    wait_for,
)

from sotadb import names
from sotadb.kube import resources, status
from sotadb.kube.api import USER_AGENT, KubeApi, load_configuration
from sotadb.kube.databases import Databases
from sotadb.kube.events import EventPoster
from sotadb.kube.handlers import MANAGED_SELECTOR, OperatorConfig, register
from sotadb.kube.injection import register_injection
from sotadb.kube.owned import OwnedObjects
from sotadb.kube.reconcile import now
from sotadb.kube.workloads import Context, Workloads

pytest_plugins = ["conftest_operator"]
pytestmark = pytest.mark.timeout(60)

SLUG = "shop"
WORKLOAD_PLURALS = {"deployments", "statefulsets"}


def with_injection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the injection too, as `sotadb operator` does."""

    def both(registry: Any, config: OperatorConfig) -> None:
        register(registry, config)
        register_injection(registry, config)

    monkeypatch.setattr(operator_harness, "register", both)


def quiet(emu: KubeEmulator, seconds: float = 0.5) -> None:
    def still() -> bool:
        mark = emu.mark()
        time.sleep(seconds)
        return not operator_calls(emu, mark)

    wait_for(still, timeout=20, what="the operator to go quiet")


@pytest.mark.parametrize("injection", [True, False], ids=["injection", "no-injection"])
def test_kopf_watches_no_workload_and_the_own_watch_selects_as_needed(
    start_operator: Callable[..., Operator],
    kube_api: KubeEmulator,
    monkeypatch: pytest.MonkeyPatch,
    injection: bool,
) -> None:
    if injection:
        with_injection(monkeypatch)
    mark = kube_api.mark()
    start_operator()
    calls = [
        c
        for c in operator_calls(kube_api, mark)
        if c.plural in WORKLOAD_PLURALS and c.verb in ("list", "watch")
    ]
    assert {(c.verb, c.plural) for c in calls} == {
        (verb, plural) for verb in ("list", "watch") for plural in WORKLOAD_PLURALS
    }
    assert {c.user_agent for c in calls} == {USER_AGENT}  # none is kopf's
    selectors = {c.params.get("labelSelector") for c in calls}
    assert selectors == ({None} if injection else {MANAGED_SELECTOR})


def test_readiness_follows_the_workloads_across_a_restart_that_writes_nothing(
    start_operator: Callable[..., Operator],
    kubectl: Kubectl,
    kube_api: KubeEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_injection(monkeypatch)
    operator = start_operator()
    kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(mdb_manifest(SLUG)))
    wait_for(lambda: status_of(kube_api, SLUG).get("phase") == "Provisioning")
    set_workloads_ready(kubectl, SLUG)
    wait_for(lambda: status_of(kube_api, SLUG).get("phase") == "Ready", what="Ready")
    quiet(kube_api)

    # A restart lists every workload again and computes each database's readiness from them:
    # unchanged, so nothing is written.
    mark = kube_api.mark()
    operator.restart()
    quiet(kube_api)
    assert operator_writes(kube_api, mark) == []

    # The restarted operator follows the workloads: PgBouncer loses its replica.
    kubectl(
        "patch",
        "deployment",
        names.pooler_name(SLUG),
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"readyReplicas":0}}',
    )
    wait_for(lambda: status_of(kube_api, SLUG).get("phase") == "Provisioning", what="not ready")
    assert condition(status_of(kube_api, SLUG), "PoolerReady")["status"] == "False"
    assert condition(status_of(kube_api, SLUG), "PostgresReady")["status"] == "True"


# ---------------------------------------------------------------- the feed itself


def workload(kind: str, name: str, ready: int) -> dict[str, Any]:
    component = names.COMPONENT_POSTGRES if kind == "StatefulSet" else names.COMPONENT_POOLER
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": names.common_labels(SLUG, component),
        },
        "spec": {},
        "status": {"readyReplicas": ready},
    }


def ready_status() -> dict[str, Any]:
    """A database's status that says what its ready workloads and CronJob say."""
    owned = OwnedObjects()
    for body in (
        workload("StatefulSet", names.postgres_name(SLUG), 1),
        workload("Deployment", names.pooler_name(SLUG), 1),
        cronjob(),
    ):
        owned.upsert(body)
    return status.status_patch(
        current={},
        phase=status.PHASE_READY,
        conditions=status.workload_conditions(SLUG, owned.observed(NAMESPACE, SLUG), True),
        generation=1,
        secret_name=names.app_secret_name(SLUG),
        now=now(),
    )


def cronjob() -> dict[str, Any]:
    return {
        "kind": "CronJob",
        "metadata": {
            "name": names.backup_cronjob_name(SLUG),
            "namespace": NAMESPACE,
            "labels": names.common_labels(SLUG, names.COMPONENT_POSTGRES),
        },
    }


async def test_nothing_is_reported_until_every_kind_is_listed(
    kube_api: KubeEmulator, kubeconfig: pathlib.Path, crds: None
) -> None:
    api = KubeApi(load_configuration(str(kubeconfig)))
    document = {**mdb_manifest(SLUG), "metadata": {"name": SLUG, "namespace": NAMESPACE}}
    await asyncio.to_thread(api.create, document)
    stored = await asyncio.to_thread(
        api.patch,
        resources.MANAGED_DATABASE,
        NAMESPACE,
        SLUG,
        {"status": ready_status()},
        subresource="status",
    )
    databases, owned = Databases(), OwnedObjects()
    databases.relisted("ManagedDatabase", None, [databases.reduce(stored)])
    owned.upsert(cronjob())
    workloads = Workloads(owned, databases, None)
    mark = kube_api.mark()
    try:
        # The StatefulSets' list is in, the Deployments' not yet: from this view the database
        # would be reported not ready ("Deployment ... does not exist yet").
        statefulset = workload("StatefulSet", names.postgres_name(SLUG), 1)
        workloads.relisted("StatefulSet", None, [workloads.reduce(statefulset)])
        assert workloads.status_update((NAMESPACE, SLUG)) is not None
        await asyncio.sleep(0.3)  # the watch reads the next kind's list meanwhile
        assert operator_calls(kube_api, mark) == []
        deployment = workload("Deployment", names.pooler_name(SLUG), 1)
        workloads.relisted("Deployment", None, [workloads.reduce(deployment)])
        workloads.activate(Context(api, databases, EventPoster(api)))
        await asyncio.sleep(0.3)
        assert operator_calls(kube_api, mark) == []  # all listed, all agree: nothing sent

        # An event that changes readiness is reported at once.
        workloads.changed("MODIFIED", workload("Deployment", names.pooler_name(SLUG), 0))
        for _ in range(250):
            if operator_writes(kube_api, mark):
                break
            await asyncio.sleep(0.02)
        (write,) = operator_writes(kube_api, mark)
        assert (write.verb, write.name) == ("patch", SLUG)
        found = await asyncio.to_thread(kube_api.get, "manageddatabases.sota.io", SLUG, NAMESPACE)
        assert (found or {})["status"]["phase"] == status.PHASE_PROVISIONING
    finally:
        await workloads.stop()
        api.close()
