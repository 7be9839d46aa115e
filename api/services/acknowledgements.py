"""Acknowledgements — the only thing that counts as told — and the provider callbacks that lead to them.

A person acknowledges in the mini-program, by the link in a message, by replying the message's code by SMS,
by pressing 1 on a call, or a staff member records that they reached the person by phone (who, when, and
who recorded it). A sent message, a delivered SMS or an answered call is *not* told: those only update the
message and tell the engine when to move on. Callbacks are deduplicated by ``event_id`` and matched by
idempotency key (they may arrive before the send's own answer).

An SMS reply or a keypress is told at the moment the person answered — the provider's ``occurred_at``,
clamped to when the message can have reached them and when we received it — not when its callback
arrived (in a burst callbacks land minutes late). An SMS reply is matched only against the reply codes of
parties still open on that number (unique among them, see ``reserve_reply_code``); a reply that matches
none, or several, is answered by SMS and acknowledges nothing. A closed incident takes no acknowledgement
(409 ``incident_closed``; a keypress or reply after closure is only written on the timeline).
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.channels.base import SmsInbound, SmsReceipt, VoiceEvent
from api.channels.voice import ACK_DIGIT
from api.errors import Conflict, Invalid, NotFound, field_error
from api.escalation import messages
from api.models.accounts import Role
from api.models.escalation import (
    ACK_ROUTE_LABELS,
    Acknowledgement,
    AcknowledgementPublic,
    AckPage,
    AckRoute,
    Audience,
    Channel,
    EscalationParty,
    EscalationStep,
    EscalationTarget,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
    PartyStatus,
    ProviderEvent,
    ReplyCode,
    StaffCall,
    StepStatus,
)
from api.models.guardians import Guardian
from api.models.incidents import CATEGORY_LABELS, SEVERITY_LABELS, EventKind, Incident, IncidentStatus, TimeBasis
from api.models.organisations import School
from api.phones import PhoneError, normalize_phone
from api.scoping import Principal, as_system
from api.services.escalation import (
    cancel_pending,
    case_facts,
    deadline_met,
    lock_chain,
    lock_party,
    record_event,
    release_reply_codes,
    wake_workers,
)

log = logging.getLogger("liushou.escalation")

INCIDENT_NOT_FOUND = "找不到该事件 (incident not found)"
LINK_NOT_FOUND = "链接无效或已过期 (unknown acknowledgement link)"
INCIDENT_CLOSED = "事件已结案，无需再确认 (the incident is closed)"
# Staff may have phoned before typing the report, but not long before the clock started.
_CALL_BEFORE_START = timedelta(minutes=5)


# ---- told ------------------------------------------------------------------------------------------------


async def lock_step_and_party(session: AsyncSession, party_id: uuid.UUID) -> tuple[EscalationStep, EscalationParty]:
    """Lock in the engine's order (:func:`api.services.escalation.lock_chain`): the step, then the party."""
    locked = await lock_party(session, party_id)
    if locked is None:
        raise NotFound("找不到该通知对象 (party not found)", code="party_not_found")
    return locked


async def _mark_told(
    session: AsyncSession,
    incident: Incident,
    step: EscalationStep,
    party: EscalationParty,
    *,
    at: datetime,
    route: AckRoute,
    now: datetime,
) -> None:
    """The party is told at its earliest acknowledgement; the step once every one of its parties is."""
    if party.status == PartyStatus.told:
        if party.told_at is None or at >= party.told_at:
            return
        # A staff member recorded a call made before the acknowledgement that closed the party.
        party.told_at = at
        party.told_route = route
    else:
        party.status = PartyStatus.told
        party.told_at = at
        party.told_route = route
        party.next_check_at = None
        party.current_message_id = None
        await cancel_pending(session, party, now=now)
        await release_reply_codes(session, party_id=party.id, now=now)
        record_event(
            session,
            incident.id,
            EventKind.party_told,
            at=now,
            step_no=step.step_no,
            party_id=party.id,
            audience=party.audience.value,
            told_at=at.isoformat(),
            route=route.value,
        )
    parties = list((await session.execute(select(EscalationParty).where(EscalationParty.step_id == step.id))).scalars())
    if not all(p.status == PartyStatus.told and p.told_at is not None for p in parties):
        return
    first_time = step.status != StepStatus.told
    step.status = StepStatus.told
    step.told_at = max(p.told_at for p in parties if p.told_at is not None)
    step.next_check_at = None
    record_event(
        session,
        incident.id,
        EventKind.step_told,
        at=now,
        step_no=step.step_no,
        told_at=step.told_at.isoformat(),
        deadline_at=step.deadline_at.isoformat(),
        deadline_met=deadline_met(step),
        minutes_from_start=round((step.told_at - incident.occurred_at).total_seconds() / 60, 1),
        corrected=None if first_time else True,
    )


