"""The Docker engine, reached through docker-py. Its errors become ours here, and only here."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

import docker
import docker.errors
import requests
from docker.models.containers import Container
from docker.models.networks import Network

from sotadb.errors import ProvisioningFailed, RuntimeUnavailable, SotadbError

T = TypeVar("T")
API_TIMEOUT: Final = 60


class ImageMissing(SotadbError):
    def __init__(self, image: str) -> None:
        self.image = image
        super().__init__(f"image {image} is missing (fix: run `make images`, or `sotadb up` again)")


# Docker 20.10's API; every newer engine still serves it. Naming it skips docker-py's version
# probe, which opens (and, when no engine answers, leaks) a connection in the constructor.
API_VERSION: Final = "1.41"


def connect() -> docker.DockerClient:
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    client = None
    try:
        client = docker.from_env(timeout=API_TIMEOUT, version=API_VERSION)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        if client is not None:
            client.close()
        raise RuntimeUnavailable(
            f"no Docker engine answers at {where} "
            "(fix: start one, e.g. `bash scripts/ensure-docker.sh`, or set DOCKER_HOST)"
        ) from e
    return client


def call(action: str, function: Callable[[], T]) -> T:
    """Run one engine call, turning its failures into errors that say what to do."""
    try:
        return function()
    except docker.errors.ImageNotFound as e:
        raise ProvisioningFailed(f"{action}: {_explain(e)}") from e
    except docker.errors.APIError as e:
        raise ProvisioningFailed(f"{action}: {_explain(e)}") from e
    except docker.errors.DockerException as e:
        raise RuntimeUnavailable(f"{action}: the Docker engine stopped answering ({e})") from e


def _explain(error: docker.errors.APIError) -> str:
    text = str(error.explanation or error)
    lowered = text.lower()
    if "port is already allocated" in lowered or "address already in use" in lowered:
        return f"{text} (fix: free that port, or remove the state's hostPorts to pick another)"
    if "no space left on device" in lowered:
        return f"{text} (fix: free disk space, e.g. `docker system prune`, then run up again)"
    if "no such image" in lowered or "not found" in lowered:
        return f"{text} (fix: run `make images`)"
    return text


def image_exists(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def find_container(client: docker.DockerClient, name: str) -> Container | None:
    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def find_network(client: docker.DockerClient, name: str) -> Network | None:
    try:
        return client.networks.get(name)
    except docker.errors.NotFound:
        return None


def labelled(client: docker.DockerClient, labels: dict[str, str]) -> Iterator[Container]:
    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    yield from client.containers.list(all=True, filters=filters)


def remove_container(container: Container, *, timeout: int) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.stop(timeout=timeout)
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True)


def container_ip(container: Container, network: str) -> str | None:
    networks: dict[str, Any] = container.attrs["NetworkSettings"]["Networks"]
    address = (networks.get(network) or {}).get("IPAddress")
    return address or None
