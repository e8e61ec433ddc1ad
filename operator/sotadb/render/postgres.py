"""postgresql.conf and pg_hba.conf for one database. Pure.

Parameters come in tiers, later winning: defaults sized from the spec's resources < the user's
`spec.postgresql.parameters` < forced values that wire the server into its container. The
parameters the user may not set are listed (with the reason) in `spec.FORBIDDEN_PARAMETERS`.
"""

from __future__ import annotations

from typing import Final

from sotadb import names
from sotadb.quantity import to_mebibytes
from sotadb.render.files import RenderedFiles
from sotadb.spec import ManagedDatabase

POSTGRESQL_CONF: Final = "postgresql.conf"
PG_HBA_CONF: Final = "pg_hba.conf"
# Connections beyond the pool: direct clients (migrations), backups, the superuser.
RESERVED_CONNECTIONS: Final = 20
MIN_MAX_CONNECTIONS: Final = 50


def max_connections(db: ManagedDatabase) -> int:
    return max(MIN_MAX_CONNECTIONS, db.spec.pool.default_pool_size + RESERVED_CONNECTIONS)


def default_parameters(db: ManagedDatabase) -> dict[str, str]:
    """Sensible values for a small per-app database, scaled by memory and storage."""
    memory_mb = to_mebibytes(db.spec.resources.memory)
    storage_mb = to_mebibytes(db.spec.storage.size)
    return {
        "effective_cache_size": f"{memory_mb * 3 // 4}MB",
        "maintenance_work_mem": f"{max(16, memory_mb // 16)}MB",
        "work_mem": f"{max(1, memory_mb // 128)}MB",
        # WAL must never fill a small volume: a quarter of it, at most 1 GB.
        "max_wal_size": f"{min(1024, max(64, storage_mb // 4))}MB",
        "min_wal_size": f"{min(80, max(32, storage_mb // 16))}MB",
        "checkpoint_completion_target": "0.9",
        # PostgreSQL's own default, 1/32 of shared_buffers (4 MB at 512Mi), fills during a bulk
        # load (a restore, a large COPY), and then each backend writes WAL out itself.
        "wal_buffers": f"{min(32, max(4, memory_mb // 16))}MB",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        "shared_preload_libraries": "pg_stat_statements",
        "idle_in_transaction_session_timeout": "10min",
        "log_min_duration_statement": "1s",
        "log_checkpoints": "on",
        "log_lock_waits": "on",
        "log_temp_files": "10MB",
        "log_line_prefix": "%m [%p] %q%u@%d ",
        "timezone": "UTC",
        "log_timezone": "UTC",
    }


def forced_parameters(db: ManagedDatabase) -> dict[str, str]:
    memory_mb = to_mebibytes(db.spec.resources.memory)
    return {
        "listen_addresses": "*",
        "port": str(names.POSTGRES_PORT),
        "unix_socket_directories": names.POSTGRES_SOCKET_DIR,
        "hba_file": f"{names.POSTGRES_CONFIG_DIR}/{PG_HBA_CONF}",
        "password_encryption": "scram-sha-256",
        "max_connections": str(max_connections(db)),
        "shared_buffers": f"{memory_mb // 4}MB",
        "ssl": "off",
        "logging_collector": "off",
        "log_destination": "stderr",
    }


def effective_parameters(db: ManagedDatabase) -> dict[str, str]:
    return {**default_parameters(db), **db.spec.postgresql.parameters, **forced_parameters(db)}


def postgresql_conf(db: ManagedDatabase) -> str:
    lines = [f"# Rendered by sotadb for {db.namespace}/{db.slug}. Do not edit: it is replaced."]
    parameters = effective_parameters(db)
    lines += [f"{key} = {_quote_value(parameters[key])}" for key in sorted(parameters)]
    return "\n".join(lines) + "\n"


def pg_hba_conf(db: ManagedDatabase) -> str:
    """SCRAM only, and the superuser only over the container's local socket (peer)."""
    role = _quote_hba_name(names.role_name(db.slug))
    database = _quote_hba_name(names.database_name(db.slug))
    rows = [
        ("local", "all", "postgres", "", "peer"),
        ("local", "all", "all", "", "reject"),
        ("host", "all", "postgres", "all", "reject"),
        ("host", database, role, "all", "scram-sha-256"),
        ("host", "all", "all", "all", "reject"),
    ]
    lines = [f"# Rendered by sotadb for {db.namespace}/{db.slug}. First match wins."]
    lines += ["  ".join(part for part in row if part) for row in rows]
    return "\n".join(lines) + "\n"


def postgres_files(db: ManagedDatabase) -> RenderedFiles:
    return RenderedFiles({POSTGRESQL_CONF: postgresql_conf(db), PG_HBA_CONF: pg_hba_conf(db)})


def _quote_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _quote_hba_name(name: str) -> str:
    # Slugs hold only [a-z0-9-]; quoting keeps hyphens and keywords ("all") literal.
    return '"' + name + '"'
