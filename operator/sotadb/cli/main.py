"""Entry point: `sotadb <command>`."""

from __future__ import annotations

import typer

from sotadb.cli import (
    backup_commands,
    docker_commands,
    operator_command,
    render_command,
    serve_commands,
)

app = typer.Typer(
    name="sotadb",
    help="Managed PostgreSQL 17 behind PgBouncer, on Kubernetes and on a single Docker host.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("render")(render_command.render)
docker_commands.register(app)
app.command("operator")(operator_command.operator)
app.add_typer(backup_commands.app, name="backup")
app.command("daemon")(backup_commands.daemon)
app.command("serve")(serve_commands.serve)
app.add_typer(serve_commands.token_app, name="token")


@app.callback()
def main() -> None:
    """Managed PostgreSQL 17 behind PgBouncer, on Kubernetes and on a single Docker host."""


def run() -> None:
    app()
