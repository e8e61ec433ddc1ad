"""The app's view: the literal DATABASE_URL and DIRECT_DATABASE_URL, used unchanged by a
container on the database's network, with the environment the app Secret gives it.

These run `psql` in a throwaway container attached to `sota-net-{slug}`, the way an app
container is wired: the host names in the URLs are resolved by Docker's embedded DNS, not by
the tests' `app_url` rewrite (which this also cross-checks).
"""

from __future__ import annotations

import base64

import pytest
from dataplane_helpers import Database, assert_same_secret, run_in_network

from sotadb import names
from sotadb.render import render_objects

pytestmark = pytest.mark.dataplane

PSQL = "psql -X -q -tA -v ON_ERROR_STOP=1 -F '|'"


def app_secret_environment(db: Database) -> dict[str, str]:
    """The rendered app Secret's data: what an app receives through envFrom."""
    secret = next(
        o
        for o in render_objects(db.result.db, db.credentials)
        if o["kind"] == "Secret" and o["metadata"]["name"] == names.app_secret_name(db.slug)
    )
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def test_literal_database_url_works_on_the_network(shared_db: Database) -> None:
    environment = app_secret_environment(shared_db)
    assert_same_secret(
        environment["DATABASE_URL"], shared_db.database_url(), "app Secret's DATABASE_URL"
    )
    assert environment["PGHOST"] == names.pooler_name(shared_db.slug)
    script = f"""
        set -eu
        echo "dns|$(getent hosts "$PGHOST" | cut -d' ' -f1)"
        {PSQL} "$DATABASE_URL" -c "SELECT 'url', current_user, current_database(), system_user, host(inet_client_addr())"
        {PSQL} -c "SELECT 'libpq-env', current_user, current_database(), host(inet_client_addr())"
    """  # noqa: E501
    run = run_in_network(shared_db.client, shared_db.network, script, environment=environment)
    assert run.exit_code == 0, run.output
    pooler_ip = shared_db.ip(names.pooler_name(shared_db.slug))
    role, database = shared_db.role, shared_db.slug
    assert run.output.splitlines() == [
        # Docker's DNS gives the URL's host the address app_url() dials from this host.
        f"dns|{pooler_ip}",
        # PostgreSQL sees PgBouncer as the client: the URL goes through the pooler, by SCRAM.
        f"url|{role}|{database}|scram-sha-256:{role}|{pooler_ip}",
        f"libpq-env|{role}|{database}|{pooler_ip}",
    ]


def test_direct_database_url_works_on_the_network(shared_db: Database) -> None:
    environment = app_secret_environment(shared_db)
    assert_same_secret(
        environment["DIRECT_DATABASE_URL"],
        shared_db.direct_database_url(),
        "app Secret's DIRECT_DATABASE_URL",
    )
    # Session features PgBouncer's transaction mode cannot carry work here (migrations).
    script = f"""
        set -eu
        echo "me|$(hostname -i)"
        {PSQL} "$DIRECT_DATABASE_URL" -c "SELECT 'direct', current_user, host(inet_client_addr()), pg_try_advisory_lock(42)"
    """  # noqa: E501
    run = run_in_network(shared_db.client, shared_db.network, script, environment=environment)
    assert run.exit_code == 0, run.output
    me, direct = run.output.splitlines()
    client_ip = me.removeprefix("me|").strip()
    assert direct == f"direct|{shared_db.role}|{client_ip}|t"
    assert client_ip != shared_db.ip(names.pooler_name(shared_db.slug))
