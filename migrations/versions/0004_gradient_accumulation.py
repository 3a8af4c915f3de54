"""Synchronous gradient accumulation: the posts received toward a session's next step.

The running sums of the gradients themselves are arrays (`accum/<tensor>` in session_arrays);
the session row counts the posts and sums their losses.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(
            sa.Column(
                "accumulated",
                sa.BigInteger(),
                nullable=False,
                server_default="0",
                comment="gradient posts received toward the next step (accumulate > 1)",
            )
        )
        batch.add_column(
            sa.Column(
                "accumulated_losses",
                sa.BigInteger(),
                nullable=False,
                server_default="0",
                comment="how many of those posts carried a loss",
            )
        )
        batch.add_column(
            sa.Column(
                "accumulated_loss_sum",
                sa.Double(),
                nullable=True,
                comment="the sum of their losses (NULL: none, or not finite on SQLite)",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("accumulated_loss_sum")
        batch.drop_column("accumulated_losses")
        batch.drop_column("accumulated")
