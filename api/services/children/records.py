"""一人一档: a child's file — entered, read at the right level of detail, corrected — and who may write it.

Scope is applied by the session (a child outside it is simply not found → 404). Within scope, the level of
detail depends on who asks: see :func:`~api.services.children.rules.sees_full_detail`.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit, driver
from api.crypto import FieldCipher
from api.errors import Forbidden, NotFound
from api.models.accounts import Role
from api.models.children import (
    CHILD_EVENT_LABELS,
    Child,
    ChildBasic,
    ChildCreate,
    ChildEvent,
    ChildEventKind,
    ChildEventPublic,
    ChildFull,
    ChildUpdate,
    MissingItem,
    ParentsAway,
    RevealedIdNumber,
    Sex,
)
from api.models.guardians import ChildGuardian, Guardian
from api.models.organisations import School, SchoolClass, class_label
from api.scoping import Principal, as_system, get_principal
from api.services import completeness, identity
from api.services.children.rules import (
    SCHOOL_ADMINS,
    age_on,
    agree_with_id,
    check_birth_date,
    check_effective_on,
    check_left_behind_since,
    duplicate,
    flags_of,
    full_detail_of,
    invalid,
    new_event,
    sees_full_detail,
    shanghai,
    today_in_china,
)
from api.services.completeness import (
    link_facts,
    link_facts_for,
    missing_columns,
    missing_items,
    missing_public,
)


async def get_child(session: AsyncSession, child_id: uuid.UUID, *, for_update: bool = False) -> Child:
    stmt = select(Child).where(Child.id == child_id)
    if for_update:
        stmt = stmt.with_for_update()
    child = (await session.execute(stmt)).scalar_one_or_none()
    if child is None:
        raise NotFound("找不到该儿童档案 (child not found)", code="child_not_found")
    return child


@dataclass(frozen=True)
class Place:
    school_name: str | None
    county_id: uuid.UUID | None
    class_label: str | None
    grade: int | None


async def place_of(session: AsyncSession, child: Child) -> Place:
    # Whoever sees the child sees its school and class rows (a family: those of its own children only).
    school = (
        await session.execute(
            sa.select(col(School.name), col(School.county_id)).where(col(School.id) == child.school_id)
        )
    ).one_or_none()
    klass = None
    if child.class_id is not None:
        klass = (
            await session.execute(
                sa.select(col(SchoolClass.grade), col(SchoolClass.name)).where(col(SchoolClass.id) == child.class_id)
            )
        ).one_or_none()
    return Place(
        school_name=school[0] if school else None,
        county_id=school[1] if school else None,
        class_label=class_label(klass[0], klass[1]) if klass else None,
        grade=klass[0] if klass else None,
    )


async def missing_of(session: AsyncSession, child: Child) -> list[MissingItem]:
    stmt = (
        select(ChildGuardian, Guardian)
        .join(Guardian, col(Guardian.id) == ChildGuardian.guardian_id)
        .where(ChildGuardian.child_id == child.id)
    )
    if get_principal(session).role != Role.family:  # staff see every guardian of a child they see
        rows = (await session.execute(stmt)).all()
    else:
        # SYSTEM: completeness needs every guardian's phone, which a family may not read (it sees only its own
        # guardian record); only the yes/no facts for this child, already found in scope, come out of it.
        async with as_system(session):
            rows = (await session.execute(stmt)).all()
    return missing_items(child, [link_facts(link, guardian) for link, guardian in rows])


def summary_fields(
    child: Child,
    *,
    school_name: str | None,
    class_label: str | None,
    grade: int | None,
    missing: Sequence[MissingItem],
) -> dict[str, Any]:
    return {
        "id": child.id,
        "school_id": child.school_id,
        "school_name": school_name,
        "class_id": child.class_id,
        "class_label": class_label,
        "grade": grade,
        "name": child.name,
        "sex": child.sex,
        "status": child.status,
        "is_left_behind": child.is_left_behind,
        "parents_away": child.parents_away,
        "flags": flags_of(child),
        "complete": not missing,
        "missing": missing_public(missing),
    }


async def child_view(
    session: AsyncSession, principal: Principal, child: Child, *, now: datetime, place: Place | None = None
) -> ChildFull | ChildBasic:
    """The file at the caller's level of detail (no audit entry: callers that read record it)."""
    place = place or await place_of(session, child)
    return _view(principal, child, place=place, missing=await missing_of(session, child), now=now)


