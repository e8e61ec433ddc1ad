"""The backup runner's Jobs: backup, restore and forget, and the CronJob's pod. Pure.

Every one runs the operator image's `sotadb backup ...` command (sotadb.cli.job_commands) in
one restricted container; its inputs come from the environment:

- libpq's PGHOST/PGPORT (the database's own Service, not PgBouncer: pg_dump and a restore
  need a session of their own) and PGUSER/PGPASSWORD/PGDATABASE from the app Secret, so the
  runner connects as the app role, which owns its database: no superuser over the network;
- SOTADB_BACKUP_LOCATION: the backups PVC's mount point, or `s3://bucket/prefix` when
  `spec.backups.s3` is set (then the endpoint, region and the keys from its Secret too);
- SOTADB_RETENTION_DAYS and SOTADB_SCRATCH_DIR (the emptyDir of the drill's server).

The result travels in the termination message (sotadb.backup.report). A scheduled run's pod
learns its backup name, which is its Job's name, from the downward API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sotadb import names
from sotadb.backup import stores
from sotadb.render import pods
from sotadb.spec import BackupsSpec, ManagedDatabase

ENV_LOCATION: Final = stores.LOCATION_ENV
ENV_S3_ENDPOINT: Final = stores.ENDPOINT_ENV
ENV_S3_REGION: Final = stores.REGION_ENV
ENV_RETENTION_DAYS: Final = "SOTADB_RETENTION_DAYS"
ENV_SCRATCH_DIR: Final = "SOTADB_SCRATCH_DIR"
ENV_BACKUP_NAME: Final = "SOTADB_BACKUP_NAME"
# The keys of spec.backups.s3.credentialsSecret, under the names boto3 reads from the env.
S3_KEY_ID: Final = "AWS_ACCESS_KEY_ID"
S3_SECRET_KEY: Final = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 (a key name, not a secret)
APP_SECRET_KEYS: Final = ("PGUSER", "PGPASSWORD", "PGDATABASE")

# A Job runs its pod once: a retry would be a second backup under the same name.
BACKOFF_LIMIT: Final = 0
# Kept a week after they finish, so the operator sees the result even after a long outage.
TTL_AFTER_FINISHED: Final = 7 * 24 * 3600
DEADLINES: Final[Mapping[str, int]] = {
    names.JOB_BACKUP: 6 * 3600,
    names.JOB_RESTORE: 6 * 3600,
    names.JOB_FORGET: 15 * 60,
}
CRONJOB_STARTING_DEADLINE: Final = 3600
CRONJOB_HISTORY: Final = 3


# ---------------------------------------------------------------- commands and environment


def backup_command(slug: str, backup_name: str | None) -> list[str]:
    """`None`: the name comes from SOTADB_BACKUP_NAME (a CronJob's pod: its Job's name)."""
    command = ["sotadb", "backup", "job", "--database", slug]
    return command if backup_name is None else [*command, "--name", backup_name]


def restore_command(target_slug: str, source_slug: str, backup_name: str) -> list[str]:
    return [
        "sotadb", "backup", "restore-job",
        "--database", target_slug, "--from", source_slug, "--name", backup_name,
    ]  # fmt: skip


def forget_command(slug: str, backup_name: str) -> list[str]:
    return ["sotadb", "backup", "forget-job", "--database", slug, "--name", backup_name]


def _value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _secret(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def connection_env(slug: str) -> list[dict[str, Any]]:
    """libpq's variables: the database's own Service, as its app role."""
    app_secret = names.app_secret_name(slug)
    return [
        _value("PGHOST", names.postgres_name(slug)),
        _value("PGPORT", str(names.POSTGRES_PORT)),
        *(_secret(key, app_secret, key) for key in APP_SECRET_KEYS),
    ]


def store_env(slug: str, backups: BackupsSpec) -> tuple[list[dict[str, Any]], str | None]:
    """Where `slug`'s backups live: (env, the backups PVC to mount or None for S3)."""
    s3 = backups.s3
    if s3 is None:
        return [_value(ENV_LOCATION, names.BACKUP_DIR)], names.backups_volume_name(slug)
    env = [
        _value(ENV_LOCATION, s3.location),
        _value(ENV_S3_REGION, s3.region),
        _secret(S3_KEY_ID, s3.credentials_secret, S3_KEY_ID),
        _secret(S3_SECRET_KEY, s3.credentials_secret, S3_SECRET_KEY),
    ]
    if s3.endpoint:
        env.insert(1, _value(ENV_S3_ENDPOINT, s3.endpoint))
    return env, None


def _runner_env(retention_days: int) -> list[dict[str, Any]]:
    return [
        _value(ENV_RETENTION_DAYS, str(retention_days)),
        _value(ENV_SCRATCH_DIR, names.BACKUP_SCRATCH_DIR),
    ]


# ---------------------------------------------------------------- pods and Jobs


