"""A school's call lines, their weekly hours, date overrides, the county's festival days and the school's
settings: set up by school admins (festival days by the county bureau), read by everyone who books."""

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.errors import Forbidden, LiushouError, NotFound
from api.models.accounts import Role
from api.models.family_calls import (
    CallLine,
    CallLineCreate,
    CallLineOverride,
    CallLinePublic,
    CallLineUpdate,
    CallLineWindow,
    CallSettingsIn,
    CallSettingsPublic,
    FamilyCallSettings,
    FestivalDay,
    FestivalDayIn,
    FestivalDayPublic,
    OverrideIn,
    OverridePublic,
    WeeklyWindowIn,
    WindowIn,
)
from api.models.organisations import County, School
from api.scoping import Principal
from api.services.family_calls import rules
from api.services.family_calls.hours import Window, shanghai_date

# Reads of rows already found through the caller's scope (a family reaches its child's lines through the child).


class Refused(LiushouError):
    """A refusal of :mod:`rules` as an API error (its code, message and status)."""

    def __init__(self, refusal: rules.Refusal) -> None:
        self.status_code = refusal.status
        super().__init__(refusal.message, code=refusal.code)


# ---- who may do what ----


def manages_school(principal: Principal, school_id: uuid.UUID) -> bool:
    return principal.role == Role.platform_admin or (
        principal.role == Role.school_admin and principal.school_id == school_id
    )


def staff_of_school(principal: Principal, school_id: uuid.UUID) -> bool:
    return principal.role == Role.platform_admin or (
        principal.role in (Role.school_admin, Role.teacher) and principal.school_id == school_id
    )


async def school_in_scope(session: AsyncSession, school_id: uuid.UUID) -> School:
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("找不到该学校 (no such school)")
    return school


async def managed_school(session: AsyncSession, principal: Principal, school_id: uuid.UUID) -> School:
    school = await school_in_scope(session, school_id)
    if not manages_school(principal, school_id):
        raise Forbidden("只有本校管理员可以设置亲情电话 (only the school's admins set up family calls)")
    return school


async def county_in_scope(session: AsyncSession, county_id: uuid.UUID) -> County:
    """The county, if in the caller's scope (staff of the county, its bureau, the platform)."""
    county = await session.get(County, county_id)
    if county is None:
        raise NotFound("找不到该县 (no such county)")
    return county


async def line_in_scope(session: AsyncSession, line_id: uuid.UUID) -> CallLine:
    line = await session.get(CallLine, line_id)
    if line is None:
        raise NotFound("找不到该线路 (no such call line)")
    return line


async def managed_line(session: AsyncSession, principal: Principal, line_id: uuid.UUID) -> CallLine:
    line = await line_in_scope(session, line_id)
    if not manages_school(principal, line.school_id):
        raise Forbidden("只有本校管理员可以设置亲情电话 (only the school's admins set up family calls)")
    return line


# ---- settings, lines and hours ----


async def school_settings(session: AsyncSession, school_id: uuid.UUID) -> FamilyCallSettings:
    found = await session.get(FamilyCallSettings, school_id)
    return found or FamilyCallSettings(school_id=school_id)


def _settings_public(s: FamilyCallSettings) -> CallSettingsPublic:
    return CallSettingsPublic(
        school_id=s.school_id,
        weekly_quota=s.weekly_quota,
        requires_confirmation=s.requires_confirmation,
        family_cancel_cutoff_minutes=s.family_cancel_cutoff_minutes,
        reminder_lead_minutes=list(s.reminder_lead_minutes),
    )


async def get_settings(session: AsyncSession, principal: Principal, *, school_id: uuid.UUID) -> CallSettingsPublic:
    await school_in_scope(session, school_id)
    return _settings_public(await school_settings(session, school_id))


