"""监护人 — guardians of a child, the emergency call order, 联系卡 contact cards and 家长邀请码 guardian invites."""

import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import Response

from api.deps import NowDep, SchoolAdmin, SessionDep, SettingsDep, Staff, allow
from api.errors import error_responses
from api.models.accounts import Role
from api.models.guardians import (
    ContactCard,
    ContactOrderUpdate,
    GuardianDetail,
    GuardianInviteIssued,
    GuardianLinkCreate,
    GuardianLinkCreated,
    GuardianLinkEnd,
    GuardianLinkPublic,
    GuardianLinkUpdate,
    GuardianPublic,
    GuardianUpdate,
)
from api.scoping import Principal
from api.services import contact_cards
from api.services.guardians import invites, links, records

router = APIRouter(tags=["监护人 guardians"])
ERRORS = error_responses(403, 404, 422)
WRITE_ERRORS = error_responses(403, 404, 409, 422)
# Writers: admins, and teachers of the child's class (checked against the child in the service).
Writers = Annotated[Principal, allow(Role.platform_admin, Role.school_admin, Role.teacher)]
ClassExporters = Annotated[Principal, allow(Role.platform_admin, Role.school_admin, Role.teacher)]
XLSX: dict[int | str, dict[str, Any]] = {
    200: {"content": {contact_cards.XLSX_MEDIA_TYPE: {}}, "description": "XLSX workbook"}
}


@router.get(
    "/children/{child_id}/guardians",
    response_model=list[GuardianLinkPublic],
    responses=ERRORS,
    summary="学生的监护人 (guardians in call order)",
)
async def list_guardians(
    child_id: uuid.UUID, principal: Staff, session: SessionDep, now: NowDep
) -> list[GuardianLinkPublic]:
    """Active guardians first, in emergency call order, then ended links. Teachers of other classes see
    masked phones and no personal details (as for the child's own file)."""
    return await links.list_guardians(session, principal, child_id=child_id, now=now)


@router.post(
    "/children/{child_id}/guardians",
    response_model=GuardianLinkCreated,
    status_code=201,
    responses=WRITE_ERRORS,
    summary="登记监护人 (add a guardian to a child)",
)
async def add_guardian(
    child_id: uuid.UUID, body: GuardianLinkCreate, principal: Writers, session: SessionDep, now: NowDep
) -> GuardianLinkCreated:
    """A new person (``guardian``) or one already on file (``guardian_id``, e.g. for a sibling). A new person
    with the same name and phone as a guardian already linked to a child of this school is that person:
    the record is reused (``reused: true``), never duplicated. Phones: 手机 or 固定电话 with area code."""
    return await links.add_guardian(session, principal, child_id=child_id, data=body, now=now)


@router.put(
    "/children/{child_id}/contact-order",
    response_model=list[GuardianLinkPublic],
    responses=ERRORS,
    summary="紧急联系顺序 (reorder all guardians)",
)
async def set_contact_order(
    child_id: uuid.UUID, body: ContactOrderUpdate, principal: Writers, session: SessionDep, now: NowDep
) -> list[GuardianLinkPublic]:
    """``link_ids`` lists every active guardian link of the child, first to call first; orders become 1..n."""
    return await links.set_contact_order(session, principal, child_id=child_id, link_ids=body.link_ids, now=now)


@router.patch(
    "/children/{child_id}/guardians/{link_id}",
    response_model=GuardianLinkPublic,
    responses=ERRORS,
    summary="修改监护关系 (role, relation, order, active)",
)
async def update_link(
    child_id: uuid.UUID,
    link_id: uuid.UUID,
    body: GuardianLinkUpdate,
    principal: Writers,
    session: SessionDep,
    now: NowDep,
) -> GuardianLinkPublic:
    return await links.update_link(session, principal, child_id=child_id, link_id=link_id, data=body, now=now)


@router.post(
    "/children/{child_id}/guardians/{link_id}/end",
    response_model=GuardianLinkPublic,
    responses=WRITE_ERRORS,
    summary="结束监护关系 (guardian died, moved, stopped caring)",
)
async def end_link(
    child_id: uuid.UUID,
    link_id: uuid.UUID,
    body: GuardianLinkEnd,
    principal: Writers,
    session: SessionDep,
    now: NowDep,
) -> GuardianLinkPublic:
    """Nothing is deleted: the link becomes inactive with a date and a reason; the others close up."""
    return await links.end_link(session, principal, child_id=child_id, link_id=link_id, data=body, now=now)


