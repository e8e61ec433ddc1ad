"""Helpers for the data-plane tests: real PostgreSQL 17 and PgBouncer containers on this host.

Three rules shape everything here:

- **The app's own URL.** Tests connect with `creds.database_url(slug, password)`, the
  DATABASE_URL the app Secret carries, changing only its host: `app_url` resolves
  `sota-pgbouncer-{slug}` the way Docker's embedded DNS does for a container on
  `sota-net-{slug}` (the container's address on that network). This host cannot ask Docker's
  DNS (it only answers inside containers), and the ports published on 127.0.0.1 go through
  docker-proxy, a different path from the one an app takes. One test also runs `psql
  "$DATABASE_URL"` unchanged inside a container on the network.
- **No secret in test output.** pytest prints assertion operands and the arguments of every
  function in a failure's traceback, so a password must never be an assertion operand or a
  plain `str` argument. Secrets travel as `Secret` (a `str` whose repr is redacted), are
  compared by `assert_same_secret` / `assert_no_secret` (sanitised messages), and every secret
  the session sees is registered so that conftest's report hook scrubs it from any failure
  report that still caught one (e.g. inside a driver's own frames).
- **Everything bounded and labelled.** Every loop has a count and a deadline; every container a
  test starts carries `TEST_LABEL=SESSION_TAG`, so the session's final sweep finds it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
import docker
import docker.errors
from docker.models.containers import Container

from sotadb import credentials as creds
from sotadb import names
from sotadb.credentials import Credentials, parse_verifier
from sotadb.docker import engine
from sotadb.docker.runtime import DockerRuntime, UpResult, minimal_document
from sotadb.render import pgbouncer, postgres

# Unique per test session: every slug starts with it (`dp-1a2b3c-auth`), so parallel sessions
# and other users of the engine never collide with us, and the final sweep finds our objects.
SESSION_TAG: Final = f"dp-{secrets.token_hex(3)}"
TEST_LABEL: Final = "sota.io/test-session"
CONNECT_TIMEOUT: Final = 5  # seconds, for every client connection a test opens
CLIENT_IMAGE: Final = names.POSTGRES_IMAGE  # has psql, bash, getent and coreutils' timeout
REDACTED: Final = "<redacted>"

T = TypeVar("T")


def slug_for(purpose: str) -> str:
    return f"{SESSION_TAG}-{purpose}"


# ---------------------------------------------------------------- secrets


class Secret(str):
    """A string whose repr never shows its value (pytest prints reprs of arguments/operands)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return REDACTED


_known_secrets: set[str] = set()


def remember_secrets(credentials: Credentials) -> None:
    """Register a password and its verifier (and the verifier's key parts) for scrubbing."""
    parsed = parse_verifier(credentials.verifier)
    _known_secrets.update(
        {
            credentials.password,
            credentials.verifier,
            _b64(parsed.stored_key),
            _b64(parsed.server_key),
        }
    )


def known_secrets() -> frozenset[str]:
    return frozenset(_known_secrets)


def redact(text: str) -> str:
    for value in sorted(_known_secrets, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def assert_same_secret(actual: str | None, expected: str, what: str) -> None:
    """Equal secrets, or an AssertionError that says what differed, never the values."""
    __tracebackhide__ = True
    if actual is None or not hmac.compare_digest(actual.encode(), expected.encode()):
        raise AssertionError(f"{what}: values differ (withheld: they are secrets)")


def assert_no_secret(text: str, where: str, values: Mapping[str, str]) -> None:
    """None of `values` (label → secret) occurs in `text`; the message names labels only."""
    __tracebackhide__ = True
    found = sorted(label for label, value in values.items() if value and value in text)
    if found:
        raise AssertionError(f"{where} contains the {', '.join(found)} (output withheld)")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def secrets_of(credentials: Credentials) -> dict[str, str]:
    """Label → secret, for `assert_no_secret`: the password, the verifier and its two keys."""
    parsed = parse_verifier(credentials.verifier)
    return {
        "password": credentials.password,
        "SCRAM verifier": credentials.verifier,
        "SCRAM StoredKey": _b64(parsed.stored_key),
        "SCRAM ServerKey": _b64(parsed.server_key),
    }


# ---------------------------------------------------------------- the app's URL


def resolve_like_docker_dns(client: docker.DockerClient, network: str, host: str) -> str:
    """The address Docker's embedded DNS gives `host` inside `network`: the IP on that network
    of the container whose name (or network alias) it is."""
    __tracebackhide__ = True
    found = engine.find_network(client, network)
    if found is None:
        raise AssertionError(f"network {network} does not exist")
    found.reload()
    for container in found.containers:
        settings = container.attrs["NetworkSettings"]["Networks"].get(network) or {}
        if host == container.name or host in (settings.get("Aliases") or []):
            address = settings.get("IPAddress")
            if address:
                return str(address)
    raise AssertionError(f"{host} does not resolve on {network}")


def app_url(client: docker.DockerClient, url: str, network: str) -> Secret:
    """The app's URL with only its host replaced by what Docker's DNS resolves it to on
    `network` (the host cannot query Docker's DNS; published ports go through docker-proxy).
    User, password, port, database and query are kept byte for byte."""
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    if parts.hostname is None or parts.port is None:
        raise AssertionError("the URL has no host:port")
    address = resolve_like_docker_dns(client, network, parts.hostname)
    return Secret(urlunsplit(parts._replace(netloc=f"{userinfo}@{address}:{parts.port}")))


def with_query(url: str, **parameters: str) -> Secret:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(parameters)) if q)
    return Secret(urlunsplit(parts._replace(query=query)))


