"""The database work of family calls: lines and hours, availability, booking and the call's life.

Booking is one transaction: the idempotency key is claimed, a slot already full is refused at once, the
child's weekly counter raised by one conditional upsert (which also queues the same child's other bookings
behind this one), the bookers of one slot queue on a transaction-level advisory lock, then the call is
inserted on the lowest booth that looks free, each try in a savepoint. The exclusion constraints decide the
races the reads cannot see: a booth another request took a moment ago answers ``exclusion_violation`` and
the next booth is tried; none left is ``slot_taken``. A refusal rolls the whole transaction back, quota
included.
"""

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.clock import SHANGHAI
from api.db import lock_until_commit
from api.errors import Forbidden, NotFound
from api.models.accounts import Role
from api.models.children import Child
from api.models.family_calls import (
    LIVE_STATUSES,
    CallEventKind,
    CallLine,
    CallLineOverride,
    CallLinePublic,
    CallLineWindow,
    CallStatus,
    CancelledBy,
    FamilyCall,
    FamilyCallCancel,
    FamilyCallComplete,
    FamilyCallCreate,
    FamilyCallEvent,
    FamilyCallMissed,
    FamilyCallPublic,
    FamilyCallQuota,
    FamilyCallRequest,
    FamilyCallReschedule,
    FamilyCallSettings,
    FestivalDay,
    SlotPublic,
)
from api.models.guardians import ChildGuardian
from api.models.organisations import School
from api.scoping import Principal
from api.services.family_calls import reminders, rules
from api.services.family_calls.hours import Hours, Window, open_intervals, shanghai_date, week_start
from api.services.family_calls.lines import (
    Refused,
    line_in_scope,
    lines_public,
    school_in_scope,
    school_settings,
    staff_of_school,
)
from api.services.family_calls.slots import Held, LineTimes, free_slots

MAX_RANGE_DAYS = 62


# ---- availability ----


def _times(line: CallLine) -> LineTimes:
    return LineTimes(
        slot_minutes=line.slot_minutes,
        buffer_minutes=line.buffer_minutes,
        capacity=line.capacity,
        min_notice_minutes=line.min_notice_minutes,
        horizon_days=line.horizon_days,
    )


def _windows(raw: Sequence[Sequence[str]]) -> list[Window]:
    return [Window.parse(s, e) for s, e in raw]


async def load_hours(
    session: AsyncSession, lines: Sequence[CallLine], county_id: uuid.UUID, first: date, last: date
) -> dict[uuid.UUID, Hours]:
    """The hours of each line for the dates ``first``..``last``: weekly windows, overrides and the county's
    festival days in one statement, whatever the number of lines. Unscoped: the caller has found the lines (a
    family reaches them through its child)."""
    ids = [line.id for line in lines]
    weekly: dict[uuid.UUID, dict[int, list[Window]]] = {i: defaultdict(list) for i in ids}
    overrides: dict[uuid.UUID, dict[date, list[Window]]] = {i: {} for i in ids}
    festivals: dict[date, list[Window]] = {}
    no_day, no_weekday = sa.cast(sa.null(), sa.Date), sa.cast(sa.null(), sa.Integer)
    no_time, no_windows = sa.cast(sa.null(), sa.Time), sa.cast(sa.null(), JSONB)
    rows = await session.execute(
        sa.union_all(
            sa.select(
                sa.literal("weekly"),
                col(CallLineWindow.line_id),
                col(CallLineWindow.weekday),
                no_day,
                col(CallLineWindow.starts),
                col(CallLineWindow.ends),
                no_windows,
            ).where(col(CallLineWindow.line_id).in_(ids)),
            sa.select(
                sa.literal("override"),
                col(CallLineOverride.line_id),
                no_weekday,
                col(CallLineOverride.day),
                no_time,
                no_time,
                col(CallLineOverride.windows),
            ).where(col(CallLineOverride.line_id).in_(ids), col(CallLineOverride.day).between(first, last)),
            sa.select(
                sa.literal("festival"),
                sa.cast(sa.null(), sa.Uuid),
                no_weekday,
                col(FestivalDay.day),
                no_time,
                no_time,
                col(FestivalDay.windows),
            ).where(col(FestivalDay.county_id) == county_id, col(FestivalDay.day).between(first, last)),
        )
    )
    for kind, line_id, weekday, day, starts, ends, windows in rows:
        if kind == "weekly":
            weekly[line_id][weekday].append(Window(starts, ends))
        elif kind == "override":
            overrides[line_id][day] = _windows(windows)
        else:
            festivals[day] = _windows(windows)
    return {i: Hours(weekly=weekly[i], overrides=overrides[i], festivals=festivals) for i in ids}


