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


def test_the_snapshot_session_pins_every_setting_that_changes_row_text():
    sql = checksums.BEGIN_SNAPSHOT_SQL
    assert sql.startswith("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;")
    for setting in (
        "TimeZone = 'UTC'",
        "DateStyle = 'ISO, YMD'",
        "bytea_output = 'hex'",
        "extra_float_digits = 3",
        "idle_in_transaction_session_timeout = 0",
    ):
        assert setting in sql


def test_verify_sql_is_one_read_only_transaction():
    sql = checksums.VERIFY_SQL
    assert sql.startswith("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;")
    assert sql.rstrip().endswith("COMMIT;")
    assert "pg_export_snapshot" not in sql


def test_tables_sql_quotes_identifiers_and_skips_system_schemas():
    sql = checksums.TABLES_SQL
    assert "format('%I.%I', n.nspname, c.relname)" in sql
    assert "FROM ONLY %I.%I" in sql
    assert "NOT IN ('pg_catalog', 'information_schema')" in sql
    assert "deptype = 'e'" in sql  # extension-owned tables are not dumped, nor checksummed
