"""Parsing, defaulting and validating ManagedDatabase / DatabaseBackup documents."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Update:
    """A change to a stored ManagedDatabase, judged by check_update (and the CRD's CEL rules)."""

    old: DatabaseSpec
    new: DatabaseSpec


def update(old: dict[str, Any], new: dict[str, Any]) -> Update:
    return Update(DatabaseSpec.model_validate(old), DatabaseSpec.model_validate(new))


def bad(case: Any, field: str, fix: str, id: str) -> Any:
    return pytest.param(case, field, fix, id=id)


NAME_FIX = "lowercase letters, digits and hyphens, starting with a letter"
WHOLE = "write it without quotes"
QUANTITY = "write a quantity between 256Mi and 64Ti"

# The named table: (a document or an update, the field the error must name, part of its fix).
BAD_INPUTS = [
    # metadata.name: too long, uppercase, underscores, leading digits or hyphens, SQL, look-alikes
    bad(database(name="a" * 41), "metadata.name", "use 1-40", "name-too-long"),
    bad(database(name="a" * 253), "metadata.name", "use 1-40", "name-dns-subdomain-long"),
    bad(database(name="My-app"), "metadata.name", NAME_FIX, "name-uppercase"),
    bad(database(name="MYAPP"), "metadata.name", NAME_FIX, "name-all-caps"),
    bad(database(name="my_app"), "metadata.name", NAME_FIX, "name-underscore"),
    bad(database(name="1app"), "metadata.name", NAME_FIX, "name-leading-digit"),
    bad(database(name="-app"), "metadata.name", NAME_FIX, "name-leading-hyphen"),
    bad(database(name="app-"), "metadata.name", NAME_FIX, "name-trailing-hyphen"),
    bad(database(name=""), "metadata.name", NAME_FIX, "name-empty"),
    bad(database(name="my.app"), "metadata.name", NAME_FIX, "name-dot"),
    bad(database(name="app;drop"), "metadata.name", NAME_FIX, "name-sql-semicolon"),
    bad(database(name="x'or'1'='1"), "metadata.name", NAME_FIX, "name-sql-quote"),
    bad(database(name="a'); drop table x;--"), "metadata.name", NAME_FIX, "name-sql-drop-table"),
    bad(database(name='a"b'), "metadata.name", NAME_FIX, "name-double-quote"),
    bad(database(name="app\n"), "metadata.name", NAME_FIX, "name-trailing-newline"),
    bad(database(name="аpp"), "metadata.name", NAME_FIX, "name-cyrillic-a"),
    bad(database(name="ａpp"), "metadata.name", NAME_FIX, "name-fullwidth-a"),
    bad(database(name="my\u2010app"), "metadata.name", NAME_FIX, "name-unicode-hyphen"),
    bad(database(name="app\u200b"), "metadata.name", NAME_FIX, "name-zero-width-space"),
    bad(database(name="my app"), "metadata.name", NAME_FIX, "name-space"),
    bad(database(name=42), "metadata.name", NAME_FIX, "name-number"),
    bad(database(name=None), "metadata.name", NAME_FIX, "name-null"),
    # pool sizes: negative, zero, huge, wrong types, inconsistent
    bad(database(spec={"pool": {"defaultPoolSize": -1}}), "spec.pool.defaultPoolSize",
        "at least 1", "pool-negative"),
    bad(database(spec={"pool": {"defaultPoolSize": 0}}), "spec.pool.defaultPoolSize",
        "at least 1", "pool-zero"),
    bad(database(spec={"pool": {"defaultPoolSize": 201}}), "spec.pool.defaultPoolSize",
        "at most 200", "pool-one-too-many"),
    bad(database(spec={"pool": {"defaultPoolSize": 10**9}}), "spec.pool.defaultPoolSize",
        "at most 200", "pool-huge"),
    bad(database(spec={"pool": {"defaultPoolSize": "20"}}), "spec.pool.defaultPoolSize",
        WHOLE, "pool-string"),
    bad(database(spec={"pool": {"defaultPoolSize": 20.5}}), "spec.pool.defaultPoolSize",
        WHOLE, "pool-float"),
    bad(database(spec={"pool": {"defaultPoolSize": True}}), "spec.pool.defaultPoolSize",
        WHOLE, "pool-bool"),
    bad(database(spec={"pool": {"maxClientConnections": -5}}), "spec.pool.maxClientConnections",
        "at least 1", "clients-negative"),
    bad(database(spec={"pool": {"maxClientConnections": 10**6}}),
        "spec.pool.maxClientConnections", "at most 10000", "clients-huge"),
    bad(database(spec={"pool": {"defaultPoolSize": 50, "maxClientConnections": 10}}),
        "spec.pool", "make maxClientConnections at least defaultPoolSize", "pool-over-clients"),
    bad(database(spec={"pool": {"mode": "statement"}}), "spec.pool.mode",
        "'transaction' or 'session'", "pool-mode"),
    bad(database(spec={"pool": "big"}), "spec.pool", "key: value pairs", "pool-not-a-mapping"),
    # unknown fields
    bad(database(spec={"poolSize": 20}), "spec.poolSize", "remove it", "unknown-spec-field"),
    bad(database(spec={"pool": {"size": 20}}), "spec.pool.size", "remove it", "unknown-nested"),
    bad(database(spec={"storage": {"sizeGi": 1}}), "spec.storage.sizeGi", "remove it",
        "unknown-storage-field"),
    # storage and resources: quantities
    bad(database(spec={"storage": {"size": "10GB"}}), "spec.storage.size", QUANTITY,
        "storage-unit"),
    bad(database(spec={"storage": {"size": "-1Gi"}}), "spec.storage.size", QUANTITY,
        "storage-negative"),
    bad(database(spec={"storage": {"size": 10}}), "spec.storage.size", QUANTITY, "storage-int"),
    bad(database(spec={"storage": {"size": "1Mi"}}), "spec.storage.size", QUANTITY,
        "storage-tiny"),
    bad(database(spec={"storage": {"size": "1Ei"}}), "spec.storage.size", QUANTITY,
        "storage-huge"),
    bad(database(spec={"storage": {"storageClassName": "s" * 254}}),
        "spec.storage.storageClassName", "at most 253 characters", "storage-class-too-long"),
    bad(database(spec={"storage": ["1Gi"]}), "spec.storage", "key: value pairs", "storage-list"),
    bad(database(spec={"resources": {"memory": "1Mi"}}), "spec.resources.memory",
        "at least 128Mi", "memory-tiny"),
    bad(database(spec={"resources": {"cpu": "0"}}), "spec.resources.cpu", "positive quantity",
        "cpu-zero"),
    # postgresVersion
    bad(database(spec={"postgresVersion": 16}), "spec.postgresVersion", "write 17",
        "postgres-16"),
    bad(database(spec={"postgresVersion": "17"}), "spec.postgresVersion", "write 17",
        "postgres-string"),
    # postgresql.parameters
    bad(database(spec={"postgresql": {"parameters": {"port": "5433"}}}),
        "spec.postgresql.parameters", "remove that parameter", "param-forbidden-port"),
    bad(database(spec={"postgresql": {"parameters": {"max_connections": "500"}}}),
        "spec.postgresql.parameters", "remove that parameter", "param-max-connections"),
    bad(database(spec={"postgresql": {"parameters": {"work_mem": 4}}}),
        "spec.postgresql.parameters.work_mem", "quote the value", "param-value-not-string"),
    bad(database(spec={"postgresql": {"parameters": {"Work Mem": "4MB"}}}),
        "spec.postgresql.parameters.Work Mem", "like work_mem", "param-name-invalid"),
    bad(database(spec={"postgresql": {"parameters": {"a" * 64: "on"}}}),
        "spec.postgresql.parameters." + "a" * 64, "at most 63 characters", "param-name-long"),
    bad(database(spec={"postgresql": {"parameters": {"work_mem": "4MB\nport = 1"}}}),
        "spec.postgresql.parameters.work_mem", "on one line", "param-value-newline"),
    bad(database(spec={"postgresql": {"parameters": {"search_path": "x" * 1025}}}),
        "spec.postgresql.parameters.search_path", "at most 1024 characters", "param-value-long"),
    # backups and deletion policy
    bad(database(spec={"backups": {"retentionDays": 0}}), "spec.backups.retentionDays",
        "at least 1", "retention-zero"),
    bad(database(spec={"backups": {"retentionDays": 10000}}), "spec.backups.retentionDays",
        "at most 365", "retention-huge"),
    bad(database(spec={"backups": {"enabled": "yes"}}), "spec.backups.enabled",
        "true or false", "enabled-string"),
    bad(database(spec={"deletionPolicy": "delete"}), "spec.deletionPolicy",
        "'Delete', 'Retain' or 'Snapshot'", "policy-lowercase"),
    # the document itself
    bad(database(spec="postgres please"), "spec", "key: value pairs", "spec-not-a-mapping"),
    bad(database(apiVersion="sota.io/v2"), "apiVersion", "set apiVersion: sota.io/v1",
        "wrong-api-version"),
    bad(database(kind="Database"), "kind", "set kind: ManagedDatabase", "wrong-kind"),
    bad({**database(), "metadata": {"name": "my-app", "namespace": "Shop"}},
        "metadata.namespace", "valid namespace name", "namespace-uppercase"),
    # immutable fields: changes the running database cannot take
    bad(update({"storage": {"size": "10Gi"}}, {"storage": {"size": "5Gi"}}),
        "spec.storage.size", "keep it at 10Gi or larger", "change-shrink-storage"),
    bad(update({"storage": {"size": "10Gi"}}, {"storage": {"size": "10239Mi"}}),
        "spec.storage.size", "keep it at 10Gi or larger", "change-shrink-storage-by-1Mi"),
    bad(update({"storage": {"storageClassName": "fast"}},
               {"storage": {"storageClassName": "slow"}}),
        "spec.storage.storageClassName", "set it back to 'fast'", "change-storage-class"),
    bad(update({}, {"storage": {"storageClassName": "slow"}}),
        "spec.storage.storageClassName", "remove it", "change-set-storage-class-later"),
    bad(update({"storage": {"storageClassName": "fast"}}, {}),
        "spec.storage.storageClassName", "set it back to 'fast'", "change-drop-storage-class"),
    # Only 17 exists today: the old object is one an older release accepted.
    bad(Update(DatabaseSpec.model_construct(postgres_version=16), DatabaseSpec()),
        "spec.postgresVersion", "restore a backup into it", "change-major-version"),
]  # fmt: skip
CATEGORIES = (
    "too-long", "uppercase", "underscore", "leading-digit", "leading-hyphen", "sql", "cyrillic",
    "fullwidth", "pool-negative", "pool-huge", "string", "unknown", "change-",
)  # fmt: skip


def judge(case: Any) -> None:
    if isinstance(case, Update):
        check_update(case.old, case.new)
    else:
        parse_database(case)


@pytest.mark.parametrize(("case", "field", "fix"), BAD_INPUTS)
def test_bad_input_names_the_field_and_the_fix(case, field, fix):
    refusal = ForbiddenChange if isinstance(case, Update) else InvalidSpec
    with pytest.raises(refusal) as caught:
        judge(case)
    assert field in caught.value.fields
    problem = next(p for p in caught.value.problems if p.field == field)
    assert fix in problem.fix
    assert f"{field}: " in str(caught.value)
    assert f"(fix: {problem.fix})" in str(caught.value)


def test_table_is_large_enough_and_covers_every_category():
    ids = [param.id for param in BAD_INPUTS]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids)
    assert [c for c in CATEGORIES if not any(c in i for i in ids)] == []


def test_no_problem_in_the_table_gets_a_generic_fix():
    for case, _, _ in (param.values for param in BAD_INPUTS):
        with pytest.raises(InvalidSpec) as caught:
            judge(case)
        assert all(p.fix != "correct the value" for p in caught.value.problems), caught.value


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


# Changes the running database can take (the table above holds those it cannot).
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
