"""Apps start only once their database answers a real query: the init container that the
Kubernetes injection adds, run as that container on this host's Docker, and `sotadb run`.

- The injection's `sota-wait-for-database`, taken from manifests/examples/app-deployment.yaml
  injected for this database (its image, command, env, envFrom the app Secret, security
  context, and the example pod's uid 70), translated by the Docker runtime's own translation:
  on the database's network it exits 0 at its first attempt through `sota-pgbouncer-{slug}`.
- It waits for a query, not for an open port: with PostgreSQL frozen, PgBouncer still accepts
  TCP and the login, and the container keeps waiting; once PostgreSQL answers, it exits 0.
  (Frozen, not stopped: a container started meanwhile may take a stopped PostgreSQL's
  address, which PgBouncer then keeps dialling for as long as Docker's DNS answer is cached.)
- With PgBouncer stopped, psql fails at once and the script retries, passing at a later
  attempt once PgBouncer is back; bounded to two attempts, it gives up with psql's own error,
  which names no password.
- `sotadb run NAME -- CMD` with PgBouncer frozen (docker pause: connections are accepted,
  nothing answers) does not start CMD; once PgBouncer answers, CMD runs and its query succeeds.
- `sotadb env NAME` prints the app's variables in .env form, the password masked unless
  `--show-password` is given.

Passwords reach containers and subprocesses through their environment only; outputs are
redacted before any assertion could show them.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import yaml
from dataplane_helpers import (
    SESSION_TAG,
    TEST_LABEL,
    Database,
    assert_no_secret,
    assert_same_secret,
    provisioned,
    redact,
    secrets_of,
    slug_for,
)
from docker.models.containers import Container

from sotadb import credentials as creds
from sotadb import names
from sotadb.docker.runtime import DockerRuntime
from sotadb.docker.state import StateStore
from sotadb.docker.translate import Catalog, translate
from sotadb.render import injection
from sotadb.render.objects import render_objects

pytestmark = pytest.mark.dataplane

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "app-deployment.yaml"
SOTADB = Path(sys.executable).with_name("sotadb")
MASK = "********"
STILL_WAITING_S = 8  # longer than one attempt of the init container (5 s connect + 2 s pause)
FINISH_TIMEOUT = 90


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(f"{SESSION_TAG}-startup-home")


@pytest.fixture(scope="module")
def db(runtime: DockerRuntime, home: Path) -> Iterator[Database]:
    """A database of its own (these tests stop and freeze its containers), in a SOTADB_HOME the
    `sotadb` CLI subprocesses share."""
    own = DockerRuntime(client=runtime.client, store=StateStore(home))
    with provisioned(own, slug_for("startup")) as database:
        yield database


# ---------------------------------------------------------------- the init container


def injected_example(slug: str, image: str) -> dict[str, Any]:
    """The example app's pod template with `slug`'s injection in it (what the operator's
    patch makes of it: tests/operator/test_injection.py)."""
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    template, _ = injection.with_injection(document["spec"]["template"], slug, image)
    return template


def wait_container_args(db: Database, name: str, *, script: str | None = None) -> dict[str, Any]:
    """docker-py create arguments for the injected init container, as the pod runs it: the
    Docker runtime's translation of a pod holding only that container, plus its envFrom
    resolved as the kubelet does (the Secret's keys first; `env` overrides them). `script`
    replaces the shell script (for a bounded variant)."""
    template = injected_example(db.slug, db.runtime.images.pooler)
    (wait,) = [
        c for c in template["spec"]["initContainers"] if c["name"] == injection.WAIT_CONTAINER
    ]
    if script is not None:
        wait = {**wait, "command": [*wait["command"][:-1], script]}
    pod = {
        "metadata": copy.deepcopy(template["metadata"]),
        "spec": {
            "securityContext": copy.deepcopy(template["spec"].get("securityContext") or {}),
            "restartPolicy": "Never",  # an init container runs to completion
            "containers": [wait],
        },
    }
    catalog = Catalog.of(render_objects(db.result.db, db.credentials, db.runtime.images))
    plan = translate(
        container_name=name,
        pod_template=pod,
        catalog=catalog,
        network=db.network,
        files_root=str(db.files_dir()),
        volume_claims={},
        labels={TEST_LABEL: SESSION_TAG},
    )
    args = dict(plan.create_args)
    from_secrets: dict[str, str] = {}
    for source in wait["envFrom"]:
        from_secrets.update(catalog.data("Secret", source["secretRef"]["name"]))
    args["environment"] = {**from_secrets, **args["environment"]}
    return args


@contextlib.contextmanager
def started(db: Database, args: Mapping[str, Any]) -> Iterator[Container]:
    container = db.client.containers.create(**args)
    try:
        container.start()
        yield container
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def finished(container: Container, timeout: float = FINISH_TIMEOUT) -> tuple[int, str]:
    """Exit code and redacted output of a container that is expected to end by itself."""
    __tracebackhide__ = True
    try:
        status = container.wait(timeout=timeout)
    except Exception as e:  # requests' ReadTimeout, ConnectionError: the bound was hit
        raise AssertionError(f"{container.name} did not finish within {timeout}s") from e
    return int(status["StatusCode"]), logs(container)


def logs(container: Container) -> str:
    return redact(container.logs(stdout=True, stderr=True).decode(errors="replace"))


@contextlib.contextmanager
def stopped(container: Container, db: Database) -> Iterator[None]:
    """One of the database's containers stopped; started again whatever happens, until a
    query through PgBouncer answers."""
    container.stop(timeout=30)
    try:
        yield
    finally:
        container.start()
        db.runtime.wait_until_ready(db.slug, db.credentials, timeout=120)


@contextlib.contextmanager
def paused(container: Container) -> Iterator[None]:
    container.pause()
    try:
        yield
    finally:
        container.reload()
        if container.status == "paused":
            container.unpause()


def pooler_accepts_tcp(db: Database) -> bool:
    address = db.ip(names.pooler_name(db.slug))
    with contextlib.suppress(OSError), socket.create_connection((address, names.POOLER_PORT), 2):
        return True
    return False


def test_the_init_container_passes_once_pgbouncer_answers(db: Database) -> None:
    args = wait_container_args(db, f"{SESSION_TAG}-wait-ready")
    # As the example pod runs it: the pod's uid 70, the restricted container settings.
    assert args["user"] == "70:70"
    assert args["read_only"] is True
    assert args["cap_drop"] == ["ALL"]
    assert args["environment"]["DATABASE_URL"] == db.database_url()  # the seed's host name
    with started(db, args) as container:
        code, output = finished(container)
    assert code == 0, output
    assert output == "sotadb: the database answers (attempt 1)\n"


def test_the_init_container_waits_for_a_query_not_an_open_port(db: Database) -> None:
    """PostgreSQL frozen (docker pause), PgBouncer up: its port is open and it accepts the
    login, but the query gets no answer, so the container keeps waiting; it passes once
    PostgreSQL answers again."""
    with contextlib.ExitStack() as stack:
        with paused(db.postgres):
            assert pooler_accepts_tcp(db), "PgBouncer should accept TCP while PostgreSQL hangs"
            args = wait_container_args(db, f"{SESSION_TAG}-wait-query")
            container = stack.enter_context(started(db, args))
            time.sleep(STILL_WAITING_S)
            container.reload()
            assert container.status == "running", logs(container)
            assert "answers" not in logs(container)
            assert pooler_accepts_tcp(db)
        code, output = finished(container)
    assert code == 0, output
    assert output.startswith("sotadb: the database answers (attempt "), output
    assert_no_secret(output, "the init container's output", secrets_of(db.credentials))
    db.runtime.wait_until_ready(db.slug, db.credentials, timeout=60)


def test_the_init_container_retries_until_pgbouncer_answers_and_gives_up_bounded(
    db: Database,
) -> None:
    """PgBouncer down (its host name does not resolve): psql fails at once, the script
    retries; a variant bounded to two attempts gives up with psql's own error, no password."""
    secrets = secrets_of(db.credentials)
    with contextlib.ExitStack() as stack:
        with stopped(db.pooler, db):
            bounded = injection.wait_script(attempts=2, interval=0)
            args = wait_container_args(db, f"{SESSION_TAG}-wait-bounded", script=bounded)
            with started(db, args) as container:
                code, output = finished(container)
            assert code == 1, output
            assert "sotadb: the database did not answer in 2 attempts: psql: error:" in output
            assert_no_secret(output, "the init container's output", secrets)

            args = wait_container_args(db, f"{SESSION_TAG}-wait-retry")
            container = stack.enter_context(started(db, args))
            time.sleep(STILL_WAITING_S / 2)  # two attempts or more, 2 s apart
            container.reload()
            assert container.status == "running", logs(container)
        code, output = finished(container)
    assert code == 0, output
    (line,) = output.splitlines()
    attempt = int(line.removeprefix("sotadb: the database answers (attempt ").rstrip(")"))
    assert attempt > 1, line
    assert_no_secret(output, "the init container's output", secrets)


# ---------------------------------------------------------------- sotadb run and env


def sotadb_env(home: Path) -> dict[str, str]:
    assert SOTADB.is_file(), f"the sotadb console script is not installed at {SOTADB}"
    env = {**os.environ, "SOTADB_HOME": str(home), "NO_COLOR": "1", "TERM": "dumb"}
    for key in ("DATABASE_URL", "DIRECT_DATABASE_URL", "PGPASSWORD"):
        env.pop(key, None)
    return env


def test_sotadb_run_starts_the_command_only_once_the_database_answers(
    db: Database, home: Path, tmp_path: Path
) -> None:
    started_marker = tmp_path / "command-started"
    # The command: this venv's Python (no host psql needed) marks that it started, then
    # makes its first query, as an app's migration would.
    script = (
        "import os, pathlib, psycopg; pathlib.Path(os.environ['MARKER']).touch()\n"
        "with psycopg.connect(os.environ['DATABASE_URL'], connect_timeout=5) as c:\n"
        "    print(c.execute('SELECT current_user').fetchone()[0])\n"
    )
    command = [str(SOTADB), "run", db.slug, "--timeout", "120", "--", sys.executable, "-c", script]
    env = {**sotadb_env(home), "MARKER": str(started_marker)}
    with paused(db.pooler):
        began = time.monotonic()
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            time.sleep(STILL_WAITING_S / 2)
            assert process.poll() is None, "sotadb run ended while PgBouncer did not answer"
            assert not started_marker.exists(), "the command started before the database answered"
        except BaseException:
            process.kill()
            process.communicate(timeout=30)
            raise
    try:
        out, err = process.communicate(timeout=FINISH_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=30)
        raise AssertionError(f"sotadb run did not finish within {FINISH_TIMEOUT}s") from None
    elapsed = time.monotonic() - began
    assert process.returncode == 0, redact(err)
    assert started_marker.exists()
    assert out.split() == [db.role]
    assert elapsed >= STILL_WAITING_S / 2
    assert_no_secret(out + err, "the output of `sotadb run`", secrets_of(db.credentials))


def test_sotadb_env_prints_dotenv_lines_masked_unless_asked(db: Database, home: Path) -> None:
    def env_lines(*extra: str) -> dict[str, str]:
        done = subprocess.run(
            [str(SOTADB), "env", db.slug, *extra],
            env=sotadb_env(home),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, redact(done.stderr)
        lines = done.stdout.splitlines()
        # .env form: one KEY=value a line, nothing else (docker --env-file, dotenv, systemd).
        assert all("=" in line and line.split("=", 1)[0].isidentifier() for line in lines)
        return dict(line.split("=", 1) for line in lines)

    masked = env_lines()
    assert_no_secret("\n".join(masked.values()), "`sotadb env`", secrets_of(db.credentials))
    expected = creds.app_environment(db.slug, db.credentials.password)
    assert set(masked) == set(expected)
    assert masked["PGPASSWORD"] == MASK
    assert masked["DATABASE_URL"] == expected["DATABASE_URL"].replace(db.password, MASK)

    shown = env_lines("--show-password")
    assert set(shown) == set(expected)
    for key, value in expected.items():  # the seed's URLs: sota-pgbouncer-/sota-db-{slug}
        assert_same_secret(shown[key], value, f"`sotadb env --show-password` {key}")
