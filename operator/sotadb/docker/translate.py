"""Pod template → Docker container create arguments. Pure, and the heart of the Docker runtime.

The Kubernetes runtime applies rendered pod templates; this function runs the *same* templates
on a Docker engine, so every data-plane test on Docker also proves the Kubernetes workloads'
commands, files, env and probes:

- image, command (entrypoint) and args;
- env, with `secretKeyRef` / `configMapKeyRef` resolved from the rendered objects;
- ConfigMap and Secret volumes → files in a host directory, bind-mounted read-only;
- the PVC → a named volume; emptyDir → tmpfs (`/dev/shm` → shm size);
- the readiness probe → the healthcheck (the startup probe gives its start period);
- the names of the Services selecting the pod → network aliases (and, when the caller gives
  one, a fixed address on the network: see `addressing`);
- the restricted security context → user, read-only root, dropped capabilities;
- for a Job's pod (backup runner): `restartPolicy: Never` → no restart, downward-API env
  (`fieldRef`) from values the caller knows (e.g. the Job name label), and the termination
  message file → a host file bind-mounted at its path, as the kubelet does.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Final

from sotadb import names
from sotadb.quantity import parse_quantity
from sotadb.render.hashing import content_hash
from sotadb.render.meta import Manifest

NANOSECONDS: Final = 1_000_000_000
LABEL_PLAN_HASH: Final = "sota.io/plan-hash"


class TranslationError(ValueError):
    """The template uses something the Docker runtime cannot run (a bug in render/)."""


@dataclass(frozen=True)
class FileSource:
    """Files a ConfigMap/Secret volume projects: written under `directory`, then mounted."""

    directory: str  # relative to the database's files directory: "<kind>-<name>"
    files: Mapping[str, str] = field(repr=False)
    secret: bool


@dataclass(frozen=True)
class ContainerPlan:
    """Everything needed to create one container, plus the files it mounts."""

    name: str
    create_args: Mapping[str, Any] = field(repr=False)
    file_sources: tuple[FileSource, ...] = field(repr=False)
    volumes: tuple[str, ...]  # named volumes it needs
    plan_hash: str
    stop_timeout: int  # seconds between the stop signal and SIGKILL (the grace period)


@dataclass(frozen=True)
class Catalog:
    """The rendered objects the pod may refer to, looked up by kind and name."""

    objects: Mapping[tuple[str, str], Manifest]

    @classmethod
    def of(cls, objects: list[Manifest]) -> Catalog:
        return cls({(o["kind"], o["metadata"]["name"]): o for o in objects})

    def data(self, kind: str, name: str) -> dict[str, str]:
        try:
            document = self.objects[(kind, name)]
        except KeyError:
            raise TranslationError(
                f"the pod refers to {kind} {name}, which is not rendered"
            ) from None
        raw = document.get("data") or {}
        if kind == "Secret":
            return {key: base64.b64decode(value).decode() for key, value in raw.items()}
        return dict(raw)

    def services_selecting(self, labels: Mapping[str, str]) -> list[str]:
        return sorted(
            name
            for (kind, name), document in self.objects.items()
            if kind == "Service"
            and (document["spec"].get("selector") or {}).items() <= labels.items()
            and document["spec"].get("selector")
        )


def translate(
    *,
    container_name: str,
    pod_template: Mapping[str, Any],
    catalog: Catalog,
    network: str,
    files_root: str,
    volume_claims: Mapping[str, str],
    labels: Mapping[str, str],
    published_ports: Mapping[int, tuple[str, int]] | None = None,
    field_values: Mapping[str, str] | None = None,
    termination_log: str | None = None,
    address: str | None = None,
) -> ContainerPlan:
    """Translate a single-container pod template into docker-py `containers.create` kwargs.

    `volume_claims` maps a pod volume name (a PVC or volumeClaimTemplate) to a Docker volume;
    `published_ports` maps a container port to (host address, host port); `field_values`
    maps a downward-API fieldPath to its value; `termination_log` is a host file mounted at
    the container's terminationMessagePath; `address` is a fixed IPv4 address on `network`.
    """
    pod = pod_template["spec"]
    containers = pod["containers"]
    if len(containers) != 1 or pod.get("initContainers"):
        raise TranslationError("the Docker runtime runs single-container pods")
    container = containers[0]
    pod_labels = dict(pod_template.get("metadata", {}).get("labels") or {})

    file_sources: list[FileSource] = []
    mounts: list[dict[str, Any]] = []
    tmpfs: dict[str, str] = {}
    shm_size: int | None = None
    volume_names: list[str] = []
    volumes_by_name = {volume["name"]: volume for volume in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        target = mount["mountPath"]
        read_only = bool(mount.get("readOnly", False))
        if mount["name"] in volume_claims:
            volume_names.append(volume_claims[mount["name"]])
            mounts.append(_mount("volume", volume_claims[mount["name"]], target, read_only))
            continue
        volume = volumes_by_name.get(mount["name"])
        if volume is None:
            raise TranslationError(f"volumeMount {mount['name']} has no volume")
        if "emptyDir" in volume:
            size = _bytes((volume["emptyDir"] or {}).get("sizeLimit"))
            if target == "/dev/shm":  # noqa: S108 - a path inside the container
                shm_size = size
            else:
                tmpfs[target] = _tmpfs_options(pod.get("securityContext") or {}, size)
        elif "configMap" in volume or "secret" in volume:
            source = _file_source(volume, catalog)
            file_sources.append(source)
            host_path = str(PurePosixPath(files_root) / source.directory)
            mounts.append(_mount("bind", host_path, target, read_only=True))
        else:
            raise TranslationError(f"volume {mount['name']} has a type Docker cannot run")

    if termination_log is not None:
        path = container.get("terminationMessagePath", names.TERMINATION_LOG)
        mounts.append(_mount("bind", termination_log, path, read_only=False))

    security = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
    aliases = [name for name in catalog.services_selecting(pod_labels) if name != container_name]
    limits = (container.get("resources") or {}).get("limits") or {}
    endpoint: dict[str, Any] = {"Aliases": aliases}
    if address is not None:
        endpoint["IPAMConfig"] = {"IPv4Address": address}

    create_args: dict[str, Any] = {
        "image": container["image"],
        "name": container_name,
        "hostname": container_name,
        "environment": _environment(container.get("env") or [], catalog, field_values or {}),
        "labels": {**pod_labels, **labels},
        "mounts": mounts,
        "tmpfs": tmpfs,
        "read_only": bool(security.get("readOnlyRootFilesystem", False)),
        "cap_drop": list((security.get("capabilities") or {}).get("drop") or []),
        "security_opt": (
            ["no-new-privileges:true"] if security.get("allowPrivilegeEscalation") is False else []
        ),
        "restart_policy": {
            "Name": "no" if pod.get("restartPolicy") == "Never" else "unless-stopped"
        },
        "network": network,
        "networking_config": {network: endpoint},
        "detach": True,
    }
    if "command" in container:
        create_args["entrypoint"] = list(container["command"])
    if "args" in container:
        create_args["command"] = list(container["args"])
    if "runAsUser" in security:
        group = security.get("runAsGroup", security["runAsUser"])
        create_args["user"] = f"{security['runAsUser']}:{group}"
    if "fsGroup" in security:
        create_args["group_add"] = [str(security["fsGroup"])]
    if "memory" in limits:
        create_args["mem_limit"] = _bytes(limits["memory"])
    if shm_size:
        create_args["shm_size"] = shm_size
    probe = container.get("readinessProbe")
    if probe is not None:
        create_args["healthcheck"] = _healthcheck(probe, container.get("startupProbe"))
    if published_ports:
        create_args["ports"] = {
            f"{port}/tcp": published for port, published in sorted(published_ports.items())
        }

    plan_hash = content_hash(
        {"args": create_args, "files": [(s.directory, dict(s.files)) for s in file_sources]}
    )
    create_args["labels"][LABEL_PLAN_HASH] = plan_hash
    return ContainerPlan(
        name=container_name,
        create_args=create_args,
        file_sources=tuple(file_sources),
        volumes=tuple(volume_names),
        plan_hash=plan_hash,
        stop_timeout=int(pod.get("terminationGracePeriodSeconds", 30)),
    )


def _tmpfs_options(pod_security: Mapping[str, Any], size: int | None) -> str:
    """An emptyDir is writable by the pod's user; a Docker tmpfs copies the image directory's
    owner and mode instead, so give it the pod's user and group explicitly."""
    options = ["mode=1777"]
    if "runAsUser" in pod_security:
        options.append(f"uid={pod_security['runAsUser']}")
    group = pod_security.get("fsGroup", pod_security.get("runAsGroup"))
    if group is not None:
        options.append(f"gid={group}")
    if size:
        options.append(f"size={size}")
    return ",".join(options)


