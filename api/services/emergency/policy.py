"""A county's chain policy (deadlines within the legal maxima, waits, retries) and its duty contacts (值班).

Incidents already reported keep the policy frozen onto them (``snapshot_policy``); later edits do not touch
an incident in flight.
"""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.errors import Forbidden, Invalid, NotFound, field_error
from api.models.accounts import Account, Role
from api.models.escalation import (
    DEFAULT_POLICY,
    LEGAL_DEADLINE_MINUTES,
    DutyContact,
    DutyContactCreate,
    DutyContactPublic,
    DutyContactUpdate,
    EscalationPolicy,
    PolicyPublic,
    PolicyValues,
)
from api.models.organisations import County, Township
from api.phones import PhoneError, normalize_phone
from api.scoping import Principal
from api.services.emergency.decide import step_deadline_minutes


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


def policy_values(row: EscalationPolicy | None) -> PolicyValues:
    """The values of a county's policy row (the defaults when it has none)."""
    if row is None:
        return DEFAULT_POLICY
    return PolicyValues.model_validate(row, from_attributes=True)


async def effective_policy(session: AsyncSession, county_id: uuid.UUID) -> tuple[PolicyValues, EscalationPolicy | None]:
    row = (
        await session.execute(select(EscalationPolicy).where(EscalationPolicy.county_id == county_id))
    ).scalar_one_or_none()
    return policy_values(row), row


async def _county(session: AsyncSession, county_id: uuid.UUID) -> County:
    county = await session.get(County, county_id)
    if county is None:
        raise NotFound("县不存在 (county not found)", code="county_not_found")
    return county


def _policy_public(county_id: uuid.UUID, row: EscalationPolicy | None) -> PolicyPublic:
    return PolicyPublic(
        **policy_values(row).model_dump(),
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


def snapshot_policy(policy: PolicyValues, policy_id: uuid.UUID | None) -> dict[str, Any]:
    """What an incident keeps of its county's policy (``policy_id``: its row; ``None``: the defaults)."""
    return {**policy.model_dump(), "policy_id": str(policy_id) if policy_id else None, "is_default": policy_id is None}


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
