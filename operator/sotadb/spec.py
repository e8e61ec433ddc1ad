"""ManagedDatabase and DatabaseBackup: parse, default and validate into immutable values. Pure.

The defaults here and in crds/*.yaml must agree (tests/unit/test_crd_schema.py proves it).
Errors are `InvalidSpec`, each problem naming the field and the fix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Final, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from sotadb import names
from sotadb.errors import FieldProblem, ForbiddenChange, InvalidSpec
from sotadb.quantity import QUANTITY_PATTERN, parse_quantity

DEFAULT_NAMESPACE: Final = "default"
DEFAULT_POOL_SIZE: Final = 20
DEFAULT_MAX_CLIENT_CONNECTIONS: Final = 100
MAX_POOL_SIZE: Final = 200
MAX_CLIENT_CONNECTIONS: Final = 10_000
DEFAULT_STORAGE: Final = "1Gi"
MIN_STORAGE: Final = "256Mi"
MAX_STORAGE: Final = "64Ti"
DEFAULT_MEMORY: Final = "512Mi"
MIN_MEMORY: Final = "128Mi"
DEFAULT_CPU: Final = "500m"
DEFAULT_RETENTION_DAYS: Final = 7
MAX_RETENTION_DAYS: Final = 365
PARAMETER_NAME_PATTERN: Final = r"^[a-z][a-z0-9_.]*$"
# The CRD's CEL rules over parameters need a bound on their number (API server cost limits).
MAX_PARAMETERS: Final = 128
NAMESPACE_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # DNS-1123 label
# spec.backups.s3 (backup/stores.py checks a location against the same rules). Bucket: S3's
# DNS-compatible names (labels of letters, digits, '-'; no '..', '.-' or '-.').
S3_BUCKET_PATTERN: Final = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"
S3_BUCKET_MIN_LENGTH: Final = 3
S3_BUCKET_MAX_LENGTH: Final = 63
S3_PREFIX_PATTERN: Final = r"^([A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*)?$"  # no leading/trailing "/"
S3_PREFIX_MAX_LENGTH: Final = 256
S3_ENDPOINT_PATTERN: Final = r"^https?://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?/?$"
S3_ENDPOINT_MAX_LENGTH: Final = 270
S3_REGION_PATTERN: Final = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
S3_REGION_MAX_LENGTH: Final = 32
S3_DEFAULT_REGION: Final = "us-east-1"
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_SUBDOMAIN_MAX_LENGTH: Final = 253

# Parameters the user may not set, and what to do instead. They wire the server into its
# container (paths, listeners, auth) or are derived from other fields.
FORBIDDEN_PARAMETERS: Final[Mapping[str, str]] = {
    "listen_addresses": "PostgreSQL must listen where PgBouncer and the probes expect it",
    "port": "the port is fixed at 5432 inside the pod",
    "unix_socket_directories": "backups and probes use the socket at a fixed path",
    "data_directory": "the data directory lives on the managed volume",
    "config_file": "the configuration is rendered by sotadb",
    "hba_file": "pg_hba.conf is rendered by sotadb (SCRAM only)",
    "ident_file": "ident authentication is not used",
    "password_encryption": "SCRAM-SHA-256 is required for PgBouncer's SCRAM passthrough",
    "max_connections": "set spec.pool.defaultPoolSize; max_connections is derived from it",
    "shared_buffers": "set spec.resources.memory; shared_buffers is a quarter of it",
    "ssl": "TLS is not configurable yet",
    "logging_collector": "the server logs to stderr, where kubectl logs and docker logs read it",
    "log_destination": "the server logs to stderr, where kubectl logs and docker logs read it",
}

Slug = Annotated[
    str,
    StringConstraints(min_length=1, max_length=names.SLUG_MAX_LENGTH, pattern=names.SLUG_PATTERN),
]
Quantity = Annotated[str, StringConstraints(max_length=64, pattern=QUANTITY_PATTERN)]
ParameterName = Annotated[str, StringConstraints(max_length=63, pattern=PARAMETER_NAME_PATTERN)]
ParameterValue = Annotated[str, StringConstraints(max_length=1024, pattern=r"^[^\x00-\x1f\x7f]*$")]
# DatabaseBackup and DatabaseRestore names: a DNS-1123 label (a CronJob's Job name fits).
ObjectName = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=names.OBJECT_NAME_MAX_LENGTH, pattern=names.OBJECT_NAME_PATTERN
    ),
]


class _Model(BaseModel):
    """Immutable, strict (no "20" for 20), camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        frozen=True,
        strict=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        validate_default=True,
    )


