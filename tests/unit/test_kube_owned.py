"""The operator's own snapshots of what it owns (sotadb/kube/owned.py) and how it finds the API
server without the `kubernetes` package (sotadb/kube/connection.py)."""

from __future__ import annotations

import base64
import pathlib
from typing import Any

import pytest
import yaml

from sotadb import names
from sotadb.kube.connection import KubeconfigError, from_kubeconfig
from sotadb.kube.owned import OwnedObjects


def owned(
    kind: str, name: str, slug: str = "a", namespace: str = "shop", **extra: Any
) -> dict[str, Any]:
    labels = names.common_labels(slug, names.COMPONENT_POSTGRES)
    return {
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        **extra,
    }


def test_snapshots_are_kept_by_owner_and_follow_events() -> None:
    store = OwnedObjects()
    store.upsert(owned("ConfigMap", "cm-a"))
    store.upsert(owned("Deployment", "d-a", status={"readyReplicas": 1}))
    store.upsert(owned("ConfigMap", "cm-b", slug="b"))
    assert set(store.observed("shop", "a").objects) == {
        ("ConfigMap", "cm-a"),
        ("Deployment", "d-a"),
    }
    assert store.observed("shop", "a").get("Deployment", "d-a").ready_replicas == 1  # type: ignore[union-attr]
    store.upsert(owned("Deployment", "d-a", status={"readyReplicas": 0}))
    assert store.observed("shop", "a").get("Deployment", "d-a").ready_replicas == 0  # type: ignore[union-attr]
    store.delete(owned("ConfigMap", "cm-a"))
    assert set(store.observed("shop", "a").objects) == {("Deployment", "d-a")}
    assert len(store) == 2
    assert store.observed("elsewhere", "a").objects == {}


def test_an_object_relabelled_away_is_no_longer_ours() -> None:
    store = OwnedObjects()
    store.upsert(owned("Service", "s"))
    foreign = owned("Service", "s")
    foreign["metadata"]["labels"] = {"app": "theirs"}
    store.upsert(foreign)
    assert store.observed("shop", "a").objects == {}
    assert len(store) == 0


def test_a_fresh_list_replaces_one_kind_in_its_scope_only() -> None:
    store = OwnedObjects()
    store.upsert(owned("Secret", "gone"))
    store.upsert(owned("Secret", "other-ns", namespace="other"))
    store.upsert(owned("ConfigMap", "kept"))
    store.replace("Secret", "shop", [owned("Secret", "new")])
    assert set(store.observed("shop", "a").objects) == {("Secret", "new"), ("ConfigMap", "kept")}
    assert set(store.observed("other", "a").objects) == {("Secret", "other-ns")}
    store.replace("Secret", None, [])
    assert set(store.observed("shop", "a").objects) == {("ConfigMap", "kept")}
    assert store.observed("other", "a").objects == {}


def test_a_snapshot_keeps_only_the_claim_fields_we_render() -> None:
    store = OwnedObjects()
    template = {
        "metadata": {"name": "data", "labels": {"x": "y"}, "creationTimestamp": None},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "volumeMode": "Filesystem",
        },
        "status": {"phase": "Pending"},
    }
    store.upsert(owned("StatefulSet", "sts", spec={"volumeClaimTemplates": [template]}))
    (claim,) = store.observed("shop", "a").get("StatefulSet", "sts").claim_templates  # type: ignore[union-attr]
    assert claim == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "labels": {"x": "y"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def kubeconfig(
    tmp_path: pathlib.Path, user: dict[str, Any], cluster: dict[str, Any]
) -> pathlib.Path:
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_a_kubeconfig_with_a_token_and_inline_certificates(tmp_path: pathlib.Path) -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    path = kubeconfig(
        tmp_path,
        {"token": "t0k3n", "client-key-data": base64.b64encode(b"KEY").decode()},
        {
            "server": "https://api:6443",
            "certificate-authority-data": base64.b64encode(pem).decode(),
        },
    )
    connection = from_kubeconfig(path)
    assert connection.server == "https://api:6443"
    assert connection.authorization() == "Bearer t0k3n"
    assert connection.ca_path is not None
    assert pathlib.Path(connection.ca_path).read_bytes() == pem
    key = pathlib.Path(connection.private_key_path or "")
    assert key.read_bytes() == b"KEY"
    assert key.stat().st_mode & 0o077 == 0
    assert "t0k3n" not in repr(connection)


def test_a_kubeconfig_with_relative_files(tmp_path: pathlib.Path) -> None:
    path = kubeconfig(
        tmp_path,
        {"client-certificate": "cert.pem", "client-key": "key.pem"},
        {
            "server": "https://api",
            "certificate-authority": "ca.pem",
            "insecure-skip-tls-verify": False,
        },
    )
    connection = from_kubeconfig(path)
    assert connection.ca_path == str(tmp_path / "ca.pem")
    assert connection.certificate_path == str(tmp_path / "cert.pem")
    assert connection.authorization() is None


def test_exec_plugins_are_refused_with_the_fix(tmp_path: pathlib.Path) -> None:
    path = kubeconfig(tmp_path, {"exec": {"command": "aws"}}, {"server": "https://api"})
    with pytest.raises(KubeconfigError, match=r"exec or auth-provider plugin.*token or a client"):
        from_kubeconfig(path)


def test_a_missing_context_names_what_is_missing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({"current-context": "nope", "contexts": []}))
    with pytest.raises(KubeconfigError, match="no context named 'nope'"):
        from_kubeconfig(path)
