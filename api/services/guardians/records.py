"""Guardians of a child (在外务工家长, 委托监护人) as people: stored once per person, read and corrected by staff,
and how a guardian and a link are shown.

Scope is applied by the session: a child or guardian outside the caller's scope is simply not found (404).
Who may *write* is decided here: platform and school admins, and the teachers who head or teach the
child's class. Every write to ``guardian`` and ``child_guardian`` is audited by the flush hook.
"""

import unicodedata
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.errors import Forbidden, Invalid, NotFound, field_error
from api.models.accounts import Role
from api.models.children import Child
from api.models.guardians import (
    GUARDIAN_ROLE_LABELS,
    ChildGuardian,
    FamilyGuardianUpdate,
    Guardian,
    GuardianChildLink,
    GuardianCreate,
    GuardianDetail,
    GuardianLinkPublic,
    GuardianPublic,
    GuardianUpdate,
)
from api.phones import PhoneError, mask_phone, normalize_phone
from api.scoping import Principal
from api.services.children.rules import sees_full_detail, today_in_china

CHILD_NOT_FOUND = "找不到该儿童档案 (child not found)"
GUARDIAN_NOT_FOUND = "找不到该监护人 (guardian not found)"
WRITE_FORBIDDEN = (
    "只有学校管理员和本班教师可以修改监护人信息 (only school admins and the class's teachers edit guardians)"
)
LINK_NOT_FOUND = "该学生没有这位监护人 (no such guardian link for this child)"


# ---- small helpers -------------------------------------------------------------------------------------


def normalise_name(name: str) -> str:
    """One spelling per name: full-width forms folded, spaces dropped (王 桂兰 = 王桂兰)."""
    return "".join(unicodedata.normalize("NFKC", name).split())


def parse_phone(raw: str | None, *, loc: str) -> str | None:
    """The normalised number, or ``Invalid`` (422) carrying the phone validator's stable code."""
    if raw is None:
        return None
    try:
        return normalize_phone(raw).normalized
    except PhoneError as exc:
        raise Invalid(exc.message_zh, code=exc.code, fields=[field_error([loc], exc.message_zh, exc.code)]) from None


def _birth_year(values: dict[str, Any], now: datetime) -> int | None:
    """``age`` is a convenience for forms that ask 年龄; the record keeps the year so the age stays right."""
    year = today_in_china(now).year
    if values.get("age") is not None:
        return year - int(values["age"])
    birth_year = values.get("birth_year")
    if birth_year is not None and birth_year > year:
        raise Invalid(
            "出生年份不能晚于今年 (birth year is in the future)",
            code="birth_year_invalid",
            fields=[field_error(["birth_year"], "出生年份不能晚于今年", "birth_year_invalid")],
        )
    return int(birth_year) if birth_year is not None else None


def guardian_values(data: GuardianCreate | GuardianUpdate | FamilyGuardianUpdate, now: datetime) -> dict[str, Any]:
    """The sent fields as column values: phones normalised, age turned into a birth year, name normalised."""
    values = data.model_dump(exclude_unset=True)
    if "name" in values:
        if values["name"] is None:
            raise Invalid("姓名不能为空 (name is required)", code="name_required")
        values["name"] = normalise_name(values["name"])
    for key in ("phone", "phone_alt"):
        if key in values:
            values[key] = parse_phone(values[key], loc=key)
    if "age" in values or "birth_year" in values:
        values["birth_year"] = _birth_year(values, now)
        values.pop("age", None)
    return values


def may_edit(principal: Principal, child: Child) -> bool:
    """Admins of the child's school and the teachers (head or subject) of the child's class keep its
    guardians up to date."""
    if principal.role in (Role.platform_admin, Role.school_admin):
        return True
    return principal.role == Role.teacher and child.class_id is not None and child.class_id in principal.class_ids


def require_writer(principal: Principal, child: Child) -> None:
    if not may_edit(principal, child):
        raise Forbidden(WRITE_FORBIDDEN, code="guardian_write_forbidden")


