"""stats answers: built tables, trends and export files, kept by what determines them (served within the
allowed staleness, warmed by the refresher; one row per day judged on, tomorrow's kept beside today's before
midnight)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Row security (a frozen copy of api/models/stats_cache.py's declarations): only the scope an answer was built
# for reads or writes it.
POLICIES = (
    "CREATE POLICY stats_answer_scope ON stats_answer AS PERMISSIVE FOR ALL TO liushou_app USING (scope_role = (SELECT scope_text('role')) AND ((scope_role = 'county_bureau' AND scope_id = (SELECT scope_id('county_id'))) OR (scope_role = 'township_official' AND scope_id = (SELECT scope_id('township_id'))) OR (scope_role = 'school_admin' AND scope_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))))",
    "CREATE POLICY stats_answer_platform ON stats_answer FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
)


def upgrade() -> None:
    op.create_table(
        "stats_answer",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("scope_role", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("scope_id", sa.Uuid(), nullable=False),
        sa.Column("request", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("version", sa.Text(), nullable=True),
        sa.Column("judged_on", sa.Date(), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("asked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", "judged_on", name=op.f("pk_stats_answer")),
    )
    op.create_index(op.f("ix_stats_answer_asked_at"), "stats_answer", ["asked_at"], unique=False)
    op.execute("ALTER TABLE stats_answer ENABLE ROW LEVEL SECURITY")
    for statement in POLICIES:
        op.execute(statement)


def downgrade() -> None:
    for statement in POLICIES:
        name, table = statement.split()[2], statement.split()[4]
        op.execute(f"DROP POLICY {name} ON {table}")
    op.drop_index(op.f("ix_stats_answer_asked_at"), table_name="stats_answer")
    op.drop_table("stats_answer")
