"""The parallel restore of a drilled backup (`sotadb.backup.fanout`), against a real server.

A database of the objects whose order a parallel replay could get wrong: foreign keys between
tables, unique and partial and expression indexes, a partitioned table with its key on every
partition, an inheritance child, a sequence, a view and a materialized view, a trigger, a
comment on an index, an empty table, quoted names, and one table large enough to be loaded in
several COPYs by several sessions. After a restore of its drilled backup the rows (row counts
and checksums read back) and the schema (every index, constraint and trigger, as the catalog
prints them) are the originals.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from backup_fixtures import Cli, backups_for, contents, direct_sql, observe, rewrite_dump
from dataplane_helpers import CONNECT_TIMEOUT, Database, provisioned, slug_for

from sotadb.backup.catalog import BackupRecord, Verification
from sotadb.backup.errors import RestoreRefused
from sotadb.backup.on_docker import DockerBackups
from sotadb.docker.runtime import DockerRuntime

pytestmark = pytest.mark.dataplane

SCHEMA_SQL = """
CREATE SCHEMA "app-data";
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, note text);
CREATE INDEX customers_lower_email ON customers (lower(email));
CREATE TABLE orders (id bigserial PRIMARY KEY, customer bigint NOT NULL REFERENCES customers,
                     amount numeric(12, 2), payload jsonb, created timestamptz);
CREATE INDEX orders_customer ON orders (customer) WHERE amount > 10;
COMMENT ON INDEX orders_customer IS 'partial: the large orders of a customer';
CREATE TABLE "app-data"."it's ""q"" x" (k text PRIMARY KEY, v int);
CREATE TABLE tags (name text PRIMARY KEY);
CREATE TABLE empty_one (x int PRIMARY KEY);
CREATE TABLE events (day date NOT NULL, n int, PRIMARY KEY (day, n)) PARTITION BY RANGE (day);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE base (id int PRIMARY KEY, label text);
CREATE TABLE derived (extra int) INHERITS (base);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 9000;
CREATE MATERIALIZED VIEW per_customer AS SELECT customer, count(*) AS n FROM orders GROUP BY 1;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.note := coalesce(NEW.note, 'touched'); RETURN NEW; END $$;
CREATE TRIGGER customers_touch BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION touch();

INSERT INTO customers SELECT g, 'c' || g || '@example.test' FROM generate_series(1, 2000) g;
INSERT INTO orders (customer, amount, payload, created)
SELECT 1 + g % 2000, (g % 10000) / 1.0, jsonb_build_object('sku', 'SKU-' || g % 97, 'qty', g % 7),
       timestamptz '2026-01-01' + g * interval '1 minute'
  FROM generate_series(1, 120000) g;
INSERT INTO "app-data"."it's ""q"" x" VALUES ('a''b', 1), (E'tab\\there', 2);
INSERT INTO tags VALUES ('alpha-tag'), ('beta-tag');
INSERT INTO events SELECT date '2025-06-01' + g % 400, g FROM generate_series(1, 3000) g;
INSERT INTO base SELECT g, 'b' || g FROM generate_series(1, 500) g;
INSERT INTO derived SELECT g, 'd' || g, g FROM generate_series(501, 900) g;
REFRESH MATERIALIZED VIEW per_customer;
"""

# The schema as the catalog prints it: what a replay in the wrong order would lose or change.
CATALOG_SQL = """
SELECT 'index ' || schemaname || '.' || indexname || ': ' || indexdef FROM pg_indexes
 WHERE schemaname IN ('public', 'app-data')
UNION ALL
SELECT 'constraint ' || conrelid::regclass || '.' || conname || ': ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace IN ('public'::regnamespace, '"app-data"'::regnamespace)
UNION ALL
SELECT 'trigger ' || tgname || ': ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'comment ' || c.relname || ': ' || d.description
  FROM pg_description d JOIN pg_class c ON c.oid = d.objoid WHERE c.relname = 'orders_customer'
