"""Injecting a database into an app's workload: what to change, as data. Pure (no I/O).

A Deployment or StatefulSet annotated `sota.io/database` asks for a database: `"true"` names it
after the workload, any other value names it (`"false"` asks for none). Its pod template then
gets, for the database `{slug}`:

- `envFrom: [{secretRef: {name: sota-db-{slug}-app}}]` on every container and init container that
  does not reference that Secret yet. The entry goes first: a later envFrom source and `env`
  override it, so whatever the app declares itself wins over what we add.
- the label `db.sota.io/{slug}: direct`, which the database's NetworkPolicy admits to
  PostgreSQL itself (DIRECT_DATABASE_URL, for migrations that take advisory locks).
- the init container `sota-wait-for-database` (PgBouncer's image, which has psql), ahead of the
  app's own init containers (after its native sidecars): it exits once PgBouncer answers
  `select 1` through DATABASE_URL, so nothing that starts after it meets "connection refused".

The workload's metadata gets `sota.io/injected`, the record of what we added (as Istio's
`sidecar.istio.io/status` does), e.g. `{"database":"my-app","envFrom":["app"],"label":true}`:
the database, the containers whose envFrom got the Secret, whether the label is ours. Removal
takes out exactly that, so a template that referenced the Secret or carried the label before
keeps them: removing the injection restores the template as it was.

`plan` is level-based: it compares the live template with the wanted one and returns the
strategic merge patch between them, or None when they agree (no hash to trust: the live fields
are compared, so a hand edit that drops the init container is repaired too). The comparison
reads only the fields we manage, and our init container as "every field we set has our value":
the API server adds defaults (terminationMessagePath, …) that must not read as a difference,
or we would rewrite it for ever. Lists are patched the way the API merges them: containers and
initContainers by name; envFrom has no merge key, so a container's whole envFrom list is sent.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sotadb import names
from sotadb.errors import FieldProblem, InvalidSpec
from sotadb.render.pods import container_security_context

# The user's request, on a Deployment or StatefulSet.
ANNOTATION_DATABASE: Final = "sota.io/database"
# Ours, on the workload: what the injection added (`Injected`).
ANNOTATION_INJECTED: Final = "sota.io/injected"
# On the ManagedDatabases the injection creates: the workload that asked first.
ANNOTATION_CREATED_FOR: Final = "sota.io/created-for"
USE_WORKLOAD_NAME: Final = "true"
NO_DATABASE: Final = "false"

WAIT_CONTAINER: Final = "sota-wait-for-database"
# 150 attempts, each a query of at most WAIT_QUERY_TIMEOUT seconds (its connection at most
# WAIT_CONNECT_TIMEOUT) and a pause of WAIT_INTERVAL: 5 to 30 minutes. Then the init container
# fails, and the kubelet runs it again with its back-off: the loop is bounded, the pod keeps
# trying. (The query's own bound matters: PgBouncer accepts while PostgreSQL is down and holds
# the query up to its query_wait_timeout, 120 s.)
WAIT_ATTEMPTS: Final = 150
WAIT_INTERVAL: Final = 2
WAIT_CONNECT_TIMEOUT: Final = 5
WAIT_QUERY_TIMEOUT: Final = 10
WAIT_RESOURCES: Final = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}

Manifest = dict[str, Any]


class InvalidAnnotation(InvalidSpec):
    """`sota.io/database` names no valid database."""


@dataclass(frozen=True)
class Injected:
    """What an injection added to a pod template: the `sota.io/injected` annotation."""

    database: str
    env_from: tuple[str, ...] = ()  # the containers whose envFrom got the Secret, sorted
    label: bool = True  # the direct-access label is ours (the template did not carry it)

    def encode(self) -> str:
        record = {"database": self.database, "envFrom": list(self.env_from), "label": self.label}
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def decode(cls, value: str | None) -> Injected | None:
        """The record, or None for a missing or unreadable one (then nothing is taken out)."""
        try:
            record = json.loads(value or "")
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        database, env_from = record.get("database"), record.get("envFrom") or []
        if not isinstance(database, str) or not is_slug(database):
            return None
        if not isinstance(env_from, list) or not all(isinstance(n, str) for n in env_from):
            return None
        return cls(database, tuple(sorted(env_from)), record.get("label") is not False)


@dataclass(frozen=True)
class Plan:
    """What one workload needs: the database it asks for (None: none), and the strategic merge
    patch that brings its pod template there (None: it is there already)."""

    database: str | None
    patch: Manifest | None


# ---------------------------------------------------------------- reading the workload


def requested_database(workload: Mapping[str, Any]) -> str | None:
    """The slug `sota.io/database` asks for, or None when the annotation is absent or "false".

    Raises InvalidAnnotation when the value (or, for "true", the workload's name) is no valid
    slug: the message says which and how to fix it.
    """
    metadata = workload.get("metadata") or {}
    value = (metadata.get("annotations") or {}).get(ANNOTATION_DATABASE)
    if value is None or value == NO_DATABASE:
        return None
    field = f"metadata.annotations[{ANNOTATION_DATABASE}]"
    if value == USE_WORKLOAD_NAME:
        slug = str(metadata.get("name") or "")
        if not is_slug(slug):
            raise InvalidAnnotation(
                [
                    FieldProblem(
                        field,
                        f'is "true", but the workload\'s name {slug!r} is no valid database name',
                        f"name the database instead: {ANNOTATION_DATABASE}: <name>, with "
                        f"{_SLUG_RULE}",
                    )
                ]
            )
        return slug
    if not is_slug(value):
        raise InvalidAnnotation(
            [
                FieldProblem(
                    field,
                    f"{value!r} is no valid database name",
                    f'write "true" (the workload\'s name) or a name of {_SLUG_RULE}',
                )
            ]
        )
    return str(value)


_SLUG_RULE: Final = (
    f"1-{names.SLUG_MAX_LENGTH} lowercase letters, digits and hyphens, starting with a letter "
    "and ending with a letter or digit (e.g. my-app)"
)


def is_slug(value: str) -> bool:
    """The ManagedDatabase name rule of sotadb.spec (names.SLUG_PATTERN, SLUG_MAX_LENGTH)."""
    return len(value) <= names.SLUG_MAX_LENGTH and names.SLUG_RE.fullmatch(value) is not None


def injected(workload: Mapping[str, Any]) -> Injected | None:
    """What the workload's pod template carries of ours, by its record."""
    annotations = (workload.get("metadata") or {}).get("annotations") or {}
    return Injected.decode(annotations.get(ANNOTATION_INJECTED))


def concerns_injection(workload: Mapping[str, Any]) -> bool:
    """Whether the workload asks for a database or carries an injection: the cheap filter."""
    annotations = (workload.get("metadata") or {}).get("annotations") or {}
    return ANNOTATION_DATABASE in annotations or ANNOTATION_INJECTED in annotations


# ---------------------------------------------------------------- what we add


def secret_source(slug: str) -> dict[str, Any]:
    return {"secretRef": {"name": names.app_secret_name(slug)}}


def wait_script(attempts: int = WAIT_ATTEMPTS, interval: int = WAIT_INTERVAL) -> str:
    """POSIX sh: a real query through PgBouncer until it answers, at most `attempts` times.

    psql's errors name the host and the role, never the password.
    """
    return (
        "attempt=1\n"
        "while :; do\n"
        f"  if answer=$(timeout {WAIT_QUERY_TIMEOUT} psql \"$DATABASE_URL\" -XtAc 'select 1' 2>&1) "
        '&& [ "$answer" = 1 ]; then\n'
        '    echo "sotadb: the database answers (attempt $attempt)"\n'
        "    exit 0\n"
        "  fi\n"
        f'  [ -n "$answer" ] || answer="no answer within {WAIT_QUERY_TIMEOUT} s"\n'
        f'  if [ "$attempt" -ge {attempts} ]; then\n'
        '    echo "sotadb: the database did not answer in $attempt attempts: $answer" >&2\n'
        "    exit 1\n"
        "  fi\n"
        "  attempt=$((attempt + 1))\n"
        f"  sleep {interval}\n"
        "done\n"
    )


def wait_container(slug: str, image: str = names.POOLER_IMAGE) -> dict[str, Any]:
    """The init container that holds the app back until PgBouncer answers a real query."""
    return {
        "name": WAIT_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", wait_script()],
        "env": [{"name": "PGCONNECT_TIMEOUT", "value": str(WAIT_CONNECT_TIMEOUT)}],
        "envFrom": [secret_source(slug)],
        "resources": copy.deepcopy(WAIT_RESOURCES),
        # The "restricted" Pod Security profile, whatever the app's pod says. The image runs as
        # uid 999 (a number, so runAsNonRoot can be verified).
        "securityContext": {
            **container_security_context(),
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # `kubectl describe pod` then shows psql's last error.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


# ---------------------------------------------------------------- the wanted template


def without_injection(template: Mapping[str, Any], record: Injected) -> dict[str, Any]:
    """The pod template with what `record` says we added taken out, and nothing else."""
    result = copy.deepcopy(dict(template))
    labels = (result.get("metadata") or {}).get("labels")
    if record.label and isinstance(labels, dict):
        labels.pop(names.direct_access_label(record.database), None)
    spec = result.get("spec") or {}
    if spec.get("initContainers"):
        spec["initContainers"] = [c for c in spec["initContainers"] if c["name"] != WAIT_CONTAINER]
        if not spec["initContainers"]:
            del spec["initContainers"]
    ours = secret_source(record.database)
    for container in _app_containers(spec):
        sources = container.get("envFrom")
        if container["name"] in record.env_from and sources and ours in sources:
            container["envFrom"] = [s for s in sources if s != ours]
            if not container["envFrom"]:
                del container["envFrom"]
    return result


def with_injection(
    template: Mapping[str, Any],
    slug: str,
    image: str = names.POOLER_IMAGE,
    previous: Injected | None = None,
) -> tuple[dict[str, Any], Injected]:
    """The pod template with `slug`'s injection in it, and the record of what is ours in it
    (`previous`: the record of an earlier injection of the same database). Idempotent."""
    result = copy.deepcopy(dict(template))
    carried = previous if previous is not None and previous.database == slug else None
    metadata = result.setdefault("metadata", {})
    labels = dict(metadata.get("labels") or {})
    label = names.direct_access_label(slug)
    label_is_ours = labels.get(label) != names.DIRECT_ACCESS_LABEL_VALUE or (
        carried is not None and carried.label
    )
    labels[label] = names.DIRECT_ACCESS_LABEL_VALUE
    metadata["labels"] = labels
    spec = result.setdefault("spec", {})
    ours = secret_source(slug)
    env_from = []
    for container in _app_containers(spec):
        sources = list(container.get("envFrom") or [])
        if not any(_references(source, slug) for source in sources):
            container["envFrom"] = [ours, *sources]
            env_from.append(container["name"])
        elif carried is not None and container["name"] in carried.env_from and ours in sources:
            env_from.append(container["name"])  # added by us before
    wanted = wait_container(slug, image)
    init = list(spec.get("initContainers") or [])
    at = next((i for i, c in enumerate(init) if c["name"] == WAIT_CONTAINER), None)
    if at is None:
        init.insert(_wait_position(init), wanted)
    else:
        init[at] = {**init[at], **wanted}
    spec["initContainers"] = init
    return result, Injected(slug, tuple(sorted(env_from)), label_is_ours)


def _app_containers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The app's own containers and init containers (ours excluded)."""
    init = [c for c in spec.get("initContainers") or [] if c.get("name") != WAIT_CONTAINER]
    return [*init, *(spec.get("containers") or [])]


def _references(source: Mapping[str, Any], slug: str) -> bool:
    """An envFrom source that reads the app Secret already (with a prefix or optional, too)."""
    return (source.get("secretRef") or {}).get("name") == names.app_secret_name(slug)


def _wait_position(init: list[dict[str, Any]]) -> int:
    """Before the app's first init container, after its native sidecars (restartPolicy: Always):
    a sidecar may be what gives the pod its network (a mesh proxy)."""
    for index, container in enumerate(init):
        if container.get("restartPolicy") != "Always":
            return index
    return len(init)


# ---------------------------------------------------------------- the patch


def plan(workload: Mapping[str, Any], image: str = names.POOLER_IMAGE) -> Plan:
    """The level-based decision for one workload: the database it asks for and the patch that
    brings its pod template there (also from one database to another, and back to none).

    Raises InvalidAnnotation for a value that names no valid database (nothing is changed then).
    """
    slug = requested_database(workload)
    previous = injected(workload)
    template = ((workload.get("spec") or {}).get("template")) or {}
    wanted = template
    if previous is not None and previous.database != slug:
        wanted = without_injection(wanted, previous)
    record = None
    if slug is not None:
        wanted, record = with_injection(wanted, slug, image, previous)
    databases = [r.database for r in (previous, record) if r is not None]
    patch = _template_patch(template, wanted, databases)
    live = ((workload.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_INJECTED)
    value = record.encode() if record is not None else None
    if live != value:
        patch["metadata"] = {"annotations": {ANNOTATION_INJECTED: value}}
    return Plan(database=slug, patch=patch or None)


def injection_patch(
    workload: Mapping[str, Any], slug: str, image: str = names.POOLER_IMAGE
) -> Manifest | None:
    """The patch that injects `slug` (as if the workload were annotated with it)."""
    return plan(_annotated(workload, slug), image).patch


def removal_patch(workload: Mapping[str, Any]) -> Manifest | None:
    """The patch that takes the injection out (as if the annotation were removed)."""
    return plan(_annotated(workload, None)).patch


def _annotated(workload: Mapping[str, Any], slug: str | None) -> dict[str, Any]:
    result = copy.deepcopy(dict(workload))
    metadata = result.setdefault("metadata", {})
    annotations = dict(metadata.get("annotations") or {})
    annotations.pop(ANNOTATION_DATABASE, None)
    if slug is not None:
        annotations[ANNOTATION_DATABASE] = slug
    metadata["annotations"] = annotations
    return result


def _template_patch(
    live: Mapping[str, Any], wanted: Mapping[str, Any], databases: Iterable[str]
) -> dict[str, Any]:
    """The strategic merge patch from `live` to `wanted` over the fields the injection manages:
    the direct-access labels of `databases`, the envFrom lists, our init container."""
    template: dict[str, Any] = {}
    live_labels = (live.get("metadata") or {}).get("labels") or {}
    wanted_labels = (wanted.get("metadata") or {}).get("labels") or {}
    labels = {
        key: wanted_labels.get(key)
        for key in sorted({names.direct_access_label(d) for d in databases})
        if live_labels.get(key) != wanted_labels.get(key)
    }
    if labels:
        template["metadata"] = {"labels": labels}

    live_spec = live.get("spec") or {}
    wanted_spec = wanted.get("spec") or {}
    spec: dict[str, Any] = {}
    containers = _env_from_changes(live_spec.get("containers"), wanted_spec.get("containers"))
    if containers:
        spec["containers"] = containers
    spec.update(_init_changes(live_spec.get("initContainers"), wanted_spec.get("initContainers")))
    if spec:
        template["spec"] = spec
    return {"spec": {"template": template}} if template else {}


def _env_from_changes(live: Any, wanted: Any) -> list[dict[str, Any]]:
    """Containers (by name) whose envFrom differs: each with its whole wanted list (None: the
    field goes)."""
    wanted_by_name = {c["name"]: c for c in wanted or []}
    changes = []
    for container in live or []:
        target = wanted_by_name.get(container["name"])
        if target is None or container["name"] == WAIT_CONTAINER:
            continue
        if container.get("envFrom") != target.get("envFrom"):
            changes.append({"name": container["name"], "envFrom": target.get("envFrom")})
    return changes


def _init_changes(live: Any, wanted: Any) -> dict[str, Any]:
    live = list(live or [])
    wanted = list(wanted or [])
    live_wait = next((c for c in live if c["name"] == WAIT_CONTAINER), None)
    wanted_wait = next((c for c in wanted if c["name"] == WAIT_CONTAINER), None)
    if live_wait is not None and not wanted:
        return {"initContainers": None}  # ours was the only one: the list goes, as it came
    changes = _env_from_changes(live, wanted)
    order: dict[str, Any] = {}
    if wanted_wait is not None and (live_wait is None or not _contains(live_wait, wanted_wait)):
        changes.insert(0, wanted_wait)
        if live_wait is None and live:
            order["$setElementOrder/initContainers"] = [{"name": c["name"]} for c in wanted]
    elif wanted_wait is None and live_wait is not None:
        changes.insert(0, {"name": WAIT_CONTAINER, "$patch": "delete"})
    return {**order, "initContainers": changes} if changes else {}


def _contains(live: Any, wanted: Any) -> bool:
    """Every field `wanted` sets has that value in `live` (which may have more: defaults)."""
    if isinstance(wanted, Mapping):
        return isinstance(live, Mapping) and all(
            _contains(live.get(key), value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(_contains(a, b) for a, b in zip(live, wanted, strict=True))
        )
    return bool(live == wanted)
