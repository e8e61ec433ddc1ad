"""kopf wiring: thin handlers around the level-based reconcile.

- A lean list-and-watch of our own (kube/watch.py) keeps a small snapshot of every object we
  own (kube/owned.py) and of every database (kube/databases.py): a reconcile reads nothing it
  owns, and an idle resync sends no request. Of the kinds we handle, kopf watches only the
  ManagedDatabases (and backups, restores, Jobs: backup_handlers.py).
- One reconcile, triggered by create, update, resume and a timer.
- Workload events (StatefulSet/Deployment), from the same lean watch, update the owner's
  status (kube/workloads.py): readiness is watched, never polled.
- Deletion runs behind a finalizer and honours spec.deletionPolicy.
Errors map to kopf's Permanent/Temporary errors here, and only here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import kopf
import urllib3

from sotadb import names
from sotadb.errors import ForbiddenChange, InvalidSpec
from sotadb.kube import resources, status
from sotadb.kube.api import ApiError, KubeApi, is_retryable, load_configuration
from sotadb.kube.backup_handlers import snapshot_before_delete
from sotadb.kube.databases import Databases
from sotadb.kube.events import EventPoster
from sotadb.kube.observe import Observed
from sotadb.kube.owned import OwnedObjects
from sotadb.kube.reconcile import Reconciler, now
from sotadb.kube.watch import Gone, Kind, ListWatch, Transport
from sotadb.kube.workloads import Context, Workloads, handler_for
from sotadb.render import Images
from sotadb.spec import DeletionPolicy

RETRY_DELAY: Final = 5.0
# What a call to the API raises: its answers (ApiError) and a broken connection (urllib3,
# OSError). `is_retryable` decides which are tried again soon.
CALL_ERRORS: Final = (ApiError, urllib3.exceptions.HTTPError, OSError)
MANAGED_SELECTOR: Final = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
DATABASES: Final = (names.GROUP, names.VERSION, names.PLURAL_DATABASE)
# Readiness follows these two (kube/workloads.py); a CronJob's existence only sets
# BackupsScheduled, which each reconcile reports.
WORKLOADS: Final = (resources.STATEFUL_SET, resources.DEPLOYMENT)
Logger = logging.Logger | logging.LoggerAdapter[Any]


@dataclass
class OperatorConfig:
    images: Images = field(default_factory=Images)
    kubeconfig: str | None = None
    resync_seconds: float = 300.0
    # DATABASE_URL injection into annotated workloads, once kube/injection.py is registered:
    # then every Deployment and StatefulSet is watched, not only ours.
    inject: bool = True
    namespaces: tuple[str, ...] = ()  # as given to kopf; () for all namespaces


def observed_for(namespace: str, slug: str, memo: Any) -> Observed:
    """One database's owned objects, as the owned-object watch last saw them."""
    owned: OwnedObjects = memo["owned"]
    return owned.observed(namespace, slug)


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Register every handler on `registry` (a fresh one in tests)."""

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        # Progress and diff-base in annotations under our own prefix; nothing in status.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=names.GROUP, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{names.GROUP}/finalizer"
        settings.posting.level = logging.WARNING  # Events only for what we post ourselves
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.inactivity_timeout = 600
        # Lists in pages: a page's bodies are decoded at once (1,000 objects in one answer
        # were ~10 MB of JSON, and its decoded dicts several times that).
        settings.watching.chunk_size = 250
        memo["api"] = KubeApi(load_configuration(config.kubeconfig))

    @kopf.on.startup(registry=registry)
    async def watch_owned(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        """List every owned object, database and workload before any handler runs (kopf
        starts its watches only after the startup handlers), then keep the snapshots current
        from watches. An annotation cannot be selected on the server: with the injection on,
        every workload is listed and watched, and reduced at once."""
        api: KubeApi = memo["api"]
        owned, databases = OwnedObjects(), Databases()
        handler = handler_for(registry) if config.inject else None
        workloads = Workloads(owned, databases, handler)
        workload_selector = "" if handler is not None else MANAGED_SELECTOR
        kinds = [
            *(Kind(r, MANAGED_SELECTOR, owned) for r in resources.OWNED if r not in WORKLOADS),
            *(Kind(r, workload_selector, workloads) for r in WORKLOADS),
            Kind(resources.MANAGED_DATABASE, "", databases),
        ]
        watch = ListWatch(
            Transport(api.connection, api.user_agent), kinds, namespaces=config.namespaces
        )
        try:
            await watch.start()
        except (*CALL_ERRORS, TimeoutError, ValueError, aiohttp.ClientError, Gone) as e:
            await watch.stop()
            raise kopf.TemporaryError(f"listing owned objects: {e}", delay=RETRY_DELAY) from None
        posting = settings.posting
        events = EventPoster(
            api,
            component=posting.reporting_component,
            instance=posting.reporting_instance,
            prefix=posting.event_name_prefix,
            enabled=posting.enabled,
        )
        workloads.activate(Context(api, databases, events))
        memo["owned"] = owned
        memo["owned_watch"] = watch
        memo["workloads"] = workloads

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        """The same credentials our own client uses (in-cluster, or the given kubeconfig)."""
        return connection_info(config.kubeconfig)

    @kopf.on.cleanup(registry=registry)
    async def close(memo: Any, **_: Any) -> None:
        watch = memo.get("owned_watch")
        if isinstance(watch, ListWatch):
            await watch.stop()
        workloads = memo.get("workloads")
        if isinstance(workloads, Workloads):
            await workloads.stop()
        api = memo.get("api")
        if isinstance(api, KubeApi):
            api.close()

    async def reconcile(
        body: kopf.Body,
        namespace: str | None,
        name: str,
        patch: kopf.Patch,
        memo: Any,
        logger: Logger,
        **kwargs: Any,
    ) -> None:
        api: KubeApi = memo["api"]
        observed = observed_for(namespace or "", name, memo)
        reconciler = Reconciler(api, config.images)
        try:
            plan = reconciler.plan(body, observed)
            # Most reconciles (resyncs, a restart's resumes) write nothing: they finish here,
            # on the event loop (a thousand resumes queued in a thread pool each held their
            # body and kopf's per-event state at once). One that writes is planned again in
            # its thread: a rendered plan waiting in the queue would hold a dozen manifests.
            if plan.needs_writes:
                del plan
                outcome = await asyncio.to_thread(reconciler.reconcile, body, observed)
            else:
                outcome = reconciler.apply(plan)
        except InvalidSpec as e:
            _report_failure(body, patch, e)
            raise kopf.PermanentError(str(e)) from None
        except CALL_ERRORS as e:
            if is_retryable(e):
                raise kopf.TemporaryError(str(e), delay=RETRY_DELAY) from None
            raise kopf.PermanentError(str(e)) from None
        if outcome.written:
            logger.info("applied %s", ", ".join(outcome.written))
        for key, value in outcome.status.items():
            patch.status[key] = value
        became_ready = outcome.status.get("phase") == status.PHASE_READY
        if became_ready and (body.get("status") or {}).get("phase") != status.PHASE_READY:
            # kopf.event, not kopf.info: posting.level (WARNING) would drop an INFO event.
            kopf.event(body, type="Normal", reason="Ready", message=status.ready_message(name))

    for decorator, handler_id in (
        (kopf.on.create, "reconcile-on-create"),
        (kopf.on.update, "reconcile-on-update"),
        (kopf.on.resume, "reconcile-on-resume"),
    ):
        decorator(*DATABASES, id=handler_id, registry=registry)(reconcile)
    kopf.timer(
        *DATABASES,
        id="resync",
        interval=config.resync_seconds,
        initial_delay=config.resync_seconds,
        registry=registry,
    )(reconcile)

    @kopf.on.delete(*DATABASES, id="delete", registry=registry)
    def delete(
        body: kopf.Body,
        spec: kopf.Spec,
        namespace: str | None,
        name: str,
        memo: Any,
        logger: Logger,
        **kwargs: Any,
    ) -> None:
        api: KubeApi = memo["api"]
        policy = spec.get("deletionPolicy", DeletionPolicy.RETAIN.value)
        try:
            if policy == DeletionPolicy.SNAPSHOT.value:  # waits for a final backup first
                kept = snapshot_before_delete(api, body, kwargs)
            else:
                kept = _apply_deletion_policy(api, namespace or "", name, policy)
        except CALL_ERRORS as e:
            if is_retryable(e):
                raise kopf.TemporaryError(str(e), delay=RETRY_DELAY) from None
            raise kopf.PermanentError(str(e)) from None
        logger.info("deleted with policy %s; kept: %s", policy, ", ".join(kept) or "nothing")


def connection_info(kubeconfig: str | None) -> kopf.ConnectionInfo:
    connection = load_configuration(kubeconfig)
    authorization = connection.authorization() or ""
    scheme, _, token = authorization.partition(" ")
    return kopf.ConnectionInfo(
        server=connection.server,
        ca_path=connection.ca_path,
        insecure=connection.insecure,
        scheme=scheme or None,
        token=token or None,
        certificate_path=connection.certificate_path,
        private_key_path=connection.private_key_path,
        default_namespace=None,
    )


def _apply_deletion_policy(api: KubeApi, namespace: str, slug: str, policy: str) -> list[str]:
    """Idempotent, so an operator killed midway finishes on the next attempt: Retain orphans
    the data and credentials (garbage collection then leaves them); Delete removes the data
    volume, which has no owner, and lets garbage collection take the rest."""
    claim = names.data_claim_name(slug)
    if policy == DeletionPolicy.DELETE.value:
        api.delete(resources.CLAIM, namespace, claim)
        return []
    kept = []
    for resource, name in _retained(slug):
        found = api.get(resource, namespace, name)
        if found is None:
            continue
        if (found.get("metadata") or {}).get("ownerReferences"):
            api.patch(resource, namespace, name, {"metadata": {"ownerReferences": None}})
        kept.append(f"{resource.kind}/{name}")
    return kept


def _retained(slug: str) -> Iterable[tuple[resources.Resource, str]]:
    yield resources.SECRET, names.app_secret_name(slug)
    yield resources.SECRET, names.auth_secret_name(slug)
    yield resources.CLAIM, names.data_claim_name(slug)
    yield resources.CLAIM, names.backups_volume_name(slug)


def _report_failure(body: kopf.Body, patch: kopf.Patch, error: InvalidSpec) -> None:
    reason = "ForbiddenChange" if isinstance(error, ForbiddenChange) else "InvalidSpec"
    current = body.get("status") or {}
    update = status.status_patch(
        current=current,
        phase=status.PHASE_FAILED,
        conditions=status.failed_conditions(reason, str(error)),
        generation=(body.get("metadata") or {}).get("generation"),
        secret_name=current.get("secretName"),
        now=now(),
    )
    for key, value in update.items():
        patch.status[key] = value
    if update:
        kopf.warn(body, reason=reason, message=str(error))
