"""Patch semantics: JSON patch, merge patch, and approximations of strategic merge and apply.

Pure functions over JSON-like data; they never mutate their inputs.

- JSON patch (RFC 6902) and JSON merge patch (RFC 7386) are implemented in full.
- Strategic merge patch is approximated: a merge patch in which the lists the Kubernetes
  built-ins declare as "merge by key" (containers, env, volumes, ports, conditions, …) are merged
  item by item by that key, ``metadata.finalizers`` is merged as a set, and the directives
  ``$patch: replace|delete``, ``$retainKeys`` and ``$deleteFromPrimitiveList/…`` are honoured.
  ``$setElementOrder/…`` is accepted and ignored. The real server reads the merge keys from
  the Go types; a list not in the table below is replaced, as in a merge patch.
- Server-side apply is approximated as a strategic merge of the applied configuration onto the
  live object: fields that the manager applied before and omits now are NOT removed, and no
  field-ownership conflicts are detected.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from kubeemu.errors import Invalid

# Field name → merge key of the list items, for lists of objects merged item by item.
MERGE_KEYS: Mapping[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "ports": ("containerPort", "port"),  # container ports, service ports
}
# Lists of scalars merged as sets.
SET_LISTS = frozenset({"finalizers"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(copy.deepcopy(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """The approximation of a strategic merge patch described in the module docstring."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if directive == "delete":
        return None
    result = dict(copy.deepcopy(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            drop = set(value or [])
            result[field] = [item for item in result.get(field) or [] if item not in drop]
        elif key.startswith("$"):
            continue  # $setElementOrder/…, $retainKeys (below), unknown directives
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, live: list[Any], patch: list[Any]) -> list[Any]:
    if any(isinstance(item, Mapping) and item.get("$patch") == "replace" for item in patch):
        return [
            copy.deepcopy(i)
            for i in patch
            if not (isinstance(i, Mapping) and i.get("$patch") == "replace")
        ]
    if field in SET_LISTS:
        return [*copy.deepcopy(live), *(item for item in patch if item not in live)]
    key = _merge_key(field, patch)
    if key is None:
        return copy.deepcopy(patch)
    result = copy.deepcopy(live)
    for item in patch:
        index = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, Mapping) and old.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge_patch(None, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _merge_key(field: str, patch: Sequence[Any]) -> str | None:
    if not patch or not all(isinstance(item, Mapping) for item in patch):
        return None
    for key in MERGE_KEYS.get(field, ()):
        if all(key in item for item in patch):
            return key
    return None


def apply_patch(target: Any, applied: Any) -> Any:
    """Server-side apply, approximated as described in the module docstring."""
    return strategic_merge_patch(target, applied)


# JSON patch (RFC 6902).


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise Invalid(f"invalid JSON pointer: {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise Invalid(f"jsonpatch: the path {path!r} does not exist")
    return doc


def _add(doc: Any, parts: list[str], value: Any, path: str) -> Any:
    if not parts:
        return copy.deepcopy(value)
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list) and (last == "-" or _index_within(last, len(parent) + 1)):
        parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(value))
    else:
        raise Invalid(f"jsonpatch add: the path {path!r} cannot be added to")
    return doc


def _index_within(part: str, size: int) -> bool:
    return part.isdigit() and int(part) < size


def _remove(doc: Any, parts: list[str], path: str) -> tuple[Any, Any]:
    if not parts:
        raise Invalid("jsonpatch remove: cannot remove the whole document")
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return doc, parent.pop(int(last))
    raise Invalid(f"jsonpatch remove: the path {path!r} does not exist")


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902. Any failure, including a failed ``test``, is a 422 ``Invalid`` error."""
    if not isinstance(ops, list):
        raise Invalid("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, Mapping) or "op" not in op or "path" not in op:
            raise Invalid(f"jsonpatch: malformed operation {op!r}")
        kind, path = op["op"], op["path"]
        parts = _pointer(path)
        if kind == "add":
            doc = _add(doc, parts, op.get("value"), path)
        elif kind == "remove":
            doc, _ = _remove(doc, parts, path)
        elif kind == "replace":
            _resolve(doc, parts, path)  # must exist
            doc, _ = _remove(doc, parts, path) if parts else (doc, None)
            doc = _add(doc, parts, op.get("value"), path)
        elif kind in ("move", "copy"):
            source = op.get("from", "")
            value = copy.deepcopy(_resolve(doc, _pointer(source), source))
            if kind == "move":
                doc, _ = _remove(doc, _pointer(source), source)
            doc = _add(doc, parts, value, path)
        elif kind == "test":
            found = _resolve(doc, parts, path)
            if found != op.get("value"):
                raise Invalid(
                    f"the server rejected our request due to an error in our request: "
                    f"jsonpatch test operation does not apply: is {found!r},"
                    f" expected {op.get('value')!r} at {path!r}"
                )
        else:
            raise Invalid(f"jsonpatch: unsupported operation {kind!r}")
    return doc
