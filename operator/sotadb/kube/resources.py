"""The API resources the operator touches, and their URL paths. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sotadb import names


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [root]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
        if subresource is not None:
            parts.append(subresource)
        return "/".join(parts)


SECRET: Final = Resource("", "v1", "Secret", "secrets")
CONFIG_MAP: Final = Resource("", "v1", "ConfigMap", "configmaps")
SERVICE: Final = Resource("", "v1", "Service", "services")
CLAIM: Final = Resource("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims")
EVENT: Final = Resource("", "v1", "Event", "events")
POD: Final = Resource("", "v1", "Pod", "pods")  # read only: a finished Job's termination message
STATEFUL_SET: Final = Resource("apps", "v1", "StatefulSet", "statefulsets")
DEPLOYMENT: Final = Resource("apps", "v1", "Deployment", "deployments")
CRON_JOB: Final = Resource("batch", "v1", "CronJob", "cronjobs")
JOB: Final = Resource("batch", "v1", "Job", "jobs")
NETWORK_POLICY: Final = Resource("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies")
MANAGED_DATABASE: Final = Resource(
    names.GROUP, names.VERSION, names.KIND_DATABASE, names.PLURAL_DATABASE
)
DATABASE_BACKUP: Final = Resource(
    names.GROUP, names.VERSION, names.KIND_BACKUP, names.PLURAL_BACKUP
)
DATABASE_RESTORE: Final = Resource(
    names.GROUP, names.VERSION, names.KIND_RESTORE, names.PLURAL_RESTORE
)

# Everything a ManagedDatabase owns, by kind (the order matters only for readability).
OWNED: Final = (
    SECRET,
    CONFIG_MAP,
    SERVICE,
    NETWORK_POLICY,
    STATEFUL_SET,
    DEPLOYMENT,
    CLAIM,
    CRON_JOB,
)
BY_KIND: Final = {
    resource.kind: resource
    for resource in (*OWNED, EVENT, JOB, MANAGED_DATABASE, DATABASE_BACKUP, DATABASE_RESTORE)
}
