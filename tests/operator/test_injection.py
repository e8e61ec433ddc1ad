"""Database injection into annotated Deployments and StatefulSets, against the emulated API:
kopf runs the real handlers (`handlers.register` and `injection.register_injection`), the user's
tool is kubectl, the app is manifests/examples/app-deployment.yaml.

An annotated Deployment gets a ManagedDatabase and the injection (envFrom, label, init
container) in one patch; nothing is written again while nothing changes (a touch, a restart);
re-applying the manifest from Git costs no write, a replace costs one; removing the annotation
restores the template and keeps the database; two workloads share one database; StatefulSets
work too; an invalid value gets one Warning and nothing else; a failed patch is retried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import operator_harness
import pytest
import yaml
from kubeemu import Kubectl, KubeEmulator, Write
from operator_harness import (
    NAMESPACE,
    REPO,
    Operator,
    mdb,
    operator_calls,
    operator_writes,
    report,
    wait_for,
)

from sotadb import names
from sotadb.kube.api import USER_AGENT
from sotadb.kube.handlers import OperatorConfig, register
from sotadb.kube.injection import FIELD_MANAGER, register_injection
from sotadb.render import injection

pytest_plugins = ["conftest_operator"]
pytestmark = pytest.mark.timeout(60)

EXAMPLE = REPO / "manifests" / "examples" / "app-deployment.yaml"
SLUG = "my-app"
DEPLOYMENTS = "deployments.apps"
STATEFULSETS = "statefulsets.apps"


@pytest.fixture
def operator(start_operator: Callable[..., Operator], monkeypatch: pytest.MonkeyPatch) -> Operator:
    """The operator with the injection registered after the database handlers, as
    `sotadb operator` registers it (the harness calls `operator_harness.register`)."""

    def both(registry: Any, config: OperatorConfig) -> None:
        register(registry, config)
        register_injection(registry, config)

    monkeypatch.setattr(operator_harness, "register", both)
    return start_operator()


# ---------------------------------------------------------------- helpers


def example() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return document


def workload(
    name: str,
    database: str | None,
    *,
    kind: str = "Deployment",
    env_from: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A small app workload, annotated with `database` (None: not annotated)."""
    container: dict[str, Any] = {"name": "app", "image": "example/app:1"}
    if env_from is not None:
        container["envFrom"] = env_from
    spec: dict[str, Any] = {
        "replicas": 1,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    metadata: dict[str, Any] = {"name": name}
    if database is not None:
        metadata["annotations"] = {injection.ANNOTATION_DATABASE: database}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": metadata, "spec": spec}


def apply(kubectl: Kubectl, document: dict[str, Any], *args: str) -> None:
    kubectl("apply", "--validate=false", *args, "-f", "-", input=json.dumps(document))


def replace(kubectl: Kubectl, document: dict[str, Any]) -> None:
    kubectl("replace", "--validate=false", "-f", "-", input=json.dumps(document))


def stored(emu: KubeEmulator, name: str, resource: str = DEPLOYMENTS) -> dict[str, Any]:
    found = emu.get(resource, name, NAMESPACE)
    assert found is not None, f"no {resource} {name}"
    return found


def record(body: dict[str, Any]) -> injection.Injected | None:
    return injection.injected(body)


def is_injected(body: dict[str, Any] | None, slug: str) -> bool:
    """The pod template carries `slug`'s injection and the record says so."""
    if body is None:
        return False
    template = body["spec"]["template"]
    spec = template["spec"]
    secret = {"secretRef": {"name": names.app_secret_name(slug)}}
    waits = [c for c in spec.get("initContainers") or [] if c["name"] == injection.WAIT_CONTAINER]
    found = record(body)
    return (
        template["metadata"]["labels"].get(names.direct_access_label(slug)) == "direct"
        and all(secret in (c.get("envFrom") or []) for c in spec["containers"])
        and len(waits) == 1
        and waits[0]["envFrom"] == [secret]
        and found is not None
        and found.database == slug
    )


def quiet(emu: KubeEmulator, seconds: float = 0.5) -> None:
    """Wait until the operator has sent nothing for a while (its reaction has ended)."""

    def still() -> bool:
        mark = emu.mark()
        time.sleep(seconds)
        return not operator_calls(emu, mark)

    wait_for(still, timeout=20, what="the operator to go quiet")


def workload_writes(emu: KubeEmulator, since: int, resource: str = DEPLOYMENTS) -> list[Write]:
    """The operator's writes to apps' workloads (not to the database's own, `sota-…`)."""
    return [
        w
        for w in operator_writes(emu, since)
        if w.resource == resource and not (w.name or "").startswith("sota-")
    ]


def database_creates(emu: KubeEmulator, since: int) -> list[Write]:
    return [
        w
        for w in operator_writes(emu, since)
        if w.verb == "create" and w.resource.startswith(f"{names.PLURAL_DATABASE}.{names.GROUP}")
    ]


def sent_patches(emu: KubeEmulator, name: str) -> list[tuple[str, dict[str, Any]]]:
    """(Content-Type, body) of every PATCH the operator sent to the Deployment `name`."""
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}"
    return [
        (r.headers.get("Content-Type", ""), r.data)
        for r in emu.call(lambda: list(emu.kmock))
        if str(getattr(r.method, "value", r.method)) == "PATCH"
        and r.url.path == path
        and r.headers.get("User-Agent", "") == USER_AGENT
    ]


