"""The HTTP surface: four routes, bearer tokens scoped to one project, one error shape.

    POST /v1/projects/{project}/database           ensureDatabase  200 DatabaseStatus
    GET  /v1/projects/{project}/database           getDatabase     200 DatabaseStatus
    GET  /v1/projects/{project}/database/backups   listBackups     200 BackupList
    POST /v1/projects/{project}/database/backups   createBackup    201 Backup
    GET  /openapi.json                             the OpenAPI document (no token needed)

Order of checks, so that an unauthenticated caller learns nothing: the token (401, with
`WWW-Authenticate: Bearer`), then the request's shape (422), then the token's project (404).
**A token for another project gets 404 with the very message a project without a database
gets** — not 403, which would confirm that the other project exists.

Handlers are plain `def`s: FastAPI runs them in its threadpool, so a blocking `up` (seconds)
or backup never stalls the event loop.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sotadb.api import errors
from sotadb.api.errors import ApiError, ErrorCode
from sotadb.api.models import Backup, BackupList, DatabaseStatus, ErrorResponse
from sotadb.api.projects import PROJECT_MAX_LENGTH, PROJECT_PATTERN, slug_for
from sotadb.api.service import (
    BackupLike,
    Backups,
    DatabaseFacts,
    DatabaseService,
    DockerBackupsAdapter,
    Engine,
    Runtime,
)
from sotadb.api.tokens import FILE_NAME as TOKENS_FILE
from sotadb.api.tokens import TokenRecord, TokenStore
from sotadb.docker.runtime import DockerRuntime
from sotadb.docker.state import StateStore

API_VERSION: Final = "1.0.0"
DESCRIPTION: Final = """\
The seed's managed-PostgreSQL API for one Docker host: provision a project's database
(PostgreSQL 17 behind PgBouncer), read its status, list and take backups.

Authenticate with `Authorization: Bearer <token>`; tokens come from `sotadb token create
PROJECT` and each may touch only its own project's database. Passwords are never returned:
`databaseUrl` shows `********` in the password's place (the app gets the real one in its
environment; `sotadb url SLUG --show-password` on the host shows it).

Project names map to database slugs by a fixed rule: a valid slug not starting with `p-`
is its own slug; a lowercase name starting with a digit (a UUID) gets `p-` in front; any
other name becomes `p-{lowercased, cleaned, cut}--{hash}`.
"""


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description, **extra}


UNAUTHENTICATED: Final = _error(
    "No token, or not a valid one.",
    headers={
        "WWW-Authenticate": {
            "description": "Always `Bearer`.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
)
COMMON_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: UNAUTHENTICATED,
    404: _error("No database for this project that this token may see."),
    422: _error("The request is malformed (e.g. the project name); `field` names the part."),
    500: _error("The server failed; the message says which step."),
    503: _error("The Docker engine (or the backup engine) is unavailable; retry later."),
}

ProjectName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=PROJECT_MAX_LENGTH,
        pattern=PROJECT_PATTERN,
        description="The project (e.g. its UUID). URL-unreserved characters only.",
        examples=["550e8400-e29b-41d4-a716-446655440000"],
    ),
]


BEARER: Final = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from `sotadb token create PROJECT`.",
)


def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> TokenRecord:
    """The token's record, or 401 (with `WWW-Authenticate: Bearer`)."""
    if credentials is None:
        raise errors.unauthenticated("send Authorization: Bearer <token>")
    tokens: TokenStore = request.app.state.tokens
    record = tokens.authenticate(credentials.credentials)
    if record is None:
        raise errors.unauthenticated(
            "the token is not valid (fix: `sotadb token create PROJECT` on the host)"
        )
    return record


Token = Annotated[TokenRecord, Depends(authenticated)]


