"""How a domain hears what became of its messages.

The outbox knows channels and delivery states, not incidents or calls. A domain whose messages need more
than that — the incident's chain locks its party before a message changes, moves the party on when one
fails and writes every change on the incident's timeline — registers :class:`TopicHooks` for its topic.
A topic without hooks only has its rows' state (and the fallback ways it gave at enqueue).
"""

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.models.notifications import Channel, OutboundMessage, Topic


@dataclass(frozen=True)
class MessageRef:
    """What a hook needs to know of a message (from a claim or from a row)."""

    id: uuid.UUID
    topic: Topic
    subject_id: uuid.UUID | None
    incident_id: uuid.UUID | None
    party_id: uuid.UUID | None
    target_id: uuid.UUID | None
    channel: Channel
    recipient_label: str

    @classmethod
    def of(cls, row: Any) -> "MessageRef":
        return cls(
            id=row.id,
            topic=Topic(row.topic),
            subject_id=row.subject_id,
            incident_id=row.incident_id,
            party_id=row.party_id,
            target_id=row.target_id,
            channel=Channel(row.channel),
            recipient_label=row.recipient_label,
        )


@dataclass(frozen=True)
class Change:
    """Something happened to a message. ``kind``: message_sent, message_retry, message_failed,
    message_unconfirmed, message_delivered, call_answered, call_ended. ``moved_on``: the message no longer
    stands for its recipient (failed, unconfirmed, or a call that ended) — whoever waits on it should move on."""

    kind: str
    detail: dict[str, Any] = field(default_factory=dict)
    moved_on: bool = False
    dead_address: bool = False


class TopicHooks:
    """The default: lock the message alone, nothing else to tell."""

    async def lock_message(self, session: AsyncSession, message_id: uuid.UUID) -> OutboundMessage | None:
        """Lock (and re-read) a message before a receipt changes it, after whatever the topic's own writers
        lock first."""
        return (
            await session.execute(
                select(OutboundMessage)
                .where(col(OutboundMessage.id) == message_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalar_one_or_none()

    async def before_failure(self, session: AsyncSession, message: MessageRef) -> None:
        """The dispatcher is about to fail a message (or find it unconfirmed): take the topic's locks."""

    async def changed(self, session: AsyncSession, message: MessageRef, change: Change, *, now: Any) -> None:
        """Tell the topic, in the transaction that changed the message."""


_hooks: dict[Topic, TopicHooks] = {}
_DEFAULT = TopicHooks()
# Topics whose hooks must be registered before any of their messages is touched (else the dispatcher would
# silently skip what their domain needs, e.g. moving an incident's party on).
REQUIRED = frozenset({Topic.incident})


def register(topic: Topic, hooks: TopicHooks) -> None:
    _hooks[topic] = hooks


def hooks_for(topic: Topic | str) -> TopicHooks:
    topic = Topic(topic)
    hooks = _hooks.get(topic)
    if hooks is None:
        if topic in REQUIRED:
            raise RuntimeError(f"no hooks registered for the {topic.value} topic; import its domain first")
        return _DEFAULT
    return hooks
