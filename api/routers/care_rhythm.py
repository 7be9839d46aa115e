"""关爱工作节奏 — a school's care rules (谈心每月, 家访期初/期中/期末 …) and its term calendar."""

import uuid

from fastapi import APIRouter, Response

from api.deps import NowDep, SchoolAdmin, SessionDep, Staff
from api.errors import error_responses
from api.models.care_rhythm import (
    CalendarPublic,
    HolidayCreate,
    RhythmKind,
    RulePublic,
    RuleUpdate,
    SchoolHoliday,
    SchoolTerm,
    SpanPublic,
    TermCreate,
)
from api.services.care import rhythm as service

router = APIRouter(tags=["关爱节奏 care rhythm"])
ERRORS = error_responses(403, 404, 422)


class RuleSet(RuleUpdate):
    kind: RhythmKind


@router.get(
    "/schools/{school_id}/care-rules",
    response_model=list[RulePublic],
    responses=ERRORS,
    summary="关爱工作规则 (the school's rules; defaults where it set none)",
)
async def list_rules(school_id: uuid.UUID, _: Staff, session: SessionDep) -> list[RulePublic]:
    return await service.list_rules(session, school_id=school_id)


@router.put(
    "/schools/{school_id}/care-rules",
    response_model=list[RulePublic],
    responses=ERRORS,
    summary="设置一条规则 (e.g. 谈心 every two weeks; strict cadence for special children)",
)
async def set_rule(
    school_id: uuid.UUID, body: RuleSet, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> list[RulePublic]:
    data = RuleUpdate(**body.model_dump(exclude={"kind"}))
    return await service.set_rule(session, principal, school_id=school_id, kind=body.kind, data=data, now=now)


@router.post(
    "/schools/{school_id}/care-rules/reset",
    response_model=list[RulePublic],
    responses=ERRORS,
    summary="恢复默认规则 (one kind back to the default)",
)
async def reset_rule(
    school_id: uuid.UUID, kind: RhythmKind, principal: SchoolAdmin, session: SessionDep
) -> list[RulePublic]:
    return await service.reset_rule(session, principal, school_id=school_id, kind=kind)


@router.get(
    "/schools/{school_id}/calendar",
    response_model=CalendarPublic,
    responses=ERRORS,
    summary="校历: 学期与假期 (terms and holidays)",
)
async def get_calendar(school_id: uuid.UUID, _: Staff, session: SessionDep) -> CalendarPublic:
    return await service.get_calendar(session, school_id=school_id)


@router.post(
    "/schools/{school_id}/terms",
    response_model=SpanPublic,
    status_code=201,
    responses=error_responses(403, 404, 409, 422),
    summary="新增学期 (409 term_overlap)",
)
async def add_term(school_id: uuid.UUID, body: TermCreate, principal: SchoolAdmin, session: SessionDep) -> SpanPublic:
    return await service.add_term(session, principal, school_id=school_id, data=body)


@router.delete(
    "/schools/{school_id}/terms/{term_id}", status_code=204, responses=ERRORS, summary="删除学期 (entered by mistake)"
)
async def remove_term(
    school_id: uuid.UUID, term_id: uuid.UUID, principal: SchoolAdmin, session: SessionDep
) -> Response:
    await service.remove_span(session, principal, school_id=school_id, model=SchoolTerm, span_id=term_id)
    return Response(status_code=204)


@router.post(
    "/schools/{school_id}/holidays",
    response_model=SpanPublic,
    status_code=201,
    responses=ERRORS,
    summary="新增假期 (weekly and monthly rules pause)",
)
async def add_holiday(
    school_id: uuid.UUID, body: HolidayCreate, principal: SchoolAdmin, session: SessionDep
) -> SpanPublic:
    return await service.add_holiday(session, principal, school_id=school_id, data=body)


@router.delete("/schools/{school_id}/holidays/{holiday_id}", status_code=204, responses=ERRORS, summary="删除假期")
async def remove_holiday(
    school_id: uuid.UUID, holiday_id: uuid.UUID, principal: SchoolAdmin, session: SessionDep
) -> Response:
    await service.remove_span(session, principal, school_id=school_id, model=SchoolHoliday, span_id=holiday_id)
    return Response(status_code=204)
