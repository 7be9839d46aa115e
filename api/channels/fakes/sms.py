"""The fake SMS provider, speaking our SMS contract (docs/providers.md): send with an idempotency key, a signed
delivery receipt by callback, and replies texted back to our sender number. Served under `/sms`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from api.channels.base import ProviderErrorBody, SmsInbound, SmsReceipt
from api.channels.fakes.contract import check_api_key, contract_error, scripted_refusal
from api.channels.fakes.scripts import InboundSms
from api.channels.fakes.state import Fake, fake_of, new_id


class SmsSendRequest(BaseModel):
    to: str
    text: str = Field(min_length=1, max_length=500)
    idempotency_key: str = Field(min_length=1, max_length=200)
    callback_url: str | None = None


sms_router = APIRouter(prefix="/sms")


@sms_router.post("/v1/sms/send")
async def sms_send(request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Accept an SMS; same idempotency key → same message id, nothing sent twice."""
    fake = fake_of(request)
    if (refusal := check_api_key(authorization, fake.config.sms_api_key)) is not None:
        return refusal
    try:
        sms = SmsSendRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        return contract_error(400, "invalid_request", str(exc.errors()[0]["msg"]))
    known = fake.state.sms_by_key.get(sms.idempotency_key)
    if known is not None:
        if (known["to"], known["text"]) != (sms.to, sms.text):
            return contract_error(422, "idempotency_key_reused", "key already used for another message")
        fake.state.attempts.append({"channel": "sms", "to": sms.to, "outcome": "replayed"})
        return JSONResponse({"message_id": known["message_id"], "status": "accepted"})
    script = fake.state.sms_numbers.get(sms.to)
    if (refusal := scripted_refusal(fake, "sms", sms.to, script)) is not None:
        return refusal
    record = {**sms.model_dump(), "message_id": new_id("sms"), "status": "accepted"}
    fake.state.sms_by_key[sms.idempotency_key] = record
    fake.state.outbox["sms"].append(record)
    fake.state.attempts.append({"channel": "sms", "to": sms.to, "outcome": "accepted"})
    fake.spawn(_sms_receipt(fake, record, script.receipt if script else "delivered"))
    # Sleeping after recording is the interesting case: the provider accepted, the client timed out.
    await asyncio.sleep(script.delay_seconds if script else 0.0)
    return JSONResponse({"message_id": record["message_id"], "status": "accepted"})


async def _sms_receipt(fake: Fake, record: dict[str, Any], receipt: str) -> None:
    await asyncio.sleep(fake.config.callback_delay)
    if receipt == "none":
        return
    record["status"] = receipt
    error = ProviderErrorBody(code="undeliverable", message="handset unreachable") if receipt == "failed" else None
    event = SmsReceipt(
        event_id=new_id("evt"),
        occurred_at=fake.now(),
        type="sms.delivered" if receipt == "delivered" else "sms.failed",
        message_id=record["message_id"],
        idempotency_key=record["idempotency_key"],
        to=record["to"],
        error=error,
    )
    await fake.deliver(record["callback_url"] or fake.state.callback_url, event)


async def deliver_reply(fake: Fake, reply: InboundSms) -> dict[str, Any]:
    """Post an inbound SMS now, in reply to the last message sent to its sender; the callback delivery record."""
    sent = [m for m in fake.state.outbox["sms"] if m["to"] == reply.sender]
    last = sent[-1] if sent else None
    url = fake.state.callback_url or (last["callback_url"] if last else None)
    if url is None:
        raise HTTPException(409, "no callback URL configured and no SMS sent to this number")
    event = SmsInbound.model_validate(
        {
            "event_id": new_id("evt"),
            "occurred_at": fake.now(),
            "type": "sms.inbound",
            "message_id": new_id("mo"),
            "from": reply.sender,
            "text": reply.text,
            "in_reply_to": last["message_id"] if last else None,
        }
    )
    return await fake.deliver(url, event)
