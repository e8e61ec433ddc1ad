"""The CRDs and spec.py agree: same fields, defaults, bounds and immutable fields.

The API server is emulated by tests/support/crdschema.py (defaulting, OpenAPI validation,
CEL rules with Kubernetes' quantity library); kubernetes-validate checks the CRDs themselves.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import jsonschema
import kubernetes_validate
import pytest
import yaml
from celpy import celtypes
from crdschema import Crd, compile_rule, structural_problems
from hypothesis import find, given, settings
from hypothesis import strategies as st

from sotadb import names, spec
from sotadb.errors import ForbiddenChange, InvalidSpec
from sotadb.quantity import QUANTITY_PATTERN

ROOT = Path(__file__).resolve().parents[2]
DB = Crd.load(ROOT / "crds" / "manageddatabases.sota.io.yaml")
BACKUP = Crd.load(ROOT / "crds" / "databasebackups.sota.io.yaml")
RESTORE = Crd.load(ROOT / "crds" / "databaserestores.sota.io.yaml")
EXAMPLES = ROOT / "manifests" / "examples"
DEFAULT_SPEC = spec.DatabaseSpec().model_dump(by_alias=True, mode="json", exclude_none=True)


def database(spec_: Any = None, *, name: str = "my-app") -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_DATABASE,
        "metadata": {"name": name, "namespace": "shop"},
    }
    if spec_ is not None:
        document["spec"] = spec_
    return document


def backup(database_: Any = "my-app", *, name: str = "my-app-manual-1") -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_BACKUP,
        "metadata": {"name": name},
        "spec": {"database": database_},
    }


def accepts(parse: Callable[[dict[str, Any]], object], document: dict[str, Any]) -> bool:
    try:
        parse(document)
    except InvalidSpec:
        return False
    return True


def spec_py_accepts(document: dict[str, Any]) -> bool:
    return accepts(spec.parse_database, document)


def dump(document: dict[str, Any]) -> dict[str, Any]:
    parsed = spec.parse_database(document).spec
    return parsed.model_dump(by_alias=True, mode="json", exclude_none=True)


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return document


def schema_at(crd: Crd, dotted: str) -> dict[str, Any]:
    node: Any = crd.schema
    for part in dotted.split("."):
        node = node["properties"][part]
    return dict(node)


# --- The CRD documents --------------------------------------------------------------------------


@pytest.mark.parametrize("kube", ["1.30", "1.33"])
@pytest.mark.parametrize("crd", [DB, BACKUP, RESTORE], ids=["database", "backup", "restore"])
def test_crd_is_a_valid_custom_resource_definition(crd: Crd, kube: str) -> None:
    assert kubernetes_validate.validate(dict(crd.document), kube, strict=True) == kube


def test_kubernetes_validate_strict_mode_catches_a_misspelt_rule_field() -> None:
    broken = copy.deepcopy(dict(BACKUP.document))
    rule = broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "x-kubernetes-validations"
    ][0]
    rule["mesage"] = rule.pop("message")
    with pytest.raises(jsonschema.ValidationError, match="mesage"):
        kubernetes_validate.validate(broken, "1.33", strict=True)


@pytest.mark.parametrize(
    ("crd", "kind", "plural", "short"),
    [
        (DB, names.KIND_DATABASE, names.PLURAL_DATABASE, "mdb"),
        (BACKUP, names.KIND_BACKUP, names.PLURAL_BACKUP, "dbb"),
        (RESTORE, names.KIND_RESTORE, names.PLURAL_RESTORE, "dbr"),
    ],
    ids=["database", "backup", "restore"],
)
def test_crd_names_and_version(crd: Crd, kind: str, plural: str, short: str) -> None:
    body = crd.document["spec"]
    assert crd.document["metadata"]["name"] == f"{plural}.{names.GROUP}"
    assert body["group"] == names.GROUP
    assert body["scope"] == "Namespaced"
    assert body["names"]["kind"] == kind
    assert body["names"]["plural"] == plural
    assert body["names"]["singular"] == kind.lower()
    assert body["names"]["shortNames"] == [short]
    # `kubectl delete all --all` must not delete databases or their backups.
    assert body["names"]["categories"] == ["sotadb"]
    [version] = body["versions"]
    assert (version["name"], version["served"], version["storage"]) == (names.VERSION, True, True)
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("crd", [DB, BACKUP, RESTORE], ids=["database", "backup", "restore"])
def test_installing_needs_no_webhook(crd: Crd) -> None:
    """One served version and no conversion webhook: `kubectl apply` of crds/ is the whole
    install; validation and defaulting are the schema's and CEL's, not an admission webhook's."""
    conversion = crd.document["spec"].get("conversion", {"strategy": "None"})
    assert conversion == {"strategy": "None"}
    assert "webhook" not in yaml.safe_dump(dict(crd.document)).lower()


@pytest.mark.parametrize("crd", [DB, BACKUP, RESTORE], ids=["database", "backup", "restore"])
def test_schema_is_structural_and_described(crd: Crd) -> None:
    assert structural_problems(crd.schema) == []


