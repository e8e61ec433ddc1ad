"""Migrations and app start-up through the app's own URLs, as docs/migrations.md describes them.

One database for the module, provisioned into a SOTADB_HOME of its own so the `sotadb` CLI
(run as a subprocess, as a user would) sees it too.

- Alembic (SQLAlchemy 2 + psycopg 3) `upgrade head` and Django `migrate --noinput` run through
  the pooled DATABASE_URL (PgBouncer, transaction mode); the tables exist (checked over
  DIRECT_DATABASE_URL); a second run applies nothing and `pg_dump --schema-only` is unchanged.
- node-postgres runs named prepared statements through PgBouncer across transactions while
  other clients churn, on several server connections, without an error or a wrong result.
- The seed's "migration hangs" pitfall: a session advisory lock taken through PgBouncer does
  not hold (another client's transaction on the same server connection gets it too, and the
  unlock runs on another server connection and releases nothing), so the lock leaks and the
  next migrator's `pg_advisory_lock` blocks until the app ends the holding backend over
  DIRECT_DATABASE_URL. Through DIRECT_DATABASE_URL the lock holds, and its release works.
- App start-up: `sotadb run NAME -- CMD` hands CMD the host-port URLs once the database
  answers; a container joined with `sotadb attach` reaches `sota-pgbouncer-{slug}` by name;
  `docker run --network sota-net-{slug} --env-file <(sotadb env NAME --show-password)` gives
  a new container both URLs before it starts.

Subprocesses get URLs through their environment, never on a command line, and no test prints
one: results are compared as counts and booleans.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import docker.errors
import psycopg
import pytest
from dataplane_helpers import (
    CLIENT_IMAGE,
    CONNECT_TIMEOUT,
    EXEC_ATTEMPTS,
    SESSION_TAG,
    TEST_LABEL,
    Database,
    Secret,
    assert_same_secret,
    exec_in,
    provisioned,
    redact,
    slug_for,
)

from sotadb import names
from sotadb.docker.runtime import DockerRuntime
from sotadb.docker.state import StateStore
from sotadb.spec import DEFAULT_POOL_SIZE

pytestmark = pytest.mark.dataplane

FIXTURES = Path(__file__).resolve().parent / "migrations"
ALEMBIC_INI = FIXTURES / "alembic_project" / "alembic.ini"
DJANGO_PROJECT = FIXTURES / "django_project"
NODE_FIXTURE = FIXTURES / "node"
SOTADB = Path(sys.executable).with_name("sotadb")
TOOL_TIMEOUT = 120  # seconds, for every subprocess
LOCK_TIMEOUT_S = 1


# ---------------------------------------------------------------- the module's database


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(f"{SESSION_TAG}-migrations-home")


@pytest.fixture(scope="module")
def db(runtime: DockerRuntime, home: Path) -> Iterator[Database]:
    own = DockerRuntime(client=runtime.client, store=StateStore(home))
    with provisioned(own, slug_for("migrations")) as database:
        yield database


def tool_env(url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "PYTHONDONTWRITEBYTECODE": "1",  # leave no __pycache__ in the fixtures
        **extra,
    }


def run_tool(
    command: list[str], *, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    __tracebackhide__ = True
    try:
        done = subprocess.run(
            command,
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{command[:3]} did not finish within {TOOL_TIMEOUT}s") from None
    return subprocess.CompletedProcess(
        done.args, done.returncode, redact(done.stdout), redact(done.stderr)
    )


def public_tables(db: Database) -> set[str]:
    """Table names in `public`, read over DIRECT_DATABASE_URL (bypassing PgBouncer)."""
    with psycopg.connect(db.direct_url(), connect_timeout=CONNECT_TIMEOUT) as connection:
        rows = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {str(name) for (name,) in rows}


def schema_dump(db: Database) -> str:
    """`pg_dump --schema-only` of the app database, by the superuser inside sota-db-{slug}
    (this host's pg_dump is older than the server). pg_dump 17.6+ frames its output with
    `\\restrict KEY` / `\\unrestrict KEY` lines whose key is random per run: dropped."""
    __tracebackhide__ = True
    command = [
        "pg_dump", "--schema-only", "-h", names.POSTGRES_SOCKET_DIR, "-U", "postgres",
        "-d", names.database_name(db.slug),
    ]  # fmt: skip
    result = exec_in(db.postgres, command, user="postgres")
    if result.exit_code != 0:
        raise AssertionError(f"pg_dump exited {result.exit_code}: {result.stderr.strip()}")
    lines = result.stdout.splitlines()
    return "\n".join(x for x in lines if not x.startswith(("\\restrict", "\\unrestrict")))


# ---------------------------------------------------------------- Alembic and Django


def alembic(db: Database, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "alembic", "-c", str(ALEMBIC_INI), *args]
    return run_tool(command, env=tool_env(db.url()))


ALEMBIC_TABLES = {"alembic_version", "widget_kind", "widget"}


def test_alembic_upgrade_head_through_pgbouncer_twice(db: Database) -> None:
    assert not ALEMBIC_TABLES & public_tables(db), "the fixture's tables existed before"

    first = alembic(db, "upgrade", "head")
    assert first.returncode == 0, first.stderr
    assert "Running upgrade  -> 0001" in first.stderr
    assert "Running upgrade 0001 -> 0002" in first.stderr
    assert public_tables(db) >= ALEMBIC_TABLES
    with psycopg.connect(db.direct_url(), connect_timeout=CONNECT_TIMEOUT) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("0002",)
        ]
        # Revision 0002's seed rows; it also failed itself unless psycopg's default
        # prepare_threshold had prepared the repeated INSERT on the server (through PgBouncer).
        assert connection.execute("SELECT count(*) FROM widget_kind").fetchone() == (10,)
    schema = schema_dump(db)

    second = alembic(db, "upgrade", "head")
    assert second.returncode == 0, second.stderr
    assert "Running upgrade" not in second.stderr, second.stderr
    assert schema_dump(db) == schema, "a second `alembic upgrade head` changed the schema"
    current = alembic(db, "current")
    assert current.returncode == 0, current.stderr
    assert current.stdout.split() == ["0002", "(head)"]


def django(db: Database, *args: str) -> subprocess.CompletedProcess[str]:
    env = tool_env(db.url(), DJANGO_SETTINGS_MODULE="shopsite.settings")
    return run_tool([sys.executable, "manage.py", *args], env=env, cwd=DJANGO_PROJECT)


DJANGO_TABLES = {"django_migrations", "django_content_type", "shop_order"}


def test_django_migrate_through_pgbouncer_twice(db: Database) -> None:
    assert not DJANGO_TABLES & public_tables(db), "the fixture's tables existed before"

    first = django(db, "migrate", "--noinput")
    assert first.returncode == 0, first.stderr
    assert "Applying shop.0001_initial... OK" in first.stdout, first.stdout
    assert public_tables(db) >= DJANGO_TABLES
    with psycopg.connect(db.direct_url(), connect_timeout=CONNECT_TIMEOUT) as connection:
        applied = connection.execute("SELECT app, name FROM django_migrations").fetchall()
        # post_migrate wrote the content type rows through PgBouncer too.
        kinds = connection.execute("SELECT app_label, model FROM django_content_type").fetchall()
    assert ("shop", "0001_initial") in applied
    assert ("shop", "order") in kinds
    schema = schema_dump(db)

    second = django(db, "migrate", "--noinput")
    assert second.returncode == 0, second.stderr
    assert "No migrations to apply." in second.stdout, second.stdout
    assert schema_dump(db) == schema, "a second `manage.py migrate` changed the schema"
    with psycopg.connect(db.direct_url(), connect_timeout=CONNECT_TIMEOUT) as connection:
        again = connection.execute("SELECT app, name FROM django_migrations").fetchall()
    assert sorted(again) == sorted(applied)


# ---------------------------------------------------------------- node-postgres


@pytest.fixture(scope="session")
def node_pg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the script and `pg` installed by npm (once per session, outside
    the repository). No npm registry is a failure with the reason, never a skip."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("the node-postgres test needs Node.js and npm on PATH", pytrace=False)
    directory = tmp_path_factory.mktemp(f"{SESSION_TAG}-node-pg")
    for name in ("package.json", "prepared_statements.js"):
        shutil.copy(NODE_FIXTURE / name, directory / name)
    command = [npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--omit=dev"]
    try:
        result = subprocess.run(
            command, cwd=directory, capture_output=True, text=True, timeout=180, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("`npm install pg` took over 180 s (is the npm registry reachable?)")
    if result.returncode != 0 or not (directory / "node_modules" / "pg").is_dir():
        pytest.fail(
            f"`npm install` of node-postgres failed (exit {result.returncode}); the test needs "
            f"the npm registry (npm config get registry):\n{result.stderr[-2000:]}",
            pytrace=False,
        )
    return directory


def test_node_pg_named_prepared_statements_through_pgbouncer(db: Database, node_pg: Path) -> None:
    node = shutil.which("node")
    assert node is not None
    env = tool_env(db.url(), ROUNDS="300", CHURNERS=str(DEFAULT_POOL_SIZE + 5))
    result = run_tool([node, "prepared_statements.js"], env=env, cwd=node_pg)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["errors"] == []  # e.g. no "prepared statement "get-x" does not exist"
    assert report["rounds"] == 300
    assert report["wrong"] == 0
    # Each sample was taken on the server connection of that round's transaction.
    assert report["preparedOnServer"] == [1] * 6, report["preparedOnServer"]
    # The client's statements ran on several server connections: where node-postgres sent only
    # the statement's name, PgBouncer prepared it first.
    assert report["backends"] > 1, report
    assert report["churned"] > 0


# ---------------------------------------------------------------- advisory locks


def pooled(db: Database, *, autocommit: bool) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(db.url(), autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT)


def direct(db: Database, *, autocommit: bool) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(db.direct_url(), autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT)


def one(connection: psycopg.Connection[tuple[object, ...]], sql: str) -> tuple[object, ...]:
    """One statement, one row. Under autocommit through PgBouncer each call is its own
    transaction, so it may run on another server connection than the call before."""
    row = connection.execute(sql).fetchone()
    assert row is not None
    return row


def lock_holders(db: Database) -> list[int]:
    """Backends holding the advisory lock 42 in the app database (as the superuser)."""
    out = db.superuser_sql(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = 0 AND objid = 42 AND objsubid = 1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = :'db') ORDER BY pid",
        db=names.database_name(db.slug),
    )
    return [int(x) for x in out.split()]


def next_migrator_waits(connection: psycopg.Connection[tuple[object, ...]]) -> tuple[int, float]:
    """What the next deploy's migrator meets: `pg_advisory_lock` blocks (bounded here by
    lock_timeout; a migrator sets none and hangs). Returns its backend and the seconds waited."""
    with connection.transaction():
        connection.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'")
        (pid,) = one(connection, "SELECT pg_backend_pid()")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.LockNotAvailable):
            connection.execute("SELECT pg_advisory_lock(42)")
        waited = time.monotonic() - started
    assert isinstance(pid, int)
    return pid, waited


@pytest.fixture
def release_leaked_lock(db: Database) -> Iterator[None]:
    yield
    # Whatever the test did: end any backend still holding the lock (as the superuser).
    db.superuser_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
        "AND objid = 42 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = :'db')",
        db=names.database_name(db.slug),
    )


@pytest.mark.usefixtures("release_leaked_lock")
def test_session_advisory_lock_does_not_hold_through_pgbouncer(db: Database) -> None:
    notices: list[str] = []
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(pooled(db, autocommit=True))
        a.add_notice_handler(lambda diagnostic: notices.append(str(diagnostic.message_primary)))
        # 1. Migrator A takes the lock. Its transaction ends with the statement, and PgBouncer
        #    returns server connection `taken_on` to the pool, still holding the lock.
        (taken_on,) = one(a, "SELECT pg_backend_pid() FROM pg_advisory_lock(42)")

        # 2. Client B opens transactions until one runs on that server connection (each
        #    attempt keeps its own, so the loop ends within the pool size), and there
        #    "acquires" the lock A believes it holds: both would now migrate at once.
        b = None
        for _ in range(DEFAULT_POOL_SIZE + 1):
            attempt = stack.enter_context(pooled(db, autocommit=False))
            if one(attempt, "SELECT pg_backend_pid()") == (taken_on,):
                b = attempt
                break
        assert b is not None, "no transaction ever ran on the server connection holding the lock"
        assert one(b, "SELECT pg_try_advisory_lock(42)") == (True,)

        # 3. While B's transaction holds that server connection, A releases the lock: the
        #    statement runs on another backend, which owns no such lock. Nothing is released.
        released, unlocked_on = one(a, "SELECT pg_advisory_unlock(42), pg_backend_pid()")
        assert released is False
        assert unlocked_on != taken_on
        assert "you don't own a lock of type ExclusiveLock" in notices

        # 4. The next migrator M, through PgBouncer, gets another server connection (B's
        #    transaction holds the lock's) and waits for the lock: "migration hangs".
        m = stack.enter_context(pooled(db, autocommit=False))
        m_pid, waited = next_migrator_waits(m)
        assert m_pid != taken_on
        assert waited >= LOCK_TIMEOUT_S * 0.9

        # 5. The lock outlives every client that took it: the server connection, back in
        #    PgBouncer's pool, still holds it after A, B and M are gone.
        b.commit()
        for client in (a, b, m):
            client.close()
        assert lock_holders(db) == [taken_on]

    # 6. The way out, as the app itself: over DIRECT_DATABASE_URL its role may end its own
    #    backends, and so the server connection that holds the lock (PgBouncer drops it).
    with direct(db, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pid, pg_terminate_backend(pid, 5000) FROM pg_locks "
            "WHERE locktype = 'advisory' AND classid = 0 AND objid = 42 AND objsubid = 1 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
        assert ended == [(taken_on, True)]
        assert one(admin, "SELECT pg_try_advisory_lock(42)") == (True,)
        assert one(admin, "SELECT pg_advisory_unlock(42)") == (True,)
    assert lock_holders(db) == []


def test_session_advisory_lock_holds_through_direct_database_url(db: Database) -> None:
    notices: list[str] = []
    with direct(db, autocommit=True) as a, direct(db, autocommit=True) as b:
        a.add_notice_handler(lambda diagnostic: notices.append(str(diagnostic.message_primary)))
        (a_pid,) = one(a, "SELECT pg_backend_pid() FROM pg_advisory_lock(42)")
        try:
            # B cannot take it, and a migrator that waits for it does wait.
            b_pid, got = one(b, "SELECT pg_backend_pid(), pg_try_advisory_lock(42)")
            assert got is False
            assert b_pid != a_pid
            assert lock_holders(db) == [a_pid]
            b_pid_waiting, waited = next_migrator_waits(b)
            assert b_pid_waiting == b_pid
            assert waited >= LOCK_TIMEOUT_S * 0.9
        finally:
            # A's release runs on A's own session: it really releases.
            released, unlocked_on = one(a, "SELECT pg_advisory_unlock(42), pg_backend_pid()")
        assert (released, unlocked_on) == (True, a_pid)
        assert notices == []
        assert lock_holders(db) == []
        assert one(b, "SELECT pg_try_advisory_lock(42)") == (True,)
        assert one(b, "SELECT pg_advisory_unlock(42)") == (True,)
    assert lock_holders(db) == []


# ---------------------------------------------------------------- app containers


def sotadb_env(home: Path) -> dict[str, str]:
    assert SOTADB.is_file(), f"the sotadb console script is not installed at {SOTADB}"
    env = {**os.environ, "SOTADB_HOME": str(home), "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("DATABASE_URL", None)
    return env


def sotadb(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tool([str(SOTADB), *args], env=sotadb_env(home))


def sotadb_secret(home: Path, *args: str) -> Secret:
    """The stdout of a `sotadb` command that prints a secret (`url --show-password`): kept as
    a Secret, never shown; on failure only stderr (which carries no password) is."""
    __tracebackhide__ = True
    done = subprocess.run(
        [str(SOTADB), *args],
        env=sotadb_env(home),
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"sotadb {args[0]} exited {done.returncode}: {redact(done.stderr)}")
    return Secret(done.stdout.strip())


# A stand-in app for `sotadb run`: this venv's Python and psycopg (no host psql needed).
# Exit 3: a URL that is not the host-port one.
RUN_PROBE = """
import os, sys, psycopg
urls = [os.environ["DATABASE_URL"], os.environ["DIRECT_DATABASE_URL"]]
if not all(u.startswith("postgresql://") and "@127.0.0.1:" in u for u in urls):
    sys.exit(3)
