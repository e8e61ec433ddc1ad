"""What the operator knows of the objects it owns: a small typed snapshot per object. Pure.

kopf's indexes keep these snapshots current from watches, so a reconcile reads no object it
owns from the API and an idle resync sends nothing at all.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sotadb import names
from sotadb.render.meta import spec_hash


@dataclass(frozen=True, slots=True)
class ObservedObject:
    kind: str
    namespace: str
    name: str
    spec_hash: str | None
    owner_uids: tuple[str, ...] = ()
    # Secrets of ours: their decoded data (the credentials' source of truth).
    data: Mapping[str, str] = field(default_factory=dict, repr=False)
    ready_replicas: int = 0
    # StatefulSet: immutable once created; only the fields we render (the API adds defaults),
    # so that a snapshot keeps no part of the body alive.
    claim_templates: tuple[Any, ...] = ()
    requested_storage: str | None = None  # PVC
    deleting: bool = False


def observe(body: Mapping[str, Any]) -> ObservedObject:
    metadata = body.get("metadata") or {}
    kind = str(body.get("kind") or "")
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    data: dict[str, str] = {}
    if kind == "Secret":
        data = _decode(body.get("data") or {})
    return ObservedObject(
        kind=kind,
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        spec_hash=spec_hash(dict(body)),
        owner_uids=tuple(str(o.get("uid")) for o in metadata.get("ownerReferences") or []),
        data=data,
        ready_replicas=int(status.get("readyReplicas") or 0),
        claim_templates=_claims_as_rendered(spec.get("volumeClaimTemplates") or ())
        if kind == "StatefulSet"
        else (),
        requested_storage=(
            ((spec.get("resources") or {}).get("requests") or {}).get("storage")
            if kind == "PersistentVolumeClaim"
            else None
        ),
        deleting=bool(metadata.get("deletionTimestamp")),
    )


def _claims_as_rendered(templates: Iterable[Mapping[str, Any]]) -> tuple[Any, ...]:
    claims = []
    for claim in templates:
        spec = claim.get("spec") or {}
        kept = {
            "accessModes": list(spec.get("accessModes") or []),
            "resources": {"requests": {"storage": spec["resources"]["requests"]["storage"]}},
        }
        if spec.get("storageClassName") is not None:
            kept["storageClassName"] = spec["storageClassName"]
        claims.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": claim["metadata"]["name"],
                    "labels": dict(claim["metadata"].get("labels") or {}),
                },
                "spec": kept,
            }
        )
    return tuple(claims)


def instance_key(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, slug) of the ManagedDatabase an object belongs to, or None if not ours."""
    metadata = body.get("metadata") or {}
    labels = metadata.get("labels") or {}
    instance = labels.get(names.LABEL_INSTANCE)
    if labels.get(names.LABEL_MANAGED_BY) != names.MANAGED_BY or not instance:
        return None
    return str(metadata.get("namespace") or ""), str(instance)


@dataclass(frozen=True)
class Observed:
    """Everything observed for one database, by (kind, name)."""

    objects: Mapping[tuple[str, str], ObservedObject]

    @classmethod
    def of(cls, snapshots: Iterable[ObservedObject]) -> Observed:
        return cls({(o.kind, o.name): o for o in snapshots})

    def get(self, kind: str, name: str) -> ObservedObject | None:
        return self.objects.get((kind, name))

    def secret_data(self, name: str) -> Mapping[str, str] | None:
        found = self.get("Secret", name)
        return None if found is None else found.data


def _decode(data: Mapping[str, str]) -> dict[str, str]:
    decoded: dict[str, str] = {}
    for key, value in data.items():
        try:
            decoded[key] = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, TypeError):
            continue  # not ours to interpret
    return decoded