def guardian_public(g: Guardian, *, now: datetime, full: bool = True) -> GuardianPublic:
    """The API form of a guardian; without full detail only the name, age and masked phones remain."""
    year = today_in_china(now).year
    age = year - g.birth_year if g.birth_year is not None else None
    if full:
        return GuardianPublic(
            id=g.id,
            name=g.name,
            sex=g.sex,
            birth_year=g.birth_year,
            age=age,
            education=g.education,
            occupation=g.occupation,
            phone=g.phone,
            phone_alt=g.phone_alt,
            address=g.address,
            health=g.health,
            upbringing=g.upbringing,
            work_city=g.work_city,
            employer=g.employer,
            employer_address=g.employer_address,
            trade=g.trade,
            income=g.income,
            hopes=g.hopes,
            contact_method=g.contact_method,
            wechat_bound=g.account_id is not None,
            updated_at=g.updated_at,
        )
    return GuardianPublic(
        id=g.id,
        name=g.name,
        sex=g.sex,
        birth_year=None,
        age=age,
        education=None,
        occupation=None,
        phone=mask_phone(g.phone) if g.phone else None,
        phone_alt=mask_phone(g.phone_alt) if g.phone_alt else None,
        address=None,
        health=None,
        upbringing=None,
        work_city=g.work_city,
        employer=None,
        employer_address=None,
        trade=None,
        income=None,
        hopes=None,
        contact_method=None,
        wechat_bound=g.account_id is not None,
        updated_at=g.updated_at,
    )


def link_public(link: ChildGuardian, guardian: Guardian, *, now: datetime, full: bool = True) -> GuardianLinkPublic:
    return GuardianLinkPublic(
        id=link.id,
        child_id=link.child_id,
        guardian_id=link.guardian_id,
        role=link.role,
        role_label=GUARDIAN_ROLE_LABELS[link.role],
        relation=link.relation,
        contact_order=link.contact_order,
        is_active=link.is_active,
        since=link.since,
        until=link.until,
        end_reason=link.end_reason,
        guardian=guardian_public(guardian, now=now, full=full),
        full_detail=full,
    )


# ---- loading -------------------------------------------------------------------------------------------


async def get_child(session: AsyncSession, child_id: uuid.UUID, *, lock: bool = False) -> Child:
    """The child if the caller may see it. ``lock`` serialises edits of the child's guardian list."""
    stmt = select(Child).where(Child.id == child_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    child = (await session.execute(stmt)).scalar_one_or_none()
    if child is None:
        raise NotFound(CHILD_NOT_FOUND, code="child_not_found")
    return child


# ---- the guardian as a person ---------------------------------------------------------------------------


async def _guardian_children(session: AsyncSession, guardian_id: uuid.UUID) -> list[tuple[ChildGuardian, Child]]:
    stmt = (
        select(ChildGuardian, Child)
        .join(Child, col(Child.id) == ChildGuardian.child_id)
        .where(ChildGuardian.guardian_id == guardian_id)
        .order_by(col(ChildGuardian.is_active).desc(), col(Child.birth_date))
    )
    return [(link, child) for link, child in (await session.execute(stmt)).all()]


async def get_guardian(
    session: AsyncSession, principal: Principal, *, guardian_id: uuid.UUID, now: datetime
) -> GuardianDetail:
    """A guardian with the children (in the caller's scope) they are linked to — siblings at a glance."""
    guardian = await session.get(Guardian, guardian_id)
    if guardian is None:
        raise NotFound(GUARDIAN_NOT_FOUND, code="guardian_not_found")
    rows = await _guardian_children(session, guardian.id)
    full = any(sees_full_detail(principal, child) for _, child in rows)
    if full:
        audit.record(
            session,
            action="guardian.read",
            resource_type="guardian",
            resource_id=guardian.id,
            school_id=rows[0][1].school_id if rows else None,
        )
    return GuardianDetail(
        guardian=guardian_public(guardian, now=now, full=full),
        children=[
            GuardianChildLink(
                link_id=link.id,
                child_id=child.id,
                child_name=child.name,
                role=link.role,
                relation=link.relation,
                contact_order=link.contact_order,
                is_active=link.is_active,
            )
            for link, child in rows
        ],
    )


async def update_guardian(
    session: AsyncSession, principal: Principal, *, guardian_id: uuid.UUID, data: GuardianUpdate, now: datetime
) -> GuardianPublic:
    """Correct a guardian's record (one person, so every child linked to them sees the change)."""
    guardian = await session.get(Guardian, guardian_id, with_for_update=True)
    if guardian is None:
        raise NotFound(GUARDIAN_NOT_FOUND, code="guardian_not_found")
    rows = await _guardian_children(session, guardian.id)
    if not any(may_edit(principal, child) for link, child in rows if link.is_active):
        raise Forbidden(WRITE_FORBIDDEN, code="guardian_write_forbidden")
    values = guardian_values(data, now)
    apply_values(guardian, values, now)
    await session.flush()
    return guardian_public(guardian, now=now)


def apply_values(guardian: Guardian, values: dict[str, Any], now: datetime) -> None:
    changed = False
    for key, value in values.items():
        if getattr(guardian, key) != value:
            setattr(guardian, key, value)
            changed = True
    if changed:
        guardian.updated_at = now
