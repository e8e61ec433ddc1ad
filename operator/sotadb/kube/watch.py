"""A lean list-and-watch of everything the operator follows besides what kopf handles: the kinds
a ManagedDatabase owns (into `kube/owned.py`), the ManagedDatabases themselves (into
`kube/databases.py`) and the workloads (`kube/workloads.py`: readiness and injection).

Why not kopf: kopf keeps per-object bookkeeping for every watched object (a memory record, a
worker with its queue and last body, an index entry) and, on a restart, parks every listed
object's body in a worker until each indexed object is indexed. At 1,000 databases kopf's own
watch of the 2,000 workloads alone held ~55 MB at a restart's peak; its indexes of the owned
objects once cost ~350 MB and a 250 s restart. Here each object is reduced by its `Feed` as
soon as it is decoded, one page of a list at a time, and the body dropped.

Per kind (and per namespace when the operator is limited to some): LIST in pages with the
kind's label selector, then WATCH from the list's resourceVersion with bookmarks; a watch
that ends is resumed from the last version seen, a 410 Gone relists. Reads only: it needs
list and watch on each kind (manifests/operator.yaml), nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import aiohttp

from sotadb.kube import resources
from sotadb.kube.api import ApiError
from sotadb.kube.connection import Connection

# Every kind this watch may follow (the RBAC test reads it): what a database owns, and the
# databases themselves.
WATCHED: Final = (*resources.OWNED, resources.MANAGED_DATABASE)
PAGE_SIZE: Final = 250  # a page's bodies are decoded at once: keep the burst small
WATCH_SECONDS: Final = 300  # the server ends a watch after this; it is resumed at once
BACKOFF_SECONDS: Final = (0.5, 1.0, 2.0, 5.0)
logger = logging.getLogger(__name__)


T = TypeVar("T")


class Gone(Exception):
    """The resourceVersion to resume from is too old: list again."""


class Feed(Protocol[T]):
    """Where one kind's objects go. `reduce` keeps what is needed of a listed body (the watch
    drops the body at once); `relisted` takes a whole fresh list, reduced; `changed` takes one
    watch event (ADDED, MODIFIED or DELETED), whose body is dropped after the call."""

    def reduce(self, body: Mapping[str, Any]) -> T: ...

    def relisted(self, kind: str, namespace: str | None, items: list[T]) -> None: ...

    def changed(self, event: str, body: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class Kind:
    """One watched kind: which of its objects (a label selector, "" for all) and their feed."""

    resource: resources.Resource
    selector: str
    feed: Feed[Any]


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


class ListWatch:
    """Lists, then watches, each `Kind` into its feed."""

    def __init__(
        self, transport: Transport, kinds: Sequence[Kind], *, namespaces: Sequence[str] = ()
    ) -> None:
        self._transport = transport
        self._kinds = tuple(kinds)
        self._scopes: tuple[str | None, ...] = tuple(namespaces) or (None,)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """List every kind (so that no handler runs on a partial view), then watch each."""
        versions = {}
        for kind in self._kinds:
            for namespace in self._scopes:
                versions[(kind, namespace)] = await self._list(kind, namespace)
        for (kind, namespace), version in versions.items():
            self._tasks.append(
                asyncio.create_task(
                    self._watch(kind, namespace, version),
                    name=f"sotadb watch {kind.resource.plural}",
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

    async def _list(self, kind: Kind, namespace: str | None) -> str:
        """Every object of this kind (that the selector selects), in pages, each page reduced
        before the next is read; returns the version to watch from."""
        query = {"limit": str(PAGE_SIZE)}
        if kind.selector:
            query["labelSelector"] = kind.selector
        name = kind.resource.kind
        items: list[Any] = []
        while True:
            page = await self._transport.get(kind.resource.path(namespace), query)
            # List items carry no kind; the feeds need it.
            items += [kind.feed.reduce({**item, "kind": name}) for item in page.get("items") or []]
            metadata = page.get("metadata") or {}
            del page
            if not metadata.get("continue"):
                kind.feed.relisted(name, namespace, items)
                return str(metadata.get("resourceVersion") or "")
            query = {**query, "continue": str(metadata["continue"])}

    async def _watch(self, kind: Kind, namespace: str | None, version: str) -> None:
        failures = 0
        while True:
            try:
                version = await self._follow(kind, namespace, version)
                failures = 0
            except Gone:
                version = await self._relist(kind, namespace)
            except (aiohttp.ClientError, TimeoutError, ValueError, ApiError) as e:
                delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                failures += 1
                logger.warning(
                    "watching %s failed (%s); again in %.1f s", kind.resource.plural, e, delay
                )
                await asyncio.sleep(delay)

    async def _relist(self, kind: Kind, namespace: str | None) -> str:
        failures = 0
        while True:
            try:
                return await self._list(kind, namespace)
            except (aiohttp.ClientError, TimeoutError, ValueError, ApiError, Gone) as e:
                delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                failures += 1
                logger.warning(
                    "listing %s failed (%s); again in %.1f s", kind.resource.plural, e, delay
                )
                await asyncio.sleep(delay)

    async def _follow(self, kind: Kind, namespace: str | None, version: str) -> str:
        """One watch request, until the server ends it; returns the last version seen."""
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        if kind.selector:
            query["labelSelector"] = kind.selector
        if version:
            query["resourceVersion"] = version
        name = kind.resource.kind
        async for event in self._transport.stream(kind.resource.path(namespace), query):
            event_type, body = event.get("type"), event.get("object") or {}
            if event_type == "ERROR":
                if body.get("code") == 410:
                    raise Gone(kind.resource.plural)
                raise ApiError(
                    int(body.get("code") or 0), str(body.get("reason")), str(body.get("message"))
                )
            version = str((body.get("metadata") or {}).get("resourceVersion") or version)
            if event_type in ("ADDED", "MODIFIED", "DELETED"):
                kind.feed.changed(event_type, {**body, "kind": name})
        return version


def _message(body: bytes) -> str:
    # Only the Status message the server wrote: never a body of ours (Secrets).
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(body).get("message") or "")
    return ""
