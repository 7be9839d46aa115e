"""Outgoing messages — the durable outbox every domain sends through (incidents, family-call reminders,
care digests), and the provider events already applied.

An :class:`OutboundMessage` is one SMS, call or WeChat subscribe message to one address: ``pending →
sending → sent → delivered``, or ``failed`` / ``cancelled`` / ``unconfirmed``. What it is about is its
``topic`` and ``subject_id`` (an incident's messages also carry ``incident_id`` and the chain's
``party_id`` / ``target_id``); ``dedupe_key`` makes enqueueing idempotent; ``fallback`` holds the ways still
to try, in order, when this one fails. Nothing depends on a process staying alive: workers read these rows.
"""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from api.models.base import SENSITIVE, enum_type, fk_field, id_field, timestamp_field
from api.models.row_security import ROLE, SCHOOLS, Policy, of_visible_incident, row_security, unscoped


class Channel(StrEnum):
    wechat = "wechat"  # 微信订阅消息
    sms = "sms"  # 短信
    voice = "voice"  # 语音电话


CHANNEL_LABELS = {Channel.wechat: "微信", Channel.sms: "短信", Channel.voice: "语音电话"}


class Topic(StrEnum):
    """What a message is about; ``subject_id`` names the row of that kind."""

    incident = "incident"  # 突发事件 (subject: the incident)
    family_call = "family_call"  # 亲情通话提醒 (subject: the call)
    care_digest = "care_digest"  # 关爱记录摘要 (subject: the digest)


class MessagePurpose(StrEnum):
    notify = "notify"  # telling a party of an incident (needs an acknowledgement)
    leader_alert = "leader_alert"  # alerting the school's leaders (no acknowledgement)
    reply_help = "reply_help"  # answering an SMS reply we could not match to exactly one open party
    inform = "inform"  # a message that asks for nothing back (a reminder, a digest)


class MessageStatus(StrEnum):
    pending = "pending"  # waiting for its send time
    sending = "sending"  # claimed by a worker (lease_until)
    sent = "sent"  # accepted by the provider
    delivered = "delivered"  # handset received it / call answered
    failed = "failed"  # not sent, bounced, or call not reached
    # The send's answer was lost (its worker stopped mid-send, or it timed out) on a channel without an
    # idempotency key (WeChat): it may have been shown. Never resent there; the sender moves on at once.
    unconfirmed = "unconfirmed"
    cancelled = "cancelled"  # no longer needed (the party was told first)


class OutboundMessage(SQLModel, table=True):
    """One message or call: pending → sending → sent → delivered, or failed; its idempotency key is stable
    across retries, so a provider never sends the same attempt twice."""

    __tablename__ = "outbound_message"
    __table_args__ = (
        sa.Index("ix_outbound_message_due", "next_attempt_at", postgresql_where=sa.text("status = 'pending'")),
        sa.Index("ix_outbound_message_lease", "lease_until", postgresql_where=sa.text("status = 'sending'")),
        sa.Index("ix_outbound_message_reply", "address", "reply_code", postgresql_where=sa.text("channel = 'sms'")),
        sa.Index("ix_outbound_message_subject", "topic", "subject_id"),
        sa.CheckConstraint("topic <> 'incident' OR incident_id IS NOT NULL", name="incident_subject"),
    )

    id: uuid.UUID = id_field()
    topic: Topic = Field(default=Topic.incident, sa_type=enum_type(Topic, 16))
    subject_id: uuid.UUID | None = Field(default=None, description="the incident, call or digest it is about")
    # The school whose data the message is about (scoping of messages that are not an incident's).
    school_id: uuid.UUID | None = fk_field("school.id", nullable=True, index=False)
    incident_id: uuid.UUID | None = fk_field("incident.id", nullable=True)
    party_id: uuid.UUID | None = fk_field("escalation_party.id", nullable=True)
    target_id: uuid.UUID | None = fk_field("escalation_target.id", nullable=True, index=False)
    account_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    purpose: MessagePurpose = Field(sa_type=enum_type(MessagePurpose, 16))
    channel: Channel = Field(sa_type=enum_type(Channel, 8))
    address: str = Field(max_length=128, sa_column_kwargs=SENSITIVE)
    recipient_label: str = Field(max_length=128)
    round: int = Field(default=1)
    status: MessageStatus = Field(sa_type=enum_type(MessageStatus, 16))
    idempotency_key: str = Field(max_length=64, unique=True)
    # The sender's own key: enqueueing the same key twice queues one message (null: no deduplication).
    dedupe_key: str | None = Field(default=None, max_length=128, unique=True)
    body: str = Field(max_length=500, sa_column_kwargs=SENSITIVE)
    template_data: dict[str, Any] | None = Field(default=None, sa_type=JSONB)
    wechat_template_id: str | None = Field(default=None, max_length=64, description="null: the default template")
    wechat_page: str | None = Field(default=None, max_length=256)
    reply_code: str | None = Field(default=None, max_length=8)
    # Ways still to try, in order, should this one fail (each a route: channel, address, body …).
    fallback: list[dict[str, Any]] | None = Field(default=None, sa_type=JSONB, sa_column_kwargs=SENSITIVE)
    # Under a backlog: lower priority first, then the earlier due_by (an incident step's deadline).
    priority: int = Field(default=1)
    due_by: datetime | None = timestamp_field(nullable=True)
    attempts: int = Field(default=0)
    max_attempts: int
    retry_backoff_seconds: int
    ack_wait_seconds: int
    next_attempt_at: datetime = timestamp_field()
    lease_until: datetime | None = timestamp_field(nullable=True)
    leased_by: str | None = Field(default=None, max_length=64)
    provider_message_id: str | None = Field(default=None, max_length=128, index=True)
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=256)
    created_at: datetime = timestamp_field()
    sent_at: datetime | None = timestamp_field(nullable=True)
    delivered_at: datetime | None = timestamp_field(nullable=True)
    failed_at: datetime | None = timestamp_field(nullable=True)
    # A call that ended (answered or not): waiting longer for its acknowledgement is pointless.
    finished_at: datetime | None = timestamp_field(nullable=True)
    ack_wait_until: datetime | None = timestamp_field(nullable=True)


class ProviderEvent(SQLModel, table=True):
    """Callback events already processed: providers may deliver one twice."""

    __tablename__ = "provider_event"

    event_id: str = Field(max_length=128, primary_key=True)
    type: str = Field(max_length=32)
    received_at: datetime = timestamp_field()


# ---- row-level security (api/models/row_security.py) ----
# An incident's messages follow their incident, for staff who see it; any other message (a reminder, a digest)
# is seen by the admin of the school it is about (and the platform admin). Families see none.
row_security(
    "outbound_message",
    Policy(
        "staff",
        using=(
            f"(incident_id IS NOT NULL AND {of_visible_incident('outbound_message')})"
            f" OR (incident_id IS NULL AND {ROLE} = 'school_admin' AND school_id = ANY ({SCHOOLS}))"
        ),
    ),
)
unscoped("provider_event", "ids of provider callbacks already handled; written by signed callbacks as the system")
