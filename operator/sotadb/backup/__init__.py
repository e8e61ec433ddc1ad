"""Backups: dump, compress, checksum, store, drill, restore, retention. Runs on Docker today and
is built to run unchanged inside a Kubernetes Job.

Layers (each imports only those above it):

- `catalog`, `schedule`, `checksums`, `scripts` — pure: records and their JSON, names,
  retention, the daily slot, the checksum SQL and the bash scripts. No I/O.
- `executors` — how a script runs: `docker exec` into a container (Docker runtime), or a local
  subprocess (a Kubernetes Job's own container). The scripts are the same either way; only the
  environment (libpq's PGHOST/PGUSER/...) differs.
- `store` — the backup files and their JSON records in one directory: atomic writes, a lock
  per database, listing, deletion.
- `runner` — dump, drill and restore over an `Executor` and a `BackupStore`: no Docker.
- `on_docker` — the single host: the database's container, scratch drill containers,
  PgBouncer around a restore, clones through `DockerRuntime.up`, the daemon's pass.
"""
