"""The log of API calls the emulator received, for tests to count and assert on.

Appended to from the emulator's thread, read from the test's: appending to and slicing a list
are atomic in CPython, and records are immutable (a finished call replaces its record).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

from kubeemu.paths import ApiPath

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


class Write(NamedTuple):
    """A mutating call: ``resource`` is ``plural[.group][/subresource]``, e.g. ``pods/status``."""

    verb: str
    resource: str
    namespace: str | None
    name: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApiCall:
    seq: int
    method: str
    path: str
    verb: str  # as in audit logs: get list watch create update patch delete deletecollection
    group: str | None = None
    version: str | None = None
    plural: str | None = None
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None
    status: int | None = None  # None while in flight; 499 if the client left first
    user_agent: str = ""
    params: Mapping[str, str] = dataclasses.field(default_factory=dict)  # the query

    @property
    def resource(self) -> str:
        """``plural[.group][/subresource]``, or the path for non-resource URLs."""
        if self.plural is None:
            return self.path
        text = f"{self.plural}.{self.group}" if self.group else self.plural
        return f"{text}/{self.subresource}" if self.subresource else text

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS

    def as_write(self) -> Write:
        return Write(self.verb, self.resource, self.namespace, self.name)


def classify(method: str, api_path: ApiPath | None, query: Mapping[str, str]) -> str:
    """The audit-log verb of a request."""
    method = method.upper()
    if api_path is None or api_path.plural is None:
        return method.lower()
    watching = api_path.watch_prefix or query.get("watch") in ("true", "1")
    if method == "GET":
        return "watch" if watching else ("get" if api_path.name else "list")
    if method == "DELETE":
        return "delete" if api_path.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


class RequestLog:
    def __init__(self) -> None:
        self._calls: list[ApiCall] = []

    def start(
        self,
        *,
        method: str,
        path: str,
        api_path: ApiPath | None,
        query: Mapping[str, str],
        user_agent: str,
    ) -> ApiCall:
        described = api_path if api_path is not None and api_path.plural is not None else None
        call = ApiCall(
            seq=len(self._calls),
            method=method.upper(),
            path=path,
            verb=classify(method, api_path, query),
            group=described.group if described else None,
            version=described.version if described else None,
            plural=described.plural if described else None,
            subresource=described.subresource if described else None,
            namespace=described.namespace if described else None,
            name=described.name if described else None,
            user_agent=user_agent,
            params=dict(query),
        )
        self._calls.append(call)
        return call

    def finish(self, call: ApiCall, status: int) -> None:
        self._calls[call.seq] = dataclasses.replace(call, status=status)

    def mark(self) -> int:
        """A position in the log; pass it as ``since=`` to see only the calls after it."""
        return len(self._calls)

    def calls(self, since: int = 0) -> list[ApiCall]:
        return self._calls[since:]

    def writes(self, since: int = 0) -> list[Write]:
        return [call.as_write() for call in self.calls(since) if call.is_write]

    def counts(self, since: int = 0) -> collections.Counter[str]:
        """How many calls of each verb (``get``, ``list``, ``watch``, ``patch``, …)."""
        return collections.Counter(call.verb for call in self.calls(since))
