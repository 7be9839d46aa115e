"""审计日志 — who read or changed what, when, from where."""

import uuid

from fastapi import APIRouter, Query

from api.deps import Managers, Offset, SessionDep
from api.models.audit import AuditEntryPublic
from api.models.base import Instant, Page
from api.services import audit as service

router = APIRouter(tags=["审计 audit"])


@router.get("/audit", response_model=Page[AuditEntryPublic], summary="审计日志 (audit log in scope)")
async def list_audit(
    _: Managers,
    session: SessionDep,
    school_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    resource_type: str | None = Query(None, max_length=64),
    resource_id: str | None = Query(None, max_length=64),
    action: str | None = Query(None, max_length=64),
    since: Instant | None = None,
    until: Instant | None = None,
    offset: Offset = 0,
    limit: int = Query(100, ge=1, le=1000),
) -> Page[AuditEntryPublic]:
    """学校管理员查看本校日志, 县教育局查看本县日志. Newest first. Append-only: nothing here can be changed."""
    return await service.list_entries(
        session,
        school_id=school_id,
        account_id=account_id,
        resource_type=resource_type,
        resource_id=resource_id,
        action=action,
        since=since,
        until=until,
        offset=offset,
        limit=limit,
    )
