"""Check custom resources against a CRD the way the API server would, without an API server.

An admission here is: default the object (`apply_defaults`), validate it against the
openAPIV3Schema translated to JSON Schema (`to_json_schema`), then evaluate every
`x-kubernetes-validations` rule with cel-python (`evaluate_rules`), transition rules against
the old object on updates. Kubernetes' CEL `quantity()` library is emulated on top of
`sotadb.quantity.parse_quantity`, so it accepts sotadb's quantity grammar (a subset of
Kubernetes').

Choices, where the API server has more than one behaviour:
- Unknown fields are errors, as with kubectl's default `--validate=strict` (not pruned).
- Schema errors the API server treats as blocking (wrong type, enum, required, too long, too
  many) skip the CEL rules, with the server's message.
- Regular expressions (`pattern`, CEL `matches`) use RE2, as Kubernetes does: `$` is the end
  of the text, never before a trailing newline.
- Not emulated: ratcheting of unchanged invalid values, CEL cost limits, `optionalOldSelf`,
  timestamps for `format: date-time` strings in CEL.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import celpy
import jsonschema
import re2  # type: ignore[import-untyped]
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from sotadb.quantity import parse_quantity

Json = Any
RULES: Final = "x-kubernetes-validations"
# The old value on a create, or where an update has no correlated old value.
MISSING: Final = object()
_BLOCKING: Final = frozenset(
    {"type", "enum", "required", "maxLength", "maxItems", "maxProperties", "additionalProperties"}
)
_NOT_CHECKED: Final = (
    "<root>: some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)
# Keywords a structural schema may not use anywhere.
_FORBIDDEN_KEYWORDS: Final = frozenset(
    {"$ref", "definitions", "dependencies", "patternProperties", "additionalItems", "id"}
)


@dataclass(frozen=True)
class Crd:
    """One CustomResourceDefinition document and its served-and-stored version's schema."""

    document: Mapping[str, Any]

    @classmethod
    def load(cls, path: Path) -> Crd:
        return cls(yaml.safe_load(path.read_text()))

    @property
    def version(self) -> Mapping[str, Any]:
        versions: list[Mapping[str, Any]] = self.document["spec"]["versions"]
        return next(v for v in versions if v.get("storage"))

    @property
    def schema(self) -> Mapping[str, Any]:
        schema: Mapping[str, Any] = self.version["schema"]["openAPIV3Schema"]
        return schema

    def default(self, obj: Mapping[str, Json]) -> dict[str, Json]:
        defaulted: dict[str, Json] = apply_defaults(obj, self.schema)
        return defaulted

    def validate(self, obj: Mapping[str, Json], old: Mapping[str, Json] | None = None) -> list[str]:
        """Errors of an already defaulted object (and, on update, the stored one)."""
        errors = schema_errors(obj, self.schema)
        if any(blocking for _, blocking in errors):
            return [message for message, _ in errors] + [_NOT_CHECKED]
        root_old = MISSING if old is None else _cel_root(old)
        return [m for m, _ in errors] + evaluate_rules(self.schema, _cel_root(obj), root_old)

    def admit(self, obj: Mapping[str, Json], old: Mapping[str, Json] | None = None) -> list[str]:
        """What the API server says to a create (old is None) or an update: [] means accepted."""
        return self.validate(self.default(obj), None if old is None else self.default(old))


def _cel_root(obj: Mapping[str, Json]) -> dict[str, Json]:
    """At the root, CEL sees metadata.name and metadata.generateName only."""
    metadata = obj.get("metadata") or {}
    visible = {k: metadata[k] for k in ("name", "generateName") if k in metadata}
    return {**obj, "metadata": visible}


# --- JSON Schema --------------------------------------------------------------------------------


