"""Settings of the fixture project: the database is DATABASE_URL, as sotadb injects it.

The URL is parsed here with the standard library (no dj-database-url needed). Two settings
matter behind PgBouncer in transaction mode:

- `DISABLE_SERVER_SIDE_CURSORS = True`, Django's documented requirement for transaction
  pooling: `QuerySet.iterator()` otherwise declares a server-side cursor, which lives on one
  server connection; outside a transaction, the next fetch from it may be sent over another
  server connection, where the cursor does not exist.
- `CONN_MAX_AGE = 0` (the default, written out): PgBouncer pools server connections, so each
  request or command opening its own client connection costs little.

Django's psycopg 3 backend binds parameters client-side unless `server_side_binding` is set,
so it sends no named prepared statements; the migrations need no other setting.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote, urlsplit


def database_from_url(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise SystemExit("DATABASE_URL must be a postgresql:// URL")  # never echo the URL
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": dict(parse_qsl(parts.query)),  # sslmode=disable, passed to libpq
        "CONN_MAX_AGE": 0,
        "DISABLE_SERVER_SIDE_CURSORS": True,
    }


SECRET_KEY = "fixture-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS: list[str] = []
INSTALLED_APPS = ["django.contrib.contenttypes", "shop"]
DATABASES = {"default": database_from_url(os.environ.get("DATABASE_URL", ""))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
