"""一人一档: a child's file — entered, read at the right level of detail, corrected, searched — and its life on
the roster (动态管理): transfer, parents coming home or leaving again, graduation, leaving, re-enrolment, and
the end-of-year promotion of whole classes (每学年末交接). Nothing is ever deleted.

Scope is applied by the session (a child outside it is simply not found → 404). Within scope, the level of
detail depends on who asks: see :func:`sees_full_detail`.
"""

import functools
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.clock import SHANGHAI
from api.crypto import FieldCipher
from api.errors import Conflict, Forbidden, Invalid, NotFound, field_error
from api.idcard import IdNumber
from api.models.accounts import Account, Role
from api.models.audit import AuditEntry
from api.models.base import Page
from api.models.children import (
    CHILD_EVENT_LABELS,
    CHILD_FIELD_LABELS,
    BecameLeftBehindRequest,
    Child,
    ChildBasic,
    ChildCreate,
    ChildEvent,
    ChildEventKind,
    ChildEventPublic,
    ChildFlag,
    ChildFull,
    ChildStatus,
    ChildSummary,
    ChildUpdate,
    FieldChange,
    GraduationRequest,
    HistoryEntry,
    LifecycleChange,
    MissingItem,
    ParentsAway,
    PromotedClass,
    PromotionRequest,
    PromotionResult,
    ReEnrolRequest,
    RevealedIdNumber,
    Sex,
    TransferRequest,
)
from api.models.guardians import ChildGuardian, Guardian
from api.models.organisations import School, SchoolClass, class_label
from api.pinyin import normalize_query
from api.scoping import Principal, as_system, get_principal
from api.services import identity
from api.services.completeness import (
    incomplete_condition,
    link_facts,
    link_facts_of,
    link_facts_subquery,
    missing_columns,
    missing_items,
    missing_of,
    missing_public,
    with_link_facts,
)

# Look-ups that deliberately cross scope; each use says why.

# Roles that see a child's full file whenever they can see the child at all. Never families: the file holds
# the school's rating of the family's own care and teachers' notes; they get the family view
# (api.services.guardians.family_child).
FULL_DETAIL_ROLES = frozenset({Role.platform_admin, Role.county_bureau, Role.township_official, Role.school_admin})
SCHOOL_ADMINS = frozenset({Role.platform_admin, Role.school_admin})
# A child of the archive is at most this old when entered (初中 ends around 15–16; repeaters, late starters).
MAX_AGE_ON_ENTRY = 25
_HAN = re.compile("[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")

FLAG_COLUMNS: dict[ChildFlag, Any] = {
    ChildFlag.special_hardship: Child.special_hardship,
    ChildFlag.single_parent: Child.single_parent,
    ChildFlag.struggling_learner: Child.struggling_learner,
    ChildFlag.disability: Child.disability,
    ChildFlag.needs_individual_plan: Child.needs_individual_plan,
}


# ---- small helpers ----------------------------------------------------------------------------------------


def today_in_china(now: datetime) -> date:
    return now.astimezone(SHANGHAI).date()


def age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def school_year_start(day: date) -> date:
    """The school year runs from 1 September (Asia/Shanghai dates)."""
    return date(day.year if day.month >= 9 else day.year - 1, 9, 1)


def sees_full_detail(principal: Principal, child: Child) -> bool:
    """School admins, the bureau, the township, the platform and the teachers of the child's class see the full
    file; other teachers of the school see the basic view (families: the family view, elsewhere)."""
    if principal.is_system or principal.role in FULL_DETAIL_ROLES:
        return True
    return principal.role == Role.teacher and child.class_id is not None and child.class_id in principal.class_ids


def flags_of(child: Child) -> list[ChildFlag]:
    return [flag for flag, column in FLAG_COLUMNS.items() if getattr(child, column.key)]


def _invalid(code: str, message: str, loc: str) -> Invalid:
    return Invalid(message, code=code, fields=[field_error([loc], message, code)])


def _shanghai(moment: datetime) -> datetime:
    return moment.astimezone(SHANGHAI)


async def get_child(session: AsyncSession, child_id: uuid.UUID, *, for_update: bool = False) -> Child:
    stmt = select(Child).where(Child.id == child_id)
    if for_update:
        stmt = stmt.with_for_update()
    child = (await session.execute(stmt)).scalar_one_or_none()
    if child is None:
        raise NotFound("找不到该儿童档案 (child not found)", code="child_not_found")
    return child


@dataclass(frozen=True)
class _Place:
    school_name: str | None
    county_id: uuid.UUID | None
    class_label: str | None
    grade: int | None


async def _place_of(session: AsyncSession, child: Child) -> _Place:
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
    return _Place(
        school_name=school[0] if school else None,
        county_id=school[1] if school else None,
        class_label=class_label(klass[0], klass[1]) if klass else None,
        grade=klass[0] if klass else None,
    )


async def _missing_of(session: AsyncSession, child: Child) -> list[MissingItem]:
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


def _summary_fields(
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
    session: AsyncSession, principal: Principal, child: Child, *, now: datetime, place: _Place | None = None
) -> ChildFull | ChildBasic:
    """The file at the caller's level of detail (no audit entry: callers that read record it)."""
    place = place or await _place_of(session, child)
    return _view(principal, child, place=place, missing=await _missing_of(session, child), now=now)


