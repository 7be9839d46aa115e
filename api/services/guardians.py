"""Guardians of a child (在外务工家长, 委托监护人): stored once per person, linked to each child they care for,
with the order in which they are called in an emergency; guardian invites; the family's own view.

Scope is applied by the session: a child or guardian outside the caller's scope is simply not found (404).
Who may *write* is decided here: platform and school admins, and the teachers who head or teach the
child's class. Every write to ``guardian`` and ``child_guardian`` is audited by the flush hook.
"""

import hashlib
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.errors import Conflict, Forbidden, Invalid, NotFound, field_error
from api.models.accounts import Account, Invite, InviteKind, Role
from api.models.children import Child
from api.models.guardians import (
    GUARDIAN_ROLE_LABELS,
    ChildGuardian,
    FamilyChild,
    FamilyChildDetail,
    FamilyGuardianPublic,
    FamilyGuardianUpdate,
    Guardian,
    GuardianChildLink,
    GuardianCreate,
    GuardianDetail,
    GuardianInviteIssued,
    GuardianLinkCreate,
    GuardianLinkCreated,
    GuardianLinkEnd,
    GuardianLinkPublic,
    GuardianLinkUpdate,
    GuardianPublic,
    GuardianUpdate,
)
from api.models.organisations import School, SchoolClass, class_label
from api.phones import PhoneError, mask_phone, normalize_phone
from api.scoping import Principal, as_system
from api.services.accounts import create_invite
from api.services.children import sees_full_detail, today_in_china
from api.settings import Settings

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


def _guardian_values(data: GuardianCreate | GuardianUpdate | FamilyGuardianUpdate, now: datetime) -> dict[str, Any]:
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


def _require_writer(principal: Principal, child: Child) -> None:
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


async def _links(session: AsyncSession, child_id: uuid.UUID) -> list[tuple[ChildGuardian, Guardian]]:
    """All links of a child (active first, in call order; then ended ones, latest first) with the people."""
    stmt = (
        select(ChildGuardian, Guardian)
        .join(Guardian, col(Guardian.id) == ChildGuardian.guardian_id)
        .where(ChildGuardian.child_id == child_id)
        .order_by(
            col(ChildGuardian.is_active).desc(),
            col(ChildGuardian.contact_order),
            col(ChildGuardian.until).desc().nulls_last(),
            col(ChildGuardian.created_at),
        )
    )
    return [(link, guardian) for link, guardian in (await session.execute(stmt)).all()]


def _find_link(links: Sequence[tuple[ChildGuardian, Guardian]], link_id: uuid.UUID) -> tuple[ChildGuardian, Guardian]:
    for link, guardian in links:
        if link.id == link_id:
            return link, guardian
    raise NotFound(LINK_NOT_FOUND, code="guardian_link_not_found")


def _place(active: list[ChildGuardian], moved: ChildGuardian | None, position: int | None) -> None:
    """Renumber the active links 1..n without gaps, putting ``moved`` at ``position`` (default: last)."""
    others = [link for link in active if link is not moved]
    others.sort(key=lambda link: (link.contact_order, link.created_at))
    if moved is not None:
        index = len(others) if position is None else min(max(position, 1), len(others) + 1) - 1
        others.insert(index, moved)
    for number, link in enumerate(others, start=1):
        if link.contact_order != number:
            link.contact_order = number


def _active(links: Iterable[tuple[ChildGuardian, Guardian]]) -> list[ChildGuardian]:
    return [link for link, _ in links if link.is_active]


async def _read_links(
    session: AsyncSession, principal: Principal, child: Child, *, now: datetime
) -> list[GuardianLinkPublic]:
    full = sees_full_detail(principal, child)
    return [link_public(link, g, now=now, full=full) for link, g in await _links(session, child.id)]


# ---- the guardian list of a child ------------------------------------------------------------------------


async def list_guardians(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, now: datetime
) -> list[GuardianLinkPublic]:
    """A child's guardians in emergency call order (ended links last). Teachers of other classes see masked
    phones (the rule of the child's file, :func:`api.services.children.sees_full_detail`); full reads are
    audited."""
    child = await get_child(session, child_id)
    result = await _read_links(session, principal, child, now=now)
    if sees_full_detail(principal, child):
        audit.record(
            session,
            action="child_guardians.read",
            resource_type="child",
            resource_id=child.id,
            school_id=child.school_id,
        )
    return result


