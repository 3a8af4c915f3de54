"""Arrays stored in chunks: a row holds at most `app.store.arrays.CHUNK_BYTES` of an array.

The primary key of session_arrays becomes (session_id, key, chunk); the rows already stored
are their arrays' chunk 0 (each whole, as before: they are read back as they are).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("session_arrays") as batch:
        batch.add_column(
            sa.Column(
                "chunk",
                sa.Integer(),
                nullable=False,
                server_default="0",
                comment="which piece of the array's bytes, from 0",
            )
        )
        batch.drop_constraint("pk_session_arrays", type_="primary")
        batch.create_primary_key("pk_session_arrays", ["session_id", "key", "chunk"])


def downgrade() -> None:
    """Only where every array is one chunk (arrays of up to CHUNK_BYTES)."""
    with op.batch_alter_table("session_arrays") as batch:
        batch.drop_constraint("pk_session_arrays", type_="primary")
        batch.create_primary_key("pk_session_arrays", ["session_id", "key"])
        batch.drop_column("chunk")
