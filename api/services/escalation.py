"""The chain: county policy, duty contacts, freezing the chain onto an incident, and moving each party along.

Freezing (at the report) resolves who to tell and how into rows — steps with deadlines, parties, and the
ordered targets (contact × channel × address) — so that later edits of the policy or the archive do not
touch an incident in flight. Moving along is the same code whoever calls it (the report, the scheduler,
a staff member's "escalate now"): :func:`advance_party` queues a message to the next target, ends a round,
or flags the party to the school's leaders when nobody is left to try.

Row locks are always taken in the order step → party → message, each level by id, by every writer
(scheduler, dispatcher, escalate-now, acknowledgements, callbacks) through :func:`lock_chain`, so concurrent
workers, staff and callbacks cannot deadlock; a lock not granted within ``LOCK_TIMEOUT_MS`` is a
:class:`~api.errors.DatabaseBusy` (503 with ``Retry-After``), never a request hanging behind a worker.
"""

import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.channels.base import mask_phone as mask_e164
from api.errors import DatabaseBusy, Forbidden, Invalid, NotFound, field_error
from api.escalation import messages
from api.models.accounts import Account, Role
from api.models.children import Child
from api.models.escalation import (
    AUDIENCE_LABELS,
    CHANNEL_LABELS,
    DEFAULT_POLICY,
    LEGAL_DEADLINE_MINUTES,
    Audience,
    Channel,
    DutyContact,
    DutyContactCreate,
    DutyContactPublic,
    DutyContactUpdate,
    EscalationParty,
    EscalationPolicy,
    EscalationStep,
    EscalationTarget,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
    PartyStatus,
    PolicyPublic,
    PolicyValues,
    ReplyCode,
    StepStatus,
)
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.incidents import (
    CATEGORY_LABELS,
    SEVERITY_LABELS,
    EventKind,
    Incident,
    IncidentEvent,
    StepHold,
)
from api.models.organisations import County, School, Township
from api.phones import PhoneError, PhoneKind, normalize_phone
from api.scoping import Principal
from api.settings import Settings

WAKE_CHANNEL = "liushou_escalation"
STEP_AUDIENCES: dict[int, tuple[Audience, ...]] = {
    1: (Audience.entrusted_guardian,),
    2: (Audience.parents_away,),
    3: (Audience.county_bureau, Audience.township),
}
# Channel order per audience: elderly guardians are called first (press 1 is the surest acknowledgement),
# families in the mini-program and officials get WeChat first, SMS and voice after.
_FAMILY_ORDER = {
    Audience.entrusted_guardian: (Channel.voice, Channel.sms, Channel.wechat),
    Audience.parents_away: (Channel.wechat, Channel.sms, Channel.voice),
}
_OFFICIAL_ORDER = (Channel.wechat, Channel.sms, Channel.voice)
# Provider errors that say the address itself is unusable: later rounds skip it.
DEAD_ADDRESS_CODES = frozenset({"invalid_number", "blocked", "43101", "40003"})


def step_deadline_minutes(policy: PolicyValues, step_no: int) -> int:
    return {
        1: policy.guardian_deadline_minutes,
        2: policy.parents_deadline_minutes,
        3: policy.authorities_deadline_minutes,
    }[step_no]


# ---- the one lock order ---------------------------------------------------------------------------------

# How long a transaction of the engine waits for a row lock: the engine's own transactions are short, so a
# longer wait means something is wrong; the request answers 503 and the worker looks again shortly.
LOCK_TIMEOUT_MS = 3000
_LOCK_NOT_AVAILABLE = "55P03"


