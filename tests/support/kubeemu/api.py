"""The HTTP face of the emulated API server: routes a request to discovery or to the store.

Plain aiohttp; it knows nothing of kmock (see ``handler.py`` for how kmock hands requests over).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp.web
import yaml

from kubeemu import selectors, watching
from kubeemu.catalog import ResourceType
from kubeemu.errors import (
    ApiError,
    BadRequest,
    Gone,
    MethodNotAllowed,
    NotFound,
    UnsupportedMediaType,
)
from kubeemu.objects import Obj, meta
from kubeemu.paths import ApiPath, parse_api_path
from kubeemu.store import PatchType, Propagation, Store

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0+kubeemu",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
DEFAULT_WATCH_TIMEOUT = 1800.0  # the real server picks 30–60 minutes


def json_response(body: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(
        body=json.dumps(body).encode(), status=status, content_type="application/json"
    )


def error_response(error: ApiError) -> aiohttp.web.Response:
    return json_response(error.status(), status=error.code)


def _decode(raw: aiohttp.web.BaseRequest, body: bytes) -> Any:
    if not body:
        return None
    content_type = raw.content_type
    if "protobuf" in content_type:
        raise UnsupportedMediaType("protobuf is not emulated; send JSON (e.g. kubectl -f)")
    try:
        if content_type.endswith("yaml"):
            return yaml.safe_load(body)
        return json.loads(body)
    except (ValueError, yaml.YAMLError) as e:
        raise BadRequest(f"the request body is not valid {content_type}: {e}") from e


def _flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "").lower() in ("true", "1")


def _since(query: Mapping[str, str]) -> int | None:
    rv = query.get("resourceVersion", "")
    if rv in ("", "0") or _flag(query, "sendInitialEvents"):
        return None
    try:
        return int(rv)
    except ValueError as e:
        raise BadRequest(f"invalid resourceVersion: {rv!r}") from e


def _continue_token(rv: int, after: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps([rv, *after]).encode()).decode()


def _parse_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        rv, namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(rv), (str(namespace), str(name))
    except ValueError as e:
        raise BadRequest(f"invalid continue token: {token!r}") from e


def _position(obj: Obj) -> tuple[str, str]:
    return meta(obj).get("namespace") or "", meta(obj)["name"]


class KubeApi:
    def __init__(
        self,
        store: Store,
        *,
        server_address: Callable[[], str],
        bookmark_interval: float,
    ) -> None:
        self.store = store
        self.catalog = store.catalog
        self._server_address = server_address
        self.bookmark_interval = bookmark_interval

    async def serve(self, raw: aiohttp.web.BaseRequest, body: bytes) -> aiohttp.web.StreamResponse:
        try:
            return await self._serve(raw, body)
        except ApiError as e:
            return error_response(e)

    async def _serve(self, raw: aiohttp.web.BaseRequest, body: bytes) -> aiohttp.web.StreamResponse:
        api_path = parse_api_path(raw.path)
        if api_path is None:
            return self._non_resource(raw)
        if api_path.plural is None:
            if raw.method != "GET":
                raise MethodNotAllowed(f"{raw.method} is not allowed on {raw.path}")
            doc = self.catalog.api_resource_list(api_path.group, api_path.version)
            if doc is None:
                raise NotFound("the server could not find the requested resource")
            return json_response(doc)
        rtype = self.catalog.find(api_path.group, api_path.version, api_path.plural)
        if rtype is None:
            raise NotFound(
                f"the server could not find the requested resource"
                f" ({api_path.group_version} {api_path.plural})"
            )
        if not rtype.namespaced and api_path.namespace is not None:
            raise NotFound(f"{rtype.plural} are cluster-scoped; no namespace in the URL")
        query = {key: raw.query.getone(key) for key in raw.query}
        if raw.method == "GET":
            watch = api_path.watch_prefix or _flag(query, "watch")
            if watch:
                return await self._watch(raw, rtype, api_path, query)
            if api_path.name is None:
                return self._list(rtype, api_path, query)
            return json_response(self.store.get(rtype, api_path.namespace, api_path.name))
        data = _decode(raw, body)
        return self._write(raw, rtype, api_path, query, data)

    def _non_resource(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.Response:
        path = raw.path.rstrip("/") or "/"
        parts = [part for part in path.split("/") if part]
        if raw.method != "GET":
            raise MethodNotAllowed(f"{raw.method} is not allowed on {raw.path}")
        if path == "/api":
            return json_response(self.catalog.api_versions(self._server_address()))
        if path == "/apis":
            return json_response(self.catalog.api_group_list())
        if len(parts) == 2 and parts[0] == "apis":
            group = self.catalog.api_group(parts[1])
            if group is None:
                raise NotFound("the server could not find the requested resource")
            return json_response(group)
        if path == "/version":
            return json_response(KUBERNETES_VERSION)
        if path in ("/healthz", "/livez", "/readyz"):
            return aiohttp.web.Response(text="ok")
        if path == "/":
            groups = self.catalog.group_versions()
            paths = ["/api", "/api/v1", "/apis", "/version", "/healthz"]
            paths += [f"/apis/{g}" for g in groups]
            paths += [f"/apis/{g}/{v}" for g, versions in groups.items() for v in versions]
            return json_response({"paths": sorted(paths)})
        raise NotFound(f"the server could not find the requested resource ({path}): not emulated")

    def _list(
        self, rtype: ResourceType, api_path: ApiPath, query: Mapping[str, str]
    ) -> aiohttp.web.Response:
        labels = selectors.parse_label_selector(query.get("labelSelector"))
        fields = selectors.parse_field_selector(query.get("fieldSelector"), plural=rtype.plural)
        items = self.store.select(rtype, api_path.namespace, labels, fields)
        rv = self.store.resource_version
        if token := query.get("continue"):
            rv, after = _parse_continue(token)
            items = [item for item in items if _position(item) > after]
        metadata: dict[str, Any] = {"resourceVersion": str(rv)}
        limit = int(query.get("limit") or 0)
        if 0 < limit < len(items):
            metadata["continue"] = _continue_token(rv, _position(items[limit - 1]))
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return json_response(
            {
                "kind": f"{rtype.kind}List",
                "apiVersion": rtype.api_version,
                "metadata": metadata,
                "items": items,
            }
        )

    async def _watch(
        self,
        raw: aiohttp.web.BaseRequest,
        rtype: ResourceType,
        api_path: ApiPath,
        query: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        field_text = query.get("fieldSelector") or ""
        if api_path.name is not None:  # GET .../{name}?watch=true: a watch of one object
            field_text = ",".join(filter(None, [field_text, f"metadata.name={api_path.name}"]))
        labels = selectors.parse_label_selector(query.get("labelSelector"))
        fields = selectors.parse_field_selector(field_text, plural=rtype.plural)
        timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)

        response = aiohttp.web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        try:
            initial, watcher = self.store.watch(
                rtype, api_path.namespace, labels, fields, since=_since(query)
            )
        except Gone as e:  # reported in the stream, as the real server does
            await response.prepare(raw)
            await response.write(json.dumps({"type": "ERROR", "object": e.status()}).encode())
            await response.write_eof()
            return response
        try:
            await response.prepare(raw)
            events = watching.stream(
                watcher,
                initial,
                current_rv=lambda: self.store.resource_version,
                duration=timeout,
                bookmarks=_flag(query, "allowWatchBookmarks"),
                bookmark_interval=self.bookmark_interval,
                initial_events_end=_flag(query, "sendInitialEvents"),
            )
            async for event in events:
                await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            self.store.unwatch(watcher)
        return response

    def _write(
        self,
        raw: aiohttp.web.BaseRequest,
        rtype: ResourceType,
        api_path: ApiPath,
        query: Mapping[str, str],
        data: Any,
    ) -> aiohttp.web.Response:
        dry_run = query.get("dryRun") == "All"
        namespace, name, sub = api_path.namespace, api_path.name, api_path.subresource
        if rtype.namespaced and namespace is None and raw.method != "DELETE":
            raise NotFound(f"{rtype.plural} are namespaced: use a URL with a namespace")
        if raw.method == "POST" and name is None:
            return json_response(self.store.create(rtype, namespace, data, dry_run=dry_run), 201)
        if raw.method == "PUT" and name is not None:
            obj = self.store.replace(rtype, namespace, name, data, subresource=sub, dry_run=dry_run)
            return json_response(obj)
        if raw.method == "PATCH" and name is not None:
            try:
                patch_type = PatchType(raw.content_type)
            except ValueError as e:
                raise UnsupportedMediaType(
                    f"the body of the request was in an unknown format: {raw.content_type}"
                ) from e
            if patch_type is PatchType.APPLY and not query.get("fieldManager"):
                raise BadRequest("fieldManager is required for apply requests")
            obj, created = self.store.patch(
                rtype, namespace, name, patch_type, data, subresource=sub, dry_run=dry_run
            )
            return json_response(obj, 201 if created else 200)
        if raw.method == "DELETE":
            options: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
            policy = query.get("propagationPolicy") or options.get("propagationPolicy")
            try:
                propagation = Propagation(policy or "Background")
            except ValueError as e:
                raise BadRequest(f"unknown propagationPolicy: {policy!r}") from e
            dry_run = dry_run or "All" in (options.get("dryRun") or [])
            if name is None:
                labels = selectors.parse_label_selector(query.get("labelSelector"))
                fields = selectors.parse_field_selector(
                    query.get("fieldSelector"), plural=rtype.plural
                )
                items = self.store.delete_collection(
                    rtype, namespace, labels, fields, propagation=propagation, dry_run=dry_run
                )
                return json_response(
                    {
                        "kind": f"{rtype.kind}List",
                        "apiVersion": rtype.api_version,
                        "metadata": {},
                        "items": items,
                    }
                )
            obj = self.store.delete(
                rtype,
                namespace,
                name,
                propagation=propagation,
                preconditions=options.get("preconditions"),
                dry_run=dry_run,
            )
            return json_response(obj)
        raise MethodNotAllowed(f"{raw.method} is not supported on {raw.path}")
