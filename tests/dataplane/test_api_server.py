"""`sotadb serve` as a user runs it: a uvicorn process on 127.0.0.1 with its own SOTADB_HOME,
a token from `sotadb token create`, and real databases on this host's Docker engine.

- ensureDatabase brings a real PostgreSQL 17 + PgBouncer up: a query through the DATABASE_URL
  the state holds (host swapped for the container's address) answers; a second call returns
  the same status, re-creates nothing and keeps the password.
- Status, backups (a real pg_dump, checksummed and restore-drilled by `sotadb.backup`).
- No token or a wrong one: 401 with `WWW-Authenticate`; another project's token: 404, and
  nothing happens to the database.
- No response (body or header) contains the password or the SCRAM verifier.
- Schemathesis against the document the live server serves, on the successful paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import psycopg
import pytest
import requests
import schemathesis
from dataplane_helpers import (
    CONNECT_TIMEOUT,
    Secret,
    app_url,
    assert_no_secret,
    assert_same_secret,
    remember_secrets,
    secrets_of,
    slug_for,
    wait_for,
)
from hypothesis import HealthCheck, given, settings

from sotadb import credentials as creds
from sotadb import names
from sotadb.api.projects import slug_for as project_slug
from sotadb.docker.runtime import DockerRuntime
from sotadb.docker.state import StateStore

pytestmark = pytest.mark.dataplane

# Project names that are valid slugs map to themselves, so everything the server creates
# carries this session's tag and the session's sweep would find it.
PROJECT = slug_for("api")
OTHER = slug_for("api-other")
HTTP_TIMEOUT = 180  # an ensure waits for a real query (seconds); a backup runs a drill
START_TIMEOUT = 30

SOTADB = Path(sys.executable).with_name("sotadb")  # the installed console script


def sotadb_command(*args: str) -> list[str]:
    assert SOTADB.is_file(), f"the sotadb console script is not installed at {SOTADB}"
    return [str(SOTADB), *args]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    home: Path
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    http: requests.Session = field(default_factory=requests.Session)
    bodies: list[str] = field(default_factory=list)

    def token(self, project: str) -> str:
        result = subprocess.run(
            sotadb_command("token", "create", project, "-o", "json"),
            env={**os.environ, "SOTADB_HOME": str(self.home)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        token: str = json.loads(result.stdout)["token"]
        return Secret(token)

    def call(self, method: str, path: str, token: str | None) -> requests.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        response = self.http.request(method, self.url + path, headers=headers, timeout=HTTP_TIMEOUT)
        self.bodies.append(
            response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        )
        return response


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("api-home")
    port = free_port()
    log = home / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            sotadb_command("serve", "--port", str(port), "--log-level", "warning"),
            env={**os.environ, "SOTADB_HOME": str(home)},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(home, f"http://127.0.0.1:{port}", process, log)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"sotadb serve exited: {log.read_text()[-2000:]}")
        try:
            return server.http.get(server.url + "/openapi.json", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(answers, timeout=START_TIMEOUT, interval=0.1, what="sotadb serve to answer")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        server.http.close()


@pytest.fixture(scope="module")
def runtime(docker_client: docker.DockerClient, server: Server) -> DockerRuntime:
    """The runtime over the server's own SOTADB_HOME: to inspect and clean up after it."""
    return DockerRuntime(client=docker_client, store=StateStore(server.home))


@pytest.fixture(scope="module")
def tokens(server: Server) -> dict[str, str]:
    return {PROJECT: server.token(PROJECT), OTHER: server.token(OTHER)}


@pytest.fixture(scope="module")
def ensured(server: Server, runtime: DockerRuntime, tokens: dict[str, str]) -> Iterator[dict]:
    """The first ensureDatabase of PROJECT: its response body. Purged after the module."""
    slug = project_slug(PROJECT)
    try:
        response = server.call("POST", f"/v1/projects/{PROJECT}/database", tokens[PROJECT])
        state = runtime.store.load(slug)
        if state is not None:
            remember_secrets(state.credentials)
        assert response.status_code == 200, response.text
        yield response.json()
    finally:
        runtime.down(slug, purge=True)
        runtime.down(project_slug(OTHER), purge=True)


def database_path(project: str) -> str:
    return f"/v1/projects/{project}/database"


def test_ensure_brings_up_a_database_that_answers(ensured, runtime):
    slug = project_slug(PROJECT)
    assert ensured["slug"] == slug == PROJECT
    assert ensured["phase"] == "Ready"
    assert ensured["databaseUrl"] == (
        f"postgresql://app_{slug}:********@sota-pgbouncer-{slug}:5432/{slug}?sslmode=disable"
    )
    state = runtime.store.load(slug)
    assert state is not None
    url = app_url(
        runtime.client,
        creds.database_url(slug, state.credentials.password),
        ensured["hosts"]["network"],
    )
    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT) as connection:
        user, database, version = connection.execute(
            "SELECT current_user, current_database(), current_setting('server_version_num')::int"
        ).fetchone()
    assert (user, database) == (names.role_name(slug), slug)
    assert version // 10000 == 17


