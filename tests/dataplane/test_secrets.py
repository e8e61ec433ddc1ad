"""Secrets stay out of the containers' logs, on every path that handles them.

The logs are checked after the events most likely to leak: successful and refused logins (via
PgBouncer and direct), the superuser over TCP, an SQL error, a restart (bootstrap finds the role
as it should), and a re-salted verifier (bootstrap's ALTER ROLE path, and a new userlist).
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from dataplane_helpers import (
    CONNECT_TIMEOUT,
    Database,
    assert_no_secret,
    assert_same_secret,
    document_for,
    provisioned,
    remember_secrets,
    secrets_of,
    slug_for,
)

from sotadb import credentials as creds
from sotadb import names
from sotadb.credentials import Credentials
from sotadb.docker.runtime import DockerRuntime
from sotadb.docker.state import DatabaseState

pytestmark = pytest.mark.dataplane


@pytest.fixture(scope="module")
def secrets_db(runtime: DockerRuntime) -> Iterator[Database]:
    with provisioned(runtime, slug_for("secrets")) as db:
        yield db


def exercise_logins(db: Database) -> None:
    """Everything an app and an attacker might do over TCP, good and bad."""
    for url in (db.url(), db.direct_url()):
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT) as connection:
            connection.execute("SELECT 1")
            with pytest.raises(psycopg.errors.UndefinedTable):
                connection.execute("SELECT * FROM no_such_table")
    wrong = creds.generate_password()
    for user, password, direct in [
        (db.role, wrong, False),
        (db.role, wrong, True),
        ("postgres", db.credentials.password, False),
        ("postgres", db.credentials.password, True),
    ]:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(
                db.url_as(user, password, direct=direct), connect_timeout=CONNECT_TIMEOUT
            ).close()


def all_logs(db: Database) -> dict[str, str]:
    return {
        c.name: c.logs(stdout=True, stderr=True).decode(errors="replace")
        for c in (db.postgres, db.pooler)
    }


def test_logs_hold_no_secret_after_logins_errors_and_a_restart(secrets_db: Database) -> None:
    exercise_logins(secrets_db)
    secrets_db.postgres.restart(timeout=60)  # bootstrap runs again and finds the role intact
    secrets_db.runtime.wait_until_ready(secrets_db.slug, secrets_db.credentials, timeout=60)
    exercise_logins(secrets_db)
    logs = all_logs(secrets_db)
    # The events really were logged (the check is not vacuous) ...
    assert "password authentication failed" in logs[names.postgres_name(secrets_db.slug)]
    assert "pg_hba.conf rejects connection" in logs[names.postgres_name(secrets_db.slug)]
    assert "no_such_table" in logs[names.postgres_name(secrets_db.slug)]
    assert "bootstrap done" in logs[names.postgres_name(secrets_db.slug)]
    assert "SASL authentication failed" in logs[names.pooler_name(secrets_db.slug)]
    # ... and no secret is in them.
    for name, text in logs.items():
        assert_no_secret(text, f"docker logs {name}", secrets_of(secrets_db.credentials))


def test_resalted_verifier_reaches_both_and_leaks_nowhere(
    secrets_db: Database, runtime: DockerRuntime
) -> None:
    """Same password, new salt: bootstrap's ALTER ROLE path, and a new PgBouncer userlist.
    Logins through PgBouncer work only if both hold the very same new verifier."""
    slug = secrets_db.slug
    old = secrets_db.credentials
    state = runtime.store.load(slug)
    assert state is not None
    resalted = Credentials(old.password, creds.scram_verifier(old.password))
    remember_secrets(resalted)
    runtime.store.save(DatabaseState(slug, state.document, resalted, dict(state.host_ports)))

    again = runtime.up(document_for(slug))

    assert set(again.changed) == {names.postgres_name(slug), names.pooler_name(slug)}
    assert_same_secret(again.credentials.verifier, resalted.verifier, "verifier kept by up")
    stored = secrets_db.superuser_sql(
        "SELECT rolpassword FROM pg_authid WHERE rolname = :'role'", role=secrets_db.role
    )
    assert_same_secret(stored, resalted.verifier, "pg_authid after the ALTER ROLE path")
    assert_same_secret(
        secrets_db.userlist_txt(), f'"{secrets_db.role}" "{resalted.verifier}"\n', "userlist"
    )
    exercise_logins(secrets_db)
    logs = all_logs(secrets_db)
    assert "updated login and password of role" in logs[names.postgres_name(slug)]
    for name, text in logs.items():
        for credentials in (old, resalted):
            assert_no_secret(text, f"docker logs {name}", secrets_of(credentials))