TIMESTAMPTZ = sa.DateTime(timezone=True)


def _holds(line_ids: Sequence[uuid.UUID], since: datetime, until: datetime) -> Any:
    """The live calls' holds ``(line_id, starts_at, blocked_until, booth)`` on those of the lines the caller can
    see, overlapping ``[since, until)``, without who booked them: ``family_call_holds`` (migration 0010) reads
    across families, so a family learns what of a slot is taken and never by whom. The lines are filtered
    under the caller's own scope before they are handed over."""
    # SYSTEM: family_call_holds runs as the tables' owner; it returns no booker, and only the lines visible
    # here are passed to it.
    visible = sa.select(col(CallLine.id)).where(col(CallLine.id).in_(line_ids)).scalar_subquery()
    return sa.func.family_call_holds(
        sa.func.array(visible), sa.literal(since, TIMESTAMPTZ), sa.literal(until, TIMESTAMPTZ)
    ).table_valued(
        sa.column("line_id", sa.Uuid),
        sa.column("starts_at", TIMESTAMPTZ),
        sa.column("blocked_until", TIMESTAMPTZ),
        sa.column("booth", sa.Integer),
    )


async def _held(
    session: AsyncSession, line_ids: Sequence[uuid.UUID], since: datetime, until: datetime
) -> dict[uuid.UUID, list[Held]]:
    holds = _holds(line_ids, since, until)
    held: dict[uuid.UUID, list[Held]] = defaultdict(list)
    for line_id, starts_at, blocked_until, booth in await session.execute(sa.select(holds)):
        held[line_id].append(Held(starts_at, blocked_until, booth))
    return held


def _check_range(first: date, last: date) -> None:
    if last < first or (last - first).days >= MAX_RANGE_DAYS:
        raise rules_error(
            rules.Refusal("bad_range", f"日期范围须在 {MAX_RANGE_DAYS} 天以内 (a range of 1–62 days)", 422)
        )


def rules_error(refusal: rules.Refusal) -> Refused:
    return Refused(refusal)


async def _slots(
    session: AsyncSession, lines: Sequence[CallLine], county_id: uuid.UUID, first: date, last: date, now: datetime
) -> tuple[list[SlotPublic], dict[uuid.UUID, Hours]]:
    """The free slots of the active lines (and the hours read for them)."""
    _check_range(first, last)
    lines = [line for line in lines if line.is_active]
    if not lines:
        return [], {}
    # The day before too: a window that starts then may run past midnight into the range.
    hours = await load_hours(session, lines, county_id, first - timedelta(days=1), last)
    since = datetime.combine(first, time(0), SHANGHAI).astimezone(UTC)
    until = datetime.combine(last + timedelta(days=1), time(0), SHANGHAI).astimezone(UTC)
    held = await _held(session, [line.id for line in lines], since - timedelta(days=1), until + timedelta(days=1))
    out: list[SlotPublic] = []
    for line in lines:
        intervals = open_intervals(hours[line.id], first - timedelta(days=1), last)
        for slot in free_slots(intervals, held[line.id], _times(line), now=now, since=since, until=until):
            out.append(SlotPublic(line_id=line.id, starts_at=slot.starts_at, ends_at=slot.ends_at, free=slot.free))
    out.sort(key=lambda s: (s.starts_at, str(s.line_id)))
    return out, hours


