"""The bash scripts a backup runs next to PostgreSQL, and the scratch server's configuration. Pure.

Every script takes its inputs from the environment (libpq's PGHOST, PGDATABASE, PGUSER,
PGAPPNAME, and SOTADB_* values), never from text pasted into the script, so names with
hyphens or quotes cannot break out. The same scripts run through `docker exec` in the
database's container (PGHOST = the unix socket, PGUSER = postgres) and, later, in a
Kubernetes Job (PGHOST = the database's Service, the app role's password in PGPASSWORD).

Compression — measured on this 2-core host with `python -m bench.backup` (1.06 GB database:
half realistic rows, half pgbench), `pg_dump | X` inside the container, MB of database per s:

    gzip -6   60 MB/s  212 MB      pigz -6  108 MB/s  212 MB      zstd -1 -T0  268 MB/s  187 MB
    gzip -1  108 MB/s  227 MB      pigz -1  157 MB/s  227 MB      (raw pg_dump > /dev/null: 286)

and on the compressor alone (a 677 MB dump of the realistic rows): gzip -1 47 MB/s, pigz -1
91 MB/s, igzip -1 (ISA-L) 140 MB/s with a 9 % smaller file, zstd -1 171 MB/s.

So the gzip stream is written by `igzip -1` when the image has it (Debian package `isal`; the
whole backup then runs at 138 MB/s instead of 123), else by `pigz -1`: 2.6x gzip -6, and level
1 costs 7 % in size against level 6. Both are plain gzip that any gunzip reads.
`--compression zstd` writes `zstd -1 -T0` (`.sql.zst`). Decompression uses igzip, else pigz
(which checks the CRC and length as gunzip does).

The dump is `pg_dump | copyhash pass | compressor`: the per-table row counts and checksums are
taken from the rows as they stream past (`checksums`), so python3 must be where pg_dump runs
(the PostgreSQL image has python3-minimal; the operator image has python3). Drills, and
restores of backups no drill has passed, replay `decompressor | copyhash freeze-commit | psql`
with REPLAY_SQL's session settings, and read each table back as soon as it is loaded
(`restore_script`); a drilled backup's restore replays `decompressor | fanout` (several
sessions, `parallel_restore_script`).

Restore, measured with `python -m bench.backup --cpu` (1.06 GB, 2 shared cores): the replay
alone was 10.4 s and the read-back after it 3.7 s; loading with FREEZE (`copyhash.Freezer`: no
hint bits, each a WAL-logged page write with data checksums, when index builds and the
read-back first read the rows) and reading each table back while the next one loads brings
both to 12.2 s. What is left is one table's chain: its COPY (6 s for the 2.7 M realistic
rows), its read-back (3 s), its primary key (1 s, waiting for the read-back's lock). A drilled
backup skips the read-back and shares that table among sessions (`fanout`): 8.6 s, its data
about 6 s on both cores and its index builds 1.3 s, for 13.1 CPU-s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from sotadb import names
from sotadb.backup import checksums, copyhash, fanout
from sotadb.backup.catalog import Compression

DUMP_MARKER: Final = "sotadb-backup-dump"  # argv[0] of the dump script: how a leftover is known
PIDFILE: Final = "/tmp/sotadb-backup.pid"  # noqa: S108 (inside the container: its own tmpfs)
APPLICATION_NAME: Final = "sotadb-backup"
LOCK_WAIT: Final = "10min"
CHECKSUMS_DONE: Final = "sotadb-checksums-done"
CONNECT_TIMEOUT: Final = "30"
PID_PREFIX: Final = "sotadb-pid "
_VARIABLE_RE: Final = re.compile(r"^[a-z_]+$")
COMPRESSOR_PREFIX: Final = "sotadb-compressor "


@dataclass(frozen=True)
class Script:
    """A bash script and the environment it reads; `argv` runs it (`bash -c text marker`)."""

    text: str
    env: Mapping[str, str] = field(default_factory=dict)
    marker: str = "sotadb-backup"

    @property
    def argv(self) -> list[str]:
        return ["bash", "-c", self.text, self.marker]


_COMPRESSORS: Final = r"""
compressor() {
    case $SOTADB_COMPRESSION in
        gzip) if command -v igzip >/dev/null 2>&1
              then echo "igzip -1 -c"; else echo "pigz -1 -c"; fi ;;
        zstd) echo "zstd -1 -T0 -q -c" ;;
        *) echo "sotadb: unknown compression '$SOTADB_COMPRESSION'" >&2; exit 2 ;;
    esac
}
decompressor() {
    case $SOTADB_COMPRESSION in
        gzip) if command -v igzip >/dev/null 2>&1
              then echo "igzip -dc"; else echo "pigz -dc"; fi ;;
        zstd) echo "zstd -dc -q" ;;
        *) echo "sotadb: unknown compression '$SOTADB_COMPRESSION'" >&2; exit 2 ;;
    esac
}
"""

_DUMP: Final = (
    r"""set -euo pipefail
