"""Where the API server is and how to authenticate: in-cluster or from a kubeconfig.

The operator does not load the `kubernetes` package: importing it costs ~60 MB of the
operator's memory (every model class of every API group), more than all the operator's own data
at 1,000 databases. What the operator needs of it is small: this file and `kube/api.py`.

Supported: the pod's service account (its token re-read as the kubelet rotates it), and a
kubeconfig's current context with a token or client certificate (inline data or files) and a CA.
Not supported: kubeconfig exec and auth-provider plugins (cloud CLIs); such a kubeconfig is
refused with a message saying so.
"""

from __future__ import annotations

import atexit
import base64
import os
import pathlib
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from sotadb.errors import SotadbError

SERVICE_ACCOUNT: Final = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REFRESH_SECONDS: Final = 60.0  # bound tokens rotate hourly; the kubelet renews earlier


class KubeconfigError(SotadbError):
    """The kubeconfig cannot be used."""


@dataclass
class Connection:
    server: str
    ca_path: str | None = None
    insecure: bool = False
    certificate_path: str | None = None
    private_key_path: str | None = None
    token: str | None = field(default=None, repr=False)
    token_path: str | None = None  # re-read now and then (a projected service-account token)
    _read_at: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def authorization(self) -> str | None:
        """The Authorization header's value, or None (client certificates)."""
        if self.token_path is not None:
            with self._lock:
                if time.monotonic() - self._read_at > TOKEN_REFRESH_SECONDS:
                    self.token = pathlib.Path(self.token_path).read_text().strip()
                    self._read_at = time.monotonic()
        return f"Bearer {self.token}" if self.token else None


def load_connection(kubeconfig: str | None = None) -> Connection:
    """A kubeconfig given explicitly wins; else the pod's service account; else $KUBECONFIG
    or ~/.kube/config."""
    if kubeconfig is None and (SERVICE_ACCOUNT / "token").exists():
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        ca = SERVICE_ACCOUNT / "ca.crt"
        return Connection(
            server=f"https://{host}:{port}",
            ca_path=str(ca) if ca.exists() else None,
            token_path=str(SERVICE_ACCOUNT / "token"),
        )
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    return from_kubeconfig(pathlib.Path(path).expanduser())


def from_kubeconfig(path: pathlib.Path) -> Connection:
    try:
        config: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise KubeconfigError(f"kubeconfig {path}: {e}") from e
    current = config.get("current-context")
    context = _named(config, "contexts", current, path).get("context") or {}
    cluster = _named(config, "clusters", context.get("cluster"), path).get("cluster") or {}
    user = _named(config, "users", context.get("user"), path).get("user") or {}
    if "exec" in user or "auth-provider" in user:
        raise KubeconfigError(
            f"kubeconfig {path}: user {context.get('user')!r} authenticates through an exec or "
            "auth-provider plugin, which `sotadb operator` does not run; use a token or a client "
            "certificate (or run the operator in the cluster)"
        )
    base = path.parent
    return Connection(
        server=str(cluster.get("server") or ""),
        ca_path=_file(cluster, "certificate-authority", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        certificate_path=_file(user, "client-certificate", base),
        private_key_path=_file(user, "client-key", base),
        token=user.get("token") or _read(user.get("tokenFile"), base),
    )


def _named(config: dict[str, Any], section: str, name: Any, path: pathlib.Path) -> dict[str, Any]:
    for item in config.get(section) or []:
        if item.get("name") == name:
            return dict(item)
    raise KubeconfigError(f"kubeconfig {path}: no {section[:-1]} named {name!r} (current-context)")


def _read(name: str | None, base: pathlib.Path) -> str | None:
    return None if not name else (base / name).read_text().strip()


def _file(section: dict[str, Any], key: str, base: pathlib.Path) -> str | None:
    """A kubeconfig's `KEY` (a path, relative to the kubeconfig) or `KEY-data` (inline base64,
    written to a private temporary file, as TLS libraries want files)."""
    if section.get(key):
        return str(base / str(section[key]))
    data = section.get(f"{key}-data")
    if not data:
        return None
    handle, target = tempfile.mkstemp(prefix=f"{key}-", dir=_private_directory())  # 0600
    with os.fdopen(handle, "wb") as file:
        file.write(base64.b64decode(data))
    return target


_directory: str | None = None


def _private_directory() -> str:
    global _directory
    if _directory is None:
        _directory = tempfile.mkdtemp(prefix="sotadb-kube-")  # mode 0700
        atexit.register(shutil.rmtree, _directory, True)
    return _directory
