"""stats rollover: kept figures keyed by the day they were judged on (today's and, before midnight, tomorrow's
side by side), each with the snapshot it was computed under; each change mark with its writing transaction

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("pk_stats_figures", "stats_figures", type_="primary")
    op.create_primary_key("pk_stats_figures", "stats_figures", ["school_id", "period_kind", "period_key", "judged_on"])
    # Rows kept before: their snapshot is unknown, so say they include no change ('1:1:' sees no transaction):
    # every mark already written stays pending for them, and the refresher renews them as it would.
    op.add_column("stats_figures", sa.Column("snapshot", sa.Text(), nullable=False, server_default=sa.text("'1:1:'")))
    op.alter_column("stats_figures", "snapshot", server_default=None)
    # Each mark's writing transaction (the triggers' inserts take the default, in the writer's transaction).
    op.add_column(
        "stats_dirty",
        sa.Column("xact", sa.BigInteger(), server_default=sa.text("txid_current()"), nullable=False),
    )
    op.create_index(op.f("ix_stats_dirty_school_id"), "stats_dirty", ["school_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_stats_dirty_school_id"), table_name="stats_dirty")
    op.drop_column("stats_dirty", "xact")
    op.drop_column("stats_figures", "snapshot")
    # One row per school and period again: keep the latest day's (the kept figures are a cache).
    op.execute(
        "DELETE FROM stats_figures f USING stats_figures g WHERE g.school_id = f.school_id"
        " AND g.period_kind = f.period_kind AND g.period_key = f.period_key AND g.judged_on > f.judged_on"
    )
    op.drop_constraint("pk_stats_figures", "stats_figures", type_="primary")
    op.create_primary_key("pk_stats_figures", "stats_figures", ["school_id", "period_kind", "period_key"])
