"""A child's guardians: each person linked once to each child they care for, with the order in which they are
called in an emergency — listed, added (the same person found again in the school), changed, reordered, ended."""

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.errors import Conflict, Invalid, NotFound, field_error
from api.models.children import Child
from api.models.guardians import (
    ChildGuardian,
    Guardian,
    GuardianLinkCreate,
    GuardianLinkCreated,
    GuardianLinkEnd,
    GuardianLinkPublic,
    GuardianLinkUpdate,
)
from api.scoping import Principal
from api.services.children.rules import sees_full_detail, today_in_china
from api.services.guardians.records import (
    GUARDIAN_NOT_FOUND,
    LINK_NOT_FOUND,
    get_child,
    guardian_values,
    link_public,
    normalise_name,
    require_writer,
)


async def load_links(session: AsyncSession, child_id: uuid.UUID) -> list[tuple[ChildGuardian, Guardian]]:
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
    return [link_public(link, g, now=now, full=full) for link, g in await load_links(session, child.id)]


# ---- the guardian list of a child ------------------------------------------------------------------------


async def list_guardians(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, now: datetime
) -> list[GuardianLinkPublic]:
    """A child's guardians in emergency call order (ended links last). Teachers of other classes see masked
    phones (the rule of the child's file, :func:`api.services.children.rules.sees_full_detail`); full reads are
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
    require_writer(principal, child)
    reused = False
    if data.guardian_id is not None:
        found = await session.get(Guardian, data.guardian_id)
        if found is None:
            raise NotFound(GUARDIAN_NOT_FOUND, code="guardian_not_found")
        guardian = found
    else:
        assert data.guardian is not None
        values = guardian_values(data.guardian, now)
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

    links = await load_links(session, child.id)
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
    require_writer(principal, child)
    links = await load_links(session, child.id)
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
    require_writer(principal, child)
    links = await load_links(session, child.id)
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
    require_writer(principal, child)
    links = await load_links(session, child.id)
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
