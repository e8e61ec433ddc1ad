"""A small typed REST client over the `kubernetes` package's ApiClient, raw dicts in and out.

The operator only needs get / create / server-side apply / merge patch / delete on a handful
of kinds; raw dicts keep the rendered manifests exactly as rendered. API errors become
`ApiError` here, and `is_retryable` is the one place that decides what to try again.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Final

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from sotadb.errors import SotadbError
from sotadb.kube.resources import BY_KIND, Resource

FIELD_MANAGER: Final = "sotadb"
MERGE_PATCH: Final = "application/merge-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
REQUEST_TIMEOUT: Final = 30


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


def load_configuration(kubeconfig: str | None = None) -> kubernetes.client.Configuration:
    """A kubeconfig given explicitly wins; else the pod's service account; else the default
    kubeconfig (the package reads $KUBECONFIG at import time, so a file is passed explicitly)."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            pass
        else:
            return configuration
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


class KubeApi:
    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self._client = kubernetes.client.ApiClient(configuration)

    def close(self) -> None:
        self._client.close()

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

    def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """True when it was there; a missing object is already deleted."""
        try:
            self._request("DELETE", resource.path(namespace, name))
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
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT)
            response.read()
        except ApiException as e:
            raise _api_error(e) from None
        data = response.data
        if response.status >= 400:
            raise _api_error(
                ApiException(status=response.status, reason=response.reason), body=data
            )
        if not data:
            return {}
        decoded: dict[str, Any] = json.loads(data)
        return decoded


def _api_error(error: ApiException, body: bytes | str | None = None) -> ApiError:
    message = str(error.reason or "")
    body = body if body is not None else error.body
    if body:
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(body).get("message", message)
    # Bodies of Secrets are never included: only the Status message the server wrote.
    return ApiError(int(error.status or 0), str(error.reason or ""), message)
