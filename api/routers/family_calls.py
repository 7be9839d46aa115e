"""亲情电话 — the family phone and video room: lines and hours, availability, booking, the call's life, views."""

import uuid
from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from api.deps import CurrentPrincipal, Managers, NowDep, Offset, SchoolAdmin, SessionDep, Staff, allow
from api.errors import error_responses
from api.models.accounts import Role
from api.models.base import Page
from api.models.family_calls import (
    AvailabilityPublic,
    CallLineCreate,
    CallLinePublic,
    CallLineUpdate,
    CallSettingsIn,
    CallSettingsPublic,
    CallStatus,
    FamilyCallCancel,
    FamilyCallComplete,
    FamilyCallCreate,
    FamilyCallMissed,
    FamilyCallPublic,
    FamilyCallReschedule,
    FamilyCallsPublic,
    FestivalDayIn,
    FestivalDayPublic,
    LastCall,
    OverrideIn,
    OverridePublic,
    SlotPublic,
    TodayCall,
    WeeklyHours,
)
from api.scoping import Principal
from api.services.family_calls import lines, service, views
from api.services.family_calls.hours import shanghai_date

router = APIRouter(tags=["亲情电话 family calls"])
ERRORS = error_responses(403, 404, 422)
WRITE_ERRORS = error_responses(403, 404, 409, 422)
Family = Annotated[Principal, allow(Role.family)]
Bureau = Annotated[Principal, allow(Role.platform_admin, Role.county_bureau)]
# Who books: a family for its own child, or the child's school on a family's behalf.
Bookers = Annotated[Principal, allow(Role.family, Role.platform_admin, Role.school_admin, Role.teacher)]
SchoolStaff = Annotated[Principal, allow(Role.platform_admin, Role.school_admin, Role.teacher)]
Since = Annotated[date | None, Query(description="第一天 (Asia/Shanghai); default today")]
Until = Annotated[date | None, Query(description="最后一天 (inclusive); default 14 days on; at most 62 days")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=8,
        max_length=128,
        description="客户端请求编号: the same key and body again answers the first booking, never books twice",
    ),
]


def _range(now: date, since: date | None, until: date | None) -> tuple[date, date]:
    first = since or now
    return first, until or first + timedelta(days=13)


# ---- school setup ----


@router.get(
    "/schools/{school_id}/family-call-settings",
    response_model=CallSettingsPublic,
    responses=ERRORS,
    summary="亲情电话设置 (quota, confirmation, cut-off, reminders)",
)
async def get_settings(school_id: uuid.UUID, principal: Staff, session: SessionDep) -> CallSettingsPublic:
    return await lines.get_settings(session, principal, school_id=school_id)


