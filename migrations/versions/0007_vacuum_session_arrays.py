"""PostgreSQL: autovacuum reclaims `session_arrays` and its TOAST table at the rate they die.

Every byte a step writes to `session_arrays` dies within `OPTAAS_CHECKPOINT_EVERY` steps (the
step log when the next checkpoint drops it, a checkpoint when the next one replaces it), so
dead TOAST chunks pile up at about the WAL's rate: 5.5 MB and 2 500 chunks per step of a
1e6-parameter Adam session. Autovacuum's cost-based delay (PostgreSQL 15: a 2 ms sleep after
every 200 cost units, 20 units per page it dirties, and vacuum dirties each dead page twice)
holds a vacuum to a few tens of MB/s, so with the server's defaults the TOAST table grew for as
long as the steps went on: 9 GB after six minutes at 5 steps/s, no vacuum of it finished
(benchmarks/results/pg_write.md). Without the delay, and started from a fixed number of dead
chunks rather than a fifth of the table, it stayed within 1.7–4.7 GB (2.9 GB with
`autovacuum_naptime` at 10 s), new chunks reusing the space vacuum freed.

Only these two tables' settings change (`ALTER TABLE … SET`): the server's and other tables'
stay as the server has them. SQLite has no such settings.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
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