def _view(
    principal: Principal, child: Any, *, place: Place, missing: Sequence[MissingItem], now: datetime
) -> ChildFull | ChildBasic:
    """The file at the caller's level of detail from ``child``: a :class:`Child`, or a row of its columns."""
    summary = summary_fields(
        child, school_name=place.school_name, class_label=place.class_label, grade=place.grade, missing=missing
    )
    if not sees_full_detail(principal, child):
        return ChildBasic(**summary)
    return ChildFull(
        **summary,
        birth_date=child.birth_date,
        age=age_on(child.birth_date, today_in_china(now)),
        ethnicity=child.ethnicity,
        id_number_masked=child.id_number_masked,
        household_registration=child.household_registration,
        home_address=child.home_address,
        is_boarding=child.is_boarding,
        health=child.health,
        left_behind_since=child.left_behind_since,
        character=child.character,
        habits=child.habits,
        interests=child.interests,
        study_notes=child.study_notes,
        guardian_relationship=child.guardian_relationship,
        parent_contact_frequency=child.parent_contact_frequency,
        guardianship_rating=child.guardianship_rating,
        special_hardship=child.special_hardship,
        single_parent=child.single_parent,
        struggling_learner=child.struggling_learner,
        disability=child.disability,
        needs_individual_plan=child.needs_individual_plan,
        notes=child.notes,
        status_reason=child.status_reason,
        status_changed_on=child.status_changed_on,
        created_at=shanghai(child.created_at),
        updated_at=shanghai(child.updated_at),
    )


def event_public(event: ChildEvent) -> ChildEventPublic:
    return ChildEventPublic(
        id=event.id,
        child_id=event.child_id,
        kind=event.kind,
        label=CHILD_EVENT_LABELS[event.kind],
        effective_on=event.effective_on,
        reason=event.reason,
        from_school_id=event.from_school_id,
        to_school_id=event.to_school_id,
        from_class_id=event.from_class_id,
        to_class_id=event.to_class_id,
        recorded_at=shanghai(event.recorded_at),
        recorded_by_id=event.recorded_by_id,
    )


# ---- who may write ----------------------------------------------------------------------------------------


async def heads_class(session: AsyncSession, principal: Principal, class_id: uuid.UUID) -> bool:
    head = (
        await session.execute(sa.select(col(SchoolClass.head_teacher_id)).where(col(SchoolClass.id) == class_id))
    ).scalar_one_or_none()
    return head is not None and head == principal.account_id


async def require_writer(session: AsyncSession, principal: Principal, class_id: uuid.UUID | None) -> None:
    """School admins write every file of their school; a head teacher (班主任) the files of their class."""
    if principal.is_system or principal.role in SCHOOL_ADMINS:
        return
    if principal.role == Role.teacher and class_id is not None and await heads_class(session, principal, class_id):
        return
    raise Forbidden(
        "只有学校管理员或该班班主任可以修改档案 (only school admins and the class's head teacher)",
        code="not_head_teacher",
    )


async def class_of_school(session: AsyncSession, class_id: uuid.UUID, school_id: uuid.UUID) -> SchoolClass:
    klass = await session.get(SchoolClass, class_id)
    if klass is None:
        raise NotFound("班级不存在 (class not found)", code="class_not_found")
    if klass.school_id != school_id:
        raise invalid("class_not_in_school", "班级不属于该学校 (the class belongs to another school)", "class_id")
    if not klass.is_active:
        raise invalid("class_inactive", "该班级已停用 (the class is no longer active)", "class_id")
    return klass


async def refuse_duplicate(session: AsyncSession, index: str, own_id: uuid.UUID | None) -> None:
    # SYSTEM: the same ID number may already be on file in another school; only the fact leaves here.
    async with as_system(session):
        existing = (
            await session.execute(sa.select(col(Child.id)).where(col(Child.id_number_index) == index))
        ).scalar_one_or_none()
    if existing is not None and existing != own_id:
        raise duplicate()


async def flush_or_conflict(session: AsyncSession) -> None:
    """Flush; a concurrent writer of the same ID number meets the unique index and gets the same 409."""
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        if "id_number_index" in str(exc.orig):
            raise duplicate() from None
        raise


# ---- create, read, update ---------------------------------------------------------------------------------