def create_app(*, service: DatabaseService, tokens: TokenStore) -> FastAPI:
    app = FastAPI(
        title="sotadb",
        version=API_VERSION,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # the docs pages load scripts from a CDN; the document is enough
        redoc_url=None,
    )
    errors.install(app)
    app.state.tokens = tokens

    @app.post(
        "/v1/projects/{project}/database",
        operation_id="ensureDatabase",
        summary="Provision the project's database, or confirm it (idempotent).",
        response_model=DatabaseStatus,
        responses={**COMMON_ERRORS, 409: _error("The stored spec cannot be applied.")},
        tags=["database"],
    )
    def ensure_database(project: ProjectName, token: Token) -> DatabaseStatus:
        slug = _scoped(token, project)
        return _status(project, service.ensure(slug))

    @app.get(
        "/v1/projects/{project}/database",
        operation_id="getDatabase",
        summary="The project's database: phase, host names, pool settings (no password).",
        response_model=DatabaseStatus,
        responses=COMMON_ERRORS,
        tags=["database"],
    )
    def get_database(project: ProjectName, token: Token) -> DatabaseStatus:
        slug = _scoped(token, project)
        facts = service.inspect(slug)
        if facts is None:
            raise _not_found(project)
        return _status(project, facts)

    @app.get(
        "/v1/projects/{project}/database/backups",
        operation_id="listBackups",
        summary="The database's backups, oldest first.",
        response_model=BackupList,
        responses=COMMON_ERRORS,
        tags=["backups"],
    )
    def list_backups(project: ProjectName, token: Token) -> BackupList:
        slug = _scoped(token, project)
        records = service.list_backups(slug)
        if records is None:
            raise _not_found(project)
        return BackupList(project=project, slug=slug, backups=[_backup(r) for r in records])

    @app.post(
        "/v1/projects/{project}/database/backups",
        operation_id="createBackup",
        summary="Take a backup now (pg_dump, gzip, checksummed, restore-drilled); waits for it.",
        response_model=Backup,
        status_code=201,
        responses={
            **COMMON_ERRORS,
            409: _error("The database is not Ready, or another backup of it is running."),
        },
        tags=["backups"],
    )
    def create_backup(project: ProjectName, token: Token) -> Backup:
        slug = _scoped(token, project)
        record = service.create_backup(slug)
        if record is None:
            raise _not_found(project)
        return _backup(record)

    return app


def _scoped(token: TokenRecord, project: str) -> str:
    """The slug of `project`, if the token is scoped to it; else the 404 of a missing one."""
    if not hmac.compare_digest(
        token.project.encode("utf-8", "surrogatepass"), project.encode("utf-8", "surrogatepass")
    ):
        raise _not_found(project)
    return slug_for(project)


def _not_found(project: str) -> ApiError:
    return ApiError(
        404,
        ErrorCode.NOT_FOUND,
        f"project {project} has no database that this token may see "
        f"(fix: POST /v1/projects/{project}/database with the project's own token)",
    )


def _status(project: str, facts: DatabaseFacts) -> DatabaseStatus:
    return DatabaseStatus.of(project=project, slug=facts.slug, phase=facts.phase, spec=facts.spec)


def _backup(record: BackupLike) -> Backup:
    """Times to the second, as the stored record has them (a fresh record has microseconds),
    so the backup a POST returns is the one a later GET lists."""
    return Backup(
        name=record.name,
        phase=str(record.phase),
        started_at=_second(record.started_at),
        completed_at=_maybe_second(record.completed_at),
        size=record.size,
        sha256=record.sha256,
        format=record.format,
        verification=None if record.verification is None else str(record.verification),
        verified_at=_maybe_second(record.verified_at),
        message=record.message,
    )


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def _maybe_second(moment: datetime | None) -> datetime | None:
    return None if moment is None else _second(moment)


def build_app(
    home: FilePath | None = None,
    *,
    connect: Callable[[StateStore], Runtime] | None = None,
    backups: Backups | None = None,
) -> FastAPI:
    """The app over `$SOTADB_HOME` (or `home`): databases on the local Docker engine, backups
    from `sotadb.backup`, tokens from `tokens.json`. Tests pass an in-memory `connect` and
    `backups`."""
    store = StateStore(home)

    def docker_runtime(state: StateStore) -> Runtime:
        return DockerRuntime(store=state)

    make_runtime = connect or docker_runtime
    engine = Engine(lambda: make_runtime(store))
    service = DatabaseService(engine, store, backups or DockerBackupsAdapter(engine))
    return create_app(service=service, tokens=TokenStore(store.home / TOKENS_FILE))
