"""Every name, label key, port and image the project derives: defined once, imported everywhere.

Pure: no I/O. Tests pin each value, and prove that the longest slug still fits every
Kubernetes name limit.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

GROUP: Final = "sota.io"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND_DATABASE: Final = "ManagedDatabase"
KIND_BACKUP: Final = "DatabaseBackup"
PLURAL_DATABASE: Final = "manageddatabases"
PLURAL_BACKUP: Final = "databasebackups"
KIND_RESTORE: Final = "DatabaseRestore"
PLURAL_RESTORE: Final = "databaserestores"

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
# Backup, restore and forget Jobs (and their pods) say what they run and for which object.
LABEL_BACKUP: Final = "sota.io/backup"
LABEL_RESTORE: Final = "sota.io/restore"
LABEL_JOB: Final = "sota.io/job"
JOB_BACKUP: Final = "backup"
JOB_RESTORE: Final = "restore"
JOB_FORGET: Final = "forget"
# Set by Kubernetes on every pod of a Job (1.27+): how a CronJob's pod learns its backup name.
LABEL_JOB_NAME: Final = "batch.kubernetes.io/job-name"
# On a DatabaseBackup the CronJob's run made (the operator creates it when it sees the Job).
LABEL_SCHEDULED: Final = "sota.io/scheduled"
# On a ManagedDatabase a DatabaseRestore created: the restore's name (so a retry knows its own).
ANNOTATION_RESTORED_BY: Final = "sota.io/restored-by"
# On a DatabaseBackup whose file retention already removed: its deletion needs no forget Job.
ANNOTATION_FORGOTTEN: Final = "sota.io/forgotten"
# On a CronJob's run (a Job) once the operator created its DatabaseBackup: a backup deleted
# later is never created again from the Job (a replayed event, an operator restart).
ANNOTATION_BACKUP_CREATED: Final = "sota.io/backup-created"
# DatabaseBackup and DatabaseRestore names: any DNS-1123 label (a CronJob's Job name fits).
OBJECT_NAME_MAX_LENGTH: Final = 63
OBJECT_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

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
# The operator image's user, which also runs the backup runner in Jobs.
RUNNER_UID: Final = 10001

# Paths inside the images (operator/images/*/Dockerfile create them).
POSTGRES_CONFIG_DIR: Final = "/etc/sotadb/postgres"
POSTGRES_DATA_MOUNT: Final = "/var/lib/postgresql/data"
POSTGRES_PGDATA: Final = "/var/lib/postgresql/data/pgdata"
POSTGRES_SOCKET_DIR: Final = "/var/run/postgresql"
POOLER_CONFIG_DIR: Final = "/etc/sotadb/pgbouncer"
POOLER_AUTH_DIR: Final = "/etc/sotadb/pgbouncer-auth"
BACKUP_DIR: Final = "/var/lib/sotadb/backups"
# The runner's scratch emptyDir: the restore drill's throw-away server, a restore's copy.
BACKUP_SCRATCH_DIR: Final = "/var/lib/sotadb/scratch"
TERMINATION_LOG: Final = "/dev/termination-log"
# Kubernetes object names (and label values) are at most 63 characters.
NAME_MAX_LENGTH: Final = 63
NAME_HASH_LENGTH: Final = 8

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


def _bounded(prefix: str, name: str) -> str:
    """`{prefix}{name}`, or when that is over 63 characters, its head and 8 hex digits of the
    sha256 of the whole, so that distinct names stay distinct and the result a DNS label."""
    full = f"{prefix}{name}"
    if len(full) <= NAME_MAX_LENGTH:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:NAME_HASH_LENGTH]
    head = full[: NAME_MAX_LENGTH - NAME_HASH_LENGTH - 1].rstrip("-")
    return f"{head}-{digest}"


def backup_job_name(backup_name: str) -> str:
    """The Job taking the on-demand DatabaseBackup `backup_name`. Not `sota-backup-…`: the
    CronJob's runs are `sota-backup-{slug}-{minutes}`, and a DatabaseBackup may well be named
    `{slug}-{digits}`; no name with this prefix is ever one of theirs."""
    return _bounded("sota-dbb-", backup_name)


def restore_job_name(restore_name: str) -> str:
    return _bounded("sota-restore-", restore_name)


def forget_job_name(backup_name: str) -> str:
    """The Job deleting the file and record of DatabaseBackup `backup_name`."""
    return _bounded("sota-forget-", backup_name)


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


def final_backup_name(slug: str, uid: str) -> str:
    """The DatabaseBackup `deletionPolicy: Snapshot` takes before a delete: the database's uid
    tells apart the final backups of databases that had the same name (at most 55 characters)."""
    return f"{slug}-final-{uid.replace('-', '').lower()[:8]}"
