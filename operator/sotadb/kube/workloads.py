"""StatefulSet and Deployment events, from the operator's own watch (`kube/watch.py`): a
database's readiness, and the injection into apps' workloads (`kube/injection.py`).

kopf does not watch workloads: at 1,000 databases its per-object workers, each holding a
listed body until every index was complete, were the largest part of a restarted operator's
memory. Here a workload's body is reduced at once: ours to its snapshot (`kube/owned.py`),
an annotated one (few) kept for the injection, any other dropped.

- Ours: the owner's status follows the ready replicas of its StatefulSet and Deployment
  (watched, never polled). Most events change nothing, which is decided without a request.
- Annotated (`injection.concerns_injection`): handed to the registered `WorkloadHandler`.

Like kopf, one object's events are handled one at a time; unlike kopf, an event that waited is
replaced by a newer one of the same object (both handlers are level-based: they read the
current state, not the event). Nothing is handled until every kind's first list is in
(`activate`): a StatefulSet listed before its Deployment must not report that one missing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import kopf
import urllib3

from sotadb import names
from sotadb.kube import resources, status
from sotadb.kube.api import ApiError, KubeApi
from sotadb.kube.databases import Databases
from sotadb.kube.events import EventPoster
from sotadb.kube.observe import instance_key
from sotadb.kube.owned import Instance, OwnedObjects, Reduced
from sotadb.kube.reconcile import now

KINDS: Final = (resources.STATEFUL_SET, resources.DEPLOYMENT)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """What a workload handler may use: the operator's client, the databases, Events."""

    api: KubeApi
    databases: Databases
    events: EventPoster


class WorkloadHandler(Protocol):
    def concerns(self, body: Mapping[str, Any]) -> bool:
        """Whether this workload is the handler's (cheap: it runs on every event)."""
        ...

    async def on_event(self, event: str | None, body: Mapping[str, Any], context: Context) -> None:
        """One event (None: listed); `body` is not shared with anything else."""
        ...


_HANDLERS: Final[weakref.WeakKeyDictionary[kopf.OperatorRegistry, WorkloadHandler]] = (
    weakref.WeakKeyDictionary()
)


def register_handler(registry: kopf.OperatorRegistry, handler: WorkloadHandler) -> None:
    """The workload handler of the operator that runs `registry` (the injection's)."""
    _HANDLERS[registry] = handler


def handler_for(registry: kopf.OperatorRegistry) -> WorkloadHandler | None:
    return _HANDLERS.get(registry)


