"""The operator in a real cluster: the emulated-API tier's scenarios, with real controllers.

Create → every rendered object exists, owned by the ManagedDatabase; the app Secret holds
DATABASE_URL in the seed's format; `kubectl wait --for=condition=Ready` returns once the
StatefulSet and Deployment report ready replicas; a pool change rewrites PgBouncer's config and
its hash annotation; deletion keeps (Retain) or removes (Delete) the data and credentials; a
spec the CRD refuses is rejected with its message and creates nothing.

Skipped without SOTADB_E2E_KUBECONFIG (see conftest.py). Every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import kubernetes
import pytest
import yaml

from sotadb import names
from sotadb.credentials import Credentials
from sotadb.render import render_objects
from sotadb.spec import parse_database

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MINIMAL: Final = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "minimal.yaml"
SLUG: Final = "my-app"
# The seed's format: role app_<slug>, a 32-hex password, PgBouncer's Service, no TLS in-cluster.
DATABASE_URL: Final = re.compile(
    r"postgresql://app_my-app:[0-9a-f]{32}@sota-pgbouncer-my-app:5432/my-app\?sslmode=disable"
)
CONVERGE_SECONDS: Final = 120.0
READY_SECONDS: Final = 300.0
GC_SECONDS: Final = 180.0

Obj = dict[str, Any]


@dataclass
class Scene:
    """One test's namespace in the cluster, and the ways to look at and act on it."""

    namespace: str
    kubectl: Callable[..., subprocess.CompletedProcess[str]]
    dynamic: Any  # kubernetes.dynamic.DynamicClient
    wait_for: Callable[..., Any]

    def run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """kubectl in this namespace."""
        return self.kubectl("-n", self.namespace, *args, **kwargs)

    def read(self, api_version: str, kind: str, name: str) -> Obj:
        """The object as a dict, or {} when it does not exist."""
        resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        try:
            found: Obj = resource.get(name=name, namespace=self.namespace).to_dict()
        except kubernetes.dynamic.exceptions.NotFoundError:
            return {}
        return found

    def database(self, slug: str = SLUG) -> Obj:
        return self.read(names.API_VERSION, names.KIND_DATABASE, slug)

    def status(self) -> Obj:
        return dict(self.database().get("status") or {})

    def apply(self, spec: Obj | None = None) -> None:
        """manifests/examples/minimal.yaml, with `spec` if given."""
        document = yaml.safe_load(MINIMAL.read_text())
        if spec is not None:
            document["spec"] = spec
        self.run("apply", "-f", "-", input=json.dumps(document))

    def existing(self, body: Obj) -> dict[tuple[str, str], Obj]:
        """Those of the database's rendered objects that exist, by (kind, name)."""
        found = {}
        for api_version, kind, name in expected_objects(body):
            obj = self.read(api_version, kind, name)
            if obj:
                found[(kind, name)] = obj
        return found

    def provisioned(self, generation: int = 1) -> Obj:
        """The database once the operator reconciled `generation` and every object exists."""

        def converged() -> Obj | None:
            body = self.database()
            if (body.get("status") or {}).get("observedGeneration") != generation:
                return None
            if len(self.existing(body)) != len(expected_objects(body)):
                return None
            return body

        found: Obj = self.wait_for(
            converged, timeout=CONVERGE_SECONDS, what=f"generation {generation} reconciled"
        )
        return found

    def data_claim(self) -> Obj:
        """The StatefulSet's volume claim (made by the StatefulSet controller, owned by no one)."""
        return self.read("v1", "PersistentVolumeClaim", names.data_claim_name(SLUG))

    def delete_database(self) -> None:
        self.run(
            "delete", "mdb", SLUG, "--wait=true", f"--timeout={GC_SECONDS:.0f}s",
            timeout=GC_SECONDS + 30,
        )  # fmt: skip
        assert self.database() == {}


@pytest.fixture
def scene(
    namespace: str,
    kubectl: Callable[..., subprocess.CompletedProcess[str]],
    client: Any,
    wait_for: Callable[..., Any],
) -> Scene:
    dynamic = kubernetes.dynamic.DynamicClient(client)  # type: ignore[no-untyped-call]
    return Scene(namespace, kubectl, dynamic, wait_for)


