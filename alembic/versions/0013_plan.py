"""plan: 工作计划 (a school's plan for a term or year, its 领导小组, its monthly items and their progress) and
关爱活动 (activities with the children who took part, linked to the plan item they fulfil)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 23:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("care_plan", "care_plan_member", "care_plan_item", "activity", "activity_participant")

# Row security (a frozen copy of api/models/plan.py's declarations): a school's staff read, its admins write,
# an item's owner updates that item; the bureau and the township read their schools'; families nothing.
POLICIES = (
    # care_plan
    "CREATE POLICY care_plan_staff ON care_plan AS PERMISSIVE FOR SELECT TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY care_plan_admin ON care_plan AS PERMISSIVE FOR ALL TO liushou_app USING ((SELECT scope_text('role')) = 'school_admin' AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY care_plan_platform ON care_plan FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # care_plan_member
    "CREATE POLICY care_plan_member_staff ON care_plan_member AS PERMISSIVE FOR SELECT TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY care_plan_member_admin ON care_plan_member AS PERMISSIVE FOR ALL TO liushou_app USING ((SELECT scope_text('role')) = 'school_admin' AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY care_plan_member_platform ON care_plan_member FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # care_plan_item
    "CREATE POLICY care_plan_item_staff ON care_plan_item AS PERMISSIVE FOR SELECT TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY care_plan_item_admin ON care_plan_item AS PERMISSIVE FOR ALL TO liushou_app USING ((SELECT scope_text('role')) = 'school_admin' AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY care_plan_item_owner ON care_plan_item AS PERMISSIVE FOR UPDATE TO liushou_app USING (owner_account_id = (SELECT scope_id('account_id')) AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY care_plan_item_platform ON care_plan_item FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # activity
    "CREATE POLICY activity_staff ON activity AS PERMISSIVE FOR SELECT TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY activity_admin ON activity AS PERMISSIVE FOR ALL TO liushou_app USING ((SELECT scope_text('role')) = 'school_admin' AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY activity_platform ON activity FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # activity_participant
    "CREATE POLICY activity_participant_staff ON activity_participant AS PERMISSIVE FOR SELECT TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY activity_participant_admin ON activity_participant AS PERMISSIVE FOR ALL TO liushou_app USING ((SELECT scope_text('role')) = 'school_admin' AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY activity_participant_platform ON activity_participant FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
)


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "care_plan",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.Column("goals", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
        sa.Column("template_key", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("created_by_id", sa.Uuid(), nullable=True),
        *_timestamps(),
        sa.CheckConstraint("ends_on >= starts_on", name=op.f("ck_care_plan_dates")),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_care_plan_school_id_school"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["account.id"], name=op.f("fk_care_plan_created_by_id_account"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_plan")),
        sa.UniqueConstraint("id", "school_id", name="uq_care_plan_id_school"),
        # A school's plans never overlap (btree_gist, for the equality on uuid, is installed by 0001).
        postgresql.ExcludeConstraint(
            (sa.column("school_id"), "="),
            (sa.text("daterange(starts_on, ends_on, '[]')"), "&&"),
            using="gist",
            name="ex_care_plan_overlap",
        ),
    )
    op.create_table(
        "care_plan_member",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("affiliation", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("duty", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("account_id IS NOT NULL OR name IS NOT NULL", name=op.f("ck_care_plan_member_who")),
        sa.ForeignKeyConstraint(
            ["plan_id", "school_id"],
            ["care_plan.id", "care_plan.school_id"],
            name="fk_care_plan_member_plan",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_care_plan_member_school_id_school"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_care_plan_member_account_id_account"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_plan_member")),
    )
    op.create_index(
        "uq_care_plan_member_leader",
        "care_plan_member",
        ["plan_id"],
        unique=True,
        postgresql_where=sa.text("position = 'leader'"),
    )
    op.create_index("uq_care_plan_member_account", "care_plan_member", ["plan_id", "account_id"], unique=True)
    op.create_table(
        "care_plan_item",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("owner_account_id", sa.Uuid(), nullable=True),
        sa.Column("owner_name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("notes", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=True),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("done_on", sa.Date(), nullable=True),
        sa.Column("done_note", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=True),
        sa.Column("fulfilled_by_kind", sa.String(length=16), nullable=True),
        sa.Column("fulfilled_by_id", sa.Uuid(), nullable=True),
        sa.Column("dropped_reason", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("progress_by_id", sa.Uuid(), nullable=True),
        *_timestamps(),
        sa.CheckConstraint("extract(day from month) = 1", name=op.f("ck_care_plan_item_month_start")),
        sa.CheckConstraint(
            "(state = 'done') = (done_on IS NOT NULL)"
            " AND (state = 'dropped') = (dropped_reason IS NOT NULL)"
            " AND (fulfilled_by_id IS NULL OR state = 'done')"
            " AND ((fulfilled_by_kind IS NULL) = (fulfilled_by_id IS NULL))",
            name=op.f("ck_care_plan_item_progress"),
        ),
        sa.ForeignKeyConstraint(
            ["plan_id", "school_id"],
            ["care_plan.id", "care_plan.school_id"],
            name="fk_care_plan_item_plan",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_care_plan_item_school_id_school"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["owner_account_id"],
            ["account.id"],
            name=op.f("fk_care_plan_item_owner_account_id_account"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["progress_by_id"],
            ["account.id"],
            name=op.f("fk_care_plan_item_progress_by_id_account"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_plan_item")),
        sa.UniqueConstraint("id", "school_id", name="uq_care_plan_item_id_school"),
    )
    op.create_index("ix_care_plan_item_plan_month", "care_plan_item", ["plan_id", "month", "sort_order"])
    op.create_index("ix_care_plan_item_school_month", "care_plan_item", ["school_id", "month"])
    op.create_index("ix_care_plan_item_owner", "care_plan_item", ["owner_account_id"])
    op.create_index("ix_care_plan_item_fulfilled_by", "care_plan_item", ["fulfilled_by_kind", "fulfilled_by_id"])
    op.create_table(
        "activity",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("class_id", sa.Uuid(), nullable=True),
        sa.Column("plan_item_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("held_on", sa.Date(), nullable=False),
        sa.Column("place", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("organiser", sa.String(length=24), nullable=False),
        sa.Column("organiser_name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("adult_count", sa.Integer(), nullable=False),
        sa.Column("adult_names", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("recorded_by_id", sa.Uuid(), nullable=True),
        *_timestamps(),
        sa.CheckConstraint("adult_count >= 0", name=op.f("ck_activity_adult_count")),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_activity_school_id_school"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["class_id"], ["school_class.id"], name=op.f("fk_activity_class_id_school_class"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["plan_item_id", "school_id"],
            ["care_plan_item.id", "care_plan_item.school_id"],
            name="fk_activity_plan_item",
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by_id"], ["account.id"], name=op.f("fk_activity_recorded_by_id_account"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activity")),
        sa.UniqueConstraint("id", "school_id", name="uq_activity_id_school"),
    )
    op.create_index("ix_activity_school_held", "activity", ["school_id", "held_on"])
    op.create_index("uq_activity_plan_item", "activity", ["plan_item_id"], unique=True)
    op.create_table(
        "activity_participant",
        sa.Column("activity_id", sa.Uuid(), nullable=False),
        sa.Column("child_id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("held_on", sa.Date(), nullable=False),
        sa.Column("left_behind", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["activity_id", "school_id"],
            ["activity.id", "activity.school_id"],
            name="fk_activity_participant_activity",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["child_id"], ["child.id"], name=op.f("fk_activity_participant_child_id_child"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_activity_participant_school_id_school"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("activity_id", "child_id", name=op.f("pk_activity_participant")),
    )
    op.create_index("ix_activity_participant_child", "activity_participant", ["child_id", "held_on"])
    op.create_index("ix_activity_participant_school_held", "activity_participant", ["school_id", "held_on"])
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for statement in POLICIES:
        op.execute(statement)


def downgrade() -> None:
    for statement in POLICIES:
        name, table = statement.split()[2], statement.split()[4]
        op.execute(f"DROP POLICY {name} ON {table}")
    for table in reversed(TABLES):
        op.drop_table(table)
