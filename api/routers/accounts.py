"""账号与邀请 — staff accounts and teacher invites."""

import uuid

from fastapi import APIRouter, Query

from api.deps import Managers, NowDep, Offset, PasswordsDep, SessionDep, SettingsDep, Staff
from api.errors import error_responses
from api.models.accounts import AccountCreate, AccountPublic, InviteCreate, InviteIssued, Role
from api.models.base import Page
from api.services import accounts as service

router = APIRouter(tags=["账号 accounts"])
ERRORS = error_responses(403, 404, 422)


@router.get("/accounts", response_model=Page[AccountPublic], summary="账号列表 (accounts in scope)")
async def list_accounts(
    _: Staff,
    session: SessionDep,
    role: Role | None = None,
    school_id: uuid.UUID | None = None,
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=500),
) -> Page[AccountPublic]:
    return await service.list_accounts(session, role=role, school_id=school_id, offset=offset, limit=limit)


@router.post(
    "/accounts",
    response_model=AccountPublic,
    status_code=201,
    responses=error_responses(403, 404, 409, 422),
    summary="新建账号 (create a staff account)",
)
async def create_account(
    body: AccountCreate, principal: Managers, session: SessionDep, passwords: PasswordsDep
) -> AccountPublic:
    """Each role creates accounts only below itself and inside its own county or school."""
    return service.to_public(await service.create_account(session, principal, passwords=passwords, data=body))


@router.post(
    "/accounts/{account_id}/deactivate",
    response_model=AccountPublic,
    responses=ERRORS,
    summary="停用账号 (deactivate)",
)
async def deactivate(account_id: uuid.UUID, principal: Managers, session: SessionDep) -> AccountPublic:
    return service.to_public(await service.set_active(session, principal, account_id=account_id, active=False))


@router.post(
    "/schools/{school_id}/invites",
    response_model=InviteIssued,
    status_code=201,
    responses=ERRORS,
    summary="教师邀请码 (invite a teacher to bind WeChat)",
)
async def invite_staff(
    school_id: uuid.UUID,
    body: InviteCreate,
    principal: Managers,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> InviteIssued:
    """学校管理员为教师生成一次性邀请码; the teacher opens the mini-program, logs in with WeChat, and binds."""
    return await service.issue_staff_invite(
        session, principal, settings=settings, school_id=school_id, data=body, now=now
    )


@router.delete("/invites/{invite_id}", status_code=204, responses=ERRORS, summary="作废邀请码 (revoke invite)")
async def revoke_invite(invite_id: uuid.UUID, _: Managers, session: SessionDep, now: NowDep) -> None:
    await service.revoke_invite(session, invite_id=invite_id, now=now)
