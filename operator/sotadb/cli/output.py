"""The only place the CLI writes to the terminal (ruff bans print elsewhere)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import yaml


def emit(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def fail(message: str) -> None:
    """A user-facing error line on stderr: no traceback, no secret."""
    print(f"error: {message}", file=sys.stderr)


def to_yaml_documents(documents: Iterable[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all(
        [dict(document) for document in documents], sort_keys=False, default_flow_style=False
    )


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)