@router.get(
    "/guardians/{guardian_id}",
    response_model=GuardianDetail,
    responses=ERRORS,
    summary="监护人详情 (with the children they care for)",
)
async def get_guardian(guardian_id: uuid.UUID, principal: Staff, session: SessionDep, now: NowDep) -> GuardianDetail:
    return await records.get_guardian(session, principal, guardian_id=guardian_id, now=now)


@router.patch(
    "/guardians/{guardian_id}",
    response_model=GuardianPublic,
    responses=ERRORS,
    summary="修改监护人信息 (one person for all their children)",
)
async def update_guardian(
    guardian_id: uuid.UUID, body: GuardianUpdate, principal: Writers, session: SessionDep, now: NowDep
) -> GuardianPublic:
    """Only the fields sent change; ``null`` clears one. ``age`` may be given instead of ``birth_year``."""
    return await records.update_guardian(session, principal, guardian_id=guardian_id, data=body, now=now)


@router.post(
    "/children/{child_id}/guardians/{guardian_id}/invites",
    response_model=GuardianInviteIssued,
    status_code=201,
    responses=WRITE_ERRORS,
    summary="家长邀请码 (invite a guardian to bind WeChat)",
)
async def invite_guardian(
    child_id: uuid.UUID,
    guardian_id: uuid.UUID,
    principal: Writers,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> GuardianInviteIssued:
    """School admins, or the head teacher (班主任) of the child's class (others: 403 ``not_head_teacher``).
    A one-time code (shown only now) with which the parent or guardian binds their WeChat in the mini-program
    (``/auth/wechat/login`` then ``/auth/wechat/bind``); they then see exactly their own children. Issuing a
    new code voids the guardian's earlier unused one."""
    return await invites.issue_guardian_invite(
        session, principal, settings=settings, child_id=child_id, guardian_id=guardian_id, now=now
    )


# ---- 联系卡 ---------------------------------------------------------------------------------------------


@router.get(
    "/children/{child_id}/contact-card",
    response_model=ContactCard,
    responses=ERRORS,
    summary="联系卡 (emergency contact card)",
    tags=["联系卡 contact cards"],
)
async def contact_card(
    child_id: uuid.UUID, principal: Staff, session: SessionDep, now: NowDep, response: Response
) -> ContactCard:
    """Who to call, in which order, with full numbers — for any staff who can see the child. Audited."""
    response.headers["Cache-Control"] = "no-store"
    return await contact_cards.contact_card(session, principal, child_id=child_id, now=now)


def _xlsx(export: contact_cards.Export) -> Response:
    ascii_name = "contact-cards.xlsx"
    return Response(
        content=export.content,
        media_type=contact_cards.XLSX_MEDIA_TYPE,
        headers={
            "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(export.filename)}",
            "Cache-Control": "no-store",
            "X-Card-Count": str(export.count),
        },
    )


@router.get(
    "/classes/{class_id}/contact-cards.xlsx",
    response_class=Response,
    responses={**XLSX, **ERRORS},
    summary="导出班级联系卡 (printable XLSX)",
    tags=["联系卡 contact cards"],
)
async def export_class_cards(
    class_id: uuid.UUID, principal: ClassExporters, session: SessionDep, now: NowDep
) -> Response:
    """Every enrolled child of the class, one card block each, A4 ready to print. The class's teachers and
    the school's admins; audited as ``contact_cards.export``."""
    return _xlsx(await contact_cards.export_class(session, principal, class_id=class_id, now=now))


@router.get(
    "/schools/{school_id}/contact-cards.xlsx",
    response_class=Response,
    responses={**XLSX, **ERRORS},
    summary="导出全校联系卡 (printable XLSX, one sheet per class)",
    tags=["联系卡 contact cards"],
)
async def export_school_cards(
    school_id: uuid.UUID, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> Response:
    """Every enrolled child of the school, one sheet per class. School admins; audited."""
    return _xlsx(await contact_cards.export_school(session, principal, school_id=school_id, now=now))
