"""登录 — password login for staff, WeChat mini-program login and binding, token refresh, logout."""

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm

from api.deps import CipherDep, ClientIpDep, CurrentPrincipal, HttpDep, NowDep, PasswordsDep, SessionDep, SettingsDep
from api.errors import error_responses
from api.models.accounts import (
    AccountPublic,
    PasswordLogin,
    RefreshRequest,
    TokenPair,
    WechatBind,
    WechatLogin,
    WechatLoginResult,
)
from api.services import accounts as accounts_service
from api.services import auth as service

router = APIRouter(prefix="/auth", tags=["登录 auth"])
ERRORS = error_responses(401, 422, 429)


@router.post("/login", response_model=TokenPair, responses=ERRORS, summary="密码登录 (staff password login)")
async def login(
    body: PasswordLogin,
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    now: NowDep,
    ip: ClientIpDep,
) -> TokenPair:
    """教育局、学校管理员等在浏览器中用用户名和密码登录. Too many failures per account or address → 429."""
    return await service.login_with_password(
        session,
        settings=settings,
        passwords=passwords,
        username=body.username,
        password=body.password,
        client_ip=ip,
        now=now,
    )


@router.post("/token", response_model=TokenPair, responses=ERRORS, summary="OAuth2 password form (for /docs)")
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    now: NowDep,
    ip: ClientIpDep,
) -> TokenPair:
    """The same as ``/auth/login`` in the OAuth2 form shape, so the Authorize button of /docs works."""
    return await service.login_with_password(
        session,
        settings=settings,
        passwords=passwords,
        username=form.username,
        password=form.password,
        client_ip=ip,
        now=now,
    )


@router.post("/refresh", response_model=TokenPair, responses=ERRORS, summary="刷新令牌 (rotate refresh token)")
async def refresh(body: RefreshRequest, session: SessionDep, settings: SettingsDep, now: NowDep) -> TokenPair:
    """Each refresh token works once. Presenting a used one again revokes the whole login session."""
    return await service.refresh_tokens(session, settings=settings, refresh_token=body.refresh_token, now=now)


@router.post("/logout", status_code=204, responses=ERRORS, summary="退出登录 (logout)")
async def logout(principal: CurrentPrincipal, session: SessionDep, now: NowDep) -> None:
    """Revokes this login session: its refresh tokens and access tokens stop working at once."""
    await service.logout(session, principal=principal, now=now)


@router.post(
    "/wechat/login",
    response_model=WechatLoginResult,
    responses=error_responses(401, 422, 429, 503),
    summary="微信小程序登录 (wx.login code)",
)
async def wechat_login(
    body: WechatLogin,
    session: SessionDep,
    settings: SettingsDep,
    cipher: CipherDep,
    http: HttpDep,
    now: NowDep,
    ip: ClientIpDep,
) -> WechatLoginResult:
    """小程序调用 ``wx.login`` 得到 code 后提交. A bound WeChat user gets tokens; an unknown one gets a
    ``binding_ticket`` to bind with an invite code (教师邀请码 or 家长邀请码). ``session_key`` never leaves the
    server."""
    return await service.login_with_wechat(
        session, settings=settings, cipher=cipher, http=http, code=body.code, client_ip=ip, now=now
    )


@router.post(
    "/wechat/bind",
    response_model=TokenPair,
    responses=error_responses(401, 404, 422, 429),
    summary="微信绑定邀请码 (bind WeChat with an invite)",
)
async def wechat_bind(
    body: WechatBind, session: SessionDep, settings: SettingsDep, cipher: CipherDep, now: NowDep, ip: ClientIpDep
) -> TokenPair:
    """Binds the WeChat identity of a binding ticket to the account an invite code promises; one use only."""
    return await service.bind_wechat(
        session,
        settings=settings,
        cipher=cipher,
        ticket=body.binding_ticket,
        invite_code=body.invite_code,
        client_ip=ip,
        now=now,
    )


@router.get("/me", response_model=AccountPublic, summary="当前账号 (who am I)")
async def me(principal: CurrentPrincipal, session: SessionDep) -> AccountPublic:
    assert principal.account_id is not None
    return accounts_service.to_public(await accounts_service.get_account(session, principal.account_id))
