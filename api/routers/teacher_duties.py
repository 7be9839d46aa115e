"""教师履职 — the care work each teacher did over a term against what the care rules expected (考核细则)."""

import asyncio
import uuid
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Response

from api.deps import NowDep, SessionDep, Staff
from api.errors import error_responses
from api.models.duties import TeacherDutiesReport
from api.services.children.rules import today_in_china
from api.services.plan import duties as service

router = APIRouter(tags=["教师履职 teacher duties"])
ERRORS = error_responses(403, 404, 422)
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_XLSX_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {XLSX_MEDIA_TYPE: {}}, "description": "Excel 工作簿"}
}
From = Annotated[date | None, Query(alias="from", ge=date(2000, 1, 1), le=date(2100, 12, 31), description="起始日期")]
To = Annotated[date | None, Query(alias="to", ge=date(2000, 1, 1), le=date(2100, 12, 31), description="截止日期")]
PlanId = Annotated[uuid.UUID | None, Query(description="或: 按该计划的起止日期")]


@router.get(
    "/schools/{school_id}/teacher-duties",
    response_model=TeacherDutiesReport,
    responses=ERRORS,
    summary="教师履职情况 (per teacher: rules expected vs done, records, plan items, activities; a teacher: own row)",
)
async def teacher_duties(
    school_id: uuid.UUID,
    principal: Staff,
    session: SessionDep,
    now: NowDep,
    starts_on: From = None,
    ends_on: To = None,
    plan_id: PlanId = None,
) -> TeacherDutiesReport:
    return await service.teacher_duties(
        session,
        principal,
        school_id=school_id,
        starts_on=starts_on,
        ends_on=ends_on,
        plan_id=plan_id,
        now=now,
        today=today_in_china(now),
    )


@router.get(
    "/schools/{school_id}/teacher-duties.xlsx",
    response_class=Response,
    responses={**_XLSX_RESPONSE, **ERRORS},
    summary="导出教师履职情况 (XLSX, for the leading group)",
)
async def teacher_duties_xlsx(
    school_id: uuid.UUID,
    principal: Staff,
    session: SessionDep,
    now: NowDep,
    starts_on: From = None,
    ends_on: To = None,
    plan_id: PlanId = None,
) -> Response:
    report = await service.teacher_duties(
        session,
        principal,
        school_id=school_id,
        starts_on=starts_on,
        ends_on=ends_on,
        plan_id=plan_id,
        now=now,
        today=today_in_china(now),
        export=True,
    )
    content = await asyncio.to_thread(service.duties_xlsx, report)
    name = f"教师履职_{report.school_name}_{report.starts_on.isoformat()}_{report.ends_on.isoformat()}.xlsx"
    disposition = f"attachment; filename=\"teacher-duties.xlsx\"; filename*=UTF-8''{quote(name)}"
    return Response(content, media_type=XLSX_MEDIA_TYPE, headers={"Content-Disposition": disposition})
