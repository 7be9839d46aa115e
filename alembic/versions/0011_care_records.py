"""care records: 结对帮扶 pairings with help plans and progress notes; tamper-evident care records (谈心, 家访…)
hash-chained per school with the chain head kept apart; a counsellor flag on accounts; the care tables' row-level
security

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 22:42:31.726119
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The chained tables are append-only where it matters: a care record is never deleted, its identity and its
# link never change (only its current content and version move, and each move is a link of its own);
# superseded versions and amendments never change at all.
TRIGGERS = (
    """
    CREATE FUNCTION care_record_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'care records are never deleted (%)', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    """
    CREATE FUNCTION care_record_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_TABLE_NAME <> 'care_record' OR (NEW.id, NEW.school_id, NEW.child_id, NEW.kind, NEW.author_id,
                NEW.created_at, NEW.chain_seq, NEW.prev_hash, NEW.content_hash, NEW.row_hash)
                IS DISTINCT FROM (OLD.id, OLD.school_id, OLD.child_id, OLD.kind, OLD.author_id,
                OLD.created_at, OLD.chain_seq, OLD.prev_hash, OLD.content_hash, OLD.row_hash) THEN
            RAISE EXCEPTION 'care record links are never changed (%)', TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END $$
    """,
    *(
        statement
        for table in ("care_record", "care_record_version", "care_record_amendment")
        for statement in (
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE OR TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION care_record_refuse_delete()",
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION care_record_refuse_change()",
        )
    ),
    # A child who transfers, graduates or leaves: their pairings (and those where they are the study buddy)
    # end with that reason on the event's date, in the transaction that records the event — whatever path
    # records it (the archive, the roster import, an end-of-year promotion).
    """
    CREATE FUNCTION care_pairing_end_with_child() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER SET search_path = public, pg_temp AS $$
    BEGIN
        UPDATE care_pairing SET
            ended_on = GREATEST(started_on, NEW.effective_on),
            end_reason = CASE NEW.kind WHEN 'transferred' THEN 'transferred'
                                       WHEN 'graduated' THEN 'graduated' ELSE 'left_school' END,
            end_note = left(NEW.reason, 256),
            ended_by_id = NEW.recorded_by_id
        WHERE (child_id = NEW.child_id OR buddy_child_id = NEW.child_id) AND ended_on IS NULL;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER child_event_ends_care_pairings AFTER INSERT ON child_event FOR EACH ROW"
    " WHEN (NEW.kind IN ('transferred', 'graduated', 'left')) EXECUTE FUNCTION care_pairing_end_with_child()",
    # A teacher who leaves the school (account deactivated or moved away): their children are unpaired at once.
    """
    CREATE FUNCTION care_pairing_end_with_staff() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER SET search_path = public, pg_temp AS $$
    BEGIN
        UPDATE care_pairing SET
            ended_on = GREATEST(started_on, (now() AT TIME ZONE 'Asia/Shanghai')::date),
            end_reason = 'staff_left'
        WHERE staff_id = NEW.id AND ended_on IS NULL;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER account_left_ends_care_pairings AFTER UPDATE OF is_active, school_id ON account FOR EACH ROW"
    " WHEN ((OLD.is_active AND NOT NEW.is_active) OR NEW.school_id IS DISTINCT FROM OLD.school_id)"
    " EXECUTE FUNCTION care_pairing_end_with_staff()",
)

DROP_TRIGGERS = (
    "DROP TRIGGER account_left_ends_care_pairings ON account",
    "DROP FUNCTION care_pairing_end_with_staff()",
    "DROP TRIGGER child_event_ends_care_pairings ON child_event",
    "DROP FUNCTION care_pairing_end_with_child()",
    *(
        f"DROP TRIGGER {table}_{what} ON {table}"
        for table in ("care_record", "care_record_version", "care_record_amendment")
        for what in ("no_delete", "no_change")
    ),
    "DROP FUNCTION care_record_refuse_change()",
    "DROP FUNCTION care_record_refuse_delete()",
)


