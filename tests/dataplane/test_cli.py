"""The `sotadb` command as a user runs it (a subprocess with its own SOTADB_HOME).

- Crash safety: `sotadb up` SIGKILLed right after it announced "creating sota-db-…" leaves a
  partial database; the next `up` finishes it with the same password, and `down --purge`
  leaves nothing carrying the instance label.
- Errors: an invalid name exits 2 naming metadata.name and creates nothing; a DOCKER_HOST where
  no engine answers exits 1 with "no Docker engine answers", no traceback.
- Secrets: up/url/status print no password unless `--show-password` is given.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from dataplane_helpers import (
    CONNECT_TIMEOUT,
    SESSION_TAG,
    app_url,
    assert_no_secret,
    assert_same_secret,
    instance_objects,
    remember_secrets,
    secrets_of,
    slug_for,
)

from sotadb import credentials as creds
from sotadb import names
from sotadb.credentials import Credentials
from sotadb.docker.runtime import DockerRuntime
from sotadb.docker.state import StateStore

pytestmark = pytest.mark.dataplane

SOTADB = Path(sys.executable).with_name("sotadb")  # the installed console script
CLI_TIMEOUT = 120
MASK = "********"


class Cli:
    """Runs `sotadb` with SOTADB_HOME pointing at a directory of its own."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "SOTADB_HOME": str(home), "NO_COLOR": "1", "TERM": "dumb"}

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SOTADB), *args],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def credentials(self, slug: str) -> Credentials:
        state = StateStore(self.home).load(slug)
        assert state is not None, f"no state for {slug} in the CLI's SOTADB_HOME"
        remember_secrets(state.credentials)
        return state.credentials


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    assert SOTADB.is_file(), f"the sotadb console script is not installed at {SOTADB}"
    return Cli(tmp_path_factory.mktemp(f"{SESSION_TAG}-cli-home"))


@pytest.fixture
def cli_slug(cli: Cli, runtime: DockerRuntime, request: pytest.FixtureRequest) -> Iterator[str]:
    """A slug for one test's CLI-made database, purged afterwards whatever the test did."""
    slug = slug_for(f"cli-{request.node.name.removeprefix('test_')[:12].rstrip('_-')}")
    slug = slug.replace("_", "-")
    yield slug
    DockerRuntime(client=runtime.client, store=StateStore(cli.home)).down(slug, purge=True)


def query_through_pgbouncer(runtime: DockerRuntime, slug: str, credentials: Credentials) -> str:
    database_url = creds.database_url(slug, credentials.password)
    url = app_url(runtime.client, database_url, names.network_name(slug))
    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT) as connection:
        row = connection.execute("SELECT current_user").fetchone()
    assert row is not None
    return str(row[0])