umask 077
"""
    + _COMPRESSORS
    + r"""
# A dump whose runner was killed blocks forever on its full stdout pipe, holding its snapshot
# and AccessShare locks on every table: end that process group first. It is known by its pid
# file and by its last argument, so a recycled pid is never hit.
if [ -s "$SOTADB_PIDFILE" ]; then
    old=$(cat "$SOTADB_PIDFILE")
    last_argument=$(tr '\0' '\n' < "/proc/$old/cmdline" 2>/dev/null | tail -n 1 || true)
    if [[ $old =~ ^[0-9]+$ ]] && [ "$old" != "$$" ] && [ "$last_argument" = "$SOTADB_MARKER" ]; then
        kill -KILL -- "-$old" 2>/dev/null || true
        echo "sotadb: ended a dump (pid $old) left behind by a runner that was killed" >&2
    fi
fi
echo "$$" > "$SOTADB_PIDFILE"
cleanup() {
    status=$?
    if [ "$(cat "$SOTADB_PIDFILE" 2>/dev/null)" = "$$" ]; then rm -f "$SOTADB_PIDFILE"; fi
    if [ "$status" != 0 ]; then  # end pg_dump, the compressor and psql with us
        trap '' TERM
        kill -TERM -- "-$$" 2>/dev/null || true
    fi
}
trap cleanup EXIT
if ! command -v python3 >/dev/null 2>&1; then
    echo "sotadb: python3 is missing here: it checksums the dump (rebuild the image)" >&2
    exit 1
fi
compress=$(compressor)
echo "sotadb-compressor ${compress% -c}" >&2

# One session holds the snapshot the dump reads, and reports the database's size and version.
coproc SQL { exec psql -X -q -A -t -v ON_ERROR_STOP=1 2>&1; }
exec {to_sql}>&"${SQL[1]}" {from_sql}<&"${SQL[0]}"
eval "exec ${SQL[1]}>&- ${SQL[0]}<&-"
sql_pid=$SQL_PID
printf '%s\n' "$SOTADB_BEGIN_SQL" "$SOTADB_EXPORT_SQL" >&"$to_sql"
snapshot=
IFS= read -r snapshot <&"$from_sql" || true
if [[ ! $snapshot =~ ^[0-9A-F]+-[0-9A-F]+-[0-9]+$ ]]; then
    exec {to_sql}>&-
    { printf '%s\n' "$snapshot"; cat <&"$from_sql"; } | grep -v '^$' >&2 || true
    echo "sotadb: could not open a snapshot of database \"$PGDATABASE\"" >&2
    exit 1
fi

# The rows are checksummed as they stream past (copyhash: its results go to stderr at the end).
( exec {to_sql}>&- {from_sql}<&-
  PGOPTIONS="$SOTADB_DUMP_OPTIONS" pg_dump --snapshot="$snapshot" --format=plain \
      --no-owner --no-privileges --no-password --lock-wait-timeout="$SOTADB_LOCK_WAIT" \
      | python3 -c "$SOTADB_COPYHASH" pass | $compress ) &
dump=$!

printf '%s\n' "$SOTADB_META_SQL" "$SOTADB_LISTED_SQL" "\\echo $SOTADB_DONE" >&"$to_sql"
finished=0
while IFS= read -r line <&"$from_sql"; do
    if [ "$line" = "$SOTADB_DONE" ]; then finished=1; break; fi
    printf '%s\n' "$line" >&2
done
if [ "$finished" != 1 ]; then
    echo "sotadb: the snapshot session's size and table list query failed" >&2
    exit 1
fi

status=0
wait "$dump" || status=$?
if [ "$status" != 0 ]; then
    echo "sotadb: pg_dump or the compressor failed (exit status $status)" >&2
    exit 1
fi
printf 'COMMIT;\n\\q\n' >&"$to_sql"
status=0
wait "$sql_pid" || status=$?
if [ "$status" != 0 ]; then
    echo "sotadb: the snapshot session ended with status $status" >&2
    exit 1
