"""Parsing, defaulting and validating ManagedDatabase / DatabaseBackup documents."""

from __future__ import annotations

from typing import Any

import pytest

from sotadb.errors import ForbiddenChange, InvalidSpec
from sotadb.spec import (
    DatabaseSpec,
    DeletionPolicy,
    PoolMode,
    check_update,
    parse_backup,
    parse_database,
)


def database(name: Any = "my-app", spec: Any = None, **top: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "sota.io/v1",
        "kind": "ManagedDatabase",
        "metadata": {"name": name, "namespace": "shop"},
        **top,
    }
    if spec is not None:
        document["spec"] = spec
    return document


def test_a_name_alone_means_the_seeds_defaults():
    db = parse_database(database())
    assert (db.slug, db.namespace) == ("my-app", "shop")
    assert db.spec.postgres_version == 17
    assert db.spec.pool.mode is PoolMode.TRANSACTION
    assert db.spec.pool.default_pool_size == 20
    assert db.spec.pool.max_client_connections == 100
    assert db.spec.backups.enabled is True
    assert db.spec.backups.retention_days == 7
    assert db.spec.deletion_policy is DeletionPolicy.RETAIN
    assert db.spec.storage.size == "1Gi"


def test_namespace_defaults_to_default():
    document = database()
    del document["metadata"]["namespace"]
    assert parse_database(document).namespace == "default"


def test_a_full_spec_is_kept_as_written():
    spec = {
        "postgresVersion": 17,
        "storage": {"size": "20Gi", "storageClassName": "fast"},
        "resources": {"memory": "2Gi", "cpu": "2"},
        "pool": {"mode": "session", "defaultPoolSize": 50, "maxClientConnections": 500},
        "postgresql": {"parameters": {"work_mem": "16MB"}},
        "backups": {
            "enabled": False,
            "retentionDays": 30,
            "s3": {
                "bucket": "acme.db-backups",
                "endpoint": "https://s3.example.com:9000",
                "region": "eu-central-1",
                "prefix": "prod/orders",
                "credentialsSecret": "orders-s3",
            },
        },
        "deletionPolicy": "Delete",
    }
    db = parse_database(database(spec=spec))
    assert db.spec.model_dump(by_alias=True, mode="json") == spec


def test_parsed_values_are_immutable():
    db = parse_database(database())
    with pytest.raises(ValueError, match="frozen"):
        db.spec.pool.default_pool_size = 5  # type: ignore[misc]


