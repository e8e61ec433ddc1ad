"""Row counts and per-table checksums: recorded from the dump's own rows as they stream, and
taken again from a restored database. Pure: SQL and psql text, parsing, comparison.

Decisions:
- **What is checksummed**: each table's rows exactly as pg_dump writes them into the dump (its
  COPY text), by `copyhash` in the dump's pipe: `pg_dump | copyhash pass | compressor`. No
  second scan of the database: the checksums cost one sha256 pass over bytes that are read
  anyway (measured on the 1 GB benchmark database: 1.2 CPU-s, against 2.2 CPU-s and about 2 s
  of wall time for the earlier second session that hashed every row in SQL next to the dump).
- **Checksum**: `sha256:` + the sha256 of the table's rows, with the row count. A restored
  table is read back with `COPY ... TO STDOUT` (`verify_psql`) in the text settings pg_dump
  uses, framed like a dump, through the same `copyhash` (`sum`): equal means every row came
  back, byte for byte in its text form, in the order it was written (a table created and
  filled by one COPY, as in every restore here, is read back in that order with
  synchronize_seqscans off). Not a defence against crafted rows: the file's sha256 is the
  integrity check.
- **Text settings** (`DUMP_OPTIONS` for pg_dump, `SESSION_SETTINGS` for the reading session):
  UTC, ISO dates, `postgres` intervals, hex bytea, `extra_float_digits=3`, C monetary, empty
  search_path (regclass and the like print schema-qualified, as in pg_dump), the database's
  own encoding.
- **Which tables**: ordinary tables (relkind `r`, partitions included) in every schema but
  pg_catalog, information_schema, pg_toast* and temporary schemas, that no extension owns.
  pg_dump also writes the rows of extension configuration tables (an extension fills them
  itself on the restored side). The dump's snapshot session lists every table (`LISTED_SQL`):
  the runner leaves the extension-owned ones out of the record, and fails a dump whose
  checksums lack any other (`unaccounted`). Keys are
  `format('%I.%I', schema, table)`, quoted exactly as pg_dump quotes its COPY lines
  (`"app-data"."every-type"`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from sotadb.backup.catalog import TableSummary

# What pg_dump does not pin itself (it sets DateStyle, IntervalStyle, extra_float_digits,
# search_path, synchronize_seqscans and the encoding): pinned through libpq's PGOPTIONS.
DUMP_OPTIONS: Final = "-c TimeZone=UTC -c bytea_output=hex -c lc_monetary=C"

SESSION_SETTINGS: Final = (
    "SET LOCAL TimeZone = 'UTC';",
    "SET LOCAL DateStyle = 'ISO, YMD';",
    "SET LOCAL IntervalStyle = 'postgres';",
    "SET LOCAL extra_float_digits = 3;",
    "SET LOCAL bytea_output = 'hex';",
    "SET LOCAL lc_monetary = 'C';",
    "SET LOCAL xmloption = 'content';",
    "SET LOCAL search_path = '';",
    "SET LOCAL quote_all_identifiers = off;",
    "SET LOCAL synchronize_seqscans = off;",
    "SET LOCAL row_security = off;",
    "SET LOCAL statement_timeout = 0;",
    "SET LOCAL idle_in_transaction_session_timeout = 0;",
    "SELECT pg_catalog.set_config('client_encoding', pg_catalog.pg_encoding_to_char(encoding),"
    " true) FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()"
    " \\g /dev/null",
)

BEGIN_SNAPSHOT_SQL: Final = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;"

EXPORT_SNAPSHOT_SQL: Final = "SELECT pg_catalog.pg_export_snapshot();"

META_SQL: Final = """SELECT pg_catalog.json_build_object(
    'kind', 'meta',
    'databaseSize', pg_catalog.pg_database_size(pg_catalog.current_database()),
    'serverVersion', pg_catalog.current_setting('server_version')
)::text;"""

_USER_TABLES: Final = """FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp\\_%'"""

_EXTENSION_OWNED: Final = """EXISTS (
      SELECT FROM pg_catalog.pg_depend d
      WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')"""

