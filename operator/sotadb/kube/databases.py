"""What workload events need of every ManagedDatabase: one small snapshot each. Pure.

Fed by `kube/watch.py` (it is a `watch.Feed`): the operator's own list and watch of the
databases, which is complete before any handler runs, so that a workload event never meets a
database that exists but is not known yet. Read by `kube/workloads.py` (readiness) and the
injection (does the named database exist?). kopf watches the databases too, for the handlers;
these snapshots replace the kopf index that once held the same facts.

The injection reads from kopf's executor threads while the watch writes from its event loop,
so every access takes the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sotadb import names

Key = tuple[str, str]  # (namespace, name)
# What the status refresh compares (status.status_patch): not appliedSpec, the largest part.
KEPT_STATUS: Final = ("phase", "conditions", "observedGeneration", "secretName")


@dataclass(frozen=True, slots=True)
class DatabaseSnapshot:
    namespace: str
    name: str
    uid: str
    status: Mapping[str, Any]  # only KEPT_STATUS
    backups_enabled: bool
    deleting: bool

    @property
    def key(self) -> Key:
        return self.namespace, self.name

    @property
    def reference(self) -> dict[str, str]:
        """An Event's involvedObject."""
        return {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND_DATABASE,
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
        }


def snapshot(body: Mapping[str, Any]) -> DatabaseSnapshot:
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    backups = ((body.get("spec") or {}).get("backups") or {}).get("enabled", True)
    return DatabaseSnapshot(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        status={k: status[k] for k in KEPT_STATUS if k in status},
        backups_enabled=bool(backups),
        deleting=bool(metadata.get("deletionTimestamp")),
    )


class Databases:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[Key, DatabaseSnapshot] = {}

    def get(self, key: Key) -> DatabaseSnapshot | None:
        with self._lock:
            return self._by_key.get(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._by_key

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_key)

    # ---------------------------------------------------------------- as a watch.Feed

    @staticmethod
    def reduce(body: Mapping[str, Any]) -> DatabaseSnapshot:
        return snapshot(body)

    def relisted(self, kind: str, namespace: str | None, snapshots: list[DatabaseSnapshot]) -> None:
        """A fresh list (in one namespace, or all): what it lacks is gone."""
        with self._lock:
            for key in [k for k in self._by_key if namespace is None or k[0] == namespace]:
                del self._by_key[key]
            self._by_key.update((s.key, s) for s in snapshots)

    def changed(self, event: str, body: Mapping[str, Any]) -> None:
        found = snapshot(body)
        with self._lock:
            if event == "DELETED":
                self._by_key.pop(found.key, None)
            else:
                self._by_key[found.key] = found
