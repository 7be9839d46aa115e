"""The fake WeChat: login (`jscode2session`), the server access token (`stable_token`) and subscribe messages,
with WeChat's own quirks (HTTP 200 for business errors, `errcode`/`errmsg`, single-use login codes, 43101
when a user has no subscription left). Served under `/wechat`."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from api.channels.fakes.state import Fake, fake_of

DEMO_CODE_PREFIX = "demo-"


def _wechat(body: dict[str, Any], *, plain: bool = False) -> Response:
    # WeChat answers HTTP 200 for business errors, and labels jscode2session's JSON as text/plain.
    if plain:
        return PlainTextResponse(json.dumps(body, ensure_ascii=False))
    return JSONResponse(body)


def _wechat_error(errcode: int, errmsg: str, *, plain: bool = False) -> Response:
    return _wechat({"errcode": errcode, "errmsg": f"{errmsg} rid: {uuid.uuid4().hex[:8]}"}, plain=plain)


def _bad_gateway(status: int) -> Response:
    return Response(f"<html><body>{status}</body></html>", status_code=status, media_type="text/html")


def _check_app(fake: Fake, appid: str | None, secret: str | None, *, plain: bool = False) -> Response | None:
    if appid != fake.config.wechat_appid:
        return _wechat_error(40013, "invalid appid", plain=plain)
    if secret != fake.config.wechat_secret:
        return _wechat_error(40125, "invalid appsecret", plain=plain)
    return None


wechat_router = APIRouter(prefix="/wechat")


@wechat_router.get("/sns/jscode2session")
async def jscode2session(
    request: Request,
    appid: str | None = None,
    secret: str | None = None,
    js_code: str | None = None,
    grant_type: str | None = None,
) -> Response:
    """WeChat login: exchange a `wx.login` code for openid, session_key and unionid."""
    fake = fake_of(request)
    if (refusal := _check_app(fake, appid, secret, plain=True)) is not None:
        return refusal
    if grant_type != "authorization_code":
        return _wechat_error(40002, "invalid grant_type", plain=True)
    if not js_code:
        return _wechat_error(41008, "missing code", plain=True)
    script = fake.state.codes.get(js_code)
    if script is not None:
        await asyncio.sleep(script.delay_seconds)
        if script.http_status is not None:
            return _bad_gateway(script.http_status)
        if script.errcode is not None:
            return _wechat_error(script.errcode, "scripted error", plain=True)
        if js_code in fake.state.used_codes:
            return _wechat_error(40163, "code been used", plain=True)
        fake.state.used_codes.add(js_code)
        openid, unionid = script.openid or f"o-{js_code}", script.unionid
    elif js_code.startswith(DEMO_CODE_PREFIX):
        # Demo logins: reusable, deterministic, so a demo user can log in as the same person again.
        suffix = js_code.removeprefix(DEMO_CODE_PREFIX)
        openid, unionid = f"o-demo-{suffix}", f"u-demo-{suffix}"
    else:
        return _wechat_error(40029, "invalid code", plain=True)
    fake.state.outbox["wechat_logins"].append({"code": js_code, "openid": openid, "unionid": unionid})
    body: dict[str, Any] = {
        "openid": openid,
        "session_key": base64.b64encode(secrets.token_bytes(16)).decode(),
    }
    if unionid:
        body["unionid"] = unionid
    return _wechat(body, plain=True)


async def _json_body(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _issue_token(fake: Fake) -> None:
    state = fake.state
    if state.token is not None:
        state.poisoned_tokens.discard(state.token)
    state.token = secrets.token_urlsafe(48)
    state.token_expires_at = time.monotonic() + state.token_lifetime


@wechat_router.post("/cgi-bin/stable_token")
async def stable_token(request: Request) -> Response:
    """Server access token; normal mode returns the live token, force_refresh replaces it."""
    fake = fake_of(request)
    state = fake.state
    body = await _json_body(request)
    if body is None:
        return _wechat_error(47001, "data format error")
    if (refusal := _check_app(fake, body.get("appid"), body.get("secret"))) is not None:
        return refusal
    if body.get("grant_type") != "client_credential":
        return _wechat_error(40002, "invalid grant_type")
    force = bool(body.get("force_refresh", False))
    state.outbox["wechat_tokens"].append({"force_refresh": force})
    if state.token_failures:
        return _wechat_error(state.token_failures.pop(0), "scripted error")
    if force or state.token is None or time.monotonic() >= state.token_expires_at:
        _issue_token(fake)
    assert state.token is not None
    state.outbox["wechat_tokens"][-1]["access_token"] = state.token
    expires_in = max(round(state.token_expires_at - time.monotonic()), 0)
    return _wechat({"access_token": state.token, "expires_in": expires_in})


def _token_refusal(fake: Fake, token: str | None) -> Response | None:
    state = fake.state
    if not token:
        return _wechat_error(41001, "access_token missing")
    if token != state.token or token in state.poisoned_tokens:
        return _wechat_error(40001, "invalid credential, access_token is invalid or not latest")
    if time.monotonic() >= state.token_expires_at:
        return _wechat_error(42001, "access_token expired")
    return None


def _valid_template_data(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, dict) and isinstance(v.get("value"), str) for v in data.values())
    )


@wechat_router.post("/cgi-bin/message/subscribe/send")
async def subscribe_send(request: Request, access_token: str | None = None) -> Response:
    """Subscribe message: one message per remaining subscription, 43101 when none is left."""
    fake = fake_of(request)
    state = fake.state
    if (refusal := _token_refusal(fake, access_token)) is not None:
        return refusal
    body = await _json_body(request)
    if body is None:
        return _wechat_error(47001, "data format error")
    openid, template_id = body.get("touser"), body.get("template_id")
    if not isinstance(openid, str) or not openid:
        return _wechat_error(40003, "invalid openid")
    if not isinstance(template_id, str) or not template_id:
        return _wechat_error(40037, "invalid template_id")
    if not _valid_template_data(body.get("data")) or body.get("miniprogram_state", "formal") not in (
        "developer",
        "trial",
        "formal",
    ):
        return _wechat_error(47003, "argument invalid! data.thing1.value invalid")
    user = state.wechat_users.get(openid)
    if user is not None:
        await asyncio.sleep(user.delay_seconds)
        if user.errcode is not None:
            return _wechat_error(user.errcode, "scripted error")
        if user.subscriptions is not None:
            if user.subscriptions <= 0:
                return _wechat_error(43101, "user refuse to accept the msg")
            user.subscriptions -= 1
    msgid, state.next_msgid = state.next_msgid, state.next_msgid + 1
    state.outbox["wechat_messages"].append({"msgid": msgid, **body})
    return _wechat({"errcode": 0, "errmsg": "ok", "msgid": msgid})
