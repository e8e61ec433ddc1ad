"""Authentication: SCRAM-SHA-256 end to end, no plaintext at rest, and every other door shut.

Proved on real containers: the app's role logs in through PgBouncer with psycopg 3 and asyncpg
by SCRAM (libpq's `require_auth` makes the client itself refuse anything weaker, and
PostgreSQL 17's `system_user` shows PgBouncer's leg was SCRAM too); PgBouncer's userlist and
PostgreSQL's pg_authid hold the one verifier in the state, never the password; wrong passwords,
unknown users and the superuser over TCP are refused; the superuser's only way in is the unix
socket inside the PostgreSQL container.
"""

from __future__ import annotations

import asyncpg
import psycopg
import pytest
from dataplane_helpers import (
    CONNECT_TIMEOUT,
    Database,
    assert_no_secret,
    assert_same_secret,
    exec_in,
    secrets_of,
    with_query,
)

from sotadb import credentials as creds
from sotadb import names

pytestmark = pytest.mark.dataplane

WHO_AM_I = (
    "SELECT current_user, current_database(), system_user, host(inet_client_addr()), "
    "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
)
SASL_REFUSED = "SASL authentication failed"  # PgBouncer's one answer: no hint which part was wrong


def test_psycopg_logs_in_with_scram_through_pgbouncer(shared_db: Database) -> None:
    # require_auth: libpq aborts unless the server (PgBouncer) asks for exactly SCRAM-SHA-256.
    url = with_query(shared_db.url(), require_auth="scram-sha-256")
    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT) as connection:
        row = connection.execute(WHO_AM_I).fetchone()
    assert row is not None
    user, database, system_user, client_address, superuser = row
    assert (user, database) == (shared_db.role, shared_db.slug)
    # PostgreSQL saw a SCRAM login (PgBouncer's passthrough), from PgBouncer's address.
    assert system_user == f"scram-sha-256:{shared_db.role}"
    assert client_address == shared_db.ip(names.pooler_name(shared_db.slug))
    assert superuser is False


def test_pgbouncer_offers_no_weaker_method(shared_db: Database) -> None:
    # The control for the test above: a client that accepts only cleartext or md5 is refused
    # by libpq itself, because PgBouncer asks for SASL.
    for method in ("password", "md5"):
        url = with_query(shared_db.url(), require_auth=method)
        with pytest.raises(psycopg.OperationalError, match="server requested SASL"):
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT).close()


async def test_asyncpg_logs_in_with_scram_through_pgbouncer(shared_db: Database) -> None:
    connection = await asyncpg.connect(str(shared_db.url()), timeout=CONNECT_TIMEOUT)
    try:
        row = await connection.fetchrow(WHO_AM_I)
    finally:
        await connection.close()
    assert tuple(row) == (
        shared_db.role,
        shared_db.slug,
        f"scram-sha-256:{shared_db.role}",
        shared_db.ip(names.pooler_name(shared_db.slug)),
        False,
    )


def test_pgbouncer_userlist_holds_the_verifier_not_the_password(shared_db: Database) -> None:
    credentials = shared_db.credentials
    userlist = shared_db.userlist_txt()
    assert_no_secret(userlist, "userlist.txt", {"password": credentials.password})
    assert_same_secret(
        userlist, f'"{shared_db.role}" "{credentials.verifier}"\n', "userlist.txt vs the state"
    )
    assert creds.verifier_matches(credentials.password, credentials.verifier)
    # The file PgBouncer reads is that file (mounted read-only), and PgBouncer is told SCRAM.
    mounted = exec_in(shared_db.pooler, ["cat", f"{names.POOLER_AUTH_DIR}/userlist.txt"])
    assert mounted.exit_code == 0, "cannot read userlist.txt inside the PgBouncer container"
    assert_same_secret(mounted.stdout, userlist, "mounted userlist.txt vs rendered file")
    ini = shared_db.pgbouncer_ini().splitlines()
    assert "auth_type = scram-sha-256" in ini
    assert f"auth_file = {names.POOLER_AUTH_DIR}/userlist.txt" in ini


