"""Sessions and their arrays.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column(
            "token_hash",
            sa.String(length=64),
            nullable=False,
            comment="hex SHA-256 of the bearer token",
        ),
        sa.Column("dtype", sa.String(length=16), nullable=False, comment="float32 | float64"),
        sa.Column(
            "layout",
            sa.String(length=16),
            nullable=False,
            comment="single: one array named `params`; named: an object of arrays",
        ),
        sa.Column("tensors", sa.JSON(), nullable=False, comment='[{"name", "shape"}, …] in order'),
        sa.Column(
            "config", sa.JSON(), nullable=False, comment="the create body, every default filled"
        ),
        sa.Column("step", sa.BigInteger(), nullable=False, comment="t: updates applied so far"),
        sa.Column("version", sa.BigInteger(), nullable=False, comment="bumped on every change"),
        sa.Column("schedule_state", sa.JSON(), nullable=False),
        sa.Column("last_loss", sa.Double(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_table(
        "session_arrays",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("dtype", sa.String(length=16), nullable=False),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_session_arrays_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "key", name=op.f("pk_session_arrays")),
    )
    if op.get_context().dialect.name == "postgresql":
        # Random floats do not compress: EXTERNAL keeps large values out of line (TOAST) without
        # PostgreSQL trying, and failing, to compress every write.
        op.execute("ALTER TABLE session_arrays ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("session_arrays")
    op.drop_table("sessions")