async def acknowledge(
    session: AsyncSession,
    *,
    party_id: uuid.UUID,
    route: AckRoute,
    at: datetime,
    now: datetime,
    contact_label: str,
    contact_name: str | None = None,
    message: OutboundMessage | None = None,
    target_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    recorded_by_id: uuid.UUID | None = None,
    note: str | None = None,
    provider_time: datetime | None = None,
) -> Acknowledgement:
    """Record that a person of a party was told at ``at`` (learned at ``now``). Idempotent: the same message
    (or the same account in the mini-program) acknowledging again returns the first acknowledgement.

    Raises 409 ``incident_closed`` once the incident is closed. Closing locks the incident's steps, and this
    reads the incident after locking the step, so an acknowledgement and a closure cannot cross."""
    step, party = await lock_step_and_party(session, party_id)
    incident = (
        await session.execute(
            select(Incident).where(Incident.id == party.incident_id).execution_options(populate_existing=True)
        )
    ).scalar_one()
    if incident.status == IncidentStatus.closed:
        raise Conflict(INCIDENT_CLOSED, code="incident_closed")
    existing = None
    if message is not None:
        existing = (
            await session.execute(
                select(Acknowledgement).where(Acknowledgement.message_id == message.id, Acknowledgement.route == route)
            )
        ).scalar_one_or_none()
    elif route == AckRoute.mini_program and account_id is not None:
        existing = (
            await session.execute(
                select(Acknowledgement).where(
                    Acknowledgement.party_id == party.id,
                    Acknowledgement.account_id == account_id,
                    Acknowledgement.route == route,
                )
            )
        ).scalar_one_or_none()
    if existing is not None:
        return existing
    ack = Acknowledgement(
        incident_id=incident.id,
        school_id=incident.school_id,
        step_id=step.id,
        party_id=party.id,
        message_id=message.id if message else None,
        target_id=target_id or (message.target_id if message else None),
        route=route,
        contact_label=contact_label[:64],
        contact_name=contact_name,
        account_id=account_id,
        acknowledged_at=at,
        recorded_at=now,
        recorded_by_id=recorded_by_id,
        note=note,
    )
    session.add(ack)
    record_event(
        session,
        incident.id,
        EventKind.acknowledged,
        at=now,
        step_no=step.step_no,
        party_id=party.id,
        message_id=message.id if message else None,
        channel=message.channel if message else None,
        actor_account_id=recorded_by_id or account_id,
        route=route.value,
        route_label=ACK_ROUTE_LABELS[route],
        contact=contact_label,
        name=contact_name,
        acknowledged_at=at.isoformat(),
        received_at=now.isoformat() if at != now else None,
        provider_time=provider_time.isoformat() if provider_time is not None and provider_time != at else None,
        already_told=True if party.status == PartyStatus.told else None,
    )
    await _mark_told(session, incident, step, party, at=at, route=route, now=now)
    await session.flush()
    return ack


