"""突发事件 — report an emergency, follow its chain minute by minute, act by hand when needed."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.deps import NowDep, Offset, SessionDep, SettingsDep, Staff, allow
from api.errors import error_responses
from api.models.accounts import Role
from api.models.base import Page
from api.models.escalation import AcknowledgementPublic, ContactAdd, Escalate, Resend, StaffCall
from api.models.incidents import (
    IncidentClose,
    IncidentCreate,
    IncidentNote,
    IncidentPublic,
    IncidentStatus,
    IncidentSummary,
    OutcomeRecord,
    Timeline,
)
from api.scoping import Principal
from api.services.emergency import acknowledgements, flows
from api.services.emergency import incidents as service
from api.services.emergency import timeline as incident_timeline

router = APIRouter(prefix="/incidents", tags=["应急 emergencies"])
ERRORS = error_responses(403, 404, 409, 422)
SchoolStaff = Annotated[Principal, allow(Role.school_admin, Role.teacher)]
SchoolLeader = Annotated[Principal, allow(Role.school_admin)]
Told = Annotated[Principal, allow(Role.family, Role.county_bureau, Role.township_official)]


@router.post(
    "",
    response_model=IncidentPublic,
    status_code=201,
    responses=ERRORS,
    summary="报告突发事件 (report an emergency; the 30/60/120-minute chain starts at once)",
)
async def report(body: IncidentCreate, principal: SchoolStaff, session: SessionDep, request: Request) -> IncidentPublic:
    # The settings and the clock from the app, as the sign-in reads them: each dependency FastAPI solves costs
    # on every request, and this is the path that must take ten thousand reports a minute.
    state = request.app.state
    incident = await service.report_incident(
        session, principal, data=body, settings=state.settings, now=state.clock.now(), answered=True
    )
    return await service.incident_public(session, principal, incident)


@router.get("", response_model=Page[IncidentSummary], summary="突发事件列表 (incidents in scope, newest first)")
async def list_incidents(
    _: Staff,
    session: SessionDep,
    status: IncidentStatus | None = None,
    school_id: uuid.UUID | None = None,
    needs_attention: bool | None = Query(None, description="有超时、无人可联系或多轮未确认的步骤"),
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=500),
) -> Page[IncidentSummary]:
    return await service.list_incidents(
        session, status=status, school_id=school_id, needs_attention=needs_attention, offset=offset, limit=limit
    )


@router.get(
    "/{incident_id}", response_model=IncidentPublic, responses=ERRORS, summary="事件详情与通知链 (with contact list)"
)
async def get_incident(incident_id: uuid.UUID, principal: Staff, session: SessionDep) -> IncidentPublic:
    return await service.incident_public(session, principal, await incident_timeline.get_incident(session, incident_id))


@router.get(
    "/{incident_id}/timeline",
    response_model=Timeline,
    responses=ERRORS,
    summary="事件时间线 (minute by minute: every attempt, delivery, acknowledgement and breach)",
)
async def timeline(incident_id: uuid.UUID, _: Staff, session: SessionDep) -> Timeline:
    return await incident_timeline.timeline(session, incident_id=incident_id)


@router.post(
    "/{incident_id}/updates", response_model=IncidentPublic, responses=ERRORS, summary="情况更新 (append a note)"
)
async def add_update(
    incident_id: uuid.UUID, body: IncidentNote, principal: SchoolStaff, session: SessionDep, now: NowDep
) -> IncidentPublic:
    incident = await service.add_update(session, principal, incident_id=incident_id, data=body, now=now)
    return await service.incident_public(session, principal, incident)


@router.post(
    "/{incident_id}/outcome", response_model=IncidentPublic, responses=ERRORS, summary="登记孩子的情况 (outcome)"
)
async def record_outcome(
    incident_id: uuid.UUID, body: OutcomeRecord, principal: SchoolStaff, session: SessionDep, now: NowDep
) -> IncidentPublic:
    incident = await service.record_outcome(session, principal, incident_id=incident_id, data=body, now=now)
    return await service.incident_public(session, principal, incident)


@router.post(
    "/{incident_id}/close",
    response_model=IncidentPublic,
    responses=ERRORS,
    summary="结案 (only when every step is told and the outcome recorded)",
)
async def close(
    incident_id: uuid.UUID, body: IncidentClose, principal: SchoolLeader, session: SessionDep, now: NowDep
) -> IncidentPublic:
    incident = await service.close_incident(session, principal, incident_id=incident_id, data=body, now=now)
    return await service.incident_public(session, principal, incident)


@router.post(
    "/{incident_id}/escalate",
    response_model=IncidentPublic,
    responses=ERRORS,
    summary="立即升级 (start held steps and move every untold party to its next contact now)",
)
async def escalate(
    incident_id: uuid.UUID,
    principal: SchoolStaff,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    body: Escalate | None = None,
) -> IncidentPublic:
    incident = await flows.escalate_now(
        session, principal, incident_id=incident_id, data=body or Escalate(), settings=settings, now=now
    )
    return await service.incident_public(session, principal, incident)


@router.post(
    "/{incident_id}/parties/{party_id}/contacts",
    response_model=IncidentPublic,
    status_code=201,
    responses=ERRORS,
    summary="添加联系人 (a number learned during the emergency; tried at once)",
)
async def add_contact(
    incident_id: uuid.UUID,
    party_id: uuid.UUID,
    body: ContactAdd,
    principal: SchoolStaff,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> IncidentPublic:
    incident = await flows.add_contact(
        session, principal, incident_id=incident_id, party_id=party_id, data=body, settings=settings, now=now
    )
    return await service.incident_public(session, principal, incident)


@router.post(
    "/{incident_id}/parties/{party_id}/resend",
    response_model=IncidentPublic,
    responses=ERRORS,
    summary="重新发送 (send again now to a contact)",
)
async def resend(
    incident_id: uuid.UUID,
    party_id: uuid.UUID,
    principal: SchoolStaff,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    body: Resend | None = None,
) -> IncidentPublic:
    incident = await flows.resend(
        session,
        principal,
        incident_id=incident_id,
        party_id=party_id,
        data=body or Resend(),
        settings=settings,
        now=now,
    )
    return await service.incident_public(session, principal, incident)


@router.post(
    "/{incident_id}/calls",
    response_model=AcknowledgementPublic,
    status_code=201,
    responses=ERRORS,
    summary="登记电话告知 (a staff member reached the person by phone: who and when)",
)
async def record_call(
    incident_id: uuid.UUID, body: StaffCall, principal: SchoolStaff, session: SessionDep, now: NowDep
) -> AcknowledgementPublic:
    return await acknowledgements.record_staff_call(session, principal, incident_id=incident_id, data=body, now=now)


@router.post(
    "/{incident_id}/acknowledge",
    response_model=list[AcknowledgementPublic],
    responses=ERRORS,
    summary="确认收到 (mini-program: the bound family account or the bureau / township official)",
)
async def acknowledge(
    incident_id: uuid.UUID, principal: Told, session: SessionDep, now: NowDep
) -> list[AcknowledgementPublic]:
    return await acknowledgements.acknowledge_in_mini_program(session, principal, incident_id=incident_id, now=now)
