"""The real-cluster tier: the operator as installed by manifests/, against a real API server.

Every test here needs a cluster: set SOTADB_E2E_KUBECONFIG to its kubeconfig, e.g. after
`make kind-up` (scripts/kind-up.sh): SOTADB_E2E_KUBECONFIG=.kind/kubeconfig. The cluster must
have the project's images (kind-up.sh loads them). Without the variable every test is skipped
with that reason: the one tier where skipping is right, since no cluster can run where sotadb is
developed.

The session applies the CRDs and manifests/ (idempotent) and waits for the operator's rollout;
each test gets a namespace of its own, deleted afterwards. kubectl and the `kubernetes` client
are always given the kubeconfig explicitly (the package reads $KUBECONFIG at import time).
Shared helpers are fixtures (`kubectl`, `wait_for`): a test module importing `conftest` could
get another directory's.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import kubernetes
import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
# kubectl(*args, check=True, input=None, timeout=...) → the finished process.
Kubectl = Callable[..., subprocess.CompletedProcess[str]]

KUBECONFIG_VARIABLE: Final = "SOTADB_E2E_KUBECONFIG"
OPERATOR_NAMESPACE: Final = "sotadb-system"
KUBECTL_TIMEOUT: Final = 300.0


@pytest.fixture(scope="session")
def kubeconfig() -> Path:
    value = os.environ.get(KUBECONFIG_VARIABLE)
    if not value:
        pytest.skip(
            f"{KUBECONFIG_VARIABLE} is not set: the e2e tier needs a real cluster "
            "(make kind-up, then SOTADB_E2E_KUBECONFIG=.kind/kubeconfig)"
        )
    path = Path(value).expanduser().resolve()
    assert path.is_file(), f"{KUBECONFIG_VARIABLE}={value} is not a file"
    return path


@pytest.fixture(autouse=True)
def _needs_a_cluster(kubeconfig: Path) -> None:
    """Every test of the tier, used or not, is skipped without a cluster."""


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    binary = shutil.which("kubectl")
    assert binary, "kubectl is not installed"
    cache = tmp_path_factory.mktemp("kubectl-cache")

    def run(
        *args: str, check: bool = True, input: str | None = None, timeout: float = KUBECTL_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    return run


@pytest.fixture(scope="session")
def client(kubeconfig: Path) -> Iterator[Any]:
    api_client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    yield api_client
    api_client.close()


@pytest.fixture(scope="session")
def operator_installed(kubectl: Kubectl) -> None:
    """manifests/ as a user installs it, CRDs first (scripts/kind-up.sh does the same)."""
    kubectl("apply", "-k", str(ROOT / "crds"))
    kubectl("apply", "-f", str(ROOT / "manifests" / "kopf-peering-crds.yaml"))
    kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/manageddatabases.sota.io", "crd/databasebackups.sota.io",
        "crd/clusterkopfpeerings.kopf.dev", "crd/kopfpeerings.kopf.dev",
    )  # fmt: skip
    kubectl("apply", "-k", str(ROOT / "manifests"))
    kubectl(
        "-n", OPERATOR_NAMESPACE, "rollout", "status", "deployment/sotadb-operator",
        "--timeout=180s",
    )  # fmt: skip


@pytest.fixture
def namespace(operator_installed: None, kubectl: Kubectl) -> Iterator[str]:
    """A namespace of the test's own; deleted afterwards (the operator removes its finalizers)."""
    name = f"sotadb-e2e-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, "sota.io/e2e=true")
    yield name
    kubectl("delete", "namespace", name, "--wait=true", "--timeout=180s", check=False)


def _wait_for(
    condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 1.0
) -> Any:
    """Poll until `condition` returns something truthy (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    """wait_for(condition, timeout=..., what=...): every wait of this tier is bounded."""
    return _wait_for
