"""突发事件 — reporting an emergency, following it, and the manual actions of the staff handling it.

Reporting freezes the chain onto the incident (:func:`api.services.escalation.freeze_chain`) in the same
transaction, so an incident never exists without its chain; the first messages are queued before the
request returns and the workers are woken on commit. An incident is never deleted, and it can only be
closed once every step of the chain is told and the child's outcome is recorded.
"""

import secrets
import uuid
from collections import defaultdict
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.clock import SHANGHAI
from api.errors import Conflict, Invalid, NotFound, field_error
from api.models.accounts import Role
from api.models.base import Page
from api.models.children import Child, ChildStatus
from api.models.escalation import (
    AUDIENCE_LABELS,
    PARTY_STATUS_OPEN,
    STEP_LABELS,
    Audience,
    Channel,
    ContactAdd,
    Escalate,
    EscalationParty,
    EscalationStep,
    EscalationTarget,
    OutboundMessage,
    PartyStatus,
    Resend,
    StepStatus,
)
from api.models.incidents import (
    CATEGORY_LABELS,
    EVENT_LABELS,
    SEVERITY_LABELS,
    ContactPublic,
    EventKind,
    Incident,
    IncidentClose,
    IncidentCreate,
    IncidentEvent,
    IncidentNote,
    IncidentPublic,
    IncidentStatus,
    IncidentSummary,
    OutcomeRecord,
    PartyPublic,
    StepPublic,
    StepSummary,
    Timeline,
    TimelineEntry,
)
from api.models.organisations import School
from api.phones import PhoneError, PhoneKind, normalize_phone
from api.scoping import Principal, as_system
from api.services import escalation as chain
from api.services.acknowledgements import lock_step_and_party
from api.settings import Settings

NOT_FOUND = "找不到该事件 (incident not found)"
_CASE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
# A report may be typed a little after the fact, but an occurred_at in the future is a mistake, and one
# weeks back is most likely a wrong date (the chain would be breached before it starts).
_FUTURE_SKEW = timedelta(minutes=2)
_OLDEST_REPORT = timedelta(days=7)
_SCHOOL_STAFF = (Role.school_admin, Role.teacher)
# session.info: incident id → (the chain frozen by its report in this transaction, the child's name).
_JUST_REPORTED = "liushou_just_reported"


def _case_code(now: datetime) -> str:
    suffix = "".join(secrets.choice(_CASE_ALPHABET) for _ in range(6))
    return f"{now.astimezone(SHANGHAI):%y%m%d}-{suffix}"


async def get_incident(session: AsyncSession, incident_id: uuid.UUID) -> Incident:
    incident = await session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(NOT_FOUND, code="incident_not_found")
    return incident


def _require_open(incident: Incident) -> None:
    if incident.status == IncidentStatus.closed:
        raise Conflict("事件已结案 (the incident is closed)", code="incident_closed")