def _pod(
    *,
    slug: str,
    labels: Mapping[str, str],
    image: str,
    command: list[str],
    connect_to: str | None,
    store_of: str,
    backups: BackupsSpec,
    retention_days: int,
    extra_env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The runner's pod for database `slug` (its labels admit it through `connect_to`'s
    NetworkPolicy), reading the backups of `store_of` (described by `backups`)."""
    location_env, claim = store_env(store_of, backups)
    env = [
        *(connection_env(connect_to) if connect_to is not None else []),
        *location_env,
        *_runner_env(retention_days),
        *(extra_env or []),
    ]
    return pods.backup_pod_template(
        labels={**names.common_labels(slug, names.COMPONENT_BACKUP), **labels},
        image=image,
        command=command,
        env=env,
        backups_claim=claim,
    )


def cronjob_pod_template(db: ManagedDatabase, *, image: str) -> dict[str, Any]:
    """The scheduled backup: the same runner as an on-demand Job, named after its Job."""
    name_from_job = {
        "name": ENV_BACKUP_NAME,
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{names.LABEL_JOB_NAME}']"}},
    }
    return _pod(
        slug=db.slug,
        labels={names.LABEL_JOB: names.JOB_BACKUP},
        image=image,
        command=backup_command(db.slug, None),
        connect_to=db.slug,
        store_of=db.slug,
        backups=db.spec.backups,
        retention_days=db.spec.backups.retention_days,
        extra_env=[name_from_job],
    )


def _job(
    *,
    name: str,
    namespace: str,
    kind: str,
    labels: Mapping[str, str],
    owner: Mapping[str, Any],
    template: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "ownerReferences": [dict(owner)],
        },
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": DEADLINES[kind],
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
            "template": template,
        },
    }


def backup_job(
    db: ManagedDatabase,
    backup_name: str,
    owner: Mapping[str, Any],
    *,
    image: str = names.OPERATOR_IMAGE,
) -> dict[str, Any]:
    """The Job taking DatabaseBackup `backup_name` (owned by it: `owner`)."""
    labels = {names.LABEL_BACKUP: backup_name, names.LABEL_JOB: names.JOB_BACKUP}
    template = _pod(
        slug=db.slug,
        labels=labels,
        image=image,
        command=backup_command(db.slug, backup_name),
        connect_to=db.slug,
        store_of=db.slug,
        backups=db.spec.backups,
        retention_days=db.spec.backups.retention_days,
    )
    return _job(
        name=names.backup_job_name(backup_name),
        namespace=db.namespace,
        kind=names.JOB_BACKUP,
        labels={**names.common_labels(db.slug, names.COMPONENT_BACKUP), **labels},
        owner=owner,
        template=template,
    )


def restore_job(
    target: ManagedDatabase,
    source_slug: str,
    source_backups: BackupsSpec,
    backup_name: str,
    restore_name: str,
    owner: Mapping[str, Any],
    *,
    image: str = names.OPERATOR_IMAGE,
) -> dict[str, Any]:
    """Restore backup `backup_name` of `source_slug` (stored as `source_backups` says) into
    `target`, as the target's app role, in one transaction (DatabaseRestore `restore_name`)."""
    labels = {
        names.LABEL_RESTORE: restore_name,
        names.LABEL_BACKUP: backup_name,
        names.LABEL_JOB: names.JOB_RESTORE,
    }
    template = _pod(
        slug=target.slug,
        labels=labels,
        image=image,
        command=restore_command(target.slug, source_slug, backup_name),
        connect_to=target.slug,
        store_of=source_slug,
        backups=source_backups,
        retention_days=target.spec.backups.retention_days,
    )
    return _job(
        name=names.restore_job_name(restore_name),
        namespace=target.namespace,
        kind=names.JOB_RESTORE,
        labels={**names.common_labels(target.slug, names.COMPONENT_BACKUP), **labels},
        owner=owner,
        template=template,
    )


def forget_job(
    db: ManagedDatabase,
    backup_name: str,
    owner: Mapping[str, Any],
    *,
    image: str = names.OPERATOR_IMAGE,
) -> dict[str, Any]:
    """Delete backup `backup_name`'s file and record (absent already: success). It needs no
    database connection."""
    labels = {names.LABEL_BACKUP: backup_name, names.LABEL_JOB: names.JOB_FORGET}
    template = _pod(
        slug=db.slug,
        labels=labels,
        image=image,
        command=forget_command(db.slug, backup_name),
        connect_to=None,
        store_of=db.slug,
        backups=db.spec.backups,
        retention_days=db.spec.backups.retention_days,
    )
    return _job(
        name=names.forget_job_name(backup_name),
        namespace=db.namespace,
        kind=names.JOB_FORGET,
        labels={**names.common_labels(db.slug, names.COMPONENT_BACKUP), **labels},
        owner=owner,
        template=template,
    )
