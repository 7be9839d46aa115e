"""audit log: the client's own request id, kept apart from ours

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 15:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "audit_log", sa.Column("client_request_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("audit_log", "client_request_id")