def acknowledgement_public(ack: Acknowledgement, step: EscalationStep, party: EscalationParty) -> AcknowledgementPublic:
    return AcknowledgementPublic(
        id=ack.id,
        party_id=party.id,
        step_no=step.step_no,
        audience=party.audience,
        route=ack.route,
        contact_label=ack.contact_label,
        contact_name=ack.contact_name,
        acknowledged_at=ack.acknowledged_at,
        recorded_at=ack.recorded_at,
        recorded_by_id=ack.recorded_by_id,
    )


async def _public(session: AsyncSession, ack: Acknowledgement) -> AcknowledgementPublic:
    step = await session.get(EscalationStep, ack.step_id)
    party = await session.get(EscalationParty, ack.party_id)
    assert step is not None and party is not None
    return acknowledgement_public(ack, step, party)


# ---- staff: a call made by hand ----------------------------------------------------------------------


async def record_staff_call(
    session: AsyncSession, principal: Principal, *, incident_id: uuid.UUID, data: StaffCall, now: datetime
) -> AcknowledgementPublic:
    """A staff member reached the person by phone: who, when, and who records it."""
    incident = await session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(INCIDENT_NOT_FOUND, code="incident_not_found")
    if incident.status == IncidentStatus.closed:
        raise Conflict(INCIDENT_CLOSED, code="incident_closed")
    party = await session.get(EscalationParty, data.party_id)
    if party is None or party.incident_id != incident.id:
        raise NotFound("找不到该通知对象 (party not found)", code="party_not_found")
    called_at = data.called_at.astimezone(now.tzinfo)
    if called_at > now + timedelta(minutes=1):
        raise Invalid(
            "通话时间不能晚于现在 (the call cannot be in the future)",
            code="call_in_future",
            fields=[field_error(["body", "called_at"], "通话时间不能晚于现在", "call_in_future")],
        )
    if called_at < incident.occurred_at - _CALL_BEFORE_START:
        raise Invalid(
            "通话时间早于事件发生时间 (the call is before the incident)",
            code="call_before_incident",
            fields=[field_error(["body", "called_at"], "通话时间早于事件发生时间", "call_before_incident")],
        )
    label, name, target_id = data.contact_label, data.contact_name, None
    if data.contact_id is not None:
        target = await session.get(EscalationTarget, data.contact_id)
        if target is None or target.party_id != party.id:
            raise NotFound("联系人不在该通知对象的联系卡上 (contact not found)", code="contact_not_found")
        label, name, target_id = target.contact_label, target.contact_name, target.id
    if not label:
        raise Invalid(
            "请注明联系到的是谁 (who was reached: contact_id or contact_label)",
            code="call_contact_missing",
            fields=[field_error(["body", "contact_label"], "请注明联系到的是谁", "call_contact_missing")],
        )
    ack = await acknowledge(
        session,
        party_id=party.id,
        route=AckRoute.staff_call,
        at=min(called_at, now),
        now=now,
        contact_label=label,
        contact_name=name,
        target_id=target_id,
        recorded_by_id=principal.account_id,
        note=data.note,
    )
    return await _public(session, ack)


# ---- mini-program: the bound family account or an official acknowledges ---------------------------------


async def _parties_of_family(
    session: AsyncSession, principal: Principal, incident: Incident
) -> list[tuple[uuid.UUID, EscalationTarget | None]]:
    guardian_ids = select(Guardian.id).where(Guardian.account_id == principal.account_id)
    targets = (
        await session.execute(
            select(EscalationTarget)
            .where(
                EscalationTarget.incident_id == incident.id,
                sa.or_(
                    col(EscalationTarget.account_id) == principal.account_id,
                    col(EscalationTarget.guardian_id).in_(guardian_ids),
                ),
            )
            .order_by(col(EscalationTarget.seq))
        )
    ).scalars()
    first: dict[uuid.UUID, EscalationTarget] = {}
    for target in targets:
        first.setdefault(target.party_id, target)
    return [(party_id, target) for party_id, target in first.items()]