def events_for(emu: KubeEmulator, name: str, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in emu.objects("events", NAMESPACE)
        if e.get("reason") == reason and (e.get("involvedObject") or {}).get("name") == name
    ]


# ---------------------------------------------------------------- the tests


def test_an_annotated_deployment_gets_a_database_and_the_injection(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    mark = kube_api.mark()
    kubectl("apply", "--validate=false", "-f", str(EXAMPLE))
    body = wait_for(
        lambda: (b := kube_api.get(DEPLOYMENTS, SLUG, NAMESPACE)) and is_injected(b, SLUG) and b,
        what="the example Deployment injected",
    )
    database = mdb(kube_api, SLUG)
    assert database is not None
    assert database["metadata"]["labels"] == {names.LABEL_MANAGED_BY: names.MANAGED_BY}
    assert database["metadata"]["annotations"] == {
        injection.ANNOTATION_CREATED_FOR: f"Deployment/{SLUG}"
    }
    assert "spec" not in database or not database["spec"]  # all defaults
    # The database is provisioned as any other: its app Secret is what the pods read.
    wait_for(lambda: kube_api.get("secrets", names.app_secret_name(SLUG), NAMESPACE))
    quiet(kube_api)

    spec = body["spec"]["template"]["spec"]
    (app,) = spec["containers"]
    assert app["envFrom"] == [{"secretRef": {"name": "sota-db-my-app-app"}}]
    assert body["spec"]["template"]["metadata"]["labels"] == {
        "app.kubernetes.io/name": SLUG,
        "db.sota.io/my-app": "direct",
    }
    (wait,) = spec["initContainers"]
    assert wait == injection.wait_container(SLUG)
    assert wait["image"] == names.POOLER_IMAGE
    assert record(body) == injection.Injected(SLUG, ("app",), label=True)
    # The rest of the template is the manifest's, untouched.
    original = example()["spec"]["template"]
    assert {k: v for k, v in spec.items() if k != "initContainers"} == {
        **original["spec"],
        "containers": [{**original["spec"]["containers"][0], "envFrom": app["envFrom"]}],
    }

    # One create of the database, one patch of the Deployment (strategic merge, our field
    # manager, the event's resourceVersion as precondition), and nothing else on it.
    patches = [
        c
        for c in operator_calls(kube_api, mark)
        if (c.verb, c.resource, c.name) == ("patch", DEPLOYMENTS, SLUG)
    ]
    assert len(patches) == 1
    assert patches[0].params.get("fieldManager") == FIELD_MANAGER
    ((content_type, sent),) = sent_patches(kube_api, SLUG)
    assert content_type == "application/strategic-merge-patch+json"
    assert sent["metadata"]["resourceVersion"]  # a precondition: never over a newer template
    assert workload_writes(kube_api, mark) == [Write("patch", DEPLOYMENTS, NAMESPACE, SLUG)]
    assert len(database_creates(kube_api, mark)) == 1
    assert len(events_for(kube_api, SLUG, "DatabaseCreated")) == 1
    assert len(events_for(kube_api, SLUG, "DatabaseInjected")) == 1
    report(
        "operator writes for one annotated Deployment: 1 ManagedDatabase create, "
        f"{len(patches)} Deployment patch, "
        f"{len([w for w in operator_writes(kube_api, mark) if w.resource == 'events'])} Events"
    )


def test_a_second_reconcile_changes_nothing(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    kubectl("apply", "--validate=false", "-f", str(EXAMPLE))
    wait_for(lambda: is_injected(kube_api.get(DEPLOYMENTS, SLUG, NAMESPACE), SLUG))
    quiet(kube_api)
    before = stored(kube_api, SLUG)

    # Events without a change to what we manage: an annotation, the controller's status.
    mark = kube_api.mark()
    kubectl("annotate", "deployment", SLUG, "example.com/touched=yes")
    kubectl(
        "patch",
        "deployment",
        SLUG,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"observedGeneration": 2, "replicas": 1}}),
    )
    quiet(kube_api)
    # A restart: kopf lists every Deployment again and the handler sees each one.
    operator.restart()
    quiet(kube_api)
    assert workload_writes(kube_api, mark) == []
    assert database_creates(kube_api, mark) == []
    assert stored(kube_api, SLUG)["spec"] == before["spec"]
    idle = operator_writes(kube_api, mark)
    report(f"operator writes while idle (touch, status, restart): {len(idle)}")
    assert idle == []


