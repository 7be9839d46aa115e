"""Fake WeChat, SMS and voice providers that speak the real protocols, for tests and `serve --demo`.

One app serves all three under prefixes, so the client base URLs are `{base}/wechat`, `{base}/sms` and
`{base}/voice`. Everything sent is recorded (`GET /_fake/outbox`), behaviour is scripted over HTTP
(`/_fake/...`, see docs/providers.md), and delivery receipts, call progress and inbound SMS replies are
posted to the callback URL signed like a real provider would. State lives in memory, in the server's
event loop; `POST /_fake/reset` returns to the initial state.

    with FakeProviderServer(callback_secret="s", callback_url="http://127.0.0.1:8000/...") as fake:
        sms_base_url = fake.sms_base_url
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import httpx
import uvicorn
from fastapi import APIRouter, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.channels.base import (
    SIGNATURE_HEADER,
    ProviderErrorBody,
    SmsInbound,
    SmsReceipt,
    VoiceEvent,
    VoiceEventType,
    dump_callback_event,
    sign_callback,
)

DEFAULT_WECHAT_APPID = "wx-dev-appid"
DEFAULT_WECHAT_SECRET = "wx-dev-secret"
DEFAULT_SMS_API_KEY = "dev-sms-key"
DEFAULT_VOICE_API_KEY = "dev-voice-key"
DEMO_CODE_PREFIX = "demo-"

_E164 = re.compile(r"^\+?[1-9]\d{5,14}$")
_CALLBACK_ATTEMPTS = 3
_UNANSWERED: dict[str, VoiceEventType] = {
    "no_answer": "voice.no_answer",
    "busy": "voice.busy",
    "failed": "voice.failed",
}


# --- scripts: what a test asks the fake to do ------------------------------------------------------------


class CodeScript(BaseModel):
    """What `jscode2session` answers for one js_code (single use, like a real `wx.login` code)."""

    code: str
    openid: str | None = None
    unionid: str | None = None
    errcode: int | None = None
    delay_seconds: float = 0.0
    http_status: int | None = Field(default=None, description="Answer with this status and an HTML body.")


class WechatUserScript(BaseModel):
    """How subscribe/send treats one openid; `subscriptions=None` means unlimited."""

    openid: str
    subscriptions: int | None = None
    errcode: int | None = None
    delay_seconds: float = 0.0


class TokenScript(BaseModel):
    """`expire`: the current token answers 42001 and normal mode issues a new one. `poison`: the current
    token answers 40001 but normal mode keeps returning it (only force_refresh replaces it). `fail_next`:
    the next stable_token call answers `errcode`. `lifetime`: tokens issued from now live `expires_in` s."""

    action: Literal["expire", "poison", "fail_next", "lifetime"]
    errcode: int = -1
    expires_in: int = 7200


class _NumberScript(BaseModel):
    number: str
    permanent_error: str | None = Field(default=None, description="Answer 400 with this error code.")
    temporary_failures: int = Field(default=0, description="Answer the next N new requests with an error.")
    temporary_status: int = 503
    retry_after: int | None = None
    delay_seconds: float = Field(default=0.0, description="Sleep before answering (client timeouts).")


class SmsNumberScript(_NumberScript):
    """Behaviour of the SMS provider for one number."""

    receipt: Literal["delivered", "failed", "none"] = "delivered"


class VoiceNumberScript(_NumberScript):
    """Behaviour of the voice provider for one number; `silent` sends no callbacks at all."""

    outcome: Literal["answered", "no_answer", "busy", "failed", "silent"] = "answered"
    press: str | None = Field(default=None, description="Digits the callee presses after answering.")


class InboundSms(BaseModel):
    """A reply texted to our sender number."""

    model_config = ConfigDict(populate_by_name=True)
    sender: str = Field(alias="from")
    text: str


class VoiceEventScript(BaseModel):
    """Emit one voice event for an existing call now."""

    type: VoiceEventType
    digits: str | None = None


class FakeConfigUpdate(BaseModel):
    """Change the default callback URL (used when a request gives none, and for inbound SMS)."""

    callback_url: str | None


class ClockScript(BaseModel):
    """Stop the provider's clock at `now` (events happen at that instant until moved again); null: run on the
    real clock again. Lets a test say when a guardian pressed 1 independently of when the callback lands."""

    now: datetime | None


# --- provider request bodies (our contract) ----------------------------------------------------------------


class SmsSendRequest(BaseModel):
    to: str
    text: str = Field(min_length=1, max_length=500)
    idempotency_key: str = Field(min_length=1, max_length=200)
    callback_url: str | None = None


class VoiceCallRequest(BaseModel):
    to: str
    tts_text: str = Field(min_length=1, max_length=500)
    repeat: int = Field(default=2, ge=1, le=3)
    dtmf_ack_digit: str = Field(default="1", pattern=r"^[0-9*#]$")
    idempotency_key: str = Field(min_length=1, max_length=200)
    callback_url: str | None = None


# --- state ----------------------------------------------------------------------------------------------


@dataclass
class FakeConfig:
    """Fixed at creation; `reset` goes back to it."""

    callback_secret: str
    callback_url: str | None = None
    wechat_appid: str = DEFAULT_WECHAT_APPID
    wechat_secret: str = DEFAULT_WECHAT_SECRET
    sms_api_key: str = DEFAULT_SMS_API_KEY
    voice_api_key: str = DEFAULT_VOICE_API_KEY
    callback_delay: float = 0.05
    voice_default_press: str | None = "1"
    # Callbacks in flight at once, as a real provider paces its own: a burst of calls queues here, in order,
    # rather than as thousands of requests waiting in the HTTP client's connection pool.
    callback_concurrency: int = 32


@dataclass
class FakeState:
    """Everything the fake remembers; touched only from the server's event loop."""

    callback_url: str | None
    codes: dict[str, CodeScript] = field(default_factory=dict)
    used_codes: set[str] = field(default_factory=set)
    wechat_users: dict[str, WechatUserScript] = field(default_factory=dict)
    token: str | None = None
    token_expires_at: float = 0.0
    token_lifetime: int = 7200
    poisoned_tokens: set[str] = field(default_factory=set)
    token_failures: list[int] = field(default_factory=list)
    next_msgid: int = 3_000_000_001
    sms_numbers: dict[str, SmsNumberScript] = field(default_factory=dict)
    voice_numbers: dict[str, VoiceNumberScript] = field(default_factory=dict)
    sms_by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls_by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {
            k: [] for k in ("wechat_logins", "wechat_tokens", "wechat_messages", "sms", "voice", "callbacks")
        }
    )
    attempts: list[dict[str, Any]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # The last callback delivery of each call: a call's events are posted in the order they happened.
    deliveries: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    frozen_at: datetime | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class _Fake:
    """The fake's behaviour, shared by the routers; one per app."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.state = FakeState(callback_url=config.callback_url)
        self.http: httpx.AsyncClient | None = None
        self.callback_slots = asyncio.Semaphore(config.callback_concurrency)
        # The provider's clock: events carry the time they happened (`occurred_at`), read here at that moment,
        # not the time their callback is posted (in a burst that can be minutes later). In-process tests may
        # point it at their own clock (`FakeProviderServer.use_clock`).
        self.clock: Callable[[], datetime] = _now

    def now(self) -> datetime:
        return self.state.frozen_at or self.clock()

    def reset(self) -> None:
        for task in self.state.tasks:
            task.cancel()
        self.state = FakeState(callback_url=self.config.callback_url)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        # Keep a reference so the task is not garbage-collected mid-flight, and so reset can cancel it.
        task = asyncio.get_running_loop().create_task(coro)
        self.state.tasks.add(task)
        task.add_done_callback(self.state.tasks.discard)
        return task

    def post_in_order(
        self, chain: str, url: str | None, event: SmsReceipt | SmsInbound | VoiceEvent
    ) -> asyncio.Task[dict[str, Any]]:
        """Post `event` after the earlier events of the same call have been posted, without holding up what
        happens next on the call (the person presses 1 whenever they do, however slow callbacks are)."""
        previous = self.state.deliveries.get(chain)

        async def after_previous() -> dict[str, Any]:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            return await self.deliver(url, event)

        def forget(done: asyncio.Task[dict[str, Any]]) -> None:
            if self.state.deliveries.get(chain) is done:
                del self.state.deliveries[chain]

        task = self.spawn(after_previous())
        self.state.deliveries[chain] = task
        task.add_done_callback(forget)
        return task

    async def deliver(self, url: str | None, event: SmsReceipt | SmsInbound | VoiceEvent) -> dict[str, Any]:
        """POST a signed event to `url`, retrying a few times like a real provider; record the outcome."""
        body = dump_callback_event(event)
        record: dict[str, Any] = {"url": url, "event": json.loads(body), "attempts": 0, "status_code": None}
        self.state.outbox["callbacks"].append(record)
        if url is None or self.http is None:
            record["error"] = "no callback url"
            return record
        for attempt in range(_CALLBACK_ATTEMPTS):
            if attempt:
                await asyncio.sleep(0.2 * 2**attempt)
            record["attempts"] += 1
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign_callback(self.config.callback_secret, body, time.time()),
            }
            try:
                async with self.callback_slots:
                    response = await self.http.post(url, content=body, headers=headers, timeout=5.0)
            except httpx.HTTPError as exc:
                record["error"] = type(exc).__name__
                continue
            record["status_code"] = response.status_code
            if response.is_success:
                record.pop("error", None)
                return record
            record["error"] = f"HTTP {response.status_code}"
        return record


def _fake(request: Request) -> _Fake:
    fake: _Fake = request.app.state.fake
    return fake


# --- WeChat ---------------------------------------------------------------------------------------------


def _wechat(body: dict[str, Any], *, plain: bool = False) -> Response:
    # WeChat answers HTTP 200 for business errors, and labels jscode2session's JSON as text/plain.
    if plain:
        return PlainTextResponse(json.dumps(body, ensure_ascii=False))
    return JSONResponse(body)


def _wechat_error(errcode: int, errmsg: str, *, plain: bool = False) -> Response:
    return _wechat({"errcode": errcode, "errmsg": f"{errmsg} rid: {uuid.uuid4().hex[:8]}"}, plain=plain)


def _bad_gateway(status: int) -> Response:
    return Response(f"<html><body>{status}</body></html>", status_code=status, media_type="text/html")


def _check_app(fake: _Fake, appid: str | None, secret: str | None, *, plain: bool = False) -> Response | None:
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
    fake = _fake(request)
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


def _issue_token(fake: _Fake) -> None:
    state = fake.state
    if state.token is not None:
        state.poisoned_tokens.discard(state.token)
    state.token = secrets.token_urlsafe(48)
    state.token_expires_at = time.monotonic() + state.token_lifetime


@wechat_router.post("/cgi-bin/stable_token")
async def stable_token(request: Request) -> Response:
    """Server access token; normal mode returns the live token, force_refresh replaces it."""
    fake = _fake(request)
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


def _token_refusal(fake: _Fake, token: str | None) -> Response | None:
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
    fake = _fake(request)
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


# --- SMS and voice: our contract ------------------------------------------------------------------------


def _contract_error(status: int, code: str, message: str, *, retry_after: int | None = None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _check_api_key(authorization: str | None, expected: str) -> Response | None:
    if authorization != f"Bearer {expected}":
        return _contract_error(401, "unauthorized", "missing or wrong API key")
    return None


def _scripted_refusal(fake: _Fake, channel: str, to: str, script: _NumberScript | None) -> Response | None:
    """Apply a number's scripted failures to a new (not replayed) request."""
    if not _E164.match(to):
        fake.state.attempts.append({"channel": channel, "to": to, "outcome": "invalid_number"})
        return _contract_error(400, "invalid_number", "not a valid E.164 number")
    if script is None:
        return None
    if script.temporary_failures > 0:
        script.temporary_failures -= 1
        fake.state.attempts.append({"channel": channel, "to": to, "outcome": "temporary_error"})
        code = "rate_limited" if script.temporary_status == 429 else "provider_unavailable"
        return _contract_error(script.temporary_status, code, "scripted failure", retry_after=script.retry_after)
    if script.permanent_error is not None:
        fake.state.attempts.append({"channel": channel, "to": to, "outcome": script.permanent_error})
        return _contract_error(400, script.permanent_error, "scripted failure")
    return None


sms_router = APIRouter(prefix="/sms")


@sms_router.post("/v1/sms/send")
async def sms_send(request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Accept an SMS; same idempotency key → same message id, nothing sent twice."""
    fake = _fake(request)
    if (refusal := _check_api_key(authorization, fake.config.sms_api_key)) is not None:
        return refusal
    try:
        sms = SmsSendRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        return _contract_error(400, "invalid_request", str(exc.errors()[0]["msg"]))
    known = fake.state.sms_by_key.get(sms.idempotency_key)
    if known is not None:
        if (known["to"], known["text"]) != (sms.to, sms.text):
            return _contract_error(422, "idempotency_key_reused", "key already used for another message")
        fake.state.attempts.append({"channel": "sms", "to": sms.to, "outcome": "replayed"})
        return JSONResponse({"message_id": known["message_id"], "status": "accepted"})
    script = fake.state.sms_numbers.get(sms.to)
    if (refusal := _scripted_refusal(fake, "sms", sms.to, script)) is not None:
        return refusal
    record = {**sms.model_dump(), "message_id": _new_id("sms"), "status": "accepted"}
    fake.state.sms_by_key[sms.idempotency_key] = record
    fake.state.outbox["sms"].append(record)
    fake.state.attempts.append({"channel": "sms", "to": sms.to, "outcome": "accepted"})
    fake.spawn(_sms_receipt(fake, record, script.receipt if script else "delivered"))
    # Sleeping after recording is the interesting case: the provider accepted, the client timed out.
    await asyncio.sleep(script.delay_seconds if script else 0.0)
    return JSONResponse({"message_id": record["message_id"], "status": "accepted"})


async def _sms_receipt(fake: _Fake, record: dict[str, Any], receipt: str) -> None:
    await asyncio.sleep(fake.config.callback_delay)
    if receipt == "none":
        return
    record["status"] = receipt
    error = ProviderErrorBody(code="undeliverable", message="handset unreachable") if receipt == "failed" else None
    event = SmsReceipt(
        event_id=_new_id("evt"),
        occurred_at=fake.now(),
        type="sms.delivered" if receipt == "delivered" else "sms.failed",
        message_id=record["message_id"],
        idempotency_key=record["idempotency_key"],
        to=record["to"],
        error=error,
    )
    await fake.deliver(record["callback_url"] or fake.state.callback_url, event)


voice_router = APIRouter(prefix="/voice")


@voice_router.post("/v1/voice/calls")
async def voice_call(request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Queue a call; progress (answered, dtmf, completed, or no_answer/busy/failed) arrives by callback."""
    fake = _fake(request)
    if (refusal := _check_api_key(authorization, fake.config.voice_api_key)) is not None:
        return refusal
    try:
        call = VoiceCallRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        return _contract_error(400, "invalid_request", str(exc.errors()[0]["msg"]))
    known = fake.state.calls_by_key.get(call.idempotency_key)
    if known is not None:
        if (known["to"], known["tts_text"]) != (call.to, call.tts_text):
            return _contract_error(422, "idempotency_key_reused", "key already used for another call")
        fake.state.attempts.append({"channel": "voice", "to": call.to, "outcome": "replayed"})
        return JSONResponse({"call_id": known["call_id"], "status": "queued"})
    script = fake.state.voice_numbers.get(call.to)
    if (refusal := _scripted_refusal(fake, "voice", call.to, script)) is not None:
        return refusal
    record = {**call.model_dump(), "call_id": _new_id("call"), "status": "queued", "digits": None}
    fake.state.calls_by_key[call.idempotency_key] = record
    fake.state.outbox["voice"].append(record)
    fake.state.attempts.append({"channel": "voice", "to": call.to, "outcome": "accepted"})
    outcome, press = (script.outcome, script.press) if script else ("answered", fake.config.voice_default_press)
    fake.spawn(_call_progress(fake, record, outcome, press))
    await asyncio.sleep(script.delay_seconds if script else 0.0)
    return JSONResponse({"call_id": record["call_id"], "status": "queued"})


def _voice_event(
    fake: _Fake, record: dict[str, Any], type_: VoiceEventType, digits: str | None = None
) -> asyncio.Task[dict[str, Any]]:
    """The call's next event happens now; its callback is posted after the call's earlier ones."""
    if type_ == "voice.dtmf":
        record["digits"] = (record["digits"] or "") + (digits or "")
    else:
        record["status"] = type_.removeprefix("voice.")
    error = (
        ProviderErrorBody(code="call_failed", message="network rejected the call") if type_ == "voice.failed" else None
    )
    event = VoiceEvent(
        event_id=_new_id("evt"),
        occurred_at=fake.now(),
        type=type_,
        call_id=record["call_id"],
        idempotency_key=record["idempotency_key"],
        to=record["to"],
        digits=digits if type_ == "voice.dtmf" else None,
        error=error,
    )
    return fake.post_in_order(record["call_id"], record["callback_url"] or fake.state.callback_url, event)


async def _call_progress(fake: _Fake, record: dict[str, Any], outcome: str, press: str | None) -> None:
    await asyncio.sleep(fake.config.callback_delay)
    if outcome == "silent":
        return
    if outcome in _UNANSWERED:
        _voice_event(fake, record, _UNANSWERED[outcome])
        return
    _voice_event(fake, record, "voice.answered")
    if press:
        await asyncio.sleep(fake.config.callback_delay)
        _voice_event(fake, record, "voice.dtmf", press)
    _voice_event(fake, record, "voice.completed")


# --- control: /_fake -------------------------------------------------------------------------------------

control_router = APIRouter(prefix="/_fake")


@control_router.get("/outbox")
async def outbox(request: Request) -> dict[str, Any]:
    """Everything sent so far, plus every SMS/voice request's outcome under `attempts`."""
    state = _fake(request).state
    return {**state.outbox, "attempts": state.attempts}


@control_router.post("/reset")
async def reset(request: Request) -> dict[str, str]:
    """Forget scripts, messages, tokens and pending callbacks."""
    _fake(request).reset()
    return {"status": "ok"}


@control_router.put("/config")
async def configure(request: Request, update: FakeConfigUpdate) -> dict[str, str | None]:
    """Set the default callback URL."""
    _fake(request).state.callback_url = update.callback_url
    return {"callback_url": update.callback_url}


@control_router.post("/wechat/codes")
async def script_code(request: Request, script: CodeScript) -> CodeScript:
    """Register what a js_code logs in as, or the errcode / HTTP failure it meets."""
    _fake(request).state.codes[script.code] = script
    return script


@control_router.post("/wechat/users")
async def script_wechat_user(request: Request, script: WechatUserScript) -> WechatUserScript:
    """Set an openid's remaining subscriptions (0 → 43101) or a scripted errcode."""
    _fake(request).state.wechat_users[script.openid] = script
    return script


@control_router.post("/wechat/token")
async def script_token(request: Request, script: TokenScript) -> dict[str, str]:
    """Expire or poison the current access token, fail the next stable_token call, or set the lifetime."""
    state = _fake(request).state
    if script.action == "expire":
        state.token_expires_at = 0.0
    elif script.action == "poison" and state.token is not None:
        state.poisoned_tokens.add(state.token)
    elif script.action == "fail_next":
        state.token_failures.append(script.errcode)
    elif script.action == "lifetime":
        state.token_lifetime = script.expires_in
    return {"status": "ok"}


@control_router.post("/sms/numbers")
async def script_sms_number(request: Request, script: SmsNumberScript) -> SmsNumberScript:
    """Script the SMS provider's behaviour for one number."""
    _fake(request).state.sms_numbers[script.number] = script
    return script


@control_router.post("/voice/numbers")
async def script_voice_number(request: Request, script: VoiceNumberScript) -> VoiceNumberScript:
    """Script the voice provider's behaviour for one number."""
    _fake(request).state.voice_numbers[script.number] = script
    return script


@control_router.post("/sms/reply")
async def sms_reply(request: Request, reply: InboundSms) -> dict[str, Any]:
    """Deliver an inbound SMS now; answers with the callback delivery record."""
    fake = _fake(request)
    sent = [m for m in fake.state.outbox["sms"] if m["to"] == reply.sender]
    last = sent[-1] if sent else None
    url = fake.state.callback_url or (last["callback_url"] if last else None)
    if url is None:
        raise HTTPException(409, "no callback URL configured and no SMS sent to this number")
    event = SmsInbound.model_validate(
        {
            "event_id": _new_id("evt"),
            "occurred_at": fake.now(),
            "type": "sms.inbound",
            "message_id": _new_id("mo"),
            "from": reply.sender,
            "text": reply.text,
            "in_reply_to": last["message_id"] if last else None,
        }
    )
    return await fake.deliver(url, event)


@control_router.post("/voice/calls/{call_id}/events")
async def voice_call_event(request: Request, call_id: str, script: VoiceEventScript) -> dict[str, Any]:
    """Emit a voice event for an existing call now (e.g. the guardian pressed 1 in the demo)."""
    fake = _fake(request)
    record = next((c for c in fake.state.outbox["voice"] if c["call_id"] == call_id), None)
    if record is None:
        raise HTTPException(404, "unknown call_id")
    return await _voice_event(fake, record, script.type, script.digits)


@control_router.put("/clock")
async def set_clock(request: Request, script: ClockScript) -> dict[str, str | None]:
    """Stop the provider's clock at an instant (what `occurred_at` says), or let it run again (null)."""
    fake = _fake(request)
    fake.state.frozen_at = script.now.astimezone(UTC) if script.now is not None else None
    return {"now": fake.now().isoformat()}


# --- app and server -------------------------------------------------------------------------------------


def create_fake_app(
    *,
    callback_secret: str,
    callback_url: str | None = None,
    wechat_appid: str = DEFAULT_WECHAT_APPID,
    wechat_secret: str = DEFAULT_WECHAT_SECRET,
    sms_api_key: str = DEFAULT_SMS_API_KEY,
    voice_api_key: str = DEFAULT_VOICE_API_KEY,
    callback_delay: float = 0.05,
    voice_default_press: str | None = "1",
    callback_concurrency: int = 32,
) -> FastAPI:
    """Build the fake providers app. Callbacks are signed with `callback_secret` and go to the URL given in
    each request, else to `callback_url`. Unscripted voice calls are answered and `voice_default_press` is
    pressed (None: answered, nothing pressed)."""
    fake = _Fake(
        FakeConfig(
            callback_secret=callback_secret,
            callback_url=callback_url,
            wechat_appid=wechat_appid,
            wechat_secret=wechat_secret,
            sms_api_key=sms_api_key,
            voice_api_key=voice_api_key,
            callback_delay=callback_delay,
            voice_default_press=voice_default_press,
            callback_concurrency=callback_concurrency,
        )
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=callback_concurrency, max_keepalive_connections=callback_concurrency)
        async with httpx.AsyncClient(limits=limits) as http:
            fake.http = http
            yield
            fake.reset()
            fake.http = None

    app = FastAPI(
        title="liushou fake providers",
        lifespan=lifespan,
        docs_url="/_fake/docs",
        openapi_url="/_fake/openapi.json",
    )
    app.state.fake = fake
    for router in (wechat_router, sms_router, voice_router, control_router):
        app.include_router(router)
    return app


class LoopbackServer:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a background thread (tests, `serve --demo`);
    ``uvicorn_options`` go to ``uvicorn.Config`` (default: warnings only, no access log)."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.uvicorn_options: dict[str, Any] = {"log_level": "warning", "access_log": False, **uvicorn_options}
        self.base_url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def start(self, timeout: float = 10.0) -> str:
        """Bind (port 0 = a free port), serve in a daemon thread, and return the base URL once ready."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self._socket = sock
        config = uvicorn.Config(self.app, loop="asyncio", lifespan="on", **self.uvicorn_options)
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="loopback-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("loopback server did not start")
            time.sleep(0.01)
        self.port = sock.getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}"
        return self.base_url

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit, wait for the thread (up to ``timeout`` s), release the port."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> LoopbackServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class FakeProviderServer(LoopbackServer):
    """The fake providers on a loopback port; client base URLs are the `*_base_url` properties."""

    def __init__(self, *, callback_secret: str, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        super().__init__(create_fake_app(callback_secret=callback_secret, **options), host=host, port=port)

    def use_clock(self, clock: Callable[[], datetime] | None) -> None:
        """Read the provider's time from `clock` (e.g. a test's `FrozenClock.now`); None: the real clock.
        In-process only; a fake in another process is told the time with `PUT /_fake/clock`."""
        self.app.state.fake.clock = clock or _now

    def __enter__(self) -> FakeProviderServer:
        self.start()
        return self

    @property
    def wechat_base_url(self) -> str:
        return f"{self.base_url}/wechat"

    @property
    def sms_base_url(self) -> str:
        return f"{self.base_url}/sms"

    @property
    def voice_base_url(self) -> str:
        return f"{self.base_url}/voice"


def main() -> None:
    """`python -m api.fake_providers --port 9100 --secret s`: run the fakes standalone for manual testing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--secret", required=True, help="callback signing secret")
    parser.add_argument("--callback-url", default=None)
    args = parser.parse_args()
    app = create_fake_app(callback_secret=args.secret, callback_url=args.callback_url)
    uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
