"""Which resources the emulated API server serves: the built-ins plus whatever CRDs declare.

Pure data and bookkeeping; no I/O. Discovery documents are rendered from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

ALL_VERBS = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
SUBRESOURCE_VERBS = ("get", "patch", "update")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResourceType:
    """One served resource in one group version, as discovery describes it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    verbs: tuple[str, ...] = ALL_VERBS
    custom: bool = False  # declared by a CRD (no strategic merge patch, as in a real server)
    generation: bool = True  # whether the kind has metadata.generation (ConfigMaps do not)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """The storage identity shared by all versions: ``plural`` or ``plural.group``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def discovery_entries(self) -> list[dict[str, Any]]:
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        subs = [
            {
                "name": f"{self.plural}/{sub}",
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": list(SUBRESOURCE_VERBS),
            }
            for sub in sorted(self.subresources)
        ]
        return [main, *subs]


def _builtin(
    api_version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    status: bool = False,
    categories: tuple[str, ...] = (),
    generation: bool = True,
) -> ResourceType:
    group, _, version = api_version.rpartition("/")
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kind.lower(),
        short_names=short,
        categories=categories,
        subresources=frozenset({"status"}) if status else frozenset(),
        generation=generation,
    )


BUILTINS: tuple[ResourceType, ...] = (
    _builtin(
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        short=("ns",),
        status=True,
        generation=False,
    ),
    _builtin("v1", "pods", "Pod", short=("po",), status=True, categories=("all",)),
    _builtin(
        "v1",
        "services",
        "Service",
        short=("svc",),
        status=True,
        categories=("all",),
        generation=False,
    ),
    _builtin("v1", "secrets", "Secret", generation=False),
    _builtin("v1", "configmaps", "ConfigMap", short=("cm",), generation=False),
    _builtin(
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        short=("pvc",),
        status=True,
        generation=False,
    ),
    _builtin("v1", "events", "Event", short=("ev",), generation=False),
    _builtin("v1", "serviceaccounts", "ServiceAccount", short=("sa",), generation=False),
    _builtin(
        "apps/v1", "deployments", "Deployment", short=("deploy",), status=True, categories=("all",)
    ),
    _builtin(
        "apps/v1", "statefulsets", "StatefulSet", short=("sts",), status=True, categories=("all",)
    ),
    _builtin("batch/v1", "jobs", "Job", status=True, categories=("all",)),
    _builtin("batch/v1", "cronjobs", "CronJob", short=("cj",), status=True, categories=("all",)),
    _builtin("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", short=("netpol",)),
    _builtin(
        "policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", short=("pdb",), status=True
    ),
    _builtin("coordination.k8s.io/v1", "leases", "Lease", generation=False),
    _builtin(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short=("crd", "crds"),
        status=True,
    ),
    _builtin("rbac.authorization.k8s.io/v1", "roles", "Role", generation=False),
    _builtin("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", generation=False),
    _builtin(
        "rbac.authorization.k8s.io/v1",
        "clusterroles",
        "ClusterRole",
        namespaced=False,
        generation=False,
    ),
    _builtin(
        "rbac.authorization.k8s.io/v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        namespaced=False,
        generation=False,
    ),
    _builtin("events.k8s.io/v1", "events", "Event", short=("ev",), generation=False),
)

CRD_GROUP_RESOURCE = "customresourcedefinitions.apiextensions.k8s.io"
NAMESPACE_GROUP_RESOURCE = "namespaces"


def types_from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The resource types a CRD object declares, one per served version."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    result: list[ResourceType] = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        subresources = frozenset(version.get("subresources") or {})
        result.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular", names["kind"].lower()),
                short_names=tuple(names.get("shortNames", ())),
                categories=tuple(names.get("categories", ())),
                subresources=subresources & {"status", "scale"},
                custom=True,
            )
        )
    return result


class Catalog:
    """The mutable set of served resource types: built-ins plus established CRDs."""

    def __init__(self, builtins: Iterable[ResourceType] = BUILTINS) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._by_crd: dict[str, list[ResourceType]] = {}
        for rtype in builtins:
            self._add(rtype)

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._types.values()))

    def _add(self, rtype: ResourceType) -> None:
        self._types[rtype.group, rtype.version, rtype.plural] = rtype

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def find_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for rtype in self._types.values():
            if rtype.api_version == api_version and rtype.kind == kind:
                return rtype
        return None

    def versions_of(self, group_resource: str) -> list[ResourceType]:
        return [rtype for rtype in self._types.values() if rtype.group_resource == group_resource]

    def set_crd(self, crd: Mapping[str, Any]) -> None:
        """Serve (or re-serve, after an update) the resources declared by a CRD object."""
        self.drop_crd(crd["metadata"]["name"])
        types = types_from_crd(crd)
        self._by_crd[crd["metadata"]["name"]] = types
        for rtype in types:
            self._add(rtype)

    def drop_crd(self, crd_name: str) -> list[ResourceType]:
        types = self._by_crd.pop(crd_name, [])
        for rtype in types:
            self._types.pop((rtype.group, rtype.version, rtype.plural), None)
        return types

    def group_versions(self) -> dict[str, list[str]]:
        """Non-core groups and their versions, in declaration order (the first is preferred)."""
        groups: dict[str, list[str]] = {}
        for rtype in self._types.values():
            if rtype.group:
                versions = groups.setdefault(rtype.group, [])
                if rtype.version not in versions:
                    versions.append(rtype.version)
        return groups

    # Discovery documents, as /api, /apis, /apis/{group} and /{root}/{version} serve them.

    def api_versions(self, server_address: str) -> dict[str, Any]:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
            ],
        }

    def api_group(self, group: str) -> dict[str, Any] | None:
        versions = self.group_versions().get(group)
        if not versions:
            return None
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": entries,
            "preferredVersion": entries[0],
        }

    def api_group_list(self) -> dict[str, Any]:
        groups = [self.api_group(group) for group in self.group_versions()]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [g for g in groups if g]}

    def api_resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        types = [t for t in self._types.values() if (t.group, t.version) == (group, version)]
        if not types and group:
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [entry for rtype in types for entry in rtype.discovery_entries()],
        }