with psycopg.connect(urls[0], connect_timeout=5) as c:
    print(*c.execute("SELECT current_user, current_database()").fetchone(), sep="|")
with psycopg.connect(urls[1], connect_timeout=5) as c:
    print(c.execute("SELECT 1 + 1").fetchone()[0])
"""


def test_sotadb_run_gives_the_command_the_host_port_url(db: Database, home: Path) -> None:
    # `sotadb run` waits for a real query, then execs the command on this host with the
    # host-port URLs (127.0.0.1, through docker-proxy): the command checks that, then queries.
    result = sotadb(home, "run", db.slug, "--", sys.executable, "-c", RUN_PROBE)
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stdout.split() == [f"{db.role}|{names.database_name(db.slug)}", "2"]


@pytest.fixture
def app_container(db: Database) -> Iterator[str]:
    """A stand-in app container (not on the database's network), removed afterwards: the
    database's `down` cannot remove a network a container is still connected to."""
    name = f"{SESSION_TAG}-migrations-app"
    container = db.client.containers.run(
        CLIENT_IMAGE,
        command=["sleep", "120"],
        name=name,
        labels={TEST_LABEL: SESSION_TAG},
        user=f"{names.POSTGRES_UID}:{names.POSTGRES_UID}",
        detach=True,
    )
    try:
        yield name
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def test_attached_container_reaches_the_seed_host_name(
    db: Database, home: Path, app_container: str
) -> None:
    attached = sotadb(home, "attach", db.slug, app_container)
    assert attached.returncode == 0, attached.stderr
    assert f"connected to {db.network}" in attached.stderr
    again = sotadb(home, "attach", db.slug, app_container)
    assert again.returncode == 0, again.stderr
    assert f"already on {db.network}" in again.stderr

    # What a user pastes into `docker run -e DATABASE_URL=...`: the seed's URL, host and all.
    url = sotadb_secret(home, "url", db.slug, "--show-password")
    assert_same_secret(url, db.database_url(), "`sotadb url --show-password`")
    assert urlsplit(url).hostname == names.pooler_name(db.slug)

    container = db.container(app_container)
    script = (
        f"getent hosts {names.pooler_name(db.slug)} >/dev/null || exit 3; "
        'psql "$DATABASE_URL" -X -tA -c "SELECT current_user, current_database()"'
    )
    # The query is read-only: run it again (bounded) if Docker 20.10's exec attach lost its
    # output (see dataplane_helpers.exec_in).
    for _ in range(EXEC_ATTEMPTS):
        code, (out, err) = container.exec_run(
            ["bash", "-c", script], environment={"DATABASE_URL": str(url)}, demux=True
        )
        output = redact((out or b"").decode(errors="replace")).split()
        if code != 0 or output:
            break
    assert code == 0, redact((err or b"").decode(errors="replace"))
    assert output == [f"{db.role}|{names.database_name(db.slug)}"]


def test_docker_run_with_env_file_from_sotadb_env(db: Database, home: Path) -> None:
    """docs/migrations.md's command for an app container, verbatim in shape: the variables
    come from `sotadb env --show-password` through a process substitution, never a file or an
    argument, and the container on sota-net-{slug} uses DATABASE_URL and DIRECT_DATABASE_URL
    as they are (host names sota-pgbouncer-{slug} and sota-db-{slug})."""
    docker_cli = shutil.which("docker")
    assert docker_cli, "this test runs the docker CLI, as the guide tells users to"
    inner = (
        'psql "$DATABASE_URL" -X -tA -c "SELECT current_user, current_database()" && '
        'psql "$DIRECT_DATABASE_URL" -X -tA -c "SELECT 1 + 1"'
    )
    script = (
        '"$DOCKER" run --rm --network "$NETWORK" --label "$LABEL" --user 999:999 '
        '--env-file <("$SOTADB" env "$SLUG" --show-password) "$IMAGE" sh -c "$INNER"'
    )
    env = {
        **sotadb_env(home),
        "DOCKER": docker_cli,
        "SOTADB": str(SOTADB),
        "SLUG": db.slug,
        "NETWORK": db.network,
        "LABEL": f"{TEST_LABEL}={SESSION_TAG}",
        "IMAGE": CLIENT_IMAGE,
        "INNER": inner,
    }
    result = run_tool(["bash", "-c", script], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"{db.role}|{names.database_name(db.slug)}", "2"]
