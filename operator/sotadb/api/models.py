"""What the API sends, as pydantic models (they are the OpenAPI document's schemas).

camelCase on the wire. No model has a field that could carry a password: the URLs are built
with `MASK` in the password's place (`databaseUrl: postgresql://app_x:********@…`), from the
slug alone, never by editing a real URL.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from sotadb import credentials as creds
from sotadb import names
from sotadb.api.errors import ErrorCode
from sotadb.spec import DatabaseSpec

MASK: Final = "********"


class _Wire(BaseModel):
    model_config = ConfigDict(
        frozen=True, alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


class Phase(StrEnum):
    READY = "Ready"  # a real query through PgBouncer answered
    PROVISIONING = "Provisioning"  # containers exist but do not answer (yet)
    STOPPED = "Stopped"  # state kept, no containers (`sotadb down` without --purge)


class Hosts(_Wire):
    pooler: str = Field(description="PgBouncer: the host in DATABASE_URL.")
    postgres: str = Field(description="PostgreSQL itself: the host in DIRECT_DATABASE_URL.")
    network: str = Field(description="The Docker network on which these names resolve.")


class Pool(_Wire):
    mode: str
    default_pool_size: int
    max_client_connections: int


class BackupPolicy(_Wire):
    enabled: bool
    retention_days: int


class DatabaseStatus(_Wire):
    project: str
    slug: str
    phase: Phase
    postgres_version: int
    database_url: str = Field(description=f"DATABASE_URL with the password shown as {MASK}.")
    direct_database_url: str = Field(
        description=f"DIRECT_DATABASE_URL (bypasses PgBouncer), password shown as {MASK}."
    )
    user: str
    database: str
    port: int
    sslmode: str
    hosts: Hosts
    pool: Pool
    backups: BackupPolicy

    @classmethod
    def of(cls, *, project: str, slug: str, phase: Phase, spec: DatabaseSpec) -> DatabaseStatus:
        return cls(
            project=project,
            slug=slug,
            phase=phase,
            postgres_version=spec.postgres_version,
            database_url=masked_url(creds.database_url(slug, MASK)),
            direct_database_url=masked_url(creds.direct_database_url(slug, MASK)),
            user=names.role_name(slug),
            database=names.database_name(slug),
            port=names.POOLER_PORT,
            sslmode=creds.DEFAULT_SSLMODE,
            hosts=Hosts(
                pooler=names.pooler_name(slug),
                postgres=names.postgres_name(slug),
                network=names.network_name(slug),
            ),
            pool=Pool(
                mode=spec.pool.mode.value,
                default_pool_size=spec.pool.default_pool_size,
                max_client_connections=spec.pool.max_client_connections,
            ),
            backups=BackupPolicy(
                enabled=spec.backups.enabled, retention_days=spec.backups.retention_days
            ),
        )


def masked_url(url: str) -> str:
    """`connection_url` percent-encodes the mask (`*` → `%2A`); show it as people expect."""
    return url.replace(quote(MASK, safe=""), MASK)


class Backup(_Wire):
    name: str
    phase: str = Field(description="Pending, Running, Succeeded or Failed.")
    started_at: datetime
    completed_at: datetime | None = None
    size: int | None = Field(default=None, description="Bytes of the compressed dump.")
    sha256: str | None = None
    format: str = Field(description="e.g. plain+gzip: a plain SQL dump, gzip-compressed.")
    verification: str | None = Field(
        default=None, description="Passed or Failed once a restore drill has judged it."
    )
    verified_at: datetime | None = None
    message: str | None = None


class BackupList(_Wire):
    project: str
    slug: str
    backups: list[Backup] = Field(description="Oldest first.")


class ErrorDetail(_Wire):
    code: ErrorCode
    message: str
    field: str | None = Field(default=None, description="The request field to blame, if one.")


class ErrorResponse(_Wire):
    error: ErrorDetail
