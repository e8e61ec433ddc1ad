"""What the rendered pods may do and who may reach them: the restricted Pod Security Standard
on every pod sotadb renders, NetworkPolicy selectors that admit exactly the pods the issue
names, labels on every template, and config hashes that roll only the pods whose files changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from sotadb import names
from sotadb.credentials import Credentials
from sotadb.render import backup, render_objects
from sotadb.render.injection import with_injection
from sotadb.spec import ManagedDatabase, parse_database

UID = "0b7f3c2e-1d4a-4e5b-8c6d-9e0f1a2b3c4d"
CREDENTIALS = Credentials.generate()
OWNER = {"apiVersion": "sota.io/v1", "kind": "DatabaseBackup", "name": "b1", "uid": UID}
# The volume types the restricted profile allows (Kubernetes Pod Security Standards).
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def make_db(spec: dict[str, Any] | None = None, name: str = "my-app") -> ManagedDatabase:
    return parse_database(
        {
            "apiVersion": "sota.io/v1",
            "kind": "ManagedDatabase",
            "metadata": {"name": name, "namespace": "shop", "uid": UID},
            "spec": spec or {},
        }
    )


def objects(db: ManagedDatabase | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    rendered = render_objects(db or make_db(), CREDENTIALS)
    return {(o["kind"], o["metadata"]["name"]): o for o in rendered}


def pod_templates(db: ManagedDatabase) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod template sotadb renders for `db`: workloads, the CronJob and its Jobs."""
    for (kind, name), document in objects(db).items():
        if kind in ("StatefulSet", "Deployment"):
            yield f"{kind}/{name}", document["spec"]["template"]
        if kind == "CronJob":
            yield f"{kind}/{name}", document["spec"]["jobTemplate"]["spec"]["template"]
    jobs = [
        backup.backup_job(db, "b1", OWNER),
        backup.restore_job(db, db.slug, db.spec.backups, "b1", "r1", OWNER),
        backup.forget_job(db, "b1", OWNER),
    ]
    for job in jobs:
        yield f"Job/{job['metadata']['name']}", job["spec"]["template"]


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels only, all sotadb writes) against a pod's labels."""
    assert set(selector) <= {"matchLabels"}, "sotadb's policies use matchLabels only"
    wanted: Mapping[str, str] = selector.get("matchLabels", {})
    return all(labels.get(key) == value for key, value in wanted.items())


def admitted(policy: Mapping[str, Any], labels: Mapping[str, str], port: int) -> bool:
    """Whether a pod of the policy's own namespace with `labels` may open `port`."""
    for rule in policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule["ports"]}
        for source in rule["from"]:
            assert set(source) == {"podSelector"}, "same namespace only: no namespace or IP"
            if port in ports and matches(source["podSelector"], labels):
                return True
    return False


def pod_labels(document: Mapping[str, Any]) -> dict[str, str]:
    spec = document["spec"]
    template = (
        spec["jobTemplate"]["spec"]["template"] if "jobTemplate" in spec else spec["template"]
    )
    return dict(template["metadata"]["labels"])


# ---------------------------------------------------------------- restricted pods


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"backups": {"s3": {"bucket": "b-1", "credentialsSecret": "k"}}}, id="s3"),
    ],
)
def test_every_pod_meets_the_restricted_pod_security_standard(spec):
    templates = dict(pod_templates(make_db(spec)))
    assert len(templates) == 6
    for where, template in templates.items():
        pod = template["spec"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, where
        assert context["runAsUser"] != 0, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), where
        assert pod["automountServiceAccountToken"] is False, where
        for volume in pod["volumes"]:
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, (where, volume)
        for container in pod["containers"] + pod.get("initContainers", []):
            own = container["securityContext"]
            assert own["allowPrivilegeEscalation"] is False, where
            assert own["capabilities"] == {"drop": ["ALL"]}, where
            assert own["readOnlyRootFilesystem"] is True, where
            assert own.get("privileged", False) is False, where
            assert all("hostPort" not in p for p in container.get("ports", [])), where
            assert container["resources"]["requests"], where
            assert container["resources"]["limits"]["memory"], where