def is_lock_timeout(exc: BaseException) -> bool:
    """PostgreSQL gave up waiting for a lock (``lock_timeout``)."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE


@dataclass
class ChainLocks:
    """The rows :func:`lock_chain` locked, fresh from the database, by id."""

    steps: dict[uuid.UUID, EscalationStep]
    parties: dict[uuid.UUID, EscalationParty]
    messages: dict[uuid.UUID, OutboundMessage]


async def _lock_rows(session: AsyncSession, model: Any, ids: Collection[uuid.UUID | None]) -> dict[uuid.UUID, Any]:
    wanted = sorted({i for i in ids if i is not None})
    if not wanted:
        return {}
    rows = (
        await session.execute(
            select(model)
            .where(col(model.id).in_(wanted))
            .order_by(col(model.id))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalars()
    return {row.id: row for row in rows}


async def lock_chain(
    session: AsyncSession,
    *,
    step_ids: Collection[uuid.UUID | None] = (),
    party_ids: Collection[uuid.UUID | None] = (),
    message_ids: Collection[uuid.UUID | None] = (),
) -> ChainLocks:
    """Lock rows of the chain in the engine's one order — steps, then parties, then messages, each by id —
    and return them re-read. Every writer of these tables goes through here, and a transaction that already
    holds a lock of one level only asks for rows of the same or a later level afterwards (re-asking for a
    row it holds is free), so no two transactions can wait on each other in a cycle.

    Sets ``lock_timeout`` for the rest of the transaction; a lock not granted in time raises
    :class:`~api.errors.DatabaseBusy`.
    """
    await session.execute(sa.text(f"SET LOCAL lock_timeout = {int(LOCK_TIMEOUT_MS)}"))
    try:
        return ChainLocks(
            steps=await _lock_rows(session, EscalationStep, step_ids),
            parties=await _lock_rows(session, EscalationParty, party_ids),
            messages=await _lock_rows(session, OutboundMessage, message_ids),
        )
    except DBAPIError as exc:
        if is_lock_timeout(exc):
            raise DatabaseBusy() from None
        raise


async def lock_party(session: AsyncSession, party_id: uuid.UUID) -> tuple[EscalationStep, EscalationParty] | None:
    """Lock a party and its step (in the engine's order); ``None`` when there is no such party."""
    step_id = (
        await session.execute(select(EscalationParty.step_id).where(EscalationParty.id == party_id))
    ).scalar_one_or_none()
    if step_id is None:
        return None
    locks = await lock_chain(session, step_ids=[step_id], party_ids=[party_id])
    return locks.steps[step_id], locks.parties[party_id]


# ---- policy -------------------------------------------------------------------------------------------


def check_policy(values: PolicyValues) -> None:
    """Cross-field rules: the legal maxima, and every deadline must leave room for the minimum attempts."""
    errors = []
    for step_no in (1, 2, 3):
        minutes = step_deadline_minutes(values, step_no)
        if minutes > LEGAL_DEADLINE_MINUTES[step_no]:
            errors.append(f"第{step_no}步时限不得超过{LEGAL_DEADLINE_MINUTES[step_no]}分钟")
        needed = values.min_attempts_before_deadline * values.ack_wait_minutes
        if needed > minutes:
            errors.append(f"第{step_no}步时限{minutes}分钟不足以完成{values.min_attempts_before_deadline}次通知")
        if values.near_deadline_minutes >= minutes:
            errors.append(f"到期提醒时间须短于第{step_no}步时限")
    if errors:
        raise Invalid(
            "；".join(errors) + " (policy does not fit the deadlines)",
            code="policy_does_not_fit",
            fields=[field_error(["body"], e, "policy_does_not_fit") for e in errors],
        )


def _policy_values(row: EscalationPolicy | None) -> PolicyValues:
    if row is None:
        return DEFAULT_POLICY
    return PolicyValues.model_validate(row, from_attributes=True)


async def effective_policy(session: AsyncSession, county_id: uuid.UUID) -> tuple[PolicyValues, EscalationPolicy | None]:
    row = (
        await session.execute(select(EscalationPolicy).where(EscalationPolicy.county_id == county_id))
    ).scalar_one_or_none()
    return _policy_values(row), row


async def _county(session: AsyncSession, county_id: uuid.UUID) -> County:
    county = await session.get(County, county_id)
    if county is None:
        raise NotFound("县不存在 (county not found)", code="county_not_found")
    return county


def _policy_public(county_id: uuid.UUID, row: EscalationPolicy | None) -> PolicyPublic:
    return PolicyPublic(
        **_policy_values(row).model_dump(),
        county_id=county_id,
        is_default=row is None,
        updated_at=row.updated_at if row else None,
        updated_by_id=row.updated_by_id if row else None,
    )


async def get_policy(session: AsyncSession, *, county_id: uuid.UUID) -> PolicyPublic:
    """The county's chain policy (the defaults when it never set one)."""
    await _county(session, county_id)
    _, row = await effective_policy(session, county_id)
    return _policy_public(county_id, row)


async def put_policy(
    session: AsyncSession, principal: Principal, *, county_id: uuid.UUID, data: PolicyValues, now: datetime
) -> PolicyPublic:
    """Set the county's policy. Incidents already reported keep the policy frozen onto them."""
    await _county(session, county_id)
    if principal.role == Role.county_bureau and principal.county_id != county_id:
        raise NotFound("县不存在 (county not found)", code="county_not_found")
    check_policy(data)
    _, row = await effective_policy(session, county_id)
    if row is None:
        row = EscalationPolicy(county_id=county_id, updated_at=now, updated_by_id=principal.account_id)
        session.add(row)
    for key, value in data.model_dump().items():
        setattr(row, key, value)
    row.updated_at = now
    row.updated_by_id = principal.account_id
    await session.flush()
    return _policy_public(county_id, row)


# ---- duty contacts (值班) -------------------------------------------------------------------------------


def _normalized_phone(raw: str | None, loc: str = "phone") -> str | None:
    if raw is None:
        return None
    try:
        return normalize_phone(raw).normalized
    except PhoneError as exc:
        raise Invalid(
            exc.message_zh, code=exc.code, fields=[field_error(["body", loc], exc.message_zh, exc.code)]
        ) from None


async def _check_duty_account(session: AsyncSession, account_id: uuid.UUID | None, county_id: uuid.UUID) -> None:
    if account_id is None:
        return
    account = await session.get(Account, account_id)
    if account is None or account.county_id != county_id:
        raise Invalid("值班账号不存在或不属于本县 (account not in this county)", code="duty_account_invalid")


def duty_contact_public(row: DutyContact) -> DutyContactPublic:
    return DutyContactPublic.model_validate(row, from_attributes=True)


async def list_duty_contacts(
    session: AsyncSession, *, county_id: uuid.UUID, township_id: uuid.UUID | None, include_inactive: bool
) -> list[DutyContactPublic]:
    await _county(session, county_id)
    stmt = select(DutyContact).where(DutyContact.county_id == county_id)
    if township_id is not None:
        stmt = stmt.where(DutyContact.township_id == township_id)
    if not include_inactive:
        stmt = stmt.where(col(DutyContact.is_active))
    stmt = stmt.order_by(
        col(DutyContact.township_id).nulls_first(), col(DutyContact.position), col(DutyContact.created_at)
    )
    return [duty_contact_public(r) for r in (await session.execute(stmt)).scalars()]


def _may_manage_duty(principal: Principal, county_id: uuid.UUID, township_id: uuid.UUID | None) -> bool:
    if principal.role == Role.platform_admin:
        return True
    if principal.role == Role.county_bureau:
        return principal.county_id == county_id
    if principal.role == Role.township_official:
        return township_id is not None and principal.township_id == township_id
    return False


async def create_duty_contact(
    session: AsyncSession, principal: Principal, *, county_id: uuid.UUID, data: DutyContactCreate, now: datetime
) -> DutyContact:
    """Add a duty contact for the county bureau (no township) or a township of the county."""
    await _county(session, county_id)
    if data.township_id is not None:
        township = await session.get(Township, data.township_id)
        if township is None or township.county_id != county_id:
            raise NotFound("乡镇不存在 (township not found)", code="township_not_found")
    if not _may_manage_duty(principal, county_id, data.township_id):
        raise Forbidden("只能维护本县/本乡镇的值班联系人 (not your duty roster)", code="duty_contact_forbidden")
    if data.phone is None and data.account_id is None:
        raise Invalid("值班联系人需要电话或账号 (a phone or an account is required)", code="duty_contact_unreachable")
    await _check_duty_account(session, data.account_id, county_id)
    row = DutyContact(
        county_id=county_id,
        township_id=data.township_id,
        name=data.name,
        phone=_normalized_phone(data.phone),
        account_id=data.account_id,
        position=data.position,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def update_duty_contact(
    session: AsyncSession, principal: Principal, *, contact_id: uuid.UUID, data: DutyContactUpdate, now: datetime
) -> DutyContact:
    row = await session.get(DutyContact, contact_id)
    if row is None:
        raise NotFound("值班联系人不存在 (duty contact not found)", code="duty_contact_not_found")
    if not _may_manage_duty(principal, row.county_id, row.township_id):
        raise Forbidden("只能维护本县/本乡镇的值班联系人 (not your duty roster)", code="duty_contact_forbidden")
    changes = data.model_dump(exclude_unset=True)
    if "phone" in changes:
        changes["phone"] = _normalized_phone(changes["phone"])
    if "account_id" in changes:
        await _check_duty_account(session, changes["account_id"], row.county_id)
    for key, value in changes.items():
        if key in ("name", "position", "is_active") and value is None:
            continue
        setattr(row, key, value)
    if row.phone is None and row.account_id is None:
        raise Invalid("值班联系人需要电话或账号 (a phone or an account is required)", code="duty_contact_unreachable")
    row.updated_at = now
    await session.flush()
    return row


# ---- contact resolution ------------------------------------------------------------------------------


@dataclass
class ContactPlan:
    """One person (or duty room) a party may be told through, and the ways to reach them, in order."""

    label: str
    name: str | None
    guardian_id: uuid.UUID | None = None
    duty_contact_id: uuid.UUID | None = None
    account_id: uuid.UUID | None = None
    ways: list[tuple[Channel, str]] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)


def _phone_ways(raw: str | None, order: Sequence[Channel], plan: ContactPlan) -> dict[Channel, str]:
    """E.164 addresses per channel for one number: SMS only to mobiles, voice to any."""
    if not raw:
        return {}
    try:
        phone = normalize_phone(raw)
    except PhoneError:
        plan.unusable.append("phone_format")
        return {}
    ways = {Channel.voice: phone.e164}
    if phone.kind == PhoneKind.mobile:
        ways[Channel.sms] = phone.e164
    return {c: ways[c] for c in order if c in ways}


def _ways(
    plan: ContactPlan, order: Sequence[Channel], *, openid: str | None, phone: str | None, phone_alt: str | None
) -> None:
    first = _phone_ways(phone, order, plan)
    alt = _phone_ways(phone_alt, order, plan)
    for channel in order:
        if channel == Channel.wechat and openid:
            plan.ways.append((Channel.wechat, openid))
        elif channel in first:
            plan.ways.append((channel, first[channel]))
    plan.ways.extend((c, a) for c, a in alt.items())


async def _family_contacts(session: AsyncSession, child_id: uuid.UUID) -> dict[Audience, list[ContactPlan]]:
    """Step 1 and step 2's people from the child's contact card, in its call order (one query for both)."""
    rows = (
        await session.execute(
            select(ChildGuardian, Guardian, Account)
            .join(Guardian, col(Guardian.id) == ChildGuardian.guardian_id)
            .outerjoin(
                Account,
                sa.and_(
                    col(Account.id) == Guardian.account_id,
                    col(Account.is_active),
                    col(Account.role) == Role.family,
                ),
            )
            .where(
                ChildGuardian.child_id == child_id,
                col(ChildGuardian.is_active),
                col(ChildGuardian.role).in_(
                    [GuardianRole.entrusted_guardian, GuardianRole.parent_home, GuardianRole.parent_away]
                ),
            )
            .order_by(col(ChildGuardian.contact_order), col(ChildGuardian.created_at))
        )
    ).all()

    def plans(audience: Audience, role: GuardianRole) -> list[ContactPlan]:
        found = []
        for link, guardian, account in rows:
            if link.role != role:
                continue
            plan = ContactPlan(
                label=link.relation,
                name=guardian.name,
                guardian_id=guardian.id,
                account_id=account.id if account else None,
            )
            _ways(
                plan,
                _FAMILY_ORDER[audience],
                openid=account.wechat_openid if account else None,
                phone=guardian.phone,
                phone_alt=guardian.phone_alt,
            )
            found.append(plan)
        return found

    # A child whose parents are at home has them as guardians: they are step 1's audience then.
    guardians = plans(Audience.entrusted_guardian, GuardianRole.entrusted_guardian) or plans(
        Audience.entrusted_guardian, GuardianRole.parent_home
    )
    return {
        Audience.entrusted_guardian: guardians,
        Audience.parents_away: plans(Audience.parents_away, GuardianRole.parent_away),
    }


async def _official_contacts(session: AsyncSession, incident: Incident) -> dict[Audience, list[ContactPlan]]:
    """Duty contacts of the county bureau and of the township (one query for both); where there is none,
    the accounts of that role there."""
    rows = (
        await session.execute(
            select(DutyContact, Account)
            .outerjoin(Account, sa.and_(col(Account.id) == DutyContact.account_id, col(Account.is_active)))
            .where(
                sa.or_(
                    sa.and_(col(DutyContact.county_id) == incident.county_id, col(DutyContact.township_id).is_(None)),
                    col(DutyContact.township_id) == incident.township_id,
                ),
                col(DutyContact.is_active),
            )
            .order_by(col(DutyContact.position), col(DutyContact.created_at))
        )
    ).all()
    found: dict[Audience, list[ContactPlan]] = {Audience.county_bureau: [], Audience.township: []}
    for duty, account in rows:
        plan = ContactPlan(
            label=duty.name,
            name=account.display_name if account else None,
            duty_contact_id=duty.id,
            account_id=account.id if account else None,
        )
        _ways(
            plan,
            _OFFICIAL_ORDER,
            openid=account.wechat_openid if account else None,
            phone=duty.phone or (account.phone if account else None),
            phone_alt=None,
        )
        found[Audience.county_bureau if duty.township_id is None else Audience.township].append(plan)
    for audience, role_where in (
        (Audience.county_bureau, [Account.role == Role.county_bureau, Account.county_id == incident.county_id]),
        (Audience.township, [Account.role == Role.township_official, Account.township_id == incident.township_id]),
    ):
        if found[audience]:
            continue
        accounts = (
            await session.execute(
                select(Account).where(*role_where, col(Account.is_active)).order_by(col(Account.created_at))
            )
        ).scalars()
        for account in accounts:
            plan = ContactPlan(label=account.display_name, name=None, account_id=account.id)
            _ways(plan, _OFFICIAL_ORDER, openid=account.wechat_openid, phone=account.phone, phone_alt=None)
            found[audience].append(plan)
    return found


async def resolve_contacts(session: AsyncSession, incident: Incident) -> dict[Audience, list[ContactPlan]]:
    """Whom each party is told through, in the order of the contact card / duty roster."""
    return {**await _family_contacts(session, incident.child_id), **await _official_contacts(session, incident)}


def add_targets(
    session: AsyncSession,
    party: EscalationParty,
    plans: Sequence[ContactPlan],
    *,
    first_seq: int,
    first_contact_no: int,
    now: datetime,
    added_by_id: uuid.UUID | None = None,
    known: set[tuple[Channel, str]] | None = None,
) -> list[EscalationTarget]:
    """Rows for each way to reach each contact; an address already in the party is not tried twice."""
    seen = set(known or ())
    targets = []
    seq = first_seq
    for number, plan in enumerate(plans, start=first_contact_no):
        for channel, address in plan.ways:
            if (channel, address) in seen:
                continue
            seen.add((channel, address))
            targets.append(
                EscalationTarget(
                    incident_id=party.incident_id,
                    party_id=party.id,
                    seq=seq,
                    contact_no=number,
                    contact_label=plan.label[:64],
                    contact_name=plan.name,
                    guardian_id=plan.guardian_id,
                    duty_contact_id=plan.duty_contact_id,
                    account_id=plan.account_id,
                    channel=channel,
                    address=address,
                    added_by_id=added_by_id,
                    created_at=now,
                )
            )
            seq += 1
    session.add_all(targets)
    return targets


# ---- events ------------------------------------------------------------------------------------------


def record_event(
    session: AsyncSession,
    incident_id: uuid.UUID,
    kind: EventKind,
    *,
    at: datetime,
    step_no: int | None = None,
    party_id: uuid.UUID | None = None,
    message_id: uuid.UUID | None = None,
    channel: Channel | None = None,
    actor_account_id: uuid.UUID | None = None,
    **detail: Any,
) -> None:
    """Append a line to the incident's timeline."""
    session.add(
        IncidentEvent(
            incident_id=incident_id,
            at=at,
            kind=kind,
            step_no=step_no,
            party_id=party_id,
            message_id=message_id,
            channel=channel,
            actor_account_id=actor_account_id,
            detail={k: v for k, v in detail.items() if v is not None},
        )
    )


def masked_address(channel: Channel, address: str) -> str:
    return "微信" if channel == Channel.wechat else mask_e164(address)


def target_detail(target: EscalationTarget) -> dict[str, Any]:
    return {
        "contact": target.contact_label,
        "name": target.contact_name,
        "address": masked_address(target.channel, target.address),
        "channel_label": CHANNEL_LABELS[target.channel],
    }


async def wake_workers(session: AsyncSession) -> None:
    """Wake idle workers when the transaction commits (PostgreSQL delivers NOTIFY on commit)."""
    await session.execute(sa.select(sa.func.pg_notify(WAKE_CHANNEL, "")))


# ---- messages ----------------------------------------------------------------------------------------


async def case_facts(session: AsyncSession, incident: Incident) -> messages.CaseFacts:
    cache: dict[uuid.UUID, messages.CaseFacts] = session.info.setdefault("liushou_case_facts", {})
    if incident.id in cache:
        return cache[incident.id]
    school = await session.get(School, incident.school_id)
    child = await session.get(Child, incident.child_id)
    assert school is not None and child is not None
    # The school's duty phone; a school without one: the reporter's phone, else a school admin's.
    phone = (
        school.duty_phone
        or (
            await session.execute(
                select(Account.phone)
                .where(
                    col(Account.phone).is_not(None),
                    col(Account.is_active),
                    sa.or_(
                        col(Account.id) == incident.reported_by_id,
                        sa.and_(col(Account.school_id) == incident.school_id, col(Account.role) == Role.school_admin),
                    ),
                )
                .order_by((col(Account.id) == incident.reported_by_id).desc(), col(Account.created_at))
                .limit(1)
            )
        ).scalar_one_or_none()
    )
    facts = messages.CaseFacts(
        incident_id=incident.id,
        case_code=incident.case_code,
        school_name=school.name,
        school_phone=phone,
        child_name=child.name,
        category_label=CATEGORY_LABELS[incident.category],
        severity_label=SEVERITY_LABELS[incident.severity],
        occurred_at=incident.occurred_at,
    )
    cache[incident.id] = facts
    return facts


def _message(
    incident: Incident,
    *,
    purpose: MessagePurpose,
    channel: Channel,
    address: str,
    recipient_label: str,
    rendered_for: Callable[..., messages.Rendered],
    now: datetime,
    ack_wait_seconds: int,
    party_id: uuid.UUID | None = None,
    target_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    round_: int = 1,
    reply_code: str | None = None,
    settings: Settings,
) -> OutboundMessage:
    message_id = uuid.uuid4()
    token = messages.ack_token(settings.ack_link_keys, message_id)
    link = f"{settings.public_base_url.rstrip('/')}/ack/{token}"
    rendered: messages.Rendered = rendered_for(link=link, reply_code=reply_code or "", token=token)
    policy = incident.policy
    return OutboundMessage(
        id=message_id,
        incident_id=incident.id,
        party_id=party_id,
        target_id=target_id,
        account_id=account_id,
        purpose=purpose,
        channel=channel,
        address=address,
        recipient_label=recipient_label[:128],
        round=round_,
        status=MessageStatus.pending,
        idempotency_key=f"liushou-{message_id.hex}",
        body=rendered.body,
        template_data=rendered.template_data,
        wechat_page=rendered.wechat_page,
        reply_code=reply_code,
        max_attempts=int(policy["max_send_attempts"]),
        retry_backoff_seconds=int(policy["retry_backoff_seconds"]),
        ack_wait_seconds=ack_wait_seconds,
        next_attempt_at=now,
        created_at=now,
    )


# Draws of one length before trying a longer code (a number with that many open parties is a duty phone).
_REPLY_CODE_DRAWS = 8


async def reserve_reply_code(
    session: AsyncSession,
    *,
    incident_id: uuid.UUID,
    party_id: uuid.UUID,
    address: str,
    now: datetime,
    new_party: bool = False,
) -> str:
    """The SMS reply code of a party on a number: the one it already holds there, else a fresh one that no
    other open party of the number holds.

    The partial unique index on open codes decides, not a read beforehand: a concurrent report that drew the
    same code waits for ours to commit, finds the conflict and draws again. After a few collisions in a row
    (the number has thousands of open parties) the code gets two digits longer.

    ``new_party``: the party was written moments ago in this transaction (the report freezing its chain), so
    it holds no code yet and needs no flush before one refers to it."""
    if not new_party:
        held = (
            await session.execute(
                select(ReplyCode.code).where(
                    ReplyCode.party_id == party_id, ReplyCode.address == address, col(ReplyCode.released_at).is_(None)
                )
            )
        ).first()
        if held is not None:
            return held[0]
        await session.flush()  # the party the code refers to
    for digits in range(messages.REPLY_CODE_DIGITS, messages.REPLY_CODE_MAX_DIGITS + 1, 2):
        for _ in range(_REPLY_CODE_DRAWS):
            code = messages.new_reply_code(digits)
            inserted = await session.execute(
                pg_insert(ReplyCode)
                .values(
                    id=uuid.uuid4(),
                    incident_id=incident_id,
                    party_id=party_id,
                    address=address,
                    code=code,
                    created_at=now,
                )
                .on_conflict_do_nothing(
                    index_elements=["address", "code"], index_where=col(ReplyCode.released_at).is_(None)
                )
                .returning(col(ReplyCode.code))
            )
            if inserted.first() is not None:
                return code
    raise RuntimeError("no free SMS reply code for this number")  # 8 digits: 90 million open parties


async def release_reply_codes(
    session: AsyncSession, *, now: datetime, party_id: uuid.UUID | None = None, incident_id: uuid.UUID | None = None
) -> None:
    """A told party (or a closed incident) no longer answers to its codes: they are free for others, and a
    reply quoting one is no longer matched to it."""
    where = col(ReplyCode.party_id) == party_id if party_id is not None else col(ReplyCode.incident_id) == incident_id
    await session.execute(
        sa.update(ReplyCode)
        .where(where, col(ReplyCode.released_at).is_(None))
        .values(released_at=now)
        .execution_options(synchronize_session=False)
    )


async def queue_notification(
    session: AsyncSession,
    incident: Incident,
    step: EscalationStep,
    party: EscalationParty,
    target: EscalationTarget,
    *,
    settings: Settings,
    now: datetime,
    reason: str,
    new_party: bool = False,
) -> OutboundMessage:
    """Queue one notification to one target; the dispatcher sends it. (``new_party``: see
    :func:`reserve_reply_code`.)"""
    facts = await case_facts(session, incident)
    reply_code = None
    if target.channel == Channel.sms:
        reply_code = await reserve_reply_code(
            session, incident_id=incident.id, party_id=party.id, address=target.address, now=now, new_party=new_party
        )

    def render(*, link: str, reply_code: str, token: str) -> messages.Rendered:
        return messages.notification(
            facts, audience=party.audience, channel=target.channel, link=link, reply_code=reply_code, token=token
        )

    message = _message(
        incident,
        purpose=MessagePurpose.notify,
        channel=target.channel,
        address=target.address,
        recipient_label=f"{target.contact_label} {target.contact_name or ''}".strip(),
        rendered_for=render,
        now=now,
        ack_wait_seconds=step.ack_wait_seconds,
        party_id=party.id,
        target_id=target.id,
        account_id=target.account_id,
        round_=party.round,
        reply_code=reply_code,
        settings=settings,
    )
    session.add(message)
    record_event(
        session,
        incident.id,
        EventKind.message_queued,
        at=now,
        step_no=step.step_no,
        party_id=party.id,
        message_id=message.id,
        channel=target.channel,
        audience=party.audience.value,
        round=party.round,
        reason=reason,
        **target_detail(target),
    )
    return message


async def alert_leaders(
    session: AsyncSession,
    incident: Incident,
    step: EscalationStep,
    *,
    reason: str,
    party: EscalationParty | None,
    settings: Settings,
    now: datetime,
) -> int:
    """Alert the school's leaders (its active school admins) by WeChat and SMS; returns messages queued."""
    leaders = (
        await session.execute(
            select(Account)
            .where(
                Account.school_id == incident.school_id,
                Account.role == Role.school_admin,
                col(Account.is_active),
            )
            .order_by(col(Account.created_at))
        )
    ).scalars()
    facts = await case_facts(session, incident)
    queued: list[OutboundMessage] = []
    names = []
    for leader in leaders:
        ways: list[tuple[Channel, str]] = []
        if leader.wechat_openid:
            ways.append((Channel.wechat, leader.wechat_openid))
        if leader.phone:
            try:
                phone = normalize_phone(leader.phone)
            except PhoneError:
                phone = None
            if phone is not None and phone.kind == PhoneKind.mobile:
                ways.append((Channel.sms, phone.e164))
        if ways:
            names.append(leader.display_name)
        for channel, address in ways:

            def render(*, link: str, reply_code: str, token: str, channel: Channel = channel) -> messages.Rendered:
                return messages.leader_alert(
                    facts,
                    channel=channel,
                    reason=reason,
                    step_no=step.step_no,
                    audience=party.audience if party else None,
                    deadline_at=step.deadline_at,
                )

            queued.append(
                _message(
                    incident,
                    purpose=MessagePurpose.leader_alert,
                    channel=channel,
                    address=address,
                    recipient_label=f"校领导 {leader.display_name}",
                    rendered_for=render,
                    now=now,
                    ack_wait_seconds=0,
                    party_id=party.id if party else None,
                    account_id=leader.id,
                    settings=settings,
                )
            )
    session.add_all(queued)
    record_event(
        session,
        incident.id,
        EventKind.leaders_alerted if queued else EventKind.leaders_unreachable,
        at=now,
        step_no=step.step_no,
        party_id=party.id if party else None,
        reason=reason,
        reason_label=messages.LEADER_REASONS[reason],
        leaders=names,
        messages=len(queued),
    )
    return len(queued)


# ---- moving a party along ----------------------------------------------------------------------------


async def _next_target(session: AsyncSession, party: EscalationParty) -> EscalationTarget | None:
    return (
        await session.execute(
            select(EscalationTarget)
            .where(
                EscalationTarget.party_id == party.id,
                col(EscalationTarget.seq) > party.cursor,
                col(EscalationTarget.dead_at).is_(None),
            )
            .order_by(col(EscalationTarget.seq))
            .limit(1)
        )
    ).scalar_one_or_none()


async def _has_live_target(session: AsyncSession, party: EscalationParty) -> bool:
    found = await session.execute(
        select(EscalationTarget.id)
        .where(EscalationTarget.party_id == party.id, col(EscalationTarget.dead_at).is_(None))
        .limit(1)
    )
    return found.first() is not None


async def flag_party(
    session: AsyncSession,
    party: EscalationParty,
    status: PartyStatus,
    *,
    settings: Settings,
    now: datetime,
) -> None:
    """Nobody left to try: stop waiting and tell the school's leaders at once."""
    step = await session.get(EscalationStep, party.step_id)
    incident = await session.get(Incident, party.incident_id)
    assert step is not None and incident is not None
    party.status = status
    party.next_check_at = None
    party.current_message_id = None
    party.flagged_at = now
    kind = EventKind.party_unreachable if status == PartyStatus.unreachable else EventKind.party_exhausted
    record_event(
        session,
        incident.id,
        kind,
        at=now,
        step_no=step.step_no,
        party_id=party.id,
        audience=party.audience.value,
        audience_label=AUDIENCE_LABELS[party.audience],
        rounds=party.round,
    )
    await alert_leaders(session, incident, step, reason=status.value, party=party, settings=settings, now=now)


async def advance_party(
    session: AsyncSession,
    party: EscalationParty,
    *,
    settings: Settings,
    now: datetime,
    reason: str,
    targets: Sequence[EscalationTarget] | None = None,
) -> OutboundMessage | None:
    """Queue the party's next target; at the end of the list start another round after a pause, or flag
    the party when no usable target is left or the rounds are used up. The caller holds the party's lock.
    ``targets``: all of the party's targets when the caller has them (at the report), saving the queries."""
    step = await session.get(EscalationStep, party.step_id)
    incident = await session.get(Incident, party.incident_id)
    assert step is not None and incident is not None
    if targets is None:
        target = await _next_target(session, party)
    else:
        target = next((t for t in targets if t.seq > party.cursor and t.dead_at is None), None)
    if target is not None:
        message = await queue_notification(
            session, incident, step, party, target, settings=settings, now=now, reason=reason,
            new_party=targets is not None and party.cursor == 0 and party.round == 1,
        )  # fmt: skip
        party.cursor = target.seq
        party.current_message_id = message.id
        # A safety net: the dispatcher and callbacks nudge the party sooner when something happens.
        party.next_check_at = now + timedelta(seconds=step.ack_wait_seconds)
        return message
    party.current_message_id = None
    live = any(t.dead_at is None for t in targets) if targets is not None else await _has_live_target(session, party)
    if not live:
        await flag_party(session, party, PartyStatus.unreachable, settings=settings, now=now)
    elif party.round >= step.max_rounds:
        await flag_party(session, party, PartyStatus.exhausted, settings=settings, now=now)
    else:
        party.round += 1
        party.cursor = 0
        party.next_check_at = now + timedelta(seconds=step.round_pause_seconds)
        record_event(
            session,
            incident.id,
            EventKind.round_finished,
            at=now,
            step_no=step.step_no,
            party_id=party.id,
            next_round=party.round,
            next_round_at=party.next_check_at.isoformat(),
        )
    return None


async def rearm_party(
    session: AsyncSession, party: EscalationParty, *, settings: Settings, now: datetime, reason: str
) -> OutboundMessage | None:
    """A staff member asked to try again (escalate now, a new contact): fresh rounds, starting now."""
    if party.status in (PartyStatus.unreachable, PartyStatus.exhausted):
        party.status = PartyStatus.notifying
        party.round = 1
        party.cursor = 0
    return await advance_party(session, party, settings=settings, now=now, reason=reason)


async def check_party(session: AsyncSession, party: EscalationParty, *, settings: Settings, now: datetime) -> None:
    """The scheduler's look at a notifying party: wait, or move on to the next channel / contact.
    The caller holds the party's lock (and its step's); the message it waits on is locked here."""
    if party.status != PartyStatus.notifying:
        party.next_check_at = None
        return
    if party.current_message_id is None:
        await advance_party(session, party, settings=settings, now=now, reason="next_round")
        return
    message = (await lock_chain(session, message_ids=[party.current_message_id])).messages.get(party.current_message_id)
    step = await session.get(EscalationStep, party.step_id)
    assert message is not None and step is not None
    wait = timedelta(seconds=step.ack_wait_seconds)
    if message.status in (MessageStatus.pending, MessageStatus.sending):
        party.next_check_at = max(message.next_attempt_at, now) + wait
        return
    if message.status in (MessageStatus.failed, MessageStatus.cancelled, MessageStatus.unconfirmed):
        await advance_party(session, party, settings=settings, now=now, reason="previous_failed")
        return
    if message.finished_at is not None:
        await advance_party(session, party, settings=settings, now=now, reason="call_ended_without_ack")
        return
    if message.ack_wait_until is None:
        # Whichever of the send's answer and the receipt came first sets it; should neither have (an older
        # row), anchor it once to what is stored, never to "now" again on every look.
        known = [t for t in (message.sent_at, message.delivered_at) if t is not None]
        message.ack_wait_until = min(known, default=now) + timedelta(seconds=message.ack_wait_seconds)
    wait_until = message.ack_wait_until
    if now < wait_until:
        party.next_check_at = wait_until
        return
    record_event(
        session,
        party.incident_id,
        EventKind.no_ack_within_wait,
        at=now,
        step_no=step.step_no,
        party_id=party.id,
        message_id=message.id,
        channel=message.channel,
        waited_seconds=step.ack_wait_seconds,
    )
    await advance_party(session, party, settings=settings, now=now, reason="no_ack_within_wait")


async def lock_parties(session: AsyncSession, step_id: uuid.UUID) -> list[EscalationParty]:
    """Lock the parties of a step whose lock the caller holds (by id, through :func:`lock_chain`)."""
    ids = (await session.execute(select(EscalationParty.id).where(EscalationParty.step_id == step_id))).scalars()
    return list((await lock_chain(session, party_ids=list(ids))).parties.values())


async def start_step(session: AsyncSession, step: EscalationStep, *, settings: Settings, now: datetime) -> None:
    """Start sending for a step (its hold is over, or a staff member escalated it). Holds the step's lock."""
    step.status = StepStatus.notifying
    step.started_at = now
    record_event(session, step.incident_id, EventKind.step_started, at=now, step_no=step.step_no)
    for party in await lock_parties(session, step.id):
        if party.status == PartyStatus.held:
            party.status = PartyStatus.notifying
            await advance_party(session, party, settings=settings, now=now, reason="step_started")


def next_step_check(step: EscalationStep) -> datetime | None:
    """When the step needs the scheduler again: end of hold, near-deadline alert, deadline; none once told."""
    if step.status == StepStatus.told:
        return None
    moments = []
    if step.status == StepStatus.held and step.hold_until is not None:
        moments.append(step.hold_until)
    if step.breached_at is None:
        moments.append(step.deadline_at)
        if step.near_alerted_at is None:
            near = step.deadline_at - timedelta(seconds=step.near_margin_seconds)
            moments.append(near)
    return min(moments) if moments else None


async def check_step(session: AsyncSession, step: EscalationStep, *, settings: Settings, now: datetime) -> None:
    """The scheduler's look at a step: end its hold, alert near the deadline, record a missed deadline."""
    incident = await session.get(Incident, step.incident_id)
    assert incident is not None
    if step.status == StepStatus.held and step.hold_until is not None and step.hold_until <= now:
        await start_step(session, step, settings=settings, now=now)
    if step.status != StepStatus.told:
        if step.breached_at is None and now >= step.deadline_at:
            step.breached_at = now
            late = int((now - step.deadline_at).total_seconds())
            record_event(
                session,
                incident.id,
                EventKind.breach,
                at=now,
                step_no=step.step_no,
                deadline_at=step.deadline_at.isoformat(),
                seconds_past_deadline=late,
                late_report=incident.reported_at > step.deadline_at or None,
            )
            await alert_leaders(session, incident, step, reason="breach", party=None, settings=settings, now=now)
        elif (
            step.breached_at is None
            and step.near_alerted_at is None
            and now >= step.deadline_at - timedelta(seconds=step.near_margin_seconds)
        ):
            step.near_alerted_at = now
            record_event(
                session,
                incident.id,
                EventKind.near_deadline,
                at=now,
                step_no=step.step_no,
                deadline_at=step.deadline_at.isoformat(),
                seconds_left=int((step.deadline_at - now).total_seconds()),
            )
            await alert_leaders(session, incident, step, reason="near_deadline", party=None, settings=settings, now=now)
    step.next_check_at = next_step_check(step)


# ---- freezing the chain at the report ------------------------------------------------------------------


def plan_steps(
    policy: PolicyValues, *, occurred_at: datetime, reported_at: datetime, holds: Sequence[StepHold]
) -> list[tuple[int, datetime, datetime | None]]:
    """(step_no, deadline_at, hold_until) for each step; refuses a hold that would not leave room for
    ``min_attempts_before_deadline`` acknowledgement waits before the deadline."""
    by_step: dict[int, int] = {}
    for i, hold in enumerate(holds):
        if hold.step_no in by_step:
            raise Invalid(
                "同一步骤只能暂缓一次 (one hold per step)",
                code="hold_duplicate",
                fields=[field_error(["body", "holds", i], "重复的步骤", "hold_duplicate")],
            )
        by_step[hold.step_no] = hold.minutes
    plan = []
    for step_no in (1, 2, 3):
        deadline_at = occurred_at + timedelta(minutes=step_deadline_minutes(policy, step_no))
        hold_until = None
        minutes = by_step.get(step_no)
        if minutes is not None:
            loc: list[str | int] = ["body", "holds", [h.step_no for h in holds].index(step_no)]
            if minutes > policy.max_hold_minutes:
                raise Invalid(
                    f"第{step_no}步最多暂缓{policy.max_hold_minutes}分钟 (hold longer than the county allows)",
                    code="hold_exceeds_policy",
                    fields=[field_error(loc, f"最多{policy.max_hold_minutes}分钟", "hold_exceeds_policy")],
                )
            hold_until = reported_at + timedelta(minutes=minutes)
            needed = timedelta(minutes=policy.min_attempts_before_deadline * policy.ack_wait_minutes)
            if hold_until + needed > deadline_at:
                latest = max(0, int((deadline_at - needed - reported_at).total_seconds() // 60))
                raise Invalid(
                    f"第{step_no}步暂缓后来不及在时限前完成通知和重试，最多可暂缓{latest}分钟"
                    " (the hold leaves too little time before the deadline)",
                    code="hold_too_long",
                    fields=[field_error(loc, f"最多可暂缓{latest}分钟", "hold_too_long")],
                )
        plan.append((step_no, deadline_at, hold_until))
    return plan


@dataclass(frozen=True)
class FrozenChain:
    """What :func:`freeze_chain` wrote: the steps in order, their parties, and every party's targets."""

    steps: list[EscalationStep]
    parties: list[EscalationParty]
    targets: list[EscalationTarget]


async def freeze_chain(
    session: AsyncSession,
    incident: Incident,
    *,
    policy: PolicyValues,
    holds: Sequence[StepHold],
    settings: Settings,
    now: datetime,
) -> FrozenChain:
    """Create the incident's steps, parties and targets, and start every step that is not held."""
    steps: list[EscalationStep] = []
    parties: list[tuple[EscalationStep, EscalationParty]] = []
    frozen: list[dict[str, Any]] = []
    for step_no, deadline_at, hold_until in plan_steps(
        policy, occurred_at=incident.occurred_at, reported_at=now, holds=holds
    ):
        held = hold_until is not None
        step = EscalationStep(
            incident_id=incident.id,
            step_no=step_no,
            deadline_minutes=step_deadline_minutes(policy, step_no),
            deadline_at=deadline_at,
            hold_until=hold_until,
            starts_at=hold_until or now,
            status=StepStatus.held if held else StepStatus.notifying,
            started_at=None if held else now,
            ack_wait_seconds=policy.ack_wait_minutes * 60,
            near_margin_seconds=policy.near_deadline_minutes * 60,
            max_rounds=policy.max_rounds,
            round_pause_seconds=policy.round_pause_minutes * 60,
        )
        steps.append(step)
        for audience in STEP_AUDIENCES[step_no]:
            party = EscalationParty(
                incident_id=incident.id,
                step_id=step.id,
                audience=audience,
                status=PartyStatus.held if held else PartyStatus.notifying,
            )
            parties.append((step, party))
    # No ORM relationships between these tables, so the flush order is ours: steps, parties, targets, then
    # messages and events. Autoflush is off so that each table is one multi-row INSERT, not one per query.
    with session.no_autoflush:
        session.add_all(steps)
        await session.flush()
        session.add_all([p for _, p in parties])
        await session.flush()
        party_targets: dict[uuid.UUID, list[EscalationTarget]] = {}
        contacts = await resolve_contacts(session, incident)
        for step, party in parties:
            plans = contacts[party.audience]
            targets = add_targets(session, party, plans, first_seq=1, first_contact_no=1, now=now)
            party_targets[party.id] = targets
            frozen.append(
                {
                    "step_no": step.step_no,
                    "audience": party.audience.value,
                    "contacts": [
                        {
                            "label": p.label,
                            "name": p.name,
                            "channels": [c.value for c, _ in p.ways],
                            "unusable": p.unusable,
                        }
                        for p in plans
                    ],
                    "targets": len(targets),
                }
            )
        await session.flush()
        record_event(session, incident.id, EventKind.chain_frozen, at=now, parties=frozen, policy=incident.policy)
        for step in steps:
            if step.status == StepStatus.held:
                record_event(
                    session,
                    incident.id,
                    EventKind.step_held,
                    at=now,
                    step_no=step.step_no,
                    hold_until=step.hold_until.isoformat() if step.hold_until else None,
                )
            else:
                record_event(session, incident.id, EventKind.step_started, at=now, step_no=step.step_no)
        for _, party in parties:
            if party.status == PartyStatus.notifying:
                await advance_party(
                    session, party, settings=settings, now=now, reason="reported", targets=party_targets[party.id]
                )
        for step in steps:
            await check_step(session, step, settings=settings, now=now)
        await session.flush()
    return FrozenChain(
        steps=steps,
        parties=[party for _, party in parties],
        targets=[target for targets in party_targets.values() for target in targets],
    )


def snapshot_policy(policy: PolicyValues, row: EscalationPolicy | None) -> dict[str, Any]:
    return {**policy.model_dump(), "policy_id": str(row.id) if row else None, "is_default": row is None}


def deadline_met(step: EscalationStep) -> bool | None:
    if step.told_at is not None:
        return step.told_at <= step.deadline_at
    return False if step.breached_at is not None else None


async def cancel_pending(session: AsyncSession, party: EscalationParty, *, now: datetime) -> int:
    """Messages of a told party that have not gone out yet are not needed any more."""
    result = await session.execute(
        sa.update(OutboundMessage)
        .where(
            col(OutboundMessage.party_id) == party.id,
            col(OutboundMessage.status) == MessageStatus.pending,
            col(OutboundMessage.purpose) == MessagePurpose.notify,
        )
        .values(status=MessageStatus.cancelled, failed_at=now)
        .returning(col(OutboundMessage.id), col(OutboundMessage.channel))
        .execution_options(synchronize_session=False)
    )
    cancelled = result.all()
    for message_id, channel in cancelled:
        record_event(
            session,
            party.incident_id,
            EventKind.message_cancelled,
            at=now,
            party_id=party.id,
            message_id=message_id,
            channel=Channel(channel),
        )
    return len(cancelled)
