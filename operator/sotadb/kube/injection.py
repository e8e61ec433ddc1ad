"""Database injection into apps' Deployments and StatefulSets: the handler (thin).

The user's side: annotate a Deployment or StatefulSet with `sota.io/database: "true"` (the
database is named after the workload) or `sota.io/database: <name>`. The workload gets a
ManagedDatabase if none exists (never modified, never deleted by us: removing the annotation or
the workload keeps it), and its pod template the injection that `sotadb.render.injection`
describes: envFrom the app Secret, the direct-access label, the wait-for-database init container.
Removing the annotation takes the injection out again; `sota.io/injected` remembers what it was.

Mechanism: a strategic merge patch with its own field manager (`sotadb-injector`), sent by the
operator when a workload's watch event (the operator's own watch: kube/workloads.py) shows a
difference. No admission webhook: nothing to serve, no certificates, no failurePolicy to
choose; it installs like the rest of the operator. The price is one rollout step: a workload
created without the injection is patched a moment later, so its first ReplicaSet may start
pods that are replaced at once.

Level-based, and quiet: each watch event (no finalizer, no progress or diff-base annotations on
the user's objects: kopf does not handle workloads at all) compares the live pod template with
the wanted one (`injection.plan`); equal means no request at all, so an idle operator and our
own patch's echo send nothing. A different one is patched with the event's resourceVersion as
a precondition: a 409 means the workload changed meanwhile and its newer event follows, so a
stale event can never overwrite the user's newer envFrom. Retryable failures are retried after
`handlers.RETRY_DELAY` from memory (a kopf timer would put a finalizer on the user's object).
The Events on the workload are posted by `kube/events.py`.

GitOps, why it does not fight:
- `kubectl apply` (client-side; Argo CD's default) patches the difference between its
  last-applied annotation and the new manifest, plus the fields the manifest sets that differ
  live. Our label, our init container (lists merged by name) and envFrom on containers that
  declare none are never in the manifest: it leaves them, and we write nothing.
- `kubectl apply --server-side` (Flux's way) leaves fields that another field manager owns,
  and ours are owned by `sotadb-injector`: the label and the init container are granular
  (a map, a list keyed by name), so the applier never touches them.
- A container that declares its own envFrom in Git shares that list with us (envFrom has no
  merge key; for server-side apply it is atomic, so a forced apply takes it over): an apply that
  sends the list drops our entry and we add it back, one patch per such apply, never a loop.
  To avoid even that, list `secretRef: {name: sota-db-<slug>-app}` in that container yourself:
  a container that references the Secret is left alone.
- `kubectl replace` (or any tool that replaces) drops everything we added, annotation included:
  we inject again, one patch per replace. The tests count these writes.

Scope: the annotation cannot be filtered on by the API server, so with the injection registered
the operator lists and watches every Deployment and StatefulSet it can see (kube/workloads.py
reduces each at once and hands only annotated ones here). Call `register_injection` before
the operator runs `registry`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

import kopf

from sotadb import names
from sotadb.kube import handlers, resources, workloads
from sotadb.kube.api import ApiError, KubeApi, is_retryable
from sotadb.kube.databases import Databases
from sotadb.kube.events import reference
from sotadb.kube.handlers import OperatorConfig
from sotadb.kube.workloads import Context
from sotadb.render import injection

FIELD_MANAGER: Final = "sotadb-injector"
# How long a database this operator created or found counts as existing without the watch
# showing it (it shows it within milliseconds; a deleted one is created again after).
CONFIRMED_FOR: Final = 60.0
Logger = logging.Logger | logging.LoggerAdapter[Any]
Key = tuple[str, str, str]  # kind, namespace, name
_log = logging.getLogger(__name__)


def register_injection(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Register the injection as the workload handler of the operator that runs `registry`."""
    injector = Injector(config)
    workloads.register_handler(registry, injector)

    @kopf.on.cleanup(registry=registry)
    def cancel_retries(**_: Any) -> None:
        injector.cancel_all()


