"""The seed's REST API on a single Docker host: `sotadb serve` (FastAPI on uvicorn).

Modules, pure first:

- `projects` — project name → database slug: one injective rule (pure).
- `models` — the response bodies, which are also the OpenAPI schemas; URLs carry `********`.
- `errors` — one error shape `{"error": {"code", "message", "field"?}}` for every failure,
  the mapping from the project's own errors, and the last-resort handler (no stack traces).
- `tokens` — bearer tokens: shown once, stored as SHA-256 in `$SOTADB_HOME/tokens.json`.
- `service` — ensure/inspect/backups over a `Runtime` and a `Backups` Protocol (the Docker
  runtime and `sotadb.backup` by default; in-memory ones in unit tests).
- `app` — the FastAPI application: routes, authentication, project scoping (`build_app`).

Importing this package imports nothing heavy: `sotadb token ...` loads only `tokens`.
"""
