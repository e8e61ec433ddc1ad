"""Checksum SQL and output (pure): the result lines parse, differences are named per table."""

from __future__ import annotations

import pytest

from sotadb.backup import checksums
from sotadb.backup.catalog import TableSummary


def test_output_lines_parse_into_tables_and_meta():
    lines = [
        '{"kind" : "meta", "databaseSize" : 8000, "serverVersion" : "17.12"}',
        '{"kind" : "table", "name" : "\\"app-data\\".\\"every-type\\"", "method" : "text",'
        ' "rows" : 3, "checksum" : "0bb7"}',
        "psql: a diagnostic line",
        "",
    ]
    observed = checksums.parse_output(lines)
    assert observed.tables == {'"app-data"."every-type"': TableSummary(3, "0bb7")}
    assert observed.database_size == 8000
    assert observed.server_version == "17.12"


def test_a_broken_result_line_is_an_error_not_a_silent_skip():
    with pytest.raises(checksums.ChecksumOutputInvalid):
        checksums.parse_output(['{"kind": "table", "name": "t"}'])
    with pytest.raises(checksums.ChecksumOutputInvalid):
        checksums.parse_output(['{"kind": "table", '])


def test_differences_name_each_table_and_why():
    expected = {
        "public.a": TableSummary(10, "x"),
        "public.b": TableSummary(5, "y"),
        "public.c": TableSummary(1, "z"),
    }
    actual = {
        "public.a": TableSummary(10, "x"),
        "public.b": TableSummary(5, "DIFFERENT"),
        "public.d": TableSummary(2, "w"),
    }
    assert checksums.differences(expected, actual) == [
        "public.b: checksum differs (5 rows each)",
        "public.c: in the backup's record but missing after restore",
        "public.d: restored but not in the backup's record",
    ]
    assert checksums.differences(expected, expected) == []


def test_differences_are_bounded():
    expected = {f"public.t{i}": TableSummary(i, "x") for i in range(20)}
    problems = checksums.differences(expected, {}, limit=3)
    assert len(problems) == 4
    assert problems[-1] == "... and 17 more tables"


def test_the_reading_session_pins_every_setting_that_changes_row_text():
    sql = checksums.VERIFY_PSQL
    assert sql.startswith("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;")
    for setting in (
        "TimeZone = 'UTC'",
        "DateStyle = 'ISO, YMD'",
        "IntervalStyle = 'postgres'",
        "bytea_output = 'hex'",
        "extra_float_digits = 3",
        "search_path = ''",
        "synchronize_seqscans = off",  # every table read from its first page: the dump's order
        "idle_in_transaction_session_timeout = 0",
    ):
        assert setting in sql
    # pg_dump pins the first four itself; the rest through PGOPTIONS, to the same values
    assert checksums.DUMP_OPTIONS == "-c TimeZone=UTC -c bytea_output=hex -c lc_monetary=C"


def test_verify_psql_is_one_read_only_transaction_through_copyhash():
    sql = checksums.VERIFY_PSQL
    assert sql.rstrip().endswith("COMMIT;")
    assert "pg_export_snapshot" not in sql
    assert '\\o | python3 -c "$SOTADB_COPYHASH" sum' in sql
    assert "\\gexec" in sql


def test_the_tables_read_back_are_the_dumped_ones_quoted_as_pg_dump_quotes():
    sql = checksums.COPY_STATEMENTS_SQL
    assert "format('%I.%I', n.nspname, c.relname)" in sql
    assert "quote_ident(a.attname)" in sql
    assert "a.attgenerated = ''" in sql
    assert "NOT IN ('pg_catalog', 'information_schema')" in sql
    assert "NOT EXISTS" in sql  # extension tables: not compared
    assert "deptype = 'e'" in sql
    assert "deptype = 'e'" in checksums.LISTED_SQL  # ...and left out of the record


def test_extension_tables_are_left_out_and_every_other_listed_table_is_accounted_for():
    tables: dict[str, TableSummary] = {}
    meta: dict[str, object] = {}
    for line in (
        '{"kind": "table", "name": "public.spatial_ref_sys", "rows": 1, "checksum": "a"}',
        '{"kind": "table", "name": "public.t", "rows": 2, "checksum": "b"}',
        '{"kind": "listed", "name": "public.spatial_ref_sys", "excluded": true}',
        '{"kind": "listed", "name": "public.t", "excluded": false}',
        '{"kind": "meta", "databaseSize": 1}',
    ):
        assert checksums.parse_line(line, tables, meta)
    assert checksums.observation(tables, meta).tables == {"public.t": TableSummary(2, "b")}
    assert checksums.unaccounted(tables, meta) == []
    checksums.parse_line('{"kind": "listed", "name": "public.u", "excluded": false}', tables, meta)
    assert checksums.unaccounted(tables, meta) == ["public.u"]
    with pytest.raises(checksums.ChecksumOutputInvalid):
        checksums.parse_line('{"kind": "listed", "name": "public.v"}', tables, meta)