async def line_slots(
    session: AsyncSession, principal: Principal, *, line_id: uuid.UUID, first: date, last: date, now: datetime
) -> list[SlotPublic]:
    """The free slots of one line over the dates ``first``..``last`` (Asia/Shanghai)."""
    line = await line_in_scope(session, line_id)
    school = await school_in_scope(session, line.school_id)
    slots, _ = await _slots(session, [line], school.county_id, first, last, now)
    return slots


async def school_slots(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, first: date, last: date, now: datetime
) -> list[SlotPublic]:
    """The free slots of every line of a school. The school and its lines are read together, in scope."""
    rows = (
        await session.execute(
            select(School, CallLine)
            .outerjoin(CallLine, col(CallLine.school_id) == School.id)
            .where(col(School.id) == school_id)
            .order_by(col(CallLine.created_at))
        )
    ).all()
    if not rows:
        raise NotFound("找不到该学校 (no such school)")
    lines = [line for _, line in rows if line is not None]
    slots, _ = await _slots(session, lines, rows[0][0].county_id, first, last, now)
    return slots


async def child_availability(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, first: date, last: date, now: datetime
) -> tuple[list[CallLinePublic], list[SlotPublic]]:
    """What the child's family can book: the lines of the child's school and their free slots. The child, its
    school (for the county's festival days) and the school's lines are read together, in the caller's scope (a
    family sees only its own children, and their schools' lines)."""
    rows = (
        await session.execute(
            select(Child, col(School.county_id), CallLine)
            .join(School, col(School.id) == Child.school_id)
            .outerjoin(CallLine, sa.and_(col(CallLine.school_id) == School.id, col(CallLine.is_active)))
            .where(col(Child.id) == child_id)
            .order_by(col(CallLine.created_at))
        )
    ).all()
    if not rows:
        raise NotFound("找不到该学生 (no such child)")
    lines = [line for _, _, line in rows if line is not None]
    slots, hours = await _slots(session, lines, rows[0][1], first, last, now)
    return await lines_public(session, lines, weekly={i: h.weekly for i, h in hours.items()}), slots


# ---- booking ----


def _constraint_of(exc: BaseException) -> str | None:
    current: BaseException | None = exc
    for _ in range(6):
        if current is None:
            return None
        name = getattr(current, "constraint_name", None)
        if name:
            return str(name)
        current = getattr(current, "orig", None) or current.__cause__
    return None


