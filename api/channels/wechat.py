"""WeChat mini-program server API: login (`jscode2session`), access token, subscribe messages.

The protocol is WeChat's own (https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/); only the base
URL is configurable so tests and the demo can point it at `api.channels.fakes`. WeChat answers HTTP 200
with an `errcode` for business errors, and sometimes labels JSON as `text/plain`, so bodies are parsed
whatever their content type.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from api.channels.base import ChannelPermanentError, ChannelTemporaryError, SendResult, mask_id

logger = logging.getLogger(__name__)

WECHAT_API_BASE = "https://api.weixin.qq.com"

# jscode2session
ERR_INVALID_CODE = 40029
ERR_CODE_USED = 40163
ERR_RATE_LIMITED = 45011
ERR_SYSTEM_BUSY = -1
# access token
ERR_INVALID_TOKEN = 40001
ERR_INVALID_TOKEN_FORMAT = 40014
ERR_TOKEN_EXPIRED = 42001
ERR_DAILY_QUOTA = 45009
# subscribe/send
ERR_NOT_SUBSCRIBED = 43101

_TOKEN_ERRCODES = frozenset({ERR_INVALID_TOKEN, ERR_INVALID_TOKEN_FORMAT, ERR_TOKEN_EXPIRED})
_RETRYABLE_ERRCODES = frozenset({ERR_SYSTEM_BUSY, ERR_RATE_LIMITED, ERR_DAILY_QUOTA})

MiniprogramState = Literal["developer", "trial", "formal"]


class WechatError(Exception):
    """WeChat answered with a non-zero `errcode` (e.g. 40029 invalid code, 40163 code already used)."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"wechat errcode {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg

    @property
    def retryable(self) -> bool:
        """True for "busy" and rate limits: the same request may succeed a little later."""
        return self.errcode in _RETRYABLE_ERRCODES


class WechatUnavailable(Exception):
    """WeChat could not be reached or answered garbage: network error, timeout, 5xx, non-JSON body."""


class WechatNotSubscribed(ChannelPermanentError):
    """errcode 43101: the user has no subscription left for this template; fall back to SMS or voice."""

    def __init__(self, errmsg: str) -> None:
        super().__init__(str(ERR_NOT_SUBSCRIBED), errmsg)


@dataclass(frozen=True, slots=True)
class WechatSession:
    """Who logged in. `session_key` is deliberately absent: it must never leave WeChat's answer."""

    openid: str
    unionid: str | None


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A server access token and its lifetime in seconds as WeChat reported it."""

    token: str
    expires_in: int


class WechatTokenSource(Protocol):
    """Where subscribe-send gets its access token; in memory now, a database row later (shared by workers)."""

    async def get_token(self) -> str:
        """Return a token believed valid."""
        ...

    async def invalidate(self, token: str) -> None:
        """WeChat rejected `token`; the next `get_token` must not return it."""
        ...


async def _wechat_json(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    """One WeChat call; returns the JSON object, raising `WechatUnavailable` for anything not an answer."""
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise WechatUnavailable("timeout") from exc
    except httpx.HTTPError as exc:
        raise WechatUnavailable(type(exc).__name__) from exc
    if response.status_code != 200:
        raise WechatUnavailable(f"HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError as exc:
        raise WechatUnavailable("non-JSON answer") from exc
    if not isinstance(body, dict):
        raise WechatUnavailable("unexpected JSON answer")
    return body


def _raise_for_errcode(body: dict[str, Any]) -> None:
    errcode = body.get("errcode") or 0
    if errcode != 0:
        raise WechatError(int(errcode), str(body.get("errmsg", "")))


async def code_to_session(
    http: httpx.AsyncClient,
    *,
    base_url: str,
    appid: str,
    secret: str,
    code: str,
    timeout: float = 5.0,  # noqa: ASYNC109 - an httpx timeout, see base.post_to_provider
) -> WechatSession:
    """Exchange a `wx.login` code for the user's openid (and unionid when the app is bound to one).

    Raises `WechatError` for WeChat's refusals (40029 invalid code, 40163 code already used, 45011 rate
    limit, -1 busy) and `WechatUnavailable` when WeChat cannot be reached or answers garbage.
    """
    params = {"appid": appid, "secret": secret, "js_code": code, "grant_type": "authorization_code"}
    body = await _wechat_json(http, "GET", f"{base_url.rstrip('/')}/sns/jscode2session", params=params, timeout=timeout)
    _raise_for_errcode(body)
    openid = body.get("openid")
    if not isinstance(openid, str) or not openid:
        raise WechatUnavailable("answer without openid")
    unionid = body.get("unionid")
    return WechatSession(openid=openid, unionid=unionid if isinstance(unionid, str) and unionid else None)


async def fetch_stable_token(
    http: httpx.AsyncClient,
    *,
    base_url: str,
    appid: str,
    secret: str,
    force_refresh: bool = False,
    timeout: float = 5.0,  # noqa: ASYNC109 - an httpx timeout, see base.post_to_provider
) -> AccessToken:
    """Call `cgi-bin/stable_token`. Without `force_refresh` WeChat returns the current token while it lives.

    `force_refresh` is rationed by WeChat (about 20 a day) and invalidates the previous token for every
    holder, so use it only after WeChat rejected the token that normal mode keeps returning.
    """
    payload = {
        "grant_type": "client_credential",
        "appid": appid,
        "secret": secret,
        "force_refresh": force_refresh,
    }
    body = await _wechat_json(
        http, "POST", f"{base_url.rstrip('/')}/cgi-bin/stable_token", json=payload, timeout=timeout
    )
    _raise_for_errcode(body)
    token, expires_in = body.get("access_token"), body.get("expires_in")
    if not isinstance(token, str) or not token or not isinstance(expires_in, int):
        raise WechatUnavailable("answer without access_token")
    return AccessToken(token=token, expires_in=expires_in)


class WechatTokenCache:
    """In-process access-token cache: refreshes ahead of expiry, one refresh at a time (single flight).

    Fine for one process; with several workers, replace it with a database-backed `WechatTokenSource`
    so they do not each hold (and force-refresh) their own token.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        appid: str,
        secret: str,
        timeout: float = 5.0,
        refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._base_url = base_url
        self._appid = appid
        self._secret = secret
        self._timeout = timeout
        self._refresh_margin = refresh_margin
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._rejected: str | None = None

    def _fresh(self) -> str | None:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        return None

    async def get_token(self) -> str:
        """Return the cached token, fetching a new one when it is missing, rejected or near expiry."""
        if (token := self._fresh()) is not None:
            return token
        async with self._lock:
            # Whoever held the lock before us may already have refreshed.
            if (token := self._fresh()) is not None:
                return token
            return await self._refresh()

    async def invalidate(self, token: str) -> None:
        """Forget `token` after WeChat rejected it (40001/42001); a newer token is left alone."""
        async with self._lock:
            if self._token == token:
                self._token = None
                self._rejected = token

    async def _fetch(self, *, force_refresh: bool) -> AccessToken:
        return await fetch_stable_token(
            self._http,
            base_url=self._base_url,
            appid=self._appid,
            secret=self._secret,
            force_refresh=force_refresh,
            timeout=self._timeout,
        )

    async def _refresh(self) -> str:
        access = await self._fetch(force_refresh=False)
        if access.token == self._rejected:
            # Normal mode still hands out the token WeChat just refused: only a forced refresh replaces it.
            logger.warning("wechat stable_token returned a rejected token; forcing a refresh")
            access = await self._fetch(force_refresh=True)
        margin = min(self._refresh_margin, access.expires_in / 2)
        self._token = access.token
        self._refresh_at = self._clock() + access.expires_in - margin
        self._rejected = None
        return access.token


