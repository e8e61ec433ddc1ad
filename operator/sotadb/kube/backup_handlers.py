"""kopf wiring for backups: DatabaseBackup → one Job; the Job's outcome → the backup's status.

- Indexes keep what the handlers read: sotadb's Jobs (only those labelled sota.io/job, selected
  on the server), DatabaseBackups, DatabaseRestores and a few facts per ManagedDatabase. A
  resync or restart of an idle operator therefore sends nothing.
- Creating a DatabaseBackup creates exactly one Job, named after it (a second POST is a 409;
  `sota-dbb-{name}`, never the name of a CronJob's run). A Job the CronJob made gets a
  DatabaseBackup named like the Job, once: the Job is then annotated, so a backup deleted
  later is not made again. Job events drive the phase;
  a finished Job's report is read from its pod's termination message (one LIST by the Job
  controller's label, never a watch on pods). A timer on unfinished backups catches an event
  missed or failed.
- Deleting a backup stops its run (an unfinished Job is deleted with its pod). Deleting a
  Succeeded backup runs a forget Job behind the finalizer; deleting the objects of backups
  retention pruned does not (their files are gone already).
- `deletionPolicy: Snapshot`: `snapshot_before_delete`, called from the ManagedDatabase delete
  handler.
Status is written straight to /status before the next step (not through kopf's patch, which
lands only after the handler returns and could undo what a Job event wrote meanwhile).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, cast

import kopf

from sotadb import names
from sotadb.errors import InvalidSpec
from sotadb.kube import resources, restore_handlers
from sotadb.kube.api import ApiError, KubeApi
from sotadb.kube.backup_status import (
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    JobState,
    backup_status_patch,
    job_state,
    last_backup_patch,
    prunable,
)
from sotadb.kube.tracking import (
    BACKUPS,
    BACKUPS_INDEX,
    CALL_ERRORS,
    FACTS_INDEX,
    JOBS,
    JOBS_INDEX,
    OURS,
    POLL_SECONDS,
    WAIT_SECONDS,
    DatabaseFacts,
    Logger,
    Snapshot,
    as_kopf_errors,
    existing_is_fine,
    lookup,
    owner_of,
    read_report,
    register_indexes,
    snapshot_of,
    unfinished,
    values,
)
from sotadb.render.backup import backup_job, forget_job
from sotadb.spec import parse_backup, parse_database

FAILED_SNAPSHOT_SECONDS: Final = 60.0
BACKGROUND: Final = "Background"


def write_backup_status(api: KubeApi, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
    api.patch(
        resources.DATABASE_BACKUP, namespace, name, {"status": dict(patch)}, subresource="status"
    )


# ---------------------------------------------------------------- a DatabaseBackup's life


def start_backup(api: KubeApi, body: Mapping[str, Any], indexes: Mapping[str, Any]) -> str:
    """Make sure an unfinished on-demand backup has its Job; returns what was done."""
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    current = body.get("status") or {}
    if current.get("phase") in TERMINAL:
        return ""
    try:
        backup = parse_backup(body)
    except InvalidSpec as e:
        write_backup_status(api, namespace, name, {"phase": FAILED, "message": str(e)})
        return "refused an invalid spec"
    scheduled = (metadata.get("labels") or {}).get(names.LABEL_SCHEDULED) == "true"
    job_name = current.get("job") or (name if scheduled else names.backup_job_name(name))
    if scheduled or lookup(indexes, JOBS_INDEX, (namespace, job_name)) is not None:
        return ""  # the Job's events drive it
    if current.get("phase") == RUNNING:
        write_backup_status(
            api,
            namespace,
            name,
            {
                "phase": FAILED,
                "message": f"its Job {job_name} disappeared before it reported; take a new backup",
            },
        )
        return "lost its Job"
    slug = backup.spec.database
    found = api.get(resources.MANAGED_DATABASE, namespace, slug)
    problem = None
    if found is None:
        problem = (
            f"ManagedDatabase {slug} does not exist in namespace {namespace}; set spec.database "
            f"to one that does (kubectl get mdb -n {namespace})"
        )
    else:
        try:
            db = parse_database(found)
        except InvalidSpec as e:
            problem = f"ManagedDatabase {slug} has an invalid spec, fix it first: {e}"
    if problem is not None:
        write_backup_status(api, namespace, name, {"phase": FAILED, "message": problem})
        return "refused: no database to back up"
    if current.get("phase") != PENDING or current.get("job") != job_name:
        write_backup_status(api, namespace, name, {"phase": PENDING, "job": job_name})
    job = backup_job(db, name, owner_of(body))
    with existing_is_fine():
        api.create(job)
    return f"started Job {job_name}"


def sync_backup_job(
    api: KubeApi, job: JobState, indexes: Mapping[str, Any], logger: Logger
) -> None:
    """Bring the backup a Job works for up to date with the Job (and its report)."""
    snapshot: Snapshot | None = lookup(indexes, BACKUPS_INDEX, (job.namespace, job.backup_name))
    scheduled = _is_scheduled_run(job)
    if snapshot is None:
        # A run whose backup was created once and is gone now was deleted (by a person, or
        # by retention): never made again, whatever event is replayed.
        if not scheduled or job.backup_created:
            return
        if not _create_scheduled_backup(api, job, indexes):
            return
        current: Mapping[str, Any] = {}
        slug = str(job.instance)
    else:
        if scheduled and not job.backup_created:
            _mark_backup_created(api, job)  # created by an operator that stopped before it
        if snapshot.deleting or (job.phase == PENDING and snapshot.phase is None):
            return  # deleted, or start_backup's Pending is not in the index yet
        current, slug = snapshot.status, snapshot.database
    if current.get("phase") in TERMINAL:
        return
    report = read_report(api, job) if job.finished else None
    patch = backup_status_patch(current, job, report)
    if not patch:
        return
    write_backup_status(api, job.namespace, job.backup_name, patch)
    if patch.get("phase") not in TERMINAL:
        return
    logger.info("backup %s/%s %s", job.namespace, job.backup_name, str(patch["phase"]).lower())
    if patch["phase"] == SUCCEEDED:
        _record_last_backup(api, job.namespace, slug, job.backup_name, patch, indexes)
    if report is not None and report.pruned:
        _delete_pruned(api, job.namespace, slug, job.backup_name, report.pruned, indexes, logger)


def _is_scheduled_run(job: JobState) -> bool:
    return (
        job.kind == names.JOB_BACKUP
        and job.instance is not None
        and job.backup is None
        and job.cron_job == names.backup_cronjob_name(job.instance)
    )


def _create_scheduled_backup(api: KubeApi, job: JobState, indexes: Mapping[str, Any]) -> bool:
    """The DatabaseBackup of a CronJob's run: named like the Job, owned by the database."""
    slug = str(job.instance)
    facts: DatabaseFacts | None = lookup(indexes, FACTS_INDEX, (job.namespace, slug))
    if facts is None or facts.deleting:
        return False  # its database is gone or going; nothing would keep the object
    document = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_BACKUP,
        "metadata": {
            "name": job.name,
            "namespace": job.namespace,
            "labels": {
                **names.common_labels(slug, names.COMPONENT_BACKUP),
                names.LABEL_SCHEDULED: "true",
            },
            "ownerReferences": [
                {
                    "apiVersion": names.API_VERSION,
                    "kind": names.KIND_DATABASE,
                    "name": slug,
                    "uid": facts.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"database": slug},
    }
    with existing_is_fine():
        api.create(document)
    _mark_backup_created(api, job)
    return True


def _mark_backup_created(api: KubeApi, job: JobState) -> None:
    """Remember on the CronJob's run that its DatabaseBackup exists (after creating it: a stop
    in between leaves an unmarked run with its backup, which the next event marks)."""
    patch = {"metadata": {"annotations": {names.ANNOTATION_BACKUP_CREATED: "true"}}}
    try:
        api.patch(resources.JOB, job.namespace, job.name, patch)
    except ApiError as e:
        if e.status != 404:  # gone already (its history limit, its TTL): nothing to mark
            raise


def _record_last_backup(
    api: KubeApi,
    namespace: str,
    slug: str,
    name: str,
    backup_status: Mapping[str, Any],
    indexes: Mapping[str, Any],
) -> None:
    facts: DatabaseFacts | None = lookup(indexes, FACTS_INDEX, (namespace, slug))
    if facts is None or facts.deleting:
        return
    patch = last_backup_patch({"lastBackup": facts.last_backup}, name, backup_status)
    if patch:
        api.patch(
            resources.MANAGED_DATABASE,
            namespace,
            slug,
            {"status": {"lastBackup": patch}},
            subresource="status",
        )


def _delete_pruned(
    api: KubeApi,
    namespace: str,
    slug: str,
    keep: str,
    pruned: tuple[str, ...],
    indexes: Mapping[str, Any],
    logger: Logger,
) -> None:
    """Retention deleted these backups' files: delete their objects, marked so that their
    finalizer does not send a forget Job after files that are gone."""
    databases = {}
    for name in pruned:
        found: Snapshot | None = lookup(indexes, BACKUPS_INDEX, (namespace, name))
        databases[name] = None if found is None else found.database
    for name in prunable(pruned, slug, keep, databases):
        api.patch(
            resources.DATABASE_BACKUP,
            namespace,
            name,
            {"metadata": {"annotations": {names.ANNOTATION_FORGOTTEN: "true"}}},
        )
        api.delete(resources.DATABASE_BACKUP, namespace, name)
        logger.info("retention removed backup %s/%s", namespace, name)


def stop_run(
    api: KubeApi, body: Mapping[str, Any], indexes: Mapping[str, Any], logger: Logger
) -> None:
    """A deleted DatabaseBackup's run stops: its Job, if unfinished, is deleted with its pod.
    A scheduled one's Job (the CronJob's, so not collected with the backup) is marked, if it
    was not yet, so that it never makes the backup again."""
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    status = body.get("status") or {}
    scheduled = (metadata.get("labels") or {}).get(names.LABEL_SCHEDULED) == "true"
    job_name = str(status.get("job") or (name if scheduled else names.backup_job_name(name)))
    job: JobState | None = lookup(indexes, JOBS_INDEX, (namespace, job_name))
    if job is None and status.get("phase") in TERMINAL:
        return  # over, and its Job is gone
    if job is None or not job.finished:
        # Not in the index yet (just made) is deleted too: a 404 says it never was.
        if _delete_job(api, namespace, job_name):
            logger.info("stopped the run of %s: deleted Job %s", name, job_name)
    elif _is_scheduled_run(job) and not job.backup_created:
        _mark_backup_created(api, job)


def _delete_job(api: KubeApi, namespace: str, name: str) -> bool:
    """Delete a Job and its pods; False if it was not there. A batch/v1 Job deleted without a
    propagation policy orphans its pods (the API's default for Jobs, kept for compatibility),
    which would run on: the policy is sent."""
    return api.delete(resources.JOB, namespace, name, propagation=BACKGROUND)


def forget_backup(
    api: KubeApi, body: Mapping[str, Any], indexes: Mapping[str, Any], logger: Logger
) -> None:
    """Before a deleted DatabaseBackup goes: delete its file with a forget Job, and wait for
    it (kopf.TemporaryError). Nothing to do for a backup without a file, or whose file
    retention removed, or whose database is gone (its backups go with it, or stay with a
    volume kept on purpose)."""
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    snapshot = snapshot_of(body)
    if snapshot.phase != SUCCEEDED or snapshot.forgotten:
        return
    facts: DatabaseFacts | None = lookup(indexes, FACTS_INDEX, (namespace, snapshot.database))
    if facts is None or facts.deleting:
        logger.info("kept the dump of %s: its database is gone or going", name)
        return
    job_name = names.forget_job_name(name)
    job: JobState | None = lookup(indexes, JOBS_INDEX, (namespace, job_name))
    if job is None:
        found = api.get(resources.MANAGED_DATABASE, namespace, snapshot.database)
        if found is None:
            return
        try:
            db = parse_database(found)
        except InvalidSpec as e:
            logger.warning("kept the dump of %s: its database's spec is invalid: %s", name, e)
            return
        job_document = forget_job(db, name, owner_of(body))
        with existing_is_fine():
            api.create(job_document)
        raise kopf.TemporaryError(f"removing its dump with Job {job_name}", delay=WAIT_SECONDS)
    if job.phase == SUCCEEDED:
        logger.info("removed the dump of %s", name)
        return
    if job.phase == FAILED:
        # Not retried: the runner's retention removes an expired file in any case.
        kopf.warn(
            kopf.Body(cast(Any, dict(body))),
            reason="ForgetFailed",
            message=(
                f"Job {job_name} could not remove the dump ({job.failure or 'failed'}); the "
                f"daily retention removes it once it expires"
            ),
        )
        return
    raise kopf.TemporaryError(f"waiting for Job {job_name} to remove the dump", delay=WAIT_SECONDS)


# ---------------------------------------------------------------- deletionPolicy: Snapshot


def snapshot_before_delete(
    api: KubeApi, body: Mapping[str, Any], indexes: Mapping[str, Any]
) -> list[str]:
    """`deletionPolicy: Snapshot`, from the ManagedDatabase delete handler: take a final
    DatabaseBackup and wait for it (kopf.TemporaryError); then delete the data volume as
    `Delete` does, but keep the backups volume and every DatabaseBackup, their owner
    references removed so that garbage collection leaves them. Idempotent. Returns what it
    kept."""
    metadata = body.get("metadata") or {}
    namespace, slug = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    final = names.final_backup_name(slug, str(metadata.get("uid") or ""))
    snapshot: Snapshot | None = lookup(indexes, BACKUPS_INDEX, (namespace, final))
    if snapshot is None:
        document = {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND_BACKUP,
            "metadata": {
                "name": final,
                "namespace": namespace,
                "labels": names.common_labels(slug, names.COMPONENT_BACKUP),
            },
            "spec": {"database": slug},
        }
        with existing_is_fine():
            api.create(document)
        raise kopf.TemporaryError(f"taking the final backup {final}", delay=WAIT_SECONDS)
    if snapshot.phase == FAILED:
        raise kopf.TemporaryError(
            f"the final backup {final} failed: {snapshot.status.get('message')}; the database "
            f"is kept. Fix the cause and delete DatabaseBackup {final} to take it again, or set "
            f"spec.deletionPolicy to Delete or Retain to delete without it",
            delay=FAILED_SNAPSHOT_SECONDS,
        )
    if snapshot.phase != SUCCEEDED:
        raise kopf.TemporaryError(
            f"waiting for the final backup {final} ({snapshot.phase or 'starting'})",
            delay=WAIT_SECONDS,
        )
    api.delete(resources.CLAIM, namespace, names.data_claim_name(slug))
    kept = []
    claim = names.backups_volume_name(slug)
    found = api.get(resources.CLAIM, namespace, claim)
    if found is not None:
        if (found.get("metadata") or {}).get("ownerReferences"):
            api.patch(resources.CLAIM, namespace, claim, {"metadata": {"ownerReferences": None}})
        kept.append(f"PersistentVolumeClaim/{claim}")
    uid = str(metadata.get("uid") or "")
    for backup in _backups_of(indexes, namespace, slug):
        if uid in backup.owner_uids:
            api.patch(
                resources.DATABASE_BACKUP,
                namespace,
                backup.name,
                {"metadata": {"ownerReferences": None}},
            )
        kept.append(f"{names.KIND_BACKUP}/{backup.name}")
    return kept


def _backups_of(indexes: Mapping[str, Any], namespace: str, slug: str) -> list[Snapshot]:
    found = [
        snapshot
        for snapshot in values(indexes, BACKUPS_INDEX)
        if snapshot.namespace == namespace and snapshot.database == slug
    ]
    return sorted(found, key=lambda s: s.name)


# ---------------------------------------------------------------- registration


def register_backups(registry: kopf.OperatorRegistry) -> None:
    """Register the backup and restore handlers, and the indexes they read (after
    `handlers.register`, whose start-up puts the API client in memo["api"])."""
    register_indexes(registry)

    def backup_created(body: kopf.Body, memo: Any, logger: Logger, **kwargs: Any) -> None:
        with as_kopf_errors():
            done = start_backup(memo["api"], body, kwargs)
        if done:
            logger.info("%s", done)

    for decorator, handler_id in (
        (kopf.on.create, "backup-on-create"),
        (kopf.on.resume, "backup-on-resume"),
    ):
        decorator(*BACKUPS, id=handler_id, registry=registry)(backup_created)

    @kopf.timer(
        *BACKUPS,
        id="backup-poll",
        interval=POLL_SECONDS,
        initial_delay=POLL_SECONDS,
        when=unfinished,
        registry=registry,
    )
    def backup_poll(
        namespace: str | None, status: kopf.Status, memo: Any, logger: Logger, **kwargs: Any
    ) -> None:
        key = (namespace or "", str(status.get("job")))
        job: JobState | None = lookup(kwargs, JOBS_INDEX, key)
        if job is not None and job.kind == names.JOB_BACKUP:
            with as_kopf_errors():
                sync_backup_job(memo["api"], job, kwargs, logger)

    @kopf.on.delete(*BACKUPS, id="backup-forget", registry=registry)
    def backup_deleted(body: kopf.Body, memo: Any, logger: Logger, **kwargs: Any) -> None:
        with as_kopf_errors():
            stop_run(memo["api"], body, kwargs, logger)
            forget_backup(memo["api"], body, kwargs, logger)

    @kopf.on.event(*JOBS, id="job-progress", labels=OURS, registry=registry)
    def job_progress(
        body: kopf.Body, type: str | None, memo: Any, logger: Logger, **kwargs: Any
    ) -> None:
        if type == "DELETED":
            return
        job = job_state(body)
        try:
            if job.kind == names.JOB_BACKUP:
                sync_backup_job(memo["api"], job, kwargs, logger)
            elif job.kind == names.JOB_RESTORE:
                restore_handlers.sync_restore_job(memo["api"], job, kwargs, logger)
        except CALL_ERRORS as e:
            # An event handler is not retried: the poll of the unfinished object catches up.
            logger.warning("could not record Job %s's progress yet: %s", job.name, e)

    restore_handlers.register_restores(registry)