def _body_hash(data: FamilyCallCreate) -> str:
    canonical = {
        "child_id": str(data.child_id),
        "line_id": str(data.line_id),
        "starts_at": data.starts_at.astimezone(UTC).isoformat(),
        "guardian_id": str(data.guardian_id) if data.guardian_id else None,
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _booker_guardian(
    principal: Principal, child: Child, linked: set[uuid.UUID], guardian_id: uuid.UUID | None
) -> uuid.UUID | None:
    """Who will call. A family books for itself (one of its guardian records linked to the child); staff of
    the child's school book on a family's behalf and may name the guardian who will call. ``linked``: the
    child's active guardians."""
    if principal.role == Role.family:
        mine = linked & set(principal.guardian_ids)
        if not mine or (guardian_id is not None and guardian_id not in mine):
            raise Refused(rules.NOT_THIS_CHILDS_FAMILY)
        return guardian_id or min(mine)
    if not staff_of_school(principal, child.school_id):
        raise Forbidden("只有本校教师可以代家长预约 (only the child's school can book for a family)")
    if guardian_id is not None and guardian_id not in linked:
        raise Refused(rules.GUARDIAN_NOT_LINKED)
    return guardian_id


async def _child_for_booking(
    session: AsyncSession, principal: Principal, child_id: uuid.UUID
) -> tuple[Child, set[uuid.UUID]]:
    """The child, found in the caller's scope, with its active guardians (one statement)."""
    guardians = (
        sa.select(sa.func.array_agg(col(ChildGuardian.guardian_id)))
        .where(col(ChildGuardian.child_id) == Child.id, col(ChildGuardian.is_active))
        .scalar_subquery()
    )
    row = (await session.execute(select(Child, guardians).where(col(Child.id) == child_id))).first()
    if row is None:
        # A family asking for a child it is not linked to is told so (it sees no other child at all).
        if principal.role == Role.family:
            raise Refused(rules.NOT_THIS_CHILDS_FAMILY)
        raise NotFound("找不到该学生 (no such child)")
    child, linked = row
    return child, set(linked or ())


async def _booking_line(session: AsyncSession, line_id: uuid.UUID) -> tuple[CallLine, uuid.UUID, FamilyCallSettings]:
    """The line, its school's county (for festival days) and the school's family-call settings, in one statement.
    Unscoped: a family reaches a line through its child; ``_place`` checks the line is the child's school's."""
    row = (
        await session.execute(
            select(CallLine, col(School.county_id), FamilyCallSettings)
            .join(School, col(School.id) == CallLine.school_id)
            .outerjoin(FamilyCallSettings, col(FamilyCallSettings.school_id) == CallLine.school_id)
            .where(col(CallLine.id) == line_id)
        )
    ).first()
    if row is None:
        raise NotFound("找不到该线路 (no such call line)")
    line, county_id, settings = row
    return line, county_id, settings or FamilyCallSettings(school_id=line.school_id)


async def _take_quota(session: AsyncSession, child_id: uuid.UUID, week: date, limit: int) -> None:
    """One more call this week for the child, if the limit allows: one statement, so concurrent bookings
    queue on the counter row and can never pass the limit together."""
    stmt = (
        pg_insert(FamilyCallQuota)
        .values(child_id=child_id, week_start=week, count=1)
        .on_conflict_do_update(
            index_elements=["child_id", "week_start"],
            set_={"count": FamilyCallQuota.count + 1},
            where=col(FamilyCallQuota.count) < limit,
        )
        .returning(col(FamilyCallQuota.count))
    )
    if (await session.execute(stmt)).scalar_one_or_none() is None:
        raise Refused(rules.QUOTA_REACHED)


async def _release_quota(session: AsyncSession, child_id: uuid.UUID, week: date) -> None:
    await session.execute(
        sa.update(FamilyCallQuota)
        .where(col(FamilyCallQuota.child_id) == child_id, col(FamilyCallQuota.week_start) == week)
        .where(col(FamilyCallQuota.count) > 0)
        .values(count=FamilyCallQuota.count - 1)
    )


def _account(principal: Principal) -> uuid.UUID:
    if principal.account_id is None:
        raise Forbidden("需要登录账号 (an account is needed)")
    return principal.account_id


def _event(
    session: AsyncSession, call_id: uuid.UUID, kind: CallEventKind, principal: Principal, now: datetime, **detail: Any
) -> FamilyCallEvent:
    event = FamilyCallEvent(call_id=call_id, kind=kind, at=now, account_id=principal.account_id, detail=detail)
    session.add(event)
    return event


async def _booths_and_child(
    session: AsyncSession,
    line: CallLine,
    child: Child,
    starts_at: datetime,
    ends_at: datetime,
    blocked_until: datetime,
) -> tuple[set[int], bool]:
    """One read for two questions: the booths held on the line around the slot (by anyone: see ``_holds``), and
    whether the child is in another call then."""
    holds = _holds([line.id], starts_at, blocked_until)
    childs_call = sa.exists().where(
        col(FamilyCall.child_id) == child.id,
        col(FamilyCall.status).in_(LIVE_STATUSES),
        col(FamilyCall.starts_at) < ends_at,
        col(FamilyCall.ends_at) > starts_at,
    )
    rows = (
        await session.execute(
            sa.union_all(
                sa.select(holds.c.booth, sa.false()),
                sa.select(sa.literal(0), sa.true()).where(childs_call),
            )
        )
    ).all()
    return {booth for booth, busy in rows if not busy}, any(busy for _, busy in rows)


async def _place(
    session: AsyncSession,
    principal: Principal,
    *,
    child: Child,
    line: CallLine,
    county_id: uuid.UUID,
    settings: FamilyCallSettings,
    starts_at: datetime,
    guardian_id: uuid.UUID | None,
    now: datetime,
    rescheduled_from: uuid.UUID | None = None,
) -> tuple[FamilyCall, FamilyCallEvent]:
    """Check the rules, take the quota and a booth, write the call and its first event (both returned)."""
    if line.school_id != child.school_id:
        raise NotFound("找不到该线路 (no such call line at the child's school)")
    starts_at = starts_at.astimezone(UTC)
    day = shanghai_date(starts_at)
    hours = await load_hours(session, [line], county_id, day - timedelta(days=1), day)
    intervals = open_intervals(hours[line.id], day - timedelta(days=1), day)
    if refusal := rules.booking_refusal(starts_at, intervals, _times(line), now=now, is_active=line.is_active):
        raise Refused(refusal)
    ends_at = starts_at + timedelta(minutes=line.slot_minutes)
    blocked_until = ends_at + timedelta(minutes=line.buffer_minutes)
    # A slot already full is refused before queueing for it: most of a crowd pressing one slot learns it here,
    # without taking the child's quota or waiting on the slot's lock behind the others.
    taken, _ = await _booths_and_child(session, line, child, starts_at, ends_at, blocked_until)
    if len({b for b in taken if b <= line.capacity}) >= line.capacity:
        raise Refused(rules.SLOT_TAKEN)
    await _take_quota(session, child.id, week_start(starts_at), settings.weekly_quota)
    # Bookers of one slot queue here, so each reads the booths the ones before it took, and two inserts on one
    # booth do not deadlock in the exclusion index (a 503 for a parent who deserved a 409).
    await lock_until_commit(session, f"family-call:{line.id}:{starts_at}")
    # Read again in the queue: the counter row lock queues this child's bookings and the slot's lock this slot's,
    # so this sees the booths and the child's calls committed before.
    taken, child_busy = await _booths_and_child(session, line, child, starts_at, ends_at, blocked_until)
    if child_busy:
        raise Refused(rules.CHILD_BUSY)
    # Booths that look free first (lowest first), then the others: a call that was live a moment ago may have
    # been cancelled since; the constraint is the judge either way.
    order = [b for b in range(1, line.capacity + 1) if b not in taken] + sorted(b for b in taken if b <= line.capacity)
    for booth in order:
        call = FamilyCall(
            id=uuid.uuid4(),
            line_id=line.id,
            school_id=line.school_id,
            child_id=child.id,
            guardian_id=guardian_id,
            booked_by=_account(principal),
            booth=booth,
            starts_at=starts_at,
            ends_at=ends_at,
            blocked_until=blocked_until,
            status=CallStatus.booked,
            rescheduled_from=rescheduled_from,
            created_at=now,
            updated_at=now,
        )
        try:
            async with session.begin_nested():
                session.add(call)
                await session.flush()
        except sa_exc.IntegrityError as exc:
            constraint = _constraint_of(exc)
            if constraint == "ex_family_call_booth":
                continue
            if constraint == "ex_family_call_child":
                raise Refused(rules.CHILD_BUSY) from None
            raise
        event = _event(session, call.id, CallEventKind.booked, principal, now, booth=booth)
        await reminders.plan(session, call_id=call.id, starts_at=starts_at, settings=settings, now=now)
        return call, event
    raise Refused(rules.SLOT_TAKEN)


async def book(
    session: AsyncSession,
    principal: Principal,
    *,
    data: FamilyCallCreate,
    idempotency_key: str | None,
    now: datetime,
) -> tuple[FamilyCallPublic, bool]:
    """Book a call; ``(call, replayed)``. With an ``Idempotency-Key`` the same key and body from the same
    account answer the call first booked (``replayed``), a different body ``idempotency_key_reused``.
    A refused booking is not remembered: its retry is decided afresh."""
    if idempotency_key is not None and principal.account_id is not None:
        body_hash = _body_hash(data)
        claimed = (
            await session.execute(
                pg_insert(FamilyCallRequest)
                .values(account_id=principal.account_id, key=idempotency_key, body_hash=body_hash, created_at=now)
                .on_conflict_do_nothing()
                .returning(col(FamilyCallRequest.key))
            )
        ).first()
        if claimed is None:
            earlier = (
                await session.execute(
                    sa.select(col(FamilyCallRequest.body_hash), col(FamilyCallRequest.call_id)).where(
                        col(FamilyCallRequest.account_id) == principal.account_id,
                        col(FamilyCallRequest.key) == idempotency_key,
                    )
                )
            ).one()
            if earlier.body_hash != body_hash:
                raise Refused(rules.IDEMPOTENCY_KEY_REUSED)
            return await call_public(session, earlier.call_id), True
    child, linked = await _child_for_booking(session, principal, data.child_id)
    guardian_id = _booker_guardian(principal, child, linked, data.guardian_id)
    line, county_id, settings = await _booking_line(session, data.line_id)
    call, event = await _place(
        session,
        principal,
        child=child,
        line=line,
        county_id=county_id,
        settings=settings,
        starts_at=data.starts_at,
        guardian_id=guardian_id,
        now=now,
    )
    call_id = call.id
    if idempotency_key is not None and principal.account_id is not None:
        await session.execute(
            sa.update(FamilyCallRequest)
            .where(
                col(FamilyCallRequest.account_id) == principal.account_id,
                col(FamilyCallRequest.key) == idempotency_key,
            )
            .values(call_id=call_id)
        )
    # Answered from what was just written: nothing about a new call needs reading back.
    return _public(call, line, child.name, events=[event]), False


# ---- reading one call ----


async def call_public(session: AsyncSession, call_id: uuid.UUID, *, with_events: bool = True) -> FamilyCallPublic:
    found = await calls_public(session, [call_id], with_events=with_events)
    if not found:
        raise NotFound("找不到该通话预约 (no such call)")
    return found[0]


async def calls_public(
    session: AsyncSession, call_ids: Sequence[uuid.UUID], *, with_events: bool = False
) -> list[FamilyCallPublic]:
    """The calls (already found in the caller's scope) with their line, child's name and, if asked, events."""
    if not call_ids:
        return []
    newer = sa.orm.aliased(FamilyCall)
    rows = (
        await session.execute(
            sa.select(
                FamilyCall, col(CallLine.name), col(CallLine.room), col(CallLine.number), col(Child.name), newer.id
            )  # type: ignore[call-overload]
            .join(CallLine, col(CallLine.id) == FamilyCall.line_id)
            .join(Child, col(Child.id) == FamilyCall.child_id)
            .outerjoin(newer, newer.rescheduled_from == FamilyCall.id)
            .where(col(FamilyCall.id).in_(call_ids))
            .order_by(col(FamilyCall.starts_at))
        )
    ).all()
    events: dict[uuid.UUID, list[Any]] = defaultdict(list)
    if with_events:
        for e in (
            await session.execute(
                select(FamilyCallEvent)
                .where(col(FamilyCallEvent.call_id).in_(call_ids))
                .order_by(col(FamilyCallEvent.seq))
            )
        ).scalars():
            events[e.call_id].append(_event_fields(e))
    return [
        FamilyCallPublic(
            **_call_fields(call),
            line_name=line_name,
            room=room,
            number=number,
            child_name=child_name,
            rescheduled_to=newer_id,
            events=events[call.id],
        )
        for call, line_name, room, number, child_name, newer_id in rows
    ]


def _call_fields(call: FamilyCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "line_id": call.line_id,
        "school_id": call.school_id,
        "child_id": call.child_id,
        "guardian_id": call.guardian_id,
        "booth": call.booth,
        "starts_at": call.starts_at,
        "ends_at": call.ends_at,
        "status": call.status,
        "rescheduled_from": call.rescheduled_from,
        "duration_minutes": call.duration_minutes,
        "note": call.note,
        "brought_by": call.brought_by,
        "missed_by": call.missed_by,
        "cancelled_by": call.cancelled_by,
        "cancel_reason": call.cancel_reason,
        "created_at": call.created_at,
    }


def _event_fields(e: FamilyCallEvent) -> dict[str, Any]:
    return {"kind": e.kind, "at": e.at, "account_id": e.account_id, "detail": e.detail}


def _public(
    call: FamilyCall, line: CallLine, child_name: str, *, events: Sequence[FamilyCallEvent]
) -> FamilyCallPublic:
    """A call just written, from the objects in hand (it has no newer call yet)."""
    return FamilyCallPublic(
        **_call_fields(call),
        line_name=line.name,
        room=line.room,
        number=line.number,
        child_name=child_name,
        rescheduled_to=None,
        events=[_event_fields(e) for e in events],
    )


async def _call(session: AsyncSession, call_id: uuid.UUID, *, lock: bool = False) -> FamilyCall:
    stmt = select(FamilyCall).where(col(FamilyCall.id) == call_id)
    if lock:
        stmt = stmt.with_for_update()
    call = (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()
    if call is None:
        raise NotFound("找不到该通话预约 (no such call)")
    return call


async def get_call(session: AsyncSession, principal: Principal, *, call_id: uuid.UUID) -> FamilyCallPublic:
    call = await _call(session, call_id)
    audit.record(
        session,
        action="family_call.read",
        resource_type="family_call",
        resource_id=call.id,
        school_id=call.school_id,
        detail={"child_id": str(call.child_id)},
    )
    return await call_public(session, call.id)


# ---- the call's life ----


async def _staff_call(session: AsyncSession, principal: Principal, call_id: uuid.UUID) -> FamilyCall:
    call = await _call(session, call_id, lock=True)
    if not staff_of_school(principal, call.school_id):
        raise Forbidden("只有本校教师可以处理通话 (only the school's staff do this)")
    return call


def _check(refusal: rules.Refusal | None) -> None:
    if refusal is not None:
        raise Refused(refusal)


async def confirm(
    session: AsyncSession, principal: Principal, *, call_id: uuid.UUID, now: datetime
) -> FamilyCallPublic:
    """The school confirms a booking (schools that ask for confirmation)."""
    call = await _staff_call(session, principal, call_id)
    settings = await school_settings(session, call.school_id)
    _check(
        rules.step_refusal(
            "confirm",
            call.status,
            now=now,
            starts_at=call.starts_at,
            requires_confirmation=settings.requires_confirmation,
        )
    )
    call.status, call.updated_at = CallStatus.confirmed, now
    _event(session, call.id, CallEventKind.confirmed, principal, now)
    await session.flush()
    return await call_public(session, call.id)


async def complete(
    session: AsyncSession, principal: Principal, *, call_id: uuid.UUID, data: FamilyCallComplete, now: datetime
) -> FamilyCallPublic:
    """The call took place: how long, a short note, who brought the child."""
    call = await _staff_call(session, principal, call_id)
    _check(rules.step_refusal("complete", call.status, now=now, starts_at=call.starts_at))
    call.status, call.updated_at = CallStatus.completed, now
    call.duration_minutes, call.note, call.brought_by = data.duration_minutes, data.note, data.brought_by
    _event(session, call.id, CallEventKind.completed, principal, now, duration_minutes=data.duration_minutes)
    await session.flush()
    return await call_public(session, call.id)


async def miss(
    session: AsyncSession, principal: Principal, *, call_id: uuid.UUID, data: FamilyCallMissed, now: datetime
) -> FamilyCallPublic:
    """The call did not happen: the family did not call, the child did not come, or the line failed."""
    call = await _staff_call(session, principal, call_id)
    _check(rules.step_refusal("miss", call.status, now=now, starts_at=call.starts_at))
    call.status, call.updated_at = CallStatus.missed, now
    call.missed_by, call.note = data.missed_by, data.note
    _event(session, call.id, CallEventKind.missed, principal, now, missed_by=data.missed_by.value)
    await session.flush()
    return await call_public(session, call.id)


async def _actor(session: AsyncSession, principal: Principal, call: FamilyCall) -> CancelledBy:
    """A family acts on its own calls only; staff of the call's school act for the school."""
    if principal.role == Role.family:
        linked = (
            await session.execute(
                sa.select(sa.literal(1)).where(
                    col(ChildGuardian.child_id) == call.child_id,
                    col(ChildGuardian.is_active),
                    col(ChildGuardian.guardian_id).in_(principal.guardian_ids),
                )
            )
        ).first()
        if linked is None:
            raise Refused(rules.NOT_THIS_CHILDS_FAMILY)
        return CancelledBy.family
    if not staff_of_school(principal, call.school_id):
        raise Forbidden("只有本校教师可以处理通话 (only the school's staff do this)")
    return CancelledBy.school


async def cancel(
    session: AsyncSession, principal: Principal, *, call_id: uuid.UUID, data: FamilyCallCancel, now: datetime
) -> FamilyCallPublic:
    """A family cancels up to the school's cut-off; the school at any time with a reason, and the family is
    told at once. The week's quota is given back."""
    call = await _call(session, call_id, lock=True)
    by = await _actor(session, principal, call)
    settings = await school_settings(session, call.school_id)
    _check(
        rules.step_refusal(
            "cancel",
            call.status,
            now=now,
            starts_at=call.starts_at,
            by_family=by == CancelledBy.family,
            cutoff_minutes=settings.family_cancel_cutoff_minutes,
            reason=data.reason,
        )
    )
    await _cancel(session, principal, call, by=by, reason=data.reason, now=now)
    if by == CancelledBy.school:
        await reminders.tell_cancelled(session, call_id=call.id, now=now)
    await session.flush()
    return await call_public(session, call.id)


async def _cancel(
    session: AsyncSession,
    principal: Principal,
    call: FamilyCall,
    *,
    by: CancelledBy,
    reason: str | None,
    now: datetime,
    event: bool = True,
) -> None:
    call.status, call.updated_at = CallStatus.cancelled, now
    call.cancelled_by, call.cancel_reason = by, reason
    # Flushed now: the booth and the child's time are free for a new booking in this same transaction.
    await session.flush()
    await _release_quota(session, call.child_id, week_start(call.starts_at))
    if event:
        _event(session, call.id, CallEventKind.cancelled, principal, now, by=by.value, reason=reason)
    await reminders.drop_pending(session, call_id=call.id, now=now)


async def reschedule(
    session: AsyncSession, principal: Principal, *, call_id: uuid.UUID, data: FamilyCallReschedule, now: datetime
) -> FamilyCallPublic:
    """Move a call: the old one is closed as rescheduled and a new call, linked to it, is booked under the
    same rules (a family up to the cut-off). If the new time is refused, nothing changes."""
    call = await _call(session, call_id, lock=True)
    by = await _actor(session, principal, call)
    settings = await school_settings(session, call.school_id)
    _check(
        rules.step_refusal(
            "reschedule",
            call.status,
            now=now,
            starts_at=call.starts_at,
            by_family=by == CancelledBy.family,
            cutoff_minutes=settings.family_cancel_cutoff_minutes,
        )
    )
    line, county_id, line_settings = await _booking_line(session, data.line_id or call.line_id)
    child = await session.get(Child, call.child_id)
    assert child is not None
    old_id, guardian_id = call.id, call.guardian_id
    await _cancel(session, principal, call, by=by, reason="改期 (rescheduled)", now=now, event=False)
    new_call, _ = await _place(
        session,
        principal,
        child=child,
        line=line,
        county_id=county_id,
        settings=line_settings,
        starts_at=data.starts_at,
        guardian_id=guardian_id,
        now=now,
        rescheduled_from=old_id,
    )
    new_id = new_call.id
    _event(session, old_id, CallEventKind.rescheduled, principal, now, by=by.value, new_call_id=str(new_id))
    return await call_public(session, new_id)
