"""突发事件 — reporting an emergency and reading it, its outcome and its closure.

Reporting freezes the chain onto the incident (:func:`.chain.freeze_chain`) in the same transaction, so an
incident never exists without its chain; the first messages are queued before the request returns and the
workers are woken on commit. An incident is never deleted, and it can only be closed once every step of
the chain is told and the child's outcome is recorded.
"""

import json
import secrets
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.clock import SHANGHAI
from api.driver import driver_connection
from api.errors import Conflict, Invalid, NotFound, field_error
from api.models.accounts import Role
from api.models.audit import AuditEntry
from api.models.base import Page, new_row
from api.models.children import Child, ChildStatus
from api.models.escalation import (
    AUDIENCE_LABELS,
    STEP_LABELS,
    EscalationParty,
    EscalationStep,
    EscalationTarget,
    PartyStatus,
    PolicyValues,
    StepStatus,
)
from api.models.incidents import (
    CATEGORY_LABELS,
    SEVERITY_LABELS,
    ContactPublic,
    EventKind,
    Incident,
    IncidentClose,
    IncidentCreate,
    IncidentNote,
    IncidentPublic,
    IncidentStatus,
    IncidentSummary,
    OutcomeRecord,
    PartyPublic,
    StepPublic,
    StepSummary,
)
from api.models.notifications import (
    Channel,
)
from api.scoping import BECOME_OWNER_COLUMN, Principal, as_system
from api.services.emergency import rows
from api.services.emergency.chain import FrozenChain, freeze_chain
from api.services.emergency.contacts import read_report_contacts
from api.services.emergency.decide import deadline_met, plan_steps
from api.services.emergency.notify import leaders_known, release_reply_codes, remember_case_facts
from api.services.emergency.policy import policy_values, snapshot_policy
from api.services.emergency.timeline import NOT_FOUND, get_incident, incident_steps, record_event, step_summary
from api.services.notifications.delivery import masked_address
from api.services.notifications.outbox import wake_workers
from api.settings import Settings

_CASE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


# A report may be typed a little after the fact, but an occurred_at in the future is a mistake, and one
# weeks back is most likely a wrong date (the chain would be breached before it starts).
_FUTURE_SKEW = timedelta(minutes=2)


_OLDEST_REPORT = timedelta(days=7)


_SCHOOL_STAFF = (Role.school_admin, Role.teacher)
# session.info: incident id → (the transaction of its report, the chain that report froze, the child's name).
_JUST_REPORTED = "liushou_just_reported"


def _case_code(now: datetime) -> str:
    suffix = "".join(secrets.choice(_CASE_ALPHABET) for _ in range(6))
    return f"{now.astimezone(SHANGHAI):%y%m%d}-{suffix}"


def _require_open(incident: Incident) -> None:
    if incident.status == IncidentStatus.closed:
        raise Conflict("事件已结案 (the incident is closed)", code="incident_closed")


# Built once, and sent straight to the driver (the report's statements, :mod:`.rows`). ON CONFLICT DO NOTHING:
# a case code (or id) already taken inserts nothing and returns no row, and another code is drawn: no
# savepoint, one round trip per draw. In the reporter's scope: the incident's row policy checks the insert.
_INCIDENT_COLUMNS: list[sa.Column[Any]] = list(Incident.__table__.columns)  # type: ignore[attr-defined]
_INSERT_INCIDENT = (
    f"INSERT INTO incident ({', '.join(f'{chr(34)}{c.name}{chr(34)}' for c in _INCIDENT_COLUMNS)}) VALUES ("
    + ", ".join(f"${n}" for n in range(1, len(_INCIDENT_COLUMNS) + 1))
    + f") ON CONFLICT DO NOTHING RETURNING id, {BECOME_OWNER_COLUMN}"
)
_POLICY_FIELDS = list(PolicyValues.model_fields)
# The child, its school and the county's policy (its id and values) in one round trip, in the reporter's scope.
_REPORTED_CHILD = (
    "SELECT c.id, c.status, c.class_id, c.name, s.id, s.county_id, s.township_id, s.name, s.duty_phone, p.id, "
    + ", ".join(f"p.{name}" for name in _POLICY_FIELDS)
    + " FROM child c JOIN school s ON s.id = c.school_id"
    " LEFT JOIN escalation_policy p ON p.county_id = s.county_id WHERE c.id = $1"
)