@pytest.mark.parametrize(
    ("crd", "expected"),
    [
        pytest.param(DB, ["status.appliedSpec", "status.kopf"], id="database"),
        pytest.param(BACKUP, ["status.kopf"], id="backup"),
        pytest.param(RESTORE, ["status.kopf"], id="restore"),
    ],
)
def test_unknown_fields_are_kept_only_for_kopf_and_the_applied_spec(
    crd: Crd, expected: list[str]
) -> None:
    preserved = [
        path for path, node in walk(crd.schema) if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert sorted(preserved) == expected


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, child in node.get("properties", {}).items():
        found += walk(child, f"{path}.{key}".lstrip("."))
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found += walk(node[key], f"{path}[{key}]")
    return found


_OK = {"type": "object", "description": "root", "properties": {}}


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        pytest.param(
            {**_OK, "properties": {"a": {"description": "no type"}}}, "has no type", id="no-type"
        ),
        pytest.param(
            {**_OK, "properties": {"a": {"type": "string"}}}, "no description", id="no-description"
        ),
        pytest.param(
            {**_OK, "properties": {"metadata": {"type": "object", "description": "x"}}},
            "other than name and generateName",
            id="metadata-described",
        ),
        pytest.param(
            {
                **_OK,
                "properties": {
                    "a": {
                        "type": "object",
                        "description": "both",
                        "properties": {},
                        "additionalProperties": {"type": "string", "description": "v"},
                    }
                },
            },
            "both properties and additionalProperties",
            id="properties-and-additional",
        ),
        pytest.param(
            {**_OK, "additionalProperties": {"type": "string", "description": "v"}},
            "must not use additionalProperties",
            id="additional-at-root",
        ),
        pytest.param(
            {**_OK, "properties": {"a": {"type": "array", "description": "no items"}}},
            "needs one items schema",
            id="array-without-items",
        ),
        pytest.param(
            {**_OK, "properties": {"a": {"type": "integer", "description": "d", "default": "1"}}},
            "default",
            id="default-of-wrong-type",
        ),
        pytest.param(
            {**_OK, "x-kubernetes-validations": [{"rule": "self.a ==", "message": "m"}]},
            "does not compile",
            id="rule-syntax",
        ),
        pytest.param(
            {**_OK, "x-kubernetes-validations": [{"rule": "true", "fieldPath": ".nope"}]},
            "fieldPath .nope is not a field",
            id="field-path",
        ),
        pytest.param(
            {
                **_OK,
                "properties": {
                    "a": {
                        "type": "array",
                        "description": "d",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["type"],
                        "items": {
                            "type": "object",
                            "description": "d",
                            "properties": {"type": {"type": "string", "description": "d"}},
                        },
                    }
                },
            },
            "list-map key type must be a required property",
            id="list-map-key-optional",
        ),
    ],
)
def test_structural_check_finds_each_problem(schema: dict[str, Any], problem: str) -> None:
    assert any(problem in found for found in structural_problems(schema)), problem


