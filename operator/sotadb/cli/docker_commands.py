"""`sotadb up | down | url | status`: databases on this host's Docker engine."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Final

import typer
import yaml
from rich.console import Console

from sotadb import credentials as creds
from sotadb import names
from sotadb.credentials import Endpoint
from sotadb.docker import engine
from sotadb.docker.runtime import HOST_ADDRESS, DockerRuntime, minimal_document
from sotadb.docker.state import DatabaseState, StateStore
from sotadb.errors import FieldProblem, InvalidSpec, SotadbError

from . import output
from .render_command import OutputFormat

EXIT_FAILED: Final = 1
EXIT_INVALID: Final = 2
MASK: Final = "********"
BUILD_SCRIPT: Final = Path(__file__).resolve().parents[3] / "scripts" / "build-images.sh"

progress_console = Console(stderr=True, highlight=False)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn our errors into one clear line and an exit code; never a traceback."""
    try:
        yield
    except InvalidSpec as e:
        for problem in e.problems:
            output.fail(str(problem))
        raise typer.Exit(EXIT_INVALID) from None
    except (SotadbError, OSError, yaml.YAMLError) as e:
        output.fail(str(e))
        raise typer.Exit(EXIT_FAILED) from None


def _load(name: str | None, file: Path | None) -> dict[str, Any]:
    if (name is None) == (file is None):
        raise InvalidSpec([_argument_problem()])
    if file is not None:
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            raise InvalidSpec([_argument_problem()])
        return document
    assert name is not None
    return minimal_document(name)


def _argument_problem() -> FieldProblem:
    return FieldProblem("NAME", "give a name or -f FILE (one of them)", "e.g. `sotadb up my-app`")


def _ensure_images(runtime: DockerRuntime) -> None:
    missing = [
        image
        for image in (runtime.images.postgres, runtime.images.pooler)
        if not engine.image_exists(runtime.client, image)
    ]
    if not missing:
        return
    if not BUILD_SCRIPT.is_file():
        raise engine.ImageMissing(missing[0])
    progress_console.print(f"[bold]building images[/bold] {', '.join(missing)} (first run only)")
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], check=False)
    if result.returncode != 0:
        raise engine.ImageMissing(missing[0])


def _mask(url: str, password: str, show: bool) -> str:
    return url if show else url.replace(password, MASK)


def up(
    name: Annotated[str | None, typer.Argument(help="Database name (the slug).")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A ManagedDatabase YAML file.")
    ] = None,
    show_password: Annotated[bool, typer.Option("--show-password")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the first query.")] = 120,
) -> None:
    """Provision (or converge) a database on Docker and print its DATABASE_URL."""
    with user_errors():
        document = _load(name, file)
        runtime = DockerRuntime()
        _ensure_images(runtime)
        started = time.monotonic()
        with progress_console.status("provisioning") as status:

            def report(message: str) -> None:
                status.update(message)
                progress_console.print(f"  {time.monotonic() - started:5.2f}s  {message}")

            result = runtime.up(document, progress=report, timeout=timeout)
        elapsed = time.monotonic() - started
        verdict = "up to date" if not result.changed else "ready"
        progress_console.print(f"[green]{result.db.slug} {verdict}[/green] in {elapsed:.2f}s")
        output.emit(
            "DATABASE_URL=" + _mask(result.database_url, result.credentials.password, show_password)
        )


def down(
    name: Annotated[str, typer.Argument(help="Database name (the slug).")],
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete the data volume and stored credentials.")
    ] = False,
) -> None:
    """Stop and remove a database's containers; its data stays unless --purge."""
    with user_errors():
        runtime = DockerRuntime()
        runtime.down(name, purge=purge, progress=lambda m: progress_console.print(f"  {m}"))
        kept = "" if purge else " (data kept; `sotadb up` brings it back)"
        progress_console.print(f"[green]{name} is down[/green]{kept}")


def _stored(name: str) -> DatabaseState:
    state = StateStore().load(name)
    if state is None:
        raise SotadbError(f"no database {name} on this host (fix: `sotadb up {name}`)")
    return state


