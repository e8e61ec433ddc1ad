"""Every Kubernetes object one ManagedDatabase owns. Pure: spec + credentials in, manifests out.

Each manifest carries the common labels, an ownerReference to its ManagedDatabase (once it has
a uid) and a `sota.io/spec-hash` annotation; pod templates carry `sota.io/config-hash`, so a
changed config file rolls exactly the pods that read it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from sotadb import credentials as creds
from sotadb import names
from sotadb.credentials import Credentials
from sotadb.render import backup, pgbouncer, pods, postgres
from sotadb.render.hashing import content_hash
from sotadb.render.meta import Manifest, manifest, object_meta
from sotadb.spec import ManagedDatabase


@dataclass(frozen=True)
class Images:
    postgres: str = names.POSTGRES_IMAGE
    pooler: str = names.POOLER_IMAGE
    runner: str = names.OPERATOR_IMAGE  # backup Jobs: `sotadb backup job ...`


def _encode(data: dict[str, str]) -> dict[str, str]:
    return {key: base64.b64encode(value.encode()).decode("ascii") for key, value in data.items()}


def app_secret(db: ManagedDatabase, credentials: Credentials) -> Manifest:
    """What apps consume with envFrom: DATABASE_URL through PgBouncer and the rest."""
    return manifest(
        "v1",
        "Secret",
        object_meta(db, names.app_secret_name(db.slug), names.COMPONENT_CREDENTIALS),
        type="Opaque",
        data=_encode(creds.app_environment(db.slug, credentials.password)),
    )


def auth_secret(db: ManagedDatabase, credentials: Credentials) -> Manifest:
    """The verifier for PostgreSQL (env) and PgBouncer (userlist.txt): no plaintext."""
    return manifest(
        "v1",
        "Secret",
        object_meta(db, names.auth_secret_name(db.slug), names.COMPONENT_CREDENTIALS),
        type="Opaque",
        data=_encode(
            {
                pods.AUTH_VERIFIER_KEY: credentials.verifier,
                pgbouncer.USERLIST_TXT: pgbouncer.userlist_txt(db, credentials),
            }
        ),
    )


def postgres_config_map(db: ManagedDatabase) -> Manifest:
    return manifest(
        "v1",
        "ConfigMap",
        object_meta(db, names.postgres_config_name(db.slug), names.COMPONENT_POSTGRES),
        data=dict(postgres.postgres_files(db).files),
    )


def pooler_config_map(db: ManagedDatabase) -> Manifest:
    return manifest(
        "v1",
        "ConfigMap",
        object_meta(db, names.pooler_config_name(db.slug), names.COMPONENT_POOLER),
        data={pgbouncer.PGBOUNCER_INI: pgbouncer.pgbouncer_ini(db)},
    )


def postgres_config_hash(db: ManagedDatabase, credentials: Credentials) -> str:
    return content_hash([postgres.postgres_files(db).hash, credentials.verifier])


def pooler_config_hash(db: ManagedDatabase, credentials: Credentials) -> str:
    return pgbouncer.pooler_files(db, credentials).hash


def _service(
    db: ManagedDatabase, name: str, component: str, port: int, target_port: str, **spec: Any
) -> Manifest:
    return manifest(
        "v1",
        "Service",
        object_meta(db, name, component),
        spec={
            **spec,
            "selector": names.selector_labels(db.slug, component),
            "ports": [
                {"name": "postgres", "port": port, "targetPort": target_port, "protocol": "TCP"}
            ],
        },
    )


def postgres_service(db: ManagedDatabase) -> Manifest:
    """Headless: the StatefulSet's governing Service and the direct host name in one."""
    return _service(
        db,
        names.postgres_name(db.slug),
        names.COMPONENT_POSTGRES,
        names.POSTGRES_PORT,
        "postgres",
        clusterIP="None",
    )


def pooler_service(db: ManagedDatabase) -> Manifest:
    return _service(
        db,
        names.pooler_name(db.slug),
        names.COMPONENT_POOLER,
        names.POOLER_PORT,
        "pgbouncer",
        type="ClusterIP",
    )


def _claim_spec(db: ManagedDatabase) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": db.spec.storage.size}},
    }
    if db.spec.storage.storage_class_name is not None:
        spec["storageClassName"] = db.spec.storage.storage_class_name
    return spec


def postgres_statefulset(db: ManagedDatabase, credentials: Credentials, images: Images) -> Manifest:
    return manifest(
        "apps/v1",
        "StatefulSet",
        object_meta(db, names.postgres_name(db.slug), names.COMPONENT_POSTGRES),
        spec={
            "serviceName": names.postgres_name(db.slug),
            "replicas": 1,
            "selector": {"matchLabels": names.selector_labels(db.slug, names.COMPONENT_POSTGRES)},
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            # The data outlives the StatefulSet; the deletion policy decides its fate.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "template": pods.postgres_pod_template(
                db, image=images.postgres, config_hash=postgres_config_hash(db, credentials)
            ),
            "volumeClaimTemplates": [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {
                        "name": names.DATA_VOLUME,
                        "labels": names.common_labels(db.slug, names.COMPONENT_POSTGRES),
                    },
                    "spec": _claim_spec(db),
                }
            ],
        },
    )


