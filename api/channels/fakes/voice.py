"""The fake voice provider, speaking our voice contract (docs/providers.md): a call is queued, then its progress
(answered, keys pressed, completed — or no answer, busy, failed) is posted by signed callbacks in the order it
happened. Served under `/voice`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from api.channels.base import ProviderErrorBody, VoiceEvent, VoiceEventType
from api.channels.fakes.contract import check_api_key, contract_error, scripted_refusal
from api.channels.fakes.state import Fake, fake_of, new_id

_UNANSWERED: dict[str, VoiceEventType] = {
    "no_answer": "voice.no_answer",
    "busy": "voice.busy",
    "failed": "voice.failed",
}


class VoiceCallRequest(BaseModel):
    to: str
    tts_text: str = Field(min_length=1, max_length=500)
    repeat: int = Field(default=2, ge=1, le=3)
    dtmf_ack_digit: str = Field(default="1", pattern=r"^[0-9*#]$")
    idempotency_key: str = Field(min_length=1, max_length=200)
    callback_url: str | None = None


voice_router = APIRouter(prefix="/voice")


@voice_router.post("/v1/voice/calls")
async def voice_call(request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Queue a call; progress (answered, dtmf, completed, or no_answer/busy/failed) arrives by callback."""
    fake = fake_of(request)
    if (refusal := check_api_key(authorization, fake.config.voice_api_key)) is not None:
        return refusal
    try:
        call = VoiceCallRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        return contract_error(400, "invalid_request", str(exc.errors()[0]["msg"]))
    known = fake.state.calls_by_key.get(call.idempotency_key)
    if known is not None:
        if (known["to"], known["tts_text"]) != (call.to, call.tts_text):
            return contract_error(422, "idempotency_key_reused", "key already used for another call")
        fake.state.attempts.append({"channel": "voice", "to": call.to, "outcome": "replayed"})
        return JSONResponse({"call_id": known["call_id"], "status": "queued"})
    script = fake.state.voice_numbers.get(call.to)
    if (refusal := scripted_refusal(fake, "voice", call.to, script)) is not None:
        return refusal
    record = {**call.model_dump(), "call_id": new_id("call"), "status": "queued", "digits": None}
    fake.state.calls_by_key[call.idempotency_key] = record
    fake.state.outbox["voice"].append(record)
    fake.state.attempts.append({"channel": "voice", "to": call.to, "outcome": "accepted"})
    outcome, press = (script.outcome, script.press) if script else ("answered", fake.config.voice_default_press)
    fake.spawn(_call_progress(fake, record, outcome, press))
    await asyncio.sleep(script.delay_seconds if script else 0.0)
    return JSONResponse({"call_id": record["call_id"], "status": "queued"})


def voice_event(
    fake: Fake, record: dict[str, Any], type_: VoiceEventType, digits: str | None = None
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
        event_id=new_id("evt"),
        occurred_at=fake.now(),
        type=type_,
        call_id=record["call_id"],
        idempotency_key=record["idempotency_key"],
        to=record["to"],
        digits=digits if type_ == "voice.dtmf" else None,
        error=error,
    )
    return fake.post_in_order(record["call_id"], record["callback_url"] or fake.state.callback_url, event)


async def _call_progress(fake: Fake, record: dict[str, Any], outcome: str, press: str | None) -> None:
    await asyncio.sleep(fake.config.callback_delay)
    if outcome == "silent":
        return
    if outcome in _UNANSWERED:
        voice_event(fake, record, _UNANSWERED[outcome])
        return
    voice_event(fake, record, "voice.answered")
    if press:
        await asyncio.sleep(fake.config.callback_delay)
        voice_event(fake, record, "voice.dtmf", press)
    voice_event(fake, record, "voice.completed")
