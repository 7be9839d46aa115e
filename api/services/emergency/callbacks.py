"""Provider callbacks: receipts, SMS replies and keypresses, each applied once.

Delivery receipts and call progress move the message's state (:mod:`api.services.notifications.receipts`).
An SMS reply or a keypress is told at the moment the person answered — the provider's ``occurred_at``,
clamped to when the message can have reached them and when we received it — not when its callback
arrived. An SMS reply is matched only against the reply codes of parties still open on that number
(unique among them, see ``reserve_reply_code``); a reply that matches none, or several, is answered by SMS
and acknowledges nothing. A keypress or reply after closure is only written on the timeline.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.channels.base import SmsInbound, SmsReceipt, VoiceEvent
from api.channels.voice import ACK_DIGIT
from api.errors import Conflict
from api.models.escalation import (
    AckRoute,
    EscalationParty,
    PartyStatus,
    ReplyCode,
)
from api.models.incidents import EventKind, Incident, IncidentStatus
from api.models.notifications import Channel, MessagePurpose, OutboundMessage, Topic
from api.phones import PhoneError, normalize_phone
from api.services.emergency import texts
from api.services.emergency.acknowledgements import acknowledge_message, answered_at, is_closed, utc
from api.services.emergency.timeline import record_event
from api.services.notifications import receipts
from api.services.notifications.outbox import Route, new_message, wake_workers
from api.services.notifications.topics import Change

log = logging.getLogger("liushou.escalation")


@dataclass(frozen=True)
class _OpenCode:
    code: str
    party_id: uuid.UUID
    incident_id: uuid.UUID
    case_code: str


async def _open_codes(session: AsyncSession, sender: str) -> list[_OpenCode]:
    """The reply codes of the parties still open on this number (not told, incident not closed)."""
    rows = await session.execute(
        select(ReplyCode.code, ReplyCode.party_id, ReplyCode.incident_id, Incident.case_code)
        .join(EscalationParty, col(EscalationParty.id) == ReplyCode.party_id)
        .join(Incident, col(Incident.id) == ReplyCode.incident_id)
        .where(
            ReplyCode.address == sender,
            col(ReplyCode.released_at).is_(None),
            EscalationParty.status != PartyStatus.told,
            Incident.status == IncidentStatus.open,
        )
        .order_by(col(ReplyCode.created_at))
    )
    return [_OpenCode(*row) for row in rows.all()]


async def _message_with_code(session: AsyncSession, sender: str, held: _OpenCode) -> OutboundMessage | None:
    """The newest SMS that gave this party its code on this number (the party keeps one code per number)."""
    return (
        await session.execute(
            select(OutboundMessage)
            .where(
                OutboundMessage.party_id == held.party_id,
                OutboundMessage.channel == Channel.sms,
                OutboundMessage.purpose == MessagePurpose.notify,
                OutboundMessage.address == sender,
                OutboundMessage.reply_code == held.code,
            )
            .order_by(col(OutboundMessage.created_at).desc())
            .limit(1)
        )
    ).scalar_one_or_none()


# A help answer identical to one sent to the same number this recently is not sent again (a handset's
# auto-reply must not start a ping-pong, and a grandmother who replies twice needs one answer).
_HELP_REPEAT_AFTER = timedelta(minutes=10)


async def _answer_reply(
    session: AsyncSession,
    sender: str,
    *,
    incident_id: uuid.UUID,
    recipient_label: str,
    reason: str,
    open_codes: list[_OpenCode],
    now: datetime,
) -> bool:
    """Queue an SMS answer to a reply we could not match to exactly one open party (the dispatcher sends it,
    like every message). Returns whether one was queued."""
    body = texts.reply_help(reason, [(c.case_code, c.code) for c in open_codes])
    recent = (
        await session.execute(
            select(OutboundMessage.id)
            .where(
                OutboundMessage.purpose == MessagePurpose.reply_help,
                OutboundMessage.address == sender,
                OutboundMessage.body == body,
                col(OutboundMessage.created_at) > now - _HELP_REPEAT_AFTER,
            )
            .limit(1)
        )
    ).first()
    if recent is not None:
        return False
    incident = await session.get(Incident, incident_id)
    assert incident is not None
    session.add(
        new_message(
            topic=Topic.incident,
            subject_id=incident.id,
            purpose=MessagePurpose.reply_help,
            route=Route(Channel.sms, sender, body),
            recipient_label=recipient_label,
            now=now,
            max_attempts=int(incident.policy["max_send_attempts"]),
            retry_backoff_seconds=int(incident.policy["retry_backoff_seconds"]),
            school_id=incident.school_id,
            incident_id=incident.id,
            priority=0,
        )
    )
    await wake_workers(session)
    return True


async def _sms_reply(session: AsyncSession, event: SmsInbound, now: datetime) -> str:
    """Match a reply by its code against the parties still open on the sender's number.

    Exactly one open party named → acknowledged at the reply's time. Otherwise nothing is acknowledged: the
    reply goes on the timeline (staff should call back) and the sender gets an SMS saying what to do."""
    try:
        sender = normalize_phone(event.sender).e164
    except PhoneError:
        return "unknown_sender"
    codes = texts.find_reply_codes(event.text)
    open_codes = await _open_codes(session, sender)
    named = {c.party_id: c for c in open_codes if c.code in codes}
    text = event.text[:200]
    if len(named) == 1:
        [held] = named.values()
        message = await _message_with_code(session, sender, held)
        if message is not None:
            try:
                at = await acknowledge_message(
                    session, message, AckRoute.sms_reply, provider_time=event.occurred_at, now=now
                )
            except Conflict as exc:
                if not is_closed(exc):
                    raise
                # Closed between our look-up and the lock: answered below like any reply to a closed case.
                open_codes = [c for c in open_codes if c.incident_id != held.incident_id]
                named = {}
            else:
                await _message_event(
                    session, message, EventKind.reply_received, now, text=text, matched=True, replied_at=at.isoformat()
                )
                return "acknowledged"
    # Not exactly one: which incidents to show the reply on, and what to answer.
    texted = (
        await session.execute(
            select(OutboundMessage.incident_id, OutboundMessage.reply_code, OutboundMessage.recipient_label)
            .where(
                OutboundMessage.channel == Channel.sms,
                OutboundMessage.purpose == MessagePurpose.notify,
                OutboundMessage.address == sender,
            )
            .order_by(col(OutboundMessage.created_at).desc())
            .limit(50)
        )
    ).all()
    if not texted:
        return "unknown_sender"  # we never texted this number: no answer to strangers
    stale = [row.incident_id for row in texted if row.reply_code in codes]
    if len(named) > 1:
        reason, incidents = "ambiguous", [c.incident_id for c in named.values()]
    elif stale:
        reason, incidents = "no_longer_open", stale
    elif open_codes:
        reason, incidents = "no_code" if not codes else "unknown_code", [c.incident_id for c in open_codes]
    else:
        reason, incidents = "no_code" if not codes else "unknown_code", [texted[0].incident_id]
    incidents = list(dict.fromkeys(incidents))
    answered = False
    if codes or open_codes:
        answered = await _answer_reply(
            session,
            sender,
            incident_id=incidents[0],
            recipient_label=texted[0].recipient_label,
            reason=reason,
            open_codes=open_codes,
            now=now,
        )
    for incident_id in incidents:
        record_event(
            session,
            incident_id,
            EventKind.reply_received,
            at=now,
            channel=Channel.sms,
            recipient=texted[0].recipient_label,
            text=text,
            matched=False,
            reason=reason,
            replied_at=min(utc(event.occurred_at), now).isoformat(),
            answered_by_sms=answered or None,
        )
    return "ambiguous_reply" if reason == "ambiguous" else "reply_not_matched"


async def _message_event(
    session: AsyncSession, message: OutboundMessage, kind: EventKind, now: datetime, **detail: Any
) -> None:
    """A line of the timeline about one message, under its step."""
    await receipts.tell(session, message, Change(kind.value, detail), now)


async def _voice(session: AsyncSession, event: VoiceEvent, now: datetime) -> str:
    message = await receipts.message_by_key(session, event.idempotency_key)
    if message is None:
        return "unknown_message"
    if event.type != "voice.dtmf":
        return await receipts.voice_progress(session, message, event, now)
    digits = event.digits or ""
    if ACK_DIGIT not in digits or message.party_id is None:
        await _message_event(session, message, EventKind.keys_pressed, now, digits=digits)
        return "digits_ignored"
    # A keypress proves the call was placed and answered, even if those callbacks have not come yet.
    if await receipts.delivered(session, message, event.call_id, now):
        await _message_event(session, message, EventKind.call_answered, now, provider_message_id=event.call_id)
    try:
        await acknowledge_message(session, message, AckRoute.voice_dtmf, provider_time=event.occurred_at, now=now)
    except Conflict as exc:
        if not is_closed(exc):
            raise
        # Too late to count: on the timeline for the record, the party stays as it was.
        await _message_event(
            session,
            message,
            EventKind.ack_after_close,
            now,
            digits=digits,
            pressed_at=answered_at(event.occurred_at, message, now).isoformat(),
        )
        return "incident_closed"
    return "acknowledged"


async def handle_callback(session: AsyncSession, event: SmsReceipt | SmsInbound | VoiceEvent, *, now: datetime) -> str:
    """Apply one provider event (its signature already checked); a repeated ``event_id`` changes nothing."""
    if not await receipts.first_time(session, event.event_id, event.type, now):
        return "duplicate"
    if isinstance(event, SmsReceipt):
        outcome = await receipts.sms_receipt(session, event, now)
    elif isinstance(event, SmsInbound):
        outcome = await _sms_reply(session, event, now)
    else:
        outcome = await _voice(session, event, now)
    await session.flush()
    log.info("callback %s %s: %s", event.type, event.event_id, outcome)
    return outcome
