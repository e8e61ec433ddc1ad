"""An emulated Kubernetes API server for tests, built on kmock 0.8 (see README.md)."""

from kubeemu.emulator import KubeEmulator
from kubeemu.kubectl import Kubectl
from kubeemu.manifests import crd, kopf_peering_crds
from kubeemu.requestlog import ApiCall, Write

__all__ = ["ApiCall", "KubeEmulator", "Kubectl", "Write", "crd", "kopf_peering_crds"]
