"""care rhythm: each school's care rules and term calendar (terms, holidays), the weekly digest's runs and the
overdue items already flagged to the leaders

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Row-level security: a frozen copy of the declarations beside the models (api/models/care_rhythm.py); every
# table is the school's. tests/test_row_security.py compares the two.
SCOPED = ("care_rule", "school_term", "school_holiday", "care_digest_run", "care_overdue_flag")
STAFF_POLICY = (
    "CREATE POLICY {table}_staff ON {table} AS PERMISSIVE FOR ALL TO liushou_app"
    " USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))"
)
PLATFORM_POLICY = "CREATE POLICY {table}_platform ON {table} FOR ALL TO liushou_platform USING (true) WITH CHECK (true)"


def upgrade() -> None:
    op.create_table(
        "care_rule",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("cadence", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("strict_cadence", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("incident_days", sa.Integer(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint("incident_days BETWEEN 0 AND 365", name=op.f("ck_care_rule_incident_days")),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_care_rule_school_id_school"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"], ["account.id"], name=op.f("fk_care_rule_updated_by_id_account"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_rule")),
        sa.UniqueConstraint("school_id", "kind", name="uq_care_rule_school_kind"),
    )
    for table in ("school_term", "school_holiday"):
        op.create_table(
            table,
            sa.Column("id", sa.Uuid(), nullable=False),
            sa.Column("school_id", sa.Uuid(), nullable=False),
            sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
            sa.Column("starts_on", sa.Date(), nullable=False),
            sa.Column("ends_on", sa.Date(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.CheckConstraint("ends_on >= starts_on", name=op.f(f"ck_{table}_dates")),
            sa.ForeignKeyConstraint(
                ["school_id"], ["school.id"], name=op.f(f"fk_{table}_school_id_school"), ondelete="RESTRICT"
            ),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
            *(
                # Terms of one school never overlap (btree_gist, for the equality on uuid, is installed by 0001).
                [
                    postgresql.ExcludeConstraint(
                        (sa.column("school_id"), "="),
                        (sa.text("daterange(starts_on, ends_on, '[]')"), "&&"),
                        using="gist",
                        name="ex_school_term_overlap",
                    )
                ]
                if table == "school_term"
                else []
            ),
        )
        op.create_index(op.f(f"ix_{table}_school_id"), table, ["school_id"], unique=False)
    op.create_table(
        "care_digest_run",
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("digests", sa.Integer(), nullable=False),
        sa.Column("flagged", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["school_id"], ["school.id"], name=op.f("fk_care_digest_run_school_id_school")),
        sa.PrimaryKeyConstraint("school_id", "week_start", name=op.f("pk_care_digest_run")),
    )
    op.create_table(
        "care_overdue_flag",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("child_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_care_overdue_flag_school_id_school"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["child_id"], ["child.id"], name=op.f("fk_care_overdue_flag_child_id_child"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_overdue_flag")),
        sa.UniqueConstraint("child_id", "kind", "due_on", name="uq_care_overdue_flag_item"),
    )
    op.create_index(op.f("ix_care_overdue_flag_school_id"), "care_overdue_flag", ["school_id"], unique=False)
    # The family-call rule's probe: calls and videos with the parents, answered from the index alone.
    op.create_index(
        "ix_care_record_calls",
        "care_record",
        ["school_id", "child_id", "occurred_on"],
        unique=False,
        postgresql_where=sa.text("kind = 'parent_contact' AND (content ->> 'channel') IN ('phone', 'video')"),
    )
    for table in SCOPED:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(STAFF_POLICY.format(table=table))
        op.execute(PLATFORM_POLICY.format(table=table))


def downgrade() -> None:
    op.drop_index("ix_care_record_calls", table_name="care_record")
    for table in SCOPED:
        op.execute(f"DROP POLICY IF EXISTS {table}_staff ON {table}")
        op.execute(f"DROP POLICY IF EXISTS {table}_platform ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.drop_index(op.f("ix_care_overdue_flag_school_id"), table_name="care_overdue_flag")
    op.drop_table("care_overdue_flag")
    op.drop_table("care_digest_run")
    for table in ("school_holiday", "school_term"):
        op.drop_index(op.f(f"ix_{table}_school_id"), table_name=table)
        op.drop_table(table)
    op.drop_table("care_rule")
