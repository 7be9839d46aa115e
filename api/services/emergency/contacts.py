"""Whom each party is told through, and how: the contact card (step 1 and 2) and the duty roster (step 3),
resolved at the report into ordered ways (channel × address) and frozen as the party's targets.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from api.driver import driver_connection
from api.models.accounts import Role
from api.models.base import new_row
from api.models.escalation import (
    Audience,
    EscalationParty,
    EscalationTarget,
)
from api.models.guardians import GuardianRole
from api.models.incidents import (
    Incident,
)
from api.models.notifications import Channel
from api.phones import PhoneError, PhoneKind, normalize_phone
from api.services.emergency import rows
from api.services.emergency.notify import LEADERS_WHERE, Leader

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


_FAMILY_ROLES = (GuardianRole.entrusted_guardian, GuardianRole.parent_home, GuardianRole.parent_away)


class FamilyRow(NamedTuple):
    role: str
    relation: str
    guardian_id: uuid.UUID
    name: str
    phone: str | None
    phone_alt: str | None
    account_id: uuid.UUID | None
    wechat_openid: str | None


class DutyRow(NamedTuple):
    id: uuid.UUID
    township_id: uuid.UUID | None
    name: str
    phone: str | None
    account_id: uuid.UUID | None
    display_name: str | None
    wechat_openid: str | None
    account_phone: str | None


class OfficialRow(NamedTuple):
    id: uuid.UUID
    role: str
    display_name: str
    wechat_openid: str | None
    phone: str | None


# Built once, and only the columns the plans use: the report's one read of whom to tell — the child's contact
# card (step 1 and 2), the duty roster of the county and the township (step 3), the active accounts of the
# county bureau and of the township (told where a roster is empty), the school's leaders (alerted when a party
# has no one to reach), and, for a school without a duty phone, the phone its texts give instead (the
# reporter's, else a school admin's). Run as the system.
_REPORT_CONTACTS = f"""SELECT
 ARRAY(SELECT ROW(cg.role, cg.relation, g.id, g.name, g.phone, g.phone_alt, a.id, a.wechat_openid)
  FROM child_guardian cg JOIN guardian g ON g.id = cg.guardian_id
  LEFT JOIN account a ON a.id = g.account_id AND a.is_active AND a.role = '{Role.family.value}'
  WHERE cg.child_id = $1 AND cg.is_active AND cg.role IN ({", ".join(f"'{r.value}'" for r in _FAMILY_ROLES)})
  ORDER BY cg.contact_order, cg.created_at),
 ARRAY(SELECT ROW(d.id, d.township_id, d.name, d.phone, a.id, a.display_name, a.wechat_openid, a.phone)
  FROM duty_contact d LEFT JOIN account a ON a.id = d.account_id AND a.is_active
  WHERE ((d.county_id = $2 AND d.township_id IS NULL) OR d.township_id = $3) AND d.is_active
  ORDER BY d.position, d.created_at),
 CASE WHEN $4 THEN (SELECT a.phone FROM account a
  WHERE a.phone IS NOT NULL AND a.is_active
  AND (a.id = $5 OR (a.school_id = $6 AND a.role = '{Role.school_admin.value}'))
  ORDER BY (a.id = $5) DESC, a.created_at LIMIT 1) END,
 ARRAY(SELECT ROW(a.id, a.role, a.display_name, a.wechat_openid, a.phone) FROM account a
  WHERE a.is_active AND ((a.role = '{Role.county_bureau.value}' AND a.county_id = $2)
  OR (a.role = '{Role.township_official.value}' AND a.township_id = $3))
  ORDER BY a.created_at, a.id),
 ARRAY(SELECT ROW({", ".join(f"a.{c}" for c in Leader._fields)}) FROM account a
  WHERE {LEADERS_WHERE.replace(":school_id", "$6")} ORDER BY a.created_at, a.id)"""


@dataclass(frozen=True)
class ReportContacts:
    """What the report reads of whom to tell (:data:`_REPORT_CONTACTS`)."""

    family: list[FamilyRow]
    duty: list[DutyRow]
    school_phone: str | None
    officials: list[OfficialRow]
    leaders: list[Leader]


async def read_report_contacts(session: AsyncSession, incident: Incident, *, school_phone: bool) -> ReportContacts:
    """The report's one read of its contacts (``school_phone``: also the phone for a school without a duty
    phone), straight on the driver in the session's transaction. The caller runs it as the system."""
    raw = await driver_connection(session)
    family, duty, phone, officials, leaders = await raw.fetchrow(
        _REPORT_CONTACTS,
        incident.child_id,
        incident.county_id,
        incident.township_id,
        school_phone,
        incident.reported_by_id,
        incident.school_id,
    )
    return ReportContacts(
        [FamilyRow(*r) for r in family],
        [DutyRow(*r) for r in duty],
        phone,
        [OfficialRow(*r) for r in officials],
        [Leader(*r) for r in leaders],
    )


def _family_contacts(rows: Sequence[FamilyRow]) -> dict[Audience, list[ContactPlan]]:
    """Step 1 and step 2's people from the child's contact card, in its call order."""

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


def _official_contacts(rows: Sequence[DutyRow], accounts: Sequence[OfficialRow]) -> dict[Audience, list[ContactPlan]]:
    """Duty contacts of the county bureau and of the township; where there is none, the accounts of that
    role there."""
    found: dict[Audience, list[ContactPlan]] = {Audience.county_bureau: [], Audience.township: []}
    for row in rows:
        plan = ContactPlan(label=row.name, name=row.display_name, duty_contact_id=row.id, account_id=row.account_id)
        _ways(plan, _OFFICIAL_ORDER, openid=row.wechat_openid, phone=row.phone or row.account_phone, phone_alt=None)
        found[Audience.county_bureau if row.township_id is None else Audience.township].append(plan)
    for audience, role in ((Audience.county_bureau, Role.county_bureau), (Audience.township, Role.township_official)):
        if found[audience]:
            continue
        for account in accounts:
            if account.role != role:
                continue
            plan = ContactPlan(label=account.display_name, name=None, account_id=account.id)
            _ways(plan, _OFFICIAL_ORDER, openid=account.wechat_openid, phone=account.phone, phone_alt=None)
            found[audience].append(plan)
    return found


def resolve_contacts(read: ReportContacts) -> dict[Audience, list[ContactPlan]]:
    """Whom each party is told through, in the order of the contact card / duty roster."""
    return {**_family_contacts(read.family), **_official_contacts(read.duty, read.officials)}


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
