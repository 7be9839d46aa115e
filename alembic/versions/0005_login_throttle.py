"""login throttle: per-bucket failure counters locked while an attempt is admitted (replaces login_attempt)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 15:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_throttle")),
    )
    op.create_index(op.f("ix_login_throttle_window_start"), "login_throttle", ["window_start"], unique=False)
    # The old log of failures was counted with a read-then-decide query; its rows carry no state worth moving
    # (at most one window of failures).
    op.drop_index("ix_login_attempt_username_at", table_name="login_attempt")
    op.drop_index("ix_login_attempt_ip_at", table_name="login_attempt")
    op.drop_table("login_attempt")


def downgrade() -> None:
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
    op.drop_index(op.f("ix_login_throttle_window_start"), table_name="login_throttle")
    op.drop_table("login_throttle")