UNION ALL
SELECT 'matview rows: ' || count(*) FROM per_customer
UNION ALL
SELECT 'sequence: ' || last_value FROM orders_id_seq
ORDER BY 1
"""


@pytest.fixture(scope="module")
def db(runtime: DockerRuntime) -> Iterator[Database]:
    with provisioned(runtime, slug_for("bk-fan")) as database:
        direct_sql(database, SCHEMA_SQL, timeout=180)
        yield database


@pytest.fixture(scope="module")
def backups(runtime: DockerRuntime) -> DockerBackups:
    return backups_for(runtime)


@pytest.fixture(scope="module")
def drilled(db: Database, backups: DockerBackups) -> BackupRecord:
    record = backups.create(db.slug)
    assert record.verification is Verification.PASSED, record.message
    return record


def catalog(db: Database) -> list[str]:
    return db.superuser_sql(CATALOG_SQL, database=db.slug).splitlines()


def test_a_drilled_backup_comes_back_exactly_through_parallel_sessions(
    db: Database, drilled: BackupRecord, runtime: DockerRuntime
):
    rows, schema = contents(db), catalog(db)
    assert rows["public.orders"][0] == 120_000  # about 9 MB of rows: several COPYs
    assert len([line for line in schema if line.startswith("index ")]) >= 12

    direct_sql(db, "DROP TABLE orders, customers, tags, events, base CASCADE;")
    direct_sql(db, 'DROP SCHEMA "app-data" CASCADE;')
    messages: list[str] = []
    backups_for(runtime).restore(db.slug, drilled.name, progress=messages.append)

    assert contents(db) == rows  # (a table's rows come back in another physical order)
    assert catalog(db) == schema
    assert any("parallel sessions" in message for message in messages), messages
    proof = "row counts equal (this file's checksums were compared by its restore drill"
    assert any(proof in message for message in messages), messages
    # Sessions that loaded it are gone, and so is the side database.
    assert db.superuser_sql("SELECT count(*) FROM pg_database WHERE datname LIKE '%sotadb%'") == "0"


def test_the_live_database_takes_no_connection_while_it_is_restored(
    db: Database, drilled: BackupRecord, runtime: DockerRuntime
):
    """Not through PgBouncer (which stays up and says why) and not directly: nothing an app
    writes meanwhile can be lost to the swap. Afterwards both ways work again. (Tried from the
    restore's own progress report, as its replay starts: the live database is closed by then.)"""
    refused: dict[str, str] = {}

    def try_to_connect(message: str) -> None:
        if not message.startswith(f"restoring {drilled.name} into"):
            return
        for name, url in (("pooled", db.url()), ("direct", db.direct_url())):
            with (
                pytest.raises(psycopg.OperationalError) as caught,
                psycopg.connect(str(url), connect_timeout=CONNECT_TIMEOUT) as connection,
            ):  # through PgBouncer the login succeeds: it connects to the server for a query
                connection.execute("SELECT 1")
            refused[name] = str(caught.value)

    backups_for(runtime).restore(db.slug, drilled.name, progress=try_to_connect)
    assert set(refused) == {"pooled", "direct"}
    assert all("is not currently accepting connections" in e for e in refused.values()), refused
    for url in (db.url(), db.direct_url()):
        with psycopg.connect(str(url), connect_timeout=CONNECT_TIMEOUT) as connection:
            assert connection.execute("SELECT count(*) FROM tags").fetchone() == (2,)


def test_a_restore_whose_row_counts_differ_from_the_record_is_refused(
    db: Database, backups: DockerBackups, cli_home: Cli
):
    """A drilled backup whose record was altered afterwards: the server's COPY counts tell."""
    record = backups.create(db.slug)
    assert record.good, record.message
    path = backups.store.root / db.slug / f"{record.name}.json"
    raw = json.loads(path.read_text())
    raw["tables"]["public.tags"]["rows"] = 3
    path.write_text(json.dumps(raw))
    before = observe(db)
    try:
        code, _, err = cli_home("backup", "restore", db.slug, record.name)
        assert code == 1
        assert "public.tags: 2 rows restored, 3 recorded" in err
        assert f"{db.slug} was not changed" in err
    finally:
        backups.store.delete(backups.store.load(db.slug, record.name))
    assert observe(db) == before
    assert (
        db.superuser_sql("SELECT datallowconn FROM pg_database WHERE datname = :'db'", db=db.slug)
        == "t"
    )


def test_a_failing_index_build_in_a_parallel_session_refuses_the_restore(
    db: Database, backups: DockerBackups
):
    """A resealed dump whose rows break a primary key: the session building it stops, every
    session ends, and the live database is not touched."""
    record = backups.create(db.slug)
    assert record.good, record.message
    rewrite_dump(backups, record, b"alpha-tag\n", b"alpha-tag\nalpha-tag\n")
    before = observe(db)
    try:
        with pytest.raises(
            RestoreRefused, match='could not create unique index "tags_pkey"'
        ) as caught:
            backups.restore(db.slug, record.name)
        assert f"{db.slug} was not changed" in str(caught.value)
    finally:
        backups.store.delete(backups.store.load(db.slug, record.name))
    assert observe(db) == before
    assert db.superuser_sql("SELECT count(*) FROM pg_database WHERE datname LIKE '%sotadb%'") == "0"
    assert (
        db.superuser_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sotadb-backup'"
        )
        == "0"
    )


@pytest.fixture(scope="module")
def cli_home(runtime: DockerRuntime) -> Cli:
    return Cli(runtime.store.home)
