"""教师待办 — what must I do this week; done, due and overdue for any span; coverage and compliance."""

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import NowDep, SessionDep, Staff, allow
from api.errors import error_responses
from api.models.accounts import Role
from api.models.care_rhythm import CoverageReport, StatusGroup, StatusReport, TodoList
from api.scoping import Principal
from api.services.care import coverage as coverage_service
from api.services.care import todo as service
from api.services.children.rules import today_in_china

router = APIRouter(tags=["教师待办 care to-do"])
ERRORS = error_responses(403, 404, 422)
SchoolStaff = Annotated[Principal, allow(Role.school_admin, Role.teacher)]
Statistics = Annotated[
    Principal, allow(Role.platform_admin, Role.county_bureau, Role.township_official, Role.school_admin)
]
Day = Annotated[date, Query(ge=date(2000, 1, 1), le=date(2100, 12, 31))]


@router.get(
    "/care/todo",
    response_model=TodoList,
    responses=ERRORS,
    summary="本周待办 (my children overdue or due within 7 days; my staff's overdue items)",
)
async def my_todo(principal: SchoolStaff, session: SessionDep, now: NowDep) -> TodoList:
    return await service.todo_list(session, principal, today=today_in_china(now))


@router.get(
    "/schools/{school_id}/care/status",
    response_model=StatusReport,
    responses=ERRORS,
    summary="完成情况 (done / due / overdue per child, teacher, class or school for a span)",
)
async def care_status(
    school_id: uuid.UUID,
    principal: Staff,
    session: SessionDep,
    now: NowDep,
    starts_on: Day,
    ends_on: Day,
    group: StatusGroup = StatusGroup.child,
    class_id: uuid.UUID | None = None,
    teacher_id: uuid.UUID | None = None,
    child_id: uuid.UUID | None = None,
) -> StatusReport:
    return await service.status_report(
        session,
        principal,
        school_id=school_id,
        starts_on=starts_on,
        ends_on=ends_on,
        today=today_in_china(now),
        group=group,
        class_id=class_id,
        teacher_id=teacher_id,
        child_id=child_id,
    )


@router.get(
    "/care/coverage",
    response_model=CoverageReport,
    responses=ERRORS,
    summary="结对覆盖率与关爱达标率 (per school and class; the bureau's statistics)",
)
async def care_coverage(
    principal: Statistics,
    session: SessionDep,
    now: NowDep,
    starts_on: Day,
    ends_on: Day,
    school_id: uuid.UUID | None = None,
    township_id: uuid.UUID | None = None,
) -> CoverageReport:
    return await coverage_service.area_coverage(
        session,
        principal,
        school_id=school_id,
        township_id=township_id,
        starts_on=starts_on,
        ends_on=ends_on,
        today=today_in_china(now),
    )
