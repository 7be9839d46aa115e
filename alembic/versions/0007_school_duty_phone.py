"""school: its duty phone (值班电话), shown on the acknowledgement page, the contact card and the notices

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("school", sa.Column("duty_phone", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column("school", "duty_phone")
