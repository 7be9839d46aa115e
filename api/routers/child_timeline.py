"""成长记录 — a child's timeline: care records, pairings, archive changes, status events and incidents."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import SessionDep, Staff
from api.errors import error_responses
from api.models.care_rhythm import TimelineKind, TimelinePage
from api.services.care import timeline as service

router = APIRouter(tags=["成长记录 child timeline"])
ERRORS = error_responses(403, 404, 422)


@router.get(
    "/children/{child_id}/timeline",
    response_model=TimelinePage,
    responses=ERRORS,
    summary="成长记录 (everything that happened to the child, newest first; keyset-paged)",
)
async def child_timeline(
    child_id: uuid.UUID,
    principal: Staff,
    session: SessionDep,
    kind: Annotated[list[TimelineKind] | None, Query(description="only these kinds (repeat the parameter)")] = None,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIMIT)] = 50,
) -> TimelinePage:
    return await service.child_timeline(
        session, principal, child_id=child_id, kinds=set(kind) if kind else None, cursor=cursor, limit=limit
    )