# ---------------------------------------------------------------- a provisioned database


@dataclass(frozen=True)
class Database:
    """One database `DockerRuntime.up` brought up. Its repr shows no secret."""

    runtime: DockerRuntime = field(repr=False)
    result: UpResult

    @property
    def slug(self) -> str:
        return self.result.db.slug

    @property
    def client(self) -> docker.DockerClient:
        return self.runtime.client

    @property
    def network(self) -> str:
        return names.network_name(self.slug)

    @property
    def role(self) -> str:
        return names.role_name(self.slug)

    @property
    def credentials(self) -> Credentials:
        return self.result.credentials

    @property
    def password(self) -> Secret:
        return Secret(self.credentials.password)

    def database_url(self) -> Secret:
        """DATABASE_URL exactly as the app Secret carries it (host sota-pgbouncer-{slug})."""
        return Secret(creds.database_url(self.slug, self.credentials.password))

    def direct_database_url(self) -> Secret:
        return Secret(creds.direct_database_url(self.slug, self.credentials.password))

    def url(self) -> Secret:
        """DATABASE_URL as this host must dial it: see `app_url`."""
        return app_url(self.client, self.database_url(), self.network)

    def direct_url(self) -> Secret:
        return app_url(self.client, self.direct_database_url(), self.network)

    def url_as(self, user: str, password: str, *, direct: bool = False) -> Secret:
        """The app's URL with another user and password (for refusals)."""
        endpoint = creds.Endpoint(self.ip(names.postgres_name(self.slug)), names.POSTGRES_PORT)
        if not direct:
            endpoint = creds.Endpoint(self.ip(names.pooler_name(self.slug)), names.POOLER_PORT)
        url = creds.connection_url(self.slug, password, endpoint)
        parts = urlsplit(url)
        _, _, hostport = parts.netloc.rpartition("@")
        return Secret(urlunsplit(parts._replace(netloc=f"{user}:{password}@{hostport}")))

    def container(self, name: str) -> Container:
        __tracebackhide__ = True
        found = engine.find_container(self.client, name)
        if found is None:
            raise AssertionError(f"container {name} does not exist")
        return found

    @property
    def postgres(self) -> Container:
        return self.container(names.postgres_name(self.slug))

    @property
    def pooler(self) -> Container:
        return self.container(names.pooler_name(self.slug))

    def ip(self, container_name: str) -> str:
        return resolve_like_docker_dns(self.client, self.network, container_name)

    def superuser_sql(self, sql: str, *, database: str = "postgres", **literals: str) -> str:
        """Run SQL as `postgres` over the container's unix socket (peer auth), the only way in
        for the superuser. Returns psql's unaligned, tuples-only output. `:'name'` in `sql` is
        replaced by the quoted literal `literals[name]` (psql's own syntax)."""
        return superuser_sql(self.postgres, sql, database=database, **literals)

    def files_dir(self) -> Path:
        return self.runtime.store.files_dir(self.slug)

    def rendered(self, kind: str, object_name: str, file_name: str) -> str:
        """A rendered ConfigMap/Secret file as written in the state directory and mounted."""
        path = self.files_dir() / f"{kind}-{object_name}" / file_name
        return path.read_text(encoding="utf-8")

    def pgbouncer_ini(self) -> str:
        return self.rendered("configmap", names.pooler_config_name(self.slug), "pgbouncer.ini")

    def userlist_txt(self) -> str:
        return self.rendered("secret", names.auth_secret_name(self.slug), pgbouncer.USERLIST_TXT)

    def postgresql_conf(self) -> str:
        return self.rendered(
            "configmap", names.postgres_config_name(self.slug), postgres.POSTGRESQL_CONF
        )


