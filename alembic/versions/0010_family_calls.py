"""亲情电话 family calls: call lines, their weekly hours, date overrides, county festival days, school settings,
the calls themselves (exclusion constraints: no booth booked twice, no child in two calls at once), their events,
the weekly quota counter and idempotency keys (reminders go through the notifications outbox)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 17:58:12.020368
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Row-level security: a frozen copy of the declarations beside the models (api/models/family_calls.py);
# tests/test_row_security.py compares the two.
SCOPED_TABLES = (
    "family_call_settings",
    "call_line",
    "call_line_window",
    "call_line_override",
    "festival_day",
    "family_call",
    "family_call_event",
    "family_call_quota",
    "family_call_request",
)
POLICIES = (
    # family_call_settings
    "CREATE POLICY family_call_settings_staff ON family_call_settings AS PERMISSIVE FOR ALL TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY family_call_settings_family ON family_call_settings AS PERMISSIVE FOR SELECT TO liushou_app USING (school_id IN (SELECT c.school_id FROM child c WHERE c.id = ANY ((SELECT scope_ids('child_ids'))::uuid[])))",
    "CREATE POLICY family_call_settings_platform ON family_call_settings FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # call_line
    "CREATE POLICY call_line_staff ON call_line AS PERMISSIVE FOR ALL TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY call_line_family ON call_line AS PERMISSIVE FOR SELECT TO liushou_app USING (school_id IN (SELECT c.school_id FROM child c WHERE c.id = ANY ((SELECT scope_ids('child_ids'))::uuid[])))",
    "CREATE POLICY call_line_platform ON call_line FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # call_line_window
    "CREATE POLICY call_line_window_staff ON call_line_window AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM call_line l WHERE l.id = call_line_window.line_id AND l.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY call_line_window_family ON call_line_window AS PERMISSIVE FOR SELECT TO liushou_app USING (EXISTS (SELECT 1 FROM call_line l WHERE l.id = call_line_window.line_id AND l.school_id IN (SELECT c.school_id FROM child c WHERE c.id = ANY ((SELECT scope_ids('child_ids'))::uuid[]))))",
    "CREATE POLICY call_line_window_platform ON call_line_window FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # call_line_override
    "CREATE POLICY call_line_override_staff ON call_line_override AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM call_line l WHERE l.id = call_line_override.line_id AND l.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY call_line_override_family ON call_line_override AS PERMISSIVE FOR SELECT TO liushou_app USING (EXISTS (SELECT 1 FROM call_line l WHERE l.id = call_line_override.line_id AND l.school_id IN (SELECT c.school_id FROM child c WHERE c.id = ANY ((SELECT scope_ids('child_ids'))::uuid[]))))",
    "CREATE POLICY call_line_override_platform ON call_line_override FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # festival_day
    "CREATE POLICY festival_day_staff ON festival_day AS PERMISSIVE FOR ALL TO liushou_app USING (county_id = (SELECT scope_id('county_id')))",
    "CREATE POLICY festival_day_family ON festival_day AS PERMISSIVE FOR SELECT TO liushou_app USING (county_id IN (SELECT s.county_id FROM school s WHERE s.id IN (SELECT c.school_id FROM child c WHERE c.id = ANY ((SELECT scope_ids('child_ids'))::uuid[]))))",
    "CREATE POLICY festival_day_platform ON festival_day FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # family_call
    "CREATE POLICY family_call_staff ON family_call AS PERMISSIVE FOR ALL TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY family_call_family ON family_call AS PERMISSIVE FOR ALL TO liushou_app USING (child_id = ANY ((SELECT scope_ids('child_ids'))::uuid[]))",
    "CREATE POLICY family_call_platform ON family_call FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # family_call_event
    "CREATE POLICY family_call_event_staff ON family_call_event AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM family_call f WHERE f.id = family_call_event.call_id AND f.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY family_call_event_family ON family_call_event AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM family_call f WHERE f.id = family_call_event.call_id AND f.child_id = ANY ((SELECT scope_ids('child_ids'))::uuid[])))",
    "CREATE POLICY family_call_event_platform ON family_call_event FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # family_call_quota
    "CREATE POLICY family_call_quota_staff ON family_call_quota AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM child c WHERE c.id = family_call_quota.child_id AND c.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY family_call_quota_family ON family_call_quota AS PERMISSIVE FOR ALL TO liushou_app USING (child_id = ANY ((SELECT scope_ids('child_ids'))::uuid[]))",
    "CREATE POLICY family_call_quota_platform ON family_call_quota FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # family_call_request
    "CREATE POLICY family_call_request_own ON family_call_request AS PERMISSIVE FOR ALL TO liushou_app USING (account_id = (SELECT scope_id('account_id')))",
    "CREATE POLICY family_call_request_platform ON family_call_request FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
)
# What is taken of a slot, without who took it: the times and booths of the live calls of some lines. Runs as
# the tables' owner, so a family sees every family's holds on its child's school's lines — and nothing else of
# them; the caller passes only the lines it can see (an ARRAY(SELECT … FROM call_line …) under its own scope).
HOLDS_FUNCTION = """
CREATE FUNCTION family_call_holds(line_ids uuid[], since timestamptz, until timestamptz)
RETURNS TABLE (line_id uuid, starts_at timestamptz, blocked_until timestamptz, booth integer)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT f.line_id, f.starts_at, f.blocked_until, f.booth FROM family_call f
    WHERE f.line_id = ANY (line_ids) AND f.status IN ('booked', 'confirmed')
      AND f.starts_at < until AND f.blocked_until > since