@router.put(
    "/schools/{school_id}/family-call-settings",
    response_model=CallSettingsPublic,
    responses=ERRORS,
    summary="设置亲情电话规则 (school admins)",
)
async def put_settings(
    school_id: uuid.UUID, body: CallSettingsIn, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> CallSettingsPublic:
    """Weekly calls per child, whether the school confirms bookings, the family's cancellation cut-off, and how
    long before a call the family and the head teacher are reminded."""
    return await lines.put_settings(session, principal, school_id=school_id, data=body, now=now)


@router.post(
    "/schools/{school_id}/call-lines",
    response_model=CallLinePublic,
    status_code=201,
    responses=ERRORS,
    summary="开通亲情电话 / 视频室 (a new call line)",
)
async def create_line(
    school_id: uuid.UUID, body: CallLineCreate, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> CallLinePublic:
    """A family phone or a video room with ``capacity`` booths, slot length, buffer, notice, horizon and its
    weekly hours (Asia/Shanghai; a window ending at or before its start runs past midnight)."""
    return await lines.create_line(session, principal, school_id=school_id, data=body, now=now)


@router.get(
    "/schools/{school_id}/call-lines", response_model=list[CallLinePublic], responses=ERRORS, summary="本校线路"
)
async def list_lines(school_id: uuid.UUID, principal: Staff, session: SessionDep) -> list[CallLinePublic]:
    return await lines.list_lines(session, principal, school_id=school_id)


@router.get("/call-lines/{line_id}", response_model=CallLinePublic, responses=ERRORS, summary="线路详情")
async def get_line(line_id: uuid.UUID, principal: Staff, session: SessionDep) -> CallLinePublic:
    return await lines.get_line(session, principal, line_id=line_id)


@router.patch("/call-lines/{line_id}", response_model=CallLinePublic, responses=ERRORS, summary="修改线路")
async def update_line(
    line_id: uuid.UUID, body: CallLineUpdate, principal: SchoolAdmin, session: SessionDep
) -> CallLinePublic:
    """Booked calls stay as they are; ``is_active: false`` stops new bookings."""
    return await lines.update_line(session, principal, line_id=line_id, data=body)


@router.put(
    "/call-lines/{line_id}/hours", response_model=CallLinePublic, responses=ERRORS, summary="每周开放时间 (weekly)"
)
async def set_hours(
    line_id: uuid.UUID, body: WeeklyHours, principal: SchoolAdmin, session: SessionDep
) -> CallLinePublic:
    return await lines.set_hours(session, principal, line_id=line_id, windows=body.windows)


@router.put(
    "/call-lines/{line_id}/overrides",
    response_model=list[OverridePublic],
    responses=ERRORS,
    summary="某天的开放时间 (closed for exams, moved hours)",
)
async def set_override(
    line_id: uuid.UUID, body: OverrideIn, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> list[OverridePublic]:
    """The day's hours replace the weekly hours and any festival hours; ``[]`` closes the day; ``null`` returns
    it to the weekly hours. Answers the line's overrides from today on."""
    return await lines.set_override(session, principal, line_id=line_id, data=body, now=now)


@router.get(
    "/call-lines/{line_id}/overrides", response_model=list[OverridePublic], responses=ERRORS, summary="特殊日期"
)
async def list_overrides(
    line_id: uuid.UUID, principal: Staff, session: SessionDep, now: NowDep
) -> list[OverridePublic]:
    return await lines.list_overrides(session, principal, line_id=line_id, since=shanghai_date(now))


@router.post(
    "/counties/{county_id}/festival-days",
    response_model=FestivalDayPublic,
    status_code=201,
    responses=ERRORS,
    summary="节日亲情热线 (the bureau opens extra hours for all its schools)",
)
async def declare_festival(
    county_id: uuid.UUID, body: FestivalDayIn, principal: Bureau, session: SessionDep, now: NowDep
) -> FestivalDayPublic:
    """三八, 六一, 国庆, 中秋, 春节 eves: every line of every school of the county opens these hours as well
    (a school's own override of that date still wins). Declaring a date again replaces it."""
    return await lines.declare_festival(session, principal, county_id=county_id, data=body, now=now)


@router.get(
    "/counties/{county_id}/festival-days", response_model=list[FestivalDayPublic], responses=ERRORS, summary="节日热线"
)
async def list_festivals(
    county_id: uuid.UUID, principal: Staff, session: SessionDep, now: NowDep
) -> list[FestivalDayPublic]:
    return await lines.list_festivals(session, principal, county_id=county_id, since=shanghai_date(now))


# ---- availability ----


@router.get("/call-lines/{line_id}/slots", response_model=list[SlotPublic], responses=ERRORS, summary="线路空闲时段")
async def line_slots(
    line_id: uuid.UUID, principal: Staff, session: SessionDep, now: NowDep, since: Since = None, until: Until = None
) -> list[SlotPublic]:
    first, last = _range(shanghai_date(now), since, until)
    return await service.line_slots(session, principal, line_id=line_id, first=first, last=last, now=now)


@router.get(
    "/schools/{school_id}/family-call-slots",
    response_model=list[SlotPublic],
    responses=ERRORS,
    summary="全校空闲时段 (every line)",
)
async def school_slots(
    school_id: uuid.UUID, principal: Staff, session: SessionDep, now: NowDep, since: Since = None, until: Until = None
) -> list[SlotPublic]:
    first, last = _range(shanghai_date(now), since, until)
    return await service.school_slots(session, principal, school_id=school_id, first=first, last=last, now=now)


@router.get(
    "/children/{child_id}/family-call-slots",
    response_model=AvailabilityPublic,
    responses=ERRORS,
    summary="可预约的亲情电话时段 (for the child's family)",
)
async def child_slots(
    child_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: SessionDep,
    now: NowDep,
    since: Since = None,
    until: Until = None,
) -> AvailabilityPublic:
    """The lines of the child's school and their free slots with the booths left."""
    first, last = _range(shanghai_date(now), since, until)
    lines, slots = await service.child_availability(
        session, principal, child_id=child_id, first=first, last=last, now=now
    )
    return AvailabilityPublic(lines=lines, slots=slots)


@router.get(
    "/children/{child_id}/last-family-call", response_model=LastCall, responses=ERRORS, summary="最近一次亲情电话"
)
async def last_call(child_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep) -> LastCall:
    return await views.last_completed_call(session, principal, child_id=child_id)


# ---- booking and the call's life ----


@router.post(
    "/family-calls",
    response_model=FamilyCallPublic,
    status_code=201,
    responses=WRITE_ERRORS,
    summary="预约亲情电话 (book a call)",
)
async def book(
    body: FamilyCallCreate,
    principal: Bookers,
    session: SessionDep,
    now: NowDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> FamilyCallPublic:
    """A parent or guardian of the child, or the child's school on a family's behalf. Refusals: 409
    ``slot_taken``, ``child_busy``, ``quota_reached``, ``line_closed``; 422 ``outside_hours``, ``not_a_slot``,
    ``too_soon``, ``too_far_ahead``, ``idempotency_key_reused``; 403 ``not_this_childs_family``. A replayed
    ``Idempotency-Key`` answers the first booking with ``Idempotent-Replayed: true``."""
    call, replayed = await service.book(session, principal, data=body, idempotency_key=idempotency_key, now=now)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return call


@router.get("/family-calls/{call_id}", response_model=FamilyCallPublic, responses=ERRORS, summary="通话详情")
async def get_call(call_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep) -> FamilyCallPublic:
    """With every change of the call, oldest first."""
    return await service.get_call(session, principal, call_id=call_id)


@router.post(
    "/family-calls/{call_id}/confirm", response_model=FamilyCallPublic, responses=WRITE_ERRORS, summary="学校确认"
)
async def confirm(call_id: uuid.UUID, principal: SchoolStaff, session: SessionDep, now: NowDep) -> FamilyCallPublic:
    return await service.confirm(session, principal, call_id=call_id, now=now)


@router.post(
    "/family-calls/{call_id}/complete", response_model=FamilyCallPublic, responses=WRITE_ERRORS, summary="已通话"
)
async def complete(
    call_id: uuid.UUID, body: FamilyCallComplete, principal: SchoolStaff, session: SessionDep, now: NowDep
) -> FamilyCallPublic:
    return await service.complete(session, principal, call_id=call_id, data=body, now=now)


@router.post(
    "/family-calls/{call_id}/missed", response_model=FamilyCallPublic, responses=WRITE_ERRORS, summary="未通话"
)
async def missed(
    call_id: uuid.UUID, body: FamilyCallMissed, principal: SchoolStaff, session: SessionDep, now: NowDep
) -> FamilyCallPublic:
    return await service.miss(session, principal, call_id=call_id, data=body, now=now)


@router.post("/family-calls/{call_id}/cancel", response_model=FamilyCallPublic, responses=WRITE_ERRORS, summary="取消")
async def cancel(
    call_id: uuid.UUID, body: FamilyCallCancel, principal: Bookers, session: SessionDep, now: NowDep
) -> FamilyCallPublic:
    """The family up to the school's cut-off (409 ``past_cutoff`` after it); the school at any time with a
    reason (422 ``reason_required``), and the family is told at once."""
    return await service.cancel(session, principal, call_id=call_id, data=body, now=now)


@router.post(
    "/family-calls/{call_id}/reschedule",
    response_model=FamilyCallPublic,
    status_code=201,
    responses=WRITE_ERRORS,
    summary="改期 (a new call linked to this one)",
)
async def reschedule(
    call_id: uuid.UUID, body: FamilyCallReschedule, principal: Bookers, session: SessionDep, now: NowDep
) -> FamilyCallPublic:
    """The old call is kept, closed as rescheduled, and points to the new one; the same rules as booking."""
    return await service.reschedule(session, principal, call_id=call_id, data=body, now=now)


# ---- views ----


@router.get("/me/family-calls", response_model=FamilyCallsPublic, responses=ERRORS, summary="我的亲情电话")
async def my_calls(principal: Family, session: SessionDep, now: NowDep) -> FamilyCallsPublic:
    """Upcoming calls of your children in time order, then past ones newest first."""
    return await views.family_calls(session, principal, now=now)


@router.get("/family-calls-today", response_model=list[TodayCall], responses=ERRORS, summary="今天的亲情电话")
async def calls_today(principal: SchoolStaff, session: SessionDep, now: NowDep) -> list[TodayCall]:
    """Which child to bring, when, to which room: a teacher's classes, or the whole school for its admins."""
    return await views.calls_today(session, principal, now=now)


@router.get(
    "/schools/{school_id}/family-calls",
    response_model=Page[FamilyCallPublic],
    responses=ERRORS,
    summary="通话记录 (the school's call log)",
)
async def school_log(
    school_id: uuid.UUID,
    principal: Managers,
    session: SessionDep,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    status: CallStatus | None = None,
) -> Page[FamilyCallPublic]:
    return await views.school_log(session, principal, school_id=school_id, status=status, offset=offset, limit=limit)
