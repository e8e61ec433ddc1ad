"""Every name, label key, port and image the project derives: defined once, imported everywhere.

Pure: no I/O. Tests pin each value, and prove that the longest slug still fits every
Kubernetes name limit.
"""

from __future__ import annotations

import re
from typing import Final

GROUP: Final = "sota.io"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND_DATABASE: Final = "ManagedDatabase"
KIND_BACKUP: Final = "DatabaseBackup"
PLURAL_DATABASE: Final = "manageddatabases"
PLURAL_BACKUP: Final = "databasebackups"

# The CronJob name `sota-backup-{slug}` may be at most 52 characters (its Jobs append 11),
# which caps the slug at 40.
SLUG_MAX_LENGTH: Final = 40
# DNS-1035 label: starts with a letter, so every derived name is a valid Service name too.
SLUG_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
SLUG_RE: Final = re.compile(SLUG_PATTERN)

# Label and annotation keys (the documented vocabulary of every object we own).
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
MANAGED_BY: Final = "sotadb"
APP_NAME: Final = "sotadb"
# App pods carrying `db.sota.io/{slug}: direct` may reach PostgreSQL itself (DIRECT_DATABASE_URL).
DIRECT_ACCESS_LABEL_PREFIX: Final = "db.sota.io/"
DIRECT_ACCESS_LABEL_VALUE: Final = "direct"
ANNOTATION_CONFIG_HASH: Final = "sota.io/config-hash"
ANNOTATION_SPEC_HASH: Final = "sota.io/spec-hash"

COMPONENT_POSTGRES: Final = "postgres"
COMPONENT_POOLER: Final = "pgbouncer"
COMPONENT_BACKUP: Final = "backup"
COMPONENT_CREDENTIALS: Final = "credentials"

POSTGRES_PORT: Final = 5432
POOLER_PORT: Final = 5432
POSTGRES_MAJOR: Final = 17

POSTGRES_IMAGE: Final = "sotadb/postgres:17"
POOLER_IMAGE: Final = "sotadb/pgbouncer:1.24"
OPERATOR_IMAGE: Final = "sotadb/operator:0.1.0"
POSTGRES_UID: Final = 999

# Paths inside the images (operator/images/*/Dockerfile create them).
POSTGRES_CONFIG_DIR: Final = "/etc/sotadb/postgres"
POSTGRES_DATA_MOUNT: Final = "/var/lib/postgresql/data"
POSTGRES_PGDATA: Final = "/var/lib/postgresql/data/pgdata"
POSTGRES_SOCKET_DIR: Final = "/var/run/postgresql"
POOLER_CONFIG_DIR: Final = "/etc/sotadb/pgbouncer"
POOLER_AUTH_DIR: Final = "/etc/sotadb/pgbouncer-auth"
BACKUP_DIR: Final = "/var/lib/sotadb/backups"

# Name of the PVC template; the StatefulSet's claim becomes `data-sota-db-{slug}-0`.
DATA_VOLUME: Final = "data"


def postgres_name(slug: str) -> str:
    """StatefulSet, its headless Service, and the Docker container: the seed's `sota-db-{slug}`."""
    return f"sota-db-{slug}"


def pooler_name(slug: str) -> str:
    """Deployment, Service and Docker container (and the URL's host): `sota-pgbouncer-{slug}`."""
    return f"sota-pgbouncer-{slug}"


def backup_cronjob_name(slug: str) -> str:
    return f"sota-backup-{slug}"


def backups_volume_name(slug: str) -> str:
    return f"sota-backups-{slug}"


def app_secret_name(slug: str) -> str:
    """The Secret apps consume with envFrom: DATABASE_URL and friends."""
    return f"sota-db-{slug}-app"


def auth_secret_name(slug: str) -> str:
    """Internal Secret: the SCRAM verifier for PostgreSQL and PgBouncer's userlist.txt."""
    return f"sota-db-{slug}-auth"


def postgres_config_name(slug: str) -> str:
    return f"sota-db-{slug}-config"


def pooler_config_name(slug: str) -> str:
    return f"sota-pgbouncer-{slug}-config"


def network_name(slug: str) -> str:
    """Docker network private to one database and its apps."""
    return f"sota-net-{slug}"


def data_volume_name(slug: str) -> str:
    """Docker named volume holding PGDATA (the Kubernetes PVC's counterpart)."""
    return f"sota-data-{slug}"


def data_claim_name(slug: str) -> str:
    """The PVC the StatefulSet's volumeClaimTemplate creates for its only replica."""
    return f"{DATA_VOLUME}-{postgres_name(slug)}-0"


def role_name(slug: str) -> str:
    """The app's PostgreSQL role; contains hyphens, so SQL must quote it."""
    return f"app_{slug}"


def database_name(slug: str) -> str:
    return slug


def direct_access_label(slug: str) -> str:
    return f"{DIRECT_ACCESS_LABEL_PREFIX}{slug}"


def common_labels(slug: str, component: str) -> dict[str, str]:
    return {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: slug,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def selector_labels(slug: str, component: str) -> dict[str, str]:
    """The stable subset used in selectors (selectors are immutable on workloads)."""
    return {LABEL_INSTANCE: slug, LABEL_COMPONENT: component, LABEL_MANAGED_BY: MANAGED_BY}