def test_kustomization_lists_every_crd() -> None:
    kustomization = yaml.safe_load((ROOT / "crds" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [
        "databasebackups.sota.io.yaml",
        "databaserestores.sota.io.yaml",
        "manageddatabases.sota.io.yaml",
    ]
    assert all((ROOT / "crds" / f).is_file() for f in kustomization["resources"])


def test_patterns_and_limits_are_the_ones_spec_py_uses() -> None:
    quantity_fields = ["spec.storage.size", "spec.resources.memory", "spec.resources.cpu"]
    assert {schema_at(DB, f)["pattern"] for f in quantity_fields} == {QUANTITY_PATTERN}
    _, value = get_args(spec.ParameterValue)
    parameters = schema_at(DB, "spec.postgresql.parameters")["additionalProperties"]
    assert (parameters["pattern"], parameters["maxLength"]) == (value.pattern, value.max_length)
    _, key = get_args(spec.ParameterName)
    key_rule = schema_at(DB, "spec.postgresql.parameters")["x-kubernetes-validations"][0]["rule"]
    assert f"size(k) <= {key.max_length}" in key_rule
    assert f"matches('{key.pattern}')" in key_rule
    database_field = schema_at(BACKUP, "spec.database")
    assert database_field["pattern"] == names.SLUG_PATTERN
    assert database_field["maxLength"] == names.SLUG_MAX_LENGTH
    rules = [r["rule"] for r in DB.schema["x-kubernetes-validations"]]
    assert rules == [
        f"self.metadata.name.matches('{names.SLUG_PATTERN}')",
        f"size(self.metadata.name) <= {names.SLUG_MAX_LENGTH}",
    ]
    # Backups and restores: any DNS-1123 label (a CronJob's Job name, at 63, fits).
    for crd in (BACKUP, RESTORE):
        rules = [r["rule"] for r in crd.schema["x-kubernetes-validations"]]
        assert rules == [
            f"self.metadata.name.matches('{names.OBJECT_NAME_PATTERN}')",
            f"size(self.metadata.name) <= {names.OBJECT_NAME_MAX_LENGTH}",
        ]
    backup_field = schema_at(RESTORE, "spec.backup")
    assert (backup_field["pattern"], backup_field["maxLength"]) == (
        names.OBJECT_NAME_PATTERN,
        names.OBJECT_NAME_MAX_LENGTH,
    )
    target_field = schema_at(RESTORE, "spec.target")
    assert (target_field["pattern"], target_field["maxLength"]) == (
        names.SLUG_PATTERN,
        names.SLUG_MAX_LENGTH,
    )


# --- Examples -----------------------------------------------------------------------------------


def test_minimal_example_is_a_name_and_gets_every_default() -> None:
    document = load("minimal.yaml")
    assert document == {
        "apiVersion": "sota.io/v1",
        "kind": "ManagedDatabase",
        "metadata": {"name": "my-app"},
    }
    assert DB.admit(document) == []
    assert spec.parse_database(document).spec == spec.DatabaseSpec()
    assert DB.default(document)["spec"] == DEFAULT_SPEC


def test_full_example_sets_every_field_and_both_sides_read_it_alike() -> None:
    document = load("full.yaml")
    assert DB.admit(document) == []
    parsed = spec.parse_database(document)
    assert (parsed.namespace, parsed.name) == ("shop", "orders")
    assert DB.default(document)["spec"] == dump(document)
    schema_leaves = leaves(schema_at(DB, "spec"))
    assert leaves_of(document["spec"]) == schema_leaves
    # Every value differs from its default but where the default is the only sensible value.
    same = {p for p in schema_leaves if lookup(document["spec"], p) == lookup(DEFAULT_SPEC, p)}
    assert same == {"postgresVersion", "backups.enabled"}


def leaves(node: dict[str, Any], path: str = "") -> set[str]:
    if "properties" not in node:
        return {path}
    return set().union(
        *(leaves(c, f"{path}.{k}".lstrip(".")) for k, c in node["properties"].items())
    )


def leaves_of(value: dict[str, Any], path: str = "") -> set[str]:
    found: set[str] = set()
    for key, item in value.items():
        here = f"{path}.{key}".lstrip(".")
        found |= leaves_of(item, here) if isinstance(item, dict) and key != "parameters" else {here}
    return found


def lookup(value: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        value = value.get(part, {})
    return value


def test_backup_example_is_valid_for_both() -> None:
    document = load("backup.yaml")
    assert BACKUP.admit(document) == []
    assert spec.parse_backup(document).spec.database == "my-app"


def test_restore_example_is_valid_for_both() -> None:
    document = load("restore.yaml")
    assert RESTORE.admit(document) == []
    parsed = spec.parse_restore(document).spec
    assert (parsed.backup, parsed.target) == ("my-app-manual-1", "my-app-copy")


# --- Defaults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec_",
    [
        pytest.param(None, id="no-spec"),
        pytest.param({}, id="empty-spec"),
        pytest.param({"storage": {}}, id="storage"),
        pytest.param({"resources": {}}, id="resources"),
        pytest.param({"pool": {}}, id="pool"),
        pytest.param({"postgresql": {}}, id="postgresql"),
        pytest.param({"postgresql": {"parameters": {}}}, id="parameters"),
        pytest.param({"backups": {}}, id="backups"),
        pytest.param(
            {k: {} for k in ("storage", "resources", "pool", "postgresql", "backups")},
            id="all-empty",
        ),
    ],
)
def test_empty_objects_default_exactly_as_spec_py(spec_: Any) -> None:
    document = database(spec_)
    assert DB.default(document)["spec"] == DEFAULT_SPEC
    assert dump(document) == DEFAULT_SPEC
    assert DB.admit(document) == []


def test_defaulting_does_not_touch_the_input() -> None:
    document = database({"pool": {}})
    DB.default(document)
    assert document["spec"] == {"pool": {}}


# --- Bounds: both sides accept and reject the same specs ----------------------------------------

NAME_41 = "a" * 41
S3 = {"bucket": "my-backups", "credentialsSecret": "my-app-s3"}
GOOD_S3 = [
    ("minimal", S3),
    (
        "every-field",
        {
            **S3,
            "endpoint": "http://minio.storage:9000",
            "region": "eu-central-1",
            "prefix": "prod/my-app",
        },
    ),
    ("bucket-3", {**S3, "bucket": "abc"}),
    ("bucket-63", {**S3, "bucket": "a" * 63}),
    ("bucket-dots-digits", {**S3, "bucket": "backups.2026.example"}),
    ("endpoint-https-slash", {**S3, "endpoint": "https://s3.eu.example.com/"}),
    ("endpoint-ip-port", {**S3, "endpoint": "http://10.0.0.7:9000"}),
    ("prefix-empty", {**S3, "prefix": ""}),
    ("prefix-one-segment", {**S3, "prefix": "db_backups-1.x"}),
    ("prefix-256", {**S3, "prefix": "p" * 256}),
    ("secret-dotted", {**S3, "credentialsSecret": "s3.keys-1"}),
]
BAD_S3 = [
    ("no-bucket", {"credentialsSecret": "k"}),
    ("no-credentials-secret", {"bucket": "my-backups"}),
    ("empty", {}),
    ("not-an-object", "s3://my-backups"),
    ("unknown-field", {**S3, "accessKey": "AKIA"}),
    ("bucket-2", {**S3, "bucket": "ab"}),
    ("bucket-64", {**S3, "bucket": "a" * 64}),
    ("bucket-uppercase", {**S3, "bucket": "My-Backups"}),
    ("bucket-underscore", {**S3, "bucket": "my_backups"}),
    ("bucket-double-dot", {**S3, "bucket": "my..backups"}),
    ("bucket-dot-hyphen", {**S3, "bucket": "my.-backups"}),
    ("bucket-leading-hyphen", {**S3, "bucket": "-backups"}),
    ("bucket-trailing-dot", {**S3, "bucket": "backups."}),
    ("bucket-newline", {**S3, "bucket": "backups\n"}),
    ("bucket-not-a-string", {**S3, "bucket": 7}),
    ("endpoint-no-scheme", {**S3, "endpoint": "minio:9000"}),
    ("endpoint-ftp", {**S3, "endpoint": "ftp://minio"}),
    ("endpoint-path", {**S3, "endpoint": "http://minio:9000/s3"}),
    ("endpoint-userinfo", {**S3, "endpoint": "http://key:secret@minio:9000"}),
    ("region-uppercase", {**S3, "region": "EU-CENTRAL-1"}),
    ("region-empty", {**S3, "region": ""}),
    ("prefix-leading-slash", {**S3, "prefix": "/backups"}),
    ("prefix-trailing-slash", {**S3, "prefix": "backups/"}),
    ("prefix-double-slash", {**S3, "prefix": "a//b"}),
    ("prefix-space", {**S3, "prefix": "my backups"}),
    ("prefix-257", {**S3, "prefix": "p" * 257}),
    ("secret-uppercase", {**S3, "credentialsSecret": "My-S3"}),
    ("secret-empty", {**S3, "credentialsSecret": ""}),
]
INVALID = [
    pytest.param(
        database({"postgresql": {"parameters": {f"p{i}": "1" for i in range(129)}}}),
        id="129-parameters",
    ),
    pytest.param(database({"storage": {"size": "1" * 65 + "Mi"}}), id="quantity-too-long"),
    pytest.param(database({"pool": {"defaultPoolSize": 0}}), id="pool-size-zero"),
    pytest.param(database({"pool": {"defaultPoolSize": 201}}), id="pool-size-over-200"),
    pytest.param(database({"pool": {"maxClientConnections": 0}}), id="clients-zero"),
    pytest.param(database({"pool": {"maxClientConnections": 10_001}}), id="clients-over-10000"),
    pytest.param(
        database({"pool": {"defaultPoolSize": 50, "maxClientConnections": 40}}),
        id="pool-exceeds-clients",
    ),
    pytest.param(database({"pool": {"maxClientConnections": 19}}), id="default-pool-exceeds"),
    pytest.param(database({"pool": {"defaultPoolSize": "20"}}), id="pool-size-quoted"),
    pytest.param(database({"pool": {"defaultPoolSize": 20.5}}), id="pool-size-fraction"),
    pytest.param(database({"pool": {"defaultPoolSize": True}}), id="pool-size-bool"),
    pytest.param(database({"pool": {"mode": "statement"}}), id="pool-mode-statement"),
    pytest.param(database({"replicas": 2}), id="unknown-field"),
    pytest.param(database({"storage": {"sizee": "1Gi"}}), id="unknown-nested-field"),
    pytest.param(database({"storage": "10Gi"}), id="storage-not-an-object"),
    pytest.param(database({"postgresVersion": 16}), id="postgres-16"),
    pytest.param(database({"postgresVersion": 18}), id="postgres-18"),
    pytest.param(database({"postgresVersion": "17"}), id="postgres-quoted"),
    pytest.param(database({"storage": {"size": "255Mi"}}), id="storage-under-256Mi"),
    pytest.param(database({"storage": {"size": "268435455"}}), id="storage-one-byte-short"),
    pytest.param(database({"storage": {"size": "65Ti"}}), id="storage-over-64Ti"),
    pytest.param(database({"storage": {"size": "10GB"}}), id="quantity-GB"),
    pytest.param(database({"storage": {"size": "10gi"}}), id="quantity-lowercase"),
    pytest.param(database({"storage": {"size": "1e10"}}), id="quantity-exponent"),
    pytest.param(database({"storage": {"size": "10Gi\n"}}), id="quantity-trailing-newline"),
    pytest.param(database({"storage": {"size": " 10Gi"}}), id="quantity-leading-space"),
    pytest.param(database({"storage": {"size": 10737418240}}), id="quantity-unquoted"),
    pytest.param(database({"storage": {"storageClassName": "s" * 254}}), id="class-too-long"),
    pytest.param(database({"resources": {"memory": "127Mi"}}), id="memory-under-128Mi"),
    pytest.param(database({"resources": {"cpu": "0"}}), id="cpu-zero"),
    pytest.param(database({"resources": {"cpu": "0m"}}), id="cpu-zero-millis"),
    pytest.param(database({"resources": {"cpu": "-1"}}), id="cpu-negative"),
    pytest.param(
        database({"postgresql": {"parameters": {"max_connections": "500"}}}),
        id="forbidden-max-connections",
    ),
    pytest.param(
        database({"postgresql": {"parameters": {"work_mem": "4MB", "ssl": "on"}}}),
        id="forbidden-ssl-among-others",
    ),
    pytest.param(
        database({"postgresql": {"parameters": {"Work_Mem": "4MB"}}}), id="parameter-uppercase"
    ),
    pytest.param(database({"postgresql": {"parameters": {"a" * 64: "1"}}}), id="parameter-name-64"),
    pytest.param(
        database({"postgresql": {"parameters": {"work-mem": "4MB"}}}), id="parameter-hyphen"
    ),
    pytest.param(
        database({"postgresql": {"parameters": {"work_mem": 4}}}), id="parameter-not-a-string"
    ),
    pytest.param(
        database({"postgresql": {"parameters": {"search_path": "a\nb"}}}),
        id="parameter-newline",
    ),
    pytest.param(
        database({"postgresql": {"parameters": {"application_name": "x" * 1025}}}),
        id="parameter-value-1025",
    ),
    pytest.param(database({"backups": {"retentionDays": 0}}), id="retention-zero"),
    pytest.param(database({"backups": {"retentionDays": 366}}), id="retention-366"),
    pytest.param(database({"backups": {"enabled": "yes"}}), id="enabled-not-bool"),
    pytest.param(database({"deletionPolicy": "delete"}), id="deletion-lowercase"),
    *[pytest.param(database({"backups": {"s3": s3}}), id=f"s3-{case}") for case, s3 in BAD_S3],
    pytest.param(database(name="My-App"), id="name-uppercase"),
    pytest.param(database(name="1-app"), id="name-leading-digit"),
    pytest.param(database(name="my-app-"), id="name-trailing-hyphen"),
    pytest.param(database(name="my_app"), id="name-underscore"),
    pytest.param(database(name="my-app\n"), id="name-trailing-newline"),
    pytest.param(database(name=NAME_41), id="name-41"),
]

VALID = [
    pytest.param(
        database({"pool": {"defaultPoolSize": 1, "maxClientConnections": 1}}), id="pool-1"
    ),
    pytest.param(
        database({"pool": {"defaultPoolSize": 200, "maxClientConnections": 10_000}}),
        id="pool-max",
    ),
    pytest.param(database({"pool": {"defaultPoolSize": 100}}), id="pool-equals-clients"),
    pytest.param(database({"pool": {"mode": "session"}}), id="session-mode"),
    pytest.param(database({"storage": {"size": "256Mi"}}), id="storage-256Mi"),
    pytest.param(database({"storage": {"size": "268435456"}}), id="storage-in-bytes"),
    pytest.param(database({"storage": {"size": "0.25Gi"}}), id="storage-0.25Gi"),
    pytest.param(database({"storage": {"size": "64Ti"}}), id="storage-64Ti"),
    pytest.param(database({"storage": {"size": "70T"}}), id="storage-70T-under-64Ti"),
    pytest.param(
        database({"storage": {"size": "20Gi", "storageClassName": "s" * 253}}), id="class-253"
    ),
    pytest.param(database({"storage": {"storageClassName": None}}), id="class-null"),
    pytest.param(database({"resources": {"memory": "128Mi", "cpu": "1m"}}), id="resources-min"),
    pytest.param(database({"resources": {"memory": "134217728", "cpu": "0.5"}}), id="plain"),
    pytest.param(
        database(
            {
                "postgresql": {
                    "parameters": {
                        "auto_explain.log_min_duration": "250ms",
                        "a" * 63: "",
                        "application_name": "x" * 1024,
                        "search_path": '"$user", public',
                    }
                }
            }
        ),
        id="parameters-at-limits",
    ),
    pytest.param(database({"backups": {"enabled": False, "retentionDays": 365}}), id="backups-off"),
    pytest.param(database({"backups": {"retentionDays": 1}}), id="retention-1"),
    pytest.param(database({"deletionPolicy": "Delete"}), id="deletion-delete"),
    *[pytest.param(database({"backups": {"s3": s3}}), id=f"s3-{case}") for case, s3 in GOOD_S3],
    pytest.param(database(name="a" * 40), id="name-40"),
    pytest.param(database(name="a"), id="name-1"),
]


def test_s3_patterns_and_limits_are_the_ones_spec_py_uses() -> None:
    expected = {
        "bucket": (spec.S3_BUCKET_PATTERN, spec.S3_BUCKET_MAX_LENGTH),
        "endpoint": (spec.S3_ENDPOINT_PATTERN, spec.S3_ENDPOINT_MAX_LENGTH),
        "region": (spec.S3_REGION_PATTERN, spec.S3_REGION_MAX_LENGTH),
        "prefix": (spec.S3_PREFIX_PATTERN, spec.S3_PREFIX_MAX_LENGTH),
        "credentialsSecret": (spec.DNS_SUBDOMAIN_PATTERN, spec.DNS_SUBDOMAIN_MAX_LENGTH),
    }
    s3 = schema_at(DB, "spec.backups.s3")
    found = {k: (v["pattern"], v["maxLength"]) for k, v in s3["properties"].items()}
    assert found == expected
    assert s3["properties"]["bucket"]["minLength"] == spec.S3_BUCKET_MIN_LENGTH
    assert s3["properties"]["region"]["default"] == spec.S3_DEFAULT_REGION
    assert sorted(s3["required"]) == ["bucket", "credentialsSecret"]


def test_s3_defaults_are_filled_in_alike_and_absent_s3_stays_absent() -> None:
    document = database({"backups": {"s3": S3}})
    assert DB.default(document)["spec"]["backups"]["s3"] == {
        **S3,
        "region": spec.S3_DEFAULT_REGION,
        "prefix": "",
    }
    assert DB.default(document)["spec"] == dump(document)
    assert "s3" not in DB.default(database({"backups": {}}))["spec"]["backups"]
    assert spec.parse_database(database()).spec.backups.s3 is None


@pytest.mark.parametrize(
    ("s3", "field"),
    [
        pytest.param({**S3, "bucket": "My_Bucket"}, "bucket", id="bucket"),
        pytest.param({**S3, "endpoint": "minio:9000"}, "endpoint", id="endpoint"),
        pytest.param({**S3, "prefix": "/x"}, "prefix", id="prefix"),
        pytest.param({**S3, "region": "EU"}, "region", id="region"),
        pytest.param({**S3, "credentialsSecret": "A"}, "credentialsSecret", id="secret"),
    ],
)
def test_a_bad_s3_field_is_named_with_its_fix(s3: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as refused:
        spec.parse_database(database({"backups": {"s3": s3}}))
    [problem] = refused.value.problems
    assert problem.field == f"spec.backups.s3.{field}"
    assert problem.fix not in ("", "correct the value")


@pytest.mark.parametrize("document", INVALID)
def test_invalid_specs_are_refused_by_both(document: dict[str, Any]) -> None:
    assert DB.admit(document) != []
    assert not spec_py_accepts(document)


@pytest.mark.parametrize("document", VALID)
def test_valid_specs_are_accepted_by_both_with_the_same_defaults(document: dict[str, Any]) -> None:
    assert DB.admit(document) == []
    assert DB.default(document)["spec"] == dump(document)


@pytest.mark.parametrize("key", sorted(spec.FORBIDDEN_PARAMETERS))
def test_forbidden_parameters_say_the_same_thing_on_both_sides(key: str) -> None:
    document = database({"postgresql": {"parameters": {key: "x"}}})
    expected = f"{key} cannot be set: {spec.FORBIDDEN_PARAMETERS[key]}"
    assert DB.admit(document) == [f"spec.postgresql.parameters: {expected}"]
    with pytest.raises(InvalidSpec) as refused:
        spec.parse_database(document)
    assert [p.problem for p in refused.value.problems] == [expected]


def test_every_forbidden_parameter_rule_is_one_spec_py_knows() -> None:
    rules = schema_at(DB, "spec.postgresql.parameters")["x-kubernetes-validations"]
    keys = {m.group(1) for r in rules if (m := re.fullmatch(r"!\('(\w+)' in self\)", r["rule"]))}
    assert keys == set(spec.FORBIDDEN_PARAMETERS)


@pytest.mark.parametrize(
    ("document", "crd_verdict", "spec_py_verdict"),
    [
        # The API server replaces null with the default before validating; pydantic refuses it.
        pytest.param(database({"pool": {"defaultPoolSize": None}}), True, False, id="null-field"),
        pytest.param(database({"storage": None}), True, False, id="null-object"),
    ],
)
def test_known_disagreements_stay_known(
    document: dict[str, Any], crd_verdict: bool, spec_py_verdict: bool
) -> None:
    """When spec.py changes, move the case to INVALID or VALID."""
    assert (DB.admit(document) == [], spec_py_accepts(document)) == (crd_verdict, spec_py_verdict)


# --- Property: the same verdict near every boundary ---------------------------------------------

_WRONG_TYPES = st.sampled_from(["20", 20.5, True, [], {}])


def near(inside: list[Any], outside: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly values just inside the bounds; sometimes just outside, or of the wrong type."""
    return st.one_of(
        st.sampled_from(inside),
        st.sampled_from(inside),
        st.sampled_from(inside),
        st.sampled_from(outside),
        _WRONG_TYPES,
    )


def fields(**strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """An object with any subset of the fields, and now and then a field nobody knows."""
    known = st.fixed_dictionaries({}, optional=strategies)
    stray = st.sampled_from([{}] * 15 + [{"unknownField": 1}])
    return st.builds(lambda a, b: {**a, **b}, known, stray)


_POOL_SIZES = near([1, 2, 19, 20, 21, 100, 199, 200], [0, -1, 201]) | st.integers(1, 30)
_CLIENTS = near([1, 2, 20, 99, 100, 9_999, 10_000], [0, 10_001]) | st.integers(1, 30)
_STORAGE = near(
    ["256Mi", "268435456", "0.25Gi", "1Gi", "20Gi", "64Ti", "70368744177664", "70T", "65536Gi"],
    ["255Mi", "268435455", "0.2Gi", "65Ti", "70368744177665", "0", "10GB", "1e9", "1Gi\n", ""],
) | st.from_regex(QUANTITY_PATTERN, fullmatch=True)
_MEMORY = near(
    ["128Mi", "134217728", "0.125Gi", "512Mi", "4Gi", "1T"],
    ["127Mi", "134217727", "0.12Gi", "0", "512MB", "-1Gi", ".5Gi", "1.Gi"],
)
_CPU = near(["1m", "0.001", "0.0001", "500m", "2", "64"], ["0", "0m", "0.0", "-1", "1 m"])
_PARAMETERS = st.dictionaries(
    near(
        ["work_mem", "auto_explain.log_analyze", "a" * 63, "x", "log_min_duration_statement"],
        ["a" * 64, "Work_mem", "1st", "a-b", "", "max_connections", "port", "ssl", "hba_file"],
    ).filter(lambda key: isinstance(key, str)),
    near(["", "64MB", "on", "x" * 1024, "'$user', public"], ["x" * 1025, "a\tb", "\x7f", "\n"]),
    max_size=3,
)
_SPECS = fields(
    postgresVersion=near([17], [16, 18]),
    storage=fields(
        size=_STORAGE,
        storageClassName=near([None, "fast", "", "s" * 253], ["s" * 254, 5]),
    ),
    resources=fields(memory=_MEMORY, cpu=_CPU),
    pool=fields(
        mode=near(["transaction", "session"], ["statement", "Session"]),
        defaultPoolSize=_POOL_SIZES,
        maxClientConnections=_CLIENTS,
    ),
    postgresql=fields(parameters=_PARAMETERS),
    backups=fields(
        enabled=near([True, False], ["true", 1]),
        retentionDays=near([1, 2, 7, 364, 365], [0, 366, -7]),
        s3=fields(
            bucket=near(
                ["abc", "my-backups", "a" * 63, "b.2026.x", "0-0"],
                ["ab", "a" * 64, "a..b", "A-b", "a_b", "-ab", "ab-", "a.-b", "ab\n", ""],
            ),
            endpoint=near(
                ["http://minio:9000", "https://s3.example.com", "http://10.0.0.1:80/"],
                ["minio:9000", "ftp://m", "http://m/p", "http://", "https://-m"],
            ),
            region=near(["us-east-1", "eu-central-1", "x", "r" * 32], ["", "EU", "r" * 33]),
            prefix=near(
                ["", "a", "a/b", "x_y.z-1/q", "p" * 256], ["/a", "a/", "a//b", "a b", "p" * 257]
            ),
            credentialsSecret=near(["k", "my-s3", "s3.keys"], ["", "My", "k_s3", "k" * 254]),
        ),
    ),
    deletionPolicy=near(["Delete", "Retain"], ["delete", ""]),
)
_NAMES = near(["my-app", "a" * 40, "a", "db-1"], [NAME_41, "My-app", "my-app\n", "1a", "a-"])


def test_the_strategy_reaches_both_verdicts() -> None:
    def accepted(spec_: dict[str, Any]) -> bool:
        return spec_py_accepts(database(spec_))

    settings_ = settings(database=None, max_examples=2000)
    assert find(_SPECS.filter(lambda s: len(s) >= 4), accepted, settings=settings_)
    assert find(_SPECS, lambda s: not accepted(s), settings=settings_)


@settings(max_examples=300, deadline=None)
@given(spec_=_SPECS, name=_NAMES.filter(lambda n: isinstance(n, str)))
def test_crd_and_spec_py_give_the_same_verdict(spec_: dict[str, Any], name: str) -> None:
    document = database(spec_, name=name)
    errors = DB.admit(document)
    assert (errors == []) == spec_py_accepts(document), errors
    if not errors:
        assert DB.default(document)["spec"] == dump(document)


# --- Updates: CEL transition rules and spec.check_update agree ----------------------------------


BEFORE = {"storage": {"size": "10Gi", "storageClassName": "fast"}}


def changed(change: dict[str, Any]) -> dict[str, Any]:
    """BEFORE with some fields set (None: removed)."""
    after = copy.deepcopy(BEFORE)
    for section, fields in change.items():
        if not isinstance(fields, dict):
            after[section] = fields
            continue
        target = after.setdefault(section, {})
        for field, value in fields.items():
            if value is None:
                target.pop(field)
            else:
                target[field] = value
    return after


UPDATES = [
    pytest.param({"storage": {"size": "5Gi"}}, "cannot shrink from 10Gi to 5Gi", id="shrink"),
    pytest.param({"storage": {"size": "10239Mi"}}, "cannot shrink", id="shrink-by-1Mi"),
    pytest.param({"storage": {"storageClassName": "slow"}}, "storageClassName", id="new-class"),
    pytest.param({"storage": {"storageClassName": None}}, "storageClassName", id="drop-class"),
    pytest.param({"storage": {"size": "20Gi"}}, None, id="grow"),
    pytest.param({"storage": {"size": "10240Mi"}}, None, id="same-size-other-unit"),
    pytest.param({"pool": {"defaultPoolSize": 50, "maxClientConnections": 400}}, None, id="pool"),
    pytest.param({"postgresql": {"parameters": {"work_mem": "8MB"}}}, None, id="parameters"),
    pytest.param({"backups": {"retentionDays": 30}}, None, id="retention"),
    pytest.param({"deletionPolicy": "Delete"}, None, id="deletion-policy"),
]


@pytest.mark.parametrize(("change", "refusal"), UPDATES)
def test_updates_are_judged_alike(change: dict[str, Any], refusal: str | None) -> None:
    old, new = database(BEFORE), database(changed(change))
    errors = DB.admit(new, old)
    assert DB.admit(new) == []  # each would be fine as a new object: the change is the problem
    old_spec, new_spec = spec.parse_database(old).spec, spec.parse_database(new).spec
    if refusal is None:
        assert errors == []
        spec.check_update(old_spec, new_spec)
    else:
        assert len(errors) == 1
        assert refusal in errors[0]
        with pytest.raises(ForbiddenChange):
            spec.check_update(old_spec, new_spec)


def test_setting_a_storage_class_later_is_refused_by_both() -> None:
    old, new = database({}), database({"storage": {"storageClassName": "fast"}})
    [error] = DB.admit(new, old)
    assert error.startswith("spec.storage.storageClassName: storageClassName cannot change")
    with pytest.raises(ForbiddenChange):
        spec.check_update(spec.parse_database(old).spec, spec.parse_database(new).spec)


def test_changing_postgres_version_is_refused_by_both() -> None:
    # Only 17 exists today, so the old object is one an older release accepted.
    old, new = database({"postgresVersion": 16}), database({})
    [error] = DB.admit(new, old)
    assert error.startswith("spec.postgresVersion: postgresVersion cannot change")
    with pytest.raises(ForbiddenChange, match="postgresVersion"):
        spec.check_update(
            spec.DatabaseSpec.model_construct(postgres_version=16), spec.DatabaseSpec()
        )


def restore(
    backup_: Any = "my-app-manual-1", target: Any = None, *, name: str = "restore-1"
) -> dict[str, Any]:
    spec_: dict[str, Any] = {"backup": backup_}
    if target is not None:
        spec_["target"] = target
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_RESTORE,
        "metadata": {"name": name},
        "spec": spec_,
    }


def from_store(source: dict[str, Any], target: str | None = "my-app") -> dict[str, Any]:
    return {**restore(target=target), "spec": {**restore(target=target)["spec"], "source": source}}


@pytest.mark.parametrize(
    ("document", "valid"),
    [
        pytest.param(restore(), True, id="in-place"),
        pytest.param(restore(target="my-copy"), True, id="as-new"),
        pytest.param(restore("sota-backup-my-app-29012345"), True, id="scheduled-backup"),
        pytest.param(restore(name="a" * 63), True, id="name-63"),
        pytest.param(restore(name="a" * 64), False, id="name-64"),
        pytest.param(restore(name="Restore"), False, id="name-uppercase"),
        pytest.param(restore(""), False, id="backup-empty"),
        pytest.param(restore("b" * 64), False, id="backup-64"),
        pytest.param(restore(target=NAME_41), False, id="target-41"),
        pytest.param(restore(target="1db"), False, id="target-starts-with-digit"),
        pytest.param(restore(target=""), False, id="target-empty"),
        pytest.param({**restore(), "spec": {}}, False, id="no-backup"),
        pytest.param({**restore(), "spec": {"backup": "b", "x": 1}}, False, id="unknown-field"),
        pytest.param(from_store({"database": "gone"}), True, id="source-volume"),
        pytest.param(from_store({"database": "gone", "s3": S3}), True, id="source-s3"),
        pytest.param(from_store({"database": "gone"}, target=None), False, id="source-no-target"),
        pytest.param(from_store({"s3": S3}), False, id="source-no-database"),
        pytest.param(from_store({"database": NAME_41}), False, id="source-database-41"),
        pytest.param(from_store({"database": "g", "s3": {"bucket": "b1"}}), False, id="s3-no-keys"),
        pytest.param(from_store({"database": "g", "x": 1}), False, id="source-unknown-field"),
    ],
)
def test_restores_are_judged_alike(document: dict[str, Any], valid: bool) -> None:
    assert (RESTORE.admit(document) == []) is valid
    assert accepts(spec.parse_restore, document) is valid


def test_a_restores_source_s3_is_the_databases_backups_s3() -> None:
    source_s3, backups_s3 = schema_at(RESTORE, "spec.source.s3"), schema_at(DB, "spec.backups.s3")
    assert source_s3["properties"] == backups_s3["properties"]
    assert source_s3["required"] == backups_s3["required"]
    assert schema_at(RESTORE, "spec.source.database") == schema_at(BACKUP, "spec.database") | {
        "description": schema_at(RESTORE, "spec.source.database")["description"]
    }
    document = from_store({"database": "gone", "s3": S3})
    defaulted = RESTORE.default(document)["spec"]["source"]["s3"]
    parsed = spec.parse_restore(document).spec.source
    assert parsed is not None
    assert parsed.s3 is not None
    assert defaulted == parsed.s3.model_dump(by_alias=True, mode="json", exclude_none=True)


def test_a_source_without_a_target_is_refused_naming_the_field_and_the_fix() -> None:
    document = from_store({"database": "gone"}, target=None)
    [cel] = RESTORE.admit(document)
    assert "spec.target is required with spec.source" in cel
    with pytest.raises(InvalidSpec) as refused:
        spec.parse_restore(document)
    [problem] = refused.value.problems
    assert problem.field == "spec.target"
    assert "gone" in problem.fix
    with pytest.raises(InvalidSpec) as refused:
        spec.parse_restore(from_store({"database": "gone", "s3": {**S3, "prefix": "/x"}}))
    [problem] = refused.value.problems
    assert problem.field == "spec.source.s3.prefix"
    assert problem.fix not in ("", "correct the value")


def test_restore_spec_cannot_change() -> None:
    old = restore()
    assert RESTORE.admit(restore(target="elsewhere"), old) == [
        "spec: spec cannot change; create a new DatabaseRestore instead"
    ]
    assert RESTORE.admit(copy.deepcopy(old), old) == []


def test_snapshot_is_a_deletion_policy_on_both_sides() -> None:
    document = database({"deletionPolicy": "Snapshot"})
    assert DB.admit(document) == []
    assert dump(document)["deletionPolicy"] == "Snapshot"
    assert schema_at(DB, "spec.deletionPolicy")["enum"] == [p.value for p in spec.DeletionPolicy]


def test_backup_spec_cannot_change() -> None:
    old = backup("my-app")
    assert BACKUP.admit(backup("other-app"), old) == [
        "spec: spec cannot change; create a new DatabaseBackup instead"
    ]
    assert BACKUP.admit(copy.deepcopy(old), old) == []


@pytest.mark.parametrize(
    ("document", "valid"),
    [
        pytest.param(backup("my-app"), True, id="valid"),
        pytest.param(backup("a" * 40), True, id="database-40"),
        pytest.param(backup("a" * 41), False, id="database-41"),
        pytest.param(backup(""), False, id="database-empty"),
        pytest.param(backup("My-App"), False, id="database-uppercase"),
        pytest.param(backup(7), False, id="database-not-a-string"),
        pytest.param(backup(name=NAME_41), True, id="name-41"),
        pytest.param(backup(name="sota-backup-" + "a" * 40 + "-29012345"), True, id="cron-run"),
        pytest.param(backup(name="1-manual"), True, id="name-starts-with-digit"),
        pytest.param(backup(name="a" * 64), False, id="name-64"),
        pytest.param(backup(name="manual-"), False, id="name-trailing-hyphen"),
        pytest.param({**backup(), "spec": {}}, False, id="no-database"),
        pytest.param({**backup(), "spec": {"database": "a", "x": 1}}, False, id="unknown-field"),
    ],
)
def test_backups_are_judged_alike(document: dict[str, Any], valid: bool) -> None:
    assert (BACKUP.admit(document) == []) is valid
    assert accepts(spec.parse_backup, document) is valid


def test_backup_without_spec_is_refused_by_both() -> None:
    document = backup()
    del document["spec"]
    assert BACKUP.admit(document) != []
    with pytest.raises(InvalidSpec, match=r"spec\.database"):
        spec.parse_backup(document)


# --- The emulated CEL quantity library behaves like Kubernetes' ---------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        # The examples in k8s.io/apiserver/pkg/cel/library/quantity.go.
        "quantity('200M').compareTo(quantity('0.2G')) == 0",
        "quantity('50M').compareTo(quantity('50Mi')) == -1",
        "quantity('50Mi').compareTo(quantity('50M')) == 1",
        "quantity('150Mi').isGreaterThan(quantity('100Mi'))",
        "!quantity('50Mi').isGreaterThan(quantity('100Mi'))",
        "quantity('50M').isLessThan(quantity('100M'))",
        "quantity('50k').asInteger() == 50000",
        "quantity('50k').isInteger() && !quantity('500m').isInteger()",
        "quantity('50k').sub(20000).asApproximateFloat() == 30000.0",
        "quantity('50k').add(20) == quantity('50020')",
        "quantity('50k').sub(quantity('20k')) == quantity('30k')",
        "quantity('0').sign() == 0 && quantity('1m').sign() == 1",
        "isQuantity('1.3Gi') && isQuantity('10000k') && !isQuantity('200K') && !isQuantity('Mi')",
        "quantity('1Gi') == quantity('1073741824')",
    ],
)
def test_quantity_library(expression: str) -> None:
    result = compile_rule(expression).evaluate({})
    assert isinstance(result, celtypes.BoolType), result
    assert result


def test_a_quantity_that_does_not_parse_fails_its_rules_too() -> None:
    document = database({"storage": {"size": "lots"}, "resources": {"memory": "lots"}})
    errors = DB.admit(document)
    assert errors[0].startswith("spec.resources.memory: 'lots' does not match")
    assert errors[1].startswith("spec.storage.size: 'lots' does not match")
    assert errors[2].startswith("spec.storage.size: must be between 256Mi and 64Ti (rule error:")
    assert errors[3] == (
        "spec.resources.memory: must be at least 128Mi (rule error: quantity: 'lots' is not a "
        "quantity such as 512Mi, 10Gi or 500m)"
    )
    assert len(errors) == 4


# --- Status and printer columns -----------------------------------------------------------------

STATUS = {
    "phase": "Ready",
    "observedGeneration": 3,
    "secretName": "sota-db-my-app-app",
    "lastBackup": {"name": "my-app-20261125", "completedAt": "2026-11-25T03:07:00Z", "size": 4096},
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "AllReady",
            "message": "PostgreSQL and PgBouncer are ready",
            "lastTransitionTime": "2026-11-25T03:00:00Z",
            "observedGeneration": 3,
        }
    ],
    "kopf": {"progress": {"reconcile": {"retries": 1, "anything": ["kopf", "owns", "this"]}}},
}


def test_a_realistic_status_is_valid() -> None:
    assert DB.admit({**database(), "status": STATUS}) == []
    backup_status = {
        "phase": "Succeeded",
        "startedAt": "2026-11-25T03:07:00Z",
        "completedAt": "2026-11-25T03:07:04Z",
        "size": 4096,
        "sha256": "0" * 64,
        "location": "/var/lib/sotadb/backups/my-app/my-app-20261125.sql.gz",
        "verification": "Passed",
        "verifiedAt": "2026-11-25T03:08:00Z",
        "message": "restored into a scratch database: 12 tables",
        "conditions": [],
        "kopf": {"dummy": "2026"},
    }
    assert BACKUP.admit({**backup(), "status": backup_status}) == []
    restore_status = {
        "phase": "Succeeded",
        "target": "my-copy",
        "job": "sota-restore-r1",
        "startedAt": "2026-11-25T04:00:00Z",
        "completedAt": "2026-11-25T04:01:00Z",
        "message": "restored backup b1 into my-copy",
        "conditions": [
            {
                "type": "Complete",
                "status": "True",
                "reason": "Restored",
                "message": "restored",
                "lastTransitionTime": "2026-11-25T04:01:00Z",
            }
        ],
    }
    assert RESTORE.admit({**restore(), "status": restore_status}) == []
    assert RESTORE.admit({**restore(), "status": {"phase": "Running"}}) != []


@pytest.mark.parametrize(
    "status",
    [
        pytest.param({"phase": "Running"}, id="unknown-phase"),
        pytest.param({"secretName": 5}, id="secret-not-a-string"),
        pytest.param({"conditions": [{"type": "Ready", "status": "Yes"}]}, id="bad-condition"),
        pytest.param({"handlerResult": {"x": 1}}, id="unknown-field"),
    ],
)
def test_a_wrong_status_is_refused(status: dict[str, Any]) -> None:
    assert DB.admit({**database(), "status": status}) != []


def columns(crd: Crd) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in crd.version["additionalPrinterColumns"]}


def test_printer_columns_are_the_documented_ones() -> None:
    assert list(columns(DB)) == ["Phase", "Ready", "Secret", "Last Backup", "Age"]
    assert list(columns(BACKUP)) == ["Database", "Phase", "Size", "Verified", "Age"]
    assert list(columns(RESTORE)) == ["Backup", "Phase", "Target", "Age"]


_STEP = re.compile(r"\.([A-Za-z]+)|\[\?\(@\.([A-Za-z]+)==\"[^\"]*\"\)\]")


def resolve_json_path(crd: Crd, path: str) -> dict[str, Any]:
    """The schema node a printer column's simple JSONPath reads; KeyError if there is none."""
    if path == ".metadata.creationTimestamp":
        return {"type": "string", "format": "date-time"}
    node: dict[str, Any] = dict(crd.schema)
    position = 0
    while position < len(path):
        step = _STEP.match(path, position)
        assert step is not None, f"unsupported JSONPath {path!r} at {position}"
        if step.group(1):
            node = node["properties"][step.group(1)]
        else:
            node = node["items"]
            assert step.group(2) in node["properties"]
        position = step.end()
    return node


@pytest.mark.parametrize("crd", [DB, BACKUP, RESTORE], ids=["database", "backup", "restore"])
def test_printer_columns_read_fields_that_exist(crd: Crd) -> None:
    for name, column in columns(crd).items():
        node = resolve_json_path(crd, column["jsonPath"])
        expected = {"date": ("string", "date-time"), "integer": ("integer", "int64")}
        kind, fmt = expected.get(column["type"], (column["type"], None))
        assert (node["type"], node.get("format") if fmt else None) == (kind, fmt), name


def test_ready_column_reads_the_ready_condition() -> None:
    assert columns(DB)["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    with pytest.raises(KeyError):
        resolve_json_path(DB, ".status.phases")
