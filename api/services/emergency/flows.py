"""A staff member's actions on an incident in flight — escalate now, add a number learned during the
emergency, send again — each several steps across the chain, the outbox, the timeline and the audit log.
"""

import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.errors import Conflict, Invalid, NotFound, field_error
from api.models.escalation import (
    PARTY_STATUS_OPEN,
    Audience,
    ContactAdd,
    Escalate,
    EscalationParty,
    EscalationStep,
    EscalationTarget,
    PartyStatus,
    Resend,
    StepStatus,
)
from api.models.incidents import (
    EventKind,
    Incident,
)
from api.models.notifications import (
    Channel,
    OutboundMessage,
)
from api.phones import PhoneError, PhoneKind, normalize_phone
from api.scoping import Principal, as_system
from api.services.emergency.chain import (
    advance_party,
    lock_chain,
    lock_parties,
    lock_step_and_party,
    rearm_party,
    start_step,
)
from api.services.emergency.contacts import ContactPlan, add_targets
from api.services.emergency.decide import next_step_check
from api.services.emergency.notify import queue_notification
from api.services.emergency.timeline import get_incident, record_event, target_detail
from api.services.notifications.delivery import masked_address
from api.services.notifications.outbox import wake_workers
from api.settings import Settings


async def _locked_party(
    session: AsyncSession, incident: Incident, party_id: uuid.UUID
) -> tuple[EscalationStep, EscalationParty]:
    party = await session.get(EscalationParty, party_id)
    if party is None or party.incident_id != incident.id:
        raise NotFound("找不到该通知对象 (party not found)", code="party_not_found")
    return await lock_step_and_party(session, party_id)


def _audit_action(session: AsyncSession, incident: Incident, action: str, **detail: object) -> None:
    audit.record(
        session,
        action=action,
        resource_type="incident",
        resource_id=incident.id,
        school_id=incident.school_id,
        county_id=incident.county_id,
        detail={k: v for k, v in detail.items() if v is not None} or None,
    )


async def escalate_now(
    session: AsyncSession,
    principal: Principal,
    *,
    incident_id: uuid.UUID,
    data: Escalate,
    settings: Settings,
    now: datetime,
) -> Incident:
    """Do not wait: start held steps now, and move every untold party to its next contact at once."""
    incident = await get_incident(session, incident_id)
    stmt = select(EscalationStep.id).where(EscalationStep.incident_id == incident.id)
    if data.step_no is not None:
        stmt = stmt.where(EscalationStep.step_no == data.step_no)
    step_ids = list((await session.execute(stmt)).scalars())
    of_steps = select(EscalationParty.id).where(col(EscalationParty.step_id).in_(step_ids))
    party_ids = list((await session.execute(of_steps)).scalars()) if step_ids else []
    # Every step, then every party, in the engine's one lock order, before anything is decided.
    locks = await lock_chain(session, step_ids=step_ids, party_ids=party_ids)
    steps = [step for step in locks.steps.values() if step.status != StepStatus.told]
    if not steps:
        raise Conflict("没有需要升级的步骤 (every step is already told)", code="nothing_to_escalate")
    _audit_action(session, incident, "incident.escalate", step_no=data.step_no)
    # SYSTEM: the chain's own rows, written for an incident the caller was authorised for above.
    async with as_system(session):
        for step in sorted(steps, key=lambda s: s.step_no):
            record_event(
                session,
                incident.id,
                EventKind.escalated,
                at=now,
                step_no=step.step_no,
                actor_account_id=principal.account_id,
            )
            if step.status == StepStatus.held:
                await start_step(session, step, settings=settings, now=now)
            else:
                for party in await lock_parties(session, step.id):
                    if party.status in PARTY_STATUS_OPEN:
                        await rearm_party(session, party, settings=settings, now=now, reason="escalated")
            step.next_check_at = next_step_check(step)
        await session.flush()
    await wake_workers(session)
    return incident