async def report_incident(
    session: AsyncSession,
    principal: Principal,
    *,
    data: IncidentCreate,
    settings: Settings,
    now: datetime,
    incident_id: uuid.UUID | None = None,
    case_code: str | None = None,
) -> Incident:
    """Report an emergency: the chain is frozen onto it and every step that is due starts at once.
    (``incident_id`` and ``case_code`` are fixed only by the demo seeder, so that it stays idempotent.)"""
    assert principal.account_id is not None
    child = await session.get(Child, data.child_id)
    if child is None:
        raise NotFound("学生不存在 (child not found)", code="child_not_found")
    if child.status != ChildStatus.enrolled:
        raise Invalid(
            "该学生已不在册 (the child is no longer on the roster)",
            code="child_not_enrolled",
            fields=[field_error(["body", "child_id"], "该学生已不在册", "child_not_enrolled")],
        )
    occurred_at = data.occurred_at.astimezone(now.tzinfo)
    if occurred_at > now + _FUTURE_SKEW:
        raise Invalid(
            "发生时间不能晚于现在 (occurred_at is in the future)",
            code="occurred_in_future",
            fields=[field_error(["body", "occurred_at"], "发生时间不能晚于现在", "occurred_in_future")],
        )
    if occurred_at < now - _OLDEST_REPORT:
        raise Invalid(
            "发生时间早于7天前，请核对日期 (occurred_at is more than 7 days ago)",
            code="occurred_too_long_ago",
            fields=[field_error(["body", "occurred_at"], "发生时间早于7天前", "occurred_too_long_ago")],
        )
    occurred_at = min(occurred_at, now)
    school = await session.get(School, child.school_id)
    assert school is not None
    policy, policy_row = await chain.effective_policy(session, school.county_id)
    # Holds are checked before anything is written, so a refused hold leaves no trace.
    chain.plan_steps(policy, occurred_at=occurred_at, reported_at=now, holds=data.holds)
    incident = None
    for _ in range(5):
        candidate = Incident(
            id=incident_id or uuid.uuid4(),
            case_code=case_code or _case_code(now),
            county_id=school.county_id,
            township_id=school.township_id,
            school_id=school.id,
            child_id=child.id,
            class_id=child.class_id,
            category=data.category,
            severity=data.severity,
            summary=data.summary,
            location=data.location,
            occurred_at=occurred_at,
            time_basis=data.time_basis,
            first_actions=data.first_actions,
            reported_at=now,
            reported_by_id=principal.account_id,
            policy=chain.snapshot_policy(policy, policy_row),
            updated_at=now,
        )
        try:
            async with session.begin_nested():
                session.add(candidate)
                await session.flush()
        except IntegrityError:
            continue  # the random case code was taken: draw another
        incident = candidate
        break
    if incident is None:
        raise Conflict("事件编号生成失败，请重试 (could not allocate a case code)", code="case_code_exhausted")
    chain.record_event(
        session,
        incident.id,
        EventKind.reported,
        at=now,
        actor_account_id=principal.account_id,
        category=incident.category.value,
        severity=incident.severity.value,
        occurred_at=incident.occurred_at.isoformat(),
        time_basis=incident.time_basis.value,
        minutes_since_start=round((now - incident.occurred_at).total_seconds() / 60, 1),
    )
    # SYSTEM: freezing reads the guardians' family accounts and the county's officials the reporter cannot see.
    async with as_system(session):
        frozen = await chain.freeze_chain(
            session, incident, policy=policy, holds=data.holds, settings=settings, now=now
        )
        await session.flush()
    await chain.wake_workers(session)
    # The answer to the report shows this chain: kept for incident_public, which need not read back what this
    # transaction has just written.
    session.info.setdefault(_JUST_REPORTED, {})[incident.id] = (frozen, child.name)
    return incident


# ---- reading --------------------------------------------------------------------------------------------


def _full_numbers(principal: Principal) -> bool:
    """The school's own staff dial the numbers; the bureau and township see them masked."""
    return principal.role in _SCHOOL_STAFF


async def _steps(session: AsyncSession, incident_id: uuid.UUID) -> list[EscalationStep]:
    """The incident's three steps, in order."""
    return list(
        (
            await session.execute(
                select(EscalationStep)
                .where(EscalationStep.incident_id == incident_id)
                .order_by(col(EscalationStep.step_no))
            )
        ).scalars()
    )


