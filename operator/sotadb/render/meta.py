"""Metadata every owned object carries: name, namespace, labels, owner, spec hash. Pure."""

from __future__ import annotations

from typing import Any

from sotadb import names
from sotadb.render.hashing import content_hash
from sotadb.spec import ManagedDatabase

Manifest = dict[str, Any]


def owner_reference(db: ManagedDatabase) -> dict[str, Any] | None:
    """Points every object at its ManagedDatabase, so deleting it collects them. None while the
    database has no uid yet (a preview with `sotadb render`)."""
    if db.uid is None:
        return None
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_DATABASE,
        "name": db.name,
        "uid": db.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(db: ManagedDatabase, name: str, component: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": db.namespace,
        "labels": names.common_labels(db.slug, component),
    }
    owner = owner_reference(db)
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def manifest(api_version: str, kind: str, metadata: dict[str, Any], **body: Any) -> Manifest:
    """A complete object whose `sota.io/spec-hash` annotation covers everything but itself, so
    the operator can tell "unchanged" from one annotation without a deep diff."""
    document: Manifest = {"apiVersion": api_version, "kind": kind, "metadata": metadata, **body}
    annotations = metadata.setdefault("annotations", {})
    annotations[names.ANNOTATION_SPEC_HASH] = content_hash(document)
    return document


def spec_hash(document: Manifest) -> str | None:
    annotations = document.get("metadata", {}).get("annotations") or {}
    value = annotations.get(names.ANNOTATION_SPEC_HASH)
    return value if isinstance(value, str) else None
