"""Login (password and WeChat), rotating refresh tokens, logout, and the principal behind a token."""

import uuid
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit, driver
from api.channels.wechat import WechatError, WechatUnavailable, code_to_session
from api.crypto import FieldCipher
from api.errors import Conflict, Forbidden, Invalid, NotFound, TooManyRequests, Unauthorized, UpstreamUnavailable
from api.models.accounts import (
    Account,
    Invite,
    InviteKind,
    LoginSession,
    RefreshToken,
    Role,
    TokenPair,
    WechatLoginResult,
)
from api.models.children import Child
from api.models.guardians import ChildGuardian, Guardian
from api.models.organisations import School
from api.scoping import (
    ANONYMOUS,
    SCOPE_COLUMNS,
    SYSTEM,
    Principal,
    get_principal,
    parse_uuid_array,
    principal_was_set,
    scope_set_by_statement,
    set_principal,
)
from api.security import (
    AccessClaims,
    Passwords,
    invite_code_hash,
    issue_access_token,
    issue_binding_ticket,
    new_secret,
    read_binding_ticket,
    token_hash,
)
from api.services import login_limits
from api.settings import Settings

BAD_CREDENTIALS = "用户名或密码错误 (wrong username or password)"


async def _issue_tokens(
    session: AsyncSession, settings: Settings, *, account: Account, login_session_id: uuid.UUID, now: datetime
) -> TokenPair:
    refresh = new_secret()
    session.add(
        RefreshToken(
            session_id=login_session_id,
            token_hash=token_hash(refresh),
            created_at=now,
            expires_at=now + timedelta(days=settings.refresh_token_days),
        )
    )
    access = issue_access_token(
        settings, account_id=account.id, session_id=login_session_id, role=account.role.value, now=now
    )
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=settings.access_token_minutes * 60)


async def _start_session(
    session: AsyncSession,
    settings: Settings,
    *,
    account: Account,
    method: str,
    client_ip: str | None,
    now: datetime,
) -> TokenPair:
    login = LoginSession(account_id=account.id, method=method, created_at=now, client_ip=client_ip)
    session.add(login)
    account.last_login_at = now
    audit.record(
        session,
        action="auth.login",
        resource_type="account",
        resource_id=account.id,
        school_id=account.school_id,
        county_id=account.county_id,
        detail={"method": method},
    )
    await session.flush()
    return await _issue_tokens(session, settings, account=account, login_session_id=login.id, now=now)


async def login_with_password(
    session: AsyncSession,
    *,
    settings: Settings,
    passwords: Passwords,
    username: str,
    password: str,
    client_ip: str | None,
    now: datetime,
) -> TokenPair:
    """Check a staff password. The attempt is admitted by the login limits *before* the check
    (``api/services/login_limits.py``); a full bucket answers 429 whatever the password."""
    # SYSTEM: the account is looked up by name before anyone is signed in.
    await set_principal(session, SYSTEM)
    name = username.strip().lower()
    account = (
        await session.execute(select(Account).where(sa.func.lower(Account.username) == name))
    ).scalar_one_or_none()
    known = await login_limits.is_known_address(
        session, settings, account_id=account.id if account else None, client_ip=client_ip, now=now
    )
    buckets = login_limits.buckets_for(settings, username=name, client_ip=client_ip, known_address=known)
    admission = await login_limits.admit(
        session, buckets, window=timedelta(minutes=settings.login_window_minutes), now=now
    )
    if not admission.admitted:
        raise TooManyRequests(
            "登录失败次数过多，请稍后再试 (too many failed logins)",
            code="login_rate_limited",
            headers={"Retry-After": str(admission.retry_after_seconds)},
        )
    ok = await passwords.verify(password, account.password_hash if account else None)
    if not ok or account is None or not account.is_active:
        raise Unauthorized(BAD_CREDENTIALS, code="invalid_credentials")
    await login_limits.give_back(session, admission)
    return await _start_session(session, settings, account=account, method="password", client_ip=client_ip, now=now)


async def refresh_tokens(session: AsyncSession, *, settings: Settings, refresh_token: str, now: datetime) -> TokenPair:
    """Rotate a refresh token. Presenting an already rotated token revokes the whole login session."""
    # SYSTEM: the token is all the caller has; its session and account are looked up by its hash.
    await set_principal(session, SYSTEM)
    row = (
        await session.execute(
            select(RefreshToken, LoginSession, Account)
            .join(LoginSession, col(LoginSession.id) == RefreshToken.session_id)
            .join(Account, col(Account.id) == LoginSession.account_id)
            .where(RefreshToken.token_hash == token_hash(refresh_token))
            .with_for_update(of=RefreshToken)
        )
    ).one_or_none()
    if row is None:
        raise Unauthorized("登录凭证无效 (invalid refresh token)", code="refresh_token_invalid")
    token, login, account = row
    if login.revoked_at is not None or not account.is_active:
        raise Unauthorized("登录已失效，请重新登录 (session revoked)", code="session_revoked")
    if token.used_at is not None:
        login.revoked_at = now
        login.revoked_reason = "refresh_token_reuse"
        audit.record(
            session,
            action="auth.refresh_reuse",
            resource_type="account",
            resource_id=account.id,
            school_id=account.school_id,
            county_id=account.county_id,
        )
        # Committed although the request fails: a stolen token must stay dead.
        await session.commit()
        raise Unauthorized("登录凭证已被使用，会话已注销 (refresh token reused)", code="refresh_token_reused")
    if token.expires_at <= now:
        raise Unauthorized("登录已过期，请重新登录 (refresh token expired)", code="refresh_token_expired")
    token.used_at = now
    return await _issue_tokens(session, settings, account=account, login_session_id=login.id, now=now)