async def _parties_of_official(
    session: AsyncSession, principal: Principal, incident: Incident
) -> list[tuple[uuid.UUID, EscalationTarget | None]]:
    if principal.role == Role.county_bureau and incident.county_id == principal.county_id:
        audience = Audience.county_bureau
    elif principal.role == Role.township_official and incident.township_id == principal.township_id:
        audience = Audience.township
    else:
        return []
    party_ids = (
        await session.execute(
            select(EscalationParty.id).where(
                EscalationParty.incident_id == incident.id, EscalationParty.audience == audience
            )
        )
    ).scalars()
    return [(party_id, None) for party_id in party_ids]


async def acknowledge_in_mini_program(
    session: AsyncSession, principal: Principal, *, incident_id: uuid.UUID, now: datetime
) -> list[AcknowledgementPublic]:
    """The signed-in person acknowledges every party of the incident they belong to.

    A family account belongs to a party when its guardian record (or the account itself) is on that party's
    frozen contact list; an official to the county bureau's or the township's party of its own area. That
    list, not the archive's scope (a family's guardian records may not be linked to its principal), is what
    authorises them; anybody else gets 404, as for an incident they cannot see.
    """
    # SYSTEM: the frozen contact lists below, not the archive's scope, decide who may acknowledge.
    async with as_system(session):
        incident = await session.get(Incident, incident_id)
        if incident is None:
            raise NotFound(INCIDENT_NOT_FOUND, code="incident_not_found")
        if principal.role == Role.family:
            parties = await _parties_of_family(session, principal, incident)
        else:
            parties = await _parties_of_official(session, principal, incident)
        if not parties:
            raise NotFound(INCIDENT_NOT_FOUND, code="incident_not_found")
        if incident.status == IncidentStatus.closed:
            raise Conflict(INCIDENT_CLOSED, code="incident_closed")
        # All their steps, then all the parties, in the engine's one lock order, before acknowledging any.
        party_ids = [party_id for party_id, _ in parties]
        step_ids = (
            await session.execute(select(EscalationParty.step_id).where(col(EscalationParty.id).in_(party_ids)))
        ).scalars()
        await lock_chain(session, step_ids=list(step_ids), party_ids=party_ids)
        acks = []
        for party_id, target in sorted(parties, key=lambda p: str(p[0])):
            ack = await acknowledge(
                session,
                party_id=party_id,
                route=AckRoute.mini_program,
                at=now,
                now=now,
                contact_label=target.contact_label if target else principal.display_name or "",
                contact_name=target.contact_name if target else None,
                target_id=target.id if target else None,
                account_id=principal.account_id,
            )
            acks.append(await _public(session, ack))
        return acks


# ---- the link in a message ------------------------------------------------------------------------------


async def _message_for_token(session: AsyncSession, *, secret: str, token: str) -> OutboundMessage:
    """``secret`` is the acknowledgement-link key ring (``Settings.ack_link_keys``)."""
    message_id = messages.read_ack_token(secret, token)
    message = await session.get(OutboundMessage, message_id) if message_id else None
    if message is None or message.purpose != MessagePurpose.notify or message.party_id is None:
        raise NotFound(LINK_NOT_FOUND, code="ack_link_invalid")
    return message


async def ack_page(session: AsyncSession, *, secret: str, token: str) -> AckPage:
    """What the link shows before the person confirms (GET never acknowledges: link previews fetch it)."""
    message = await _message_for_token(session, secret=secret, token=token)
    incident = await session.get(Incident, message.incident_id)
    party = await session.get(EscalationParty, message.party_id)
    assert incident is not None and party is not None
    school = await session.get(School, incident.school_id)
    assert school is not None
    return AckPage(
        case_code=incident.case_code,
        school_name=school.name,
        category_label=CATEGORY_LABELS[incident.category],
        occurred_at=incident.occurred_at,
        occurred_at_local=messages.local_time(incident.occurred_at),
        audience=party.audience,
        acknowledged=party.status == PartyStatus.told,
        acknowledged_at=party.told_at,
        closed=incident.status == IncidentStatus.closed,
        severity=incident.severity.value,
        severity_label=SEVERITY_LABELS[incident.severity],
        time_label="发现时间" if incident.time_basis == TimeBasis.discovered else "发生时间",
        school_phone=(await case_facts(session, incident)).school_phone,
    )


