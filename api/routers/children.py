"""一人一档 — children's files: search, detail, corrections, the child's life on the roster, 建档率."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.db import scoped_session
from api.deps import (
    STAFF_ROLES,
    CipherDep,
    DriverRoute,
    NowDep,
    Offset,
    SchoolAdmin,
    SessionDep,
    Staff,
    allow,
    driver_principal,
    driver_route,
    driver_transaction,
    signed_in,
)
from api.errors import error_responses
from api.models.accounts import Role
from api.models.base import Page
from api.models.children import (
    AreaCompleteness,
    BecameLeftBehindRequest,
    ChildBasic,
    ChildCreate,
    ChildEventPublic,
    ChildFlag,
    ChildFull,
    ChildStatus,
    ChildSummary,
    ChildUpdate,
    ChildView,
    GraduationRequest,
    HistoryEntry,
    LifecycleChange,
    PromotionRequest,
    PromotionResult,
    ReEnrolRequest,
    RevealedIdNumber,
    SchoolCompleteness,
    TransferRequest,
)
from api.models.guardians import ChildReadView, FamilyChildDetail, FamilyChildView
from api.scoping import Principal
from api.services import completeness
from api.services.children import history, lifecycle, promotion, records, search
from api.services.guardians import family

router = APIRouter(tags=["一人一档 children"])
ERRORS = error_responses(403, 404, 409, 422)
# School admins write every file of their school; head teachers (班主任) the files of their class.
Writers = Annotated[Principal, allow(Role.platform_admin, Role.school_admin, Role.teacher)]
OnlySchoolAdmin = Annotated[Principal, allow(Role.school_admin)]
AreaViewers = Annotated[Principal, allow(Role.platform_admin, Role.county_bureau, Role.township_official)]


async def list_children(
    request: Request,
    q: str | None = Query(None, max_length=32, description="姓名: 汉字 (晓明), 拼音 (xiaoming) 或首字母 (zxm)"),
    school_id: uuid.UUID | None = None,
    class_id: uuid.UUID | None = None,
    status: list[ChildStatus] = Query([ChildStatus.enrolled], description="在册状态 (repeat for several)"),
    left_behind: bool | None = Query(None, description="是否留守"),
    flag: list[ChildFlag] = Query([], description="特殊情况 (all given must hold)"),
    complete: bool | None = Query(None, description="档案是否完整 (false: files still missing something)"),
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=200),
) -> Page[ChildSummary]:
    """Children in your scope, by school, class (grade, name) and name. Each item is the basic view with what
    its file still lacks. Every page is recorded in the audit log (``child.list``)."""
    # One of the most frequent requests (a head teacher's class): a DriverRoute, for staff.
    filters = search.ChildFilters(
        q=q,
        school_id=school_id,
        class_id=class_id,
        statuses=tuple(dict.fromkeys(status)),
        left_behind=left_behind,
        flags=tuple(dict.fromkeys(flag)),
        complete=complete,
    )
    return await search.search_children(
        driver_transaction(request), driver_principal(request), filters=filters, offset=offset, limit=limit
    )


router.add_api_route(
    "/children",
    list_children,
    methods=["GET"],
    response_model=Page[ChildSummary],
    responses=ERRORS,
    summary="儿童档案列表与搜索",
    route_class_override=driver_route(*STAFF_ROLES),
    openapi_extra=signed_in(*STAFF_ROLES),
)


@router.post("/children", response_model=ChildView, status_code=201, responses=ERRORS, summary="新建儿童档案")
async def create_child(
    body: ChildCreate, principal: Writers, session: SessionDep, cipher: CipherDep, now: NowDep
) -> ChildView:
    """School admins (any class of their school) and head teachers (their own class). A duplicate ID number
    anywhere on the platform answers 409 ``child_duplicate_id_number``: a child changing school is transferred."""
    child = await records.create_child(session, principal, cipher=cipher, data=body, now=now)
    return await records.child_view(session, principal, child, now=now)


async def get_child(child_id: uuid.UUID, request: Request) -> ChildFull | ChildBasic | FamilyChildView:
    """Full file (``detail: full``) for school admins, the bureau, the township and the teachers of the child's
    class; the basic view (``detail: basic``) for other teachers; the family view (``detail: family``, as
    ``/me/children/{id}``) for the child's own family. ID numbers are masked. Full reads are audited
    (``child.read``)."""
    # One of the most frequent requests: a DriverRoute (any signed-in account; staff read on the request's
    # driver transaction, without a session). The clock from the app: each dependency solved costs.
    principal = driver_principal(request)
    now = request.app.state.clock.now()
    if principal.role == Role.family:
        return FamilyChildView(**(await _family_child(request, principal, child_id=child_id)).model_dump())
    return await records.read_child(driver_transaction(request), principal, child_id=child_id, now=now)


router.add_api_route(
    "/children/{child_id}",
    get_child,
    methods=["GET"],
    response_model=ChildReadView,
    responses=ERRORS,
    summary="儿童档案详情",
    route_class_override=DriverRoute,
    openapi_extra=signed_in(),
)


async def _family_child(request: Request, principal: Principal, *, child_id: uuid.UUID) -> FamilyChildDetail:
    """A family's view of its child reads objects: in a session of its own, in the family's scope, committed
    (its audit entry) before the answer, as every request's."""
    async with scoped_session(request.app.state.sessionmaker, principal, clock=request.app.state.clock) as session:
        return await family.family_child(session, principal, child_id=child_id, now=request.app.state.clock.now())