# Row-level security: a frozen copy of the declarations beside the models (api/models/care.py); the grants come
# from the default privileges migration 0008 set for tables made later.
ROW_SECURITY = (
    # care_setting
    "ALTER TABLE care_setting ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY care_setting_staff ON care_setting AS PERMISSIVE FOR ALL TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY care_setting_platform ON care_setting FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # care_chain_head
    "ALTER TABLE care_chain_head ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY care_chain_head_staff ON care_chain_head AS PERMISSIVE FOR ALL TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY care_chain_head_platform ON care_chain_head FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # care_pairing
    "ALTER TABLE care_pairing ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY care_pairing_staff ON care_pairing AS PERMISSIVE FOR ALL TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY care_pairing_platform ON care_pairing FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # care_help_plan
    "ALTER TABLE care_help_plan ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY care_help_plan_staff ON care_help_plan AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM care_pairing p WHERE p.id = care_help_plan.pairing_id AND p.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY care_help_plan_platform ON care_help_plan FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # care_progress_note
    "ALTER TABLE care_progress_note ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY care_progress_note_staff ON care_progress_note AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM care_pairing p WHERE p.id = care_progress_note.pairing_id AND p.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY care_progress_note_platform ON care_progress_note FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # care_record
    "ALTER TABLE care_record ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY care_record_staff ON care_record AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM child c WHERE c.id = care_record.child_id AND c.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY care_record_platform ON care_record FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # care_record_version
    "ALTER TABLE care_record_version ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY care_record_version_staff ON care_record_version AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM care_record r JOIN child c ON c.id = r.child_id WHERE r.id = care_record_version.record_id AND c.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY care_record_version_platform ON care_record_version FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # care_record_amendment
    "ALTER TABLE care_record_amendment ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY care_record_amendment_staff ON care_record_amendment AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM care_record r JOIN child c ON c.id = r.child_id WHERE r.id = care_record_amendment.record_id AND c.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY care_record_amendment_platform ON care_record_amendment FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
)

DROP_ROW_SECURITY = (
    "DROP POLICY IF EXISTS care_setting_staff ON care_setting",
    "DROP POLICY IF EXISTS care_setting_platform ON care_setting",
    "ALTER TABLE care_setting DISABLE ROW LEVEL SECURITY",
    "DROP POLICY IF EXISTS care_chain_head_staff ON care_chain_head",
    "DROP POLICY IF EXISTS care_chain_head_platform ON care_chain_head",
    "ALTER TABLE care_chain_head DISABLE ROW LEVEL SECURITY",
    "DROP POLICY IF EXISTS care_pairing_staff ON care_pairing",
    "DROP POLICY IF EXISTS care_pairing_platform ON care_pairing",
    "ALTER TABLE care_pairing DISABLE ROW LEVEL SECURITY",
    "DROP POLICY IF EXISTS care_help_plan_staff ON care_help_plan",
    "DROP POLICY IF EXISTS care_help_plan_platform ON care_help_plan",
    "ALTER TABLE care_help_plan DISABLE ROW LEVEL SECURITY",
    "DROP POLICY IF EXISTS care_progress_note_staff ON care_progress_note",
    "DROP POLICY IF EXISTS care_progress_note_platform ON care_progress_note",
    "ALTER TABLE care_progress_note DISABLE ROW LEVEL SECURITY",
    "DROP POLICY IF EXISTS care_record_staff ON care_record",
    "DROP POLICY IF EXISTS care_record_platform ON care_record",
    "ALTER TABLE care_record DISABLE ROW LEVEL SECURITY",
    "DROP POLICY IF EXISTS care_record_version_staff ON care_record_version",
    "DROP POLICY IF EXISTS care_record_version_platform ON care_record_version",
    "ALTER TABLE care_record_version DISABLE ROW LEVEL SECURITY",
    "DROP POLICY IF EXISTS care_record_amendment_staff ON care_record_amendment",
    "DROP POLICY IF EXISTS care_record_amendment_platform ON care_record_amendment",
    "ALTER TABLE care_record_amendment DISABLE ROW LEVEL SECURITY",
)


