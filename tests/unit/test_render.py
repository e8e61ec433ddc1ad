"""Rendering: config files and Kubernetes objects, validated against the real schemas."""

from __future__ import annotations

import base64
import configparser
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sotadb import credentials, names
from sotadb.credentials import Credentials
from sotadb.render import Images, render_objects
from sotadb.render import pgbouncer as pgbouncer_render
from sotadb.render import postgres as postgres_render
from sotadb.render.hashing import content_hash
from sotadb.render.meta import spec_hash
from sotadb.spec import FORBIDDEN_PARAMETERS, ManagedDatabase, parse_database

KUBERNETES_VERSIONS = ["1.30", "1.33"]
UID = "5f1c9a6e-0d4b-4c8e-9a51-3f2e1b7c6d90"
CREDENTIALS = Credentials.generate()


def make_db(spec: dict[str, Any] | None = None, name: str = "my-app") -> ManagedDatabase:
    return parse_database(
        {
            "apiVersion": "sota.io/v1",
            "kind": "ManagedDatabase",
            "metadata": {"name": name, "namespace": "shop", "uid": UID},
            "spec": spec or {},
        }
    )


def by_kind_and_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def pod_annotation(workload: dict[str, Any]) -> str:
    return workload["spec"]["template"]["metadata"]["annotations"][names.ANNOTATION_CONFIG_HASH]


# ---------------------------------------------------------------- config files


def test_pgbouncer_ini_has_the_seeds_pool_settings():
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(pgbouncer_render.pgbouncer_ini(make_db()))
    settings_ = ini["pgbouncer"]
    assert settings_["pool_mode"] == "transaction"
    assert settings_["default_pool_size"] == "20"
    assert settings_["max_client_conn"] == "100"
    assert int(settings_["max_prepared_statements"]) > 0
    assert settings_["auth_type"] == "scram-sha-256"
    assert settings_["auth_file"] == "/etc/sotadb/pgbouncer-auth/userlist.txt"
    assert ini["databases"]["my-app"] == "host=sota-db-my-app port=5432 dbname=my-app"


def test_pool_overrides_reach_pgbouncer():
    db = make_db({"pool": {"defaultPoolSize": 35, "maxClientConnections": 400, "mode": "session"}})
    ini = pgbouncer_render.pgbouncer_ini(db)
    assert "default_pool_size = 35\n" in ini
    assert "max_client_conn = 400\n" in ini
    assert "pool_mode = session\n" in ini


def test_userlist_holds_the_verifier_and_never_the_password():
    userlist = pgbouncer_render.userlist_txt(make_db(), CREDENTIALS)
    assert userlist == f'"app_my-app" "{CREDENTIALS.verifier}"\n'
    assert CREDENTIALS.password not in userlist


def test_pg_hba_allows_scram_only_and_the_superuser_only_locally():
    hba = postgres_render.pg_hba_conf(make_db())
    rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    methods = {rule[-1] for rule in rules}
    assert methods == {"peer", "reject", "scram-sha-256"}
    assert "trust" not in hba
    assert "md5" not in hba
    assert rules[0] == ["local", "all", "postgres", "peer"]
    assert ["host", '"my-app"', '"app_my-app"', "all", "scram-sha-256"] in rules
    assert rules[-1] == ["host", "all", "all", "all", "reject"]


def test_postgresql_conf_tiers_defaults_then_user_then_forced():
    db = make_db(
        {"resources": {"memory": "2Gi"}, "postgresql": {"parameters": {"work_mem": "64MB"}}}
    )
    parameters = postgres_render.effective_parameters(db)
    assert parameters["work_mem"] == "64MB"  # the user's value beats the default
    assert parameters["shared_buffers"] == "512MB"  # forced: a quarter of memory
    assert parameters["password_encryption"] == "scram-sha-256"
    assert parameters["hba_file"] == "/etc/sotadb/postgres/pg_hba.conf"
    assert parameters["max_connections"] == "50"  # the floor: 20 pooled + 20 reserved < 50
    big_pool = make_db({"pool": {"defaultPoolSize": 100}})
    assert postgres_render.effective_parameters(big_pool)["max_connections"] == "120"
    conf = postgres_render.postgresql_conf(db)
    assert "work_mem = '64MB'\n" in conf
    assert "listen_addresses = '*'\n" in conf