async def incident_public(session: AsyncSession, principal: Principal, incident: Incident) -> IncidentPublic:
    just_reported = session.info.get(_JUST_REPORTED, {}).pop(incident.id, None)
    child_name: str | None
    if just_reported is not None:
        frozen, child_name = just_reported
        steps, parties, targets = frozen.steps, frozen.parties, sorted(frozen.targets, key=lambda t: t.seq)
    else:
        steps = await _steps(session, incident.id)
        parties = list(
            (
                await session.execute(
                    select(EscalationParty)
                    .where(EscalationParty.incident_id == incident.id)
                    .order_by(col(EscalationParty.audience))
                )
            ).scalars()
        )
        targets = list(
            (
                await session.execute(
                    select(EscalationTarget)
                    .where(EscalationTarget.incident_id == incident.id)
                    .order_by(col(EscalationTarget.party_id), col(EscalationTarget.seq))
                )
            ).scalars()
        )
        child = await session.get(Child, incident.child_id)
        child_name = child.name if child else None
    by_party: dict[uuid.UUID, list[ContactPublic]] = defaultdict(list)
    full = _full_numbers(principal)
    for t in targets:
        address = t.address if full and t.channel != Channel.wechat else chain.masked_address(t.channel, t.address)
        by_party[t.party_id].append(
            ContactPublic(
                id=t.id,
                seq=t.seq,
                contact_no=t.contact_no,
                label=t.contact_label,
                name=t.contact_name,
                channel=t.channel,
                address=address,
                usable=t.dead_at is None,
                unusable_reason=t.dead_reason,
            )
        )
    by_step: dict[uuid.UUID, list[PartyPublic]] = defaultdict(list)
    order = {a: i for i, a in enumerate(AUDIENCE_LABELS)}
    for p in sorted(parties, key=lambda p: order[p.audience]):
        by_step[p.step_id].append(
            PartyPublic(
                id=p.id,
                audience=p.audience,
                label=AUDIENCE_LABELS[p.audience],
                status=p.status,
                told_at=p.told_at,
                told_route=p.told_route,
                round=p.round,
                contacts=by_party[p.id],
            )
        )
    if full:
        audit.record(
            session,
            action="incident.contacts.read",
            resource_type="incident",
            resource_id=incident.id,
            school_id=incident.school_id,
            county_id=incident.county_id,
        )
    return IncidentPublic(
        id=incident.id,
        case_code=incident.case_code,
        county_id=incident.county_id,
        township_id=incident.township_id,
        school_id=incident.school_id,
        child_id=incident.child_id,
        child_name=child_name or "",
        class_id=incident.class_id,
        category=incident.category,
        category_label=CATEGORY_LABELS[incident.category],
        severity=incident.severity,
        severity_label=SEVERITY_LABELS[incident.severity],
        summary=incident.summary,
        location=incident.location,
        occurred_at=incident.occurred_at,
        time_basis=incident.time_basis,
        first_actions=incident.first_actions,
        reported_at=incident.reported_at,
        reported_by_id=incident.reported_by_id,
        status=incident.status,
        outcome=incident.outcome,
        outcome_note=incident.outcome_note,
        closed_at=incident.closed_at,
        closure_summary=incident.closure_summary,
        steps=[
            StepPublic(
                step_no=s.step_no,
                label=STEP_LABELS[s.step_no],
                deadline_minutes=s.deadline_minutes,
                deadline_at=s.deadline_at,
                hold_until=s.hold_until,
                starts_at=s.starts_at,
                status=s.status,
                told_at=s.told_at,
                breached_at=s.breached_at,
                deadline_met=chain.deadline_met(s),
                parties=by_step[s.id],
            )
            for s in steps
        ],
    )


def _step_summary(step: EscalationStep) -> StepSummary:
    return StepSummary(
        step_no=step.step_no,
        status=step.status,
        deadline_at=step.deadline_at,
        told_at=step.told_at,
        breached=step.breached_at is not None,
        deadline_met=chain.deadline_met(step),
    )


async def list_incidents(
    session: AsyncSession,
    *,
    status: IncidentStatus | None,
    school_id: uuid.UUID | None,
    needs_attention: bool | None,
    offset: int,
    limit: int,
) -> Page[IncidentSummary]:
    """Incidents in scope, newest first, with how each step of the chain is doing."""
    attention = sa.or_(
        sa.exists().where(
            col(EscalationStep.incident_id) == Incident.id,
            col(EscalationStep.status) != StepStatus.told,
            sa.or_(col(EscalationStep.breached_at).is_not(None), col(EscalationStep.near_alerted_at).is_not(None)),
        ),
        sa.exists().where(
            col(EscalationParty.incident_id) == Incident.id,
            col(EscalationParty.status).in_([PartyStatus.unreachable, PartyStatus.exhausted]),
        ),
    )
    filters = []
    if status is not None:
        filters.append(col(Incident.status) == status)
    if school_id is not None:
        filters.append(col(Incident.school_id) == school_id)
    if needs_attention is not None:
        filters.append(attention if needs_attention else sa.not_(attention))
    total = (await session.execute(select(sa.func.count()).select_from(Incident).where(*filters))).scalar_one()
    rows = (
        await session.execute(
            select(Incident, attention.label("attention"))
            .where(*filters)
            .order_by(col(Incident.occurred_at).desc(), col(Incident.id))
            .offset(offset)
            .limit(limit)
        )
    ).all()
    ids = [incident.id for incident, _ in rows]
    steps: dict[uuid.UUID, list[StepSummary]] = defaultdict(list)
    if ids:
        for step in (
            await session.execute(
                select(EscalationStep)
                .where(col(EscalationStep.incident_id).in_(ids))
                .order_by(col(EscalationStep.step_no))
            )
        ).scalars():
            steps[step.incident_id].append(_step_summary(step))
    return Page(
        data=[
            IncidentSummary(
                id=incident.id,
                case_code=incident.case_code,
                school_id=incident.school_id,
                child_id=incident.child_id,
                category=incident.category,
                severity=incident.severity,
                occurred_at=incident.occurred_at,
                reported_at=incident.reported_at,
                status=incident.status,
                needs_attention=bool(flag),
                steps=steps[incident.id],
            )
            for incident, flag in rows
        ],
        count=int(total),
    )


