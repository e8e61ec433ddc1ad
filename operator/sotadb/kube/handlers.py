"""kopf wiring: thin handlers around the level-based reconcile.

- A lean list-and-watch of our own (kube/watch.py → kube/owned.py) keeps a small snapshot of
  every object we own: a reconcile reads nothing it owns, and an idle resync sends no request.
  kopf itself watches only ManagedDatabases and the workloads (readiness, injection).
- One reconcile, triggered by create, update, resume and a timer.
- Workload events (StatefulSet/Deployment) update the owner's status: readiness is watched,
  never polled.
- Deletion runs behind a finalizer and honours spec.deletionPolicy.
Errors map to kopf's Permanent/Temporary errors here, and only here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, cast

import aiohttp
import kopf
import urllib3

from sotadb import names
from sotadb.errors import ForbiddenChange, InvalidSpec
from sotadb.kube import resources, status
from sotadb.kube.api import ApiError, KubeApi, is_retryable, load_configuration
from sotadb.kube.backup_handlers import snapshot_before_delete
from sotadb.kube.observe import Observed, instance_key, observe
from sotadb.kube.owned import OwnedObjects
from sotadb.kube.reconcile import Reconciler, now
from sotadb.kube.watch import Gone, OwnedWatch, Transport
from sotadb.render import Images
from sotadb.spec import DeletionPolicy

DATABASE_INDEX: Final = "databases"
RETRY_DELAY: Final = 5.0
# What a call to the API raises: its answers (ApiError) and a broken connection (urllib3,
# OSError). `is_retryable` decides which are tried again soon.
CALL_ERRORS: Final = (ApiError, urllib3.exceptions.HTTPError, OSError)
MANAGED: Final = {names.LABEL_MANAGED_BY: names.MANAGED_BY}
MANAGED_SELECTOR: Final = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
DATABASES: Final = (names.GROUP, names.VERSION, names.PLURAL_DATABASE)
# What kopf watches of ours besides ManagedDatabases: readiness follows these two. (A CronJob's
# existence only sets BackupsScheduled, which each reconcile reports.)
WORKLOADS: Final = (resources.STATEFUL_SET, resources.DEPLOYMENT)
Logger = logging.Logger | logging.LoggerAdapter[Any]


@dataclass
class OperatorConfig:
    images: Images = field(default_factory=Images)
    kubeconfig: str | None = None
    resync_seconds: float = 300.0
    inject: bool = True  # DATABASE_URL injection into annotated workloads (kube/injection.py)
    namespaces: tuple[str, ...] = ()  # as given to kopf; () for all namespaces


@dataclass(frozen=True)
class DatabaseSnapshot:
    """What workload events need of their owner, kept current by a kopf index."""

    reference: dict[str, Any]  # apiVersion, kind, name, namespace, uid: enough for an Event
    status: dict[str, Any]
    backups_enabled: bool
    deleting: bool


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
        # Lists in pages: a page's bodies are decoded at once (1,000 StatefulSets in one
        # answer were ~10 MB of JSON, and its decoded dicts several times that).
        settings.watching.chunk_size = 250
        # Filter the workloads kopf watches on the server. With injection on, every
        # Deployment and StatefulSet is watched (an annotation cannot be selected on the
        # server); the status handlers below still take only ours.
        for resource in WORKLOADS:
            if config.inject and resource in (resources.DEPLOYMENT, resources.STATEFUL_SET):
                continue
            selector = (resource.group, resource.version, resource.plural)
            settings.watching.label_selectors[selector] = MANAGED_SELECTOR
        memo["api"] = KubeApi(load_configuration(config.kubeconfig))

    @kopf.on.startup(registry=registry)
    async def watch_owned(memo: Any, **_: Any) -> None:
        """List every owned object before any handler runs (kopf starts its watches only
        after the startup handlers), then keep the snapshots current from watches."""
        api: KubeApi = memo["api"]
        watch = OwnedWatch(
            Transport(api.connection, api.user_agent),
            OwnedObjects(),
            selector=MANAGED_SELECTOR,
            namespaces=config.namespaces,
        )
        try:
            await watch.start()
        except (*CALL_ERRORS, TimeoutError, ValueError, aiohttp.ClientError, Gone) as e:
            await watch.stop()
            raise kopf.TemporaryError(f"listing owned objects: {e}", delay=RETRY_DELAY) from None
        memo["owned"] = watch.objects
        memo["owned_watch"] = watch

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        """The same credentials our own client uses (in-cluster, or the given kubeconfig)."""
        return connection_info(config.kubeconfig)

    @kopf.on.cleanup(registry=registry)
    async def close(memo: Any, **_: Any) -> None:
        watch = memo.get("owned_watch")
        if isinstance(watch, OwnedWatch):
            await watch.stop()
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
            kopf.event(body, type="Normal", reason="Ready", message=_ready_message(name))

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

    @kopf.index(*DATABASES, id=DATABASE_INDEX, registry=registry)
    def database_snapshot(body: kopf.Body, **_: Any) -> dict[tuple[str, str], DatabaseSnapshot]:
        metadata = body.get("metadata") or {}
        backups = ((body.get("spec") or {}).get("backups") or {}).get("enabled", True)
        reference = {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": {k: metadata.get(k) for k in ("name", "namespace", "uid")},
        }
        snapshot = DatabaseSnapshot(
            reference=reference,
            status=dict(body.get("status") or {}),
            backups_enabled=bool(backups),
            deleting=bool(metadata.get("deletionTimestamp")),
        )
        return {(str(metadata.get("namespace")), str(metadata.get("name"))): snapshot}

    async def workload_changed(
        body: kopf.Body, type: str | None, memo: Any, logger: Logger, **kwargs: Any
    ) -> None:
        """A StatefulSet or Deployment of ours changed: refresh its owner's status.

        Async, and in the event loop: most events change nothing (a few dict look-ups). As a
        sync handler each event waited in kopf's thread pool holding its body, its kwargs and
        kopf's per-event state; at 1,000 databases ~2,700 waited at once (~40 MB)."""
        key = instance_key(body)
        api = memo.get("api")
        owners = kwargs.get(DATABASE_INDEX)
        if key is None or not isinstance(api, KubeApi) or owners is None or key not in owners:
            return
        namespace, slug = key
        (owner,) = owners[key]
        current = owner.status
        if owner.deleting or current.get("phase") in (None, status.PHASE_FAILED):
            return  # the reconcile reports first (and a failed spec keeps its reason)
        observed = observed_for(namespace, slug, memo)
        # The owned-object watch may not hold this very event yet: take the event's own body.
        event = observe(body)
        snapshots = [
            o for o in observed.objects.values() if (o.kind, o.name) != (event.kind, event.name)
        ]
        observed = Observed.of(snapshots if type == "DELETED" else [*snapshots, event])
        conditions = status.workload_conditions(slug, observed, owner.backups_enabled)
        phase = status.PHASE_READY if conditions[0].status else status.PHASE_PROVISIONING
        patch = status.status_patch(
            current=current,
            phase=phase,
            conditions=conditions,
            generation=current.get("observedGeneration"),
            secret_name=names.app_secret_name(slug),
            now=now(),
        )
        if not patch:
            return
        await asyncio.to_thread(
            api.patch,
            resources.MANAGED_DATABASE,
            namespace,
            slug,
            {"status": patch},
            subresource="status",
        )
        if phase == status.PHASE_READY and current.get("phase") != status.PHASE_READY:
            logger.info("%s/%s is ready", namespace, slug)
            kopf.event(
                kopf.Body(cast(Any, owner.reference)),
                type="Normal",
                reason="Ready",
                message=_ready_message(slug),
            )

    for resource in WORKLOADS:
        kopf.on.event(
            group=resource.group,
            version=resource.version,
            plural=resource.plural,
            id=f"status-from-{resource.plural}",
            labels=MANAGED,
            registry=registry,
        )(workload_changed)

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


def _ready_message(slug: str) -> str:
    return (
        f"PostgreSQL and PgBouncer are ready; DATABASE_URL is in Secret "
        f"{names.app_secret_name(slug)}"
    )