def test_every_forced_parameter_is_one_the_user_may_not_set():
    """A user's value for a forced parameter would be silently replaced: refuse it instead."""
    assert set(postgres_render.forced_parameters(make_db())) <= set(FORBIDDEN_PARAMETERS)


def test_wal_never_outgrows_a_small_volume():
    small = postgres_render.default_parameters(make_db({"storage": {"size": "256Mi"}}))
    large = postgres_render.default_parameters(make_db({"storage": {"size": "100Gi"}}))
    assert small["max_wal_size"] == "64MB"
    assert large["max_wal_size"] == "1024MB"


def test_parameter_values_are_quoted_safely():
    db = make_db({"postgresql": {"parameters": {"application_name": "it's \\ fine"}}})
    assert "application_name = 'it''s \\\\ fine'\n" in postgres_render.postgresql_conf(db)


# ---------------------------------------------------------------- Kubernetes objects


def test_every_expected_object_is_rendered():
    objects = by_kind_and_name(render_objects(make_db(), CREDENTIALS))
    assert set(objects) == {
        ("Secret", "sota-db-my-app-app"),
        ("Secret", "sota-db-my-app-auth"),
        ("ConfigMap", "sota-db-my-app-config"),
        ("ConfigMap", "sota-pgbouncer-my-app-config"),
        ("Service", "sota-db-my-app"),
        ("Service", "sota-pgbouncer-my-app"),
        ("NetworkPolicy", "sota-db-my-app"),
        ("NetworkPolicy", "sota-pgbouncer-my-app"),
        ("StatefulSet", "sota-db-my-app"),
        ("Deployment", "sota-pgbouncer-my-app"),
        ("PersistentVolumeClaim", "sota-backups-my-app"),
        ("CronJob", "sota-backup-my-app"),
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schema(version):
    db = make_db({"storage": {"storageClassName": "standard"}})
    for document in render_objects(db, CREDENTIALS):
        kubernetes_validate.validate(document, version, strict=True)


def test_every_object_is_owned_labelled_and_hashed():
    for document in render_objects(make_db(), CREDENTIALS):
        metadata = document["metadata"]
        assert metadata["namespace"] == "shop"
        assert metadata["ownerReferences"] == [
            {
                "apiVersion": "sota.io/v1",
                "kind": "ManagedDatabase",
                "name": "my-app",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert metadata["labels"][names.LABEL_INSTANCE] == "my-app"
        assert metadata["labels"][names.LABEL_MANAGED_BY] == "sotadb"
        assert metadata["labels"][names.LABEL_NAME] == "sotadb"
        # The hash covers the whole object except itself.
        unhashed = {**document, "metadata": {**metadata, "annotations": {}}}
        assert spec_hash(document) == content_hash(unhashed)


def test_without_a_uid_no_owner_reference_is_invented():
    db = parse_database(
        {"apiVersion": "sota.io/v1", "kind": "ManagedDatabase", "metadata": {"name": "x"}}
    )
    assert all("ownerReferences" not in o["metadata"] for o in render_objects(db, CREDENTIALS))


def test_rendering_is_deterministic():
    assert render_objects(make_db(), CREDENTIALS) == render_objects(make_db(), CREDENTIALS)


def test_app_secret_holds_the_seeds_database_url():
    objects = by_kind_and_name(render_objects(make_db(), CREDENTIALS))
    data = decoded(objects["Secret", "sota-db-my-app-app"])
    assert data["DATABASE_URL"] == (
        f"postgresql://app_my-app:{CREDENTIALS.password}"
        "@sota-pgbouncer-my-app:5432/my-app?sslmode=disable"
    )
    assert data == credentials.app_environment("my-app", CREDENTIALS.password)
    assert set(data) >= {"DIRECT_DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD"}


def test_auth_secret_holds_no_plaintext_password():
    objects = by_kind_and_name(render_objects(make_db(), CREDENTIALS))
    data = decoded(objects["Secret", "sota-db-my-app-auth"])
    assert data["app-verifier"] == CREDENTIALS.verifier
    assert all(CREDENTIALS.password not in value for value in data.values())
    # PgBouncer's userlist holds the very verifier PostgreSQL gets: SCRAM passthrough.
    assert data["userlist.txt"] == f'"app_my-app" "{data["app-verifier"]}"\n'


def test_postgres_pod_runs_restricted_with_probes_and_the_verifier_from_a_secret():
    objects = by_kind_and_name(render_objects(make_db(), CREDENTIALS))
    statefulset = objects["StatefulSet", "sota-db-my-app"]
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
    assert container["resources"]["limits"]["memory"] == "512Mi"
    verifier_env = next(e for e in container["env"] if e["name"] == "SOTADB_APP_VERIFIER")
    assert verifier_env["valueFrom"]["secretKeyRef"]["name"] == "sota-db-my-app-auth"
    assert CREDENTIALS.verifier not in str(statefulset)
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_images_can_be_overridden():
    images = Images(postgres="registry.example/pg:17", pooler="registry.example/pgb:1")
    objects = by_kind_and_name(render_objects(make_db(), CREDENTIALS, images))
    sts_image = objects["StatefulSet", "sota-db-my-app"]["spec"]["template"]["spec"]
    assert sts_image["containers"][0]["image"] == "registry.example/pg:17"
    deployment = objects["Deployment", "sota-pgbouncer-my-app"]["spec"]["template"]["spec"]
    assert deployment["containers"][0]["image"] == "registry.example/pgb:1"


def test_a_pool_change_rolls_pgbouncer_and_not_postgres():
    before = by_kind_and_name(render_objects(make_db(), CREDENTIALS))
    after = by_kind_and_name(
        render_objects(make_db({"pool": {"defaultPoolSize": 40}}), CREDENTIALS)
    )
    deployment = ("Deployment", "sota-pgbouncer-my-app")
    statefulset = ("StatefulSet", "sota-db-my-app")
    assert pod_annotation(before[deployment]) != pod_annotation(after[deployment])
    assert spec_hash(before[deployment]) != spec_hash(after[deployment])
    # max_connections follows the pool, so PostgreSQL rolls only when that changes it.
    assert pod_annotation(before[statefulset]) != pod_annotation(after[statefulset])
    unchanged = by_kind_and_name(
        render_objects(make_db({"pool": {"mode": "session"}}), CREDENTIALS)
    )
    assert pod_annotation(before[statefulset]) == pod_annotation(unchanged[statefulset])
    assert pod_annotation(before[deployment]) != pod_annotation(unchanged[deployment])


def test_new_credentials_roll_both_workloads():
    before = by_kind_and_name(render_objects(make_db(), CREDENTIALS))
    after = by_kind_and_name(render_objects(make_db(), Credentials.generate()))
    for key in [("Deployment", "sota-pgbouncer-my-app"), ("StatefulSet", "sota-db-my-app")]:
        assert pod_annotation(before[key]) != pod_annotation(after[key])


def test_network_policy_admits_pooler_backups_and_labelled_apps_only():
    objects = by_kind_and_name(render_objects(make_db(), CREDENTIALS))
    policy = objects["NetworkPolicy", "sota-db-my-app"]["spec"]
    assert policy["podSelector"]["matchLabels"][names.LABEL_COMPONENT] == "postgres"
    (rule,) = policy["ingress"]
    selectors = [source["podSelector"]["matchLabels"] for source in rule["from"]]
    assert {s.get(names.LABEL_COMPONENT) for s in selectors} == {"pgbouncer", "backup", None}
    assert {"db.sota.io/my-app": "direct"} in selectors
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    pooler = objects["NetworkPolicy", "sota-pgbouncer-my-app"]["spec"]
    assert pooler["ingress"][0]["from"] == [{"podSelector": {}}]


def test_cronjob_runs_daily_at_the_spread_minute_and_follows_enabled():
    db = make_db()
    cron = by_kind_and_name(render_objects(db, CREDENTIALS))["CronJob", "sota-backup-my-app"]
    assert cron["spec"]["schedule"] == db.backup_schedule
    assert cron["spec"]["suspend"] is False
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    off = make_db({"backups": {"enabled": False}})
    assert by_kind_and_name(render_objects(off, CREDENTIALS))["CronJob", "sota-backup-my-app"][
        "spec"
    ]["suspend"]


def test_selectors_match_the_pod_labels():
    for document in render_objects(make_db(), CREDENTIALS):
        if document["kind"] in ("StatefulSet", "Deployment"):
            selector = document["spec"]["selector"]["matchLabels"]
            labels = document["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items()


# ---------------------------------------------------------------- properties

QUANTITIES_GI = st.integers(min_value=1, max_value=2048).map(lambda n: f"{n}Gi")
STORAGE = QUANTITIES_GI | st.sampled_from(["256Mi", "1.5Gi", "268435456", "64Ti", "10G"])
PARAMETER_VALUES = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=40
)
S3 = st.fixed_dictionaries(
    {
        "bucket": st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True),
        "credentialsSecret": st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
    },
    optional={
        "endpoint": st.sampled_from(["http://minio:9000", "https://s3.example.com"]),
        "region": st.sampled_from(["eu-central-1", "us-west-2"]),
        "prefix": st.from_regex(r"[a-z0-9_.-]{1,10}(/[a-z0-9_.-]{1,10}){0,2}", fullmatch=True),
    },
)
VALID_SPECS = st.fixed_dictionaries(
    {},
    optional={
        "postgresVersion": st.just(17),
        "storage": st.fixed_dictionaries(
            {"size": STORAGE},
            optional={"storageClassName": st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)},
        ),
        "resources": st.fixed_dictionaries(
            {},
            optional={
                "memory": st.integers(128, 65536).map(lambda n: f"{n}Mi"),
                "cpu": st.integers(1, 16000).map(lambda n: f"{n}m") | st.sampled_from(["1", "2"]),
            },
        ),
        "pool": st.integers(1, 200).flatmap(
            lambda size: st.fixed_dictionaries(
                {
                    "defaultPoolSize": st.just(size),
                    "maxClientConnections": st.integers(size, 10000),
                    "mode": st.sampled_from(["transaction", "session"]),
                }
            )
        ),
        "postgresql": st.fixed_dictionaries(
            {
                "parameters": st.dictionaries(
                    st.sampled_from(["work_mem", "application_name", "search_path", "jit"]),
                    PARAMETER_VALUES,
                    max_size=3,
                )
            }
        ),
        "backups": st.fixed_dictionaries(
            {},
            optional={
                "enabled": st.booleans(),
                "retentionDays": st.integers(1, 365),
                "s3": S3,
            },
        ),
        "deletionPolicy": st.sampled_from(["Delete", "Retain", "Snapshot"]),
    },
)
SLUGS = st.from_regex(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True)
# The generated hex passwords, and any text at all: the URL builder must escape what needs it.
PASSWORDS = st.builds(credentials.generate_password) | st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40
)


