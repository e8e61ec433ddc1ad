"""kopf wiring for DatabaseRestore: Pending → (new database) Provisioning → Restoring →
Succeeded or Failed.

The create/resume handler takes one step at a time (`restore_plan.next_step`) and waits with
kopf.TemporaryError, never by sleeping; the restore Job's events (backup_handlers dispatches
them here) and a timer on unfinished restores finish it. A new database is created with the
source database's spec and an annotation naming the restore, so that a restarted operator
knows it as its own, and is never deleted by the restore: it is the user's from then on.
A restore from spec.source (a database that is gone) reads no DatabaseBackup: the new database
gets the default spec, its backups going to the source's bucket (or to its own volume).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import kopf

from sotadb import names
from sotadb.errors import InvalidSpec
from sotadb.kube import resources
from sotadb.kube.api import KubeApi
from sotadb.kube.backup_status import (
    FAILED,
    TERMINAL,
    JobState,
    complete_condition,
    restore_status_patch,
)
from sotadb.kube.restore_plan import (
    ABSENT,
    PENDING,
    PROVISIONING,
    RESTORING,
    BackupFacts,
    CreateTarget,
    DatabaseState,
    Fail,
    StartJob,
    StoreFacts,
    Wait,
    next_step,
)
from sotadb.kube.tracking import (
    BACKUPS_INDEX,
    FACTS_INDEX,
    JOBS_INDEX,
    POLL_SECONDS,
    RESTORES,
    RESTORES_INDEX,
    WAIT_SECONDS,
    DatabaseFacts,
    Logger,
    Snapshot,
    as_kopf_errors,
    existing_is_fine,
    lookup,
    now,
    owner_of,
    read_report,
    unfinished,
)
from sotadb.render.backup import restore_job
from sotadb.spec import BackupsSpec, RestoreSource, parse_database, parse_restore


def write_restore_status(
    api: KubeApi, namespace: str, name: str, current: Mapping[str, Any], fields: Mapping[str, Any]
) -> None:
    """Write `fields` (with the Complete condition) unless the status says so already."""
    phase = str(fields.get("phase") or current.get("phase") or "")
    message = str(fields.get("message") or "")
    desired = {**fields, "conditions": complete_condition(current, phase, message, now())}
    if all(current.get(key) == value for key, value in desired.items()):
        return
    api.patch(
        resources.DATABASE_RESTORE, namespace, name, {"status": desired}, subresource="status"
    )


def _state(indexes: Mapping[str, Any], namespace: str, slug: str) -> DatabaseState:
    facts: DatabaseFacts | None = lookup(indexes, FACTS_INDEX, (namespace, slug))
    if facts is None:
        return ABSENT
    return DatabaseState(
        exists=True, phase=facts.phase, deleting=facts.deleting, restored_by=facts.restored_by
    )


def advance_restore(
    api: KubeApi, body: Mapping[str, Any], indexes: Mapping[str, Any], logger: Logger
) -> None:
    """One step of a restore; raises kopf.TemporaryError to be called again after a wait."""
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    current: Mapping[str, Any] = body.get("status") or {}
    if current.get("phase") in TERMINAL:
        return
    try:
        restore = parse_restore(body)
    except InvalidSpec as e:
        _fail(api, body, current, str(e), logger)
        return
    backup = None
    stored = restore.spec.source
    if stored is None:
        found: Snapshot | None = lookup(indexes, BACKUPS_INDEX, (namespace, restore.spec.backup))
        if found is not None and not found.deleting:
            backup = BackupFacts(
                database=found.database,
                phase=found.phase,
                verification=found.status.get("verification"),
            )
        source = backup.database if backup is not None else ""
    else:
        source = stored.database
    into = restore.spec.target or source
    target = _state(indexes, namespace, into) if into else ABSENT
    store = None
    if stored is not None:
        # What the store needs is looked up (GETs) only while the new database is to be made.
        creating = not target.exists and current.get("phase") in (None, PENDING)
        store = _store_facts(api, namespace, stored) if creating else StoreFacts(stored.database)
    job_name = names.restore_job_name(name)
    step = next_step(
        name=name,
        namespace=namespace,
        phase=current.get("phase"),
        backup_name=restore.spec.backup,
        spec_target=restore.spec.target,
        backup=backup,
        source=_state(indexes, namespace, source) if source else ABSENT,
        target=target,
        job_exists=lookup(indexes, JOBS_INDEX, (namespace, job_name)) is not None,
        store=store,
    )
    if current.get("phase") is None and isinstance(step, (CreateTarget, StartJob)):
        # Accepted: every restore shows Pending first, even one that can start at once.
        fields = {"phase": PENDING, "target": into, "message": f"restoring into {into}"}
        write_restore_status(api, namespace, name, current, fields)
        current = {**current, **fields}
    if isinstance(step, Fail):
        _fail(api, body, current, step.message, logger)
    elif isinstance(step, Wait):
        fields = {"phase": step.phase, "target": into, "message": step.message}
        write_restore_status(api, namespace, name, current, fields)
        raise kopf.TemporaryError(step.message, delay=WAIT_SECONDS)
    elif isinstance(step, CreateTarget):
        _create_target(api, body, current, step, stored, logger)
    elif isinstance(step, StartJob):
        _start_job(api, body, current, step, restore.spec.backup, stored, logger)


def _store_facts(api: KubeApi, namespace: str, source: RestoreSource) -> StoreFacts:
    """What the source's store needs (its kept volume, or the bucket's keys) and lacks."""
    if source.s3 is None:
        claim = names.backups_volume_name(source.database)
        missing = api.get(resources.CLAIM, namespace, claim) is None
        return StoreFacts(source.database, missing_volume=claim if missing else None)
    secret = source.s3.credentials_secret
    missing = api.get(resources.SECRET, namespace, secret) is None
    return StoreFacts(source.database, missing_secret=secret if missing else None)


def _fail(
    api: KubeApi,
    body: Mapping[str, Any],
    current: Mapping[str, Any],
    message: str,
    logger: Logger,
) -> None:
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    fields = {"phase": FAILED, "completedAt": now(), "message": message}
    write_restore_status(api, namespace, name, current, fields)
    logger.warning("restore failed: %s", message)
    kopf.warn(kopf.Body(cast(Any, dict(body))), reason="RestoreFailed", message=message)


def _create_target(
    api: KubeApi,
    body: Mapping[str, Any],
    current: Mapping[str, Any],
    step: CreateTarget,
    stored: RestoreSource | None,
    logger: Logger,
) -> None:
    """A new ManagedDatabase with the source's spec (from a store: the default spec, its
    backups in the source's bucket), marked as this restore's."""
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    if stored is None:
        source = api.get(resources.MANAGED_DATABASE, namespace, step.source)
        if source is None:
            raise kopf.TemporaryError(f"ManagedDatabase {step.source} is gone", delay=WAIT_SECONDS)
        spec = dict(source.get("spec") or {})
        message = f"creating ManagedDatabase {step.target} with the spec of {step.source}"
    else:
        spec = _spec_from_store(stored)
        where = f"backing up to {stored.s3.location}" if stored.s3 else "with its own volume"
        message = f"creating ManagedDatabase {step.target} ({where}) to restore a backup into"
    database = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_DATABASE,
        "metadata": {
            "name": step.target,
            "namespace": namespace,
            "annotations": {names.ANNOTATION_RESTORED_BY: name},
        },
        "spec": spec,
    }
    fields = {"phase": PROVISIONING, "target": step.target, "message": message}
    write_restore_status(api, namespace, name, current, fields)
    # A 409 (made meanwhile by someone else) is judged on the next step: not ours → Failed.
    with existing_is_fine():
        api.create(database)
    logger.info("%s", message)
    raise kopf.TemporaryError(message, delay=WAIT_SECONDS)


def _spec_from_store(source: RestoreSource) -> dict[str, Any]:
    """The default spec; backups go where the source's went, if that was a bucket."""
    if source.s3 is None:
        return {}
    return {"backups": {"s3": source.s3.model_dump(by_alias=True, mode="json", exclude_none=True)}}


