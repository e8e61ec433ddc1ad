"""`sotadb serve` (the REST API) and `sotadb token create | list | revoke` (its tokens)."""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass
from typing import Annotated, Final

import typer
from rich.console import Console

from sotadb.api.projects import slug_for
from sotadb.api.tokens import TIME_FORMAT, TokenRecord, TokenStore
from sotadb.errors import SotadbError

from . import output
from .docker_commands import user_errors
from .render_command import OutputFormat

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080

console = Console(stderr=True, highlight=False)


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    log_level: str
    access_log: bool


def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind; loopback by default (the API speaks plain HTTP).")
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = DEFAULT_PORT,
    log_level: Annotated[
        str, typer.Option(help="uvicorn's log level: critical, error, warning, info, debug.")
    ] = "info",
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log")] = True,
) -> None:
    """Serve the REST API (OpenAPI at /openapi.json) for the databases on this host."""
    run_server(ServeOptions(host=host, port=port, log_level=log_level, access_log=access_log))


def run_server(options: ServeOptions) -> None:
    import uvicorn  # only `serve` needs the server

    from sotadb.api.app import build_app  # keeps `sotadb token` light

    if not _is_loopback(options.host):
        console.print(
            f"[yellow]serving on {options.host}: the API speaks plain HTTP, so bearer tokens "
            "cross the network in clear text; put a TLS proxy in front[/yellow]"
        )
    # uvicorn's own logging, plus the API's logger (`sotadb.api`) through the same handler.
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["sotadb"] = {
        "handlers": ["default"],
        "level": options.log_level.upper(),
        "propagate": False,
    }
    uvicorn.run(
        build_app(),
        host=options.host,
        port=options.port,
        log_level=options.log_level,
        log_config=log_config,
        access_log=options.access_log,
        server_header=False,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------- tokens

token_app = typer.Typer(
    help="API tokens for `sotadb serve`: each is scoped to one project and shown only once.",
    no_args_is_help=True,
)
OutputOption = Annotated[OutputFormat | None, typer.Option("--output", "-o")]


def _row(record: TokenRecord) -> dict[str, str]:
    return {
        "id": record.id,
        "prefix": record.prefix,
        "project": record.project,
        "slug": slug_for(record.project),
        "createdAt": record.created_at.strftime(TIME_FORMAT),
    }


@token_app.command("create")
def create(
    project: Annotated[str, typer.Argument(help="The project the token may act on.")],
    output_format: OutputOption = None,
) -> None:
    """Make a token for PROJECT and print it once (only its hash is stored)."""
    with user_errors():
        record, token = TokenStore().create(project)
        if output_format is OutputFormat.JSON:
            output.emit(output.to_json({**_row(record), "token": token}))
            return
        console.print(
            f"token [bold]{record.id}[/bold] for project {project} "
            f"(database {slug_for(project)}); shown once, store it now:"
        )
        output.emit(token)


@token_app.command("list")
def list_tokens(output_format: OutputOption = None) -> None:
    """Show every token: id, first characters, project, database slug, creation time."""
    with user_errors():
        rows = [_row(record) for record in TokenStore().records()]
        if output_format is OutputFormat.JSON:
            output.emit(output.to_json(rows))
            return
        if not rows:
            output.emit("no tokens (create one: sotadb token create PROJECT)")
        for row in rows:
            output.emit(
                f"{row['id']}  {row['prefix']}…  {row['createdAt']}  "
                f"{row['project']} (database {row['slug']})"
            )


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="From `token list`.")],
) -> None:
    """Delete a token; `sotadb serve` refuses it from its next request on."""
    with user_errors():
        removed = TokenStore().revoke(token_id)
        if removed is None:
            raise SotadbError(f"no token {token_id} (fix: `sotadb token list` shows the ids)")
        console.print(f"[green]revoked[/green] {removed.id} (project {removed.project})")