async def add_contact(
    session: AsyncSession,
    principal: Principal,
    *,
    incident_id: uuid.UUID,
    party_id: uuid.UUID,
    data: ContactAdd,
    settings: Settings,
    now: datetime,
) -> Incident:
    """A number learned during the emergency: tried at once, and in every later round."""
    incident = await get_incident(session, incident_id)
    try:
        phone = normalize_phone(data.phone)
    except PhoneError as exc:
        raise Invalid(
            exc.message_zh, code=exc.code, fields=[field_error(["body", "phone"], exc.message_zh, exc.code)]
        ) from None
    step, party = await _locked_party(session, incident, party_id)
    if party.status == PartyStatus.told:
        raise Conflict("该对象已告知 (this party is already told)", code="party_told")
    existing = list(
        (await session.execute(select(EscalationTarget).where(EscalationTarget.party_id == party.id))).scalars()
    )
    plan = ContactPlan(label=data.label, name=data.name)
    ways = (
        [Channel.voice, Channel.sms] if party.audience == Audience.entrusted_guardian else [Channel.sms, Channel.voice]
    )
    plan.ways = [(c, phone.e164) for c in ways if c == Channel.voice or phone.kind == PhoneKind.mobile]
    # SYSTEM: the chain's own rows, written for an incident the caller was authorised for above.
    async with as_system(session):
        added = add_targets(
            session,
            party,
            [plan],
            first_seq=max((t.seq for t in existing), default=0) + 1,
            first_contact_no=max((t.contact_no for t in existing), default=0) + 1,
            now=now,
            added_by_id=principal.account_id,
            known={(t.channel, t.address) for t in existing if t.dead_at is None},
        )
        if not added:
            raise Conflict("该号码已在联系卡上 (this number is already on the list)", code="contact_exists")
        await session.flush()
        record_event(
            session,
            incident.id,
            EventKind.contact_added,
            at=now,
            step_no=step.step_no,
            party_id=party.id,
            actor_account_id=principal.account_id,
            contact=data.label,
            name=data.name,
            address=masked_address(Channel.voice, phone.e164),
        )
        _audit_action(session, incident, "incident.contact_add", party_id=str(party.id))
        if step.status != StepStatus.held:
            if party.status in (PartyStatus.unreachable, PartyStatus.exhausted):
                party.status = PartyStatus.notifying
                party.round = 1
            party.cursor = added[0].seq - 1
            await advance_party(session, party, settings=settings, now=now, reason="contact_added")
        await session.flush()
    await wake_workers(session)
    return incident


async def resend(
    session: AsyncSession,
    principal: Principal,
    *,
    incident_id: uuid.UUID,
    party_id: uuid.UUID,
    data: Resend,
    settings: Settings,
    now: datetime,
) -> Incident:
    """Send again now, to the given contact or the one the party is waiting on (a new attempt)."""
    incident = await get_incident(session, incident_id)
    step, party = await _locked_party(session, incident, party_id)
    if party.status == PartyStatus.told:
        raise Conflict("该对象已告知 (this party is already told)", code="party_told")
    target: EscalationTarget | None = None
    if data.contact_id is not None:
        target = await session.get(EscalationTarget, data.contact_id)
        if target is None or target.party_id != party.id:
            raise NotFound("联系人不在该通知对象的联系卡上 (contact not found)", code="contact_not_found")
    elif party.current_message_id is not None:
        current = await session.get(OutboundMessage, party.current_message_id)
        target = await session.get(EscalationTarget, current.target_id) if current and current.target_id else None
    if target is None:
        target = (
            await session.execute(
                select(EscalationTarget)
                .where(EscalationTarget.party_id == party.id, col(EscalationTarget.dead_at).is_(None))
                .order_by(col(EscalationTarget.seq))
                .limit(1)
            )
        ).scalar_one_or_none()
    if target is None:
        raise Invalid("没有可用的联系方式，请先添加联系人 (no usable contact)", code="no_usable_contact")
    if target.dead_at is not None:
        raise Invalid(f"该号码不可用 ({target.dead_reason}) (this contact cannot be reached)", code="contact_unusable")
    # SYSTEM: the chain's own rows, written for an incident the caller was authorised for above.
    async with as_system(session):
        record_event(
            session,
            incident.id,
            EventKind.resend,
            at=now,
            step_no=step.step_no,
            party_id=party.id,
            actor_account_id=principal.account_id,
            **target_detail(target),
        )
        _audit_action(session, incident, "incident.resend", party_id=str(party.id))
        if party.status in (PartyStatus.unreachable, PartyStatus.exhausted, PartyStatus.held):
            party.status = PartyStatus.notifying
            party.round = 1
        message = await queue_notification(
            session, incident, step, party, target, settings=settings, now=now, reason="resend"
        )
        # Out of turn: the party waits on this message, then carries on where it was in its list.
        party.current_message_id = message.id
        party.next_check_at = now + timedelta(seconds=step.ack_wait_seconds)
        await session.flush()
    await wake_workers(session)
    return incident
