"""关爱活动 — activities with the children who took part, the plan item each fulfils, a child's activities,
and 三个优先: the share of activity places that went to left-behind children."""

import uuid
from datetime import date

from fastapi import APIRouter, Query, Response

from api.deps import NowDep, Offset, SchoolAdmin, SessionDep, Staff
from api.errors import error_responses
from api.models.base import Page
from api.models.plan import (
    ActivityCreate,
    ActivityKind,
    ActivitySummary,
    ActivityUpdate,
    ActivityView,
    ChildActivity,
    PriorityShare,
)
from api.services.plan import activities

router = APIRouter(tags=["关爱活动 activities"])
ERRORS = error_responses(403, 404, 409, 422)


@router.post(
    "/schools/{school_id}/activities",
    response_model=ActivityView,
    status_code=201,
    responses=ERRORS,
    summary="登记关爱活动",
)
async def create_activity(
    school_id: uuid.UUID, body: ActivityCreate, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> ActivityView:
    """Not in the future (422 ``activity_in_future``); children of this school's archive, each once (422
    ``activity_child_not_in_school``, ``activity_duplicate_child``); ``plan_item_id`` marks that item done."""
    activity = await activities.create_activity(session, principal, school_id=school_id, data=body, now=now)
    return await activities.activity_view(session, activity_id=activity.id, audit_read=False)


@router.get(
    "/schools/{school_id}/activities", response_model=Page[ActivitySummary], responses=ERRORS, summary="学校的关爱活动"
)
async def list_activities(
    school_id: uuid.UUID,
    principal: Staff,
    session: SessionDep,
    held_from: date | None = Query(None, description="活动日期起"),
    held_to: date | None = Query(None, description="活动日期止"),
    kind: ActivityKind | None = None,
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=200),
) -> Page[ActivitySummary]:
    return await activities.list_activities(
        session, school_id=school_id, held_from=held_from, held_to=held_to, kind=kind, offset=offset, limit=limit
    )


@router.get("/activities/{activity_id}", response_model=ActivityView, responses=ERRORS, summary="关爱活动详情")
async def get_activity(activity_id: uuid.UUID, principal: Staff, session: SessionDep) -> ActivityView:
    """With the children who took part (the read is audited, ``activity.read``)."""
    return await activities.activity_view(session, activity_id=activity_id)


@router.patch("/activities/{activity_id}", response_model=ActivityView, responses=ERRORS, summary="修改关爱活动")
async def update_activity(
    activity_id: uuid.UUID, body: ActivityUpdate, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> ActivityView:
    """Only the fields sent change; ``child_ids`` replaces the list; ``plan_item_id`` re-links (null unlinks,
    and that item is planned again)."""
    await activities.update_activity(session, principal, activity_id=activity_id, data=body, now=now)
    return await activities.activity_view(session, activity_id=activity_id, audit_read=False)


@router.delete("/activities/{activity_id}", status_code=204, responses=ERRORS, summary="删除关爱活动")
async def delete_activity(activity_id: uuid.UUID, principal: SchoolAdmin, session: SessionDep, now: NowDep) -> Response:
    """An activity entered by mistake; the plan item it fulfilled is planned again. Audited."""
    await activities.delete_activity(session, principal, activity_id=activity_id, now=now)
    return Response(status_code=204)


@router.get(
    "/children/{child_id}/activities",
    response_model=Page[ChildActivity],
    responses=ERRORS,
    summary="儿童参加的关爱活动",
)
async def child_activities(
    child_id: uuid.UUID,
    principal: Staff,
    session: SessionDep,
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=200),
) -> Page[ChildActivity]:
    return await activities.child_activities(session, child_id=child_id, offset=offset, limit=limit)


@router.get("/activity-priority", response_model=list[PriorityShare], responses=ERRORS, summary="三个优先: 活动名额")
async def activity_priority(
    principal: Staff,
    session: SessionDep,
    starts_on: date = Query(description="学期开始日期"),
    ends_on: date = Query(description="学期结束日期"),
    school_id: uuid.UUID | None = Query(None, description="只看一所学校"),
) -> list[PriorityShare]:
    """Per school in your scope (a school its own; the township and the bureau theirs): activities held,
    places, places of left-behind children and their share, over a term's dates."""
    return await activities.priority_shares(
        session, starts_on=starts_on, ends_on=ends_on, school_ids=[school_id] if school_id else None
    )
