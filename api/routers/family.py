"""家长端 — what a parent or guardian sees after binding WeChat: their own children and their own record."""

import uuid
from typing import Annotated

from fastapi import APIRouter

from api.deps import NowDep, SessionDep, allow
from api.errors import error_responses
from api.models.accounts import Role
from api.models.guardians import FamilyChild, FamilyChildDetail, FamilyGuardianPublic, FamilyGuardianUpdate
from api.scoping import Principal
from api.services.guardians import family

router = APIRouter(prefix="/me", tags=["家长 family"])
ERRORS = error_responses(401, 403, 404, 422)
Family = Annotated[Principal, allow(Role.family)]


@router.get("/children", response_model=list[FamilyChild], responses=ERRORS, summary="我的孩子 (my children)")
async def my_children(principal: Family, session: SessionDep, now: NowDep) -> list[FamilyChild]:
    """The children you are a guardian of (siblings included), with their school and class."""
    return await family.family_children(session, principal, now=now)


@router.get("/children/{child_id}", response_model=FamilyChildDetail, responses=ERRORS, summary="孩子详情 (one child)")
async def my_child(child_id: uuid.UUID, principal: Family, session: SessionDep, now: NowDep) -> FamilyChildDetail:
    """Any other child answers 404. The ID number is shown masked only."""
    return await family.family_child(session, principal, child_id=child_id, now=now)


@router.get("/guardian", response_model=FamilyGuardianPublic, responses=ERRORS, summary="我的信息 (my guardian record)")
async def my_record(principal: Family, session: SessionDep, now: NowDep) -> FamilyGuardianPublic:
    return await family.own_guardian(session, principal, now=now)


@router.patch(
    "/guardian", response_model=FamilyGuardianPublic, responses=ERRORS, summary="更新我的联系方式 (phone, work city…)"
)
async def update_my_record(
    body: FamilyGuardianUpdate, principal: Family, session: SessionDep, now: NowDep
) -> FamilyGuardianPublic:
    """Keep the school's numbers right: a new phone, a new work city or employer. Audited."""
    return await family.update_own_guardian(session, principal, data=body, now=now)
