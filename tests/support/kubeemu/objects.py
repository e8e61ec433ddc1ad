"""Server-side rules for object content: what a write may change and what the server sets.

Pure functions (apart from reading the clock and the random generator); no storage, no I/O.
"""

from __future__ import annotations

import copy
import datetime
import random
import uuid
from collections.abc import Mapping
from typing import Any

from kubeemu.catalog import ResourceType
from kubeemu.errors import BadRequest, Invalid, modified

Obj = dict[str, Any]

# Metadata that only the server sets; writes through the API cannot change it.
SERVER_OWNED_METADATA = (
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "name",
    "namespace",
)
# The alphabet of generateName suffixes (no vowels, no look-alikes), as in the real server.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generated_name(prefix: str) -> str:
    return prefix + "".join(random.choices(_SUFFIX_ALPHABET, k=5))


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = obj.get("metadata") or {}
    return value


def content(obj: Mapping[str, Any], rtype: ResourceType) -> dict[str, Any]:
    """What the generation tracks: everything but metadata (and status if it is separate)."""
    ignored = {"metadata", "apiVersion", "kind"} | ({"status"} if rtype.has_status else set())
    return {key: value for key, value in obj.items() if key not in ignored}


def prepare_create(rtype: ResourceType, namespace: str | None, body: Any) -> Obj:
    """A new object as the server would store it, minus the resourceVersion."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body of the request must be a JSON object")
    if body.get("kind") not in (None, rtype.kind):
        raise BadRequest(f"the kind {body.get('kind')!r} does not match {rtype.kind!r}")
    obj: Obj = copy.deepcopy(dict(body))
    obj["apiVersion"] = rtype.api_version
    obj["kind"] = rtype.kind
    metadata = obj.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise BadRequest("metadata must be an object")
    for key in (
        "resourceVersion",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ):
        metadata.pop(key, None)

    if rtype.namespaced:
        body_namespace = metadata.get("namespace")
        if namespace is None:
            raise BadRequest(f"{rtype.plural} are namespaced: POST to a namespaced URL")
        if body_namespace not in (None, "", namespace):
            raise BadRequest(
                "the namespace of the provided object does not match the namespace sent on"
                " the request"
            )
        metadata["namespace"] = namespace
    else:
        metadata.pop("namespace", None)

    if not metadata.get("name"):
        if not metadata.get("generateName"):
            raise Invalid(
                f"{rtype.kind} is invalid: metadata.name: Required value: name or"
                " generateName is required",
                kind=rtype.kind,
            )
        metadata["name"] = generated_name(metadata["generateName"])

    metadata["uid"] = str(uuid.uuid4())
    metadata["creationTimestamp"] = now()
    if rtype.generation:
        metadata["generation"] = 1
    if rtype.has_status:
        obj.pop("status", None)  # as the real strategies do: status is set via /status only
    return obj


def prepare_update(
    rtype: ResourceType,
    old: Mapping[str, Any],
    candidate: Any,
    *,
    subresource: str | None,
) -> Obj:
    """The stored object after a write of ``candidate`` (the full intended new state).

    Server-owned metadata is kept from ``old``; for resources with a status subresource,
    the main resource keeps the old status and ``/status`` changes nothing but the status.
    The resourceVersion is left as in ``old``: the store sets it if anything changed.
    """
    if not isinstance(candidate, Mapping):
        raise BadRequest("the body of the request must be a JSON object")
    if subresource == "status":
        new: Obj = copy.deepcopy(dict(old))
        if "status" in candidate:
            new["status"] = copy.deepcopy(candidate["status"])
        else:
            new.pop("status", None)
        return new

    new = copy.deepcopy(dict(candidate))
    new["apiVersion"] = old["apiVersion"]
    new["kind"] = old["kind"]
    metadata = new.get("metadata")
    if not isinstance(metadata, dict):
        metadata = new["metadata"] = {}
    old_meta = meta(old)
    if metadata.get("name") not in (None, old_meta["name"]):
        raise BadRequest(
            f"the name of the object ({metadata.get('name')}) does not match the name on the URL"
            f" ({old_meta['name']})"
        )
    for key in ("managedFields", "selfLink"):
        metadata.pop(key, None)
    for key in SERVER_OWNED_METADATA:
        if key in old_meta:
            metadata[key] = old_meta[key]
        else:
            metadata.pop(key, None)
    metadata["resourceVersion"] = old_meta["resourceVersion"]

    if rtype.has_status:
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        else:
            new.pop("status", None)
    if rtype.generation and content(new, rtype) != content(old, rtype):
        metadata["generation"] = int(old_meta.get("generation", 1)) + 1
    return new


def check_resource_version(rtype: ResourceType, old: Mapping[str, Any], candidate: Any) -> None:
    """Optimistic concurrency: a resourceVersion sent with a write must be the current one."""
    wanted = meta(candidate).get("resourceVersion") if isinstance(candidate, Mapping) else None
    if wanted and wanted != meta(old).get("resourceVersion"):
        raise modified(rtype.plural, meta(old)["name"], rtype.group)


def mark_deleted(old: Mapping[str, Any]) -> Obj:
    """Graceful deletion of an object with finalizers: set deletionTimestamp, bump generation."""
    new: Obj = copy.deepcopy(dict(old))
    metadata = new["metadata"]
    metadata["deletionTimestamp"] = now()
    metadata["deletionGracePeriodSeconds"] = 0
    if "generation" in metadata:
        metadata["generation"] = int(metadata["generation"]) + 1
    return new


def is_releasable(obj: Mapping[str, Any]) -> bool:
    """Marked for deletion and nothing holds it any more: the store removes it now."""
    return bool(meta(obj).get("deletionTimestamp")) and not meta(obj).get("finalizers")


def same_state(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """A write that changes nothing: no new resourceVersion, no watch event (as the server)."""
    return dict(old) == dict(new)
