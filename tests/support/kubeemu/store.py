"""The object store: objects, the global resourceVersion, the change log and its watchers.

Every method is synchronous and the store is used from one event loop only, so each API call is
atomic. Garbage collection (ownerReferences), namespace cleanup and CRD registration happen
synchronously inside the write that triggers them; they are the only "controllers" emulated.
"""

from __future__ import annotations

import collections
import copy
import enum
from collections.abc import Mapping
from typing import Any

from kubeemu import objects, patching
from kubeemu.catalog import (
    CRD_GROUP_RESOURCE,
    NAMESPACE_GROUP_RESOURCE,
    Catalog,
    ResourceType,
)
from kubeemu.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    UnsupportedMediaType,
    not_found,
)
from kubeemu.objects import Obj, meta
from kubeemu.selectors import Selector
from kubeemu.watching import Change, EventType, Watcher, versioned

Key = tuple[str, str, str]  # group_resource, namespace ("" if cluster-scoped), name


class PatchType(enum.Enum):
    JSON = "application/json-patch+json"
    MERGE = "application/merge-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    APPLY = "application/apply-patch+yaml"


class Propagation(enum.Enum):
    BACKGROUND = "Background"
    FOREGROUND = "Foreground"  # approximated as Background
    ORPHAN = "Orphan"