async def school_of_link(session: AsyncSession, *, secret: str, token: str) -> tuple[str, str | None] | None:
    """The school (name, phone to call) behind a link that is genuine but leads nowhere the page can show —
    for its "link not valid" page. None when the token is not one of ours or its message is gone."""
    message_id = messages.read_ack_token(secret, token)
    message = await session.get(OutboundMessage, message_id) if message_id else None
    incident = await session.get(Incident, message.incident_id) if message else None
    if incident is None:
        return None
    facts = await case_facts(session, incident)
    return facts.school_name, facts.school_phone


async def acknowledge_link(session: AsyncSession, *, secret: str, token: str, now: datetime) -> AckPage:
    """The person pressed 确认收到 on the link's page (409 ``incident_closed`` once the incident is closed)."""
    message = await _message_for_token(session, secret=secret, token=token)
    target = await session.get(EscalationTarget, message.target_id) if message.target_id else None
    assert message.party_id is not None
    await acknowledge(
        session,
        party_id=message.party_id,
        route=AckRoute.link,
        at=now,
        now=now,
        message=message,
        contact_label=target.contact_label if target else message.recipient_label,
        contact_name=target.contact_name if target else None,
    )
    return await ack_page(session, secret=secret, token=token)


# ---- provider callbacks --------------------------------------------------------------------------------


async def _first_time(session: AsyncSession, event_id: str, type_: str, now: datetime) -> bool:
    inserted = await session.execute(
        pg_insert(ProviderEvent)
        .values(event_id=event_id, type=type_, received_at=now)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(col(ProviderEvent.event_id))
    )
    return inserted.first() is not None


async def _message_by_key(session: AsyncSession, key: str) -> OutboundMessage | None:
    """The message a provider event is about, locked with its step and party in the engine's order
    (step → party → message): a callback may then update them in whatever order its story needs."""
    row = (
        await session.execute(
            select(OutboundMessage.id, OutboundMessage.party_id, EscalationParty.step_id)
            .outerjoin(EscalationParty, col(EscalationParty.id) == OutboundMessage.party_id)
            .where(OutboundMessage.idempotency_key == key)
        )
    ).first()
    if row is None:
        return None
    message_id, party_id, step_id = row
    locks = await lock_chain(session, step_ids=[step_id], party_ids=[party_id], message_ids=[message_id])
    return locks.messages.get(message_id)


async def nudge_party(session: AsyncSession, message: OutboundMessage, now: datetime) -> None:
    """Ask the scheduler to look at the party now, if this message is the one it is waiting on."""
    if message.party_id is None:
        return
    await session.execute(
        sa.update(EscalationParty)
        .where(
            col(EscalationParty.id) == message.party_id,
            col(EscalationParty.current_message_id) == message.id,
            col(EscalationParty.status) == PartyStatus.notifying,
        )
        .values(next_check_at=now)
        .execution_options(synchronize_session=False)
    )


async def _message_event(
    session: AsyncSession, message: OutboundMessage, kind: EventKind, now: datetime, **detail: Any
) -> None:
    """A line of the timeline about one message, under its step."""
    step_no = None
    if message.party_id is not None:
        party = await session.get(EscalationParty, message.party_id)
        step = await session.get(EscalationStep, party.step_id) if party else None
        step_no = step.step_no if step else None
    record_event(
        session,
        message.incident_id,
        kind,
        at=now,
        step_no=step_no,
        party_id=message.party_id,
        message_id=message.id,
        channel=message.channel,
        recipient=message.recipient_label,
        **detail,
    )