# In the dump's snapshot, every table whose rows pg_dump writes: the record must have each one
# not `excluded` (extension-owned: pg_dump may write its rows, the record leaves them out).
LISTED_SQL: Final = f"""SELECT pg_catalog.json_build_object(
    'kind', 'listed', 'name', pg_catalog.format('%I.%I', n.nspname, c.relname),
    'excluded', {_EXTENSION_OWNED})::text
{_USER_TABLES};"""

# For each table, three statements for psql's \gexec: its COPY line as pg_dump writes it (with
# the comment pg_dump puts before it), its rows with pg_dump's column list (every column but
# generated ones, in order), and `\.`. CONDITION chooses the tables (`t.name`).
_COPY_STATEMENTS: Final = f"""SELECT pg_catalog.format('SELECT %L', pg_catalog.format(
           E'--\\n-- Data for Name: -; Type: TABLE DATA; Schema: -; Owner: -\\n--\\n\\n'
           'COPY %s %s FROM stdin;', t.name, t.columns)),
       pg_catalog.format('COPY %s %s TO STDOUT', t.name, t.columns),
       'SELECT ''\\.'''
FROM (
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS name,
           coalesce((SELECT '(' || pg_catalog.string_agg(pg_catalog.quote_ident(a.attname),
                                                         ', ' ORDER BY a.attnum) || ')'
                       FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                        AND a.attgenerated = ''), '') AS columns
    {_USER_TABLES}
      AND NOT {_EXTENSION_OWNED}
) t
WHERE CONDITION
ORDER BY t.name
\\gexec"""  # noqa: S608 (constants only)


def copy_statements_sql(condition: str = "true") -> str:
    """The \\gexec statements reading back the tables `condition` selects (all by default)."""
    return _COPY_STATEMENTS.replace("CONDITION", condition)


COPY_STATEMENTS_SQL: Final = copy_statements_sql()

# The command that checksums a verification stream: copyhash's source travels in the
# environment (`SOTADB_COPYHASH`), as the package is not installed where psql runs.
HASH_COMMAND: Final = 'python3 -c "$SOTADB_COPYHASH" sum'


# Query results printed as bare values (the COPY lines framing each table), whatever the
# session's output format was.
_RAW_OUTPUT: Final = ("\\pset format unaligned", "\\pset tuples_only on")


def verify_psql(hash_into: str = HASH_COMMAND) -> str:
    """psql input that sends the rows of every table, framed like a dump, to the shell command
    `hash_into` (copyhash `sum` by default), inside the current transaction."""
    return "\n".join(
        [*SESSION_SETTINGS, *_RAW_OUTPUT, f"\\o | {hash_into}", COPY_STATEMENTS_SQL, "\\o"]
    )


def verify_session_psql() -> str:
    """A whole session for a restored database: its own snapshot, the checksums on stdout."""
    return "\n".join([BEGIN_SNAPSHOT_SQL, verify_psql(), "COMMIT;"])


VERIFY_PSQL: Final = verify_session_psql()


# A table name given as the hex of its bytes (as copyhash's `freeze-commit` reports a loaded
# table): no quoting, whatever the name holds.
_FROM_HEX: Final = (
    "pg_catalog.convert_from(pg_catalog.decode({}, 'hex'), pg_catalog.getdatabaseencoding())"
)
TABLE_PLACEHOLDER: Final = "SOTADB_TABLE_HEX"
TABLES_PLACEHOLDER: Final = "SOTADB_TABLES_HEX"


def read_table_psql() -> str:
    """psql input reading back one table (its name's hex in place of TABLE_PLACEHOLDER) in a
    transaction of its own, into the `\\o` pipe `reader_start_psql` opened."""
    return _read_transaction("t.name = " + _FROM_HEX.format(f"'{TABLE_PLACEHOLDER}'"))


def read_rest_psql() -> str:
    """psql input reading back every table but those named (a comma-separated hex list in place
    of TABLES_PLACEHOLDER): what no load reported (e.g. partitions loaded through their root)."""
    names = f"pg_catalog.unnest(pg_catalog.string_to_array('{TABLES_PLACEHOLDER}', ',')) AS h"
    hexes = f"SELECT {_FROM_HEX.format('h')} FROM {names}"  # noqa: S608 (constants only)
    return _read_transaction(f"t.name NOT IN ({hexes})")