def sql_literal(value: str) -> str:
    """A standard-conforming SQL string literal (the values here are slugs and role names)."""
    if "\\" in value or "\0" in value:
        raise ValueError("refusing to quote a backslash or NUL")
    return "'" + value.replace("'", "''") + "'"


_READ_ONLY_SQL: Final = ("select", "show", "with", "table", "values")
EXEC_ATTEMPTS: Final = 3
_EXEC_BEGIN: Final = "--sotadb-test-exec-begin--"
_EXEC_END: Final = "--sotadb-test-exec-end--"
# bash -c SCRIPT BEGIN END COMMAND...: markers around the command's stdout, then its status.
_EXEC_SCRIPT: Final = (
    'begin=$0 end=$1; shift; printf "%s\\n" "$begin"; "$@"; code=$?; '
    'printf "\\n%s %d\\n" "$end" "$code"'
)


@dataclass(frozen=True)
class Exec:
    exit_code: int
    stdout: str
    stderr: str


def exec_in(
    container: Container, command: list[str], *, user: str = "", repeatable: bool = True
) -> Exec:
    """`docker exec` that is sure it saw all of the command's output.

    Docker 20.10's exec attach sometimes loses the output of a short-lived process (measured
    here: about 1 in 100 under CPU load; the exit code is still right). So the command's stdout
    is framed by markers; when a marker is missing, a `repeatable` (read-only) command is run
    again, at most EXEC_ATTEMPTS times, and anything else fails loudly.
    """
    __tracebackhide__ = True
    wrapped = ["bash", "-c", _EXEC_SCRIPT, _EXEC_BEGIN, _EXEC_END, *command]
    for _ in range(EXEC_ATTEMPTS if repeatable else 1):
        _, (out, err) = container.exec_run(wrapped, user=user, demux=True)
        text = (out or b"").decode(errors="replace")
        _, begin, body = text.partition(_EXEC_BEGIN + "\n")
        body, end, status = body.rpartition("\n" + _EXEC_END + " ")
        if begin and end and status.strip().isdigit():
            stderr = redact((err or b"").decode(errors="replace"))
            return Exec(int(status.strip()), body, stderr)
    raise AssertionError(f"docker exec in {container.name} lost the output of {command[0]}")


def superuser_sql(
    container: Container, sql: str, *, database: str = "postgres", **literals: str
) -> str:
    __tracebackhide__ = True
    for name, value in literals.items():
        sql = sql.replace(f":'{name}'", sql_literal(value))
    command = [
        "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", names.POSTGRES_SOCKET_DIR,
        "-U", "postgres", "-d", database, "-tA", "-c", sql,
    ]  # fmt: skip
    repeatable = sql.lstrip().lower().startswith(_READ_ONLY_SQL)
    result = exec_in(container, command, user="postgres", repeatable=repeatable)
    if result.exit_code != 0:
        raise AssertionError(
            f"psql as postgres in {container.name} exited {result.exit_code}: "
            f"{result.stderr.strip()}"
        )
    return result.stdout.strip()


@contextlib.contextmanager
def provisioned(
    runtime: DockerRuntime, slug: str, document: Mapping[str, Any] | None = None
) -> Iterator[Database]:
    """`up` a database for the duration of the block, then `down --purge` it, whatever happens."""
    try:
        result = runtime.up(document or minimal_document(slug))
        remember_secrets(result.credentials)
        yield Database(runtime, result)
    finally:
        state = runtime.store.load(slug)
        if state is not None:
            remember_secrets(state.credentials)
        runtime.down(slug, purge=True)


