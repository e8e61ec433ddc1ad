"""Manifests tests commonly post to the emulator: a minimal CRD, and kopf's peering CRDs."""

from __future__ import annotations

from typing import Any


def crd(
    group: str,
    kind: str,
    *,
    plural: str | None = None,
    version: str = "v1",
    namespaced: bool = True,
    status_subresource: bool = True,
    short_names: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A CustomResourceDefinition that accepts any content (no schema is enforced anyway)."""
    plural = plural or f"{kind.lower()}s"
    served: dict[str, Any] = {
        "name": version,
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        },
    }
    if status_subresource:
        served["subresources"] = {"status": {}}
    names: dict[str, Any] = {
        "kind": kind,
        "plural": plural,
        "singular": kind.lower(),
        "listKind": f"{kind}List",
    }
    if short_names:
        names["shortNames"] = list(short_names)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced" if namespaced else "Cluster",
            "names": names,
            "versions": [served],
        },
    }


def kopf_peering_crds(group: str = "kopf.dev") -> list[dict[str, Any]]:
    """kopf's peering CRDs: ``kopfpeerings`` and ``clusterkopfpeerings`` (``zalando.org``: old)."""
    return [
        crd(group, "KopfPeering", namespaced=True, status_subresource=False),
        crd(group, "ClusterKopfPeering", namespaced=False, status_subresource=False),
    ]
