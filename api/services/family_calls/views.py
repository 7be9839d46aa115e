"""Reading family calls: a family's upcoming and past calls, a teacher's calls today, a school's call log,
and each child's last completed call (which the care domain's weekly-call rule reads)."""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api import audit
from api.clock import SHANGHAI
from api.errors import NotFound
from api.models.accounts import Role
from api.models.base import Page
from api.models.children import Child
from api.models.family_calls import (
    LIVE_STATUSES,
    CallLine,
    CallStatus,
    FamilyCall,
    FamilyCallPublic,
    FamilyCallsPublic,
    LastCall,
    TodayCall,
)
from api.models.organisations import School, SchoolClass
from api.scoping import Principal
from api.services.family_calls.hours import shanghai_date
from api.services.family_calls.service import calls_public

PAST_LIMIT = 50


async def family_calls(session: AsyncSession, principal: Principal, *, now: datetime) -> FamilyCallsPublic:
    """The calls of the caller's children (scoped): upcoming live ones in time order, then the latest past ones
    (done, missed, cancelled or ended) newest first."""
    upcoming_ids = (
        await session.execute(
            sa.select(col(FamilyCall.id))
            .where(col(FamilyCall.status).in_(LIVE_STATUSES), col(FamilyCall.ends_at) > now)
            .order_by(col(FamilyCall.starts_at))
            .limit(100)
        )
    ).scalars()
    past_ids = (
        await session.execute(
            sa.select(col(FamilyCall.id))
            .where(sa.or_(col(FamilyCall.status).not_in(LIVE_STATUSES), col(FamilyCall.ends_at) <= now))
            .order_by(col(FamilyCall.starts_at).desc())
            .limit(PAST_LIMIT)
        )
    ).scalars()
    upcoming = await calls_public(session, list(upcoming_ids))
    past = sorted(await calls_public(session, list(past_ids)), key=lambda c: c.starts_at, reverse=True)
    return FamilyCallsPublic(upcoming=upcoming, past=past)


async def calls_today(session: AsyncSession, principal: Principal, *, now: datetime) -> list[TodayCall]:
    """Which child to bring, when, to which room: today's live and done calls (Asia/Shanghai) of the children of
    the teacher's classes, or of the whole school for its admins."""
    today = shanghai_date(now)
    since = datetime.combine(today, time(0), SHANGHAI).astimezone(UTC)
    until = since + timedelta(days=1)
    stmt = (
        sa.select(
            col(FamilyCall.id),
            col(FamilyCall.child_id),
            col(Child.name),
            col(SchoolClass.grade),
            col(SchoolClass.name),
            col(FamilyCall.starts_at),
            col(FamilyCall.ends_at),
            col(CallLine.name),
            col(CallLine.room),
            col(FamilyCall.booth),
            col(FamilyCall.status),
        )
        .join(Child, col(Child.id) == FamilyCall.child_id)
        .join(CallLine, col(CallLine.id) == FamilyCall.line_id)
        .outerjoin(SchoolClass, col(SchoolClass.id) == Child.class_id)
        .where(
            col(FamilyCall.starts_at) >= since,
            col(FamilyCall.starts_at) < until,
            col(FamilyCall.status).in_([*LIVE_STATUSES, CallStatus.completed]),
        )
        .order_by(col(FamilyCall.starts_at), col(CallLine.name))
    )
    if principal.role == Role.teacher:
        stmt = stmt.where(col(Child.class_id).in_(principal.class_ids))
    rows = (await session.execute(stmt)).all()
    audit.record(
        session,
        action="family_call.today_read",
        resource_type="school",
        resource_id=principal.school_id,
        school_id=principal.school_id,
        detail={"count": len(rows), "day": today.isoformat()},
    )
    return [
        TodayCall(
            id=r[0],
            child_id=r[1],
            child_name=r[2],
            class_name=f"{r[3]}年级{r[4]}" if r[3] is not None else None,
            starts_at=r[5],
            ends_at=r[6],
            line_name=r[7],
            room=r[8],
            booth=r[9],
            status=r[10],
        )
        for r in rows
    ]


async def school_log(
    session: AsyncSession,
    principal: Principal,
    *,
    school_id: uuid.UUID,
    status: CallStatus | None,
    offset: int,
    limit: int,
) -> Page[FamilyCallPublic]:
    """A school's call log, newest first, paged; audited as a read of children's data."""
    if await session.get(School, school_id) is None:
        raise NotFound("找不到该学校 (no such school)")
    where = [col(FamilyCall.school_id) == school_id]
    if status is not None:
        where.append(col(FamilyCall.status) == status)
    count = (await session.execute(sa.select(sa.func.count()).select_from(FamilyCall).where(*where))).scalar_one()
    ids = (
        await session.execute(
            sa.select(col(FamilyCall.id))
            .where(*where)
            .order_by(col(FamilyCall.starts_at).desc(), col(FamilyCall.id))
            .offset(offset)
            .limit(limit)
        )
    ).scalars()
    calls = sorted(await calls_public(session, list(ids)), key=lambda c: (c.starts_at, str(c.id)), reverse=True)
    audit.record(
        session,
        action="family_call.log_read",
        resource_type="school",
        resource_id=school_id,
        school_id=school_id,
        detail={"offset": offset, "count": len(calls)},
    )
    return Page(data=calls, count=count)


async def last_completed_calls(session: AsyncSession, child_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, LastCall]:
    """Each child's last completed call (``call_id`` None if none yet): for the care domain's weekly-call rule.
    Not scoped by itself — the caller has found the children in its scope."""
    rows = await session.execute(
        sa.select(
            col(FamilyCall.child_id), col(FamilyCall.id), col(FamilyCall.starts_at), col(FamilyCall.duration_minutes)
        )
        .ext(distinct_on(col(FamilyCall.child_id)))
        .where(col(FamilyCall.child_id).in_(child_ids), col(FamilyCall.status) == CallStatus.completed)
        .order_by(col(FamilyCall.child_id), col(FamilyCall.starts_at).desc())
    )
    found = {
        child_id: LastCall(child_id=child_id, call_id=call_id, at=at, duration_minutes=minutes)
        for child_id, call_id, at, minutes in rows
    }
    return {c: found.get(c, LastCall(child_id=c, call_id=None, at=None, duration_minutes=None)) for c in child_ids}


async def last_completed_call(session: AsyncSession, principal: Principal, *, child_id: uuid.UUID) -> LastCall:
    """One child's last completed call; the child found through the caller's scope."""
    if await session.get(Child, child_id) is None:
        raise NotFound("找不到该学生 (no such child)")
    return (await last_completed_calls(session, [child_id]))[child_id]
