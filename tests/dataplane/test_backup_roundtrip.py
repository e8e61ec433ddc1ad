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
from backup_fixtures import Cli, backups_for, contents, direct_sql, fill, observe
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
    """The backup is drilled (by default): its restores run in parallel sessions, which load a
    table's rows in another physical order. The rows are compared sorted (`contents`); the
    order-sensitive checksums of a one-session restore are the drill's and the FREEZE test's."""
    before = observe(filled_db)
    held = contents(filled_db)
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
    assert contents(filled_db) == held  # "stray" is gone too: the database is the backup

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
        assert contents(clone_db) == held
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


PARTITIONS_SQL = """
CREATE TABLE by_day (d date, v int) PARTITION BY RANGE (d);
CREATE TABLE by_day_old PARTITION OF by_day FOR VALUES FROM ('2000-01-01') TO ('2026-01-01');
CREATE TABLE by_day_new PARTITION OF by_day FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO by_day SELECT date '2025-06-01' + g % 400, g FROM generate_series(1, 5000) g;
CREATE TABLE parent (id int PRIMARY KEY, note text);
CREATE TABLE child (extra int) INHERITS (parent);
INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 2000) g;
INSERT INTO child SELECT g, 'c' || g, g FROM generate_series(2001, 4000) g;
"""

# Per table: its pages, and those marked all-frozen (pg_visibility, created and dropped around
# the query). COPY FREEZE marks every page it starts empty; a page a batch of rows only
# finished is not marked (its rows are frozen all the same). A COPY without FREEZE marks none.
FROZEN_SQL = """CREATE EXTENSION pg_visibility;
SELECT c.relname || ' ' || pg_relation_size(c.oid) / 8192 || ' ' || s.all_frozen
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
       LATERAL pg_visibility_map_summary(c.oid) s
 WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1;
DROP EXTENSION pg_visibility;"""


def test_partitions_and_inherited_tables_come_back_frozen(runtime: DockerRuntime, cli: Cli):
    """A backup no drill has passed is restored by one session that empties each table
    (TRUNCATE ONLY: an inheritance parent's does not touch its child's rows) and loads it with
    FREEZE in a transaction of its own: its pages come back all-frozen, partitions and
    inheritance children included. (A drilled backup's parallel restore is
    test_backup_fanout's.)"""
    with provisioned(runtime, slug_for("bk-part")) as db:
        direct_sql(db, PARTITIONS_SQL)
        before = observe(db)
        assert before["public.by_day_old"].rows + before["public.by_day_new"].rows == 5000
        assert before["public.child"].rows == before["public.parent"].rows == 2000

        code, out, err = cli("backup", "create", db.slug, "--no-drill", "-o", "json")
        assert code == 0, err
        record = json.loads(out)
        assert record.get("verification") is None
        direct_sql(db, "DROP TABLE by_day, child, parent;")
        code, _, err = cli("backup", "restore", db.slug, record["name"])
        assert code == 0, err
        assert observe(db) == before

        pages = {
            table: (int(total), int(frozen))
            for table, total, frozen in (
                line.split() for line in db.superuser_sql(FROZEN_SQL, database=db.slug).split("\n")
            )
        }
        assert sorted(pages) == ["by_day_new", "by_day_old", "child", "parent"]
        assert all(total / 2 <= frozen <= total for total, frozen in pages.values()), pages
