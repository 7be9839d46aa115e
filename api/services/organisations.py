"""Counties, townships, schools and classes. Scope is applied by the session, so a missing row is a 404."""

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.errors import Forbidden, Invalid, NotFound, field_error
from api.models.accounts import Account, Role
from api.models.base import Page
from api.models.organisations import (
    ClassCreate,
    ClassPublic,
    ClassUpdate,
    County,
    School,
    SchoolClass,
    SchoolCreate,
    SchoolPublic,
    SchoolUpdate,
    TeachingAssignment,
    Township,
    class_label,
)
from api.phones import PhoneError, normalize_phone
from api.scoping import Principal


def class_public(c: SchoolClass) -> ClassPublic:
    return ClassPublic(
        id=c.id,
        school_id=c.school_id,
        grade=c.grade,
        name=c.name,
        label=class_label(c.grade, c.name),
        head_teacher_id=c.head_teacher_id,
        is_active=c.is_active,
    )


def school_public(s: School) -> SchoolPublic:
    return SchoolPublic.model_validate(s, from_attributes=True)


async def list_counties(session: AsyncSession) -> list[County]:
    return list((await session.execute(select(County).order_by(County.name))).scalars())


async def list_townships(session: AsyncSession, *, county_id: uuid.UUID | None) -> list[Township]:
    stmt = select(Township).order_by(Township.name)
    if county_id is not None:
        stmt = stmt.where(Township.county_id == county_id)
    return list((await session.execute(stmt)).scalars())


async def list_schools(
    session: AsyncSession, *, township_id: uuid.UUID | None, offset: int, limit: int
) -> Page[SchoolPublic]:
    stmt = select(School)
    if township_id is not None:
        stmt = stmt.where(School.township_id == township_id)
    count = (await session.execute(select(sa.func.count()).select_from(stmt.subquery()))).scalar_one()
    rows = await session.execute(stmt.order_by(School.name).offset(offset).limit(limit))
    return Page(data=[school_public(s) for s in rows.scalars()], count=count)


async def get_school(session: AsyncSession, school_id: uuid.UUID) -> School:
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    return school


def duty_phone(raw: str | None) -> str | None:
    """The school's duty phone as dialled (``api.phones``); empty or null clears it. 422 with the phone
    validator's stable code (``phone_format`` / ``phone_area_code``) when it cannot be dialled."""
    if raw is None or not raw.strip():
        return None
    try:
        return normalize_phone(raw).normalized
    except PhoneError as exc:
        raise Invalid(
            f"学校值班电话无效：{exc.message_zh} (the duty phone cannot be dialled)",
            code=exc.code,
            fields=[field_error(["body", "duty_phone"], exc.message_zh, exc.code)],
        ) from None


async def create_school(session: AsyncSession, principal: Principal, *, data: SchoolCreate) -> School:
    if principal.role not in (Role.platform_admin, Role.county_bureau):
        raise Forbidden("只有县教育局可以新建学校 (only the county bureau creates schools)")
    township = await session.get(Township, data.township_id)
    if township is None:
        raise NotFound("乡镇不存在 (township not found)", code="township_not_found")
    school = School(
        county_id=township.county_id,
        township_id=township.id,
        name=data.name,
        kind=data.kind,
        pupil_count=data.pupil_count,
        duty_phone=duty_phone(data.duty_phone),
    )
    session.add(school)
    await session.flush()
    return school


async def update_school(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, data: SchoolUpdate
) -> School:
    school = await get_school(session, school_id)
    if principal.role not in (Role.platform_admin, Role.county_bureau, Role.school_admin):
        raise Forbidden()
    for key, value in data.model_dump(exclude_unset=True).items():
        if key == "duty_phone":
            school.duty_phone = duty_phone(value)
        elif value is not None:
            setattr(school, key, value)
    return school


async def list_classes(session: AsyncSession, *, school_id: uuid.UUID, include_inactive: bool) -> list[ClassPublic]:
    await get_school(session, school_id)
    stmt = select(SchoolClass).where(SchoolClass.school_id == school_id)
    if not include_inactive:
        stmt = stmt.where(SchoolClass.is_active)
    rows = await session.execute(stmt.order_by(col(SchoolClass.grade), col(SchoolClass.name)))
    return [class_public(c) for c in rows.scalars()]


async def get_class(session: AsyncSession, class_id: uuid.UUID) -> SchoolClass:
    klass = await session.get(SchoolClass, class_id)
    if klass is None:
        raise NotFound("班级不存在 (class not found)", code="class_not_found")
    return klass


async def _check_teacher(session: AsyncSession, school_id: uuid.UUID, account_id: uuid.UUID) -> None:
    teacher = await session.get(Account, account_id)
    if teacher is None or teacher.school_id != school_id or teacher.role not in (Role.teacher, Role.school_admin):
        raise Invalid("班主任必须是本校教师 (head teacher must be staff of this school)", code="head_teacher_invalid")


def _require_school_admin(principal: Principal) -> None:
    if principal.role not in (Role.platform_admin, Role.school_admin):
        raise Forbidden("只有学校管理员可以管理班级 (only school admins manage classes)")


async def create_class(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, data: ClassCreate
) -> SchoolClass:
    _require_school_admin(principal)
    await get_school(session, school_id)
    if data.head_teacher_id is not None:
        await _check_teacher(session, school_id, data.head_teacher_id)
    klass = SchoolClass(school_id=school_id, grade=data.grade, name=data.name, head_teacher_id=data.head_teacher_id)
    session.add(klass)
    await session.flush()
    return klass


async def update_class(
    session: AsyncSession, principal: Principal, *, class_id: uuid.UUID, data: ClassUpdate
) -> SchoolClass:
    _require_school_admin(principal)
    klass = await get_class(session, class_id)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("head_teacher_id") is not None:
        await _check_teacher(session, klass.school_id, changes["head_teacher_id"])
    for key, value in changes.items():
        if value is not None or key == "head_teacher_id":
            setattr(klass, key, value)
    return klass


async def assign_teacher(
    session: AsyncSession, principal: Principal, *, class_id: uuid.UUID, account_id: uuid.UUID
) -> None:
    _require_school_admin(principal)
    klass = await get_class(session, class_id)
    await _check_teacher(session, klass.school_id, account_id)
    if await session.get(TeachingAssignment, (class_id, account_id)) is None:
        session.add(TeachingAssignment(class_id=class_id, account_id=account_id))
