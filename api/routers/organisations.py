"""组织 — county, townships, schools and classes."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Offset, SchoolAdmin, SessionDep, Staff, allow
from api.errors import error_responses
from api.models.accounts import Role
from api.models.base import Page
from api.models.organisations import (
    ClassCreate,
    ClassPublic,
    ClassUpdate,
    CountyPublic,
    SchoolCreate,
    SchoolPublic,
    SchoolUpdate,
    TownshipPublic,
)
from api.scoping import Principal
from api.services import organisations as service

router = APIRouter(tags=["组织 organisations"])
ERRORS = error_responses(403, 404, 422)
Bureau = Annotated[Principal, allow(Role.platform_admin, Role.county_bureau)]
SchoolManagers = Annotated[Principal, allow(Role.platform_admin, Role.county_bureau, Role.school_admin)]


@router.get("/counties", response_model=list[CountyPublic], summary="县 (counties in scope)")
async def list_counties(_: Staff, session: SessionDep) -> list[CountyPublic]:
    return [CountyPublic.model_validate(c, from_attributes=True) for c in await service.list_counties(session)]


@router.get("/townships", response_model=list[TownshipPublic], summary="乡镇 (townships in scope)")
async def list_townships(_: Staff, session: SessionDep, county_id: uuid.UUID | None = None) -> list[TownshipPublic]:
    rows = await service.list_townships(session, county_id=county_id)
    return [TownshipPublic.model_validate(t, from_attributes=True) for t in rows]


@router.get("/schools", response_model=Page[SchoolPublic], summary="学校列表 (schools in scope)")
async def list_schools(
    _: Staff,
    session: SessionDep,
    township_id: uuid.UUID | None = None,
    offset: Offset = 0,
    limit: int = Query(100, ge=1, le=500),
) -> Page[SchoolPublic]:
    return await service.list_schools(session, township_id=township_id, offset=offset, limit=limit)


@router.post("/schools", response_model=SchoolPublic, status_code=201, responses=ERRORS, summary="新建学校")
async def create_school(body: SchoolCreate, principal: Bureau, session: SessionDep) -> SchoolPublic:
    return service.school_public(await service.create_school(session, principal, data=body))


@router.get("/schools/{school_id}", response_model=SchoolPublic, responses=ERRORS, summary="学校详情")
async def get_school(school_id: uuid.UUID, _: Staff, session: SessionDep) -> SchoolPublic:
    return service.school_public(await service.get_school(session, school_id))


@router.patch("/schools/{school_id}", response_model=SchoolPublic, responses=ERRORS, summary="修改学校")
async def update_school(
    school_id: uuid.UUID, body: SchoolUpdate, principal: SchoolManagers, session: SessionDep
) -> SchoolPublic:
    return service.school_public(await service.update_school(session, principal, school_id=school_id, data=body))


@router.get("/schools/{school_id}/classes", response_model=list[ClassPublic], responses=ERRORS, summary="班级列表")
async def list_classes(
    school_id: uuid.UUID, _: Staff, session: SessionDep, include_inactive: bool = False
) -> list[ClassPublic]:
    return await service.list_classes(session, school_id=school_id, include_inactive=include_inactive)


@router.post(
    "/schools/{school_id}/classes",
    response_model=ClassPublic,
    status_code=201,
    responses=ERRORS,
    summary="新建班级",
)
async def create_class(
    school_id: uuid.UUID, body: ClassCreate, principal: SchoolAdmin, session: SessionDep
) -> ClassPublic:
    return service.class_public(await service.create_class(session, principal, school_id=school_id, data=body))


@router.patch("/classes/{class_id}", response_model=ClassPublic, responses=ERRORS, summary="修改班级 (班主任等)")
async def update_class(
    class_id: uuid.UUID, body: ClassUpdate, principal: SchoolAdmin, session: SessionDep
) -> ClassPublic:
    return service.class_public(await service.update_class(session, principal, class_id=class_id, data=body))


@router.put(
    "/classes/{class_id}/teachers/{account_id}",
    status_code=204,
    responses=ERRORS,
    summary="任课教师 (assign a subject teacher)",
)
async def assign_teacher(
    class_id: uuid.UUID, account_id: uuid.UUID, principal: SchoolAdmin, session: SessionDep
) -> None:
    await service.assign_teacher(session, principal, class_id=class_id, account_id=account_id)