@dataclass(frozen=True)
class _Reported:
    """The child reported, its school, and its county's policy row (its id; ``None``: the defaults)."""

    id: uuid.UUID
    status: str
    class_id: uuid.UUID | None
    name: str
    school_id: uuid.UUID
    county_id: uuid.UUID
    township_id: uuid.UUID
    school_name: str
    duty_phone: str | None
    policy_id: uuid.UUID | None
    policy: PolicyValues


async def _reported_child(raw: Any, child_id: uuid.UUID) -> _Reported | None:
    row = await raw.fetchrow(_REPORTED_CHILD, child_id)
    if row is None:
        return None
    policy_id = row[9]
    values = dict(zip(_POLICY_FIELDS, row[10:], strict=True))
    policy = policy_values(None) if policy_id is None else PolicyValues.model_validate(values)
    return _Reported(
        id=row[0],
        status=row[1],
        class_id=row[2],
        name=row[3],
        school_id=row[4],
        county_id=row[5],
        township_id=row[6],
        school_name=row[7],
        duty_phone=row[8],
        policy_id=policy_id,
        policy=policy,
    )


def _incident_value(incident: Incident, column: sa.Column[Any]) -> Any:
    value = incident.__dict__[column.key]
    return json.dumps(value) if isinstance(column.type, sa.JSON) else value


async def _insert_with_case_code(
    raw: Any, incident: Incident, *, draw_code: bool, draw_id: bool, now: datetime
) -> bool:
    """Insert the incident under a random case code, drawing again when one is taken (the demo seeder fixes
    its id and code: ``draw_id`` / ``draw_code`` false); ``incident`` keeps what was inserted. False when five
    draws were all taken.

    The insert is checked in the reporter's scope (row security: an incident of their school); as it ends it
    takes the owner's role for the chain to come (the system block of :func:`_freeze`, ``switched``)."""
    for _ in range(5):
        if draw_code:
            incident.case_code = _case_code(now)
        if draw_id:
            incident.id = uuid.uuid4()
        values = [_incident_value(incident, column) for column in _INCIDENT_COLUMNS]
        if await raw.fetchrow(_INSERT_INCIDENT, *values) is not None:
            return True
    return False


async def report_incident(
    session: AsyncSession,
    principal: Principal,
    *,
    data: IncidentCreate,
    settings: Settings,
    now: datetime,
    incident_id: uuid.UUID | None = None,
    case_code: str | None = None,
    answered: bool = False,
) -> Incident:
    """Report an emergency: the chain is frozen onto it and every step that is due starts at once.
    (``incident_id`` and ``case_code`` are fixed only by the demo seeder, so that it stays idempotent.)
    ``answered``: the caller answers with the incident (:func:`incident_public`) in this transaction."""
    assert principal.account_id is not None
    # The report's statements go straight to the driver, on the session's connection, in its transaction.
    raw = await driver_connection(session)
    child = await _reported_child(raw, data.child_id)
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
    policy = child.policy
    # Holds are checked before anything is written, so a refused hold leaves no trace.
    plan_steps(policy, occurred_at=occurred_at, reported_at=now, holds=data.holds)
    incident = new_row(
        Incident,
        id=incident_id or uuid.uuid4(),
        case_code=case_code or "",
        county_id=child.county_id,
        township_id=child.township_id,
        school_id=child.school_id,
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
        policy=snapshot_policy(policy, child.policy_id),
        updated_at=now,
    )
    if not await _insert_with_case_code(
        raw, incident, draw_code=case_code is None, draw_id=incident_id is None, now=now
    ):
        raise Conflict("事件编号生成失败，请重试 (could not allocate a case code)", code="case_code_exhausted")
    async with rows.collecting(session):
        # The report's audit entries go out with its messages: the one the unit of work would have written for
        # the incident, and, where its answer will show the school's staff the chain's numbers, that read's own
        # (incident_public records it for any other answer).
        rows.add(session, audit.created_entry(session, incident))
        numbers_read = answered and _full_numbers(principal)
        if numbers_read:
            rows.add(session, _numbers_read(session, incident))
        frozen = await _freeze(
            session, raw, incident, child, now=now, policy=policy, data=data, principal=principal, settings=settings
        )
    await wake_workers(session)
    # The answer to the report shows this chain: kept for incident_public, which need not read back what this
    # transaction has just written.
    session.info.setdefault(_JUST_REPORTED, {})[incident.id] = (
        session.sync_session.get_transaction(),
        frozen,
        child.name,
        numbers_read,
    )
    return incident