class PoolMode(StrEnum):
    TRANSACTION = "transaction"
    SESSION = "session"


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    RETAIN = "Retain"
    SNAPSHOT = "Snapshot"  # a final DatabaseBackup first, then as Delete but keep the backups


class StorageSpec(_Model):
    size: Quantity = Field(default=DEFAULT_STORAGE, description="Size of the data volume.")
    storage_class_name: str | None = Field(default=None, max_length=253)

    @field_validator("size")
    @classmethod
    def _size_within_bounds(cls, size: str) -> str:
        if not parse_quantity(MIN_STORAGE) <= parse_quantity(size) <= parse_quantity(MAX_STORAGE):
            raise ValueError(f"must be between {MIN_STORAGE} and {MAX_STORAGE}")
        return size


class ResourcesSpec(_Model):
    memory: Quantity = Field(default=DEFAULT_MEMORY)
    cpu: Quantity = Field(default=DEFAULT_CPU)

    @field_validator("memory")
    @classmethod
    def _enough_memory(cls, memory: str) -> str:
        if parse_quantity(memory) < parse_quantity(MIN_MEMORY):
            raise ValueError(f"must be at least {MIN_MEMORY}")
        return memory

    @field_validator("cpu")
    @classmethod
    def _some_cpu(cls, cpu: str) -> str:
        if parse_quantity(cpu) <= 0:
            raise ValueError("must be more than 0")
        return cpu


class PoolSpec(_Model):
    mode: Annotated[PoolMode, Field(strict=False)] = PoolMode.TRANSACTION
    default_pool_size: int = Field(default=DEFAULT_POOL_SIZE, ge=1, le=MAX_POOL_SIZE)
    max_client_connections: int = Field(
        default=DEFAULT_MAX_CLIENT_CONNECTIONS, ge=1, le=MAX_CLIENT_CONNECTIONS
    )

    @model_validator(mode="after")
    def _pool_fits_clients(self) -> Self:
        if self.default_pool_size > self.max_client_connections:
            raise ValueError("defaultPoolSize must not exceed maxClientConnections")
        return self


class PostgresqlSpec(_Model):
    parameters: dict[ParameterName, ParameterValue] = Field(
        default_factory=dict, max_length=MAX_PARAMETERS
    )

    @field_validator("parameters")
    @classmethod
    def _no_forbidden_parameters(cls, parameters: dict[str, str]) -> dict[str, str]:
        for key in sorted(parameters):
            if key in FORBIDDEN_PARAMETERS:
                raise ValueError(f"{key} cannot be set: {FORBIDDEN_PARAMETERS[key]}")
        return parameters