def test_postgres_stores_the_same_verifier_as_the_state(shared_db: Database) -> None:
    stored = shared_db.superuser_sql(
        "SELECT rolpassword FROM pg_authid WHERE rolname = :'role'", role=shared_db.role
    )
    assert stored.startswith("SCRAM-SHA-256$4096:"), "pg_authid holds no SCRAM verifier"
    state = shared_db.runtime.store.load(shared_db.slug)
    assert state is not None
    assert_same_secret(stored, state.credentials.verifier, "pg_authid vs the state's verifier")
    assert_same_secret(stored, shared_db.credentials.verifier, "pg_authid vs userlist's verifier")
    # Least privilege: a login role that owns its database and nothing more.
    flags = shared_db.superuser_sql(
        "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
        "FROM pg_roles WHERE rolname = :'role'",
        role=shared_db.role,
    )
    assert flags == "t|f|f|f|f|f"
    owner = shared_db.superuser_sql(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'db'", db=shared_db.slug
    )
    assert owner == shared_db.role


@pytest.mark.parametrize("direct", [False, True], ids=["pgbouncer", "direct"])
def test_wrong_password_is_refused(shared_db: Database, direct: bool) -> None:
    wrong = creds.generate_password()
    assert wrong != shared_db.credentials.password
    url = shared_db.url_as(shared_db.role, wrong, direct=direct)
    expected = "password authentication failed" if direct else SASL_REFUSED
    with pytest.raises(psycopg.OperationalError, match=expected):
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT).close()


async def test_wrong_password_is_refused_with_asyncpg(shared_db: Database) -> None:
    url = shared_db.url_as(shared_db.role, creds.generate_password())
    # PgBouncer reports a failed SCRAM exchange as SQLSTATE 08P01 (protocol violation), so
    # asyncpg raises ProtocolViolationError, not InvalidPasswordError (28P01).
    with pytest.raises(asyncpg.PostgresError, match=SASL_REFUSED):
        await asyncpg.connect(str(url), timeout=CONNECT_TIMEOUT)


def test_unknown_user_is_refused(shared_db: Database) -> None:
    # Even holding the app's real password: the user is unknown to PgBouncer and to pg_hba.
    password = shared_db.credentials.password
    with pytest.raises(psycopg.OperationalError, match=SASL_REFUSED):
        psycopg.connect(
            shared_db.url_as("intruder", password), connect_timeout=CONNECT_TIMEOUT
        ).close()
    with pytest.raises(psycopg.OperationalError, match=r'rejects connection .* user "intruder"'):
        psycopg.connect(
            shared_db.url_as("intruder", password, direct=True), connect_timeout=CONNECT_TIMEOUT
        ).close()


def test_superuser_is_refused_over_tcp_and_admitted_on_the_socket(shared_db: Database) -> None:
    with pytest.raises(psycopg.OperationalError, match=SASL_REFUSED):
        psycopg.connect(
            shared_db.url_as("postgres", "postgres"), connect_timeout=CONNECT_TIMEOUT
        ).close()
    # Direct: pg_hba rejects the superuser on every TCP address before any password is asked.
    with pytest.raises(psycopg.OperationalError, match=r'rejects connection .* user "postgres"'):
        psycopg.connect(
            shared_db.url_as("postgres", "postgres", direct=True), connect_timeout=CONNECT_TIMEOUT
        ).close()
    answer = shared_db.superuser_sql(
        "SELECT current_user, rolsuper, system_user FROM pg_roles WHERE rolname = current_user"
    )
    assert answer == "postgres|t|peer:postgres"


def test_secrets_never_reach_container_config(shared_db: Database) -> None:
    """`docker inspect` of both containers (env, args, labels, mounts) has no password, and
    PgBouncer's has no verifier either (PostgreSQL's bootstrap gets the verifier, by design)."""
    secrets = secrets_of(shared_db.credentials)
    pooler = str(shared_db.pooler.attrs)
    assert_no_secret(pooler, "docker inspect of PgBouncer", secrets)
    postgres = str(shared_db.postgres.attrs)
    assert_no_secret(postgres, "docker inspect of PostgreSQL", {"password": secrets["password"]})
    # The bootstrap script unsets the verifier before exec'ing tini (PID 1), which starts the
    # server: neither environment (readable by any process of uid 999 in the container) has it.
    postmaster = 'cat "/proc/$(head -n 1 "$PGDATA/postmaster.pid")/environ"'
    for what, command in [
        ("PID 1 (tini)", ["cat", "/proc/1/environ"]),
        ("the postmaster", ["bash", "-c", postmaster]),
    ]:
        environ = exec_in(shared_db.postgres, command, user="postgres")
        assert environ.exit_code == 0, f"cannot read the environment of {what}"
        assert "PGDATA=" in environ.stdout  # the control: it is the server's environment
        assert "SOTADB_APP_VERIFIER" not in environ.stdout
        assert_no_secret(environ.stdout, f"the environment of {what}", secrets)