async def _freeze(
    session: AsyncSession,
    raw: Any,
    incident: Incident,
    child: _Reported,
    *,
    now: datetime,
    policy: PolicyValues,
    data: IncidentCreate,
    principal: Principal,
    settings: Settings,
) -> FrozenChain:
    """The report's line on the timeline, and the chain frozen onto the incident (its rows collected and
    written by :func:`.chain.freeze_chain`)."""
    record_event(
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
    # The incident's insert took the owner's role as it ended (_insert_with_case_code).
    async with as_system(session, driver=raw, switched=True):
        contacts = await read_report_contacts(session, incident, school_phone=not child.duty_phone)
        remember_case_facts(
            session,
            incident,
            school_name=child.school_name,
            school_phone=child.duty_phone or contacts.school_phone,
            child_name=child.name,
        )
        with leaders_known(session, incident.school_id, contacts.leaders):
            return await freeze_chain(
                session, incident, policy=policy, holds=data.holds, settings=settings, now=now, contacts=contacts
            )


def _numbers_read(session: AsyncSession, incident: Incident) -> AuditEntry:
    """The audit entry of a read of the incident's contacts with their full numbers."""
    return audit.make_entry(
        session,
        action="incident.contacts.read",
        resource_type="incident",
        resource_id=incident.id,
        school_id=incident.school_id,
        county_id=incident.county_id,
    )


def _full_numbers(principal: Principal) -> bool:
    """The school's own staff dial the numbers; the bureau and township see them masked."""
    return principal.role in _SCHOOL_STAFF


async def _chain_rows(
    session: AsyncSession, incident_id: uuid.UUID
) -> tuple[list[EscalationParty], list[EscalationTarget]]:
    """The incident's parties and their targets (each party's in order)."""
    parties = (
        await session.execute(
            select(EscalationParty)
            .where(EscalationParty.incident_id == incident_id)
            .order_by(col(EscalationParty.audience))
        )
    ).scalars()
    targets = (
        await session.execute(
            select(EscalationTarget)
            .where(EscalationTarget.incident_id == incident_id)
            .order_by(col(EscalationTarget.party_id), col(EscalationTarget.seq))
        )
    ).scalars()
    return list(parties), list(targets)


def _parties_by_step(
    parties: Sequence[EscalationParty], targets: Sequence[EscalationTarget], *, full: bool
) -> dict[uuid.UUID, list[PartyPublic]]:
    """Each step's parties with their frozen contacts (numbers masked unless ``full``); ``targets`` in each
    party's order."""
    by_party: dict[uuid.UUID, list[ContactPublic]] = defaultdict(list)
    for t in targets:
        address = t.address if full and t.channel != Channel.wechat else masked_address(t.channel, t.address)
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
    return by_step


async def incident_public(session: AsyncSession, principal: Principal, incident: Incident) -> IncidentPublic:
    just_reported = session.info.get(_JUST_REPORTED, {}).pop(incident.id, None)
    child_name: str | None
    # The answer to its report: the chain it has just frozen (read back in any later transaction, where the
    # chain may have moved on).
    full = _full_numbers(principal)
    if just_reported is not None and just_reported[0] is session.sync_session.get_transaction():
        _, frozen, child_name, numbers_read = just_reported
        steps, parties, targets = frozen.steps, frozen.parties, sorted(frozen.targets, key=lambda t: t.seq)
    else:
        steps = await incident_steps(session, incident.id)
        parties, targets = await _chain_rows(session, incident.id)
        child = await session.get(Child, incident.child_id)
        child_name = child.name if child else None
        numbers_read = False
    if full and not numbers_read:  # the report's answer has its entry written with the report's rows
        session.add(_numbers_read(session, incident))
    by_step = _parties_by_step(parties, targets, full=full)
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
                deadline_met=deadline_met(s),
                parties=by_step[s.id],
            )
            for s in steps
        ],
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
            steps[step.incident_id].append(step_summary(step))
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
    record_event(
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
    record_event(
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
    record_event(session, incident.id, EventKind.closed, at=now, actor_account_id=principal.account_id)
    await release_reply_codes(session, incident_id=incident.id, now=now)
    await session.flush()
    return incident
