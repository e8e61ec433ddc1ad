"""Fixtures for the data-plane tests: real PostgreSQL 17 and PgBouncer on this host's Docker.

No Docker engine (or no images that can be built) is a test *failure* with a message saying
what to start, never a skip: CI installs Docker, and a skipped data plane proves nothing.

Databases are expensive compared with queries (about 2 s to `up`), so one `shared_db` serves
every module whose tests do not disturb it; tests that kill, re-spec or purge a database get
their own, each removed with `down --purge` by its fixture and, as a last resort, by the
session's sweep of everything labelled with this session's tag.
"""

from __future__ import annotations

import gc
import subprocess
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path

import docker
import pytest
from dataplane_helpers import (
    SESSION_TAG,
    Database,
    known_secrets,
    provisioned,
    redact,
    slug_for,
    sweep,
)

from sotadb.docker import engine
from sotadb.docker.runtime import DockerRuntime
from sotadb.docker.state import StateStore
from sotadb.errors import RuntimeUnavailable
from sotadb.render import Images

REPOSITORY = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPOSITORY / "scripts" / "build-images.sh"
BUILD_TIMEOUT = 280


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Last line of defence: scrub every registered secret from failure reports and captured
    output (pytest prints function arguments in tracebacks, including drivers' own frames)."""
    report = yield
    if known_secrets():
        if report.longrepr is not None:
            text = str(report.longrepr)
            if redact(text) != text:
                report.longrepr = redact(text)
        report.sections = [(title, redact(content)) for title, content in report.sections]
    return report


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client: docker.DockerClient | None = None
    problem = ""
    try:
        client = engine.connect()
    except RuntimeUnavailable as e:
        problem = str(e)
    if client is None:
        # docker-py leaves the socket of its failed version probe for the garbage collector;
        # collect it here, quietly, rather than as an "unraisable" ResourceWarning at exit.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        pytest.fail(
            f"tests/dataplane need a Docker engine and fail (never skip) without one: {problem}",
            pytrace=False,
        )
    try:
        _ensure_images(client)
        yield client
    finally:
        sweep(client)
        client.close()


def _ensure_images(client: docker.DockerClient) -> None:
    images = Images()
    missing = [i for i in (images.postgres, images.pooler) if not engine.image_exists(client, i)]
    if not missing:
        return
    # What `sotadb up` does on a first run, with a bound.
    try:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"building {missing} took over {BUILD_TIMEOUT}s", pytrace=False)
    if result.returncode != 0:
        pytest.fail(
            f"images {missing} are missing and `bash {BUILD_SCRIPT}` failed:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SOTADB_HOME of the session's runtime: never the user's own state."""
    return tmp_path_factory.mktemp(f"{SESSION_TAG}-home")


@pytest.fixture(scope="session")
def runtime(docker_client: docker.DockerClient, state_home: Path) -> DockerRuntime:
    return DockerRuntime(client=docker_client, store=StateStore(state_home))


@pytest.fixture(scope="session")
def shared_db(runtime: DockerRuntime) -> Iterator[Database]:
    """A default ManagedDatabase (pool 20, max clients 100) that tests only read and query."""
    with provisioned(runtime, slug_for("app")) as db:
        yield db
