"""Session history: one row per step and per configuration change.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_history",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column(
            "seq",
            sa.BigInteger(),
            nullable=False,
            comment="1, 2, 3, … per session: the pagination cursor",
        ),
        sa.Column("kind", sa.String(length=8), nullable=False, comment="step | change"),
        sa.Column(
            "step", sa.BigInteger(), nullable=False, comment="t after the step, or at the change"
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lr", sa.Double(), nullable=True, comment="η_t the step used"),
        sa.Column("loss", sa.Double(), nullable=True),
        sa.Column("grad_norm", sa.Double(), nullable=True),
        sa.Column("update_norm", sa.Double(), nullable=True),
        sa.Column("skipped", sa.Boolean(), nullable=True),
        sa.Column("duration_ms", sa.Double(), nullable=True),
        sa.Column(
            "changes",
            sa.JSON(),
            nullable=True,
            comment='{"<dotted field>": {"old": …, "new": …}, …}',
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_session_history_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "seq", name=op.f("pk_session_history")),
    )


def downgrade() -> None:
    op.drop_table("session_history")