class ObjectLogger(logging.LoggerAdapter[logging.Logger]):
    """Log lines prefixed with the workload, as kopf prefixes its handlers' lines."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[{(self.extra or {}).get('where')}] {msg}", kwargs


class Injector:
    """The handler, and what it remembers between events: retries due, warnings posted."""

    def __init__(self, config: OperatorConfig) -> None:
        self.image = config.images.pooler
        self._retries: dict[Key, asyncio.Task[None]] = {}
        self._warned: set[tuple[str, str, str]] = set()  # uid, reason, message
        self._confirmed: dict[tuple[str, str], float] = {}  # (namespace, slug) → when seen

    def concerns(self, body: Mapping[str, Any]) -> bool:
        return injection.concerns_injection(body)

    async def on_event(self, event: str | None, body: Mapping[str, Any], context: Context) -> None:
        workload = copy.deepcopy(dict(body))
        metadata = workload.get("metadata") or {}
        key = (str(workload.get("kind")), str(metadata.get("namespace")), str(metadata.get("name")))
        self._cancel(key)  # this event is newer than what a pending retry would use
        if event == "DELETED" or metadata.get("deletionTimestamp"):
            self._forget_warnings(workload)
            return  # the database stays: it is never deleted for a workload
        logger = ObjectLogger(_log, {"where": f"{key[1]}/{key[2]}"})
        await self._converge(key, workload, context, logger)

    async def _converge(
        self, key: Key, workload: dict[str, Any], context: Context, logger: Logger
    ) -> None:
        done = await asyncio.to_thread(self.converge, workload, context, logger)
        if not done:
            self._retry_later(key, workload, context, logger)

    def converge(self, workload: dict[str, Any], context: Context, logger: Logger) -> bool:
        """Observe → plan → apply for one workload. False: a retryable failure, try again."""
        metadata = workload["metadata"]
        namespace, name, kind = metadata["namespace"], metadata["name"], workload["kind"]
        api = context.api
        try:
            plan = injection.plan(workload, self.image)
        except injection.InvalidAnnotation as e:
            self._warn_once(context, workload, "InvalidDatabaseAnnotation", str(e))
            return True
        self._forget_warnings(workload)
        try:
            if plan.database is not None and self._ensure_database(
                api, namespace, plan.database, f"{kind}/{name}", context.databases
            ):
                logger.info("created ManagedDatabase %s for %s/%s", plan.database, kind, name)
                _event(
                    context, workload, "DatabaseCreated", f"created ManagedDatabase {plan.database}"
                )
            if plan.patch is None:
                return True
            patch = copy.deepcopy(plan.patch)
            # A precondition: a stale event must not overwrite a newer template.
            patch.setdefault("metadata", {})["resourceVersion"] = metadata["resourceVersion"]
            _patch_workload(api, kind, namespace, name, patch)
        except ApiError as e:
            if e.status in (404, 409):
                return True  # deleted, or changed meanwhile: its newer event follows
            if is_retryable(e):
                logger.warning("injection into %s/%s failed, will retry: %s", kind, name, e)
                return False
            self._warn_once(context, workload, "InjectionFailed", str(e))
            return True
        message = (
            f"injected database {plan.database}: envFrom {names.app_secret_name(plan.database)}, "
            f"label {names.direct_access_label(plan.database)}, "
            f"init container {injection.WAIT_CONTAINER}"
            if plan.database is not None
            else "removed the database injection (the database is kept)"
        )
        logger.info("%s/%s: %s", kind, name, message)
        reason = "DatabaseInjected" if plan.database else "DatabaseInjectionRemoved"
        _event(context, workload, reason, message)
        return True

    def _ensure_database(
        self,
        api: KubeApi,
        namespace: str,
        slug: str,
        created_for: str,
        databases: Databases,
    ) -> bool:
        """Create the ManagedDatabase unless it exists; True if this call created it. An existing
        one (in the operator's watch, or a 409) is left exactly as it is. One just created or
        found is not posted again while the watch catches up (our patch's echo comes first)."""
        key = (namespace, slug)
        if key in databases:
            return False
        if time.monotonic() - self._confirmed.get(key, -CONFIRMED_FOR) < CONFIRMED_FOR:
            return False
        document = {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND_DATABASE,
            "metadata": {
                "name": slug,
                "namespace": namespace,
                "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY},
                "annotations": {injection.ANNOTATION_CREATED_FOR: created_for},
            },
        }
        try:
            api.create(document)
        except ApiError as e:
            if e.status != 409:
                raise
            created = False
        else:
            created = True
        self._confirmed[key] = time.monotonic()
        return created

    # ---------------------------------------------------------------- retries and warnings

    def _retry_later(
        self, key: Key, workload: dict[str, Any], context: Context, logger: Logger
    ) -> None:
        async def later() -> None:
            await asyncio.sleep(handlers.RETRY_DELAY)
            self._retries.pop(key, None)
            await self._converge(key, workload, context, logger)

        self._cancel(key)
        self._retries[key] = asyncio.get_running_loop().create_task(
            later(), name=f"sotadb injection retry {'/'.join(key)}"
        )

    def _cancel(self, key: Key) -> None:
        task = self._retries.pop(key, None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        for key in list(self._retries):
            self._cancel(key)

    def _warn_once(
        self, context: Context, workload: dict[str, Any], reason: str, message: str
    ) -> None:
        """A Warning Event on the workload, once per reason and message: the workload's status
        updates must not repeat it."""
        remembered = (str(workload["metadata"].get("uid")), reason, message)
        if remembered not in self._warned:
            self._warned.add(remembered)
            context.events.post(reference(workload), type="Warning", reason=reason, message=message)

    def _forget_warnings(self, workload: dict[str, Any]) -> None:
        uid = str(workload["metadata"].get("uid"))
        self._warned = {w for w in self._warned if w[0] != uid}


def _event(context: Context, workload: dict[str, Any], reason: str, message: str) -> None:
    context.events.post(reference(workload), type="Normal", reason=reason, message=message)


def _patch_workload(
    api: KubeApi, kind: str, namespace: str, name: str, patch: dict[str, Any]
) -> dict[str, Any]:
    if kind == resources.STATEFUL_SET.kind:
        return api.strategic_patch(
            resources.STATEFUL_SET, namespace, name, patch, field_manager=FIELD_MANAGER
        )
    return api.strategic_patch(
        resources.DEPLOYMENT, namespace, name, patch, field_manager=FIELD_MANAGER
    )
