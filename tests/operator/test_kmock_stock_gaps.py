"""What stock ``kmock.KubernetesEmulator`` 0.8 does where a real API server differs.

Every assertion here is TRUE of stock kmock 0.8 and is the reason for a workaround in
``tests/support/kubeemu``. When one of these tests fails after a kmock upgrade, a gap was fixed
upstream: drop the emulator's workaround for it (and this test), then re-pin kmock.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest

pytestmark = pytest.mark.timeout(10)

CONFIGMAPS = "/api/v1/namespaces/ns1/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
async def stock() -> AsyncIterator[kmock.KubernetesEmulator]:
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator):
        emulator.resources["v1/configmaps"] = kmock.ResourceInfo(kind="ConfigMap", namespaced=True)
        yield emulator


async def post(emulator: kmock.KubernetesEmulator, path: str, body: Any) -> tuple[int, Any]:
    response = await emulator.post(path, json=body)
    return response.status, await response.json()


async def test_no_server_set_metadata(stock: kmock.KubernetesEmulator) -> None:
    status, body = await post(stock, CONFIGMAPS, {"metadata": {"name": "a"}})
    assert status == 200  # a real server says 201 Created
    assert body["metadata"] == {"name": "a"}  # no uid, resourceVersion, creationTimestamp,
    # generation; and no namespace filled in from the URL


async def test_generate_name_is_not_honoured(stock: kmock.KubernetesEmulator) -> None:
    status, body = await post(stock, CONFIGMAPS, {"metadata": {"generateName": "g-"}})
    assert status == 200
    assert "name" not in body["metadata"]
    second = await stock.post(CONFIGMAPS, json={"metadata": {"generateName": "g-"}})
    assert second.status == 409


async def test_namespaces_urls_fail(stock: kmock.KubernetesEmulator) -> None:
    assert (await stock.get("/api/v1/namespaces")).status == 500
    assert (await stock.post("/api/v1/namespaces", json={"metadata": {"name": "x"}})).status == 500


async def test_core_group_version_is_slash_v1(stock: kmock.KubernetesEmulator) -> None:
    discovery = await (await stock.get("/api/v1")).json()
    assert discovery["groupVersion"] == "/v1"  # kubectl then drops every core kind


async def test_watch_replays_all_ignoring_resource_version(
    stock: kmock.KubernetesEmulator,
) -> None:
    await post(stock, CONFIGMAPS, {"metadata": {"name": "a", "resourceVersion": "5"}})
    async with stock.get(f"{CONFIGMAPS}?watch=true&resourceVersion=999999") as response:
        assert response.headers["Content-Type"] == "application/octet-stream"
        first = json.loads(await asyncio.wait_for(response.content.readline(), 5))
    assert first["type"] == "ADDED"  # although nothing happened after 999999
    assert first["object"]["metadata"]["name"] == "a"


async def test_list_ignores_label_selector_and_has_no_kind(
    stock: kmock.KubernetesEmulator,
) -> None:
    await post(stock, CONFIGMAPS, {"metadata": {"name": "a", "labels": {"app": "x"}}})
    listing = await (await stock.get(f"{CONFIGMAPS}?labelSelector=app%3Dother")).json()
    assert [item["metadata"]["name"] for item in listing["items"]] == ["a"]
    assert "kind" not in listing
    assert listing["metadata"]["resourceVersion"] == "..."


async def test_put_is_not_served(stock: kmock.KubernetesEmulator) -> None:
    await post(stock, CONFIGMAPS, {"metadata": {"name": "a"}})
    assert (await stock.put(f"{CONFIGMAPS}/a", json={"metadata": {"name": "a"}})).status == 404


async def test_stale_resource_version_is_accepted(stock: kmock.KubernetesEmulator) -> None:
    await post(stock, CONFIGMAPS, {"metadata": {"name": "a", "resourceVersion": "1"}})
    patch = {"metadata": {"resourceVersion": "999"}, "data": {"k": "v"}}
    response = await stock.patch(f"{CONFIGMAPS}/a", json=patch, headers=MERGE)
    assert response.status == 200  # a real server: 409 Conflict


async def test_failed_json_patch_test_is_500(stock: kmock.KubernetesEmulator) -> None:
    await post(stock, CONFIGMAPS, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    ops = [{"op": "test", "path": "/data/k", "value": "other"}]
    response = await stock.patch(f"{CONFIGMAPS}/a", data=json.dumps(ops), headers=JSON_PATCH)
    assert response.status == 500  # a real server: 422; kopf expects 422 for its finalizers


async def test_status_subresource_is_not_separated(stock: kmock.KubernetesEmulator) -> None:
    stock.resources["test.sota.io/v1/widgets"] = kmock.ResourceInfo(
        kind="Widget", namespaced=True, subresources={"status"}
    )
    path = "/apis/test.sota.io/v1/namespaces/ns1/widgets"
    await post(stock, path, {"metadata": {"name": "w"}, "spec": {"size": 1}})
    response = await stock.patch(f"{path}/w/status", json={"spec": {"size": 2}}, headers=MERGE)
    assert (await response.json())["spec"] == {"size": 2}  # a real server ignores it


async def test_server_side_apply_on_missing_object_is_404(
    stock: kmock.KubernetesEmulator,
) -> None:
    response = await stock.patch(
        f"{CONFIGMAPS}/a?fieldManager=test",
        data=json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    assert response.status == 404  # a real server creates it


async def test_posted_crd_is_not_served(stock: kmock.KubernetesEmulator) -> None:
    stock.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False
    )
    crd = {
        "metadata": {"name": "widgets.test.sota.io"},
        "spec": {
            "group": "test.sota.io",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": True, "storage": True}],
        },
    }
    await post(stock, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert (await stock.get("/apis/test.sota.io/v1")).status == 404


async def test_no_garbage_collection(stock: kmock.KubernetesEmulator) -> None:
    await post(stock, CONFIGMAPS, {"metadata": {"name": "owner", "uid": "u-1"}})
    owned = {
        "metadata": {
            "name": "dependent",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "u-1"}
            ],
        }
    }
    await post(stock, CONFIGMAPS, owned)
    assert (await stock.delete(f"{CONFIGMAPS}/owner")).status == 200
    assert (await stock.get(f"{CONFIGMAPS}/dependent")).status == 200


async def test_injected_create_failure_still_stores_the_object(
    stock: kmock.KubernetesEmulator,
) -> None:
    stock["create v1/configmaps"][:1] << 500
    assert (await stock.post(CONFIGMAPS, json={"metadata": {"name": "a"}})).status == 500
    assert (await stock.get(f"{CONFIGMAPS}/a")).status == 200