async def create_child(
    session: AsyncSession, principal: Principal, *, cipher: FieldCipher, data: ChildCreate, now: datetime
) -> Child:
    """Open a child's file in a school (the caller's own by default) and record the ``enrolled`` event."""
    today = today_in_china(now)
    school_id = data.school_id or principal.school_id
    if school_id is None:
        raise invalid("school_required", "请指定学校 (school_id is required)", "school_id")
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    if data.class_id is not None:
        await class_of_school(session, data.class_id, school.id)
    await require_writer(session, principal, data.class_id)

    stored = None
    sex, birth = data.sex, data.birth_date
    if data.id_number is not None:
        stored = identity.store_id_number(cipher, data.id_number, today=today)
        agree_with_id(stored.parsed, sex=sex, birth_date=birth)
        sex, birth = Sex(stored.parsed.sex.value), stored.parsed.birth_date
        await refuse_duplicate(session, stored.index, None)
    if sex is None:
        raise invalid("sex_required", "请填写性别或身份证号 (sex or id_number is required)", "sex")
    if birth is None:
        raise invalid(
            "birth_date_required", "请填写出生日期或身份证号 (birth_date or id_number is required)", "birth_date"
        )
    check_birth_date(birth, today)
    check_left_behind_since(data.left_behind_since, birth, today)

    pinyin, initials = identity.name_keys(data.name)
    fields = data.model_dump(
        exclude={"school_id", "class_id", "name", "sex", "birth_date", "id_number", "parents_away", "enrolled_on"}
    )
    child = Child(
        school_id=school.id,
        class_id=data.class_id,
        name=data.name,
        name_pinyin=pinyin,
        name_initials=initials,
        sex=sex,
        birth_date=birth,
        id_number_cipher=stored.cipher if stored else None,
        id_number_index=stored.index if stored else None,
        id_number_masked=stored.masked if stored else None,
        is_left_behind=data.parents_away != ParentsAway.none,
        parents_away=data.parents_away,
        created_at=now,
        updated_at=now,
        **fields,
    )
    if not child.is_left_behind:
        child.left_behind_since = None
    enrolled_on = check_effective_on(data.enrolled_on, today=today, child=child, loc="enrolled_on")
    session.add(child)
    await flush_or_conflict(session)
    session.add(
        new_event(
            child,
            ChildEventKind.enrolled,
            principal=principal,
            now=now,
            effective_on=enrolled_on,
            reason=None,
            to_school_id=school.id,
            to_class_id=data.class_id,
        )
    )
    await session.flush()
    return child


async def read_child(
    session: AsyncSession | driver.Transaction, principal: Principal, *, child_id: uuid.UUID, now: datetime
) -> ChildFull | ChildBasic:
    """The file at the caller's level of detail for staff; every read of the full file is audited
    (``child.read``). A family reads its child through :func:`api.services.guardians.family.family_child`.

    One query: the child's columns (read, not loaded as an object: nothing changes), its school and class, and
    what the file lacks."""
    everyone, classes = full_detail_of(principal)
    params = {"child_id": child_id, "full_everyone": everyone, "full_classes": list(classes)}
    row: Any = await driver.fetch_one(
        session, _FILE, params | audit.entry_params(session, action="child.read", resource_type="child")
    )
    if row is None:
        raise NotFound("找不到该儿童档案 (child not found)", code="child_not_found")
    place = Place(
        school_name=row.school_name,
        county_id=row.county_id,
        class_label=class_label(row.grade, row.class_name) if row.grade is not None else None,
        grade=row.grade,
    )
    # Full or basic by the same rule as the statement's audit entry, written where the file is full.
    return _view(principal, row, place=place, missing=completeness.missing_of(row), now=now)


def _file_statement() -> Any:
    # Built once. The school and class are joined, as place_of reads them, outer: a staff member who sees the
    # child sees both (the same scope rules), and a missing class is a file without one. Staff see every
    # guardian of a child they see, so what the file lacks needs no system read here (a family's would).
    # The links are read for this child by the link index (LATERAL), not filtered by a second look-up of it.
    # The read of a full file writes its audit entry in the same statement (a data-modifying CTE): the file is
    # full for the principal's ``full_everyone`` or ``full_classes`` (rules.full_detail_of), as _view judges.
    links = link_facts_for(col(Child.id))
    file = (
        sa.select(
            *[col(getattr(Child, column.key)) for column in Child.__table__.columns],  # type: ignore[attr-defined]
            col(School.name).label("school_name"),
            col(School.county_id).label("county_id"),
            col(SchoolClass.grade).label("grade"),
            col(SchoolClass.name).label("class_name"),
            *missing_columns(links),
        )
        .select_from(Child)
        .outerjoin(School, col(School.id) == Child.school_id)
        .outerjoin(SchoolClass, col(SchoolClass.id) == Child.class_id)
        .outerjoin(links, sa.true())
        .where(col(Child.id) == sa.bindparam("child_id", type_=sa.Uuid()))
        .cte("file")
    )
    full = sa.or_(
        sa.bindparam("full_everyone", type_=sa.Boolean()),
        file.c.class_id == sa.any_(sa.bindparam("full_classes", type_=postgresql.ARRAY(sa.Uuid()))),
    )
    entry = audit.entry_in_statement(
        file,
        action="child.read",
        resource_type="child",
        resource_id=file.c.id,
        school_id=file.c.school_id,
        county_id=file.c.county_id,
        when=full,
    )
    return sa.select(*file.c).add_cte(entry)