$$
"""
HOLDS_SIGNATURE = "family_call_holds(uuid[], timestamptz, timestamptz)"


def upgrade() -> None:
    # btree_gist (for the exclusion constraints' equality on uuid and integer) is installed by 0001.
    # ### commands auto generated by Alembic - please adjust! ###
    op.create_table(
        "festival_day",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("county_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("windows", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["county_id"], ["county.id"], name=op.f("fk_festival_day_county_id_county"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_festival_day")),
        sa.UniqueConstraint("county_id", "day", name=op.f("uq_festival_day_county_id")),
    )
    op.create_table(
        "call_line",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("room", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("number", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("slot_minutes", sa.Integer(), nullable=False),
        sa.Column("buffer_minutes", sa.Integer(), nullable=False),
        sa.Column("min_notice_minutes", sa.Integer(), nullable=False),
        sa.Column("horizon_days", sa.Integer(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("capacity BETWEEN 1 AND 50", name=op.f("ck_call_line_capacity")),
        sa.CheckConstraint("slot_minutes BETWEEN 5 AND 240", name=op.f("ck_call_line_slot_minutes")),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_call_line_school_id_school"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_line")),
    )
    op.create_index(op.f("ix_call_line_school_id"), "call_line", ["school_id"], unique=False)
    op.create_table(
        "family_call_settings",
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("weekly_quota", sa.Integer(), nullable=False),
        sa.Column("requires_confirmation", sa.Boolean(), nullable=False),
        sa.Column("family_cancel_cutoff_minutes", sa.Integer(), nullable=False),
        sa.Column("reminder_lead_minutes", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_family_call_settings_school_id_school"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("school_id", name=op.f("pk_family_call_settings")),
    )
    op.create_table(
        "call_line_override",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("line_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("windows", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["line_id"], ["call_line.id"], name=op.f("fk_call_line_override_line_id_call_line"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_line_override")),
        sa.UniqueConstraint("line_id", "day", name=op.f("uq_call_line_override_line_id")),
    )
    op.create_table(
        "call_line_window",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("line_id", sa.Uuid(), nullable=False),
        sa.Column("weekday", sa.Integer(), nullable=False),
        sa.Column("starts", sa.Time(), nullable=False),
        sa.Column("ends", sa.Time(), nullable=False),
        sa.CheckConstraint("starts <> ends", name=op.f("ck_call_line_window_not_empty")),
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name=op.f("ck_call_line_window_weekday")),
        sa.ForeignKeyConstraint(
            ["line_id"], ["call_line.id"], name=op.f("fk_call_line_window_line_id_call_line"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_line_window")),
    )
    op.create_index(op.f("ix_call_line_window_line_id"), "call_line_window", ["line_id"], unique=False)
    op.create_table(
        "family_call",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("line_id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("child_id", sa.Uuid(), nullable=False),
        sa.Column("guardian_id", sa.Uuid(), nullable=True),
        sa.Column("booked_by", sa.Uuid(), nullable=False),
        sa.Column("booth", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rescheduled_from", sa.Uuid(), nullable=True),
        sa.Column("duration_minutes", sa.Integer(), nullable=True),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("brought_by", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("missed_by", sa.String(length=16), nullable=True),
        sa.Column("cancelled_by", sa.String(length=8), nullable=True),
        sa.Column("cancel_reason", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        postgresql.ExcludeConstraint(
            (sa.column("child_id"), "="),
            (sa.text("tstzrange(starts_at, ends_at)"), "&&"),
            where=sa.text("status IN ('booked', 'confirmed')"),
            using="gist",
            name="ex_family_call_child",
        ),
        postgresql.ExcludeConstraint(
            (sa.column("line_id"), "="),
            (sa.column("booth"), "="),
            (sa.text("tstzrange(starts_at, blocked_until)"), "&&"),
            where=sa.text("status IN ('booked', 'confirmed')"),
            using="gist",
            name="ex_family_call_booth",
        ),
        sa.CheckConstraint("starts_at < ends_at AND ends_at <= blocked_until", name=op.f("ck_family_call_times")),
        sa.ForeignKeyConstraint(
            ["booked_by"], ["account.id"], name=op.f("fk_family_call_booked_by_account"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["child_id"], ["child.id"], name=op.f("fk_family_call_child_id_child"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["guardian_id"], ["guardian.id"], name=op.f("fk_family_call_guardian_id_guardian"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["line_id"], ["call_line.id"], name=op.f("fk_family_call_line_id_call_line"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["rescheduled_from"],
            ["family_call.id"],
            name=op.f("fk_family_call_rescheduled_from_family_call"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_family_call_school_id_school"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_family_call")),
    )
    op.create_index("ix_family_call_child_starts", "family_call", ["child_id", "starts_at"], unique=False)
    op.create_index(op.f("ix_family_call_guardian_id"), "family_call", ["guardian_id"], unique=False)
    op.create_index("ix_family_call_line_starts", "family_call", ["line_id", "starts_at"], unique=False)
    op.create_index("ix_family_call_school_starts", "family_call", ["school_id", "starts_at"], unique=False)
    op.create_table(
        "family_call_quota",
        sa.Column("child_id", sa.Uuid(), nullable=False),
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["child_id"], ["child.id"], name=op.f("fk_family_call_quota_child_id_child"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("child_id", "week_start", name=op.f("pk_family_call_quota")),
    )
    op.create_table(
        "family_call_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("call_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_family_call_event_account_id_account"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["call_id"], ["family_call.id"], name=op.f("fk_family_call_event_call_id_family_call"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_family_call_event")),
    )
    op.create_index(op.f("ix_family_call_event_call_id"), "family_call_event", ["call_id"], unique=False)
    op.create_table(
        "family_call_request",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("body_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("call_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_family_call_request_account_id_account"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["family_call.id"],
            name=op.f("fk_family_call_request_call_id_family_call"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("account_id", "key", name=op.f("pk_family_call_request")),
    )
    # ### end Alembic commands ###
    for table in SCOPED_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for statement in POLICIES:
        op.execute(statement)
    op.execute(HOLDS_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {HOLDS_SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {HOLDS_SIGNATURE} TO liushou_app, liushou_platform")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {HOLDS_SIGNATURE}")  # the policies go with their tables
    # ### commands auto generated by Alembic - please adjust! ###
    op.drop_table("family_call_request")
    op.drop_index(op.f("ix_family_call_event_call_id"), table_name="family_call_event")
    op.drop_table("family_call_event")
    op.drop_table("family_call_quota")
    op.drop_index("ix_family_call_school_starts", table_name="family_call")
    op.drop_index("ix_family_call_line_starts", table_name="family_call")
    op.drop_index(op.f("ix_family_call_guardian_id"), table_name="family_call")
    op.drop_index("ix_family_call_child_starts", table_name="family_call")
    op.drop_table("family_call")
    op.drop_index(op.f("ix_call_line_window_line_id"), table_name="call_line_window")
    op.drop_table("call_line_window")
    op.drop_table("call_line_override")
    op.drop_table("family_call_settings")
    op.drop_index(op.f("ix_call_line_school_id"), table_name="call_line")
    op.drop_table("call_line")
    op.drop_table("festival_day")
    # ### end Alembic commands ###
