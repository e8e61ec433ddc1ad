"""``KubeEmulator``: the emulated API server, served over HTTP on 127.0.0.1 from its own thread.

The server has its own thread and event loop, so the test's thread may block freely: the sync
``kubernetes`` client, ``subprocess.run(["kubectl", …])`` and ``kopf.testing.KopfRunner`` all
work from sync and async tests alike. Reads of the store from the test go through the
emulator's loop (``call``), so they see a consistent state.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import pathlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp.web
import yaml

from kubeemu.api import KubeApi
from kubeemu.catalog import Catalog, ResourceType
from kubeemu.errors import ApiError
from kubeemu.handler import EmulatorHandler
from kubeemu.objects import Obj
from kubeemu.requestlog import ApiCall, RequestLog, Write
from kubeemu.selectors import parse_field_selector, parse_label_selector
from kubeemu.store import Store

T = TypeVar("T")
DEFAULT_NAMESPACES = ("default", "kube-system")


class KubeEmulator:
    """An emulated Kubernetes API server for tests; see the package README for its limits.

    Use as a context manager, sync or async::

        with KubeEmulator() as emu: ...
        async with KubeEmulator.running() as emu: ...
    """

    def __init__(
        self,
        *,
        namespaces: tuple[str, ...] = DEFAULT_NAMESPACES,
        bookmark_interval: float = 5.0,
        history: int = 100_000,
        startup_timeout: float = 30.0,
    ) -> None:
        self.bookmark_interval = bookmark_interval
        self._namespaces = namespaces
        self._history = history
        self._startup_timeout = startup_timeout
        self._log = RequestLog()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._store: Store | None = None
        self._handler: EmulatorHandler | None = None
        self._port: int | None = None
        self._error: BaseException | None = None

    @classmethod
    def running(cls, **kwargs: Any) -> Self:
        """An emulator to enter with ``with`` or ``async with``; it serves while inside."""
        return cls(**kwargs)

    # Lifecycle.

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the emulator is already started")
        self._thread = threading.Thread(target=self._run, name="kubeemu", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._startup_timeout):
            raise RuntimeError("the emulator did not start in time")
        if self._error is not None:
            raise RuntimeError("the emulator failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            raise RuntimeError("the emulator's thread did not stop")
        if self._error is not None:
            raise RuntimeError("the emulator failed") from self._error

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # reported by start() or stop(): never die silently
            self._error = e
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        store = self._store = Store(Catalog(), history=self._history)
        namespace_type = store.catalog.find("", "v1", "namespaces")
        assert namespace_type is not None
        for name in self._namespaces:
            store.create(namespace_type, None, {"metadata": {"name": name}})

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            self._port = port = sock.getsockname()[1]
            api = KubeApi(
                store,
                server_address=lambda: f"127.0.0.1:{port}",
                bookmark_interval=self.bookmark_interval,
            )
            handler = self._handler = EmulatorHandler(api=api, log=self._log)
            async with handler:
                runner = aiohttp.web.ServerRunner(
                    aiohttp.web.Server(handler, handler_cancellation=True, access_log=None),
                    shutdown_timeout=2.0,
                )
                await runner.setup()
                try:
                    await aiohttp.web.SockSite(runner, sock).start()
                    self._ready.set()
                    await self._stopping.wait()
                    store.close()  # ends the watch streams, so that their handlers return
                    await asyncio.sleep(0)
                finally:
                    await runner.cleanup()

    # Addressing.

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator is not running")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(
        self, path: str | pathlib.Path, *, namespace: str = "default"
    ) -> pathlib.Path:
        """Write a kubeconfig for kubectl, the ``kubernetes`` client and kopf; returns the path."""
        path = pathlib.Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeemu", "cluster": {"server": self.url}}],
            "users": [{"name": "kubeemu", "user": {"token": "kubeemu"}}],
            "contexts": [
                {
                    "name": "kubeemu",
                    "context": {"cluster": "kubeemu", "user": "kubeemu", "namespace": namespace},
                }
            ],
            "current-context": "kubeemu",
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    # The request log.

    def mark(self) -> int:
        """A position in the request log, for ``writes(since=…)`` and friends."""
        return self._log.mark()

    def writes(self, since: int = 0) -> list[Write]:
        """Every mutating call since the mark: ``(verb, resource, namespace, name)``."""
        return self._log.writes(since)

    def calls(self, since: int = 0) -> list[ApiCall]:
        """Every call since the mark, with its verb, path, status and user agent."""
        return self._log.calls(since)

    def counts(self, since: int = 0) -> collections.Counter[str]:
        """How many calls of each verb since the mark."""
        return self._log.counts(since)

    @property
    def failures(self) -> list[str]:
        """Tracebacks of the emulator's own failures (each was answered with a 500)."""
        return list(self._handler.failures) if self._handler is not None else []

    # Access from the test's thread.

    @property
    def kmock(self) -> EmulatorHandler:
        """The kmock handler: its DSL views see every request (``emu.kmock['create']``)."""
        if self._handler is None:
            raise RuntimeError("the emulator is not running")
        return self._handler

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the emulator's loop and return its result (or raise its error)."""
        loop = self._loop
        if loop is None or self._handler is None:
            raise RuntimeError("the emulator is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as e:
                future.set_exception(e)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    def inject(self, fn: Callable[[EmulatorHandler], T]) -> T:
        """Set up kmock reactions in the emulator's loop, e.g. to inject a fault::

        emu.inject(lambda kmock: kmock['create v1/configmaps'][:1] << 500)
        """
        return self.call(lambda: fn(self.kmock))

    def _rtype(self, resource: str) -> ResourceType:
        """Find a served resource by ``plural[.group]``, as kubectl names it."""
        assert self._store is not None
        versions = self._store.catalog.versions_of(resource)
        if not versions:
            raise LookupError(f"the emulator serves no resource {resource!r}")
        return versions[0]

    def get(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        """The stored object, or None; read directly (not logged as an API call)."""

        def read() -> Obj | None:
            assert self._store is not None
            try:
                return self._store.get(self._rtype(resource), namespace, name)
            except ApiError:
                return None

        return self.call(read)

    def objects(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        labels: str = "",
        fields: str = "",
    ) -> list[Obj]:
        """The stored objects, selected as an API list call would; not logged."""

        def read() -> list[Obj]:
            assert self._store is not None
            rtype = self._rtype(resource)
            return self._store.select(
                rtype,
                namespace,
                parse_label_selector(labels),
                parse_field_selector(fields, plural=rtype.plural),
            )

        return self.call(read)

    @property
    def resource_version(self) -> int:
        """The store's current (global) resourceVersion."""
        return self.call(lambda: self._store.resource_version if self._store else 0)