def _view(
    principal: Principal, child: Any, *, place: _Place, missing: Sequence[MissingItem], now: datetime
) -> ChildFull | ChildBasic:
    """The file at the caller's level of detail from ``child``: a :class:`Child`, or a row of its columns."""
    summary = _summary_fields(
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
        created_at=_shanghai(child.created_at),
        updated_at=_shanghai(child.updated_at),
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
        recorded_at=_shanghai(event.recorded_at),
        recorded_by_id=event.recorded_by_id,
    )


# ---- who may write ----------------------------------------------------------------------------------------


async def _heads_class(session: AsyncSession, principal: Principal, class_id: uuid.UUID) -> bool:
    head = (
        await session.execute(sa.select(col(SchoolClass.head_teacher_id)).where(col(SchoolClass.id) == class_id))
    ).scalar_one_or_none()
    return head is not None and head == principal.account_id


async def _require_writer(session: AsyncSession, principal: Principal, class_id: uuid.UUID | None) -> None:
    """School admins write every file of their school; a head teacher (班主任) the files of their class."""
    if principal.is_system or principal.role in SCHOOL_ADMINS:
        return
    if principal.role == Role.teacher and class_id is not None and await _heads_class(session, principal, class_id):
        return
    raise Forbidden(
        "只有学校管理员或该班班主任可以修改档案 (only school admins and the class's head teacher)",
        code="not_head_teacher",
    )


def _require_school_admin(principal: Principal) -> None:
    if not (principal.is_system or principal.role in SCHOOL_ADMINS):
        raise Forbidden("只有学校管理员可以办理 (only school admins can do this)", code="school_admin_only")


async def _class_of_school(session: AsyncSession, class_id: uuid.UUID, school_id: uuid.UUID) -> SchoolClass:
    klass = await session.get(SchoolClass, class_id)
    if klass is None:
        raise NotFound("班级不存在 (class not found)", code="class_not_found")
    if klass.school_id != school_id:
        raise _invalid("class_not_in_school", "班级不属于该学校 (the class belongs to another school)", "class_id")
    if not klass.is_active:
        raise _invalid("class_inactive", "该班级已停用 (the class is no longer active)", "class_id")
    return klass


# ---- identity and dates -----------------------------------------------------------------------------------


def _check_birth_date(birth: date, today: date) -> None:
    if birth > today:
        raise _invalid("birth_date_in_future", "出生日期晚于今天 (birth date is in the future)", "birth_date")
    if age_on(birth, today) >= MAX_AGE_ON_ENTRY:
        raise _invalid("birth_date_implausible", "出生日期不合理，请核对 (birth date is implausible)", "birth_date")


def _check_left_behind_since(since: date | None, birth: date, today: date) -> None:
    if since is None:
        return
    if since > today:
        raise _invalid(
            "left_behind_since_in_future",
            "留守起始时间晚于今天 (left_behind_since is in the future)",
            "left_behind_since",
        )
    if since < birth:
        raise _invalid(
            "left_behind_since_before_birth",
            "留守起始时间早于出生日期 (left_behind_since is before the birth date)",
            "left_behind_since",
        )


def _agree_with_id(parsed: IdNumber, *, sex: Sex | None, birth_date: date | None) -> None:
    if birth_date is not None and birth_date != parsed.birth_date:
        raise _invalid(
            "id_number_birth_date_mismatch",
            "出生日期与身份证号不一致，请核对 (birth date does not match the ID number)",
            "birth_date",
        )
    if sex is not None and sex.value != parsed.sex.value:
        raise _invalid(
            "id_number_sex_mismatch", "性别与身份证号不一致，请核对 (sex does not match the ID number)", "sex"
        )


async def _refuse_duplicate(session: AsyncSession, index: str, own_id: uuid.UUID | None) -> None:
    # SYSTEM: the same ID number may already be on file in another school; only the fact leaves here.
    async with as_system(session):
        existing = (
            await session.execute(sa.select(col(Child.id)).where(col(Child.id_number_index) == index))
        ).scalar_one_or_none()
    if existing is not None and existing != own_id:
        raise _duplicate()


def _duplicate() -> Conflict:
    message = "该身份证号已有档案；如为转学，请由原学校办理转学 (a child with this ID number already has a file)"
    return Conflict(message, code="child_duplicate_id_number", fields=[field_error(["id_number"], message, "conflict")])


async def _flush(session: AsyncSession) -> None:
    """Flush; a concurrent writer of the same ID number meets the unique index and gets the same 409."""
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        if "id_number_index" in str(exc.orig):
            raise _duplicate() from None
        raise


def _event(
    child: Child,
    kind: ChildEventKind,
    *,
    principal: Principal,
    now: datetime,
    effective_on: date,
    reason: str | None,
    from_school_id: uuid.UUID | None = None,
    to_school_id: uuid.UUID | None = None,
    from_class_id: uuid.UUID | None = None,
    to_class_id: uuid.UUID | None = None,
) -> ChildEvent:
    return ChildEvent(
        child_id=child.id,
        kind=kind,
        effective_on=effective_on,
        reason=reason,
        from_school_id=from_school_id,
        to_school_id=to_school_id,
        from_class_id=from_class_id,
        to_class_id=to_class_id,
        recorded_at=now,
        recorded_by_id=principal.account_id,
    )


