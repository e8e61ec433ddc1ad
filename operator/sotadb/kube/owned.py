"""What the operator knows of every object it owns: one small snapshot per object, by owner. Pure.

Fed by `kube/watch.py` (a label-selected list and watch per owned kind; it is a `watch.Feed`),
read by the reconcile and by workload events (`kube/workloads.py`). Only the `ObservedObject`
of each object is kept, never its body: at 1,000 databases that is ~12,000 snapshots of a few
hundred bytes, where kopf's own watching and indexing of the same objects cost more than the
whole operator may use.

The reconcile runs in kopf's executor threads while the watches run in its event loop, so every
access takes the lock (each is a few dict operations).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from sotadb.kube.observe import Observed, ObservedObject, instance_key, observe

Instance = tuple[str, str]  # (namespace, slug)
Where = tuple[str, str, str]  # (kind, namespace, name)
Reduced = tuple[Instance | None, ObservedObject]  # a listed body, as kept


class OwnedObjects:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_instance: dict[Instance, dict[tuple[str, str], ObservedObject]] = {}
        self._owner_of: dict[Where, Instance] = {}

    def observed(self, namespace: str, slug: str) -> Observed:
        with self._lock:
            return Observed(dict(self._by_instance.get((namespace, slug)) or {}))

    def __len__(self) -> int:
        with self._lock:
            return len(self._owner_of)

    def upsert(self, body: Mapping[str, Any]) -> None:
        """An added or modified object; one whose labels no longer make it ours is dropped."""
        key = instance_key(body)
        snapshot = observe(body)
        with self._lock:
            self._remove((snapshot.kind, snapshot.namespace, snapshot.name))
            if key is not None:
                self._by_instance.setdefault(key, {})[(snapshot.kind, snapshot.name)] = snapshot
                self._owner_of[(snapshot.kind, snapshot.namespace, snapshot.name)] = key

    def delete(self, body: Mapping[str, Any]) -> None:
        metadata = body.get("metadata") or {}
        where = (
            str(body.get("kind") or ""),
            str(metadata.get("namespace") or ""),
            str(metadata.get("name") or ""),
        )
        with self._lock:
            self._remove(where)

    def replace(
        self, kind: str, namespace: str | None, bodies: Iterable[Mapping[str, Any]]
    ) -> None:
        """A fresh list of one kind (in one namespace, or all): what it lacks is gone."""
        self.relisted(kind, namespace, [self.reduce(b) for b in bodies])

    # ---------------------------------------------------------------- as a watch.Feed

    @staticmethod
    def reduce(body: Mapping[str, Any]) -> Reduced:
        return instance_key(body), observe(body)

    def changed(self, event: str, body: Mapping[str, Any]) -> None:
        if event == "DELETED":
            self.delete(body)
        else:
            self.upsert(body)

    def relisted(self, kind: str, namespace: str | None, snapshots: list[Reduced]) -> None:
        """`replace`, with each body already reduced (the watch drops bodies page by page)."""
        with self._lock:
            stale = [
                where
                for where in self._owner_of
                if where[0] == kind and (namespace is None or where[1] == namespace)
            ]
            for where in stale:
                self._remove(where)
            for key, snapshot in snapshots:
                if key is not None:
                    self._by_instance.setdefault(key, {})[(kind, snapshot.name)] = snapshot
                    self._owner_of[(kind, snapshot.namespace, snapshot.name)] = key

    def _remove(self, where: Where) -> None:
        owner = self._owner_of.pop(where, None)
        if owner is None:
            return
        objects = self._by_instance.get(owner)
        if objects is not None:
            objects.pop((where[0], where[2]), None)
            if not objects:
                del self._by_instance[owner]
