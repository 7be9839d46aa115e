"""Whom each party is told through, and how: the contact card (step 1 and 2) and the duty roster (step 3),
resolved at the report into ordered ways (channel × address) and frozen as the party's targets.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.models.accounts import Account, Role
from api.models.base import new_row
from api.models.escalation import (
    Audience,
    DutyContact,
    EscalationParty,
    EscalationTarget,
)
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.incidents import (
    Incident,
)
from api.models.notifications import Channel
from api.phones import PhoneError, PhoneKind, normalize_phone
from api.services.emergency import rows

# Channel order per audience: elderly guardians are called first (press 1 is the surest acknowledgement),
# families in the mini-program and officials get WeChat first, SMS and voice after.
_FAMILY_ORDER = {
    Audience.entrusted_guardian: (Channel.voice, Channel.sms, Channel.wechat),
    Audience.parents_away: (Channel.wechat, Channel.sms, Channel.voice),
}


_OFFICIAL_ORDER = (Channel.wechat, Channel.sms, Channel.voice)


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


# Built once, and only the columns the plans use (rows, not mapped objects): the report's two reads.
_FAMILY: Any = (
    sa.select(
        col(ChildGuardian.role),
        col(ChildGuardian.relation),
        col(Guardian.id).label("guardian_id"),
        col(Guardian.name),
        col(Guardian.phone),
        col(Guardian.phone_alt),
        col(Account.id).label("account_id"),
        col(Account.wechat_openid),
    )
    .join(Guardian, col(Guardian.id) == ChildGuardian.guardian_id)
    .outerjoin(
        Account,
        sa.and_(col(Account.id) == Guardian.account_id, col(Account.is_active), col(Account.role) == Role.family),
    )
    .where(
        col(ChildGuardian.child_id) == sa.bindparam("child_id"),
        col(ChildGuardian.is_active),
        col(ChildGuardian.role).in_(
            [GuardianRole.entrusted_guardian, GuardianRole.parent_home, GuardianRole.parent_away]
        ),
    )
    .order_by(col(ChildGuardian.contact_order), col(ChildGuardian.created_at))
)
_DUTY: Any = (
    sa.select(
        col(DutyContact.id),
        col(DutyContact.township_id),
        col(DutyContact.name),
        col(DutyContact.phone),
        col(Account.id).label("account_id"),
        col(Account.display_name),
        col(Account.wechat_openid),
        col(Account.phone).label("account_phone"),
    )
    .outerjoin(Account, sa.and_(col(Account.id) == DutyContact.account_id, col(Account.is_active)))
    .where(
        sa.or_(
            sa.and_(col(DutyContact.county_id) == sa.bindparam("county_id"), col(DutyContact.township_id).is_(None)),
            col(DutyContact.township_id) == sa.bindparam("township_id"),
        ),
        col(DutyContact.is_active),
    )
    .order_by(col(DutyContact.position), col(DutyContact.created_at))
)


async def _family_contacts(session: AsyncSession, child_id: uuid.UUID) -> dict[Audience, list[ContactPlan]]:
    """Step 1 and step 2's people from the child's contact card, in its call order (one query for both)."""
    rows = (await session.execute(_FAMILY, {"child_id": child_id})).all()

    def plans(audience: Audience, role: GuardianRole) -> list[ContactPlan]:
        found = []
        for row in rows:
            if row.role != role:
                continue
            plan = ContactPlan(
                label=row.relation, name=row.name, guardian_id=row.guardian_id, account_id=row.account_id
            )
            _ways(plan, _FAMILY_ORDER[audience], openid=row.wechat_openid, phone=row.phone, phone_alt=row.phone_alt)
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
    rows = (await session.execute(_DUTY, {"county_id": incident.county_id, "township_id": incident.township_id})).all()
    found: dict[Audience, list[ContactPlan]] = {Audience.county_bureau: [], Audience.township: []}
    for row in rows:
        plan = ContactPlan(label=row.name, name=row.display_name, duty_contact_id=row.id, account_id=row.account_id)
        _ways(plan, _OFFICIAL_ORDER, openid=row.wechat_openid, phone=row.phone or row.account_phone, phone_alt=None)
        found[Audience.county_bureau if row.township_id is None else Audience.township].append(plan)
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
                new_row(
                    EscalationTarget,
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
    rows.add(session, *targets)
    return targets