class Store:
    def __init__(self, catalog: Catalog, *, history: int = 100_000) -> None:
        self.catalog = catalog
        self._objects: dict[Key, Obj] = {}
        self._uids: dict[str, Key] = {}
        self._rv = 0
        self._log: collections.deque[Change] = collections.deque()
        self._history = history
        self._floor = 0  # changes with a resourceVersion up to this one are out of the log
        self._watchers: set[Watcher] = set()

    @property
    def resource_version(self) -> int:
        return self._rv

    # Reading.

    @staticmethod
    def key(rtype: ResourceType, namespace: str | None, name: str) -> Key:
        return rtype.group_resource, (namespace or "") if rtype.namespaced else "", name

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._objects.get(self.key(rtype, namespace, name))
        if obj is None:
            raise not_found(rtype.plural, name, rtype.group)
        return versioned(copy.deepcopy(obj), rtype)

    def select(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: Selector,
        fields: Selector,
    ) -> list[Obj]:
        return [
            versioned(copy.deepcopy(obj), rtype)
            for key, obj in sorted(self._objects.items())
            if key[0] == rtype.group_resource
            if namespace is None or key[1] == namespace
            if labels.matches(obj) and fields.matches(obj)
        ]

    # Writing.

    def create(
        self, rtype: ResourceType, namespace: str | None, body: Any, *, dry_run: bool = False
    ) -> Obj:
        obj = objects.prepare_create(rtype, namespace, body)
        key = self.key(rtype, namespace, meta(obj)["name"])
        if rtype.namespaced:
            self._check_namespace_open(key[1])
        if key in self._objects:
            raise AlreadyExists(
                f'{rtype.plural} "{key[2]}" already exists',
                kind=rtype.plural,
                name=key[2],
                group=rtype.group,
            )
        if key[0] == CRD_GROUP_RESOURCE:
            _establish_crd(obj)
        if key[0] == NAMESPACE_GROUP_RESOURCE:
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj["status"] = {"phase": "Active"}
        if dry_run:
            return versioned(obj, rtype)
        return versioned(self._commit("ADDED", key, obj, None), rtype)

    def replace(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        key = self.key(rtype, namespace, name)
        old = self._existing(rtype, key, subresource)
        objects.check_resource_version(rtype, old, body)
        new = objects.prepare_update(rtype, old, body, subresource=subresource)
        return versioned(self._write(key, old, new, dry_run=dry_run), rtype)

    def patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        patch_type: PatchType,
        patch: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """Patch an object; returns it and whether it was created (server-side apply only)."""
        key = self.key(rtype, namespace, name)
        if key not in self._objects and patch_type is PatchType.APPLY and subresource is None:
            if not isinstance(patch, Mapping):
                raise BadRequest("an applied configuration must be an object")
            body = copy.deepcopy(dict(patch))
            body.setdefault("metadata", {})["name"] = name
            return self.create(rtype, namespace, body, dry_run=dry_run), True
        old = self._existing(rtype, key, subresource)
        base = versioned(old, rtype)
        if patch_type is PatchType.JSON:
            candidate = patching.json_patch(base, patch)
        elif patch_type is PatchType.MERGE:
            candidate = patching.merge_patch(base, patch)
        elif patch_type is PatchType.STRATEGIC:
            if rtype.custom:
                raise UnsupportedMediaType(
                    "strategic merge patch is not supported for custom resources;"
                    " use a merge patch (application/merge-patch+json)"
                )
            candidate = patching.strategic_merge_patch(base, patch)
        else:
            candidate = patching.apply_patch(base, patch)
        objects.check_resource_version(rtype, old, candidate)
        new = objects.prepare_update(rtype, old, candidate, subresource=subresource)
        return versioned(self._write(key, old, new, dry_run=dry_run), rtype), False

    def delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        *,
        propagation: Propagation = Propagation.BACKGROUND,
        preconditions: Mapping[str, Any] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        key = self.key(rtype, namespace, name)
        old = self._existing(rtype, key, None)
        for field in ("uid", "resourceVersion"):
            wanted = (preconditions or {}).get(field)
            if wanted and wanted != meta(old).get(field):
                raise Conflict(
                    f"Precondition failed: {field} in precondition: {wanted},"
                    f" {field} in object meta: {meta(old).get(field)}",
                    kind=rtype.plural,
                    name=name,
                    group=rtype.group,
                )
        if dry_run:
            return versioned(old, rtype)
        return versioned(self._delete_key(key, propagation=propagation), rtype)

    def delete_collection(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: Selector,
        fields: Selector,
        *,
        propagation: Propagation = Propagation.BACKGROUND,
        dry_run: bool = False,
    ) -> list[Obj]:
        doomed = self.select(rtype, namespace, labels, fields)
        if dry_run:
            return doomed
        keys = [self.key(rtype, meta(obj).get("namespace"), meta(obj)["name"]) for obj in doomed]
        return [
            versioned(self._delete_key(key, propagation=propagation), rtype)
            for key in keys
            if key in self._objects  # not yet collected as a dependent of an earlier one
        ]

    # Watching.

    def watch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: Selector,
        fields: Selector,
        *,
        since: int | None,
    ) -> tuple[list[Obj], Watcher]:
        """Subscribe, atomically with computing the events the watcher must see first.

        ``since=None`` means "the current state first" (ADDED for every selected object);
        otherwise, every change after that resourceVersion is replayed from the log.
        """
        watcher = Watcher(rtype, namespace, labels, fields)
        if since is None:
            initial = [
                {"type": "ADDED", "object": obj}
                for obj in self.select(rtype, namespace, labels, fields)
            ]
        elif since < self._floor:
            raise Gone(f"too old resource version: {since} ({self._floor + 1})")
        else:
            initial = [
                event
                for change in self._log
                if change.rv > since
                for event in [watcher.translate(change)]
                if event is not None
            ]
        self._watchers.add(watcher)
        return initial, watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def close(self) -> None:
        """End all watch streams (at shutdown)."""
        for watcher in list(self._watchers):
            watcher.close()
        self._watchers.clear()

    # Internals.

    def _existing(self, rtype: ResourceType, key: Key, subresource: str | None) -> Obj:
        if subresource is not None and subresource not in rtype.subresources:
            raise NotFound(
                f"the server could not find the requested resource ({rtype.plural}/{subresource})"
            )
        if subresource == "scale":
            raise NotFound("the scale subresource is not emulated")
        old = self._objects.get(key)
        if old is None:
            raise not_found(rtype.plural, key[2], rtype.group)
        return old

    def _check_namespace_open(self, namespace: str) -> None:
        ns = self._objects.get((NAMESPACE_GROUP_RESOURCE, "", namespace))
        if ns is None:
            raise NotFound(f'namespaces "{namespace}" not found', kind="namespaces", name=namespace)
        if meta(ns).get("deletionTimestamp"):
            raise Forbidden(
                f"unable to create new content in namespace {namespace}"
                " because it is being terminated"
            )

    def _write(self, key: Key, old: Obj, new: Obj, *, dry_run: bool) -> Obj:
        if meta(old).get("deletionTimestamp"):
            added = set(meta(new).get("finalizers") or []) - set(meta(old).get("finalizers") or [])
            if added:
                raise Invalid(
                    f"metadata.finalizers: Forbidden: no new finalizers can be added if"
                    f" the object is being deleted, found new finalizers {sorted(added)}"
                )
        if dry_run or objects.same_state(old, new):
            return copy.deepcopy(new)
        if objects.is_releasable(new):
            return self._commit("DELETED", key, new, old)
        return self._commit("MODIFIED", key, new, old)

    def _delete_key(self, key: Key, *, propagation: Propagation) -> Obj:
        old = self._objects[key]
        if propagation is Propagation.ORPHAN:
            self._orphan_dependents(meta(old)["uid"])
        if key[0] == NAMESPACE_GROUP_RESOURCE:
            return self._delete_namespace(key)
        if meta(old).get("finalizers"):
            if meta(old).get("deletionTimestamp"):
                return copy.deepcopy(old)
            return self._commit("MODIFIED", key, objects.mark_deleted(old), old)
        return self._commit("DELETED", key, old, old)

    def _delete_namespace(self, key: Key) -> Obj:
        old = self._objects[key]
        result = old
        if not meta(old).get("deletionTimestamp"):
            marked = objects.mark_deleted(old)
            marked["status"] = {"phase": "Terminating"}
            result = self._commit("MODIFIED", key, marked, old)
        for other in [k for k in self._objects if k[1] == key[2]]:
            if other in self._objects:
                self._delete_key(other, propagation=Propagation.BACKGROUND)
        self._maybe_finalize_namespace(key[2])
        return result

    def _maybe_finalize_namespace(self, namespace: str) -> None:
        key = (NAMESPACE_GROUP_RESOURCE, "", namespace)
        ns = self._objects.get(key)
        if ns is None or not objects.is_releasable(ns):
            return
        if any(k[1] == namespace for k in self._objects):
            return
        self._commit("DELETED", key, ns, ns)

    def _orphan_dependents(self, owner_uid: str) -> None:
        for key, obj in list(self._objects.items()):
            refs = meta(obj).get("ownerReferences") or []
            if any(ref.get("uid") == owner_uid for ref in refs):
                new = copy.deepcopy(obj)
                kept = [ref for ref in refs if ref.get("uid") != owner_uid]
                if kept:
                    new["metadata"]["ownerReferences"] = kept
                else:
                    del new["metadata"]["ownerReferences"]
                self._commit("MODIFIED", key, new, obj)

    def _collect_garbage(self, owner_uid: str) -> None:
        """Background cascading deletion: dependents without any live owner are deleted."""
        for key, obj in list(self._objects.items()):
            if key not in self._objects:
                continue  # deleted by an earlier iteration's cascade
            obj = self._objects[key]
            refs = meta(obj).get("ownerReferences") or []
            if not any(ref.get("uid") == owner_uid for ref in refs):
                continue
            live = [ref for ref in refs if ref.get("uid") in self._uids]
            if live:
                new = copy.deepcopy(obj)
                new["metadata"]["ownerReferences"] = live
                self._commit("MODIFIED", key, new, obj)
            else:
                self._delete_key(key, propagation=Propagation.BACKGROUND)

    def _commit(self, kind: EventType, key: Key, new: Obj, old: Obj | None) -> Obj:
        self._rv += 1
        stored = copy.deepcopy(new)
        stored["metadata"]["resourceVersion"] = str(self._rv)
        uid = meta(stored)["uid"]
        if kind == "DELETED":
            self._objects.pop(key, None)
            self._uids.pop(uid, None)
        else:
            self._objects[key] = stored
            self._uids[uid] = key
        change = Change(self._rv, kind, key[0], key[1], stored, old)
        self._log.append(change)
        while len(self._log) > self._history:
            self._floor = self._log.popleft().rv
        for watcher in list(self._watchers):
            watcher.offer(change)
        self._react(change)
        return copy.deepcopy(stored)

    def _react(self, change: Change) -> None:
        """The emulated controllers: CRD registration, garbage collection, namespace cleanup."""
        if change.group_resource == CRD_GROUP_RESOURCE:
            if change.type == "DELETED":
                self._drop_crd(change.obj)
            else:
                self.catalog.set_crd(change.obj)
        if change.type == "DELETED":
            self._collect_garbage(meta(change.obj)["uid"])
            if change.namespace:
                self._maybe_finalize_namespace(change.namespace)
        elif change.group_resource == NAMESPACE_GROUP_RESOURCE:
            self._maybe_finalize_namespace(meta(change.obj)["name"])

    def _drop_crd(self, crd: Obj) -> None:
        types = self.catalog.drop_crd(meta(crd)["name"])
        group_resources = {rtype.group_resource for rtype in types}
        for key in [k for k in self._objects if k[0] in group_resources]:
            if key in self._objects:
                obj = self._objects[key]
                self._commit("DELETED", key, obj, obj)
        for watcher in [w for w in self._watchers if w.rtype.group_resource in group_resources]:
            watcher.close()  # the real server ends the watches of a resource it stops serving
            self._watchers.discard(watcher)


def _establish_crd(crd: Obj) -> None:
    """Validate the naming of a CRD and mark it accepted and established, as the server does."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    if not (group and plural and kind and spec.get("versions")):
        raise Invalid(
            "CustomResourceDefinition is invalid: spec.group, spec.names.plural,"
            " spec.names.kind and spec.versions are required"
        )
    if meta(crd)["name"] != f"{plural}.{group}":
        raise Invalid(
            f"CustomResourceDefinition is invalid: metadata.name: must be"
            f' spec.names.plural+"."+spec.group ({plural}.{group})'
        )
    storage = [v["name"] for v in spec["versions"] if v.get("storage")] or [
        spec["versions"][0]["name"]
    ]
    accepted = dict(names)
    accepted.setdefault("singular", kind.lower())
    accepted.setdefault("listKind", f"{kind}List")
    crd["status"] = {
        "acceptedNames": accepted,
        "storedVersions": storage,
        "conditions": [
            {
                "type": cond,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": objects.now(),
            }
            for cond, reason, message in (
                ("NamesAccepted", "NoConflicts", "no conflicts found"),
                ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            )
        ],
    }