def _read_transaction(condition: str) -> str:
    statements = copy_statements_sql(condition)
    return "\n".join([BEGIN_SNAPSHOT_SQL, *SESSION_SETTINGS, statements, "COMMIT;"])


def reader_start_psql(hash_into: str = HASH_COMMAND) -> str:
    """The start of a reading session's input: its output, from here to `\\o`, goes through
    copyhash `sum` (whose results are printed when the pipe closes)."""
    return "\n".join([*_RAW_OUTPUT, f"\\o | {hash_into}"])


@dataclass(frozen=True)
class Observation:
    """What the checksum queries reported about one database."""

    tables: Mapping[str, TableSummary] = field(default_factory=dict)
    database_size: int | None = None
    server_version: str | None = None


class ChecksumOutputInvalid(ValueError):
    """A line that should be a checksum result is not (a bug, or a tampered tool)."""


def parse_line(line: str, into: dict[str, TableSummary], meta: dict[str, object]) -> bool:
    """Read one output line; True when it was a result line (else it is a diagnostic)."""
    if not line.startswith("{"):
        return False
    try:
        value = json.loads(line)
    except ValueError as e:
        raise ChecksumOutputInvalid(f"unreadable checksum line ({e})") from None
    kind = value.get("kind") if isinstance(value, dict) else None
    if kind == "table":
        name, rows, checksum = value.get("name"), value.get("rows"), value.get("checksum")
        if not isinstance(name, str) or not isinstance(rows, int) or not isinstance(checksum, str):
            raise ChecksumOutputInvalid("checksum line lacks name, rows or checksum")
        into[name] = TableSummary(rows=rows, checksum=checksum)
        return True
    if kind == "meta":
        meta.update(value)
        return True
    if kind == "listed":
        name, excluded = value.get("name"), value.get("excluded")
        if not isinstance(name, str) or not isinstance(excluded, bool):
            raise ChecksumOutputInvalid("table-list line lacks a name or excluded")
        names = meta.setdefault("excluded" if excluded else "expected", [])
        if isinstance(names, list):
            names.append(name)
        return True
    return False


def parse_output(lines: Iterable[str]) -> Observation:
    tables: dict[str, TableSummary] = {}
    meta: dict[str, object] = {}
    for line in lines:
        parse_line(line.strip(), tables, meta)
    return observation(tables, meta)


def observation(tables: Mapping[str, TableSummary], meta: Mapping[str, object]) -> Observation:
    """The record's view: extension-owned tables (listed as `excluded`) left out."""
    size = meta.get("databaseSize")
    version = meta.get("serverVersion")
    excluded = meta.get("excluded")
    skip = set(excluded) if isinstance(excluded, list) else set()
    return Observation(
        tables={name: summary for name, summary in tables.items() if name not in skip},
        database_size=size if isinstance(size, int) else None,
        server_version=version if isinstance(version, str) else None,
    )


def unaccounted(tables: Mapping[str, TableSummary], meta: Mapping[str, object]) -> list[str]:
    """The listed tables (not extension-owned) whose rows the dump's checksums lack."""
    expected = meta.get("expected")
    return sorted(set(expected) - set(tables)) if isinstance(expected, list) else []


def differences(
    expected: Mapping[str, TableSummary],
    actual: Mapping[str, TableSummary],
    *,
    rows_only: bool = False,
    limit: int = 5,
) -> list[str]:
    """What differs, one line per table (at most `limit`, then a count of the rest).
    `rows_only`: the tables and their row counts, not the checksums (for legacy records,
    whose checksums were computed differently)."""
    problems: list[str] = []
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name), actual.get(name)
        if want == got or (rows_only and want and got and want.rows == got.rows):
            continue
        if want is None:
            problems.append(f"{name}: restored but not in the backup's record")
        elif got is None:
            problems.append(f"{name}: in the backup's record but missing after restore")
        elif want.rows != got.rows:
            problems.append(f"{name}: {got.rows} rows restored, {want.rows} recorded")
        else:
            problems.append(f"{name}: checksum differs ({want.rows} rows each)")
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more tables"]
    return problems
