"""Watch streams: the change log record, per-watch filtering, and the event stream itself.

A watcher is registered in the same synchronous step that computes its initial events
(see ``Store.watch``); the emulator runs in one event loop and the store never awaits, so no
change can fall between the snapshot and the subscription.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal

from kubeemu.catalog import ResourceType
from kubeemu.selectors import Selector

Obj = dict[str, Any]
EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclasses.dataclass(frozen=True)
class Change:
    """One committed change to one object, as kept in the change log."""

    rv: int
    type: EventType
    group_resource: str
    namespace: str  # "" for cluster-scoped objects
    obj: Obj  # the new state; for DELETED, the last state (with the deletion's resourceVersion)
    old: Obj | None


def versioned(obj: Mapping[str, Any], rtype: ResourceType) -> Obj:
    """The object as served in the requested version (all versions share one storage)."""
    result = dict(obj)
    result["apiVersion"] = rtype.api_version
    return result


class Watcher:
    """One open watch: what it selects, and the queue of events waiting to be streamed."""

    def __init__(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: Selector,
        fields: Selector,
    ) -> None:
        self.rtype = rtype
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[Obj | None] = asyncio.Queue()

    def selects(self, obj: Mapping[str, Any] | None) -> bool:
        return obj is not None and self.labels.matches(obj) and self.fields.matches(obj)

    def translate(self, change: Change) -> Obj | None:
        """The event this watcher sees for a change, if any.

        As in the real server, an object that starts matching the selectors is ADDED for the
        watcher, and one that stops matching is DELETED.
        """
        if change.group_resource != self.rtype.group_resource:
            return None
        if self.namespace is not None and change.namespace != self.namespace:
            return None
        now, before = self.selects(change.obj), self.selects(change.old)
        kind: str | None
        if change.type == "MODIFIED":
            kind = ("MODIFIED" if before else "ADDED") if now else ("DELETED" if before else None)
        else:
            kind = change.type if now else None
        if kind is None:
            return None
        return {"type": kind, "object": versioned(change.obj, self.rtype)}

    def offer(self, change: Change) -> None:
        event = self.translate(change)
        if event is not None:
            self.queue.put_nowait(event)

    def close(self) -> None:
        self.queue.put_nowait(None)

    def bookmark(self, rv: int, *, initial_events_end: bool = False) -> Obj:
        metadata: Obj = {"resourceVersion": str(rv)}
        if initial_events_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {
                "kind": self.rtype.kind,
                "apiVersion": self.rtype.api_version,
                "metadata": metadata,
            },
        }


async def stream(
    watcher: Watcher,
    initial: list[Obj],
    *,
    current_rv: Callable[[], int],
    duration: float,
    bookmarks: bool,
    bookmark_interval: float,
    initial_events_end: bool,
) -> AsyncIterator[Obj]:
    """The events of one watch request for ``duration`` seconds, or until the client leaves.

    A BOOKMARK (if the client allowed them) is sent after ``bookmark_interval`` seconds without
    events; its resourceVersion is the store's current one, which is safe because all changes up
    to it have been offered to this watcher already (the queue is empty when it is sent).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    for event in initial:
        yield event
    if initial_events_end and bookmarks:
        yield watcher.bookmark(current_rv(), initial_events_end=True)
    while (remaining := deadline - loop.time()) > 0:
        wait = min(remaining, bookmark_interval) if bookmarks else remaining
        try:
            async with asyncio.timeout(wait):
                live = await watcher.queue.get()
        except TimeoutError:
            if bookmarks and loop.time() < deadline:
                yield watcher.bookmark(current_rv())
            continue
        if live is None:
            return
        yield live
