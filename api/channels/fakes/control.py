"""The scripting API, `/_fake/...` (docs/providers.md): what was sent, what to do for a login code, an openid, a
number or a call, the provider's clock, and reset. Not part of any real provider."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from api.channels.fakes.scripts import (
    ClockScript,
    CodeScript,
    FakeConfigUpdate,
    InboundSms,
    SmsNumberScript,
    TokenScript,
    VoiceEventScript,
    VoiceNumberScript,
    WechatUserScript,
)
from api.channels.fakes.sms import deliver_reply
from api.channels.fakes.state import fake_of
from api.channels.fakes.voice import voice_event

control_router = APIRouter(prefix="/_fake")


@control_router.get("/outbox")
async def outbox(request: Request) -> dict[str, Any]:
    """Everything sent so far, plus every SMS/voice request's outcome under `attempts`."""
    state = fake_of(request).state
    return {**state.outbox, "attempts": state.attempts}


@control_router.post("/reset")
async def reset(request: Request) -> dict[str, str]:
    """Forget scripts, messages, tokens and pending callbacks."""
    fake_of(request).reset()
    return {"status": "ok"}


@control_router.put("/config")
async def configure(request: Request, update: FakeConfigUpdate) -> dict[str, str | None]:
    """Set the default callback URL."""
    fake_of(request).state.callback_url = update.callback_url
    return {"callback_url": update.callback_url}


@control_router.post("/wechat/codes")
async def script_code(request: Request, script: CodeScript) -> CodeScript:
    """Register what a js_code logs in as, or the errcode / HTTP failure it meets."""
    fake_of(request).state.codes[script.code] = script
    return script


@control_router.post("/wechat/users")
async def script_wechat_user(request: Request, script: WechatUserScript) -> WechatUserScript:
    """Set an openid's remaining subscriptions (0 → 43101) or a scripted errcode."""
    fake_of(request).state.wechat_users[script.openid] = script
    return script


@control_router.post("/wechat/token")
async def script_token(request: Request, script: TokenScript) -> dict[str, str]:
    """Expire or poison the current access token, fail the next stable_token call, or set the lifetime."""
    state = fake_of(request).state
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
    fake_of(request).state.sms_numbers[script.number] = script
    return script


@control_router.post("/voice/numbers")
async def script_voice_number(request: Request, script: VoiceNumberScript) -> VoiceNumberScript:
    """Script the voice provider's behaviour for one number."""
    fake_of(request).state.voice_numbers[script.number] = script
    return script


@control_router.post("/sms/reply")
async def sms_reply(request: Request, reply: InboundSms) -> dict[str, Any]:
    """Deliver an inbound SMS now; answers with the callback delivery record."""
    return await deliver_reply(fake_of(request), reply)


@control_router.post("/voice/calls/{call_id}/events")
async def voice_call_event(request: Request, call_id: str, script: VoiceEventScript) -> dict[str, Any]:
    """Emit a voice event for an existing call now (e.g. the guardian pressed 1 in the demo)."""
    fake = fake_of(request)
    record = next((c for c in fake.state.outbox["voice"] if c["call_id"] == call_id), None)
    if record is None:
        raise HTTPException(404, "unknown call_id")
    return await voice_event(fake, record, script.type, script.digits)


@control_router.put("/clock")
async def set_clock(request: Request, script: ClockScript) -> dict[str, str | None]:
    """Stop the provider's clock at an instant (what `occurred_at` says), or let it run again (null)."""
    fake = fake_of(request)
    fake.state.frozen_at = script.now.astimezone(UTC) if script.now is not None else None
    return {"now": fake.now().isoformat()}
