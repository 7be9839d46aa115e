"""Care records (谈心记录卡, 家访, 心理咨询, 资助, 表彰…): tamper-evident — corrected within the edit window,
amended after it, never deleted — and the verification of a school's hash chain."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import NowDep, Offset, SessionDep, Staff, allow
from api.errors import error_responses
from api.models.accounts import Role
from api.models.base import Page
from api.models.care import (
    AmendmentCreate,
    CareKind,
    CareRecordCorrection,
    CareRecordCreate,
    CareRecordDetail,
    CareRecordPublic,
    ChainReport,
)
from api.scoping import Principal
from api.services.care import records

router = APIRouter(tags=["关爱记录 care records"])
ERRORS = error_responses(403, 404, 409, 422)
SchoolStaff = Annotated[Principal, allow(Role.school_admin, Role.teacher)]
ChainVerifiers = Annotated[Principal, allow(Role.platform_admin, Role.county_bureau, Role.school_admin)]


@router.post(
    "/children/{child_id}/care-records",
    response_model=CareRecordDetail,
    status_code=201,
    responses=ERRORS,
    summary="填写关爱记录",
)
async def create_record(
    child_id: uuid.UUID, body: CareRecordCreate, principal: SchoolStaff, session: SessionDep, now: NowDep
) -> CareRecordDetail:
    """Staff of the child's school; counselling records: counsellors and school admins. ``content`` follows the
    kind (TalkContent, HomeVisitContent, ContactContent, CounsellingContent, AidContent, AwardContent); the
    date is today or earlier (Beijing time)."""
    return await records.create_record(session, principal, child_id=child_id, data=body, now=now)


@router.get(
    "/children/{child_id}/care-records",
    response_model=Page[CareRecordPublic],
    responses=ERRORS,
    summary="儿童的关爱记录",
)
async def list_records(
    child_id: uuid.UUID,
    principal: Staff,
    session: SessionDep,
    kind: list[CareKind] = Query([], description="类型 (可重复)"),
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=200),
) -> Page[CareRecordPublic]:
    """Newest first. Audited (``care_record.list``)."""
    kinds = tuple(dict.fromkeys(kind))
    return await records.list_records(session, principal, child_id=child_id, kinds=kinds, offset=offset, limit=limit)


@router.get("/care-records/{record_id}", response_model=CareRecordDetail, responses=ERRORS, summary="关爱记录详情")
async def read_record(record_id: uuid.UUID, principal: Staff, session: SessionDep) -> CareRecordDetail:
    """With its earlier versions and amendments. Audited (``care_record.read``)."""
    return await records.read_record(session, principal, record_id=record_id)


@router.put("/care-records/{record_id}", response_model=CareRecordDetail, responses=ERRORS, summary="更正记录")
async def correct_record(
    record_id: uuid.UUID, body: CareRecordCorrection, principal: SchoolStaff, session: SessionDep, now: NowDep
) -> CareRecordDetail:
    """The author, within the school's edit window (default 24 h); the earlier version is kept. After the
    window: ``409 edit_window_closed`` — add an amendment."""
    return await records.correct_record(session, principal, record_id=record_id, data=body, now=now)


@router.post(
    "/care-records/{record_id}/amendments",
    response_model=CareRecordDetail,
    status_code=201,
    responses=ERRORS,
    summary="补正记录",
)
async def amend_record(
    record_id: uuid.UUID, body: AmendmentCreate, principal: SchoolStaff, session: SessionDep, now: NowDep
) -> CareRecordDetail:
    """The author or a school admin, with a reason; linked to the record, never replacing it."""
    return await records.amend_record(session, principal, record_id=record_id, data=body, now=now)


@router.get(
    "/schools/{school_id}/care-records/verify",
    response_model=ChainReport,
    responses=ERRORS,
    summary="校验关爱记录哈希链",
)
async def verify_chain(
    school_id: uuid.UUID, principal: ChainVerifiers, session: SessionDep, now: NowDep
) -> ChainReport:
    """Every link of the school's chain checked against its content, the link before it and the head kept
    apart; names the first broken link."""
    return await records.verify_chain(session, school_id=school_id, now=now)