def test_the_injected_wait_container_is_restricted_too():
    app = {"metadata": {"labels": {"app": "shop"}}, "spec": {"containers": [{"name": "web"}]}}
    template, _ = with_injection(app, "my-app")
    (wait,) = template["spec"]["initContainers"]
    assert wait["securityContext"]["allowPrivilegeEscalation"] is False
    assert wait["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_both_servers_have_their_probes():
    rendered = objects()
    postgres = rendered["StatefulSet", "sota-db-my-app"]["spec"]["template"]["spec"]
    pooler = rendered["Deployment", "sota-pgbouncer-my-app"]["spec"]["template"]["spec"]
    (server,) = postgres["containers"]
    (bouncer,) = pooler["containers"]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(server)
    assert {"readinessProbe", "livenessProbe"} <= set(bouncer)
    # Ready means a real login through the same path apps take, not an open port.
    assert server["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    assert bouncer["readinessProbe"]["exec"]["command"][0] == "pg_isready"


# ---------------------------------------------------------------- NetworkPolicy semantics


def test_postgres_is_reached_by_its_pooler_backups_and_labelled_apps_only():
    rendered = objects()
    other = objects(make_db(name="other"))
    policy = rendered["NetworkPolicy", "sota-db-my-app"]
    postgres = pod_labels(rendered["StatefulSet", "sota-db-my-app"])
    assert matches(policy["spec"]["podSelector"], postgres)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    injected, _ = with_injection({"metadata": {"labels": {"app": "shop"}}, "spec": {}}, "my-app")
    allowed = {
        "pooler": pod_labels(rendered["Deployment", "sota-pgbouncer-my-app"]),
        "scheduled backup": pod_labels(rendered["CronJob", "sota-backup-my-app"]),
        "on-demand backup": backup.backup_job(make_db(), "b1", OWNER)["spec"]["template"][
            "metadata"
        ]["labels"],
        "injected app": injected["metadata"]["labels"],
    }
    refused = {
        "plain app": {"app": "shop"},
        "another database's pooler": pod_labels(other["Deployment", "sota-pgbouncer-other"]),
        "another database's backup": pod_labels(other["CronJob", "sota-backup-other"]),
        "an app labelled for another database": {names.direct_access_label("other"): "direct"},
        "a wrong label value": {names.direct_access_label("my-app"): "true"},
        "postgres itself": postgres,
    }
    for who, labels in allowed.items():
        assert admitted(policy, labels, names.POSTGRES_PORT), who
    for who, labels in refused.items():
        assert not admitted(policy, labels, names.POSTGRES_PORT), who


def test_pgbouncer_is_reached_by_any_pod_of_the_namespace_on_its_port_only():
    rendered = objects()
    policy = rendered["NetworkPolicy", "sota-pgbouncer-my-app"]
    pooler = pod_labels(rendered["Deployment", "sota-pgbouncer-my-app"])
    assert matches(policy["spec"]["podSelector"], pooler)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    for labels in ({}, {"app": "anything"}, {names.direct_access_label("other"): "direct"}):
        assert admitted(policy, labels, names.POOLER_PORT)
        assert not admitted(policy, labels, 6432)


def test_each_policy_selects_only_its_own_databases_pods():
    rendered = objects()
    other = objects(make_db(name="other"))
    for name in ("sota-db-my-app", "sota-pgbouncer-my-app"):
        selector = rendered["NetworkPolicy", name]["spec"]["podSelector"]
        for (kind, _), document in other.items():
            if kind in ("StatefulSet", "Deployment", "CronJob"):
                assert not matches(selector, pod_labels(document)), (name, kind)


# ---------------------------------------------------------------- labels and hashes


def test_every_template_inside_an_object_carries_the_common_labels():
    rendered = objects()
    for (kind, name), document in rendered.items():
        if kind in ("StatefulSet", "Deployment", "CronJob"):
            labels = pod_labels(document)
            assert labels[names.LABEL_INSTANCE] == "my-app", name
            assert labels[names.LABEL_MANAGED_BY] == names.MANAGED_BY, name
            assert labels[names.LABEL_NAME] == names.APP_NAME, name
    claim = rendered["StatefulSet", "sota-db-my-app"]["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["labels"] == names.common_labels("my-app", names.COMPONENT_POSTGRES)
    cron = rendered["CronJob", "sota-backup-my-app"]["spec"]["jobTemplate"]["metadata"]["labels"]
    assert cron.items() >= names.common_labels("my-app", names.COMPONENT_BACKUP).items()


def config_hashes(db: ManagedDatabase) -> tuple[str, str]:
    rendered = objects(db)
    return tuple(  # type: ignore[return-value]
        rendered[key]["spec"]["template"]["metadata"]["annotations"][names.ANNOTATION_CONFIG_HASH]
        for key in (("StatefulSet", "sota-db-my-app"), ("Deployment", "sota-pgbouncer-my-app"))
    )


@pytest.mark.parametrize(
    ("change", "rolls_postgres", "rolls_pooler"),
    [
        pytest.param({"postgresql": {"parameters": {"work_mem": "8MB"}}}, True, False, id="param"),
        pytest.param({"resources": {"memory": "1Gi"}}, True, False, id="memory"),
        pytest.param({"pool": {"maxClientConnections": 300}}, False, True, id="clients"),
        pytest.param({"pool": {"defaultPoolSize": 40}}, True, True, id="pool-size"),
        pytest.param({"backups": {"retentionDays": 30}}, False, False, id="retention"),
        pytest.param({"deletionPolicy": "Delete"}, False, False, id="deletion-policy"),
    ],
)
def test_a_config_change_rolls_exactly_the_pods_that_read_it(change, rolls_postgres, rolls_pooler):
    before_postgres, before_pooler = config_hashes(make_db())
    after_postgres, after_pooler = config_hashes(make_db(change))
    assert (before_postgres != after_postgres) is rolls_postgres
    assert (before_pooler != after_pooler) is rolls_pooler