async def _sent_first(session: AsyncSession, message: OutboundMessage, provider_id: str, now: datetime) -> None:
    """A receipt about a message whose send answer is not recorded yet (it may never be: its worker may have
    stopped) proves the provider accepted it: record the send first, so the story reads in its real order,
    and anchor the acknowledgement wait to it."""
    if message.status != MessageStatus.sending or message.sent_at is not None:
        return
    message.status = MessageStatus.sent
    message.sent_at = now
    message.provider_message_id = message.provider_message_id or provider_id
    message.lease_until = None
    message.ack_wait_until = message.ack_wait_until or now + timedelta(seconds=message.ack_wait_seconds)
    await _message_event(
        session, message, EventKind.message_sent, now, provider_message_id=provider_id, confirmed_by="receipt"
    )


async def _delivered(session: AsyncSession, message: OutboundMessage, provider_id: str, now: datetime) -> bool:
    if message.status not in (MessageStatus.sending, MessageStatus.sent):
        return False
    await _sent_first(session, message, provider_id, now)
    message.status = MessageStatus.delivered
    message.delivered_at = now
    message.provider_message_id = message.provider_message_id or provider_id
    # Anchored once, by whichever of the send's answer and the receipt came first.
    message.ack_wait_until = message.ack_wait_until or now + timedelta(seconds=message.ack_wait_seconds)
    return True


async def _not_reached(
    session: AsyncSession,
    message: OutboundMessage,
    *,
    provider_id: str,
    code: str,
    text: str,
    failure: str,
    now: datetime,
) -> None:
    """The provider says ``message`` did not reach the person (``failure``: how): the message fails, its party
    is looked at again, and the timeline tells it — once; a message already failed or cancelled stays so."""
    if message.status in (MessageStatus.failed, MessageStatus.cancelled):
        return
    await _sent_first(session, message, provider_id, now)
    await nudge_party(session, message, now)
    message.status = MessageStatus.failed
    message.failed_at = now
    message.finished_at = message.finished_at or now
    message.error_code = code[:64]
    message.error_message = text[:256]
    await _message_event(
        session, message, EventKind.message_failed, now, provider_message_id=provider_id, error=code, failure=failure
    )


def _utc(moment: datetime) -> datetime:
    # The contract says UTC: a provider that drops the offset still means UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def answered_at(provider_time: datetime, message: OutboundMessage, now: datetime) -> datetime:
    """When the person answered: the provider's event time, clamped to [the message can have reached the
    provider, we received the callback].

    The floor is the send time when the message went out at its first attempt; otherwise (a retried send, or
    a callback ahead of the send's answer) the time it was queued — an earlier attempt whose answer was lost
    may be the one that went out, and no attempt can go out before the message exists."""
    provider_time = _utc(provider_time)
    floor = message.sent_at if message.sent_at is not None and message.attempts <= 1 else message.created_at
    return min(max(provider_time, floor), now)


async def _acknowledge_message(
    session: AsyncSession,
    message: OutboundMessage,
    route: AckRoute,
    *,
    provider_time: datetime,
    now: datetime,
) -> datetime:
    """Acknowledge by the person's answer to ``message`` (reply or keypress) at the provider's event time;
    returns the time told. Raises 409 ``incident_closed`` when the incident is closed."""
    target = await session.get(EscalationTarget, message.target_id) if message.target_id else None
    assert message.party_id is not None
    at = answered_at(provider_time, message, now)
    await acknowledge(
        session,
        party_id=message.party_id,
        route=route,
        at=at,
        now=now,
        message=message,
        contact_label=target.contact_label if target else message.recipient_label,
        contact_name=target.contact_name if target else None,
        provider_time=provider_time,
    )
    return at


def _closed(exc: Conflict) -> bool:
    return exc.code == "incident_closed"


