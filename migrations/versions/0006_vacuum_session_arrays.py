"""PostgreSQL: autovacuum reclaims `session_arrays` and its TOAST table at the rate they die.

Every byte a step writes to `session_arrays` dies within `OPTAAS_CHECKPOINT_EVERY` steps (the
step log when the next checkpoint drops it, a checkpoint when the next one replaces it), so
dead TOAST chunks pile up at the WAL's rate: about 5.5 MB per step of a 1e6-parameter Adam
session, tens of MB/s under load. Autovacuum's cost-based delay (PostgreSQL 15: 2 ms per 200
cost units, 20 units per page it dirties) lets it clean about 40 MB/s at best, so with the
server's defaults the TOAST table never stops growing: a 1e6 session grew it by 29 GB in six
minutes (benchmarks/results/pg_write.md). Without the delay, and started from a fixed number
of dead chunks rather than a fifth of the table, autovacuum frees the space and new chunks
reuse it.

Only these two tables' settings change (`ALTER TABLE … SET`): the server's and other tables'
stay as the server has them. SQLite has no such settings.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEAD_CHUNKS = 10_000
"""Dead TOAST chunks (about 2 kB each: 20 MB) that start a vacuum of the TOAST table."""

SETTINGS = {
    "autovacuum_vacuum_cost_delay": "0",
    "toast.autovacuum_vacuum_cost_delay": "0",
    "toast.autovacuum_vacuum_scale_factor": "0",
    "toast.autovacuum_vacuum_threshold": str(DEAD_CHUNKS),
}


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    settings = ", ".join(f"{name} = {value}" for name, value in SETTINGS.items())
    op.execute(f"ALTER TABLE session_arrays SET ({settings})")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE session_arrays RESET ({', '.join(SETTINGS)})")
