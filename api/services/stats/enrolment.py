"""在校学生数 per term: what a school admin records, the denominator of the left-behind share."""

import uuid
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import NotFound
from api.models.enrolment import EnrolmentPublic, EnrolmentUpdate, SchoolEnrolment
from api.models.organisations import School
from api.models.stats import PeriodKind
from api.scoping import Principal
from api.services.stats import periods


async def _school(session: AsyncSession, school_id: uuid.UUID) -> School:
    school = await session.get(School, school_id)  # scoped: a school out of scope is not found
    if school is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    return school


def _public(school: School, term_key: str, row: SchoolEnrolment | None) -> EnrolmentPublic:
    term = periods.parse(PeriodKind.term, term_key, loc="term_key", where="path")
    if row is None:
        return EnrolmentPublic(
            school_id=school.id,
            term_key=term.key,
            term_label=term.label,
            pupils=school.pupil_count,
            boarders=0,
            recorded=False,
            updated_at=None,
        )
    return EnrolmentPublic(
        school_id=school.id,
        term_key=term.key,
        term_label=term.label,
        pupils=row.pupils,
        boarders=row.boarders,
        recorded=True,
        updated_at=row.updated_at,
    )


async def get_enrolment(session: AsyncSession, *, school_id: uuid.UUID, term_key: str) -> EnrolmentPublic:
    """The school's enrolment of a term (the school's own pupil count when none is recorded)."""
    school = await _school(session, school_id)  # before the key: out of scope is "not found" whatever the key
    term = periods.parse(PeriodKind.term, term_key, loc="term_key", where="path")
    return _public(school, term.key, await session.get(SchoolEnrolment, (school.id, term.key)))


async def put_enrolment(
    session: AsyncSession,
    principal: Principal,
    *,
    school_id: uuid.UUID,
    term_key: str,
    data: EnrolmentUpdate,
    now: datetime,
) -> EnrolmentPublic:
    """Record (or correct) the school's enrolment of a term; the audit log keeps each change."""
    school = await _school(session, school_id)
    term = periods.parse(PeriodKind.term, term_key, loc="term_key", where="path")
    key = (school.id, term.key)
    row = await session.get(SchoolEnrolment, key, with_for_update=True)
    if row is None:
        try:
            async with session.begin_nested():
                row = SchoolEnrolment(
                    school_id=school.id,
                    term_key=term.key,
                    pupils=data.pupils,
                    boarders=data.boarders,
                    updated_at=now,
                    updated_by_id=principal.account_id,
                )
                session.add(row)
                await session.flush()
            return _public(school, term.key, row)
        except IntegrityError:
            # Recorded by another request at the same moment (its insert committed first): correct that row,
            # as a second PUT would.
            row = await session.get(SchoolEnrolment, key, with_for_update=True, populate_existing=True)
            if row is None:
                raise
    row.pupils, row.boarders = data.pupils, data.boarders
    row.updated_at, row.updated_by_id = now, principal.account_id
    await session.flush()
    return _public(school, term.key, row)
