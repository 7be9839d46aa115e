"""Acknowledgements — the only thing that counts as told.

A person acknowledges in the mini-program, by the link in a message, by replying the message's code by SMS,
by pressing 1 on a call, or a staff member records that they reached the person by phone (who, when, and
who recorded it). A sent message, a delivered SMS or an answered call is *not* told. The party is told at
its earliest acknowledgement, the step once every one of its parties is. A closed incident takes no
acknowledgement (409 ``incident_closed``). Reading replies and keypresses from the providers' callbacks is
:mod:`.callbacks`'.
"""

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import ack_links
from api.errors import Conflict, Invalid, NotFound, field_error
from api.models.accounts import Role
from api.models.escalation import (
    ACK_ROUTE_LABELS,
    Acknowledgement,
    AcknowledgementPublic,
    AckPage,
    AckRoute,
    Audience,
    EscalationParty,
    EscalationStep,
    EscalationTarget,
    PartyStatus,
    StaffCall,
    StepStatus,
)
from api.models.guardians import Guardian
from api.models.incidents import CATEGORY_LABELS, SEVERITY_LABELS, EventKind, Incident, IncidentStatus, TimeBasis
from api.models.notifications import MessagePurpose, OutboundMessage
from api.models.organisations import School
from api.scoping import Principal, as_system
from api.services.emergency import texts
from api.services.emergency.chain import lock_chain, lock_step_and_party
from api.services.emergency.decide import deadline_met
from api.services.emergency.notify import cancel_pending, case_facts, release_reply_codes
from api.services.emergency.timeline import record_event

INCIDENT_NOT_FOUND = "找不到该事件 (incident not found)"

LINK_NOT_FOUND = "链接无效或已过期 (unknown acknowledgement link)"


INCIDENT_CLOSED = "事件已结案，无需再确认 (the incident is closed)"


# Staff may have phoned before typing the report, but not long before the clock started.
_CALL_BEFORE_START = timedelta(minutes=5)


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


async def _message_for_token(session: AsyncSession, *, secret: str, token: str) -> OutboundMessage:
    """``secret`` is the acknowledgement-link key ring (``Settings.ack_link_keys``)."""
    message_id = ack_links.read_ack_token(secret, token)
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
        occurred_at_local=texts.local_time(incident.occurred_at),
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
    message_id = ack_links.read_ack_token(secret, token)
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


def utc(moment: datetime) -> datetime:
    # The contract says UTC: a provider that drops the offset still means UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def answered_at(provider_time: datetime, message: OutboundMessage, now: datetime) -> datetime:
    """When the person answered: the provider's event time, clamped to [the message can have reached the
    provider, we received the callback].

    The floor is the send time when the message went out at its first attempt; otherwise (a retried send, or
    a callback ahead of the send's answer) the time it was queued — an earlier attempt whose answer was lost
    may be the one that went out, and no attempt can go out before the message exists."""
    provider_time = utc(provider_time)
    floor = message.sent_at if message.sent_at is not None and message.attempts <= 1 else message.created_at
    return min(max(provider_time, floor), now)


async def acknowledge_message(
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


def is_closed(exc: Conflict) -> bool:
    return exc.code == "incident_closed"