def test_reapplying_the_manifest_from_git_does_not_fight(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    manifest = example()
    apply(kubectl, manifest)
    wait_for(lambda: is_injected(kube_api.get(DEPLOYMENTS, SLUG, NAMESPACE), SLUG))
    quiet(kube_api)
    injected = stored(kube_api, SLUG)

    # Client-side apply (kubectl, Argo CD, Flux): computed from the last-applied annotation,
    # which never holds our fields. Neither kubectl nor the operator writes anything.
    mark = kube_api.mark()
    for _ in range(3):
        apply(kubectl, manifest)
        quiet(kube_api, 0.3)
    assert kube_api.writes(mark) == []
    assert stored(kube_api, SLUG)["spec"] == injected["spec"]

    # Server-side apply (emulated as a merge that keeps others' fields): no operator write.
    mark = kube_api.mark()
    apply(kubectl, manifest, "--server-side", "--field-manager=gitops")
    quiet(kube_api, 0.3)
    assert workload_writes(kube_api, mark) == []
    assert is_injected(stored(kube_api, SLUG), SLUG)

    # A replace drops everything we added; the operator adds it back once per replace.
    mark = kube_api.mark()
    for round_ in range(1, 4):
        replace(kubectl, manifest)
        wait_for(
            lambda r=round_: (
                len(workload_writes(kube_api, mark)) == r
                and is_injected(kube_api.get(DEPLOYMENTS, SLUG, NAMESPACE), SLUG)
            ),
            what=f"re-injected after replace {round_}",
        )
        quiet(kube_api, 0.3)
    assert len(workload_writes(kube_api, mark)) == 3
    assert stored(kube_api, SLUG)["spec"]["template"] == injected["spec"]["template"]
    report("operator writes on re-apply: client-side 0 (x3), server-side 0, replace 1 each (x3)")


def test_a_container_with_its_own_env_from_costs_one_write_per_apply(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    """envFrom has no merge key: a manifest that sets it sends the whole list on every apply
    that changes it, and we add our entry back once; a manifest that lists the Secret itself
    is left alone."""
    own = [{"configMapRef": {"name": "settings"}}]
    manifest = workload("web", SLUG, env_from=own)
    apply(kubectl, manifest)
    wait_for(lambda: is_injected(kube_api.get(DEPLOYMENTS, "web", NAMESPACE), SLUG))
    quiet(kube_api)
    (app,) = stored(kube_api, "web")["spec"]["template"]["spec"]["containers"]
    assert app["envFrom"] == [{"secretRef": {"name": "sota-db-my-app-app"}}, *own]

    mark = kube_api.mark()
    for _ in range(2):
        apply(kubectl, manifest)
        quiet(kube_api, 0.3)
    everyone = [w for w in kube_api.writes(mark) if w.resource == DEPLOYMENTS]
    ours = workload_writes(kube_api, mark)
    assert len(ours) == len(everyone) - len(ours) == 2  # one each per apply
    assert is_injected(stored(kube_api, "web"), SLUG)
    report(
        f"own envFrom, 2 client-side applies: {len(everyone) - len(ours)} kubectl writes, "
        f"{len(ours)} operator writes"
    )

    # Listing the Secret in the manifest: nothing to add, nothing to fight over.
    explicit = workload("web", SLUG, env_from=[*own, {"secretRef": {"name": "sota-db-my-app-app"}}])
    apply(kubectl, explicit)
    quiet(kube_api)
    mark = kube_api.mark()
    for _ in range(2):
        apply(kubectl, explicit)
        quiet(kube_api, 0.3)
    assert kube_api.writes(mark) == []
    (app,) = stored(kube_api, "web")["spec"]["template"]["spec"]["containers"]
    assert app["envFrom"] == explicit["spec"]["template"]["spec"]["containers"][0]["envFrom"]


def test_removing_the_annotation_removes_the_injection_and_keeps_the_database(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    manifest = example()
    apply(kubectl, manifest)
    wait_for(lambda: is_injected(kube_api.get(DEPLOYMENTS, SLUG, NAMESPACE), SLUG))
    quiet(kube_api)
    uid = (mdb(kube_api, SLUG) or {})["metadata"]["uid"]

    # As GitOps removes it: the manifest without the annotation, applied.
    mark = kube_api.mark()
    del manifest["metadata"]["annotations"]
    apply(kubectl, manifest)
    body = wait_for(
        lambda: (
            (b := kube_api.get(DEPLOYMENTS, SLUG, NAMESPACE))
            and injection.ANNOTATION_INJECTED not in (b["metadata"].get("annotations") or {})
            and b
        ),
        what="the injection removed",
    )
    quiet(kube_api)
    assert body["spec"]["template"] == example()["spec"]["template"]
    assert workload_writes(kube_api, mark) == [Write("patch", DEPLOYMENTS, NAMESPACE, SLUG)]
    assert len(events_for(kube_api, SLUG, "DatabaseInjectionRemoved")) == 1
    database = mdb(kube_api, SLUG)
    assert database is not None
    assert database["metadata"]["uid"] == uid
    assert not [w for w in operator_writes(kube_api, mark) if w.verb == "delete"]


def test_two_deployments_naming_the_same_database_share_it(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    mark = kube_api.mark()
    kubectl(
        "apply",
        "--validate=false",
        "-f",
        "-",
        input=yaml.safe_dump_all([workload(n, "shop") for n in ("web", "worker")]),
    )
    for name in ("web", "worker"):
        wait_for(lambda n=name: is_injected(kube_api.get(DEPLOYMENTS, n, NAMESPACE), "shop"))
    quiet(kube_api)
    assert [
        d["metadata"]["name"] for d in kube_api.objects(f"{names.PLURAL_DATABASE}.sota.io")
    ] == ["shop"]
    # Whoever came second found it (in the operator's index, or as a 409 if they raced).
    creates = [
        c
        for c in operator_calls(kube_api, mark)
        if c.verb == "create" and c.resource == "manageddatabases.sota.io"
    ]
    assert [c.status for c in creates if c.status is not None and c.status < 300] == [201]
    assert len(creates) <= 2
    assert sorted(w.name or "" for w in workload_writes(kube_api, mark)) == ["web", "worker"]


def test_a_statefulset_works_too(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    mark = kube_api.mark()
    apply(kubectl, workload("ledger", "true", kind="StatefulSet"))
    wait_for(
        lambda: is_injected(kube_api.get(STATEFULSETS, "ledger", NAMESPACE), "ledger"),
        what="the StatefulSet injected",
    )
    quiet(kube_api)
    assert mdb(kube_api, "ledger") is not None
    writes = [w for w in workload_writes(kube_api, mark, STATEFULSETS) if w.name == "ledger"]
    assert writes == [Write("patch", STATEFULSETS, NAMESPACE, "ledger")]


def test_switching_databases_moves_the_injection_in_one_patch(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    apply(kubectl, workload("web", "first"))
    wait_for(lambda: is_injected(kube_api.get(DEPLOYMENTS, "web", NAMESPACE), "first"))
    quiet(kube_api)
    mark = kube_api.mark()
    apply(kubectl, workload("web", "second"))
    body = wait_for(
        lambda: (
            (b := kube_api.get(DEPLOYMENTS, "web", NAMESPACE)) and is_injected(b, "second") and b
        )
    )
    quiet(kube_api)
    template = body["spec"]["template"]
    assert "db.sota.io/first" not in template["metadata"]["labels"]
    assert "sota-db-first-app" not in json.dumps(template)
    assert workload_writes(kube_api, mark) == [Write("patch", DEPLOYMENTS, NAMESPACE, "web")]
    assert mdb(kube_api, "first") is not None
    assert mdb(kube_api, "second") is not None


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("web-v2.1", "true", "'web-v2.1' is no valid database name"),
        ("web", "My_DB", "'My_DB' is no valid database name"),
    ],
    ids=["true-with-a-dotted-name", "uppercase-value"],
)
def test_an_invalid_annotation_gets_one_warning_and_no_database(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator, name: str, value: str, says: str
) -> None:
    mark = kube_api.mark()
    apply(kubectl, workload(name, value))
    warnings = wait_for(lambda: events_for(kube_api, name, "InvalidDatabaseAnnotation"))
    (warning,) = warnings
    assert warning["type"] == "Warning"
    assert says in warning["message"]
    assert "fix:" in warning["message"]
    # More events of the same workload (the controller's status) repeat no warning.
    kubectl(
        "patch",
        "deployment",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"replicas": 1}}),
    )
    quiet(kube_api)
    assert len(events_for(kube_api, name, "InvalidDatabaseAnnotation")) == 1
    assert kube_api.objects(f"{names.PLURAL_DATABASE}.sota.io", NAMESPACE) == []
    assert workload_writes(kube_api, mark) == []
    assert database_creates(kube_api, mark) == []


def test_the_database_outlives_the_deployment(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    kubectl("apply", "--validate=false", "-f", str(EXAMPLE))
    wait_for(lambda: is_injected(kube_api.get(DEPLOYMENTS, SLUG, NAMESPACE), SLUG))
    quiet(kube_api)
    mark = kube_api.mark()
    kubectl("delete", "-f", str(EXAMPLE), "--wait=true")
    quiet(kube_api)
    assert kube_api.get(DEPLOYMENTS, SLUG, NAMESPACE) is None
    assert mdb(kube_api, SLUG) is not None
    assert kube_api.get("secrets", names.app_secret_name(SLUG), NAMESPACE) is not None
    assert not [w for w in operator_writes(kube_api, mark) if w.verb == "delete"]
    assert database_creates(kube_api, mark) == []


def test_a_failed_patch_is_retried(
    operator: Operator, kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    kube_api.inject(lambda k: k["patch apps/v1/deployments"][:1] << 500)
    mark = kube_api.mark()
    apply(kubectl, workload("web", SLUG))
    wait_for(
        lambda: is_injected(kube_api.get(DEPLOYMENTS, "web", NAMESPACE), SLUG),
        what="injected after the retry",
    )
    quiet(kube_api)
    statuses = [
        c.status
        for c in operator_calls(kube_api, mark)
        if (c.verb, c.resource, c.name) == ("patch", DEPLOYMENTS, "web")
    ]
    assert statuses == [500, 200]
