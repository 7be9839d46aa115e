"""工作计划 — a school's care plan for a term or year: typical plans, the 领导小组, the monthly items, progress."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Response

from api.deps import NowDep, SchoolAdmin, SessionDep, Staff, allow
from api.errors import error_responses
from api.models.accounts import Role
from api.models.plan import (
    ItemCreate,
    ItemPublic,
    ItemUpdate,
    MemberCreate,
    MemberPublic,
    MemberUpdate,
    PlanCreate,
    PlanSummary,
    PlanUpdate,
    PlanView,
    ProgressUpdate,
    TemplatePublic,
)
from api.scoping import Principal
from api.services.plan import plans

router = APIRouter(tags=["工作计划 plan"])
ERRORS = error_responses(403, 404, 409, 422)
# School admins write the plan; an item's owner (a teacher) may record that item's progress.
ProgressWriters = Annotated[Principal, allow(Role.platform_admin, Role.school_admin, Role.teacher)]


@router.get("/plan-templates", response_model=list[TemplatePublic], summary="典型工作计划")
async def list_templates(principal: Staff) -> list[TemplatePublic]:
    """The typical plans a school may start from (秋季学期, 春季学期, 学年), each item citing the seed plan and
    month it comes from."""
    return plans.template_list()


@router.post(
    "/schools/{school_id}/plans", response_model=PlanView, status_code=201, responses=ERRORS, summary="新建工作计划"
)
async def create_plan(
    school_id: uuid.UUID, body: PlanCreate, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> PlanView:
    """A plan for a term or a school year, blank or from a typical plan (``template``). A school's plans never
    overlap (409 ``plan_overlaps``)."""
    plan = await plans.create_plan(session, principal, school_id=school_id, data=body, now=now)
    return await plans.plan_view(session, plan.id, now=now)


@router.get("/schools/{school_id}/plans", response_model=list[PlanSummary], responses=ERRORS, summary="学校的工作计划")
async def list_plans(school_id: uuid.UUID, principal: Staff, session: SessionDep) -> list[PlanSummary]:
    return await plans.list_plans(session, school_id=school_id)


@router.get("/plans/{plan_id}", response_model=PlanView, responses=ERRORS, summary="工作计划与进度")
async def get_plan(plan_id: uuid.UUID, principal: Staff, session: SessionDep, now: NowDep) -> PlanView:
    """The plan, its 领导小组 and its items by month, each planned, late (its month has passed in Asia/Shanghai),
    done (and by what) or dropped (and why), with the counts."""
    return await plans.plan_view(session, plan_id, now=now)


@router.patch("/plans/{plan_id}", response_model=PlanView, responses=ERRORS, summary="修改工作计划")
async def update_plan(
    plan_id: uuid.UUID, body: PlanUpdate, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> PlanView:
    await plans.update_plan(session, plan_id=plan_id, data=body, now=now)
    return await plans.plan_view(session, plan_id, now=now)


@router.delete("/plans/{plan_id}", status_code=204, responses=ERRORS, summary="删除工作计划")
async def delete_plan(plan_id: uuid.UUID, principal: SchoolAdmin, session: SessionDep) -> Response:
    """Only a plan with no item done (409 ``plan_not_deletable``)."""
    await plans.delete_plan(session, plan_id=plan_id)
    return Response(status_code=204)


@router.post(
    "/plans/{plan_id}/members",
    response_model=MemberPublic,
    status_code=201,
    responses=ERRORS,
    summary="添加领导小组成员",
)
async def add_member(
    plan_id: uuid.UUID, body: MemberCreate, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> MemberPublic:
    """A staff account of the school, or a named outside person (村委会, 关工委…), with a duty; one 组长."""
    return plans.member_public(await plans.add_member(session, plan_id=plan_id, data=body, now=now))


@router.patch(
    "/plan-members/{plan_member_id}", response_model=MemberPublic, responses=ERRORS, summary="修改领导小组成员"
)
async def update_member(
    plan_member_id: uuid.UUID, body: MemberUpdate, principal: SchoolAdmin, session: SessionDep
) -> MemberPublic:
    return plans.member_public(await plans.update_member(session, member_id=plan_member_id, data=body))


@router.delete("/plan-members/{plan_member_id}", status_code=204, responses=ERRORS, summary="移出领导小组")
async def remove_member(plan_member_id: uuid.UUID, principal: SchoolAdmin, session: SessionDep) -> Response:
    await plans.remove_member(session, member_id=plan_member_id)
    return Response(status_code=204)


@router.post(
    "/plans/{plan_id}/items", response_model=ItemPublic, status_code=201, responses=ERRORS, summary="添加计划项目"
)
async def add_item(
    plan_id: uuid.UUID, body: ItemCreate, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> ItemPublic:
    return plans.item_public(await plans.add_item(session, plan_id=plan_id, data=body, now=now), now)


@router.patch("/plan-items/{plan_item_id}", response_model=ItemPublic, responses=ERRORS, summary="修改计划项目")
async def update_item(
    plan_item_id: uuid.UUID, body: ItemUpdate, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> ItemPublic:
    return plans.item_public(await plans.update_item(session, item_id=plan_item_id, data=body, now=now), now)


@router.delete("/plan-items/{plan_item_id}", status_code=204, responses=ERRORS, summary="删除计划项目")
async def delete_item(plan_item_id: uuid.UUID, principal: SchoolAdmin, session: SessionDep) -> Response:
    """Only an item still planned (409 ``plan_item_not_deletable`` otherwise: drop it with a reason)."""
    await plans.delete_item(session, item_id=plan_item_id)
    return Response(status_code=204)


@router.post("/plan-items/{plan_item_id}/progress", response_model=ItemPublic, responses=ERRORS, summary="登记项目进度")
async def set_progress(
    plan_item_id: uuid.UUID, body: ProgressUpdate, principal: ProgressWriters, session: SessionDep, now: NowDep
) -> ItemPublic:
    """``done`` with ``fulfilled_by`` (an activity of the school) or a ``note``; ``dropped`` with a ``reason``;
    ``planned`` again. School admins, and a teacher for an item they own (403 ``plan_item_not_yours``)."""
    item = await plans.set_progress(session, principal, item_id=plan_item_id, data=body, now=now)
    return plans.item_public(item, now)
