"""Delivery receipts: what the providers' signed callbacks say about a message we sent.

Each event is applied once (``provider_event`` remembers its ``event_id``: providers deliver twice), to the
message its idempotency key names, locked through its topic's hooks (an incident's step and party first).
A receipt may come before the send's own answer: it then records the send first, so the story reads in its
real order. A delivered SMS or an answered call is not an acknowledgement — that is the topic's business
(:mod:`api.services.emergency.callbacks` reads replies and keypresses); here only the message's state moves,
the topic hears of it, and a message not reached falls back to its next way.
"""

from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.channels.base import SmsReceipt, VoiceEvent
from api.models.notifications import MessageStatus, OutboundMessage, ProviderEvent
from api.services.notifications import delivery
from api.services.notifications.outbox import fall_back
from api.services.notifications.topics import Change, MessageRef, hooks_for


async def first_time(session: AsyncSession, event_id: str, type_: str, now: datetime) -> bool:
    """Remember a provider event; ``False`` when it was applied before."""
    inserted = await session.execute(
        pg_insert(ProviderEvent)
        .values(event_id=event_id, type=type_, received_at=now)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(col(ProviderEvent.event_id))
    )
    return inserted.first() is not None


async def message_by_key(session: AsyncSession, key: str) -> OutboundMessage | None:
    """The message a provider event is about, locked as its topic orders it (the caller acts as the system)."""
    row = (
        await session.execute(
            select(OutboundMessage.id, OutboundMessage.topic).where(OutboundMessage.idempotency_key == key)
        )
    ).first()
    if row is None:
        return None
    return await hooks_for(row.topic).lock_message(session, row.id)


async def tell(session: AsyncSession, message: OutboundMessage, change: Change, now: datetime) -> None:
    """Tell the message's topic what happened (for an incident: a line on its timeline)."""
    detail: dict[str, Any] = {"recipient": message.recipient_label, **change.detail}
    await hooks_for(message.topic).changed(
        session,
        MessageRef.of(message),
        Change(change.kind, detail, moved_on=change.moved_on, dead_address=change.dead_address),
        now=now,
    )


async def sent_first(session: AsyncSession, message: OutboundMessage, provider_id: str, now: datetime) -> None:
    """A receipt about a message whose send answer is not recorded yet (it may never be: its worker may have
    stopped) proves the provider accepted it: record the send first, so the story reads in its real order,
    and anchor the acknowledgement wait to it."""
    if not delivery.sent_by_receipt(message.status, message.sent_at):
        return
    message.status = MessageStatus.sent
    message.sent_at = now
    message.provider_message_id = message.provider_message_id or provider_id
    message.lease_until = None
    message.ack_wait_until = delivery.ack_wait_until(
        message.ack_wait_until, first_known=now, ack_wait_seconds=message.ack_wait_seconds
    )
    await tell(
        session, message, Change("message_sent", {"provider_message_id": provider_id, "confirmed_by": "receipt"}), now
    )


async def delivered(session: AsyncSession, message: OutboundMessage, provider_id: str, now: datetime) -> bool:
    """The handset has it (or the call was answered); ``False`` when that tells nothing new."""
    if not delivery.may_deliver(message.status):
        return False
    await sent_first(session, message, provider_id, now)
    message.status = MessageStatus.delivered
    message.delivered_at = now
    message.provider_message_id = message.provider_message_id or provider_id
    # Anchored once, by whichever of the send's answer and the receipt came first.
    message.ack_wait_until = delivery.ack_wait_until(
        message.ack_wait_until, first_known=now, ack_wait_seconds=message.ack_wait_seconds
    )
    return True


async def not_reached(
    session: AsyncSession,
    message: OutboundMessage,
    *,
    provider_id: str,
    code: str,
    text: str,
    failure: str,
    now: datetime,
) -> None:
    """The provider says ``message`` did not reach the person (``failure``: how): the message fails, its
    topic hears of it (an incident's party is looked at again), it falls back to its next way — once; a
    message already failed or cancelled stays so."""
    if not delivery.may_fail(message.status):
        return
    await sent_first(session, message, provider_id, now)
    message.status = MessageStatus.failed
    message.failed_at = now
    message.finished_at = message.finished_at or now
    message.error_code = code[:64]
    message.error_message = text[:256]
    await fall_back(session, message.id, now=now)
    change = Change(
        "message_failed", {"provider_message_id": provider_id, "error": code, "failure": failure}, moved_on=True
    )
    await tell(session, message, change, now)


async def call_ended(session: AsyncSession, message: OutboundMessage, provider_id: str, now: datetime) -> bool:
    """The call is over (answered or not): waiting longer for it is pointless. ``False`` if known before."""
    await sent_first(session, message, provider_id, now)
    if message.finished_at is not None:
        return False
    message.finished_at = now
    await tell(session, message, Change("call_ended", {"provider_message_id": provider_id}, moved_on=True), now)
    return True


async def sms_receipt(session: AsyncSession, event: SmsReceipt, now: datetime) -> str:
    """An SMS delivered or bounced."""
    message = await message_by_key(session, event.idempotency_key)
    if message is None:
        return "unknown_message"
    if event.type == "sms.delivered":
        if await delivered(session, message, event.message_id, now):
            detail = {"provider_message_id": event.message_id, "provider_time": event.occurred_at.isoformat()}
            await tell(session, message, Change("message_delivered", detail), now)
        return "delivered"
    await not_reached(
        session,
        message,
        provider_id=event.message_id,
        code=event.error.code if event.error else "undeliverable",
        text=event.error.message if event.error else "",
        failure="bounced",
        now=now,
    )
    return "failed"


async def voice_progress(session: AsyncSession, message: OutboundMessage, event: VoiceEvent, now: datetime) -> str:
    """A call answered, completed, or not reached (no answer, busy, failed) — everything but a keypress."""
    if event.type == "voice.answered":
        if await delivered(session, message, event.call_id, now):
            await tell(session, message, Change("call_answered", {"provider_message_id": event.call_id}), now)
        return "answered"
    if event.type == "voice.completed":
        await call_ended(session, message, event.call_id, now)
        return "completed"
    code = event.type.removeprefix("voice.")
    await not_reached(
        session,
        message,
        provider_id=event.call_id,
        code=code,
        text=event.error.message if event.error else "",
        failure="not_reached",
        now=now,
    )
    return code
