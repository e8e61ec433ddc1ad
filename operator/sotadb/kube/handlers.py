"""kopf wiring: thin handlers around the level-based reconcile.

- Indexes (one per owned kind) keep a snapshot of every object we own, from watches: a
  reconcile reads nothing it owns, and an idle resync sends no request at all.
- One reconcile, triggered by create, update, resume and a timer.
- Workload events (StatefulSet/Deployment/CronJob) update the owner's status: readiness is
  watched, never polled.
- Deletion runs behind a finalizer and honours spec.deletionPolicy.
Errors map to kopf's Permanent/Temporary errors here, and only here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

import kopf
import urllib3

from sotadb import names
from sotadb.errors import ForbiddenChange, InvalidSpec
from sotadb.kube import resources, status
from sotadb.kube.api import ApiError, KubeApi, is_retryable, load_configuration
from sotadb.kube.observe import Observed, ObservedObject, instance_key, observe
from sotadb.kube.reconcile import Reconciler, now
from sotadb.render import Images
from sotadb.spec import DeletionPolicy

INDEX_PREFIX: Final = "owned_"
DATABASE_INDEX: Final = "databases"
RETRY_DELAY: Final = 5.0
# What a call to the API raises: its answers (ApiError) and, from the `kubernetes` client,
# a broken connection (urllib3, OSError). `is_retryable` decides which are tried again soon.
CALL_ERRORS: Final = (ApiError, urllib3.exceptions.HTTPError, OSError)
MANAGED: Final = {names.LABEL_MANAGED_BY: names.MANAGED_BY}
MANAGED_SELECTOR: Final = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
DATABASES: Final = (names.GROUP, names.VERSION, names.PLURAL_DATABASE)
Logger = logging.Logger | logging.LoggerAdapter[Any]


@dataclass
class OperatorConfig:
    images: Images = field(default_factory=Images)
    kubeconfig: str | None = None
    resync_seconds: float = 300.0
    inject: bool = True  # DATABASE_URL injection into annotated workloads (kube/injection.py)


@dataclass(frozen=True)
class DatabaseSnapshot:
    """What workload events need of their owner, kept current by a kopf index."""

    reference: dict[str, Any]  # apiVersion, kind, name, namespace, uid: enough for an Event
    status: dict[str, Any]
    backups_enabled: bool
    deleting: bool


def index_name(resource: resources.Resource) -> str:
    return f"{INDEX_PREFIX}{resource.plural}"


def observed_for(namespace: str, slug: str, indexes: Mapping[str, Any]) -> Observed:
    """Gather one database's snapshots from every owned-kind index."""
    snapshots: list[ObservedObject] = []
    for resource in resources.OWNED:
        index = indexes.get(index_name(resource))
        if index is not None and (namespace, slug) in index:
            snapshots.extend(index[(namespace, slug)])
    return Observed.of(snapshots)


def _owned_snapshot(body: kopf.Body, **_: Any) -> dict[tuple[str, str], ObservedObject]:
    key = instance_key(body)
    return {} if key is None else {key: observe(body)}


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
        # Filter owned kinds on the server: never stream every Secret in the cluster. With
        # injection on, every Deployment and StatefulSet is watched (an annotation cannot be
        # selected on the server); the owned-object index still keeps only ours.
        for resource in resources.OWNED:
            if config.inject and resource in (resources.DEPLOYMENT, resources.STATEFUL_SET):
                continue
            selector = (resource.group, resource.version, resource.plural)
            settings.watching.label_selectors[selector] = MANAGED_SELECTOR
        memo["api"] = KubeApi(load_configuration(config.kubeconfig))

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        """The same credentials our own client uses (in-cluster, or the given kubeconfig)."""
        return connection_info(config.kubeconfig)

    @kopf.on.cleanup(registry=registry)
    def close(memo: Any, **_: Any) -> None:
        api = memo.get("api")
        if isinstance(api, KubeApi):
            api.close()

    for resource in resources.OWNED:
        kopf.index(
            group=resource.group,
            version=resource.version,
            plural=resource.plural,
            id=index_name(resource),
            labels=MANAGED,
            registry=registry,
        )(_owned_snapshot)

    def reconcile(
        body: kopf.Body,
        namespace: str | None,
        name: str,
        patch: kopf.Patch,
        memo: Any,
        logger: Logger,
        **kwargs: Any,
    ) -> None:
        api: KubeApi = memo["api"]
        observed = observed_for(namespace or "", name, kwargs)
        try:
            outcome = Reconciler(api, config.images).reconcile(body, observed)
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

    def workload_changed(body: kopf.Body, memo: Any, logger: Logger, **kwargs: Any) -> None:
        """A StatefulSet, Deployment or CronJob of ours changed: refresh its owner's status."""
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
        observed = observed_for(namespace, slug, kwargs)
        # The index may not hold this very event yet: take the event's own body.
        observed = Observed.of([*observed.objects.values(), observe(body)])
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
        api.patch(
            resources.MANAGED_DATABASE, namespace, slug, {"status": patch}, subresource="status"
        )
        if phase == status.PHASE_READY and current.get("phase") != status.PHASE_READY:
            logger.info("%s/%s is ready", namespace, slug)
            kopf.event(
                kopf.Body(cast(Any, owner.reference)),
                type="Normal",
                reason="Ready",
                message=_ready_message(slug),
            )

    for resource in (resources.STATEFUL_SET, resources.DEPLOYMENT, resources.CRON_JOB):
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
        **_: Any,
    ) -> None:
        api: KubeApi = memo["api"]
        policy = spec.get("deletionPolicy", DeletionPolicy.RETAIN.value)
        try:
            kept = _apply_deletion_policy(api, namespace or "", name, policy)
        except CALL_ERRORS as e:
            if is_retryable(e):
                raise kopf.TemporaryError(str(e), delay=RETRY_DELAY) from None
            raise kopf.PermanentError(str(e)) from None
        logger.info("deleted with policy %s; kept: %s", policy, ", ".join(kept) or "nothing")


def connection_info(kubeconfig: str | None) -> kopf.ConnectionInfo:
    configuration = load_configuration(kubeconfig)
    authorization = (configuration.api_key or {}).get("authorization") or ""
    scheme, _, token = authorization.partition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
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
