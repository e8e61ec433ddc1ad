"""Entry point: `sotadb <command>`."""

from __future__ import annotations

import typer

from sotadb.cli import docker_commands, operator_command, render_command

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


@app.callback()
def main() -> None:
    """Managed PostgreSQL 17 behind PgBouncer, on Kubernetes and on a single Docker host."""


def run() -> None:
    app()