class Serial:
    """At most one task per key; work submitted meanwhile waits, and newer work replaces
    waiting work (latest wins)."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[None]] = {}
        self._waiting: dict[Hashable, Callable[[], Awaitable[None]]] = {}

    def submit(self, key: Hashable, work: Callable[[], Awaitable[None]]) -> None:
        if key in self._running:
            self._waiting[key] = work
            return
        self._running[key] = asyncio.get_running_loop().create_task(
            self._run(key, work), name=f"sotadb workload {key}"
        )

    def __len__(self) -> int:
        return len(self._running)

    async def _run(self, key: Hashable, work: Callable[[], Awaitable[None]]) -> None:
        try:
            while True:
                try:
                    await work()
                except Exception:  # one object's failure must not end the others' handling
                    logger.exception("handling %s failed", key)
                next_work = self._waiting.pop(key, None)
                if next_work is None:
                    return
                work = next_work
        finally:
            self._running.pop(key, None)

    async def stop(self) -> None:
        self._waiting.clear()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class Listed:
    """A listed workload, as kept until its list is complete."""

    owned: Reduced | None  # ours
    body: Mapping[str, Any] | None  # the handler's


class Workloads:
    """A `watch.Feed` for StatefulSets and Deployments."""

    def __init__(
        self, owned: OwnedObjects, databases: Databases, handler: WorkloadHandler | None
    ) -> None:
        self.owned = owned
        self.databases = databases
        self.handler = handler
        self._context: Context | None = None
        self._serial = Serial()
        self._pending_status: set[Instance] = set()
        self._pending_events: dict[tuple[str, str, str], tuple[str | None, Any]] = {}

    def activate(self, context: Context) -> None:
        """Every kind is listed: handle what was seen meanwhile, then each event as it comes."""
        self._context = context
        pending_status, self._pending_status = self._pending_status, set()
        pending_events, self._pending_events = self._pending_events, {}
        for key in pending_status:
            self._status_changed(key)
        for event, body in pending_events.values():
            self._handle(event, body)

    async def stop(self) -> None:
        self._context = None
        await self._serial.stop()

    # ---------------------------------------------------------------- as a watch.Feed

    def reduce(self, body: Mapping[str, Any]) -> Listed:
        ours = OwnedObjects.reduce(body) if instance_key(body) is not None else None
        wanted = self.handler is not None and self.handler.concerns(body)
        return Listed(ours, dict(body) if wanted else None)

    def relisted(self, kind: str, namespace: str | None, items: list[Listed]) -> None:
        self.owned.relisted(kind, namespace, [i.owned for i in items if i.owned is not None])
        for item in items:
            if item.owned is not None and item.owned[0] is not None:
                self._status_changed(item.owned[0])
            if item.body is not None:
                self._handle(None, item.body)

    def changed(self, event: str, body: Mapping[str, Any]) -> None:
        key = instance_key(body)
        if key is None or event == "DELETED":
            self.owned.delete(body)  # also one relabelled away
        else:
            self.owned.upsert(body)
        if key is not None:
            self._status_changed(key)
        if self.handler is not None and self.handler.concerns(body):
            self._handle(event, dict(body))

    # ---------------------------------------------------------------- dispatch

    def _handle(self, event: str | None, body: Mapping[str, Any]) -> None:
        context, handler = self._context, self.handler
        metadata = body.get("metadata") or {}
        where = (str(body.get("kind")), str(metadata.get("namespace")), str(metadata.get("name")))
        if context is None or handler is None:
            self._pending_events[where] = (event, body)
            return
        self._serial.submit(
            ("handle", *where), functools.partial(handler.on_event, event, body, context)
        )

    def _status_changed(self, key: Instance) -> None:
        if self._context is None:
            self._pending_status.add(key)
        elif self.status_update(key) is not None:  # most events: nothing to write, no task
            self._serial.submit(("status", *key), functools.partial(self._report, key))

    # ---------------------------------------------------------------- readiness

    def status_update(self, key: Instance) -> tuple[str, dict[str, Any]] | None:
        """(phase, status patch) for a database from its workloads' snapshots; None when
        nothing would change, or the reconcile reports first (a new database, a failed spec,
        one being deleted)."""
        owner = self.databases.get(key)
        if owner is None or owner.deleting:
            return None
        current = owner.status
        if current.get("phase") in (None, status.PHASE_FAILED):
            return None  # the reconcile reports first (and a failed spec keeps its reason)
        namespace, slug = key
        observed = self.owned.observed(namespace, slug)
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
        return (phase, patch) if patch else None

    async def _report(self, key: Instance) -> None:
        context, owner, update = self._context, self.databases.get(key), self.status_update(key)
        if context is None or owner is None or update is None:
            return
        phase, patch = update
        namespace, slug = key
        try:
            await asyncio.to_thread(
                context.api.patch,
                resources.MANAGED_DATABASE,
                namespace,
                slug,
                {"status": patch},
                subresource="status",
            )
        except (ApiError, urllib3.exceptions.HTTPError, OSError) as e:
            # Not retried: the database's next reconcile (a resync at the latest) reports it.
            logger.warning("[%s/%s] reporting readiness failed: %s", namespace, slug, e)
            return
        if phase == status.PHASE_READY and owner.status.get("phase") != status.PHASE_READY:
            logger.info("[%s/%s] is ready", namespace, slug)
            await asyncio.to_thread(
                context.events.post,
                owner.reference,
                type="Normal",
                reason="Ready",
                message=status.ready_message(slug),
            )