def _send_error(body: dict[str, Any]) -> ChannelPermanentError | ChannelTemporaryError:
    errcode, errmsg = int(body.get("errcode", 0)), str(body.get("errmsg", ""))
    if errcode == ERR_NOT_SUBSCRIBED:
        return WechatNotSubscribed(errmsg)
    if errcode in _RETRYABLE_ERRCODES or errcode in _TOKEN_ERRCODES:
        return ChannelTemporaryError(str(errcode), errmsg)
    # 40003 bad openid, 40037 bad template, 47003 bad data...: the same message will never go through.
    return ChannelPermanentError(str(errcode), errmsg)


async def _token_for_send(tokens: WechatTokenSource) -> str:
    try:
        return await tokens.get_token()
    except WechatUnavailable as exc:
        raise ChannelTemporaryError("token_unavailable", str(exc)) from exc
    except WechatError as exc:
        error_class = ChannelTemporaryError if exc.retryable else ChannelPermanentError
        raise error_class(str(exc.errcode), f"stable_token: {exc.errmsg}") from exc


async def send_subscribe_message(
    http: httpx.AsyncClient,
    *,
    base_url: str,
    tokens: WechatTokenSource,
    openid: str,
    template_id: str,
    data: Mapping[str, str],
    page: str | None = None,
    miniprogram_state: MiniprogramState = "formal",
    lang: str = "zh_CN",
    timeout: float = 5.0,  # noqa: ASYNC109 - an httpx timeout, see base.post_to_provider
) -> SendResult:
    """Send a subscribe message (订阅消息); `data` maps template keys to values, e.g. {"thing1": "..."}.

    Returns WeChat's msgid. Raises `WechatNotSubscribed` (43101, a `ChannelPermanentError`) when the user
    has no subscription left, `ChannelPermanentError` for other refusals, `ChannelTemporaryError` for busy,
    rate limits, timeouts and unreachable WeChat. A rejected access token is refreshed and the send retried
    once. WeChat has no idempotency key: after a timeout the message may have gone out, so the caller
    should rather fall back to SMS/voice than resend on WeChat.
    """
    payload: dict[str, Any] = {
        "touser": openid,
        "template_id": template_id,
        "data": {key: {"value": value} for key, value in data.items()},
        "miniprogram_state": miniprogram_state,
        "lang": lang,
    }
    if page is not None:
        payload["page"] = page
    url = f"{base_url.rstrip('/')}/cgi-bin/message/subscribe/send"
    for attempt in (1, 2):
        token = await _token_for_send(tokens)
        try:
            body = await _wechat_json(http, "POST", url, params={"access_token": token}, json=payload, timeout=timeout)
        except WechatUnavailable as exc:
            raise ChannelTemporaryError("unavailable", str(exc)) from exc
        errcode = body.get("errcode") or 0
        if errcode in _TOKEN_ERRCODES and attempt == 1:
            logger.info("wechat rejected the access token (%s); refreshing once", errcode)
            await tokens.invalidate(token)
            continue
        if errcode != 0:
            error = _send_error(body)
            logger.warning("wechat subscribe message to %s refused: %s", mask_id(openid), error.code)
            raise error
        msgid = str(body.get("msgid", ""))
        logger.info("wechat subscribe message to %s sent as %s", mask_id(openid), msgid)
        return SendResult(provider_message_id=msgid)
    raise AssertionError("unreachable: the loop returns or raises")