def _environment(state: DatabaseState, *, host_port: bool) -> dict[str, str]:
    """The app's variables: for containers on the database's network, or for this host."""
    pooler = direct = None
    if host_port:
        pooler = Endpoint(HOST_ADDRESS, state.host_ports[names.pooler_name(state.slug)])
        direct = Endpoint(HOST_ADDRESS, state.host_ports[names.postgres_name(state.slug)])
    return creds.app_environment(
        state.slug, state.credentials.password, pooler=pooler, direct=direct
    )


HostPort = Annotated[
    bool, typer.Option("--host-port", help="Reach it from this host via a port on 127.0.0.1.")
]
ShowPassword = Annotated[bool, typer.Option("--show-password", help="Print the real password.")]


def url(
    name: Annotated[str, typer.Argument(help="Database name (the slug).")],
    direct: Annotated[
        bool, typer.Option("--direct", help="Bypass PgBouncer (for migrations).")
    ] = False,
    host_port: HostPort = False,
    show_password: ShowPassword = False,
) -> None:
    """Print the URL apps use (on the database's Docker network, or from this host)."""
    with user_errors():
        state = _stored(name)
        key = "DIRECT_DATABASE_URL" if direct else "DATABASE_URL"
        value = _environment(state, host_port=host_port)[key]
        output.emit(_mask(value, state.credentials.password, show_password))


def env(
    name: Annotated[str, typer.Argument(help="Database name (the slug).")],
    host_port: HostPort = False,
    show_password: ShowPassword = False,
) -> None:
    """Print the app's variables in .env form (`sotadb env NAME --show-password > .env`)."""
    with user_errors():
        state = _stored(name)
        for key, value in _environment(state, host_port=host_port).items():
            output.emit(f"{key}={_mask(value, state.credentials.password, show_password)}")


def run(
    name: Annotated[str, typer.Argument(help="Database name (the slug).")],
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the database.")] = 120,
) -> None:
    """Run a command on this host with DATABASE_URL and friends set, once the database answers
    a query (so migrations in a start command never meet "connection refused")."""
    with user_errors():
        state = _stored(name)
        DockerRuntime().wait_until_ready(name, state.credentials, timeout=timeout)
        environment = {**os.environ, **_environment(state, host_port=True)}
        try:
            os.execvpe(command[0], command, environment)  # noqa: S606 - the user's command
        except OSError as e:
            raise SotadbError(f"cannot run {command[0]}: {e.strerror}") from None


def attach(
    name: Annotated[str, typer.Argument(help="Database name (the slug).")],
    container: Annotated[str, typer.Argument(help="The app container to connect.")],
) -> None:
    """Connect an app container to the database's network, so the URL's host names resolve."""
    with user_errors():
        runtime = DockerRuntime()
        network = names.network_name(name)
        attached = runtime.attach(name, container)
        verb = "connected to" if attached else "already on"
        progress_console.print(f"[green]{container}[/green] {verb} {network}")


def status(
    name: Annotated[str | None, typer.Argument(help="One database; all when omitted.")] = None,
    output_format: Annotated[OutputFormat | None, typer.Option("--output", "-o")] = None,
) -> None:
    """Show each database's containers, health and ports."""
    with user_errors():
        runtime = DockerRuntime()
        slugs = [name] if name else runtime.store.slugs()
        statuses = [runtime.status(slug) for slug in slugs]
        if output_format is OutputFormat.JSON:
            output.emit(output.to_json([{**asdict(s), "ready": s.ready} for s in statuses]))
            return
        if not statuses:
            output.emit("no databases on this host (create one: sotadb up my-app)")
        for entry in statuses:
            containers = ", ".join(
                f"{c.name}={c.state}{'/' + c.health if c.health else ''}" for c in entry.containers
            )
            verdict = "ready" if entry.ready else "not ready"
            output.emit(f"{entry.slug}: {verdict}; {containers or 'no containers'}")


def register(app: typer.Typer) -> None:
    for command in (up, down, url, env, status, attach):
        app.command(command.__name__)(command)
    app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        run
    )
