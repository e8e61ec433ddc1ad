"""Pod templates: the one description of how each container runs. Pure.

The Kubernetes runtime puts them into a StatefulSet, Deployment and CronJob; the Docker runtime
translates the very same templates into containers, so a Docker test proves them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sotadb import names
from sotadb.quantity import to_mebibytes
from sotadb.spec import ManagedDatabase

# Keys of the internal auth Secret.
AUTH_VERIFIER_KEY: Final = "app-verifier"
POSTGRES_CONTAINER: Final = "postgres"
POOLER_CONTAINER: Final = "pgbouncer"
BACKUP_CONTAINER: Final = "backup"
POOLER_REQUESTS: Final = {"cpu": "50m", "memory": "32Mi"}
POOLER_LIMITS: Final = {"memory": "128Mi"}
# The runner holds a dump's pipeline and, during the drill, a small PostgreSQL server.
BACKUP_REQUESTS: Final = {"cpu": "100m", "memory": "256Mi"}
BACKUP_LIMITS: Final = {"memory": "1Gi"}
BACKUPS_VOLUME: Final = "backups"
BACKUP_SCRATCH_VOLUME: Final = "scratch"


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": names.POSTGRES_UID,
        "runAsGroup": names.POSTGRES_UID,
        "fsGroup": names.POSTGRES_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _exec_probe(command: list[str], **timing: int) -> dict[str, Any]:
    return {"exec": {"command": command}, **timing}


def _pg_isready(db: ManagedDatabase) -> list[str]:
    # Answers only once the real server listens on TCP, i.e. after bootstrap. Naming the app's
    # role and database keeps PgBouncer from logging "no such user" at every probe.
    return [
        "pg_isready",
        "--quiet",
        "--host=127.0.0.1",
        f"--port={names.POSTGRES_PORT}",
        f"--username={names.role_name(db.slug)}",
        f"--dbname={names.database_name(db.slug)}",
    ]


def _empty_dir(name: str, **options: Any) -> dict[str, Any]:
    return {"name": name, "emptyDir": options}


def _pod_spec(containers: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        # Service links would inject SOTA_DB_*_PORT variables nobody asked for.
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": containers,
        "volumes": volumes,
    }


def postgres_pod_template(db: ManagedDatabase, *, image: str, config_hash: str) -> dict[str, Any]:
    slug = db.slug
    memory_mb = to_mebibytes(db.spec.resources.memory)
    container = {
        "name": POSTGRES_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": [
            {"name": "PGDATA", "value": names.POSTGRES_PGDATA},
            {"name": "SOTADB_CONFIG_DIR", "value": names.POSTGRES_CONFIG_DIR},
            {"name": "SOTADB_APP_ROLE", "value": names.role_name(slug)},
            {"name": "SOTADB_APP_DATABASE", "value": names.database_name(slug)},
            {
                "name": "SOTADB_APP_VERIFIER",
                "valueFrom": {
                    "secretKeyRef": {"name": names.auth_secret_name(slug), "key": AUTH_VERIFIER_KEY}
                },
            },
        ],
        "ports": [{"name": "postgres", "containerPort": names.POSTGRES_PORT, "protocol": "TCP"}],
        "startupProbe": _exec_probe(
            _pg_isready(db), periodSeconds=2, timeoutSeconds=5, failureThreshold=300
        ),
        "readinessProbe": _exec_probe(
            _pg_isready(db), periodSeconds=5, timeoutSeconds=5, failureThreshold=3
        ),
        "livenessProbe": _exec_probe(
            _pg_isready(db), periodSeconds=10, timeoutSeconds=5, failureThreshold=6
        ),
        "resources": {
            "requests": {"cpu": db.spec.resources.cpu, "memory": db.spec.resources.memory},
            # Memory limit = request: PostgreSQL is sized to it. No CPU limit (throttling).
            "limits": {"memory": db.spec.resources.memory},
        },
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": names.DATA_VOLUME, "mountPath": names.POSTGRES_DATA_MOUNT},
            {"name": "config", "mountPath": names.POSTGRES_CONFIG_DIR, "readOnly": True},
            {"name": "run", "mountPath": names.POSTGRES_SOCKET_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    }
    volumes = [
        {"name": "config", "configMap": {"name": names.postgres_config_name(slug)}},
        _empty_dir("run"),
        _empty_dir("tmp"),
        # Parallel queries need more than the runtime's 64 MiB /dev/shm.
        _empty_dir("shm", medium="Memory", sizeLimit=f"{max(64, memory_mb // 4)}Mi"),
    ]
    pod_spec = _pod_spec([container], volumes)
    pod_spec["terminationGracePeriodSeconds"] = 60
    return {
        "metadata": {
            "labels": names.common_labels(slug, names.COMPONENT_POSTGRES),
            "annotations": {names.ANNOTATION_CONFIG_HASH: config_hash},
        },
        "spec": pod_spec,
    }


def pooler_pod_template(db: ManagedDatabase, *, image: str, config_hash: str) -> dict[str, Any]:
    slug = db.slug
    container = {
        "name": POOLER_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": [f"{names.POOLER_CONFIG_DIR}/pgbouncer.ini"],
        "ports": [{"name": "pgbouncer", "containerPort": names.POOLER_PORT, "protocol": "TCP"}],
        "readinessProbe": _exec_probe(
            _pg_isready(db), periodSeconds=5, timeoutSeconds=3, failureThreshold=3
        ),
        "livenessProbe": {
            "tcpSocket": {"port": names.POOLER_PORT},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 6,
        },
        "resources": {"requests": dict(POOLER_REQUESTS), "limits": dict(POOLER_LIMITS)},
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": names.POOLER_CONFIG_DIR, "readOnly": True},
            {"name": "auth", "mountPath": names.POOLER_AUTH_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    volumes = [
        {"name": "config", "configMap": {"name": names.pooler_config_name(slug)}},
        {
            "name": "auth",
            "secret": {
                "secretName": names.auth_secret_name(slug),
                "items": [{"key": "userlist.txt", "path": "userlist.txt"}],
                "defaultMode": 0o440,
            },
        },
        _empty_dir("tmp"),
    ]
    pod_spec = _pod_spec([container], volumes)
    pod_spec["terminationGracePeriodSeconds"] = 30
    return {
        "metadata": {
            "labels": names.common_labels(slug, names.COMPONENT_POOLER),
            "annotations": {names.ANNOTATION_CONFIG_HASH: config_hash},
        },
        "spec": pod_spec,
    }


def runner_pod_security_context() -> dict[str, Any]:
    """The backup runner runs as the operator image's own user: initdb (the drill's throw-away
    server) refuses a uid without a passwd entry. fsGroup makes the backups PVC writable."""
    return {
        "runAsNonRoot": True,
        "runAsUser": names.RUNNER_UID,
        "runAsGroup": names.RUNNER_UID,
        "fsGroup": names.RUNNER_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def backup_pod_template(
    *,
    labels: Mapping[str, str],
    image: str,
    command: list[str],
    env: list[dict[str, Any]],
    backups_claim: str | None,
) -> dict[str, Any]:
    """One runner container (`sotadb backup ...`): the backups PVC `backups_claim` at
    BACKUP_DIR (None: the store is S3, named in `env`), a scratch emptyDir for the drill's
    server and a restore's verified copy, and its result in the termination message."""
    mounts = [
        {"name": BACKUP_SCRATCH_VOLUME, "mountPath": names.BACKUP_SCRATCH_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes = [_empty_dir(BACKUP_SCRATCH_VOLUME), _empty_dir("tmp")]
    if backups_claim is not None:
        mounts.insert(0, {"name": BACKUPS_VOLUME, "mountPath": names.BACKUP_DIR})
        volumes.insert(
            0, {"name": BACKUPS_VOLUME, "persistentVolumeClaim": {"claimName": backups_claim}}
        )
    container = {
        "name": BACKUP_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": env,
        "resources": {"requests": dict(BACKUP_REQUESTS), "limits": dict(BACKUP_LIMITS)},
        "securityContext": container_security_context(),
        "terminationMessagePath": names.TERMINATION_LOG,
        # A runner that dies before writing its report still says why (its last log lines).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    pod_spec = _pod_spec([container], volumes)
    pod_spec["securityContext"] = runner_pod_security_context()
    pod_spec["restartPolicy"] = "Never"
    # SIGTERM unwinds the runner: partial files removed, the restore's transaction rolled back.
    pod_spec["terminationGracePeriodSeconds"] = 30
    return {"metadata": {"labels": dict(labels)}, "spec": pod_spec}
