"""Parsing of Kubernetes API URL paths into what they address. Pure: no I/O.

Shapes understood (``/api/v1`` for the core group, ``/apis/{group}/{version}`` for the others)::

    {root}                                           discovery of the group version
    {root}/{plural}                                  all objects (cluster-wide or all namespaces)
    {root}/{plural}/{name}[/{subresource}]           a cluster-scoped object
    {root}/namespaces/{ns}/{plural}[/{name}[/{sub}]] a namespaced collection or object
    /api/v1/namespaces/{name}[/status|/finalize]     a Namespace object itself
    {root}/watch/...                                 the deprecated watch prefix

"""

from __future__ import annotations

import dataclasses

_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApiPath:
    group: str  # "" for the core group
    version: str
    plural: str | None = None  # None: the group-version discovery document
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch_prefix: bool = False  # the deprecated /watch/ path segment was used

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def parse_api_path(path: str) -> ApiPath | None:
    """Parse a resource URL path; ``None`` if it is not under ``/api/{v}`` or ``/apis/{g}/{v}``."""
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None

    watch_prefix = bool(rest) and rest[0] == "watch"
    if watch_prefix:
        rest = rest[1:]
    base = ApiPath(group=group, version=version, watch_prefix=watch_prefix)
    if not rest:
        return base
    if rest[0] != "namespaces" or len(rest) == 1:
        return _collection_or_object(base, None, rest)

    # Under /namespaces/{ns}: the Namespace itself (core only) or something namespaced in it.
    namespace, tail = rest[1], rest[2:]
    is_namespace_itself = group == "" and (
        not tail or (len(tail) == 1 and tail[0] in _NAMESPACE_SUBRESOURCES)
    )
    if is_namespace_itself:
        return _collection_or_object(base, None, rest)
    if not tail:
        return None  # /apis/{g}/{v}/namespaces/{ns} addresses nothing
    return _collection_or_object(base, namespace, tail)


def _collection_or_object(base: ApiPath, namespace: str | None, rest: list[str]) -> ApiPath:
    plural, *more = rest
    name = more[0] if more else None
    subresource = "/".join(more[1:]) or None
    return dataclasses.replace(
        base, plural=plural, namespace=namespace, name=name, subresource=subresource
    )
