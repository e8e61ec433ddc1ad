"""Entry point: `sotadb <command>`."""

from __future__ import annotations

import sys
from typing import Any

import typer

from sotadb.cli import operator_command

HELP = "Managed PostgreSQL 17 behind PgBouncer, on Kubernetes and on a single Docker host."


def main() -> None:
    """Managed PostgreSQL 17 behind PgBouncer, on Kubernetes and on a single Docker host."""


def _new_app() -> typer.Typer:
    app = typer.Typer(
        name="sotadb",
        help=HELP,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(main)
    app.command("operator")(operator_command.operator)
    return app


def build_app() -> typer.Typer:
    """Every command."""
    from sotadb.cli import backup_commands, docker_commands, render_command, serve_commands

    app = _new_app()
    app.command("render")(render_command.render)
    docker_commands.register(app)
    app.add_typer(backup_commands.app, name="backup")
    app.command("daemon")(backup_commands.daemon)
    app.command("serve")(serve_commands.serve)
    app.add_typer(serve_commands.token_app, name="token")
    return app


def __getattr__(name: str) -> Any:
    """`sotadb.cli.main.app`: the full app, built on first use."""
    if name == "app":
        return build_app()
    raise AttributeError(name)


def run() -> None:
    # The operator is a long-running process: it imports only its own command, not the others'
    # Docker SDK, psycopg, rich and cryptography (~24 MB of resident memory it never uses).
    app = _new_app() if sys.argv[1:2] == ["operator"] else build_app()
    app()
