"""sotadb: managed PostgreSQL 17 behind PgBouncer, on Kubernetes and on a single Docker host."""

__version__ = "0.1.0"