async def put_settings(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, data: CallSettingsIn, now: datetime
) -> CallSettingsPublic:
    """Set a school's quota, confirmation, family cut-off and reminder lead times."""
    await managed_school(session, principal, school_id)
    row = await session.get(FamilyCallSettings, school_id)
    if row is None:
        row = FamilyCallSettings(school_id=school_id)
        session.add(row)
    row.weekly_quota = data.weekly_quota
    row.requires_confirmation = data.requires_confirmation
    row.family_cancel_cutoff_minutes = data.family_cancel_cutoff_minutes
    row.reminder_lead_minutes = sorted(set(data.reminder_lead_minutes), reverse=True)
    row.updated_at = now
    await session.flush()
    return _settings_public(row)


def _hhmm(t: time) -> str:
    return t.strftime("%H:%M")


async def lines_public(
    session: AsyncSession,
    lines: Sequence[CallLine],
    *,
    weekly: Mapping[uuid.UUID, Mapping[int, Sequence[Window]]] | None = None,
) -> list[CallLinePublic]:
    """The lines with their weekly windows (read here unless the caller has them: ``weekly``)."""
    ids = [line.id for line in lines]
    windows: dict[uuid.UUID, list[WeeklyWindowIn]] = defaultdict(list)
    if weekly is not None:
        for line_id, days in weekly.items():
            windows[line_id] = [
                WeeklyWindowIn(weekday=day, starts=_hhmm(w.starts), ends=_hhmm(w.ends))
                for day in sorted(days)
                for w in sorted(days[day])
            ]
    elif ids:
        rows = await session.execute(
            select(CallLineWindow)
            .where(col(CallLineWindow.line_id).in_(ids))
            .order_by(col(CallLineWindow.weekday), col(CallLineWindow.starts))
        )
        for w in rows.scalars():
            windows[w.line_id].append(WeeklyWindowIn(weekday=w.weekday, starts=_hhmm(w.starts), ends=_hhmm(w.ends)))
    return [
        CallLinePublic(
            id=line.id,
            school_id=line.school_id,
            name=line.name,
            kind=line.kind,
            room=line.room,
            number=line.number,
            capacity=line.capacity,
            slot_minutes=line.slot_minutes,
            buffer_minutes=line.buffer_minutes,
            min_notice_minutes=line.min_notice_minutes,
            horizon_days=line.horizon_days,
            is_active=line.is_active,
            windows=windows[line.id],
        )
        for line in lines
    ]


def _replace_windows(session: AsyncSession, line_id: uuid.UUID, windows: Sequence[WeeklyWindowIn]) -> None:
    for w in windows:
        session.add(
            CallLineWindow(
                line_id=line_id, weekday=w.weekday, starts=time.fromisoformat(w.starts), ends=time.fromisoformat(w.ends)
            )
        )


async def create_line(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, data: CallLineCreate, now: datetime
) -> CallLinePublic:
    """A new family phone or video room with its weekly hours."""
    await managed_school(session, principal, school_id)
    line = CallLine(school_id=school_id, created_at=now, **data.model_dump(exclude={"windows"}))
    session.add(line)
    await session.flush()
    _replace_windows(session, line.id, data.windows)
    await session.flush()
    return (await lines_public(session, [line]))[0]


async def list_lines(session: AsyncSession, principal: Principal, *, school_id: uuid.UUID) -> list[CallLinePublic]:
    await school_in_scope(session, school_id)
    lines = (
        await session.execute(
            select(CallLine).where(col(CallLine.school_id) == school_id).order_by(col(CallLine.created_at))
        )
    ).scalars()
    return await lines_public(session, list(lines))


async def get_line(session: AsyncSession, principal: Principal, *, line_id: uuid.UUID) -> CallLinePublic:
    return (await lines_public(session, [await line_in_scope(session, line_id)]))[0]


async def update_line(
    session: AsyncSession, principal: Principal, *, line_id: uuid.UUID, data: CallLineUpdate
) -> CallLinePublic:
    """Change a line's settings. A smaller capacity or new slot length leaves booked calls as they are."""
    line = await managed_line(session, principal, line_id)
    for key, value in data.model_dump(exclude_unset=True).items():
        if value is not None or key == "number":
            setattr(line, key, value)
    await session.flush()
    return (await lines_public(session, [line]))[0]


