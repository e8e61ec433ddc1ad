"""API tokens: shown once, stored as a hash (mode 0600), scoped, revocable; and their CLI."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sotadb.api import tokens as tokens_module
from sotadb.api.tokens import TOKEN_PREFIX, TokenStore, hash_token
from sotadb.cli import serve_commands
from sotadb.errors import InvalidSpec, StateCorrupted

PROJECT = "550e8400-e29b-41d4-a716-446655440000"
EVERY_ADDRESS = "0.0.0.0"  # noqa: S104 - only parsed, never bound


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "tokens.json")


def test_a_token_is_prefixed_random_and_long(store):
    _, first = store.create(PROJECT)
    _, second = store.create(PROJECT)
    assert first.startswith(TOKEN_PREFIX)
    assert second.startswith(TOKEN_PREFIX)
    assert first != second
    assert len(first) == len(TOKEN_PREFIX) + 43  # token_urlsafe(32): 256 bits


def test_only_the_hash_is_stored_in_a_private_file(store):
    record, token = store.create(PROJECT)
    text = store.path.read_text()
    assert token not in text
    assert token[len(TOKEN_PREFIX) :] not in text
    assert hash_token(token) in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    entry = json.loads(text)["tokens"][0]
    assert entry == {
        "id": record.id,
        "project": PROJECT,
        "prefix": token[:9],
        "createdAt": record.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sha256": hash_token(token),
    }


def test_authenticate_finds_the_tokens_record(store):
    record, token = store.create(PROJECT)
    store.create("other")
    assert store.authenticate(token) == record
    assert store.authenticate(token + "x") is None
    assert store.authenticate(token[:-1]) is None
    assert store.authenticate("") is None
    assert store.authenticate(hash_token(token)) is None  # the stored hash is not a token


def test_a_revoked_token_no_longer_authenticates(store):
    record, token = store.create(PROJECT)
    _, kept = store.create(PROJECT)
    assert store.revoke(record.id) == record
    assert store.authenticate(token) is None
    assert store.authenticate(kept) is not None
    assert store.revoke(record.id) is None


def test_a_running_server_sees_new_and_revoked_tokens(store, tmp_path):
    """The server's store re-reads the file when another process (the CLI) changed it."""
    server = TokenStore(store.path)
    assert server.authenticate(TOKEN_PREFIX + "x") is None
    record, token = store.create(PROJECT)
    assert server.authenticate(token) == record
    store.revoke(record.id)
    assert server.authenticate(token) is None


def test_no_file_means_no_tokens(store):
    assert store.records() == ()
    assert store.authenticate(TOKEN_PREFIX + "x") is None


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param('{"version": 2, "tokens": []}', id="version"),
        pytest.param('{"version": 1, "tokens": [{"id": 1}]}', id="entry"),
    ],
)
def test_a_corrupt_file_is_state_corrupted(store, content):
    store.path.write_text(content)
    with pytest.raises(StateCorrupted):
        store.records()


@pytest.mark.parametrize("project", ["", "a/b", "..", "é", "a" * 254])
def test_a_project_the_api_cannot_address_is_refused(store, project):
    with pytest.raises(InvalidSpec):
        store.create(project)
    assert not store.path.exists()


def test_concurrent_creates_lose_no_token(store):
    made: list[str] = []

    def create() -> None:
        made.append(TokenStore(store.path).create(PROJECT)[1])

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(made) == 8
    assert all(store.authenticate(token) is not None for token in made)


def test_authentication_compares_with_every_stored_hash(store, monkeypatch):
    """No early exit: the number of comparisons does not depend on where (or if) it matches."""
    tokens = [store.create(PROJECT)[1] for _ in range(3)]
    calls: list[int] = []
    real = tokens_module.hmac.compare_digest

    def counting(a: str, b: str) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", counting)
    for presented in [tokens[0], tokens[2], TOKEN_PREFIX + "nope"]:
        calls.clear()
        store.authenticate(presented)
        assert len(calls) == 3


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def cli(tmp_path, monkeypatch) -> typer.Typer:
    """The commands as main.py registers them."""
    monkeypatch.setenv("SOTADB_HOME", str(tmp_path))
    app = typer.Typer()
    app.command("serve")(serve_commands.serve)
    app.add_typer(serve_commands.token_app, name="token")
    return app


def test_cli_create_prints_the_token_once_and_list_never(cli, tmp_path):
    runner = CliRunner()
    created = runner.invoke(cli, ["token", "create", PROJECT])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith(TOKEN_PREFIX)
    assert TokenStore(tmp_path / "tokens.json").authenticate(token) is not None
    listed = runner.invoke(cli, ["token", "list"])
    assert listed.exit_code == 0
    assert PROJECT in listed.stdout
    assert f"p-{PROJECT}" in listed.stdout
    assert token not in listed.output
    assert token[9:] not in listed.output
    as_json = json.loads(runner.invoke(cli, ["token", "list", "-o", "json"]).stdout)
    assert [row["project"] for row in as_json] == [PROJECT]
    assert "token" not in as_json[0]
    assert "sha256" not in as_json[0]


def test_cli_create_json_carries_the_token(cli):
    result = CliRunner().invoke(cli, ["token", "create", "my-app", "-o", "json"])
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert body["token"].startswith(TOKEN_PREFIX)
    assert body["project"] == "my-app"
    assert body["slug"] == "my-app"


def test_cli_revoke(cli, tmp_path):
    runner = CliRunner()
    body = json.loads(runner.invoke(cli, ["token", "create", PROJECT, "-o", "json"]).stdout)
    assert runner.invoke(cli, ["token", "revoke", body["id"]]).exit_code == 0
    assert TokenStore(tmp_path / "tokens.json").authenticate(body["token"]) is None
    again = runner.invoke(cli, ["token", "revoke", body["id"]])
    assert again.exit_code == 1
    assert "no token" in again.stderr


def test_cli_create_refuses_a_bad_project_with_exit_2(cli):
    result = CliRunner().invoke(cli, ["token", "create", "a/b"])
    assert result.exit_code == 2
    assert "PROJECT" in result.stderr
    assert not result.stdout


def test_serve_binds_loopback_by_default(cli, monkeypatch):
    seen: list[serve_commands.ServeOptions] = []
    monkeypatch.setattr(serve_commands, "run_server", seen.append)
    assert CliRunner().invoke(cli, ["serve"]).exit_code == 0
    assert seen == [serve_commands.ServeOptions("127.0.0.1", 8080, "info", access_log=True)]
    CliRunner().invoke(cli, ["serve", "--host", EVERY_ADDRESS, "--port", "9000"])
    assert seen[-1].host == EVERY_ADDRESS
    assert seen[-1].port == 9000