def test_ensure_again_is_the_same_and_keeps_the_password(server, ensured, runtime, tokens):
    slug = project_slug(PROJECT)
    before = runtime.store.load(slug)
    assert before is not None
    ids = {
        c: runtime.client.containers.get(c).id
        for c in (names.postgres_name(slug), names.pooler_name(slug))
    }
    again = server.call("POST", database_path(PROJECT), tokens[PROJECT])
    assert again.status_code == 200
    assert again.json() == ensured
    after = runtime.store.load(slug)
    assert after is not None
    assert_same_secret(after.credentials.password, before.credentials.password, "password")
    assert {c: runtime.client.containers.get(c).id for c in ids} == ids


def test_status_is_what_ensure_returned(server, ensured, tokens):
    response = server.call("GET", database_path(PROJECT), tokens[PROJECT])
    assert response.status_code == 200
    assert response.json() == ensured


def test_a_backup_is_taken_and_listed(server, ensured, tokens):
    path = database_path(PROJECT) + "/backups"
    created = server.call("POST", path, tokens[PROJECT])
    assert created.status_code == 201, created.text
    backup = created.json()
    assert backup["phase"] == "Succeeded"
    assert backup["verification"] == "Passed", backup.get("message")
    assert backup["format"] == "plain+gzip"
    assert backup["size"] > 0
    listed = server.call("GET", path, tokens[PROJECT])
    assert listed.status_code == 200
    assert listed.json()["backups"][-1] == backup


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("POST", ""), ("GET", ""), ("GET", "/backups"), ("POST", "/backups")],
)
def test_no_token_or_a_wrong_one_is_401(server, ensured, method, suffix):
    for token in (None, "sota_" + "x" * 43):
        response = server.call(method, database_path(PROJECT) + suffix, token)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("POST", ""), ("GET", ""), ("GET", "/backups"), ("POST", "/backups")],
)
def test_another_projects_token_cannot_touch_the_database(
    server, ensured, runtime, tokens, method, suffix
):
    slug = project_slug(PROJECT)
    backups_before = server.call("GET", database_path(PROJECT) + "/backups", tokens[PROJECT])
    response = server.call(method, database_path(PROJECT) + suffix, tokens[OTHER])
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    backups_after = server.call("GET", database_path(PROJECT) + "/backups", tokens[PROJECT])
    assert backups_after.json() == backups_before.json()
    assert runtime.store.load(project_slug(OTHER)) is None
    assert runtime.store.load(slug) is not None


def test_live_server_conforms_to_its_document(server, ensured, tokens):
    """Schemathesis on the successful paths of the live server (createBackup left out: each
    example would take a real backup)."""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    schema.config.update(
        headers={"Authorization": f"Bearer {tokens[PROJECT]}"}, parameters={"project": PROJECT}
    )
    for path, method in [
        ("/v1/projects/{project}/database", "POST"),
        ("/v1/projects/{project}/database", "GET"),
        ("/v1/projects/{project}/database/backups", "GET"),
    ]:
        operation = schema[path][method]

        @given(case=operation.as_strategy())
        @settings(
            max_examples=5,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        def conforms(case: schemathesis.Case) -> None:
            response = case.call_and_validate(base_url=server.url, timeout=HTTP_TIMEOUT)
            server.bodies.append(response.text)

        conforms()


def test_no_response_contained_a_secret(server, ensured, runtime):
    """Last in the module: everything the server sent to these tests, searched."""
    state = runtime.store.load(project_slug(PROJECT))
    assert state is not None
    assert len(server.bodies) > 10
    assert_no_secret("\n".join(server.bodies), "the API's responses", secrets_of(state.credentials))
    assert_no_secret(server.log.read_text(), "the server's log", secrets_of(state.credentials))


def test_openapi_is_served_without_a_token(server):
    document = server.http.get(server.url + "/openapi.json", timeout=10).json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert len(document["paths"]) == 2


def test_tokens_are_stored_only_as_hashes(server, tokens):
    """What `sotadb token create` left in the server's SOTADB_HOME: a private file holding
    each token's SHA-256, never the token."""
    path = server.home / "tokens.json"
    assert path.stat().st_mode & 0o777 == 0o600
    stored = path.read_text(encoding="utf-8")
    for project, token in tokens.items():
        secret = {"token": token, "token's random part": token.removeprefix("sota_")}
        assert_no_secret(stored, f"tokens.json (project {project})", secret)
        assert hashlib.sha256(token.encode()).hexdigest() in stored
