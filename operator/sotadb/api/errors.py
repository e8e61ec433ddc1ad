"""Every error the API returns, in one JSON shape, with no stack trace and no secret:

    {"error": {"code": "not_found", "message": "…", "field": "path.project"}}

`field` is present only when one request field is to blame (validation errors). `code` is a
stable, machine-readable value from `ErrorCode`; `message` is for people and says what to do.

One function maps the project's own errors (`SotadbError`, whose messages by contract name the
fix and never a secret) to a status and a code; FastAPI's validation errors (422) and
Starlette's HTTP errors (404 for unknown paths, 405 for unknown methods) are converted to the
same shape; anything else (`CatchAll`) is a 500 with a fixed message, logged on the server by
exception type and place only — not the exception's text, which a third-party library might
have filled with a secret value.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sotadb.docker.engine import ImageMissing
from sotadb.errors import (
    ForbiddenChange,
    InvalidSpec,
    ProvisioningFailed,
    RuntimeUnavailable,
    SotadbError,
    StateCorrupted,
)

logger = logging.getLogger("sotadb.api")

BEARER_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="sotadb"'}


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INVALID_REQUEST = "invalid_request"
    INVALID_SPEC = "invalid_spec"
    FORBIDDEN_CHANGE = "forbidden_change"
    BACKUP_IN_PROGRESS = "backup_in_progress"
    NOT_READY = "not_ready"
    ENGINE_UNAVAILABLE = "engine_unavailable"
    IMAGES_MISSING = "images_missing"
    BACKUPS_UNAVAILABLE = "backups_unavailable"
    PROVISIONING_FAILED = "provisioning_failed"
    BACKUP_FAILED = "backup_failed"
    STATE_CORRUPTED = "state_corrupted"
    INTERNAL = "internal"
    HTTP_ERROR = "http_error"


class ApiError(Exception):
    """An error response: status, code, message (no secret), and the field to blame."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


class BackupsUnavailable(SotadbError):
    """Backups cannot be taken or listed on this host right now (e.g. no backup engine)."""


class BackupConflict(SotadbError):
    """Another backup, restore or retention run holds the database's backup lock."""


class BackupFailed(SotadbError):
    """A backup was attempted and failed; the message says which step."""


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, ErrorCode.UNAUTHENTICATED, message, headers=BEARER_CHALLENGE)


def from_sotadb_error(error: SotadbError) -> ApiError:
    """The one mapping from the project's errors to HTTP. Order matters: subclasses first."""
    message = str(error)
    table: list[tuple[type[SotadbError], int, ErrorCode]] = [
        (ForbiddenChange, 409, ErrorCode.FORBIDDEN_CHANGE),
        (InvalidSpec, 409, ErrorCode.INVALID_SPEC),
        (BackupConflict, 409, ErrorCode.BACKUP_IN_PROGRESS),
        (RuntimeUnavailable, 503, ErrorCode.ENGINE_UNAVAILABLE),
        (ImageMissing, 503, ErrorCode.IMAGES_MISSING),
        (BackupsUnavailable, 503, ErrorCode.BACKUPS_UNAVAILABLE),
        (ProvisioningFailed, 500, ErrorCode.PROVISIONING_FAILED),
        (BackupFailed, 500, ErrorCode.BACKUP_FAILED),
        (StateCorrupted, 500, ErrorCode.STATE_CORRUPTED),
    ]
    for kind, status, code in table:
        if isinstance(error, kind):
            return ApiError(status, code, message)
    return ApiError(500, ErrorCode.INTERNAL, message)


_HTTP_CODES: Final[Mapping[int, ErrorCode]] = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    422: ErrorCode.INVALID_REQUEST,
}


def error_body(code: ErrorCode, message: str, field: str | None = None) -> dict[str, object]:
    detail: dict[str, object] = {"code": code.value, "message": message}
    if field is not None:
        detail["field"] = field
    return {"error": detail}


def _response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.message, error.field),
        status_code=error.status,
        headers=error.headers or None,
    )


async def _on_api_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return _response(error)


async def _on_sotadb_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, SotadbError)
    mapped = from_sotadb_error(error)
    if mapped.status >= 500:
        logger.warning(
            "%s %s failed: %s (%s)",
            request.method,
            request.url.path,
            type(error).__name__,
            mapped.code.value,
        )
    return _response(mapped)


def _allowed_methods(request: Request) -> list[str]:
    """Every method of every route at this path (Starlette lists only the first route's, and
    GET and POST of one path are two routes)."""
    path = request.url.path
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.path_regex.fullmatch(path):
            methods.update(route.methods or ())
    return sorted(methods)


async def _on_validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = list(error.errors())
    first = problems[0] if problems else {}
    field = ".".join(str(part) for part in first.get("loc", ())) or None
    message = "; ".join(
        f"{'.'.join(str(part) for part in p.get('loc', ()))}: {p.get('msg', 'invalid')}"
        for p in problems
    )
    return _response(
        ApiError(422, ErrorCode.INVALID_REQUEST, message or "invalid request", field=field)
    )


async def _on_http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = _HTTP_CODES.get(error.status_code, ErrorCode.HTTP_ERROR)
    headers = dict(error.headers or {})
    if error.status_code == 401:
        headers.update(BEARER_CHALLENGE)
    if error.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    message = error.detail if isinstance(error.detail, str) else "request failed"
    return _response(ApiError(error.status_code, code, message, headers=headers))


class CatchAll:
    """The last resort, as ASGI middleware (a handler for `Exception` would still let Starlette
    re-raise to the server, which logs the exception's text): a fixed message to the client;
    the exception's type and place — never its text — in the log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            _log_unhandled(scope, error)
            if started:  # too late for another response; the server closes the connection
                raise
            response = _response(
                ApiError(500, ErrorCode.INTERNAL, "internal error (the server's log says where)")
            )
            await response(scope, receive, send)


def _log_unhandled(scope: Scope, error: Exception) -> None:
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    where = f" at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    causes: list[str] = []
    cause = error.__cause__ or error.__context__
    while cause is not None and len(causes) < 5:
        causes.append(type(cause).__name__)
        cause = cause.__cause__ or cause.__context__
    logger.error(
        "%s %s: unhandled %s%s%s",
        scope.get("method", "?"),
        scope.get("path", "?"),
        type(error).__name__,
        where,
        f" (caused by {' <- '.join(causes)})" if causes else "",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(SotadbError, _on_sotadb_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_middleware(CatchAll)
