"""The family's own view (家长端): a bound guardian's children, each with only what the family is to know, and
the guardian's own details, which they may correct."""

import uuid
from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.errors import Invalid, NotFound, field_error
from api.models.accounts import Account
from api.models.children import Child
from api.models.guardians import (
    ChildGuardian,
    FamilyChild,
    FamilyChildDetail,
    FamilyGuardianPublic,
    FamilyGuardianUpdate,
    Guardian,
)
from api.models.organisations import School, SchoolClass, class_label
from api.scoping import Principal, as_system
from api.services.children.rules import today_in_china
from api.services.guardians.records import CHILD_NOT_FOUND, apply_values, guardian_public, guardian_values


def _age(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


async def _family_rows(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID | None = None
) -> list[tuple[Child, ChildGuardian]]:
    # The scope rules already limit a family to the children of its active links; the filter on the
    # family's own guardian ids picks *their* link (relation, order) among the child's links.
    stmt = (
        select(Child, ChildGuardian)
        .join(ChildGuardian, col(ChildGuardian.child_id) == Child.id)
        .where(col(ChildGuardian.guardian_id).in_(principal.guardian_ids), col(ChildGuardian.is_active))
        .order_by(col(Child.birth_date), col(Child.name))
    )
    if child_id is not None:
        stmt = stmt.where(Child.id == child_id)
    return [(child, link) for child, link in (await session.execute(stmt)).all()]


async def _names(
    session: AsyncSession, children: Sequence[Child]
) -> tuple[dict[uuid.UUID, School], dict[uuid.UUID, SchoolClass]]:
    school_ids = {c.school_id for c in children}
    class_ids = {c.class_id for c in children if c.class_id is not None}
    # Row security lets a family see the school and class rows of its own children (and no others).
    schools = (await session.execute(select(School).where(col(School.id).in_(school_ids)))).scalars()
    classes = (await session.execute(select(SchoolClass).where(col(SchoolClass.id).in_(class_ids)))).scalars()
    return {s.id: s for s in schools}, {c.id: c for c in classes}


def _family_child(
    child: Child,
    link: ChildGuardian,
    schools: dict[uuid.UUID, School],
    classes: dict[uuid.UUID, SchoolClass],
    today: date,
) -> FamilyChild:
    klass = classes.get(child.class_id) if child.class_id else None
    return FamilyChild(
        id=child.id,
        name=child.name,
        sex=child.sex,
        age=_age(child.birth_date, today),
        school_id=child.school_id,
        school_name=schools[child.school_id].name,
        class_id=child.class_id,
        class_label=class_label(klass.grade, klass.name) if klass else None,
        relation=link.relation,
        role=link.role,
    )


async def family_children(session: AsyncSession, principal: Principal, *, now: datetime) -> list[FamilyChild]:
    """The children this parent or guardian is linked to (siblings included), nothing else."""
    rows = await _family_rows(session, principal)
    schools, classes = await _names(session, [child for child, _ in rows])
    today = today_in_china(now)
    return [_family_child(child, link, schools, classes, today) for child, link in rows]


async def family_child(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, now: datetime
) -> FamilyChildDetail:
    """One of the family's children in more detail; the ID number only masked. The read is audited."""
    rows = await _family_rows(session, principal, child_id=child_id)
    if not rows:
        raise NotFound(CHILD_NOT_FOUND, code="child_not_found")
    child, link = rows[0]
    schools, classes = await _names(session, [child])
    head_teacher_name = None
    klass = classes.get(child.class_id) if child.class_id else None
    if klass is not None and klass.head_teacher_id is not None:
        # SYSTEM: a family reads no staff rows; the name of its own child's head teacher is its to know.
        async with as_system(session):
            head_teacher_name = (
                await session.execute(select(Account.display_name).where(Account.id == klass.head_teacher_id))
            ).scalar_one_or_none()
    audit.record(
        session,
        action="child.read",
        resource_type="child",
        resource_id=child.id,
        school_id=child.school_id,
        detail={"via": "family"},
    )
    base = _family_child(child, link, schools, classes, today_in_china(now))
    return FamilyChildDetail(
        **base.model_dump(),
        birth_date=child.birth_date,
        ethnicity=child.ethnicity,
        id_number_masked=child.id_number_masked,
        is_boarding=child.is_boarding,
        health=child.health,
        home_address=child.home_address,
        head_teacher_name=head_teacher_name,
        contact_order=link.contact_order,
    )


async def _own_guardian(session: AsyncSession, principal: Principal, *, lock: bool = False) -> Guardian:
    stmt = select(Guardian).where(col(Guardian.id).in_(principal.guardian_ids)).order_by(col(Guardian.created_at))
    if lock:
        stmt = stmt.with_for_update()
    guardian = (await session.execute(stmt)).scalars().first()
    if guardian is None:
        raise NotFound("此账号未关联监护人 (no guardian record bound to this account)", code="guardian_not_found")
    return guardian


def family_guardian_public(g: Guardian, *, now: datetime) -> FamilyGuardianPublic:
    """A guardian's own record as the family sees it (without the school's assessment)."""
    return FamilyGuardianPublic(**guardian_public(g, now=now).model_dump(exclude={"upbringing"}))


async def own_guardian(session: AsyncSession, principal: Principal, *, now: datetime) -> FamilyGuardianPublic:
    return family_guardian_public(await _own_guardian(session, principal), now=now)


async def update_own_guardian(
    session: AsyncSession, principal: Principal, *, data: FamilyGuardianUpdate, now: datetime
) -> FamilyGuardianPublic:
    """A parent corrects their own phone, work city, employer… (audited like every guardian write)."""
    guardian = await _own_guardian(session, principal, lock=True)
    values = guardian_values(data, now)
    if "phone" in values and values["phone"] is None:
        # The school calls this number in an emergency: it can be changed here, not removed.
        raise Invalid(
            "请填写新的电话号码，不能删除 (the phone can be changed, not removed)",
            code="phone_required",
            fields=[field_error(["phone"], "电话号码不能为空", "phone_required")],
        )
    apply_values(guardian, values, now)
    await session.flush()
    return family_guardian_public(guardian, now=now)