def to_json_schema(node: Mapping[str, Any], *, root: bool = True) -> dict[str, Any]:
    """Translate an OpenAPI v3 structural schema node into JSON Schema (Draft 2020-12).

    The root's metadata is an ObjectMeta, which the API server checks itself: it stays open."""
    out: dict[str, Any] = {
        k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"
    }
    if "properties" in node:
        out["properties"] = {
            k: to_json_schema(v, root=False) for k, v in node["properties"].items()
        }
        if root and "metadata" in node["properties"]:
            out["properties"]["metadata"] = {"type": "object"}
    if isinstance(node.get("additionalProperties"), Mapping):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"], root=False)
    if "items" in node:
        out["items"] = to_json_schema(node["items"], root=False)
    for junctor in ("allOf", "anyOf", "oneOf"):
        if junctor in node:
            out[junctor] = [to_json_schema(n, root=False) for n in node[junctor]]
    if "not" in node:
        out["not"] = to_json_schema(node["not"], root=False)
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if node.get("type") == "object" and "additionalProperties" not in node and not preserve:
        out["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string") is True:
        out["anyOf"] = [*out.get("anyOf", []), {"type": "integer"}, {"type": "string"}]
    if node.get("nullable") is True and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _re2_pattern(
    validator: Any, pattern: str, instance: Json, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if isinstance(instance, str) and re2.search(pattern, instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator: Final = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"pattern": _re2_pattern}
)


