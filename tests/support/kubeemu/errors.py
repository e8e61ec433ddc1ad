"""API errors as the Kubernetes API server reports them: an HTTP code and a ``Status`` body."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failed API call; rendered as a ``kind: Status`` body with the same HTTP code."""

    code: int = 500
    reason: str = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        name: str | None = None,
        group: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = {
            key: value
            for key, value in {"name": name, "group": group, "kind": kind}.items()
            if value is not None
        }

    def status(self) -> dict[str, Any]:
        """The ``Status`` object the API server sends for this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = dict(self.details)
        return body


class BadRequest(ApiError):
    code = 400
    reason = "BadRequest"


class Forbidden(ApiError):
    code = 403
    reason = "Forbidden"


class NotFound(ApiError):
    code = 404
    reason = "NotFound"


class MethodNotAllowed(ApiError):
    code = 405
    reason = "MethodNotAllowed"


class AlreadyExists(ApiError):
    code = 409
    reason = "AlreadyExists"


class Conflict(ApiError):
    code = 409
    reason = "Conflict"


class Gone(ApiError):
    code = 410
    reason = "Expired"


class UnsupportedMediaType(ApiError):
    code = 415
    reason = "UnsupportedMediaType"


class Invalid(ApiError):
    code = 422
    reason = "Invalid"


def not_found(kind: str, name: str, group: str = "") -> NotFound:
    what = f"{kind}.{group}" if group else kind
    return NotFound(f'{what} "{name}" not found', kind=kind, name=name, group=group)


def modified(kind: str, name: str, group: str = "") -> Conflict:
    what = f"{kind}.{group}" if group else kind
    return Conflict(
        f'Operation cannot be fulfilled on {what} "{name}": the object has been modified;'
        " please apply your changes to the latest version and try again",
        kind=kind,
        name=name,
        group=group,
    )