def parts_of(url: str) -> tuple[str, str, str, str, int | None, str, dict[str, list[str]]]:
    parts = urlsplit(url)
    return (
        parts.scheme,
        unquote(parts.username or ""),
        unquote(parts.password or ""),
        parts.hostname or "",
        parts.port,
        unquote(parts.path.removeprefix("/")),
        parse_qs(parts.query),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=VALID_SPECS, slug=SLUGS, password=PASSWORDS)
def test_any_valid_spec_renders_valid_objects_and_urls_that_parse_back(spec, slug, password):
    db = make_db(spec, name=slug)
    secret = Credentials(password=password, verifier=credentials.scram_verifier(password))
    objects = render_objects(db, secret)
    for document in objects:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)
    app = decoded(by_kind_and_name(objects)["Secret", names.app_secret_name(slug)])
    role, sslmode = f"app_{slug}", {"sslmode": ["disable"]}
    assert parts_of(app["DATABASE_URL"]) == (
        "postgresql",
        role,
        password,
        f"sota-pgbouncer-{slug}",
        5432,
        slug,
        sslmode,
    )
    assert parts_of(app["DIRECT_DATABASE_URL"]) == (
        "postgresql",
        role,
        password,
        f"sota-db-{slug}",
        5432,
        slug,
        sslmode,
    )
    pg = (app["PGUSER"], app["PGPASSWORD"], app["PGHOST"], app["PGPORT"], app["PGDATABASE"])
    assert pg == (role, password, f"sota-pgbouncer-{slug}", "5432", slug)
