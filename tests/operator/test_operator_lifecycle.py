"""The operator's life with one database, against the emulated API: kopf runs the real handlers,
the user's tools are kubectl and the ``kubernetes`` client, and the test plays the workload
controllers' part openly (it patches ``/status`` of the StatefulSet and Deployment).

Create → every rendered object, owned by the ManagedDatabase; the app Secret's DATABASE_URL;
Ready only once the workloads report ready replicas; a pool change writes only the pooler's
ConfigMap and Deployment; an idle resync sends nothing; every object sent validates.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import pytest
from kubeemu import Kubectl, KubeEmulator, Write
from kubernetes.client import ApiClient, AppsV1Api
from operator_harness import (
    MDB,
    MINIMAL,
    NAMESPACE,
    RENDERED_COUNT,
    Operator,
    app_password,
    condition,
    converged,
    is_custom,
    kubernetes_problems,
    mdb,
    operator_calls,
    operator_writes,
    owned_objects,
    report,
    secret_value,
    sent_objects,
    status_of,
    strip_server_fields,
    wait_for,
)

from sotadb import names
from sotadb.credentials import Credentials
from sotadb.kube import reconcile
from sotadb.render import render_objects
from sotadb.spec import parse_database

pytest_plugins = ["conftest_operator"]
pytestmark = pytest.mark.timeout(60)

SLUG = "my-app"
# The seed's format: role app_<slug>, a 32-hex password, PgBouncer's Service, no TLS in-cluster.
DATABASE_URL = re.compile(
    r"postgresql://app_my-app:[0-9a-f]{32}@sota-pgbouncer-my-app:5432/my-app\?sslmode=disable"
)


def apply_minimal(kubectl: Kubectl) -> None:
    kubectl("apply", "--validate=false", "-f", str(MINIMAL))


def provisioned(emu: KubeEmulator) -> bool:
    return status_of(emu, SLUG).get("phase") == "Provisioning" and converged(emu, SLUG)


def quiet(emu: KubeEmulator, seconds: float = 0.4) -> None:
    """Wait until the operator has sent nothing for a while (its reaction has ended)."""

    def still() -> bool:
        mark = emu.mark()
        time.sleep(seconds)
        return not operator_calls(emu, mark)

    wait_for(still, timeout=15, what="the operator to go quiet")


def test_create_makes_every_rendered_object_owned_by_the_database(
    start_operator: Callable[..., Operator], kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    start_operator()
    mark = kube_api.mark()
    apply_minimal(kubectl)
    wait_for(lambda: provisioned(kube_api), what="my-app provisioned")
    quiet(kube_api)

    body = mdb(kube_api, SLUG)
    assert body is not None
    uid = body["metadata"]["uid"]
    assert "sota.io/finalizer" in body["metadata"]["finalizers"]
    rendered = render_objects(parse_database(body), Credentials.generate())
    stored = owned_objects(kube_api, SLUG)
    assert sorted(stored) == sorted((d["kind"], d["metadata"]["name"]) for d in rendered)
    assert len(stored) == RENDERED_COUNT
    for (kind, name), obj in stored.items():
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "sota.io/v1",
                "kind": "ManagedDatabase",
                "name": SLUG,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], f"{kind}/{name}"

    status = status_of(kube_api, SLUG)
    assert status["phase"] == "Provisioning"
    assert status["secretName"] == "sota-db-my-app-app"
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "BackupsScheduled")["status"] == "True"

    # Requests per database on create: reads come from watches, each object is written once.
    calls = operator_calls(kube_api, mark)
    report(f"operator requests for one database's creation: {len(calls)} (target <= 15)")
    report("  " + ", ".join(f"{c.verb} {c.resource}" for c in calls))
    assert len(calls) <= 15
    assert {c.verb for c in calls} <= {"create", "patch"}
    assert all(c.status is not None and c.status < 300 for c in calls)


def test_the_app_secret_holds_database_url_in_the_seed_format(
    start_operator: Callable[..., Operator], kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    start_operator()
    apply_minimal(kubectl)
    wait_for(lambda: kube_api.get("secrets", "sota-db-my-app-app", NAMESPACE))
    secret = kube_api.get("secrets", "sota-db-my-app-app", NAMESPACE)
    assert secret is not None
    assert secret["type"] == "Opaque"
    url = secret_value(secret, "DATABASE_URL") or ""
    password = app_password(kube_api, SLUG) or ""
    # Booleans only: a failure must not print the password.
    assert bool(DATABASE_URL.fullmatch(url)) is True
    assert (f":{password}@" in url) is True
    assert bool(re.fullmatch(r"[0-9a-f]{32}", password)) is True
    assert {
        key: secret_value(secret, key)
        for key in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSSLMODE")
    } == {
        "PGHOST": "sota-pgbouncer-my-app",
        "PGPORT": "5432",
        "PGUSER": "app_my-app",
        "PGDATABASE": "my-app",
        "PGSSLMODE": "disable",
    }
    direct = secret_value(secret, "DIRECT_DATABASE_URL") or ""
    assert direct.startswith("postgresql://app_my-app:") is True
    assert direct.endswith("@sota-db-my-app:5432/my-app?sslmode=disable") is True
    # The auth Secret holds the verifier, never the plaintext password.
    auth = kube_api.get("secrets", "sota-db-my-app-auth", NAMESPACE)
    assert auth is not None
    assert (password in json.dumps(auth)) is False
    assert (password in (secret_value(auth, "userlist.txt") or "")) is False


def test_ready_only_once_the_workloads_report_ready_replicas(
    start_operator: Callable[..., Operator],
    kubectl: Kubectl,
    kube_api: KubeEmulator,
    client: ApiClient,
) -> None:
    start_operator()
    apply_minimal(kubectl)
    wait_for(lambda: provisioned(kube_api), what="my-app provisioned")

    def wait_ready(timeout: str) -> int:
        result = kubectl(
            "wait",
            "--for=condition=Ready",
            "mdb/my-app",
            f"--timeout={timeout}",
            check=False,
            timeout=40,
        )
        return result.returncode

    assert wait_ready("1s") != 0  # nothing is running yet

    # The StatefulSet controller's part: one ready replica (kubectl, the status subresource).
    kubectl(
        "patch",
        "statefulset",
        "sota-db-my-app",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"replicas":1,"readyReplicas":1}}',
    )
    wait_for(lambda: condition(status_of(kube_api, SLUG), "PostgresReady").get("status") == "True")
    assert wait_ready("1s") != 0  # PgBouncer is not ready yet
    assert status_of(kube_api, SLUG)["phase"] == "Provisioning"
    assert condition(status_of(kube_api, SLUG), "PoolerReady")["status"] == "False"

    # The Deployment controller's part (the kubernetes client, the status subresource).
    AppsV1Api(client).patch_namespaced_deployment_status(
        "sota-pgbouncer-my-app", NAMESPACE, {"status": {"replicas": 1, "readyReplicas": 1}}
    )
    assert wait_ready("30s") == 0

    status = status_of(kube_api, SLUG)
    assert status["phase"] == "Ready"
    for kind in ("Ready", "PostgresReady", "PoolerReady", "BackupsScheduled"):
        assert condition(status, kind)["status"] == "True", kind
    assert condition(status, "Ready")["reason"] == "Ready"

    events = wait_for(
        lambda: [
            e
            for e in kube_api.objects("events", NAMESPACE)
            if e.get("reason") == "Ready" and e["involvedObject"].get("name") == SLUG
        ],
        what="a Ready event",
    )
    event = events[0]
    assert event["type"] == "Normal"
    assert event["involvedObject"]["kind"] == "ManagedDatabase"
    assert event["involvedObject"]["uid"] == mdb(kube_api, SLUG)["metadata"]["uid"]  # type: ignore[index]
    assert "sota-db-my-app-app" in event["message"]
    password = app_password(kube_api, SLUG) or "missing"
    assert (password in json.dumps(events)) is False
    assert ("postgresql://" in json.dumps(events)) is False
    quiet(kube_api)
    assert len(events) == 1  # posted once, on the transition


def test_a_pool_change_writes_only_the_pooler_config_and_its_deployment(
    start_operator: Callable[..., Operator], kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    start_operator()
    apply_minimal(kubectl)
    wait_for(lambda: provisioned(kube_api), what="my-app provisioned")
    quiet(kube_api)

    def annotation() -> str:
        deployment = kube_api.get("deployments.apps", "sota-pgbouncer-my-app", NAMESPACE) or {}
        template = deployment["spec"]["template"]
        return str(template["metadata"]["annotations"][names.ANNOTATION_CONFIG_HASH])

    def ini() -> str:
        config = kube_api.get("configmaps", "sota-pgbouncer-my-app-config", NAMESPACE) or {}
        return str(config["data"]["pgbouncer.ini"])

    before_hash, before_ini = annotation(), ini()
    untouched = {
        key: obj["metadata"]["resourceVersion"]
        for key, obj in owned_objects(kube_api, SLUG).items()
        if key
        not in {
            ("ConfigMap", "sota-pgbouncer-my-app-config"),
            ("Deployment", "sota-pgbouncer-my-app"),
        }
    }
    assert "default_pool_size = 20\n" in before_ini

    mark = kube_api.mark()
    kubectl(
        "patch", "mdb", SLUG, "--type", "merge", "-p", '{"spec":{"pool":{"defaultPoolSize":30}}}'
    )
    wait_for(
        lambda: (
            status_of(kube_api, SLUG).get("observedGeneration") == 2 and converged(kube_api, SLUG)
        ),
        what="generation 2 reconciled",
    )
    quiet(kube_api)

    assert "default_pool_size = 30\n" in ini()
    assert "max_db_connections = 30\n" in ini()
    assert annotation() != before_hash
    assert status_of(kube_api, SLUG)["appliedSpec"]["pool"]["defaultPoolSize"] == 30
    writes = operator_writes(kube_api, mark)
    assert sorted(set(writes)) == sorted(
        {
            Write("patch", "configmaps", NAMESPACE, "sota-pgbouncer-my-app-config"),
            Write("patch", "deployments.apps", NAMESPACE, "sota-pgbouncer-my-app"),
            Write("patch", MDB, NAMESPACE, SLUG),  # kopf's last-handled-configuration annotation
            Write("patch", f"{MDB}/status", NAMESPACE, SLUG),
        }
    ), writes
    assert len(writes) == 4, writes  # and each exactly once
    still = {
        key: obj["metadata"]["resourceVersion"]
        for key, obj in owned_objects(kube_api, SLUG).items()
        if key in untouched
    }
    assert still == untouched  # max_connections is max(50, 30 + 20): PostgreSQL keeps running


def test_an_idle_resync_sends_nothing(
    start_operator: Callable[..., Operator],
    kubectl: Kubectl,
    kube_api: KubeEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resyncs: list[float] = []
    original = reconcile.Reconciler.plan

    def counted(self: reconcile.Reconciler, *args: object, **kwargs: object) -> object:
        resyncs.append(time.monotonic())
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reconcile.Reconciler, "plan", counted)
    start_operator(resync_seconds=1.0)
    apply_minimal(kubectl)
    kubectl(
        "apply",
        "--validate=false",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "sota.io/v1",
                "kind": "ManagedDatabase",
                "metadata": {"name": "other"},
                "spec": {"backups": {"enabled": False}, "pool": {"mode": "session"}},
            }
        ),
    )
    wait_for(lambda: provisioned(kube_api) and converged(kube_api, "other"), what="converged")
    quiet(kube_api, seconds=1.2)  # the first timer has fired too

    mark, reconciles = kube_api.mark(), len(resyncs)
    time.sleep(3.0)  # at least two resync periods, and then some
    calls = operator_calls(kube_api, mark)
    resynced = len(resyncs) - reconciles
    report(
        f"idle: {resynced} reconciles in 3s of two databases; operator requests: "
        f"{len(calls)}, writes: {len([c for c in calls if c.is_write])}"
    )
    assert resynced >= 4  # two databases, at least two periods each: the timer did run
    assert operator_writes(kube_api, mark) == []
    assert [(c.verb, c.path) for c in calls if c.verb != "watch"] == []


def test_every_object_the_operator_sends_validates_against_kubernetes_1_33(
    start_operator: Callable[..., Operator],
    kubectl: Kubectl,
    kube_api: KubeEmulator,
) -> None:
    start_operator()
    kubectl(
        "apply",
        "--validate=false",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "sota.io/v1",
                "kind": "ManagedDatabase",
                "metadata": {"name": "full"},
                "spec": {
                    "storage": {"size": "20Gi", "storageClassName": "fast-ssd"},
                    "resources": {"memory": "2Gi", "cpu": "2"},
                    "pool": {"mode": "session", "defaultPoolSize": 40, "maxClientConnections": 500},
                    "postgresql": {"parameters": {"work_mem": "64MB"}},
                    "backups": {"enabled": True, "retentionDays": 30},
                    "deletionPolicy": "Delete",
                },
            }
        ),
    )
    apply_minimal(kubectl)
    wait_for(lambda: provisioned(kube_api) and converged(kube_api, "full"), what="converged")
    kubectl(
        "patch",
        "statefulset",
        "sota-db-my-app",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"replicas":1,"readyReplicas":1}}',
    )
    kubectl(
        "patch",
        "deployment",
        "sota-pgbouncer-my-app",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"replicas":1,"readyReplicas":1}}',
    )
    kubectl(
        "patch",
        "mdb",
        "full",
        "--type",
        "merge",
        "-p",
        '{"spec":{"pool":{"defaultPoolSize":60},"storage":{"size":"30Gi"}}}',
    )
    wait_for(lambda: status_of(kube_api, SLUG).get("phase") == "Ready", what="Ready")
    wait_for(
        lambda: (
            status_of(kube_api, "full").get("observedGeneration") == 2
            and converged(kube_api, "full")
        ),
        what="full updated",
    )
    quiet(kube_api)

    sent = sent_objects(kube_api)
    kinds = {doc["kind"] for _, doc in sent}
    assert {
        "Secret",
        "ConfigMap",
        "Service",
        "NetworkPolicy",
        "StatefulSet",
        "Deployment",
        "PersistentVolumeClaim",
        "CronJob",
        "Event",
    } <= kinds, kinds
    problems = {
        what: problem
        for what, doc in sent
        if not is_custom(doc) and (problem := kubernetes_problems(doc)) is not None
    }
    assert problems == {}
    stored = [
        strip_server_fields(obj)
        for slug in (SLUG, "full")
        for obj in owned_objects(kube_api, slug).values()
    ]
    assert len(stored) == 2 * 12
    problems = {
        f"{doc['kind']}/{doc['metadata']['name']}": problem
        for doc in stored
        if (problem := kubernetes_problems(doc)) is not None
    }
    assert problems == {}
    report(f"validated {len(sent)} sent and {len(stored)} stored objects against 1.33 (strict)")
