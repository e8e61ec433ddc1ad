"""The pieces behind the operator's own workload handling: one object's work at a time with the
latest winning (sotadb/kube/workloads.py `Serial`), the databases' snapshots
(sotadb/kube/databases.py) and the Events it posts (sotadb/kube/events.py)."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from sotadb import names
from sotadb.kube.databases import Databases
from sotadb.kube.events import MAX_MESSAGE, event_document, reference
from sotadb.kube.workloads import Serial


async def test_one_task_per_key_and_the_latest_waiting_work_wins() -> None:
    serial = Serial()
    ran: list[str] = []
    release = asyncio.Event()

    def work(name: str, wait: bool = False) -> Any:
        async def run() -> None:
            if wait:
                await release.wait()
            ran.append(name)

        return run

    serial.submit("a", work("a1", wait=True))
    await asyncio.sleep(0)
    serial.submit("a", work("a2"))  # waits for a1 ...
    serial.submit("a", work("a3"))  # ... and replaces a2
    serial.submit("b", work("b1"))  # another key: not held up by a1
    for _ in range(10):
        await asyncio.sleep(0)
    assert ran == ["b1"]
    assert len(serial) == 1
    release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert ran == ["b1", "a1", "a3"]
    assert len(serial) == 0


async def test_a_failure_ends_neither_the_key_nor_the_others() -> None:
    serial = Serial()
    ran: list[str] = []

    async def broken() -> None:
        raise RuntimeError("boom")

    async def fine() -> None:
        ran.append("fine")

    serial.submit("a", broken)
    serial.submit("a", fine)
    for _ in range(10):
        await asyncio.sleep(0)
    assert ran == ["fine"]
    await serial.stop()


def database(name: str, namespace: str = "shop", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_DATABASE,
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        **extra,
    }


def test_database_snapshots_keep_only_what_workload_events_need() -> None:
    store = Databases()
    status = {
        "phase": "Ready",
        "conditions": [{"type": "Ready", "status": "True"}],
        "observedGeneration": 2,
        "secretName": "sota-db-a-app",
        "appliedSpec": {"storage": {"size": "1Gi"}},
    }
    store.changed("ADDED", database("a", spec={"backups": {"enabled": False}}, status=status))
    found = store.get(("shop", "a"))
    assert found is not None
    assert "appliedSpec" not in found.status
    assert found.status["phase"] == "Ready"
    assert found.backups_enabled is False
    assert found.reference == {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_DATABASE,
        "name": "a",
        "namespace": "shop",
        "uid": "uid-a",
    }
    store.changed("DELETED", database("a"))
    assert ("shop", "a") not in store


def test_a_fresh_list_replaces_the_databases_of_its_scope_only() -> None:
    store = Databases()
    store.changed("ADDED", database("gone"))
    store.changed("ADDED", database("elsewhere", namespace="other"))
    store.relisted(names.KIND_DATABASE, "shop", [store.reduce(database("new"))])
    assert ("shop", "gone") not in store
    assert ("shop", "new") in store
    assert ("other", "elsewhere") in store
    store.relisted(names.KIND_DATABASE, None, [])
    assert len(store) == 0


def test_an_event_names_its_object_and_cuts_a_long_message() -> None:
    workload = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
    }
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    document = event_document(
        reference(workload),
        type="Warning",
        reason="InvalidDatabaseAnnotation",
        message="x" * 5000,
        component="kopf",
        instance=None,
        prefix="kopf-event-",
        now=now,
    )
    assert document["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "namespace": "shop",
        "uid": "u1",
    }
    assert document["metadata"] == {"namespace": "shop", "generateName": "kopf-event-"}
    assert (document["type"], document["reason"]) == ("Warning", "InvalidDatabaseAnnotation")
    assert len(document["message"]) <= MAX_MESSAGE
    assert "..." in document["message"]
    assert document["source"] == {"component": "kopf"}
    assert "reportingInstance" not in document
    assert document["eventTime"] == now.isoformat()