def pooler_deployment(db: ManagedDatabase, credentials: Credentials, images: Images) -> Manifest:
    return manifest(
        "apps/v1",
        "Deployment",
        object_meta(db, names.pooler_name(db.slug), names.COMPONENT_POOLER),
        spec={
            "replicas": 1,
            "selector": {"matchLabels": names.selector_labels(db.slug, names.COMPONENT_POOLER)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": pods.pooler_pod_template(
                db, image=images.pooler, config_hash=pooler_config_hash(db, credentials)
            ),
        },
    )


def backups_claim(db: ManagedDatabase) -> Manifest:
    """The seed's "server local disk" for dumps: as large as the data volume."""
    return manifest(
        "v1",
        "PersistentVolumeClaim",
        object_meta(db, names.backups_volume_name(db.slug), names.COMPONENT_BACKUP),
        spec=_claim_spec(db),
    )


def backup_cronjob(db: ManagedDatabase, images: Images) -> Manifest:
    """The daily backup. Each run's Job (`sota-backup-{slug}-{minutes}`) is one DatabaseBackup
    of that name; Forbid: a run still dumping when the next is due is not joined by a second."""
    return manifest(
        "batch/v1",
        "CronJob",
        object_meta(db, names.backup_cronjob_name(db.slug), names.COMPONENT_BACKUP),
        spec={
            "schedule": db.backup_schedule,
            "timeZone": "Etc/UTC",
            "suspend": not db.spec.backups.enabled,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": backup.CRONJOB_STARTING_DEADLINE,
            "successfulJobsHistoryLimit": backup.CRONJOB_HISTORY,
            "failedJobsHistoryLimit": backup.CRONJOB_HISTORY,
            "jobTemplate": {
                "metadata": {
                    "labels": {
                        **names.common_labels(db.slug, names.COMPONENT_BACKUP),
                        names.LABEL_JOB: names.JOB_BACKUP,
                    }
                },
                "spec": {
                    "backoffLimit": backup.BACKOFF_LIMIT,
                    "activeDeadlineSeconds": backup.DEADLINES[names.JOB_BACKUP],
                    "ttlSecondsAfterFinished": backup.TTL_AFTER_FINISHED,
                    "template": backup.cronjob_pod_template(db, image=images.runner),
                },
            },
        },
    )


def _ingress_on_port(port: int, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"from": sources, "ports": [{"protocol": "TCP", "port": port}]}]


def postgres_network_policy(db: ManagedDatabase) -> Manifest:
    """PostgreSQL is reached by its PgBouncer, its backup jobs and app pods labelled
    `db.sota.io/{slug}: direct` in the same namespace — nothing else."""
    slug = db.slug
    sources = [
        {"podSelector": {"matchLabels": names.selector_labels(slug, names.COMPONENT_POOLER)}},
        {"podSelector": {"matchLabels": names.selector_labels(slug, names.COMPONENT_BACKUP)}},
        {
            "podSelector": {
                "matchLabels": {names.direct_access_label(slug): names.DIRECT_ACCESS_LABEL_VALUE}
            }
        },
    ]
    return manifest(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        object_meta(db, names.postgres_name(slug), names.COMPONENT_POSTGRES),
        spec={
            "podSelector": {"matchLabels": names.selector_labels(slug, names.COMPONENT_POSTGRES)},
            "policyTypes": ["Ingress"],
            "ingress": _ingress_on_port(names.POSTGRES_PORT, sources),
        },
    )


def pooler_network_policy(db: ManagedDatabase) -> Manifest:
    """PgBouncer is reached by any pod of the same namespace (the app's namespace)."""
    slug = db.slug
    return manifest(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        object_meta(db, names.pooler_name(slug), names.COMPONENT_POOLER),
        spec={
            "podSelector": {"matchLabels": names.selector_labels(slug, names.COMPONENT_POOLER)},
            "policyTypes": ["Ingress"],
            "ingress": _ingress_on_port(names.POOLER_PORT, [{"podSelector": {}}]),
        },
    )


def render_objects(
    db: ManagedDatabase, credentials: Credentials, images: Images | None = None
) -> list[Manifest]:
    """All owned objects, in the order they are best created (what pods mount comes first)."""
    images = images or Images()
    return [
        app_secret(db, credentials),
        auth_secret(db, credentials),
        postgres_config_map(db),
        pooler_config_map(db),
        postgres_service(db),
        pooler_service(db),
        postgres_network_policy(db),
        pooler_network_policy(db),
        postgres_statefulset(db, credentials, images),
        pooler_deployment(db, credentials, images),
        backups_claim(db),
        backup_cronjob(db, images),
    ]