class S3Spec(_Model):
    """Backups in an S3 bucket instead of the backups volume. The keys live in a Secret."""

    bucket: Annotated[
        str,
        StringConstraints(
            min_length=S3_BUCKET_MIN_LENGTH,
            max_length=S3_BUCKET_MAX_LENGTH,
            pattern=S3_BUCKET_PATTERN,
        ),
    ]
    endpoint: (
        Annotated[
            str, StringConstraints(max_length=S3_ENDPOINT_MAX_LENGTH, pattern=S3_ENDPOINT_PATTERN)
        ]
        | None
    ) = None
    region: Annotated[
        str,
        StringConstraints(min_length=1, max_length=S3_REGION_MAX_LENGTH, pattern=S3_REGION_PATTERN),
    ] = S3_DEFAULT_REGION
    prefix: Annotated[
        str, StringConstraints(max_length=S3_PREFIX_MAX_LENGTH, pattern=S3_PREFIX_PATTERN)
    ] = ""
    credentials_secret: Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=DNS_SUBDOMAIN_MAX_LENGTH, pattern=DNS_SUBDOMAIN_PATTERN
        ),
    ]

    @property
    def location(self) -> str:
        """`s3://bucket[/prefix]`, a Job's SOTADB_BACKUP_LOCATION (no endpoint, no keys)."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


class BackupsSpec(_Model):
    enabled: bool = True
    retention_days: int = Field(default=DEFAULT_RETENTION_DAYS, ge=1, le=MAX_RETENTION_DAYS)
    s3: S3Spec | None = None  # absent: the backups volume


class DatabaseSpec(_Model):
    postgres_version: int = Field(default=names.POSTGRES_MAJOR, ge=17, le=17)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    pool: PoolSpec = Field(default_factory=PoolSpec)
    postgresql: PostgresqlSpec = Field(default_factory=PostgresqlSpec)
    backups: BackupsSpec = Field(default_factory=BackupsSpec)
    deletion_policy: Annotated[DeletionPolicy, Field(strict=False)] = DeletionPolicy.RETAIN


class BackupSpec(_Model):
    database: Slug


class RestoreSource(_Model):
    """Where the backups of a database that may no longer exist are kept, read directly (its
    DatabaseBackup objects may be gone with it)."""

    database: Slug
    s3: S3Spec | None = None  # absent: its backups volume, kept by deletionPolicy Retain/Snapshot


class RestoreSpec(_Model):
    # A DatabaseBackup's name; with `source`, the name of a backup in that store.
    backup: ObjectName
    # Absent, or the backup's own database: in place. Otherwise a new ManagedDatabase.
    target: Slug | None = None
    source: RestoreSource | None = None  # requires `target` (parse_restore checks it)


class _Metadata(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")
    name: Slug
    namespace: str = Field(default=DEFAULT_NAMESPACE, max_length=63, pattern=NAMESPACE_PATTERN)
    uid: str | None = None


class _ObjectMetadata(_Metadata):
    name: ObjectName


class ManagedDatabase(BaseModel):
    """A parsed ManagedDatabase: who it is and what it wants. Everything else derives from it."""

    model_config = ConfigDict(frozen=True)
    name: str
    namespace: str
    uid: str | None
    spec: DatabaseSpec

    @property
    def slug(self) -> str:
        return self.name

    @property
    def backup_minute_of_day(self) -> int:
        """A stable minute in 00:00–05:59 UTC, spread by namespace and slug so that a thousand
        databases do not dump in the same second."""
        digest = hashlib.sha256(f"{self.namespace}/{self.name}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % (6 * 60)

    @property
    def backup_schedule(self) -> str:
        minute = self.backup_minute_of_day
        return f"{minute % 60} {minute // 60} * * *"


class DatabaseBackup(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    namespace: str
    uid: str | None
    spec: BackupSpec


class DatabaseRestore(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    namespace: str
    uid: str | None
    spec: RestoreSpec


def parse_database(document: Mapping[str, Any]) -> ManagedDatabase:
    """Parse a ManagedDatabase document (as applied by a user, or as read from the API)."""
    metadata, spec = _parse_document(document, names.KIND_DATABASE, DatabaseSpec)
    return ManagedDatabase(
        name=metadata.name, namespace=metadata.namespace, uid=metadata.uid, spec=spec
    )


def parse_backup(document: Mapping[str, Any]) -> DatabaseBackup:
    metadata, spec = _parse_document(document, names.KIND_BACKUP, BackupSpec, _ObjectMetadata)
    return DatabaseBackup(
        name=metadata.name, namespace=metadata.namespace, uid=metadata.uid, spec=spec
    )


def parse_restore(document: Mapping[str, Any]) -> DatabaseRestore:
    metadata, spec = _parse_document(document, names.KIND_RESTORE, RestoreSpec, _ObjectMetadata)
    if spec.source is not None and spec.target is None:
        raise InvalidSpec(
            [
                FieldProblem(
                    "spec.target",
                    "is required with spec.source (a restore from a store makes a new database)",
                    "name the ManagedDatabase to create; it must not exist (it may be "
                    f"{spec.source.database} again, if that one is gone)",
                )
            ]
        )
    return DatabaseRestore(
        name=metadata.name, namespace=metadata.namespace, uid=metadata.uid, spec=spec
    )


def check_update(old: DatabaseSpec, new: DatabaseSpec) -> None:
    """Refuse changes the running database cannot take (the CRD's CEL rules say the same)."""
    problems: list[FieldProblem] = []
    if new.postgres_version != old.postgres_version:
        problems.append(
            FieldProblem(
                "spec.postgresVersion",
                f"cannot change from {old.postgres_version} to {new.postgres_version}",
                "create a new ManagedDatabase and restore a backup into it",
            )
        )
    if parse_quantity(new.storage.size) < parse_quantity(old.storage.size):
        problems.append(
            FieldProblem(
                "spec.storage.size",
                f"cannot shrink from {old.storage.size} to {new.storage.size}",
                f"keep it at {old.storage.size} or larger",
            )
        )
    if new.storage.storage_class_name != old.storage.storage_class_name:
        previous = old.storage.storage_class_name
        problems.append(
            FieldProblem(
                "spec.storage.storageClassName",
                "cannot change once the volume exists",
                "remove it (the volume has the cluster's default class)"
                if previous is None
                else f"set it back to {previous!r}",
            )
        )
    if problems:
        raise ForbiddenChange(problems)


_M = TypeVar("_M", bound=BaseModel)


def _parse_document(
    document: Mapping[str, Any],
    kind: str,
    spec_model: type[_M],
    metadata_model: type[_Metadata] = _Metadata,
) -> tuple[_Metadata, _M]:
    """Validate the whole document and report every problem at once, not just the first."""
    if not isinstance(document, Mapping):
        raise InvalidSpec([FieldProblem("(document)", "is not a mapping", f"write a {kind}")])
    problems: list[FieldProblem] = []
    if document.get("apiVersion") != names.API_VERSION:
        problems.append(
            FieldProblem(
                "apiVersion",
                f"is {document.get('apiVersion')!r}",
                f"set apiVersion: {names.API_VERSION}",
            )
        )
    if document.get("kind") != kind:
        problems.append(FieldProblem("kind", f"is {document.get('kind')!r}", f"set kind: {kind}"))
    hints = _OBJECT_HINTS if metadata_model is _ObjectMetadata else None
    metadata = _collect(metadata_model, document.get("metadata") or {}, "metadata", problems, hints)
    spec = _collect(spec_model, document.get("spec") or {}, "spec", problems)
    if problems or metadata is None or spec is None:
        raise InvalidSpec(problems)
    return metadata, spec


def _collect(
    model: type[_M],
    data: Any,
    root: str,
    problems: list[FieldProblem],
    hints: Mapping[str, str] | None = None,
) -> _M | None:
    try:
        return model.model_validate(data, by_alias=True)
    except ValidationError as e:
        problems.extend(_problem(root, error, hints) for error in e.errors())
        return None


_FIELD_HINTS: Final[Mapping[str, str]] = {
    "metadata.name": (
        f"use 1-{names.SLUG_MAX_LENGTH} lowercase letters, digits and hyphens, "
        "starting with a letter and ending with a letter or digit (e.g. my-app)"
    ),
    "metadata.namespace": "use a valid namespace name (lowercase letters, digits, hyphens)",
    "spec.database": "name an existing ManagedDatabase in this namespace (e.g. my-app)",
    "spec.backup": "name a Succeeded DatabaseBackup in this namespace (kubectl get dbb)",
    "spec.target": (
        "name the ManagedDatabase to restore into (a new name creates it), or leave it out "
        "to restore in place"
    ),
    "spec.source.database": "name the database whose backups these are (e.g. my-app)",
    "spec.postgresVersion": (
        f"leave it out or write {names.POSTGRES_MAJOR}, the PostgreSQL major version sotadb runs"
    ),
    "spec.storage.size": f"write a quantity between {MIN_STORAGE} and {MAX_STORAGE}, e.g. 10Gi",
    "spec.backups.s3.bucket": (
        f"use {S3_BUCKET_MIN_LENGTH}-{S3_BUCKET_MAX_LENGTH} lowercase letters, digits, '-' "
        "and '.', starting and ending with a letter or digit (e.g. my-backups)"
    ),
    "spec.backups.s3.endpoint": "write an http(s)://host[:port] URL, e.g. http://minio:9000",
    "spec.backups.s3.region": "write a region name, e.g. eu-central-1",
    "spec.backups.s3.prefix": (
        "write path segments of letters, digits, '.', '_' and '-' separated by '/', with no "
        "leading or trailing '/', e.g. backups/prod"
    ),
    "spec.backups.s3.credentialsSecret": (
        "name a Secret in this namespace with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    ),
    "spec.resources.memory": f"write a quantity of at least {MIN_MEMORY}, e.g. 1Gi",
    "spec.resources.cpu": "write a positive quantity, e.g. 500m or 2",
}


_OBJECT_HINTS: Final[Mapping[str, str]] = {
    "metadata.name": (
        f"use 1-{names.OBJECT_NAME_MAX_LENGTH} lowercase letters, digits and hyphens, "
        "starting and ending with a letter or digit (e.g. my-app-manual-1)"
    ),
}


def _problem(
    root: str, error: Mapping[str, Any], hints: Mapping[str, str] | None = None
) -> FieldProblem:
    # Pydantic marks a bad mapping key with a trailing "[key]"; the key itself names the field.
    is_key = error["loc"][-1:] == ("[key]",)
    path = ".".join([root, *(str(part) for part in error["loc"] if part != "[key]")])
    if hints is not None and path in hints:
        return FieldProblem(path, _describe(error), hints[path])
    kind = error["type"]
    context = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return FieldProblem(path, "is not a known field", "remove it (check its spelling)")
    if kind == "missing":
        return FieldProblem(path, "is required", "add it")
    if kind == "value_error":
        return FieldProblem(path, str(context.get("error", error["msg"])), _fix_for(path))
    if _hint_key(path) in _FIELD_HINTS:
        return FieldProblem(path, _describe(error), _FIELD_HINTS[_hint_key(path)])
    if kind in ("greater_than_equal", "less_than_equal"):
        bound = "at least" if kind == "greater_than_equal" else "at most"
        limit = context.get("ge", context.get("le"))
        return FieldProblem(path, _describe(error), f"use a whole number {bound} {limit}")
    if kind in ("int_type", "int_parsing"):
        return FieldProblem(path, "must be a whole number", "write it without quotes, e.g. 20")
    if kind in ("bool_type", "bool_parsing"):
        return FieldProblem(path, "must be true or false", "write true or false without quotes")
    if kind in ("string_type",):
        return FieldProblem(path, "must be a string", 'quote the value, e.g. "200"')
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return FieldProblem(path, "must be a mapping", "write it as key: value pairs")
    if kind == "enum":
        return FieldProblem(path, _describe(error), f"use one of {context.get('expected')}")
    if kind == "invalid_key":
        return FieldProblem(path, "is not a known field", "remove it (field names are strings)")
    if path.startswith("spec.postgresql.parameters.") and is_key:
        return FieldProblem(
            path,
            "is not a PostgreSQL parameter name",
            "use a lowercase name of at most 63 characters, like work_mem",
        )
    if path.startswith("spec.postgresql.parameters.") and kind == "string_pattern_mismatch":
        return FieldProblem(
            path, "holds a control character (a newline?)", "write the value on one line"
        )
    if kind == "string_too_long":
        limit = context.get("max_length")
        return FieldProblem(path, _describe(error), f"shorten it to at most {limit} characters")
    return FieldProblem(path, _describe(error), "correct the value")


def _hint_key(path: str) -> str:
    """A restore's spec.source.s3 is spec.backups.s3 again: the same fields, the same fixes."""
    return path.replace("spec.source.s3.", "spec.backups.s3.", 1)


def _describe(error: Mapping[str, Any]) -> str:
    if error["type"] == "string_pattern_mismatch":
        return f"{error['input']!r} is not allowed here"
    if error["type"] == "string_too_long":
        return f"is longer than {error.get('ctx', {}).get('max_length')} characters"
    message = str(error["msg"])
    return message[0].lower() + message[1:] if message else "is invalid"


def _fix_for(path: str) -> str:
    if path == "spec.pool":
        return "make maxClientConnections at least defaultPoolSize"
    if path == "spec.postgresql.parameters":
        return "remove that parameter; the message says what to set instead"
    return _FIELD_HINTS.get(path, "correct the value")
