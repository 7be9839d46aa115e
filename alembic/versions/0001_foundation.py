"""foundation

Revision ID: 0001
Revises:
Create Date: 2026-11-24 02:58:10.820293

Organisation (county, township, school, class), accounts, login sessions, invites, and the
append-only audit log. Also the extensions later migrations use (pg_trgm for name search,
btree_gist for exclusion constraints).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("resource_type", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("resource_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("school_id", sa.Uuid(), nullable=True),
        sa.Column("county_id", sa.Uuid(), nullable=True),
        sa.Column("request_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("client_ip", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("changes", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_account_id"), "audit_log", ["account_id"], unique=False)
    op.create_index(op.f("ix_audit_log_county_id"), "audit_log", ["county_id"], unique=False)
    op.create_index("ix_audit_log_resource", "audit_log", ["resource_type", "resource_id", "at"], unique=False)
    op.create_index("ix_audit_log_school_at", "audit_log", ["school_id", "at"], unique=False)
    op.create_table(
        "county",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("code", sqlmodel.sql.sqltypes.AutoString(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_county")),
        sa.UniqueConstraint("code", name=op.f("uq_county_code")),
    )
    op.create_table(
        "login_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("username", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("client_ip", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempt")),
    )
    op.create_index("ix_login_attempt_ip_at", "login_attempt", ["client_ip", "at"], unique=False)
    op.create_index("ix_login_attempt_username_at", "login_attempt", ["username", "at"], unique=False)
    op.create_table(
        "township",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("county_id", sa.Uuid(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["county_id"], ["county.id"], name=op.f("fk_township_county_id_county"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_township")),
    )
    op.create_index(op.f("ix_township_county_id"), "township", ["county_id"], unique=False)
    op.create_table(
        "school",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("county_id", sa.Uuid(), nullable=False),
        sa.Column("township_id", sa.Uuid(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("pupil_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["county_id"], ["county.id"], name=op.f("fk_school_county_id_county"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["township_id"], ["township.id"], name=op.f("fk_school_township_id_township"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_school")),
    )
    op.create_index(op.f("ix_school_county_id"), "school", ["county_id"], unique=False)
    op.create_index(op.f("ix_school_township_id"), "school", ["township_id"], unique=False)
    op.create_table(
        "account",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("display_name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("username", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("phone", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("county_id", sa.Uuid(), nullable=True),
        sa.Column("township_id", sa.Uuid(), nullable=True),
        sa.Column("school_id", sa.Uuid(), nullable=True),
        sa.Column("wechat_openid", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("wechat_unionid", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(role <> 'county_bureau' OR county_id IS NOT NULL) AND (role <> 'township_official' OR township_id IS NOT NULL) AND (role NOT IN ('school_admin', 'teacher') OR school_id IS NOT NULL)",
            name=op.f("ck_account_role_scope"),
        ),
        sa.ForeignKeyConstraint(
            ["county_id"], ["county.id"], name=op.f("fk_account_county_id_county"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_account_school_id_school"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["township_id"],
            ["township.id"],
            name=op.f("fk_account_township_id_township"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account")),
        sa.UniqueConstraint("username", name=op.f("uq_account_username")),
        sa.UniqueConstraint("wechat_openid", name=op.f("uq_account_wechat_openid")),
    )
    op.create_index(op.f("ix_account_county_id"), "account", ["county_id"], unique=False)
    op.create_index(op.f("ix_account_role"), "account", ["role"], unique=False)
    op.create_index(op.f("ix_account_school_id"), "account", ["school_id"], unique=False)
    op.create_index(op.f("ix_account_township_id"), "account", ["township_id"], unique=False)
    op.create_index(op.f("ix_account_wechat_unionid"), "account", ["wechat_unionid"], unique=False)
    op.create_table(
        "invite",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("display_name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("guardian_id", sa.Uuid(), nullable=True),
        sa.Column("created_by_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["account.id"],
            name=op.f("fk_invite_created_by_id_account"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_invite_school_id_school"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["used_by_id"], ["account.id"], name=op.f("fk_invite_used_by_id_account"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invite")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_invite_code_hash")),
    )
    op.create_index(op.f("ix_invite_created_by_id"), "invite", ["created_by_id"], unique=False)
    op.create_index(op.f("ix_invite_guardian_id"), "invite", ["guardian_id"], unique=False)
    op.create_index(op.f("ix_invite_school_id"), "invite", ["school_id"], unique=False)
    op.create_index(op.f("ix_invite_used_by_id"), "invite", ["used_by_id"], unique=False)
    op.create_table(
        "login_session",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("client_ip", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_login_session_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_session")),
    )
    op.create_index(op.f("ix_login_session_account_id"), "login_session", ["account_id"], unique=False)
    op.create_table(
        "school_class",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("head_teacher_id", sa.Uuid(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["head_teacher_id"],
            ["account.id"],
            name=op.f("fk_school_class_head_teacher_id_account"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_school_class_school_id_school"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_school_class")),
    )
    op.create_index(op.f("ix_school_class_head_teacher_id"), "school_class", ["head_teacher_id"], unique=False)
    op.create_index(op.f("ix_school_class_school_id"), "school_class", ["school_id"], unique=False)
    op.create_table(
        "refresh_token",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["login_session.id"],
            name=op.f("fk_refresh_token_session_id_login_session"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_token_token_hash")),
    )
    op.create_index(op.f("ix_refresh_token_session_id"), "refresh_token", ["session_id"], unique=False)
    op.create_table(
        "teaching_assignment",
        sa.Column("class_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_teaching_assignment_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["class_id"],
            ["school_class.id"],
            name=op.f("fk_teaching_assignment_class_id_school_class"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("class_id", "account_id", name=op.f("pk_teaching_assignment")),
    )
    # The audit log is append-only: the database itself refuses to change or remove an entry.
    op.execute(
        """
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
            FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
    op.execute("DROP FUNCTION audit_log_append_only()")
    op.drop_table("teaching_assignment")
    op.drop_index(op.f("ix_refresh_token_session_id"), table_name="refresh_token")
    op.drop_table("refresh_token")
    op.drop_index(op.f("ix_school_class_school_id"), table_name="school_class")
    op.drop_index(op.f("ix_school_class_head_teacher_id"), table_name="school_class")
    op.drop_table("school_class")
    op.drop_index(op.f("ix_login_session_account_id"), table_name="login_session")
    op.drop_table("login_session")
    op.drop_index(op.f("ix_invite_used_by_id"), table_name="invite")
    op.drop_index(op.f("ix_invite_school_id"), table_name="invite")
    op.drop_index(op.f("ix_invite_guardian_id"), table_name="invite")
    op.drop_index(op.f("ix_invite_created_by_id"), table_name="invite")
    op.drop_table("invite")
    op.drop_index(op.f("ix_account_wechat_unionid"), table_name="account")
    op.drop_index(op.f("ix_account_township_id"), table_name="account")
    op.drop_index(op.f("ix_account_school_id"), table_name="account")
    op.drop_index(op.f("ix_account_role"), table_name="account")
    op.drop_index(op.f("ix_account_county_id"), table_name="account")
    op.drop_table("account")
    op.drop_index(op.f("ix_school_township_id"), table_name="school")
    op.drop_index(op.f("ix_school_county_id"), table_name="school")
    op.drop_table("school")
    op.drop_index(op.f("ix_township_county_id"), table_name="township")
    op.drop_table("township")
    op.drop_index("ix_login_attempt_username_at", table_name="login_attempt")
    op.drop_index("ix_login_attempt_ip_at", table_name="login_attempt")
    op.drop_table("login_attempt")
    op.drop_table("county")
    op.drop_index("ix_audit_log_school_at", table_name="audit_log")
    op.drop_index("ix_audit_log_resource", table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_county_id"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_account_id"), table_name="audit_log")
    op.drop_table("audit_log")
