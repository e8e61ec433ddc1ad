"""An in-place restore as the app role, in one transaction. Pure: the script and its SQL.

On Kubernetes the runner has no superuser: it connects as the app role, which owns its
database. So instead of the Docker runtime's side database and rename, one psql session runs

    BEGIN; DROP OWNED BY CURRENT_USER;  <the dump>;  <the check>;  COMMIT;

The dump passes through copyhash `freeze` (`copyhash.Freezer`): each table is emptied and
loaded with FREEZE inside this transaction, so its rows are written frozen and all-visible and
the app's first reads after the restore set no hint bits (a WAL-logged page write each, with
data checksums). (FREEZE's one departure from MVCC: once committed, the rows are visible to
snapshots older than the commit too, so an app transaction begun before the restore ended sees
the restored rows.) The check compares every table's row count and checksum (sotadb.backup.
checksums' own query, in this transaction, with the same pinned settings) with the backup's
record and raises an error on any difference (row counts only for a record whose checksums
predate copyhash: `BackupRecord.legacy_checksums`). psql stops at the first error
(ON_ERROR_STOP), and a session that ends inside a transaction is rolled back; COMMIT is only
sent once the whole dump has been decompressed cleanly. So the app's data is either entirely
the backup's, or untouched.

`DROP OWNED` needs every table's lock: `lock_timeout` bounds the wait for an app's long
transaction, so the restore fails with a message instead of queueing every query behind it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Final

from sotadb.backup import checksums, copyhash
from sotadb.backup.catalog import Compression, TableSummary
from sotadb.backup.scripts import APPLICATION_NAME, CONNECT_TIMEOUT, Script

LOCK_TIMEOUT: Final = "2min"
MISMATCH: Final = "sotadb: the restored data differs from the backup's record"

_SCRIPT: Final = r"""set -euo pipefail
trap 'rm -f "$SOTADB_OBSERVED_FILE"' EXIT
case $SOTADB_COMPRESSION in
    gzip) if command -v igzip >/dev/null 2>&1
          then decompress="igzip -dc"; else decompress="pigz -dc"; fi ;;
    zstd) decompress="zstd -dc -q" ;;
    *) echo "sotadb: unknown compression '$SOTADB_COMPRESSION'" >&2; exit 2 ;;
esac
{
    printf '%s\n' "$SOTADB_BEGIN_SQL"
    $decompress | python3 -c "$SOTADB_COPYHASH" freeze
    printf '\n'
    cat "$SOTADB_CHECK_FILE"
    printf 'COMMIT;\n'
} | psql -X -q -v ON_ERROR_STOP=1 >/dev/null
"""

_BEGIN_SQL: Final = f"""BEGIN;
SET LOCAL lock_timeout = '{LOCK_TIMEOUT}';
SELECT pg_catalog.set_config('maintenance_work_mem',
                             pg_catalog.current_setting('shared_buffers'), true) \\g /dev/null
DROP OWNED BY CURRENT_USER;"""

_CHECK_SQL: Final = """DO $%(body)s$
DECLARE
    problems text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.format('%%s: %%s', d.name, d.problem), '; '
                                 ORDER BY d.name)
      INTO problems
      FROM (
        SELECT coalesce(e.name, o.name) AS name,
               CASE WHEN o.name IS NULL THEN 'in the backup''s record but missing after restore'
                    WHEN e.name IS NULL THEN 'restored but not in the backup''s record'
                    WHEN e.rows <> o.rows
                    THEN pg_catalog.format('%%s rows restored, %%s recorded', o.rows, e.rows)
                    ELSE pg_catalog.format('checksum differs (%%s rows each)', e.rows)
               END AS problem
          FROM (SELECT key AS name, (value ->> 'rows')::bigint AS rows,
                       value ->> 'checksum' AS checksum
                  FROM pg_catalog.jsonb_each($%(data)s$%(expected)s$%(data)s$::jsonb)) e
          FULL JOIN (SELECT l.j ->> 'name' AS name, (l.j ->> 'rows')::bigint AS rows,
                            l.j ->> 'checksum' AS checksum
                       FROM (SELECT t.line::jsonb AS j
                               FROM pg_catalog.string_to_table(
                                        pg_catalog.current_setting('sotadb.observed'),
                                        pg_catalog.chr(10)) AS t(line)
                              WHERE pg_catalog.left(t.line, 1) = '{') l) o
            ON o.name = e.name
         WHERE e.name IS NULL OR o.name IS NULL OR e.rows <> o.rows
            OR (%(checksums)s AND e.checksum <> o.checksum)
      ) d;
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION '%(mismatch)s: %%', problems;
    END IF;
END
$%(body)s$;"""


# The restored tables' checksums (copyhash, as for a drill) into a file, then into a setting
# of this transaction, where the check below reads them.
_HASH_INTO_FILE: Final = f'{checksums.HASH_COMMAND} > "$SOTADB_OBSERVED_FILE"'
_OBSERVED_SQL: Final = """\\set observed `cat "$SOTADB_OBSERVED_FILE"`
SELECT pg_catalog.set_config('sotadb.observed', :'observed', true) \\g /dev/null"""


def check_sql(expected: Mapping[str, TableSummary], *, rows_only: bool = False) -> str:
    """The settings the checksums pin, then a DO block that raises unless the database holds
    exactly `expected`'s tables, row counts and checksums (`rows_only`: not the checksums)."""
    data = json.dumps(
        {name: {"rows": t.rows, "checksum": t.checksum} for name, t in sorted(expected.items())},
        sort_keys=True,
    )
    # Dollar-quote tags derived from the data itself: no table name can contain them.
    tag = hashlib.sha256(data.encode()).hexdigest()[:16]
    block = _CHECK_SQL % {
        "body": f"sotadb_check_{tag}",
        "data": f"sotadb_data_{tag}",
        "expected": data,
        "mismatch": MISMATCH.replace("'", "''"),
        "checksums": "false" if rows_only else "true",
    }
    return "\n".join([checksums.verify_psql(_HASH_INTO_FILE), _OBSERVED_SQL, block])


def in_place_restore_script(*, compression: Compression, database: str, check_file: str) -> Script:
    """Reads the compressed dump on stdin; replaces everything the connecting role owns in
    `database` with it, or nothing (see the module docstring). `check_file` holds
    `check_sql(...)` of the backup's record (a file: thousands of tables outgrow an env var)."""
    return Script(
        text=_SCRIPT,
        env={
            "PGDATABASE": database,
            "PGAPPNAME": APPLICATION_NAME,
            "PGCONNECT_TIMEOUT": CONNECT_TIMEOUT,
            "SOTADB_COMPRESSION": compression.value,
            "SOTADB_BEGIN_SQL": _BEGIN_SQL,
            "SOTADB_CHECK_FILE": check_file,
            "SOTADB_OBSERVED_FILE": f"{check_file}.observed",
            "SOTADB_COPYHASH": copyhash.source(),
        },
    )
