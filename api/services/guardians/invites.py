"""Guardian invites (家长邀请码): a code that lets a guardian bind their WeChat account to the children they
care for, issued by the staff who may invite."""

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.errors import Conflict, Forbidden, NotFound
from api.models.accounts import Invite, InviteKind, Role
from api.models.children import Child
from api.models.guardians import (
    GuardianInviteIssued,
)
from api.models.organisations import SchoolClass
from api.scoping import Principal
from api.services.accounts import create_invite
from api.services.guardians.links import load_links
from api.services.guardians.records import LINK_NOT_FOUND, get_child
from api.settings import Settings


async def _require_inviter(session: AsyncSession, principal: Principal, child: Child) -> None:
    """School admins invite the families of their school; a head teacher (班主任) those of their own class."""
    if principal.is_system or principal.role in (Role.platform_admin, Role.school_admin):
        return
    if principal.role == Role.teacher and child.class_id is not None:
        head = (
            await session.execute(select(SchoolClass.head_teacher_id).where(SchoolClass.id == child.class_id))
        ).scalar_one_or_none()
        if head is not None and head == principal.account_id:
            return
    raise Forbidden(
        "只有学校管理员或该班班主任可以邀请家长 (only school admins and the class's head teacher)",
        code="not_head_teacher",
    )


async def issue_guardian_invite(
    session: AsyncSession,
    principal: Principal,
    *,
    settings: Settings,
    child_id: uuid.UUID,
    guardian_id: uuid.UUID,
    now: datetime,
) -> GuardianInviteIssued:
    """A one-time code with which this guardian binds their WeChat to their record. A new code voids any
    earlier unused one for the same person (a lost slip of paper must not stay usable)."""
    child = await get_child(session, child_id)
    await _require_inviter(session, principal, child)
    links = await load_links(session, child.id)
    match = [(link, g) for link, g in links if link.guardian_id == guardian_id and link.is_active]
    if not match:
        raise NotFound(LINK_NOT_FOUND, code="guardian_link_not_found")
    guardian = match[0][1]
    if guardian.account_id is not None:
        raise Conflict("该监护人已绑定微信 (this guardian has already bound WeChat)", code="guardian_already_bound")
    earlier = await session.execute(
        select(Invite).where(
            Invite.guardian_id == guardian.id,
            col(Invite.used_at).is_(None),
            Invite.expires_at > now,
        )
    )
    for invite in earlier.scalars():
        invite.expires_at = now
    issued = await create_invite(
        session,
        principal,
        settings=settings,
        school_id=child.school_id,
        kind=InviteKind.guardian,
        role=Role.family,
        display_name=None,
        guardian_id=guardian.id,
        now=now,
    )
    return GuardianInviteIssued(**issued.model_dump(), guardian_id=guardian.id, child_id=child.id)
