"""notifications: the outbox serves every domain — a message's topic and subject, an idempotent dedupe key,
fallback ways, a priority and a due time for the claim order, a WeChat template of its own

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Row security of the outbox (a frozen copy of api/models/notifications.py's declaration): an incident's
# messages follow their incident, any other message is its school admin's.
_STAFF_MESSAGES = (
    "CREATE POLICY outbound_message_staff ON outbound_message AS PERMISSIVE FOR ALL TO liushou_app USING"
    " ((incident_id IS NOT NULL AND EXISTS (SELECT 1 FROM incident i WHERE i.id = outbound_message.incident_id"
    " AND i.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))"
    " OR (incident_id IS NULL AND (SELECT scope_text('role')) = 'school_admin'"
    " AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))"
)
_INCIDENT_MESSAGES = (
    "CREATE POLICY outbound_message_staff ON outbound_message AS PERMISSIVE FOR ALL TO liushou_app USING"
    " (EXISTS (SELECT 1 FROM incident i WHERE i.id = outbound_message.incident_id"
    " AND i.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))"
)


def upgrade() -> None:
    op.add_column(
        "outbound_message",
        sa.Column("topic", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default="incident"),
    )
    op.alter_column("outbound_message", "topic", server_default=None)
    op.add_column("outbound_message", sa.Column("subject_id", sa.Uuid(), nullable=True))
    op.add_column("outbound_message", sa.Column("school_id", sa.Uuid(), nullable=True))
    op.add_column(
        "outbound_message", sa.Column("dedupe_key", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True)
    )
    op.add_column(
        "outbound_message", sa.Column("wechat_template_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
    )
    op.add_column("outbound_message", sa.Column("fallback", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("outbound_message", sa.Column("priority", sa.Integer(), nullable=False, server_default="1"))
    op.alter_column("outbound_message", "priority", server_default=None)
    op.add_column("outbound_message", sa.Column("due_by", sa.DateTime(timezone=True), nullable=True))
    # Messages already queued: about their incident, in its school; a party's message is due by its step's
    # deadline, anything else (alerts to the leaders, answers to replies) goes first, as the claim did before.
    op.execute(
        """
        UPDATE outbound_message m SET subject_id = m.incident_id, school_id = i.school_id,
            priority = CASE WHEN m.purpose = 'notify' THEN 1 ELSE 0 END,
            due_by = (SELECT s.deadline_at FROM escalation_party p JOIN escalation_step s ON s.id = p.step_id
                      WHERE p.id = m.party_id AND m.purpose = 'notify')
        FROM incident i WHERE i.id = m.incident_id
        """
    )
    op.alter_column("outbound_message", "incident_id", existing_type=sa.Uuid(), nullable=True)
    op.create_foreign_key(
        op.f("fk_outbound_message_school_id_school"),
        "outbound_message",
        "school",
        ["school_id"],
        ["id"],
        ondelete="RESTRICT",
    )
    op.create_unique_constraint(op.f("uq_outbound_message_dedupe_key"), "outbound_message", ["dedupe_key"])
    op.create_index("ix_outbound_message_subject", "outbound_message", ["topic", "subject_id"], unique=False)
    op.create_check_constraint(
        op.f("ck_outbound_message_incident_subject"),
        "outbound_message",
        "topic <> 'incident' OR incident_id IS NOT NULL",
    )
    op.execute("DROP POLICY outbound_message_staff ON outbound_message")
    op.execute(_STAFF_MESSAGES)


def downgrade() -> None:
    # The old outbox knew incidents only: messages of other topics cannot be kept.
    op.execute("DELETE FROM outbound_message WHERE incident_id IS NULL")
    op.execute("DROP POLICY outbound_message_staff ON outbound_message")
    op.execute(_INCIDENT_MESSAGES)
    op.drop_constraint(op.f("ck_outbound_message_incident_subject"), "outbound_message", type_="check")
    op.drop_index("ix_outbound_message_subject", table_name="outbound_message")
    op.drop_constraint(op.f("uq_outbound_message_dedupe_key"), "outbound_message", type_="unique")
    op.drop_constraint(op.f("fk_outbound_message_school_id_school"), "outbound_message", type_="foreignkey")
    op.alter_column("outbound_message", "incident_id", existing_type=sa.Uuid(), nullable=False)
    for column in ("due_by", "priority", "fallback", "wechat_template_id", "dedupe_key", "school_id", "subject_id"):
        op.drop_column("outbound_message", column)
    op.drop_column("outbound_message", "topic")
