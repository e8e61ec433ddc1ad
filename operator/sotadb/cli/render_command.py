"""`sotadb render -f FILE`: print every object the operator would create, for review and diffs."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final

import typer
import yaml

from sotadb import names
from sotadb.credentials import Credentials, scram_verifier
from sotadb.errors import FieldProblem, InvalidSpec
from sotadb.render import render_objects
from sotadb.render.meta import Manifest
from sotadb.spec import ManagedDatabase, parse_database

from . import output

REDACTED: Final = "<redacted>"
# Stable stand-ins, so that two previews of the same file are byte-identical and diff cleanly.
_PREVIEW_PASSWORD: Final = "0" * 32
EXIT_INVALID: Final = 2


class OutputFormat(StrEnum):
    YAML = "yaml"
    JSON = "json"


@dataclass(frozen=True)
class RenderOptions:
    file: Path
    show_secrets: bool
    output: OutputFormat


def render(
    file: Annotated[
        Path, typer.Option("--file", "-f", help="A YAML file holding ManagedDatabase documents.")
    ],
    show_secrets: Annotated[
        bool,
        typer.Option(
            "--show-secrets", help="Print Secret values, with freshly generated credentials."
        ),
    ] = False,
    output_format: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="Output format.")
    ] = OutputFormat.YAML,
) -> None:
    """Print every object the operator would create for the ManagedDatabases in FILE."""
    options = RenderOptions(file=file, show_secrets=show_secrets, output=output_format)
    try:
        text = render_file(options)
    except InvalidSpec as e:
        for problem in e.problems:
            output.fail(f"{options.file}: {problem}")
        raise typer.Exit(EXIT_INVALID) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        output.fail(f"{options.file}: {_describe_read_error(e)}")
        raise typer.Exit(EXIT_INVALID) from None
    output.emit(text)


def render_file(options: RenderOptions) -> str:
    """Parse every document first, so bad input prints nothing but the error."""
    databases = [parse_database(document) for document in _load_documents(options.file)]
    objects: list[Manifest] = []
    for db in databases:
        credentials = Credentials.generate() if options.show_secrets else _preview_credentials()
        for document in render_objects(db, credentials):
            objects.append(document if options.show_secrets else redact(document))
    if options.output is OutputFormat.JSON:
        return output.to_json({"apiVersion": "v1", "kind": "List", "items": objects})
    return _yaml_header(databases) + output.to_yaml_documents(objects)


def redact(document: Manifest) -> Manifest:
    if document.get("kind") != "Secret":
        return document
    redacted = copy.deepcopy(document)
    for field in ("data", "stringData"):
        if field in redacted:
            redacted[field] = dict.fromkeys(redacted[field], REDACTED)
    return redacted


def _preview_credentials() -> Credentials:
    return Credentials(
        password=_PREVIEW_PASSWORD,
        verifier=scram_verifier(_PREVIEW_PASSWORD, salt=bytes(16)),
    )


def _load_documents(file: Path) -> list[dict[str, Any]]:
    source = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    documents = [d for d in yaml.safe_load_all(source) if d is not None]
    if not documents:
        raise InvalidSpec([_no_document_problem()])
    for document in documents:
        if not isinstance(document, dict):
            raise InvalidSpec([_no_document_problem()])
    return documents


def _no_document_problem() -> FieldProblem:
    return FieldProblem(
        "(file)",
        f"holds no {names.KIND_DATABASE} document",
        f"write one, e.g. apiVersion: {names.API_VERSION}, kind: {names.KIND_DATABASE}, "
        "metadata: {name: my-app}",
    )


def _yaml_header(databases: list[ManagedDatabase]) -> str:
    lines = ["# Rendered by sotadb. Secret values are redacted unless --show-secrets."]
    if any(db.uid is None for db in databases):
        lines.append("# ownerReferences are added once the ManagedDatabase exists (it has no uid).")
    return "\n".join(lines) + "\n"


def _describe_read_error(error: OSError | UnicodeDecodeError | yaml.YAMLError) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such file (fix: check the path given to -f)"
    if isinstance(error, IsADirectoryError):
        return "is a directory (fix: give -f a YAML file)"
    if isinstance(error, UnicodeDecodeError):
        return f"is not UTF-8 text at byte {error.start} (fix: save the file as UTF-8)"
    if isinstance(error, OSError):
        return f"cannot be read: {error.strerror} (fix: check its permissions)"
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"is not valid YAML{where} (fix: correct the syntax there)"
