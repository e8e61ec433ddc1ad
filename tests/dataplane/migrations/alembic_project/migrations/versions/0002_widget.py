"""Create widget and seed widget_kind, with psycopg's prepared statements through PgBouncer.

Revision ID: 0002
Revises: 0001

The seed INSERT runs KINDS times on one connection. psycopg 3, at its default
`prepare_threshold` (5), prepares it server-side after the fifth run; the check below fails
the migration unless PostgreSQL really holds that prepared statement, so a passing
`alembic upgrade head` shows prepared statements working through PgBouncer (transaction mode,
`max_prepared_statements` on), without `prepare_threshold=None`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KINDS = 10
SEED_KIND = "INSERT INTO widget_kind (name) VALUES (:name)"
PREPARED_SEED = sa.text(
    "SELECT count(*) FROM pg_prepared_statements "
    "WHERE statement LIKE 'INSERT INTO widget_kind (name) VALUES ($1)%'"
)


def upgrade() -> None:
    op.create_table(
        "widget",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind_id", sa.Integer, sa.ForeignKey("widget_kind.id"), nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    )
    op.create_index("widget_kind_id_idx", "widget", ["kind_id"])
    bind = op.get_bind()
    for n in range(KINDS):
        bind.execute(sa.text(SEED_KIND), {"name": f"kind-{n}"})
    prepared = bind.execute(PREPARED_SEED).scalar_one()
    if prepared < 1:
        raise RuntimeError("psycopg did not prepare the repeated INSERT on the server")


def downgrade() -> None:
    op.drop_index("widget_kind_id_idx", table_name="widget")
    op.drop_table("widget")
    op.execute("DELETE FROM widget_kind")
