"""结对帮扶 — pairings of children with proxy parents, study buddies and mentors; help plans, progress notes;
a school's care settings and counsellors."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import NowDep, Offset, SessionDep, Staff, allow
from api.errors import error_responses
from api.models.accounts import Role
from api.models.base import Page
from api.models.care import (
    CareSettingPublic,
    CareSettingUpdate,
    CounsellorFlag,
    HelpPlanIn,
    PairingCreate,
    PairingDetail,
    PairingEnd,
    PairingKind,
    PairingPublic,
    ProgressNoteCreate,
    UnpairedChild,
)
from api.scoping import Principal
from api.services.care import limits, pairings

router = APIRouter(tags=["结对帮扶 care pairings"])
ERRORS = error_responses(403, 404, 409, 422)
SchoolStaff = Annotated[Principal, allow(Role.school_admin, Role.teacher)]
OnlySchoolAdmin = Annotated[Principal, allow(Role.school_admin)]


@router.get(
    "/schools/{school_id}/care-settings", response_model=CareSettingPublic, responses=ERRORS, summary="关爱工作设置"
)
async def read_care_settings(school_id: uuid.UUID, principal: Staff, session: SessionDep) -> CareSettingPublic:
    """The school's caps (children per proxy parent, per mentor) and the edit window of care records."""
    return await limits.read_setting(session, school_id=school_id)


@router.put(
    "/schools/{school_id}/care-settings", response_model=CareSettingPublic, responses=ERRORS, summary="修改关爱工作设置"
)
async def update_care_settings(
    school_id: uuid.UUID, body: CareSettingUpdate, principal: OnlySchoolAdmin, session: SessionDep, now: NowDep
) -> CareSettingPublic:
    """School admins. Fields left out keep their value; a lower cap refuses new pairings beyond it only."""
    return await limits.update_setting(session, principal, school_id=school_id, data=body, now=now)


@router.put(
    "/accounts/{account_id}/counsellor", response_model=CounsellorFlag, responses=ERRORS, summary="设置心理辅导教师"
)
async def set_counsellor(
    account_id: uuid.UUID, body: CounsellorFlag, principal: OnlySchoolAdmin, session: SessionDep
) -> CounsellorFlag:
    """A counsellor (心理辅导教师) reads and writes counselling records of the school's children."""
    flag = await pairings.set_counsellor(session, principal, account_id=account_id, is_counsellor=body.is_counsellor)
    return CounsellorFlag(is_counsellor=flag)


@router.post(
    "/children/{child_id}/care-pairings",
    response_model=PairingDetail,
    status_code=201,
    responses=ERRORS,
    summary="结对",
)
async def create_pairing(
    child_id: uuid.UUID, body: PairingCreate, principal: SchoolStaff, session: SessionDep, now: NowDep
) -> PairingDetail:
    """School admins, or the head teacher of the child's class. One active proxy parent per child
    (``proxy_parent_exists``); each proxy parent and mentor has a cap of children (``pairing_cap_reached``)."""
    return await pairings.create_pairing(session, principal, child_id=child_id, data=body, now=now)


@router.get(
    "/children/{child_id}/care-pairings",
    response_model=list[PairingPublic],
    responses=ERRORS,
    summary="儿童的结对",
)
async def list_child_pairings(child_id: uuid.UUID, principal: Staff, session: SessionDep) -> list[PairingPublic]:
    """The child's pairings, active first."""
    return await pairings.child_pairings(session, child_id=child_id)


@router.get(
    "/schools/{school_id}/care-pairings",
    response_model=Page[PairingPublic],
    responses=ERRORS,
    summary="学校的结对",
)
async def list_school_pairings(
    school_id: uuid.UUID,
    principal: Staff,
    session: SessionDep,
    kind: PairingKind | None = None,
    staff_id: uuid.UUID | None = Query(None, description="某位教师的结对"),
    active: bool | None = Query(True, description="true: 进行中; false: 已结束; 不填: 全部"),
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=200),
) -> Page[PairingPublic]:
    return await pairings.school_pairings(
        session, school_id=school_id, kind=kind, staff_id=staff_id, active=active, offset=offset, limit=limit
    )


@router.get(
    "/schools/{school_id}/unpaired-children",
    response_model=Page[UnpairedChild],
    responses=ERRORS,
    summary="尚无代理家长的留守儿童",
)
async def list_unpaired_children(
    school_id: uuid.UUID,
    principal: Staff,
    session: SessionDep,
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=200),
) -> Page[UnpairedChild]:
    """Enrolled left-behind children with no active proxy parent, with when and why the last one ended."""
    return await pairings.unpaired_children(session, school_id=school_id, offset=offset, limit=limit)


@router.get("/care-pairings/{pairing_id}", response_model=PairingDetail, responses=ERRORS, summary="结对详情")
async def read_pairing(pairing_id: uuid.UUID, principal: Staff, session: SessionDep) -> PairingDetail:
    """The pairing with its help plan (帮扶计划) and progress notes (进步档案)."""
    return await pairings.pairing_detail(session, pairing_id=pairing_id)


@router.post("/care-pairings/{pairing_id}/end", response_model=PairingDetail, responses=ERRORS, summary="结束结对")
async def end_pairing(
    pairing_id: uuid.UUID, body: PairingEnd, principal: SchoolStaff, session: SessionDep, now: NowDep
) -> PairingDetail:
    """School admins or the child's head teacher, with a reason. Transfer, graduation and leaving end
    pairings by themselves when recorded in the child's file."""
    return await pairings.end_pairing(session, principal, pairing_id=pairing_id, data=body, now=now)


@router.put("/care-pairings/{pairing_id}/plan", response_model=PairingDetail, responses=ERRORS, summary="帮扶计划")
async def set_help_plan(
    pairing_id: uuid.UUID, body: HelpPlanIn, principal: SchoolStaff, session: SessionDep, now: NowDep
) -> PairingDetail:
    """Goals, content, schedule and milestones — by the paired teacher, the head teacher or a school admin."""
    return await pairings.set_help_plan(session, principal, pairing_id=pairing_id, data=body, now=now)


@router.post(
    "/care-pairings/{pairing_id}/progress-notes",
    response_model=PairingDetail,
    status_code=201,
    responses=ERRORS,
    summary="进步档案",
)
async def add_progress_note(
    pairing_id: uuid.UUID, body: ProgressNoteCreate, principal: SchoolStaff, session: SessionDep, now: NowDep
) -> PairingDetail:
    return await pairings.add_progress_note(session, principal, pairing_id=pairing_id, data=body, now=now)