def _mount(kind: str, source: str, target: str, read_only: bool) -> dict[str, Any]:
    return {"Type": kind, "Source": source, "Target": target, "ReadOnly": read_only}


def _file_source(volume: Mapping[str, Any], catalog: Catalog) -> FileSource:
    if "configMap" in volume:
        kind, name, spec = "ConfigMap", volume["configMap"]["name"], volume["configMap"]
    else:
        kind, name, spec = "Secret", volume["secret"]["secretName"], volume["secret"]
    data = catalog.data(kind, name)
    items = spec.get("items")
    files = {item["path"]: data[item["key"]] for item in items} if items else data
    return FileSource(directory=f"{kind.lower()}-{name}", files=files, secret=kind == "Secret")


def _environment(
    env: list[Mapping[str, Any]], catalog: Catalog, field_values: Mapping[str, str]
) -> dict[str, str]:
    resolved: dict[str, str] = {}
    for variable in env:
        if "value" in variable:
            resolved[variable["name"]] = str(variable["value"])
            continue
        source = variable.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            resolved[variable["name"]] = catalog.data("Secret", ref["name"])[ref["key"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            resolved[variable["name"]] = catalog.data("ConfigMap", ref["name"])[ref["key"]]
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            if path not in field_values:
                raise TranslationError(
                    f"env {variable['name']} reads {path}: pass its value in field_values"
                )
            resolved[variable["name"]] = field_values[path]
        else:
            raise TranslationError(f"env {variable['name']} has a source Docker cannot resolve")
    return resolved


def _healthcheck(probe: Mapping[str, Any], startup: Mapping[str, Any] | None) -> dict[str, Any]:
    if "exec" in probe:
        test = ["CMD", *probe["exec"]["command"]]
    elif "tcpSocket" in probe:
        port = int(probe["tcpSocket"]["port"])
        test = ["CMD", "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{shlex.quote(str(port))}"]
    else:
        raise TranslationError("only exec and tcpSocket probes translate to a healthcheck")
    start_period = 0
    if startup is not None:
        start_period = int(startup.get("periodSeconds", 10)) * int(
            startup.get("failureThreshold", 3)
        )
    return {
        "test": test,
        "interval": int(probe.get("periodSeconds", 10)) * NANOSECONDS,
        "timeout": int(probe.get("timeoutSeconds", 1)) * NANOSECONDS,
        "retries": int(probe.get("failureThreshold", 3)),
        "start_period": start_period * NANOSECONDS,
    }


def _bytes(quantity: str | None) -> int | None:
    return None if quantity is None else int(parse_quantity(quantity))


def default_labels(slug: str) -> dict[str, str]:
    """The labels every Docker object of a database carries (the same keys as on Kubernetes)."""
    return {
        names.LABEL_NAME: names.APP_NAME,
        names.LABEL_INSTANCE: slug,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
    }