# (document, the field the error must name)
BAD_INPUTS = [
    pytest.param(database(name="a" * 41), "metadata.name", id="name-too-long"),
    pytest.param(database(name="My-app"), "metadata.name", id="name-uppercase"),
    pytest.param(database(name="my_app"), "metadata.name", id="name-underscore"),
    pytest.param(database(name="1app"), "metadata.name", id="name-leading-digit"),
    pytest.param(database(name="-app"), "metadata.name", id="name-leading-hyphen"),
    pytest.param(database(name="app-"), "metadata.name", id="name-trailing-hyphen"),
    pytest.param(database(name=""), "metadata.name", id="name-empty"),
    pytest.param(database(name="my.app"), "metadata.name", id="name-dot"),
    pytest.param(database(name="app;drop"), "metadata.name", id="name-sql-semicolon"),
    pytest.param(database(name="x'or'1'='1"), "metadata.name", id="name-sql-quote"),
    pytest.param(database(name='a"b'), "metadata.name", id="name-double-quote"),
    pytest.param(database(name="app\n"), "metadata.name", id="name-trailing-newline"),
    pytest.param(database(name="аpp"), "metadata.name", id="name-cyrillic-a"),
    pytest.param(database(name="ａpp"), "metadata.name", id="name-fullwidth-a"),
    pytest.param(database(name="app\u200b"), "metadata.name", id="name-zero-width-space"),
    pytest.param(database(name="my app"), "metadata.name", id="name-space"),
    pytest.param(database(name=42), "metadata.name", id="name-number"),
    pytest.param(database(name=None), "metadata.name", id="name-null"),
    pytest.param(
        database(spec={"pool": {"defaultPoolSize": -1}}), "spec.pool.defaultPoolSize", id="pool-neg"
    ),
    pytest.param(
        database(spec={"pool": {"defaultPoolSize": 0}}), "spec.pool.defaultPoolSize", id="pool-0"
    ),
    pytest.param(
        database(spec={"pool": {"defaultPoolSize": 10**9}}),
        "spec.pool.defaultPoolSize",
        id="pool-huge",
    ),
    pytest.param(
        database(spec={"pool": {"defaultPoolSize": "20"}}),
        "spec.pool.defaultPoolSize",
        id="pool-string",
    ),
    pytest.param(
        database(spec={"pool": {"defaultPoolSize": 20.5}}),
        "spec.pool.defaultPoolSize",
        id="pool-float",
    ),
    pytest.param(
        database(spec={"pool": {"defaultPoolSize": True}}),
        "spec.pool.defaultPoolSize",
        id="pool-bool",
    ),
    pytest.param(
        database(spec={"pool": {"maxClientConnections": 0}}),
        "spec.pool.maxClientConnections",
        id="clients-0",
    ),
    pytest.param(
        database(spec={"pool": {"maxClientConnections": 10**6}}),
        "spec.pool.maxClientConnections",
        id="clients-huge",
    ),
    pytest.param(
        database(spec={"pool": {"defaultPoolSize": 50, "maxClientConnections": 10}}),
        "spec.pool",
        id="pool-exceeds-clients",
    ),
    pytest.param(database(spec={"pool": {"mode": "statement"}}), "spec.pool.mode", id="pool-mode"),
    pytest.param(database(spec={"pool": "big"}), "spec.pool", id="pool-not-a-mapping"),
    pytest.param(database(spec={"poolSize": 20}), "spec.poolSize", id="unknown-spec-field"),
    pytest.param(
        database(spec={"pool": {"size": 20}}), "spec.pool.size", id="unknown-nested-field"
    ),
    pytest.param(
        database(spec={"storage": {"size": "10GB"}}), "spec.storage.size", id="storage-unit"
    ),
    pytest.param(
        database(spec={"storage": {"size": "-1Gi"}}), "spec.storage.size", id="storage-neg"
    ),
    pytest.param(database(spec={"storage": {"size": 10}}), "spec.storage.size", id="storage-int"),
    pytest.param(
        database(spec={"storage": {"size": "1Mi"}}), "spec.storage.size", id="storage-tiny"
    ),
    pytest.param(
        database(spec={"storage": {"size": "1Ei"}}), "spec.storage.size", id="storage-huge"
    ),
    pytest.param(
        database(spec={"resources": {"memory": "1Mi"}}),
        "spec.resources.memory",
        id="memory-tiny",
    ),
    pytest.param(database(spec={"resources": {"cpu": "0"}}), "spec.resources.cpu", id="cpu-zero"),
    pytest.param(database(spec={"postgresVersion": 16}), "spec.postgresVersion", id="postgres-16"),
    pytest.param(
        database(spec={"postgresVersion": "17"}), "spec.postgresVersion", id="postgres-string"
    ),
    pytest.param(
        database(spec={"postgresql": {"parameters": {"port": "5433"}}}),
        "spec.postgresql.parameters",
        id="param-forbidden-port",
    ),
    pytest.param(
        database(spec={"postgresql": {"parameters": {"max_connections": "500"}}}),
        "spec.postgresql.parameters",
        id="param-forbidden-max-connections",
    ),
    pytest.param(
        database(spec={"postgresql": {"parameters": {"work_mem": 4}}}),
        "spec.postgresql.parameters.work_mem",
        id="param-value-not-string",
    ),
    pytest.param(
        database(spec={"postgresql": {"parameters": {"Work Mem": "4MB"}}}),
        "spec.postgresql.parameters.Work Mem",
        id="param-name-invalid",
    ),
    pytest.param(
        database(spec={"postgresql": {"parameters": {"work_mem": "4MB\nport = 1"}}}),
        "spec.postgresql.parameters.work_mem",
        id="param-value-newline-injection",
    ),
    pytest.param(
        database(spec={"backups": {"retentionDays": 0}}),
        "spec.backups.retentionDays",
        id="retention-0",
    ),
    pytest.param(
        database(spec={"backups": {"retentionDays": 10000}}),
        "spec.backups.retentionDays",
        id="retention-huge",
    ),
    pytest.param(
        database(spec={"backups": {"enabled": "yes"}}), "spec.backups.enabled", id="enabled-string"
    ),
    pytest.param(
        database(spec={"deletionPolicy": "delete"}), "spec.deletionPolicy", id="policy-lowercase"
    ),
    pytest.param(database(spec="postgres please"), "spec", id="spec-not-a-mapping"),
    pytest.param(database(apiVersion="sota.io/v2"), "apiVersion", id="wrong-api-version"),
    pytest.param(database(kind="Database"), "kind", id="wrong-kind"),
]


@pytest.mark.parametrize(("document", "field"), BAD_INPUTS)
def test_bad_input_names_the_field_and_the_fix(document, field):
    with pytest.raises(InvalidSpec) as caught:
        parse_database(document)
    assert field in caught.value.fields
    problem = next(p for p in caught.value.problems if p.field == field)
    assert problem.fix, "every problem says how to fix it"
    assert field in str(caught.value)


def test_table_is_large_enough():
    assert len(BAD_INPUTS) >= 40


