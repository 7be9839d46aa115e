"""应急机制配置 — a county's chain policy (deadlines within 30/60/120 minutes) and its duty contacts (值班)."""

import uuid
from typing import Annotated

from fastapi import APIRouter

from api.deps import NowDep, SessionDep, Staff, allow
from api.errors import error_responses
from api.models.accounts import Role
from api.models.escalation import (
    DutyContactCreate,
    DutyContactPublic,
    DutyContactUpdate,
    PolicyPublic,
    PolicyValues,
)
from api.scoping import Principal
from api.services.emergency import policy as service

router = APIRouter(tags=["应急 emergencies"])
ERRORS = error_responses(403, 404, 422)
Bureau = Annotated[Principal, allow(Role.platform_admin, Role.county_bureau)]
DutyManagers = Annotated[Principal, allow(Role.platform_admin, Role.county_bureau, Role.township_official)]


@router.get(
    "/counties/{county_id}/escalation-policy",
    response_model=PolicyPublic,
    responses=ERRORS,
    summary="县应急通知策略 (the county's deadlines, waits and retries)",
)
async def get_policy(county_id: uuid.UUID, _: Staff, session: SessionDep) -> PolicyPublic:
    return await service.get_policy(session, county_id=county_id)


@router.put(
    "/counties/{county_id}/escalation-policy",
    response_model=PolicyPublic,
    responses=ERRORS,
    summary="设置县应急通知策略 (deadlines never later than 30/60/120 min; reported incidents keep theirs)",
)
async def put_policy(
    county_id: uuid.UUID, body: PolicyValues, principal: Bureau, session: SessionDep, now: NowDep
) -> PolicyPublic:
    return await service.put_policy(session, principal, county_id=county_id, data=body, now=now)


@router.get(
    "/counties/{county_id}/duty-contacts",
    response_model=list[DutyContactPublic],
    responses=ERRORS,
    summary="值班联系人 (whom step 3 calls for the bureau and each township)",
)
async def list_duty_contacts(
    county_id: uuid.UUID,
    _: Staff,
    session: SessionDep,
    township_id: uuid.UUID | None = None,
    include_inactive: bool = False,
) -> list[DutyContactPublic]:
    return await service.list_duty_contacts(
        session, county_id=county_id, township_id=township_id, include_inactive=include_inactive
    )


@router.post(
    "/counties/{county_id}/duty-contacts",
    response_model=DutyContactPublic,
    status_code=201,
    responses=ERRORS,
    summary="添加值班联系人 (county bureau: its own or a township's; township: its own)",
)
async def create_duty_contact(
    county_id: uuid.UUID, body: DutyContactCreate, principal: DutyManagers, session: SessionDep, now: NowDep
) -> DutyContactPublic:
    row = await service.create_duty_contact(session, principal, county_id=county_id, data=body, now=now)
    return service.duty_contact_public(row)


@router.patch(
    "/duty-contacts/{contact_id}",
    response_model=DutyContactPublic,
    responses=ERRORS,
    summary="修改或停用值班联系人 (is_active=false to retire one)",
)
async def update_duty_contact(
    contact_id: uuid.UUID, body: DutyContactUpdate, principal: DutyManagers, session: SessionDep, now: NowDep
) -> DutyContactPublic:
    row = await service.update_duty_contact(session, principal, contact_id=contact_id, data=body, now=now)
    return service.duty_contact_public(row)