def schema_errors(obj: Json, node: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """(message, blocks the CEL rules) for each OpenAPI violation."""
    validator = _Validator(to_json_schema(node), format_checker=_Validator.FORMAT_CHECKER)
    found = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    return [(f"{_path(e.absolute_path)}: {e.message}", e.validator in _BLOCKING) for e in found]


def _path(parts: Sequence[Any]) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return text.lstrip(".") or "<root>"


# --- Defaulting ---------------------------------------------------------------------------------


def apply_defaults(value: Json, node: Mapping[str, Any]) -> Json:
    """Return a defaulted deep copy, as the API server defaults: a missing (or non-nullable
    null) property takes its default, then the children of every value (defaulted or not) are
    defaulted in turn; other non-nullable nulls are pruned."""
    value = copy.deepcopy(value)
    _default_in_place(value, node)
    return value


def _default_in_place(value: Json, node: Mapping[str, Any]) -> None:
    if isinstance(value, dict):
        properties: Mapping[str, Any] = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key in list(value):
            child = properties.get(key, extra if isinstance(extra, Mapping) else None)
            if value[key] is None and child is not None and not child.get("nullable"):
                del value[key]
        for key, child in properties.items():
            if key not in value and "default" in child:
                value[key] = copy.deepcopy(child["default"])
        for key, item in value.items():
            child = properties.get(key, extra if isinstance(extra, Mapping) else None)
            if child is not None:
                _default_in_place(item, child)
    elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
        for item in value:
            _default_in_place(item, node["items"])


# --- CEL ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantity:
    """A Kubernetes resource.Quantity in CEL: an exact number compared by value."""

    value: Decimal


def _quantity(text: Json) -> Quantity | CELEvalError:
    if not isinstance(text, str):
        raise TypeError(f"quantity() takes a string, not {type(text).__name__}")
    try:
        return Quantity(parse_quantity(str(text)))
    except ValueError as e:
        return CELEvalError(f"quantity: {e}", ValueError, e.args)


def _both(a: Json, b: Json) -> tuple[Decimal, Decimal]:
    if not isinstance(a, Quantity):
        raise TypeError("no such overload: the receiver is not a quantity")
    if isinstance(b, Quantity):
        return a.value, b.value
    if isinstance(b, int) and not isinstance(b, bool):
        return a.value, Decimal(b)
    raise TypeError("no such overload: the operand is not a quantity or an int")


def _compare(a: Json, b: Json) -> celtypes.IntType:
    x, y = _both(a, b)
    return celtypes.IntType((x > y) - (x < y))


def _as_integer(q: Json) -> celtypes.IntType:
    x, _ = _both(q, 0)
    if x != x.to_integral_value() or not -(2**63) <= x < 2**63:
        raise ValueError("cannot convert value to integer")
    return celtypes.IntType(int(x))


def _is_integer(q: Json) -> celtypes.BoolType:
    try:
        _as_integer(q)
    except ValueError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def _add(a: Json, b: Json) -> Quantity:
    x, y = _both(a, b)
    return Quantity(x + y)


def _sub(a: Json, b: Json) -> Quantity:
    x, y = _both(a, b)
    return Quantity(x - y)


# The Kubernetes quantity library (k8s.io/apiserver/pkg/cel/library/quantity.go). cel-python
# has no methods on custom types: `a.compareTo(b)` calls the function compareTo(a, b).
QUANTITY_FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = {
    "quantity": _quantity,
    "isQuantity": lambda t: celtypes.BoolType(not isinstance(_quantity(t), CELEvalError)),
    "compareTo": _compare,
    "isLessThan": lambda a, b: celtypes.BoolType(_compare(a, b) < 0),
    "isGreaterThan": lambda a, b: celtypes.BoolType(_compare(a, b) > 0),
    "sign": lambda q: _compare(q, 0),
    "isInteger": _is_integer,
    "asInteger": _as_integer,
    "asApproximateFloat": lambda q: celtypes.DoubleType(float(_both(q, 0)[0])),
    "add": _add,
    "sub": _sub,
}


_ENVIRONMENT: Final = celpy.Environment()


@functools.cache
def compile_rule(expression: str) -> celpy.Runner:
    """Compile once; raises celpy.CELParseError on a syntax error."""
    return _ENVIRONMENT.program(
        _ENVIRONMENT.compile(expression), functions=dict(QUANTITY_FUNCTIONS)
    )


def is_transition_rule(expression: str) -> bool:
    return re.search(r"\boldSelf\b", expression) is not None


def evaluate_rules(node: Mapping[str, Any], value: Json, old: Json = MISSING) -> list[str]:
    """Evaluate every rule in the schema where the object has a value; transition rules only
    where the old object (MISSING on create) has a correlated value: object properties, map
    keys, list-type map keys and set items."""
    errors: list[str] = []
    _walk(node, value, old, (), errors)
    return errors


def _walk(
    node: Mapping[str, Any], value: Json, old: Json, path: tuple[Any, ...], errors: list[str]
) -> None:
    for rule in node.get(RULES, ()):
        expression: str = rule["rule"]
        transition = is_transition_rule(expression)
        if transition and old is MISSING:
            continue
        activation = {"self": json_to_cel(value)}
        if transition:
            activation["oldSelf"] = json_to_cel(old)
        outcome = _run(expression, activation)
        if outcome is True:
            continue
        where = (_path(path) if path else "") + rule.get("fieldPath", "")
        detail = "" if outcome is False else f" ({outcome})"
        errors.append(f"{where.lstrip('.') or '<root>'}: {_message(rule, activation)}{detail}")
    if isinstance(value, dict):
        properties: Mapping[str, Any] = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, item in value.items():
            child = properties.get(key, extra if isinstance(extra, Mapping) else None)
            if child is not None:
                previous = old.get(key, MISSING) if isinstance(old, dict) else MISSING
                _walk(child, item, previous, (*path, key), errors)
    elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
        for index, item in enumerate(value):
            _walk(node["items"], item, _correlate(node, item, old), (*path, index), errors)


def _correlate(node: Mapping[str, Any], item: Json, old: Json) -> Json:
    if not isinstance(old, list):
        return MISSING
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        return item if item in old else MISSING
    if list_type == "map" and isinstance(item, dict):
        keys = node.get("x-kubernetes-list-map-keys", [])
        for candidate in old:
            if isinstance(candidate, dict) and all(candidate.get(k) == item.get(k) for k in keys):
                return candidate
    return MISSING


def _run(expression: str, activation: Mapping[str, Json]) -> bool | str:
    """True or False, or the text of the evaluation error (which fails the rule too)."""
    try:
        result = compile_rule(expression).evaluate(dict(activation))
    except CELEvalError as e:
        return f"rule error: {e.args[0] if e.args else e}"
    if isinstance(result, CELEvalError):
        return f"rule error: {result.args[0] if result.args else result}"
    if not isinstance(result, celtypes.BoolType):
        return f"rule error: evaluated to {type(result).__name__}, not a bool"
    return bool(result)


def _message(rule: Mapping[str, Any], activation: Mapping[str, Json]) -> str:
    if "messageExpression" in rule:
        try:
            text = compile_rule(rule["messageExpression"]).evaluate(dict(activation))
        except CELEvalError:
            text = None
        if isinstance(text, str) and text.strip() and "\n" not in text:
            return str(text)
    return str(rule.get("message") or f"failed rule: {rule['rule']}")


# --- Structural schema --------------------------------------------------------------------------


def structural_problems(node: Mapping[str, Any], path: str = "<root>") -> list[str]:
    """The main rules of Kubernetes structural schemas (apiextensions-apiserver's
    ValidateStructural), plus: defaults validate, rules compile, every fieldPath exists and
    every node but the root's metadata has a description (for `kubectl explain`)."""
    problems: list[str] = []
    if path == "<root>":
        problems += _root_problems(node)
    special = node.get("x-kubernetes-int-or-string") or node.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if "type" not in node and not special:
        problems.append(f"{path}: has no type")
    if node.get("x-kubernetes-int-or-string") and "type" in node:
        problems.append(f"{path}: x-kubernetes-int-or-string must not have a type")
    if not node.get("description"):
        problems.append(f"{path}: has no description")
    problems += [f"{path}: uses {k}" for k in sorted(_FORBIDDEN_KEYWORDS & node.keys())]
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: has both properties and additionalProperties")
    if node.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties must not be false")
    if node.get("uniqueItems") is True:
        problems.append(f"{path}: uniqueItems must not be true")
    if node.get("type") == "array" and not isinstance(node.get("items"), Mapping):
        problems.append(f"{path}: an array needs one items schema")
    if node.get("x-kubernetes-list-type") == "map":
        items = node.get("items", {})
        for key in node.get("x-kubernetes-list-map-keys", []) or ["(none)"]:
            key_schema = items.get("properties", {}).get(key)
            if key_schema is None or (
                key not in items.get("required", []) and "default" not in key_schema
            ):
                problems.append(f"{path}: list-map key {key} must be a required property")
    for junctor in ("allOf", "anyOf", "oneOf", "not"):
        for sub in node.get(junctor, []) if junctor != "not" else [node.get("not", {})]:
            banned = {"type", "default", "description", "nullable", "additionalProperties"}
            problems += [f"{path}.{junctor}: uses {k}" for k in sorted(banned & sub.keys())]
    if "default" in node:
        defaulted = apply_defaults(node["default"], node)
        problems += [f"{path} default: {m}" for m, _ in schema_errors(defaulted, node)]
    for rule in node.get(RULES, []):
        for key in ("rule", "messageExpression"):
            if key in rule:
                try:
                    compile_rule(rule[key])
                except CELParseError as e:
                    problems.append(f"{path}: {key} {rule[key]!r} does not compile: {e}")
        if "fieldPath" in rule and _resolve(node, rule["fieldPath"]) is None:
            problems.append(f"{path}: fieldPath {rule['fieldPath']} is not a field")
    for key, child in node.get("properties", {}).items():
        if not (path == "<root>" and key == "metadata"):
            problems += structural_problems(child, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), Mapping):
            problems += structural_problems(node[key], f"{path}[{key}]")
    return problems


def _resolve(node: Mapping[str, Any], dotted: str) -> Mapping[str, Any] | None:
    """The schema node at a simple `.a.b` path below `node`, or None."""
    current: Mapping[str, Any] | None = node
    for part in dotted.lstrip(".").split("."):
        if current is None:
            return None
        current = current.get("properties", {}).get(part)
    return current


def _root_problems(root: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if root.get("type") != "object":
        problems.append("<root>: type must be object")
    problems += [
        f"<root>: must not use {k}" for k in ("additionalProperties", "default") if k in root
    ]
    properties = root.get("properties", {})
    problems += [
        f"<root>.{k}: type must be string"
        for k in ("apiVersion", "kind")
        if k in properties and properties[k].get("type") != "string"
    ]
    metadata = dict(properties.get("metadata", {}))
    if metadata.pop("type", "object") != "object":
        problems.append("<root>.metadata: type must be object")
    if set(metadata.pop("properties", {})) - {"name", "generateName"} or metadata:
        problems.append(
            "<root>.metadata: must not specify anything other than name and generateName"
        )
    return problems
