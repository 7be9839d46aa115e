"""动态管理: a child's life on the roster — transfer, parents coming home or leaving again, graduation, leaving,
re-enrolment. Nothing is ever deleted; each change leaves an event."""

import uuid
from datetime import date, datetime

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from api.errors import Conflict, NotFound
from api.models.children import (
    BecameLeftBehindRequest,
    ChildEvent,
    ChildEventKind,
    ChildStatus,
    GraduationRequest,
    LifecycleChange,
    ParentsAway,
    ReEnrolRequest,
    TransferRequest,
)
from api.models.organisations import School
from api.scoping import Principal, as_system
from api.services.children.records import class_of_school, get_child, require_writer
from api.services.children.rules import (
    check_effective_on,
    check_left_behind_since,
    invalid,
    new_event,
    require_school_admin,
    require_status,
    today_in_china,
)


async def transfer_child(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, data: TransferRequest, now: datetime
) -> ChildEvent:
    """转学: the file, guardians and history follow the child to the receiving school; the old school loses
    access. The child arrives without a class: the receiving school places them."""
    require_school_admin(principal)
    child = await get_child(session, child_id, for_update=True)
    require_status(child, ChildStatus.enrolled)
    # SYSTEM: the receiving school is usually outside the sending school's scope; it is named by id.
    async with as_system(session):
        target = (await session.execute(select(School).where(School.id == data.to_school_id))).scalar_one_or_none()
    if target is None:
        raise NotFound("转入学校不存在 (receiving school not found)", code="school_not_found")
    if target.id == child.school_id:
        raise invalid("transfer_same_school", "转入学校与原学校相同 (same school)", "to_school_id")
    effective_on = check_effective_on(data.effective_on, today=today_in_china(now), child=child)
    event = new_event(
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
    await require_writer(session, principal, child.class_id)
    if not child.is_left_behind:
        raise Conflict("该儿童目前不是留守儿童 (the child is not left-behind)", code="not_left_behind")
    effective_on = check_effective_on(data.effective_on, today=today_in_china(now), child=child)
    child.is_left_behind = False
    child.parents_away = ParentsAway.none
    child.left_behind_since = None
    child.updated_at = now
    event = new_event(
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
    await require_writer(session, principal, child.class_id)
    if child.is_left_behind:
        raise Conflict("该儿童已是留守儿童 (the child is already left-behind)", code="already_left_behind")
    today = today_in_china(now)
    effective_on = check_effective_on(data.effective_on, today=today, child=child)
    since = data.left_behind_since or effective_on
    check_left_behind_since(since, child.birth_date, today)
    child.is_left_behind = True
    child.parents_away = data.parents_away
    child.left_behind_since = since
    child.updated_at = now
    event = new_event(
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
    require_school_admin(principal)
    child = await get_child(session, child_id, for_update=True)
    if status == ChildStatus.enrolled:
        require_status(child, ChildStatus.graduated, ChildStatus.left)
    else:
        require_status(child, ChildStatus.enrolled)
    day = check_effective_on(effective_on, today=today_in_china(now), child=child)
    event = new_event(child, kind, principal=principal, now=now, effective_on=day, reason=reason)
    if kind == ChildEventKind.re_enrolled:
        if class_id is not None:
            await class_of_school(session, class_id, child.school_id)
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
