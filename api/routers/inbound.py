"""Provider callbacks (delivery receipts, SMS replies, keypad presses) and the acknowledgement link.

Nobody signs in here. A callback is authenticated by its ``X-Liushou-Signature`` (HMAC of the raw body with
``callback_secret``, docs/providers.md); the link by its signed token. Having checked that, the handler works
as the system (it must find the message whatever school it belongs to). Signature freshness is checked
against the real wall clock, not the injected one: it is about the network, not about the chain's deadlines.
"""

import html
import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from api.channels.base import (
    SIGNATURE_HEADER,
    SmsInbound,
    SmsReceipt,
    VoiceEvent,
    parse_callback_event,
    verify_callback,
)
from api.deps import NowDep, SessionDep, SettingsDep
from api.errors import Conflict, Invalid, NotFound, Unauthorized, error_responses
from api.models.escalation import AUDIENCE_LABELS, AckPage
from api.scoping import SYSTEM, set_principal
from api.services import acknowledgements as service

router = APIRouter(tags=["应急回调 provider callbacks"])
CALLBACK_ERRORS = error_responses(401, 422)


async def _event(request: Request, secret: str, kinds: tuple[type, ...]) -> SmsReceipt | SmsInbound | VoiceEvent:
    try:
        body = await request.body()
    except ClientDisconnect:
        # The provider gave up waiting; it will deliver the event again.
        raise Invalid("回调请求中断 (callback body incomplete)", code="callback_incomplete") from None
    if not verify_callback(secret, request.headers.get(SIGNATURE_HEADER), body, time.time()):
        raise Unauthorized("回调签名无效或已过期 (bad or stale callback signature)", code="callback_signature_invalid")
    try:
        event = parse_callback_event(body)
    except ValidationError:
        raise Invalid("回调内容无法识别 (malformed callback event)", code="callback_invalid") from None
    if not isinstance(event, kinds):
        raise Invalid("回调类型与接口不符 (event type does not belong here)", code="callback_wrong_endpoint")
    return event


@router.post(
    "/inbound/sms",
    responses=CALLBACK_ERRORS,
    summary="短信回调 (sms.delivered / sms.failed / sms.inbound; signed)",
)
async def sms_callback(request: Request, session: SessionDep, settings: SettingsDep, now: NowDep) -> dict[str, str]:
    event = await _event(request, settings.callback_secret, (SmsReceipt, SmsInbound))
    set_principal(session, SYSTEM)
    return {"status": await service.handle_callback(session, event, now=now)}


@router.post(
    "/inbound/voice",
    responses=CALLBACK_ERRORS,
    summary="语音回调 (voice.answered / dtmf / completed / no_answer / busy / failed; signed)",
)
async def voice_callback(request: Request, session: SessionDep, settings: SettingsDep, now: NowDep) -> dict[str, str]:
    event = await _event(request, settings.callback_secret, (VoiceEvent,))
    set_principal(session, SYSTEM)
    return {"status": await service.handle_callback(session, event, now=now)}


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _page(title: str, body: str, *, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:28em;margin:2em auto;padding:0 1em;line-height:1.6}"
        "button{font-size:1.3em;padding:.6em 1.6em}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
    )


def _render(page: AckPage, token: str, *, status: int = 200) -> HTMLResponse:
    facts = (
        f"<p>{html.escape(page.school_name)}：学生在校发生{html.escape(page.category_label)}，"
        f"时间 {html.escape(page.occurred_at_local)}。事件编号 {html.escape(page.case_code)}。</p>"
    )
    if page.closed:
        return _closed_page(facts, status=status)
    if page.acknowledged:
        return _page("已确认收到", facts + "<p>谢谢。请尽快与学校联系。</p>")
    audience = html.escape(AUDIENCE_LABELS[page.audience])
    form = (
        f"<form method='post' action='/ack/{html.escape(token)}'>"
        f"<p>请{audience}确认已收到本通知：</p><button type='submit'>确认收到</button></form>"
    )
    return _page("紧急通知", facts + form)


def _closed_page(facts: str, *, status: int = 200) -> HTMLResponse:
    done = "<p>该事件已处理完毕并结案，无需再确认。如有疑问请直接与学校联系。</p>"
    return _page("事件已结案", facts + done, status=status)


def _not_found(request: Request) -> Response:
    if _wants_json(request):
        raise NotFound(service.LINK_NOT_FOUND, code="ack_link_invalid")
    return _page("链接无效", "<p>该链接无效或已失效，请直接与学校联系。</p>", status=404)


@router.get(
    "/ack/{token}",
    response_model=AckPage,
    responses={404: {"description": "unknown link"}},
    summary="确认链接页面 (shows the notice; does not acknowledge — link previews fetch it)",
)
async def ack_page(token: str, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    set_principal(session, SYSTEM)
    try:
        page = await service.ack_page(session, secret=settings.ack_link_keys, token=token)
    except NotFound:
        return _not_found(request)
    if _wants_json(request):
        return JSONResponse(page.model_dump(mode="json"))
    return _render(page, token)


@router.post(
    "/ack/{token}",
    response_model=AckPage,
    responses={404: {"description": "unknown link"}, **error_responses(409)},
    summary="通过链接确认收到 (idempotent; 409 incident_closed once the incident is closed)",
)
async def ack(token: str, request: Request, session: SessionDep, settings: SettingsDep, now: NowDep) -> Response:
    set_principal(session, SYSTEM)
    try:
        page = await service.acknowledge_link(session, secret=settings.ack_link_keys, token=token, now=now)
    except NotFound:
        return _not_found(request)
    except Conflict:
        if _wants_json(request):
            raise
        closed = await service.ack_page(session, secret=settings.ack_link_keys, token=token)
        return _render(closed, token, status=409)
    if _wants_json(request):
        return JSONResponse(page.model_dump(mode="json"))
    return _render(page, token)
