"""The emulated API server, exercised through real clients: ``kubernetes``, kubectl and kopf.

Grouped by capability; each test states one behaviour a real API server has and the operator's
tooling depends on.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import aiohttp
import kmock
import kopf
import kopf.testing
import kubernetes
import pytest
from kubeemu import Kubectl, KubeEmulator, Write, crd, kopf_peering_crds
from kubernetes.client import (
    ApiClient,
    ApiextensionsV1Api,
    AppsV1Api,
    CoreV1Api,
    CustomObjectsApi,
    EventsV1Api,
)
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")
GROUP = "test.sota.io"
WIDGETS = f"widgets.{GROUP}"


def wait_for(probe: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll until ``probe()`` is truthy; return it."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout}s: {probe}")
        time.sleep(interval)
    return result


def configmap(name: str, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}, **extra},
        "data": {"k": "v"},
    }


def widget(name: str, size: int = 1, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name, **metadata},
        "spec": {"size": size},
    }


def deployment(name: str, containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}},
        },
    }


def api_error(call: Callable[[], object]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the ``Status`` body of a call that must fail."""
    with pytest.raises(ApiException) as info:
        call()
    return info.value.status, json.loads(info.value.body)


def call_api(
    emu: KubeEmulator,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    """A plain HTTP call (for what the typed clients cannot send); the status and JSON body."""
    connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, payload, {"Content-Type": content_type})
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        connection.close()


