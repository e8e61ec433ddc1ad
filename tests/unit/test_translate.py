"""Pod template → Docker create arguments: the pure half of the Docker runtime."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sotadb import names
from sotadb.credentials import Credentials
from sotadb.docker.translate import (
    LABEL_PLAN_HASH,
    Catalog,
    TranslationError,
    translate,
)
from sotadb.render import render_objects
from sotadb.spec import parse_database

CREDENTIALS = Credentials.generate()
DB = parse_database(
    {"apiVersion": "sota.io/v1", "kind": "ManagedDatabase", "metadata": {"name": "my-app"}}
)
OBJECTS = render_objects(DB, CREDENTIALS)
CATALOG = Catalog.of(OBJECTS)


def template(kind: str) -> dict[str, Any]:
    workload = next(o for o in OBJECTS if o["kind"] == kind)
    return copy.deepcopy(workload["spec"]["template"])


def plan_for(kind: str, pod_template: dict[str, Any] | None = None, **overrides: Any):
    container = (
        names.postgres_name("my-app") if kind == "StatefulSet" else names.pooler_name("my-app")
    )
    arguments: dict[str, Any] = {
        "container_name": container,
        "pod_template": pod_template or template(kind),
        "catalog": CATALOG,
        "network": "sota-net-my-app",
        "files_root": "/state/files",
        "volume_claims": {"data": "sota-data-my-app"} if kind == "StatefulSet" else {},
        "labels": {"app.kubernetes.io/instance": "my-app"},
    }
    arguments.update(overrides)
    return translate(**arguments)


def test_postgres_container_gets_image_env_and_resolved_secret():
    plan = plan_for("StatefulSet")
    args = plan.create_args
    assert args["image"] == names.POSTGRES_IMAGE
    assert args["name"] == "sota-db-my-app"
    assert args["environment"]["SOTADB_APP_ROLE"] == "app_my-app"
    assert args["environment"]["SOTADB_APP_DATABASE"] == "my-app"
    assert args["environment"]["SOTADB_APP_VERIFIER"] == CREDENTIALS.verifier
    assert args["environment"]["PGDATA"] == names.POSTGRES_PGDATA


def test_volumes_become_named_volume_bind_mounts_and_tmpfs():
    plan = plan_for("StatefulSet")
    mounts = {m["Target"]: m for m in plan.create_args["mounts"]}
    assert mounts[names.POSTGRES_DATA_MOUNT] == {
        "Type": "volume",
        "Source": "sota-data-my-app",
        "Target": names.POSTGRES_DATA_MOUNT,
        "ReadOnly": False,
    }
    config = mounts[names.POSTGRES_CONFIG_DIR]
    assert config["Type"] == "bind"
    assert config["ReadOnly"] is True
    assert config["Source"] == "/state/files/configmap-sota-db-my-app-config"
    (source,) = plan.file_sources
    assert set(source.files) == {"postgresql.conf", "pg_hba.conf"}
    assert not source.secret
    # emptyDirs: tmpfs owned by the pod's user; /dev/shm sized from the template.
    assert plan.create_args["tmpfs"][names.POSTGRES_SOCKET_DIR].startswith("mode=1777,uid=999")
    assert "/tmp" in plan.create_args["tmpfs"]
    assert plan.create_args["shm_size"] == 128 * 2**20
    assert plan.volumes == ("sota-data-my-app",)


def test_secret_volume_items_project_only_the_listed_keys():
    plan = plan_for("Deployment")
    auth = next(s for s in plan.file_sources if s.secret)
    assert dict(auth.files) == {"userlist.txt": f'"app_my-app" "{CREDENTIALS.verifier}"\n'}


def test_security_context_maps_to_user_readonly_and_dropped_capabilities():
    args = plan_for("StatefulSet").create_args
    assert args["user"] == "999:999"
    assert args["read_only"] is True
    assert args["cap_drop"] == ["ALL"]
    assert args["security_opt"] == ["no-new-privileges:true"]
    assert args["mem_limit"] == 512 * 2**20


def test_readiness_probe_becomes_the_healthcheck_with_the_startup_grace():
    args = plan_for("StatefulSet").create_args
    health = args["healthcheck"]
    assert health["test"][0] == "CMD"
    assert health["test"][1] == "pg_isready"
    assert health["interval"] == 5 * 10**9
    assert health["retries"] == 3
    assert health["start_period"] == 2 * 300 * 10**9


def test_tcp_probe_becomes_a_bash_connect():
    pod = template("Deployment")
    container = pod["spec"]["containers"][0]
    container["readinessProbe"] = {"tcpSocket": {"port": 5432}, "periodSeconds": 3}
    health = plan_for("Deployment", pod).create_args["healthcheck"]
    assert health["test"] == ["CMD", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/5432"]


def test_services_selecting_the_pod_become_network_aliases():
    postgres = plan_for("StatefulSet").create_args
    pooler = plan_for("Deployment").create_args
    # The container name is the Service name already; no other Service selects these pods.
    assert postgres["networking_config"] == {"sota-net-my-app": {"Aliases": []}}
    assert pooler["networking_config"] == {"sota-net-my-app": {"Aliases": []}}
    renamed = plan_for("Deployment", container_name="pgbouncer-1").create_args
    assert renamed["networking_config"]["sota-net-my-app"]["Aliases"] == ["sota-pgbouncer-my-app"]


def test_args_and_command_map_to_command_and_entrypoint():
    pooler = plan_for("Deployment").create_args
    assert pooler["command"] == ["/etc/sotadb/pgbouncer/pgbouncer.ini"]
    assert "entrypoint" not in pooler
    pod = template("Deployment")
    pod["spec"]["containers"][0]["command"] = ["pgbouncer", "-v"]
    assert plan_for("Deployment", pod).create_args["entrypoint"] == ["pgbouncer", "-v"]


def test_published_ports_bind_to_the_given_address():
    args = plan_for("Deployment", published_ports={5432: ("127.0.0.1", 40001)}).create_args
    assert args["ports"] == {"5432/tcp": ("127.0.0.1", 40001)}


def test_plan_hash_is_stable_and_follows_every_input():
    first = plan_for("Deployment")
    assert first.plan_hash == plan_for("Deployment").plan_hash
    assert first.create_args["labels"][LABEL_PLAN_HASH] == first.plan_hash
    other_credentials = Catalog.of(render_objects(DB, Credentials.generate()))
    assert plan_for("Deployment", catalog=other_credentials).plan_hash != first.plan_hash
    bigger = parse_database(
        {
            "apiVersion": "sota.io/v1",
            "kind": "ManagedDatabase",
            "metadata": {"name": "my-app"},
            "spec": {"pool": {"defaultPoolSize": 30}},
        }
    )
    objects = render_objects(bigger, CREDENTIALS)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    changed = plan_for("Deployment", deployment["spec"]["template"], catalog=Catalog.of(objects))
    assert changed.plan_hash != first.plan_hash


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(
            lambda pod: pod["spec"]["containers"].append(pod["spec"]["containers"][0]),
            "single-container",
            id="two-containers",
        ),
        pytest.param(
            lambda pod: (
                pod["spec"]["volumes"].append({"name": "x", "hostPath": {"path": "/"}})
                or pod["spec"]["containers"][0]["volumeMounts"].append(
                    {"name": "x", "mountPath": "/x"}
                )
            ),
            "cannot run",
            id="host-path",
        ),
        pytest.param(
            lambda pod: pod["spec"]["containers"][0]["volumeMounts"].append(
                {"name": "missing", "mountPath": "/m"}
            ),
            "has no volume",
            id="dangling-mount",
        ),
        pytest.param(
            lambda pod: (
                pod["spec"]["volumes"].append({"name": "cm", "configMap": {"name": "nope"}})
                or pod["spec"]["containers"][0]["volumeMounts"].append(
                    {"name": "cm", "mountPath": "/c"}
                )
            ),
            "not rendered",
            id="unknown-configmap",
        ),
    ],
)
def test_what_docker_cannot_run_is_refused_clearly(mutate, message):
    pod = template("Deployment")
    mutate(pod)
    with pytest.raises(TranslationError, match=message):
        plan_for("Deployment", pod)