async def logout(session: AsyncSession, *, principal: Principal, now: datetime) -> None:
    login = await session.get(LoginSession, principal.session_id)
    if login is not None and login.revoked_at is None:
        login.revoked_at = now
        login.revoked_reason = "logout"
    audit.record(
        session,
        action="auth.logout",
        resource_type="account",
        resource_id=principal.account_id,
        school_id=principal.school_id,
        county_id=principal.county_id,
    )


# The sign-in look-up, in one round trip: the login session is live and its account active, the account's
# classes (teachers), and — in the same statement — the role and scope of the rest of the transaction
# (api/scoping.py). It runs as the owner (nobody's scope is set yet); with no row, nothing is set.
_PRINCIPAL_LOOKUP = driver.DriverStatement(
    sa.text(
        "SELECT a.id, a.role, a.county_id, a.township_id, a.school_id, a.display_name,"
        " CASE WHEN a.role = 'teacher' THEN ARRAY("
        "SELECT c.id FROM school_class c WHERE c.head_teacher_id = a.id"
        " UNION SELECT ta.class_id FROM teaching_assignment ta WHERE ta.account_id = a.id) END AS class_ids,"
        f" {SCOPE_COLUMNS}"
        " FROM account a JOIN login_session s ON s.account_id = a.id"
        " CROSS JOIN LATERAL (SELECT a.role::text AS role, a.id AS account_id, a.county_id, a.township_id,"
        " a.school_id) p"
        " WHERE a.id = :account_id AND s.id = :session_id AND s.revoked_at IS NULL AND a.is_active"
    )
)


async def load_principal(session: AsyncSession | driver.Transaction, claims: AccessClaims) -> Principal:
    """The principal behind a valid access token, if its account and login session are still live; bound to
    the session, whose statements from now on run in its scope."""
    bound = get_principal(session)
    if bound.session_id == claims.session_id and bound.account_id == claims.account_id and session.in_transaction():
        return bound  # a second Security(...) dependency of the same request
    async with scope_set_by_statement(session):
        row = await driver.fetch_one(
            session, _PRINCIPAL_LOOKUP, {"account_id": claims.account_id, "session_id": claims.session_id}
        )
    if row is None:
        await set_principal(session, ANONYMOUS)  # the look-up ran as the owner: leave nobody's scope behind
        raise Unauthorized("登录已失效，请重新登录 (session revoked)", code="session_revoked")
    principal = Principal(
        account_id=row.id,
        role=Role(row.role),
        county_id=row.county_id,
        township_id=row.township_id,
        school_id=row.school_id,
        session_id=claims.session_id,
        display_name=row.display_name,
        class_ids=frozenset(row.class_ids or ()),
        guardian_ids=parse_uuid_array(row.scope_guardian_ids),
    )
    principal_was_set(session, principal)
    return principal


# ---- WeChat ------------------------------------------------------------------------------------------


async def login_with_wechat(
    session: AsyncSession,
    *,
    settings: Settings,
    cipher: FieldCipher,
    http: httpx.AsyncClient,
    code: str,
    client_ip: str | None,
    now: datetime,
) -> WechatLoginResult:
    """Exchange a ``wx.login`` code; a known openid logs in, an unknown one gets a binding ticket."""
    try:
        wx = await code_to_session(
            http,
            base_url=settings.wechat_base_url,
            appid=settings.wechat_appid,
            secret=settings.wechat_secret,
            code=code,
        )
    except WechatError as exc:
        raise _wechat_error(exc) from None
    except WechatUnavailable:
        raise UpstreamUnavailable(
            "微信服务暂时不可用，请稍后再试 (WeChat unavailable)", code="wechat_unavailable"
        ) from None
    # SYSTEM: the account is looked up by its WeChat openid before anyone is signed in.
    await set_principal(session, SYSTEM)
    account = (await session.execute(select(Account).where(Account.wechat_openid == wx.openid))).scalar_one_or_none()
    if account is None:
        return WechatLoginResult(
            status="unbound",
            binding_ticket=issue_binding_ticket(settings, cipher, openid=wx.openid, unionid=wx.unionid, now=now),
        )
    if not account.is_active:
        raise Forbidden("账号已停用 (account disabled)", code="account_disabled")
    tokens = await _start_session(session, settings, account=account, method="wechat", client_ip=client_ip, now=now)
    return WechatLoginResult(status="logged_in", tokens=tokens)