_FILE = driver.DriverStatement(_file_statement())


async def update_child(
    session: AsyncSession,
    principal: Principal,
    *,
    cipher: FieldCipher,
    child_id: uuid.UUID,
    data: ChildUpdate,
    now: datetime,
) -> Child:
    """Correct or complete the file; only the fields sent change (the audit log keeps old and new values)."""
    today = today_in_china(now)
    child = await get_child(session, child_id, for_update=True)
    await require_writer(session, principal, child.class_id)
    changes = data.model_dump(exclude_unset=True)

    if "class_id" in changes and changes["class_id"] != child.class_id:
        new_class = changes["class_id"]
        if new_class is not None:
            await class_of_school(session, new_class, child.school_id)
            await require_writer(session, principal, new_class)
        session.add(
            new_event(
                child,
                ChildEventKind.class_changed,
                principal=principal,
                now=now,
                effective_on=today,
                reason=None,
                from_class_id=child.class_id,
                to_class_id=new_class,
            )
        )
    if "parents_away" in changes:
        away = changes["parents_away"]
        if away != child.parents_away and (away == ParentsAway.none or not child.is_left_behind):
            raise invalid(
                "use_lifecycle_endpoint",
                "父母返乡或外出请使用「父母返乡」「成为留守」办理 (use parents-returned / became-left-behind)",
                "parents_away",
            )

    sex = changes.get("sex", child.sex)
    birth = changes.get("birth_date", child.birth_date)
    if "id_number" in changes:
        raw = changes.pop("id_number")
        if raw is None:
            child.id_number_cipher = child.id_number_index = child.id_number_masked = None
        else:
            stored = identity.store_id_number(cipher, raw, today=today)
            agree_with_id(stored.parsed, sex=changes.get("sex"), birth_date=changes.get("birth_date"))
            await refuse_duplicate(session, stored.index, child.id)
            child.id_number_cipher, child.id_number_index = stored.cipher, stored.index
            child.id_number_masked = stored.masked
            # The ID number is read off the 户口簿; sex and birth date follow it.
            sex, birth = Sex(stored.parsed.sex.value), stored.parsed.birth_date
    elif child.id_number_cipher is not None and ("sex" in changes or "birth_date" in changes):
        parsed = identity.parse_id_number(identity.reveal_id_number(cipher, child.id_number_cipher), today=today)
        agree_with_id(parsed, sex=changes.get("sex"), birth_date=changes.get("birth_date"))
    changes["sex"], changes["birth_date"] = sex, birth
    if birth != child.birth_date:
        check_birth_date(birth, today)
    since = changes.get("left_behind_since", child.left_behind_since)
    if "left_behind_since" in changes or birth != child.birth_date:
        check_left_behind_since(since, birth, today)
    if "name" in changes:
        child.name_pinyin, child.name_initials = identity.name_keys(changes["name"])

    for key, value in changes.items():
        if getattr(child, key) != value:
            setattr(child, key, value)
    if session.is_modified(child):
        child.updated_at = now
    await flush_or_conflict(session)
    return child


async def reveal_id_number(
    session: AsyncSession, principal: Principal, *, cipher: FieldCipher, child_id: uuid.UUID
) -> RevealedIdNumber:
    """The full ID number, for the school admin who needs it (e.g. for 资助 forms); audited."""
    if principal.role != Role.school_admin:
        raise Forbidden("只有学校管理员可以查看完整身份证号 (only school admins)", code="school_admin_only")
    child = await get_child(session, child_id)
    if child.id_number_cipher is None:
        raise NotFound("该儿童未登记身份证号 (no ID number on file)", code="id_number_missing")
    audit.record(
        session,
        action="child.reveal_id_number",
        resource_type="child",
        resource_id=child.id,
        school_id=child.school_id,
    )
    return RevealedIdNumber(child_id=child.id, id_number=identity.reveal_id_number(cipher, child.id_number_cipher))
