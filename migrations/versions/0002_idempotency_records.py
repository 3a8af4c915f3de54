"""Idempotency records: requests sent with an Idempotency-Key and the answers they got.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT = sa.text("body IS NOT NULL")
SESSIONLESS = sa.text("session_id IS NULL")


def upgrade() -> None:
    op.create_table(
        "idempotency_records",
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column(
            "key_hash",
            sa.String(length=64),
            nullable=False,
            comment="hex SHA-256 of the Idempotency-Key",
        ),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column(
            "fingerprint",
            sa.String(length=64),
            nullable=False,
            comment="hex SHA-256 of method, path, query, content type, accept and body",
        ),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "expires_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="the answer is dropped after this",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_idempotency_records_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("scope", "key_hash", name=op.f("pk_idempotency_records")),
    )
    op.create_index(
        op.f("ix_idempotency_records_session_id"), "idempotency_records", ["session_id"]
    )
    op.create_index(
        "ix_idempotency_records_kept_until",
        "idempotency_records",
        ["expires_at"],
        postgresql_where=KEPT,
        sqlite_where=KEPT,
    )
    op.create_index(
        "ix_idempotency_records_sessionless_created_at",
        "idempotency_records",
        ["created_at"],
        postgresql_where=SESSIONLESS,
        sqlite_where=SESSIONLESS,
    )
    if op.get_context().dialect.name == "postgresql":
        # Sealed answers are random bytes: keep them out of line without trying to compress.
        op.execute("ALTER TABLE idempotency_records ALTER COLUMN body SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("idempotency_records")  # its indexes go with it