async def _sms_receipt(session: AsyncSession, event: SmsReceipt, now: datetime) -> str:
    message = await _message_by_key(session, event.idempotency_key)
    if message is None:
        return "unknown_message"
    if event.type == "sms.delivered":
        if await _delivered(session, message, event.message_id, now):
            await _message_event(
                session,
                message,
                EventKind.message_delivered,
                now,
                provider_message_id=event.message_id,
                provider_time=event.occurred_at.isoformat(),
            )
        return "delivered"
    await _not_reached(
        session,
        message,
        provider_id=event.message_id,
        code=event.error.code if event.error else "undeliverable",
        text=event.error.message if event.error else "",
        failure="bounced",
        now=now,
    )
    return "failed"


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
    body = messages.reply_help(reason, [(c.case_code, c.code) for c in open_codes])
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
    message_id = uuid.uuid4()
    session.add(
        OutboundMessage(
            id=message_id,
            incident_id=incident.id,
            purpose=MessagePurpose.reply_help,
            channel=Channel.sms,
            address=sender,
            recipient_label=recipient_label[:128],
            status=MessageStatus.pending,
            idempotency_key=f"liushou-{message_id.hex}",
            body=body,
            max_attempts=int(incident.policy["max_send_attempts"]),
            retry_backoff_seconds=int(incident.policy["retry_backoff_seconds"]),
            ack_wait_seconds=0,
            next_attempt_at=now,
            created_at=now,
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
    codes = messages.find_reply_codes(event.text)
    open_codes = await _open_codes(session, sender)
    named = {c.party_id: c for c in open_codes if c.code in codes}
    text = event.text[:200]
    if len(named) == 1:
        [held] = named.values()
        message = await _message_with_code(session, sender, held)
        if message is not None:
            try:
                at = await _acknowledge_message(
                    session, message, AckRoute.sms_reply, provider_time=event.occurred_at, now=now
                )
            except Conflict as exc:
                if not _closed(exc):
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
            replied_at=min(_utc(event.occurred_at), now).isoformat(),
            answered_by_sms=answered or None,
        )
    return "ambiguous_reply" if reason == "ambiguous" else "reply_not_matched"


async def _voice(session: AsyncSession, event: VoiceEvent, now: datetime) -> str:
    message = await _message_by_key(session, event.idempotency_key)
    if message is None:
        return "unknown_message"
    if event.type == "voice.answered":
        if await _delivered(session, message, event.call_id, now):
            await _message_event(session, message, EventKind.call_answered, now, provider_message_id=event.call_id)
        return "answered"
    if event.type == "voice.dtmf":
        digits = event.digits or ""
        if ACK_DIGIT not in digits or message.party_id is None:
            await _message_event(session, message, EventKind.keys_pressed, now, digits=digits)
            return "digits_ignored"
        # A keypress proves the call was placed and answered, even if those callbacks have not come yet.
        if await _delivered(session, message, event.call_id, now):
            await _message_event(session, message, EventKind.call_answered, now, provider_message_id=event.call_id)
        try:
            await _acknowledge_message(session, message, AckRoute.voice_dtmf, provider_time=event.occurred_at, now=now)
        except Conflict as exc:
            if not _closed(exc):
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
    if event.type == "voice.completed":
        await _sent_first(session, message, event.call_id, now)
        if message.finished_at is None:
            await nudge_party(session, message, now)
            message.finished_at = now
            await _message_event(session, message, EventKind.call_ended, now, provider_message_id=event.call_id)
        return "completed"
    # no_answer, busy, failed: the person was not reached by this call.
    code = event.type.removeprefix("voice.")
    await _not_reached(
        session,
        message,
        provider_id=event.call_id,
        code=code,
        text=event.error.message if event.error else "",
        failure="not_reached",
        now=now,
    )
    return code


async def handle_callback(session: AsyncSession, event: SmsReceipt | SmsInbound | VoiceEvent, *, now: datetime) -> str:
    """Apply one provider event (its signature already checked); a repeated ``event_id`` changes nothing."""
    if not await _first_time(session, event.event_id, event.type, now):
        return "duplicate"
    if isinstance(event, SmsReceipt):
        outcome = await _sms_receipt(session, event, now)
    elif isinstance(event, SmsInbound):
        outcome = await _sms_reply(session, event, now)
    else:
        outcome = await _voice(session, event, now)
    await session.flush()
    log.info("callback %s %s: %s", event.type, event.event_id, outcome)
    return outcome
