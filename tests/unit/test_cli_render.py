"""`sotadb render -f FILE`: the preview users diff in GitOps."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from sotadb.cli.main import app
from sotadb.credentials import is_valid_password

EXAMPLES = sorted((Path(__file__).parents[2] / "manifests" / "examples").glob("*.yaml"))
runner = CliRunner()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "db.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = "apiVersion: sota.io/v1\nkind: ManagedDatabase\nmetadata: {name: my-app}\n"


def database_examples() -> list[Path]:
    return [p for p in EXAMPLES if "kind: ManagedDatabase" in p.read_text(encoding="utf-8")]


def test_examples_exist():
    assert len(database_examples()) >= 2


def test_the_issues_two_examples_are_there():
    assert {"minimal", "full"} <= {p.stem for p in database_examples()}


@pytest.mark.parametrize("show", [[], ["--show-secrets"]], ids=["redacted", "shown"])
@pytest.mark.parametrize("example", database_examples(), ids=lambda p: p.stem)
def test_render_prints_valid_objects_for_each_example(example, show):
    result = runner.invoke(app, ["render", "-f", str(example), *show])
    assert result.exit_code == 0, result.output
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert len(documents) == 12
    for document in documents:
        for version in ("1.30", "1.33"):
            kubernetes_validate.validate(document, version, strict=True)


def test_shown_secrets_hold_a_working_database_url(tmp_path):
    result = runner.invoke(app, ["render", "-f", str(write(tmp_path, MINIMAL)), "--show-secrets"])
    app_secret = next(
        d for d in yaml.safe_load_all(result.stdout) if d and d["metadata"]["name"].endswith("-app")
    )
    data = {k: base64.b64decode(v).decode() for k, v in app_secret["data"].items()}
    assert is_valid_password(data["PGPASSWORD"])
    assert data["DATABASE_URL"] == (
        f"postgresql://app_my-app:{data['PGPASSWORD']}@sota-pgbouncer-my-app:5432/my-app"
        "?sslmode=disable"
    )
    # Fresh credentials each time: --show-secrets is not the fixed preview stand-in.
    again = runner.invoke(app, ["render", "-f", str(write(tmp_path, MINIMAL)), "--show-secrets"])
    assert again.stdout != result.stdout


def test_secrets_are_redacted_unless_asked(tmp_path):
    path = write(tmp_path, MINIMAL)
    redacted = runner.invoke(app, ["render", "-f", str(path)])
    secrets = [d for d in yaml.safe_load_all(redacted.stdout) if d and d["kind"] == "Secret"]
    assert secrets
    assert all(set(s["data"].values()) == {"<redacted>"} for s in secrets)
    shown = runner.invoke(app, ["render", "-f", str(path), "--show-secrets"])
    revealed = [d for d in yaml.safe_load_all(shown.stdout) if d and d["kind"] == "Secret"]
    assert all("<redacted>" not in s["data"].values() for s in revealed)


def test_previews_are_byte_identical_so_they_diff_cleanly(tmp_path):
    path = write(tmp_path, MINIMAL)
    first = runner.invoke(app, ["render", "-f", str(path)]).stdout
    assert first == runner.invoke(app, ["render", "-f", str(path)]).stdout


def test_json_output_is_a_list(tmp_path):
    result = runner.invoke(app, ["render", "-f", str(write(tmp_path, MINIMAL)), "-o", "json"])
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["kind"] == "List"
    assert len(document["items"]) == 12


def test_several_databases_in_one_file(tmp_path):
    text = MINIMAL + "---\n" + MINIMAL.replace("my-app", "other")
    result = runner.invoke(app, ["render", "-f", str(write(tmp_path, text))])
    assert result.exit_code == 0
    assert len([d for d in yaml.safe_load_all(result.stdout) if d]) == 24


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(MINIMAL.replace("my-app", "My_App"), "metadata.name", id="bad-name"),
        pytest.param(
            MINIMAL + "spec: {pool: {defaultPoolSize: 0}}\n",
            "spec.pool.defaultPoolSize",
            id="bad-pool",
        ),
        pytest.param("a: [", "not valid YAML at line 1", id="bad-yaml"),
        pytest.param("", "holds no ManagedDatabase", id="empty"),
        pytest.param("- a\n- b\n", "holds no ManagedDatabase", id="a-list"),
    ],
)
def test_bad_input_exits_2_with_the_field_and_no_traceback(tmp_path, text, expected):
    path = write(tmp_path, text)
    result = runner.invoke(app, ["render", "-f", str(path)])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert "fix:" in result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == [path], "nothing is written"


def test_a_file_that_is_not_utf8_is_explained(tmp_path):
    path = tmp_path / "db.yaml"
    path.write_bytes(MINIMAL.encode() + b"spec: {storage: {size: \xff}}\n")
    result = runner.invoke(app, ["render", "-f", str(path)])
    assert result.exit_code == 2
    assert "is not UTF-8 text" in result.stderr
    assert "fix:" in result.stderr
    assert result.stdout == ""


def test_a_directory_is_explained(tmp_path):
    result = runner.invoke(app, ["render", "-f", str(tmp_path)])
    assert result.exit_code == 2
    assert "is a directory (fix:" in result.stderr


def test_a_bad_document_among_good_ones_prints_nothing(tmp_path):
    text = MINIMAL + "---\n" + MINIMAL.replace("my-app", "Bad")
    result = runner.invoke(app, ["render", "-f", str(write(tmp_path, text))])
    assert result.exit_code == 2
    assert result.stdout == ""


def test_a_missing_file_is_explained(tmp_path):
    result = runner.invoke(app, ["render", "-f", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "no such file" in result.stderr
