"""Provider callbacks (delivery receipts, SMS replies, keypad presses) and the acknowledgement link.

Nobody signs in here. A callback is authenticated by its ``X-Liushou-Signature`` (HMAC of the raw body with
``callback_secret``, docs/providers.md); the link by its signed token. Having checked that, the handler works
as the system (it must find the message whatever school it belongs to). Signature freshness is checked
against the real wall clock, not the injected one: it is about the network, not about the chain's deadlines.
"""

import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from api import pages
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
from api.models.escalation import AckPage
from api.scoping import SYSTEM, set_principal
from api.services.emergency import acknowledgements as service
from api.services.emergency import callbacks

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
    await set_principal(session, SYSTEM)  # SYSTEM: a signed provider callback, about any school's messages
    return {"status": await callbacks.handle_callback(session, event, now=now)}


@router.post(
    "/inbound/voice",
    responses=CALLBACK_ERRORS,
    summary="语音回调 (voice.answered / dtmf / completed / no_answer / busy / failed; signed)",
)
async def voice_callback(request: Request, session: SessionDep, settings: SettingsDep, now: NowDep) -> dict[str, str]:
    event = await _event(request, settings.callback_secret, (VoiceEvent,))
    await set_principal(session, SYSTEM)  # SYSTEM: a signed provider callback, about any school's calls
    return {"status": await callbacks.handle_callback(session, event, now=now)}


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _html(content: str, *, status: int = 200) -> HTMLResponse:
    return HTMLResponse(content, status_code=status, headers={"Content-Security-Policy": pages.ACK_PAGE_CSP})


def _render(page: AckPage, token: str, *, status: int = 200) -> HTMLResponse:
    # Relative: the page is at .../ack/{token}, so the form posts back to it whatever prefix the public
    # address has (a reverse proxy under /liushou/, say).
    return _html(pages.ack_page(page, action=token), status=status)


async def _not_found(request: Request, session: SessionDep, settings: SettingsDep, token: str) -> Response:
    if _wants_json(request):
        raise NotFound(service.LINK_NOT_FOUND, code="ack_link_invalid")
    school = await service.school_of_link(session, secret=settings.ack_link_keys, token=token)
    return _html(pages.invalid_link_page(school), status=404)


@router.get(
    "/ack/{token}",
    response_model=AckPage,
    responses={404: {"description": "unknown link"}},
    summary="确认链接页面 (shows the notice; does not acknowledge — link previews fetch it)",
)
async def ack_page(token: str, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    await set_principal(session, SYSTEM)  # SYSTEM: the signed link is the only credential; it names its party
    try:
        page = await service.ack_page(session, secret=settings.ack_link_keys, token=token)
    except NotFound:
        return await _not_found(request, session, settings, token)
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
    await set_principal(session, SYSTEM)  # SYSTEM: the signed link is the only credential; it names its party
    try:
        page = await service.acknowledge_link(session, secret=settings.ack_link_keys, token=token, now=now)
    except NotFound:
        return await _not_found(request, session, settings, token)
    except Conflict:
        if _wants_json(request):
            raise
        closed = await service.ack_page(session, secret=settings.ack_link_keys, token=token)
        return _render(closed, token, status=409)
    if _wants_json(request):
        return JSONResponse(page.model_dump(mode="json"))
    return _render(page, token)