fi
"""
)

# The replay, and the read-back of what it loaded, overlap: copyhash `freeze-commit` loads each
# table in a transaction of its own (with FREEZE, see `copyhash.Freezer`) and has the replaying
# session print `sotadb-loaded HEX` once it is committed; a second session (the reader) then
# reads that table back through copyhash `sum` while the replay goes on with the next table and,
# at the end, the indexes. Tables no load reported are read back last. The reader's results
# (one JSON line per table) are this script's stdout.
_RESTORE: Final = (
    r"""set -euo pipefail
"""
    + _COMPRESSORS
    + r"""
if [[ ! $SOTADB_ROLE =~ ^[a-z0-9_-]+$ ]]; then
    echo "sotadb: '$SOTADB_ROLE' is not a role name sotadb makes" >&2
    exit 2
fi
decompress=$(decompressor)
cleanup() {
    status=$?
    if [ "$status" != 0 ]; then  # end the reader (and the replay) with us
        trap '' TERM
        kill -TERM -- "-$$" 2>/dev/null || true
    fi
}
trap cleanup EXIT
exec {to_reader}> >(exec psql -X -q -A -t -v ON_ERROR_STOP=1)
reader=$!
printf '%s\n' "$SOTADB_READER_START" >&"$to_reader"
# Objects are created by the app role (the dump has no owners): the target's own role owns them.
{ printf '%s\nSET ROLE "%s";\n' "$SOTADB_REPLAY_SQL" "$SOTADB_ROLE"
  $decompress | python3 -c "$SOTADB_COPYHASH" freeze-commit; } \
    | psql -X -q -A -t -v ON_ERROR_STOP=1 \
    | { loaded=()
        while IFS= read -r line; do
            if [[ $line =~ ^sotadb-loaded\ ([0-9a-f]+)$ ]]; then
                loaded+=("${BASH_REMATCH[1]}")
                printf '%s\n' "${SOTADB_READ_TABLE//SOTADB_TABLE_HEX/${BASH_REMATCH[1]}}" \
                    >&"$to_reader"
            fi
        done
        listed=$(IFS=,; printf '%s' "${loaded[*]}")
        printf '%s\n' "${SOTADB_READ_REST//SOTADB_TABLES_HEX/$listed}" '\o' >&"$to_reader"
      }
exec {to_reader}>&-
wait "$reader"
"""
)

# A backup whose restore drill passed is replayed by several sessions at once (`fanout`): the
# drill already compared this very file's restore with the checksums recorded at dump time, so
# only the row counts are read back (from the server's COPY results), not every row.
_PARALLEL_RESTORE: Final = (
    r"""set -euo pipefail
"""
    + _COMPRESSORS
    + r"""
