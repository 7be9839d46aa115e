"""school enrolment: 在校学生数 per term, the denominator of the bureau's left-behind share

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 03:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Row security (a frozen copy of api/models/enrolment.py's declarations): the school's staff, its township
# and the bureau read; the school's admins write.
POLICIES = (
    "CREATE POLICY school_enrolment_staff ON school_enrolment AS PERMISSIVE FOR SELECT TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY school_enrolment_admin ON school_enrolment AS PERMISSIVE FOR ALL TO liushou_app USING ((SELECT scope_text('role')) = 'school_admin' AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY school_enrolment_platform ON school_enrolment FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
)


def upgrade() -> None:
    op.create_table(
        "school_enrolment",
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("term_key", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("pupils", sa.Integer(), nullable=False),
        sa.Column("boarders", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint("pupils BETWEEN 0 AND 100000", name=op.f("ck_school_enrolment_pupils")),
        sa.CheckConstraint("boarders BETWEEN 0 AND pupils", name=op.f("ck_school_enrolment_boarders")),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_school_enrolment_school_id_school"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["account.id"],
            name=op.f("fk_school_enrolment_updated_by_id_account"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("school_id", "term_key", name=op.f("pk_school_enrolment")),
    )
    op.execute("ALTER TABLE school_enrolment ENABLE ROW LEVEL SECURITY")
    for statement in POLICIES:
        op.execute(statement)


def downgrade() -> None:
    for statement in POLICIES:
        name, table = statement.split()[2], statement.split()[4]
        op.execute(f"DROP POLICY {name} ON {table}")
    op.drop_table("school_enrolment")
