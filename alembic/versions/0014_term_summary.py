"""term summary: 工作总结 — a school's summary for a term, its leader's text, and the figures frozen when submitted

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 00:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Row security (a frozen copy of api/models/term_summary.py's declarations): the school's staff read its
# summaries, the bureau and the township only submitted ones; school admins write.
POLICIES = (
    "CREATE POLICY term_summary_school ON term_summary AS PERMISSIVE FOR SELECT TO liushou_app USING ((SELECT scope_text('role')) IN ('school_admin', 'teacher') AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY term_summary_area ON term_summary AS PERMISSIVE FOR SELECT TO liushou_app USING (status = 'submitted' AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY term_summary_admin ON term_summary AS PERMISSIVE FOR ALL TO liushou_app USING ((SELECT scope_text('role')) = 'school_admin' AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY term_summary_platform ON term_summary FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
)


def upgrade() -> None:
    op.create_table(
        "term_summary",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=True),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.Column("highlights", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
        sa.Column("problems", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("figures", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("submitted_by_id", sa.Uuid(), nullable=True),
        sa.Column("created_by_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("ends_on >= starts_on", name=op.f("ck_term_summary_dates")),
        sa.CheckConstraint(
            "(status = 'submitted') = (submitted_at IS NOT NULL)"
            " AND (submitted_at IS NULL) = (figures IS NULL)"
            " AND (submitted_at IS NULL OR submitted_by_id IS NOT NULL)",
            name=op.f("ck_term_summary_submission"),
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_term_summary_school_id_school"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["submitted_by_id"],
            ["account.id"],
            name=op.f("fk_term_summary_submitted_by_id_account"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["account.id"], name=op.f("fk_term_summary_created_by_id_account"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_term_summary")),
        sa.UniqueConstraint("school_id", "starts_on", "ends_on", name="uq_term_summary_school_span"),
    )
    op.create_index("ix_term_summary_span", "term_summary", ["starts_on", "ends_on"])
    op.execute("ALTER TABLE term_summary ENABLE ROW LEVEL SECURITY")
    for statement in POLICIES:
        op.execute(statement)


def downgrade() -> None:
    for statement in POLICIES:
        name, table = statement.split()[2], statement.split()[4]
        op.execute(f"DROP POLICY {name} ON {table}")
    op.drop_table("term_summary")
