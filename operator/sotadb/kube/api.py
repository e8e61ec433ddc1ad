"""A small typed REST client on urllib3, raw dicts in and out.

The operator only needs get / create / server-side apply / merge patch / delete on a handful
of kinds; raw dicts keep the rendered manifests exactly as rendered. API errors become
`ApiError` here, and `is_retryable` is the one place that decides what to try again.
It does not use the `kubernetes` package, whose import alone costs ~60 MB (kube/connection.py).
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from typing import Any, Final

import urllib3

from sotadb import __version__
from sotadb.errors import SotadbError
from sotadb.kube.connection import Connection, load_connection
from sotadb.kube.resources import BY_KIND, Resource

FIELD_MANAGER: Final = "sotadb"
MERGE_PATCH: Final = "application/merge-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
REQUEST_TIMEOUT: Final = 30
USER_AGENT: Final = f"sotadb-operator/{__version__}"
POOL_SIZE: Final = 8  # kopf's sync handlers run in a few threads at once


class ApiError(SotadbError):
    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"Kubernetes API {status} {reason}: {message}")


def is_retryable(error: Exception) -> bool:
    """Conflicts, throttling, server errors and broken connections pass; a 4xx that is not a
    conflict means the request itself is wrong and retrying cannot help."""
    if isinstance(error, ApiError):
        return error.status in (409, 429) or error.status >= 500
    return isinstance(error, (urllib3.exceptions.HTTPError, OSError))


def load_configuration(kubeconfig: str | None = None) -> Connection:
    """A kubeconfig given explicitly wins; else the pod's service account; else the default
    kubeconfig."""
    return load_connection(kubeconfig)


def pool_for(connection: Connection) -> urllib3.PoolManager:
    tls: dict[str, Any] = {}
    if connection.server.startswith("https"):
        tls = {
            "cert_reqs": "CERT_NONE" if connection.insecure else "CERT_REQUIRED",
            "ca_certs": connection.ca_path,
            "cert_file": connection.certificate_path,
            "key_file": connection.private_key_path,
        }
        if connection.insecure:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return urllib3.PoolManager(num_pools=2, maxsize=POOL_SIZE, retries=False, **tls)


class KubeApi:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.user_agent = USER_AGENT
        self._pool = pool_for(connection)

    def close(self) -> None:
        self._pool.clear()

    # ---------------------------------------------------------------- verbs

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._request("GET", resource.path(namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def list(
        self, resource: Resource, namespace: str | None, label_selector: str
    ) -> list[dict[str, Any]]:
        result = self._request(
            "GET", resource.path(namespace), query={"labelSelector": label_selector}
        )
        return list(result.get("items") or [])

    def create(self, document: dict[str, Any]) -> dict[str, Any]:
        resource = self.resource_of(document)
        return self._request("POST", resource.path(document["metadata"]["namespace"]), document)

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: creates or updates, and the API keeps track of which fields are
        ours, so fields we stop rendering are removed and others' fields are left alone."""
        resource = self.resource_of(document)
        metadata = document["metadata"]
        return self._request(
            "PATCH",
            resource.path(metadata["namespace"], metadata["name"]),
            document,
            content_type=APPLY_PATCH,
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
        )

    def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return self._request(
            "PATCH",
            resource.path(namespace, name, subresource),
            patch,
            content_type=MERGE_PATCH,
        )

    def strategic_patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        field_manager: str = FIELD_MANAGER,
    ) -> dict[str, Any]:
        """A strategic merge patch (built-in kinds only: lists merge by their merge keys,
        `$patch: delete` removes an item), recorded under `field_manager`."""
        return self._request(
            "PATCH",
            resource.path(namespace, name),
            patch,
            content_type=STRATEGIC_MERGE_PATCH,
            query={"fieldManager": field_manager},
        )

    def delete(
        self, resource: Resource, namespace: str, name: str, *, propagation: str | None = None
    ) -> bool:
        """True when it was there; a missing object is already deleted. `propagation`: the
        propagationPolicy (a batch/v1 Job deleted without one orphans its pods)."""
        query = None if propagation is None else {"propagationPolicy": propagation}
        try:
            self._request("DELETE", resource.path(namespace, name), query=query)
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True

    @staticmethod
    def resource_of(document: dict[str, Any]) -> Resource:
        return BY_KIND[document["kind"]]

    # ---------------------------------------------------------------- transport

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = {
            "Accept": "application/json",
            "Content-Type": content_type,
            "User-Agent": self.user_agent,
        }
        authorization = self.connection.authorization()
        if authorization:
            headers["Authorization"] = authorization
        url = self.connection.server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        response = self._pool.request(
            method,
            url,
            body=None if body is None else json.dumps(body).encode(),
            headers=headers,
            timeout=REQUEST_TIMEOUT,
        )
        data = response.data
        if response.status >= 400:
            raise _api_error(response.status, response.reason or "", data)
        if not data:
            return {}
        decoded: dict[str, Any] = json.loads(data)
        return decoded


def _api_error(status: int, reason: str, body: bytes) -> ApiError:
    message = reason
    if body:
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(body).get("message", message)
    # Bodies of Secrets are never included: only the Status message the server wrote.
    return ApiError(status, reason, message)
