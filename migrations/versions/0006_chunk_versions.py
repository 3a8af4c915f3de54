"""Each chunk of a checkpoint records the session version it was written at.

A step may rewrite some chunks of θ and the state (spread checkpoints, `app.stepping.arrays`):
the step log is then replayed onto each chunk from the version it was written at. NULL: written
by a whole checkpoint, which dropped the log (every logged step applies to it), as every row
stored before this revision was.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("session_arrays") as batch:
        batch.add_column(
            sa.Column(
                "written_at",
                sa.BigInteger(),
                nullable=True,
                comment="the session version this chunk was written at (NULL: a whole checkpoint)",
            )
        )


def downgrade() -> None:
    """Only after a whole checkpoint of every session (a clean stop writes one)."""
    with op.batch_alter_table("session_arrays") as batch:
        batch.drop_column("written_at")