def _start_job(
    api: KubeApi,
    body: Mapping[str, Any],
    current: Mapping[str, Any],
    step: StartJob,
    backup_name: str,
    stored: RestoreSource | None,
    logger: Logger,
) -> None:
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    found = api.get(resources.MANAGED_DATABASE, namespace, step.target)
    if found is None:
        raise kopf.TemporaryError(f"ManagedDatabase {step.target} is gone", delay=WAIT_SECONDS)
    try:
        target = parse_database(found)
    except InvalidSpec as e:
        _fail(api, body, current, f"ManagedDatabase {step.target} has an invalid spec: {e}", logger)
        return
    # A new database was made with the source's spec: its backups live where the source's do.
    # From a store: where spec.source says (a bucket, or the source's kept volume).
    backups = target.spec.backups if stored is None else BackupsSpec(s3=stored.s3)
    job = restore_job(target, step.source, backups, backup_name, name, owner_of(body))
    job_name = job["metadata"]["name"]
    fields = {
        "phase": RESTORING,
        "target": step.target,
        "job": job_name,
        "startedAt": now(),
        "message": f"restoring backup {backup_name} into {step.target} with Job {job_name}",
    }
    # The Job first: a restore is never reported Restoring without one. Its outcome is
    # recorded only once the status says Restoring (sync_restore_job), so nothing is undone.
    with existing_is_fine():
        api.create(job)
    write_restore_status(api, namespace, name, current, fields)
    logger.info("restoring backup %s into %s", backup_name, step.target)


