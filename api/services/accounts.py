"""Staff accounts and invites."""

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from api.errors import Conflict, Forbidden, Invalid, NotFound
from api.models.accounts import (
    Account,
    AccountCreate,
    AccountPublic,
    Invite,
    InviteCreate,
    InviteIssued,
    InviteKind,
    Role,
)
from api.models.base import Page
from api.models.organisations import School, Township
from api.scoping import Principal
from api.security import Passwords, invite_code_hash, new_invite_code
from api.settings import Settings

# Who may create which accounts: each role only below itself and inside its own scope.
_CREATABLE: dict[Role, set[Role]] = {
    Role.platform_admin: set(Role),
    Role.county_bureau: {Role.county_bureau, Role.township_official, Role.school_admin, Role.teacher},
    Role.school_admin: {Role.school_admin, Role.teacher},
}


def to_public(account: Account) -> AccountPublic:
    return AccountPublic(
        id=account.id,
        role=account.role,
        display_name=account.display_name,
        username=account.username,
        phone=account.phone,
        county_id=account.county_id,
        township_id=account.township_id,
        school_id=account.school_id,
        is_active=account.is_active,
        wechat_bound=account.wechat_openid is not None,
    )


async def _fill_scope(
    session: AsyncSession, data: AccountCreate
) -> tuple[uuid.UUID | None, uuid.UUID | None, uuid.UUID | None]:
    """Derive county/township from the narrowest unit named; the unit must be visible to the caller."""
    if data.role in (Role.school_admin, Role.teacher):
        if data.school_id is None:
            raise Invalid("学校账号需要 school_id (school_id required)", code="school_required")
        school = await session.get(School, data.school_id)
        if school is None:
            raise NotFound("学校不存在 (school not found)")
        return school.county_id, school.township_id, school.id
    if data.role == Role.township_official:
        if data.township_id is None:
            raise Invalid("乡镇账号需要 township_id (township_id required)", code="township_required")
        township = await session.get(Township, data.township_id)
        if township is None:
            raise NotFound("乡镇不存在 (township not found)")
        return township.county_id, township.id, None
    if data.role == Role.county_bureau:
        if data.county_id is None:
            raise Invalid("县教育局账号需要 county_id (county_id required)", code="county_required")
        return data.county_id, None, None
    return None, None, None


async def create_account(
    session: AsyncSession, principal: Principal, *, passwords: Passwords, data: AccountCreate
) -> Account:
    """Create a staff account inside the caller's scope (families come through guardian invites)."""
    if not principal.is_system and data.role not in _CREATABLE.get(principal.role, set()):  # type: ignore[arg-type]
        raise Forbidden("无权创建该角色的账号 (cannot create this role)", code="role_not_allowed")
    if data.role == Role.family:
        raise Invalid("家长账号通过邀请码绑定 (family accounts bind with an invite)", code="role_not_allowed")
    if (data.username is None) != (data.password is None):
        raise Invalid("用户名和密码需同时提供 (username and password go together)", code="credentials_incomplete")
    county_id, township_id, school_id = await _fill_scope(session, data)
    if principal.role == Role.county_bureau and county_id != principal.county_id:
        raise NotFound("县不存在 (county not found)")
    account = Account(
        role=data.role,
        display_name=data.display_name,
        username=data.username.lower() if data.username else None,
        password_hash=await passwords.hash(data.password) if data.password else None,
        phone=data.phone,
        county_id=county_id,
        township_id=township_id,
        school_id=school_id,
    )
    session.add(account)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        if "uq_account_username" not in str(exc.orig):
            raise  # another constraint: the generic 409, not a wrong reason
        raise Conflict("用户名已存在 (username taken)", code="username_taken") from None
    return account


async def list_accounts(
    session: AsyncSession, *, role: Role | None, school_id: uuid.UUID | None, offset: int, limit: int
) -> Page[AccountPublic]:
    stmt = select(Account)
    if role is not None:
        stmt = stmt.where(Account.role == role)
    if school_id is not None:
        stmt = stmt.where(Account.school_id == school_id)
    count = (await session.execute(select(sa.func.count()).select_from(stmt.subquery()))).scalar_one()
    rows = await session.execute(stmt.order_by(Account.role, Account.display_name).offset(offset).limit(limit))
    return Page(data=[to_public(a) for a in rows.scalars()], count=count)


async def set_active(session: AsyncSession, principal: Principal, *, account_id: uuid.UUID, active: bool) -> Account:
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("账号不存在 (account not found)")
    if principal.role not in _CREATABLE or account.role not in _CREATABLE[principal.role]:
        raise Forbidden("无权修改该账号 (cannot change this account)", code="role_not_allowed")
    account.is_active = active
    return account


async def issue_staff_invite(
    session: AsyncSession,
    principal: Principal,
    *,
    settings: Settings,
    school_id: uuid.UUID,
    data: InviteCreate,
    now: datetime,
) -> InviteIssued:
    """A one-time code with which a teacher binds their WeChat to a new account of this school."""
    if data.role not in (Role.teacher, Role.school_admin):
        raise Invalid(
            "邀请只能用于教师或学校管理员 (staff invites are for teachers and school admins)",
            code="role_not_allowed",
        )
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("学校不存在 (school not found)")
    return await create_invite(
        session,
        principal,
        settings=settings,
        school_id=school.id,
        kind=InviteKind.staff,
        role=data.role,
        display_name=data.display_name,
        guardian_id=None,
        now=now,
    )


async def create_invite(
    session: AsyncSession,
    principal: Principal,
    *,
    settings: Settings,
    school_id: uuid.UUID,
    kind: InviteKind,
    role: Role,
    display_name: str | None,
    guardian_id: uuid.UUID | None,
    now: datetime,
) -> InviteIssued:
    if principal.account_id is None:
        raise Forbidden()
    code = new_invite_code()
    invite = Invite(
        code_hash=invite_code_hash(code),
        kind=kind,
        school_id=school_id,
        role=role,
        display_name=display_name,
        guardian_id=guardian_id,
        created_by_id=principal.account_id,
        created_at=now,
        expires_at=now + timedelta(days=settings.invite_days),
    )
    session.add(invite)
    await session.flush()
    return InviteIssued(id=invite.id, code=code, expires_at=invite.expires_at)


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> Account:
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("账号不存在 (account not found)")
    return account


async def revoke_invite(session: AsyncSession, *, invite_id: uuid.UUID, now: datetime) -> None:
    invite = await session.get(Invite, invite_id)
    if invite is None:
        raise NotFound("邀请码不存在 (invite not found)")
    if invite.used_at is None:
        invite.expires_at = min(invite.expires_at, now)
