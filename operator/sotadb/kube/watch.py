"""A lean list-and-watch of the kinds a ManagedDatabase owns, feeding `kube/owned.py`.

Why not kopf's indexes: kopf keeps per-object bookkeeping for every watched object (a memory
record, a worker with its queue and last body, an index entry) and, on a restart, holds every
handler until each listed object has been indexed, waking every waiting worker for each one:
at 1,000 databases (~13,000 owned objects) that was ~350 MB and a 250 s restart. Here each
event is reduced to its `ObservedObject` at once and the body dropped.

Per kind (and per namespace when the operator is limited to some): LIST in pages with the
managed-by label selector, then WATCH from the list's resourceVersion with bookmarks; a watch
that ends is resumed from the last version seen, a 410 Gone relists. Reads only: it needs
list and watch on each owned kind (manifests/operator.yaml), nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import aiohttp

from sotadb.kube import resources
from sotadb.kube.api import ApiError
from sotadb.kube.connection import Connection
from sotadb.kube.owned import OwnedObjects

WATCHED: Final = resources.OWNED
PAGE_SIZE: Final = 250  # a page's bodies are decoded at once: keep the burst small
WATCH_SECONDS: Final = 300  # the server ends a watch after this; it is resumed at once
BACKOFF_SECONDS: Final = (0.5, 1.0, 2.0, 5.0)
logger = logging.getLogger(__name__)


class Gone(Exception):
    """The resourceVersion to resume from is too old: list again."""


class Transport:
    """GET requests and watch streams over aiohttp, authenticated as `KubeApi` is."""

    def __init__(self, connection: Connection, user_agent: str) -> None:
        self._connection = connection
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connection = self._connection
            context: ssl.SSLContext | bool = False
            if connection.server.startswith("https"):
                context = ssl.create_default_context(cafile=connection.ca_path)
                if connection.insecure:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                if connection.certificate_path:
                    context.load_cert_chain(
                        connection.certificate_path, connection.private_key_path
                    )
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._session

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        authorization = self._connection.authorization()
        if authorization:
            headers["Authorization"] = authorization
        return headers

    async def get(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        url = self._connection.server + path
        timeout = aiohttp.ClientTimeout(total=60)
        async with self._open().get(
            url, params=query, headers=self._headers(), timeout=timeout
        ) as response:
            body = await response.read()
            if response.status == 410:
                raise Gone(path)
            if response.status >= 400:
                raise ApiError(response.status, response.reason or "", _message(body))
            decoded: dict[str, Any] = json.loads(body)
            return decoded

    async def stream(self, path: str, query: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        url = self._connection.server + path
        # The server ends the watch after timeoutSeconds; silence well beyond that is a hang.
        timeout = aiohttp.ClientTimeout(total=None, sock_read=WATCH_SECONDS + 60)
        async with self._open().get(
            url, params=query, headers=self._headers(), timeout=timeout
        ) as response:
            if response.status == 410:
                raise Gone(path)
            if response.status >= 400:
                raise ApiError(
                    response.status, response.reason or "", _message(await response.read())
                )
            # Split lines ourselves: aiohttp's readline caps a line at 128 KiB.
            pending = b""
            async for chunk in response.content.iter_any():
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if pending.strip():
                yield json.loads(pending)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class OwnedWatch:
    """Lists, then watches, every owned kind into an `OwnedObjects`."""

    def __init__(
        self,
        transport: Transport,
        objects: OwnedObjects,
        *,
        selector: str,
        namespaces: Sequence[str] = (),
    ) -> None:
        self._transport = transport
        self.objects = objects
        self._selector = selector
        self._scopes: tuple[str | None, ...] = tuple(namespaces) or (None,)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """List every kind (so that no handler runs on a partial view), then watch each."""
        versions = {}
        for resource in WATCHED:
            for namespace in self._scopes:
                versions[(resource, namespace)] = await self._list(resource, namespace)
        for (resource, namespace), version in versions.items():
            self._tasks.append(
                asyncio.create_task(
                    self._watch(resource, namespace, version),
                    name=f"sotadb watch {resource.plural}",
                )
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self._transport.close()

    async def _list(self, resource: resources.Resource, namespace: str | None) -> str:
        """Every object of ours of this kind, in pages; returns the version to watch from."""
        query = {"labelSelector": self._selector, "limit": str(PAGE_SIZE)}
        bodies: list[dict[str, Any]] = []
        while True:
            page = await self._transport.get(resource.path(namespace), query)
            # List items carry no kind; the snapshots need it.
            bodies += [{**item, "kind": resource.kind} for item in page.get("items") or []]
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                self.objects.replace(resource.kind, namespace, bodies)
                return str(metadata.get("resourceVersion") or "")
            query = {**query, "continue": str(metadata["continue"])}

    async def _watch(
        self, resource: resources.Resource, namespace: str | None, version: str
    ) -> None:
        failures = 0
        while True:
            try:
                version = await self._follow(resource, namespace, version)
                failures = 0
            except Gone:
                version = await self._relist(resource, namespace)
            except (aiohttp.ClientError, TimeoutError, ValueError, ApiError) as e:
                delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                failures += 1
                logger.warning(
                    "watching %s failed (%s); again in %.1f s", resource.plural, e, delay
                )
                await asyncio.sleep(delay)

    async def _relist(self, resource: resources.Resource, namespace: str | None) -> str:
        failures = 0
        while True:
            try:
                return await self._list(resource, namespace)
            except (aiohttp.ClientError, TimeoutError, ValueError, ApiError, Gone) as e:
                delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                failures += 1
                logger.warning("listing %s failed (%s); again in %.1f s", resource.plural, e, delay)
                await asyncio.sleep(delay)

    async def _follow(
        self, resource: resources.Resource, namespace: str | None, version: str
    ) -> str:
        """One watch request, until the server ends it; returns the last version seen."""
        query = {
            "watch": "true",
            "labelSelector": self._selector,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        if version:
            query["resourceVersion"] = version
        async for event in self._transport.stream(resource.path(namespace), query):
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if body.get("code") == 410:
                    raise Gone(resource.plural)
                raise ApiError(
                    int(body.get("code") or 0), str(body.get("reason")), str(body.get("message"))
                )
            version = str((body.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "DELETED":
                self.objects.delete({**body, "kind": resource.kind})
            elif kind in ("ADDED", "MODIFIED"):
                self.objects.upsert({**body, "kind": resource.kind})
        return version


def _message(body: bytes) -> str:
    # Only the Status message the server wrote: never a body of ours (Secrets).
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(body).get("message") or "")
    return ""