class WatchStream:
    """A watch request over plain HTTP, read one event (one JSON line) at a time."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response

    def next(self) -> dict[str, Any]:
        """The next event, or ``{}`` once the server ended the stream."""
        line = self.response.readline()
        return json.loads(line) if line else {}


@contextlib.contextmanager
def watching(emu: KubeEmulator, path: str) -> Iterator[WatchStream]:
    connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    try:
        connection.request("GET", path)
        yield WatchStream(connection.getresponse())
    finally:
        connection.close()


@pytest.fixture
def core(k8s_client: ApiClient) -> CoreV1Api:
    return CoreV1Api(k8s_client)


@pytest.fixture
def custom(k8s_client: ApiClient) -> CustomObjectsApi:
    return CustomObjectsApi(k8s_client)


@pytest.fixture
def widgets_crd(k8s_client: ApiClient, kube_api: KubeEmulator) -> dict[str, Any]:
    """A namespaced test CRD with a status subresource, posted through the API."""
    manifest = crd(GROUP, "Widget", short_names=("wg",))
    ApiextensionsV1Api(k8s_client).create_custom_resource_definition(manifest)
    return manifest


# 1. Server-set metadata.


def test_create_sets_server_metadata(core: CoreV1Api, k8s_client: ApiClient) -> None:
    created = core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    assert created.metadata.namespace == "default"  # filled from the URL
    assert len(created.metadata.uid) == 36
    assert int(created.metadata.resource_version) > 0
    assert created.metadata.creation_timestamp is not None
    assert created.metadata.generation is None  # ConfigMaps have none, as in a real cluster

    apps = AppsV1Api(k8s_client)
    made = apps.create_namespaced_deployment("default", deployment("d", [{"name": "a"}]))
    assert made.metadata.generation == 1
    assert made.status is None or made.status.replicas is None  # no controller fills it


def test_resource_versions_are_one_global_increasing_counter(core: CoreV1Api) -> None:
    first = core.create_namespaced_config_map("default", configmap("a"))
    second = core.create_namespaced_secret("kube-system", {"metadata": {"name": "s"}})
    patched = core.patch_namespaced_config_map("a", "default", {"data": {"k": "changed"}})
    versions = [int(o.metadata.resource_version) for o in (first, second, patched)]
    assert versions == sorted(versions)
    assert len(set(versions)) == 3
    assert isinstance(patched.metadata.resource_version, str)


def test_generation_bumps_on_spec_changes_only(
    widgets_crd: dict[str, Any], custom: CustomObjectsApi
) -> None:
    args = (GROUP, "v1", "default", "widgets")
    created = custom.create_namespaced_custom_object(*args, widget("w"))
    assert created["metadata"]["generation"] == 1
    labels = {"metadata": {"labels": {"a": "b"}}}
    labelled = custom.patch_namespaced_custom_object(*args, "w", labels)
    assert labelled["metadata"]["generation"] == 1
    status = custom.patch_namespaced_custom_object_status(*args, "w", {"status": {"ok": True}})
    assert status["metadata"]["generation"] == 1
    resized = custom.patch_namespaced_custom_object(*args, "w", {"spec": {"size": 2}})
    assert resized["metadata"]["generation"] == 2


def test_a_write_that_changes_nothing_keeps_the_resource_version(core: CoreV1Api) -> None:
    created = core.create_namespaced_config_map("default", configmap("a"))
    same = core.patch_namespaced_config_map("a", "default", {"data": {"k": "v"}})
    assert same.metadata.resource_version == created.metadata.resource_version


# 2. generateName.


def test_generate_name_gives_unique_names(core: CoreV1Api) -> None:
    body = {"metadata": {"generateName": "job-"}}
    names = {core.create_namespaced_config_map("default", body).metadata.name for _ in range(5)}
    assert len(names) == 5
    assert all(name.startswith("job-") and len(name) == len("job-") + 5 for name in names)


def test_neither_name_nor_generate_name_is_invalid(core: CoreV1Api) -> None:
    status, body = api_error(lambda: core.create_namespaced_config_map("default", {}))
    assert (status, body["reason"]) == (422, "Invalid")


# 3. Namespaces and core discovery.


def test_default_namespaces_exist_and_namespaces_can_be_created(core: CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "extra"}})
    names = [ns.metadata.name for ns in core.list_namespace().items]
    assert names == ["default", "extra", "kube-system"]
    assert core.read_namespace("extra").status.phase == "Active"


def test_core_discovery_reports_group_version_v1(k8s_client: ApiClient) -> None:
    assert kubernetes.client.CoreApi(k8s_client).get_api_versions().versions == ["v1"]
    resources = CoreV1Api(k8s_client).get_api_resources()
    assert resources.group_version == "v1"
    names = {r.name for r in resources.resources}
    assert {
        "namespaces",
        "pods",
        "pods/status",
        "services",
        "secrets",
        "configmaps",
        "persistentvolumeclaims",
        "events",
        "serviceaccounts",
    } <= names


@pytest.mark.parametrize(
    ("group_version", "plural"),
    [
        ("apps/v1", "deployments"),
        ("apps/v1", "statefulsets"),
        ("batch/v1", "jobs"),
        ("batch/v1", "cronjobs"),
        ("networking.k8s.io/v1", "networkpolicies"),
        ("policy/v1", "poddisruptionbudgets"),
        ("coordination.k8s.io/v1", "leases"),
        ("apiextensions.k8s.io/v1", "customresourcedefinitions"),
        ("rbac.authorization.k8s.io/v1", "roles"),
        ("rbac.authorization.k8s.io/v1", "rolebindings"),
        ("rbac.authorization.k8s.io/v1", "clusterroles"),
        ("rbac.authorization.k8s.io/v1", "clusterrolebindings"),
        ("events.k8s.io/v1", "events"),
    ],
)
def test_builtin_groups_are_discoverable(
    kube_api: KubeEmulator, group_version: str, plural: str
) -> None:
    status, doc = call_api(kube_api, "GET", f"/apis/{group_version}")
    assert status == 200
    assert plural in {r["name"] for r in doc["resources"]}
    _, groups = call_api(kube_api, "GET", "/apis")
    assert group_version in {v["groupVersion"] for g in groups["groups"] for v in g["versions"]}


def test_writing_into_a_missing_namespace_is_not_found(core: CoreV1Api) -> None:
    status, body = api_error(lambda: core.create_namespaced_config_map("nowhere", configmap("a")))
    assert status == 404
    assert body["message"] == 'namespaces "nowhere" not found'


def test_deleting_a_namespace_deletes_its_contents(core: CoreV1Api, kube_api: KubeEmulator) -> None:
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", configmap("a"))
    core.create_namespaced_config_map("doomed", configmap("held", finalizers=["test/hold"]))
    core.delete_namespace("doomed")
    remaining = kube_api.objects("configmaps", "doomed")
    assert [cm["metadata"]["name"] for cm in remaining] == ["held"]
    assert core.read_namespace("doomed").status.phase == "Terminating"
    status, _ = api_error(lambda: core.create_namespaced_config_map("doomed", configmap("new")))
    assert status == 403
    core.patch_namespaced_config_map("held", "doomed", {"metadata": {"finalizers": None}})
    assert kube_api.get("namespaces", "doomed") is None


# 4. Watching.


def test_watch_from_a_resource_version_sends_only_later_events(core: CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("before"))
    since = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", configmap("after"))
    core.delete_namespaced_config_map("before", "default")
    watch = kubernetes.watch.Watch()
    seen = []
    for event in watch.stream(
        core.list_namespaced_config_map, "default", resource_version=since, timeout_seconds=5
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 2:
            watch.stop()
    assert seen == [("ADDED", "after"), ("DELETED", "before")]


def test_watch_without_resource_version_sends_the_current_state_then_live_events(
    kube_api: KubeEmulator, core: CoreV1Api
) -> None:
    core.create_namespaced_config_map("default", configmap("existing"))
    with watching(kube_api, "/api/v1/namespaces/default/configmaps?watch=true") as stream:
        assert stream.response.getheader("Content-Type") == "application/json"
        first = stream.next()
        core.create_namespaced_config_map("default", configmap("live"))
        second = stream.next()
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "existing")
    assert (second["type"], second["object"]["metadata"]["name"]) == ("ADDED", "live")
    assert first["object"]["kind"] == "ConfigMap"
    assert first["object"]["apiVersion"] == "v1"


def test_list_then_watch_loses_nothing_under_concurrent_writes(
    core: CoreV1Api, k8s_client: ApiClient
) -> None:
    wanted = {f"c{i}" for i in range(150)}
    writer = threading.Thread(
        target=lambda: [
            CoreV1Api(k8s_client).create_namespaced_config_map("default", configmap(name))
            for name in sorted(wanted)
        ]
    )
    writer.start()
    try:
        time.sleep(0.05)  # let some writes land before the list, and most after it
        listing = core.list_namespaced_config_map("default")
        seen = {item.metadata.name for item in listing.items}
        watch = kubernetes.watch.Watch()
        for event in watch.stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=listing.metadata.resource_version,
            timeout_seconds=10,
        ):
            seen.add(event["object"].metadata.name)
            if seen >= wanted:
                watch.stop()
    finally:
        writer.join()
    assert seen == wanted


def test_bookmarks_carry_the_current_resource_version(
    kube_api: KubeEmulator, core: CoreV1Api
) -> None:
    core.create_namespaced_config_map("default", configmap("a"))
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    path = (
        f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
        "&allowWatchBookmarks=true"
    )
    with watching(kube_api, path) as stream:
        event = stream.next()  # after bookmark_interval (0.5s) without events
    assert event["type"] == "BOOKMARK"
    assert event["object"]["metadata"]["resourceVersion"] == str(kube_api.resource_version)
    assert event["object"]["kind"] == "ConfigMap"


def test_initial_events_end_with_an_annotated_bookmark(
    kube_api: KubeEmulator, core: CoreV1Api
) -> None:
    core.create_namespaced_config_map("default", configmap("a"))
    path = (
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true"
        "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
    )
    with watching(kube_api, path) as stream:
        first, second = stream.next(), stream.next()
    assert first["type"] == "ADDED"
    assert second["type"] == "BOOKMARK"
    assert second["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_watch_ends_after_timeout_seconds(kube_api: KubeEmulator) -> None:
    started = time.monotonic()
    with watching(kube_api, "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1") as s:
        assert s.next() == {}  # the stream ended without events
    assert 0.9 < time.monotonic() - started < 3


def test_too_old_resource_version_is_410_gone_in_the_stream() -> None:
    with KubeEmulator(history=3) as emu:
        for name in ("a", "b", "c", "d", "e"):
            call_api(emu, "POST", "/api/v1/namespaces/default/configmaps", configmap(name))
        path = "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1"
        with watching(emu, path) as stream:
            event = stream.next()
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


def test_watch_with_label_selector_sees_objects_enter_and_leave(
    kube_api: KubeEmulator, core: CoreV1Api
) -> None:
    path = "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=app%3Dx"
    with watching(kube_api, path) as stream:
        core.create_namespaced_config_map("default", configmap("a", {"app": "y"}))
        core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"app": "x"}}})
        entered = stream.next()
        core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"app": "z"}}})
        left = stream.next()
    assert (entered["type"], left["type"]) == ("ADDED", "DELETED")


def test_watch_of_one_object_by_its_url(kube_api: KubeEmulator, core: CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("a"))
    core.create_namespaced_config_map("default", configmap("b"))
    with watching(kube_api, "/api/v1/namespaces/default/configmaps/b?watch=true") as stream:
        first = stream.next()
        core.patch_namespaced_config_map("a", "default", {"data": {"k": "a"}})
        core.patch_namespaced_config_map("b", "default", {"data": {"k": "b"}})
        second = stream.next()
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "b")
    assert (second["type"], second["object"]["data"]) == ("MODIFIED", {"k": "b"})


# 5. Selectors and lists.


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=db", ["a", "b"]),
        ("app==db", ["a", "b"]),
        ("app!=db", ["c", "d"]),
        ("app in (db,web)", ["a", "b", "c"]),
        ("app notin (db)", ["c", "d"]),
        ("tier", ["a", "c"]),
        ("!tier", ["b", "d"]),
        ("app=db,tier=hot", ["a"]),
        ("app in (db, web), !tier", ["b"]),
    ],
)
def test_label_selectors(core: CoreV1Api, selector: str, expected: list[str]) -> None:
    labels = {
        "a": {"app": "db", "tier": "hot"},
        "b": {"app": "db"},
        "c": {"app": "web", "tier": "cold"},
        "d": {},
    }
    for name, value in labels.items():
        core.create_namespaced_config_map("default", configmap(name, value))
    listing = core.list_namespaced_config_map("default", label_selector=selector)
    assert [item.metadata.name for item in listing.items] == expected


def test_field_selectors_on_name_and_namespace(kube_api: KubeEmulator, core: CoreV1Api) -> None:
    for namespace in ("default", "kube-system"):
        for name in ("a", "b"):
            core.create_namespaced_config_map(namespace, configmap(name))
    by_name = core.list_config_map_for_all_namespaces(field_selector="metadata.name=a")
    assert [(i.metadata.namespace, i.metadata.name) for i in by_name.items] == [
        ("default", "a"),
        ("kube-system", "a"),
    ]
    by_namespace = core.list_config_map_for_all_namespaces(
        field_selector="metadata.namespace!=default"
    )
    assert {i.metadata.namespace for i in by_namespace.items} == {"kube-system"}
    status, body = call_api(kube_api, "GET", "/api/v1/configmaps?fieldSelector=data.k%3Dv")
    assert (status, body["message"]) == (400, 'field label not supported: "data.k"')


def test_lists_have_kind_api_version_and_resource_version(kube_api: KubeEmulator) -> None:
    status, listing = call_api(kube_api, "GET", "/apis/apps/v1/namespaces/default/deployments")
    assert status == 200
    assert (listing["kind"], listing["apiVersion"]) == ("DeploymentList", "apps/v1")
    assert listing["metadata"]["resourceVersion"] == str(kube_api.resource_version)


def test_lists_are_paginated_with_limit_and_continue(core: CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map("default", configmap(f"c{i}"))
    first = core.list_namespaced_config_map("default", limit=2)
    assert [i.metadata.name for i in first.items] == ["c0", "c1"]
    assert first.metadata.remaining_item_count == 3
    rest = core.list_namespaced_config_map("default", limit=10, _continue=first.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["c2", "c3", "c4"]
    assert rest.metadata._continue is None


# 6. PUT and optimistic concurrency.


def test_replace_with_a_stale_resource_version_is_a_409_conflict(core: CoreV1Api) -> None:
    created = core.create_namespaced_config_map("default", configmap("a"))
    core.patch_namespaced_config_map("a", "default", {"data": {"k": "newer"}})
    created.data = {"k": "stale"}
    status, body = api_error(lambda: core.replace_namespaced_config_map("a", "default", created))
    assert status == 409
    assert body["kind"] == "Status"
    assert body["reason"] == "Conflict"
    assert body["code"] == 409
    assert "the object has been modified" in body["message"]


def test_replace_with_the_current_or_no_resource_version_succeeds(core: CoreV1Api) -> None:
    current = core.create_namespaced_config_map("default", configmap("a"))
    current.data = {"k": "1"}
    replaced = core.replace_namespaced_config_map("a", "default", current)
    assert replaced.data == {"k": "1"}
    unconditional = core.replace_namespaced_config_map(
        "a", "default", {"metadata": {"name": "a"}, "data": {"k": "2"}}
    )
    assert int(unconditional.metadata.resource_version) > int(replaced.metadata.resource_version)


def test_patch_with_a_stale_resource_version_is_a_409_conflict(core: CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("a"))
    patch = {"metadata": {"resourceVersion": "1"}, "data": {"k": "x"}}
    status, _ = api_error(lambda: core.patch_namespaced_config_map("a", "default", patch))
    assert status == 409


def test_failed_json_patch_test_is_422(kube_api: KubeEmulator, core: CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("a"))
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "remove", "path": "/data"},
    ]
    status, body = call_api(
        kube_api,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/a",
        ops,
        "application/json-patch+json",
    )
    assert (status, body["reason"]) == (422, "Invalid")
    assert kube_api.get("configmaps", "a", "default")["data"] == {"k": "v"}  # type: ignore[index]


def test_dry_run_changes_nothing(kube_api: KubeEmulator, core: CoreV1Api) -> None:
    before = kube_api.resource_version
    made = core.create_namespaced_config_map("default", configmap("a"), dry_run="All")
    assert made.metadata.uid
    assert kube_api.get("configmaps", "a", "default") is None
    assert kube_api.resource_version == before


def test_delete_collection_by_label(kube_api: KubeEmulator, core: CoreV1Api) -> None:
    for name, app in (("a", "x"), ("b", "x"), ("c", "y")):
        core.create_namespaced_config_map("default", configmap(name, {"app": app}))
    core.delete_collection_namespaced_config_map("default", label_selector="app=x")
    assert [cm["metadata"]["name"] for cm in kube_api.objects("configmaps", "default")] == ["c"]


# 7. The status subresource.


def test_main_resource_writes_ignore_status_and_status_writes_change_only_status(
    widgets_crd: dict[str, Any], custom: CustomObjectsApi
) -> None:
    args = (GROUP, "v1", "default", "widgets")
    created = custom.create_namespaced_custom_object(*args, {**widget("w"), "status": {"x": 1}})
    assert "status" not in created  # dropped on create, as for any status-subresource kind
    main = custom.patch_namespaced_custom_object(*args, "w", {"status": {"x": 2}})
    assert "status" not in main
    status = custom.patch_namespaced_custom_object_status(
        *args, "w", {"status": {"x": 3}, "spec": {"size": 99}, "metadata": {"labels": {"a": "b"}}}
    )
    assert status["status"] == {"x": 3}
    assert status["spec"] == {"size": 1}
    assert "labels" not in status["metadata"]


def test_builtin_kinds_have_a_status_subresource(
    kube_api: KubeEmulator, k8s_client: ApiClient, core: CoreV1Api
) -> None:
    apps = AppsV1Api(k8s_client)
    apps.create_namespaced_deployment("default", deployment("d", [{"name": "a"}]))
    patched = apps.patch_namespaced_deployment_status(
        "d", "default", {"status": {"readyReplicas": 1}}
    )
    assert patched.status.ready_replicas == 1
    replaced = apps.replace_namespaced_deployment("d", "default", deployment("d", [{"name": "b"}]))
    assert replaced.status.ready_replicas == 1  # a write to the main resource kept the status
    core.create_namespaced_config_map("default", configmap("c"))
    status, _ = call_api(
        kube_api,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c/status",
        {"status": {}},
        "application/merge-patch+json",
    )
    assert status == 404  # ConfigMaps have no status subresource


# 8. Patch types.


def test_merge_patch_merges_maps_and_deletes_nulls(core: CoreV1Api) -> None:
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "a"}, "data": {"keep": "1", "drop": "2"}}
    )
    patched = core.patch_namespaced_config_map("a", "default", {"data": {"drop": None, "new": "3"}})
    assert patched.data == {"keep": "1", "new": "3"}


def test_json_patch_operations(kube_api: KubeEmulator, core: CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("a"))
    ops = [
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "x/z"},
        {"op": "replace", "path": "/data/k", "value": "w"},
        {"op": "copy", "from": "/data/k", "path": "/data/c"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    status, body = call_api(
        kube_api,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/a",
        ops,
        "application/json-patch+json",
    )
    assert status == 200
    assert body["metadata"]["finalizers"] == ["x/z"]
    assert body["data"] == {"k": "w", "c": "w"}


def test_strategic_merge_patch_merges_containers_env_and_finalizers_by_key(
    k8s_client: ApiClient,
) -> None:
    apps = AppsV1Api(k8s_client)
    apps.create_namespaced_deployment(
        "default",
        deployment(
            "d",
            [
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "sidecar", "image": "side:1"},
            ],
        ),
    )
    patch = {
        "metadata": {"finalizers": ["x/y"]},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]},
                        {"name": "sidecar", "$patch": "delete"},
                    ]
                }
            }
        },
    }
    patched = apps.patch_namespaced_deployment("d", "default", patch)  # strategic by default
    [container] = patched.spec.template.spec.containers
    assert (container.name, container.image) == ("app", "app:2")
    assert [(e.name, e.value) for e in container.env] == [("A", "1"), ("B", "2")]
    again = apps.patch_namespaced_deployment("d", "default", {"metadata": {"finalizers": ["x/z"]}})
    assert again.metadata.finalizers == ["x/y", "x/z"]


def test_strategic_merge_patch_on_a_custom_resource_is_415(
    widgets_crd: dict[str, Any], kube_api: KubeEmulator, custom: CustomObjectsApi
) -> None:
    custom.create_namespaced_custom_object(GROUP, "v1", "default", "widgets", widget("w"))
    status, body = call_api(
        kube_api,
        "PATCH",
        f"/apis/{GROUP}/v1/namespaces/default/widgets/w",
        {"spec": {"size": 2}},
        "application/strategic-merge-patch+json",
    )
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")


def test_server_side_apply_creates_then_merges(kube_api: KubeEmulator) -> None:
    path = "/api/v1/namespaces/default/configmaps/a"
    apply = "application/apply-patch+yaml"
    status, created = call_api(kube_api, "PATCH", f"{path}?fieldManager=t", configmap("a"), apply)
    assert status == 201
    assert created["metadata"]["uid"]
    other = {**configmap("a"), "data": {"other": "1"}}
    status, merged = call_api(kube_api, "PATCH", f"{path}?fieldManager=t", other, apply)
    assert status == 200
    assert merged["data"] == {"k": "v", "other": "1"}  # approximation: omitted fields stay
    status, _ = call_api(kube_api, "PATCH", path, configmap("a"), apply)
    assert status == 400  # fieldManager is required


def test_unknown_patch_content_type_is_415(kube_api: KubeEmulator, core: CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("a"))
    path = "/api/v1/namespaces/default/configmaps/a"
    status, _ = call_api(kube_api, "PATCH", path, {}, "text/plain")
    assert status == 415


# 9. CRDs.


def test_posted_crd_is_discoverable_and_served(
    widgets_crd: dict[str, Any], kube_api: KubeEmulator, k8s_client: ApiClient
) -> None:
    _, groups = call_api(kube_api, "GET", "/apis")
    assert {"groupVersion": f"{GROUP}/v1", "version": "v1"} in next(
        g["versions"] for g in groups["groups"] if g["name"] == GROUP
    )
    _, group = call_api(kube_api, "GET", f"/apis/{GROUP}")
    assert group["preferredVersion"]["version"] == "v1"
    _, resources = call_api(kube_api, "GET", f"/apis/{GROUP}/v1")
    entries = {r["name"]: r for r in resources["resources"]}
    assert entries["widgets"]["kind"] == "Widget"
    assert entries["widgets"]["namespaced"] is True
    assert entries["widgets"]["shortNames"] == ["wg"]
    assert {"get", "list", "watch", "create", "patch", "update", "delete"} <= set(
        entries["widgets"]["verbs"]
    )
    assert "widgets/status" in entries
    read = ApiextensionsV1Api(k8s_client).read_custom_resource_definition(WIDGETS)
    assert {c.type: c.status for c in read.status.conditions}["Established"] == "True"


def test_deleting_a_crd_stops_serving_it_and_drops_its_objects(
    widgets_crd: dict[str, Any],
    kube_api: KubeEmulator,
    k8s_client: ApiClient,
    custom: CustomObjectsApi,
) -> None:
    custom.create_namespaced_custom_object(GROUP, "v1", "default", "widgets", widget("w"))
    ApiextensionsV1Api(k8s_client).delete_custom_resource_definition(WIDGETS)
    assert call_api(kube_api, "GET", f"/apis/{GROUP}/v1")[0] == 404
    assert call_api(kube_api, "GET", f"/apis/{GROUP}/v1/namespaces/default/widgets/w")[0] == 404
    assert GROUP not in {g["name"] for g in call_api(kube_api, "GET", "/apis")[1]["groups"]}


def test_kopf_peering_crds_can_be_posted(kube_api: KubeEmulator, k8s_client: ApiClient) -> None:
    for manifest in kopf_peering_crds():
        ApiextensionsV1Api(k8s_client).create_custom_resource_definition(manifest)
    _, resources = call_api(kube_api, "GET", "/apis/kopf.dev/v1")
    assert {(r["name"], r["namespaced"]) for r in resources["resources"]} == {
        ("kopfpeerings", True),
        ("clusterkopfpeerings", False),
    }


# 10. Garbage collection and finalizers.


def owned_by(owner: Any) -> dict[str, Any]:
    return {
        "ownerReferences": [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": owner.metadata.name,
                "uid": owner.metadata.uid,
            }
        ]
    }


def test_deleting_an_owner_deletes_its_dependents_in_cascade(
    kube_api: KubeEmulator, core: CoreV1Api
) -> None:
    owner = core.create_namespaced_config_map("default", configmap("owner"))
    child = core.create_namespaced_config_map("default", configmap("child", **owned_by(owner)))
    core.create_namespaced_secret(
        "default", {"metadata": {"name": "grandchild", **owned_by(child)}}
    )
    core.create_namespaced_config_map("default", configmap("unrelated"))
    core.delete_namespaced_config_map("owner", "default")
    assert [o["metadata"]["name"] for o in kube_api.objects("configmaps", "default")] == [
        "unrelated"
    ]
    assert kube_api.objects("secrets", "default") == []


def test_finalizers_hold_an_object_until_removed(kube_api: KubeEmulator, core: CoreV1Api) -> None:
    owner = core.create_namespaced_config_map("default", configmap("owner"))
    core.create_namespaced_config_map(
        "default", configmap("held", finalizers=["test/hold"], **owned_by(owner))
    )
    core.delete_namespaced_config_map("owner", "default")
    held = core.read_namespaced_config_map("held", "default")
    assert held.metadata.deletion_timestamp is not None
    status, _ = api_error(
        lambda: core.patch_namespaced_config_map(
            "held", "default", {"metadata": {"finalizers": ["test/hold", "test/new"]}}
        )
    )
    assert status == 422  # no new finalizers on an object being deleted
    # The client sends a strategic merge patch, which merges lists of finalizers: [] is a no-op.
    core.patch_namespaced_config_map("held", "default", {"metadata": {"finalizers": []}})
    assert kube_api.get("configmaps", "held", "default") is not None
    core.patch_namespaced_config_map("held", "default", {"metadata": {"finalizers": None}})
    assert kube_api.get("configmaps", "held", "default") is None


def test_orphan_propagation_keeps_dependents_without_the_owner_reference(
    kube_api: KubeEmulator, core: CoreV1Api
) -> None:
    owner = core.create_namespaced_config_map("default", configmap("owner"))
    core.create_namespaced_config_map("default", configmap("child", **owned_by(owner)))
    core.delete_namespaced_config_map("owner", "default", propagation_policy="Orphan")
    child = kube_api.get("configmaps", "child", "default")
    assert child is not None
    assert "ownerReferences" not in child["metadata"]


def test_delete_preconditions_are_checked(core: CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("a"))
    options = kubernetes.client.V1DeleteOptions(
        preconditions=kubernetes.client.V1Preconditions(uid="not-the-uid")
    )
    status, _ = api_error(lambda: core.delete_namespaced_config_map("a", "default", body=options))
    assert status == 409


# 11. Events.


def test_core_and_events_k8s_io_events_accept_generate_name(
    kube_api: KubeEmulator, k8s_client: ApiClient, core: CoreV1Api
) -> None:
    involved = kubernetes.client.V1ObjectReference(kind="ConfigMap", name="a", namespace="default")
    for _ in range(2):
        core.create_namespaced_event(
            "default",
            kubernetes.client.CoreV1Event(
                metadata=kubernetes.client.V1ObjectMeta(generate_name="a."),
                involved_object=involved,
                reason="Test",
                message="hello",
                type="Normal",
            ),
        )
    EventsV1Api(k8s_client).create_namespaced_event(
        "default",
        kubernetes.client.EventsV1Event(
            metadata=kubernetes.client.V1ObjectMeta(generate_name="b."),
            event_time=datetime.datetime.now(datetime.UTC),
            reporting_controller="test",
            reporting_instance="test",
            action="Test",
            reason="Test",
        ),
    )
    assert len(kube_api.objects("events", "default")) == 2
    assert len(kube_api.objects("events.events.k8s.io", "default")) == 1
    found = core.list_namespaced_event("default", field_selector="involvedObject.name=a")
    assert len(found.items) == 2


# 12. The request log.


def test_writes_since_a_mark_list_every_mutating_call(
    kube_api: KubeEmulator, core: CoreV1Api, k8s_client: ApiClient
) -> None:
    core.create_namespaced_config_map("default", configmap("before"))
    mark = kube_api.mark()
    core.create_namespaced_config_map("default", configmap("a"))
    core.read_namespaced_config_map("a", "default")
    core.patch_namespaced_config_map("a", "default", {"data": {"k": "2"}})
    apps = AppsV1Api(k8s_client)
    apps.create_namespaced_deployment("default", deployment("d", [{"name": "a"}]))
    apps.patch_namespaced_deployment_status("d", "default", {"status": {"replicas": 1}})
    with contextlib.suppress(ApiException):
        core.create_namespaced_config_map("default", configmap("a"))  # 409: still a write
    core.delete_namespaced_config_map("a", "default")
    assert kube_api.writes(since=mark) == [
        Write("create", "configmaps", "default", None),
        Write("patch", "configmaps", "default", "a"),
        Write("create", "deployments.apps", "default", None),
        Write("patch", "deployments.apps/status", "default", "d"),
        Write("create", "configmaps", "default", None),
        Write("delete", "configmaps", "default", "a"),
    ]
    assert kube_api.counts(since=mark) == {"create": 3, "get": 1, "patch": 2, "delete": 1}
    assert [c.status for c in kube_api.calls(since=mark)] == [201, 200, 200, 201, 200, 409, 200]


# 13. Fault injection through kmock.


def test_an_injected_failure_answers_instead_of_the_store(
    kube_api: KubeEmulator, core: CoreV1Api
) -> None:
    kube_api.inject(lambda kmock: kmock["create v1/configmaps"][:1] << 500)
    with pytest.raises(ApiException) as failed:
        core.create_namespaced_config_map("default", configmap("a"))
    assert failed.value.status == 500
    assert kube_api.get("configmaps", "a", "default") is None  # the failed call changed nothing
    core.create_namespaced_config_map("default", configmap("a"))  # only the first one fails
    assert len(kube_api.kmock["create v1/configmaps"]) == 2


def test_an_injected_conflict_on_a_patch(kube_api: KubeEmulator, core: CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("a"))
    kube_api.inject(
        lambda k: (
            k["update v1/configmaps"][:1]
            << kmock.KubernetesError(status=409, reason="Conflict", message="injected")
        )
    )
    status, body = api_error(lambda: core.patch_namespaced_config_map("a", "default", {}))
    assert (status, body["reason"], body["message"]) == (409, "Conflict", "injected")


# kubectl.


def test_kubectl_apply_get_by_label_and_label(kubectl: Kubectl, kube_api: KubeEmulator) -> None:
    kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(configmap("a", {"app": "x"})))
    kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(configmap("b", {"app": "y"})))
    assert kubectl("get", "cm", "-l", "app=x", "-o", "name").stdout == "configmap/a\n"
    assert "a " in kubectl("get", "configmaps").stdout  # the table printer works
    kubectl("label", "cm", "a", "tier=db")
    assert kube_api.get("configmaps", "a", "default")["metadata"]["labels"] == {  # type: ignore[index]
        "app": "x",
        "tier": "db",
    }


def test_kubectl_apply_updates_a_deployment_with_a_strategic_merge_patch(
    kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    two = deployment("d", [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}])
    kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(two))
    one = deployment("d", [{"name": "a", "image": "a:2"}])
    assert (
        "configured"
        in kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(one)).stdout
    )
    stored = kube_api.get("deployments.apps", "d", "default")
    assert stored is not None
    assert stored["spec"]["template"]["spec"]["containers"] == [{"name": "a", "image": "a:2"}]
    assert stored["metadata"]["generation"] == 2


def test_kubectl_get_watch_streams_changes(kubectl: Kubectl, core: CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("a"))
    timer = threading.Timer(
        1.0,
        lambda: core.patch_namespaced_config_map(
            "a", "default", {"metadata": {"labels": {"tier": "db"}}}
        ),
    )
    timer.start()
    try:
        output = kubectl.stream(
            "get",
            "cm",
            "a",
            "-w",
            "-o",
            'jsonpath={.metadata.name}:{.metadata.labels.tier}{"\\n"}',
            seconds=2.5,
        )
    finally:
        timer.join()
    assert output == "a:\na:db\n"


def test_kubectl_crd_status_patch_wait_replace_apply_and_delete(
    kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(crd(GROUP, "Widget")))
    kubectl("wait", "--for=condition=Established", f"crd/{WIDGETS}", "--timeout=10s")
    kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(widget("w")))
    kubectl(
        "patch",
        "widget",
        "w",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"conditions": [{"type": "Ready", "status": "True"}]}}',
    )
    kubectl("wait", "--for=condition=Ready", "widget/w", "--timeout=10s")

    kubectl("replace", "--validate=false", "-f", "-", input=json.dumps(widget("w", size=2)))
    kubectl(
        "apply",
        "--server-side",
        "--validate=false",
        "-f",
        "-",
        input=json.dumps(widget("w", size=3)),
    )
    kubectl("apply", "--server-side", "--validate=false", "-f", "-", input=json.dumps(widget("v")))
    stored = kube_api.get(WIDGETS, "w", "default")
    assert stored is not None
    assert stored["spec"] == {"size": 3}
    assert stored["status"]["conditions"][0]["type"] == "Ready"  # replace kept the status
    assert stored["metadata"]["generation"] == 3

    kubectl("patch", "widget", "w", "--type=merge", "-p", '{"metadata": {"finalizers": ["t/x"]}}')
    timer = threading.Timer(
        1.0,
        lambda: kubectl(
            "patch",
            "widget",
            "w",
            "--type=json",
            "-p",
            '[{"op": "remove", "path": "/metadata/finalizers"}]',
        ),
    )
    timer.start()
    try:
        started = time.monotonic()
        kubectl("delete", "widget", "w", "--wait", "--timeout=10s")
        assert time.monotonic() - started > 0.9  # it waited for the finalizer to go
    finally:
        timer.join()
    assert kubectl("get", "widgets", "-o", "name").stdout == f"widget.{GROUP}/v\n"


# The kopf operator (the reason for all of the above).


@pytest.mark.timeout(60)
@pytest.mark.parametrize("initial_streaming", [False, True], ids=["list-then-watch", "watch-list"])
def test_a_kopf_operator_converges_and_deletion_completes(
    kube_api: KubeEmulator,
    core: CoreV1Api,
    custom: CustomObjectsApi,
    widgets_crd: dict[str, Any],
    initial_streaming: bool,
) -> None:
    registry = kopf.OperatorRegistry()
    settings = kopf.OperatorSettings()
    settings.posting.level = logging.INFO
    settings.watching.initial_streaming = initial_streaming  # sendInitialEvents + bookmarks
    deleted: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kube_api.url, insecure=True)

    @kopf.on.create(GROUP, "v1", "widgets", registry=registry)
    @kopf.on.update(GROUP, "v1", "widgets", registry=registry)
    def reconcile(body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
        patch.status["phase"] = "Ready"
        patch.status["size"] = spec["size"]
        kopf.info(body, reason="Reconciled", message=f"size {spec['size']}")

    @kopf.on.delete(GROUP, "v1", "widgets", registry=registry)
    def delete(name: str, **_: Any) -> None:
        deleted.append(name)

    core.create_namespace({"metadata": {"name": "kopf-1"}})
    args = (GROUP, "v1", "kopf-1", "widgets")
    with kopf.testing.KopfRunner(
        ["run", "--standalone", "--namespace=kopf-*", "--verbose"],
        registry=registry,
        settings=settings,
        timeout=30,
    ):
        custom.create_namespaced_custom_object(*args, widget("w", size=1))
        done = wait_for(
            lambda: (
                (o := kube_api.get(WIDGETS, "w", "kopf-1"))
                and o.get("status", {}).get("size") == 1
                and o
            )
        )
        assert done["status"]["phase"] == "Ready"
        assert done["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]

        custom.patch_namespaced_custom_object(*args, "w", {"spec": {"size": 2}})
        wait_for(
            lambda: (
                ((kube_api.get(WIDGETS, "w", "kopf-1") or {}).get("status") or {}).get("size") == 2
            )
        )

        mark = kube_api.mark()
        time.sleep(1.5)  # idle: a converged operator writes nothing
        assert kube_api.writes(since=mark) == []

        custom.delete_namespaced_custom_object(*args, "w")
        wait_for(lambda: kube_api.get(WIDGETS, "w", "kopf-1") is None)
        assert deleted == ["w"]
        reasons = wait_for(
            lambda: [
                e["reason"]
                for e in kube_api.objects("events", "kopf-1")
                if e["reason"] == "Reconciled"
            ]
        )
        assert len(reasons) >= 1

    calls = [call for call in kube_api.calls() if call.plural == "widgets"]
    watches = [call for call in calls if call.verb == "watch"]
    assert watches
    assert all(call.params.get("allowWatchBookmarks") == "true" for call in watches)
    if initial_streaming:
        assert watches[0].params.get("sendInitialEvents") == "true"
        assert not [call for call in calls if call.verb == "list"]


# Using the emulator from async code, without fixtures.


async def test_async_context_manager_and_aiohttp_client() -> None:
    async with KubeEmulator.running() as emu, aiohttp.ClientSession(emu.url) as session:
        async with session.post(
            "/api/v1/namespaces/default/configmaps", json=configmap("a")
        ) as response:
            assert response.status == 201
        # Even a blocking call from the test's own loop cannot deadlock: the server has its own.
        _, listing = call_api(emu, "GET", "/api/v1/namespaces/default/configmaps")
        assert [i["metadata"]["name"] for i in listing["items"]] == ["a"]
