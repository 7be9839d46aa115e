"""reply codes: an SMS reply code is unique among the open parties of a phone number

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 15:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reply_code",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("incident_id", sa.Uuid(), nullable=False),
        sa.Column("party_id", sa.Uuid(), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("code", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incident.id"], name=op.f("fk_reply_code_incident_id_incident"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["party_id"],
            ["escalation_party.id"],
            name=op.f("fk_reply_code_party_id_escalation_party"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reply_code")),
    )
    op.create_index(op.f("ix_reply_code_incident_id"), "reply_code", ["incident_id"], unique=False)
    op.create_index(op.f("ix_reply_code_party_id"), "reply_code", ["party_id"], unique=False)
    op.create_index(
        "uq_reply_code_open_address_code",
        "reply_code",
        ["address", "code"],
        unique=True,
        postgresql_where=sa.text("released_at IS NULL"),
    )
    # Codes of parties still open when this runs. Where two open parties of a number share a code, the newest
    # keeps it (the old matching picked the newest too); the other's is left released, and its party gets a
    # fresh code with its next SMS.
    op.execute(
        """
        WITH latest AS (
            SELECT DISTINCT ON (m.party_id, m.address)
                   m.incident_id, m.party_id, m.address, m.reply_code, m.created_at
            FROM outbound_message m
            JOIN escalation_party p ON p.id = m.party_id
            JOIN incident i ON i.id = m.incident_id
            WHERE m.channel = 'sms' AND m.purpose = 'notify' AND m.reply_code IS NOT NULL
              AND p.status <> 'told' AND i.status <> 'closed'
            ORDER BY m.party_id, m.address, m.created_at DESC
        ), ranked AS (
            SELECT *, row_number() OVER (PARTITION BY address, reply_code ORDER BY created_at DESC) AS rank
            FROM latest
        )
        INSERT INTO reply_code (id, incident_id, party_id, address, code, created_at, released_at)
        SELECT gen_random_uuid(), incident_id, party_id, address, reply_code, created_at,
               CASE WHEN rank = 1 THEN NULL ELSE now() END
        FROM ranked
        """
    )


def downgrade() -> None:
    op.drop_index(
        "uq_reply_code_open_address_code", table_name="reply_code", postgresql_where=sa.text("released_at IS NULL")
    )
    op.drop_index(op.f("ix_reply_code_party_id"), table_name="reply_code")
    op.drop_index(op.f("ix_reply_code_incident_id"), table_name="reply_code")
    op.drop_table("reply_code")
