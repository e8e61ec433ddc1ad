"""The single-host reconcile loop: observe → render → translate → compare → apply → wait.

`up` is idempotent: a second run finds every container's plan hash unchanged and writes
nothing; a changed spec re-creates only the containers whose plan changed. The data lives in
a named volume, so `down` (without `--purge`) and `up` keep it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import docker
import psycopg

from sotadb import credentials as creds
from sotadb import names
from sotadb.credentials import Credentials, Endpoint
from sotadb.docker import engine
from sotadb.docker.addressing import NetworkLayout, layout_for, layout_of
from sotadb.docker.state import DatabaseState, StateStore
from sotadb.docker.translate import (
    LABEL_PLAN_HASH,
    Catalog,
    ContainerPlan,
    default_labels,
    translate,
)
from sotadb.errors import ProvisioningFailed
from sotadb.render import Images, render_objects
from sotadb.render.meta import Manifest
from sotadb.spec import ManagedDatabase, check_update, parse_database

HOST_ADDRESS: Final = "127.0.0.1"
READY_TIMEOUT: Final = 120.0
# Creating a network on the subnet Docker just picked can lose a race with another network
# created meanwhile ("pool overlaps"); then Docker picks again.
NETWORK_CREATE_ATTEMPTS: Final = 3
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    """The default progress sink: say nothing."""


@dataclass(frozen=True)
class UpResult:
    db: ManagedDatabase
    credentials: Credentials
    changed: tuple[str, ...]  # what this run created or re-created
    host_ports: Mapping[str, int]

    @property
    def database_url(self) -> str:
        return creds.database_url(self.db.slug, self.credentials.password)


@dataclass(frozen=True)
class ContainerStatus:
    name: str
    state: str
    health: str | None


@dataclass(frozen=True)
class DatabaseStatus:
    slug: str
    containers: tuple[ContainerStatus, ...]
    network: bool
    volume: bool
    host_ports: Mapping[str, int]

    answers: bool  # a real query through PgBouncer succeeded just now

    @property
    def ready(self) -> bool:
        # Docker's first healthcheck comes one interval after start, so "starting" alone says
        # little: the real query decides.
        return self.answers and all(c.state == "running" for c in self.containers)


class DockerRuntime:
    def __init__(
        self,
        client: docker.DockerClient | None = None,
        store: StateStore | None = None,
        images: Images | None = None,
    ) -> None:
        self.client = client or engine.connect()
        self.store = store or StateStore()
        self.images = images or Images()

    # ---------------------------------------------------------------- up

    def up(
        self,
        document: Mapping[str, Any],
        *,
        progress: Progress = _quiet,
        wait: bool = True,
        timeout: float = READY_TIMEOUT,
    ) -> UpResult:
        db = parse_database(document)
        for image in (self.images.postgres, self.images.pooler):
            if not engine.image_exists(self.client, image):
                raise engine.ImageMissing(image)
        state = self._settle_state(db, document)
        objects = render_objects(db, state.credentials, self.images)
        catalog = Catalog.of(objects)
        labels = default_labels(db.slug)

        changed: list[str] = []
        if self._ensure_network(db.slug, labels):
            changed.append(names.network_name(db.slug))
            progress(f"network {names.network_name(db.slug)} created")
        if self._ensure_volume(names.data_volume_name(db.slug), labels):
            changed.append(names.data_volume_name(db.slug))
            progress(f"volume {names.data_volume_name(db.slug)} created")
        for plan in self._plans(db, objects, catalog, state.host_ports, labels):
            for source in plan.file_sources:
                self.store.write_files(db.slug, source.directory, source.files)
            if self._apply(plan, progress):
                changed.append(plan.name)
        if wait:
            progress("waiting for a query through PgBouncer")
            self.wait_until_ready(db.slug, state.credentials, timeout=timeout)
        return UpResult(db, state.credentials, tuple(changed), state.host_ports)

    def _settle_state(self, db: ManagedDatabase, document: Mapping[str, Any]) -> DatabaseState:
        """Credentials are made once and saved before any container can use them."""
        previous = self.store.load(db.slug)
        if previous is not None:
            check_update(parse_database(previous.document).spec, db.spec)
            credentials = previous.credentials
            ports = dict(previous.host_ports)
        else:
            credentials = Credentials.generate()
            ports = {}
        for container in (names.postgres_name(db.slug), names.pooler_name(db.slug)):
            ports.setdefault(container, _free_port())
        state = DatabaseState(db.slug, _persistable(document), credentials, ports)
        if state != previous:
            self.store.save(state)
        return state

    def _plans(
        self,
        db: ManagedDatabase,
        objects: list[Manifest],
        catalog: Catalog,
        host_ports: Mapping[str, int],
        labels: Mapping[str, str],
    ) -> list[ContainerPlan]:
        workloads = {o["kind"]: o for o in objects if o["kind"] in ("StatefulSet", "Deployment")}
        files_root = str(self.store.files_dir(db.slug))
        postgres = names.postgres_name(db.slug)
        pooler = names.pooler_name(db.slug)
        network = engine.find_network(self.client, names.network_name(db.slug))
        layout = None if network is None else layout_of(network.attrs)
        return [
            translate(
                container_name=postgres,
                pod_template=workloads["StatefulSet"]["spec"]["template"],
                catalog=catalog,
                network=names.network_name(db.slug),
                files_root=files_root,
                volume_claims={names.DATA_VOLUME: names.data_volume_name(db.slug)},
                labels=labels,
                published_ports={names.POSTGRES_PORT: (HOST_ADDRESS, host_ports[postgres])},
                address=None if layout is None else layout.postgres_address,
            ),
            translate(
                container_name=pooler,
                pod_template=workloads["Deployment"]["spec"]["template"],
                catalog=catalog,
                network=names.network_name(db.slug),
                files_root=files_root,
                volume_claims={},
                labels=labels,
                published_ports={names.POOLER_PORT: (HOST_ADDRESS, host_ports[pooler])},
            ),
        ]

    def _ensure_network(self, slug: str, labels: Mapping[str, str]) -> bool:
        """Create the network with PostgreSQL's fixed address kept out of Docker's dynamic range
        (see `addressing`), on a subnet Docker picks from its own pools; True if created."""
        name = names.network_name(slug)
        if engine.find_network(self.client, name) is not None:
            return False
        for attempt in range(1, NETWORK_CREATE_ATTEMPTS + 1):
            layout = self._free_layout(name, labels)
            try:
                self._create_network(name, labels, layout)
            except ProvisioningFailed:
                if attempt == NETWORK_CREATE_ATTEMPTS:
                    raise
                continue
            return True
        raise AssertionError("unreachable")

    def _free_layout(self, name: str, labels: Mapping[str, str]) -> NetworkLayout:
        """Docker's choice of subnet, learnt by creating the network without one (removed)."""
        probe = engine.call(
            f"create network {name}",
            lambda: self.client.networks.create(
                name, driver="bridge", labels=dict(labels), check_duplicate=True
            ),
        )
        try:
            pools = probe.attrs["IPAM"]["Config"] or []
            ipv4 = [pool for pool in pools if ":" not in pool.get("Subnet", ":")]
            if not ipv4:
                raise ProvisioningFailed(f"Docker gave network {name} no IPv4 subnet")
            return layout_for(ipv4[0]["Subnet"], ipv4[0].get("Gateway") or None)
        except ValueError as e:
            raise ProvisioningFailed(
                f"network {name}: {e} (fix: give Docker's default-address-pools larger subnets)"
            ) from e
        finally:
            engine.call(f"remove network {name}", probe.remove)

    def _create_network(self, name: str, labels: Mapping[str, str], layout: NetworkLayout) -> None:
        pool = docker.types.IPAMPool(
            subnet=layout.subnet, gateway=layout.gateway, iprange=layout.dynamic_range
        )
        engine.call(
            f"create network {name} on {layout.subnet}",
            lambda: self.client.networks.create(
                name,
                driver="bridge",
                labels=dict(labels),
                ipam=docker.types.IPAMConfig(pool_configs=[pool]),
                check_duplicate=True,
            ),
        )

    def _ensure_volume(self, name: str, labels: Mapping[str, str]) -> bool:
        try:
            self.client.volumes.get(name)
        except docker.errors.NotFound:
            engine.call(
                f"create volume {name}",
                lambda: self.client.volumes.create(name, labels=dict(labels)),
            )
            return True
        return False

    def _apply(self, plan: ContainerPlan, progress: Progress) -> bool:
        """Create, re-create or start one container; True when it had to be (re)created."""
        existing = engine.find_container(self.client, plan.name)
        if existing is not None and existing.labels.get(LABEL_PLAN_HASH) == plan.plan_hash:
            if existing.status != "running":
                progress(f"starting {plan.name}")
                engine.call(f"start {plan.name}", existing.start)
            return False
        if existing is not None:
            progress(f"re-creating {plan.name} (its configuration changed)")
            engine.remove_container(existing, timeout=plan.stop_timeout)
        else:
            progress(f"creating {plan.name}")
        args = dict(plan.create_args)
        container = engine.call(
            f"create container {plan.name}", lambda: self.client.containers.create(**args)
        )
        engine.call(f"start container {plan.name}", container.start)
        return True

    # ---------------------------------------------------------------- readiness

    def pooler_endpoint(self, slug: str) -> Endpoint:
        """PgBouncer's address on the database's bridge network: the fast path from this host
        (published ports go through docker-proxy at about half the throughput)."""
        container = engine.find_container(self.client, names.pooler_name(slug))
        address = (
            None if container is None else engine.container_ip(container, names.network_name(slug))
        )
        if address is None:
            raise ProvisioningFailed(f"{names.pooler_name(slug)} is not running (fix: sotadb up)")
        return Endpoint(address, names.POOLER_PORT)

    def wait_until_ready(
        self, slug: str, credentials: Credentials, *, timeout: float = READY_TIMEOUT
    ) -> float:
        """Poll with a real query through PgBouncer; return the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        last_error = "no attempt yet"
        while time.monotonic() < deadline:
            try:
                self._query(slug, credentials)
                return time.monotonic() - started
            except (psycopg.Error, ProvisioningFailed) as e:
                # Connection errors name host and user, never the password.
                last_error = type(e).__name__
                self._fail_fast_if_exited(slug)
                time.sleep(0.1)
        raise ProvisioningFailed(
            f"{slug} did not answer a query through PgBouncer within {timeout:.0f}s "
            f"(last error: {last_error}; fix: `docker logs {names.postgres_name(slug)}`)"
        )

    def _fail_fast_if_exited(self, slug: str) -> None:
        for name in (names.postgres_name(slug), names.pooler_name(slug)):
            container = engine.find_container(self.client, name)
            if container is not None and container.status in ("exited", "dead"):
                raise ProvisioningFailed(
                    f"{name} exited with status {container.attrs['State'].get('ExitCode')} "
                    f"(fix: read `docker logs {name}`)"
                )

    def attach(self, slug: str, container: str) -> bool:
        """Connect an app container to the database's network; False if it already was."""
        network = engine.find_network(self.client, names.network_name(slug))
        if network is None:
            raise ProvisioningFailed(f"{slug} has no network (fix: `sotadb up {slug}`)")
        target = engine.find_container(self.client, container)
        if target is None:
            raise ProvisioningFailed(f"no container {container} (fix: check `docker ps`)")
        if network.name in target.attrs["NetworkSettings"]["Networks"]:
            return False
        engine.call(f"connect {container} to {network.name}", lambda: network.connect(target))
        return True

    # ---------------------------------------------------------------- down and status

    def down(self, slug: str, *, purge: bool = False, progress: Progress = _quiet) -> None:
        for container in engine.labelled(
            self.client, {names.LABEL_INSTANCE: slug, names.LABEL_MANAGED_BY: names.MANAGED_BY}
        ):
            progress(f"removing {container.name}")
            engine.remove_container(container, timeout=60)
        network = engine.find_network(self.client, names.network_name(slug))
        if network is not None:
            progress(f"removing network {network.name}")
            engine.call(f"remove network {network.name}", network.remove)
        if purge:
            try:
                volume = self.client.volumes.get(names.data_volume_name(slug))
            except docker.errors.NotFound:
                volume = None
            if volume is not None:
                progress(f"removing volume {volume.name} (data deleted)")
                engine.call(f"remove volume {volume.name}", volume.remove)
            self.store.remove(slug)

    def status(self, slug: str) -> DatabaseStatus:
        containers = []
        for name in (names.postgres_name(slug), names.pooler_name(slug)):
            container = engine.find_container(self.client, name)
            if container is not None:
                health = (container.attrs["State"].get("Health") or {}).get("Status")
                containers.append(ContainerStatus(name, container.status, health))
        try:
            self.client.volumes.get(names.data_volume_name(slug))
            volume = True
        except docker.errors.NotFound:
            volume = False
        state = self.store.load(slug)
        running = len(containers) == 2 and all(c.state == "running" for c in containers)
        return DatabaseStatus(
            slug=slug,
            containers=tuple(containers),
            network=engine.find_network(self.client, names.network_name(slug)) is not None,
            volume=volume,
            host_ports=dict(state.host_ports) if state else {},
            answers=running and state is not None and self._answers(slug, state.credentials),
        )

    def _answers(self, slug: str, credentials: Credentials) -> bool:
        try:
            self._query(slug, credentials)
        except (psycopg.Error, ProvisioningFailed):
            return False
        return True

    def _query(self, slug: str, credentials: Credentials) -> None:
        """One real query through PgBouncer, as an app would send it."""
        url = creds.database_url(slug, credentials.password, self.pooler_endpoint(slug))
        with psycopg.connect(url, connect_timeout=2) as connection:
            connection.execute("SELECT 1").fetchone()


def _persistable(document: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of the applied document: identity and spec, nothing server-set."""
    metadata = document.get("metadata") or {}
    kept: dict[str, Any] = {
        "apiVersion": document.get("apiVersion"),
        "kind": document.get("kind"),
        "metadata": {"name": metadata.get("name")},
        "spec": document.get("spec") or {},
    }
    return kept


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST_ADDRESS, 0))
        port: int = probe.getsockname()[1]
        return port


def minimal_document(slug: str) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_DATABASE,
        "metadata": {"name": slug},
    }