async def _lock_person(session: AsyncSession, school_id: uuid.UUID, phone: str) -> None:
    """Two clerks entering the same grandmother at the same moment must not make two records of her."""
    digest = hashlib.sha256(f"guardian:{school_id}:{phone}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    await session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


async def _same_person_in_school(
    session: AsyncSession, *, school_id: uuid.UUID, name: str, phone: str
) -> Guardian | None:
    """A guardian with the same name and number already linked to a child of this school."""
    stmt = (
        select(Guardian)
        .join(ChildGuardian, col(ChildGuardian.guardian_id) == Guardian.id)
        .join(Child, col(Child.id) == ChildGuardian.child_id)
        .where(Child.school_id == school_id, Guardian.phone == phone, Guardian.name == name)
        .order_by(col(Guardian.created_at))
        .limit(1)
    )
    return (await session.execute(stmt)).scalars().first()


async def add_guardian(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, data: GuardianLinkCreate, now: datetime
) -> GuardianLinkCreated:
    """Link a guardian to a child: an existing person (``guardian_id``), the same person already on file
    for this school (same name and phone: reused, blanks filled in), or a new person."""
    child = await get_child(session, child_id, lock=True)
    _require_writer(principal, child)
    reused = False
    if data.guardian_id is not None:
        found = await session.get(Guardian, data.guardian_id)
        if found is None:
            raise NotFound(GUARDIAN_NOT_FOUND, code="guardian_not_found")
        guardian = found
    else:
        assert data.guardian is not None
        values = _guardian_values(data.guardian, now)
        existing = None
        if values.get("phone"):
            await _lock_person(session, child.school_id, values["phone"])
            existing = await _same_person_in_school(
                session, school_id=child.school_id, name=values["name"], phone=values["phone"]
            )
        if existing is not None:
            guardian, reused = existing, True
            blanks = {k: v for k, v in values.items() if v is not None and getattr(guardian, k) is None}
            for key, value in blanks.items():
                setattr(guardian, key, value)
            if blanks:
                guardian.updated_at = now
        else:
            guardian = Guardian(**values, created_at=now, updated_at=now)
            session.add(guardian)
            await session.flush()

    links = await _links(session, child.id)
    if any(link.guardian_id == guardian.id for link, _ in links):
        raise Conflict(
            "该监护人已在此学生名下 (this guardian is already linked to the child)", code="guardian_already_linked"
        )
    link = ChildGuardian(
        child_id=child.id,
        guardian_id=guardian.id,
        role=data.role,
        relation=normalise_name(data.relation),
        contact_order=99,
        is_active=True,
        since=data.since,
        created_at=now,
    )
    _place(_active(links), link, data.contact_order)
    session.add(link)
    await session.flush()
    public = link_public(link, guardian, now=now)
    return GuardianLinkCreated(**public.model_dump(), reused=reused)


async def update_link(
    session: AsyncSession,
    principal: Principal,
    *,
    child_id: uuid.UUID,
    link_id: uuid.UUID,
    data: GuardianLinkUpdate,
    now: datetime,
) -> GuardianLinkPublic:
    """Change the role, relation or call order of a link; ``is_active`` ends or restores it."""
    child = await get_child(session, child_id, lock=True)
    _require_writer(principal, child)
    links = await _links(session, child.id)
    link, guardian = _find_link(links, link_id)
    changes = data.model_dump(exclude_unset=True)
    for key in ("role", "relation", "is_active"):
        if key in changes and changes[key] is None:
            raise Invalid(f"{key} 不能为空 ({key} cannot be null)", code="field_required")
    if "role" in changes:
        link.role = changes["role"]
    if "relation" in changes:
        link.relation = normalise_name(changes["relation"])
    active = _active(links)
    if changes.get("is_active") is False and link.is_active:
        _end(link, until=today_in_china(now), reason=None)
        _place([a for a in active if a is not link], None, None)
    elif changes.get("is_active") is True and not link.is_active:
        link.is_active, link.until, link.end_reason = True, None, None
        _place(active, link, changes.get("contact_order"))
    elif changes.get("contact_order") is not None:
        if not link.is_active:
            raise Invalid(
                "已结束的监护关系不参与联系顺序 (an ended link has no place in the call order)",
                code="guardian_link_ended",
            )
        _place(active, link, changes["contact_order"])
    await session.flush()
    return link_public(link, guardian, now=now)


async def set_contact_order(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, link_ids: list[uuid.UUID], now: datetime
) -> list[GuardianLinkPublic]:
    """Reorder all active guardians at once: ``link_ids`` must name each active link exactly once."""
    child = await get_child(session, child_id, lock=True)
    _require_writer(principal, child)
    links = await _links(session, child.id)
    active = {link.id: link for link in _active(links)}
    if len(set(link_ids)) != len(link_ids) or set(link_ids) != set(active):
        raise Invalid(
            "联系顺序必须包含该学生的每一位在册监护人且只出现一次 (list every active guardian link exactly once)",
            code="contact_order_mismatch",
            fields=[field_error(["link_ids"], "与在册监护人不一致", "contact_order_mismatch")],
        )
    for number, link_id in enumerate(link_ids, start=1):
        if active[link_id].contact_order != number:
            active[link_id].contact_order = number
    await session.flush()
    return await _read_links(session, principal, child, now=now)


def _end(link: ChildGuardian, *, until: date, reason: str | None) -> None:
    link.is_active = False
    link.until = until
    link.end_reason = reason


async def end_link(
    session: AsyncSession,
    principal: Principal,
    *,
    child_id: uuid.UUID,
    link_id: uuid.UUID,
    data: GuardianLinkEnd,
    now: datetime,
) -> GuardianLinkPublic:
    """A guardian dies, moves away or stops caring for the child: the link ends, it is never deleted,
    and the remaining guardians close up the call order."""
    child = await get_child(session, child_id, lock=True)
    _require_writer(principal, child)
    links = await _links(session, child.id)
    link, guardian = _find_link(links, link_id)
    if not link.is_active:
        raise Conflict("该监护关系已结束 (this link has already ended)", code="guardian_link_ended")
    until = data.until or today_in_china(now)
    if link.since is not None and until < link.since:
        raise Invalid(
            "结束日期不能早于开始日期 (until is before since)",
            code="until_before_since",
            fields=[field_error(["until"], "结束日期不能早于开始日期", "until_before_since")],
        )
    if until > today_in_china(now):
        raise Invalid(
            "结束日期不能晚于今天 (until is in the future)",
            code="until_in_future",
            fields=[field_error(["until"], "结束日期不能晚于今天", "until_in_future")],
        )
    _end(link, until=until, reason=data.reason)
    _place([a for a in _active(links) if a is not link], None, None)
    await session.flush()
    return link_public(link, guardian, now=now)


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
    values = _guardian_values(data, now)
    _apply(guardian, values, now)
    await session.flush()
    return guardian_public(guardian, now=now)


def _apply(guardian: Guardian, values: dict[str, Any], now: datetime) -> None:
    changed = False
    for key, value in values.items():
        if getattr(guardian, key) != value:
            setattr(guardian, key, value)
            changed = True
    if changed:
        guardian.updated_at = now


# ---- guardian invites (家长邀请码) -------------------------------------------------------------------------


async def _require_inviter(session: AsyncSession, principal: Principal, child: Child) -> None:
    """School admins invite the families of their school; a head teacher (班主任) those of their own class."""
    if principal.is_system or principal.role in (Role.platform_admin, Role.school_admin):
        return
    if principal.role == Role.teacher and child.class_id is not None:
        head = (
            await session.execute(select(SchoolClass.head_teacher_id).where(SchoolClass.id == child.class_id))
        ).scalar_one_or_none()
        if head is not None and head == principal.account_id:
            return
    raise Forbidden(
        "只有学校管理员或该班班主任可以邀请家长 (only school admins and the class's head teacher)",
        code="not_head_teacher",
    )


async def issue_guardian_invite(
    session: AsyncSession,
    principal: Principal,
    *,
    settings: Settings,
    child_id: uuid.UUID,
    guardian_id: uuid.UUID,
    now: datetime,
) -> GuardianInviteIssued:
    """A one-time code with which this guardian binds their WeChat to their record. A new code voids any
    earlier unused one for the same person (a lost slip of paper must not stay usable)."""
    child = await get_child(session, child_id)
    await _require_inviter(session, principal, child)
    links = await _links(session, child.id)
    match = [(link, g) for link, g in links if link.guardian_id == guardian_id and link.is_active]
    if not match:
        raise NotFound(LINK_NOT_FOUND, code="guardian_link_not_found")
    guardian = match[0][1]
    if guardian.account_id is not None:
        raise Conflict("该监护人已绑定微信 (this guardian has already bound WeChat)", code="guardian_already_bound")
    earlier = await session.execute(
        select(Invite).where(
            Invite.guardian_id == guardian.id,
            col(Invite.used_at).is_(None),
            Invite.expires_at > now,
        )
    )
    for invite in earlier.scalars():
        invite.expires_at = now
    issued = await create_invite(
        session,
        principal,
        settings=settings,
        school_id=child.school_id,
        kind=InviteKind.guardian,
        role=Role.family,
        display_name=None,
        guardian_id=guardian.id,
        now=now,
    )
    return GuardianInviteIssued(**issued.model_dump(), guardian_id=guardian.id, child_id=child.id)


# ---- the family's own view (家长端) ----------------------------------------------------------------------


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
    values = _guardian_values(data, now)
    if "phone" in values and values["phone"] is None:
        # The school calls this number in an emergency: it can be changed here, not removed.
        raise Invalid(
            "请填写新的电话号码，不能删除 (the phone can be changed, not removed)",
            code="phone_required",
            fields=[field_error(["phone"], "电话号码不能为空", "phone_required")],
        )
    _apply(guardian, values, now)
    await session.flush()
    return family_guardian_public(guardian, now=now)