def _effective_on(value: date | None, *, today: date, child: Child, loc: str = "effective_on") -> date:
    day = value or today
    if day > today:
        raise _invalid("effective_on_in_future", "生效日期不能晚于今天 (the date is in the future)", loc)
    if day < child.birth_date:
        raise _invalid("effective_on_before_birth", "生效日期早于出生日期 (the date is before the birth date)", loc)
    return day


# ---- create, read, update ---------------------------------------------------------------------------------


async def create_child(
    session: AsyncSession, principal: Principal, *, cipher: FieldCipher, data: ChildCreate, now: datetime
) -> Child:
    """Open a child's file in a school (the caller's own by default) and record the ``enrolled`` event."""
    today = today_in_china(now)
    school_id = data.school_id or principal.school_id
    if school_id is None:
        raise _invalid("school_required", "请指定学校 (school_id is required)", "school_id")
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    if data.class_id is not None:
        await _class_of_school(session, data.class_id, school.id)
    await _require_writer(session, principal, data.class_id)

    stored = None
    sex, birth = data.sex, data.birth_date
    if data.id_number is not None:
        stored = identity.store_id_number(cipher, data.id_number, today=today)
        _agree_with_id(stored.parsed, sex=sex, birth_date=birth)
        sex, birth = Sex(stored.parsed.sex.value), stored.parsed.birth_date
        await _refuse_duplicate(session, stored.index, None)
    if sex is None:
        raise _invalid("sex_required", "请填写性别或身份证号 (sex or id_number is required)", "sex")
    if birth is None:
        raise _invalid(
            "birth_date_required", "请填写出生日期或身份证号 (birth_date or id_number is required)", "birth_date"
        )
    _check_birth_date(birth, today)
    _check_left_behind_since(data.left_behind_since, birth, today)

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
    enrolled_on = _effective_on(data.enrolled_on, today=today, child=child, loc="enrolled_on")
    session.add(child)
    await _flush(session)
    session.add(
        _event(
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
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, now: datetime
) -> ChildFull | ChildBasic:
    """The file at the caller's level of detail; every read of the full file is audited (``child.read``).

    One query: the child's columns (read, not loaded as an object: nothing changes), its school and class, and
    what the file lacks."""
    row: Any = (await session.execute(_FILE, {"child_id": child_id})).one_or_none()
    if row is None:
        raise NotFound("找不到该儿童档案 (child not found)", code="child_not_found")
    place = _Place(
        school_name=row.school_name,
        county_id=row.county_id,
        class_label=class_label(row.grade, row.class_name) if row.grade is not None else None,
        grade=row.grade,
    )
    view = _view(principal, row, place=place, missing=missing_of(row), now=now)
    if isinstance(view, ChildFull):
        audit.record(
            session,
            action="child.read",
            resource_type="child",
            resource_id=row.id,
            school_id=row.school_id,
            county_id=place.county_id,
        )
    return view


def _file_statement() -> Any:
    # Built once. The school and class are joined, as _place_of reads them, outer: a staff member who sees
    # the child sees both (the same scope rules), and a missing class is a file without one.
    this_child = col(Child.id) == sa.bindparam("child_id", type_=sa.Uuid())
    links = link_facts_subquery(this_child)
    return with_link_facts(
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
        .outerjoin(SchoolClass, col(SchoolClass.id) == Child.class_id),
        links,
    ).where(this_child)


_FILE = _file_statement()


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
    await _require_writer(session, principal, child.class_id)
    changes = data.model_dump(exclude_unset=True)

    if "class_id" in changes and changes["class_id"] != child.class_id:
        new_class = changes["class_id"]
        if new_class is not None:
            await _class_of_school(session, new_class, child.school_id)
            await _require_writer(session, principal, new_class)
        session.add(
            _event(
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
            raise _invalid(
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
            _agree_with_id(stored.parsed, sex=changes.get("sex"), birth_date=changes.get("birth_date"))
            await _refuse_duplicate(session, stored.index, child.id)
            child.id_number_cipher, child.id_number_index = stored.cipher, stored.index
            child.id_number_masked = stored.masked
            # The ID number is read off the 户口簿; sex and birth date follow it.
            sex, birth = Sex(stored.parsed.sex.value), stored.parsed.birth_date
    elif child.id_number_cipher is not None and ("sex" in changes or "birth_date" in changes):
        parsed = identity.parse_id_number(identity.reveal_id_number(cipher, child.id_number_cipher), today=today)
        _agree_with_id(parsed, sex=changes.get("sex"), birth_date=changes.get("birth_date"))
    changes["sex"], changes["birth_date"] = sex, birth
    if birth != child.birth_date:
        _check_birth_date(birth, today)
    since = changes.get("left_behind_since", child.left_behind_since)
    if "left_behind_since" in changes or birth != child.birth_date:
        _check_left_behind_since(since, birth, today)
    if "name" in changes:
        child.name_pinyin, child.name_initials = identity.name_keys(changes["name"])

    for key, value in changes.items():
        if getattr(child, key) != value:
            setattr(child, key, value)
    if session.is_modified(child):
        child.updated_at = now
    await _flush(session)
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


# ---- search and lists -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildFilters:
    q: str | None = None
    school_id: uuid.UUID | None = None
    class_id: uuid.UUID | None = None
    statuses: tuple[ChildStatus, ...] = (ChildStatus.enrolled,)
    left_behind: bool | None = None
    flags: tuple[ChildFlag, ...] = ()
    complete: bool | None = None


def _name_match(q: str) -> tuple[str, dict[str, str]] | None:
    """How a name query matches (a kind that shapes the statement) and the patterns it binds."""
    key = normalize_query(q)
    if not key:
        return None
    if _HAN.search(key):
        if all(_HAN.fullmatch(ch) for ch in key):
            return "han", {"name_like": f"%{key}%"}
        _, initials = identity.name_keys(key)
        return "mixed", {"name_like": f"%{key}%", "initials_prefix": f"{initials}%"}
    return "letters", {"pinyin_like": f"%{key}%", "initials_prefix": f"{key}%"}


def _name_clause(kind: str) -> Any:
    """张晓明 by 晓明 (characters, partial), by xiaoming / zhangxm (pinyin, partial) or by zxm (initials)."""
    if kind == "han":
        # Characters: a partial match on the name (trigram index from three characters on). Han characters
        # have no case: LIKE, which is several times cheaper than ILIKE on a scan.
        return col(Child.name).like(sa.bindparam("name_like"))
    if kind == "mixed":
        # Characters mixed with letters (张xm): also the initials of the whole query as a prefix.
        return sa.or_(
            col(Child.name).ilike(sa.bindparam("name_like")),
            col(Child.name_initials).like(sa.bindparam("initials_prefix")),
        )
    return sa.or_(
        col(Child.name_pinyin).like(sa.bindparam("pinyin_like")),
        col(Child.name_initials).like(sa.bindparam("initials_prefix")),
    )


def name_condition(q: str) -> Any:
    """The name condition of a query with its patterns bound (None: the query has nothing to match)."""
    match = _name_match(q)
    return None if match is None else _name_clause(match[0]).params(**match[1])


@dataclass(frozen=True)
class _SearchShape:
    """What a search's statement depends on besides the values it binds: one statement is built per shape."""

    name: str | None
    school: bool
    klass: bool
    statuses: bool
    left_behind: bool | None
    flags: tuple[ChildFlag, ...]
    complete: bool | None


def _search_shape(filters: ChildFilters) -> tuple[_SearchShape, dict[str, Any]]:
    match = _name_match(filters.q) if filters.q else None
    params: dict[str, Any] = dict(match[1]) if match else {}
    if filters.school_id is not None:
        params["school_id"] = filters.school_id
    if filters.class_id is not None:
        params["class_id"] = filters.class_id
    if filters.statuses:
        params["statuses"] = list(filters.statuses)
    shape = _SearchShape(
        name=match[0] if match else None,
        school=filters.school_id is not None,
        klass=filters.class_id is not None,
        statuses=bool(filters.statuses),
        left_behind=filters.left_behind,
        flags=tuple(sorted(set(filters.flags))),
        complete=filters.complete,
    )
    return shape, params


def _conditions(shape: _SearchShape) -> list[Any]:
    conditions: list[Any] = []
    if shape.name is not None:
        conditions.append(_name_clause(shape.name))
    if shape.school:
        conditions.append(col(Child.school_id) == sa.bindparam("school_id"))
    if shape.klass:
        conditions.append(col(Child.class_id) == sa.bindparam("class_id"))
    if shape.statuses:
        conditions.append(col(Child.status).in_(sa.bindparam("statuses", expanding=True)))
    if shape.left_behind is not None:
        conditions.append(col(Child.is_left_behind).is_(shape.left_behind))
    for flag in shape.flags:
        conditions.append(FLAG_COLUMNS[flag].is_(True))
    return conditions


_SUMMARY_COLUMNS = (
    Child.id, Child.school_id, Child.class_id, Child.name, Child.sex, Child.status, Child.is_left_behind,
    Child.parents_away, *FLAG_COLUMNS.values(),
)  # fmt: skip


@functools.lru_cache(maxsize=256)
def _search_statements(shape: _SearchShape) -> tuple[Any, Any]:
    """The page of a search as one statement, and the count of its matches (for a page past the end).

    The page: the ids in order with the total as a window count over narrow rows (one pass over the matching
    children), then for those ids the summary columns, school, class and what each file lacks — read as
    columns, not loaded as objects. Built once per shape; offset and limit are parameters too."""
    conditions = _conditions(shape)
    count_stmt = sa.select(sa.func.count()).select_from(Child)
    order = (
        col(School.name),
        col(Child.school_id),
        col(SchoolClass.grade).asc().nulls_last(),
        col(SchoolClass.name).asc().nulls_last(),
        col(Child.name_pinyin),
        col(Child.name),
        col(Child.id),
    )
    keys = (
        sa.select(
            col(Child.id).label("id"),
            sa.func.count().over().label("total"),
            sa.func.row_number().over(order_by=order).label("n"),
        )
        .select_from(Child)
        .join(School, col(School.id) == Child.school_id)
        .outerjoin(SchoolClass, col(SchoolClass.id) == Child.class_id)
    )
    if shape.complete is not None:
        matching = link_facts_subquery(*conditions)
        incomplete = incomplete_condition(matching)
        conditions.append(sa.not_(incomplete) if shape.complete else incomplete)
        count_stmt = with_link_facts(count_stmt, matching)
        keys = with_link_facts(keys, matching)
    page = (
        keys.where(*conditions)
        .order_by(*order)
        .offset(sa.bindparam("offset", type_=sa.Integer()))
        .limit(sa.bindparam("limit", type_=sa.Integer()))
        .cte("page")
    )
    links = link_facts_of(sa.select(page.c.id))
    stmt = (
        sa.select(
            page.c.total,
            *[col(column) for column in _SUMMARY_COLUMNS],
            col(School.name).label("school_name"),
            col(SchoolClass.grade).label("grade"),
            col(SchoolClass.name).label("class_name"),
            *missing_columns(links),
        )
        .select_from(page)
        .join(Child, col(Child.id) == page.c.id)
        .join(School, col(School.id) == Child.school_id)
        .outerjoin(SchoolClass, col(SchoolClass.id) == Child.class_id)
        .outerjoin(links, links.c.child_id == page.c.id)
        .order_by(page.c.n)
    )
    return stmt, count_stmt.where(*conditions)


async def search_children(
    session: AsyncSession,
    principal: Principal,
    *,
    filters: ChildFilters,
    offset: int,
    limit: int,
) -> Page[ChildSummary]:
    """Children in scope matching the filters, by school, class and name, with the total; one audit entry."""
    shape, params = _search_shape(filters)
    page_stmt, count_stmt = _search_statements(shape)
    rows: list[Any] = list((await session.execute(page_stmt, params | {"offset": offset, "limit": limit})).all())
    if rows:
        count = rows[0].total
    elif offset == 0:
        count = 0
    else:  # a page past the end: the total needs its own count
        count = (await session.execute(count_stmt, params)).scalar_one()
    data = [
        ChildSummary(
            **_summary_fields(
                row,
                school_name=row.school_name,
                class_label=class_label(row.grade, row.class_name) if row.grade is not None else None,
                grade=row.grade,
                missing=missing_of(row),
            )
        )
        for row in rows
    ]
    audit.record(
        session,
        action="child.list",
        resource_type="child",
        school_id=filters.school_id or principal.school_id,
        detail={
            "q": filters.q,
            "school_id": str(filters.school_id) if filters.school_id else None,
            "class_id": str(filters.class_id) if filters.class_id else None,
            "status": [s.value for s in filters.statuses],
            "left_behind": filters.left_behind,
            "flags": [f.value for f in filters.flags],
            "complete": filters.complete,
            "offset": offset,
            "count": count,
            "child_ids": [str(c.id) for c in data],
        },
    )
    return Page(data=data, count=count)


# ---- history ----------------------------------------------------------------------------------------------

# Columns whose changes say nothing to a person (derived keys, bookkeeping) or are shown through another.
_HIDDEN_IN_HISTORY = {"id", "created_at", "updated_at", "name_pinyin", "name_initials", "id_number_index"}


def _field_changes(action: str, changes: dict[str, Any] | None) -> list[FieldChange]:
    out: list[FieldChange] = []
    for key, value in (changes or {}).items():
        if key in _HIDDEN_IN_HISTORY:
            continue
        name = "id_number" if key == "id_number_cipher" else key
        label = "身份证号" if name == "id_number" else CHILD_FIELD_LABELS.get(key, key)
        if action.endswith(".create"):
            redacted = value == audit.REDACTED
            out.append(FieldChange(field=name, label=label, new=None if redacted else value, redacted=redacted))
        elif isinstance(value, dict) and value.get("changed"):
            out.append(FieldChange(field=name, label=label, redacted=True))
        elif isinstance(value, dict):
            out.append(FieldChange(field=name, label=label, old=value.get("old"), new=value.get("new")))
    return out


async def child_history(session: AsyncSession, principal: Principal, *, child_id: uuid.UUID) -> list[HistoryEntry]:
    """Who changed which field when (from the audit log), merged with the child's life events; newest first."""
    child = await get_child(session, child_id)
    if principal.role == Role.family or not sees_full_detail(principal, child):
        raise Forbidden("无权查看该儿童的档案变更记录 (not your class)", code="detail_forbidden")
    # SYSTEM: the audit log is otherwise readable only by school admins and the bureau, and a change may have
    # been made by the bureau or by staff of the child's former school; the child was found in scope, the
    # caller has full detail rights, and only this child's own entries and their authors' names are read.
    async with as_system(session):
        entries = (
            (
                await session.execute(
                    select(AuditEntry).where(
                        AuditEntry.resource_type == "child",
                        AuditEntry.resource_id == str(child.id),
                        col(AuditEntry.action).in_(["child.create", "child.update"]),
                    )
                )
            )
            .scalars()
            .all()
        )
        events = (await session.execute(select(ChildEvent).where(ChildEvent.child_id == child.id))).scalars().all()
        actor_ids = {e.account_id for e in entries if e.account_id}
        actor_ids |= {e.recorded_by_id for e in events if e.recorded_by_id}
        names: dict[uuid.UUID, str] = {}
        if actor_ids:
            rows = await session.execute(
                sa.select(col(Account.id), col(Account.display_name)).where(col(Account.id).in_(actor_ids))
            )
            names = {account_id: name for account_id, name in rows.all()}
    history = [
        HistoryEntry(
            at=_shanghai(e.at),
            source="change",
            action=e.action,
            actor_id=e.account_id,
            actor_name=names.get(e.account_id) if e.account_id else None,
            changes=_field_changes(e.action, e.changes),
        )
        for e in entries
    ]
    history += [
        HistoryEntry(
            at=_shanghai(e.recorded_at),
            source="event",
            action=e.kind.value,
            actor_id=e.recorded_by_id,
            actor_name=names.get(e.recorded_by_id) if e.recorded_by_id else None,
            event=event_public(e),
        )
        for e in events
    ]
    history.sort(key=lambda h: (h.at, h.source == "event"), reverse=True)
    return history


# ---- lifecycle --------------------------------------------------------------------------------------------


def _require_status(child: Child, *allowed: ChildStatus) -> None:
    if child.status not in allowed:
        if ChildStatus.enrolled in allowed:
            raise Conflict("该儿童已不在册 (the child is not enrolled)", code="child_not_enrolled")
        raise Conflict("该儿童仍在册 (the child is still enrolled)", code="child_already_enrolled")


async def transfer_child(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, data: TransferRequest, now: datetime
) -> ChildEvent:
    """转学: the file, guardians and history follow the child to the receiving school; the old school loses
    access. The child arrives without a class: the receiving school places them."""
    _require_school_admin(principal)
    child = await get_child(session, child_id, for_update=True)
    _require_status(child, ChildStatus.enrolled)
    # SYSTEM: the receiving school is usually outside the sending school's scope; it is named by id.
    async with as_system(session):
        target = (await session.execute(select(School).where(School.id == data.to_school_id))).scalar_one_or_none()
    if target is None:
        raise NotFound("转入学校不存在 (receiving school not found)", code="school_not_found")
    if target.id == child.school_id:
        raise _invalid("transfer_same_school", "转入学校与原学校相同 (same school)", "to_school_id")
    effective_on = _effective_on(data.effective_on, today=today_in_china(now), child=child)
    event = _event(
        child,
        ChildEventKind.transferred,
        principal=principal,
        now=now,
        effective_on=effective_on,
        reason=data.reason,
        from_school_id=child.school_id,
        to_school_id=target.id,
        from_class_id=child.class_id,
    )
    # SYSTEM: with this write the child leaves the sending school's scope (row security would refuse it).
    async with as_system(session):
        session.add(event)
        child.school_id = target.id
        child.class_id = None
        child.updated_at = now
        await session.flush()
    return event


async def parents_returned(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, data: LifecycleChange, now: datetime
) -> ChildEvent:
    """父母返乡: the child is no longer left-behind (the file stays, and counts no more toward 建档率)."""
    child = await get_child(session, child_id, for_update=True)
    await _require_writer(session, principal, child.class_id)
    if not child.is_left_behind:
        raise Conflict("该儿童目前不是留守儿童 (the child is not left-behind)", code="not_left_behind")
    effective_on = _effective_on(data.effective_on, today=today_in_china(now), child=child)
    child.is_left_behind = False
    child.parents_away = ParentsAway.none
    child.left_behind_since = None
    child.updated_at = now
    event = _event(
        child,
        ChildEventKind.parents_returned,
        principal=principal,
        now=now,
        effective_on=effective_on,
        reason=data.reason,
    )
    session.add(event)
    await session.flush()
    return event


async def became_left_behind(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, data: BecameLeftBehindRequest, now: datetime
) -> ChildEvent:
    """父母外出: the child becomes left-behind again (or for the first time)."""
    child = await get_child(session, child_id, for_update=True)
    await _require_writer(session, principal, child.class_id)
    if child.is_left_behind:
        raise Conflict("该儿童已是留守儿童 (the child is already left-behind)", code="already_left_behind")
    today = today_in_china(now)
    effective_on = _effective_on(data.effective_on, today=today, child=child)
    since = data.left_behind_since or effective_on
    _check_left_behind_since(since, child.birth_date, today)
    child.is_left_behind = True
    child.parents_away = data.parents_away
    child.left_behind_since = since
    child.updated_at = now
    event = _event(
        child,
        ChildEventKind.became_left_behind,
        principal=principal,
        now=now,
        effective_on=effective_on,
        reason=data.reason,
    )
    session.add(event)
    await session.flush()
    return event


async def _change_status(
    session: AsyncSession,
    principal: Principal,
    *,
    child_id: uuid.UUID,
    now: datetime,
    effective_on: date | None,
    reason: str,
    kind: ChildEventKind,
    status: ChildStatus,
    class_id: uuid.UUID | None = None,
) -> ChildEvent:
    _require_school_admin(principal)
    child = await get_child(session, child_id, for_update=True)
    if status == ChildStatus.enrolled:
        _require_status(child, ChildStatus.graduated, ChildStatus.left)
    else:
        _require_status(child, ChildStatus.enrolled)
    day = _effective_on(effective_on, today=today_in_china(now), child=child)
    event = _event(child, kind, principal=principal, now=now, effective_on=day, reason=reason)
    if kind == ChildEventKind.re_enrolled:
        if class_id is not None:
            await _class_of_school(session, class_id, child.school_id)
        event.to_school_id, event.from_class_id, event.to_class_id = child.school_id, child.class_id, class_id
        child.class_id = class_id
    else:
        event.from_school_id, event.from_class_id = child.school_id, child.class_id
    child.status = status
    child.status_reason = reason
    child.status_changed_on = day
    child.updated_at = now
    session.add(event)
    await session.flush()
    return event


async def graduate_child(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, data: GraduationRequest, now: datetime
) -> ChildEvent:
    """毕业: the child leaves the roster as a graduate; the file stays with the school."""
    return await _change_status(
        session,
        principal,
        child_id=child_id,
        now=now,
        effective_on=data.effective_on,
        reason=data.reason or "毕业",
        kind=ChildEventKind.graduated,
        status=ChildStatus.graduated,
    )


async def leave_school(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, data: LifecycleChange, now: datetime
) -> ChildEvent:
    """离校 (转出县外、辍学、随父母外出…): off the roster with a reason, never deleted."""
    return await _change_status(
        session,
        principal,
        child_id=child_id,
        now=now,
        effective_on=data.effective_on,
        reason=data.reason,
        kind=ChildEventKind.left,
        status=ChildStatus.left,
    )


async def re_enrol_child(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, data: ReEnrolRequest, now: datetime
) -> ChildEvent:
    """重新入学: a child who left or graduated is back on the school's roster."""
    return await _change_status(
        session,
        principal,
        child_id=child_id,
        now=now,
        effective_on=data.effective_on,
        reason=data.reason,
        kind=ChildEventKind.re_enrolled,
        status=ChildStatus.enrolled,
        class_id=data.class_id,
    )


# ---- 每学年末交接: promotion --------------------------------------------------------------------------------


async def _check_head_teacher(session: AsyncSession, school_id: uuid.UUID, account_id: uuid.UUID) -> None:
    teacher = await session.get(Account, account_id)
    if (
        teacher is None
        or teacher.school_id != school_id
        or not teacher.is_active
        or teacher.role not in (Role.teacher, Role.school_admin)
    ):
        raise _invalid(
            "head_teacher_invalid", "班主任必须是本校教师 (head teacher must be staff of this school)", "head_teachers"
        )


async def promote_classes(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, data: PromotionRequest, now: datetime
) -> PromotionResult:
    """Move every enrolled child of the given classes to the class of the next grade; the last grade graduates.

    One transaction: either every child moves or none does. A child already promoted in the same school
    year (from 1 September, by ``effective_on``) makes the whole promotion refuse with 409, so that running it
    twice never moves anyone two grades. A next-grade class that still holds children who are not moving on
    in the same promotion is refused too: promote the higher grades first, or the whole school at once.
    """
    _require_school_admin(principal)
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    today = today_in_china(now)
    effective_on = data.effective_on or today
    if effective_on > today:
        raise _invalid("effective_on_in_future", "生效日期不能晚于今天 (the date is in the future)", "effective_on")
    year_start = school_year_start(effective_on)
    year_end = date(year_start.year + 1, 9, 1)
    reason = data.reason or "学年末升级"

    requested: dict[uuid.UUID, uuid.UUID | None] = (
        dict(data.classes) if data.classes is not None else dict.fromkeys(data.create_next_grade or [])
    )
    wanted = set(requested) | {t for t in requested.values() if t is not None}
    found = {
        c.id: c for c in (await session.execute(select(SchoolClass).where(col(SchoolClass.id).in_(wanted)))).scalars()
    }
    for class_id in wanted:
        klass = found.get(class_id)
        if klass is None:
            raise NotFound("班级不存在 (class not found)", code="class_not_found")
        if klass.school_id != school.id:
            raise _invalid("class_not_in_school", "班级不属于该学校 (the class belongs to another school)", "classes")
    for from_id in data.head_teachers:
        if from_id not in requested:
            raise _invalid(
                "head_teacher_invalid", "班主任只能指定给本次升级的班级 (class not in this promotion)", "head_teachers"
            )
        await _check_head_teacher(session, school.id, data.head_teachers[from_id])

    # Where each class goes: None = graduates.
    plan: dict[uuid.UUID, SchoolClass | None] = {}
    created: set[uuid.UUID] = set()
    for from_id, to_id in requested.items():
        source = found[from_id]
        target: SchoolClass | None
        if source.grade >= data.last_grade:
            if to_id is not None:
                raise _invalid(
                    "promotion_last_grade",
                    f"{class_label(source.grade, source.name)}是毕业年级，应毕业而非升级 (the last grade graduates)",
                    "classes",
                )
            if from_id in data.head_teachers:
                raise _invalid("head_teacher_invalid", "毕业班无需指定班主任 (a graduating class)", "head_teachers")
            plan[from_id] = None
            continue
        if data.classes is not None:
            if to_id is None:
                raise _invalid(
                    "promotion_target_required",
                    f"请为{class_label(source.grade, source.name)}指定升入的班级 (target class required)",
                    "classes",
                )
            target = found[to_id]
            if target.grade != source.grade + 1 or not target.is_active:
                raise _invalid(
                    "promotion_grade_mismatch",
                    f"{class_label(target.grade, target.name)}不是{class_label(source.grade, source.name)}"
                    "的下一年级 (the target must be an active class of the next grade)",
                    "classes",
                )
        else:
            target = (
                await session.execute(
                    select(SchoolClass).where(
                        SchoolClass.school_id == school.id,
                        SchoolClass.grade == source.grade + 1,
                        SchoolClass.name == source.name,
                        col(SchoolClass.is_active),
                    )
                )
            ).scalar_one_or_none()
            if target is None:
                target = SchoolClass(school_id=school.id, grade=source.grade + 1, name=source.name)
                session.add(target)
                created.add(target.id)
        plan[from_id] = target
    await session.flush()

    children = list(
        (
            await session.execute(
                select(Child)
                .where(col(Child.class_id).in_(list(plan)), Child.status == ChildStatus.enrolled)
                .with_for_update()
            )
        ).scalars()
    )
    moving = {c.id for c in children}
    this_year = (
        col(ChildEvent.kind) == ChildEventKind.promoted,
        col(ChildEvent.effective_on) >= year_start,
        col(ChildEvent.effective_on) < year_end,
    )
    promoted_classes = {
        class_id
        for class_id in (
            await session.execute(
                sa.select(col(ChildEvent.from_class_id))
                .where(col(ChildEvent.from_class_id).in_(list(plan)), *this_year)
                .distinct()
            )
        ).scalars()
        if class_id is not None
    }
    if promoted_classes:
        labels = "、".join(sorted(class_label(found[c].grade, found[c].name) for c in promoted_classes))
        raise Conflict(
            f"{labels}本学年已升级，不能重复升级 (already promoted this school year)", code="already_promoted"
        )
    if moving:
        already = (
            await session.execute(
                sa.select(sa.func.count(sa.distinct(col(ChildEvent.child_id)))).where(
                    col(ChildEvent.child_id).in_(moving), *this_year
                )
            )
        ).scalar_one()
        if already:
            raise Conflict(
                f"本学年已有{already}名学生升过级，不能重复升级 ({already} children were already promoted this school "
                "year)",
                code="already_promoted",
            )
    targets = {t.id for t in plan.values() if t is not None}
    if targets:
        staying = (
            await session.execute(
                sa.select(sa.func.count()).where(
                    col(Child.class_id).in_(targets),
                    col(Child.status) == ChildStatus.enrolled,
                    col(Child.id).not_in(moving) if moving else sa.true(),
                )
            )
        ).scalar_one()
        if staying:
            raise Conflict(
                f"升入的班级里还有{staying}名未升级的学生；请先升级高年级，或一次升级全校 "
                "(a target class still holds children who are not moving on)",
                code="target_class_not_empty",
            )

    counts: dict[uuid.UUID, list[int]] = {from_id: [0, 0] for from_id in plan}
    for child in children:
        assert child.class_id is not None
        target = plan[child.class_id]
        counts[child.class_id][0 if target is not None else 1] += 1
        if target is None:
            session.add(
                _event(
                    child,
                    ChildEventKind.graduated,
                    principal=principal,
                    now=now,
                    effective_on=effective_on,
                    reason="毕业",
                    from_school_id=school.id,
                    from_class_id=child.class_id,
                )
            )
            child.status = ChildStatus.graduated
            child.status_reason = "毕业"
            child.status_changed_on = effective_on
        else:
            session.add(
                _event(
                    child,
                    ChildEventKind.promoted,
                    principal=principal,
                    now=now,
                    effective_on=effective_on,
                    reason=reason,
                    from_class_id=child.class_id,
                    to_class_id=target.id,
                )
            )
            child.class_id = target.id
        child.updated_at = now
    for from_id, account_id in data.head_teachers.items():
        target = plan[from_id]
        assert target is not None
        target.head_teacher_id = account_id
    await session.flush()

    result = []
    for from_id, target in plan.items():
        source = found[from_id]
        result.append(
            PromotedClass(
                from_class_id=from_id,
                from_label=class_label(source.grade, source.name),
                to_class_id=target.id if target else None,
                to_label=class_label(target.grade, target.name) if target else None,
                created=target is not None and target.id in created,
                promoted=counts[from_id][0],
                graduated=counts[from_id][1],
            )
        )
    result.sort(key=lambda c: (found[c.from_class_id].grade, found[c.from_class_id].name))
    return PromotionResult(
        school_id=school.id,
        school_year=f"{year_start.year}-{year_start.year + 1}",
        effective_on=effective_on,
        promoted=sum(c.promoted for c in result),
        graduated=sum(c.graduated for c in result),
        classes=result,
    )
