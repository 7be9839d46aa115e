"""A school's care rules and term calendar: read by its staff, changed by its admins (and the platform)."""

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.db import lock_until_commit
from api.errors import Conflict, NotFound
from api.models.care_rhythm import (
    CADENCE_LABELS,
    DEFAULT_RULES,
    RHYTHM_LABELS,
    CalendarPublic,
    CareRule,
    HolidayCreate,
    RhythmKind,
    RulePublic,
    RuleUpdate,
    SchoolHoliday,
    SchoolTerm,
    SpanPublic,
    TermCreate,
)
from api.scoping import Principal
from api.services.care.due import effective_rules
from api.services.children.rules import require_school_admin
from api.services.organisations import get_school


async def list_rules(session: AsyncSession, *, school_id: uuid.UUID) -> list[RulePublic]:
    """The school's rules: its own where it set one, the defaults otherwise."""
    await get_school(session, school_id)
    rows = (await session.execute(sa.select(CareRule).where(col(CareRule.school_id) == school_id))).scalars().all()
    own = {row.kind for row in rows}
    return [
        RulePublic(
            kind=kind,
            label=RHYTHM_LABELS[kind],
            cadence=spec.cadence,
            cadence_label=CADENCE_LABELS[spec.cadence],
            strict_cadence=spec.strict_cadence,
            incident_days=spec.incident_days,
            is_active=spec.is_active,
            is_default=kind not in own,
        )
        for kind, spec in effective_rules(rows).items()
    ]


async def set_rule(
    session: AsyncSession,
    principal: Principal,
    *,
    school_id: uuid.UUID,
    kind: RhythmKind,
    data: RuleUpdate,
    now: datetime,
) -> list[RulePublic]:
    """Set one of the school's rules (two admins saving at once leave one row, the later one's)."""
    require_school_admin(principal)
    await get_school(session, school_id)
    values: dict[str, Any] = {
        "cadence": data.cadence,
        "strict_cadence": data.strict_cadence or data.cadence,
        "incident_days": data.incident_days,
        "is_active": data.is_active,
        "updated_at": now,
        "updated_by_id": principal.account_id,
    }
    mine = (col(CareRule.school_id) == school_id, col(CareRule.kind) == kind)
    existing = (await session.execute(sa.select(CareRule).where(*mine).with_for_update())).scalar_one_or_none()
    if existing is None:
        try:
            async with session.begin_nested():
                session.add(CareRule(school_id=school_id, kind=kind, **values))
                await session.flush()
        except IntegrityError:
            # Another admin saved this rule's first version meanwhile: update theirs (the later save wins).
            existing = (await session.execute(sa.select(CareRule).where(*mine).with_for_update())).scalar_one()
    if existing is not None:
        for key, value in values.items():
            setattr(existing, key, value)
    await session.flush()
    return await list_rules(session, school_id=school_id)


async def reset_rule(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, kind: RhythmKind
) -> list[RulePublic]:
    """Back to the default (DOMAIN.md's) for this kind."""
    require_school_admin(principal)
    await get_school(session, school_id)
    row = (
        await session.execute(
            sa.select(CareRule).where(col(CareRule.school_id) == school_id, col(CareRule.kind) == kind)
        )
    ).scalar_one_or_none()
    if row is not None:
        await session.delete(row)
        await session.flush()
    assert kind in DEFAULT_RULES
    return await list_rules(session, school_id=school_id)


def _span(row: SchoolTerm | SchoolHoliday) -> SpanPublic:
    return SpanPublic(id=row.id, name=row.name, starts_on=row.starts_on, ends_on=row.ends_on)


async def get_calendar(session: AsyncSession, *, school_id: uuid.UUID) -> CalendarPublic:
    await get_school(session, school_id)
    terms = await session.execute(
        sa.select(SchoolTerm).where(col(SchoolTerm.school_id) == school_id).order_by(col(SchoolTerm.starts_on))
    )
    holidays = await session.execute(
        sa.select(SchoolHoliday).where(col(SchoolHoliday.school_id) == school_id).order_by(col(SchoolHoliday.starts_on))
    )
    return CalendarPublic(
        school_id=school_id,
        terms=[_span(t) for t in terms.scalars()],
        holidays=[_span(h) for h in holidays.scalars()],
    )


async def add_term(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, data: TermCreate
) -> SpanPublic:
    """A new term; one that overlaps another of the school's terms is refused (409 term_overlap) by the
    database's exclusion constraint, so two admins adding overlapping terms at once cannot both succeed. They
    queue for the school's terms first: without it their rows deadlock in the constraint's index, and one of
    them would get a 503."""
    require_school_admin(principal)
    await get_school(session, school_id)
    await lock_until_commit(session, f"school-terms:{school_id}")
    term = SchoolTerm(school_id=school_id, name=data.name, starts_on=data.starts_on, ends_on=data.ends_on)
    try:
        async with session.begin_nested():
            session.add(term)
            await session.flush()
    except IntegrityError as exc:
        if "ex_school_term_overlap" not in str(exc.orig):
            raise
        raise Conflict("与已有学期重叠 (the term overlaps another term)", code="term_overlap") from None
    return _span(term)


async def add_holiday(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, data: HolidayCreate
) -> SpanPublic:
    require_school_admin(principal)
    await get_school(session, school_id)
    holiday = SchoolHoliday(school_id=school_id, name=data.name, starts_on=data.starts_on, ends_on=data.ends_on)
    session.add(holiday)
    await session.flush()
    return _span(holiday)


async def remove_span(
    session: AsyncSession,
    principal: Principal,
    *,
    school_id: uuid.UUID,
    model: type[SchoolTerm] | type[SchoolHoliday],
    span_id: uuid.UUID,
) -> None:
    """Remove a term or holiday entered by mistake (the calendar says what is planned, not what happened)."""
    require_school_admin(principal)
    await get_school(session, school_id)
    row: SchoolTerm | SchoolHoliday | None = await session.get(model, span_id)
    if row is None or row.school_id != school_id:
        raise NotFound("学期或假期不存在 (no such term or holiday)", code="calendar_span_not_found")
    await session.delete(row)
    await session.flush()
