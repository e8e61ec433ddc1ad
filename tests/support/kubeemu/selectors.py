"""Label and field selectors, parsed and matched as the API server does. Pure: no I/O."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from kubeemu.errors import BadRequest

_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_NOT_EXISTS = re.compile(rf"^!\s*({_KEY})$")
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^()]*)\)$")
_COMPARE = re.compile(rf"^({_KEY})\s*(==|=|!=|>|<)\s*({_VALUE})$")
_EXISTS = re.compile(rf"^({_KEY})$")
_VALUE_ONLY = re.compile(rf"^{_VALUE}$")

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclasses.dataclass(frozen=True)
class Selector:
    """A conjunction of requirements; the empty selector matches everything."""

    text: str
    requirements: tuple[Predicate, ...]

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(requirement(obj) for requirement in self.requirements)


def _split(text: str) -> list[str]:
    """Split on the commas that are not inside ``in (...)`` / ``notin (...)`` value sets."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = (obj.get("metadata") or {}).get("labels") or {}
    return labels


def _label_requirement(text: str) -> Predicate:
    if match := _NOT_EXISTS.match(text):
        key = match[1]
        return lambda obj: key not in _labels(obj)
    if match := _SET.match(text):
        key, op = match[1], match[2]
        values = frozenset(v.strip() for v in match[3].split(",") if v.strip())
        if not values or not all(_VALUE_ONLY.match(v) for v in values):
            raise BadRequest(f"unable to parse requirement: invalid value set in {text!r}")
        if op == "in":
            return lambda obj: _labels(obj).get(key) in values
        return lambda obj: _labels(obj).get(key) not in values
    if match := _COMPARE.match(text):
        key, op, value = match[1], match[2], match[3]
        if op in ("=", "=="):
            return lambda obj: _labels(obj).get(key) == value
        if op == "!=":
            return lambda obj: _labels(obj).get(key) != value
        try:
            number = int(value)
        except ValueError as e:
            raise BadRequest(f"unable to parse requirement: {value!r} is not an integer") from e
        sign = 1 if op == ">" else -1

        def compare(obj: Mapping[str, Any]) -> bool:
            found = _int_label(obj, key)
            return found is not None and (found - number) * sign > 0

        return compare
    if match := _EXISTS.match(text):
        key = match[1]
        return lambda obj: key in _labels(obj)
    raise BadRequest(f"unable to parse requirement: {text!r}")


def _int_label(obj: Mapping[str, Any], key: str) -> int | None:
    try:
        return int(_labels(obj)[key])
    except (KeyError, ValueError):
        return None


def parse_label_selector(text: str | None) -> Selector:
    """Parse ``labelSelector``: ``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``."""
    text = text or ""
    return Selector(text, tuple(_label_requirement(part) for part in _split(text)))


# Field selectors: every resource supports metadata.name and metadata.namespace; a few kinds
# support more (those a client of this project might use). Others are rejected with 400.
COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
EXTRA_FIELDS: Mapping[str, frozenset[str]] = {
    "pods": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        }
    ),
    "events": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "regarding.uid",
        }
    ),
    "secrets": frozenset({"type"}),
    "namespaces": frozenset({"status.phase"}),
    "jobs": frozenset({"status.successful"}),
}


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    return str(value)


def parse_field_selector(text: str | None, *, plural: str) -> Selector:
    """Parse ``fieldSelector``: ``field=value``, ``field==value``, ``field!=value``."""
    text = text or ""
    supported = COMMON_FIELDS | EXTRA_FIELDS.get(plural, frozenset())
    requirements: list[Predicate] = []
    for part in _split(text):
        match = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not match:
            raise BadRequest(f"invalid field selector: {part!r}")
        field, op, value = match[1], match[2], match[3].strip()
        if field not in supported:
            raise BadRequest(f'field label not supported: "{field}"')
        requirements.append(_field_requirement(field, value, negated=op == "!="))
    return Selector(text, tuple(requirements))


def _field_requirement(field: str, value: str, *, negated: bool) -> Predicate:
    def requirement(obj: Mapping[str, Any]) -> bool:
        return (_field_value(obj, field) == value) != negated

    return requirement