def test_every_problem_is_reported_at_once():
    document = database(name="Bad_Name", spec={"pool": {"defaultPoolSize": 0}, "extra": 1})
    with pytest.raises(InvalidSpec) as caught:
        parse_database(document)
    assert set(caught.value.fields) == {"metadata.name", "spec.pool.defaultPoolSize", "spec.extra"}


def test_a_non_mapping_document_is_refused():
    with pytest.raises(InvalidSpec, match="mapping"):
        parse_database(["not", "a", "document"])  # type: ignore[arg-type]


BOUNDARY_VALUES = [
    pytest.param({"pool": {"defaultPoolSize": 1, "maxClientConnections": 1}}, id="smallest-pool"),
    pytest.param(
        {"pool": {"defaultPoolSize": 200, "maxClientConnections": 10000}}, id="largest-pool"
    ),
    pytest.param({"storage": {"size": "256Mi"}}, id="smallest-storage"),
    pytest.param({"storage": {"size": "64Ti"}}, id="largest-storage"),
    pytest.param({"storage": {"size": "1.5Gi"}}, id="fractional-storage"),
    pytest.param({"backups": {"retentionDays": 365}}, id="longest-retention"),
    pytest.param({"resources": {"cpu": "100m", "memory": "128Mi"}}, id="smallest-resources"),
]


@pytest.mark.parametrize("spec", BOUNDARY_VALUES)
def test_boundary_values_are_accepted(spec):
    assert parse_database(database(spec=spec)).spec == DatabaseSpec.model_validate(spec)


def test_a_forty_character_name_is_accepted():
    assert parse_database(database(name="a" * 40)).slug == "a" * 40


def test_backup_minute_is_stable_and_spread():
    minutes = {parse_database(database(name=f"app-{i}")).backup_minute_of_day for i in range(200)}
    assert len(minutes) > 100, "a thousand databases must not dump in the same minute"
    assert all(0 <= m < 360 for m in minutes)
    first = parse_database(database()).backup_schedule
    assert first == parse_database(database()).backup_schedule
    minute, hour, *rest = first.split()
    assert 0 <= int(minute) < 60
    assert 0 <= int(hour) < 6
    assert rest == ["*", "*", "*"]


# Immutable or monotonic fields: the same rules as the CRD's CEL transition rules.
FORBIDDEN_CHANGES = [
    pytest.param(
        {"storage": {"size": "10Gi"}},
        {"storage": {"size": "5Gi"}},
        "spec.storage.size",
        id="shrink-storage",
    ),
    pytest.param(
        {"storage": {"storageClassName": "fast"}},
        {"storage": {"storageClassName": "slow"}},
        "spec.storage.storageClassName",
        id="change-storage-class",
    ),
    pytest.param(
        {},
        {"storage": {"storageClassName": "slow"}},
        "spec.storage.storageClassName",
        id="set-storage-class-later",
    ),
]


@pytest.mark.parametrize(("old", "new", "field"), FORBIDDEN_CHANGES)
def test_forbidden_changes_are_refused(old, new, field):
    with pytest.raises(ForbiddenChange) as caught:
        check_update(DatabaseSpec.model_validate(old), DatabaseSpec.model_validate(new))
    assert caught.value.fields == (field,)


def test_major_version_change_is_refused():
    old = DatabaseSpec()
    new = old.model_copy(update={"postgres_version": 18})
    with pytest.raises(ForbiddenChange, match="postgresVersion"):
        check_update(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param({"storage": {"size": "1Gi"}}, {"storage": {"size": "2Gi"}}, id="grow-storage"),
        pytest.param({}, {"pool": {"defaultPoolSize": 40}}, id="pool-size"),
        pytest.param({}, {"deletionPolicy": "Delete"}, id="deletion-policy"),
        pytest.param({"storage": {"size": "1024Mi"}}, {"storage": {"size": "1Gi"}}, id="same-size"),
    ],
)
def test_allowed_changes_pass(old, new):
    check_update(DatabaseSpec.model_validate(old), DatabaseSpec.model_validate(new))


def test_backup_names_its_database():
    backup = parse_backup(
        {
            "apiVersion": "sota.io/v1",
            "kind": "DatabaseBackup",
            "metadata": {"name": "nightly-1", "namespace": "shop"},
            "spec": {"database": "my-app"},
        }
    )
    assert backup.spec.database == "my-app"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param({}, "spec.database", id="missing-database"),
        pytest.param({"database": "My_App"}, "spec.database", id="bad-database"),
        pytest.param({"database": "x", "when": "now"}, "spec.when", id="unknown-field"),
    ],
)
def test_bad_backups_are_refused(spec, field):
    document = {
        "apiVersion": "sota.io/v1",
        "kind": "DatabaseBackup",
        "metadata": {"name": "b"},
        "spec": spec,
    }
    with pytest.raises(InvalidSpec) as caught:
        parse_backup(document)
    assert field in caught.value.fields