def expected_objects(body: Obj) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of everything the operator renders for this database."""
    rendered = render_objects(parse_database(body), Credentials.generate())
    return [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in rendered]


def condition(status: Obj, kind: str) -> Obj:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def secret_value(secret: Obj, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def spec_hashes(scene: Scene, body: Obj) -> dict[tuple[str, str], str]:
    """What the operator last wrote to each object (controllers' status updates aside)."""
    return {
        key: o["metadata"]["annotations"][names.ANNOTATION_SPEC_HASH]
        for key, o in scene.existing(body).items()
    }


# ------------------------------------------------------------------------------ create


def test_create_makes_every_rendered_object_owned_by_the_database(scene: Scene) -> None:
    scene.run("apply", "-f", str(MINIMAL))
    body = scene.provisioned()
    uid = body["metadata"]["uid"]
    assert f"{names.GROUP}/finalizer" in body["metadata"]["finalizers"]
    objects = scene.existing(body)
    assert sorted(objects) == sorted((kind, name) for _, kind, name in expected_objects(body))
    for (kind, name), obj in objects.items():
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND_DATABASE,
                "name": SLUG,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], f"{kind}/{name}"
        labels = obj["metadata"]["labels"]
        assert labels[names.LABEL_INSTANCE] == SLUG
        assert labels[names.LABEL_MANAGED_BY] == names.MANAGED_BY
    assert body["status"]["secretName"] == names.app_secret_name(SLUG)
    assert body["status"]["phase"] in ("Provisioning", "Ready")


def test_the_app_secret_holds_database_url_in_the_seed_format(scene: Scene) -> None:
    scene.run("apply", "-f", str(MINIMAL))
    secret: Obj = scene.wait_for(
        lambda: scene.read("v1", "Secret", names.app_secret_name(SLUG)),
        timeout=CONVERGE_SECONDS,
        what="the app Secret",
    )
    url = secret_value(secret, "DATABASE_URL")
    password = secret_value(secret, "PGPASSWORD")
    # Booleans only: a failure must not print the password.
    assert bool(DATABASE_URL.fullmatch(url)) is True
    assert (f":{password}@" in url) is True
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
    direct = secret_value(secret, "DIRECT_DATABASE_URL")
    assert direct.endswith("@sota-db-my-app:5432/my-app?sslmode=disable") is True
    auth = scene.read("v1", "Secret", names.auth_secret_name(SLUG))
    assert (password in json.dumps(auth)) is False


# ------------------------------------------------------------------------------ readiness