def _t_plus(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign = "+" if seconds >= 0 else "-"
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"T{sign}{hours}:{minutes:02d}:{secs:02d}" if hours else f"T{sign}{minutes:02d}:{secs:02d}"


async def timeline(session: AsyncSession, *, incident_id: uuid.UUID) -> Timeline:
    """The incident minute by minute: every decision, attempt, delivery, acknowledgement and breach."""
    incident = await get_incident(session, incident_id)
    steps = await _steps(session, incident.id)
    events = (
        await session.execute(
            select(IncidentEvent)
            .where(IncidentEvent.incident_id == incident.id)
            .order_by(col(IncidentEvent.at), col(IncidentEvent.id))
        )
    ).scalars()
    audit.record(
        session,
        action="incident.timeline.read",
        resource_type="incident",
        resource_id=incident.id,
        school_id=incident.school_id,
        county_id=incident.county_id,
    )
    return Timeline(
        incident_id=incident.id,
        case_code=incident.case_code,
        clock_start=incident.occurred_at,
        steps=[_step_summary(s) for s in steps],
        entries=[
            TimelineEntry(
                at=e.at,
                at_local=e.at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
                t_plus=_t_plus(e.at - incident.occurred_at),
                kind=e.kind,
                label=EVENT_LABELS[e.kind],
                step_no=e.step_no,
                channel=e.channel,
                actor_account_id=e.actor_account_id,
                detail=e.detail,
            )
            for e in events
        ],
    )


# ---- updates, outcome, closure ---------------------------------------------------------------------------


async def add_update(
    session: AsyncSession, principal: Principal, *, incident_id: uuid.UUID, data: IncidentNote, now: datetime
) -> Incident:
    """A note on how things stand (appended, never edited); may adjust the severity."""
    incident = await get_incident(session, incident_id)
    _require_open(incident)
    before = incident.severity
    if data.severity is not None:
        incident.severity = data.severity
    incident.updated_at = now
    chain.record_event(
        session,
        incident.id,
        EventKind.update,
        at=now,
        actor_account_id=principal.account_id,
        note=data.note,
        severity_from=before.value if data.severity and data.severity != before else None,
        severity_to=data.severity.value if data.severity and data.severity != before else None,
    )
    await session.flush()
    return incident


async def record_outcome(
    session: AsyncSession, principal: Principal, *, incident_id: uuid.UUID, data: OutcomeRecord, now: datetime
) -> Incident:
    incident = await get_incident(session, incident_id)
    _require_open(incident)
    incident.outcome = data.outcome
    incident.outcome_note = data.note
    incident.updated_at = now
    chain.record_event(
        session,
        incident.id,
        EventKind.outcome_recorded,
        at=now,
        actor_account_id=principal.account_id,
        outcome=data.outcome.value,
        note=data.note,
    )
    await session.flush()
    return incident


async def close_incident(
    session: AsyncSession, principal: Principal, *, incident_id: uuid.UUID, data: IncidentClose, now: datetime
) -> Incident:
    """Close with a summary — only once every step is told and the child's outcome is recorded."""
    incident = (
        await session.execute(select(Incident).where(Incident.id == incident_id).with_for_update())
    ).scalar_one_or_none()
    if incident is None:
        raise NotFound(NOT_FOUND, code="incident_not_found")
    _require_open(incident)
    # Share-lock the steps: an acknowledgement in flight (it holds its step) lands before the closure, and one
    # that comes after waits, then finds the incident closed (409 incident_closed), never a row after closure.
    await session.execute(
        select(EscalationStep.id)
        .where(EscalationStep.incident_id == incident.id)
        .order_by(col(EscalationStep.id))
        .with_for_update(read=True)
    )
    open_steps = (
        await session.execute(
            select(EscalationStep.step_no)
            .where(EscalationStep.incident_id == incident.id, EscalationStep.status != StepStatus.told)
            .order_by(col(EscalationStep.step_no))
        )
    ).scalars()
    untold = [STEP_LABELS[n] for n in open_steps]
    if untold:
        raise Conflict(
            f"尚未完成：{'、'.join(untold)}。每一步都必须告知到位后才能结案 (every step must be told first)",
            code="incident_chain_open",
        )
    if incident.outcome is None:
        raise Invalid(
            "请先登记孩子的情况 (record the child's outcome first)",
            code="outcome_missing",
            fields=[field_error(["body"], "请先登记孩子的情况", "outcome_missing")],
        )
    incident.status = IncidentStatus.closed
    incident.closed_at = now
    incident.closed_by_id = principal.account_id
    incident.closure_summary = data.summary
    incident.updated_at = now
    chain.record_event(session, incident.id, EventKind.closed, at=now, actor_account_id=principal.account_id)
    await chain.release_reply_codes(session, incident_id=incident.id, now=now)
    await session.flush()
    return incident


# ---- manual actions ------------------------------------------------------------------------------------


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
    locks = await chain.lock_chain(session, step_ids=step_ids, party_ids=party_ids)
    steps = [step for step in locks.steps.values() if step.status != StepStatus.told]
    if not steps:
        raise Conflict("没有需要升级的步骤 (every step is already told)", code="nothing_to_escalate")
    _audit_action(session, incident, "incident.escalate", step_no=data.step_no)
    # SYSTEM: the chain's own rows, written for an incident the caller was authorised for above.
    async with as_system(session):
        for step in sorted(steps, key=lambda s: s.step_no):
            chain.record_event(
                session,
                incident.id,
                EventKind.escalated,
                at=now,
                step_no=step.step_no,
                actor_account_id=principal.account_id,
            )
            if step.status == StepStatus.held:
                await chain.start_step(session, step, settings=settings, now=now)
            else:
                for party in await chain.lock_parties(session, step.id):
                    if party.status in PARTY_STATUS_OPEN:
                        await chain.rearm_party(session, party, settings=settings, now=now, reason="escalated")
            step.next_check_at = chain.next_step_check(step)
        await session.flush()
    await chain.wake_workers(session)
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
    plan = chain.ContactPlan(label=data.label, name=data.name)
    ways = (
        [Channel.voice, Channel.sms] if party.audience == Audience.entrusted_guardian else [Channel.sms, Channel.voice]
    )
    plan.ways = [(c, phone.e164) for c in ways if c == Channel.voice or phone.kind == PhoneKind.mobile]
    # SYSTEM: the chain's own rows, written for an incident the caller was authorised for above.
    async with as_system(session):
        added = chain.add_targets(
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
        chain.record_event(
            session,
            incident.id,
            EventKind.contact_added,
            at=now,
            step_no=step.step_no,
            party_id=party.id,
            actor_account_id=principal.account_id,
            contact=data.label,
            name=data.name,
            address=chain.masked_address(Channel.voice, phone.e164),
        )
        _audit_action(session, incident, "incident.contact_add", party_id=str(party.id))
        if step.status != StepStatus.held:
            if party.status in (PartyStatus.unreachable, PartyStatus.exhausted):
                party.status = PartyStatus.notifying
                party.round = 1
            party.cursor = added[0].seq - 1
            await chain.advance_party(session, party, settings=settings, now=now, reason="contact_added")
        await session.flush()
    await chain.wake_workers(session)
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
        chain.record_event(
            session,
            incident.id,
            EventKind.resend,
            at=now,
            step_no=step.step_no,
            party_id=party.id,
            actor_account_id=principal.account_id,
            **chain.target_detail(target),
        )
        _audit_action(session, incident, "incident.resend", party_id=str(party.id))
        if party.status in (PartyStatus.unreachable, PartyStatus.exhausted, PartyStatus.held):
            party.status = PartyStatus.notifying
            party.round = 1
        message = await chain.queue_notification(
            session, incident, step, party, target, settings=settings, now=now, reason="resend"
        )
        # Out of turn: the party waits on this message, then carries on where it was in its list.
        party.current_message_id = message.id
        party.next_check_at = now + timedelta(seconds=step.ack_wait_seconds)
        await session.flush()
    await chain.wake_workers(session)
    return incident
