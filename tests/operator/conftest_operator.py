"""Fixtures for the operator's tests; loaded by ``pytest_plugins = ["conftest_operator"]``."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
from kubeemu import Kubectl, KubeEmulator
from operator_harness import (
    CRDS,
    NAMESPACE,
    TEST_AGENT,
    TEST_RETRY_DELAY,
    Operator,
    WatchRecorder,
)

from sotadb import names
from sotadb.kube import handlers


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "RETRY_DELAY", TEST_RETRY_DELAY)


@pytest.fixture
def crds(kubectl: Kubectl) -> None:
    """The project's CRDs, applied as a user would (the emulator enforces no schema)."""
    kubectl("apply", "--validate=false", *(arg for path in CRDS for arg in ("-f", str(path))))


@pytest.fixture
def client(k8s_client: kubernetes.client.ApiClient) -> kubernetes.client.ApiClient:
    """The tests' own `kubernetes` client, with a user agent of its own (the operator's
    client uses the package's default)."""
    k8s_client.user_agent = TEST_AGENT
    return k8s_client


@pytest.fixture
def start_operator(
    kube_api: KubeEmulator, kubeconfig: pathlib.Path, crds: None, fast_retries: None
) -> Iterator[Callable[..., Operator]]:
    """Start operators (``start_operator(resync_seconds=…)``); all are stopped at teardown."""
    started: list[Operator] = []

    def start(**kwargs: Any) -> Operator:
        operator = Operator(kube_api, kubeconfig, **kwargs).start()
        started.append(operator)
        return operator

    yield start
    for operator in started:
        operator.stop()


@pytest.fixture
def credentials_history(kube_api: KubeEmulator) -> Iterator[WatchRecorder]:
    """Every version of every credentials Secret in the default namespace, from now on."""
    path = (
        f"/api/v1/namespaces/{NAMESPACE}/secrets?watch=true"
        f"&labelSelector={names.LABEL_COMPONENT}%3D{names.COMPONENT_CREDENTIALS}"
    )
    recorder = WatchRecorder(kube_api, path)
    yield recorder
    recorder.stop()