decompress=$(decompressor)
$decompress | python3 -c "$SOTADB_FANOUT" $SOTADB_SESSIONS
"""
)

# The replaying session's own settings. Index builds (after the data, as pg_dump orders them)
# sort in memory: maintenance_work_mem as large as shared_buffers (a quarter of the server's
# memory; the server's own default is a sixteenth). Commits do not wait for their WAL flush:
# the swap's own commit afterwards flushes everything before it (WAL is flushed in order).
REPLAY_SQL: Final = """SET synchronous_commit = off;
SELECT pg_catalog.set_config('maintenance_work_mem',
                             pg_catalog.current_setting('shared_buffers'), false);"""

_PSQL: Final = r"""set -euo pipefail
printf '%s\n' "$SOTADB_SQL" | psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"
"""


def dump_script(*, compression: Compression, database: str) -> Script:
    """Writes the compressed plain dump to stdout; on stderr: `sotadb-compressor CMD`, one JSON
    line per checksum result, and diagnostics. Exits non-zero on any failure."""
    return Script(
        text=_DUMP,
        env={
            "PGDATABASE": database,
            "PGAPPNAME": APPLICATION_NAME,
            "SOTADB_COMPRESSION": compression.value,
            "SOTADB_PIDFILE": PIDFILE,
            "SOTADB_MARKER": DUMP_MARKER,
            "SOTADB_LOCK_WAIT": LOCK_WAIT,
            "SOTADB_BEGIN_SQL": checksums.BEGIN_SNAPSHOT_SQL,
            "SOTADB_EXPORT_SQL": checksums.EXPORT_SNAPSHOT_SQL,
            "SOTADB_META_SQL": checksums.META_SQL,
            "SOTADB_LISTED_SQL": checksums.LISTED_SQL,
            "SOTADB_DUMP_OPTIONS": checksums.DUMP_OPTIONS,
            "SOTADB_COPYHASH": copyhash.source(),
            "SOTADB_DONE": CHECKSUMS_DONE,
            "PGCONNECT_TIMEOUT": CONNECT_TIMEOUT,
        },
        marker=DUMP_MARKER,
    )


def restore_script(
    *,
    compression: Compression,
    database: str,
    role: str,
    settings: Mapping[str, str] | None = None,
) -> Script:
    """Reads the compressed dump on stdin and replays it into `database` as `role`, with
    `settings` for that session only (e.g. a larger maintenance_work_mem for index builds);
    prints the checksum results (JSON lines) of every table it restored, read back as soon as
    each was loaded. For a database nobody else writes to."""
    return Script(
        text=_RESTORE,
        env={
            **_replay_env(compression, database, role, settings),
            "SOTADB_REPLAY_SQL": REPLAY_SQL,
            "SOTADB_READER_START": checksums.reader_start_psql(),
            "SOTADB_READ_TABLE": checksums.read_table_psql(),
            "SOTADB_READ_REST": checksums.read_rest_psql(),
        },
    )


def parallel_restore_script(
    *,
    compression: Compression,
    database: str,
    role: str,
    sessions: int | None = None,
    settings: Mapping[str, str] | None = None,
) -> Script:
    """Reads the compressed dump on stdin and replays it into `database` as `role` through
    `sessions` psql sessions (default: one per core there, at least 2), with `settings` for
    each; prints the rows each table's COPYs loaded (JSON lines, `fanout`). For a database
    nobody else uses."""
    return Script(
        text=_PARALLEL_RESTORE,
        env={
            **_replay_env(compression, database, role, settings),
            "SOTADB_SESSIONS": str(sessions) if sessions else "",
            "SOTADB_FANOUT": fanout.source(),
        },
    )


def _replay_env(
    compression: Compression, database: str, role: str, settings: Mapping[str, str] | None
) -> dict[str, str]:
    """What both replays read: where to connect, as whom, with which settings, and copyhash."""
    options = " ".join(f"-c {key}={value}" for key, value in sorted((settings or {}).items()))
    return {
        "PGOPTIONS": options,
        "PGDATABASE": database,
        "PGAPPNAME": APPLICATION_NAME,
        "SOTADB_COMPRESSION": compression.value,
        "SOTADB_ROLE": role,
        "SOTADB_COPYHASH": copyhash.source(),
    }


def verify_script(*, database: str) -> Script:
    """Prints the checksum results (JSON lines) of `database`, read in one snapshot (for a
    database nobody else writes to)."""
    env = {
        "PGDATABASE": database,
        "PGAPPNAME": APPLICATION_NAME,
        "SOTADB_COPYHASH": copyhash.source(),
        "SOTADB_SQL": checksums.VERIFY_PSQL,
    }
    return Script(text=_PSQL, env=env)


def psql_script(sql: str, *, database: str, variables: Mapping[str, str] | None = None) -> Script:
    """Runs `sql` with psql; `variables` become psql variables (`:"name"`, `:'name'`). Their
    values travel in the environment and reach psql as one argument each, never as SQL text."""
    env = {"PGDATABASE": database, "PGAPPNAME": APPLICATION_NAME, "SOTADB_SQL": sql}
    arguments = []
    for key, value in sorted((variables or {}).items()):
        if not _VARIABLE_RE.match(key):
            raise ValueError(f"psql variable name {key!r} is not a plain identifier")
        env[f"SOTADB_VAR_{key}"] = value
        arguments.append(f'"--set={key}=$SOTADB_VAR_{key}"')
    return Script(text=_PSQL.replace('"$@"', " ".join(arguments)), env=env)


# ---------------------------------------------------------------- live restore: temp + swap

PREPARE_SQL: Final = """DROP DATABASE IF EXISTS :"tmp" WITH (FORCE);
DROP DATABASE IF EXISTS :"old" WITH (FORCE);
CREATE DATABASE :"tmp" OWNER :"role" TEMPLATE template0 ENCODING 'UTF8';
REVOKE ALL ON DATABASE :"tmp" FROM PUBLIC;"""

DROP_SQL: Final = """DROP DATABASE IF EXISTS :"tmp" WITH (FORCE);"""

# The live database is closed as the restore starts: its sessions end and no new one starts,
# through PgBouncer (which stays up and passes the server's error on) or directly, so nothing is
# written to it that the swap would then throw away. REOPEN_SQL opens it again if the restore
# stops before the swap.
CLOSE_SQL: Final = """SELECT pg_catalog.set_config('sotadb.database', :'db', false) \\g /dev/null
ALTER DATABASE :"db" WITH ALLOW_CONNECTIONS false;
DO $$
BEGIN
    FOR attempt IN 1..100 LOOP
        PERFORM pg_catalog.pg_stat_clear_snapshot();
        PERFORM pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
         WHERE datname = current_setting('sotadb.database') AND pid <> pg_catalog.pg_backend_pid();
        PERFORM pg_catalog.pg_stat_clear_snapshot();
        EXIT WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_stat_activity
         WHERE datname = current_setting('sotadb.database') AND pid <> pg_catalog.pg_backend_pid());
        PERFORM pg_catalog.pg_sleep(0.1);
    END LOOP;