def sync_restore_job(
    api: KubeApi, job: JobState, indexes: Mapping[str, Any], logger: Logger
) -> None:
    """A restore Job finished: its report decides the restore's outcome."""
    if job.restore is None or not job.finished:
        return
    snapshot: Snapshot | None = lookup(indexes, RESTORES_INDEX, (job.namespace, job.restore))
    if snapshot is None or snapshot.deleting or snapshot.phase != RESTORING:
        return  # not started as far as the status says (the poll comes back), or over
    report = read_report(api, job)
    patch = restore_status_patch(snapshot.status, job, report, now())
    if not patch:
        return
    api.patch(
        resources.DATABASE_RESTORE,
        job.namespace,
        job.restore,
        {"status": patch},
        subresource="status",
    )
    logger.info("restore %s/%s %s", job.namespace, job.restore, str(patch["phase"]).lower())


def register_restores(registry: kopf.OperatorRegistry) -> None:
    """Called by backup_handlers.register_backups (which registers the indexes)."""

    def restore_step(body: kopf.Body, memo: Any, logger: Logger, **kwargs: Any) -> None:
        with as_kopf_errors():
            advance_restore(memo["api"], body, kwargs, logger)

    for decorator, handler_id in (
        (kopf.on.create, "restore-on-create"),
        (kopf.on.resume, "restore-on-resume"),
    ):
        decorator(*RESTORES, id=handler_id, registry=registry)(restore_step)

    @kopf.timer(
        *RESTORES,
        id="restore-poll",
        interval=POLL_SECONDS,
        initial_delay=POLL_SECONDS,
        when=unfinished,
        registry=registry,
    )
    def restore_poll(
        namespace: str | None, name: str, memo: Any, logger: Logger, **kwargs: Any
    ) -> None:
        key = (namespace or "", names.restore_job_name(name))
        job: JobState | None = lookup(kwargs, JOBS_INDEX, key)
        if job is not None and job.kind == names.JOB_RESTORE:
            with as_kopf_errors():
                sync_restore_job(memo["api"], job, kwargs, logger)
