"""Alembic's environment: the database comes from DATABASE_URL, as sotadb injects it.

sotadb's DATABASE_URL is `postgresql://…?sslmode=disable` and points at PgBouncer in
transaction mode. SQLAlchemy maps a bare `postgresql://` to psycopg2, so the scheme is rewritten
to `postgresql+psycopg://` to use psycopg 3; the rest of the URL is kept byte for byte.

psycopg 3 keeps its default `prepare_threshold` (5): a statement executed more than five times on
a connection is prepared server-side. Through PgBouncer that works because sotadb turns on
`max_prepared_statements`, so nothing here sets `prepare_threshold=None`. Revision 0002 proves it.

Alembic takes no advisory lock, and each run is one transaction (PostgreSQL has transactional
DDL), which PgBouncer keeps on one server connection from BEGIN to COMMIT: the pooled URL is fine.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

PSYCOPG_SCHEME = "postgresql+psycopg"


def sqlalchemy_url(database_url: str) -> str:
    scheme, separator, rest = database_url.partition("://")
    if not separator or scheme not in ("postgresql", "postgres", PSYCOPG_SCHEME):
        raise SystemExit("DATABASE_URL must be a postgresql:// URL")  # never echo the URL
    return f"{PSYCOPG_SCHEME}://{rest}"


def run_migrations_online() -> None:
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        raise SystemExit("DATABASE_URL is not set")
    # NullPool: a one-shot command needs no client-side pool; PgBouncer is the pool.
    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=None)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name)  # alembic.ini's loggers: progress on stderr
if context.is_offline_mode():
    raise SystemExit("this fixture runs online only (alembic upgrade head)")
run_migrations_online()