def test_kubectl_wait_ready_returns_once_the_workloads_have_ready_replicas(scene: Scene) -> None:
    scene.run("apply", "-f", str(MINIMAL))
    result = scene.run(
        "wait", "--for=condition=Ready", f"mdb/{SLUG}", f"--timeout={READY_SECONDS:.0f}s",
        check=False, timeout=READY_SECONDS + 30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    statefulset = scene.read("apps/v1", "StatefulSet", names.postgres_name(SLUG))
    deployment = scene.read("apps/v1", "Deployment", names.pooler_name(SLUG))
    assert statefulset["status"]["readyReplicas"] >= 1
    assert deployment["status"]["readyReplicas"] >= 1
    status = scene.status()
    assert status["phase"] == "Ready"
    for kind in ("Ready", "PostgresReady", "PoolerReady", "BackupsScheduled"):
        assert condition(status, kind)["status"] == "True", kind


# ------------------------------------------------------------------------------ pool update


def test_a_pool_update_rewrites_pgbouncer_config_and_its_hash_annotation(scene: Scene) -> None:
    scene.run("apply", "-f", str(MINIMAL))
    scene.provisioned()

    def ini() -> str:
        config = scene.read("v1", "ConfigMap", names.pooler_config_name(SLUG))
        return str(config["data"]["pgbouncer.ini"])

    def config_hash() -> str:
        deployment = scene.read("apps/v1", "Deployment", names.pooler_name(SLUG))
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        return str(annotations[names.ANNOTATION_CONFIG_HASH])

    before = config_hash()
    assert "default_pool_size = 20\n" in ini()
    scene.run(
        "patch", "mdb", SLUG, "--type=merge",
        "-p", json.dumps({"spec": {"pool": {"defaultPoolSize": 30}}}),
    )  # fmt: skip
    scene.provisioned(generation=2)
    assert "default_pool_size = 30\n" in ini()
    assert config_hash() != before
    assert scene.status()["appliedSpec"]["pool"]["defaultPoolSize"] == 30


# ------------------------------------------------------------------------------ deletion


def test_delete_under_retain_keeps_the_volumes_and_the_credentials(scene: Scene) -> None:
    scene.run("apply", "-f", str(MINIMAL))
    body = scene.provisioned()
    scene.wait_for(scene.data_claim, timeout=CONVERGE_SECONDS, what="the data PVC")
    kept = {
        ("Secret", names.app_secret_name(SLUG)),
        ("Secret", names.auth_secret_name(SLUG)),
        ("PersistentVolumeClaim", names.backups_volume_name(SLUG)),
    }
    scene.delete_database()

    def only_kept() -> dict[tuple[str, str], Obj] | None:
        left = scene.existing(body)
        return left if set(left) == kept else None

    left = scene.wait_for(only_kept, timeout=GC_SECONDS, what="garbage collection of the rest")
    for (kind, name), obj in left.items():
        assert not obj["metadata"].get("ownerReferences"), f"{kind}/{name} is still owned"
    assert scene.data_claim(), "the data volume must survive under Retain"


def test_delete_under_delete_removes_the_volumes_and_the_credentials(scene: Scene) -> None:
    scene.apply({"deletionPolicy": "Delete"})
    body = scene.provisioned()
    scene.wait_for(scene.data_claim, timeout=CONVERGE_SECONDS, what="the data PVC")
    scene.delete_database()
    scene.wait_for(
        lambda: not scene.existing(body) and not scene.data_claim(),
        timeout=GC_SECONDS,
        what="every object and the data volume gone",
    )


# ------------------------------------------------------------------------------ invalid specs


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        pytest.param(
            SLUG,
            {"pool": {"defaultPoolSize": 50, "maxClientConnections": 20}},
            "defaultPoolSize must not exceed maxClientConnections",
            id="pool-larger-than-clients",
        ),
        pytest.param(
            "a" * 41,
            {},
            "metadata.name must be at most 40 characters",
            id="name-too-long",
        ),
        pytest.param(
            SLUG,
            {"postgresql": {"parameters": {"port": "6432"}}},
            "port cannot be set",
            id="forbidden-parameter",
        ),
    ],
)
def test_an_invalid_spec_is_refused_with_a_clear_message_and_creates_nothing(
    scene: Scene, name: str, spec: Obj, message: str
) -> None:
    """Every spec spec.py refuses, the CRD refuses first (tests/unit/test_crd_schema.py proves
    they agree), so in a cluster an invalid spec never reaches the operator and never becomes a
    Failed condition: the API server answers with the CRD's message."""
    document = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_DATABASE,
        "metadata": {"name": name},
        "spec": spec,
    }
    result = scene.run("apply", "-f", "-", input=json.dumps(document), check=False)
    assert result.returncode != 0
    assert message in " ".join(result.stderr.split()), result.stderr
    assert scene.database(name) == {}
    owned = scene.run(
        "get", "secrets,configmaps,services,statefulsets,deployments,cronjobs,pvc",
        "-l", f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}", "-o", "name",
    )  # fmt: skip
    assert owned.stdout.strip() == ""


def test_a_forbidden_change_is_refused_and_changes_nothing(scene: Scene) -> None:
    scene.run("apply", "-f", str(MINIMAL))
    body = scene.provisioned()
    before = spec_hashes(scene, body)
    result = scene.run(
        "patch", "mdb", SLUG, "--type=merge",
        "-p", json.dumps({"spec": {"storage": {"size": "512Mi"}}}), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "cannot shrink" in result.stderr, result.stderr
    assert scene.database()["metadata"]["generation"] == 1
    assert spec_hashes(scene, body) == before
