"""pgbouncer.ini and userlist.txt. Pure.

userlist.txt holds the SCRAM verifier PostgreSQL stores, never a plaintext password: PgBouncer
verifies the client with it and, because salt and iterations are identical, passes the proof
through to PostgreSQL (SCRAM passthrough).
"""

from __future__ import annotations

from typing import Final

from sotadb import names
from sotadb.credentials import Credentials
from sotadb.render.files import RenderedFiles
from sotadb.spec import ManagedDatabase

PGBOUNCER_INI: Final = "pgbouncer.ini"
USERLIST_TXT: Final = "userlist.txt"
# Server-side prepared statements tracked per connection, so ORMs' prepared statements work in
# transaction mode without `pgbouncer=true`.
MAX_PREPARED_STATEMENTS: Final = 200
# Startup parameters some drivers send that PgBouncer would otherwise refuse
# (JDBC sends extra_float_digits).
IGNORED_STARTUP_PARAMETERS: Final = ("extra_float_digits",)


def pgbouncer_ini(db: ManagedDatabase) -> str:
    pool = db.spec.pool
    database = names.database_name(db.slug)
    settings: list[tuple[str, str]] = [
        ("listen_addr", "0.0.0.0"),  # noqa: S104 - inside its pod; NetworkPolicy guards it
        ("listen_port", str(names.POOLER_PORT)),
        ("unix_socket_dir", ""),
        ("auth_type", "scram-sha-256"),
        ("auth_file", f"{names.POOLER_AUTH_DIR}/{USERLIST_TXT}"),
        ("pool_mode", pool.mode.value),
        ("default_pool_size", str(pool.default_pool_size)),
        ("max_client_conn", str(pool.max_client_connections)),
        # The pool is the whole budget of server connections for this database.
        ("max_db_connections", str(pool.default_pool_size)),
        ("max_prepared_statements", str(MAX_PREPARED_STATEMENTS)),
        ("ignore_startup_parameters", ",".join(IGNORED_STARTUP_PARAMETERS)),
        ("server_tls_sslmode", "disable"),
        ("client_tls_sslmode", "disable"),
        # After a failed server login (PostgreSQL still starting) retry after 0.2 s, not 15 s:
        # it is most of the wait between PostgreSQL's "ready" and the first pooled query.
        ("server_login_retry", "0.2"),
        ("server_lifetime", "3600"),
        ("server_idle_timeout", "600"),
        ("query_wait_timeout", "120"),
        ("log_connections", "0"),
        ("log_disconnections", "0"),
        ("log_pooler_errors", "1"),
        ("logfile", ""),
        ("pidfile", ""),
    ]
    target = f"host={names.postgres_name(db.slug)} port={names.POSTGRES_PORT} dbname={database}"
    lines = [
        f";; Rendered by sotadb for {db.namespace}/{db.slug}. Do not edit: it is replaced.",
        "[databases]",
        # Slugs hold only [a-z0-9-], which PgBouncer's ini parser takes as a bare key.
        f"{database} = {target}",
        "",
        "[pgbouncer]",
        *(f"{key} = {value}" if value else f"{key} =" for key, value in settings),
    ]
    return "\n".join(lines) + "\n"


def userlist_txt(db: ManagedDatabase, credentials: Credentials) -> str:
    return f"{_quote_userlist(names.role_name(db.slug))} {_quote_userlist(credentials.verifier)}\n"


def pooler_files(db: ManagedDatabase, credentials: Credentials) -> RenderedFiles:
    return RenderedFiles(
        {PGBOUNCER_INI: pgbouncer_ini(db), USERLIST_TXT: userlist_txt(db, credentials)}
    )


def _quote_userlist(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'
