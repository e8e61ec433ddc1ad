"""The operator's own list-and-watch of what it owns (sotadb/kube/watch.py), over real HTTP
against the emulator: it lists before anything runs, follows additions, changes and deletions,
ignores objects that are not ours, and lists again when the server no longer keeps the version
it would resume from (410 Gone)."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Callable
from typing import Any

from kubeemu import KubeEmulator

from sotadb import names
from sotadb.kube import resources
from sotadb.kube.api import KubeApi, load_configuration
from sotadb.kube.handlers import MANAGED_SELECTOR
from sotadb.kube.owned import OwnedObjects
from sotadb.kube.watch import Kind, ListWatch, Transport

NAMESPACE = "default"


def configmap(name: str, *, ours: bool = True, data: str = "1") -> dict[str, Any]:
    labels = names.common_labels("a", names.COMPONENT_POSTGRES) if ours else {"app": "x"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "data": {"k": data},
    }


def seen(objects: OwnedObjects) -> set[str]:
    return {name for _, name in objects.observed(NAMESPACE, "a").objects}


async def eventually(probe: Callable[[], bool], what: str) -> None:
    """Poll for up to 10 s: the watch has no event to await from outside."""
    for _ in range(500):
        if probe():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not reached in 10 s: {what}")


async def test_lists_then_follows_and_relists_after_gone(tmp_path: pathlib.Path) -> None:
    with KubeEmulator(bookmark_interval=0.5, history=5) as emu:
        api = KubeApi(load_configuration(str(emu.write_kubeconfig(tmp_path / "kubeconfig"))))
        await asyncio.to_thread(api.create, configmap("listed"))
        await asyncio.to_thread(api.create, configmap("foreign", ours=False))
        objects = OwnedObjects()
        configmaps = Kind(resources.CONFIG_MAP, MANAGED_SELECTOR, objects)
        watch = ListWatch(Transport(api.connection, api.user_agent), [configmaps])
        await watch.start()
        try:
            assert seen(objects) == {"listed"}  # listed before start() returns

            await asyncio.to_thread(api.create, configmap("added"))
            await eventually(lambda: "added" in seen(objects), "an added object")
            changed = configmap("added", data="2")
            changed["metadata"]["annotations"] = {names.ANNOTATION_SPEC_HASH: "h2"}
            await asyncio.to_thread(api.apply, changed)
            await eventually(
                lambda: (
                    objects.observed(NAMESPACE, "a").get("ConfigMap", "added").spec_hash  # type: ignore[union-attr]
                    == "h2"
                ),
                "a change",
            )
            await asyncio.to_thread(api.delete, resources.CONFIG_MAP, NAMESPACE, "listed")
            await eventually(lambda: "listed" not in seen(objects), "a deletion")

            # Resuming from a version older than the server's history (5 changes): 410, so the
            # kind is listed again, and what the list lacks is dropped from the snapshots.
            for index in range(8):
                await asyncio.to_thread(api.create, configmap(f"later-{index}"))
            objects.upsert({**configmap("stale"), "kind": "ConfigMap"})
            mark = emu.mark()
            resumed = asyncio.create_task(watch._watch(configmaps, None, "1"))
            try:
                await eventually(lambda: "stale" not in seen(objects), "a relist after 410")
            finally:
                resumed.cancel()
            lists = [c for c in emu.calls(mark) if c.verb == "list" and c.plural == "configmaps"]
            assert lists, "the 410 led to a new list"
            assert seen(objects) == {"added", *(f"later-{i}" for i in range(8))}
        finally:
            await watch.stop()
            api.close()