def upgrade() -> None:
    op.create_table(
        "care_chain_head",
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_care_chain_head_school_id_school"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("school_id", name=op.f("pk_care_chain_head")),
    )
    op.create_table(
        "care_setting",
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("proxy_parent_cap", sa.Integer(), nullable=False),
        sa.Column("mentor_cap", sa.Integer(), nullable=False),
        sa.Column("edit_window_minutes", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint("edit_window_minutes BETWEEN 0 AND 10080", name=op.f("ck_care_setting_edit_window")),
        sa.CheckConstraint("mentor_cap BETWEEN 1 AND 20", name=op.f("ck_care_setting_mentor_cap")),
        sa.CheckConstraint("proxy_parent_cap BETWEEN 1 AND 50", name=op.f("ck_care_setting_proxy_parent_cap")),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_care_setting_school_id_school"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"], ["account.id"], name=op.f("fk_care_setting_updated_by_id_account"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("school_id", name=op.f("pk_care_setting")),
    )
    op.create_table(
        "care_pairing",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("child_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("staff_id", sa.Uuid(), nullable=True),
        sa.Column("buddy_child_id", sa.Uuid(), nullable=True),
        sa.Column("outside_name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("outside_phone", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("started_on", sa.Date(), nullable=False),
        sa.Column("ended_on", sa.Date(), nullable=True),
        sa.Column("end_reason", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("end_note", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("ended_by_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "(kind <> 'proxy_parent' OR (staff_id IS NOT NULL AND buddy_child_id IS NULL AND outside_name IS NULL)) AND (kind <> 'study_buddy' OR (buddy_child_id IS NOT NULL AND staff_id IS NULL AND outside_name IS NULL AND buddy_child_id <> child_id)) AND (kind <> 'mentor' OR (buddy_child_id IS NULL AND ((staff_id IS NOT NULL AND outside_name IS NULL AND outside_phone IS NULL) OR (staff_id IS NULL AND outside_name IS NOT NULL AND outside_phone IS NOT NULL))))",
            name=op.f("ck_care_pairing_partner_of_kind"),
        ),
        sa.CheckConstraint(
            "(ended_on IS NULL) = (end_reason IS NULL) AND (ended_on IS NULL OR ended_on >= started_on)",
            name=op.f("ck_care_pairing_ended_with_reason"),
        ),
        sa.ForeignKeyConstraint(
            ["buddy_child_id"], ["child.id"], name=op.f("fk_care_pairing_buddy_child_id_child"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["child_id"], ["child.id"], name=op.f("fk_care_pairing_child_id_child"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["account.id"], name=op.f("fk_care_pairing_created_by_id_account"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["ended_by_id"], ["account.id"], name=op.f("fk_care_pairing_ended_by_id_account"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_care_pairing_school_id_school"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["account.id"], name=op.f("fk_care_pairing_staff_id_account"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_pairing")),
    )
    op.create_index(op.f("ix_care_pairing_buddy_child_id"), "care_pairing", ["buddy_child_id"], unique=False)
    op.create_index("ix_care_pairing_child_active", "care_pairing", ["child_id", "ended_on"], unique=False)
    op.create_index(op.f("ix_care_pairing_school_id"), "care_pairing", ["school_id"], unique=False)
    op.create_index(
        "ix_care_pairing_staff_active",
        "care_pairing",
        ["staff_id", "kind"],
        unique=False,
        postgresql_where=sa.text("ended_on IS NULL"),
    )
    op.create_index(
        "uq_care_pairing_active_proxy_parent",
        "care_pairing",
        ["child_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'proxy_parent' AND ended_on IS NULL"),
    )
    op.create_table(
        "care_record",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("child_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("occurred_on", sa.Date(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("chain_seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("content_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("row_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_care_record_version")),
        sa.ForeignKeyConstraint(
            ["author_id"], ["account.id"], name=op.f("fk_care_record_author_id_account"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["child_id"], ["child.id"], name=op.f("fk_care_record_child_id_child"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_care_record_school_id_school"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_record")),
        sa.UniqueConstraint("school_id", "chain_seq", name="uq_care_record_chain_seq"),
    )
    op.create_index(op.f("ix_care_record_author_id"), "care_record", ["author_id"], unique=False)
    op.create_index("ix_care_record_child_on", "care_record", ["child_id", "occurred_on"], unique=False)
    op.create_index(
        "ix_care_record_school_child_kind_on",
        "care_record",
        ["school_id", "child_id", "kind", "occurred_on"],
        unique=False,
    )
    op.create_table(
        "care_help_plan",
        sa.Column("pairing_id", sa.Uuid(), nullable=False),
        sa.Column("goals", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column("content", sqlmodel.sql.sqltypes.AutoString(length=4096), nullable=False),
        sa.Column("schedule", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("milestones", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["pairing_id"],
            ["care_pairing.id"],
            name=op.f("fk_care_help_plan_pairing_id_care_pairing"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"], ["account.id"], name=op.f("fk_care_help_plan_updated_by_id_account"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("pairing_id", name=op.f("pk_care_help_plan")),
    )
    op.create_table(
        "care_progress_note",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("pairing_id", sa.Uuid(), nullable=False),
        sa.Column("noted_on", sa.Date(), nullable=False),
        sa.Column("text", sqlmodel.sql.sqltypes.AutoString(length=4096), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["account.id"], name=op.f("fk_care_progress_note_author_id_account"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["pairing_id"],
            ["care_pairing.id"],
            name=op.f("fk_care_progress_note_pairing_id_care_pairing"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_progress_note")),
    )
    op.create_index("ix_care_progress_note_pairing", "care_progress_note", ["pairing_id", "noted_on"], unique=False)
    op.create_table(
        "care_record_amendment",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
        sa.Column("text", sqlmodel.sql.sqltypes.AutoString(length=4096), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("chain_seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("content_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("row_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["account.id"], name=op.f("fk_care_record_amendment_author_id_account"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["care_record.id"],
            name=op.f("fk_care_record_amendment_record_id_care_record"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_care_record_amendment_school_id_school"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_record_amendment")),
        sa.UniqueConstraint("school_id", "chain_seq", name="uq_care_record_amendment_chain_seq"),
    )
    op.create_index(
        "ix_care_record_amendment_record", "care_record_amendment", ["record_id", "created_at"], unique=False
    )
    op.create_table(
        "care_record_version",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("occurred_on", sa.Date(), nullable=False),
        sa.Column("content", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("replaced_by_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("corrected_by_id", sa.Uuid(), nullable=False),
        sa.Column("corrected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("chain_seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("content_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("row_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["corrected_by_id"],
            ["account.id"],
            name=op.f("fk_care_record_version_corrected_by_id_account"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["care_record.id"],
            name=op.f("fk_care_record_version_record_id_care_record"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_care_record_version_school_id_school"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_record_version")),
        sa.UniqueConstraint("record_id", "version", name="uq_care_record_version_record_version"),
        sa.UniqueConstraint("school_id", "chain_seq", name="uq_care_record_version_chain_seq"),
    )
    op.add_column("account", sa.Column("is_counsellor", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.alter_column("account", "is_counsellor", server_default=None)
    for statement in TRIGGERS:
        op.execute(statement)
    for statement in ROW_SECURITY:
        op.execute(statement)


def downgrade() -> None:
    for statement in DROP_ROW_SECURITY:
        op.execute(statement)
    for statement in DROP_TRIGGERS:
        op.execute(statement)
    op.drop_column("account", "is_counsellor")
    op.drop_table("care_record_version")
    op.drop_index("ix_care_record_amendment_record", table_name="care_record_amendment")
    op.drop_table("care_record_amendment")
    op.drop_index("ix_care_progress_note_pairing", table_name="care_progress_note")
    op.drop_table("care_progress_note")
    op.drop_table("care_help_plan")
    op.drop_index("ix_care_record_school_child_kind_on", table_name="care_record")
    op.drop_index("ix_care_record_child_on", table_name="care_record")
    op.drop_index(op.f("ix_care_record_author_id"), table_name="care_record")
    op.drop_table("care_record")
    op.drop_index(
        "uq_care_pairing_active_proxy_parent",
        table_name="care_pairing",
        postgresql_where=sa.text("kind = 'proxy_parent' AND ended_on IS NULL"),
    )
    op.drop_index(
        "ix_care_pairing_staff_active", table_name="care_pairing", postgresql_where=sa.text("ended_on IS NULL")
    )
    op.drop_index(op.f("ix_care_pairing_school_id"), table_name="care_pairing")
    op.drop_index("ix_care_pairing_child_active", table_name="care_pairing")
    op.drop_index(op.f("ix_care_pairing_buddy_child_id"), table_name="care_pairing")
    op.drop_table("care_pairing")
    op.drop_table("care_setting")
    op.drop_table("care_chain_head")