def test_killed_up_is_finished_by_the_next_up_and_purge_removes_all(
    cli: Cli, cli_slug: str, runtime: DockerRuntime
) -> None:
    process = subprocess.Popen(
        [str(SOTADB), "up", cli_slug],
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    announced = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if f"creating {names.postgres_name(cli_slug)}" in line:
                process.send_signal(signal.SIGKILL)
                announced = True
                break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        reader.join(timeout=10)
        assert process.stderr is not None
        process.stderr.close()
    assert announced, "`sotadb up` never announced creating the PostgreSQL container"
    assert process.returncode == -signal.SIGKILL

    # Partial: the credentials were saved before anything used them, network and volume exist.
    first = cli.credentials(cli_slug)
    status = runtime.status(cli_slug)
    assert (status.network, status.volume) == (True, True)
    assert not status.ready

    finish = cli.run("up", cli_slug)
    assert finish.returncode == 0, finish.stderr
    assert finish.stdout.startswith("DATABASE_URL=postgresql://")
    assert_same_secret(cli.credentials(cli_slug).password, first.password, "password after crash")
    assert query_through_pgbouncer(runtime, cli_slug, first) == names.role_name(cli_slug)
    assert [c.state for c in runtime.status(cli_slug).containers] == ["running", "running"]

    purge = cli.run("down", cli_slug, "--purge")
    assert purge.returncode == 0, purge.stderr
    assert instance_objects(runtime.client, cli_slug) == {
        "containers": [],
        "networks": [],
        "volumes": [],
    }
    assert not StateStore(cli.home).database_dir(cli_slug).exists()


def test_cli_shows_the_password_only_when_asked(
    cli: Cli, cli_slug: str, runtime: DockerRuntime
) -> None:
    up = cli.run("up", cli_slug)
    assert up.returncode == 0, up.stderr
    credentials = cli.credentials(cli_slug)
    secrets = secrets_of(credentials)
    url = creds.database_url(cli_slug, credentials.password)
    assert up.stdout == f"DATABASE_URL={url.replace(credentials.password, MASK)}\n"
    outputs = {
        "up (again)": cli.run("up", cli_slug),
        "url": cli.run("url", cli_slug),
        "url --direct": cli.run("url", cli_slug, "--direct"),
        "url --host-port": cli.run("url", cli_slug, "--host-port"),
    }
    # `status` decides readiness with a real query, so it agrees with `up` at once (Docker's
    # first healthcheck only runs one interval after start).
    outputs["status"] = cli.run("status", cli_slug)
    outputs["status -o json"] = cli.run("status", "-o", "json")
    for command, result in {"up": up, **outputs}.items():
        assert result.returncode == 0, f"sotadb {command} failed"
        assert_no_secret(
            result.stdout + result.stderr, f"the output of `sotadb {command}`", secrets
        )
    assert outputs["url"].stdout.strip() == url.replace(credentials.password, MASK)
    assert MASK in outputs["url --direct"].stdout
    assert f"{cli_slug}: ready" in outputs["status"].stdout

    shown = cli.run("url", cli_slug, "--show-password")
    assert shown.returncode == 0
    assert_same_secret(shown.stdout.strip(), url, "`url --show-password` vs DATABASE_URL")
    host_port = cli.run("url", cli_slug, "--host-port", "--show-password")
    assert host_port.returncode == 0
    state = StateStore(cli.home).load(cli_slug)
    assert state is not None
    published = creds.Endpoint("127.0.0.1", state.host_ports[names.pooler_name(cli_slug)])
    expected = creds.database_url(cli_slug, credentials.password, published)
    assert_same_secret(host_port.stdout.strip(), expected, "`url --host-port --show-password`")
    # The published port is a working path too (through docker-proxy).
    with psycopg.connect(host_port.stdout.strip(), connect_timeout=CONNECT_TIMEOUT) as c:
        assert c.execute("SELECT current_user").fetchone() == (names.role_name(cli_slug),)


@pytest.mark.parametrize(
    "name",
    [f"Bad_{SESSION_TAG}", f"{SESSION_TAG}-{'x' * (names.SLUG_MAX_LENGTH - 9)}", "-leading"],
    ids=["uppercase-underscore", "too-long", "leading-hyphen"],
)
def test_invalid_name_exits_2_and_creates_nothing(
    cli: Cli, runtime: DockerRuntime, name: str
) -> None:
    result = cli.run("up", "--", name) if name.startswith("-") else cli.run("up", name)
    assert result.returncode == 2, result.stderr
    assert "metadata.name" in result.stderr
    assert "Traceback" not in result.stderr
    assert instance_objects(runtime.client, name) == {
        "containers": [],
        "networks": [],
        "volumes": [],
    }
    assert (
        runtime.client.containers.list(all=True, filters={"name": names.postgres_name(name)}) == []
    )
    assert not StateStore(cli.home).database_dir(name).exists()


def test_dead_docker_host_says_no_engine_answers(cli: Cli, tmp_path: Path) -> None:
    socket = f"unix://{tmp_path}/no-engine-here.sock"
    result = cli.run("up", slug_for("nodocker"), env={**cli.env, "DOCKER_HOST": socket}, timeout=60)
    assert result.returncode == 1
    assert f"no Docker engine answers at {socket}" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