async def set_hours(
    session: AsyncSession, principal: Principal, *, line_id: uuid.UUID, windows: Sequence[WeeklyWindowIn]
) -> CallLinePublic:
    """Replace a line's weekly hours (calls already booked stay booked)."""
    line = await managed_line(session, principal, line_id)
    await session.execute(sa.delete(CallLineWindow).where(col(CallLineWindow.line_id) == line_id))
    _replace_windows(session, line_id, windows)
    await session.flush()
    return (await lines_public(session, [line]))[0]


def windows_json(windows: Sequence[WindowIn]) -> list[list[str]]:
    return [[w.starts, w.ends] for w in windows]


def windows_from_json(raw: Sequence[Sequence[str]]) -> list[WindowIn]:
    return [WindowIn(starts=s, ends=e) for s, e in raw]


async def set_override(
    session: AsyncSession, principal: Principal, *, line_id: uuid.UUID, data: OverrideIn, now: datetime
) -> list[OverridePublic]:
    """Replace one date's hours (``[]`` closes the day); ``windows: null`` returns the date to its weekly hours."""
    await managed_line(session, principal, line_id)
    await session.execute(
        sa.delete(CallLineOverride).where(
            col(CallLineOverride.line_id) == line_id, col(CallLineOverride.day) == data.day
        )
    )
    if data.windows is not None:
        session.add(
            CallLineOverride(
                line_id=line_id, day=data.day, windows=windows_json(data.windows), reason=data.reason, created_at=now
            )
        )
    await session.flush()
    return await list_overrides(session, principal, line_id=line_id, since=shanghai_date(now))


async def list_overrides(
    session: AsyncSession, principal: Principal, *, line_id: uuid.UUID, since: date
) -> list[OverridePublic]:
    await line_in_scope(session, line_id)
    rows = await session.execute(
        select(CallLineOverride)
        .where(col(CallLineOverride.line_id) == line_id, col(CallLineOverride.day) >= since)
        .order_by(col(CallLineOverride.day))
    )
    return [OverridePublic(day=o.day, windows=windows_from_json(o.windows), reason=o.reason) for o in rows.scalars()]


def _festival_public(f: FestivalDay) -> FestivalDayPublic:
    return FestivalDayPublic(
        id=f.id, county_id=f.county_id, day=f.day, name=f.name, windows=windows_from_json(f.windows)
    )


async def declare_festival(
    session: AsyncSession, principal: Principal, *, county_id: uuid.UUID, data: FestivalDayIn, now: datetime
) -> FestivalDayPublic:
    """The county bureau opens extra hours on every line of all its schools on one date (declared again: replaced)."""
    await county_in_scope(session, county_id)
    insert = pg_insert(FestivalDay).values(
        id=uuid.uuid4(),
        county_id=county_id,
        day=data.day,
        name=data.name,
        windows=windows_json(data.windows),
        created_at=now,
    )
    stmt = insert.on_conflict_do_update(
        index_elements=["county_id", "day"], set_={"name": insert.excluded.name, "windows": insert.excluded.windows}
    ).returning(col(FestivalDay.id))
    festival_id = (await session.execute(stmt)).scalar_one()
    row = (
        await session.execute(
            select(FestivalDay).where(col(FestivalDay.id) == festival_id).execution_options(populate_existing=True)
        )
    ).scalar_one()
    return _festival_public(row)


async def list_festivals(
    session: AsyncSession, principal: Principal, *, county_id: uuid.UUID, since: date
) -> list[FestivalDayPublic]:
    await county_in_scope(session, county_id)
    rows = await session.execute(
        select(FestivalDay)
        .where(col(FestivalDay.county_id) == county_id, col(FestivalDay.day) >= since)
        .order_by(col(FestivalDay.day))
    )
    return [_festival_public(f) for f in rows.scalars()]