END $$;"""

REOPEN_SQL: Final = """ALTER DATABASE :"db" WITH ALLOW_CONNECTIONS true;"""

# Two renames put the restored database in the closed one's place (which is then dropped:
# DROP_PREVIOUS_SQL); the restored one takes connections, as a new database does.
SWAP_SQL: Final = """ALTER DATABASE :"db" RENAME TO :"old";
ALTER DATABASE :"tmp" RENAME TO :"db";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"role";"""

# The live database's previous self, renamed away by the swap: dropped while the pooler comes
# back (a 1 GB database takes about 0.5 s: a checkpoint, then its files). One a failed drop
# leaves behind goes with the next restore's PREPARE_SQL.
DROP_PREVIOUS_SQL: Final = """DROP DATABASE IF EXISTS :"old" WITH (FORCE);"""

# After a failed swap: whichever of the two the live name lost, it gets back, open again.
UNDO_SWAP_SQL: Final = """SELECT
       NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = :'db')
   AND EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = :'old') AS put_back \\gset
\\if :put_back
ALTER DATABASE :"old" RENAME TO :"db";
\\endif
ALTER DATABASE :"db" WITH ALLOW_CONNECTIONS true;"""


def restore_database_names(slug: str) -> dict[str, str]:
    """The live database and the two transient names of a restore (all within 63 bytes)."""
    db = names.database_name(slug)
    return {"db": db, "tmp": f"{db}__sotadb_restore", "old": f"{db}__sotadb_previous"}


# ---------------------------------------------------------------- the drill's scratch server

DRILL_CONFIG_DIR: Final = "/tmp/sotadb-drill"  # noqa: S108 (inside the scratch container)

# Throwaway data on tmpfs: nothing here needs to survive a crash, everything needs to be fast.
DRILL_PARAMETERS: Final[Mapping[str, str]] = {
    "listen_addresses": "127.0.0.1",
    "port": str(names.POSTGRES_PORT),
    "unix_socket_directories": names.POSTGRES_SOCKET_DIR,
    "hba_file": f"{DRILL_CONFIG_DIR}/pg_hba.conf",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "1h",
    "autovacuum": "off",
    "shared_buffers": "256MB",
    "maintenance_work_mem": "256MB",
    "max_locks_per_transaction": "1024",
    "timezone": "UTC",
    "logging_collector": "off",
    "log_min_messages": "warning",
}

DRILL_PG_HBA: Final = "local all postgres peer\n"

_DRILL_SERVER: Final = r"""set -eu
mkdir -p "$SOTADB_CONFIG_DIR"
printf '%s\n' "$SOTADB_DRILL_POSTGRESQL_CONF" > "$SOTADB_CONFIG_DIR/postgresql.conf"
printf '%s' "$SOTADB_DRILL_PG_HBA" > "$SOTADB_CONFIG_DIR/pg_hba.conf"
exec /usr/local/bin/sotadb-postgres
"""


def drill_postgresql_conf() -> str:
    return "\n".join(f"{key} = '{value}'" for key, value in sorted(DRILL_PARAMETERS.items()))


def drill_server_command() -> list[str]:
    """The scratch container's command: write the config, then the image's own entrypoint
    (which bootstraps the app role and database, as in production)."""
    return ["bash", "-c", _DRILL_SERVER]


def drill_server_env() -> dict[str, str]:
    return {
        "SOTADB_CONFIG_DIR": DRILL_CONFIG_DIR,
        "SOTADB_DRILL_POSTGRESQL_CONF": drill_postgresql_conf(),
        "SOTADB_DRILL_PG_HBA": DRILL_PG_HBA,
    }
