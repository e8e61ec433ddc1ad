"""Backup → drop → restore in place, and restore as a clone: the data comes back exactly.

One database holds pgbench's tables (created by the app role through DIRECT_DATABASE_URL) and
a table of every common column type in the hyphenated schema "app-data". "Exactly" means the
row count and the sha256 of every table's rows as COPY text (`sotadb.backup.checksums`): the
values recorded from the dump's own stream equal those read back from the live database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from backup_fixtures import Cli, backups_for, direct_sql, fill, observe
from dataplane_helpers import CONNECT_TIMEOUT, Database, provisioned, remember_secrets, slug_for

from sotadb import names
from sotadb.backup.catalog import Phase, Verification
from sotadb.docker.runtime import DockerRuntime, minimal_document

pytestmark = pytest.mark.dataplane


@pytest.fixture(scope="module")
def filled_db(runtime: DockerRuntime) -> Iterator[Database]:
    with provisioned(runtime, slug_for("bk-rt")) as db:
        fill(db, pgbench_scale=2)
        yield db


@pytest.fixture(scope="module")
def cli(runtime: DockerRuntime) -> Cli:
    return Cli(runtime.store.home)


def test_round_trip_in_place_and_as_a_clone(filled_db: Database, runtime: DockerRuntime, cli: Cli):
    before = observe(filled_db)
    assert '"app-data"."every-type"' in before
    assert before["public.pgbench_accounts"].rows == 200_000

    code, out, err = cli("backup", "create", filled_db.slug, "-o", "json")
    assert code == 0, err
    record = json.loads(out)
    assert record["phase"] == Phase.SUCCEEDED
    assert record["verification"] == Verification.PASSED, record.get("message")
    assert record["file"].endswith(".sql.gz")
    assert {k: (v["rows"], v["checksum"]) for k, v in record["tables"].items()} == {
        k: (v.rows, v.checksum) for k, v in before.items()
    }

    # Lose the data, then get it back in place.
    direct_sql(
        filled_db,
        "DROP TABLE pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers;"
        ' DROP SCHEMA "app-data" CASCADE; CREATE TABLE stray (x int);',
    )
    assert "public.pgbench_accounts" not in observe(filled_db)
    code, out, err = cli("backup", "restore", filled_db.slug, record["name"])
    assert code == 0, err
    assert observe(filled_db) == before  # "stray" is gone too: the database is the backup

    # The app's own URL works again through PgBouncer, and the app role owns what came back.
    with psycopg.connect(filled_db.url(), connect_timeout=CONNECT_TIMEOUT) as connection:
        owners = connection.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('public', 'app-data')"
        ).fetchall()
        connection.execute("INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 1)")
    assert owners == [(filled_db.role,)]

    # A clone: its own containers, role and password; the same data.
    clone = slug_for("bk-clone")
    try:
        code, out, err = cli("backup", "restore", filled_db.slug, "latest", "--as", clone)
        assert code == 0, err
        result = runtime.up(minimal_document(clone))  # converged already: changes nothing
        remember_secrets(result.credentials)
        assert result.changed == ()
        clone_db = Database(runtime, result)
        assert observe(clone_db) == before
        with psycopg.connect(clone_db.url(), connect_timeout=CONNECT_TIMEOUT) as connection:
            owner = connection.execute(
                "SELECT tableowner FROM pg_tables WHERE tablename = 'every-type'"
            ).fetchone()
        assert owner == (names.role_name(clone),)
    finally:
        runtime.down(clone, purge=True)


def test_list_shows_size_age_checksum_and_verification(filled_db: Database, cli: Cli):
    backups = backups_for(filled_db.runtime)
    if not backups.store.records(filled_db.slug):
        assert cli("backup", "create", filled_db.slug, "--no-drill")[0] == 0
    code, out, _ = cli("backup", "list", filled_db.slug)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "PHASE", "SIZE", "AGE", "SHA256", "VERIFIED"]
    newest = backups.store.records(filled_db.slug)[-1]
    assert any(row.startswith(newest.name) and (newest.sha256 or "")[:12] in row for row in rows)
    code, out, _ = cli("backup", "list", filled_db.slug, "-o", "json")
    listed = json.loads(out)
    assert {r["name"] for r in listed} == {r.name for r in backups.store.records(filled_db.slug)}
    assert all("sha256" in r and "size" in r for r in listed if r["phase"] == "Succeeded")