def _wechat_error(exc: WechatError) -> Exception:
    if exc.errcode in (40029, 40163):
        return Invalid("微信登录凭证无效或已使用，请重新打开小程序 (invalid wx.login code)", code="wechat_code_invalid")
    if exc.errcode == 45011:
        return TooManyRequests(
            "微信登录过于频繁，请稍后再试 (WeChat rate limit)",
            code="wechat_rate_limited",
            headers={"Retry-After": "60"},
        )
    if exc.errcode == -1:
        return UpstreamUnavailable(
            "微信系统繁忙，请稍后再试 (WeChat busy)", code="wechat_busy", headers={"Retry-After": "5"}
        )
    return UpstreamUnavailable("微信登录失败，请稍后再试 (WeChat error)", code="wechat_error")


async def consume_invite(session: AsyncSession, *, code: str, now: datetime) -> Invite:
    invite = (
        await session.execute(select(Invite).where(Invite.code_hash == invite_code_hash(code)).with_for_update())
    ).scalar_one_or_none()
    if invite is None:
        raise NotFound("邀请码无效 (unknown invite code)", code="invite_invalid")
    if invite.used_at is not None:
        raise Invalid("邀请码已被使用 (invite code already used)", code="invite_used")
    if invite.expires_at <= now:
        raise Invalid("邀请码已过期，请向学校重新申请 (invite code expired)", code="invite_expired")
    invite.used_at = now
    return invite


async def bind_wechat(
    session: AsyncSession,
    *,
    settings: Settings,
    cipher: FieldCipher,
    ticket: str,
    invite_code: str,
    client_ip: str | None,
    now: datetime,
) -> TokenPair:
    """Create the account an invite promises and bind the WeChat identity of the ticket to it."""
    openid, unionid = read_binding_ticket(settings, cipher, ticket, now)
    # SYSTEM: binding creates an account from an invite code; nobody is signed in yet.
    await set_principal(session, SYSTEM)
    taken = (await session.execute(select(Account.id).where(Account.wechat_openid == openid))).scalar_one_or_none()
    if taken is not None:
        raise Invalid("该微信已绑定账号，请直接登录 (WeChat already bound)", code="wechat_already_bound")
    invite = await consume_invite(session, code=invite_code, now=now)
    school = await session.get(School, invite.school_id)
    if school is None:
        raise NotFound("学校不存在 (school not found)")
    if invite.kind == InviteKind.staff:
        account = Account(
            role=invite.role,
            display_name=invite.display_name or "教师",
            county_id=school.county_id,
            township_id=school.township_id,
            school_id=school.id,
            wechat_openid=openid,
            wechat_unionid=unionid,
        )
        session.add(account)
    else:
        account = await bind_guardian_invite(session, invite=invite, openid=openid, unionid=unionid)
    await session.flush()
    invite.used_by_id = account.id
    return await _start_session(session, settings, account=account, method="wechat", client_ip=client_ip, now=now)


async def bind_guardian_invite(session: AsyncSession, *, invite: Invite, openid: str, unionid: str | None) -> Account:
    """Create the family account of a guardian invite and bind it to the guardian record (one account per
    guardian). The session is SYSTEM here: nobody is signed in yet."""
    if invite.kind != InviteKind.guardian or invite.guardian_id is None or invite.role != Role.family:
        raise Invalid("该邀请码不能用于此操作 (invite kind not supported here)", code="invite_kind_unsupported")
    guardian = (
        await session.execute(select(Guardian).where(Guardian.id == invite.guardian_id).with_for_update())
    ).scalar_one_or_none()
    if guardian is None:
        raise NotFound("邀请码无效 (unknown invite code)", code="invite_invalid")
    if guardian.account_id is not None:
        raise Conflict("该监护人已绑定微信 (this guardian has already bound WeChat)", code="guardian_already_bound")
    still_linked = await session.execute(
        select(ChildGuardian.id)
        .join(Child, col(Child.id) == ChildGuardian.child_id)
        .where(
            ChildGuardian.guardian_id == guardian.id,
            col(ChildGuardian.is_active),
            Child.school_id == invite.school_id,
        )
        .limit(1)
    )
    if still_linked.scalar_one_or_none() is None:
        raise Invalid(
            "该监护人已不在本校学生的监护人名单中，请联系学校 (guardian no longer linked to a child of this school)",
            code="guardian_not_linked",
        )
    school = await session.get(School, invite.school_id)
    assert school is not None
    account = Account(
        role=Role.family,
        display_name=guardian.name,
        county_id=school.county_id,
        township_id=school.township_id,
        school_id=school.id,
        wechat_openid=openid,
        wechat_unionid=unionid,
    )
    session.add(account)
    await session.flush()
    guardian.account_id = account.id
    return account