@router.patch("/children/{child_id}", response_model=ChildView, responses=ERRORS, summary="修改儿童档案")
async def update_child(
    child_id: uuid.UUID, body: ChildUpdate, principal: Writers, session: SessionDep, cipher: CipherDep, now: NowDep
) -> ChildView:
    """Only the fields sent change; every change is in the history (who, which field, when)."""
    child = await records.update_child(session, principal, cipher=cipher, child_id=child_id, data=body, now=now)
    return await records.child_view(session, principal, child, now=now)


@router.post(
    "/children/{child_id}/reveal-id-number",
    response_model=RevealedIdNumber,
    responses=ERRORS,
    summary="查看完整身份证号 (school admins; audited)",
)
async def reveal_id_number(
    child_id: uuid.UUID, principal: OnlySchoolAdmin, session: SessionDep, cipher: CipherDep
) -> RevealedIdNumber:
    return await records.reveal_id_number(session, principal, cipher=cipher, child_id=child_id)


@router.get("/children/{child_id}/history", response_model=list[HistoryEntry], responses=ERRORS, summary="档案变更记录")
async def child_history(child_id: uuid.UUID, principal: Staff, session: SessionDep) -> list[HistoryEntry]:
    """Who changed which field when, and the child's life events (transfer, promotion…), newest first.
    Protected values (the ID number) show only that they changed."""
    return await history.child_history(session, principal, child_id=child_id)


# ---- lifecycle --------------------------------------------------------------------------------------------


@router.post(
    "/children/{child_id}/transfer",
    response_model=ChildEventPublic,
    status_code=201,
    responses=ERRORS,
    summary="转学 (the file follows the child)",
)
async def transfer_child(
    child_id: uuid.UUID, body: TransferRequest, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> ChildEventPublic:
    """The receiving school gets the file with its guardians and history; this school no longer sees it."""
    return records.event_public(
        await lifecycle.transfer_child(session, principal, child_id=child_id, data=body, now=now)
    )


@router.post(
    "/children/{child_id}/parents-returned",
    response_model=ChildEventPublic,
    status_code=201,
    responses=ERRORS,
    summary="父母返乡 (no longer left-behind)",
)
async def parents_returned(
    child_id: uuid.UUID, body: LifecycleChange, principal: Writers, session: SessionDep, now: NowDep
) -> ChildEventPublic:
    """School admins or the child's head teacher."""
    return records.event_public(
        await lifecycle.parents_returned(session, principal, child_id=child_id, data=body, now=now)
    )


@router.post(
    "/children/{child_id}/became-left-behind",
    response_model=ChildEventPublic,
    status_code=201,
    responses=ERRORS,
    summary="父母外出 (becomes left-behind)",
)
async def became_left_behind(
    child_id: uuid.UUID, body: BecameLeftBehindRequest, principal: Writers, session: SessionDep, now: NowDep
) -> ChildEventPublic:
    """School admins or the child's head teacher."""
    return records.event_public(
        await lifecycle.became_left_behind(session, principal, child_id=child_id, data=body, now=now)
    )


@router.post(
    "/children/{child_id}/graduate",
    response_model=ChildEventPublic,
    status_code=201,
    responses=ERRORS,
    summary="毕业",
)
async def graduate_child(
    child_id: uuid.UUID, body: GraduationRequest, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> ChildEventPublic:
    return records.event_public(
        await lifecycle.graduate_child(session, principal, child_id=child_id, data=body, now=now)
    )


@router.post(
    "/children/{child_id}/leave",
    response_model=ChildEventPublic,
    status_code=201,
    responses=ERRORS,
    summary="离校 (reason required)",
)
async def leave_school(
    child_id: uuid.UUID, body: LifecycleChange, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> ChildEventPublic:
    return records.event_public(await lifecycle.leave_school(session, principal, child_id=child_id, data=body, now=now))


@router.post(
    "/children/{child_id}/re-enrol",
    response_model=ChildEventPublic,
    status_code=201,
    responses=ERRORS,
    summary="重新入学",
)
async def re_enrol_child(
    child_id: uuid.UUID, body: ReEnrolRequest, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> ChildEventPublic:
    return records.event_public(
        await lifecycle.re_enrol_child(session, principal, child_id=child_id, data=body, now=now)
    )


@router.post(
    "/schools/{school_id}/promotions",
    response_model=PromotionResult,
    responses=ERRORS,
    summary="学年末升级 (每学年末交接: whole classes in one operation)",
)
async def promote_classes(
    school_id: uuid.UUID, body: PromotionRequest, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> PromotionResult:
    """All or nothing. Promoting a class twice in one school year answers 409 ``already_promoted``."""
    return await promotion.promote_classes(session, principal, school_id=school_id, data=body, now=now)


# ---- 建档率 -------------------------------------------------------------------------------------------------


@router.get(
    "/schools/{school_id}/archive-completeness",
    response_model=SchoolCompleteness,
    responses=ERRORS,
    summary="建档率 of a school and its classes",
)
async def school_completeness(school_id: uuid.UUID, _: Staff, session: SessionDep) -> SchoolCompleteness:
    """Enrolled left-behind children, complete files, the rate, and how many files lack each item.
    The files themselves: ``GET /children?school_id=…&left_behind=true&complete=false``."""
    return await completeness.school_completeness(session, school_id=school_id)


@router.get(
    "/archive-completeness",
    response_model=AreaCompleteness,
    responses=ERRORS,
    summary="建档率 of every school in scope (county bureau, township)",
)
async def area_completeness(
    _: AreaViewers, session: SessionDep, township_id: uuid.UUID | None = None
) -> AreaCompleteness:
    return await completeness.area_completeness(session, township_id=township_id)