def document_for(slug: str, spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    document = minimal_document(slug)
    if spec is not None:
        document["spec"] = dict(spec)
    return document


# ---------------------------------------------------------------- throwaway client containers


@dataclass(frozen=True)
class Run:
    exit_code: int
    output: str


def run_in_network(
    client: docker.DockerClient,
    network: str,
    script: str,
    *,
    environment: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> Run:
    """Run `bash -c script` in a throwaway container of the PostgreSQL image attached to
    `network`, like an app container would be, and return its exit code and output. The
    environment is passed as the container's env (as an app's envFrom would), never echoed."""
    __tracebackhide__ = True
    container = client.containers.create(
        CLIENT_IMAGE,
        command=["bash", "-c", script],
        network=network,
        environment=dict(environment or {}),
        labels={TEST_LABEL: SESSION_TAG},
        user=f"{names.POSTGRES_UID}:{names.POSTGRES_UID}",
        detach=True,
    )
    try:
        container.start()
        try:
            status = container.wait(timeout=timeout)
        except Exception as e:  # requests' ReadTimeout, ConnectionError: the bound was hit
            raise AssertionError(f"client container did not finish within {timeout}s") from e
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        return Run(int(status["StatusCode"]), redact(output))
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


# ---------------------------------------------------------------- bounded waiting and measuring


def wait_for(
    condition: Callable[[], T | None], *, timeout: float, interval: float = 0.1, what: str
) -> T:
    """Poll `condition` until it returns a truthy value; bounded in time and in count."""
    __tracebackhide__ = True
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of [start, end) intervals in progress at one instant."""
    events = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    current = peak = 0
    for _, delta in events:  # at equal times ends (-1) sort before starts (+1)
        current += delta
        peak = max(peak, current)
    return peak


def instance_objects(client: docker.DockerClient, slug: str) -> dict[str, list[str]]:
    """Containers, networks and volumes carrying the instance label of `slug`."""
    filters = {"label": [f"{names.LABEL_INSTANCE}={slug}"]}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=filters)],
        "networks": [n.name for n in client.networks.list(filters=filters)],
        "volumes": [v.name for v in client.volumes.list(filters=filters)],
    }


def sweep(client: docker.DockerClient) -> None:
    """Remove whatever this session left behind (fixtures normally did already)."""
    for container in client.containers.list(
        all=True, filters={"label": [f"{TEST_LABEL}={SESSION_TAG}"]}
    ):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    mine = {"label": [f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"]}

    def ours(labels: Mapping[str, str] | None) -> bool:
        return (labels or {}).get(names.LABEL_INSTANCE, "").startswith(f"{SESSION_TAG}-")

    for container in client.containers.list(all=True, filters=mine):
        if ours(container.labels):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
    for network in client.networks.list(filters=mine):
        if ours(network.attrs.get("Labels")):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                network.remove()
    for volume in client.volumes.list(filters=mine):
        if ours(volume.attrs.get("Labels")):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                volume.remove(force=True)


# ---------------------------------------------------------------- many clients through PgBouncer

MAX_CLIENT_CONN_ERROR: Final = "no more connections allowed (max_client_conn)"
CONNECT_ATTEMPTS: Final = 20


class Retries:
    """Counts connects PgBouncer refused for max_client_conn and that were retried."""

    def __init__(self) -> None:
        self.count = 0


async def connect_pooled(url: str, retries: Retries | None = None) -> asyncpg.Connection:
    """asyncpg.connect, retrying (bounded) only PgBouncer's max_client_conn refusal: PgBouncer's
    own readiness probe (`pg_isready` against it every 5 s) briefly holds one client slot."""
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
        except asyncpg.PostgresError as e:
            if MAX_CLIENT_CONN_ERROR not in str(e) or attempt == CONNECT_ATTEMPTS - 1:
                raise
            if retries is not None:
                retries.count += 1
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def open_clients(
    url: str, count: int, retries: Retries | None = None
) -> AsyncIterator[list[asyncpg.Connection]]:
    """`count` client connections open at once (opened in parallel), all closed afterwards."""
    opened: list[asyncpg.Connection] = []
    try:
        results = await asyncio.gather(
            *(connect_pooled(url, retries) for _ in range(count)), return_exceptions=True
        )
        opened = [r for r in results if isinstance(r, asyncpg.Connection)]
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        yield opened
    finally:
        await asyncio.gather(*(c.close(timeout=5) for c in opened), return_exceptions=True)


@dataclass(frozen=True)
class PoolLoad:
    """What the server saw of a burst of transactions: each one's backend and its interval."""

    transactions: tuple[tuple[int, float, float], ...]
    elapsed: float

    @property
    def peak(self) -> int:
        """Transactions in progress at the same instant, at most (by the server's clock)."""
        return max_overlap([(start, end) for _, start, end in self.transactions])

    @property
    def backends(self) -> set[int]:
        return {pid for pid, _, _ in self.transactions}


async def hold_transactions(
    connections: list[asyncpg.Connection], *, rounds: int, hold: float
) -> PoolLoad:
    """Each connection runs `rounds` transactions holding its server connection `hold` s;
    every transaction reports its backend pid and its start and end on the server's clock."""

    async def work(connection: asyncpg.Connection) -> list[tuple[int, float, float]]:
        done = []
        for _ in range(rounds):
            async with connection.transaction():
                pid, start = await connection.fetchrow(
                    "SELECT pg_backend_pid(), extract(epoch FROM clock_timestamp())::float8"
                )
                await connection.execute(f"SELECT pg_sleep({hold})")
                end = await connection.fetchval(
                    "SELECT extract(epoch FROM clock_timestamp())::float8"
                )
            done.append((pid, start, end))
        return done

    started = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*(work(c) for c in connections)), timeout=60)
    elapsed = time.monotonic() - started
    return PoolLoad(tuple(t for per_client in results for t in per_client), elapsed)
