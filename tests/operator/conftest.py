"""Fixtures for tests against the emulated Kubernetes API (``tests/support/kubeemu``).

The emulator serves from its own thread and event loop, so tests may use blocking clients
(the ``kubernetes`` package, ``kubectl`` subprocesses, ``kopf.testing.KopfRunner``) directly.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator

import pytest

_SUPPORT = str(pathlib.Path(__file__).resolve().parents[1] / "support")
if _SUPPORT not in sys.path:  # normally set by pyproject's `pythonpath`; kept for bare runs
    sys.path.insert(0, _SUPPORT)

import kubernetes  # noqa: E402
from kubeemu import KubeEmulator  # noqa: E402
from kubeemu.kubectl import Kubectl  # noqa: E402


@pytest.fixture
def kube_api() -> Iterator[KubeEmulator]:
    """A fresh emulated API server for one test; fails the test if the emulator itself broke."""
    with KubeEmulator(bookmark_interval=0.5) as emulator:
        yield emulator
        assert not emulator.failures, "\n".join(emulator.failures)


@pytest.fixture
def kubeconfig(kube_api: KubeEmulator, tmp_path: pathlib.Path) -> pathlib.Path:
    return kube_api.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def k8s_client(kubeconfig: pathlib.Path) -> Iterator[kubernetes.client.ApiClient]:
    """The official client, configured from the test's kubeconfig (never from $KUBECONFIG)."""
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    with client:
        yield client


@pytest.fixture
def kubectl(kubeconfig: pathlib.Path, tmp_path: pathlib.Path) -> Kubectl:
    return Kubectl(kubeconfig, tmp_path / "kubectl-cache")
