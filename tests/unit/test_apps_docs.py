"""The README keeps the apps' promises in view: the migrations guide names each ORM with a
start command and its PgBouncer caveat, the pitfalls table gives a fix for each, the Docker
app commands it shows exist, and the annotated example app is where it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sotadb.cli import main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ORMS = ("Prisma", "Drizzle", "TypeORM", "Sequelize", "Knex", "Django", "Alembic", "Flask-Migrate")


def section(title: str) -> str:
    """The README's text under the heading `title`, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#)", README, re.MULTILINE | re.DOTALL)
    assert match is not None, f"README has no section {title!r}"
    return match.group(1)


def table_rows(text: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header line starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


@pytest.mark.parametrize("orm", ORMS)
def test_the_migrations_guide_gives_each_orm_a_start_command_and_a_caveat(orm: str) -> None:
    rows = {row[0]: row for row in table_rows(section("Migrations"), "| ORM |")}
    assert orm in rows, f"README's migrations table has no row for {orm}"
    _, command, caveat = rows[orm]
    assert re.fullmatch(r"`[^`]+ && [^`]+`", command), command  # migrate, then serve
    assert caveat


def test_the_pitfalls_table_has_a_fix_for_each() -> None:
    rows = table_rows(section("Migrations"), "| what you see |")
    seen = " ".join(row[0] for row in rows)
    for pitfall in ("prepared statement", "migration hangs", "connection refused"):
        assert pitfall in seen
    assert all(len(row) == 2 and row[1] for row in rows)


def test_the_docker_app_commands_the_readme_shows_exist() -> None:
    shown = set(re.findall(r"sotadb (env|attach|run|serve|token create) ", README))
    assert shown == {"env", "attach", "run", "serve", "token create"}
    app = main.build_app()
    commands = {c.name for c in app.registered_commands}
    groups = {g.name for g in app.registered_groups}
    assert {"env", "attach", "run", "serve"} <= commands
    assert "token" in groups


def test_the_annotated_example_app_is_where_the_readme_says() -> None:
    assert "manifests/examples/app-deployment.yaml" in README
    assert (ROOT / "manifests" / "examples" / "app-deployment.yaml").is_file()
